"""Depth hierarchies: transfer identities, interpolation order, coherence of R with gradients."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgnn.data import peaks
from mgnn.multilevel import DepthTransfer, depth_hierarchy, max_depth_levels
from mgnn.nets import ResNet
from mgnn.objective import Objective

hier = st.tuples(
    st.integers(1, 4),  # width
    st.integers(1, 4),  # coarsest depth
    st.integers(2, 3),  # factor
    st.integers(2, 3),  # levels
    st.sampled_from(["constant", "linear"]),
    st.integers(0, 2**32 - 1),
)


@settings(max_examples=40)
@given(hier)
def test_projection_inverts_prolongation_and_R_is_P_transpose(case):
    width, nc, factor, levels, interp, seed = case
    net = ResNet(2, width, nc * factor ** (levels - 1), 3)
    H = depth_hierarchy(net, levels, factor=factor, interpolation=interp)
    rng = np.random.default_rng(seed)
    for l in range(levels - 1):
        lv = H[l]
        xc = rng.standard_normal(H[l + 1].net.n_params)
        yf = rng.standard_normal(lv.net.n_params)
        np.testing.assert_array_equal(lv.Pi(lv.P(xc)), xc)
        assert np.dot(lv.P(xc), yf) == pytest.approx(np.dot(xc, lv.R(yf)), rel=1e-12, abs=1e-12)
        P, R, Pi = lv.transfer.as_linear_operators()
        np.testing.assert_allclose(P.T @ yf, lv.R(yf), rtol=1e-14)
        np.testing.assert_array_equal(Pi @ (P @ xc), xc)


def smooth_weights(net, t_shift=0.0):
    """theta with residual blocks sampled from smooth functions of time at t_n = n h."""
    theta = np.zeros(net.n_params)
    p = net.unpack(theta)
    rng = np.random.default_rng(0)
    A, B, C = rng.standard_normal((3, net.width, net.width))
    a, b = rng.standard_normal((2, net.width))
    t = np.arange(net.depth) * net.h
    p.W[...] = np.sin(3 * t)[:, None, None] * A + np.cos(2 * t)[:, None, None] * B + C
    p.b[...] = np.sin(t)[:, None] * a + t[:, None] * b
    p.W_open[...] = rng.standard_normal(p.W_open.shape)
    p.W_close[...] = rng.standard_normal(p.W_close.shape)
    return theta


@pytest.mark.parametrize("interp,order", [("constant", 1), ("linear", 2)])
def test_prolonged_weights_reproduce_the_trajectory_to_order(interp, order):
    """Fine network with prolonged coarse weights vs fine network with the exact weight
    function: the final-state difference is O(h) for constant, O(h^2) for linear."""
    X = np.random.default_rng(1).uniform(-1, 1, (20, 2))
    errs = []
    for nc in (16, 32, 64, 128, 256):
        fine = ResNet(2, 3, 2 * nc, 2, T=2.0, activation="tanh")
        coarse = fine.with_depth(nc)
        tr = DepthTransfer(fine, coarse, interp)
        out_p = fine.forward(tr.prolong(smooth_weights(coarse)), X)
        out_e = fine.forward(smooth_weights(fine), X)
        errs.append(np.abs(out_p - out_e).max())
    rates = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert np.all(np.abs(rates[-2:] - order) < 0.15), (errs, rates)


def test_restriction_is_exactly_coherent_with_the_composed_gradient():
    """grad_c (f o P)(x_c) = R grad f(P x_c): first-order coherence, exact."""
    d = peaks(40, 5)
    net = ResNet(2, 3, 8, 5, activation="tanh")
    obj = Objective(net, d.X_train, d.Y_train, tikhonov=1e-3, smoothness=1e-3)
    H = depth_hierarchy(obj, 2, interpolation="linear")
    rng = np.random.default_rng(2)
    xc = H[1].net.init(rng) + 0.3 * rng.standard_normal(H[1].net.n_params)
    g = H[0].R(obj.grad(H[0].P(xc)))
    e = 1e-6
    for _ in range(3):
        v = rng.standard_normal(xc.size)
        fd = (obj.value(H[0].P(xc + e * v)) - obj.value(H[0].P(xc - e * v))) / (2 * e)
        assert fd == pytest.approx(np.dot(g, v), rel=1e-6)


def test_coarse_gradient_approaches_restricted_fine_gradient():
    """The coarse objective's gradient at x_c differs from R grad f(P x_c) by O(h)."""
    d = peaks(50, 5)
    gaps = []
    for nc in (8, 16, 32, 64):
        net = ResNet(2, 3, 2 * nc, 5, T=2.0, activation="tanh")
        obj = Objective(net, d.X_train, d.Y_train)
        H = depth_hierarchy(obj, 2, interpolation="constant")
        xc = smooth_weights(H[1].net)
        gc = H[1].objective.grad(xc)
        rg = H[0].R(obj.grad(H[0].P(xc)))
        gaps.append(np.linalg.norm(gc - rg) / np.linalg.norm(gc))
    assert gaps[-1] < gaps[0] / 4
    assert all(a > b for a, b in zip(gaps, gaps[1:], strict=False))


def test_levels_share_data_and_charge_work_in_fine_units():
    d = peaks(30, 5)
    net = ResNet(2, 4, 16, 5)
    obj = Objective(net, d.X_train, d.Y_train, tikhonov=1e-4)
    H = depth_hierarchy(obj, 3)
    assert [lv.net.depth for lv in H] == [16, 8, 4]
    assert H[2].objective.X is obj.X and H[2].objective.tikhonov == 1e-4
    x2 = H[2].net.init(0)
    H[2].objective.value_and_grad(x2)
    assert H[2].objective.counter.work == pytest.approx(net.with_depth(4).flops(1) / net.flops(1))
    assert H.operator_complexity() > 1
    assert "work (fine = 1)" in repr(H)


def test_impossible_level_counts_raise():
    net = ResNet(2, 4, 12, 5)
    assert max_depth_levels(12) == 3
    with pytest.raises(ValueError, match="levels=4 with factor=2 needs a depth divisible by 8"):
        depth_hierarchy(net, 4)
    with pytest.raises(ValueError, match="factor must be >= 2"):
        depth_hierarchy(net, 2, factor=1)
    with pytest.raises(ValueError, match="unknown interpolation 'cubic'"):
        depth_hierarchy(net, 2, interpolation="cubic")
    H = depth_hierarchy(net, 2)
    with pytest.raises(ValueError, match=r"x_coarse must have shape"):
        H[0].P(np.zeros(3))
