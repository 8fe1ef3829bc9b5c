"""GPU benchmark of issue 19: mgnn (CuPy) against PyTorch CUDA, kernels, one-GPU layer-parallel.

    python benchmarks/gpu.py --quick --out results/gpu-quick        # preflight, ~1-2 min
    python benchmarks/gpu.py --out results/gpu --time-limit 540     # the full run
    python benchmarks/gpu.py --stand-in --quick --out /tmp/g        # the script, no GPU

Everything goes to ``OUT/gpu.json`` and ``OUT/gpu.md`` (Markdown tables), rewritten
after every measured row, so a run cut short keeps what it measured; the tables are
printed as well. A failing case is recorded with its error and the run goes on.
``--time-limit`` bounds the whole run: rows left when it is spent are listed as not run.

Sections, in this order:

1. **environment and preflight**: GPU, CuPy, PyTorch, CUDA; the GPU gradient of a small
   float64 problem against the CPU (fused sweep width 16 and cuBLAS width 80);
   relative error, target <= 1e-12.
2. **kernels**: per-call times (CUDA events, medians) of the pieces issue 19 measured:
   the bias gradient (``column_sum`` against ``cupy.sum(axis=0)`` and ``torch.sum(0)``)
   at (s, w) = (50000, 32), (50000, 128), (5000, 32) float64; a fused forward step
   against cuBLAS + elementwise; an adjoint step; a whole forward sweep of 64 layers in
   one launch against 64 fused step launches.
3. **layer-parallel on one GPU**: value-and-gradient, N = 1024, w = 32, s in {64, 512,
   5000}: the serial sweeps (whole-sweep kernels; fused steps layer by layer) against
   ``MGRITPropagation(batched=True)`` with cold starts (its one-shot defaults, then
   fixed V-cycles with injected coarse weights: ``LP_CONFIGS``), gradient error against
   the serial gradient, iterations taken; target: >= 3x the fastest serial at a relative
   gradient error <= 1e-3. The defaults also warm-started at the same theta (what the
   one-shot setting is for; optimistic, since training moves theta between calls).
   Then the forward MGRIT solve eager against its replay as a CUDA graph
   (:class:`mgnn.graphs.GraphCache`; the solve's input check done before capture),
   which is what graph capture of the relaxation would buy.
4. **grid**: value-and-gradient of ``ResNet(2, w, N, 5)`` (tanh, cross-entropy, peaks),
   w in {32, 128, 512}, N in {64, 256, 1024}, s in {64, 5000, 50000}, float32 and
   float64, against PyTorch eager (the same network, parameters as leaf tensors, a loop
   over layers) on the same GPU in the same run; gradients against the CPU (float64,
   cases small enough) and against PyTorch. Targets: mgnn / torch <= 1.0 in every row,
   <= 0.5 at w <= 32. Cheapest rows first. Cases whose memory estimate exceeds
   ``--memory-fraction`` of the free device memory are skipped with the estimate.
5. **torch.compile(mode="reduce-overhead")**: reported only, for rows with N <=
   ``--compile-max-depth`` while time is left (compilation takes minutes at depth).

Timing: ``inner`` calls between two full device synchronisations (CuPy's device and
``torch.cuda.synchronize``), so host-side launch overhead counts on both sides; medians
of ``--repeats`` samples. TF32 is off in PyTorch (CuPy does not use it either).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import format_table, machine_info  # noqa: E402

WIDTHS, DEPTHS, SAMPLES = (32, 128, 512), (64, 256, 1024), (64, 5000, 50000)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--out", type=Path, default=Path("gpu-results"),
                    help="folder of gpu.json and gpu.md")
    ap.add_argument("--quick", action="store_true",
                    help="preflight, kernels, a small grid and one layer-parallel case")
    ap.add_argument("--time-limit", type=float, default=540.0,
                    help="seconds for the whole run (rows left then are not run)")
    ap.add_argument("--widths", type=int, nargs="+", default=list(WIDTHS))
    ap.add_argument("--depths", type=int, nargs="+", default=list(DEPTHS))
    ap.add_argument("--samples", type=int, nargs="+", default=list(SAMPLES))
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float64"],
                    choices=["float32", "float64"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-sample", type=float, default=0.03,
                    help="seconds per timing sample (sets the inner loop count)")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    ap.add_argument("--compile-max-depth", type=int, default=64,
                    help="torch.compile only for networks this shallow (0: never)")
    ap.add_argument("--skip", nargs="*", default=[],
                    choices=["kernels", "layer-parallel", "grid", "compile"])
    ap.add_argument("--memory-fraction", type=float, default=0.6)
    ap.add_argument("--lp-depth", type=int, default=1024)
    ap.add_argument("--lp-width", type=int, default=32)
    ap.add_argument("--lp-samples", type=int, nargs="+", default=[64, 512, 5000])
    ap.add_argument("--lp-activation", default="smooth_relu",
                    choices=["tanh", "relu", "smooth_relu", "identity"])
    ap.add_argument("--lp-init", default="layer_parallel",
                    choices=["glorot", "layer_parallel"],
                    help="layer_parallel: the papers' setting (inner weights U(-1,1))")
    ap.add_argument("--stand-in", action="store_true",
                    help="run on the CPU stand-in for CuPy with tiny sizes (checks the script;"
                         " times mean nothing)")
    args = ap.parse_args(argv)
    if args.quick:
        args.widths, args.depths, args.samples = [32, 128], [64], [64, 5000]
        args.lp_samples = [64]
    if args.stand_in:
        args.widths = [4, 70]
        args.depths, args.samples = [4], [8, 12]
        args.lp_depth, args.lp_width, args.lp_samples = 64, 4, [8]
        args.compile_max_depth = 4
        args.min_sample, args.repeats = 0.0, 2
    return args


# ----------------------------------------------------------------------- environment
class Env:
    """The array namespace, PyTorch and how to synchronise and time on the device."""

    def __init__(self, args):
        self.stand_in = args.stand_in
        if self.stand_in:
            from mgnn.testing import fakecupy as xp
        else:
            from mgnn.backend import gpu_available

            if not gpu_available():
                try:
                    import cupy  # noqa: F401
                    why = "CuPy imports but sees no CUDA device"
                except ImportError:
                    why = "CuPy is not installed (pip install -e \".[gpu]\")"
                sys.exit(f"benchmarks/gpu.py needs a CUDA GPU: {why}. Nothing was measured "
                         "(--stand-in checks the script on the CPU).")
            import cupy as xp
        self.xp = xp
        from mgnn.backend import device_name, kernels_for

        self.k = kernels_for(xp)
        self.name = device_name(xp)
        self.torch, self.torch_info = None, "disabled (--no-torch)"
        if not args.no_torch:
            try:
                import torch
            except ImportError:
                self.torch_info = "PyTorch not installed"
            else:
                if self.stand_in:
                    self.torch, self.tdev = torch, "cpu"
                    torch.set_num_threads(1)
                    self.torch_info = f"PyTorch {torch.__version__} on the CPU (stand-in run)"
                elif torch.cuda.is_available():
                    self.torch, self.tdev = torch, "cuda"
                    torch.backends.cuda.matmul.allow_tf32 = False
                    torch.backends.cudnn.allow_tf32 = False
                    self.torch_info = f"PyTorch {torch.__version__}, CUDA {torch.version.cuda}"
                else:
                    self.torch_info = "PyTorch has no CUDA device"

    def sync(self):
        if not self.stand_in:
            self.xp.cuda.Device().synchronize()
            if self.torch is not None:
                self.torch.cuda.synchronize()

    def free_memory(self):
        return self.xp.cuda.runtime.memGetInfo()[0]

    def release(self):
        gc.collect()
        self.xp.get_default_memory_pool().free_all_blocks()
        if self.torch is not None and not self.stand_in:
            self.torch.cuda.empty_cache()

    def info(self):
        out = dict(gpu=self.name, host=machine_info(), torch=self.torch_info,
                   stand_in=self.stand_in)
        out["cupy"] = getattr(self.xp, "__version__", "?")
        if not self.stand_in:
            try:
                out["cuda_runtime"] = self.xp.cuda.runtime.runtimeGetVersion()
                out["driver"] = self.xp.cuda.runtime.driverGetVersion()
            except Exception:  # pragma: no cover
                pass
        return out


def measure(env, fn, repeats, min_sample, max_inner=200):
    """Median seconds per call: ``inner`` calls between two full synchronisations."""
    for _ in range(2):
        env.sync()
        t0 = time.perf_counter()
        fn()
        env.sync()
        one = time.perf_counter() - t0
    inner = int(min(max_inner, max(1, math.ceil(min_sample / max(one, 1e-9)))))
    samples = []
    for _ in range(max(repeats, 1)):
        env.sync()
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        env.sync()
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


def event_time(env, fn, repeats=20):
    """Median device time (seconds) of ``fn`` by CUDA events (wall time on the stand-in)."""
    fn()
    env.sync()
    if env.stand_in:
        return measure(env, fn, 3, 0.0)
    xp = env.xp
    times = []
    for _ in range(repeats):
        a, b = xp.cuda.Event(), xp.cuda.Event()
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(xp.cuda.get_elapsed_time(a, b) * 1e-3)
    return statistics.median(times)


# ----------------------------------------------------------------------- the report
class Report:
    """Rows by section; JSON and Markdown rewritten after every row."""

    SECTIONS = {
        "preflight": [("case", "case", "s"), ("rel_err", "rel. error", ".1e"),
                      ("target", "target", ".0e"), ("verdict", "verdict", "s")],
        "kernels": [("kernel", "kernel", "s"), ("shape", "shape", "s"),
                    ("mgnn_us", "mgnn [us]", ".1f"), ("ref", "reference", "s"),
                    ("ref_us", "ref. [us]", ".1f"), ("ratio", "mgnn/ref", ".2f"),
                    ("verdict", "note", "s")],
        "layer_parallel": [("s", "s", "d"), ("method", "method", "s"),
                           ("ms", "value+grad [ms]", ".3f"), ("speedup", "fastest serial/this",
                                                              ".2f"),
                           ("grad_err", "grad rel. err", ".1e"), ("fwd_nit", "fwd it", "d"),
                           ("bwd_nit", "bwd it", "d"), ("verdict", "target >= 3x @ 1e-3", "s")],
        "graphs": [("s", "s", "d"), ("what", "forward MGRIT solve", "s"),
                   ("ms", "time [ms]", ".3f"), ("speedup", "eager/this", ".2f"),
                   ("err", "rel. diff", ".1e"), ("verdict", "note", "s")],
        "grid": [("dtype", "dtype", "s"), ("w", "w", "d"), ("N", "N", "d"), ("s", "s", "d"),
                 ("mgnn_ms", "mgnn [ms]", ".3f"), ("torch_ms", "torch [ms]", ".3f"),
                 ("ratio", "mgnn/torch", ".2f"), ("target", "target", ".1f"),
                 ("grad_vs_torch", "grad vs torch", ".1e"), ("grad_vs_cpu", "grad vs CPU",
                                                             ".1e"),
                 ("verdict", "verdict", "s")],
        "compile": [("dtype", "dtype", "s"), ("w", "w", "d"), ("N", "N", "d"), ("s", "s", "d"),
                    ("mgnn_ms", "mgnn [ms]", ".3f"), ("compiled_ms", "torch.compile [ms]",
                                                      ".3f"),
                    ("ratio", "mgnn/compiled", ".2f"), ("compile_s", "compile [s]", ".1f"),
                    ("verdict", "note", "s")],
    }
    TITLES = {
        "preflight": "Preflight: GPU gradient against the CPU (float64)",
        "kernels": "Kernels (CUDA events, medians)",
        "layer_parallel": "Layer-parallel value-and-gradient on one GPU",
        "graphs": "Forward MGRIT solve: eager against a replayed CUDA graph",
        "grid": "Value-and-gradient, mgnn against PyTorch eager (same GPU, same run)",
        "compile": "torch.compile(mode='reduce-overhead') (reported only)",
    }

    def __init__(self, out, env, args):
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.data = {"env": env.info(), "args": {k: (str(v) if isinstance(v, Path) else v)
                                                 for k, v in vars(args).items()},
                     "started": time.strftime("%Y-%m-%d %H:%M:%S"), "notes": []}
        for s in self.SECTIONS:
            self.data[s] = []
        self.write()

    def add(self, section, row, echo=True):
        self.data[section].append(row)
        self.write()
        if echo:
            print(format_table([row], self.SECTIONS[section]).split("\n")[-1], flush=True)

    def note(self, text):
        self.data["notes"].append(text)
        print("note:", text, flush=True)
        self.write()

    def markdown(self):
        env = self.data["env"]
        lines = [f"# benchmarks/gpu.py ({self.data['started']})", "",
                 f"GPU: {env['gpu']}; CuPy {env.get('cupy')}; {env['torch']}; host: "
                 f"{env['host']}", ""]
        for s, cols in self.SECTIONS.items():
            rows = self.data[s]
            if not rows:
                continue
            lines += [f"## {self.TITLES[s]}", "", "| " + " | ".join(h for _, h, _ in cols) + " |",
                      "|" + "---|" * len(cols)]
            for r in rows:
                cells = []
                for key, _, fmt in cols:
                    v = r.get(key)
                    cells.append("-" if v is None else (format(v, fmt) if not isinstance(v, str)
                                                        else v))
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
        if self.data["notes"]:
            lines += ["## Notes", ""] + [f"- {n}" for n in self.data["notes"]] + [""]
        return "\n".join(lines)

    def write(self):
        def default(o):
            if isinstance(o, np.generic):
                return o.item()
            return str(o)
        (self.out / "gpu.json").write_text(json.dumps(self.data, indent=1, default=default))
        (self.out / "gpu.md").write_text(self.markdown())


def guarded(report, section, row, fn):
    """Run ``fn(row)``; an exception is recorded in the row (and the run goes on)."""
    try:
        fn(row)
    except Exception as exc:  # noqa: BLE001 - record and continue
        row["verdict"] = f"error: {type(exc).__name__}: {str(exc)[:160]}"
        row["traceback"] = traceback.format_exc()[-2000:]
    report.add(section, row)


# ----------------------------------------------------------------------- problems
def objective(env, w, N, s, dtype, act="tanh", prop=None, seed=0):
    from mgnn.backend import to_device
    from mgnn.data import peaks
    from mgnn.nets import ResNet
    from mgnn.objective import Objective

    dt = np.dtype(dtype).type
    d = peaks(s, 10, seed=seed, dtype=dt)
    net = ResNet(2, w, N, 5, T=5.0, activation=act, dtype=dt)
    X, Y = to_device(d.X_train, d.Y_train, xp=env.xp)
    return Objective(net, X, Y, propagation=prop), d


def rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


class TorchNet:
    """The ResNet in PyTorch on the device: leaf tensors, a Python loop over layers."""

    def __init__(self, env, net, theta, X, y):
        torch = env.torch
        self.torch, self.F = torch, torch.nn.functional
        tdt = {np.dtype(np.float32): torch.float32,
               np.dtype(np.float64): torch.float64}[np.dtype(net.dtype)]
        p = net.unpack(theta)

        def leaf(a):
            return torch.tensor(np.array(a), dtype=tdt, device=env.tdev, requires_grad=True)

        self.W_open, self.b_open = leaf(p.W_open), leaf(p.b_open)
        self.W = [leaf(p.W[n]) for n in range(net.depth)]
        self.b = [leaf(p.b[n]) for n in range(net.depth)]
        self.W_close, self.b_close = leaf(p.W_close), leaf(p.b_close)
        self.params = [self.W_open, self.b_open, *self.W, *self.b, self.W_close, self.b_close]
        self.X = torch.tensor(np.array(X), dtype=tdt, device=env.tdev)
        self.y = torch.tensor(np.array(y), dtype=torch.int64, device=env.tdev)
        self.h = float(net.h)
        self.loss_fn = self.loss

    def loss(self):
        F, t = self.F, self.torch
        u = t.tanh(F.linear(self.X, self.W_open, self.b_open))
        for W, b in zip(self.W, self.b, strict=True):
            u = t.add(u, t.tanh(F.linear(u, W, b)), alpha=self.h)
        return F.cross_entropy(F.linear(u, self.W_close, self.b_close), self.y)

    def step(self):
        for q in self.params:
            q.grad = None
        loss = self.loss_fn()
        loss.backward()
        return loss

    def flat_grad(self):
        parts = [self.W_open, self.b_open]
        for W, b in zip(self.W, self.b, strict=True):
            parts += [W, b]
        parts += [self.W_close, self.b_close]
        return np.concatenate([q.grad.detach().cpu().numpy().ravel() for q in parts])


# ----------------------------------------------------------------------- 1. preflight
def preflight(env, report, args):
    from mgnn.backend import to_device, to_host
    from mgnn.objective import Objective

    for w in ((4, 70) if args.stand_in else (16, 80)):
        row = dict(case=f"value_and_grad w={w} N=8 s=300 float64 "
                        f"({'fused sweeps' if w <= 64 else 'cuBLAS steps'})", target=1e-12)

        def run(row, w=w):
            obj, d = objective(env, w, 8, 300, np.float64)
            theta = obj.net.init(np.random.default_rng(0))
            f, g = obj.value_and_grad(to_device(theta, xp=env.xp))
            f0, g0 = Objective(obj.net, d.X_train, d.Y_train).value_and_grad(theta)
            row["rel_err"] = max(rel(to_host(g), g0), abs(f - f0) / abs(f0))
            row["verdict"] = "met" if row["rel_err"] <= 1e-12 else "NOT met"
        guarded(report, "preflight", row, run)


# ----------------------------------------------------------------------- 2. kernels
def kernels(env, report, args):
    xp, k = env.xp, env.k
    rng = np.random.default_rng(0)
    shapes = ((64, 4), (64, 70)) if args.stand_in else ((50000, 32), (50000, 128), (5000, 32))
    for s, w in shapes:
        _kernel_case(env, report, args, xp, k, rng, s, w)
        env.release()


def _kernel_case(env, report, args, xp, k, rng, s, w):
    shape = f"({s}, {w}) float64"
    Dm = xp.asarray(rng.standard_normal((s, w)))
    gb = xp.empty(w)
    row = dict(kernel="bias gradient: column_sum", shape=shape, ref="cupy.sum(axis=0)")

    def colsum(row, Dm=Dm, gb=gb):
        row["mgnn_us"] = 1e6 * event_time(env, lambda: k.column_sum(Dm, gb))
        row["ref_us"] = 1e6 * event_time(env, lambda: xp.sum(Dm, axis=0, out=gb))
        row["ratio"] = row["mgnn_us"] / row["ref_us"]
    guarded(report, "kernels", row, colsum)
    if env.torch is not None:
        row = dict(kernel="bias gradient: column_sum", shape=shape, ref="torch D.sum(0)")

        def tsum(row, Dm=Dm, gb=gb):
            Dt = env.torch.tensor(Dm.get(), device=env.tdev)
            row["mgnn_us"] = 1e6 * event_time(env, lambda: k.column_sum(Dm, gb))
            row["ref_us"] = 1e6 * event_time(env, lambda: Dt.sum(0))
            row["ratio"] = row["mgnn_us"] / row["ref_us"]
        guarded(report, "kernels", row, tsum)
    U = xp.asarray(rng.standard_normal((s, w)))
    W = xp.asarray(0.1 * rng.standard_normal((w, w)))
    b = xp.asarray(rng.standard_normal(w))
    S, out, L = xp.empty((s, w)), xp.empty((s, w)), xp.empty((s, w))
    gW = xp.empty((w, w))
    row = dict(kernel="forward step (tanh)", shape=shape, ref="cuBLAS + elementwise")

    def fwd(row, U=U, W=W, b=b, S=S, out=out):
        row["mgnn_us"] = 1e6 * event_time(env, lambda: k.forward_step(U, W, b, 0.1, 1, S,
                                                                      out))

        def plain():
            xp.matmul(U, W.T, out=S)
            if hasattr(k, "_forward"):
                k._forward(U, b[None, :], S.dtype.type(0.1), 1, True, S, out)
            else:  # the stand-in: the CPU kernel
                k.forward_step(U, W, b, 0.1, 1, S, out)
        row["ref_us"] = 1e6 * event_time(env, plain)
        row["ratio"] = row["mgnn_us"] / row["ref_us"]
        if w > 64:
            row["ref"] += " (w > 64: mgnn takes this path too)"
    guarded(report, "kernels", row, fwd)
    row = dict(kernel="adjoint step + gW + gb", shape=shape, ref="-")

    def adj(row, U=U, W=W, S=S, out=out, L=L, gW=gW, gb=gb):
        Dm = xp.empty((s, w))
        row["mgnn_us"] = 1e6 * event_time(env, lambda: k.adjoint_step(out, U, W, S, 0.1, 1,
                                                                      Dm, L=L, gW=gW,
                                                                      gb=gb))
    guarded(report, "kernels", row, adj)
    if hasattr(k, "forward_sweep") and w <= 64:
        N = 8 if args.stand_in else 64
        Us, Ss = xp.empty((N + 1, s, w)), xp.empty((N, s, w))
        Us[0] = U
        P = xp.asarray(0.1 * rng.standard_normal(N * (w * w + w)))
        Wn = P.reshape(N, w * w + w)
        row = dict(kernel=f"forward sweep, {N} layers, one launch", shape=shape,
                   ref=f"{N} fused step launches")

        def sweep(row, Us=Us, Ss=Ss, P=P, Wn=Wn, N=N):
            row["mgnn_us"] = 1e6 * event_time(env, lambda: k.forward_sweep(Us, P, 0.1, 1,
                                                                           Ss))

            def steps():
                for n in range(N):
                    k.forward_step(Us[n], Wn[n, : w * w].reshape(w, w), Wn[n, w * w:], 0.1,
                                   1, Ss[n], Us[n + 1])
            row["ref_us"] = 1e6 * event_time(env, steps)
            row["ratio"] = row["mgnn_us"] / row["ref_us"]
        guarded(report, "kernels", row, sweep)


# ----------------------------------------------------------------------- 3. layer-parallel
# The one-shot defaults of issue 12 (F-cycles over every level, averaged coarse weights,
# rtol 1e-4 with at most 3 iterations), then fixed cycles pinned explicitly (V-cycles,
# injected coarse weights, fixed iteration counts), so that a change of the defaults
# does not change what a row measures.
_PINNED = dict(levels=3, cf=4, cycle="V", coarse_weights="inject", rtol=None, tol=None,
               reuse_tau=False)
LP_CONFIGS = [dict(),
              dict(_PINNED, relax="F", fwd_iters=2, bwd_iters=1),
              dict(_PINNED, relax="F", fwd_iters=3, bwd_iters=2),
              dict(_PINNED, relax="FCF", fwd_iters=2, bwd_iters=2),
              dict(_PINNED, relax="FCF", fwd_iters=4, bwd_iters=4)]
GRAPH_CONFIG = LP_CONFIGS[1]  # the recipe of tests/test_graphs.py: fixed iterations


def lp_label(cfg):
    """A row's name for the MGRITPropagation options ``cfg``."""
    if not cfg:
        return "MGRIT one-shot defaults"
    return (f"MGRIT {cfg['levels']} lv cf {cfg['cf']} {cfg['cycle']}-cycle {cfg['relax']} "
            f"{cfg['fwd_iters']}/{cfg['bwd_iters']}")


