"""Stream kernels (value, first and diagonal second input derivatives through the ResNet).

Checked against finite differences of the plain forward pass, against closed forms
(a one-neuron network by the chain rule; a linear network, whose Jacobian is a matrix
product and whose second derivatives vanish), and by the identities that tie the
forward, adjoint, tangent and second-order adjoint steps together.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mgnn.kernels import cpu_pinn as kp

from mgnn.nets import ResNet
from mgnn.pinn.streams import StreamLayout, output_streams

ACT = kp.ACTIVATIONS


def _net(n_in, width, depth, act, seed, T=1.0):
    net = ResNet(n_in, width, depth, 1, task="regression", activation=act, T=T)
    rng = np.random.default_rng(seed)
    theta = net.init(rng)
    theta += 0.3 * rng.standard_normal(theta.size)  # nonzero biases, generic weights
    return net, theta


@settings(max_examples=25)
@given(width=st.integers(1, 6), depth=st.integers(1, 4), n_in=st.integers(1, 3),
       act=st.sampled_from(["tanh", "identity"]), seed=st.integers(0, 2**16))
def test_streams_match_finite_differences(width, depth, n_in, act, seed):
    net, theta = _net(n_in, width, depth, act, seed, T=float(depth))
    X = np.random.default_rng(seed + 1).uniform(-1, 1, (5, n_in))
    out = output_streams(net, theta, X, first=range(n_in), second=range(n_in))
    f0 = net.forward(theta, X)
    for j in range(n_in):
        e1, e2 = 1e-6, 1e-4
        E1, E2 = np.zeros(n_in), np.zeros(n_in)
        E1[j], E2[j] = e1, e2
        d1 = (net.forward(theta, X + E1) - net.forward(theta, X - E1)) / (2 * e1)
        d2 = (net.forward(theta, X + E2) - 2 * f0 + net.forward(theta, X - E2)) / e2 ** 2
        scale = 1.0 + np.abs(d1).max()
        assert np.abs(out["d"][j] - d1).max() <= 1e-7 * scale
        assert np.abs(out["dd"][j] - d2).max() <= 2e-5 * (1.0 + np.abs(d2).max())
    # the plain forward runs its GEMMs in the fused kernels' summation order, the
    # streams in BLAS's: equal up to rounding
    assert np.abs(out["u"] - f0).max() <= 1e-14 * (1.0 + np.abs(f0).max())


@settings(max_examples=15)
@given(width=st.integers(1, 5), depth=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_smoothed_relu_first_derivatives(width, depth, seed):
    # sigma' is continuous: first-derivative streams are exact away from the kinks
    net, theta = _net(2, width, depth, "smooth_relu", seed)
    X = np.random.default_rng(seed).uniform(-1, 1, (6, 2))
    out = output_streams(net, theta, X, first=[0, 1])
    for j in range(2):
        E = np.zeros(2)
        E[j] = 1e-7
        fd = (net.forward(theta, X + E) - net.forward(theta, X - E)) / 2e-7
        assert np.abs(out["d"][j] - fd).max() <= 1e-5 * (1 + np.abs(fd).max())


def test_smoothed_relu_second_derivative_closed_form():
    # one neuron on its quadratic piece: sigma = (z + eps)^2/(4 eps), sigma'' = 1/(2 eps)
    eps = kp.SMOOTH_RELU_EPS
    V = np.array([[[0.01]], [[1.0]], [[0.0]]])  # x, dx, d2x
    G, out = np.empty((3, 1, 1)), np.empty((3, 1, 1))
    w, b = 2.0, 0.03
    kp.forward_step(V, np.array([[w]]), np.array([b]), 1.0, ACT["smooth_relu"], 1, G, out,
                    skip=False)
    z = w * 0.01 + b
    assert abs(z) < eps
    assert out[0, 0, 0] == pytest.approx((z + eps) ** 2 / (4 * eps), rel=1e-14)
    assert out[1, 0, 0] == pytest.approx(w * (z + eps) / (2 * eps), rel=1e-14)
    assert out[2, 0, 0] == pytest.approx(w * w / (2 * eps), rel=1e-14)


def test_one_neuron_closed_form():
    net = ResNet(1, 1, 1, 1, task="regression", T=0.7)
    theta = np.array([1.3, -0.2, 0.8, 0.4, 1.7, -0.5])  # wo, bo, W, b, wc, bc
    x = np.array([[0.35], [-0.8]])
    out = output_streams(net, theta, x, first=[0], second=[0])
    wo, bo, W, b, wc, _ = theta
    h = 0.7
    a0 = np.tanh(wo * x[:, 0] + bo)
    u0, u0p, u0pp = a0, wo * (1 - a0 ** 2), -2 * wo ** 2 * a0 * (1 - a0 ** 2)
    a1 = np.tanh(W * u0 + b)
    u1p = u0p + h * (1 - a1 ** 2) * W * u0p
    u1pp = u0pp + h * (-2 * a1 * (1 - a1 ** 2) * (W * u0p) ** 2 + (1 - a1 ** 2) * W * u0pp)
    np.testing.assert_allclose(out["d"][0][:, 0], wc * u1p, rtol=1e-13)
    np.testing.assert_allclose(out["dd"][0][:, 0], wc * u1pp, rtol=1e-13)


@settings(max_examples=15)
@given(width=st.integers(1, 6), depth=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_linear_network_closed_form(width, depth, seed):
    net = ResNet(3, width, depth, 1, task="regression", activation="identity",
                 opening_activation=False)
    theta = net.init(seed)
    theta += 0.2 * np.random.default_rng(seed).standard_normal(theta.size)
    p = net.unpack(theta)
    J = p.W_open.copy()
    for n in range(depth):
        J = (np.eye(width) + net.h * p.W[n]) @ J
    J = p.W_close @ J  # (1, 3): du/dx exactly
    X = np.random.default_rng(seed).standard_normal((4, 3))
    out = output_streams(net, theta, X, first=[0, 1, 2], second=[0, 1, 2])
    for j in range(3):
        np.testing.assert_allclose(out["d"][j][:, 0], J[0, j], rtol=1e-12, atol=1e-14)
        assert np.all(out["dd"][j] == 0.0)


def _stack(rng, S, s, w):
    return rng.standard_normal((S, s, w))


@settings(max_examples=25)
@given(S_m2=st.sampled_from([(1, 0), (2, 0), (3, 1), (4, 1), (5, 2), (3, 0)]),
       s=st.integers(1, 7), w=st.integers(1, 9), skip=st.booleans(),
       act=st.sampled_from(["tanh", "identity"]), seed=st.integers(0, 2**16))
def test_adjoint_identity_of_the_step(S_m2, s, w, skip, act, seed):
    # <tangent(dV, dW, db), Lam> = <dV, L> + <dW, gW> + <db, gb>
    S, m2 = S_m2
    rng = np.random.default_rng(seed)
    w_in = w if skip else rng.integers(1, 5)
    V, dV = _stack(rng, S, s, w_in), _stack(rng, S, s, w_in)
    W, dW = rng.standard_normal((w, w_in)), rng.standard_normal((w, w_in))
    b, db = rng.standard_normal(w), rng.standard_normal(w)
    Lam = _stack(rng, S, s, w)
    a, h = ACT[act], 0.37
    G, out = np.empty((S, s, w)), np.empty((S, s, w))
    kp.forward_step(V, W, b, h, a, m2, G, out, skip=skip)
    dG, dout, T = np.empty((S, s, w)), np.empty((S, s, w)), np.empty((S, s, w))
    kp.tangent_step(V, dV, W, dW, db, G, h, a, m2, dG, dout, T=T, skip=skip)
    D, L = np.empty((S, s, w)), np.empty((S, s, w_in))
    gW, gb = np.empty((w, w_in)), np.empty(w)
    kp.adjoint_step(Lam, V, W, G, h, a, m2, D, L=L, gW=gW, gb=gb, skip=skip)
    lhs = np.vdot(dout, Lam)
    rhs = np.vdot(dV, L) + np.vdot(dW, gW) + np.vdot(db, gb)
    assert abs(lhs - rhs) <= 1e-12 * (1 + abs(lhs))


@settings(max_examples=20)
@given(S_m2=st.sampled_from([(1, 0), (3, 1), (5, 2), (4, 1)]), s=st.integers(1, 5),
       w=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_tangent_is_the_derivative_of_the_forward_step(S_m2, s, w, seed):
    S, m2 = S_m2
    rng = np.random.default_rng(seed)
    V, dV = _stack(rng, S, s, w), _stack(rng, S, s, w)
    W, dW = rng.standard_normal((w, w)), rng.standard_normal((w, w))
    b, db = rng.standard_normal(w), rng.standard_normal(w)
    a, h = ACT["tanh"], 0.6

    def fwd(e):
        G, out = np.empty((S, s, w)), np.empty((S, s, w))
        kp.forward_step(V + e * dV, W + e * dW, b + e * db, h, a, m2, G, out)
        return out

    G, out = np.empty((S, s, w)), np.empty((S, s, w))
    kp.forward_step(V, W, b, h, a, m2, G, out)
    dG, dout = np.empty((S, s, w)), np.empty((S, s, w))
    kp.tangent_step(V, dV, W, dW, db, G, h, a, m2, dG, dout, T=np.empty((S, s, w)))
    fd = (fwd(1e-6) - fwd(-1e-6)) / 2e-6
    np.testing.assert_allclose(dout, fd, rtol=1e-6, atol=1e-8)


@settings(max_examples=20)
@given(S_m2=st.sampled_from([(1, 0), (2, 0), (3, 1), (5, 2), (4, 1)]), s=st.integers(1, 5),
       w=st.integers(1, 6), skip=st.booleans(), seed=st.integers(0, 2**16))
def test_soadjoint_is_the_derivative_of_the_adjoint_step(S_m2, s, w, skip, seed):
    S, m2 = S_m2
    rng = np.random.default_rng(seed)
    V, dV = _stack(rng, S, s, w), _stack(rng, S, s, w)
    W, dW = rng.standard_normal((w, w)), rng.standard_normal((w, w))
    b, db = rng.standard_normal(w), rng.standard_normal(w)
    Lam, dLam = _stack(rng, S, s, w), _stack(rng, S, s, w)
    a, h = ACT["tanh"], 0.45

    def adj(e):
        G, out = np.empty((S, s, w)), np.empty((S, s, w))
        Ve, We = V + e * dV, W + e * dW
        kp.forward_step(Ve, We, b + e * db, h, a, m2, G, out, skip=skip)
        D, L = np.empty((S, s, w)), np.empty((S, s, w))
        gW, gb = np.empty((w, w)), np.empty(w)
        kp.adjoint_step(Lam + e * dLam, Ve, We, G, h, a, m2, D, L=L, gW=gW, gb=gb, skip=skip)
        return L, gW, gb

    G, out = np.empty((S, s, w)), np.empty((S, s, w))
    kp.forward_step(V, W, b, h, a, m2, G, out, skip=skip)
    dG, dout = np.empty((S, s, w)), np.empty((S, s, w))
    kp.tangent_step(V, dV, W, dW, db, G, h, a, m2, dG, dout, T=np.empty((S, s, w)), skip=skip)
    D, dD = np.empty((S, s, w)), np.empty((S, s, w))
    L, dL = np.empty((S, s, w)), np.empty((S, s, w))
    gW, gb = np.empty((w, w)), np.empty(w)
    dgW, dgb = np.empty((w, w)), np.empty(w)
    kp.soadjoint_step(Lam, dLam, V, dV, W, dW, G, dG, h, a, m2, D, dD, L=L, dL=dL, gW=gW,
                      gb=gb, dgW=dgW, dgb=dgb, tmp=np.empty((S, s, w)), tmpW=np.empty((w, w)),
                      skip=skip)
    L0, gW0, gb0 = adj(0.0)
    for got, ref in ((L, L0), (gW, gW0), (gb, gb0)):  # the same D, up to rounding
        np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-13)
    (Lp, gWp, gbp), (Lm, gWm, gbm) = adj(1e-6), adj(-1e-6)
    for got, fd in ((dL, (Lp - Lm) / 2e-6), (dgW, (gWp - gWm) / 2e-6), (dgb, (gbp - gbm) / 2e-6)):
        np.testing.assert_allclose(got, fd, rtol=1e-5, atol=1e-7 * (1 + np.abs(fd).max()))


@pytest.mark.parametrize("order", [0, 1, 2, 3, 4])
def test_activation_derivatives_of_tanh(order):
    z = np.linspace(-3, 3, 41)
    out = np.empty_like(z)
    kp.activation_derivatives(z, ACT["tanh"], order, out)
    if order == 0:
        np.testing.assert_allclose(out, np.tanh(z), rtol=1e-14, atol=1e-15)
        return
    lower = np.empty_like(z)
    e = 1e-5
    kp.activation_derivatives(z + e, ACT["tanh"], order - 1, lower)
    up = lower.copy()
    kp.activation_derivatives(z - e, ACT["tanh"], order - 1, lower)
    np.testing.assert_allclose(out, (up - lower) / (2 * e), rtol=1e-7, atol=1e-8)


def test_stream_layout_orders_second_derivative_directions_first():
    lay = StreamLayout(3, first=[2, 0, 1], second=[2])
    assert lay.first == (2, 0, 1) and lay.second == (2,)
    assert (lay.d(2), lay.d(0), lay.d(1), lay.dd(2)) == (1, 2, 3, 4)
    with pytest.raises(ValueError, match="first names coordinates"):
        StreamLayout(2, first=[3])
    with pytest.raises(KeyError, match="no second-derivative stream"):
        lay.dd(0)


def test_stream_activation_refusals():
    X = np.zeros((2, 2))
    net = ResNet(2, 3, 2, 1, task="regression", activation="relu")
    with pytest.raises(ValueError, match="relu"):
        output_streams(net, net.init(0), X, first=[0])
    net = ResNet(2, 3, 2, 1, task="regression", activation="smooth_relu")
    output_streams(net, net.init(0), X, first=[0])  # first derivatives: fine
    with pytest.raises(ValueError, match="smooth_relu"):
        output_streams(net, net.init(0), X, first=[0], second=[0])


@pytest.mark.parametrize("name", ["_forward_fuse_tanh", "_soadjoint_fuse_tanh",
                                  "_soadjoint_fuse_any"])
def test_float32_stream_kernels_stay_float32(name):
    """Typed constants: the float32 specialisations compute in float32 (no fpext)."""
    from numba import njit

    fresh = njit(error_model="numpy")(getattr(kp, name).py_func)  # uncached: inspectable
    rng = np.random.default_rng(0)
    A = [rng.standard_normal((5, 3, 4)).astype(np.float32) for _ in range(6)]
    b = rng.standard_normal(4).astype(np.float32)
    h = np.float32(0.5)
    if name == "_forward_fuse_tanh":
        fresh(A[0], A[1], b, h, 2, True, A[2])
    elif name == "_soadjoint_fuse_tanh":
        fresh(A[0], A[1], A[2], A[3], h, 2, A[4], A[5])
    else:
        fresh(A[0], A[1], A[2], A[3], h, ACT["smooth_relu"], 2, A[4], A[5])
    ir = fresh.inspect_llvm(fresh.signatures[0])
    assert "define" in ir and "fpext" not in ir


def test_float32_pinn_gradient_matches_float64():
    from mgnn.data.pde import burgers_1d
    from mgnn.pinn import PINNObjective

    p = burgers_1d()
    pts = p.sample(40, 12, seed=0)
    n64 = ResNet(2, 6, 3, 1, task="regression")
    n32 = ResNet(2, 6, 3, 1, task="regression", dtype=np.float32)
    o64 = PINNObjective.from_problem(n64, p, pts)
    o32 = PINNObjective.from_problem(n32, p, pts)
    th = n64.init(0)
    f64, g64 = o64.value_and_grad(th)
    f32, g32 = o32.value_and_grad(th.astype(np.float32))
    assert g32.dtype == np.float32 and o32.hessp(g32, g32).dtype == np.float32
    assert abs(f32 - f64) <= 1e-5 * f64
    assert np.linalg.norm(g32 - g64) <= 1e-5 * np.linalg.norm(g64)
