"""RMTR's newer parts: the objective-function-free variant (one level is AdaGrad; coarse
corrections stay in their max-norm box), the dynamic sample size (norm test, unbiased
variance estimate, halves that add up to the batch), F-cycles, the hybrid coarse model,
separate correction radii, and resuming all of them bit for bit."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgnn.data import peaks, smooth_regression
from mgnn.multilevel import Hierarchy, Level, SampleSize, depth_hierarchy, rmtr
from mgnn.multilevel.off import AdaGradState, ray_to_box
from mgnn.nets import ResNet
from mgnn.objective import Objective
from mgnn.optim import FunctionObjective
from mgnn.runs import Checkpointer
from mgnn.vectorspace import EuclideanSpace

REG = smooth_regression(96, 10, seed=1)


def reg_objective(depth=8, width=3):
    net = ResNet(2, width, depth, 1, T=2.0, task="regression")
    return Objective(net, REG.X_train, REG.Y_train, tikhonov=1e-5, smoothness=1e-3)


# ---------------------------------------------------------------------------
# variant 'off'
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [None, 24])
def test_one_level_off_is_adagrad(batch):
    """One level: every cycle is ``coarse_iters`` AdaGrad steps on the cycle's batch."""
    obj = reg_objective()
    theta0 = obj.net.init(0, "layer_parallel", inner_scale=0.1)
    H = Hierarchy([Level(obj.net, obj)])
    opts = {"variant": "off", "lr": 0.05, "maxiter": 12, "coarse_iters": 2, "gtol": 0.0,
            "batch_size": batch}
    if batch is not None:
        opts.update(rng=4, growth_rule="fixed")
    res = rmtr(H, theta0, opts)
    # the same by hand
    sampler = SampleSize(obj.n_samples, batch, "fixed", rng=4)
    x, v = theta0.copy(), np.zeros_like(theta0)
    for _ in range(12):
        b = sampler.draw()
        for _ in range(2):
            g = obj.grad(x, batch=b)
            v += g * g
            x = x - 0.05 * g / (np.sqrt(v) + 1e-8)
    np.testing.assert_array_equal(res.x, x)
    assert res.variant == "off" and res.statistics[0].tr_steps == 24


def test_ray_to_box_is_the_largest_feasible_step():
    sp = EuclideanSpace()
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = rng.uniform(-1, 1, 6)
        b = rng.standard_normal(6) * rng.uniform(0.1, 5)
        t = ray_to_box(sp, a, b, 1.0)
        assert 0.0 <= t <= 1.0
        assert np.abs(a + t * b).max() <= 1.0 + 1e-12
        if t < 1.0:  # no longer step is feasible
            assert np.abs(a + (t + 1e-9) * b).max() > 1.0


def test_adagrad_state_moves_with_the_restriction():
    st_ = AdaGradState(0.1, 0.0)
    st_.step(np.array([1.0, 2.0, 3.0, 4.0]))
    R = lambda g: g.reshape(2, 2).sum(axis=1)  # noqa: E731
    c = st_.transferred(R)
    np.testing.assert_allclose(c.v, [3.0 ** 2, 7.0 ** 2])
    assert c.k == st_.k == 1 and c.radius(3.0) == pytest.approx(0.3)


@settings(max_examples=8, deadline=None)
@given(st.sampled_from("VWF"), st.integers(2, 3), st.floats(0.5, 20.0),
       st.integers(0, 2**31 - 1))
def test_off_corrections_stay_in_their_box(cycle, levels, box, seed):
    """Every prolonged coarse displacement of a correction lies in the max-norm ball of
    radius ``box_factor * lr / sqrt(k)`` of the level it corrects."""
    import mgnn.multilevel.off as mod

    obj = reg_objective(depth=8)
    H = depth_hierarchy(obj, levels, interpolation="linear")
    seen = []
    orig = mod.OFFEngine._correction

    def spy(self, l, x, g, state, cons, x_entry, kind):
        bound = state.radius(self.box_factor)
        out = orig(self, l, x, g, state, cons, x_entry, kind)
        seen.append((float(np.abs(out[0] - x).max()), bound))
        return out

    mod.OFFEngine._correction = spy
    try:
        res = rmtr(H, obj.net.init(seed % 1000), {"variant": "off", "lr": 0.2, "maxiter": 5,
                                                 "cycle": cycle, "box_factor": box,
                                                 "coarse_iters": 6, "rng": seed})
    finally:
        mod.OFFEngine._correction = orig
    assert seen and all(d <= b * (1 + 1e-12) for d, b in seen)
    assert np.isfinite(res.fun)


