"""RMTR: the single-level limit, coherence of the coarse models, monotonicity,
convergence on a convex problem, work per level, shared mini-batches, bad input,
the prolongation norm of the coarse trust regions and the coarse options."""

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgnn.data import peaks, smooth_regression
from mgnn.multilevel import Hierarchy, Level, Transfer, depth_hierarchy, rmtr
from mgnn.multilevel.coarse_models import MODELS, make_coarse_model
from mgnn.multilevel.recursive_trust_region import RMTR_MODELS
from mgnn.nets import ResNet
from mgnn.objective import Objective
from mgnn.optim import FunctionObjective, minimize
from mgnn.work import WorkCounter

#: The classic method of Gratton, Sartenaer & Toint these tests were written for: exact
#: curvature, all data, the corrections in the level's trust region (not the defaults).
CLASSIC = {"hessian": "exact", "batch_size": None, "coarse_radius": "shared"}


def classic(**opts):
    return dict(CLASSIC, **opts)


def peaks_objective(width=3, depth=8, n=120, seed=0, tikhonov=1e-4):
    d = peaks(n, 10, seed=seed)
    return Objective(ResNet(2, width, depth, 5, T=4.0), d.X_train, d.Y_train,
                     tikhonov=tikhonov)


# ---------------------------------------------------------------------------
# one level == the single-level trust-region method
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("opts", [
    {},
    {"hessian": "lsr1", "memory": 5},
    {"subproblem": "dogleg", "initial_radius": 0.3, "eta1": 0.2},
])
def test_one_level_gives_the_trust_region_iterates(opts):
    obj = peaks_objective()
    theta0 = obj.net.init(1)
    H = depth_hierarchy(obj, 1)
    xs_tr, xs_ml = [], []
    tr = minimize(obj, theta0, method="trust-region", options=dict(opts, maxiter=15),
                  callback=lambda intermediate_result: xs_tr.append(intermediate_result.x))
    ml = rmtr(H, theta0, options=dict({"hessian": "exact", "batch_size": None}, **opts,
                                      maxiter=15, coarse_iters=1),
              callback=lambda intermediate_result: xs_ml.append(intermediate_result.x))
    assert len(xs_tr) == len(xs_ml) == 15
    for a, b in zip(xs_tr, xs_ml, strict=True):
        assert np.array_equal(a, b)
    assert np.array_equal(tr.x, ml.x) and tr.fun == ml.fun
    np.testing.assert_array_equal(tr.history["fun"], ml.history["fun"])
    np.testing.assert_array_equal(tr.history["radius"], ml.history["radius"])
    assert ml.work == pytest.approx(tr.work, rel=1e-12)
    assert ml.work_per_level == [ml.work]
    # several steps per cycle: the same iterates, grouped
    ml3 = rmtr(H, theta0, options=dict({"hessian": "exact", "batch_size": None}, **opts,
                                       maxiter=5, coarse_iters=3))
    assert np.array_equal(ml3.x, tr.x)


# ---------------------------------------------------------------------------
# coherence of the coarse models (property test on random depth hierarchies)
# ---------------------------------------------------------------------------
hier = st.tuples(
    st.integers(1, 4),  # width
    st.integers(1, 3),  # coarsest depth
    st.integers(2, 3),  # factor
    st.integers(2, 3),  # levels
    st.sampled_from(["constant", "linear"]),
    st.sampled_from(MODELS),
    st.booleans(),  # mini-batch
    st.integers(0, 2**32 - 1),
)


