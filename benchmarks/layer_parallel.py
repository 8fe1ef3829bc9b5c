"""Serial vs layer-parallel (MGRIT) value-and-gradient: measured times, the model, errors.

    python benchmarks/layer_parallel.py [--ranks 1 2 4 8 16] [--out out/] [--quick]
                                        [--init glorot] [--set cf=4 --set cycle=F ...]

For each case (N layers, width w, s samples; default the four of issue 12: 1024/32/64,
1024/32/512, 1024/8/64, 4096/32/64) it prints, side by side:

* the median wall time of one serial ``value_and_grad`` (one process, BLAS one thread);
* the median wall time of one layer-parallel ``value_and_grad``
  (:class:`~mgnn.mgrit.LayerParallelObjective` with ``MGRITPropagation(**config)``,
  steady one-shot state) under ``mpiexec -n P`` for every P of ``--ranks`` that this
  machine has cores for (larger P are skipped with a message), next to the
  prediction of :class:`~mgnn.mgrit.model.PerformanceModel` from step costs measured
  here and the message cost measured by MPI ping-pong;
* predictions for the P it cannot run (labelled *predicted*), up to 256;
* the gradient error against the serial gradient: *warm* as training sees it (the
  one-shot state reached at a parameter vector one small step away, relative change
  1e-3, then one evaluation at theta) and *cold* (the first evaluation);
* the model's breakdown of one evaluation at P = 16 (and 64), term by term.

Ends with the issue's targets, each marked met / missed (measured, or predicted where
the cores are missing), and writes ``layer_parallel.json`` and a PNG of measured and
predicted speedups. BLAS and Numba run single-threaded (one core per rank).
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
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from mgnn.runs.config import parse_options  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _common import format_table, machine_info, measure, save_json  # noqa: E402

CASES = [(1024, 32, 64), (1024, 32, 512), (1024, 8, 64), (4096, 32, 64)]
QUICK_CASES = [(256, 32, 64), (256, 8, 64)]
MODEL_P = [1, 2, 4, 8, 16, 32, 64, 128, 256]


def setup(N, w, s, init):
    from mgnn.nets import ResNet

    rng = np.random.default_rng(0)
    net = ResNet(2, w, N, 5, T=5.0, activation="tanh")
    X = rng.standard_normal((s, 2))
    y = rng.integers(0, 5, s)
    theta = net.init(rng) if init == "glorot" else net.init(rng, "layer_parallel",
                                                             inner_scale=0.1)
    return net, X, y, theta


def cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# --------------------------------------------------------------------- under mpiexec
def child(path, cases, config, init, repeats):
    """All ranks: LayerParallelObjective times per case; rank 0 writes JSON."""
    from mgnn.mgrit import LayerParallelObjective, MGRITPropagation
    from mgnn.mgrit.model import measure_latency
    from mgnn.parallel import get_comm

    comm = get_comm()
    out = {"size": comm.size, "cases": {}}
    for N, w, s in cases:
        nbytes = s * w * 8
        lat, bw = measure_latency(comm, nbytes=nbytes)
        net, X, y, theta = setup(N, w, s, init)
        obj = LayerParallelObjective(net, X, y, comm=comm,
                                     propagation=MGRITPropagation(**config))
        tl = obj.scatter(theta)
        for _ in range(3):
            obj.value_and_grad(tl)
        inner = max(1, 4096 // N)  # the same on every rank (collectives inside)
        ts = []
        for _ in range(repeats):
            comm.barrier()
            tic = time.perf_counter()
            for _ in range(inner):
                obj.value_and_grad(tl)
            ts.append(comm.allreduce((time.perf_counter() - tic) / inner, op="max"))
        out["cases"][f"{N},{w},{s}"] = {"time": float(np.median(ts)), "latency": lat,
                                         "bandwidth": bw}
    if comm.rank == 0:
        Path(path).write_text(json.dumps(out))


def run_ranks(P, cases, config, init, repeats, tmp):
    path = tmp / f"layer_parallel_p{P}.json"
    cmd = ["mpiexec", "-n", str(P), sys.executable, __file__, "--child", str(path),
           "--init", init, "--repeats", str(repeats),
           "--cases", json.dumps(cases), "--config", json.dumps(config)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"P={P}: no measurement ({exc})")
        return None
    if proc.returncode != 0:
        print(f"P={P}: mpiexec failed:\n{proc.stderr[-1500:]}")
        return None
    return json.loads(path.read_text())["cases"]


# ----------------------------------------------------------------------- one process
def gradient_errors(net, X, y, theta, config):
    """``(warm, cold, (forward, adjoint iterations))``: relative gradient errors of
    one-shot MGRIT against serial, and the iterations of a steady-state evaluation."""
    from mgnn.mgrit import MGRITPropagation
    from mgnn.objective import Objective

    g0 = Objective(net, X, y).grad(theta)
    n0 = np.linalg.norm(g0)
    prop = MGRITPropagation(**config)
    obj = Objective(net, X, y, propagation=prop)
    cold = np.linalg.norm(obj.grad(theta) - g0) / n0
    rng = np.random.default_rng(1)
    d = rng.standard_normal(theta.size)
    d *= 1e-3 * np.linalg.norm(theta) / np.linalg.norm(d)
    prop.reset()
    for _ in range(5):  # the one-shot state at theta + d
        obj.grad(theta + d)
    warm = np.linalg.norm(obj.grad(theta) - g0) / n0
    for _ in range(3):  # the steady state the timed runs measure
        obj.grad(theta)
    st = prop.last_stats()
    return float(warm), float(cold), (st["forward"].nit, st["adjoint"].nit)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--out", default="out")
    ap.add_argument("--quick", action="store_true", help="small cases, few repeats")
    ap.add_argument("--init", default="glorot", choices=["glorot", "smooth"],
                    help="weights: Glorot (rough in depth) or the layer-parallel papers' "
                         "small smooth inner weights")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="an MGRITPropagation option (default: its defaults)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cases", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--config", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)
    if args.child:
        child(args.child, [tuple(c) for c in json.loads(args.cases)],
              json.loads(args.config), args.init, repeats)
        return None

    from mgnn.mgrit import MGRITPropagation
    from mgnn.mgrit.model import PerformanceModel, costs_as_dict, measure_step_costs
    from mgnn.objective import Objective

    config = parse_options(args.set)
    prop = MGRITPropagation(**config)  # validates the options
    cases = QUICK_CASES if args.quick else CASES
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n_cores = cores()
    print(machine_info())
    print(f"MGRIT: {prop!r}\nweights: {args.init}; BLAS threads 1; {n_cores} cores")

    # the multi-rank runs first, each with the cores to itself
    measured = {}
    for P in args.ranks:
        if P > n_cores:
            print(f"P={P}: skipped, this machine has {n_cores} cores "
                  "(the model predicts it below)")
            continue
        measured[P] = run_ranks(P, cases, config, args.init, repeats, out)

    model_cfg = {k: v for k, v in config.items()
                 if k in ("levels", "cf", "relax", "cycle", "min_coarse", "reuse_tau",
                          "coarse_weights")}
    # a residual norm (one reduction) per iteration with a tolerance or when asked
    model_cfg["norms"] = bool(prop.rtol is not None or prop.tol is not None
                              or prop.residuals == 1)
    rows, detail = [], {}
    for N, w, s in cases:
        key = f"{N},{w},{s}"
        net, X, y, theta = setup(N, w, s, args.init)
        ser = Objective(net, X, y)
        t_ser = measure(lambda: ser.value_and_grad(theta), repeats=repeats,  # noqa: B023
                        min_sample=0.2)
        warm, cold, nits = gradient_errors(net, X, y, theta, config)
        # the model replays the iterations the steady-state solves took
        cfg_case = dict(model_cfg, fwd_iters=nits[0], bwd_iters=nits[1])
        costs = measure_step_costs(net, s, coarse_weights=prop.coarse_weights,
                                   interval=int(np.atleast_1d(prop.cf)[0]))
        lat = [m[key]["latency"] for m in measured.values() if m and m[key]["latency"]]
        bws = [m[key]["bandwidth"] for m in measured.values() if m and m[key]["latency"]]
        if lat:
            costs.latency, costs.bandwidth = float(np.median(lat)), float(np.median(bws))
            msg_src = "measured"
        else:
            costs.latency, costs.bandwidth = 2e-6, 5e9  # typical shared-memory MPI
            msg_src = "assumed 2 us + 5 GB/s"
        model = PerformanceModel(costs)
        pred = {P: model.mgrit_time(N, P, **cfg_case) for P in MODEL_P if P <= N}
        row = dict(case=key, N=N, w=w, s=s, serial=t_ser, serial_pred=model.serial_time(N),
                   err_warm=warm, err_cold=cold, messages=msg_src, nit_fwd=nits[0],
                   nit_bwd=nits[1])
        for P in MODEL_P:
            if P in pred:
                row[f"pred{P}"] = pred[P]
            m = measured.get(P)
            if m:
                row[f"meas{P}"] = m[key]["time"]
                row[f"model_err{P}"] = 100 * (pred[P] - m[key]["time"]) / m[key]["time"]
        row["costs"] = costs_as_dict(costs)
        row["breakdown16"] = model.breakdown(N, 16, **cfg_case) if N >= 16 else None
        row["breakdown64"] = model.breakdown(N, 64, **cfg_case) if N >= 64 else None
        rows.append(row)
        detail[key] = pred

    ms = lambda v: f"{1e3 * v:.2f}"  # noqa: E731
    print(f"\nvalue_and_grad, medians of {repeats}; 'meas' under mpiexec, 'model' predicted")
    cols = [("case", "N,w,s", "s"), ("serial", "serial ms", ms),
            ("serial_pred", "model", ms)]
    for P in sorted(measured):
        if measured[P]:
            cols += [(f"meas{P}", f"P={P} ms", ms), (f"pred{P}", "model", ms),
                     (f"model_err{P}", "err", lambda v: f"{v:+.0f}%")]
    cols += [("err_warm", "grad err warm", ".1e"), ("err_cold", "cold", ".1e"),
             ("nit_fwd", "it f", "d"), ("nit_bwd", "it b", "d")]
    print(format_table(rows, cols))

    print("\nspeedup over serial (measured where the cores exist, else predicted *):")
    head = ["N,w,s"] + [f"P={P}" for P in MODEL_P]
    print("  ".join(f"{h:>9}" for h in head))
    for r in rows:
        cells = [f"{r['case']:>9}"]
        for P in MODEL_P:
            if f"meas{P}" in r:
                cells.append(f"{r['serial'] / r[f'meas{P}']:>9.2f}")
            elif f"pred{P}" in r:
                cells.append(f"{r['serial'] / r[f'pred{P}']:>8.2f}*")
            else:
                cells.append(f"{'-':>9}")
        print("  ".join(cells))

    print("\nmodel breakdown of one evaluation (ms, the rank that finishes last):")
    for r in rows:
        for P in (16, 64):
            b = r[f"breakdown{P}"]
            if b is None:
                continue
            terms = ", ".join(f"{k} {1e3 * v:.2f}" for k, v in b.items() if k != "total")
            ideal = r["serial_pred"] / P
            print(f"  {r['case']} P={P}: total {1e3 * b['total']:.2f} (serial/P "
                  f"{1e3 * ideal:.2f}): {terms}")

    # the targets
    def speed(r, P):
        if f"meas{P}" in r:
            return r["serial"] / r[f"meas{P}"], "measured"
        return r["serial"] / r[f"pred{P}"], "predicted"

    print("\ntargets:")
    verdict = []
    for r in rows:
        if "meas1" in r:
            ratio = r["meas1"] / r["serial"]
            verdict.append((f"{r['case']}: one-rank cost {ratio:.2f}x serial (measured)",
                            ratio <= 2.5))
        verdict.append((f"{r['case']}: gradient error warm {r['err_warm']:.1e}",
                        r["err_warm"] <= 1e-3))
    goals = {"1024,32,64": (16, 5.0), "1024,32,512": (16, 4.0), "4096,32,64": (64, 10.0)}
    for r in rows:
        if r["case"] in goals and f"pred{goals[r['case']][0]}" in r:
            P, target = goals[r["case"]]
            sp, how = speed(r, P)
            verdict.append((f"{r['case']}: speedup at P={P} {sp:.2f} ({how}; target "
                            f">= {target:g})", sp >= target))
    for text, ok in verdict:
        print(f"  [{'met' if ok else 'MISSED'}] {text}")
    errs = [abs(r[f"model_err{P}"]) for r in rows for P in measured if f"model_err{P}" in r]
    if errs:
        print(f"model error against measurements: median {np.median(errs):.0f}%, max "
              f"{np.max(errs):.0f}%; within 25%: {sum(e <= 25 for e in errs)}/{len(errs)}")

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for r in rows:
            Ps = [P for P in MODEL_P if f"pred{P}" in r]
            line, = ax.loglog(Ps, [r["serial"] / r[f"pred{P}"] for P in Ps], "-",
                              label=f"N,w,s = {r['case']} (model)")
            Pm = [P for P in MODEL_P if f"meas{P}" in r]
            ax.loglog(Pm, [r["serial"] / r[f"meas{P}"] for P in Pm], "o",
                      color=line.get_color())
        ax.axhline(1.0, color="k", lw=0.5)
        ax.set_xlabel("ranks P")
        ax.set_ylabel("speedup over serial")
        ax.set_title("layer-parallel value_and_grad (dots: measured)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "layer_parallel_speedup.png", dpi=120)
        plt.close(fig)
    except ImportError:
        pass
    save_json(out / "layer_parallel.json",
              {"machine": machine_info(), "config": config, "propagation": repr(prop),
               "init": args.init, "rows": rows, "targets": verdict,
               "measured_ranks": sorted(P for P in measured if measured[P])})
    return rows


if __name__ == "__main__":
    main()
