"""MG/OPT V-cycles: coherence of the tau-correction, one-level ladder, depth/width/both."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgnn.data import smooth_regression
from mgnn.multilevel import (
    Hierarchy,
    Level,
    TauCorrected,
    depth_hierarchy,
    mgopt,
    width_hierarchy,
)
from mgnn.multilevel.mgopt import _Smoother
from mgnn.nets import ResNet
from mgnn.objective import Objective
from mgnn.optim import minimize

DATA = smooth_regression(120, 60, seed=3)


def problem(width=8, depth=4, act="relu", tikhonov=0.0, seed=0):
    net = ResNet(2, width, depth, 1, activation=act, task="regression", T=1.0)
    obj = Objective(net, DATA.X_train, DATA.Y_train, tikhonov=tikhonov)
    theta = net.init(seed, "glorot")
    net.unpack(theta).b_open[...] = 0.1 * np.random.default_rng(seed).standard_normal(width)
    return net, obj, theta


def build(kind, obj, theta):
    if kind == "width":
        return width_hierarchy(obj, theta, 2)
    if kind == "depth":
        return depth_hierarchy(obj, 2, interpolation="linear")
    return width_hierarchy(obj, theta, 2, coarsen="both")


@settings(max_examples=20)
@given(st.sampled_from(["width", "depth", "both"]),
       st.sampled_from(["tanh", "smooth_relu", "relu"]),
       st.sampled_from(["full", "minibatch"]), st.integers(0, 2**32 - 1))
def test_tau_corrected_coarse_gradient_is_the_restricted_fine_gradient(kind, act, mode, seed):
    """grad f_c^tau(Pi x) = R grad f(x) exactly, and its directional derivatives (finite
    differences of the coarse model) equal those of f along the prolonged direction."""
    rng = np.random.default_rng(seed)
    net, obj, theta = problem(act=act, tikhonov=1e-3, seed=seed % 100)
    theta = theta + 0.1 * rng.standard_normal(theta.size)
    H = build(kind, obj, theta)
    T, obj_c = H[0].transfer, H[1].objective
    batch = None if mode == "full" else rng.choice(obj.n_samples, 30, replace=False)
    xc0 = T.project(theta)
    g = obj.grad(theta, batch)
    model = TauCorrected(obj_c, obj_c.grad(xc0, batch) - T.restrict(g))
    np.testing.assert_allclose(model.grad(xc0, batch), T.restrict(g), rtol=1e-10, atol=1e-12)
    v = rng.standard_normal(xc0.size)
    eps = 1e-6
    fd_c = (model.value(xc0 + eps * v, batch) - model.value(xc0 - eps * v, batch)) / (2 * eps)
    pv = T.prolong(v)
    fd_f = (obj.value(theta + eps * pv, batch) - obj.value(theta - eps * pv, batch)) / (2 * eps)
    if act == "relu":  # central differences are not derivatives across a kink of ReLU
        return
    assert fd_c == pytest.approx(np.dot(T.restrict(g), v), rel=1e-5, abs=1e-7)
    assert fd_c == pytest.approx(fd_f, rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("method,opts", [
    ("adam", {"lr": 0.01}),
    ("adam", {"lr": 0.01, "batch_size": 40, "rng": 7}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "batch_size": 40, "rng": 7}),
])
def test_one_level_mgopt_is_the_single_level_method(method, opts):
    """The debugging ladder: a one-level hierarchy is the smoother itself, bit for bit."""
    net, obj, theta = problem()
    H = Hierarchy([Level(net, obj)])
    res = mgopt(H, theta, method, opts, coarse_iters=7, cycles=5)
    ref = minimize(obj, theta, method, dict(opts, maxiter=35))
    np.testing.assert_array_equal(res.x, ref.x)
    assert res.work == pytest.approx(35 * (40 / 120 if "batch_size" in opts else 1.0))


@pytest.mark.parametrize("kind", ["width", "depth", "both"])
@pytest.mark.parametrize("tau", ["none", "full", "minibatch"])
def test_vcycles_train_on_every_kind_of_hierarchy(kind, tau):
    net, obj, theta = problem(width=8, depth=4)
    H = build(kind, obj, theta)
    res = mgopt(H, theta, "adam", {"lr": 0.01, "batch_size": 30}, pre=3, post=3, cycles=8,
                tau=tau, validation=(DATA.X_val, DATA.Y_val), rng=1)
    assert res.success and res.nit == 8
    h, lh = res.history, res.level_history
    assert len(h) == 9 and h["fun"][-1] < 0.7 * h["fun"][0]
    assert np.all(np.diff(h["work"]) > 0) and h["work"][-1] == pytest.approx(res.work)
    assert {"val_mean_error", "val_max_error", "alpha"} <= set(h.keys())
    assert np.all(h["val_max_error"] >= h["val_mean_error"])
    coarse = lh["level"] == 1
    assert coarse.sum() == 8 and np.isfinite(lh["val_max_error"][coarse]).all()
    if tau != "none":
        assert np.all(lh["tau_norm"][lh["level"] == 0][1:] > 0)
    # work: 6 fine steps of 30/120 per cycle plus coarse work and tau gradients
    w_fine = 8 * 6 * 30 / 120
    assert res.work > w_fine


def test_adam_state_moves_with_the_gradient_operators():
    net, obj, theta = problem()
    T = width_hierarchy(obj, theta, 2)[0].transfer
    sm = _Smoother("adam", {"lr": 0.01}, obj.n_samples, 0, 0, True)
    state = sm.new_state()
    sm.run(obj, theta, 3, state)
    c = sm.coarse_state(state, T)
    np.testing.assert_array_equal(c.m, T.restrict(state.m))
    np.testing.assert_allclose(c.v, T.restrict(np.sqrt(state.v)) ** 2)
    assert c.t == state.t == 3


def test_line_search_guards_against_a_bad_coarse_correction():
    """A coarse solve with a huge step spoils the correction: plain acceptance raises the
    loss, the line search shortens or rejects it (alpha < 1)."""
    net, obj, theta = problem()
    H = width_hierarchy(obj, theta, 2)
    opts = [{"lr": 0.01}, {"lr": 5.0}]
    plain = mgopt(H, theta, "adam", opts, pre=2, post=0, cycles=3, tau="full")
    ls = mgopt(H, theta, "adam", opts, pre=2, post=0, cycles=3, tau="full", line_search=True)
    alphas = ls.history["alpha"][1:]
    assert np.all(alphas < 1) and np.all(np.isin(alphas, 0.5 ** np.arange(6)) | (alphas == 0))
    assert ls.fun < plain.fun and ls.fun < ls.history["fun"][0]


def test_stops_callback_budget_rematch_and_other_smoothers():
    net, obj, theta = problem(width=8)
    H = width_hierarchy(obj, theta, 3)

    def cb(intermediate_result):
        if intermediate_result.nit == 2:
            raise StopIteration

    r = mgopt(H, theta, "adam", {"lr": 0.01}, cycles=10, callback=cb)
    assert r.status == 99 and r.nit == 2 and not r.success
    r = mgopt(H, theta, "adam", {"lr": 0.01}, cycles=100, max_work=5.0)
    assert r.success and r.work >= 5.0 and r.nit < 100 and "budget" in r.message
    r = mgopt(H, theta, "adam", {"lr": 0.01}, cycles=4, rematch_every=2)
    assert r.hierarchy is not H and r.hierarchy[0].objective is obj
    r = mgopt(H, theta, "lbfgs", {}, pre=3, post=3, cycles=3, tau="full")
    assert r.success and r.fun < r.history["fun"][0]
    r = mgopt(H, theta, "adam", {"lr": 0.01, "batch_size": 40, "rng": 0}, cycles=3,
              carry_state=False)
    assert r.success and r.fun < r.history["fun"][0]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_keeps_the_last_finite_iterate():
    net, obj, theta = problem()
    H = width_hierarchy(obj, theta, 2)
    r = mgopt(H, theta, "sgd", {"lr": 1e100}, cycles=20)
    assert r.status == 3 and "Diverged" in r.message and np.isfinite(r.x).all()


def test_bad_input():
    net, obj, theta = problem()
    H = width_hierarchy(obj, theta, 2)
    with pytest.raises(ValueError, match="tau"):
        mgopt(H, theta, tau="half")
    with pytest.raises(ValueError, match="no objective"):
        mgopt(width_hierarchy(net, theta, 2), theta)
    with pytest.raises(ValueError, match="rematch"):
        mgopt(depth_hierarchy(obj, 2), theta, rematch_every=2)
    with pytest.raises(ValueError, match="tau_batch_size"):
        mgopt(H, theta, smoother_options={"lr": 0.01}, tau="minibatch")
    with pytest.raises(ValueError, match="maxiter"):
        mgopt(H, theta, "lbfgs", {"maxiter": 3})
    with pytest.raises(TypeError, match="unknown option"):
        mgopt(H, theta, "adam", {"momentum": 0.9})
    with pytest.raises(ValueError, match="theta0"):
        mgopt(H, theta[:-1])
    with pytest.raises(ValueError, match="pre"):
        mgopt(H, theta, pre=-1)
