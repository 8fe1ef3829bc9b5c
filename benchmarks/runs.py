"""What the run services cost: checkpoints, progress lines, saving a network.

One command prints Markdown tables of medians and writes JSON:

    python benchmarks/runs.py [--quick] [--json out.json]

1. Training overhead: Adam on peaks (width 8/32, depth 16/32, batch 250) for a fixed
   number of iterations, plain, with ``disp`` lines every 10 iterations (to a
   null handler), and with a checkpoint every 1, 10 and 100 iterations; the
   ratio is to the plain run measured in the same round (rounds interleave the
   variants, so the machine's load hits them alike).
2. One checkpoint write and read (``Checkpointer.save`` / ``load_checkpoint``, with
   and without fsync) and ``save_network``/``load_network`` for networks of 10^4 to 10^6
   parameters, with the bytes written and the rate.

The ``busy`` column is the share of the run's wall time the process spent on a CPU
(``process_time / wall``); well below 1 means the machine was shared.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time

import numpy as np


def _median_time(fn, repeats):
    times, busy = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        w, c = time.perf_counter() - w0, time.process_time() - c0
        times.append(w)
        busy.append(c / w if w > 0 else 1.0)
    return float(np.median(times)), float(np.median(busy))


def training_overhead(quick):
    from mgnn.data import peaks

    log = logging.getLogger("mgnn.progress")
    log.addHandler(logging.NullHandler())
    log.setLevel(logging.INFO)
    log.propagate = False
    d = peaks(2000, 10, seed=0)
    iters = 100 if quick else 200
    rounds = 3 if quick else 5
    shapes = [(8, 16)] if quick else [(8, 16), (32, 32)]
    rows = []
    for width, depth in shapes:
        rows += _overhead_rows(d, width, depth, iters, rounds)
    return rows


def _overhead_rows(d, width, depth, iters, rounds):
    from mgnn.nets import ResNet
    from mgnn.objective import Objective
    from mgnn.optim import minimize
    from mgnn.runs import Checkpointer

    rows = []
    net = ResNet(2, width, depth, 5, T=5.0)
    obj = Objective(net, d.X_train, d.Y_train, tikhonov=1e-6)
    theta0 = net.init(0)
    base = {"lr": 1e-2, "batch_size": 250, "maxiter": iters, "rng": 0}
    folder = tempfile.mkdtemp()
    variants = {
        "plain": lambda: {},
        "disp every 10": lambda: {"disp": True, "disp_every": 10},
        "checkpoint every 100": lambda: {"checkpoint": Checkpointer(folder, every=100)},
        "checkpoint every 10": lambda: {"checkpoint": Checkpointer(folder, every=10)},
        "checkpoint every 1": lambda: {"checkpoint": Checkpointer(folder, every=1)},
        "checkpoint every 1, no fsync": lambda: {
            "checkpoint": Checkpointer(folder, every=1, fsync=False)},
    }
    minimize(obj, theta0, method="adam", options=dict(base, maxiter=5))  # warm up
    samples = {k: [] for k in variants}
    busy = {k: [] for k in variants}
    for _ in range(rounds):
        for name, extra in variants.items():
            opts = dict(base, **extra())
            w0, c0 = time.perf_counter(), time.process_time()
            minimize(obj, theta0, method="adam", options=opts)
            w = time.perf_counter() - w0
            samples[name].append(w)
            busy[name].append((time.process_time() - c0) / w)
    shutil.rmtree(folder, ignore_errors=True)
    ref = float(np.median(samples["plain"]))
    for name in variants:
        med = float(np.median(samples[name]))
        rows.append({"width": width, "depth": depth, "n_params": net.n_params,
                     "variant": name, "iterations": iters,
                     "ms_per_iteration": 1e3 * med / iters, "ratio": med / ref,
                     "busy": float(np.median(busy[name]))})
    return rows


def file_costs(quick):
    sizes = [(32, 8), (128, 32)] if quick else [(32, 8), (128, 32), (512, 16)]
    repeats = 3 if quick else 5
    return [_file_row(width, depth, repeats) for width, depth in sizes]


def _file_row(width, depth, repeats):
    from mgnn.nets import ResNet
    from mgnn.runs import Checkpointer, load_checkpoint, load_network, save_network

    net = ResNet(2, width, depth, 5)
    theta = net.init(0)
    folder = tempfile.mkdtemp()
    ck = Checkpointer(folder, keep=1)
    # an Adam-like state: iterate and two moments, plus a small history
    state = {"solver": "adam", "run": {"nit": 1, "history": {"n": 1, "columns": {}}},
             "method": {"x": theta, "m": theta.copy(), "v": theta.copy()},
             "components": []}
    t_ck, b_ck = _median_time(lambda: ck.save(state, 1, "adam"), repeats)
    path = ck.last_path
    nosync = Checkpointer(folder, keep=1, prefix="nosync", fsync=False)
    t_ns, _ = _median_time(lambda: nosync.save(state, 1, "adam"), repeats)
    t_lck, _ = _median_time(lambda: load_checkpoint(path), repeats)
    npath = os.path.join(folder, "net.npz")
    t_sn, b_sn = _median_time(lambda: save_network(npath, net, theta), repeats)
    t_ln, _ = _median_time(lambda: load_network(npath), repeats)
    size_ck, size_n = os.path.getsize(path), os.path.getsize(npath)
    shutil.rmtree(folder, ignore_errors=True)
    return {"n_params": net.n_params, "checkpoint_bytes": size_ck,
                 "checkpoint_write_ms": 1e3 * t_ck, "checkpoint_read_ms": 1e3 * t_lck,
                 "checkpoint_write_nofsync_ms": 1e3 * t_ns,
                 "checkpoint_write_MBps": size_ck / t_ck / 1e6,
                 "network_bytes": size_n, "save_network_ms": 1e3 * t_sn,
                 "load_network_ms": 1e3 * t_ln, "busy": b_ck}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="seconds-long run")
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    train = training_overhead(args.quick)
    files = file_costs(args.quick)
    print(f"load average at start: {load:.2f} on {os.cpu_count()} cores\n")
    print("| width | depth | parameters | variant | ms / iteration | ratio to plain | busy |")
    print("|---|---|---|---|---|---|---|")
    for r in train:
        print(f"| {r['width']} | {r['depth']} | {r['n_params']} | {r['variant']} | "
              f"{r['ms_per_iteration']:.3f} | {r['ratio']:.3f} | {r['busy']:.2f} |")
    print()
    print("| parameters | checkpoint bytes | write ms | write ms, no fsync | read ms | "
          "write MB/s | network bytes | save_network ms | load_network ms | busy |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in files:
        print(f"| {r['n_params']} | {r['checkpoint_bytes']} | {r['checkpoint_write_ms']:.2f} | "
              f"{r['checkpoint_write_nofsync_ms']:.2f} | "
              f"{r['checkpoint_read_ms']:.2f} | {r['checkpoint_write_MBps']:.0f} | "
              f"{r['network_bytes']} | {r['save_network_ms']:.2f} | "
              f"{r['load_network_ms']:.2f} | {r['busy']:.2f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"load_average": load, "training": train, "files": files}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
