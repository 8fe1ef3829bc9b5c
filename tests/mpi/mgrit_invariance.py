"""Run MGRIT configurations on the ranks of COMM_WORLD and dump JSON.

Usage: ``mpiexec -n P python tests/mpi/mgrit_invariance.py OUT.json``

Rank 0 writes ``{case: {"residuals": [...], "nit": k, "err": max|u - serial|,
"bitwise": bool, "empty_ranks": [...]} }``; ``tests/test_mpi_mgrit.py``
compares the files written for P = 1, 2, 3.
"""

import json
import sys

import numpy as np

from mgnn.mgrit import MGRIT, serial_stepping
from mgnn.mgrit.problems import Dahlquist, DampedPendulum, Heat1D
from mgnn.parallel import get_comm


def cases():
    dq = Dahlquist(-1.0)
    heat = Heat1D(nx=15)
    pend = DampedPendulum(gamma=0.5, batch=2)
    one = np.ones(1)
    p0 = np.array([[1.0, 0.0], [2.5, 0.3]])
    t128 = np.linspace(0.0, 5.0, 129)
    yield "one_level", dq, t128, one, dict(max_levels=1), dict(max_iter=1)
    yield "two_level_fcf_m4", dq, t128, one, dict(cf=4, max_levels=2), dict(tol=1e-13)
    yield "two_level_f_m2", dq, t128, one, dict(cf=2, max_levels=2, cf_sweeps=0), dict(
        tol=1e-13)
    # 17 points on 3 ranks: the middle rank owns no point of levels 3 and 4
    yield "deep_v_empty_ranks", dq, np.linspace(0.0, 5.0, 17), one, dict(
        cf=2, min_coarse=1), dict(tol=1e-13)
    yield "fcycle_nonuniform_cf", dq, np.linspace(0.0, 5.0, 51), one, dict(
        cf=[4, 2], cycle="F", omega=[1.3, 1.0]), dict(tol=1e-13, max_iter=30)
    yield "skip", dq, t128, one, dict(cf=2, skip=True), dict(tol=1e-13)
    yield "nested", dq, t128, one, dict(cf=2, nested_iteration=True, cf_sweeps=2), dict(
        tol=1e-13)
    yield "heat_3lvl", heat, np.linspace(0.0, 0.5, 65), heat.initial(), dict(
        cf=2, max_levels=3), dict(tol=1e-12)
    yield "pendulum_fixed_iter", pend, np.linspace(0.0, 8.0, 97), p0, dict(
        cf=[4, 2], max_levels=3), dict(max_iter=12)


def main(path):
    comm = get_comm()
    out = {}
    for name, stepper, t, u0, opts, solve in cases():
        solver = MGRIT(stepper, t, comm=comm, **opts)
        res = solver.solve(u0, **solve)
        u = solver.gather()
        ref = serial_stepping(stepper, t, u0)
        empty = [lv.nloc == 0 for lv in solver.levels]
        flags = comm.allreduce(np.array(empty, dtype=np.float64), op="max")
        out[name] = {
            "residuals": res.residuals.tolist(),
            "nit": res.nit,
            "err": float(np.max(np.abs(u - ref))),
            "bitwise": bool(np.array_equal(u, ref)),
            "levels_with_empty_rank": [int(i) for i in np.flatnonzero(flags)],
        }
        # warm start from the converged solution: stays converged
        if name == "two_level_fcf_m4":
            again = solver.solve(u0, u_guess=solver.u.copy(), tol=1e-13)
            out["warm_start"] = {"residuals": again.residuals.tolist(), "nit": again.nit}
    if comm.rank == 0:
        with open(path, "w") as fh:
            json.dump({"size": comm.size, "cases": out}, fh, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
