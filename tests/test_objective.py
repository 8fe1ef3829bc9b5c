"""Exact gradients and Hessian-vector products of the objective, checked for any drawn network."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mgnn.data import peaks, smooth_regression
from mgnn.nets import ResNet
from mgnn.objective import Objective
from mgnn.propagation import SerialPropagation


def make(width, depth, s, act, task, seed, tik=1e-3, smooth=1e-2, n_in=3, n_out=3):
    rng = np.random.default_rng(seed)
    net = ResNet(n_in, width, depth, n_out, T=1.5, activation=act, task=task)
    X = rng.standard_normal((s, n_in))
    Y = rng.integers(0, n_out, s) if task == "classification" else rng.standard_normal((s, n_out))
    obj = Objective(net, X, Y, tikhonov=tik, smoothness=smooth)
    theta = net.init(rng, "glorot") + 0.2 * rng.standard_normal(net.n_params)
    return net, obj, theta, rng


def away_from_kinks(net, obj, theta, act, margin=1e-4):
    """ReLU-type activations are not differentiable at their kinks: finite differences
    straddling one are meaningless, so such draws are rejected."""
    if act not in ("relu", "smooth_relu"):
        return True
    ws = net.workspace(obj.n_samples)
    net.output(theta, obj.X, ws, SerialPropagation())
    z = np.concatenate([ws.S.ravel(), ws.S_open.ravel()])
    kinks = [0.0] if act == "relu" else [-0.1, 0.1]
    return min(np.abs(z - k).min() for k in kinks) > margin


cases = st.tuples(
    st.integers(1, 20),  # width (both sides of the narrow-layer path of the kernels)
    st.integers(1, 6),  # depth
    st.integers(1, 25),  # samples
    st.sampled_from(["tanh", "relu", "smooth_relu", "identity"]),
    st.sampled_from(["classification", "regression"]),
    st.integers(0, 2**32 - 1),
)


@settings(max_examples=60)
@given(cases)
def test_gradient_matches_central_differences(case):
    width, depth, s, act, task, seed = case
    net, obj, theta, rng = make(width, depth, s, act, task, seed)
    assume(away_from_kinks(net, obj, theta, act))
    f, g = obj.value_and_grad(theta)
    assert f == pytest.approx(obj.value(theta), rel=1e-14, abs=1e-300)
    v = g + np.linalg.norm(g) / np.sqrt(g.size) * rng.standard_normal(g.size)
    v /= np.linalg.norm(v)
    e = 1e-5
    fd = (obj.value(theta + e * v) - obj.value(theta - e * v)) / (2 * e)
    exact = np.dot(g, v)
    assume(abs(exact) > 1e-8)
    assert abs(fd - exact) <= 1e-6 * abs(exact)


@settings(max_examples=60)
@given(cases)
def test_hessp_matches_differences_of_gradient_and_is_symmetric(case):
    width, depth, s, act, task, seed = case
    net, obj, theta, rng = make(width, depth, s, act, task, seed)
    assume(away_from_kinks(net, obj, theta, act, margin=1e-3))
    v, w = rng.standard_normal((2, net.n_params))
    Hv = obj.hessp(theta, v)
    e = 1e-6
    fd = (obj.grad(theta + e * v) - obj.grad(theta - e * v)) / (2 * e)
    assert np.linalg.norm(fd - Hv) <= 1e-5 * np.linalg.norm(Hv)
    Hw = obj.hessp(theta, w)
    assert abs(np.dot(Hv, w) - np.dot(v, Hw)) <= 1e-10 * np.linalg.norm(Hv) * np.linalg.norm(w)


def test_gradient_is_exact_on_the_identity_network():
    """With sigma = identity and no opening activation the network is linear in U_0."""
    rng = np.random.default_rng(0)
    net = ResNet(2, 3, 4, 1, activation="identity", task="regression", opening_activation=False)
    X = rng.standard_normal((10, 2))
    theta = net.init(rng)
    p = net.unpack(theta)
    # closed form of the output: products of (I + h W_n)
    M = np.eye(3)
    for n in range(net.depth):
        M = M @ (np.eye(3) + net.h * p.W[n]).T
        # U_{n+1} = U_n (I + h W_n)^T + h b_n: biases are zero after init
    out = (X @ p.W_open.T) @ M @ p.W_close.T + p.b_close
    np.testing.assert_allclose(net.forward(theta, X), out, rtol=1e-13)


def test_minibatch_equals_objective_on_the_subset():
    d = peaks(60, 5, seed=3)
    net = ResNet(2, 4, 5, 5, activation="smooth_relu")
    theta = net.init(1, "he")
    full = Objective(net, d.X_train, d.Y_train, tikhonov=1e-2, smoothness=1e-3)
    idx = np.array([3, 17, 4, 59, 0])
    sub = Objective(net, d.X_train[idx], d.Y_train[idx], tikhonov=1e-2, smoothness=1e-3)
    f1, g1 = full.value_and_grad(theta, batch=idx)
    f2, g2 = sub.value_and_grad(theta)
    assert f1 == f2
    np.testing.assert_array_equal(g1, g2)
    v = np.ones_like(theta)
    np.testing.assert_array_equal(full.hessp(theta, v, batch=idx), sub.hessp(theta, v))
    # a batch costs its share of the data
    assert full.counter.work == pytest.approx(5 / 60 * (1 + full.counter.cost["hessp"]))


def test_work_counter_counts_every_evaluation():
    d = smooth_regression(20, 5)
    net = ResNet(2, 3, 2, 1, task="regression")
    obj = Objective(net, d.X_train, d.Y_train)
    theta = net.init(0)
    obj.value(theta)
    obj.value_and_grad(theta)
    obj.grad(theta)
    obj.hessp(theta, theta)
    c = obj.counter
    assert (c.nfev, c.njev, c.nhev) == (3, 2, 1)
    assert c.work == pytest.approx(c.cost["value"] + 2 + c.cost["hessp"])


def test_regularisation_terms():
    """Tikhonov and the time-derivative term have the documented values."""
    rng = np.random.default_rng(4)
    net = ResNet(2, 3, 4, 2)
    X, y = rng.standard_normal((6, 2)), rng.integers(0, 2, 6)
    theta = net.init(rng) + rng.standard_normal(net.n_params)
    base = Objective(net, X, y).value(theta)
    tik = Objective(net, X, y, tikhonov=0.3).value(theta)
    assert tik - base == pytest.approx(0.15 * np.dot(theta, theta), rel=1e-12)
    sm = Objective(net, X, y, smoothness=0.2).value(theta)
    B = net.unpack(theta).blocks
    expected = 0.2 / (2 * net.h) * sum(np.sum((B[n + 1] - B[n]) ** 2) for n in range(3))
    assert sm - base == pytest.approx(expected, rel=1e-12)


def test_float32_objective_runs_and_agrees_with_float64():
    d = peaks(100, 5)
    net64 = ResNet(2, 8, 6, 5, activation="tanh")
    net32 = ResNet(2, 8, 6, 5, activation="tanh", dtype=np.float32)
    theta = net64.init(0)
    o64 = Objective(net64, d.X_train, d.Y_train)
    o32 = Objective(net32, d.X_train, d.Y_train)
    f64, g64 = o64.value_and_grad(theta)
    f32, g32 = o32.value_and_grad(theta.astype(np.float32))
    assert g32.dtype == np.float32
    assert f32 == pytest.approx(f64, rel=1e-5)
    np.testing.assert_allclose(g32, g64, rtol=1e-3, atol=1e-5)
    hv = o32.hessp(theta.astype(np.float32), np.ones(net32.n_params, np.float32))
    assert hv.dtype == np.float32 and np.isfinite(hv).all()


def test_accuracy_and_error():
    d = peaks(50, 20)
    net = ResNet(2, 4, 3, 5)
    obj = Objective(net, d.X_train, d.Y_train)
    theta = net.init(0)
    acc = obj.accuracy(theta, d.X_val, d.Y_val)
    assert acc == np.mean(net.predict(theta, d.X_val) == d.Y_val)
    with pytest.raises(ValueError, match="regression"):
        obj.error(theta)
    r = smooth_regression(30, 10)
    rnet = ResNet(2, 4, 3, 1, task="regression")
    robj = Objective(rnet, r.X_train, r.Y_train)
    mean, worst = robj.error(rnet.init(0), r.X_val, r.Y_val)
    assert 0 <= mean <= worst
