"""Checkpoint and resume of layer-parallel one-shot training on the ranks of COMM_WORLD.

Usage: ``mpiexec -n P python tests/mpi/resume_lp.py OUT.json``. Adam on a
LayerParallelObjective with two-level MGRIT (warm starts): the uninterrupted run,
a run stopped after iteration 4 by a stop request on the *last* rank only (all
ranks must stop together and write their files), and a run resumed from the
checkpoint folder. Rank 0 writes whether the resumed run equals the uninterrupted
one bit for bit, and the checkpoint files.
"""

import json
import os
import sys

import numpy as np

import mgnn
from mgnn.mgrit import LayerParallelObjective, MGRITPropagation
from mgnn.nets import ResNet
from mgnn.parallel import get_comm
from mgnn.runs import Checkpointer


def main(out):
    world = get_comm()
    rng = np.random.default_rng(7)
    X = rng.standard_normal((40, 2))
    y = (X[:, 0] * X[:, 1] > 0).astype(int)
    net = ResNet(2, 3, 12, 2, T=2.0)
    theta0 = net.init(1)
    opts = {"lr": 0.05, "batch_size": 10, "maxiter": 10, "rng": 4}

    def objective():
        return LayerParallelObjective(net, X, y, comm=world, tikhonov=1e-3,
                                      propagation=MGRITPropagation(levels=2, cf=2,
                                                                   fwd_iters=1, bwd_iters=1))

    obj = objective()
    full = mgnn.minimize(obj, obj.scatter(theta0), method="adam", options=opts)
    x_full = obj.gather(full.x)
    folder = os.path.join(os.path.dirname(out), f"ck_p{world.size}")
    ck = Checkpointer(folder, keep=None)

    def cb(intermediate_result):
        if intermediate_result.nit == 4 and world.rank == world.size - 1:
            ck.request_stop()

    obj = objective()
    part = mgnn.minimize(obj, obj.scatter(theta0), method="adam",
                         options=dict(opts, checkpoint=ck), callback=cb)
    obj = objective()
    res = mgnn.minimize(obj, obj.scatter(theta0), method="adam",
                        options=dict(opts, resume=folder))
    x_res = obj.gather(res.x)
    if world.rank == 0:
        cases = {"part_status": part.status, "part_nit": part.nit,
                 "equal": bool(np.array_equal(x_full, x_res)),
                 "hist_equal": bool(np.array_equal(full.history["fun"], res.history["fun"])),
                 "work_equal": res.work == full.work, "files": sorted(os.listdir(folder))}
        with open(out, "w") as fh:
            json.dump({"size": world.size, "cases": cases}, fh)


if __name__ == "__main__":
    main(sys.argv[1])
