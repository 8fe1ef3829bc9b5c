"""ConvResNet hierarchies: channel coarsening (transfer identities, exactness, solvers on
it) and the first-order coherence of MG/OPT's coarse model on depth and channel
hierarchies."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgnn.multilevel import TauCorrected, depth_hierarchy, mgopt, rmtr, width_hierarchy
from mgnn.multilevel.width import WidthTransfer, state_descriptors
from mgnn.nets import ConvResNet, ResNet
from mgnn.objective import Objective

FAST = settings(max_examples=15, deadline=None)


def _net(channels, pooling, act="relu", depth=2, shape=(3, 4)):
    return ConvResNet(shape, channels, depth, 3, T=1.0, activation=act, pooling=pooling)


@FAST
@given(st.integers(2, 6), st.sampled_from(["average", "flatten"]),
       st.sampled_from([1, 2]), st.integers(0, 2**32 - 1))
def test_channel_transfer_identities(channels, pooling, c_in, seed):
    """Pi P = I, R = P^T (<R g, y> = <g, P y>), and the prolonged network computes the
    coarse network's outputs exactly for ReLU and identity (positively homogeneous)."""
    rng = np.random.default_rng(seed)
    net = ConvResNet((3, 4, c_in), channels, 2, 3, activation="relu", pooling=pooling)
    theta = net.init(rng, "he") + 0.1 * rng.standard_normal(net.n_params)
    H = width_hierarchy(net, theta, 2)
    T = H[0].transfer
    assert isinstance(T, WidthTransfer) and T.conv
    assert T.coarse.channels == (channels + 1) // 2 and T.coarse.width == 12 * T.coarse.channels
    xc = rng.standard_normal(T.n_coarse)
    g = rng.standard_normal(T.n_fine)
    np.testing.assert_allclose(T.project(T.prolong(xc)), xc, rtol=0, atol=1e-13)
    assert np.dot(T.restrict(g), xc) == pytest.approx(np.dot(g, T.prolong(xc)), rel=1e-12,
                                                      abs=1e-12)
    X = rng.standard_normal((5, net.n_in))
    np.testing.assert_allclose(net.forward(T.prolong(xc), X), T.coarse.forward(xc, X),
                               rtol=1e-11, atol=1e-11)


def test_channel_pairs_of_collinear_channels_are_reproduced_exactly():
    """A fine network whose channels come in positively collinear pairs (channel j+c is
    a multiple of channel j in every state-writing layer, incoming and outgoing weights
    split accordingly) is found by the matching and reproduced exactly by Pi theta."""
    rng = np.random.default_rng(1)
    coarse = _net(3, "flatten")
    xc = coarse.init(rng, "he")
    xc[coarse.n_open:] += 0.3 * rng.standard_normal(coarse.n_params - coarse.n_open)
    fine = coarse.with_channels(6)
    s = np.array([0.3, 0.6, 0.5, 0.7, 0.4, 0.5])  # shares of channel j and j + 3
    T0 = WidthTransfer(fine, coarse, np.arange(6) % 3, s)
    theta = T0.prolong(xc)
    H = width_hierarchy(fine, theta, 2)
    T = H[0].transfer
    assert sorted(map(tuple, H.matchings[0].pairs)) == [(0, 3), (1, 4), (2, 5)]
    np.testing.assert_allclose(T.shares, s, rtol=1e-12)
    X = rng.standard_normal((4, fine.n_in))
    np.testing.assert_allclose(T.coarse.forward(T.project(theta), X), fine.forward(theta, X),
                               rtol=1e-11, atol=1e-12)
    assert state_descriptors(fine, theta).shape == (6, (9 + 1) + 2 * (9 * 6 + 1))


def test_mgopt_rmtr_and_save_load_on_a_channel_hierarchy(tmp_path):
    from mgnn.runs import load_network, save_network

    rng = np.random.default_rng(0)
    net = _net(4, "average", act="tanh", depth=2)
    X = rng.standard_normal((10, net.n_in))
    obj = Objective(net, X, rng.integers(0, 3, 10), tikhonov=1e-4)
    theta0 = net.init(0, "he")
    f0 = obj.value(theta0)
    H = width_hierarchy(obj, theta0, 2)
    res = mgopt(H, theta0, "adam", {"lr": 0.01}, pre=2, post=2, cycles=2)
    assert res.success and res.fun < f0
    res = rmtr(H, theta0, options={"maxiter": 3})
    assert res.fun < f0
    Hb = width_hierarchy(obj, theta0, 2, coarsen="both")  # depth, then channels
    assert [(lv.net.depth, lv.net.channels) for lv in Hb.levels] == [(2, 4), (1, 2)]
    path = tmp_path / "conv_h.npz"
    save_network(path, net, theta0, hierarchy=Hb)
    saved = load_network(path)
    theta1, H1 = saved.theta, saved.hierarchy
    xc = rng.standard_normal(Hb[0].transfer.n_coarse)
    np.testing.assert_array_equal(H1[0].transfer.prolong(xc), Hb[0].transfer.prolong(xc))
    np.testing.assert_array_equal(theta1, theta0)


