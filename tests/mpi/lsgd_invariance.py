"""LSGD on the ranks of COMM_WORLD (layers distributed); rank 0 dumps JSON.

Usage: ``mpiexec -n P python tests/mpi/lsgd_invariance.py OUT.json``

Cases: full-batch and mini-batch LSGD runs (Adam on the hidden layers, the
closing layer solved on the last rank) on a ``LayerParallelObjective`` with one
MGRIT level (the exact serial sweep, pipelined), with the gathered iterate, the
history and whether the iterate equals the serial ``Objective``'s bit for bit.
With P = 2 also the 1 x 2 (layers x data) process grid, against serial.
``tests/test_lsgd_mpi.py`` compares the files for P = 1, 2, 3.
"""

import json
import sys

import numpy as np

import mgnn
from mgnn.mgrit import LayerParallelObjective, MGRITPropagation
from mgnn.nets import ResNet
from mgnn.objective import Objective
from mgnn.parallel import get_comm, process_grid

OPTIONS = {
    "full": {"maxiter": 4, "gd_steps": 2, "lr": 1e-2},
    "minibatch": {"maxiter": 4, "gd_steps": 3, "lr": 1e-2, "batch_size": 16,
                  "ls_batch_size": 24, "rng": 0},
    "k0": {"maxiter": 2, "gd_steps": 0},
}


def problem():
    rng = np.random.default_rng(7)
    X = rng.uniform(-1, 1, (48, 2))
    Y = np.column_stack([np.sin(3 * X[:, 0]) * X[:, 1], np.abs(X[:, 0] - X[:, 1])])
    net = ResNet(2, 5, 13, 2, T=1.0, activation="relu", task="regression")
    return net, X, Y, net.init(3, "box", box=(-1.0, 1.0))


def main(path):
    world = get_comm()
    net, X, Y, theta = problem()
    out = {"size": world.size, "cases": {}}
    for name, opts in OPTIONS.items():
        serial = mgnn.minimize(Objective(net, X, Y, tikhonov=1e-4), theta, "lsgd", opts)
        obj = LayerParallelObjective(net, X, Y, comm=world, tikhonov=1e-4,
                                     propagation=MGRITPropagation(levels=1))
        res = mgnn.minimize(obj, obj.scatter(theta), "lsgd", opts)
        x = obj.gather(res.x)
        h = res.history
        out["cases"][name] = {
            "x": x.tolist(), "fun": res.fun, "work": res.work, "nit": res.nit,
            "hist": {k: h[k].tolist() for k in ("fun", "ls_loss", "ls_rank", "ls_cond")},
            "bitwise_serial": bool(np.array_equal(x, serial.x)),
            "serial_work": serial.work,
        }
    if world.size == 2:
        for layers in (2, 1):
            lc, dc = process_grid(world, layers=layers)
            serial = mgnn.minimize(Objective(net, X, Y, tikhonov=1e-4), theta, "lsgd",
                                   OPTIONS["full"])
            obj = LayerParallelObjective(net, X, Y, comm=lc, data_comm=dc, tikhonov=1e-4)
            res = mgnn.minimize(obj, obj.scatter(theta), "lsgd", OPTIONS["full"])
            x = obj.gather(res.x)
            out["cases"][f"grid_{layers}x{2 // layers}"] = {
                "x_err": float(np.max(np.abs(x - serial.x))),
                "x_scale": float(np.max(np.abs(serial.x))), "work": res.work,
                "serial_work": serial.work}
    if world.rank == 0:
        with open(path, "w") as fh:
            json.dump(out, fh)


if __name__ == "__main__":
    main(sys.argv[1])
