"""The fused narrow-layer kernels: against NumPy, against each other bit for bit, any threads.

* every fused step equals a NumPy reference to rounding (hypothesis over shapes,
  dtypes, activations, skip, optional outputs);
* a whole sweep equals the single steps layer by layer, bit for bit (the MGRIT
  one-level guarantee rests on it), and so does a batched step on strided and
  reversed stacks;
* results are bit-identical for 1 and 2 threads (gradient sums are chunked by the
  batch size alone);
* float32 kernels compute in float32 (no ``fpext`` in their LLVM IR).
"""

import numba
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from mgnn.kernels import cpu as K
from mgnn.kernels import cpu_fused as F
from mgnn.kernels.cpu_activations import _fma
from numba import njit
from test_kernels import ref_d2sigma as d2sigma
from test_kernels import ref_dsigma as dsigma
from test_kernels import ref_sigma as sigma

ACTS = list(K.ACTIVATIONS)
EPS = K.SMOOTH_RELU_EPS
TOL = {np.float64: 1e-12, np.float32: 5e-5}


def close(a, ref, dtype, what):
    scale = max(1.0, float(np.abs(ref).max(initial=0.0)))
    err = float(np.abs(a.astype(np.float64) - ref).max(initial=0.0))
    assert err <= TOL[dtype] * scale, f"{what}: error {err:.2e} (scale {scale:.2e})"


def draw_layer(rng, s, wi, wo, dtype):
    U = rng.standard_normal((s, wi))
    W = rng.standard_normal((wo, wi)) / np.sqrt(wi)
    b = rng.standard_normal(wo)
    return [a.astype(dtype) for a in (U, W, b)]


layer_shapes = st.tuples(st.integers(1, 300), st.integers(1, 20), st.integers(1, 20))
dtypes = st.sampled_from([np.float64, np.float32])


def away_from_kinks(Z, act):
    """ReLU's derivative jumps at 0, the smoothed ReLU's second derivative at +-EPS:
    a rounding difference there flips the reference, so such draws are skipped."""
    if act == "relu":
        return np.abs(Z).min() > 1e-5
    if act == "smooth_relu":
        return np.abs(np.abs(Z) - EPS).min() > 1e-5
    return True


# --------------------------------------------------------------- against NumPy
@settings(max_examples=25, deadline=None)
@given(layer_shapes, dtypes, st.sampled_from(ACTS), st.booleans(), st.integers(0, 2**31))
# layers of at least PREFETCH_MIN_WIDTH, whose adjoint splits L = D W into row tiles and
# prefetches ahead (several blocks, a partial last one, column tails)
@example((300, 32, 32), np.float64, "tanh", True, 1)
@example((300, 40, 33), np.float32, "identity", False, 2)
@example((129, 64, 64), np.float32, "tanh", True, 3)
def test_fused_forward_and_adjoint_match_numpy(shape, dtype, act, skip, seed):
    s, wi, wo = shape
    if skip:
        wo = wi
    rng = np.random.default_rng(seed)
    U, W, b = draw_layer(rng, s, wi, wo, dtype)
    a, h = K.ACTIVATIONS[act], 0.37
    Z = U.astype(np.float64) @ W.T.astype(np.float64) + b
    if not away_from_kinks(Z, act):
        return
    assert K.uses_fused(wi, wo, dtype)
    S, out = np.empty((2, s, wo), dtype)
    K.forward_step(U, W, b, h, a, S, out, skip=skip)
    close(out, (U if skip else 0) + h * sigma(Z, act), dtype, "out")
    close(S, np.tanh(Z) if act == "tanh" else Z, dtype, "record")
    Ln = rng.standard_normal((s, wo)).astype(dtype)
    D = np.empty((s, wo), dtype)
    L = np.empty((s, wi), dtype)
    gW, gb = np.empty((wo, wi), dtype), np.empty(wo, dtype)
    K.adjoint_step(Ln, U, W, S, h, a, D, L=L, gW=gW, gb=gb, skip=skip)
    Dr = h * dsigma(Z, act) * Ln
    close(D, Dr, dtype, "D")
    close(L, (Ln if skip else 0) + Dr @ W, dtype, "L")
    close(gW, Dr.T @ U, dtype, "gW")
    close(gb, Dr.sum(0), dtype, "gb")
    # optional outputs: the gradient alone, then the input adjoint alone
    gW2, gb2 = np.empty_like(gW), np.empty_like(gb)
    K.adjoint_step(Ln, U, W, S, h, a, D, gW=gW2, gb=gb2, skip=skip)
    np.testing.assert_array_equal(gW2, gW)
    np.testing.assert_array_equal(gb2, gb)
    L2 = np.empty_like(L)
    K.adjoint_step(Ln, U, W, S, h, a, D, L=L2, skip=skip)
    np.testing.assert_array_equal(L2, L)