@FAST
@given(st.sampled_from(["depth", "channels", "both"]), st.sampled_from(["average", "flatten"]),
       st.sampled_from(["tanh", "smooth_relu"]), st.integers(0, 2**32 - 1))
def test_tau_corrected_conv_coarse_gradient_is_the_restricted_fine_gradient(kind, pooling, act,
                                                                         seed):
    """First-order coherence of MG/OPT on conv hierarchies: grad f_c^tau(Pi x) =
    R grad f(x), and the coarse model's directional derivative along v equals the fine
    objective's along P v (finite differences on smooth activations)."""
    rng = np.random.default_rng(seed)
    net = _net(4, pooling, act=act, depth=4)
    X = rng.standard_normal((6, net.n_in))
    obj = Objective(net, X, rng.integers(0, 3, 6), tikhonov=1e-3)
    theta = net.init(rng, "he") + 0.1 * rng.standard_normal(net.n_params)
    H = (depth_hierarchy(obj, 2, interpolation="linear") if kind == "depth" else
         width_hierarchy(obj, theta, 2, coarsen="width" if kind == "channels" else "both"))
    T, obj_c = H[0].transfer, H[1].objective
    xc0 = T.project(theta)
    g = obj.grad(theta)
    model = TauCorrected(obj_c, obj_c.grad(xc0) - T.restrict(g))
    np.testing.assert_allclose(model.grad(xc0), T.restrict(g), rtol=1e-10, atol=1e-12)
    v = rng.standard_normal(xc0.size)
    eps = 1e-6
    fd_c = (model.value(xc0 + eps * v) - model.value(xc0 - eps * v)) / (2 * eps)
    pv = T.prolong(v)
    fd_f = (obj.value(theta + eps * pv) - obj.value(theta - eps * pv)) / (2 * eps)
    assert fd_c == pytest.approx(np.dot(T.restrict(g), v), rel=1e-5, abs=1e-7)
    assert fd_c == pytest.approx(fd_f, rel=1e-5, abs=1e-7)


def test_mgopt_conv_without_line_search_is_the_unbounded_coarse_model():
    """MG/OPT without line search on ConvResNet((3,3),2,4,2), 8 samples, L-BFGS: the loss
    grows (0.71 -> 1.76 -> 231) not by a transfer defect (coherence is exact, above)
    but because the tau-corrected coarse model of a tanh network is bounded below only
    by the Tikhonov term: its loss saturates in the kernels while -<tau, y> decreases
    linearly, so 20 coarse L-BFGS steps run to |x_c| ~ 1e3 and the unsafeguarded
    correction is accepted. Two coarse steps, a stronger Tikhonov term, or the line
    search each make the same cycles descend."""
    rng = np.random.default_rng(0)
    net = ConvResNet((3, 3), 2, 4, 2)
    X = rng.standard_normal((8, 9))
    y = (X[:, 0] > 0).astype(int)
    obj = Objective(net, X, y, tikhonov=1e-4)
    theta0 = net.init(0)
    H = depth_hierarchy(obj, 2)
    f = mgopt(H, theta0, "lbfgs", {}, cycles=2).history["fun"]
    assert f[-1] > 10 * f[0]  # the documented growth (not a crash, not a NaN)
    for kw in (dict(coarse_iters=2), dict(line_search=True)):
        f = mgopt(H, theta0, "lbfgs", {}, cycles=2, **kw).history["fun"]
        assert f[-1] < 0.05 * f[0]
    o2 = Objective(net, X, y, tikhonov=1e-2)
    f = mgopt(depth_hierarchy(o2, 2), theta0, "lbfgs", {}, cycles=2).history["fun"]
    assert f[-1] < 0.5 * f[0]


def test_channel_hierarchy_bad_input():
    net = _net(2, "average")
    theta = net.init(0)
    with pytest.raises(ValueError, match="1 channel"):
        width_hierarchy(net, theta, 3)
    with pytest.raises(ValueError, match="same kind"):
        WidthTransfer(net, ResNet(12, 1, 2, 3), [0, 0], [0.5, 0.5])
    with pytest.raises(ValueError, match="differ only in width"):
        WidthTransfer(net, _net(1, "flatten"), [0, 0], [0.5, 0.5])
