"""PINNs on the other problems of mgnn.data.pde: Poisson 1-D, diffusion-advection,
Klein-Gordon and Allen-Cahn, with Adam and L-BFGS (and any other method) at equal work.

    python examples/pinn_benchmark.py [--problems ...] [--methods adam lbfgs]
                                      [--budget 3000] [--bc exact|penalty] [--out out] [--quick]

For every problem: a ResNet PINN on Latin-hypercube collocation points (periodic
coordinates through a periodic input embedding, conditions imposed exactly by the
problem's output transform or as penalties), each method trained to the same work
budget from the same initial parameters (``examples/_pinn_common.py``). Prints one
Markdown table (problem, method, relative L2 error on the evaluation grid, work units,
iterations, wall time), writes it with JSON into ``--out`` and one PNG per problem
(solution, reference, error, error against work).

Allen-Cahn with eps = 1e-4 (the standard setting) is the known hard case for plain
PINNs (the solution develops sharp interfaces that plain residual training does not
find without time-marching or causal weighting); its row is reported as it comes out.
Klein-Gordon's exact-condition transform carries x (cos 5 pi t + t^3), most of the
solution x cos 5 pi t + (x t)^3, so its ``--bc exact`` row is the easy case; with
``--bc penalty`` (unweighted) it is the stiff problem of Wang, Teng & Perdikaris.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _pinn_common import (  # noqa: E402
    METHODS,
    make_objective_factory,
    markdown_table,
    plot,
    run_method,
    save,
)

from mgnn.data.pde import pde_problem  # noqa: E402
from mgnn.nets import ResNet  # noqa: E402

PROBLEMS = ("poisson_1d", "diffusion_advection_1d", "klein_gordon_1d", "allen_cahn_1d")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=PROBLEMS)
    ap.add_argument("--methods", nargs="+", default=["adam", "lbfgs"], choices=METHODS)
    ap.add_argument("--bc", default="exact", choices=("exact", "penalty"))
    ap.add_argument("--width", type=int, default=20)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--T", type=float, default=4.0)
    ap.add_argument("--points", type=int, default=2000)
    ap.add_argument("--boundary", type=int, default=200)
    ap.add_argument("--budget", type=float, default=3000.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="out")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    args = ap.parse_args(argv)
    if args.quick:
        args.points, args.boundary, args.budget, args.width = 48, 16, 30.0, 6

    rows = []
    for name in args.problems:
        kw = {"n_modes": 64, "dt": 2e-3} if (args.quick and name == "allen_cahn_1d") else {}
        problem = pde_problem(name, **kw)
        points = problem.sample(args.points, args.boundary, "lhs", seed=args.seed)
        n_in = problem.domain.d + len(problem.periodic)
        net = ResNet(n_in, args.width, args.depth, 1, task="regression", T=args.T)
        theta0 = net.init(np.random.default_rng(args.seed))
        make = make_objective_factory(problem, net, points, args.bc)
        print(problem)
        prows = []
        for m in args.methods:
            r = run_method(m, make, problem, theta0, args.budget)
            r["problem"] = name
            prows.append(r)
            print(f"  {m:8s} error {r['error']:.3e}  work {r['work']:.0f}  iterations "
                  f"{r['nit']}  {r['wall']:.1f} s", flush=True)
        best = min(prows, key=lambda r: r["error"])
        print("  wrote", plot(args.out, f"pinn_{name}", problem, make("exact"), best, prows))
        rows += prows
    table = markdown_table(rows, ("problem", "method"))
    print()
    print(table)
    save(args.out, "pinn_benchmark", rows, args, table)
    return rows


if __name__ == "__main__":
    main()
