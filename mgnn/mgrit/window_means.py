"""Averaged coarse weights as a tree of window means, and who sends which mean to whom.

With ``coarse_weights='average'`` a coarse step of level ``l`` spans one *window* of
``s_l = cf_0 cf_1 ... cf_{l-1}`` fine layers and takes the mean of their weights.
The mean is taken level by level: a level-``l`` window is the mean of the ``cf_{l-1}``
level-``(l-1)`` windows it consists of, a level-1 window the mean of its layers. In
exact arithmetic that is the plain mean; in floating point every window is summed
in one fixed order (its children one after another, then divided by their number),
so a window's bits do not depend on how the layers are split over ranks.

The point of the tree is the communication of layer-parallel training. A rank owns
a block of layers, and the coarse steps it takes may span windows that reach far
into other ranks' blocks (at N = 4096 on 64 ranks the coarsest windows span 2048
layers, 32 ranks' blocks). With flat means a rank needed every layer of those
windows (about 17 MB a rank per evaluation at width 32); with the tree it needs, per
level, only the few child means of the (at most two) windows that straddle its
block's ends: about ``2 (cf - 1)`` layer-sized rows a level.

Windows of a level come in *families* by phase: the forward solve's windows start
at multiples of ``s_l``, the adjoint solve (reversed time) steps over windows that
end at layer ``N``, which start at ``N mod s_l + m s_l``. The two families are one
when ``s_l`` divides ``N``. A family's children are the windows of the level below
with phase ``phase mod s_{l-1}``.

Examples
--------
Thirteen layers on three ranks, coarsened by 2 three times: rank 1 owns layers 5 to 8
and, on level 3, takes steps over windows of 8 layers that reach into both
neighbours' blocks; it receives one child mean (a level-2 window of 4 layers) from
each instead of their layers.

>>> plan = WindowPlan(N=13, offsets=[0, 5, 9, 13], strides=[1, 2, 4, 8], rank=1)
>>> plan
WindowPlan: rank 1 of 3, layers 5..8
 level  stride  families  windows  rows in (msgs)  rows out (msgs)
     1       2         2        5        2 (2)          2 (2)
     2       4         2        3        1 (1)          1 (1)
     3       8         2        2        2 (2)          1 (1)
>>> plan.rows_in(), plan.messages_in()
(5, 5)
"""

from __future__ import annotations

import numpy as np

__all__ = ["WindowPlan", "mean_of_children", "family_phases"]


def family_phases(N, stride):
    """Phases of the window families of a level with windows of ``stride`` layers:
    the forward's (0) and the adjoint's (``N mod stride``), once each."""
    return (0,) if N % stride == 0 else (0, N % stride)


def mean_of_children(Wc, bc, cf, Wout, bout):
    """``Wout[j] = (Wc[j cf] + Wc[j cf + 1] + ... + Wc[j cf + cf - 1]) / cf`` (and the
    same for the biases), summed in that order, into the given buffers.

    Examples
    --------
    >>> W = np.arange(8.0).reshape(4, 2); b = np.arange(4.0)
    >>> Wo, bo = np.empty((2, 2)), np.empty(2)
    >>> mean_of_children(W, b, 2, Wo, bo)
    >>> Wo, bo
    (array([[1., 2.],
           [5., 6.]]), array([0.5, 2.5]))
    """
    k = Wout.shape[0]
    for X, out in ((Wc, Wout), (bc, bout)):
        Xr = X[:k * cf].reshape((k, cf) + X.shape[1:])
        out[...] = Xr[:, 0]
        for i in range(1, cf):
            out += Xr[:, i]
        out /= cf