@settings(max_examples=25, deadline=None)
@given(layer_shapes, dtypes, st.sampled_from(ACTS), st.booleans(), st.booleans(),
       st.integers(0, 2**31))
# at least PREFETCH_MIN_WIDTH wide: the second-order adjoint's row tiles and prefetch
@example((300, 32, 32), np.float64, "tanh", True, True, 1)
@example((201, 40, 40), np.float32, "smooth_relu", False, True, 2)
def test_fused_tangent_and_second_order_match_numpy(shape, dtype, act, has_dU, has_dW, seed):
    s, w, _ = shape
    rng = np.random.default_rng(seed)
    U, W, b = draw_layer(rng, s, w, w, dtype)
    dU, dW, db = draw_layer(rng, s, w, w, dtype)
    a, h = K.ACTIVATIONS[act], 0.3
    Z = U.astype(np.float64) @ W.T.astype(np.float64) + b
    if not away_from_kinks(Z, act):
        return
    S, out = np.empty((2, s, w), dtype)
    K.forward_step(U, W, b, h, a, S, out)
    dZ, tout = np.empty((2, s, w), dtype)
    K.tangent_step(U, dU if has_dU else None, W, dW if has_dW else None, db, S, h, a, dZ, tout,
                   T=np.empty_like(dZ))
    dUr = dU.astype(np.float64) if has_dU else 0 * U
    dWr = dW.astype(np.float64) if has_dW else 0 * W
    dZr = dUr @ W.T + U @ dWr.T + db
    close(dZ, dZr, dtype, "dZ")
    close(tout, (dUr if has_dU else 0) + h * dsigma(Z, act) * dZr, dtype, "tangent out")
    Ln, dLn = (rng.standard_normal((s, w)).astype(dtype) for _ in range(2))
    bufs = {k: np.empty((s, w), dtype) for k in ("D", "dD", "L", "dL", "tmp")}
    gW, dgW, tmpW = np.empty((3, w, w), dtype)
    gb, dgb = np.empty((2, w), dtype)
    K.soadjoint_step(Ln, dLn, U, dU if has_dU else None, W, dW if has_dW else None, S, dZ, h, a,
                     bufs["D"], bufs["dD"], L=bufs["L"], dL=bufs["dL"], gW=gW, gb=gb, dgW=dgW,
                     dgb=dgb, tmp=bufs["tmp"], tmpW=tmpW)
    D = h * dsigma(Z, act) * Ln
    dD = h * (d2sigma(Z, act) * dZ.astype(np.float64) * Ln + dsigma(Z, act) * dLn)
    close(bufs["L"], Ln + D @ W, dtype, "L")
    close(bufs["dL"], dLn + dD @ W + D @ dWr, dtype, "dL")
    close(gW, D.T @ U, dtype, "gW")
    close(dgW, dD.T @ U + D.T @ dUr, dtype, "dgW")
    close(gb, D.sum(0), dtype, "gb")
    close(dgb, dD.sum(0), dtype, "dgb")


# ------------------------------------------------- sweeps == steps, bit for bit
def sweep_problem(rng, N, s, w, dtype):
    P = (rng.standard_normal(N * (w * w + w)) / np.sqrt(w)).astype(dtype)
    dP = rng.standard_normal(P.size).astype(dtype)
    U = np.empty((N + 1, s, w), dtype)
    U[0] = rng.standard_normal((s, w))
    return P, dP, U


def layer(P, n, w):
    blk = P[n * (w * w + w):(n + 1) * (w * w + w)]
    return blk[:w * w].reshape(w, w), blk[w * w:]


@settings(max_examples=12, deadline=None)
@given(st.integers(1, 5), st.integers(1, 300), st.integers(1, 20), dtypes,
       st.sampled_from(ACTS), st.integers(0, 2**31))
def test_sweeps_equal_steps_bit_for_bit(N, s, w, dtype, act, seed):
    check_sweeps_equal_steps(N, s, w, dtype, act, seed)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_adjoint_sweeps_in_layer_groups_equal_steps_bit_for_bit(dtype):
    # s w = 192000: two layers a parallel region, so N = 5 runs groups of 2, 2 and 1,
    # each with n_chunks = 8 partial gradients
    N, s, w = 5, 3000, 64
    assert F._group_layers(s, w, N) == 2 and F.n_chunks(s, w) == 8
    check_sweeps_equal_steps(N, s, w, dtype, "tanh", 11)