@settings(max_examples=25)
@given(hier)
def test_coarse_models_are_coherent(case):
    width, nc, factor, levels, interp, kind, use_batch, seed = case
    rng = np.random.default_rng(seed)
    d = peaks(40, 5, seed=seed % 1000)
    obj = Objective(ResNet(2, width, nc * factor ** (levels - 1), 5, T=3.0), d.X_train,
                    d.Y_train, tikhonov=1e-3, smoothness=1e-3)
    H = depth_hierarchy(obj, levels, factor=factor, interpolation=interp)
    batch = np.sort(rng.choice(40, 17, replace=False)) if use_batch else None
    for l in range(levels - 1):
        fine, lev, coarse = H[l].objective, H[l], H[l + 1].objective
        theta = 0.5 * rng.standard_normal(fine.n_params)
        g = fine.grad(theta, batch=batch)
        Rg = lev.R(g)
        x0 = lev.Pi(theta)
        h = make_coarse_model(kind, coarse, x0, Rg, functools.partial(fine.hessp, theta,
                                                                     batch=batch),
                              lev.P, lev.R, batch=batch)
        # first-order coherence: grad h(Pi theta) = R g
        np.testing.assert_allclose(h.grad(x0), Rg, rtol=1e-12, atol=1e-14 * np.abs(Rg).max())
        np.testing.assert_allclose(h.g0, Rg, rtol=1e-12, atol=1e-14 * np.abs(Rg).max())
        assert h.value(x0) == pytest.approx(h.f0, rel=1e-13, abs=1e-14)
        # the model's gradient is the derivative of its value (central differences)
        x = x0 + 0.3 * rng.standard_normal(x0.size)
        v = rng.standard_normal(x0.size)
        eps = 1e-6
        fd = (h.value(x + eps * v) - h.value(x - eps * v)) / (2 * eps)
        assert fd == pytest.approx(np.dot(h.grad(x), v), rel=1e-5, abs=1e-7)
        if kind != "first-order":  # second-order coherence: hess h(Pi theta) = R H P
            RHP = lev.R(fine.hessp(theta, lev.P(v), batch=batch))
            np.testing.assert_allclose(h.hessp(x0, v), RHP, rtol=1e-10,
                                       atol=1e-12 * np.abs(RHP).max())


def test_models_reject_another_batch():
    obj = peaks_objective()
    H = depth_hierarchy(obj, 2)
    theta = obj.net.init(0)
    b = np.arange(10)
    h = make_coarse_model("first-order", H[1].objective, H[0].Pi(theta),
                          H[0].R(obj.grad(theta, batch=b)), None, None, None, batch=b)
    h.value(h.x0, batch=np.arange(10))  # the same indices are fine
    with pytest.raises(ValueError, match="batch the model was built on"):
        h.value(h.x0, batch=np.arange(11))
    with pytest.raises(ValueError, match="unknown model 'third-order'"):
        make_coarse_model("third-order", obj, theta, theta, None, None, None)


# ---------------------------------------------------------------------------
# accepted steps never increase the fine objective
# ---------------------------------------------------------------------------
@settings(max_examples=14)
@given(st.sampled_from("VWF"), st.sampled_from(RMTR_MODELS), st.sampled_from(["exact", "lsr1"]),
       st.sampled_from(["shared", "separate"]), st.integers(2, 3), st.integers(0, 2**32 - 1))
def test_fine_objective_is_monotone(cycle, model, hessian, radius, levels, seed):
    obj = peaks_objective(depth=8, n=60, seed=seed % 100)
    H = depth_hierarchy(obj, levels, interpolation="linear")
    theta0 = obj.net.init(seed)
    iterates = []
    res = rmtr(H, theta0, options={"maxiter": 4, "cycle": cycle, "model": model,
                                   "hessian": hessian, "coarse_iters": 2,
                                   "initial_radius": 2.0, "coarse_radius": radius,
                                   "batch_size": None},
               callback=lambda intermediate_result: iterates.append(intermediate_result.x))
    fun = res.history["fun"]
    assert np.all(np.diff(fun) <= 0)
    assert fun[-1] < fun[0]
    assert res.fun == pytest.approx(obj.value(res.x), rel=1e-14)  # the iterate's loss
    vals = [obj.value(x) for x in iterates]
    np.testing.assert_allclose(vals, fun[1:], rtol=1e-14)
    # work: every level's counter, summed
    assert sum(res.work_per_level) == pytest.approx(res.work, rel=1e-12)
    assert res.statistics[0].visits == 4
    assert len(res.evaluations_per_level) == levels


