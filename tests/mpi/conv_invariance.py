"""Layer-parallel ConvResNet on the ranks of COMM_WORLD; rank 0 dumps JSON.

Usage: ``mpiexec -n P python tests/mpi/conv_invariance.py OUT.json``

Cases: the loss and the gathered gradient at a fixed theta with 1, 2 and 3 MGRIT
levels (warm-started, three evaluations), and a short Adam run with the one-shot
defaults and the smoothness regulariser. ``tests/test_mpi_conv.py`` compares the
files for P = 1, 2, 3.
"""

import json
import sys

import numpy as np

import mgnn
from mgnn.mgrit import LayerParallelObjective, MGRITPropagation
from mgnn.nets import ConvResNet
from mgnn.objective import Objective
from mgnn.parallel import get_comm


def problem():
    rng = np.random.default_rng(3)
    net = ConvResNet((4, 3), 2, 9, 3, T=2.0, activation="tanh")
    X = rng.standard_normal((10, 12))
    y = rng.integers(0, 3, 10)
    theta = net.init(1, "he") + 0.05 * rng.standard_normal(net.n_params)
    return net, X, y, theta


def main(path):
    world = get_comm()
    net, X, y, theta = problem()
    f_ser, g_ser = Objective(net, X, y, tikhonov=1e-3).value_and_grad(theta)
    out = {"size": world.size, "cases": {}}
    cases = out["cases"]
    for levels, avg in ((1, "inject"), (2, "inject"), (3, "average")):
        prop = MGRITPropagation(levels=levels, cf=2, min_coarse=1, coarse_weights=avg,
                                relax="FCF", cycle="V", fwd_iters=2, bwd_iters=1, rtol=None,
                                reuse_tau=False)
        obj = LayerParallelObjective(net, X, y, comm=world, tikhonov=1e-3, propagation=prop)
        tl = obj.scatter(theta)
        fs = [obj.value_and_grad(tl)[0] for _ in range(2)]
        f, g = obj.value_and_grad(tl)
        G = obj.gather(g)
        cases[f"grad_L{levels}"] = {"f": fs + [f], "g": G.tolist(), "work": obj.counter.work,
                                    "bitwise_serial_grad": bool(np.array_equal(G, g_ser))}
    prop = MGRITPropagation(min_coarse=1, cf=2)
    obj = LayerParallelObjective(net, X, y, comm=world, tikhonov=1e-3, smoothness=1e-2,
                                 propagation=prop)
    res = mgnn.minimize(obj, obj.scatter(theta), method="adam", options={"maxiter": 4,
                                                                         "lr": 1e-2})
    cases["adam"] = {"x": obj.gather(res.x).tolist(), "fun": res.history["fun"].tolist(),
                     "work": res.work}
    if world.rank == 0:
        with open(path, "w") as fh:
            json.dump(out, fh)


if __name__ == "__main__":
    main(sys.argv[1])
