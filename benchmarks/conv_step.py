"""One ``Objective.value_and_grad`` of a ConvResNet: mgnn against PyTorch CPU, same run.

For every case (image size, channels c, depth N, samples s) time one value-and-gradient
of ``ConvResNet((H, W), c, N, 10)`` with softmax cross-entropy on random images
(mgnn), and the same network in PyTorch (``torch.nn.functional.conv2d`` with
``padding=1`` on NCHW tensors, leaf tensors with ``requires_grad``, a Python loop
over the layers, global average pooling, ``linear``; the timed call is ``zero
grads; loss = f(params); loss.backward()``). Before timing, both sides run on the
same parameters and the relative loss and gradient differences are printed.

Every case runs in a child process per thread count with ``OPENBLAS_NUM_THREADS``,
``OMP_NUM_THREADS``, ``NUMBA_NUM_THREADS`` (and ``torch.set_num_threads``) set.
``GFLOP/s`` counts the GEMM flops of :meth:`ConvResNet.flops`. ``%busy`` is the CPU
share other processes took while the row ran: rows timed on a busy machine are noisy.
mgnn and torch are timed A/B interleaved (one call each in turn, ``--repeats`` pairs):
``mgnn/torch`` is the ratio of the medians, ``median pair ratio`` the median of the
ratios of adjacent calls (the steadier one under bursts of load).

``--breakdown`` prints, per case and thread count, the medians of the pieces of one
layer's forward and adjoint step (im2col, the three GEMMs, the fused elementwise
passes, col2im), interleaved: where the time goes.

Target (issue 20): mgnn / torch <= 1.0 in every row.

Run ``python benchmarks/conv_step.py`` (the grid), ``--quick`` for a subset,
``--json PATH`` to save the rows.
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
from _common import OtherLoad, blas_info, format_markdown, machine_info, measure, save_json

CASES = [  # (H, W, c, N, s)
    (8, 8, 8, 8, 256), (8, 8, 16, 8, 256), (8, 8, 16, 8, 1024),
    (16, 16, 8, 8, 256), (16, 16, 16, 8, 256), (28, 28, 16, 4, 128),
]
QUICK = [(8, 8, 8, 8, 256), (8, 8, 16, 8, 256), (16, 16, 16, 8, 128)]


class TorchConvResNet:
    """The same network in PyTorch (NCHW tensors; mgnn's HWIO kernels transposed)."""

    def __init__(self, torch, net, theta, X, y):
        import torch.nn.functional as F

        self.torch, self.F = torch, F
        tdt = {np.float32: torch.float32, np.float64: torch.float64}[np.dtype(net.dtype).type]
        p = net.unpack(theta)

        def leaf(a):
            return torch.tensor(np.array(a), dtype=tdt, requires_grad=True)

        def kernel(K):  # (3, 3, Ci, Co) -> (Co, Ci, 3, 3)
            return leaf(np.transpose(K, (3, 2, 0, 1)))

        self.K_open, self.b_open = kernel(p.K_open), leaf(p.b_open)
        self.K = [kernel(p.K[n]) for n in range(net.depth)]
        self.b = [leaf(p.b[n]) for n in range(net.depth)]
        self.W_close, self.b_close = leaf(p.W_close), leaf(p.b_close)
        self.params = [self.K_open, self.b_open, *self.K, *self.b, self.W_close, self.b_close]
        H, W, C = net.image_shape
        self.X = torch.tensor(np.array(X).reshape(-1, H, W, C).transpose(0, 3, 1, 2).copy(),
                              dtype=tdt)
        self.y = torch.tensor(np.array(y), dtype=torch.int64)
        self.h = float(net.h)
        self.act = {"tanh": torch.tanh, "relu": torch.relu}[net.activation]
        self.net = net

    def loss(self):
        F, act, h = self.F, self.act, self.h
        u = act(F.conv2d(self.X, self.K_open, self.b_open, padding=1))
        for K, b in zip(self.K, self.b, strict=True):
            u = self.torch.add(u, act(F.conv2d(u, K, b, padding=1)), alpha=h)
        f = u.mean(dim=(2, 3))
        return F.cross_entropy(F.linear(f, self.W_close, self.b_close), self.y)

    def step(self):
        for q in self.params:
            q.grad = None
        loss = self.loss()
        loss.backward()
        return loss

    def flat_grad(self):
        """The gradient in mgnn's layout of theta."""
        def k(t):
            return np.transpose(t.grad.detach().numpy(), (2, 3, 1, 0)).ravel()

        parts = [k(self.K_open), self.b_open.grad.numpy().ravel()]
        for K, b in zip(self.K, self.b, strict=True):
            parts += [k(K), b.grad.numpy().ravel()]
        parts += [self.W_close.grad.numpy().ravel(), self.b_close.grad.numpy().ravel()]
        return np.concatenate(parts)


def breakdown(case, repeats):
    """Medians (ms) of the pieces of one residual layer's forward and adjoint step."""
    from mgnn.kernels import cpu_conv as kc
    from mgnn.kernels.cpu import ACTIVATIONS, _delta_fuse, _forward_fuse

    H, W, c, _, s = case
    rng = np.random.default_rng(0)
    n, w, a = s * H * W, H * W * c, ACTIVATIONS["tanh"]
    U, Ln = rng.standard_normal((2, s, w))
    K, b = 0.1 * rng.standard_normal((3, 3, c, c)), np.zeros(c)
    S, O, D, L = (np.empty((s, w)) for _ in range(4))
    col, gK, gb = np.empty((n, 9 * c)), np.empty((9 * c, c)), np.empty(c)
    Km = K.reshape(9 * c, c)
    parts = {
        "im2col": lambda: kc.im2col(U, H, W, c, col),
        "GEMM col K": lambda: np.matmul(col, Km, out=S.reshape(n, c)),
        "fwd fuse": lambda: _forward_fuse(U.reshape(n, c), S.reshape(n, c), b, 0.1, a, True,
                                          O.reshape(n, c)),
        "delta fuse": lambda: _delta_fuse(S.reshape(n, c), Ln.reshape(n, c), 0.1, a,
                                          D.reshape(n, c), gb, True),
        "GEMM col^T D": lambda: np.matmul(col.T, D.reshape(n, c), out=gK),
        "GEMM D K^T": lambda: np.matmul(D.reshape(n, c), Km.T, out=col),
        "col2im": lambda: kc.col2im_add(col, H, W, c, Ln, L, True),
        "fwd step": lambda: kc.conv_forward_step(U, K, b, 0.1, a, H, W, S, O, col.reshape(-1)),
        "adj step": lambda: kc.conv_adjoint_step(Ln, U, K, S, 0.1, a, H, W, D, col.reshape(-1),
                                                 L=L, gK=gK.reshape(3, 3, c, c), gb=gb),
    }
    for f in parts.values():
        f()
    times = {k: [] for k in parts}
    for _ in range(repeats):
        for k, f in parts.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: 1e3 * float(np.median(v)) for k, v in times.items()}


