"""CUDA graphs: capture a sequence of device work once, replay it with one launch.

A solver that launches many small kernels between two host reads (MGRIT's batched
relaxation on one GPU: a few launches per level and iteration, each too small to fill
the device) is bound by launch latency, not by arithmetic. CuPy captures the kernels
issued on a stream into a CUDA graph (``cupy.cuda.Stream.begin_capture`` /
``end_capture``) that ``Graph.launch`` replays as one unit. :class:`GraphCache` keys
such graphs by what fixes their shape (a level, the batch size, the buffers).

What may run inside a capture (CUDA's and CuPy 14's rules; the CPU stand-in
:mod:`mgnn.testing.fakecupy` enforces them in the test suite, and its
:class:`~mgnn.testing.fakecupy.audit_capture` lists every violation of a code path):

- no host read or synchronisation: ``float(x)``, ``x.get()``, ``bool(x)``, a residual
  norm, a finiteness check of an input;
- no allocation: an array created while capturing returns to the memory pool when the
  capture ends, while the graph keeps writing to it (``a + b`` allocates; ``xp.add(a,
  b, out=c)`` and ``c += a`` do not; neither do views);
- no cuBLAS: CuPy refuses it during capture (``cupy_backends/cuda/libs/cublas.pyx``),
  so only the fused raw kernels of :mod:`mgnn.kernels.gpu` qualify
  (:func:`mgnn.kernels.cuda_source.capturable`: steps and forward/tangent sweeps of
  width <= 64; not the weight gradients);
- scalar arguments are frozen when captured and array arguments are bound by address:
  an input that changes between replays must be copied into a buffer the graph reads
  (:meth:`GraphCache.buffer`), and a Python-side side effect of the captured code (a
  statistic, a counter) does not happen on a replay.

Examples
--------
On the CPU stand-in (the same code runs on CuPy arrays):

>>> import numpy as np
>>> from mgnn.testing import fakecupy as cp
>>> x, y = cp.asarray(np.ones(3)), cp.zeros(3)
>>> graphs = GraphCache(cp)
>>> def work():
...     cp.multiply(x, 2.0, out=y)
...     cp.add(y, x, out=y)
>>> for _ in range(3):
...     graphs.run("triple", work)
>>> graphs
GraphCache(1 graph; 1 eager run, 1 capture, 2 launches)
>>> x[...] = 5.0
>>> graphs.run("triple", work); y.get()        # the graph reads x where it lives
array([15., 15., 15.])
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

__all__ = ["GraphCache", "CaptureError"]


class CaptureError(RuntimeError):
    """The work handed to :meth:`GraphCache.run` cannot be captured (the cause is chained)."""


class GraphCache:
    """CUDA graphs keyed by the caller, captured on the second run and replayed after.

    The first :meth:`run` of a key executes the work eagerly (kernels are compiled and
    loaded, lazily allocated buffers created; its results are valid); the second
    captures it on a private non-blocking stream and launches the graph on the
    current stream; later runs launch the graph. The graph replays the captured
    kernels on the *same buffers* with the *same scalars*.

    Parameters
    ----------
    xp : module
        A device namespace with ``cuda.Stream`` capture (CuPy, or the CPU stand-in).
    max_graphs : int
        Keep at most this many graphs (least recently used dropped).

    Attributes
    ----------
    eager, captures, launches : int
        How often work ran eagerly, was captured, and a graph was launched.
    """

    def __init__(self, xp, max_graphs=16):
        if xp is np:
            raise TypeError("GraphCache needs a device namespace (CuPy); NumPy has no "
                            "CUDA graphs")
        self.xp = xp
        self.max_graphs = int(max_graphs)
        self._graphs = OrderedDict()
        self._seen = set()
        self._buffers = {}
        self._stream = None
        self.eager = self.captures = self.launches = 0

    def __repr__(self):
        n = len(self._graphs)
        return (f"GraphCache({n} graph{'s' if n != 1 else ''}; {self.eager} eager "
                f"run{'s' if self.eager != 1 else ''}, {self.captures} "
                f"capture{'s' if self.captures != 1 else ''}, {self.launches} "
                f"launch{'es' if self.launches != 1 else ''})")

    def __len__(self):
        return len(self._graphs)

    def buffer(self, name, shape, dtype):
        """A persistent device buffer (allocated on first request, outside any capture)
        for an input that changes between replays: copy the input into it, and let the
        captured work read the buffer."""
        b = self._buffers.get(name)
        if b is None or tuple(b.shape) != tuple(shape) or b.dtype != np.dtype(dtype):
            b = self._buffers[name] = self.xp.empty(shape, dtype)
        return b

    def run(self, key, fn):
        """Run ``fn()`` (device work only, see the module docstring) through the graph of
        ``key``: eagerly the first time, captured and launched the second, launched
        afterwards. Raises :class:`CaptureError` when the capture fails."""
        g = self._graphs.get(key)
        if g is not None:
            self._graphs.move_to_end(key)
            g.launch()
            self.launches += 1
            return
        if key not in self._seen:
            self._seen.add(key)
            fn()
            self.eager += 1
            return
        if self._stream is None:
            self._stream = self.xp.cuda.Stream(non_blocking=True)
        s = self._stream
        with s:
            s.begin_capture()
            try:
                fn()
            except Exception as exc:
                try:
                    s.end_capture()
                except Exception:  # pragma: no cover - the capture is already invalid
                    pass
                raise CaptureError(f"the work of graph {key!r} cannot be captured: "
                                   f"{type(exc).__name__}: {exc}") from exc
            g = s.end_capture()
        self.captures += 1
        self._graphs[key] = g
        while len(self._graphs) > self.max_graphs:
            self._graphs.popitem(last=False)
        g.launch()
        self.launches += 1

    def clear(self):
        """Drop every graph (e.g. after the buffers they read were reallocated)."""
        self._graphs.clear()
        self._seen.clear()
