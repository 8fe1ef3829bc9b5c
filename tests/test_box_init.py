"""Box initialisation (Cyr et al. 2020): every hidden hyperplane cuts the box its
inputs live in, the linear part reaches exactly 1 at the box's far corner, and with
ReLU the states of inputs from the box stay inside the nested boxes."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mgnn.nets import ResNet
from mgnn.nets.resnet import box_layer
from mgnn.propagation import SerialPropagation


def _range_over_box(W, b, lo, hi):
    """Minimum and maximum of ``x -> W x + b`` over the box [lo, hi] (per neuron)."""
    a, c = W * lo, W * hi
    return b + np.minimum(a, c).sum(axis=1), b + np.maximum(a, c).sum(axis=1)


def _boxes(net):
    """The boxes of the residual layers: [0, (1 + h)^n]^width."""
    return [(1.0 + net.h) ** n for n in range(net.depth)]


@given(n_in=st.integers(1, 4), width=st.integers(1, 12), depth=st.integers(1, 5),
       T=st.floats(0.1, 5.0), seed=st.integers(0, 2**31),
       lo=st.floats(-10.0, 10.0), size=st.floats(1e-3, 100.0))
def test_every_hyperplane_cuts_its_box(n_in, width, depth, T, seed, lo, size):
    net = ResNet(n_in, width, depth, 1, T=T, activation="relu", task="regression")
    rng = np.random.default_rng(seed)
    lo_v = lo + rng.uniform(-1, 1, n_in)
    hi_v = lo_v + size * rng.uniform(0.5, 1.5, n_in)
    p = net.unpack(net.init(seed, "box", box=(lo_v, hi_v)))
    zmin, zmax = _range_over_box(p.W_open, p.b_open, lo_v, hi_v)
    np.testing.assert_allclose(zmax, 1.0, rtol=1e-8)  # the far corner gives exactly 1
    assert np.all(zmin <= 1e-9 * np.maximum(1.0, np.abs(zmin)))  # and the plane is crossed
    for n, m in enumerate(_boxes(net)):
        zmin, zmax = _range_over_box(p.W[n], p.b[n], np.zeros(width), np.full(width, m))
        np.testing.assert_allclose(zmax, 1.0, rtol=1e-8)
        assert np.all(zmin <= 1e-9 * np.maximum(1.0, np.abs(zmin)))


@given(n_in=st.integers(1, 3), width=st.integers(1, 10), depth=st.integers(1, 6),
       T=st.floats(0.1, 4.0), seed=st.integers(0, 2**31))
def test_relu_states_stay_in_the_nested_boxes(n_in, width, depth, T, seed):
    net = ResNet(n_in, width, depth, 1, T=T, activation="relu", task="regression")
    theta = net.init(seed, "box", box=(-2.0, 3.0))
    X = np.random.default_rng(seed).uniform(-2.0, 3.0, (200, n_in))
    ws = net.workspace(200)
    net.output(theta, X, ws, SerialPropagation())
    assert ws.U[0].min() >= 0.0 and ws.U[0].max() <= 1.0 + 1e-12
    for n in range(1, depth + 1):
        assert ws.U[n].min() >= 0.0
        # an update adds at most h per component: inside [0, 1 + n h] c [0, (1 + h)^n]
        assert ws.U[n].max() <= 1.0 + n * net.h + 1e-12


def test_box_layer_formula():
    rng = np.random.default_rng(0)
    lo, hi = np.array([-1.0, 2.0]), np.array([1.0, 6.0])
    W, b = box_layer(rng, 50, lo, hi)
    # recover k n and p: W (hi - lo) = k n, ||n|| = 1, k > 0
    kn = W * (hi - lo)
    k = np.linalg.norm(kn, axis=1)
    n = kn / k[:, None]
    assert np.all(k > 0)
    corner = lo + (hi - lo) * (n > 0)  # p_max mapped back to the input box
    np.testing.assert_allclose(np.einsum("ij,ij->i", W, corner) + b, 1.0, rtol=1e-12)


def test_seeded_float32_and_glorot_unchanged():
    net = ResNet(2, 6, 3, 2, activation="relu", task="regression")
    a = net.init(np.random.default_rng(5), "box", box=(0.0, 2.0))
    b = net.init(np.random.default_rng(5), "box", box=(0.0, 2.0))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, net.init(6, "box", box=(0.0, 2.0)))
    p = net.unpack(a)
    assert np.all(p.b_close == 0) and np.any(p.b != 0) and np.any(p.b_open != 0)
    assert np.abs(p.W_close).max() <= np.sqrt(6 / 8)  # the closing layer is Glorot
    net32 = ResNet(2, 6, 3, 2, activation="relu", task="regression", dtype=np.float32)
    t32 = net32.init(5, "box", box=(0.0, 2.0))
    assert t32.dtype == np.float32
    np.testing.assert_allclose(t32, net.init(5, "box", box=(0.0, 2.0)), rtol=1e-6)
    # the default box is the unit box
    np.testing.assert_array_equal(net.init(1, "box"), net.init(1, "box", box=(0.0, 1.0)))
    np.testing.assert_array_equal(net.init(1, "box", box=(0.0, [1.0, 1.0])),
                                  net.init(1, "box", box=([0.0, 0.0], 1.0)))


def test_bad_box():
    net = ResNet(2, 4, 2, 1, task="regression")
    with pytest.raises(ValueError, match="box has no effect with scheme='glorot'"):
        net.init(0, "glorot", box=(0, 1))
    with pytest.raises(ValueError, match="lo < hi"):
        net.init(0, "box", box=(1.0, 1.0))
    with pytest.raises(ValueError, match="box hi must have shape"):
        net.init(0, "box", box=(0.0, [1.0, 2.0, 3.0]))
    with pytest.raises(TypeError, match="box must be a pair"):
        net.init(0, "box", box=[0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="box lo contains NaN"):
        net.init(0, "box", box=(np.nan, 1.0))
    with pytest.raises(ValueError, match="scheme"):
        net.init(0, "boxes")
