"""APTS and SPQN: reduction to the single-level methods, monotonicity, convergence,
first-order consistency, work accounting, resume, two-level correction, bad input."""

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mgnn
from mgnn.data import peaks, smooth_regression
from mgnn.dd import (
    DataSubproblem,
    ParameterSubproblem,
    SchwarzState,
    apts,
    by_blocks,
    by_data,
    by_layers,
    by_neurons,
    by_tensors,
    spqn,
)
from mgnn.multilevel import depth_hierarchy
from mgnn.nets import ResNet
from mgnn.objective import Objective
from mgnn.optim import FunctionObjective


@pytest.fixture(scope="module")
def peaks_problem():
    d = peaks(240, 10, seed=0)
    net = ResNet(2, 4, 6, 5, T=5.0)
    obj = Objective(net, d.X_train, d.Y_train, tikhonov=1e-4)
    return obj, net.init(0)


def least_squares(m=40, n=12, lam=0.0, seed=0):
    """A convex problem with the batch interface: (1/2m)||A t - b||^2 + lam/2 ||t||^2.

    ``b = A t*``: the minimum is 0 (with ``lam=0``), so the loss decreases measurably
    in double precision down to a gradient of 1e-8.
    """
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, n)) * np.linspace(1.0, 3.0, n)
    b = A @ rng.standard_normal(n)

    def rows(i):
        return slice(None) if i is None else i

    def fun(t, i):
        r = A[rows(i)] @ t - b[rows(i)]
        return 0.5 * float(r @ r) / len(r) + 0.5 * lam * float(t @ t)

    def jac(t, i):
        Ai = A[rows(i)]
        return Ai.T @ (Ai @ t - b[rows(i)]) / Ai.shape[0] + lam * t

    def hessp(t, v, i):
        Ai = A[rows(i)]
        return Ai.T @ (Ai @ v) / Ai.shape[0] + lam * v

    return FunctionObjective(fun, jac, hessp, n_samples=m)


# ----------------------------------------------------------------- single-level limits
@pytest.mark.parametrize("hessian", ["lsr1", "exact"])
def test_one_subdomain_apts_is_the_trust_region_method(peaks_problem, hessian):
    obj, theta0 = peaks_problem
    o = {"maxiter": 12, "hessian": hessian}
    ref = mgnn.minimize(obj, theta0, method="trust-region", options=o)
    xs = []
    res = apts(obj, theta0, by_blocks(obj.n_params, 1), options=dict(o, local_iters=1),
               callback=lambda intermediate_result: xs.append(intermediate_result.x.copy()))
    assert np.array_equal(res.x, ref.x)
    assert np.array_equal(res.history["fun"], ref.history["fun"])
    assert np.array_equal(res.history["radius"], ref.history["radius"])
    assert (res.nit, res.nfev, res.njev, res.nhev) == (ref.nit, ref.nfev, ref.njev, ref.nhev)
    assert res.work == pytest.approx(ref.work, rel=1e-14)
    assert res.parallel_work == pytest.approx(res.work, rel=1e-14)
    assert len(xs) == res.nit


def test_one_subdomain_spqn_is_lbfgs(peaks_problem):
    obj, theta0 = peaks_problem
    ref = mgnn.minimize(obj, theta0, method="lbfgs", options={"maxiter": 25})
    res = spqn(obj, theta0, by_blocks(obj.n_params, 1),
               options={"maxiter": 25, "local_iters": 1, "global_iters": 0})
    assert np.array_equal(res.x, ref.x)
    assert np.array_equal(res.history["fun"], ref.history["fun"])
    assert (res.nit, res.nfev, res.njev) == (ref.nit, ref.nfev, ref.njev)
    assert res.work == pytest.approx(ref.work, rel=1e-14)


# ----------------------------------------------------------------- monotonicity
def _decompositions(obj):
    net = obj.net
    return {"layers": by_layers(net, 3), "layers-overlap": by_layers(net, 2, overlap=1),
            "neurons": by_neurons(net, 2), "tensors": by_tensors(net, 3, rng=1),
            "data": by_data(obj, 3), "data-overlap": by_data(obj, 3, overlap=0.2)}