def test_off_trains_a_deep_network_with_coarse_corrections():
    obj = reg_objective(depth=16)
    theta0 = obj.net.init(0, "layer_parallel", inner_scale=0.1)
    H = depth_hierarchy(obj, 3)
    res = rmtr(H, theta0, {"variant": "off", "lr": 0.1, "maxiter": 30, "coarse_iters": 10,
                           "rng": 0})
    assert res.status == 1 and res.fun < 0.5 * obj.value(theta0)  # status 1: maxiter
    assert res.statistics[0].coarse_accepted > 0 and res.statistics[2].tr_steps > 0
    assert sum(res.work_per_level) == pytest.approx(res.work, rel=1e-12)


# ---------------------------------------------------------------------------
# dynamic sample size
# ---------------------------------------------------------------------------
def test_norm_test_variance_estimate_is_unbiased():
    """Per-sample gradients g_i = c_i: the estimate from the halves, averaged over many
    draws, is the variance of the batch mean drawn without replacement."""
    rng = np.random.default_rng(0)
    n, b = 200, 40
    C = rng.standard_normal((n, 5)) + 3.0

    def fg(idx):
        idx = np.arange(n) if idx is None else idx
        return 0.0, C[idx].mean(axis=0)

    s = SampleSize(n, b, "norm-test", rng=1)
    est = []
    for _ in range(3000):
        s.draw()
        s.evaluate(fg)
        est.append(s._var)
    S = np.cov(C.T, ddof=1)
    exact = np.trace(S) / b * (n - b) / (n - 1)
    assert np.mean(est) == pytest.approx(exact, rel=0.05)


def test_halves_add_up_to_the_batch_and_the_rule_grows():
    obj = reg_objective()
    theta = obj.net.init(0)
    s = SampleSize(obj.n_samples, 31, "norm-test", growth=2.0, theta=1e-3, rng=0)
    b = s.draw()
    f, g = s.evaluate(lambda idx: obj.value_and_grad(theta, batch=idx))
    f1, g1 = obj.value_and_grad(theta, batch=b)
    assert f == pytest.approx(f1, rel=1e-13)
    np.testing.assert_allclose(g, g1, rtol=1e-12, atol=1e-15)
    assert s.grow_after(f, g) and s.size == 62  # theta tiny: the test fails, size doubles
    loose = SampleSize(obj.n_samples, 31, "norm-test", theta=1e6, rng=0)
    loose.draw()
    assert not loose.grow_after(*loose.evaluate(lambda idx: obj.value_and_grad(theta, idx)))
    with pytest.raises(ValueError, match="growth_rule"):
        SampleSize(10, 2, "sometimes")


def test_default_path_is_stochastic_and_reaches_all_data():
    obj = reg_objective()
    H = depth_hierarchy(obj, 2)
    res = rmtr(H, obj.net.init(0), {"maxiter": 40, "rng": 0, "growth_theta": 0.05})
    sizes = res.history["batch_size"]
    assert sizes[0] == 32 and np.all(np.diff(sizes) >= 0) and sizes[-1] == obj.n_samples
    assert np.isfinite(res.history["grad_noise"][1:]).any()
    assert res.fun == pytest.approx(obj.value(res.x), rel=1e-13)


# ---------------------------------------------------------------------------
# F-cycles, hybrid model, separate radii
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["monotone", "off"])
def test_cycle_kinds_visit_the_levels_as_multigrid_does(variant):
    obj = reg_objective(depth=8)
    H = depth_hierarchy(obj, 3)
    extra = {"lr": 0.05} if variant == "off" else {"initial_radius": 10.0,
                                                   "coarse_radius": "shared"}
    visits = {}
    for cycle in "VWF":
        res = rmtr(H, obj.net.init(0), dict(extra, variant=variant, maxiter=2, cycle=cycle,
                                            kappa_g=0.0, batch_size=None))
        s = res.statistics
        # a correction skipped on level 1 (its displacement filled the region) is one
        # visit of the coarsest level less
        visits[cycle] = [s[0].visits, s[1].visits, s[2].visits + s[1].coarse_skipped]
        assert s[0].coarse_skipped == 0
    assert visits == {"V": [2, 2, 2], "W": [2, 4, 8], "F": [2, 4, 6]}