def check_sweeps_equal_steps(N, s, w, dtype, act, seed):
    rng = np.random.default_rng(seed)
    P, dP, U = sweep_problem(rng, N, s, w, dtype)
    a, h = K.ACTIVATIONS[act], 0.2
    S = np.empty((N, s, w), dtype)
    K.forward_sweep(U, P, h, a, S)
    V = U[0].copy()
    S1, out = np.empty((2, s, w), dtype)
    Us = [V]
    for n in range(N):
        K.forward_step(Us[-1], *layer(P, n, w), h, a, S1, out)
        np.testing.assert_array_equal(S[n], S1)
        np.testing.assert_array_equal(U[n + 1], out)
        Us.append(out.copy())
    # adjoint with gradient
    L = np.empty((2, s, w), dtype)
    L[0] = rng.standard_normal((s, w))
    lam = L[0].copy()
    lam0 = lam.copy()
    G = np.empty_like(P)
    cur = K.adjoint_sweep(L, 0, U, P, S, h, a, np.empty((s, w), dtype), G)
    D, Lo = np.empty((2, s, w), dtype)
    for n in range(N - 1, -1, -1):
        gW, gb = np.empty((w, w), dtype), np.empty(w, dtype)
        K.adjoint_step(lam, U[n], layer(P, n, w)[0], S[n], h, a, D, L=Lo, gW=gW, gb=gb)
        gWs, gbs = layer(G, n, w)
        np.testing.assert_array_equal(gWs, gW)
        np.testing.assert_array_equal(gbs, gb)
        lam = Lo.copy()
    np.testing.assert_array_equal(L[cur], lam)
    # the chain keeps every adjoint; with and without the gradient
    C = np.empty((N + 1, s, w), dtype)
    C[0] = lam0
    G2 = np.empty_like(P)
    K.adjoint_chain(C, U, P, S, h, a, np.empty((s, w), dtype), G2)
    np.testing.assert_array_equal(G2, G)
    np.testing.assert_array_equal(C[N], lam)
    C2 = np.empty_like(C)
    C2[0] = lam0
    K.adjoint_chain(C2, U, P, S, h, a, np.empty((s, w), dtype))
    np.testing.assert_array_equal(C2, C)
    lam = C[0].copy()
    for n in range(N - 1, -1, -1):
        K.adjoint_step(lam, U[n], layer(P, n, w)[0], S[n], h, a, D, L=Lo)
        np.testing.assert_array_equal(C[N - n], Lo)
        lam = Lo.copy()
    # tangent and second-order adjoint
    dU = np.empty_like(U)
    dU[0] = rng.standard_normal((s, w))
    dZ = np.empty_like(S)
    K.tangent_sweep(U, dU, P, dP, S, h, a, dZ)
    v = dU[0].copy()
    for n in range(N):
        dZ1, o1 = np.empty((2, s, w), dtype)
        K.tangent_step(U[n], v, *layer(P, n, w)[:1], layer(dP, n, w)[0], layer(dP, n, w)[1],
                       S[n], h, a, dZ1, o1, T=np.empty_like(o1))
        np.testing.assert_array_equal(dZ[n], dZ1)
        np.testing.assert_array_equal(dU[n + 1], o1)
        v = o1
    L[0] = rng.standard_normal((s, w))
    dL = np.empty_like(L)
    dL[0] = rng.standard_normal((s, w))
    lam, dlam = L[0].copy(), dL[0].copy()
    H = np.empty_like(P)
    D, dD = np.empty((2, s, w), dtype)
    cur = K.soadjoint_sweep(L, dL, 0, U, dU, P, dP, S, dZ, h, a, D, dD, H)
    for n in range(N - 1, -1, -1):
        L1, dL1 = np.empty((2, s, w), dtype)
        hW, hb = np.empty((w, w), dtype), np.empty(w, dtype)
        K.soadjoint_step(lam, dlam, U[n], dU[n], layer(P, n, w)[0], layer(dP, n, w)[0], S[n],
                         dZ[n], h, a, D, dD, L=L1, dL=dL1, dgW=hW, dgb=hb,
                         tmp=np.empty((s, w), dtype), tmpW=np.empty((w, w), dtype))
        np.testing.assert_array_equal(layer(H, n, w)[0], hW)
        np.testing.assert_array_equal(layer(H, n, w)[1], hb)
        lam, dlam = L1, dL1
    np.testing.assert_array_equal(L[cur], lam)
    np.testing.assert_array_equal(dL[cur], dlam)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("want", ["all", "no_grad", "no_L"])
