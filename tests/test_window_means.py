"""The tree of averaged coarse weights (``mgnn.mgrit.window_means``): the plan of which
rank computes, sends and receives which window mean, and the means themselves, which
must be the same bits on any number of ranks and the plain means to rounding."""

import queue
import threading
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgnn.mgrit.layer_parallel import _Engine, _Weights
from mgnn.mgrit.window_means import WindowPlan, family_phases, mean_of_children
from mgnn.parallel.partition import block_offsets


@st.composite
def layouts(draw):
    N = draw(st.integers(2, 70))
    P = draw(st.integers(1, min(N, 6)))
    cfs = draw(st.lists(st.integers(2, 4), min_size=1, max_size=4))
    strides = [1]
    for cf in cfs:
        if strides[-1] * cf > N:
            break
        strides.append(strides[-1] * cf)
    return N, P, strides


def _hit(lo, hi, a, s):
    return a < hi and a + s > lo


@settings(max_examples=60, deadline=None)
@given(layouts())
def test_plan_covers_each_window_once_and_sends_match_receives(layout):
    N, P, strides = layout
    L = block_offsets(N, P)
    plans = [WindowPlan(N, L, strides, r) for r in range(P)]
    recv, sent = Counter(), Counter()
    for r, plan in enumerate(plans):
        lo, hi = int(L[r]), int(L[r + 1])
        assert len(plan.levels) == len(strides) - 1
        for li, fams in enumerate(plan.levels):
            s = strides[li + 1]
            assert [f.phase for f in fams] == list(family_phases(N, s))
            for f in fams:
                # exactly the windows that intersect the rank's layers
                hits = [m for m in range(f.count) if _hit(lo, hi, f.phase + m * s, s)]
                assert list(range(f.m_lo, f.m_hi)) == hits
                assert f.phase + f.count * s <= N < f.phase + (f.count + 1) * s
                sc = strides[li]
                held = plans[r]._held(li, f.child)
                edges = dict(f.edges)
                assert set(edges) | set(range(*f.inner)) == set(hits)
                for m in hits:
                    kids = [f.child_lo + m * f.cf + i for i in range(f.cf)]
                    # a child window lies in the parent window
                    assert (f.phase % sc) + kids[0] * sc == f.phase + m * s
                    if f.inner[0] <= m < f.inner[1]:
                        assert all(held[0] <= c < held[1] for c in kids)
                        continue
                    got = []
                    for i0, i1, c0, src in edges[m]:
                        assert c0 == kids[i0]
                        src_held = plans[src]._held(li, f.child)
                        assert src_held[0] <= c0 and c0 + i1 - i0 <= src_held[1]
                        if src != r:
                            assert not any(held[0] <= c < held[1] for c in kids[i0:i1])
                            recv[(src, r, li, f.index, c0, i1 - i0)] += 1
                        got += kids[i0:i1]
                    assert got == kids
        for li, sends in enumerate(plan.sends):
            for child, r0, r1, dst, fi in sends:
                first = plan._held(li, child)[0]
                sent[(r, dst, li, fi, first + r0, r1 - r0)] += 1
    assert recv == sent
    # one message per (source, destination, level, family): tags are unique
    assert max(Counter(k[:4] for k in recv).values(), default=1) == 1


def test_plan_on_one_rank_receives_nothing():
    plan = WindowPlan(100, [0, 100], [1, 4, 16, 64], 0)
    assert plan.rows_in() == plan.rows_out() == plan.messages_in() == 0
    assert all(not f.edges for fams in plan.levels for f in fams)


def test_mean_of_children_sums_in_order():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 2, 2))
    b = rng.standard_normal((6, 2))
    Wo, bo = np.empty((2, 2, 2)), np.empty((2, 2))
    mean_of_children(X, b, 3, Wo, bo)
    assert np.array_equal(Wo[1], ((X[3] + X[4]) + X[5]) / 3)
    assert np.array_equal(bo[0], ((b[0] + b[1]) + b[2]) / 3)


# ---------------------------------------------------------------------------
# the exchange, with ranks as threads
# ---------------------------------------------------------------------------
class _Req:
    def __init__(self, fn=None):
        self.fn = fn

    def Wait(self):  # noqa: N802
        if self.fn is not None:
            self.fn()


