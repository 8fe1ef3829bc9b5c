"""GPU backend: value-and-gradient against PyTorch CUDA, and single-GPU layer-parallel MGRIT.

    python benchmarks/gpu.py [--quick] [--dtypes float64 float32] [--out DIR]
    python benchmarks/gpu.py --help

Needs CuPy and a CUDA device (``pip install -e ".[gpu]"``); exits with a message
otherwise. PyTorch with CUDA is used for the comparison when it imports.

Part 1 (issue 8): for w in {32, 128, 512}, N in {64, 256, 1024}, s in {5000, 50000} and
each dtype, the median wall time of one ``Objective.value_and_grad`` of
``ResNet(2, w, N, 5)`` (tanh, cross-entropy on the peaks data) with theta and the data
moved to the GPU by :func:`mgnn.backend.to_device`, and of the same network's forward +
backward in PyTorch on the same GPU in the same run (the ``TorchResNet`` of
``benchmarks/step.py`` moved to CUDA). Timing: ``inner`` calls between two full
device synchronisations (``cupy`` device and ``torch.cuda.synchronize``), so host-side
launch overhead counts on both sides; medians over ``--repeats`` samples. Before timing,
the loss and gradient of both are compared (relative error printed), and in float64 the
GPU gradient is compared with the CPU one on the small cases (issue: 1e-12). Cases whose
states do not fit in the free device memory are listed as skipped with the estimate.
Targets: mgnn / torch <= 1.0 everywhere, <= 0.5 at w <= 32.

Part 2: single-GPU layer-parallel forward propagation, N = 1024, w = 32, s = 5000:
MGRIT (``MGRITPropagation(batched=True)``, cold start, 2 and 3 iterations) against the
serial layer-by-layer forward on the same GPU; the relative error of ``U_N`` against the
serial states must be <= ``--lp-tol``. Target: >= 3x faster than serial. The unbatched
MGRIT forward is timed alongside, to show what batching buys.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import format_table, machine_info, save_json  # noqa: E402

WIDTHS = (32, 128, 512)
DEPTHS = (64, 256, 1024)
SAMPLES = (5000, 50000)
QUICK = dict(widths=(32, 128), depths=(64,), samples=(5000,))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--widths", type=int, nargs="+", default=list(WIDTHS))
    ap.add_argument("--depths", type=int, nargs="+", default=list(DEPTHS))
    ap.add_argument("--samples", type=int, nargs="+", default=list(SAMPLES))
    ap.add_argument("--dtypes", nargs="+", default=["float64", "float32"],
                    choices=["float64", "float32"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-sample", type=float, default=0.05,
                    help="seconds per timing sample (sets the inner loop count)")
    ap.add_argument("--quick", action="store_true", help="a small subset of part 1")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    ap.add_argument("--skip-grid", action="store_true", help="skip part 1")
    ap.add_argument("--skip-layer-parallel", action="store_true", help="skip part 2")
    ap.add_argument("--lp-levels", type=int, default=3)
    ap.add_argument("--lp-cf", type=int, default=4)
    ap.add_argument("--lp-relax", default="F", choices=["F", "FCF", "FCFCF"])
    ap.add_argument("--lp-iters", type=int, nargs="+", default=[2, 3])
    ap.add_argument("--lp-tol", type=float, default=1e-2,
                    help="required relative error of U_N against the serial forward")
    ap.add_argument("--memory-fraction", type=float, default=0.7,
                    help="skip a case whose estimated memory exceeds this share of free GPU "
                         "memory")
    ap.add_argument("--out", type=Path, default=None, help="write results JSON here")
    args = ap.parse_args(argv)
    if args.quick:
        args.widths, args.depths, args.samples = (list(v) for v in QUICK.values())
    return args


def require_gpu():
    """CuPy and a CUDA device, or exit with a clear message."""
    from mgnn.backend import gpu_available

    if not gpu_available():
        try:
            import cupy  # noqa: F401
            why = "CuPy imports but sees no CUDA device"
        except ImportError:
            why = "CuPy is not installed (pip install -e \".[gpu]\")"
        sys.exit(f"benchmarks/gpu.py needs a CUDA GPU: {why}. Nothing was measured.")
    import cupy as cp

    return cp


def import_torch_cuda(no_torch):
    if no_torch:
        return None, "disabled (--no-torch)"
    try:
        import torch
    except ImportError:
        return None, "PyTorch not installed"
    if not torch.cuda.is_available():
        return None, "PyTorch has no CUDA device"
    return torch, f"PyTorch {torch.__version__}, CUDA {torch.version.cuda}"


# ------------------------------------------------------------------------- timing
def make_sync(cp, torch):
    dev = cp.cuda.Device()

    def sync():
        dev.synchronize()
        if torch is not None:
            torch.cuda.synchronize()
    return sync


def cuda_measure(fn, sync, repeats=5, warmup=2, min_sample=0.05, max_inner=200):
    """Median seconds per call of ``fn`` on the GPU: ``inner`` calls between two full
    device synchronisations, so queued kernels are counted (and host overhead too)."""
    for _ in range(max(warmup, 1)):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        one = time.perf_counter() - t0
    inner = int(min(max_inner, max(1, np.ceil(min_sample / max(one, 1e-9)))))
    samples = []
    for _ in range(max(repeats, 1)):
        sync()
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        sync()
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


# ------------------------------------------------------------------------- part 1
def estimate_bytes(w, N, s, itemsize):
    """mgnn's workspace (states and records, N+1 and N of (s, w)) plus torch's saved
    activations (about three (s, w) tensors per layer); the larger of the two."""
    mgnn = (2 * N + 8) * s * w * itemsize
    torch = (3 * N + 8) * s * w * itemsize
    return max(mgnn, torch)


def torch_model(torch, net, theta, X, y):
    """``benchmarks/step.py``'s TorchResNet with every tensor on the GPU."""
    from step import TorchResNet

    m = TorchResNet(torch, net, theta, X, y)

    def cuda_leaf(t):
        return t.detach().to("cuda").requires_grad_(True)

    m.W_open, m.b_open = cuda_leaf(m.W_open), cuda_leaf(m.b_open)
    m.W = [cuda_leaf(t) for t in m.W]
    m.b = [cuda_leaf(t) for t in m.b]
    m.W_close, m.b_close = cuda_leaf(m.W_close), cuda_leaf(m.b_close)
    m.params = [m.W_open, m.b_open, *m.W, *m.b, m.W_close, m.b_close]
    m.X, m.y = m.X.to("cuda"), m.y.to("cuda")

    def flat_grad():
        parts = [m.W_open, m.b_open]
        for W, b in zip(m.W, m.b, strict=True):
            parts += [W, b]
        parts += [m.W_close, m.b_close]
        return torch.cat([q.grad.detach().reshape(-1) for q in parts]).cpu().numpy()

    m.flat_grad = flat_grad
    return m