def test_w_cycle_visits_coarse_levels_more_often():
    obj = peaks_objective(depth=8, n=60)
    H = depth_hierarchy(obj, 3)
    theta0 = obj.net.init(0)
    opts = classic(maxiter=3, kappa_g=0.0, initial_radius=100.0)
    v = rmtr(H, theta0, options=dict(opts, cycle="V"))
    w = rmtr(H, theta0, options=dict(opts, cycle="W"))
    assert v.statistics[1].visits == v.statistics[0].visits == 3
    assert w.statistics[1].visits == 2 * w.statistics[0].visits == 6
    assert w.statistics[2].visits > v.statistics[2].visits
    # the history's per-level work columns end at the per-level totals
    for l in range(3):
        assert w.history[f"work_l{l}"][-1] == pytest.approx(w.work_per_level[l])
    assert w.work_per_level[2] > 0


# ---------------------------------------------------------------------------
# a convex problem on a hand-made hierarchy (only the Transfer interface)
# ---------------------------------------------------------------------------
class MatrixTransfer(Transfer):
    """Piecewise linear interpolation between grids of n_c and 2 n_c points."""

    def __init__(self, n_coarse):
        self.n_coarse, self.n_fine = n_coarse, 2 * n_coarse
        P = np.zeros((self.n_fine, n_coarse))
        for j in range(n_coarse):
            P[2 * j, j] = 1.0
            P[2 * j + 1, j] = 0.5
            P[2 * j + 1, min(j + 1, n_coarse - 1)] += 0.5
        self.Pm = P

    def prolong(self, x_coarse):
        return self.Pm @ x_coarse

    def restrict(self, g_fine):
        return self.Pm.T @ g_fine

    def project(self, x_fine):
        return x_fine[::2].copy()