def layer_parallel(env, report, args, deadline):
    N, w = args.lp_depth, args.lp_width
    configs = LP_CONFIGS[:2] if args.quick else LP_CONFIGS
    report.note(f"layer-parallel: ResNet(2, {w}, {N}, 5, T=5), {args.lp_activation}, "
                f"init {args.lp_init}; cold start (prop.reset()) before every timed call "
                "unless a row says warm")
    for s in args.lp_samples:
        if time.time() > deadline:
            report.add("layer_parallel", dict(s=s, method="-", verdict="not run (time limit)"))
            continue
        _lp_case(env, report, args, deadline, N, w, s, configs)
        env.release()


def _lp_case(env, report, args, deadline, N, w, s, configs):
    from mgnn.backend import to_device, to_host
    from mgnn.graphs import GraphCache
    from mgnn.mgrit import MGRITPropagation
    from mgnn.propagation import SerialPropagation

    obj, _ = objective(env, w, N, s, np.float64, act=args.lp_activation)
    net = obj.net
    theta_h = net.init(np.random.default_rng(1), args.lp_init,
                       **({"inner_scale": 1.0} if args.lp_init == "layer_parallel" else {}))
    theta = to_device(theta_h, xp=env.xp)
    _, g_ref = obj.value_and_grad(theta)
    g_ref = to_host(g_ref)
    serial = {}
    row = dict(s=s, method="serial, whole-sweep kernels", speedup=None, grad_err=0.0)

    def ser(row):
        serial["sweep"] = measure(env, lambda: obj.value_and_grad(theta), args.repeats,
                                  args.min_sample)
        row["ms"] = 1e3 * serial["sweep"]
    guarded(report, "layer_parallel", row, ser)

    class Stepwise(SerialPropagation):
        """The serial sweep layer by layer with the fused step kernels."""

    import mgnn.propagation as mp
    row = dict(s=s, method="serial, fused steps layer by layer")

    def stepwise(row):
        orig = mp._fused_sweeps
        mp._fused_sweeps = lambda net, ws: False
        try:
            o2 = obj.with_net(net, Stepwise())
            serial["steps"] = measure(env, lambda: o2.value_and_grad(theta), args.repeats,
                                      args.min_sample)
            row["grad_err"] = rel(to_host(o2.value_and_grad(theta)[1]), g_ref)
        finally:
            mp._fused_sweeps = orig
        row["ms"] = 1e3 * serial["steps"]
    guarded(report, "layer_parallel", row, stepwise)
    best = min(serial.values()) if serial else None
    for r in report.data["layer_parallel"][-2:]:
        if best and r.get("ms"):
            r["speedup"] = best / (r["ms"] * 1e-3)
    for cfg in configs:
        if time.time() > deadline:
            report.add("layer_parallel", dict(s=s, method=lp_label(cfg),
                                              verdict="not run (time limit)"))
            continue
        variants = [(True, True)]
        if cfg is configs[1] and not args.quick:
            variants.append((False, True))
        if not cfg:  # the one-shot defaults are meant for warm starts
            variants.append((True, False))
        for batched, cold in variants:
            prop = MGRITPropagation(batched=batched, **cfg)
            o3 = obj.with_net(net, prop)
            label = lp_label(cfg) + (" batched" if batched else " unbatched")
            if not cold:
                label += ", warm (same theta: optimistic)"
            row = dict(s=s, method=label)

            def mg(row, prop=prop, o3=o3, cold=cold):
                def call():
                    if cold:
                        prop.reset()
                    return o3.value_and_grad(theta)
                t = measure(env, call, args.repeats, args.min_sample)
                _, g = call()
                st = prop.last_stats()
                row.update(ms=1e3 * t, speedup=best / t if best else None,
                           grad_err=rel(to_host(g), g_ref), fwd_nit=st["forward"].nit,
                           bwd_nit=st["adjoint"].nit)
                ok = row["grad_err"] <= 1e-3
                row["verdict"] = ((("met" if row["speedup"] >= 3.0 else "NOT met")
                                   if ok else f"error {row['grad_err']:.1e} > 1e-3")
                                  if best else "no serial baseline")
            guarded(report, "layer_parallel", row, mg)
    # what capturing the forward solve buys (the recipe of tests/test_graphs.py)
    if time.time() < deadline:
        cfg = GRAPH_CONFIG
        prop = MGRITPropagation(batched=True, **cfg)
        o4 = obj.with_net(net, prop)
        row = dict(s=s, what="eager (residuals off)")

        def graphs(row, prop=prop, o4=o4):
            import mgnn.mgrit.solver as solver_mod

            o4.value(theta)
            eng = next(iter(prop._engines.values()))
            ws = o4._workspaces[s]
            p = net.unpack(theta)
            eng.weights.bind(p.W, p.b, 0)
            eng.fstep.S = ws.S
            u0 = ws.U[0]

            def solve():
                eng.fwd.solve(u0, None, tol=None, max_iter=cfg["fwd_iters"],
                              residuals=False)
            t_e = measure(env, solve, args.repeats, args.min_sample)
            ref = to_host(eng.fwd.u)
            row["ms"] = 1e3 * t_e
            orig = solver_mod.check_array
            solver_mod.check_array = lambda x, *a, **kw: x  # checked before the capture
            try:
                cache = GraphCache(env.xp)
                cache.run("fwd", solve)
                cache.run("fwd", solve)
                t_g = measure(env, lambda: cache.run("fwd", solve), args.repeats,
                              args.min_sample)
            finally:
                solver_mod.check_array = orig
            replay.update(s=s, what="replayed CUDA graph", ms=1e3 * t_g,
                          speedup=t_e / t_g, err=rel(to_host(eng.fwd.u), ref))
        replay = {}
        guarded(report, "graphs", row, graphs)
        if replay:
            report.add("graphs", replay)