def grid_case(cp, torch, sync, dtype, w, N, s, args, free):
    from mgnn.backend import to_device, to_host
    from mgnn.data import peaks
    from mgnn.nets import ResNet
    from mgnn.objective import Objective

    dt = np.dtype(dtype).type
    row = dict(dtype=dtype, w=w, N=N, s=s, target=0.5 if w <= 32 else 1.0)
    need = estimate_bytes(w, N, s, np.dtype(dt).itemsize)
    row["need_gib"] = need / 2**30
    if need > args.memory_fraction * free:
        row["verdict"] = (f"skipped: needs ~{need / 2**30:.0f} GiB, "
                          f"{free / 2**30:.0f} GiB free")
        return row
    data = peaks(s, 10, seed=0, dtype=dt)
    net = ResNet(2, w, N, 5, T=5.0, activation="tanh", dtype=dt)
    theta = net.init(np.random.default_rng(1))
    Xg, Yg, tg = to_device(data.X_train, data.Y_train, theta)
    obj = Objective(net, Xg, Yg)
    val, grad = obj.value_and_grad(tg)  # compiles the CuPy kernels before timing
    grad = to_host(grad)
    if dtype == "float64" and N * s * w * w <= 64 * 5000 * 128 * 128:
        fc, gc_ = Objective(net, data.X_train, data.Y_train).value_and_grad(theta)
        row["cpu_rel_err"] = float(np.linalg.norm(grad - gc_) / np.linalg.norm(gc_))
    row["mgnn_ms"] = 1e3 * cuda_measure(lambda: obj.value_and_grad(tg), sync, args.repeats,
                                        min_sample=args.min_sample)
    if torch is not None:
        model = torch_model(torch, net, theta, data.X_train, data.Y_train)
        loss = float(model.step().detach())
        row["grad_rel_err"] = float(np.linalg.norm(model.flat_grad() - grad)
                                    / np.linalg.norm(grad))
        row["loss_rel_err"] = abs(loss - val) / abs(val)
        row["torch_ms"] = 1e3 * cuda_measure(model.step, sync, args.repeats,
                                             min_sample=args.min_sample)
        row["ratio"] = row["mgnn_ms"] / row["torch_ms"]
        row["verdict"] = "met" if row["ratio"] <= row["target"] else "NOT met"
        del model
    else:
        row["verdict"] = "n/a (no torch)"
    obj = Xg = Yg = tg = None  # free the device arrays before the next case
    gc.collect()
    cp.get_default_memory_pool().free_all_blocks()
    if torch is not None:
        torch.cuda.empty_cache()
    return row