@pytest.mark.parametrize("solver", [apts, spqn])
@pytest.mark.parametrize("variant", ["additive", "multiplicative"])
def test_the_loss_never_increases(peaks_problem, solver, variant):
    obj, theta0 = peaks_problem
    for name, dec in _decompositions(obj).items():
        res = solver(obj, theta0, dec, options={"maxiter": 6, "variant": variant})
        f = res.history["fun"]
        assert np.all(np.diff(f) <= 0), (name, f)
        assert f[-1] < f[0], name
        assert res.fun == f[-1] and np.isfinite(res.fun)
        if solver is apts:  # a rejected merge leaves the iterate where it was
            acc = res.history["accepted"][1:]
            stayed = np.diff(f) == 0
            assert np.all(stayed[acc == 0]), name


# ----------------------------------------------------------------- convex convergence
@pytest.mark.parametrize("solver", [apts, spqn])
@pytest.mark.parametrize("kind", ["parameters", "data"])
@pytest.mark.parametrize("variant", ["additive", "multiplicative"])
def test_convex_problem_converges_to_gtol_1e_8(solver, kind, variant):
    obj = least_squares()
    dec = by_blocks(12, 3) if kind == "parameters" else by_data(obj, 4, overlap=0.25)
    res = solver(obj, np.zeros(12), dec,
                 options={"gtol": 1e-8, "maxiter": 400, "variant": variant})
    assert res.success, res.message
    assert np.linalg.norm(obj.grad(res.x)) <= 1e-8
    assert np.linalg.norm(res.jac) <= 1e-8


# ----------------------------------------------------------------- first-order consistency
@settings(max_examples=15)
@given(width=st.integers(1, 4), depth=st.integers(1, 4), S=st.integers(1, 4),
       overlap=st.sampled_from([0.0, 0.3]), seed=st.integers(0, 100))
def test_local_gradient_starts_equal_to_the_restricted_global_one(width, depth, S, overlap,
                                                                  seed):
    rng = np.random.default_rng(seed)
    net = ResNet(2, width, depth, 3)
    X = rng.standard_normal((24, 2))
    y = rng.integers(0, 3, 24)
    obj = Objective(net, X, y, tikhonov=1e-3)
    x = net.init(rng)
    f, g = obj.value_and_grad(x)
    scale = max(1.0, float(np.abs(g).max()))
    # data subdomains with the first-order-consistency term
    d = by_data(obj, S, overlap=overlap if S > 1 else 0.0)
    for idx in d.subdomains:
        batch = None if idx.size == d.size else idx
        gs = obj.grad(x, batch=batch)
        sub = DataSubproblem(obj, x, batch, g - gs)
        np.testing.assert_allclose(sub.grad(x), g, rtol=0, atol=1e-13 * scale)
        # and the term changes the gradient by a constant: same Hessian
        v = rng.standard_normal(x.size)
        np.testing.assert_array_equal(sub.hessp(x, v), obj.hessp(x, v, batch=batch))
    # parameter subdomains: consistent by construction, bit for bit
    for dec in (by_layers(net, min(S, depth)), by_tensors(net, S, rng=seed),
                by_neurons(net, min(S, width))):
        for idx in dec.subdomains:
            sub = ParameterSubproblem(obj, x, idx)
            fl, gl = sub.value_and_grad(sub.z0)
            assert fl == f and np.array_equal(gl, g[idx])


