"""One ``Objective.value_and_grad`` of the ResNet: mgnn against PyTorch CPU and the roofline.

For every thread count, dtype, width w, depth N and sample count s, time one
value-and-gradient evaluation of ``ResNet(2, w, N, 5)`` with softmax cross-entropy
on the peaks data (mgnn), and, when PyTorch is installed, the same network's
forward + backward in PyTorch (same architecture, activation, dtype and number of
threads; plain tensors with ``requires_grad`` and a Python loop over the layers;
the timed call is ``zero grads; loss = f(params); loss.backward()``). Before
timing, both sides run on the same parameters and their losses and gradients are
compared.

Roofline. In the same run (per thread count and dtype) the script measures the
machine's GEMM rate (the best of a (5000 x 128)(128 x 128) and a 2048^3 matmul)
and its memory bandwidth (a STREAM-like triad ``a = b + q c`` over 128 MiB
arrays, 24 bytes counted per element). A value-and-gradient needs at least

* ``6 s w^2 N`` GEMM flops in the residual layers (forward ``U W^T``; backward
  ``D W`` and ``D^T U``) plus ``4 s n_in w + 6 s w n_out`` for the opening and
  closing layers, and
* ``4 w`` numbers of memory traffic per layer and sample: the forward sweep writes
  the state and the record of every layer (the workspace the adjoint needs:
  ``2 w`` numbers, the ``ws B/ls`` column), the backward sweep reads them back.

The bound is the larger of the two times; ``%roof`` is the bound over mgnn's
time. Elementwise work (the activation) is not in the bound.

Thread counts: each count runs in a child process started with
``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS`` and ``NUMBA_NUM_THREADS`` set (and
``torch.set_num_threads``), so BLAS, Numba and PyTorch all use that many.

Targets (issue 18): mgnn/torch <= 0.5 for w <= 32 and <= 0.8 for w = 128 in every
row; %roof >= 50 for w <= 32 and >= 60 for w = 128.

Run ``python benchmarks/step.py`` (the full grid, several minutes), ``--quick``
for a subset, ``--help`` for the options. ``--json PATH`` saves every row.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from _common import (
    OtherLoad,
    blas_info,
    blas_threads,
    format_markdown,
    gemm_rate,
    machine_info,
    measure,
    save_json,
)

WIDTHS = (8, 32, 128)
DEPTHS = (64, 256)
SAMPLES = (1000, 5000)
THREADS = (1, 2)
QUICK = dict(widths=(8, 32, 128), depths=(64,), samples=(1000, 5000), threads=(1, 2))
N_IN, N_OUT = 2, 5
SMOOTH_RELU_EPS = 0.1
#: Reference GEMM shapes: the layer shape (s x w) @ (w x w)^T and a big square one.
LAYER_GEMM = (5000, 128, 128)
SQUARE_GEMM = (2048, 2048, 2048)
#: Triad arrays: 2^24 elements (128 MiB in float64), far beyond the caches.
TRIAD_N = 1 << 24
#: Rows measured while other processes took more than this share of the CPU (%) are
#: flagged as unreliable.
BUSY_WARN_PCT = 10


def flops(w, N, s, n_in=N_IN, n_out=N_OUT):
    """GEMM floating-point operations of one value-and-gradient."""
    return 6.0 * s * w * w * N + 4.0 * s * n_in * w + 6.0 * s * w * n_out


def traffic(w, N, s, itemsize):
    """Least memory traffic (bytes) of one value-and-gradient: 4 w numbers per layer and sample."""
    return 4.0 * w * itemsize * N * s


def ratio_target(w):
    return 0.5 if w <= 32 else 0.8


def roof_target(w):
    return 0.5 if w <= 32 else 0.6


# ----------------------------------------------------------------------------- machine
def triad_bandwidth(repeats=5):
    """Bytes per second of ``a = b + q c`` (24 bytes per element, STREAM's count),
    threads over chunks (Numba ``prange``, as many threads as Numba has)."""
    from numba import njit, prange

    @njit(parallel=True, cache=False)
    def triad(a, b, c, q):
        n = a.size
        nb = 64
        step = (n + nb - 1) // nb
        for t in prange(nb):
            for i in range(t * step, min(n, (t + 1) * step)):
                a[i] = b[i] + q * c[i]

    a = np.zeros(TRIAD_N)
    b = np.ones(TRIAD_N)
    c = np.full(TRIAD_N, 2.0)
    t = measure(lambda: triad(a, b, c, 3.0), repeats=repeats, warmup=2, min_sample=0.05)
    return 24.0 * TRIAD_N / t


# ----------------------------------------------------------------------------- torch
def import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def torch_activation(torch, name):
    if name == "tanh":
        return torch.tanh
    if name == "relu":
        return torch.relu
    if name == "smooth_relu":
        eps = SMOOTH_RELU_EPS

        def smooth_relu(z):
            q = torch.clamp(z + eps, min=0.0)
            return torch.where(z >= eps, z, q * q * (0.25 / eps))

        return smooth_relu
    raise ValueError(f"no torch activation for {name!r}")


class TorchResNet:
    """The same ResNet in PyTorch: plain leaf tensors and a Python loop over layers."""

    def __init__(self, torch, net, theta, X, y):
        import torch.nn.functional as F

        self.torch, self.F = torch, F
        tdt = {np.float32: torch.float32, np.float64: torch.float64}[np.dtype(net.dtype).type]
        p = net.unpack(theta)

        def leaf(a):
            return torch.tensor(np.array(a), dtype=tdt, requires_grad=True)

        self.W_open, self.b_open = leaf(p.W_open), leaf(p.b_open)
        self.W = [leaf(p.W[n]) for n in range(net.depth)]
        self.b = [leaf(p.b[n]) for n in range(net.depth)]
        self.W_close, self.b_close = leaf(p.W_close), leaf(p.b_close)
        self.params = [self.W_open, self.b_open, *self.W, *self.b, self.W_close, self.b_close]
        self.X = torch.tensor(np.array(X), dtype=tdt)
        self.y = torch.tensor(np.array(y), dtype=torch.int64)
        self.h = float(net.h)
        self.act = torch_activation(torch, net.activation)
        self.act_open = self.act if net.opening_activation else (lambda z: z)

    def loss(self):
        F, act, h = self.F, self.act, self.h
        u = self.act_open(F.linear(self.X, self.W_open, self.b_open))
        for W, b in zip(self.W, self.b, strict=True):
            u = self.torch.add(u, act(F.linear(u, W, b)), alpha=h)
        return F.cross_entropy(F.linear(u, self.W_close, self.b_close), self.y)

    def step(self):
        for q in self.params:
            q.grad = None
        loss = self.loss()
        loss.backward()
        return loss

    def flat_grad(self):
        """The gradient in mgnn's layout of theta."""
        parts = [self.W_open, self.b_open]
        for W, b in zip(self.W, self.b, strict=True):
            parts += [W, b]
        parts += [self.W_close, self.b_close]
        return np.concatenate([q.grad.detach().numpy().ravel() for q in parts])


# ----------------------------------------------------------------------------- cases
def run_case(dtype, w, N, s, args, torch):
    from mgnn.kernels.cpu import uses_fused

    from mgnn.data import peaks
    from mgnn.nets import ResNet
    from mgnn.objective import Objective

    dt = np.dtype(dtype).type
    data = peaks(s, 10, seed=0, dtype=dt)
    net = ResNet(N_IN, w, N, N_OUT, T=args.T, activation=args.activation, dtype=dt)
    theta = net.init(np.random.default_rng(1))
    obj = Objective(net, data.X_train, data.Y_train)
    row = dict(dtype=dtype, w=w, N=N, s=s, gflop=flops(w, N, s) / 1e9,
               path="fused" if uses_fused(w, w, dt) else "blas",
               ws_bytes_ls=2 * w * np.dtype(dt).itemsize)
    val, grad = obj.value_and_grad(theta)  # compiles the kernels (cache=True) before timing
    ws = obj._workspace(s)
    row["ws_bytes_ls_measured"] = (ws.U.nbytes + ws.S.nbytes) / (N * s)
    row["mgnn_s"] = measure(lambda: obj.value_and_grad(theta), repeats=args.repeats,
                            warmup=args.warmup)
    if torch is not None:
        model = TorchResNet(torch, net, theta, obj.X, obj.Y)
        loss = float(model.step().detach())
        tg = model.flat_grad()
        row["loss_rel_err"] = abs(loss - val) / max(abs(val), 1e-30)
        row["grad_rel_err"] = float(np.linalg.norm(tg - grad) / max(np.linalg.norm(grad), 1e-30))
        row["torch_s"] = measure(model.step, repeats=args.repeats, warmup=args.warmup)
        row["ratio"] = row["mgnn_s"] / row["torch_s"]
        del model
    del ws
    gc.collect()
    return row


def judge(row, machine):
    m = machine[row["dtype"]]
    itemsize = np.dtype(row["dtype"]).itemsize
    row["mgnn_ms"] = 1e3 * row["mgnn_s"]
    row["torch_ms"] = 1e3 * row["torch_s"] if "torch_s" in row else None
    row["gflops"] = row["gflop"] / row["mgnn_s"]
    t_flop = row["gflop"] * 1e9 / m["gemm_peak"]
    t_mem = traffic(row["w"], row["N"], row["s"], itemsize) / machine["triad_Bps"]
    row["bound_ms"] = 1e3 * max(t_flop, t_mem)
    row["bound_by"] = "flops" if t_flop >= t_mem else "memory"
    row["pct_roof"] = 100.0 * max(t_flop, t_mem) / row["mgnn_s"]
    misses = []
    rt = ratio_target(row["w"])
    if row.get("ratio") is not None and row["ratio"] > rt:
        misses.append(f"ratio>{rt:g}")
    pt = roof_target(row["w"])
    if row["pct_roof"] < 100 * pt:
        misses.append(f"roof<{100 * pt:.0f}%")
    row["verdict"] = "met" if not misses else "MISSED: " + ", ".join(misses)
    return row


def child(args):
    """Run the grid at the thread count of this process; write the rows as JSON."""
    import numba

    torch = None if args.no_torch else import_torch()
    threads = numba.get_num_threads()
    if torch is not None:
        torch.set_num_threads(threads)
    machine = dict(threads=threads, numba_threads=threads, blas_threads=blas_threads(),
                   torch_threads=None if torch is None else torch.get_num_threads(),
                   torch=None if torch is None else torch.__version__,
                   triad_Bps=triad_bandwidth())
    for dtype in args.dtypes:
        dt = np.dtype(dtype).type
        layer = gemm_rate(*LAYER_GEMM, dtype=dt)
        square = gemm_rate(*SQUARE_GEMM, dtype=dt, transpose_b=False)
        machine[dtype] = dict(gemm_layer=layer, gemm_square=square, gemm_peak=max(layer, square))
    print(f"[{threads} thread(s)] triad {machine['triad_Bps'] / 1e9:.1f} GB/s; GEMM peak "
          + ", ".join(f"{d} {machine[d]['gemm_peak'] / 1e9:.0f} GFLOP/s" for d in args.dtypes),
          flush=True)
    rows = []
    for dtype in args.dtypes:
        for w in args.widths:
            for N in args.depths:
                for s in args.samples:
                    with OtherLoad() as load:
                        row = run_case(dtype, w, N, s, args, torch)
                    row["threads"] = threads
                    row["other_load_pct"] = None if load.share is None else 100 * load.share
                    rows.append(judge(row, machine))
                    print(f"  [{threads}] {dtype} w={w} N={N} s={s}: mgnn {row['mgnn_ms']:.2f} ms, "
                          f"torch {row['torch_ms'] or float('nan'):.2f} ms, "
                          f"roof {row['pct_roof']:.0f}%, busy {row['other_load_pct'] or 0:.0f}%",
                          flush=True)
    with open(args.child_out, "w") as fh:
        json.dump(dict(machine=machine, rows=rows), fh, default=float)


def markdown(rows):
    columns = [("threads", "thr", "d"), ("dtype", "dtype", "s"), ("w", "w", "d"),
               ("N", "N", "d"), ("s", "s", "d"), ("path", "path", "s"),
               ("mgnn_ms", "mgnn ms", ".2f"), ("torch_ms", "torch ms", ".2f"),
               ("ratio", "mgnn/torch", ".2f"), ("gflops", "GFLOP/s", ".1f"),
               ("bound_ms", "bound ms", ".2f"), ("bound_by", "bound by", "s"),
               ("pct_roof", "%roof", ".0f"), ("ws_bytes_ls", "ws B/ls", "d"),
               ("other_load_pct", "%busy", ".0f"), ("verdict", "target", "s")]
    return format_markdown(rows, columns)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help=f"a subset (w {QUICK['widths']}, N {QUICK['depths']}, "
                         f"s {QUICK['samples']}, threads {QUICK['threads']})")
    ap.add_argument("--activation", default="tanh", choices=("tanh", "smooth_relu", "relu"))
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed repeats per case, median reported (default 5, --quick 3)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
    ap.add_argument("--dtype", default="both", choices=("float32", "float64", "both"))
    ap.add_argument("--width", type=int, nargs="+", help="override the widths")
    ap.add_argument("--depth", type=int, nargs="+", help="override the depths")
    ap.add_argument("--samples", type=int, nargs="+", help="override the sample counts")
    ap.add_argument("--threads", type=int, nargs="+", help="override the thread counts")
    ap.add_argument("--T", type=float, default=5.0, help="final time of the ResNet (h = T/N)")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    ap.add_argument("--json", metavar="PATH", help="save the results as JSON")
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 5
    grid = QUICK if args.quick else dict(widths=WIDTHS, depths=DEPTHS, samples=SAMPLES,
                                         threads=THREADS)
    args.widths = args.width or grid["widths"]
    args.depths = args.depth or grid["depths"]
    args.samples = args.samples or grid["samples"]
    args.dtypes = ("float32", "float64") if args.dtype == "both" else (args.dtype,)
    if args.child_out:
        child(args)
        return None

    threads = args.threads or grid["threads"]
    print(f"machine : {machine_info()}")
    print(f"blas    : {blas_info()}")
    print(f"network : ResNet(2, w, N, 5, T={args.T:g}, activation={args.activation!r}), "
          f"cross-entropy, peaks data; median of {args.repeats} after {args.warmup} warm-up")
    sys.stdout.flush()
    here = os.path.dirname(os.path.abspath(__file__))
    rows, machines = [], {}
    t0 = time.perf_counter()
    given = list(argv if argv is not None else sys.argv[1:])
    passthrough, skip = [], False
    for a in given:  # everything but --json PATH and --threads N... goes to the children
        if skip and not a.startswith("--"):
            continue
        skip = a in ("--json", "--threads")
        if not skip and not a.startswith(("--json=", "--threads=")):
            passthrough.append(a)
    for nt in threads:
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(nt), OMP_NUM_THREADS=str(nt),
                   MKL_NUM_THREADS=str(nt), NUMBA_NUM_THREADS=str(nt))
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
            out = fh.name
        try:
            subprocess.run([sys.executable, os.path.join(here, "step.py"), *passthrough,
                            "--child-out", out], env=env, check=True)
            with open(out) as fh:
                res = json.load(fh)
        finally:
            os.unlink(out)
        machines[nt] = res["machine"]
        rows += res["rows"]
    elapsed = time.perf_counter() - t0

    print()
    for nt, m in machines.items():
        print(f"{nt} thread(s): triad {m['triad_Bps'] / 1e9:.1f} GB/s; GEMM "
              + "; ".join(f"{d} layer {m[d]['gemm_layer'] / 1e9:.0f}, 2048^3 "
                          f"{m[d]['gemm_square'] / 1e9:.0f} GFLOP/s" for d in args.dtypes)
              + (f"; torch {m['torch']} ({m['torch_threads']} threads)" if m["torch"] else ""))
    print()
    print(markdown(rows))
    print()
    print("path: fused Numba kernels or BLAS GEMMs (kernels.cpu.uses_fused). bound: the larger "
          "of GEMM flops / GEMM peak and 4 w numbers per layer and sample / triad bandwidth; "
          "%roof = bound / mgnn time. ws B/ls: workspace (state + record) bytes per layer "
          "and sample. %busy: CPU share of other processes while the row ran.")
    print("targets: mgnn/torch <= 0.5 (w <= 32), <= 0.8 (w = 128); %roof >= 50 (w <= 32), "
          ">= 60 (w = 128).")
    met = sum(r["verdict"] == "met" for r in rows)
    print(f"targets met: {met} of {len(rows)} rows ({elapsed:.0f} s)")
    busy = [r for r in rows if (r.get("other_load_pct") or 0) > BUSY_WARN_PCT]
    if busy:
        # Numba's and OpenBLAS's threads wait for each other by spinning: with another
        # process on a core, a 2-thread row can take 10-300x its time (seen: w = 8,
        # s = 1000 at 552 ms against 0.9 ms), and the GEMM peak and triad run slow too
        print(f"warning : {len(busy)} of {len(rows)} rows ran while other processes took more "
              f"than {BUSY_WARN_PCT}% of the CPU (%busy): their times, and multi-thread rows "
              "above all, are not the machine's; rerun them on a quiet machine, not under nice: "
              + ", ".join(f"{r['threads']} thr {r['dtype']} w={r['w']} N={r['N']} s={r['s']}"
                          for r in busy))
    with_torch = [r for r in rows if "grad_rel_err" in r]
    if with_torch:
        worst = max(with_torch, key=lambda r: r["grad_rel_err"])
        print(f"check   : torch vs mgnn, worst relative gradient difference "
              f"{worst['grad_rel_err']:.1e} ({worst['dtype']}, w={worst['w']}, N={worst['N']}, "
              f"s={worst['s']}); worst loss difference "
              f"{max(r['loss_rel_err'] for r in with_torch):.1e}")
    if args.json:
        save_json(args.json, dict(machine=machine_info(), blas=blas_info(),
                                  activation=args.activation, T=args.T, repeats=args.repeats,
                                  per_threads={str(k): v for k, v in machines.items()},
                                  gemm_shapes=dict(layer=LAYER_GEMM, square=SQUARE_GEMM),
                                  triad_elements=TRIAD_N, rows=rows))
        print(f"saved   : {args.json}")
    return rows


if __name__ == "__main__":
    main()
