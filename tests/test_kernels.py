"""The Numba kernels against a plain NumPy reference, and the adjoint identities of every step."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mgnn.kernels import cpu as K

ACTS = list(K.ACTIVATIONS)
EPS = K.SMOOTH_RELU_EPS


# ---------------------------------------------------------------- reference
def ref_sigma(z, act):
    if act == "tanh":
        return np.tanh(z)
    if act == "relu":
        return np.maximum(z, 0)
    if act == "smooth_relu":
        return np.where(z <= -EPS, 0.0, np.where(z >= EPS, z, (z + EPS) ** 2 / (4 * EPS)))
    return z


def ref_dsigma(z, act):
    if act == "tanh":
        return 1 - np.tanh(z) ** 2
    if act == "relu":
        return (z > 0).astype(float)
    if act == "smooth_relu":
        return np.where(z <= -EPS, 0.0, np.where(z >= EPS, 1.0, (z + EPS) / (2 * EPS)))
    return np.ones_like(z)


def ref_d2sigma(z, act):
    if act == "tanh":
        t = np.tanh(z)
        return -2 * t * (1 - t ** 2)
    if act == "smooth_relu":
        return np.where((z > -EPS) & (z < EPS), 1 / (2 * EPS), 0.0)
    return np.zeros_like(z)


def layer(rng, s, w, dtype=np.float64, scale=1.0):
    U = rng.standard_normal((s, w)).astype(dtype)
    W = (scale * rng.standard_normal((w, w)) / np.sqrt(w)).astype(dtype)
    b = rng.standard_normal(w).astype(dtype)
    return U, W, b


def record(act, U, W, b, h, skip=True):
    S = np.empty((U.shape[0], W.shape[0]), U.dtype)
    out = np.empty_like(S)
    K.forward_step(U, W, b, h, K.ACTIVATIONS[act], S, out, skip=skip)
    return S, out


sizes = st.tuples(st.integers(1, 12), st.integers(1, 9))


# ------------------------------------------------------- kernels vs NumPy
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-13), (np.float32, 2e-5)])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("skip", [True, False])
@pytest.mark.parametrize("width", [6, K._NARROW, 40])  # flat and row-wise activation loops
def test_forward_matches_numpy(act, dtype, tol, skip, width):
    rng = np.random.default_rng(0)
    U, W, b = layer(rng, 17, width, dtype)
    S, out = record(act, U, W, b, 0.3, skip)
    Z = U.astype(np.float64) @ W.T.astype(np.float64) + b
    ref = (U if skip else 0) + 0.3 * ref_sigma(Z, act)
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(S, np.tanh(Z) if act == "tanh" else Z, rtol=tol, atol=tol)
    assert out.dtype == dtype


@pytest.mark.parametrize("act", ACTS)
def test_adjoint_matches_numpy(act):
    rng = np.random.default_rng(1)
    U, W, b = layer(rng, 11, 5)
    S, _ = record(act, U, W, b, 0.7)
    Ln = rng.standard_normal(U.shape)
    D, L, gW, gb = (np.empty_like(U), np.empty_like(U), np.empty_like(W), np.empty_like(b))
    K.adjoint_step(Ln, U, W, S, 0.7, K.ACTIVATIONS[act], D, L=L, gW=gW, gb=gb)
    Z = U @ W.T + b
    Dr = 0.7 * ref_dsigma(Z, act) * Ln
    np.testing.assert_allclose(L, Ln + Dr @ W, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(gW, Dr.T @ U, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(gb, Dr.sum(0), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("act", ACTS)
def test_tangent_and_second_order_match_numpy(act):
    rng = np.random.default_rng(2)
    s, w, h = 9, 4, 0.4
    U, W, b = layer(rng, s, w)
    dU, dW, db = layer(rng, s, w)
    S, _ = record(act, U, W, b, h)
    a = K.ACTIVATIONS[act]
    dZ, out, T = np.empty_like(U), np.empty_like(U), np.empty_like(U)
    K.tangent_step(U, dU, W, dW, db, S, h, a, dZ, out, T=T)
    Z = U @ W.T + b
    dZr = dU @ W.T + U @ dW.T + db
    np.testing.assert_allclose(dZ, dZr, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(out, dU + h * ref_dsigma(Z, act) * dZr, rtol=1e-13,
                               atol=1e-13)
    Ln, dLn = rng.standard_normal((2, s, w))
    bufs = {k: np.empty_like(U) for k in ("D", "dD", "L", "dL", "tmp")}
    dgW, tmpW, gW, dgb, gb = (np.empty_like(W), np.empty_like(W), np.empty_like(W),
                              np.empty_like(b), np.empty_like(b))
    K.soadjoint_step(Ln, dLn, U, dU, W, dW, S, dZ, h, a, bufs["D"], bufs["dD"],
                     L=bufs["L"], dL=bufs["dL"], gW=gW, gb=gb, dgW=dgW, dgb=dgb,
                     tmp=bufs["tmp"], tmpW=tmpW)
    D = h * ref_dsigma(Z, act) * Ln
    dD = h * (ref_d2sigma(Z, act) * dZr * Ln + ref_dsigma(Z, act) * dLn)
    np.testing.assert_allclose(bufs["L"], Ln + D @ W, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bufs["dL"], dLn + dD @ W + D @ dW, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gW, D.T @ U, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dgW, dD.T @ U + D.T @ dU, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gb, D.sum(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dgb, dD.sum(0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("act", ACTS)
def test_activation_helpers(act):
    z = np.linspace(-2, 2, 401)
    a = K.ACTIVATIONS[act]
    out = np.empty_like(z)
    K.activation(z, a, out)
    np.testing.assert_allclose(out, ref_sigma(z, act), atol=1e-15)
    K.activation_derivative(z, a, out)
    np.testing.assert_allclose(out, ref_dsigma(z, act), atol=1e-15)
    K.activation_second_derivative(z, a, out)
    np.testing.assert_allclose(out, ref_d2sigma(z, act), atol=1e-15)


def test_smooth_relu_is_c1():
    e = EPS
    z = np.array([-e, e])
    out = np.empty(2)
    K.activation(z, K.SMOOTH_RELU, out)
    np.testing.assert_allclose(out, [0.0, e])
    K.activation_derivative(z, K.SMOOTH_RELU, out)
    np.testing.assert_allclose(out, [0.0, 1.0])


# ------------------------------------------------------- adjoint identities
@settings(max_examples=40, deadline=None)
@given(sizes, st.sampled_from(ACTS), st.booleans(), st.integers(0, 2**32 - 1))
def test_step_adjoint_identity(size, act, skip, seed):
    """<J v, w> = <v, J^T w> for the layer map (U, W, b) -> skip*U + h sigma(U W^T + b)."""
    s, w = size
    rng = np.random.default_rng(seed)
    U, W, b = layer(rng, s, w)
    a, h = K.ACTIVATIONS[act], 0.37
    S, _ = record(act, U, W, b, h, skip)
    dU, dW, db = layer(rng, s, w)
    Jv, dZ, T = np.empty_like(U), np.empty_like(U), np.empty_like(U)
    K.tangent_step(U, dU, W, dW, db, S, h, a, dZ, Jv, T=T, skip=skip)
    Lw = rng.standard_normal((s, w))
    D, JtU, JtW, Jtb = np.empty_like(U), np.empty_like(U), np.empty_like(W), np.empty_like(b)
    K.adjoint_step(Lw, U, W, S, h, a, D, L=JtU, gW=JtW, gb=Jtb, skip=skip)
    lhs = np.vdot(Jv, Lw)
    rhs = np.vdot(dU, JtU) + np.vdot(dW, JtW) + np.vdot(db, Jtb)
    assert abs(lhs - rhs) <= 1e-12 * (abs(lhs) + np.abs(Jv).sum() * np.abs(Lw).max() + 1e-300)


@settings(max_examples=30, deadline=None)
@given(sizes, st.sampled_from(["tanh", "smooth_relu", "identity"]), st.integers(0, 2**32 - 1))
def test_second_order_step_is_derivative_of_adjoint_step(size, act, seed):
    """The second-order adjoint step is the directional derivative of the adjoint step."""
    s, w = size
    rng = np.random.default_rng(seed)
    U, W, b = layer(rng, s, w)
    dU, dW, db = layer(rng, s, w)
    Ln, dLn = rng.standard_normal((2, s, w))
    a, h = K.ACTIVATIONS[act], 0.5
    if act == "smooth_relu":  # stay away from the kinks of sigma'' for the difference
        Z = U @ W.T + b
        if np.min(np.abs(np.abs(Z) - EPS)) < 1e-3:
            return

    def adj(t):
        Ut, Wt, bt, Lt = U + t * dU, W + t * dW, b + t * db, Ln + t * dLn
        S, _ = record(act, Ut, Wt, bt, h)
        D, L, gW, gb = np.empty_like(U), np.empty_like(U), np.empty_like(W), np.empty_like(b)
        K.adjoint_step(Lt, Ut, Wt, S, h, a, D, L=L, gW=gW, gb=gb)
        return np.concatenate([L.ravel(), gW.ravel(), gb])

    S, _ = record(act, U, W, b, h)
    dZ, out, T = np.empty_like(U), np.empty_like(U), np.empty_like(U)
    K.tangent_step(U, dU, W, dW, db, S, h, a, dZ, out, T=T)
    D, dD, dL, tmp = (np.empty_like(U) for _ in range(4))
    dgW, tmpW, dgb = np.empty_like(W), np.empty_like(W), np.empty_like(b)
    K.soadjoint_step(Ln, dLn, U, dU, W, dW, S, dZ, h, a, D, dD, dL=dL, dgW=dgW, dgb=dgb,
                     tmp=tmp, tmpW=tmpW)
    exact = np.concatenate([dL.ravel(), dgW.ravel(), dgb])
    e = 1e-6
    fd = (adj(e) - adj(-e)) / (2 * e)
    assert np.linalg.norm(fd - exact) <= 1e-6 * (np.linalg.norm(exact) + 1e-8)


@settings(max_examples=30, deadline=None)
@given(sizes, st.sampled_from(ACTS), st.integers(0, 2**32 - 1))
def test_second_order_step_symmetric(size, act, seed):
    """With dL_next = 0 the second-order step applies the Hessian of <L, F(U, W, b)>: symmetric."""
    s, w = size
    rng = np.random.default_rng(seed)
    U, W, b = layer(rng, s, w)
    Ln = rng.standard_normal((s, w))
    a, h = K.ACTIVATIONS[act], 0.5
    S, _ = record(act, U, W, b, h)

    def H(dU, dW, db):
        dZ, out, T = np.empty_like(U), np.empty_like(U), np.empty_like(U)
        K.tangent_step(U, dU, W, dW, db, S, h, a, dZ, out, T=T)
        D, dD, dL, tmp = (np.empty_like(U) for _ in range(4))
        dgW, tmpW, dgb = np.empty_like(W), np.empty_like(W), np.empty_like(b)
        K.soadjoint_step(Ln, np.zeros_like(Ln), U, dU, W, dW, S, dZ, h, a, D, dD, dL=dL,
                         dgW=dgW, dgb=dgb, tmp=tmp, tmpW=tmpW)
        return np.concatenate([(dL - 0).ravel(), dgW.ravel(), dgb])

    v1, v2 = layer(rng, s, w), layer(rng, s, w)
    Hv1, Hv2 = H(*v1), H(*v2)
    # the skip term dL_next = 0 contributes nothing; compare <H v1, v2> and <v1, H v2>
    flat = [np.concatenate([x.ravel() for x in v]) for v in (v1, v2)]
    lhs, rhs = np.dot(Hv1, flat[1]), np.dot(flat[0], Hv2)
    assert abs(lhs - rhs) <= 1e-10 * (np.abs(Hv1).sum() * np.abs(flat[1]).max() + 1e-300)


# ------------------------------------------------------------------- losses
@pytest.mark.parametrize("name", ["mse", "cross_entropy"])
def test_loss_derivatives(name):
    rng = np.random.default_rng(3)
    Y = rng.standard_normal((7, 4))
    T = rng.standard_normal((7, 4)) if name == "mse" else rng.integers(0, 4, 7)
    val = getattr(K, f"{name}_value")
    vg = getattr(K, f"{name}_value_grad")
    hp = getattr(K, f"{name}_hessp")
    G = np.empty_like(Y)
    f = vg(Y, T, G)
    assert f == pytest.approx(val(Y, T), rel=1e-14)
    dY = rng.standard_normal(Y.shape)
    e = 1e-6
    assert np.vdot(G, dY) == pytest.approx((val(Y + e * dY, T) - val(Y - e * dY, T)) / (2 * e),
                                           rel=1e-7)
    Hd = np.empty_like(Y)
    hp(Y, dY, Hd)
    G1, G2 = np.empty_like(Y), np.empty_like(Y)
    vg(Y + e * dY, T, G1)
    vg(Y - e * dY, T, G2)
    np.testing.assert_allclose(Hd, (G1 - G2) / (2 * e), rtol=1e-6, atol=1e-9)


def test_cross_entropy_is_stable_for_huge_logits():
    Y = np.array([[1000.0, 0.0, -1000.0], [-800.0, 800.0, 0.0]])
    G = np.empty_like(Y)
    f = K.cross_entropy_value_grad(Y, np.array([0, 1]), G)
    assert np.isfinite(f) and f == pytest.approx(0.0, abs=1e-12)
    assert np.isfinite(G).all()
    f = K.cross_entropy_value(Y, np.array([2, 0]))
    assert f == pytest.approx((2000 + 1600) / 2)


@pytest.mark.parametrize("dtype,ulps", [(np.float64, 8), (np.float32, 8)])
def test_vectorised_tanh_is_within_a_few_ulp(dtype, ulps):
    x = np.concatenate([np.linspace(-25, 25, 200001), np.logspace(-30, 1, 2000),
                        -np.logspace(-30, 1, 2000), [0.0, -0.0]]).astype(dtype)
    out = np.empty_like(x)
    K.activation(x, K.TANH, out)
    ref = np.tanh(x.astype(np.float64))
    err = np.abs(out - ref) / np.maximum(np.abs(ref), np.finfo(dtype).tiny)
    assert err.max() <= ulps * np.finfo(dtype).eps
    assert np.signbit(out[-1]) and out[-2] == 0.0  # odd, signed zero kept
    assert out.dtype == dtype


def test_float32_tanh_error_bound_stated_in_its_docstring():
    # every float32 in [4, 9.5] (where tanh is near 1 and the rational errs most),
    # and 2^20 bit patterns spread over [0, 9.5]; the bound (5.5 ulp) is measured at
    # every float32 by benchmarks/tanh.py
    lo, hi = (int(np.float32(v).view(np.int32)) for v in (4.0, 9.5))
    bits = np.concatenate([np.arange(lo, hi, 7, dtype=np.int32),
                           np.linspace(0, hi, 1 << 20).astype(np.int32)])
    x = np.concatenate([bits.view(np.float32), -bits.view(np.float32)])
    y = np.empty_like(x)
    K.activation(x, K.TANH, y)
    ref = np.tanh(x.astype(np.float64))
    ulp = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    ulp[np.abs(ref).astype(np.float32) == 1.0] = 2.0**-24
    err = np.abs(y - ref) / ulp
    assert err.max() <= 5.5
    spread = err[x.size // 2 - (1 << 20): x.size // 2]  # the evenly spread patterns
    assert np.mean(spread <= 1.0) > 0.95  # 97.3 % over every float32 in [0, 9.5]
    assert np.abs(y).max() <= 1.0
    np.testing.assert_array_equal(y[: x.size // 2], -y[x.size // 2:])  # odd


def test_float64_tanh_error_bound_stated_in_its_docstring():
    # 2^20 arguments drawn as benchmarks/tanh.py draws its 2^25 (uniform, log-uniform,
    # near the reduction's switches of k), both signs, against the 80-bit tanh
    rng = np.random.default_rng(3)
    n = 1 << 18
    switch = (rng.integers(0, 58, n) + 0.5) * np.log(2.0) / 2 + rng.uniform(-1e-3, 1e-3, n)
    x = np.concatenate([rng.uniform(0.0, 20.0, n), np.exp(rng.uniform(-690.0, 3.0, n)),
                        switch, rng.uniform(0.0, 1.0, n)])
    x = np.concatenate([x, -x])
    y = np.empty_like(x)
    K.activation(x, K.TANH, y)
    ref = np.tanh(x.astype(np.longdouble))
    ulp = np.spacing(np.abs(ref).astype(np.float64)).astype(np.longdouble)
    err = (np.abs(y.astype(np.longdouble) - ref) / ulp).astype(np.float64)
    assert err.max() <= 2.6
    assert np.mean(err <= 1.0) > 0.98  # 98.5 % over benchmarks/tanh.py's 2^25
    assert np.abs(y).max() <= 1.0
    np.testing.assert_array_equal(y[: x.size // 2], -y[x.size // 2:])  # odd
    # the FMAs are explicit: a vectorised loop and one element at a time (its scalar
    # remainder) give the bits of the kernels
    from mgnn.kernels.cpu_activations import _tanh
    from numba import njit

    @njit(error_model="numpy")
    def loop(x, y):
        for i in range(x.size):
            y[i] = _tanh(x[i])

    yv = np.empty_like(x)
    loop(x, yv)
    np.testing.assert_array_equal(yv, y)
    one, out = np.empty(1), np.empty(1)
    for i in rng.integers(0, x.size, 2000):
        one[0] = x[i]
        loop(one, out)
        assert out[0] == y[i]


def test_float32_kernels_stay_float32():
    """Typed constants: the float32 specialisations compute in float32 (no fpext)."""
    from numba import njit

    fresh = njit(error_model="numpy")(K._forward_fuse.py_func)  # uncached: inspectable
    U, W, b = layer(np.random.default_rng(0), 4, 3, np.float32)
    S, out = U @ W.T, np.empty_like(U)
    for act in ACTS:
        fresh(U, S, b, np.float32(0.5), K.ACTIVATIONS[act], True, out)
    ir = fresh.inspect_llvm(fresh.signatures[0])
    assert "define" in ir and "fpext" not in ir


@pytest.mark.parametrize("act", ACTS)
def test_activations_propagate_nan_and_take_limits_at_infinity(act):
    """A NaN from an overflowed run must stay visible; sigma(+-inf) is the limit."""
    x = np.array([np.nan, np.inf, -np.inf])
    out = np.empty_like(x)
    K.activation(x, K.ACTIVATIONS[act], out)
    assert np.isnan(out[0])
    expected = {"tanh": [1, -1], "relu": [np.inf, 0], "smooth_relu": [np.inf, 0],
                "identity": [np.inf, -np.inf]}[act]
    np.testing.assert_array_equal(out[1:], expected)