def test_batched_steps_on_strided_stacks_equal_single_steps(dtype, want):
    rng = np.random.default_rng(3)
    k, s, w, m = 5, 300, 12, 3  # s = 300: several gradient chunks
    big = rng.standard_normal((k * m + 2, s, w)).astype(dtype)
    U = big[1::m][:k]  # strided, as MGRIT's waves
    W = (rng.standard_normal((2 * k, w, w)) / 4).astype(dtype)[::-2]  # reversed stride
    b = rng.standard_normal((k, w)).astype(dtype)
    S, out = np.empty((2, k, s, w), dtype)
    K.forward_step_batch(U, W, b, 0.3, K.TANH, S, out)
    Ln = rng.standard_normal((k, s, w)).astype(dtype)
    D, L = np.empty((2, k, s, w), dtype)
    G = np.full((3 * k, w * w + w), np.nan, dtype)[::3]  # gradient rows of a strided block
    kw = {}
    if want != "no_L":
        kw["L"] = L
    if want != "no_grad":
        kw.update(gW=G[:, :w * w].reshape(k, w, w), gb=G[:, w * w:])
    K.adjoint_step_batch(Ln, U, W, S, 0.3, K.TANH, D, **kw)
    for q in range(k):
        S1, o1, D1, L1 = np.empty((4, s, w), dtype)
        gW1, gb1 = np.empty((w, w), dtype), np.empty(w, dtype)
        K.forward_step(U[q], W[q], b[q], 0.3, K.TANH, S1, o1)
        np.testing.assert_array_equal(S[q], S1)
        np.testing.assert_array_equal(out[q], o1)
        K.adjoint_step(Ln[q], U[q], W[q], S1, 0.3, K.TANH, D1, L=L1, gW=gW1, gb=gb1)
        np.testing.assert_array_equal(D[q], D1)
        if want != "no_L":
            np.testing.assert_array_equal(L[q], L1)
        if want != "no_grad":
            np.testing.assert_array_equal(G[q, :w * w].reshape(w, w), gW1)
            np.testing.assert_array_equal(G[q, w * w:], gb1)


# --------------------------------------------------------------- thread counts
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("N, s, w", [(3, 1100, 8), (2, 600, 128), (5, 3000, 64)])
def test_results_do_not_depend_on_the_thread_count(dtype, N, s, w):
    rng = np.random.default_rng(5)
    # n_chunks(1100, 8) = 16 gradient chunks; n_chunks(600, 128) = 2 (a wide layer);
    # (5, 3000, 64): 8 chunks and the adjoint sweeps in groups of 2 layers
    assert F.n_chunks(s, w) > 1
    P, dP, U = sweep_problem(rng, N, s, w, dtype)
    Lin = rng.standard_normal((s, w)).astype(dtype)

    def run():
        V, S = U.copy(), np.empty((N, s, w), dtype)
        K.forward_sweep(V, P, 0.25, K.TANH, S)
        L = np.empty((2, s, w), dtype)
        L[0] = Lin
        G = np.empty_like(P)
        cur = K.adjoint_sweep(L, 0, V, P, S, 0.25, K.TANH, np.empty((s, w), dtype), G)
        lam = L[cur].copy()
        dU, dZ = np.empty_like(V), np.empty_like(S)
        dU[0] = Lin
        K.tangent_sweep(V, dU, P, dP, S, 0.25, K.TANH, dZ)
        L[0], dL = Lin, np.empty_like(L)
        dL[0] = 0.5 * Lin
        H = np.empty_like(P)
        c2 = K.soadjoint_sweep(L, dL, 0, V, dU, P, dP, S, dZ, 0.25, K.TANH,
                               np.empty((s, w), dtype), np.empty((s, w), dtype), H)
        return V, S, lam, G, dU, L[c2].copy(), dL[c2].copy(), H

    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = run()
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = run()
    finally:
        numba.set_num_threads(old)
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, b)