def test_hybrid_model_has_galerkin_curvature():
    """With the hybrid model a coarse level's curvature is R B P of the finer level's."""
    import mgnn.multilevel.recursive_trust_region as mod

    obj = reg_objective(depth=8)
    H = depth_hierarchy(obj, 2)
    theta0 = obj.net.init(0)
    seen = []
    orig = mod.MonotoneEngine._hess

    def spy(self, l, model, x):
        h = orig(self, l, model, x)
        if l == 1:
            v = np.random.default_rng(1).standard_normal(x.size)
            fine = orig(self, 0, self._fine_model, self._fine_x)
            seen.append(np.allclose(h(v), H[0].R(fine(H[0].P(v))), rtol=1e-12, atol=1e-14))
        return h

    orig_cc = mod.MonotoneEngine._coarse_correction

    def cc(self, l, model, x, *a):
        self._fine_model, self._fine_x = model, x
        return orig_cc(self, l, model, x, *a)

    mod.MonotoneEngine._hess, mod.MonotoneEngine._coarse_correction = spy, cc
    try:
        res = rmtr(H, theta0, {"model": "hybrid", "maxiter": 3, "batch_size": None,
                               "kappa_g": 0.0})
    finally:
        mod.MonotoneEngine._hess, mod.MonotoneEngine._coarse_correction = orig, orig_cc
    assert seen and all(seen)
    assert np.all(np.diff(res.history["fun"]) <= 0)
    with pytest.raises(ValueError, match="coarse_hessian has no effect with model='hybrid'"):
        rmtr(H, theta0, {"model": "hybrid", "coarse_hessian": "lsr1"})


def test_separate_radius_grows_with_a_good_coarse_model():
    """A quadratic whose coarse level is exact (P spans the minimizer's directions): the
    corrections are very successful and their radius doubles past the smoothing radius."""
    A = np.diag(np.repeat([1.0, 4.0], 4))
    b = np.repeat([1.0, -2.0], 4) * 10.0
    P = np.kron(np.eye(2), np.ones((4, 1)))
    fine = FunctionObjective(lambda x: 0.5 * x @ A @ x - b @ x, lambda x: A @ x - b,
                             lambda x, v: A @ v)
    Ac, bc = P.T @ A @ P, P.T @ b
    coarse = FunctionObjective(lambda y: 0.5 * y @ Ac @ y - bc @ y, lambda y: Ac @ y - bc,
                               lambda y, v: Ac @ v)

    class T:
        n_fine, n_coarse = 8, 2

        def prolong(self, y):
            return P @ y

        def restrict(self, g):
            return P.T @ g

        def project(self, x):
            return x.reshape(2, 4).mean(axis=1)

    H = Hierarchy([Level(None, fine, T()), Level(None, coarse)])
    res = rmtr(H, np.zeros(8), {"maxiter": 6, "initial_radius": 0.1, "hessian": "exact",
                                "gtol": 1e-10})
    cr = res.history["correction_radius"]
    assert cr[-1] > 2 * res.history["radius"][-1] or res.success
    assert res.history["fun"][-1] < res.history["fun"][0]


# ---------------------------------------------------------------------------
# resume bit for bit
# ---------------------------------------------------------------------------
CASES = {
    "off": {"variant": "off", "lr": 0.05, "maxiter": 6, "coarse_iters": 3, "rng": 2,
            "cycle": "F"},
    "monotone-norm-test": {"maxiter": 6, "rng": 2, "growth_theta": 0.2, "model": "hybrid"},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_variants_resume_bit_for_bit(case, tmp_path):
    obj = reg_objective()
    theta0 = obj.net.init(0)

    def H():
        return depth_hierarchy(reg_objective(), 3)

    full = rmtr(H(), theta0, CASES[case])
    ck = Checkpointer(tmp_path, every=1)

    def stop(intermediate_result):
        if intermediate_result.nit == 3:
            ck.request_stop()

    part = rmtr(H(), theta0, dict(CASES[case], checkpoint=ck), callback=stop)
    assert part.status == 4
    rest = rmtr(H(), theta0, dict(CASES[case], resume=str(tmp_path)))
    np.testing.assert_array_equal(rest.x, full.x)
    assert rest.work == full.work and rest.work_per_level == full.work_per_level
    for key in full.history.keys():
        if key != "time":
            np.testing.assert_array_equal(rest.history[key], full.history[key])
    assert repr(rest.statistics) == repr(full.statistics)


def test_peaks_default_rmtr_runs():
    d = peaks(200, 50, seed=0)
    obj = Objective(ResNet(2, 4, 8, 5, T=5.0), d.X_train, d.Y_train, tikhonov=1e-4)
    res = rmtr(depth_hierarchy(obj, 3), obj.net.init(0), {"maxiter": 10, "rng": 0})
    assert res.status == 1 and res.nit == 10 and res.fun < obj.value(obj.net.init(0))