# ----------------------------------------------------------------------- 4. grid
def estimate_bytes(w, N, s, itemsize):
    """mgnn: states, records and the delta stack (3 per layer); torch: ~4 per layer."""
    return (4 * N + 16) * s * w * itemsize


def grid_case(env, args, row, compiled_rows):
    from mgnn.backend import to_device, to_host
    from mgnn.objective import Objective

    w, N, s, dtype = row["w"], row["N"], row["s"], row["dtype"]
    need = estimate_bytes(w, N, s, np.dtype(dtype).itemsize)
    row["need_gib"] = need / 2**30
    if not env.stand_in and need > args.memory_fraction * env.free_memory():
        row["verdict"] = (f"skipped: needs ~{need / 2**30:.0f} GiB, "
                          f"{env.free_memory() / 2**30:.0f} GiB free")
        return
    obj, d = objective(env, w, N, s, dtype)
    net = obj.net
    theta = net.init(np.random.default_rng(1))
    tg = to_device(theta, xp=env.xp)
    val, grad = obj.value_and_grad(tg)
    grad = to_host(grad)
    if dtype == "float64" and N * s * w * w <= 2**33:
        _, gc_ = Objective(net, d.X_train, d.Y_train).value_and_grad(theta)
        row["grad_vs_cpu"] = rel(grad, gc_)
    row["mgnn_ms"] = 1e3 * measure(env, lambda: obj.value_and_grad(tg), args.repeats,
                                   args.min_sample)
    if env.torch is not None:
        model = TorchNet(env, net, theta, d.X_train, d.Y_train)
        model.step()
        row["grad_vs_torch"] = rel(model.flat_grad(), grad)
        row["torch_ms"] = 1e3 * measure(env, model.step, args.repeats, args.min_sample)
        row["ratio"] = row["mgnn_ms"] / row["torch_ms"]
        row["verdict"] = "met" if row["ratio"] <= row["target"] else "NOT met"
        if args.compile_max_depth and N <= args.compile_max_depth:
            compiled_rows.append(dict(dtype=dtype, w=w, N=N, s=s, mgnn_ms=row["mgnn_ms"]))
        del model
    else:
        row["verdict"] = "n/a (no torch)"