def _interleaved(fns, repeats, warmup):
    """Wall times (seconds) of ``repeats`` calls of each of ``fns``, called in turn."""
    for f in fns:
        for _ in range(max(warmup, 1)):
            f()
    times = [[] for _ in fns]
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            for f, t in zip(fns, times, strict=True):
                t0 = time.perf_counter()
                f()
                t.append(time.perf_counter() - t0)
    finally:
        if gc_was_enabled:
            gc.enable()
    return times


def run_case(case, args, torch):
    from mgnn.nets import ConvResNet
    from mgnn.objective import Objective

    H, W, c, N, s = case
    dt = np.dtype(args.dtype).type
    rng = np.random.default_rng(0)
    X = rng.random((s, H * W)).astype(dt)
    y = rng.integers(0, 10, s)
    net = ConvResNet((H, W), c, N, 10, T=1.0, activation=args.activation, dtype=dt)
    theta = net.init(np.random.default_rng(1))
    obj = Objective(net, X, y)
    row = dict(dtype=args.dtype, H=H, W=W, c=c, N=N, s=s, gflop=net.flops(s) / 1e9)
    val, grad = obj.value_and_grad(theta)
    if torch is None:
        row["mgnn_s"] = measure(lambda: obj.value_and_grad(theta), repeats=args.repeats,
                                warmup=args.warmup)
    else:
        model = TorchConvResNet(torch, net, theta, X, y)
        loss = float(model.step().detach())
        tg = model.flat_grad()
        row["loss_rel_err"] = abs(loss - val) / max(abs(val), 1e-30)
        row["grad_rel_err"] = float(np.linalg.norm(tg - grad) / max(np.linalg.norm(grad), 1e-30))
        # A/B interleaved: a burst of load on the shared machine hits both sides
        tm, tt = _interleaved([lambda: obj.value_and_grad(theta), model.step], args.repeats,
                              args.warmup)
        row["mgnn_s"], row["torch_s"] = float(np.median(tm)), float(np.median(tt))
        row["ratio"] = row["mgnn_s"] / row["torch_s"]
        row["pair_ratio"] = float(np.median(np.asarray(tm) / np.asarray(tt)))
        del model
    gc.collect()
    row["mgnn_ms"] = 1e3 * row["mgnn_s"]
    row["torch_ms"] = 1e3 * row["torch_s"] if "torch_s" in row else None
    row["gflops"] = row["gflop"] / row["mgnn_s"]
    r = row.get("ratio")
    row["verdict"] = "no torch" if r is None else ("met" if r <= 1.0 else "MISSED")
    return row


