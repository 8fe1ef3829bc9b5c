"""Property tests of the optimizer building blocks (hypothesis)."""

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mgnn.optim import (
    LSR1,
    FunctionObjective,
    TRParams,
    minimize,
    steihaug_cg,
    trust_region_step,
    update_radius,
)

SETTINGS = settings(max_examples=50, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _sym(rng, n, definite=False):
    M = rng.standard_normal((n, n))
    A = 0.5 * (M + M.T)
    if definite:
        A = A @ A + 0.1 * np.eye(n)
    return A


def _quartic(rng, n):
    """Bounded-below nonconvex function: sum x^4 / 4 + 1/2 x^T A x + b^T x."""
    A = _sym(rng, n)
    b = rng.standard_normal(n)
    f = lambda x: 0.25 * np.sum(x**4) + 0.5 * x @ A @ x + b @ x  # noqa: E731
    g = lambda x: x**3 + A @ x + b  # noqa: E731
    h = lambda x, v: 3 * x**2 * v + A @ v  # noqa: E731
    return f, g, h


seeds = st.integers(0, 2**31 - 1)
dims = st.integers(1, 8)


@SETTINGS
@given(seed=seeds, n=dims, hessian=st.sampled_from(["exact", "lsr1"]),
       subproblem=st.sampled_from(["cg", "dogleg", "cauchy"]))
def test_accepted_steps_lower_the_objective(seed, n, hessian, subproblem):
    rng = np.random.default_rng(seed)
    f, g, h = _quartic(rng, n)
    obj = FunctionObjective(f, g, h)
    res = minimize(obj, rng.standard_normal(n), method="trust-region",
                   options={"maxiter": 25, "hessian": hessian, "subproblem": subproblem,
                            "initial_radius": float(rng.uniform(0.1, 3.0))})
    hist = res.history
    fun, acc, rad = hist["fun"], hist["accepted"], hist["radius"]
    for k in range(1, len(hist)):
        if acc[k] == 1.0:
            assert fun[k] < fun[k - 1]
        else:
            assert fun[k] == fun[k - 1] and rad[k] < rad[k - 1]
        assert rad[k] <= TRParams().max_radius


@SETTINGS
@given(seed=seeds, n=dims, radius=st.floats(0.01, 5.0), subproblem=st.sampled_from(
    ["cg", "dogleg", "cauchy"]))
def test_rho_matches_definition(seed, n, radius, subproblem):
    rng = np.random.default_rng(seed)
    f, g, _ = _quartic(rng, n)
    B = _sym(rng, n, definite=subproblem == "dogleg")
    x = rng.standard_normal(n)
    fx, gx = f(x), g(x)
    st_ = trust_region_step(lambda z: (f(z), g(z)), x, fx, gx, radius, lambda v: B @ v,
                            subproblem=subproblem, tol=1e-10)
    s = st_.step
    ared = fx - f(x + s)
    pred = -(gx @ s + 0.5 * s @ B @ s)
    assert np.isclose(st_.pred, pred, rtol=1e-8, atol=1e-12)
    assert np.isclose(st_.ared, ared, rtol=1e-12, atol=1e-14)
    if pred > 0:
        assert np.isclose(st_.rho, ared / pred, rtol=1e-6, atol=1e-9)
    new_radius, accepted = update_radius(st_.rho, radius, st_.sub.step_norm,
                                         hits_boundary=st_.sub.hits_boundary)
    assert st_.accepted == accepted and st_.radius == new_radius
    assert st_.accepted == (st_.rho >= TRParams().eta1)
    np.testing.assert_array_equal(st_.x, x + s if accepted else x)


@SETTINGS
@given(seed=seeds, n=dims, radius=st.floats(1e-3, 10.0), definite=st.booleans(),
       tol=st.sampled_from([1e-12, 1e-3, 0.5]))
def test_steihaug_within_radius_and_decreasing(seed, n, radius, definite, tol):
    rng = np.random.default_rng(seed)
    B = _sym(rng, n, definite)
    grad = rng.standard_normal(n)
    res = steihaug_cg(grad, lambda v: B @ v, radius, tol=tol)
    s = res.step
    model = grad @ s + 0.5 * s @ B @ s
    assert np.linalg.norm(s) <= radius * (1 + 1e-10)
    assert np.isclose(res.step_norm, np.linalg.norm(s), rtol=1e-10)
    assert model < 0 and np.isclose(res.pred, -model, rtol=1e-8, atol=1e-13)
    # never worse than the Cauchy point (the first CG step)
    gBg = grad @ B @ grad
    gn = np.linalg.norm(grad)
    t = radius / gn if gBg <= 0 else min(gn**2 / gBg, radius / gn)
    cauchy = -t * gn**2 + 0.5 * t * t * gBg
    assert model <= cauchy + 1e-10 * abs(cauchy)
    if res.status == "converged":
        assert np.linalg.norm(grad + B @ s) <= tol * gn * (1 + 1e-8)
    if res.status in ("boundary", "negative_curvature"):
        assert res.hits_boundary and np.isclose(np.linalg.norm(s), radius, rtol=1e-8)


@SETTINGS
@given(seed=seeds, n=st.integers(2, 8), m=st.integers(1, 8),
       memory=st.integers(1, 8))
@example(seed=11703, n=6, m=6, memory=6)  # ill-conditioned M: found by CI
def test_lsr1_secant_equations_quadratic(seed, n, m, memory):
    """Pairs from one symmetric matrix: every stored pair satisfies B s = y."""
    rng = np.random.default_rng(seed)
    A = _sym(rng, n)
    B = LSR1(memory=memory)
    for _ in range(m):
        s = rng.standard_normal(n)
        B.update(s, A @ s)
    assert len(B) <= memory
    if len(B):
        assert B.secant_residuals().max() <= 1e-6
    # B is symmetric, up to the rounding of its compact form gamma I + Psi M^-1 Psi^T:
    # entries of B can be small differences of terms of size |Psi|^2 |M^-1| when the
    # pairs make M ill-conditioned (seed 11703, n = m = memory = 6: |M^-1| = 7e5,
    # |Psi|^2 = 1.4e4, and B's entries of size 2 differ from B^T's by 6e-8)
    D = np.column_stack([B.matvec(e) for e in np.eye(n)])
    scale = abs(B.gamma)
    if len(B):
        scale += sum(np.dot(p, p) for p in B._psi) * np.linalg.norm(B._Minv, 2)
    atol = max(1e-8 * max(1.0, np.abs(D).max()), 64 * np.finfo(float).eps * scale)
    np.testing.assert_allclose(D, D.T, rtol=0, atol=atol)


@SETTINGS
@given(seed=seeds, n=st.integers(2, 8), m=st.integers(1, 10))
def test_lsr1_newest_secant_general_pairs(seed, n, m):
    """Arbitrary pairs: the newest stored pair satisfies B s = y, and the
    compact form equals recursive SR1 updates of gamma I."""
    rng = np.random.default_rng(seed)
    B = LSR1(memory=20, gamma=1.5)
    dense = 1.5 * np.eye(n)
    for _ in range(m):
        s, y = rng.standard_normal(n), rng.standard_normal(n)
        stored = B.update(s, y)
        if stored:
            r = y - dense @ s
            dense = dense + np.outer(r, r) / (r @ s)
            assert np.linalg.norm(B.matvec(s) - y) <= 1e-6 * max(1.0, np.linalg.norm(y))
    if len(B):
        D = np.column_stack([B.matvec(e) for e in np.eye(n)])
        np.testing.assert_allclose(D, dense, rtol=1e-6, atol=1e-6 * np.abs(dense).max())


def test_lsr1_skipping_rule():
    B = LSR1(memory=5, gamma=1.0)
    s = np.array([1.0, 0.0])
    assert not B.update(s, s.copy())  # y = B s: nothing to update
    assert not B.update(s, s + np.array([0.0, 1.0]))  # s^T (y - B s) = 0: ill-defined
    assert B.n_skipped == 2 and len(B) == 0
    assert B.update(s, 2 * s) and len(B) == 1


@SETTINGS
@given(seed=seeds, stop_at=st.integers(1, 6),
       method=st.sampled_from(["lbfgs", "trust-region", "sgd", "adam"]))
def test_stop_iteration_returns_current_x(seed, stop_at, method):
    rng = np.random.default_rng(seed)
    f, g, h = _quartic(rng, 4)
    last = {}

    def cb(intermediate_result):
        last["x"] = intermediate_result.x.copy()
        if intermediate_result.nit == stop_at:
            raise StopIteration

    opts = {"lr": 1e-3} if method in ("sgd", "adam") else {"gtol": 0.0}
    res = minimize(FunctionObjective(f, g, h), rng.standard_normal(4), method=method,
                   options=opts, callback=cb)
    assert res.status == 99 and res.nit == stop_at
    np.testing.assert_array_equal(res.x, last["x"])


@SETTINGS
@given(seed=seeds, calls=st.integers(1, 12),
       method=st.sampled_from(["lbfgs", "trust-region", "sgd", "adam"]),
       bad=st.sampled_from([np.nan, np.inf]))
@example(seed=3622, calls=10, method="trust-region", bad=np.nan)  # gradient exactly 0 first
def test_divergence_returns_last_finite_iterate(seed, calls, method, bad):
    rng = np.random.default_rng(seed)
    f, g, h = _quartic(rng, 3)
    count = [0]

    def fun(x):
        count[0] += 1
        return bad if count[0] > calls else f(x)

    iterates = []
    x0 = rng.standard_normal(3)
    opts = {"lr": 1e-3} if method in ("sgd", "adam") else {"gtol": 0.0}
    res = minimize(FunctionObjective(fun, g, h), x0, method=method, options=opts,
                   callback=lambda intermediate_result: iterates.append(
                       intermediate_result.x.copy()))
    if res.status in (0, 2):
        # converged before the NaN came: a gradient of exactly 0 (gtol = 0) or round-off
        # (radius collapse)
        assert count[0] <= calls and (res.status == 2 or res.success)
        return
    assert not res.success and res.status == 3 and "non-finite loss" in res.message
    assert np.isfinite(res.fun)
    good = [x0] + iterates
    if method in ("lbfgs", "trust-region"):
        np.testing.assert_array_equal(res.x, good[-1])
    else:  # the iterate before the one whose loss was not finite
        np.testing.assert_array_equal(res.x, good[-2] if len(good) > 1 else x0)