# ----------------------------------------------------------------- work
def test_parallel_work_counts_the_slowest_subdomain(peaks_problem):
    obj, theta0 = peaks_problem
    before = obj.counter.work
    res = apts(obj, theta0, by_data(obj, 4), options={"maxiter": 5, "global_iters": 1})
    h = res.history
    # the objective's own counter saw everything the ledger counted
    assert obj.counter.work - before == pytest.approx(res.work, rel=1e-12)
    local_max, local_sum = h["local_work_max"][1:], h["local_work_sum"][1:]
    dw, dp = np.diff(h["work"]), np.diff(h["parallel_work"])
    np.testing.assert_allclose(dw - dp, local_sum - local_max, rtol=1e-10, atol=1e-12)
    assert np.all(local_max <= local_sum) and np.all(local_max > 0)
    assert np.isclose(res.work_per_subdomain.sum(), local_sum.sum())
    assert res.parallel_work < res.work
    # data subdomains of 60 samples cost 1/4 per evaluation
    w = res.statistics[0].work / (res.statistics[0].steps + res.statistics[0].solves)
    assert w == pytest.approx(0.25)
    m = apts(obj, theta0, by_data(obj, 4), options={"maxiter": 3, "variant": "multiplicative"})
    assert m.parallel_work == pytest.approx(m.work, rel=1e-14)  # a sequence is serial


def test_parameter_subdomain_evaluations_cost_a_whole_sweep(peaks_problem):
    obj, theta0 = peaks_problem
    res = spqn(obj, theta0, by_layers(obj.net, 3), options={"maxiter": 2, "global_iters": 0})
    for t in res.statistics:  # every line-search trial point is one full evaluation
        assert t.work == pytest.approx(t.inner)


# ----------------------------------------------------------------- resume
@pytest.mark.parametrize("solver", [apts, spqn])
def test_resume_continues_bit_for_bit(peaks_problem, solver):
    obj, theta0 = peaks_problem
    H = depth_hierarchy(obj, 2)
    dec = by_data(obj, 3, overlap=0.1)
    o = {"maxiter": 6, "global_iters": 1, "coarse_iters": 2}
    full = solver(obj, theta0, dec, options=o, hierarchy=H)
    half = solver(obj, theta0, dec, options=dict(o, maxiter=3), hierarchy=H)
    assert isinstance(half.state, SchwarzState) and half.state.nit == 3
    saved = pickle.loads(pickle.dumps(half.state))  # a checkpoint on disk
    rest = solver(obj, saved, dec, options=dict(o, maxiter=6), hierarchy=H)
    assert np.array_equal(rest.x, full.x)
    assert np.array_equal(rest.history["fun"], full.history["fun"])
    assert np.array_equal(rest.history["parallel_work"], full.history["parallel_work"])
    assert (rest.nit, rest.nfev, rest.work) == (full.nit, full.nfev, full.work)
    assert half.state.nit == 3  # the result's state is a private copy
    with pytest.raises(ValueError, match="option 'local_iters' differs"):
        solver(obj, half.state, dec, options=dict(o, local_iters=5), hierarchy=H)
    other = apts if solver is spqn else spqn
    with pytest.raises(ValueError, match="is the state of a"):
        other(obj, half.state, dec)
    with pytest.raises(ValueError, match="belongs to another decomposition"):
        solver(obj, half.state, by_data(obj, 2), options=o, hierarchy=H)
    with pytest.raises(ValueError, match="a run with a hierarchy"):
        solver(obj, half.state, dec, options={"maxiter": 6})


# ----------------------------------------------------------------- two-level
@pytest.mark.parametrize("solver", [apts, spqn])
def test_two_level_coarse_correction(peaks_problem, solver):
    obj, theta0 = peaks_problem
    H = depth_hierarchy(obj, 2)
    res = solver(obj, theta0, by_layers(obj.net, 3), options={"maxiter": 5}, hierarchy=H)
    h = res.history
    assert np.nansum(h["coarse_accepted"]) >= 1
    assert np.all(np.diff(h["fun"]) <= 0)
    assert np.all(h["coarse_work"][1:] > 0)
    # coarse evaluations are charged at the coarse level's flop ratio
    assert res.work > res.nfev * 0  # finite
    coarse = H.levels[1].objective.counter
    assert coarse.work > 0 and coarse.scale == pytest.approx(H.work_per_level()[1])