def child(args):
    import numba

    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            torch = None
    threads = numba.get_num_threads()
    if torch is not None:
        torch.set_num_threads(threads)
    rows, parts = [], []
    for case in args.cases:
        with OtherLoad() as load:
            row = run_case(case, args, torch)
        row["threads"] = threads
        row["other_load_pct"] = None if load.share is None else 100 * load.share
        rows.append(row)
        print(f"  [{threads}] {case}: mgnn {row['mgnn_ms']:.2f} ms, torch "
              f"{row['torch_ms'] or float('nan'):.2f} ms, busy {row['other_load_pct'] or 0:.0f}%",
              flush=True)
        if args.breakdown:
            with OtherLoad() as load:
                ms = breakdown(case, max(5, args.repeats))
            parts.append(dict(threads=threads, case=list(case), ms=ms,
                              other_load_pct=None if load.share is None else 100 * load.share))
    with open(args.child_out, "w") as fh:
        json.dump(dict(rows=rows, parts=parts, torch=None if torch is None
                       else torch.__version__), fh, default=float)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"the cases {QUICK}")
    ap.add_argument("--activation", default="tanh", choices=("tanh", "relu"))
    ap.add_argument("--dtype", default="float64", choices=("float32", "float64"))
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed repeats (default 9, quick 7)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--breakdown", action="store_true",
                    help="also time the pieces of one layer's steps")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (7 if args.quick else 9)
    args.cases = QUICK if args.quick else CASES
    if args.child_out:
        child(args)
        return None
    print(f"machine : {machine_info()}")
    print(f"blas    : {blas_info()}")
    print(f"network : ConvResNet((H, W), c, N, 10, T=1, activation={args.activation!r}), "
          f"{args.dtype}, average pooling, cross-entropy; median of {args.repeats}")
    sys.stdout.flush()
    here = os.path.dirname(os.path.abspath(__file__))
    rows, parts, torch_version = [], [], None
    t0 = time.perf_counter()
    for nt in args.threads:
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(nt), OMP_NUM_THREADS=str(nt),
                   MKL_NUM_THREADS=str(nt), NUMBA_NUM_THREADS=str(nt))
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
            out = fh.name
        cmd = [sys.executable, os.path.join(here, "conv_step.py"), "--child-out", out,
               "--activation", args.activation, "--dtype", args.dtype,
               "--repeats", str(args.repeats), "--warmup", str(args.warmup)]
        cmd += ["--quick"] if args.quick else []
        cmd += ["--no-torch"] if args.no_torch else []
        cmd += ["--breakdown"] if args.breakdown else []
        try:
            subprocess.run(cmd, env=env, check=True)
            with open(out) as fh:
                res = json.load(fh)
        finally:
            os.unlink(out)
        rows += res["rows"]
        parts += res["parts"]
        torch_version = res["torch"]
    columns = [("threads", "thr", "d"), ("H", "H", "d"), ("W", "W", "d"), ("c", "c", "d"),
               ("N", "N", "d"), ("s", "s", "d"), ("mgnn_ms", "mgnn ms", ".2f"),
               ("torch_ms", "torch ms", ".2f"), ("ratio", "mgnn/torch", ".2f"),
               ("pair_ratio", "median pair ratio", ".2f"),
               ("gflops", "GFLOP/s", ".1f"), ("other_load_pct", "%busy", ".0f"),
               ("verdict", "target", "s")]
    print()
    print(format_markdown(rows, columns))
    print()
    print(f"torch {torch_version}; target mgnn/torch <= 1.0; met in "
          f"{sum(r['verdict'] == 'met' for r in rows)} of {len(rows)} rows "
          f"({time.perf_counter() - t0:.0f} s)")
    if parts:
        names = list(parts[0]["ms"])
        print()
        print("one layer's pieces, ms (median, interleaved):")
        print(format_markdown(
            [dict(p, case="x".join(map(str, p["case"][:2])) + f", c {p['case'][2]}, "
                  f"s {p['case'][4]}", **p["ms"]) for p in parts],
            [("threads", "thr", "d"), ("case", "case", "s")]
            + [(k, k, ".2f") for k in names] + [("other_load_pct", "%busy", ".0f")]))
    checked = [r for r in rows if "grad_rel_err" in r]
    if checked:
        print(f"check   : worst relative gradient difference torch vs mgnn "
              f"{max(r['grad_rel_err'] for r in checked):.1e}, loss "
              f"{max(r['loss_rel_err'] for r in checked):.1e}")
    if args.json:
        save_json(args.json, dict(machine=machine_info(), blas=blas_info(), rows=rows,
                                  parts=parts, torch=torch_version))
        print(f"saved   : {args.json}")
    return rows


if __name__ == "__main__":
    main()