def _windows_hit(lo, hi, phase, stride, count):
    """Indices ``m`` (``0 <= m < count``) of the windows ``[phase + m stride, + stride)``
    that intersect layers ``lo .. hi-1``, as a range ``(m_lo, m_hi)``."""
    m_lo = max(0, (lo - phase) // stride)
    m_hi = min(count, -((phase - hi) // stride))
    return m_lo, max(m_lo, m_hi)


class _Family:
    """One family (level, phase) on one rank: its windows ``m_lo .. m_hi-1`` (those
    that intersect the rank's layers), the index of the child family one level below
    (-1: the layers), the windows whose children are all on the rank (``inner``, a
    range) and, for the others (at most the first and the last), where each run of
    their children comes from (``edges``)."""

    __slots__ = ("level", "index", "phase", "stride", "cf", "count", "m_lo", "m_hi",
                 "child", "child_lo", "inner", "edges")

    def __init__(self, level, index, phase, stride, cf, count, m_lo, m_hi, child, child_lo):
        self.level, self.index, self.phase, self.stride = level, index, phase, stride
        self.cf, self.count, self.m_lo, self.m_hi = cf, count, m_lo, m_hi
        self.child, self.child_lo = child, child_lo
        self.inner = (m_lo, m_lo)
        # (m, [(i0, i1, first child, source rank)]): children i0 .. i1-1 of window m
        # (global child indices first .. first + i1 - i0 - 1) are held by ``source``
        self.edges = []

    @property
    def start(self):
        """First layer of window ``m_lo``."""
        return self.phase + self.m_lo * self.stride


class WindowPlan:
    """Which window means one rank computes and which child means it receives and
    sends, level by level, for layers split into blocks ``offsets`` (rank ``r`` owns
    layers ``offsets[r] .. offsets[r+1]-1``) and a hierarchy with ``strides``
    (``strides[0] = 1``, ``strides[l] = s_l``). Built once per engine.

    Parameters
    ----------
    N : int
        Number of layers.
    offsets : sequence of int, length P + 1
    strides : sequence of int
        The hierarchy's strides (layers per coarse step), level 0 first.
    rank : int

    Attributes
    ----------
    levels : list of list of _Family
        ``levels[l - 1]``: the families of level ``l`` on this rank.
    sends : list of list of (int, int, int, int, int)
        ``sends[l - 1]``: ``(child family index or -1 for the layers, first row,
        end row, destination, tag offset)``: the rows of this rank's child means of
        level ``l - 1`` that the destination needs for a window of level ``l``.
    """

    def __init__(self, N, offsets, strides, rank):
        self.N, self.rank = int(N), int(rank)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.strides = [int(s) for s in strides]
        self.P = len(self.offsets) - 1
        per_rank = [self._families(q) for q in range(self.P)]
        self.levels = per_rank[self.rank]
        self.sends = [[] for _ in self.levels]
        for q in range(self.P):
            if q == self.rank:
                continue
            for li, fams in enumerate(per_rank[q]):
                for f in fams:
                    for _, parts in f.edges:
                        for i0, i1, c0, src in parts:
                            if src == self.rank:
                                first = self._held(li, f.child)[0]
                                self.sends[li].append((f.child, c0 - first,
                                                       c0 - first + i1 - i0, q, f.index))

    def _held(self, li, child):
        """Global index range of the child means (level ``li``) on this rank."""
        if child < 0:
            return int(self.offsets[self.rank]), int(self.offsets[self.rank + 1])
        f = self.levels[li - 1][child]
        return f.m_lo, f.m_hi

    def _families(self, q):
        """The families of every level on rank ``q``, with their edge windows."""
        N, L = self.N, self.offsets
        lo, hi = int(L[q]), int(L[q + 1])
        out = []
        below = None  # the families of the level below (None: the layers)
        for lvl in range(1, len(self.strides)):
            s, sc = self.strides[lvl], self.strides[lvl - 1]
            cf = s // sc
            fams = []
            for ph in family_phases(N, s):
                count = (N - ph) // s
                m_lo, m_hi = _windows_hit(lo, hi, ph, s, count)
                if below is None:
                    child, (c_lo, c_hi) = -1, (lo, hi)
                else:
                    child = next(i for i, g in enumerate(below) if g.phase == ph % sc)
                    c_lo, c_hi = below[child].m_lo, below[child].m_hi
                off = (ph - ph % sc) // sc  # the child index of window 0's first child
                f = _Family(lvl, len(fams), ph, s, cf, count, m_lo, m_hi, child, off)
                inner = [m for m in range(m_lo, m_hi)
                         if c_lo <= off + m * cf and off + (m + 1) * cf <= c_hi]
                f.inner = (inner[0], inner[-1] + 1) if inner else (m_lo, m_lo)
                for m in range(m_lo, m_hi):
                    if f.inner[0] <= m < f.inner[1]:
                        continue
                    parts = []
                    for i in range(cf):
                        c = off + m * cf + i
                        src = q if c_lo <= c < c_hi else int(
                            np.searchsorted(L, ph % sc + c * sc, side="right")) - 1
                        if parts and parts[-1][3] == src:
                            parts[-1] = (parts[-1][0], i + 1, parts[-1][2], src)
                        else:
                            parts.append((i, i + 1, c, src))
                    f.edges.append((m, parts))
                fams.append(f)
            out.append(fams)
            below = fams
        return out

    def __repr__(self):
        lo, hi = int(self.offsets[self.rank]), int(self.offsets[self.rank + 1])
        rows = [f"WindowPlan: rank {self.rank} of {self.P}, layers {lo}..{hi - 1}",
                " level  stride  families  windows  rows in (msgs)  rows out (msgs)"]
        for li, fams in enumerate(self.levels):
            wins = sum(f.m_hi - f.m_lo for f in fams)
            rows.append(f"{li + 1:>6}{self.strides[li + 1]:>8}{len(fams):>10}{wins:>9}"
                        f"{self.rows_in(li):>9} ({self.messages_in(li)}){self.rows_out(li):>11}"
                        f" ({self.messages_out(li)})")
        return "\n".join(rows)

    def _remote(self, li):
        return [(i0, i1, src) for f in self.levels[li] for _, parts in f.edges
                for i0, i1, _, src in parts if src != self.rank]

    def rows_in(self, li=None):
        """Child means (each the size of one layer's weights) this rank receives:
        for level ``li + 1``, or for all levels."""
        if li is None:
            return sum(self.rows_in(k) for k in range(len(self.levels)))
        return sum(i1 - i0 for i0, i1, _ in self._remote(li))

    def messages_in(self, li=None):
        """Messages this rank receives: for level ``li + 1``, or for all levels."""
        if li is None:
            return sum(self.messages_in(k) for k in range(len(self.levels)))
        return len(self._remote(li))

    def rows_out(self, li=None):
        """Child means this rank sends: for level ``li + 1``, or for all levels."""
        if li is None:
            return sum(self.rows_out(k) for k in range(len(self.levels)))
        return sum(r1 - r0 for _, r0, r1, _, _ in self.sends[li])

    def messages_out(self, li=None):
        """Messages this rank sends: for level ``li + 1``, or for all levels."""
        if li is None:
            return sum(self.messages_out(k) for k in range(len(self.levels)))
        return len(self.sends[li])
