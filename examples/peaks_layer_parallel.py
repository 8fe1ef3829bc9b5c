"""Layer-parallel training on peaks: wall time to a validation accuracy, serial vs MGRIT.

    python examples/peaks_layer_parallel.py [--depth 512] [--target 0.95] [--out out/]
    mpiexec -n 4 python examples/peaks_layer_parallel.py [--quick] [--mgrit cf=4 ...]

The same ResNet (width 8, ``--depth`` residual layers, T = 5, smoothed ReLU, small
inner weights and the time-derivative regulariser of the layer-parallel papers) is
trained with Adam twice from the same start: first serially (rank 0 alone; the other
ranks sleep), then layer-parallel on all ranks (:class:`~mgnn.mgrit.LayerParallelObjective`,
one-shot :class:`~mgnn.mgrit.MGRITPropagation` with its defaults or the ``--mgrit``
options). Every ``--eval-every`` steps the loss and the validation accuracy are
recorded against the training wall time (the evaluation itself is not counted).

Prints, for both runs, the wall time to reach ``--target`` validation accuracy, the
final accuracy, the time per step and the MGRIT statistics, and plots loss and
accuracy against wall time, serial and MGRIT together, in
``peaks_layer_parallel.png``. ``main(argv)`` returns the key numbers (rank 0).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import mgnn
from mgnn.data import peaks
from mgnn.mgrit import LayerParallelObjective, MGRITPropagation
from mgnn.nets import ResNet
from mgnn.objective import Objective
from mgnn.parallel import get_comm
from mgnn.runs.config import parse_options


def _sleep_until_all_arrive(comm):
    """A barrier that does not spin: ranks waiting for rank 0's serial run sleep."""
    if comm.size == 1:
        return
    req = comm.comm.Ibarrier()
    while not req.Test():
        time.sleep(0.01)


