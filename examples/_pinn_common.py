"""Shared engine of the PINN examples: the methods, their work budgets, tables and plots.

Every method trains the same network from the same initial parameters on the same
collocation points until it has spent ``budget`` work units (one unit = one plain
value-and-gradient of the fine network on all points; a PINN value-and-gradient
costs its stream count times that, see :mod:`mgnn.pinn.objective`) or its own
iteration limit. The relative L2 error on the problem's evaluation grid is recorded
along the way (not charged as work) and at the end.

Methods:

``adam``       full-batch Adam (lr 1e-3);
``lbfgs``      L-BFGS with the strong-Wolfe line search;
``lbfgs-resample``  L-BFGS on a fresh Latin-hypercube sample of collocation points (same
               sizes) every ``budget / rounds`` work units (a new L-BFGS memory each
               round); the first round uses the common points;
``tr-lsr1``    trust region with the compact L-SR1 model, Steihaug-Toint CG;
``tr-gn``      trust region with exact Gauss-Newton products (Steihaug-Toint CG);
``nested``     nested iteration on a depth hierarchy (3 levels, factor 2), L-BFGS on
               every level, about 15 % of the budget on each coarse level, starting
               from the projection of the common initial guess;
``rmtr``       recursive multilevel trust region (L-SR1) on the same hierarchy;
``mgopt``      MG/OPT V-cycles with the tau-correction, L-BFGS smoothing (5 steps
               before and after, 10 on the coarsest level).
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

import mgnn
from mgnn.multilevel import depth_hierarchy, mgopt, nested_iteration, rmtr
from mgnn.pinn import PINNObjective

METHODS = ("adam", "lbfgs", "lbfgs-resample", "tr-lsr1", "tr-gn", "nested", "rmtr", "mgopt")


class _Budget:
    """Stops a run (StopIteration from its callback) once ``work()`` reaches the budget
    and records the grid error every ``every`` units (uncharged)."""

    def __init__(self, budget, work, error, every):
        self.budget, self.work, self.error, self.every = budget, work, error, every
        self.curve = []
        self.next = 0.0
        self.t0 = time.perf_counter()

    def __call__(self, x):
        w = self.work()
        if w >= self.next:
            self.curve.append((w, self.error(x)))
            self.next = w + self.every
        if w >= self.budget:
            raise StopIteration


def run_method(name, make_objective, problem, theta0, budget, levels=3, rounds=4):
    """Train with ``name``; returns a dict with the error, work, iterations, time, curve."""
    X, U = problem.evaluation_grid()
    hessian = "gauss_newton" if name == "tr-gn" else "exact"
    obj = make_objective(hessian)

    def error(x):
        return problem.relative_l2(obj.solution(x, X))

    every = budget / 40
    t0 = time.perf_counter()
    big = 10 ** 7
    if name in ("adam", "lbfgs", "tr-lsr1", "tr-gn"):
        watch = _Budget(budget, lambda: obj.counter.work, error, every)

        def cb(intermediate_result):
            watch(intermediate_result.x)

        method, opts = {
            "adam": ("adam", {"lr": 1e-3, "maxiter": big}),
            "lbfgs": ("lbfgs", {"maxiter": big, "gtol": 1e-12}),
            "tr-lsr1": ("trust-region", {"hessian": "lsr1", "maxiter": big, "gtol": 1e-12}),
            "tr-gn": ("trust-region", {"hessian": "exact", "maxiter": big, "gtol": 1e-12,
                                       "cg_maxiter": 50}),
        }[name]
        res = mgnn.minimize(obj, theta0, method=method, options=opts, callback=cb)
        x, nit, msg = res.x, res.nit, res.message
    elif name == "lbfgs-resample":
        done = [0.0]  # work of the finished rounds
        watch = _Budget(budget, lambda: done[0] + obj.counter.work, error, every)
        x, nit = theta0, 0
        for k in range(rounds):
            obj = obj if k == 0 else make_objective(hessian, seed=10_000 + k)
            res = mgnn.minimize(obj, x, method="lbfgs", options={"maxiter": big,
                                                                 "gtol": 1e-12},
                                callback=_round_callback(watch, budget * (k + 1) / rounds))
            x, nit = res.x, nit + res.nit
            done[0] += obj.counter.work
            obj.counter.reset()
            if watch.work() >= budget:
                break
        msg = f"{k + 1} rounds of collocation points"
    else:
        H = depth_hierarchy(obj, levels=levels)

        def total():
            return sum(lv.objective.counter.work for lv in H.levels)

        start = total()
        watch = _Budget(budget, lambda: total() - start, error, every)
        if name == "nested":
            # L-BFGS iterations on the coarse levels: about 15 % of the budget each (an
            # iteration costs about 1.1 value-and-gradient evaluations of the level)
            k = [max(1, int(0.15 * budget / (1.1 * lv.objective.counter.cost["grad"]
                                              * lv.objective.counter.scale)))
                 for lv in H.levels[1:]]
            res = nested_iteration(H, k[::-1] + [big], method="lbfgs",
                                   options={"gtol": 1e-12}, theta0=H_project(H, theta0),
                                   callback=lambda lvl, r: watch(H.prolong_to_finest(r.x, lvl)))
            x, nit, msg = res.x, res.nit, res.message
        elif name == "rmtr":
            res = rmtr(H, theta0, {"hessian": "lsr1", "maxiter": big, "max_work": budget,
                                   "gtol": 1e-12}, callback=lambda x: watch(x))
            x, nit, msg = res.x, res.nit, res.message
        else:
            res = mgopt(H, theta0, "lbfgs", {"gtol": 1e-12}, pre=5, post=5, coarse_iters=10,
                        cycles=big, max_work=budget, rng=0, line_search=True,
                        callback=lambda x: watch(x))
            x, nit, msg = res.x, res.nit, res.message
        obj = H.levels[0].objective
    wall = time.perf_counter() - t0
    work = watch.work()
    err = error(x)
    watch.curve.append((work, err))
    return dict(method=name, error=err, work=work, nit=int(nit), wall=wall, message=msg,
                curve=watch.curve, x=x)


def _round_callback(watch, stop):
    def cb(intermediate_result):
        watch(intermediate_result.x)
        if watch.work() >= stop:
            raise StopIteration
    return cb


def H_project(H, theta):
    """The fine initial guess projected to the coarsest level (the same start for all)."""
    for lv in H.levels[:-1]:
        theta = lv.Pi(theta)
    return theta


def markdown_table(rows, title_cols=("method",)):
    head = list(title_cols) + ["relative L2 error", "work units", "iterations", "wall s"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r[c]) for c in title_cols] + [f"{r['error']:.2e}", f"{r['work']:.0f}",
                                                   str(r["nit"]), f"{r['wall']:.1f}"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def save(out_dir, name, rows, args, table):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, name + ".md"), "w") as fh:
        fh.write(table + "\n")
    payload = dict(arguments=vars(args),
                   rows=[{k: v for k, v in r.items() if k != "x"} for r in rows])
    with open(os.path.join(out_dir, name + ".json"), "w") as fh:
        json.dump(payload, fh, indent=2, default=float)


def plot(out_dir, name, problem, obj, best, rows):
    """Solution, reference and error of ``best`` on the grid, and error against work."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    X, U = problem.evaluation_grid()
    u = obj.solution(best["x"], X)
    shape = problem.grid_shape
    fig = plt.figure(figsize=(15, 4))
    if len(shape) == 1:
        ax = fig.add_subplot(1, 3, 1)
        ax.plot(X[:, 0], U, "k-", lw=2, label="reference")
        ax.plot(X[:, 0], u, "r--", lw=1, label=best["method"])
        ax.legend()
        ax.set_title("solution and reference")
        ax = fig.add_subplot(1, 3, 2)
        ax.semilogy(X[:, 0], np.abs(u - U) + 1e-300)
        ax.set_title("pointwise error")
    else:
        ext = [problem.domain.lower[1], problem.domain.upper[1], problem.domain.lower[0],
               problem.domain.upper[0]]
        names = problem.domain.names
        for k, (data, title) in enumerate([(u, f"PINN ({best['method']})"), (U, "reference"),
                                           (np.abs(u - U), "|error|")]):
            ax = fig.add_subplot(1, 4, k + 1)
            im = ax.imshow(data.reshape(shape), origin="lower", aspect="auto", extent=ext,
                           cmap="RdBu_r" if k < 2 else "viridis")
            ax.set_xlabel(names[1])
            ax.set_ylabel(names[0])
            ax.set_title(title)
            fig.colorbar(im, ax=ax)
    ax = fig.add_subplot(1, 4 if len(shape) > 1 else 3, 4 if len(shape) > 1 else 3)
    for r in rows:
        w, e = zip(*r["curve"], strict=True)
        ax.loglog(np.maximum(w, 1e-1), e, label=r["method"])
    ax.set_xlabel("work units (plain gradients)")
    ax.set_ylabel("relative L2 error")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(out_dir, name + ".png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def make_objective_factory(problem, net, points, bc):
    """``make(hessian, seed=None)``: the objective on ``points``, or (with ``seed``) on a
    fresh Latin-hypercube sample of the same sizes."""
    n_int = len(points.interior)
    n_bnd = sum(len(v) for v in points.boundary.values())

    def make(hessian, seed=None):
        pts = points if seed is None else problem.sample(n_int, n_bnd, "lhs", seed=seed)
        return PINNObjective.from_problem(net, problem, pts, bc=bc, hessian=hessian)
    return make
