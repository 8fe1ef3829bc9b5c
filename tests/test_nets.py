"""The ResNet as an explicit parameter object: layout, views, initialisation, forward."""

import numpy as np
import pytest

from mgnn.nets import ResNet


def numpy_forward(net, theta, X):
    p = net.unpack(theta)
    sig = {"tanh": np.tanh, "relu": lambda z: np.maximum(z, 0), "identity": lambda z: z}
    s = sig[net.activation]
    U = s(X @ p.W_open.T + p.b_open) if net.opening_activation else X @ p.W_open.T + p.b_open
    for n in range(net.depth):
        U = U + net.h * s(U @ p.W[n].T + p.b[n])
    return U @ p.W_close.T + p.b_close


@pytest.mark.parametrize("act", ["tanh", "relu", "identity"])
def test_forward_matches_numpy_reference(act):
    net = ResNet(3, 5, 7, 2, T=2.0, activation=act)
    rng = np.random.default_rng(0)
    theta = rng.standard_normal(net.n_params) * 0.5
    X = rng.standard_normal((13, 3))
    np.testing.assert_allclose(net.forward(theta, X), numpy_forward(net, theta, X), rtol=1e-12)


def test_layout_and_zero_copy_views():
    net = ResNet(2, 3, 4, 5)
    assert net.n_params == (3 * 2 + 3) + 4 * (9 + 3) + (5 * 3 + 5)
    theta = np.arange(net.n_params, dtype=float)
    p = net.unpack(theta)
    for view in (p.W_open, p.b_open, p.W, p.b, p.W_close, p.b_close, p.blocks):
        assert np.shares_memory(view, theta)
    assert p.W[0].flags.c_contiguous
    # layer n's weights and bias are one contiguous slice of theta
    sl = net.layer_slice(1, 3)
    np.testing.assert_array_equal(theta[sl], np.concatenate(
        [p.W[1].ravel(), p.b[1], p.W[2].ravel(), p.b[2]]))
    p.W[2][0, 0] = -1.0
    assert theta[net.layer_slice(2).start] == -1.0
    assert p.b_close[-1] == net.n_params - 1


def test_h_is_T_over_depth_and_with_depth_keeps_T():
    net = ResNet(2, 4, 16, 3, T=5.0)
    assert net.h == 5.0 / 16
    coarse = net.with_depth(8)
    assert coarse.T == 5.0 and coarse.h == 2 * net.h and coarse.width == 4


@pytest.mark.parametrize("scheme", ["glorot", "he", "layer_parallel"])
def test_init_schemes(scheme):
    net = ResNet(2, 16, 8, 5)
    a = net.init(np.random.default_rng(3), scheme, inner_scale=1e-6)
    b = net.init(np.random.default_rng(3), scheme, inner_scale=1e-6)
    np.testing.assert_array_equal(a, b)  # seeded
    p = net.unpack(a)
    assert np.all(p.b == 0) and np.all(p.b_open == 0) and np.all(p.b_close == 0)
    if scheme == "layer_parallel":
        assert 0 < np.abs(p.W).max() <= 1e-6
        assert np.abs(p.W_open).max() > 1e-2
    elif scheme == "glorot":
        assert np.abs(p.W).max() <= np.sqrt(6 / 32)
    assert net.init(0, "layer_parallel").dtype == np.float64
    assert np.all(net.unpack(net.init(0, "layer_parallel")).W == 0)


def test_float32_network():
    net = ResNet(2, 4, 3, 2, dtype=np.float32)
    theta = net.init(0)
    assert theta.dtype == np.float32
    out = net.forward(theta, np.ones((3, 2), np.float32))
    assert out.dtype == np.float32


def test_per_layer_step_is_the_sweep():
    net = ResNet(2, 4, 5, 3, activation="tanh")
    rng = np.random.default_rng(1)
    theta = net.init(rng, "he")
    X = rng.standard_normal((6, 2))
    ws = net.workspace(6)
    from mgnn.propagation import SerialPropagation

    net.output(theta, X, ws, SerialPropagation())
    u = ws.U[0].copy()
    out = np.empty_like(u)
    for n in range(net.depth):
        net.step(n, u, out, theta)
        u, out = out, u
    np.testing.assert_array_equal(u, ws.U[-1])
    assert "Workspace" not in repr(net)
