"""Layer-parallel propagation: the ResNet's forward and adjoint sweeps solved by MGRIT.

A ResNet of N residual layers is forward Euler on N steps; its forward sweep is
a time-stepping problem on the fine grid ``t = 0, 1, ..., N`` (time measured in
layers) and its adjoint sweep is one in reversed time. :class:`MGRITPropagation`
solves both with :class:`~mgnn.mgrit.MGRIT` instead of stepping through the
layers one after another, so that the layers can be processed concurrently
(Guenther, Ruthotto, Schroder, Cyr, Gauger, "Layer-parallel training of deep
residual neural networks", SIMODS 2020).

Steppers
--------
* :class:`ResNetStepper` (forward): on level ``l`` the step starting at fine
  index ``i`` and spanning ``m`` fine layers is one residual layer with step
  ``h m`` and the weights of layer ``i`` (injection) or the mean of layers
  ``i .. i+m-1`` (``coarse_weights='average'``). On level 0 it writes the
  layer record of the fine layer into the workspace, so that after the solve
  the records are those of the final states.
* :class:`ResNetAdjointStepper` (reversed time, reversed index ``j`` is layer
  ``N-1-j``): on level 0 the transposed Jacobian of layer ``n`` linearised at
  the forward state ``U_n``, writing layer ``n``'s gradient ``[D^T U_n,
  colsum D]`` with ``D = h sigma'(Z_n) * lam_{n+1}``; on a coarse level the
  transpose of the coarse forward step over layers ``n0 .. n0+m-1``, linearised
  at the forward state ``U_{n0}``.

With one level both solves are exactly the serial sweeps (the same kernel calls
in the same order: bit-identical). With several levels and a fixed number of
iterations the states, adjoints and gradient are inexact (one-shot training);
each solve is warm-started from the previous solution of the same batch size.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from mgnn._validation import check_choice, check_positive_int, check_scalar
from mgnn.backend import get_namespace, kernels_for
from mgnn.mgrit.hierarchy import TimeHierarchy
from mgnn.mgrit.solver import MGRIT
from mgnn.mgrit.stepper import Stepper
from mgnn.mgrit.window_means import WindowPlan, mean_of_children
from mgnn.parallel.comm import SerialComm, get_comm
from mgnn.parallel.grid import reversed_comm
from mgnn.parallel.partition import block_offsets
from mgnn.propagation import Propagation, SerialPropagation

__all__ = ["MGRITPropagation", "ResNetStepper", "ResNetAdjointStepper", "SolveStats",
           "halo_ranges", "point_offsets"]

RELAX = {"F": 0, "FCF": 1, "FCFCF": 2}
COARSE_WEIGHTS = ("inject", "average")


# ---------------------------------------------------------------------------
# weights of a range of layers (local, or local plus a halo from other ranks)
# ---------------------------------------------------------------------------
class _Weights:
    """Views ``W[n - lo]``, ``b[n - lo]`` of layers ``lo .. lo+len-1`` and their averages
    over the intervals of the coarse levels (recomputed after every :meth:`bind`).

    Averages over a span that is a coarse level's stride (``spans``) are window
    means of a tree (:mod:`mgnn.mgrit.window_means`): the windows of one phase are
    computed at once, each the mean of the windows of the next smaller span in
    ``spans`` that it consists of (of its layers for the smallest), and handed out
    as views, so a batched coarse sweep gets its stack of averaged weights without
    a copy. Other spans (a short interval at the end of a grid) are averaged over
    their layers one by one. A window's arithmetic is the same however it is
    reached, so it does not depend on the batching or on the range of layers bound
    on a rank; a layer-parallel engine fills ``blocks`` itself, with windows that
    reach beyond its layers (:meth:`set_block`).
    """

    def __init__(self, spans=()):
        self.W = self.b = self.flat = None
        self.lo = 0
        self.spans = frozenset(int(x) for x in spans)
        self.blocks = {}  # (phase, span) -> (first window start, W means, b means)
        self.single = {}  # (n0, span) -> (W mean, b mean), spans not in ``spans``
        self.stacks = {}  # stacked single means for batched steps: buffers kept
        self.fresh = set()  # keys of ``stacks`` computed from the bound weights
        self.means = {}  # (phase, span) -> (W, b) buffers of window means, kept
        self.complete = False  # ``blocks`` filled by an engine: nothing to compute

    def bind(self, W, b, lo, flat=None):
        """Bind layers ``lo ..``: ``W`` (k, w, w), ``b`` (k, w) views and, where the
        layers' blocks ``[W_n, b_n]`` are one contiguous array, that array ``flat``
        (1-D; enables whole-interval sweeps, see :meth:`flat_range`)."""
        self.W, self.b, self.lo = W, b, lo
        self.flat = flat if flat is not None and flat.flags.c_contiguous else None
        self.blocks.clear()
        self.single.clear()
        self.fresh.clear()
        self.complete = False

    def same(self, W, lo):
        """Whether ``W`` (from ``lo``) is the memory bound now (nothing to recompute)."""
        return (self.W is not None and self.lo == lo and self.W.shape == W.shape
                and self.W.strides == W.strides
                and (self.W.__array_interface__["data"] == W.__array_interface__["data"]
                     if isinstance(W, np.ndarray) else self.W.data.ptr == W.data.ptr))

    def layers(self, n0, step, k):
        """Stacked views ``(k, w, w)``, ``(k, w)`` of layers ``n0, n0+step, ...`` (no copy)."""
        a = n0 - self.lo
        return self.W[a::step][:k], self.b[a::step][:k]

    def layer(self, n):
        k = n - self.lo
        return self.W[k], self.b[k]

    def flat_range(self, n0, k):
        """The contiguous blocks of layers ``n0 .. n0+k-1`` (a view), or None when the
        bound weights have no flat form."""
        if self.flat is None:
            return None
        bs = self.flat.size // self.W.shape[0]
        a = (n0 - self.lo) * bs
        return self.flat[a:a + k * bs]

    def _child_span(self, span):
        """The largest span in ``spans`` below ``span`` that divides it (1: layers)."""
        return max((x for x in self.spans if x < span and span % x == 0), default=1)

    def _block(self, n0, span):
        key = (n0 % span, span)
        blk = self.blocks.get(key)
        if blk is None:
            if self.complete:
                raise KeyError(f"no averaged weights of span {span} and phase {key[0]} "
                               "were exchanged for this rank")
            blk = self.blocks[key] = self._window_means(*key)
        return blk

    def _window_means(self, phase, span):
        """The windows ``[a, a + span)``, ``a = phase mod span``, that lie in the bound
        layers, each the mean of its child windows (see the class docstring)."""
        n, lo = self.W.shape[0], self.lo
        a0 = lo + (phase - lo) % span  # first window of this phase
        k = max((lo + n - a0) // span, 0)
        sc = self._child_span(span)
        if sc == 1:
            Wc, bc, c = self.W, self.b, a0 - lo
        else:
            ca0, Wc, bc = self._block(phase % sc, sc)
            c = (a0 - ca0) // sc
        Wm, bm = self.mean_buffers((phase, span), k)
        mean_of_children(Wc[c:], bc[c:], span // sc, Wm, bm)
        return a0, Wm, bm

    def mean_buffers(self, key, k):
        """C-contiguous buffers ``(k, *W shape)``, ``(k, *b shape)`` kept for ``key``
        across binds (reallocated when ``k`` or the shapes change)."""
        wshape, bshape = self.W.shape[1:], self.b.shape[1:]
        buf = self.means.get(key)
        if (buf is None or buf[0].shape != (k,) + wshape or buf[1].shape != (k,) + bshape
                or buf[0].dtype != self.W.dtype):
            xp = get_namespace(self.W)
            buf = self.means[key] = (xp.empty((k,) + wshape, self.W.dtype),
                                     xp.empty((k,) + bshape, self.W.dtype))
        return buf

    def set_block(self, phase, span, a0, Wm, bm):
        """Hand over the means of the windows ``a0 + q span`` (an engine's exchange)."""
        self.blocks[(phase, span)] = (a0, Wm, bm)

    def average(self, n0, span):
        """Means of the weights and biases of layers ``n0 .. n0+span-1``."""
        if span in self.spans:
            a0, Wa, ba = self._block(n0, span)
            q = (n0 - a0) // span
            return Wa[q], ba[q]
        key = (n0, span)
        wb = self.single.get(key)
        if wb is None:
            k = n0 - self.lo
            wb = self.single[key] = (self.W[k:k + span].mean(axis=0),
                                     self.b[k:k + span].mean(axis=0))
        return wb

    def averages(self, n0, step, k, span):
        """Stacked means over ``span`` layers from ``n0 + q step``, ``q < k``: views of
        the per-phase blocks where the windows are a coarse level's intervals,
        otherwise computed once per bound weights into buffers kept across binds."""
        if span in self.spans and step % span == 0:
            a0, Wa, ba = self._block(n0, span)
            q, d = (n0 - a0) // span, step // span
            return Wa[q::d][:k], ba[q::d][:k]
        key = (n0, step, k, span)
        buf = self.stacks.get(key)
        if buf is None:
            xp = get_namespace(self.W)
            buf = self.stacks[key] = (xp.empty((k,) + self.W.shape[1:], self.W.dtype),
                                      xp.empty((k,) + self.b.shape[1:], self.b.dtype))
        if key not in self.fresh:
            Wk, bk = buf
            for q in range(k):
                Wk[q], bk[q] = self.average(n0 + q * step, span)
            self.fresh.add(key)
        return buf


def _progression(index):
    """``(first, step)`` when ``index`` is an arithmetic progression, else None."""
    k = len(index)
    i0 = int(index[0])
    if k == 1:
        return i0, 1
    d = int(index[1]) - i0
    if d == 0 or int(index[-1]) != i0 + d * (k - 1) or bool(np.any(np.diff(index) != d)):
        return None
    return i0, d


def _common_span(t0, t1):
    """The common number of layers ``t1 - t0`` of a batch of steps, or None."""
    span = int(round(float(t1[0]) - float(t0[0])))
    if len(t0) > 1 and bool(np.any(np.rint(np.subtract(t1, t0)) != span)):
        return None
    return span


def _batch_shape(stepper, u_in, u_out, t0, t1, level, index):
    """``((first, step), span)`` of a batch of steps; for a batch without that structure
    (index not a progression, or unequal spans) do its steps one by one and return
    ``(None, None)``."""
    ap = _progression(index)
    span = _common_span(t0, t1)
    if ap is None or span is None:
        for q in range(len(index)):
            stepper.step(u_in[q], u_out[q], float(t0[q]), float(t1[q]), level, int(index[q]))
        return None, None
    return ap, span


class _BatchScratch:
    """Stacks ``(k, s, w)`` for batched steps, allocated on first use (largest k seen)
    and reused, so that sweeps do not allocate."""

    def __init__(self, xp, s, w, dtype):
        self.xp, self.s, self.w, self.dtype = xp, s, w, dtype
        self.bufs = {}

    def get(self, name, k):
        buf = self.bufs.get(name)
        if buf is None or buf.shape[0] < k:
            buf = self.bufs[name] = self.xp.empty((k, self.s, self.w), self.dtype)
        return buf[:k]


def _addr(a):
    return a.__array_interface__["data"][0]


def _owner3(a):
    """The array owning the memory of state ``a``, as a C-contiguous stack of states
    of ``a``'s shape, and the row of ``a`` in it; None when ``a`` is not one whole,
    contiguous row of such a stack."""
    o = a
    while isinstance(o.base, np.ndarray):
        o = o.base
    if not (a.flags.c_contiguous and o.flags.c_contiguous) or o.size % a.size or not a.size:
        return None
    o = o.reshape((-1,) + a.shape)
    row, rest = divmod(_addr(a) - _addr(o), o.strides[0])
    if rest or not 0 <= row < o.shape[0]:
        return None
    return o, row


class _StepTable:
    """Consecutive coarse steps of one sweep whose averaged weights come from one block
    of :class:`_Weights` (one span and phase), as a table for the step-table kernels
    (:func:`mgnn.kernels.cpu.forward_steps`, :func:`~mgnn.kernels.cpu.adjoint_steps`).
    ``n0`` are the steps' first layers; the weights column is filled from the block's
    first window ``a0`` when it changes (after a bind)."""

    __slots__ = ("X", "tab", "G", "n0", "span", "a0", "checked", "store", "rrow", "urow",
                 "u_lo", "entries", "key")

    def __init__(self, X, tab, G, n0, span):
        self.X, self.tab, self.G, self.n0, self.span = X, tab, G, n0, span
        self.a0 = None
        self.checked = set()  # shapes of the arrays the table was validated against
        self.store = self.rrow = self.urow = self.u_lo = None
        self.entries = self.key = None  # fine tables: the steps, (weights lo, rows lo)

    def rows(self, w_lo, r_lo):
        """Fine tables: columns 4 (row ``n - r_lo`` of the records / states / gradient)
        and 5 (layer ``n - w_lo`` of the bound flat weights) for bound offsets."""
        if (w_lo, r_lo) != self.key:
            self.tab[:, 4] = self.n0 - r_lo
            self.tab[:, 5] = self.n0 - w_lo
            self.key = (w_lo, r_lo)
            self.checked = set()

    def weights(self, wts):
        """``(W, b)`` block of the bound weights, the table's weights column current."""
        a0, Wa, ba = wts._block(int(self.n0[0]), self.span)
        if a0 != self.a0:
            self.tab[:, 5] = (self.n0 - a0) // self.span
            self.a0 = a0
            self.checked = set()
        return Wa, ba


def _step_tables(entries, first_layer, spans):
    """Split the steps ``entries`` ``(u_in, u_out, t0, t1, index, g)`` of a sweep into
    step tables (runs of steps with a span in ``spans`` and one phase; ``spans=None``:
    all steps in one table, the fine level's) and single steps, in order: a list of
    ``_StepTable`` or entry. None when the states are not rows of at most three state
    arrays (then the solver steps one by one). ``first_layer(index, span)`` is a
    step's first layer."""
    out, run, key = [], [], None
    arrays = {}  # data address of an owner -> (index, owner)
    gown = {}

    def where(a, pool, limit):
        found = _owner3(a)
        if found is None:
            return None
        o, row = found
        ad = _addr(o)
        if ad not in pool:
            if len(pool) >= limit:
                return None
            pool[ad] = (len(pool), o)
        return pool[ad][0], row

    def flush():
        if not run:
            return True
        rows = []
        for ui, uo, _t0, _t1, _idx, g in run:
            a, b = where(ui, arrays, 3), where(uo, arrays, 3)
            c = where(g, gown, 1) if g is not None else (0, -1)
            if a is None or b is None or c is None or (b[0], b[1]) == (a[0], a[1]):
                return False
            rows.append((a[0], a[1], b[0], b[1], c[1], 0))
        span = int(round(run[0][3] - run[0][2]))
        n0 = np.array([first_layer(e[4], span) for e in run], dtype=np.int64)
        out.append(_StepTable(None, np.array(rows, dtype=np.int64), None, n0, span))
        run.clear()
        return True

    for e in entries:
        span = int(round(e[3] - e[2]))
        if spans is None:
            k = (1, 0)
        else:
            k = (span, first_layer(e[4], span) % span) if span in spans else None
        if k is None or k != key:
            if not flush():
                return None
            key = k
        if k is None:
            out.append(e)
        else:
            run.append(e)
    if not flush():
        return None
    X = tuple(o for _, o in sorted(arrays.values(), key=lambda v: v[0]))
    G = next(iter(gown.values()))[1] if gown else None
    for t in out:
        if isinstance(t, _StepTable):
            t.X, t.G = X, G
    return out


class _ResNetStepperBase(Stepper):
    """What the forward and adjoint ResNet steppers share: kernels, step size,
    bound weights, scratch, states in the stepper's array namespace, and the repr."""

    def __init__(self, net, s, weights, average, xp):
        super().__init__((s, net.width), net.dtype)
        self.net = net
        # a network with its own layer kernels (ConvResNet) hands them over in the
        # dense kernels' signatures; the dense ResNet takes mgnn.kernels.cpu / gpu
        own = getattr(net, "step_kernels", None)
        self.k = kernels_for(xp) if own is None else own(s, xp)
        self.h = net.h
        self.act = net.act
        self.weights = weights
        self.average = bool(average)
        self.rec = xp.empty((s, net.width), net.dtype)
        self.scratch = _BatchScratch(xp, s, net.width, net.dtype)
        self.xp = xp
        # whole F-intervals in one kernel call on level 0 (see ``sweep``): where the
        # kernel module has the fused whole-sweep kernels for this width
        uses = getattr(self.k, "uses_fused", None)
        fused = bool(uses is not None and uses(net.width, net.width, np.dtype(net.dtype)))
        self.chains = fused and hasattr(self.k, "adjoint_chain")
        # sweeps as step tables, one kernel call per run of steps (see ``plan_sweep``)
        self.tables = fused and hasattr(self.k, "forward_steps_layers") and xp is np

    def plan_sweep(self, level, entries):
        """MGRIT's hook for the steps ``entries`` of a sweep on level ``level`` (see
        :mod:`mgnn.mgrit.stepper`), on the fused kernels: on level 0 all the steps
        become one step-table kernel call through the layers' flat weights (with the
        records, and the gradient in the final adjoint sweep); on a coarse level, with
        averaged coarse weights, every run of steps that shares a block of averaged
        weights becomes one call (the FAS right-hand sides added in the kernel).
        Bit-identical to the single steps; None where the tables do not apply."""
        if not (self.tables and entries) or (level > 0 and not self.average):
            return None
        parts = _step_tables(entries, self._first_layer, None if level == 0 else
                             self.weights.spans)
        if parts is None:
            return None
        ops = []
        for p in parts:
            if isinstance(p, _StepTable) and level == 0:
                if p.G is not None:  # pragma: no cover - level 0 has no right-hand side
                    return None
                p.entries = entries
                ops.append((self._run_fine, (p,)))
            elif isinstance(p, _StepTable):
                self._prepare_table(p)
                ops.append((self._run_table, (p,)))
            else:
                ops.append((self._single, p[:5] + (level, p[5])))
        return ops

    def _steps(self, t):
        """The steps of a fine table one by one (weights without a flat form)."""
        for ui, uo, t0, t1, index, _ in t.entries:
            self.step(ui, uo, t0, t1, 0, index)

    def _prepare_table(self, t):
        pass

    def _single(self, u_in, u_out, t0, t1, index, level, g):
        self.step(u_in, u_out, t0, t1, level, index)
        if g is not None:
            np.add(u_out, g, out=u_out)

    def new_vector(self, level=0):
        """A new state in the stepper's array namespace (NumPy or CuPy)."""
        return self.xp.empty(self.shape, self.dtype)

    def __repr__(self):
        return (f"{type(self).__name__}({self.net.depth} layers, width {self.net.width}, "
                f"h={self.h:g}, batch {self.shape[0]}, coarse weights "
                f"{'average' if self.average else 'inject'!r})")


class ResNetStepper(_ResNetStepperBase):
    """Forward stepper of a ResNet's residual layers on MGRIT level ``level``.

    ``step(u_in, u_out, t0, t1, level, index)`` applies layer ``index`` with step
    ``h (t1 - t0)`` (time is measured in layers); on coarse levels the weights
    come from layer ``index`` (``'inject'``) or the mean over the spanned layers
    (``'average'``). On level 0 the layer record goes to ``S[index - s_lo]``.

    ``step_batch`` (for ``MGRIT(..., batched=True)``) applies ``k`` such steps at
    once: with ``index`` an arithmetic progression (as MGRIT's waves are) the
    weights, biases and records are strided views of the bound weights and of
    ``S`` (no copies; averaged coarse weights are stacked once per bound theta)
    and the step is one batched GEMM plus one fused pass
    (:func:`mgnn.kernels.cpu.forward_step_batch`), bit-identical per slice to
    ``step``. Other index patterns fall back to ``k`` calls of ``step``.

    Parameters
    ----------
    net : ResNet
    s : int
        Batch size (states have shape ``(s, width)``).
    weights : _Weights
        The bound weights.
    average : bool
        Average the weights of the spanned layers on coarse levels.
    xp : module
        Array namespace.

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.nets import ResNet
    >>> net = ResNet(2, 3, 4, 2)
    >>> ResNetStepper(net, 5, _Weights())
    ResNetStepper(4 layers, width 3, h=0.25, batch 5, coarse weights 'inject')
    """

    def __init__(self, net, s, weights, average=False, xp=np):
        super().__init__(net, s, weights, average, xp)
        self.S = None
        self.s_lo = 0

    def final_sweep(self, active):
        """MGRIT's hook around the last fine sweep of a solve. Defining it makes that
        sweep step into the C-points too, so that every layer record in ``S`` is
        that of the final states (the adjoint linearises at them)."""

    def step(self, u_in, u_out, t0, t1, level, index):
        if level == 0:
            W, b = self.weights.layer(index)
            self.k.forward_step(u_in, W, b, self.h, self.act, self.S[index - self.s_lo], u_out)
            return
        span = int(round(t1 - t0))
        W, b = self.weights.average(index, span) if self.average else self.weights.layer(index)
        self.k.forward_step(u_in, W, b, self.h * span, self.act, self.rec, u_out)

    def sweep(self, U, t, level, index):
        """``n = len(U) - 1`` consecutive fine steps ``U[q] -> U[q+1]`` through layers
        ``index + q`` (MGRIT's level-0 F-intervals): one call of
        :func:`mgnn.kernels.cpu.forward_sweep` where the fused kernels serve the
        width and the blocks are contiguous, else ``n`` calls of :meth:`step`.
        Bit-identical to the steps either way."""
        n = U.shape[0] - 1
        P = self.weights.flat_range(index, n) if self.chains else None
        if P is not None and U.flags.c_contiguous:
            a = index - self.s_lo
            self.k.forward_sweep(U, P, self.h, self.act, self.S[a:a + n], 0, n)
            return
        for q in range(n):
            self.step(U[q], U[q + 1], t[q], t[q + 1], level, index + q)

    @staticmethod
    def _first_layer(index, span):
        return index

    def _run_table(self, t):
        W, b = t.weights(self.weights)
        ok = (W.shape, b.shape)
        self.k.forward_steps(t.X, t.tab, W, b, self.h * t.span, self.act, self.rec, t.G,
                             check=ok not in t.checked)
        t.checked.add(ok)

    def _run_fine(self, t):
        P = self.weights.flat
        if P is None:
            self._steps(t)
            return
        t.rows(self.weights.lo, self.s_lo)
        ok = (P.shape, self.S.shape)
        self.k.forward_steps_layers(t.X, t.tab, P, self.h, self.act, self.S,
                                    check=ok not in t.checked)
        t.checked.add(ok)

    def step_batch(self, u_in, u_out, t0, t1, level, index):
        k = len(index)
        ap, span = _batch_shape(self, u_in, u_out, t0, t1, level, index)
        if ap is None:
            return
        n0, d = ap
        wts = self.weights
        if level == 0:
            W, b = wts.layers(n0, d, k)
            rec = self.S[n0 - self.s_lo::d][:k]
            self.k.forward_step_batch(u_in, W, b, self.h, self.act, rec, u_out)
            return
        W, b = wts.averages(n0, d, k, span) if self.average else wts.layers(n0, d, k)
        self.k.forward_step_batch(u_in, W, b, self.h * span, self.act,
                                  self.scratch.get("rec", k), u_out)


class _RecordStore:
    """Records of the coarse adjoint steps of one span and phase (every step table of a
    level shares them): ``R[row]`` is the record of the coarse forward step over the
    layers ``n0 ..``, linearised at the forward state ``U[n0]``, recomputed in one
    kernel call per linearisation (a new adjoint solve) or bind."""

    def __init__(self):
        self.index = {}  # first layer n0 -> row of R
        self.n0 = np.empty(0, np.int64)
        self.R = None
        self.gen = self.a0 = self.u_lo = None

    def rows(self, n0):
        for n in n0.tolist():
            if n not in self.index:
                self.index[n] = len(self.index)
        self.n0 = np.fromiter(self.index, dtype=np.int64, count=len(self.index))
        self.R = None
        return np.array([self.index[n] for n in n0.tolist()], dtype=np.int64)

    def refresh(self, stepper, W, b, a0, span):
        if self.R is None:
            self.R = np.empty((self.n0.size,) + stepper.shape, stepper.dtype)
        stepper.k.forward_records(stepper.U, self.n0 - stepper.u_lo, W, b,
                                  (self.n0 - a0) // span, stepper.act, self.R, stepper.tmp)
        self.a0, self.u_lo = a0, stepper.u_lo


class ResNetAdjointStepper(_ResNetStepperBase):
    """Adjoint stepper of a ResNet's residual layers, in reversed time.

    Reversed fine index ``j`` is the adjoint ``lam_{N-j}``; the step from ``j``
    is layer ``N-1-j``. On level 0 it writes that layer's gradient block; on a
    coarse level spanning ``m`` layers ``n0 .. n0+m-1`` it applies the transpose
    of the coarse forward step, linearised at the forward state ``U_{n0}``.
    Needs the forward states ``U`` (offset ``u_lo``), records ``S`` (offset
    ``s_lo``) and gradient blocks ``G`` (offset ``g_lo``) bound before a solve.

    ``step_batch`` applies ``k`` steps at once (descending layers ``n0, n0 - d,
    ...`` for an index progression of step ``d``) with batched GEMMs on strided
    views (:func:`mgnn.kernels.cpu.adjoint_step_batch`), bit-identical per slice
    to ``step``; other index patterns fall back to ``k`` calls of ``step``.
    """

    def __init__(self, net, s, weights, average=False, xp=np):
        super().__init__(net, s, weights, average, xp)
        self.N = net.depth
        self.w = net.width
        self.U = self.S = self.G = None
        self.u_lo = self.s_lo = self.g_lo = 0
        self.D = xp.empty((s, net.width), net.dtype)
        self.tmp = xp.empty((s, net.width), net.dtype)
        self.grad = False
        self.grad_sweeps = 0
        self._recs = {}  # coarse records with averaged weights: key -> [generation, array]
        self._gen = 0
        self._stores = {}  # (span, phase) -> _RecordStore of the step tables' records

    def new_linearisation(self):
        """Forget the cached coarse records: the forward states or weights changed
        (called before every adjoint solve)."""
        self._gen += 1

    def _coarse_record(self, key, u, W, b, batch):
        """Record of the coarse step with averaged weights ``W, b`` linearised at ``u``
        (one state, or a stack with ``batch``): computed once per linearisation and
        reused by every visit of the same coarse interval(s) in the solve."""
        ent = self._recs.get(key)
        if ent is None:
            ent = self._recs[key] = [-1, self.xp.empty(u.shape, u.dtype)]
        if ent[0] != self._gen:
            if batch:
                self.k.forward_step_batch(u, W, b, 1.0, self.act, ent[1],
                                          self.scratch.get("tmp", u.shape[0]))
            else:
                self.k.forward_step(u, W, b, 1.0, self.act, ent[1], self.tmp)
            ent[0] = self._gen
        return ent[1]

    def _first_layer(self, index, span):
        return self.N - index - span

    def _prepare_table(self, t):
        key = (t.span, int(t.n0[0]) % t.span)
        store = self._stores.get(key)
        if store is None:
            store = self._stores[key] = _RecordStore()
        t.store = store
        t.rrow = store.rows(t.n0)

    def _run_table(self, t):
        W, b = t.weights(self.weights)
        st = t.store
        if st.R is None or st.gen != self._gen or st.a0 != t.a0 or st.u_lo != self.u_lo:
            st.refresh(self, W, b, t.a0, t.span)
            st.gen = self._gen
        if t.u_lo != self.u_lo:
            t.urow, t.u_lo = t.n0 - self.u_lo, self.u_lo
        ok = (W.shape, self.U.shape, st.R.shape)
        self.k.adjoint_steps(t.X, t.tab, self.U, t.urow, W, st.R, t.rrow, self.h * t.span,
                             self.act, self.D, t.G, check=ok not in t.checked)
        t.checked.add(ok)

    def _run_fine(self, t):
        P, G = self.weights.flat, None
        if self.grad:
            G = self.G
            if G.ndim != 2 or not G.flags.c_contiguous:
                P = None
        if P is None or not self.u_lo == self.s_lo == self.g_lo:
            self._steps(t)
            return
        t.rows(self.weights.lo, self.u_lo)
        ok = (P.shape, self.U.shape, self.S.shape, None if G is None else G.shape)
        self.k.adjoint_steps_layers(t.X, t.tab, self.U, P, self.S, self.h, self.act, self.D,
                                    G, check=ok not in t.checked)
        t.checked.add(ok)

    def final_sweep(self, active):
        """MGRIT's hook around the last fine sweep of a solve: the fine steps of that
        sweep (all of them, into the C-points too) write the layer gradients; the
        other sweeps propagate adjoints only (one GEMM per step instead of two)."""
        self.grad = bool(active)
        self.grad_sweeps += bool(active)

    def step(self, u_in, u_out, t0, t1, level, index):
        k = self.k
        if level == 0:
            n = self.N - 1 - index
            W, _ = self.weights.layer(n)
            if not self.grad:
                k.adjoint_step(u_in, self.U[n - self.u_lo], W, self.S[n - self.s_lo], self.h,
                               self.act, self.D, L=u_out)
                return
            g = self.G[n - self.g_lo]
            ww = W.size  # the layer's weights (w x w, or a 3 x 3 x c x c kernel)
            k.adjoint_step(u_in, self.U[n - self.u_lo], W, self.S[n - self.s_lo], self.h,
                           self.act, self.D, L=u_out, gW=g[:ww].reshape(W.shape),
                           gb=g[ww:])
            return
        span = int(round(t1 - t0))
        n0 = self.N - index - span
        u = self.U[n0 - self.u_lo]
        if self.average:
            W, b = self.weights.average(n0, span)
            rec = self._coarse_record((n0, span), u, W, b, False)
            k.adjoint_step(u_in, u, W, rec, self.h * span, self.act, self.D, L=u_out)
        else:
            W, _ = self.weights.layer(n0)
            k.adjoint_step(u_in, u, W, self.S[n0 - self.s_lo], self.h * span, self.act,
                           self.D, L=u_out)

    def sweep(self, Lam, t, level, index):
        """``n = len(Lam) - 1`` consecutive fine adjoint steps ``Lam[q] -> Lam[q+1]``
        (reversed indices ``index + q``, layers ``N-1-index`` down to ``N-index-n``),
        with the gradient blocks when in the final sweep: one call of
        :func:`mgnn.kernels.cpu.adjoint_chain` where the fused kernels serve the width
        and the blocks are contiguous, else ``n`` calls of :meth:`step`.
        Bit-identical to the steps either way."""
        n = Lam.shape[0] - 1
        lo = self.N - index - n  # lowest layer of the interval
        P = self.weights.flat_range(lo, n) if self.chains else None
        G = None
        if P is not None and self.grad:
            G = self.G[lo - self.g_lo:lo - self.g_lo + n]
            G = G.reshape(-1) if G.flags.c_contiguous else None
            P = P if G is not None else None
        if P is not None and Lam.flags.c_contiguous:
            self.k.adjoint_chain(Lam, self.U[lo - self.u_lo:], P,
                                 self.S[lo - self.s_lo:lo - self.s_lo + n], self.h, self.act,
                                 self.D, G)
            return
        for q in range(n):
            self.step(Lam[q], Lam[q + 1], t[q], t[q + 1], level, index + q)

    def step_batch(self, u_in, u_out, t0, t1, level, index):
        nb = len(index)
        ap, span = _batch_shape(self, u_in, u_out, t0, t1, level, index)
        if ap is None:
            return
        i0, d = ap
        k, wts = self.k, self.weights
        D = self.scratch.get("D", nb)
        if level == 0:
            n = self.N - 1 - i0  # layers n, n - d, ...
            W, _ = wts.layers(n, -d, nb)
            U, S = self.U[n - self.u_lo::-d][:nb], self.S[n - self.s_lo::-d][:nb]
            if not self.grad:
                k.adjoint_step_batch(u_in, U, W, S, self.h, self.act, D, L=u_out)
                return
            G = self.G[n - self.g_lo::-d][:nb]
            ww = W[0].size
            k.adjoint_step_batch(u_in, U, W, S, self.h, self.act, D, L=u_out,
                                 gW=G[:, :ww].reshape(W.shape), gb=G[:, ww:])
            return
        n0 = self.N - i0 - span
        u = self.U[n0 - self.u_lo::-d][:nb]
        if self.average:
            W, b = wts.averages(n0, -d, nb, span)
            rec = self._coarse_record((n0, -d, nb, span), u, W, b, True)
            k.adjoint_step_batch(u_in, u, W, rec, self.h * span, self.act, D, L=u_out)
        else:
            W, _ = wts.layers(n0, -d, nb)
            k.adjoint_step_batch(u_in, u, W, self.S[n0 - self.s_lo::-d][:nb],
                                 self.h * span, self.act, D, L=u_out)


# ---------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------
@dataclass(repr=False)
class SolveStats:
    """Statistics of one MGRIT solve of a layer-parallel evaluation.

    Attributes
    ----------
    kind : {'forward', 'adjoint'}
    nit : int
        MGRIT iterations done.
    residuals : ndarray
        Residual norm of the (F-relaxed) initial guess, then after each iteration.
    factors : ndarray
        Convergence factors ``residuals[k] / residuals[k-1]``.
    level_steps : list of int
        Steps per level, summed over the ranks of the layer communicator.
    wall_time : float
        Seconds (this rank).
    warm : bool
        Whether the solve was warm-started from the previous solution.
    """

    kind: str
    nit: int
    residuals: np.ndarray
    factors: np.ndarray
    level_steps: list = field(default_factory=list)
    wall_time: float = 0.0
    warm: bool = False

    @property
    def factor(self):
        """Geometric mean of the convergence factors (NaN if none)."""
        f = self.factors[np.isfinite(self.factors) & (self.factors > 0)]
        return float(np.exp(np.mean(np.log(f)))) if f.size else math.nan

    @property
    def residual(self):
        """Last residual norm (NaN if none was computed)."""
        return float(self.residuals[-1]) if self.residuals.size else math.nan

    def __repr__(self):
        res = ", ".join(f"{r:.2e}" for r in self.residuals)
        return (f"SolveStats({self.kind}, nit={self.nit}, warm={self.warm}, residuals=[{res}], "
                f"factor={self.factor:.3g}, level_steps={self.level_steps}, "
                f"wall_time={self.wall_time:.4f} s)")


# ---------------------------------------------------------------------------
# one engine per (network shape, batch size, communicator)
# ---------------------------------------------------------------------------
class _Engine:
    """The forward and adjoint MGRIT solvers of one network shape and batch size on a
    layer communicator, with the partition of layers, points and halo weights."""

    def __init__(self, prop, net, s, xp, comm):
        N, P, r = net.depth, comm.size, comm.rank
        if N < P:
            raise ValueError(f"the network has {N} residual layers, fewer than the {P} ranks "
                             "of the layer communicator; every rank needs at least one layer")
        self.net, self.s, self.xp, self.comm = net, s, xp, comm
        L = block_offsets(N, P)
        self.L = L
        self.l0, self.l1 = int(L[r]), int(L[r + 1])
        fo, bo = point_offsets(N, P)
        avg = prop.coarse_weights == "average"
        self.weights = _Weights()
        self.fstep = ResNetStepper(net, s, self.weights, avg, xp)
        self.bstep = ResNetAdjointStepper(net, s, self.weights, avg, xp)
        t = np.arange(N + 1, dtype=np.float64)
        # the solvers' probe step would run layer 0 / N-1 on every rank, but a rank
        # holds only its layers; these steppers are tested directly instead
        relax = prop.relax if isinstance(prop.relax, list) else [prop.relax]
        opts = dict(cf=prop.cf, max_levels=prop.levels, min_coarse=prop.min_coarse,
                    cf_sweeps=[RELAX[r] for r in relax], cycle=prop.cycle,
                    batched=prop.batched, check_stepper=False)
        # a coarse step of level l spans stride_l layers (but a short last interval);
        # known before the solvers plan their sweeps (the steppers group steps by span)
        self.weights.spans = frozenset(TimeHierarchy(
            t, cf=prop.cf, min_coarse=prop.min_coarse, max_levels=prop.levels).strides[1:])
        self.fwd = MGRIT(self.fstep, t, comm=comm, offsets=fo, **opts)
        if self.weights.spans != frozenset(self.fwd.hierarchy.strides[1:]):  # pragma: no cover
            raise AssertionError("the solver's hierarchy differs from the engine's")
        self.rcomm = comm if P == 1 else reversed_comm(comm)
        self.bwd = MGRIT(self.bstep, t, comm=self.rcomm, offsets=bo, **opts)
        self.warm_f = self.warm_b = False
        self.key = None  # the samples of the current evaluation (see MGRITPropagation)
        self.key_f = self.key_b = None  # ... of the last forward / adjoint solve
        self.n_levels = self.fwd.hierarchy.n_levels
        self.need_lo, self.need_hi = halo_ranges(N, P, self.fwd.hierarchy, avg)
        # averaged coarse weights on several ranks: window means exchanged level by level
        self.plan = WindowPlan(N, L, self.fwd.hierarchy.strides, r) if avg and P > 1 else None
        self._mean_bufs = None

    # -- distributed pieces ----------------------------------------------------
    def bind_blocks(self, blocks):
        """Bind this rank's layer blocks (l1-l0, block_size), exchanging the halo
        (injected coarse weights) or the window means (averaged ones)."""
        net, comm, r = self.net, self.comm, self.comm.rank
        lo, hi = self.need_lo[r], self.need_hi[r]
        if (lo, hi) == (self.l0, self.l1):
            H = blocks
        else:
            if getattr(self, "_halo", None) is None:
                self._halo = np.empty((hi - lo, net.block_size), dtype=net.dtype)
            H = self._halo
            H[self.l0 - lo:self.l1 - lo] = blocks
        reqs = []
        L = self.L
        for q in range(comm.size):
            if q == r:
                continue
            # what q needs from me
            a, b = max(self.need_lo[q], self.l0), min(self.need_hi[q], self.l1)
            if a < b:
                reqs.append(comm.Isend(np.ascontiguousarray(blocks[a - self.l0:b - self.l0]),
                                       q, 7000))
            # what I need from q
            a, b = max(lo, int(L[q])), min(hi, int(L[q + 1]))
            if a < b:
                reqs.append(comm.Irecv(H[a - lo:b - lo], q, 7000))
        comm.waitall(reqs)
        W, b = self._split(H)
        self.weights.bind(W, b, lo, H.reshape(-1) if H.flags.c_contiguous else None)
        if self.plan is not None:
            self._exchange_means(blocks)

    def _split(self, X):
        """``(W, b)`` views of rows ``X`` of layer blocks ``[W_n, b_n]`` (a layer's
        weights: ``w x w`` dense, the network's ``kernel_shape`` for a ConvResNet)."""
        shape = getattr(self.net, "kernel_shape", (self.net.width, self.net.width))
        ww = int(np.prod(shape))
        return X[:, :ww].reshape((X.shape[0],) + shape), X[:, ww:]

    def _exchange_means(self, blocks):
        """The averaged coarse weights of this rank's windows, level by level (see
        :mod:`mgnn.mgrit.window_means`): receive the child means of the windows that
        reach beyond this rank's layers and send the ones others need, compute the
        windows that need nothing meanwhile, then the others; hand them all to the
        weights. One message per neighbour, family and level; no layer halo."""
        plan, comm, wts, xp, r = self.plan, self.comm, self.weights, self.xp, self.comm.rank
        bs = blocks.shape[1]
        if self._mean_bufs is None:  # edge windows' children, packed; send buffers
            self._mean_bufs = (
                [[[xp.empty((f.cf, bs), blocks.dtype) for _ in f.edges] for f in fams]
                 for fams in plan.levels],
                [[xp.empty((r1 - r0, bs), blocks.dtype) if child >= 0 else None
                  for child, r0, r1, _, _ in sends] for sends in plan.sends])
        exts_all, sbufs_all = self._mean_bufs
        prev = None  # the (W, b) window means of each family a level below
        for li, fams in enumerate(plan.levels):
            tag = 7100 + 4 * li
            reqs = [comm.Irecv(ext[i0:i1], src, tag + f.index)
                    for f, exts in zip(fams, exts_all[li], strict=True)
                    for (_, parts), ext in zip(f.edges, exts, strict=True)
                    for i0, i1, _, src in parts if src != r]
            for (child, r0, r1, dst, fi), sb in zip(plan.sends[li], sbufs_all[li],
                                                    strict=True):
                if child < 0:
                    sb = xp.ascontiguousarray(blocks[r0:r1])
                else:
                    Sw, Sb = self._split(sb)
                    Sw[...], Sb[...] = prev[child][0][r0:r1], prev[child][1][r0:r1]
                reqs.append(comm.Isend(sb, dst, tag + fi))
            means = []
            for f, exts in zip(fams, exts_all[li], strict=True):
                Cw, Cb = self._split(blocks) if f.child < 0 else prev[f.child]
                first = self.l0 if f.child < 0 else plan.levels[li - 1][f.child].m_lo
                Wm, bm = wts.mean_buffers((f.phase, f.stride), f.m_hi - f.m_lo)
                i_lo, i_hi = f.inner
                if i_hi > i_lo:
                    c = f.child_lo + i_lo * f.cf - first
                    n = (i_hi - i_lo) * f.cf
                    mean_of_children(Cw[c:c + n], Cb[c:c + n], f.cf,
                                     Wm[i_lo - f.m_lo:i_hi - f.m_lo],
                                     bm[i_lo - f.m_lo:i_hi - f.m_lo])
                for (_, parts), ext in zip(f.edges, exts, strict=True):
                    Ew, Eb = self._split(ext)
                    for i0, i1, c0, src in parts:
                        if src == r:
                            c = c0 - first
                            Ew[i0:i1], Eb[i0:i1] = Cw[c:c + i1 - i0], Cb[c:c + i1 - i0]
                means.append((Wm, bm))
            comm.waitall(reqs)
            for f, exts, (Wm, bm) in zip(fams, exts_all[li], means, strict=True):
                for (m, _), ext in zip(f.edges, exts, strict=True):
                    Ew, Eb = self._split(ext)
                    k = m - f.m_lo
                    mean_of_children(Ew, Eb, f.cf, Wm[k:k + 1], bm[k:k + 1])
                wts.set_block(f.phase, f.stride, f.start, Wm, bm)
            prev = means
        wts.complete = True

    def broadcast(self, x, root):
        """``x`` of rank ``root`` on every rank of the layer communicator (exact)."""
        if self.comm.size == 1:
            return x
        send = x if self.comm.rank == root else np.zeros_like(x)
        return self.comm.allreduce(send, op="sum")


def point_offsets(N, P):
    """Which fine points the ranks own in the forward and in the adjoint solve.

    Rank r owns layers ``L[r] .. L[r+1]-1`` (``L = block_offsets(N, P)``); the forward
    solve gives it the points those layers step into (``L[r]+1 .. L[r+1]``, and point
    0 to rank 0), the adjoint solve, in reversed time and rank order, the reversed
    points of the adjoints those layers produce. Returns the two ``offsets`` arrays
    for :class:`~mgnn.mgrit.MGRIT`."""
    L = block_offsets(N, P)
    fo = np.array([0] + [int(L[k]) + 1 for k in range(1, P)] + [N + 1])
    bo = np.array([0] + [N - int(L[P - q]) + 1 for q in range(1, P)] + [N + 1])
    return fo, bo


def halo_ranges(N, P, hierarchy, average):
    """Layers each of ``P`` ranks needs for its steps: ``(need_lo, need_hi)``, rank r
    needs layers ``need_lo[r] .. need_hi[r] - 1``: its own ``block_offsets(N, P)``
    block and, with injected coarse weights, the first layer of every coarse
    interval of its steps that starts in another rank's layers. Averaged coarse
    weights need no other layers (``average=True``): the ranks exchange window
    means instead (:class:`~mgnn.mgrit.window_means.WindowPlan`). Used by the
    layer-parallel engine and the performance model."""
    L = block_offsets(N, P)
    fo, bo = point_offsets(N, P)
    lo = [int(L[r]) for r in range(P)]
    hi = [int(L[r + 1]) for r in range(P)]
    if average:
        return lo, hi
    for lvl in range(1, hierarchy.n_levels):
        pts = np.rint(hierarchy.t[lvl]).astype(np.int64)
        a, b = pts[:-1], pts[1:]
        # forward: the owner of point b steps over layers a .. b-1
        own = np.searchsorted(fo, b, side="right") - 1
        for r, x, y in zip(own.tolist(), a.tolist(), (a + 1).tolist(), strict=True):
            lo[r], hi[r] = min(lo[r], x), max(hi[r], y)
        # adjoint: reversed points a -> b are layers N-b .. N-a-1, owned by the
        # reversed owner q of b, i.e. rank P-1-q
        own = P - 1 - (np.searchsorted(bo, b, side="right") - 1)
        n0 = N - b
        for r, x, y in zip(own.tolist(), n0.tolist(), (n0 + 1).tolist(), strict=True):
            lo[r], hi[r] = min(lo[r], x), max(hi[r], y)
    return lo, hi


def _key_to_str(key):
    """A samples key (None, a str or the bytes of a batch's indices) as plain text."""
    if key is None or isinstance(key, str):
        return key
    return "bytes:" + bytes(key).hex()


def _key_from_str(text):
    if text is None or not text.startswith("bytes:"):
        return text
    return bytes.fromhex(text[len("bytes:"):])


class MGRITStatistics:
    """What an MGRIT propagation reports after each evaluation (shared by
    :class:`MGRITPropagation` and :class:`~mgnn.pinn.MGRITStreams`): it keeps the
    per-evaluation statistics in ``stats`` and the extra flops in ``_extra_flops``."""

    def last_stats(self):
        """Statistics of the most recent evaluation (``None`` before the first)."""
        return self.stats[-1] if self.stats else None

    def history_row(self):
        """Scalar summary of the last evaluation for an optimizer's history:
        iterations, last residual and mean convergence factor of each solve."""
        st = self.last_stats()
        if st is None:
            return {}
        row = {}
        for key, short in (("forward", "fwd"), ("adjoint", "bwd")):
            s = st.get(key)
            if s is not None:
                row[f"mgrit_{short}_nit"] = s.nit
                row[f"mgrit_{short}_residual"] = s.residual
                row[f"mgrit_{short}_factor"] = s.factor
        return row

    def take_extra_work(self, net, n_samples):
        """Work beyond serial sweeps since the last call, in value-and-gradient
        evaluations of ``net`` on ``n_samples`` samples; resets the tally."""
        extra, self._extra_flops = self._extra_flops, 0.0
        return extra / net.flops(n_samples)


class MGRITPropagation(MGRITStatistics, Propagation):
    """Forward and adjoint propagation through the residual layers by MGRIT.

    Plug it into :class:`~mgnn.objective.Objective` (one process) or
    :class:`~mgnn.mgrit.distributed.LayerParallelObjective` (layers distributed
    over MPI ranks) and every optimizer trains layer-parallel unchanged.

    The defaults are the one-shot setting that trained the layer-parallel peaks
    example to the serial run's accuracy at the least cost measured (see the
    README): F-cycles over as many levels as ``min_coarse`` allows, coarsening by 8
    and then by 4, F-relaxation, averaged coarse weights, each solve warm-started
    from the previous one on the same samples and starting from the FAS
    right-hand side that solve kept, iterated until its residual is below ``rtol``
    times the norm of its states (at most 3 iterations). ``levels=1`` is the serial
    sweep, bit for bit, whatever the other options.

    Parameters
    ----------
    levels : int or None
        MGRIT levels; ``None``: as many as ``cf`` and ``min_coarse`` allow.
    cf : int or list of int
        Coarsening factor per level (last entry repeats).
    relax : {'F', 'FCF', 'FCFCF'} or list of them
        Relaxation, per level (last entry repeats).
    cycle : {'F', 'V'}
    fwd_iters, bwd_iters : int
        MGRIT iterations of the forward (states) and adjoint solve; with ``tol``
        or ``rtol`` the maximum number.
    tol : float, optional
        Stop a solve when its residual norm is ``<= tol``.
    rtol : float or None
        Stop a solve when its residual norm is ``<= rtol`` times the norm of its
        iterate at the fine C-points (the states' own scale, forward and adjoint
        alike; one reduction of two numbers per iteration). ``None`` with
        ``tol=None``: exactly ``fwd_iters`` / ``bwd_iters`` iterations (no
        collective operation in the solves at all).
    coarse_weights : {'average', 'inject'}
        Weights of a coarse step: the mean of the fine layers it spans, or those
        of its first layer.
    min_coarse : int
        Minimum number of intervals of the coarsest grid.
    warm_start : bool
        Start each solve from the previous solution on the same samples (the same
        mini-batch, or all data): another batch's states are a worse start than
        the cold one, which is the opened states at every layer.
    reuse_tau : bool
        Start a warm solve from the FAS right-hand side its predecessor kept
        (:meth:`MGRIT.solve`'s ``keep_tau`` / ``reuse_tau``): one fine sweep less
        per solve, the first cycle using a tau lagged by one optimization step.
    residuals : bool or int
        With a fixed iteration count, compute residual norms (one reduction per
        iteration) on every evaluation (True), never (False) or every k-th.
        Always computed with ``tol`` or ``rtol``.
    skip : bool
        XBraid's skip of the first down-cycle, for cold solves only (it would
        discard a warm start).
    comm : None, Comm or mpi4py communicator
        Layer communicator; ``None`` is one process. A
        :class:`~mgnn.mgrit.distributed.LayerParallelObjective` passes its own.
    batched : bool
        Batched relaxation (``MGRIT(..., batched=True)``): each F-sweep advances
        all intervals of a level together, one batched GEMM per offset inside
        the intervals, forward and adjoint. Same iterates as unbatched (bit for
        bit on the CPU kernels).
    max_stats : int
        Statistics kept (the most recent evaluations).

    Attributes
    ----------
    stats : list of dict
        One entry per evaluation, most recent last: ``{'forward': SolveStats,
        'adjoint': SolveStats or None}``.

    Notes
    -----
    What one evaluation costs, in steps: the forward solve's F-interpolation after
    the coarse-grid correction (one fine sweep, also stepping into the C-points so
    that every layer record is that of the final states) and its coarse levels;
    the adjoint solve likewise, propagating adjoints only (one GEMM per step)
    except in its last fine sweep, where every step also writes its layer's
    gradient. An iteration beyond the first adds a fine sweep to each solve.

    ``tangent`` and ``second_order_backward`` (for ``Objective.hessp``) are the
    serial sweeps of :class:`~mgnn.propagation.SerialPropagation`, linearised at
    the states of the preceding MGRIT forward solve.

    Work: :meth:`take_extra_work` returns the steps taken beyond a serial sweep
    as layer GEMMs (one per forward step and per adjoint step, one more per step
    that writes a gradient, one per coarse interval for its cached record with
    averaged weights) in units of one value-and-gradient evaluation on all data;
    objectives add it to their work counter.

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.nets import ResNet
    >>> from mgnn.objective import Objective
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((40, 2)); y = (X[:, 0] > 0).astype(int)
    >>> net = ResNet(2, 4, 256, 2, T=2.0)
    >>> theta = net.init(rng)
    >>> prop = MGRITPropagation()
    >>> prop
    MGRITPropagation(levels=None, cf=[8, 4], relax='F', cycle='F', fwd_iters=3, bwd_iters=3,
                     tol=None, rtol=0.0001, coarse_weights='average', reuse_tau=True,
                     warm_start=True, skip=False, residuals=True, ranks=1)
    >>> obj = Objective(net, X, y, propagation=prop)
    >>> g0 = Objective(net, X, y).grad(theta)      # serial sweep
    >>> for k in range(4):                          # one-shot, warm-started
    ...     g = obj.grad(theta)
    ...     st = prop.last_stats()
    ...     print(f"{np.linalg.norm(g - g0) / np.linalg.norm(g0):.0e}",
    ...           st["forward"].nit, st["adjoint"].nit)
    2e-05 2 2
    5e-07 1 1
    6e-09 1 1
    1e-10 1 1
    >>> prop.last_stats()["forward"].level_steps    # fine and coarse steps, all ranks
    [256, 120, 52, 12]
    """

    def __init__(self, levels=None, cf=(8, 4), relax="F", fwd_iters=3, bwd_iters=3, tol=None,
                 cycle="F", comm=None, coarse_weights="average", min_coarse=2,
                 warm_start=True, max_stats=100000, batched=False, skip=False,
                 residuals=True, reuse_tau=True, rtol=1e-4):
        self.levels = None if levels is None else check_positive_int(levels, "levels")
        self.batched = bool(batched)
        if isinstance(cf, (list, tuple)):
            self.cf = [check_positive_int(c, "cf", minimum=2) for c in cf]
        else:
            self.cf = check_positive_int(cf, "cf", minimum=2)
        if isinstance(relax, (list, tuple)):
            if not relax:
                raise ValueError("relax must be a relaxation name or a non-empty list of them")
            self.relax = [check_choice(r, "relax", tuple(RELAX)) for r in relax]
        else:
            self.relax = check_choice(relax, "relax", tuple(RELAX))
        self.skip = bool(skip)
        self.reuse_tau = bool(reuse_tau)
        if isinstance(residuals, (bool, np.bool_)):
            self.residuals = 1 if residuals else 0
        else:
            self.residuals = check_positive_int(residuals, "residuals", minimum=0)
        self.fwd_iters = check_positive_int(fwd_iters, "fwd_iters")
        self.bwd_iters = check_positive_int(bwd_iters, "bwd_iters")
        self.tol = None if tol is None else check_scalar(tol, "tol", low=0.0)
        self.rtol = None if rtol is None else check_scalar(rtol, "rtol", low=0.0)
        self.cycle = check_choice(cycle, "cycle", ("V", "F"))
        self.coarse_weights = check_choice(coarse_weights, "coarse_weights", COARSE_WEIGHTS)
        self.min_coarse = check_positive_int(min_coarse, "min_coarse")
        self.warm_start = bool(warm_start)
        self.max_stats = check_positive_int(max_stats, "max_stats")
        self.comm = SerialComm() if comm is None else get_comm(comm)
        self.stats = []
        self._engines = OrderedDict()
        self._boost_iters = 0
        self._boost_left = 0
        self._boosted = False
        self._extra_flops = 0.0
        self._evaluations = 0
        self._serial = SerialPropagation()
        self._pending = {}  # engine states loaded before their engine exists

    def __repr__(self):
        res = {0: "False", 1: "True"}.get(self.residuals, str(self.residuals))
        pad = " " * len("MGRITPropagation(")
        return (f"MGRITPropagation(levels={self.levels}, cf={self.cf}, relax={self.relax!r}, "
                f"cycle={self.cycle!r}, fwd_iters={self.fwd_iters}, "
                f"bwd_iters={self.bwd_iters},\n{pad}tol={self.tol}, rtol={self.rtol}, "
                f"coarse_weights={self.coarse_weights!r}, reuse_tau={self.reuse_tau},\n{pad}"
                f"warm_start={self.warm_start}, skip={self.skip}, residuals={res}, "
                f"ranks={self.comm.size}{', batched=True' if self.batched else ''})")

    # -- one-shot controls -------------------------------------------------------
    def boost(self, iterations, steps):
        """Use ``iterations`` MGRIT iterations (forward and adjoint) for the next
        ``steps`` evaluations, e.g. after the network was refined."""
        self._boost_iters = check_positive_int(iterations, "iterations")
        self._boost_left = check_positive_int(steps, "steps", minimum=0)

    def reset(self):
        """Forget the warm starts (the next solves start from the opened states)."""
        for eng in self._engines.values():
            eng.warm_f = eng.warm_b = False


    # -- checkpoints (the resumable-state protocol of mgnn.runs) ---------------------
    def state_dict(self):
        """The one-shot state as plain data: per engine (network shape and batch size)
        the warm-start flags and this rank's warm-start states of the forward and
        adjoint solves, and the boost counters. With it a resumed run continues bit
        for bit."""
        engines = []
        for key, eng in self._engines.items():
            e = {"key": list(key), "warm_f": eng.warm_f, "warm_b": eng.warm_b,
                 "u_f": eng.fwd.u.copy() if eng.warm_f else None,
                 "u_b": eng.bwd.u.copy() if eng.warm_b else None}
            # the kept FAS right-hand sides (level 1's iterate is a view of u) and the
            # samples they belong to
            for tag, solver, skey in (("f", eng.fwd, eng.key_f), ("b", eng.bwd, eng.key_b)):
                kept = solver.tau_ready and len(solver.levels) > 1
                e[f"tau_{tag}"] = solver.levels[1].G.copy() if kept else None
                e[f"key_{tag}"] = _key_to_str(skey)
            engines.append(e)
        for key, e in self._pending.items():  # loaded, not used yet: keep them
            if key not in self._engines:
                engines.append(e)
        return {"engines": engines, "boost_iters": self._boost_iters,
                "boost_left": self._boost_left, "boosted": self._boosted,
                "evaluations": self._evaluations}

    def load_state_dict(self, d):
        """Restore :meth:`state_dict`'s output (engines are rebuilt on first use)."""
        self._boost_iters = int(d["boost_iters"])
        self._boost_left = int(d["boost_left"])
        self._boosted = bool(d["boosted"])
        self._evaluations = int(d.get("evaluations", 0))
        self._pending = {tuple(e["key"]): e for e in d["engines"]}
        for key in list(self._engines):
            eng = self._engines[key]
            e = self._pending.pop(key, None)
            if e is None:
                eng.warm_f = eng.warm_b = False
            else:
                self._apply_engine_state(eng, e)

    def _apply_engine_state(self, eng, e):
        xp = eng.xp
        for flag, solver, u in (("warm_f", eng.fwd, e["u_f"]), ("warm_b", eng.bwd, e["u_b"])):
            warm = bool(e[flag]) and u is not None
            if warm:
                if tuple(u.shape) != tuple(solver.u.shape):
                    raise ValueError(f"the saved MGRIT warm start has shape {tuple(u.shape)}, "
                                     f"this rank's solver holds {tuple(solver.u.shape)} (same "
                                     "network, batch size and number of ranks needed)")
                solver.u[...] = xp.asarray(u)
            setattr(eng, flag, warm)
        for tag, solver in (("f", eng.fwd), ("b", eng.bwd)):
            tau = e.get(f"tau_{tag}")
            solver.tau_ready = tau is not None
            if tau is not None:
                solver.levels[1].G[...] = xp.asarray(tau)
            setattr(eng, f"key_{tag}", _key_from_str(e.get(f"key_{tag}")))

    # -- engines ---------------------------------------------------------------
    def _engine(self, net, s, xp):
        key = (net.depth, net.width, net.h, net.act, np.dtype(net.dtype).str, s)
        if hasattr(net, "channels"):  # a ConvResNet: never share a dense network's engine
            key += (type(net).__name__, net.channels)
        eng = self._engines.get(key)
        if eng is None:
            eng = _Engine(self, net, s, xp, self.comm)
            self._engines[key] = eng
            while len(self._engines) > 4:
                self._engines.popitem(last=False)
            e = self._pending.pop(key, None)
            if e is not None:
                self._apply_engine_state(eng, e)
        else:
            self._engines.move_to_end(key)
        eng.net = net
        eng.fstep.net = eng.bstep.net = net
        return eng

    def _iters(self, kind):
        if self._boosted:
            return self._boost_iters
        return self.fwd_iters if kind == "forward" else self.bwd_iters

    def _solve(self, eng, kind, u0):
        solver = eng.fwd if kind == "forward" else eng.bwd
        fwd = kind == "forward"
        # warm only on the same samples as the last solve (another mini-batch's states
        # are a worse start than the cold one); a propagation told nothing of the
        # samples (key None) warm-starts whenever it can
        last = eng.key_f if fwd else eng.key_b
        same = eng.key is None or eng.key == last
        warm = self.warm_start and (eng.warm_f if fwd else eng.warm_b) and same
        guess = solver.u if warm else None
        reuse = self.reuse_tau and warm and eng.key is not None and solver.tau_ready
        if fwd:
            eng.key_f = eng.key
        else:
            eng.key_b = eng.key
        if not warm:
            root = 0 if kind == "forward" else eng.comm.size - 1
            u0 = eng.broadcast(u0, root)
        if not fwd:
            eng.bstep.new_linearisation()
        every = self.residuals
        adaptive = self.tol is not None or self.rtol is not None
        norms = adaptive or (every > 0 and self._evaluations % every == 0)
        sweeps = eng.bstep.grad_sweeps
        # XBraid's skip only for a cold start: on a warm start it would discard the guess
        res = solver.solve(u0, guess, tol=self.tol, state_rtol=self.rtol,
                           max_iter=self._iters(kind),
                           residuals=norms, skip=self.skip and not warm,
                           keep_tau=self.reuse_tau, reuse_tau=reuse)
        # a solve that met a NaN/inf is not a warm start for the next one
        ok = bool(np.all(np.isfinite(res.residuals))) if res.residuals.size else True
        if kind == "forward":
            eng.warm_f = ok
        else:
            eng.warm_b = ok
        steps = [int(x) for x in res.level_steps_all]
        # work in layer GEMMs (s x w x w), relative to the serial sweep: one per forward
        # step, one per adjoint step plus one per step that writes a layer gradient,
        # and with averaged weights one per coarse interval for its cached record
        # (every coarse interval is stepped at least once in a solve with a cycle)
        N = eng.net.depth
        if kind == "forward":
            gemms, serial = sum(steps), N
        else:
            coarse = sum(steps[1:])
            if self.coarse_weights == "average" and any(steps[1:]):
                coarse += sum(solver.hierarchy.n_intervals[1:])
            grads = (eng.bstep.grad_sweeps - sweeps) * N
            gemms, serial = steps[0] + grads + coarse, 2 * N
        own = getattr(eng.net, "step_gemm_flops", None)
        if own is None:
            w = eng.net.width
            self._extra_flops += (gemms - serial) * 2.0 * eng.s * w * w
        else:
            self._extra_flops += (gemms - serial) * own(eng.s)
        return res, SolveStats(kind, res.nit, res.residuals.copy(), res.factors.copy(), steps,
                               res.wall_time, warm)

    def _record(self, entry):
        self.stats.append(entry)
        if len(self.stats) > self.max_stats:
            del self.stats[: len(self.stats) - self.max_stats]

    def _begin(self):
        self._evaluations += 1
        self._boosted = self._boost_left > 0
        if self._boosted:
            self._boost_left -= 1

    # -- the Propagation interface (one process, full theta) -----------------------
    def _check_serial_comm(self):
        if self.comm.size != 1:
            raise ValueError("an MGRITPropagation over several ranks needs a "
                             "LayerParallelObjective (theta distributed by layers); "
                             "Objective holds the whole network on one process")

    def forward(self, net, theta, ws):
        self._check_serial_comm()
        self._begin()
        eng = self._engine(net, ws.s, ws.xp)
        eng.key = getattr(ws, "key", None)
        p = net.unpack(theta)
        eng.weights.bind(p.W, p.b, 0, p.residual)
        eng.fstep.S, eng.fstep.s_lo = ws.S, 0
        res, st = self._solve(eng, "forward", ws.U[0])
        # the workspace's states become the solver's storage (no copy; the solver
        # overwrites them in place in the next solve, which is the warm start)
        ws.U = res.u
        self._record({"forward": st, "adjoint": None})

    def backward(self, net, theta, ws, lam_N, grad_blocks):
        self._check_serial_comm()
        eng = self._engine(net, ws.s, ws.xp)
        p = net.unpack(theta)
        if not eng.weights.same(p.W, 0):  # else: bound by this evaluation's forward
            eng.weights.bind(p.W, p.b, 0, p.residual)
        b = eng.bstep
        b.U, b.S, b.G = ws.U, ws.S, grad_blocks
        b.u_lo = b.s_lo = b.g_lo = 0
        res, st = self._solve(eng, "adjoint", lam_N)
        if self.stats and self.stats[-1]["adjoint"] is None:
            self.stats[-1]["adjoint"] = st
        else:
            self._record({"forward": None, "adjoint": st})
        np.copyto(ws.L[1], res.u[-1])
        return ws.L[1]

    def tangent(self, net, theta, dtheta, ws):
        self._serial.tangent(net, theta, dtheta, ws)

    def second_order_backward(self, net, theta, dtheta, ws, lam_N, dlam_N, hv_blocks):
        return self._serial.second_order_backward(net, theta, dtheta, ws, lam_N, dlam_N,
                                                  hv_blocks)

    # -- distributed pieces (used by LayerParallelObjective) -----------------------
    def _forward_local(self, net, blocks, U0, s, xp, key=None):
        """Forward solve on this rank's layers; returns the engine, whose ``Uloc``
        holds the states ``U[n - l0]`` for n = l0..l1 and ``Sloc`` the records
        ``S[n - l0]`` for n < l1. ``key`` identifies the samples (see
        :meth:`forward`)."""
        self._begin()
        eng = self._engine(net, s, xp)
        eng.key = key
        if getattr(eng, "Sloc", None) is None:
            eng.Sloc = xp.empty((eng.l1 - eng.l0, s, net.width), net.dtype)
            # the states U_{l0} .. U_{l1}: the solver's own storage, no copy; on rank
            # r > 0, U_{l0} is the ghost its last fine sweep received from rank r - 1
            eng.Uloc = eng.fwd.u if eng.comm.rank == 0 else eng.fwd.u_with_ghost
        eng.bind_blocks(blocks)
        eng.fstep.S, eng.fstep.s_lo = eng.Sloc, eng.l0
        res, st = self._solve(eng, "forward", U0)
        self._record({"forward": st, "adjoint": None})
        return eng

    def _backward_local(self, eng, lam_N, grad_blocks):
        """Adjoint solve; writes this rank's gradient blocks, returns ``lam_0`` on
        rank 0 (``None`` elsewhere)."""
        b = eng.bstep
        b.U, b.S, b.G = eng.Uloc, eng.Sloc, grad_blocks
        b.u_lo = b.s_lo = b.g_lo = eng.l0
        res, st = self._solve(eng, "adjoint", lam_N)
        if self.stats and self.stats[-1]["adjoint"] is None:
            self.stats[-1]["adjoint"] = st
        else:
            self._record({"forward": None, "adjoint": st})
        return res.u[-1] if eng.comm.rank == 0 else None

    # -- statistics over a run -------------------------------------------------
    def factors(self, kind="forward"):
        """Mean convergence factor of each recorded evaluation's ``kind`` solve."""
        key = check_choice(kind, "kind", ("forward", "adjoint"))
        return np.array([e[key].factor if e.get(key) is not None else math.nan
                         for e in self.stats])