class _ThreadComm:
    """Isend / Irecv / waitall between threads (one per rank) through queues."""

    def __init__(self, rank, size, boxes, lock):
        self.rank, self.size, self.boxes, self.lock = rank, size, boxes, lock

    def _box(self, src, dst, tag):
        with self.lock:
            return self.boxes.setdefault((src, dst, tag), queue.Queue())

    def Isend(self, buf, dest, tag=0):  # noqa: N802
        assert buf.flags.c_contiguous
        self._box(self.rank, dest, tag).put(np.array(buf))
        return _Req()

    def Irecv(self, buf, source, tag=0):  # noqa: N802
        assert buf.flags.c_contiguous
        box = self._box(source, self.rank, tag)

        def fill():
            data = box.get(timeout=10)
            assert data.shape == buf.shape
            buf[...] = data
        return _Req(fill)

    def waitall(self, reqs):
        for r in reqs:
            r.Wait()


class _Net:
    def __init__(self, w, dtype):
        self.width, self.dtype = w, dtype
        self.block_size = w * w + w


class _Rank:
    """The part of a layer-parallel engine that exchanges window means."""

    _split = _Engine._split
    _exchange_means = _Engine._exchange_means

    def __init__(self, plan, comm, net, l0, spans):
        self.plan, self.comm, self.net, self.l0 = plan, comm, net, l0
        self.xp, self._mean_bufs = np, None
        self.weights = _Weights(spans)


def _exchanged(N, P, strides, blocks, w):
    L = block_offsets(N, P)
    boxes, lock = {}, threading.Lock()
    ranks = [_Rank(WindowPlan(N, L, strides, r), _ThreadComm(r, P, boxes, lock),
                   _Net(w, blocks.dtype), int(L[r]), strides[1:]) for r in range(P)]
    errors = []

    def run(rank):
        try:
            mine = blocks[rank.l0:rank.l0 + int(L[rank.comm.rank + 1] - L[rank.comm.rank])]
            rank.weights.bind(mine[:, :w * w].reshape(-1, w, w), mine[:, w * w:], rank.l0)
            for _ in range(2):  # twice: the buffers kept from the first exchange
                rank._exchange_means(mine)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(rk,)) for rk in ranks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    return ranks


@settings(max_examples=25, deadline=None)
@given(layouts(), st.integers(1, 3), st.sampled_from([np.float64, np.float32]))
def test_exchanged_means_are_the_one_rank_means_bit_for_bit(layout, w, dtype):
    N, P, strides = layout
    rng = np.random.default_rng(N * 31 + P)
    blocks = rng.standard_normal((N, w * w + w)).astype(dtype)
    ref = _Weights(strides[1:])
    ref.bind(blocks[:, :w * w].reshape(-1, w, w), blocks[:, w * w:], 0)
    ranks = _exchanged(N, P, strides, blocks, w)
    for rank in ranks:
        assert rank.weights.complete
        for fams in rank.plan.levels:
            for f in fams:
                a0, Wm, bm = rank.weights._block(f.start, f.stride)
                r0, Wr, br = ref._block(f.phase, f.stride)
                q = (a0 - r0) // f.stride
                k = f.m_hi - f.m_lo
                assert np.array_equal(Wm, Wr[q:q + k]) and np.array_equal(bm, br[q:q + k])
                # and the plain means to rounding
                for j in range(k):
                    a = a0 + j * f.stride
                    flat = blocks[a:a + f.stride].astype(np.float64).mean(axis=0)
                    tol = 1e-5 if dtype == np.float32 else 1e-13
                    np.testing.assert_allclose(Wm[j].ravel(), flat[:w * w], rtol=tol,
                                               atol=tol)
                    np.testing.assert_allclose(bm[j], flat[w * w:], rtol=tol, atol=tol)


def test_engine_refuses_a_window_it_did_not_exchange():
    N, P, strides, w = 13, 3, [1, 2, 4, 8], 2
    blocks = np.random.default_rng(0).standard_normal((N, w * w + w))
    rank = _exchanged(N, P, strides, blocks, w)[1]
    with pytest.raises(KeyError, match="span 8 and phase 3"):
        rank.weights.average(3, 8)
