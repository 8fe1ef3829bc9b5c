"""Every method of ``mgnn.minimize`` on the same ResNet and peaks data, for a fixed work budget.

    python examples/peaks_optimizers.py                 # full comparison (a few minutes)
    python examples/peaks_optimizers.py --quick         # seconds: a smoke run
    python examples/peaks_optimizers.py --budget 600 --depth 32 --width 8

The network (default: width 8, 16 residual layers, tanh, T = 5, Glorot
initialisation, Tikhonov 1e-6) is trained on peaks (5000 training points, 1000
validation points) from the same initial parameters by

* ``sgd``  - SGD with heavy-ball momentum 0.9, mini-batches of ``--batch-size``;
* ``adam`` - Adam, mini-batches of ``--batch-size``;
* ``lbfgs`` - full-batch L-BFGS (10 pairs, strong-Wolfe line search);
* ``tr-exact`` - full-batch trust region, Steihaug-Toint CG on exact
  Hessian-vector products (second-order adjoint), with a cap on the CG iterations
  per subproblem from :data:`CG_GRID` (each product costs 8/3 work units: an
  uncapped subproblem would spend much of the budget on one step);
* ``tr-lsr1`` - full-batch trust region, Steihaug-Toint CG on the L-SR1 matrix
  (10 pairs).

Every run gets the same budget of work units (fine-gradient equivalents: one
value-and-gradient on all training data = 1, a mini-batch its share, a
value-only evaluation 1/3, a Hessian-vector product 8/3; see :mod:`mgnn.work`).
A callback evaluates the validation accuracy each time the work crosses the next
of ``--checkpoints`` equally spaced marks (validation evaluations are not charged)
and raises ``StopIteration`` at the first iterate whose work reaches the budget, so
every method overshoots the budget by at most its last iteration.

Learning rates of the stochastic methods are tuned on a small grid
(:data:`LR_GRID`), and so is the CG cap of ``tr-exact`` (:data:`CG_GRID`); every grid
point is run with the full budget and the one with the lowest final training loss
on all data is kept (the validation set plays no part in the choice). Otherwise the
full-batch methods run with their defaults (L-BFGS initial step 1; trust region
initial radius 1, eta1 0.1, eta2 0.75, gamma1 0.25, gamma2 2; CG forcing term
min(0.5, sqrt(||g||)) with exact Hessians).

Prints the tuning runs and a Markdown table (method, work, final training loss on
all data, validation accuracy, wall time, iterations) and writes it with the PNG of
validation accuracy against work units (``peaks_optimizers.png``, one curve per
method) into ``--out``. ``main(argv)`` returns the table rows (dicts).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import mgnn
from mgnn.data import peaks

#: Learning-rate grids of the stochastic methods (each is run with the full budget).
LR_GRID = {"sgd": [0.003, 0.01, 0.03, 0.1], "adam": [0.0003, 0.001, 0.003, 0.01]}
#: Grid of CG iterations per subproblem of the exact-Hessian trust region.
CG_GRID = [3, 5, 10, 20]


class Tracker:
    """Callback: validation accuracy at work marks; ``StopIteration`` at the budget."""

    def __init__(self, obj, X_val, Y_val, budget, checkpoints):
        self.obj, self.X_val, self.Y_val = obj, X_val, Y_val
        self.budget = budget
        self.marks = np.linspace(0.0, budget, checkpoints + 1)[1:]
        self.next = 0
        self.work, self.acc = [], []

    def start(self, theta0):
        self.work.append(0.0)
        self.acc.append(self.obj.accuracy(theta0, self.X_val, self.Y_val))

    def __call__(self, intermediate_result):
        r = intermediate_result
        if self.next < len(self.marks) and r.work >= self.marks[self.next]:
            while self.next < len(self.marks) and r.work >= self.marks[self.next]:
                self.next += 1
            self.work.append(r.work)
            self.acc.append(self.obj.accuracy(r.x, self.X_val, self.Y_val))
        if r.work >= self.budget * (1.0 - 1e-12):  # round-off in the work sums
            raise StopIteration


def run_method(obj, theta0, method, options, data, budget, checkpoints):
    """One run with the work budget; returns a row of the table plus the curve."""
    track = Tracker(obj, data.X_val, data.Y_val, budget, checkpoints)
    track.start(theta0)
    t0 = time.perf_counter()
    res = mgnn.minimize(obj, theta0, method=method, options=options, callback=track)
    wall = time.perf_counter() - t0
    if not track.work or track.work[-1] != res.work:  # stopped before the budget
        track.work.append(res.work)
        track.acc.append(obj.accuracy(res.x, data.X_val, data.Y_val))
    saved = obj.counter.snapshot()
    loss = float(obj.value(res.x))  # on all training data (not charged to the run)
    c = obj.counter
    c.nfev, c.njev, c.nhev, c.work = saved
    return {"work": float(res.work), "loss": loss, "val_acc": float(track.acc[-1]),
            "wall": wall, "nit": int(res.nit), "message": res.message,
            "curve": (list(track.work), list(track.acc))}


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--depth", type=int, default=16)
    ap.add_argument("--T", type=float, default=5.0)
    ap.add_argument("--activation", default="tanh")
    ap.add_argument("--tikhonov", type=float, default=1e-6)
    ap.add_argument("--n-train", type=int, default=5000)
    ap.add_argument("--n-val", type=int, default=1000)
    ap.add_argument("--budget", type=float, default=400.0,
                    help="work units (fine-gradient equivalents) per run")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--checkpoints", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    ap.add_argument("--out", default="out")
    args = ap.parse_args(argv)
    if args.quick:
        args.n_train, args.n_val, args.depth, args.budget = 400, 100, 4, 8.0
        args.checkpoints = 4
    return args


def markdown(rows, args):
    lines = [f"peaks, ResNet width {args.width}, depth {args.depth}, {args.activation}, "
             f"T = {args.T:g}; {args.n_train} training / {args.n_val} validation points; "
             f"budget {args.budget:g} work units", "",
             "| method | setting | work | training loss | validation accuracy | wall (s) "
             "| iterations |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['setting']} | {r['work']:.1f} | {r['loss']:.4f} "
                     f"| {r['val_acc']:.4f} | {r['wall']:.2f} | {r['nit']} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse(argv)
    data = peaks(args.n_train, args.n_val, seed=args.seed)
    net = mgnn.ResNet(2, args.width, args.depth, 5, T=args.T, activation=args.activation)
    obj = mgnn.Objective(net, data.X_train, data.Y_train, tikhonov=args.tikhonov)
    theta0 = net.init(np.random.default_rng(args.seed), scheme="glorot")
    obj.value_and_grad(theta0)  # compile the kernels before any timing
    obj.hessp(theta0, theta0)
    bs = min(args.batch_size, args.n_train)
    big = 10**7  # iterations are limited by the work budget, not by maxiter
    configs = []
    for lr in LR_GRID["sgd"]:
        configs.append(("sgd", f"lr={lr:g}, momentum=0.9, batch={bs}", "sgd",
                        {"lr": lr, "momentum": 0.9, "batch_size": bs, "maxiter": big,
                         "rng": args.seed}))
    for lr in LR_GRID["adam"]:
        configs.append(("adam", f"lr={lr:g}, batch={bs}", "adam",
                        {"lr": lr, "batch_size": bs, "maxiter": big, "rng": args.seed}))
    configs.append(("lbfgs", "memory=10", "lbfgs", {"maxiter": big, "gtol": 0.0}))
    for m in CG_GRID:
        configs.append(("tr-exact", f"Steihaug CG <= {m} it., exact hessp", "trust-region",
                        {"maxiter": big, "gtol": 0.0, "hessian": "exact", "cg_maxiter": m}))
    configs += [
        ("tr-lsr1", "Steihaug CG, L-SR1 memory=10", "trust-region",
         {"maxiter": big, "gtol": 0.0, "hessian": "lsr1"}),
    ]
    print(net)
    print(f"budget {args.budget:g} work units per run\n")
    best = {}
    for name, setting, method, opts in configs:
        row = run_method(obj, theta0, method, opts, data, args.budget, args.checkpoints)
        row.update(method=name, setting=setting)
        print(f"{name:9s} {setting:32s} work {row['work']:7.1f}  loss {row['loss']:.4f}  "
              f"val {row['val_acc']:.4f}  {row['wall']:6.2f} s  {row['nit']:6d} it  "
              f"{row['message']}", flush=True)
        if name not in best or row["loss"] < best[name]["loss"]:
            best[name] = row
    rows = list(best.values())
    md = markdown(rows, args)
    print()
    print(md)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "peaks_optimizers.md"), "w") as f:
        f.write(md + "\n")
    plot(rows, args)
    return rows


def plot(rows, args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        w, a = r["curve"]
        ax.plot(w, a, marker=".", ms=3, label=f"{r['method']} ({r['setting']})")
    ax.set_xlabel("work units (fine-gradient equivalents)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"peaks, ResNet width {args.width}, depth {args.depth}")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = os.path.join(args.out, "peaks_optimizers.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print("wrote", path)


if __name__ == "__main__":
    main()
