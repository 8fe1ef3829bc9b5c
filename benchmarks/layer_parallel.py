"""Serial vs layer-parallel (MGRIT) value-and-gradient: measured times and the model.

    python benchmarks/layer_parallel.py [--out out/] [--samples 64] [--quick]

For N in {64, 256, 1024} and width w in {8, 32}: median wall time of one
value-and-gradient evaluation with serial propagation, with one-shot MGRIT
(cf 4, 3 levels, FCF, 2 forward / 1 adjoint iterations) on 1 rank, and with
MGRIT on 2 ranks (``mpiexec -n 2``, layers distributed), next to the prediction
of :class:`mgnn.mgrit.model.PerformanceModel` from per-step costs measured
here (and the message latency measured by ping-pong under mpiexec). Then the
model's predicted speedup at P = 16, 64, 256 for N = 1024, and a PNG of the
predicted speedup against P. BLAS runs single-threaded (one core per rank).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _common import format_table, machine_info, measure, save_json  # noqa: E402

MGRIT = dict(levels=3, cf=4, relax="FCF", fwd_iters=2, bwd_iters=1)


def setup(N, w, s):
    from mgnn.nets import ResNet

    rng = np.random.default_rng(0)
    net = ResNet(2, w, N, 5, T=5.0, activation="tanh")
    X = rng.standard_normal((s, 2))
    y = rng.integers(0, 5, s)
    theta = net.init(rng)
    return net, X, y, theta


def child(path, sizes, s):
    """Under mpiexec: LayerParallelObjective on all ranks; rank 0 writes JSON."""
    from mgnn.mgrit import LayerParallelObjective, MGRITPropagation
    from mgnn.mgrit.model import measure_latency
    from mgnn.parallel import get_comm

    comm = get_comm()
    out = {}
    lat, bw = measure_latency(comm, nbytes=8 * s * 8)
    out["latency"], out["bandwidth"] = lat, bw
    for N, w in sizes:
        net, X, y, theta = setup(N, w, s)
        obj = LayerParallelObjective(net, X, y, comm=comm,
                                     propagation=MGRITPropagation(**MGRIT))
        tl = obj.scatter(theta)
        obj.value_and_grad(tl)
        ts = []
        inner = max(1, 2048 // N)  # the same count on every rank (collectives inside)
        for _ in range(5):
            comm.barrier()
            tic = time.perf_counter()
            for _ in range(inner):
                obj.value_and_grad(tl)
            ts.append(comm.allreduce((time.perf_counter() - tic) / inner, op="max"))
        out[f"{N},{w}"] = float(np.median(ts))
    if comm.rank == 0:
        Path(path).write_text(json.dumps(out))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="out")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    Ns = (64, 256) if args.quick else (64, 256, 1024)
    sizes = [(N, w) for N in Ns for w in (8, 32)]
    s = args.samples
    if args.child:
        child(args.child, sizes, s)
        return None

    from mgnn.mgrit import MGRITPropagation
    from mgnn.mgrit.model import PerformanceModel, measure_step_costs
    from mgnn.objective import Objective

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # the 2-rank measurements first (they need the cores to themselves)
    p2 = None
    tmp = out / "layer_parallel_p2.json"
    cmd = ["mpiexec", "-n", "2", sys.executable, __file__, "--child", str(tmp),
           "--samples", str(s)] + (["--quick"] if args.quick else [])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
        if proc.returncode == 0:
            p2 = json.loads(tmp.read_text())
        else:
            print("mpiexec -n 2 failed:", proc.stderr[-500:])
    except (OSError, subprocess.TimeoutExpired) as exc:
        print("no 2-rank measurement:", exc)

    rows = []
    for N, w in sizes:
        net, X, y, theta = setup(N, w, s)
        ser = Objective(net, X, y)
        par = Objective(net, X, y, propagation=MGRITPropagation(**MGRIT))
        t_ser = measure(lambda: ser.value_and_grad(theta), repeats=5, min_sample=0.2)  # noqa: B023
        par.value_and_grad(theta)
        t_par = measure(lambda: par.value_and_grad(theta), repeats=5, min_sample=0.2)  # noqa: B023
        costs = measure_step_costs(net, s)
        model = PerformanceModel(costs)
        row = dict(N=N, w=w, serial=t_ser, serial_pred=model.serial_time(N),
                   mgrit1=t_par, mgrit1_pred=model.mgrit_time(N, 1, **MGRIT))
        if p2 is not None:
            costs.latency, costs.bandwidth = p2["latency"], p2["bandwidth"]
            row["mgrit2"] = p2[f"{N},{w}"]
            row["mgrit2_pred"] = PerformanceModel(costs).mgrit_time(N, 2, **MGRIT)
        for k in ("serial", "mgrit1", "mgrit2"):
            if k in row:
                row[k + "_err"] = 100 * (row[k + "_pred"] - row[k]) / row[k]
        row["costs"] = vars(costs).copy()
        rows.append(row)
    ms = lambda v: f"{1e3 * v:.2f}"  # noqa: E731
    pct = lambda v: f"{v:+.0f}%"  # noqa: E731
    cols = [("N", "N", "d"), ("w", "w", "d"),
            ("serial", "serial ms", ms), ("serial_pred", "model", ms), ("serial_err", "err", pct),
            ("mgrit1", "MGRIT P=1", ms), ("mgrit1_pred", "model", ms), ("mgrit1_err", "err", pct),
            ("mgrit2", "MGRIT P=2", ms), ("mgrit2_pred", "model", ms), ("mgrit2_err", "err", pct)]
    print(machine_info() if callable(machine_info) else "")
    print(f"value_and_grad, {s} samples, MGRIT {MGRIT}; medians")
    print(format_table(rows, cols))
    errs = [abs(r[k]) for r in rows for k in ("serial_err", "mgrit1_err", "mgrit2_err") if k in r]
    print(f"model error: median {np.median(errs):.0f}%, max {np.max(errs):.0f}% "
          f"(target 25%); within 25%: {sum(e <= 25 for e in errs)}/{len(errs)}")

    # predicted speedups at scale from the largest case's costs
    big = rows[-1] if rows[-1]["N"] == 1024 else None
    costs = rows[-1]["costs"]
    from mgnn.mgrit.model import StepCosts

    sc = StepCosts(**costs)
    if p2 is None:
        sc.latency = 5e-6
    model = PerformanceModel(sc)
    Ps = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
    configs = {"cf4 L3 (2/1 it)": MGRIT,
               "cf4 L5 (2/1 it)": dict(MGRIT, levels=5),
               "cf2 L8 (2/1 it)": dict(MGRIT, cf=2, levels=8)}
    speed = {name: [model.speedup(1024, P, **cfg) for P in Ps] for name, cfg in configs.items()}
    print(f"\npredicted speedup of MGRIT over serial, N = 1024, w = {rows[-1]['w']} "
          f"(costs of {'the measured N=1024 case' if big else 'the largest case'}, "
          f"message {sc.message * 1e6:.1f} us):")
    for name in configs:
        print(f"  {name}: " + ", ".join(f"P={P}: {speed[name][Ps.index(P)]:.2f}"
                                        for P in (16, 64, 256)))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        for name, sp in speed.items():
            ax.loglog(Ps, sp, "o-", label=name)
        ax.axhline(1.0, color="k", lw=0.5)
        ax.set_xlabel("ranks P")
        ax.set_ylabel("predicted speedup")
        ax.set_title("MGRIT vs serial, N = 1024 (model)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "layer_parallel_speedup.png", dpi=120)
    except ImportError:
        pass
    save_json(out / "layer_parallel.json", {"rows": rows, "speedup": speed, "P": Ps})
    return rows, speed


if __name__ == "__main__":
    main()