def test_chunk_count_depends_on_batch_and_width_only():
    assert F.n_chunks(64, 32) == 1
    assert F.n_chunks(1000, 32) == 4
    assert F.n_chunks(5000, 32) == 16
    assert F.n_chunks(1000, 128) == 2
    for s in (1, 7, 129, 1000, 10**6):
        for w in (1, 8, 64, 128):
            C = F.n_chunks(s, w)
            assert C & (C - 1) == 0 and 1 <= C <= F.MAX_CHUNKS
            least = max(F.MIN_CHUNK_ROWS, min(4 * w, F.MAX_LEAST_ROWS))
            assert C == 1 or s // C >= least
            assert C == F.MAX_CHUNKS or s // (2 * C) < least  # the largest such C


# ------------------------------------------------- register tiles, bit for bit
@njit(error_model="numpy")
def _fma_running_sums(A, B, A2, B2, two, acc):
    for i in range(acc.shape[0]):
        for j in range(acc.shape[1]):
            z = acc[i, j]
            for k in range(A.shape[1]):
                z = _fma(A[i, k], B[k, j], z)
                if two:
                    z = _fma(A2[i, k], B2[k, j], z)
            acc[i, j] = z


def running_sums(A, B, bias=None, A2=None, B2=None, start=None):
    """C = A B (+ A2 B2) (+ bias) as the tiles promise: each entry one running sum from
    zero (or from ``start``), ``acc = fma(a, b, acc)`` one product at a time in k order
    (a scalar loop: the FMA itself is checked against exact rational arithmetic in
    test_fma_is_rounded_once)."""
    acc = np.zeros((A.shape[0], B.shape[1]), A.dtype) if start is None else start.copy()
    two = A2 is not None
    _fma_running_sums(A, B, A2 if two else A, B2 if two else B, two, acc)
    return acc if bias is None else acc + bias


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fma_is_rounded_once(dtype):
    """``_fma(a, b, c)`` is a b + c rounded once (exact rationals, then nearest-even)."""
    from fractions import Fraction

    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((2, 3000)).astype(dtype)
    c = (-a * b + rng.standard_normal(3000).astype(dtype) * np.finfo(dtype).eps).astype(dtype)
    got = np.empty_like(a)
    _fma_loop(a, b, c, got)
    differs = 0
    for x, y, z, r in zip(a, b, c, got, strict=True):
        exact = Fraction(float(x)) * Fraction(float(y)) + Fraction(float(z))
        lo = np.nextafter(r, dtype(-np.inf))
        hi = np.nextafter(r, dtype(np.inf))
        err = abs(Fraction(float(r)) - exact)
        # r is a nearest float: no closer neighbour (ties are not drawn here)
        assert err <= abs(Fraction(float(lo)) - exact) and err <= abs(Fraction(float(hi)) - exact)
        differs += r != dtype(x * y + z)
    assert differs > 1000  # c cancels a b: one rounding and two differ in most draws


@njit(error_model="numpy")
def _fma_loop(a, b, c, out):
    for i in range(a.size):
        out[i] = _fma(a[i], b[i], c[i])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tiles_are_running_sums_at_every_column_split(dtype):
    """Columns split into 16-wide (float32), 8-wide and scalar tiles, rows into full
    and one-row tiles: every entry is the same running sum, bit for bit."""
    from mgnn.kernels.cpu_tiles import gemm_rows, gemm_tn_acc

    rng = np.random.default_rng(11)
    for n in (3, 8, 15, 16, 17, 24, 27, 33, 40):
        s, K_ = 21, 13
        A, A2 = rng.standard_normal((2, s, K_)).astype(dtype)
        B, B2 = rng.standard_normal((2, K_, n)).astype(dtype)
        b = rng.standard_normal(n).astype(dtype)
        C = np.full((s, n), np.nan, dtype)
        gemm_rows(A, B, C, 2, s, b, True, A2, B2, True)
        np.testing.assert_array_equal(C[2:], running_sums(A[2:], B, b, A2[2:], B2))
        gemm_rows(A, B, C, 0, s, b, False, A, B, False)
        np.testing.assert_array_equal(C, running_sums(A, B))
        D, X = rng.standard_normal((s, K_)).astype(dtype), rng.standard_normal((s, n)).astype(dtype)
        G0 = rng.standard_normal((K_, n)).astype(dtype)
        G = G0.copy()
        gemm_tn_acc(D, X, D, X, False, G, 1, s)
        # G += D^T X, row by row in order, onto G's own values
        ref = running_sums(np.ascontiguousarray(D[1:].T), X[1:], start=G0)
        np.testing.assert_array_equal(G, ref)



