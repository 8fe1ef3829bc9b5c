"""Cost of LSGD's least-squares solve against one gradient evaluation, and what the
work counter charges for it.

Run by hand::

    python benchmarks/lsgd_solve.py [--quick] [--repeats 5] [--json out.json]

For each network (ReLU ResNet, depth N, width w, one output, box initialisation)
and sample count s, one run measures (medians over repeats, single-threaded BLAS
unless ``OPENBLAS_NUM_THREADS`` is set):

* ``grad``: one ``value_and_grad`` on all data (the work unit, the baseline);
* ``features``: the forward sweep that gives the basis A (charged 1/3);
* ``solve``: LSGD's solver on ``[A 1 Y]`` (Householder QR, R factor only, then
  SVD of the (w+1) x (w+1) block and the filtered solution), charged by flops;
* for comparison, two other ways to the same closing layer: ``lstsq`` (SciPy's
  ``lstsq``, gelsd, on ``[A 1]``) and ``normal`` (Cholesky of ``[A 1]^T [A 1]``,
  which squares the condition number);
* ``rel. err normal``: the normal-equations solution's relative distance from the
  QR + SVD one on this basis (its condition number ``cond``).

``solve/grad`` (measured) is compared with ``charged``, the work the counter books
for the solve; ``cycle/charged`` is the measured time of one LSGD cycle with k = 1
(features + solve + one gradient) over the time the charged work would take at the
gradient's rate. ``%busy`` is the share of the machine other processes used.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _common import OtherLoad, blas_info, machine_info, measure, save_json  # noqa: E402

from mgnn.nets import ResNet  # noqa: E402
from mgnn.objective import Objective  # noqa: E402
from mgnn.optim.lsgd import ClosingSolver, _filtered_solution, _qr_r, solve_flops  # noqa: E402


def case(s, w, N, repeats):
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (s, 2))
    Y = (np.sin(3 * X[:, 0]) * X[:, 1])[:, None]
    net = ResNet(2, w, N, 1, T=1.0, activation="relu", task="regression")
    obj = Objective(net, X, Y)
    theta = net.init(0, "box", box=(-1.0, 1.0))
    A, _ = obj.features(theta)
    M0 = np.asfortranarray(np.hstack([A, np.ones((s, 1)), Y]))
    M = np.empty_like(M0, order="F")
    At = M0[:, : w + 1]

    def solve():
        M[...] = M0
        _filtered_solution(_qr_r(M, np), w + 1, s, 0.0, None, None)

    def normal():
        G = At.T @ At
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(G, check_finite=False),
                                      At.T @ Y, check_finite=False)

    solver = ClosingSolver(obj)
    with OtherLoad() as load:
        t_grad = measure(lambda: obj.value_and_grad(theta), repeats=repeats)
        t_feat = measure(lambda: obj.features(theta), repeats=repeats)
        t_solve = measure(solve, repeats=repeats)
        t_lstsq = measure(lambda: scipy.linalg.lstsq(At, Y, check_finite=False),
                          repeats=repeats)
        t_normal = measure(normal, repeats=repeats)

        def cycle():
            x, _ = solver.solve(theta)
            obj.value_and_grad(x)

        t_cycle = measure(cycle, repeats=repeats)
    xi, st = _filtered_solution(_qr_r(M0.copy(order="F"), np), w + 1, s, 0.0, None, None)
    try:
        xn = normal()
        err = float(np.linalg.norm(xn - xi) / np.linalg.norm(xi))
    except np.linalg.LinAlgError:
        err = float("inf")
    charged = solve_flops(s, w, 1) / net.flops(s)
    return {
        "s": s, "w": w, "N": N, "grad_ms": 1e3 * t_grad, "features_ms": 1e3 * t_feat,
        "solve_ms": 1e3 * t_solve, "lstsq_ms": 1e3 * t_lstsq, "normal_ms": 1e3 * t_normal,
        "features_over_grad": t_feat / t_grad, "solve_over_grad": t_solve / t_grad,
        "charged": charged, "cycle_over_charged": t_cycle / (t_grad * (4 / 3 + charged)),
        "cond": st["ls_cond"], "normal_rel_err": err,
        "busy": None if load.share is None else 100 * load.share,
    }


def markdown(rows):
    head = ("| s | w | N | grad ms | features/grad | solve ms | solve/grad | charged | "
            "cycle/charged | lstsq ms | normal ms | cond | rel. err normal | %busy |")
    lines = [head, "|" + "---|" * 14]
    for r in rows:
        busy = "-" if r["busy"] is None else f"{r['busy']:.0f}"
        lines.append(
            f"| {r['s']} | {r['w']} | {r['N']} | {r['grad_ms']:.3g} | "
            f"{r['features_over_grad']:.2f} | {r['solve_ms']:.3g} | {r['solve_over_grad']:.3f} | "
            f"{r['charged']:.3f} | {r['cycle_over_charged']:.2f} | {r['lstsq_ms']:.3g} | "
            f"{r['normal_ms']:.3g} | {r['cond']:.2e} | {r['normal_rel_err']:.1e} | {busy} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="three small cases")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.quick:
        grid = [(1000, 8, 4), (1000, 32, 4), (5000, 32, 8)]
    else:
        grid = [(s, w, N) for s in (1000, 10000) for w in (8, 32, 128) for N in (4, 16)]
    print(machine_info())
    print(blas_info())
    rows = []
    for s, w, N in grid:
        rows.append(case(s, w, N, args.repeats))
        print(f"done s={s} w={w} N={N}", flush=True)
    md = markdown(rows)
    print(md)
    if args.json:
        save_json(args.json, {"machine": machine_info(), "blas": blas_info(), "rows": rows})
    return rows


if __name__ == "__main__":
    main()