def test_width_hierarchy_two_level_runs():
    from mgnn.multilevel import width_hierarchy

    d = smooth_regression(120, 10, seed=0)
    net = ResNet(2, 6, 3, 1, task="regression", activation="relu")
    obj = Objective(net, d.X_train, d.Y_train)
    theta0 = net.init(0)
    H = width_hierarchy(obj, theta0, 2)
    res = spqn(obj, theta0, by_data(obj, 3), options={"maxiter": 4}, hierarchy=H)
    assert np.all(np.diff(res.history["fun"]) <= 0) and res.fun < obj.value(theta0)


# ----------------------------------------------------------------- stops and failures
def test_callback_stops_and_divergence_keeps_the_last_good_iterate(peaks_problem):
    obj, theta0 = peaks_problem

    def stop(intermediate_result):
        if intermediate_result.nit == 2:
            raise StopIteration

    res = apts(obj, theta0, by_layers(obj.net, 2), options={"maxiter": 10}, callback=stop)
    assert (res.status, res.nit, res.success) == (99, 2, False)

    base = least_squares()
    calls = [0]

    def fun(t, i):
        calls[0] += 1
        return base.value(t, batch=i) if calls[0] < 12 else math.nan

    bad = FunctionObjective(fun, lambda t, i: base.grad(t, batch=i), n_samples=40)
    res = spqn(bad, np.zeros(12), by_blocks(12, 2), options={"maxiter": 50})
    assert res.status == 3 and not res.success and "Diverged" in res.message
    assert np.isfinite(res.fun) and np.all(np.isfinite(res.x))
    assert res.fun == pytest.approx(base.value(res.x))


def test_statistics_and_repr(peaks_problem):
    obj, theta0 = peaks_problem
    res = apts(obj, theta0, by_layers(obj.net, 3), options={"maxiter": 3})
    text = repr(res.statistics)
    assert text.splitlines()[0].split()[:3] == ["subdomain", "owner", "entries"]
    assert "opening layer" in text and len(text.splitlines()) == 4
    assert sum(t.solves for t in res.statistics) == 9
    assert "SchwarzState(apts, nit=3" in repr(res.state)


# ----------------------------------------------------------------- bad input
def test_bad_options_name_the_argument(peaks_problem):
    obj, theta0 = peaks_problem
    dec = by_layers(obj.net, 2)
    with pytest.raises(TypeError, match="unknown option 'local_iter' for method 'apts'"):
        apts(obj, theta0, dec, options={"local_iter": 2})
    with pytest.raises(TypeError, match="unknown option 'initial_radius' for method 'spqn'"):
        spqn(obj, theta0, dec, options={"initial_radius": 2.0})
    with pytest.raises(ValueError, match="'first_order_consistency' has no effect"):
        apts(obj, theta0, dec, options={"first_order_consistency": True})
    with pytest.raises(ValueError, match="'coarse_iters' has no effect without a hierarchy"):
        spqn(obj, theta0, dec, options={"coarse_iters": 2})
    with pytest.raises(ValueError, match="unknown variant 'jacobi'"):
        apts(obj, theta0, dec, options={"variant": "jacobi"})
    with pytest.raises(ValueError, match="local_iters must be >= 1"):
        spqn(obj, theta0, dec, options={"local_iters": 0})
    with pytest.raises(ValueError, match="'memory' has no effect with hessian='exact'"):
        apts(obj, theta0, dec, options={"hessian": "exact", "memory": 3})
    with pytest.raises(ValueError, match="local_radius must be > 0"):
        apts(obj, theta0, dec, options={"local_radius": 0.0})
    with pytest.raises(TypeError, match="decomposition must be a mgnn.dd.Decomposition"):
        apts(obj, theta0, [np.arange(3)])
    with pytest.raises(ValueError, match="decomposes 10 parameters but the objective has"):
        apts(obj, theta0, by_blocks(10, 2))
    with pytest.raises(ValueError, match=r"theta0 must have shape \(\d+,\)"):
        apts(obj, theta0[:-1], by_data(obj, 2))
    with pytest.raises(ValueError, match="theta0 contains NaN"):
        spqn(obj, np.full_like(theta0, np.nan), dec)
    H = depth_hierarchy(obj, 2)
    with pytest.raises(ValueError, match=r"coarse_level must be < 2"):
        apts(obj, theta0, dec, options={"coarse_level": 2}, hierarchy=H)
    small = Objective(ResNet(2, 4, 4, 5, T=5.0), obj.X, obj.Y)
    with pytest.raises(ValueError, match="finest level has .* parameters, the objective"):
        apts(obj, theta0, dec, hierarchy=depth_hierarchy(small, 2))