@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_column_sums_are_running_sums_in_row_order(dtype):
    """``colsum_acc`` (the bias gradient of a block) adds the rows one at a time in
    order onto g's own values, in the SIMD tiles (4 and 1 at a time, 16- and 8-wide)
    and the scalar tail alike; consecutive calls equal one call; NaN propagates."""
    from mgnn.kernels.cpu_tiles import colsum_acc

    rng = np.random.default_rng(12)
    for m in (1, 3, 8, 15, 16, 24, 31, 32, 40, 64, 72, 100, 128):
        D = rng.standard_normal((23, m)).astype(dtype)
        g0 = rng.standard_normal(m).astype(dtype)
        ref = g0.copy()
        for i in range(2, 20):  # rows 3 .. 20 of the call, shifted by one
            ref = ref + D[i]
        g = g0.copy()
        colsum_acc(D, g, 3, 21, 1)
        np.testing.assert_array_equal(g, ref)
        g = g0.copy()
        colsum_acc(D, g, 3, 11, 1)
        colsum_acc(D, g, 11, 21, 1)
        np.testing.assert_array_equal(g, ref)
        g = g0.copy()
        colsum_acc(D, g, 5, 5)  # no rows: g unchanged
        np.testing.assert_array_equal(g, g0)
    D[4, -1] = np.nan
    g = np.zeros(D.shape[1], dtype)
    colsum_acc(D, g, 0, D.shape[0])
    assert np.isnan(g[-1]) and np.isfinite(g[:-1]).all()


def test_flat_view_of_a_contiguous_array_is_its_data():
    """``_flat`` (the row kernels' 1-D views) is ``reshape(-1)``: a view of the same
    memory for C-contiguous arrays (built without refcounting), Numba's reshape
    otherwise (which refuses what it cannot view)."""

    @njit
    def write_through(a, v):
        f = F._flat(a)
        for t in range(f.size):
            f[t] = v + t
        return f.size

    a = np.zeros((3, 4, 5))
    assert write_through(a[1], 1.0) == 20
    np.testing.assert_array_equal(a[1].ravel(), 1.0 + np.arange(20))
    assert not a[0].any() and not a[2].any()

    @njit
    def flat_sum(a):
        return F._flat(a).sum()

    b = np.arange(12.0).reshape(3, 4)
    assert flat_sum(b) == 66.0
    with pytest.raises(NotImplementedError):
        flat_sum(np.asfortranarray(b))


