"""Small helpers shared by the benchmark scripts: timing, GEMM rate, thread count, tables.

Benchmarks are run by hand (``python benchmarks/NAME.py``), never in CI. Nothing here
imports mgnn, so a script can time anything with it.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import time

import numpy as np


def measure(fn, repeats=5, warmup=1, min_sample=0.02, max_inner=1000):
    """Median wall time (seconds) of one call of ``fn()``.

    ``warmup`` untimed calls come first (JIT compilation, first-touch of buffers,
    thread-pool start-up). Each of the ``repeats`` samples then times a loop of
    ``inner`` calls, with ``inner`` chosen once so that a sample lasts at least
    ``min_sample`` seconds (so that sub-millisecond calls are not lost in timer
    noise); the median of the per-call times is returned. The garbage collector
    is disabled while timing.
    """
    for _ in range(max(warmup, 1)):
        t0 = time.perf_counter()
        fn()
        one = time.perf_counter() - t0
    inner = int(min(max_inner, max(1, np.ceil(min_sample / max(one, 1e-9)))))
    samples = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(max(repeats, 1)):
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            samples.append((time.perf_counter() - t0) / inner)
    finally:
        if gc_was_enabled:
            gc.enable()
    return statistics.median(samples)


def gemm_rate(m, k, n, dtype=np.float64, repeats=7, transpose_b=True):
    """Measured FLOP/s of one ``(m x k) @ (k x n)`` matmul into a preallocated output.

    With ``transpose_b`` the right factor is a transposed C-ordered ``(n x k)``
    array, as in ``U @ W.T`` of a dense layer.
    """
    rng = np.random.default_rng(0)
    A = rng.standard_normal((m, k)).astype(dtype)
    B = rng.standard_normal((n, k)).astype(dtype).T if transpose_b else \
        rng.standard_normal((k, n)).astype(dtype)
    C = np.empty((m, n), dtype)
    t = measure(lambda: np.matmul(A, B, out=C), repeats=repeats, warmup=3, min_sample=0.05)
    return 2.0 * m * k * n / t


def _numpy_blas(infos):
    """NumPy's own BLAS among threadpoolctl's entries (SciPy or torch may load others)."""
    blas = [i for i in infos if i.get("user_api") == "blas"]
    for info in blas:
        if "numpy" in info.get("filepath", ""):
            return info
    return blas[0] if blas else None


def blas_threads():
    """Number of threads of the BLAS NumPy uses (via threadpoolctl when installed)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - threadpoolctl ships with scipy stacks
        threadpool_info = None
    if threadpool_info is not None:
        info = _numpy_blas(threadpool_info())
        if info is not None:
            return int(info["num_threads"])
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return os.cpu_count() or 1


def blas_info():
    """One line naming NumPy's BLAS (library, core type, threads) when threadpoolctl knows it."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover
        return f"numpy {np.__version__}, BLAS threads {blas_threads()}"
    info = _numpy_blas(threadpool_info())
    if info is None:
        return f"numpy {np.__version__}, BLAS unknown"
    return (f"numpy {np.__version__}, {info.get('internal_api')} {info.get('version')} "
            f"({info.get('architecture')}), {info.get('num_threads')} threads")


def machine_info():
    """A short description of the machine (CPU model, core count, Python)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}"


def _busy_seconds():
    """CPU seconds all processes of the machine have been busy (None where unknown)."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """Context manager: share of the machine's CPUs used by *other* processes meanwhile.

    Benchmarks on a shared machine are only as good as its quietness; a row whose
    ``share`` is more than a few per cent was timed while something else ran.
    ``share`` stays None where /proc/stat is unavailable.

    >>> with OtherLoad() as load:
    ...     pass
    """

    def __enter__(self):
        self.share = None
        self._busy = _busy_seconds()
        t = os.times()
        self._own = t.user + t.system
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc):
        busy = _busy_seconds()
        if busy is None or self._busy is None:
            return False
        t = os.times()
        own = t.user + t.system - self._own
        wall = time.perf_counter() - self._wall
        self.share = max(0.0, (busy - self._busy - own) / (wall * (os.cpu_count() or 1)))
        return False


def format_table(rows, columns):
    """Render ``rows`` (a list of dicts) as a plain-text table.

    ``columns`` is a list of ``(key, header, fmt)``; ``fmt`` is a format spec such
    as ``".3g"`` or a callable; a missing or None value prints as ``-``.
    """
    cells = []
    for r in rows:
        line = []
        for key, _, fmt in columns:
            v = r.get(key)
            if v is None:
                line.append("-")
            elif callable(fmt):
                line.append(fmt(v))
            else:
                line.append(format(v, fmt))
        cells.append(line)
    heads = [h for _, h, _ in columns]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(heads)]
    out = ["  ".join(h.rjust(wd) for h, wd in zip(heads, widths, strict=True)),
           "  ".join("-" * wd for wd in widths)]
    out += ["  ".join(c.rjust(wd) for c, wd in zip(line, widths, strict=True)) for line in cells]
    return "\n".join(out)


def format_markdown(rows, columns):
    """Render ``rows`` as a Markdown table (same ``columns`` as :func:`format_table`)."""
    def cell(r, key, fmt):
        v = r.get(key)
        if v is None:
            return "-"
        return fmt(v) if callable(fmt) else format(v, fmt)

    out = ["| " + " | ".join(h for _, h, _ in columns) + " |",
           "|" + "|".join("---" for _ in columns) + "|"]
    out += ["| " + " | ".join(cell(r, k, f) for k, _, f in columns) + " |" for r in rows]
    return "\n".join(out)


def save_json(path, payload):
    """Write ``payload`` (JSON-serialisable, NumPy scalars allowed) to ``path``."""
    def default(o):
        if isinstance(o, np.generic):
            return o.item()
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")

    with open(path, "w") as fh:
        json.dump(payload, fh, indent=2, default=default)
        fh.write("\n")