def least_squares_hierarchy(n=64, m=200, levels=3, lam=1e-3, seed=0):
    """f_l(x) = |A_l x - y|^2 / (2m) + lam/2 |x|^2; A_l samples a smooth kernel on n_l points."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(0, 1, m)
    y = np.sin(2 * np.pi * s) + 0.1 * rng.standard_normal(m)
    lv = []
    for l in range(levels):
        nl = n >> l
        t = (np.arange(nl) + 0.5) / nl
        A = np.exp(-((s[:, None] - t[None, :]) ** 2) / 0.02) / nl

        def fun(x, A=A):
            r = A @ x - y
            return 0.5 * r @ r / m + 0.5 * lam * x @ x

        def jac(x, A=A):
            return A.T @ (A @ x - y) / m + lam * x

        def hessp(x, v, A=A):
            return A.T @ (A @ v) / m + lam * v

        obj = FunctionObjective(fun, jac, hessp, counter=WorkCounter(scale=nl / n))
        lv.append(Level(None, obj, MatrixTransfer(nl // 2) if l + 1 < levels else None))
    return Hierarchy(lv, "hand-made linear least squares")


@pytest.mark.parametrize("options", [
    {"model": "first-order"},
    {"model": "second-order", "cycle": "W"},
    {"model": "galerkin"},
    {"model": "first-order", "hessian": "lsr1"},
    {"model": "hybrid", "hessian": "lsr1", "coarse_radius": "separate", "cycle": "F"},
])
def test_convex_least_squares_converges_to_1e_8(options):
    H = least_squares_hierarchy()
    res = rmtr(H, np.zeros(64), options=classic(**options, gtol=1e-8, maxiter=200))
    assert res.success, res.message
    g = H[0].objective.grad(res.x)
    assert np.linalg.norm(g) <= 1e-8
    # the minimizer of the regularised least-squares problem
    A = np.array([H[0].objective.hessp(np.zeros(64), e) for e in np.eye(64)])
    x_star = np.linalg.solve(A, -H[0].objective.grad(np.zeros(64)))
    # |x - x*| <= |g| / lambda_min(A) for the quadratic
    assert np.linalg.norm(res.x - x_star) <= np.linalg.norm(g) / np.linalg.eigvalsh(A).min()
    assert np.all(np.diff(res.history["fun"]) <= 0)
    assert res.statistics[0].coarse_tries > 0


# ---------------------------------------------------------------------------
# mini-batches: one subset for all levels of a cycle; dynamic growth
# ---------------------------------------------------------------------------
class Recording:
    """An objective that logs the batch of every evaluation."""

    def __init__(self, obj, level, log):
        self.obj, self.level, self.log = obj, level, log
        self.counter, self.space, self.n_samples = obj.counter, obj.space, obj.n_samples

    def _rec(self, batch):
        self.log.append((self.level, None if batch is None else tuple(batch)))

    def value(self, x, batch=None):
        self._rec(batch)
        return self.obj.value(x, batch=batch)

    def value_and_grad(self, x, batch=None):
        self._rec(batch)
        return self.obj.value_and_grad(x, batch=batch)

    def hessp(self, x, v, batch=None):
        self._rec(batch)
        return self.obj.hessp(x, v, batch=batch)


def test_stochastic_cycles_share_one_batch_and_the_batch_grows():
    d = smooth_regression(128, 10, seed=0)
    obj = Objective(ResNet(2, 3, 8, 1, T=2.0, task="regression"), d.X_train, d.Y_train,
                    tikhonov=1e-5)
    H0 = depth_hierarchy(obj, 3)
    log = []
    H = Hierarchy([Level(lv.net, Recording(lv.objective, l, log), lv.transfer)
                   for l, lv in enumerate(H0.levels)])
    cycles = []
    res = rmtr(H, obj.net.init(0), options={
        "maxiter": 30, "batch_size": 16, "batch_growth": 2.0, "growth_patience": 1,
        "growth_rule": "stall", "rng": 3, "coarse_iters": 2, "pre_smooth": [1, 0]},
        callback=lambda intermediate_result: cycles.append(len(log)))
    sizes = res.history["batch_size"]
    assert sizes[0] == 16 and np.all(np.diff(sizes) >= 0) and sizes[-1] == 128
    assert res.batch_size == 128
    bounds = [0] + cycles  # log[bounds[k]:bounds[k + 1]]: cycle k (cycle 0 with the start)
    levels_per_cycle = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        seg = log[a:b]
        assert len({bt for _, bt in seg}) == 1, "one cycle, one set of samples on all levels"
        levels_per_cycle.append({lv for lv, _ in seg})
    assert {0, 1, 2} in levels_per_cycle
    # the end: loss on all data
    assert res.fun == pytest.approx(obj.value(res.x), rel=1e-13)


def test_stochastic_smoke_peaks():
    obj = peaks_objective(depth=8, n=200)
    H = depth_hierarchy(obj, 2)
    theta0 = obj.net.init(0)
    res = rmtr(H, theta0, options={"maxiter": 10, "batch_size": 50, "rng": 0,
                                   "hessian": "lsr1"})
    assert res.fun < obj.value(theta0)
    assert res.nit == 10 and res.history["batch_size"][0] == 50


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------
def test_bad_input_names_the_argument():
    obj = peaks_objective()
    H = depth_hierarchy(obj, 2)
    theta0 = obj.net.init(0)
    with pytest.raises(TypeError, match="unknown option 'learning_rate' for method 'rmtr'"):
        rmtr(H, theta0, options={"learning_rate": 0.1})
    with pytest.raises(ValueError, match="'lr' has no effect with variant='monotone'"):
        rmtr(H, theta0, options={"lr": 0.1})
    with pytest.raises(ValueError, match="'eta1' has no effect with variant='off'"):
        rmtr(H, theta0, options={"variant": "off", "eta1": 0.2})
    with pytest.raises(ValueError, match="variant='off' takes model='first-order'"):
        rmtr(H, theta0, options={"variant": "off", "model": "galerkin"})
    with pytest.raises(ValueError, match="unknown variant"):
        rmtr(H, theta0, options={"variant": "adam"})
    with pytest.raises(ValueError, match="unknown growth_rule"):
        rmtr(H, theta0, options={"growth_rule": "double"})
    with pytest.raises(ValueError, match="unknown model"):
        rmtr(H, theta0, options={"model": "newton"})
    with pytest.raises(ValueError, match="unknown cycle"):
        rmtr(H, theta0, options={"cycle": "X"})
    with pytest.raises(ValueError, match="batch_size must be <= n_samples = 120"):
        rmtr(H, theta0, options={"batch_size": 500})
    with pytest.raises(ValueError, match="'rng' has no effect"):
        rmtr(H, theta0, options={"rng": 0, "batch_size": None})
    with pytest.raises(ValueError, match="'memory' has no effect"):
        rmtr(H, theta0, options={"memory": 3, "hessian": "exact"})
    with pytest.raises(ValueError, match="'cycle' has no effect with a hierarchy of one"):
        rmtr(depth_hierarchy(obj, 1), theta0, options={"cycle": "W"})
    with pytest.raises(ValueError, match="level 0 of the hierarchy has no objective"):
        rmtr(depth_hierarchy(obj.net, 2), theta0)
    with pytest.raises(TypeError, match="hierarchy must be a Hierarchy"):
        rmtr(obj, theta0)
    with pytest.raises(ValueError, match="theta0"):
        rmtr(H, theta0[:-1])
    with pytest.raises(ValueError, match="pre_smooth has 3 entries for 2 levels"):
        rmtr(H, theta0, options={"pre_smooth": [1, 1, 1]})


def test_runs_unchanged_on_a_width_hierarchy():
    from mgnn.multilevel import width_hierarchy

    d = peaks(100, 10)
    obj = Objective(ResNet(2, 6, 4, 5, T=3.0), d.X_train, d.Y_train, tikhonov=1e-4)
    theta0 = obj.net.init(0)
    H = width_hierarchy(obj, theta0, 3)
    res = rmtr(H, theta0, options=classic(maxiter=4, model="galerkin", hessian="lsr1"))
    assert np.all(np.diff(res.history["fun"]) <= 0) and res.fun < obj.value(theta0)
    assert res.statistics[0].coarse_tries > 0


# ---------------------------------------------------------------------------
# the prolongation norm of the coarse trust regions
# ---------------------------------------------------------------------------
def test_gram_space_is_the_prolonged_norm():
    from mgnn.multilevel.coarse_models import GramSpace

    obj = peaks_objective(depth=8)
    for interp in ("constant", "linear"):
        H = depth_hierarchy(obj, 3, interpolation=interp)
        M1 = GramSpace(H[0].P, H[0].R, H[1].net.n_params)
        M2 = GramSpace(H[1].P, H[1].R, H[2].net.n_params, M1)
        rng = np.random.default_rng(0)
        x, y = rng.standard_normal((2, H[2].net.n_params))
        full = H.prolong_to_finest
        assert M2.dot(x, y) == pytest.approx(np.dot(full(x, 2), full(y, 2)), rel=1e-12)
        assert M2.dot(x, M2.solve(y)) == pytest.approx(np.dot(x, y), rel=1e-9)
        np.testing.assert_allclose(M2.gram(M2.solve(y)), y, rtol=1e-9, atol=1e-10)
    with pytest.raises(ValueError, match="R = P"):
        GramSpace(H[0].P, lambda g: 2.0 * H[0].R(g), H[1].net.n_params)


class SpyTransfer(Transfer):
    """Delegates to a depth transfer and records every prolonged coarse vector."""

    def __init__(self, inner, log):
        self.inner, self.log = inner, log
        self.n_fine, self.n_coarse = inner.n_fine, inner.n_coarse

    def prolong(self, x_coarse):
        return self.inner.prolong(x_coarse)

    def restrict(self, g_fine):
        return self.inner.restrict(g_fine)

    def project(self, x_fine):
        return self.inner.project(x_fine)


@pytest.mark.parametrize("radius", ["shared", "separate"])
@pytest.mark.parametrize("interp", ["constant", "linear"])
def test_prolonged_coarse_steps_stay_in_the_fine_trust_region(interp, radius, monkeypatch):
    obj = peaks_objective(depth=8, n=80)
    H0 = depth_hierarchy(obj, 2, interpolation=interp)
    theta0 = obj.net.init(2)
    radii, steps = [], []
    import mgnn.multilevel.recursive_trust_region as mod

    orig = mod.MonotoneEngine._coarse_correction

    def spy(self, l, model, x, f, g, radius, cons, x_entry, kind):
        bound = self.corr_radius[l] if self.separate else radius
        out = orig(self, l, model, x, f, g, radius, cons, x_entry, kind)
        radii.append(bound)
        steps.append(out[0] - x)
        return out

    monkeypatch.setattr(mod.MonotoneEngine, "_coarse_correction", spy)
    res = rmtr(H0, theta0, options=dict(classic(maxiter=6, kappa_g=0.0, coarse_iters=4,
                                                initial_radius=0.5), coarse_radius=radius))
    assert res.statistics[0].coarse_tries > 0
    assert res.statistics[1].truncated == 0  # no coarse step is ever cut back
    for r, s in zip(radii, steps, strict=True):
        assert np.linalg.norm(s) <= r * (1 + 1e-10)


def test_first_coarse_step_not_cut_back_with_prolongation_norm():
    """Constant depth interpolation stretches coarse steps by sqrt(2) under P:
    in the Euclidean coarse norm the first coarse step of a visit that reaches
    the boundary is cut back; in the prolongation norm it never is."""
    obj = peaks_objective(depth=8, n=80)
    H = depth_hierarchy(obj, 2)
    theta0 = obj.net.init(0)
    opts = classic(maxiter=8, kappa_g=0.0, coarse_iters=3, initial_radius=0.2)
    eu = rmtr(H, theta0, options=dict(opts, coarse_norm="euclidean"))
    pn = rmtr(H, theta0, options=dict(opts, coarse_norm="prolongation"))
    assert eu.statistics[1].truncated > 0
    assert pn.statistics[1].truncated == 0
    assert pn.statistics[1].tr_steps > 0
    assert np.all(np.diff(pn.history["fun"]) <= 0)


def test_options_coarse_hessian_and_coarse_gamma1(monkeypatch):
    obj = peaks_objective(depth=8, n=80)
    H = depth_hierarchy(obj, 3)
    theta0 = obj.net.init(0)
    base = classic(maxiter=4, kappa_g=0.0, initial_radius=1.0)
    # L-SR1 on the coarse levels only: no coarse Hessian products, fine ones still
    res = rmtr(H, theta0, options=dict(base, coarse_hessian="lsr1"))
    ev = res.evaluations_per_level
    assert ev[0][2] > 0 and ev[1][2] == 0 and ev[2][2] == 0
    assert np.all(np.diff(res.history["fun"]) <= 0)
    # a rejected coarse correction leaves the radius with coarse_gamma1 = 1
    H2 = least_squares_hierarchy(levels=2)
    import mgnn.multilevel.recursive_trust_region as mod

    seen = []
    orig = mod.MonotoneEngine._coarse_correction

    def spy(self, l, model, x, f, g, radius, cons, x_entry, kind):
        acc = self.stats[l].coarse_accepted
        tries = self.stats[l].coarse_tries
        out = orig(self, l, model, x, f, g, radius, cons, x_entry, kind)
        if self.stats[l].coarse_tries > tries and self.stats[l].coarse_accepted == acc:
            seen.append((radius, out[3]))
        return out

    monkeypatch.setattr(mod.MonotoneEngine, "_coarse_correction", spy)
    rmtr(H2, np.zeros(64), options=classic(maxiter=30, coarse_gamma1=1.0, eta1=0.99,
                                           eta2=0.995))
    assert seen and all(a == b for a, b in seen)
    with pytest.raises(ValueError, match="coarse_gamma1"):
        rmtr(H, theta0, options={"coarse_gamma1": 0.0})
    with pytest.raises(ValueError, match="coarse_norm"):
        rmtr(H, theta0, options={"coarse_norm": "max"})
    with pytest.raises(ValueError, match="coarse_hessian"):
        rmtr(H, theta0, options={"coarse_hessian": "bfgs"})
    with pytest.raises(ValueError, match="'coarse_norm' has no effect"):
        rmtr(depth_hierarchy(obj, 1), theta0, options={"coarse_norm": "euclidean"})