# ---------------------------------------------------------- layouts and dtype
def test_fused_steps_take_strided_arguments():
    rng = np.random.default_rng(9)
    s, w = 40, 6
    U = rng.standard_normal((w, s)).T  # Fortran-ordered view
    W = rng.standard_normal((w, w)).T
    b = rng.standard_normal(2 * w)[::2]
    S = np.empty((s, 2 * w))[:, ::2]  # non-contiguous outputs
    out = np.empty((w, s)).T
    K.forward_step(U, W, b, 0.5, K.TANH, S, out)
    Z = U @ W.T + b
    np.testing.assert_allclose(out, U + 0.5 * np.tanh(Z), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(S, np.tanh(Z), rtol=1e-13, atol=1e-13)


def test_wide_layers_use_blas_and_narrow_layers_the_fused_kernels():
    for dt in (np.float64, np.float32):
        wmax = K.FUSED_MAX_WIDTH[np.dtype(dt)]
        assert K.uses_fused(wmax, wmax, dt) and not K.uses_fused(wmax + 1, 2, dt)


def test_fused_float32_kernels_stay_float32():
    """No float64 arithmetic (``fpext``) in the float32 specialisations."""
    from numba import njit

    rng = np.random.default_rng(0)
    U, W, b = draw_layer(rng, 8, 8, 8, np.float32)
    WT = np.ascontiguousarray(W.T)
    S, out = np.empty((2, 8, 8), np.float32)
    fwd = njit(error_model="numpy")(F._forward_rows.py_func)  # uncached: inspectable
    fwd(U, WT, b, np.float32(0.5), K.TANH, True, S, out, 0, 8)
    G, gb = np.zeros((8, 8), np.float32), np.zeros(8, np.float32)
    adj = njit(error_model="numpy")(F._adjoint_rows.py_func)
    for act in range(4):
        adj(U, U, W, S, np.float32(0.5), act, S.copy(), out.copy(), True, G, gb, True, True, 0, 8,
            False, S, U, 8)
    for f in (fwd, adj):
        ir = f.inspect_llvm(f.signatures[0])
        assert "define" in ir and "fpext" not in ir


# --------------------------------------------------- step tables (MGRIT coarse sweeps)
@settings(max_examples=15, deadline=None)
@given(st.integers(1, 8), st.integers(1, 300), st.integers(1, 20), dtypes,
       st.sampled_from(ACTS), st.integers(0, 2**31))
def test_step_tables_equal_single_steps_bit_for_bit(n, s, w, dtype, act, seed):
    """A random table of dependent steps between rows of three arrays, with and without
    added right-hand sides, equals the single forward / adjoint steps followed by the
    additions, bit for bit, on one and on two threads; the records of
    ``forward_records`` equal the single steps' records."""
    rng = np.random.default_rng(seed)
    a = K.ACTIVATIONS[act]
    X = [rng.standard_normal((r, s, w)).astype(dtype) for r in (n + 1, 3, 1)]
    G = rng.standard_normal((n, s, w)).astype(dtype)
    W = (rng.standard_normal((n, w, w)) / np.sqrt(w)).astype(dtype)
    b = rng.standard_normal((n, w)).astype(dtype)
    U = rng.standard_normal((n + 2, s, w)).astype(dtype)
    tab = []
    src = (2, 0)  # start from the one-row array, then chain through X[0]
    for j in range(n):
        dst = (1, int(rng.integers(3))) if j == n - 1 else (0, j + 1)
        tab.append((*src, *dst, int(rng.integers(-1, n)), int(rng.integers(n))))
        src = dst
    tab = np.array(tab, dtype=np.int64)
    urow = rng.integers(0, n + 2, n).astype(np.int64)
    h = 0.3

    def single(kind):
        Y = [x.copy() for x in X]
        D, tmp = np.empty((s, w), dtype), np.empty((s, w), dtype)
        R = np.empty((n, s, w), dtype)
        for j in range(n):
            q = tab[j, 5]
            K.forward_step(U[urow[j]], W[q], b[q], 1.0, a, R[j], tmp)
        for j, (ia, ir, oa, orow, g, q) in enumerate(tab):
            out = Y[oa][orow]
            if kind == "forward":
                K.forward_step(Y[ia][ir], W[q], b[q], h, a, tmp, out)
            else:
                K.adjoint_step(Y[ia][ir], U[urow[j]], W[q], R[j], h, a, D, L=out)
            if g >= 0:
                np.add(out, G[g], out=out)
        return Y, R

    def tabled(kind):
        Y = [x.copy() for x in X]
        D, tmp = np.empty((s, w), dtype), np.empty((s, w), dtype)
        R = np.empty((n, s, w), dtype)
        K.forward_records(U, urow, W, b, tab[:, 5], a, R, tmp)
        if kind == "forward":
            K.forward_steps(Y, tab, W, b, h, a, tmp, G)
        else:
            K.adjoint_steps(Y, tab, U, urow, W, R, np.arange(n, dtype=np.int64), h, a, D, G)
        return Y, R

    old = numba.get_num_threads()
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            for kind in ("forward", "adjoint"):
                (Y1, R1), (Y2, R2) = single(kind), tabled(kind)
                np.testing.assert_array_equal(R1, R2)
                for y1, y2 in zip(Y1, Y2, strict=True):
                    np.testing.assert_array_equal(y1, y2)
    finally:
        numba.set_num_threads(old)


def test_step_tables_refuse_bad_tables():
    s, w = 4, 3
    X = [np.zeros((2, s, w))]
    W, b, S = np.zeros((1, w, w)), np.zeros((1, w)), np.empty((s, w))
    good = np.array([[0, 0, 0, 1, -1, 0]], dtype=np.int64)
    K.forward_steps(X, good, W, b, 0.1, K.TANH, S)
    for bad, match in [(good.astype(np.int32), "int64"), (good[:, :5], r"\(n, 6\)"),
                       (good + [[0, 0, 0, 1, 0, 0]], "outside its array"),
                       (good + [[1, 0, 0, 0, 0, 0]], "index the 1 arrays"),
                       (good + [[0, 0, 0, 0, 1, 0]], "G row"),
                       (good + [[0, 0, 0, 0, 0, 1]], "layers of W")]:
        with pytest.raises(ValueError, match=match):
            K.forward_steps(X, bad, W, b, 0.1, K.TANH, S)
    with pytest.raises(ValueError, match="C-contiguous"):
        K.forward_steps([np.zeros((2, s, w))[:, :, ::-1]], good, W, b, 0.1, K.TANH, S)
    with pytest.raises(ValueError, match="urow"):
        K.adjoint_steps(X, good, X[0], np.array([5]), W, X[0], np.array([0]), 0.1, K.TANH, S)


@settings(max_examples=12, deadline=None)
@given(st.integers(1, 6), st.integers(1, 300), st.integers(1, 20), dtypes,
       st.sampled_from(ACTS), st.booleans(), st.integers(0, 2**31))
def test_layer_step_tables_equal_single_steps_bit_for_bit(n, s, w, dtype, act, grad, seed):
    """A fine sweep as a table (chained steps through flat layer blocks, the last into a
    second array, records and optionally the gradient written by row) equals the single
    forward and adjoint steps bit for bit."""
    rng = np.random.default_rng(seed)
    a = K.ACTIVATIONS[act]
    P, _, U = sweep_problem(rng, n, s, w, dtype)
    X = [np.zeros((n + 1, s, w), dtype), np.zeros((1, s, w), dtype)]
    X[0][0] = U[0]
    layers = rng.permutation(n)  # any layer order: the table names them
    tab = np.array([(0, j, 1 if j == n - 1 else 0, 0 if j == n - 1 else j + 1, j, layers[j])
                    for j in range(n)], dtype=np.int64)
    S = np.empty((n, s, w), dtype)
    K.forward_steps_layers(X, tab, P, 0.2, a, S)
    Y, S1 = [x.copy() for x in X], np.empty((n, s, w), dtype)
    Y[0][1:], Y[1][:] = 0, 0
    for j in range(n):
        Wn, bn = layer(P, layers[j], w)
        out = Y[1][0] if j == n - 1 else Y[0][j + 1]
        K.forward_step(Y[0][j], Wn, bn, 0.2, a, S1[j], out)
    np.testing.assert_array_equal(S, S1)
    for x, y in zip(X, Y, strict=True):
        np.testing.assert_array_equal(x, y)
    # adjoint through the same table, linearised at the forward states of each row
    Us = np.ascontiguousarray(Y[0][:n])
    L = [rng.standard_normal((n + 1, s, w)).astype(dtype), np.zeros((1, s, w), dtype)]
    G = np.full((n, w * w + w), np.nan, dtype) if grad else None
    L2 = [x.copy() for x in L]
    D = np.empty((s, w), dtype)
    K.adjoint_steps_layers(L, tab, Us, P, S, 0.2, a, D, G)
    for j in range(n):
        Wn, _ = layer(P, layers[j], w)
        out = L2[1][0] if j == n - 1 else L2[0][j + 1]
        if grad:
            gW, gb = np.empty((w, w), dtype), np.empty(w, dtype)
            K.adjoint_step(L2[0][j], Us[j], Wn, S[j], 0.2, a, D, L=out, gW=gW, gb=gb)
            np.testing.assert_array_equal(G[j], np.r_[gW.ravel(), gb])
        else:
            K.adjoint_step(L2[0][j], Us[j], Wn, S[j], 0.2, a, D, L=out)
    for x, y in zip(L, L2, strict=True):
        np.testing.assert_array_equal(x, y)


# ------------------------------------------------------ the closing layer (no BLAS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_narrow_closing_layer_runs_on_the_fused_kernels(dtype, monkeypatch):
    """A narrow network's closing layer (and its tangent) takes the fused kernels and
    agrees with the BLAS closing layer to rounding; a wide one keeps BLAS."""
    from mgnn.nets import ResNet
    from mgnn.objective import Objective

    rng = np.random.default_rng(4)
    X = rng.standard_normal((70, 2)).astype(dtype)
    y = rng.integers(0, 3, 70)
    net = ResNet(2, 6, 3, 3, T=1.0, dtype=dtype)
    theta, v = net.init(rng), rng.standard_normal(net.n_params).astype(dtype)
    obj = Objective(net, X, y)
    assert net._closing_kernels(np) is K
    wide = ResNet(2, K.FUSED_MAX_WIDTH[np.dtype(dtype)] + 1, 1, 3, dtype=dtype)
    assert wide._closing_kernels(np) is None
    val, g = obj.value_and_grad(theta)
    hv = obj.hessp(theta, v)
    monkeypatch.setattr(ResNet, "_closing_kernels", lambda self, xp: None)
    val_b, g_b = obj.value_and_grad(theta)
    hv_b = obj.hessp(theta, v)
    tol = TOL[dtype]
    assert abs(val - val_b) <= tol * max(1.0, abs(val_b))
    for a, b in ((g, g_b), (hv, hv_b)):
        close(a, b.astype(np.float64), dtype, "closing layer")