def test_float32_stays_float32():
    """float32 parameters stay float32 through local, global and coarse steps (and
    through the L-SR1 matrix, whose products used to come back in float64)."""
    d = smooth_regression(120, 10, seed=0, dtype=np.float32)
    net = ResNet(2, 4, 4, 1, task="regression", dtype=np.float32)
    obj = Objective(net, d.X_train, d.Y_train)
    theta0 = net.init(0)
    ref = mgnn.minimize(obj, theta0, method="trust-region",
                        options={"hessian": "lsr1", "maxiter": 5})
    assert ref.x.dtype == np.float32
    H = depth_hierarchy(obj, 2)
    for solver in (apts, spqn):
        for dec in (by_data(obj, 3, overlap=0.2), by_layers(net, 2, overlap=1)):
            res = solver(obj, theta0, dec, options={"maxiter": 3, "global_iters": 1},
                         hierarchy=H)
            assert res.x.dtype == np.float32 and res.fun < obj.value(theta0)


def test_spqn_safeguard_step_when_the_merged_correction_is_no_descent():
    """Many local steps on small data blocks drift apart: when the averaged correction
    is not a descent direction the iteration still makes progress by one global step."""
    d = smooth_regression(300, 10, seed=0)
    net = ResNet(2, 4, 4, 1, task="regression", T=2.0)
    obj = Objective(net, d.X_train, d.Y_train)
    res = spqn(obj, net.init(0), by_data(obj, 6),
               options={"maxiter": 20, "local_iters": 15, "global_iters": 0})
    h = res.history
    guarded = h["safeguard"] == 1
    assert guarded.sum() >= 1 and np.all(h["not_descent"][guarded] == 1)
    assert np.all(np.diff(h["fun"]) <= 0) and np.all(np.diff(h["fun"])[guarded[1:]] < 0)
    assert res.nit == 20


def test_armijo_combined_search_converges():
    obj = least_squares()
    res = spqn(obj, np.zeros(12), by_data(obj, 4), options={
        "gtol": 1e-8, "maxiter": 400, "combined_search": "armijo"})
    assert res.success and np.linalg.norm(obj.grad(res.x)) <= 1e-8
    with pytest.raises(ValueError, match="unknown combined_search 'exact'"):
        spqn(obj, np.zeros(12), by_data(obj, 4), options={"combined_search": "exact"})


@settings(max_examples=25)
@given(seed=st.integers(0, 10 ** 6), scale=st.floats(0.01, 100.0))
def test_armijo_search_satisfies_sufficient_decrease(seed, scale):
    from mgnn.optim import armijo

    rng = np.random.default_rng(seed)
    A = rng.standard_normal((5, 5))
    A = A @ A.T + 0.1 * np.eye(5)

    def fg(x):
        return 0.5 * float(x @ A @ x) + float(np.sum(np.cos(x))), A @ x - np.sin(x)

    x = rng.standard_normal(5)
    f, g = fg(x)
    d = -scale * g
    r = armijo(fg, x, d, f, g, c1=1e-4, maxls=30)
    assert r.alpha is not None and r.nevals <= 30
    assert r.f <= f + 1e-4 * r.alpha * float(g @ d)
    np.testing.assert_array_equal(r.x, x + r.alpha * d)
    assert np.array_equal(r.g, fg(r.x)[1])
