"""Save a trained network on 2 ranks, load it on 1 and 3: the same predictions.

Usage: ``mpiexec -n P python tests/mpi/save_load.py OUT.json``. With P = 2 it trains
a layer-parallel network briefly and saves it (the slices are gathered, rank 0
writes ``saved_net.npz`` next to OUT.json); with another P it loads that file (rank 0
reads and broadcasts), scatters theta to a LayerParallelObjective on P ranks and
evaluates. Rank 0 writes predictions and losses to OUT.json.
"""

import json
import os
import sys

import numpy as np

import mgnn
from mgnn.mgrit import LayerParallelObjective, MGRITPropagation
from mgnn.nets import ResNet
from mgnn.objective import Objective
from mgnn.parallel import get_comm
from mgnn.runs import load_network, save_network


def data():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((60, 2))
    y = ((X[:, 0] > 0) + (X[:, 1] > 0.3)).astype(int)
    return X, y


def main(out):
    world = get_comm()
    X, y = data()
    path = os.path.join(os.path.dirname(out), "saved_net.npz")
    result = {"size": world.size, "cases": {}}
    if world.size == 2:
        net = ResNet(2, 4, 9, 3, T=2.0)
        obj = LayerParallelObjective(net, X, y, comm=world, tikhonov=1e-3,
                                     propagation=MGRITPropagation(levels=2, cf=2))
        res = mgnn.minimize(obj, obj.scatter(net.init(2)), method="lbfgs",
                            options={"maxiter": 5})
        save_network(path, net, res.x, objective=obj, metadata={"ranks": world.size})
        theta = obj.gather(res.x)
    else:
        saved = load_network(path)
        net, theta = saved
        assert saved.metadata == {"ranks": 2}
        obj = LayerParallelObjective(net, X, y, comm=world, tikhonov=1e-3)
        f_dist = obj.value(obj.scatter(theta))
        result["cases"]["f_distributed"] = f_dist
    serial = Objective(net, X, y, tikhonov=1e-3)
    result["cases"]["f_serial"] = serial.value(theta)
    result["cases"]["logits"] = net.forward(theta, X).tolist()
    result["cases"]["theta"] = theta.tolist()
    if world.rank == 0:
        with open(out, "w") as fh:
            json.dump(result, fh)


if __name__ == "__main__":
    main(sys.argv[1])
