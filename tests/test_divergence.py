"""Divergence that stays finite is reported, not called success (issue 13, item 5)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgnn.data import peaks, smooth_regression
from mgnn.mgrit import MGRIT
from mgnn.mgrit.problems import Dahlquist
from mgnn.multilevel import depth_hierarchy, mgopt
from mgnn.nets import ResNet
from mgnn.objective import Objective
from mgnn.optim import minimize
from mgnn.optim.divergence import DivergenceMonitor

D = peaks(200, 20, seed=0)
NET = ResNet(2, 4, 4, 5, T=2.0)


def obj():
    return Objective(NET, D.X_train, D.Y_train)


@pytest.mark.parametrize("method,lr", [("adam", 1e3), ("sgd", 1e4)])
def test_runaway_learning_rate_is_not_success(method, lr):
    theta0 = NET.init(0)
    res = minimize(obj(), theta0, method=method,
                   options={"lr": lr, "batch_size": 50, "maxiter": 300, "rng": 0})
    f = res.history["fun"]
    assert not res.success and res.status == 3
    assert res.message.startswith("Diverged: the loss stayed more than 10 x")
    assert "x is the iterate of the lowest loss" in res.message
    assert res.fun == f.min()  # the best loss seen, and x is its iterate
    assert res.nit < 300 and f[-1] > 10 * f[0]
    assert np.all(np.isfinite(res.x))
    # the returned iterate is the one whose (mini-batch) loss was the lowest
    k = int(np.argmin(f))
    assert res.fun == f[k]


def test_thresholds_are_options():
    theta0 = NET.init(0)
    base = {"lr": 1e3, "batch_size": 50, "maxiter": 120, "rng": 0}
    off = minimize(obj(), theta0, method="adam", options=dict(base, divergence_factor=None))
    assert off.success and off.nit == 120
    patient = minimize(obj(), theta0, method="adam",
                       options=dict(base, divergence_patience=5))
    default = minimize(obj(), theta0, method="adam", options=base)
    assert patient.status == default.status == 3 and patient.nit < default.nit
    lax = minimize(obj(), theta0, method="adam", options=dict(base, divergence_factor=1e6))
    assert lax.success
    with pytest.raises(ValueError, match="divergence_factor must be > 0"):
        minimize(obj(), theta0, method="adam", options=dict(base, divergence_factor=0.0))
    with pytest.raises(ValueError, match="divergence_patience must be >= 1"):
        minimize(obj(), theta0, method="adam", options=dict(base, divergence_patience=0))
    with pytest.raises(TypeError, match="unknown option 'divergence_factor' for method "
                                        "'lbfgs'"):
        minimize(obj(), theta0, method="lbfgs", options={"divergence_factor": 2.0})


def test_a_good_stochastic_run_is_not_flagged():
    res = minimize(obj(), NET.init(0), method="adam",
                   options={"lr": 1e-2, "batch_size": 10, "maxiter": 600, "rng": 0})
    assert res.success


@settings(max_examples=40)
@given(fs=st.lists(st.floats(0.0, 1e3, allow_nan=False), min_size=1, max_size=60),
       factor=st.floats(0.1, 100.0), patience=st.integers(1, 5))
def test_monitor_flags_exactly_sustained_growth(fs, factor, patience):
    """Divergence is declared at the first k where the last ``patience`` losses were all
    more than factor * max(|f_0|, |f_best|) above the best seen so far."""
    m = DivergenceMonitor(factor, patience)
    best, count = np.inf, 0
    for k, f in enumerate(fs):
        best = min(best, f)
        count = count + 1 if f - best > factor * max(abs(fs[0]), abs(best)) else 0
        flagged = m.update(f, x=k, nit=k)
        assert flagged == (count >= patience)
        assert m.best == best and fs[m.best_x] == best
        if flagged:
            break


def test_mgrit_residual_growth_is_not_success():
    """Forward Euler on a stiff problem: the coarse propagators blow up (residual 11 ->
    1e18 in one iteration). With a fixed iteration count the solve used to report
    success; now divtol (1e4, as PETSc) stops it."""
    solver = MGRIT(Dahlquist(-30.0, method="forward"), np.linspace(0, 10, 1025), cf=8,
                   max_levels=3)
    res = solver.solve(np.ones(1), max_iter=10)
    assert not res.success and res.nit == 1
    assert res.message.startswith("diverged: residual") and "divtol = 10000" in res.message
    old = solver.solve(np.ones(1), max_iter=10, divtol=None)
    assert old.success and old.residuals.max() > 1e10
    ok = MGRIT(Dahlquist(-1.0), np.linspace(0, 5, 257), cf=4, max_levels=2).solve(
        np.ones(1), max_iter=5)
    assert ok.success
    with pytest.raises(ValueError, match="divtol must be >= 1"):
        solver.solve(np.ones(1), divtol=0.5)


def test_mgopt_stops_on_sustained_growth():
    d = smooth_regression(100, 20)
    net = ResNet(2, 4, 4, 1, activation="relu", task="regression")
    H = depth_hierarchy(Objective(net, d.X_train, d.Y_train), 2)
    res = mgopt(H, net.init(0), "sgd", {"lr": 2.0}, pre=1, post=1, cycles=30, tau="none")
    assert res.status == 3 and not res.success
    assert res.message.startswith("Diverged: the loss stayed more than 10 x")
    assert "for 3 consecutive cycles" in res.message
    assert res.fun == res.history["fun"].min()


def test_overflowed_forward_gives_a_nan_gradient_without_an_adjoint_solve():
    """A forward that overflows (loss inf/NaN) returns a NaN gradient instead of handing a
    non-finite start to the adjoint (MGRIT refuses one), and drops MGRIT's warm starts."""
    from mgnn.mgrit import MGRITPropagation
    from mgnn.nets import ResNet
    from mgnn.objective import Objective

    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 2))
    y = rng.integers(0, 3, 20)
    net = ResNet(2, 4, 16, 3, activation="relu")
    theta = net.init(rng) * 1e200  # relu states overflow to inf
    for prop in (None, MGRITPropagation()):
        obj = Objective(net, X, y, propagation=prop)
        with np.errstate(all="ignore"):
            f, g = obj.value_and_grad(theta)
        assert not np.isfinite(f) and np.isnan(g).all()