GRID_COLUMNS = [("dtype", "dtype", "s"), ("w", "w", "d"), ("N", "N", "d"), ("s", "s", "d"),
                ("mgnn_ms", "mgnn [ms]", ".3f"), ("torch_ms", "torch [ms]", ".3f"),
                ("ratio", "mgnn/torch", ".2f"), ("target", "target", ".1f"),
                ("grad_rel_err", "grad vs torch", ".1e"),
                ("cpu_rel_err", "grad vs CPU", ".1e"), ("verdict", "verdict", "s")]


# ------------------------------------------------------------------------- part 2
def layer_parallel(cp, sync, args):
    from batched_relaxation import forward_case

    from mgnn.backend import to_device
    from mgnn.mgrit import MGRITPropagation
    from mgnn.nets import ResNet
    from mgnn.propagation import SerialPropagation

    N, w, s = 1024, 32, 5000
    rng = np.random.default_rng(0)
    net = ResNet(2, w, N, 5, T=5.0, activation="tanh")
    theta = to_device(net.init(rng))
    X = to_device(rng.standard_normal((s, 2)))
    ws = net.workspace(s, xp=cp)
    rows = []

    def case(prop, reset):
        return forward_case(net, theta, X, prop, ws, reset)

    serial = SerialPropagation()
    t_ser = cuda_measure(case(serial, False), sync, args.repeats, min_sample=0.0)
    ref = ws.U[-1].copy()
    nref = float(cp.linalg.norm(ref))
    rows.append(dict(method="serial", iters=None, ms=1e3 * t_ser, speedup=1.0, err=0.0))
    for iters in args.lp_iters:
        for batched in (True, False):
            prop = MGRITPropagation(levels=args.lp_levels, cf=args.lp_cf, relax=args.lp_relax,
                                    fwd_iters=iters, batched=batched)
            t = cuda_measure(case(prop, True), sync, args.repeats, min_sample=0.0)
            err = float(cp.linalg.norm(ws.U[-1] - ref)) / nref
            ok = err <= args.lp_tol
            verdict = ("met" if t_ser / t >= 3.0 else "NOT met") if ok else \
                f"error {err:.1e} > tol {args.lp_tol:g}"
            rows.append(dict(method="MGRIT batched" if batched else "MGRIT unbatched",
                             iters=iters, ms=1e3 * t, speedup=t_ser / t, err=err,
                             verdict=verdict if batched else "(reference)"))
            del prop
    return rows


LP_COLUMNS = [("method", "forward", "s"), ("iters", "iters", "d"), ("ms", "median [ms]", ".2f"),
              ("speedup", "serial/this", ".2f"), ("err", "rel. err U_N", ".1e"),
              ("verdict", "target >= 3x", "s")]


def main(argv=None):
    args = parse_args(argv)
    cp = require_gpu()
    torch, torch_info = import_torch_cuda(args.no_torch)
    sync = make_sync(cp, torch)
    dev = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    name = dev["name"].decode() if isinstance(dev["name"], bytes) else dev["name"]
    print(f"GPU: {name}; host: {machine_info()}; CuPy {cp.__version__}; {torch_info}")
    out = dict(gpu=name, host=machine_info(), cupy=cp.__version__, torch=torch_info)
    if not args.skip_grid:
        rows = []
        for dtype in args.dtypes:
            for w in args.widths:
                for N in args.depths:
                    for s in args.samples:
                        free = cp.cuda.runtime.memGetInfo()[0]
                        rows.append(grid_case(cp, torch, sync, dtype, w, N, s, args, free))
                        print(format_table(rows[-1:], GRID_COLUMNS).split("\n")[-1],
                              flush=True)
        print("\nvalue-and-gradient, mgnn (CuPy) vs PyTorch CUDA, same GPU, same run")
        print(format_table(rows, GRID_COLUMNS))
        out["grid"] = rows
    if not args.skip_layer_parallel:
        rows = layer_parallel(cp, sync, args)
        print(f"\nlayer-parallel forward on one GPU, N=1024, w=32, s=5000, levels="
              f"{args.lp_levels}, cf={args.lp_cf}, relax={args.lp_relax}, "
              f"tol {args.lp_tol:g} on U_N")
        print(format_table(rows, LP_COLUMNS))
        out["layer_parallel"] = rows
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        save_json(args.out / "gpu.json", out)
    return out


if __name__ == "__main__":
    main()
