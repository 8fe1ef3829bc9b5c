"""RMTR against single-level optimizers: work and wall time to a target training loss.

    python examples/rmtr_benchmark.py [--seeds 5] [--out out] [--quick]

Three problems, each a tanh ResNet of depth 32 trained on 2000 samples:

* ``peaks``: 5 classes in the plane (:func:`mgnn.data.peaks`), width 8;
* ``mnist1d``: an MNIST-1D-like set made here procedurally (10 classes of
  1-D signals of length 40: a class template, randomly shifted, scaled, with a
  linear trend and noise), width 16;
* ``regression``: :func:`mgnn.data.smooth_regression` (2 inputs), width 8.

The problem (the same objective and initial point for every method; these are
choices of the problem, not of a method, and are made so that depth
coarsening has the setting in which the layer-parallel / nested-iteration
literature shows coarse networks to be good models of fine ones):

* depth 32 (``DEPTH``): the coarse levels of 16 and 8 layers cost about 0.5
  and 0.26 of a fine evaluation;
* ``init='layer_parallel'``: Glorot opening and closing layers, residual
  weights ``INNER_SCALE * U(-1, 1)`` with ``INNER_SCALE = 0.1`` (small weights
  that vary little from layer to layer, instead of Glorot weights that are
  independent random draws per layer, which no coarse network represents);
* the objective's time-derivative regulariser ``smoothness = SMOOTHNESS =
  1e-3`` (``(smoothness / 2h) sum ||theta_{n+1} - theta_n||^2``), plus the
  Tikhonov term of each problem (1e-4 classification, 1e-6 regression).

Methods (all in :mod:`mgnn`, all on the same initial parameters per seed):

* RMTR: V-cycle, 3 levels in depth (32, 16, 8 layers), first-order coherent
  model, coarse trust regions in the prolongation norm ``||P s||`` (Gratton,
  Sartenaer & Toint), L-SR1 curvature (memory 10) on every level, Steihaug-Toint
  CG, one pre- and one post-smoothing step on the finest level,
  ``coarse_iters = 10`` steps on the coarsest, the default ratio test and
  radius rule (``RMTR_OPTIONS``);
* TR: the single-level trust region with the same subproblem solver, curvature
  (L-SR1, memory 10) and radius parameters.

Why L-SR1 for both: the exact Hessian-vector product costs 8/3 work units, and
with the Steihaug forcing term a TR step costs about 1 + 2 * 8/3 units; in a
one-seed pilot on peaks (depth 32, budget 300) L-SR1 reached a lower loss than
the exact Hessian for both TR (0.35 vs 0.45) and RMTR (0.45 vs 0.52). Why
``coarse_iters = 10``: the same pilot gave 0.41 (10) against 0.45 (5) and 0.40
(20, slower in wall time). ``coarse_gamma1 = 1`` (keep the radius after a
rejected coarse correction) made no consistent difference with L-SR1 (0.46 vs
0.45) and is left at the default. Pilot numbers in the report of issue 7.

Other methods:
* L-BFGS (strong Wolfe line search), full batch;
* Adam and SGD (momentum 0.9), mini-batches of 100, learning rate tuned per
  problem on seed 0 from the grids ``ADAM_LRS`` / ``SGD_LRS`` (the rate that
  reaches the target with the least work; if none does, the lowest loss at the
  end of the budget).

Each run stops when the training loss on all data reaches the problem's target
(a fixed number per problem, chosen from a one-seed pilot run so that the
single-level trust region reaches it within the budget; the targets and
budgets of the depth-16 / Glorot version are kept - peaks 0.45 / 400,
mnist1d 0.30 / 300, regression 2e-3 / 400 - and a one-seed pilot of L-SR1 TR
on the depth-32 problems reaches each at about half its budget) or when the
work budget is spent. Work is counted in fine-gradient equivalents (one
value-and-gradient sweep of the depth-32 network on all 2000 samples = 1; a
Hessian-vector product = 8/3, a value = 1/3, coarse levels scaled by their
flop ratio). Wall time excludes the monitoring
evaluations of the stochastic methods (their full training loss is measured
every ``MONITOR_EVERY`` iterations by a separate, uncharged objective, which
also sets the resolution of their work-to-target). The validation metric is
taken at the end of the run (at the target, or at the budget).

Writes ``rmtr_benchmark.md`` (the table and the ratios) and
``rmtr_benchmark.png`` (training loss against work, seed 0) into ``--out``;
``main(argv)`` returns the table rows.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np

import mgnn
from mgnn.data import Dataset, peaks, smooth_regression
from mgnn.multilevel import depth_hierarchy, rmtr

ADAM_LRS = (1e-3, 3e-3, 1e-2, 3e-2)
SGD_LRS = (1e-2, 3e-2, 1e-1, 3e-1)
MONITOR_EVERY = 5
BATCH = 100
METHODS = ("RMTR", "TR", "L-BFGS", "Adam", "SGD")
DEPTH = 32
INNER_SCALE = 0.1
SMOOTHNESS = 1e-3
CURVATURE = {"hessian": "lsr1", "memory": 10}
RMTR_OPTIONS = dict(CURVATURE, cycle="V", model="first-order", coarse_norm="prolongation",
                    pre_smooth=[1, 0], post_smooth=[1, 0], coarse_iters=10)


def mnist1d(n_train=2000, n_val=500, length=40, seed=0):
    """A procedural MNIST-1D-like data set: 10 classes of noisy, shifted 1-D templates."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, 12)
    templates = np.array([np.sin(2 * np.pi * (k % 5 + 1) * t / 2 + k) * (1 + (k >= 5) * t)
                          for k in range(10)])
    n = n_train + n_val
    y = rng.integers(0, 10, n)
    X = np.zeros((n, length))
    for i in range(n):
        s = rng.integers(0, length - 12)
        X[i, s:s + 12] = rng.uniform(0.8, 1.2) * templates[y[i]]
    grid = np.linspace(-1.0, 1.0, length)
    X += rng.normal(0.0, 0.1, (n, 1)) * grid + rng.normal(0.0, 0.25, X.shape)
    X = (X - X.mean()) / X.std()
    return Dataset(X[:n_train], y[:n_train], X[n_train:], y[n_train:], 10,
                   "classification", "mnist1d")


