"""Domain-decomposition solvers on the ranks of COMM_WORLD; rank 0 dumps JSON.

Usage: ``mpiexec -n P python tests/mpi/dd_invariance.py OUT.json``

Cases: APTS and ASPQN over 3 layer subdomains and over 5 overlapping data
subdomains (with P = 2 and 3 ranks some ranks solve two subdomains, so the
mapping changes with P), random tensors, the multiplicative variants, a
two-level run on a depth hierarchy, and one and two subdomains (idle ranks).
For each: the iterate after every outer iteration, the loss history, the total
and parallel work and the per-subdomain work. ``tests/test_mpi_dd.py`` compares
the files for P = 1, 2, 3.
"""

import json
import sys

from mgnn.data import peaks
from mgnn.dd import apts, by_blocks, by_data, by_layers, by_tensors, spqn
from mgnn.multilevel import depth_hierarchy
from mgnn.nets import ResNet
from mgnn.objective import Objective
from mgnn.parallel import get_comm


def main(path):
    comm = get_comm()
    d = peaks(150, 10, seed=2)
    net = ResNet(2, 4, 6, 5, T=5.0)
    obj = Objective(net, d.X_train, d.Y_train, tikhonov=1e-4)
    theta0 = net.init(3)
    H = depth_hierarchy(obj, 2)
    cases = {
        "apts_layers": (apts, by_layers(net, 3), {}, None),
        "apts_data": (apts, by_data(obj, 5, overlap=0.2), {"global_iters": 1}, None),
        "aspqn_layers": (spqn, by_layers(net, 3), {}, None),
        "aspqn_data": (spqn, by_data(obj, 5, overlap=0.2), {}, None),
        "aspqn_tensors": (spqn, by_tensors(net, 4, rng=5), {}, None),
        "apts_mult": (apts, by_layers(net, 3), {"variant": "multiplicative"}, None),
        "spqn_mult_data": (spqn, by_data(obj, 3), {"variant": "multiplicative"}, None),
        "apts_two_level": (apts, by_layers(net, 3), {"coarse_iters": 2}, H),
        "apts_one_subdomain": (apts, by_blocks(net.n_params, 1), {"local_iters": 1}, None),
        "aspqn_two_subdomains": (spqn, by_layers(net, 2), {}, None),
        "aspqn_two_level": (spqn, by_data(obj, 3), {"coarse_iters": 2}, H),
    }
    out = {"size": comm.size, "cases": {}}
    for name, (solver, dec, opts, hier) in cases.items():
        xs = []
        res = solver(obj, theta0, dec, options=dict(opts, maxiter=4), hierarchy=hier,
                     comm=comm, callback=lambda xk, xs=xs: xs.append(xk.tolist()))
        out["cases"][name] = {
            "xs": xs, "x": res.x.tolist(), "fun": res.history["fun"].tolist(),
            "work": res.work, "parallel_work": res.parallel_work,
            "hist_work": res.history["work"].tolist(),
            "hist_parallel_work": res.history["parallel_work"].tolist(),
            "work_per_subdomain": res.work_per_subdomain.tolist(),
            "nfev": res.nfev, "njev": res.njev, "nit": res.nit, "status": res.status,
            "owners": [t.owner for t in res.statistics],
        }
    if comm.rank == 0:
        with open(path, "w") as fh:
            json.dump(out, fh)


if __name__ == "__main__":
    main(sys.argv[1])
