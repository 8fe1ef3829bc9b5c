"""A fault on one rank of an MPI job ends the whole job (issue 13, item 5).

Usage: ``mpiexec -n 2 python tests/mpi/faults.py CASE``. In every CASE rank 1
fails while rank 0 is (or will be) waiting in a collective: without mgnn's abort
handler the job would hang forever; with it, it ends with a non-zero status and
the error printed. ``control`` runs the same training without a fault.
"""

import sys

import numpy as np

import mgnn
from mgnn.mgrit import MGRIT, LayerParallelObjective, MGRITPropagation
from mgnn.mgrit.problems import Dahlquist
from mgnn.nets import ResNet
from mgnn.parallel import get_comm


def problem():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 2))
    y = (X[:, 0] > 0).astype(int)
    return ResNet(2, 3, 8, 2), X, y


def main(case):
    world = get_comm()
    net, X, y = problem()
    if case == "nan_data" and world.rank == 1:
        X = X.copy()
        X[3, 1] = np.nan
    if case == "stepper":
        class Faulty(Dahlquist):
            def step(self, u_in, u_out, t0, t1, level, index):
                if world.rank == 1 and index > 40:
                    raise RuntimeError("stepper failed on purpose")
                super().step(u_in, u_out, t0, t1, level, index)

        solver = MGRIT(Faulty(-1.0), np.linspace(0, 1, 65), comm=world, cf=2, max_levels=2,
                       check_stepper=False)
        solver.solve(np.ones(1), max_iter=5)
        return
    obj = LayerParallelObjective(net, X, y, comm=world,
                                 propagation=MGRITPropagation(levels=2, cf=2))
    theta = obj.scatter(net.init(0))
    if case == "objective":
        evaluate = obj.value_and_grad
        calls = {"n": 0}

        def failing(t, batch=None):
            calls["n"] += 1
            if world.rank == 1 and calls["n"] == 3:
                raise RuntimeError("objective failed on purpose")
            return evaluate(t, batch)

        obj.value_and_grad = failing
    callback = None
    if case == "callback":
        def callback(intermediate_result):
            if world.rank == 1 and intermediate_result.nit == 2:
                raise ValueError("callback failed on purpose")
    res = mgnn.minimize(obj, theta, method="lbfgs", options={"maxiter": 6}, callback=callback)
    if world.rank == 0:
        print("finished", res.nit, flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