def grid(env, report, args, deadline, compiled_rows):
    cases = []
    for dtype in args.dtypes:
        for w in args.widths:
            for N in args.depths:
                for s in args.samples:
                    cases.append(dict(dtype=dtype, w=w, N=N, s=s,
                                      target=0.5 if w <= 32 else 1.0))
    cases.sort(key=lambda r: (r["N"] * r["s"] * r["w"] * max(r["w"], 64), r["dtype"]))
    for row in cases:
        if time.time() > deadline:
            row["verdict"] = "not run (time limit)"
            report.add("grid", row)
            continue
        guarded(report, "grid", row, lambda row: grid_case(env, args, row, compiled_rows))
        env.release()


def compile_pass(env, report, args, deadline, compiled_rows):
    from mgnn.backend import to_device  # noqa: F401

    for r in compiled_rows[:1] if env.stand_in else compiled_rows:
        row = dict(r)
        if time.time() > deadline - 60:
            row["verdict"] = "not run (time limit)"
            report.add("compile", row)
            continue

        def run(row):
            obj, d = objective(env, row["w"], row["N"], row["s"], row["dtype"])
            theta = obj.net.init(np.random.default_rng(1))
            model = TorchNet(env, obj.net, theta, d.X_train, d.Y_train)
            model.loss_fn = env.torch.compile(model.loss, mode="reduce-overhead")
            t0 = time.perf_counter()
            model.step()
            env.sync()
            row["compile_s"] = time.perf_counter() - t0
            row["compiled_ms"] = 1e3 * measure(env, model.step, args.repeats, args.min_sample)
            row["ratio"] = row["mgnn_ms"] / row["compiled_ms"]
            row["verdict"] = "reported only"
        guarded(report, "compile", row, run)
        env.release()


# ----------------------------------------------------------------------- main
def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    deadline = t0 + args.time_limit
    env = Env(args)
    report = Report(args.out, env, args)
    info = report.data["env"]
    print(f"GPU: {info['gpu']}; CuPy {info['cupy']}; {info['torch']}; host: {info['host']}",
          flush=True)
    preflight(env, report, args)
    if "kernels" not in args.skip:
        kernels(env, report, args)
    if "layer-parallel" not in args.skip:
        layer_parallel(env, report, args, deadline)
    compiled_rows = []
    if "grid" not in args.skip:
        grid(env, report, args, deadline, compiled_rows)
    if "compile" not in args.skip and env.torch is not None:
        compile_pass(env, report, args, deadline, compiled_rows)
    report.data["wall_s"] = time.time() - t0
    report.write()
    print("\n" + report.markdown())
    print(f"wrote {args.out / 'gpu.json'} and {args.out / 'gpu.md'} "
          f"({report.data['wall_s']:.0f} s)")
    return report.data


if __name__ == "__main__":
    main()