class Recorder:
    """Callback: every ``every`` steps the loss and validation accuracy against the
    training wall time (evaluation time excluded). Stops at ``stop`` accuracy."""

    def __init__(self, obj, X_val, y_val, every, theta_of, rank0, stop=None):
        self.obj, self.X_val, self.y_val = obj, X_val, y_val
        self.every, self.theta_of, self.rank0, self.stop = every, theta_of, rank0, stop
        self.rows = []
        self.paused = 0.0
        self.start = time.perf_counter()

    def elapsed(self):
        return time.perf_counter() - self.start - self.paused

    def __call__(self, intermediate_result):
        r = intermediate_result
        if r.nit % self.every:
            return
        tic = time.perf_counter()
        t = self.elapsed()
        theta = self.theta_of(r.x)  # collective for the distributed objective
        acc = self._accuracy(theta) if self.rank0 else None
        self.rows.append((r.nit, t, float(r.fun), acc))
        self.paused += time.perf_counter() - tic
        if self.stop is not None:
            done = acc is not None and acc >= self.stop
            if getattr(self.obj, "comm", None) is not None and self.obj.comm.size > 1:
                done = self.obj.comm.allreduce(float(done), op="max") > 0
            if done:
                raise StopIteration

    def _accuracy(self, theta):
        pred = self.obj.net.forward(theta, self.X_val).argmax(axis=1)
        return float((pred == self.y_val).mean())

    def time_to(self, target):
        for _, t, _, acc in self.rows:
            if acc is not None and acc >= target:
                return t
        return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="out")
    ap.add_argument("--quick", action="store_true", help="small run for smoke tests")
    ap.add_argument("--depth", type=int, default=None, help="residual layers (default 512)")
    ap.add_argument("--maxiter", type=int, default=None, help="Adam steps per run")
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--batch", type=int, default=0, help="mini-batch size (0: full batch)")
    ap.add_argument("--target", type=float, default=0.95, help="validation accuracy")
    ap.add_argument("--eval-every", type=int, default=None)
    ap.add_argument("--until-target", action="store_true",
                    help="stop each run when it reaches the target accuracy")
    ap.add_argument("--no-serial", action="store_true", help="skip the serial run")
    ap.add_argument("--mgrit", nargs="*", default=[], metavar="KEY=VALUE",
                    help="MGRITPropagation options (default: its defaults)")
    args = ap.parse_args(argv)
    comm = get_comm()
    rank0 = comm.rank == 0
    depth = args.depth or (32 if args.quick else 512)
    maxiter = args.maxiter or (20 if args.quick else 1000)
    every = args.eval_every or (5 if args.quick else 25)
    n_train = 500 if args.quick else 5000
    data = peaks(n_train=n_train, n_val=1000, seed=0)
    net = ResNet(2, 8, depth, 5, T=5.0, activation="smooth_relu")
    theta0 = net.init(np.random.default_rng(0), scheme="layer_parallel", inner_scale=1e-2)
    reg = dict(tikhonov=1e-6, smoothness=1e-3)
    opts = {"lr": args.lr, "maxiter": maxiter}
    if args.batch:
        opts.update(batch_size=args.batch, rng=0)
    stop = args.target if args.until_target else None
    results = {}

    # serial: rank 0 alone
    if not args.no_serial:
        if rank0:
            obj = Objective(net, data.X_train, data.Y_train, **reg)
            rec = Recorder(obj, data.X_val, data.Y_val, every, lambda x: x, True, stop)
            res = mgnn.minimize(obj, theta0, method="adam", options=opts, callback=rec)
            results["serial"] = dict(rec=rec, res=res, time=rec.elapsed(),
                                     val_acc=rec._accuracy(res.x))
        _sleep_until_all_arrive(comm)

    # layer-parallel: all ranks
    prop = MGRITPropagation(**parse_options(args.mgrit))
    lp = LayerParallelObjective(net, data.X_train, data.Y_train, comm=comm, propagation=prop,
                                tikhonov=reg["tikhonov"], smoothness=reg["smoothness"])
    comm.barrier()
    rec = Recorder(lp, data.X_val, data.Y_val, every, lp.gather, rank0, stop)
    rec.obj = lp
    res = mgnn.minimize(lp, lp.scatter(theta0), method="adam", options=opts, callback=rec)
    elapsed = rec.elapsed()
    full = lp.gather(res.x)
    results["mgrit"] = dict(rec=rec, res=res, time=elapsed,
                            val_acc=rec._accuracy(full) if rank0 else None)
    if not rank0:
        return None

    print(f"ResNet width 8, {depth} layers, smoothed ReLU, Adam lr {args.lr:g}, "
          f"{'full batch' if not args.batch else f'batch {args.batch}'}, {n_train} samples; "
          f"MGRIT on {comm.size} rank(s):\n  {prop!r}")
    print(f"{'':>7} {'steps':>6} {'s/step':>8} {'time [s]':>9} {'to ' + str(args.target):>9} "
          f"{'val. acc.':>10} {'best':>7} {'loss':>8}")
    summary = {}
    for name, r in results.items():
        to = r["rec"].time_to(args.target)
        per = r["time"] / max(r["res"].nit, 1)
        # the best validation accuracy reached at an evaluation during training (Adam's
        # last iterate oscillates: the final one alone says little about parity)
        best = max([a for *_, a in r["rec"].rows if a is not None] + [r["val_acc"]])
        print(f"{name:>7} {r['res'].nit:>6} {per:>8.4f} {r['time']:>9.2f} "
              f"{'-' if to is None else f'{to:.2f}':>9} {r['val_acc']:>10.4f} {best:>7.4f} "
              f"{r['res'].fun:>8.4f}")
        summary[name] = dict(steps=int(r["res"].nit), time=r["time"], time_to_target=to,
                             val_acc=r["val_acc"], best_val_acc=best,
                             loss=float(r["res"].fun),
                             curve=[list(x) for x in r["rec"].rows])
    if "serial" in summary and summary["serial"]["time_to_target"] and \
            summary["mgrit"]["time_to_target"]:
        sp = summary["serial"]["time_to_target"] / summary["mgrit"]["time_to_target"]
        print(f"speedup in wall time to {args.target:.0%} validation accuracy: {sp:.2f}")
        summary["speedup_to_target"] = sp
    st = prop.last_stats()
    if st is not None:
        print(f"MGRIT last evaluation: forward {st['forward'].level_steps} steps, adjoint "
              f"{st['adjoint'].level_steps} steps per level")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "peaks_layer_parallel.json").write_text(json.dumps(summary, indent=1))
    png = out / "peaks_layer_parallel.png"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
        for name, s in summary.items():
            if not isinstance(s, dict):
                continue
            rows = np.array([(t, f, np.nan if a is None else a) for _, t, f, a in s["curve"]])
            if rows.size == 0:
                continue
            label = "serial" if name == "serial" else f"MGRIT, {comm.size} rank(s)"
            a1.semilogy(rows[:, 0], rows[:, 1], label=label)
            a2.plot(rows[:, 0], rows[:, 2], label=label)
        a2.axhline(args.target, color="k", lw=0.5, ls="--")
        a1.set_xlabel("wall time [s]")
        a1.set_ylabel("training loss")
        a2.set_xlabel("wall time [s]")
        a2.set_ylabel("validation accuracy")
        a1.legend()
        a2.legend()
        fig.suptitle(f"peaks, ResNet {depth} layers: serial vs layer-parallel (MGRIT)")
        fig.tight_layout()
        fig.savefig(png, dpi=120)
        plt.close(fig)
    except ImportError:
        png = None
    summary["png"] = None if png is None else str(png)
    summary["ranks"] = comm.size
    return summary


if __name__ == "__main__":
    main()