def problems(quick):
    n = 200 if quick else 2000
    depth = 8 if quick else DEPTH
    out = []
    d = peaks(n, n // 4, seed=0)
    out.append(("peaks", d, mgnn.ResNet(2, 8, depth, 5, T=5.0), 1e-4,
                0.80 if quick else 0.45, 40 if quick else 400))
    d = mnist1d(n, n // 4, seed=0)
    out.append(("mnist1d", d, mgnn.ResNet(40, 16, depth, 10, T=4.0), 1e-4,
                1.20 if quick else 0.30, 40 if quick else 300))
    d = smooth_regression(n, n // 4, seed=0)
    out.append(("regression", d, mgnn.ResNet(2, 8, depth, 1, T=2.0, task="regression"), 1e-6,
                0.02 if quick else 2e-3, 40 if quick else 400))
    return out


class Monitor:
    """Callback: full training loss against work and wall time; stops at target or budget."""

    def __init__(self, obj, target, budget, stochastic):
        self.mon = obj.with_net(obj.net)  # own counter: monitoring is not charged
        self.target, self.budget, self.stochastic = target, budget, stochastic
        self.work, self.wall, self.loss = [], [], []
        self.overhead = 0.0
        self.hit = None  # (work, wall)
        self.calls = 0

    def __call__(self, intermediate_result):
        r = intermediate_result
        self.calls += 1
        if self.stochastic:
            if self.calls % MONITOR_EVERY and r.work < self.budget:
                return
            t = time.perf_counter()
            loss = self.mon.value(r.x)
            self.overhead += time.perf_counter() - t
        else:
            loss = r.fun
        wall = r.time - self.overhead
        self.work.append(r.work)
        self.wall.append(wall)
        self.loss.append(loss)
        if loss <= self.target:
            self.hit = (r.work, wall)
            raise StopIteration
        if r.work >= self.budget:
            raise StopIteration


def run_method(method, obj, H, theta0, target, budget, seed, lr=None):
    stochastic = method in ("Adam", "SGD")
    mon = Monitor(obj, target, budget, stochastic)
    f0 = obj.with_net(obj.net).value(theta0)
    mon.work.append(0.0)
    mon.wall.append(0.0)
    mon.loss.append(f0)
    big = 10 ** 6
    if method == "RMTR":
        res = rmtr(H, theta0, options=dict(RMTR_OPTIONS, maxiter=big, gtol=0.0,
                                           max_work=budget), callback=mon)
    elif method == "TR":
        res = mgnn.minimize(obj, theta0, method="trust-region",
                            options=dict(CURVATURE, maxiter=big, gtol=0.0), callback=mon)
    elif method == "L-BFGS":
        res = mgnn.minimize(obj, theta0, method="lbfgs", options={"maxiter": big, "gtol": 0.0},
                            callback=mon)
    elif method == "Adam":
        res = mgnn.minimize(obj, theta0, method="adam",
                            options={"lr": lr, "batch_size": BATCH, "maxiter": big, "rng": seed},
                            callback=mon)
    else:
        res = mgnn.minimize(obj, theta0, method="sgd",
                            options={"lr": lr, "momentum": 0.9, "batch_size": BATCH,
                                     "maxiter": big, "rng": seed}, callback=mon)
    return mon, res


def val_metric(obj, x, d):
    if obj.net.task == "classification":
        return obj.accuracy(x, d.X_val, d.Y_val)
    return obj.error(x, d.X_val, d.Y_val)[0]


def tune(method, grid, obj, H, theta0, target, budget):
    best, key = None, None
    for lr in grid:
        mon, _ = run_method(method, obj, H, theta0, target, budget, 0, lr)
        k = (0, mon.hit[0]) if mon.hit else (1, min(mon.loss) if all(map(math.isfinite, mon.loss))
                                             else math.inf)
        if key is None or k < key:
            best, key = lr, k
    return best


def fmt(v, spec):
    return "not reached" if v is None or not math.isfinite(v) else format(v, spec)


def ratio(v):
    return "n/a (RMTR did not reach the target)" if math.isnan(v) else f"{v:.2f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", default="out")
    ap.add_argument("--quick", action="store_true",
                    help="tiny problems, one seed, no tuning (a smoke test)")
    args = ap.parse_args(argv)
    seeds = 1 if args.quick else args.seeds
    os.makedirs(args.out, exist_ok=True)
    rows, curves, lrs = [], {}, {}
    t_start = time.perf_counter()
    for name, d, net, tik, target, budget in problems(args.quick):
        obj = mgnn.Objective(net, d.X_train, d.Y_train, tikhonov=tik, smoothness=SMOOTHNESS)
        H = depth_hierarchy(obj, 3)
        theta_seed0 = net.init(0, "layer_parallel", inner_scale=INNER_SCALE)
        lrs[name] = {"Adam": ADAM_LRS[2], "SGD": SGD_LRS[1]} if args.quick else {
            "Adam": tune("Adam", ADAM_LRS, obj, H, theta_seed0, target, budget),
            "SGD": tune("SGD", SGD_LRS, obj, H, theta_seed0, target, budget)}
        for method in METHODS:
            hits, walls, vals, finals = [], [], [], []
            for seed in range(seeds):
                theta0 = net.init(seed, "layer_parallel", inner_scale=INNER_SCALE)
                mon, res = run_method(method, obj, H, theta0, target, budget, seed,
                                      lrs[name].get(method))
                hits.append(mon.hit[0] if mon.hit else math.inf)
                walls.append(mon.hit[1] if mon.hit else math.inf)
                vals.append(val_metric(obj, res.x, d))
                finals.append(mon.loss[-1])
                if seed == 0:
                    curves[(name, method)] = (np.array(mon.work), np.array(mon.loss))
            rows.append(dict(problem=name, method=method, target=target, budget=budget,
                             reached=sum(math.isfinite(h) for h in hits), seeds=seeds,
                             work=float(np.median(hits)), work_min=float(np.min(hits)),
                             work_max=float(np.max(hits)), wall=float(np.median(walls)),
                             val=float(np.median(vals)), final_loss=float(np.median(finals)),
                             lr=lrs[name].get(method),
                             metric="val acc" if net.task == "classification" else "val MAE"))
            r = rows[-1]
            print(f"{name:10s} {method:7s} reached {r['reached']}/{seeds}  "
                  f"work {fmt(r['work'], '.1f')}  wall {fmt(r['wall'], '.2f')} s  "
                  f"{r['metric']} {r['val']:.4f}", flush=True)
    total = time.perf_counter() - t_start
    lines = ["# RMTR benchmark", "",
             f"Medians over {seeds} seed(s); work in fine-gradient equivalents; "
             f"total run time {total:.0f} s.", "",
             "| problem | target loss | method | lr | reached | work to target (median) "
             "| [min, max] | wall s to target | validation (at end) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lr = "" if r["lr"] is None else f"{r['lr']:g}"
        lines.append(f"| {r['problem']} | {r['target']:g} | {r['method']} | {lr} | "
                     f"{r['reached']}/{r['seeds']} | {fmt(r['work'], '.1f')} | "
                     f"[{fmt(r['work_min'], '.1f')}, {fmt(r['work_max'], '.1f')}] | "
                     f"{fmt(r['wall'], '.2f')} | {r['metric']} {r['val']:.4f} |")
    lines += ["", "| problem | TR work / RMTR work | Adam work / RMTR work | target >= 2 met |",
              "|---|---|---|---|"]
    ratios = {}
    for name in dict.fromkeys(r["problem"] for r in rows):
        w = {r["method"]: r["work"] for r in rows if r["problem"] == name}
        if math.isfinite(w["RMTR"]):  # inf: the other method did not reach the target
            a, b = w["TR"] / w["RMTR"], w["Adam"] / w["RMTR"]
        else:
            a = b = math.nan  # RMTR did not reach it
        ratios[name] = (a, b)
        met = "yes" if a >= 2 and b >= 2 else "no"
        lines.append(f"| {name} | {ratio(a)} | {ratio(b)} | {met} |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "rmtr_benchmark.md"), "w") as fh:
        fh.write(text)
    print(text)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["problem"] for r in rows))
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4))
    for ax, name in zip(np.atleast_1d(axes), names, strict=True):
        for method in METHODS:
            w, f = curves[(name, method)]
            ax.semilogy(w, f, label=method)
        target = next(r["target"] for r in rows if r["problem"] == name)
        ax.axhline(target, color="k", ls=":", lw=1)
        ax.set_title(name)
        ax.set_xlabel("work (fine-gradient equivalents)")
        ax.set_ylabel("training loss")
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "rmtr_benchmark.png"), dpi=100)
    plt.close(fig)
    return {"rows": rows, "ratios": ratios, "lrs": lrs}


if __name__ == "__main__":
    main()
