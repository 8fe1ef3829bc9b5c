"""MGRIT: XBraid's debugging ladder, literature convergence factors, statistics,
and errors on bad input.

Convergence factors measured (printed with ``pytest -s``), two levels, FCF,
Dahlquist lambda = -1 on [0, 5] with 1024 backward-Euler steps:

=====  ==================  ===========================================
cf     measured factors    two-level bound (Dobrev et al. 2017, FCF)
=====  ==================  ===========================================
2      2.0e-3 ... 1.7e-3   2.4e-3
4      5.9e-3 ... 4.9e-3   7.0e-3
=====  ==================  ===========================================

Heat equation (nx = 63, t in [0, 1], 256 steps), two levels, FCF: about
1.5e-2 (cf = 2) and 4e-2 (cf = 4), below the same bound maximised over the
eigenvalues of the Laplacian (5.3e-2 and 8.1e-2).
"""

import numpy as np
import pytest

from mgnn.mgrit import MGRIT, FunctionStepper, Stepper, TimeHierarchy, mgrit, serial_stepping
from mgnn.mgrit.problems import Dahlquist, DampedPendulum, Heat1D

T128 = np.linspace(0.0, 5.0, 129)


def problems():
    heat = Heat1D(nx=15)
    return {
        "dahlquist": (Dahlquist(-1.0), T128, np.ones(1)),
        "dahlquist_fe": (Dahlquist(-0.5, method="forward"), np.linspace(0, 4, 129), np.ones(1)),
        "heat": (heat, np.linspace(0.0, 0.5, 129), heat.initial()),
        "pendulum": (DampedPendulum(1.0, batch=2), np.linspace(0, 2.0, 129),
                     np.array([[1.0, 0.0], [2.5, 0.3]])),
    }


class CopySpatial(Dahlquist):
    """Dahlquist whose (identity) spatial transfers take the spatial code path."""

    def restrict(self, u_fine, u_coarse, level):
        u_coarse[...] = u_fine

    def interpolate(self, u_coarse, u_fine, level):
        u_fine[...] = u_coarse


# ----------------------------------------------------------------- the ladder
@pytest.mark.parametrize("name", ["dahlquist", "dahlquist_fe", "heat", "pendulum"])
def test_one_level_is_bitwise_serial_stepping(name):
    stepper, t, u0 = problems()[name]
    res = MGRIT(stepper, t, max_levels=1).solve(u0, max_iter=1)
    assert res.nit == 1 and res.success
    assert np.array_equal(res.u, serial_stepping(stepper, t, u0))


@pytest.mark.parametrize("name", ["dahlquist", "heat", "pendulum"])
def test_converged_initial_guess_stays_converged(name):
    stepper, t, u0 = problems()[name]
    ref = serial_stepping(stepper, t, u0)
    solver = MGRIT(stepper, t, cf=4)
    res = solver.solve(u0, u_guess=ref, max_iter=3)
    assert res.initial_residual
    scale = np.abs(ref).max()
    assert np.all(res.residuals <= 1e-14 * scale * np.sqrt(len(t)))
    assert np.abs(res.u - ref).max() <= 1e-14 * scale
    # with a tolerance it stops before the first cycle
    res = solver.solve(u0, u_guess=ref, tol=1e-12)
    assert res.nit == 0 and res.success


@pytest.mark.parametrize("name", ["dahlquist", "heat", "pendulum"])
@pytest.mark.parametrize("nu", [0, 1, 2])
@pytest.mark.parametrize("m", [2, 4])
def test_exactness_front_two_levels(name, nu, m):
    """Two levels, F(CF)^nu relaxation, omega = 1, exact coarse solve.

    Theory: if u is exact at C-points 0..J (and F-relaxed), each CF sweep
    makes C-point J+1 exact (C-relaxation is one exact step from the
    F-relaxed point before it), and the exact coarse solve of the FAS
    problem adds one more (the coarse error is zero up to the last exact
    C-point, so the correction at the next C-point equals its residual, which
    is the exact step). Starting from u_0 only, after k iterations C-points
    0..(nu+1)k are exact, hence after the final F-relaxation all fine points
    with index < ((nu+1)k + 1) m. The next C-point is in general not exact:
    the test checks that too, so the front is exactly where theory puts it.
    """
    stepper, t, u0 = problems()[name]
    ref = serial_stepping(stepper, t, u0)
    rng = np.random.default_rng(0)
    guess = ref + rng.standard_normal(ref.shape) * 0.1
    scale = np.abs(ref).max()
    n = len(t) - 1
    for k in (1, 2, 3):
        res = MGRIT(stepper, t, cf=m, max_levels=2, cf_sweeps=nu).solve(
            u0, u_guess=guess, max_iter=k)
        front = ((nu + 1) * k + 1) * m  # first fine index not guaranteed exact
        if front > n:
            continue
        err = np.abs(res.u - ref).reshape(n + 1, -1).max(axis=1)
        assert err[:front].max() <= 1e-13 * scale, (k, err[:front].max())
        # sharp: beyond the front the error is well above round-off
        assert err[front] > 1e3 * max(err[:front].max(), 1e-16 * scale), (k, err[front])


CONFIGS = [
    dict(cf=2),
    dict(cf=4, max_levels=2),
    dict(cf=2, cf_sweeps=0),
    dict(cf=[4, 2], cf_sweeps=2, omega=1.3),
    dict(cf=2, cycle="F"),
    dict(cf=2, nested_iteration=True),
    dict(cf=2, skip=True),
    dict(cf=3, min_coarse=1, cycle="F", skip=True),
]


@pytest.mark.parametrize("opts", CONFIGS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize("name", ["dahlquist", "heat", "pendulum"])
def test_every_configuration_reproduces_serial_stepping(name, opts):
    stepper, t, u0 = problems()[name]
    ref = serial_stepping(stepper, t, u0)
    res = MGRIT(stepper, t, **opts).solve(u0, tol=1e-13 * np.abs(ref).max(), max_iter=64)
    assert res.success, res.message
    assert np.abs(res.u - ref).max() <= 1e-12 * np.abs(ref).max()


def test_spatial_code_path_matches_identity_path():
    t = np.linspace(0.0, 5.0, 97)
    a = MGRIT(Dahlquist(-1.0), t, cf=[4, 2]).solve(np.ones(1), max_iter=4)
    b = MGRIT(CopySpatial(-1.0), t, cf=[4, 2]).solve(np.ones(1), max_iter=4)
    np.testing.assert_allclose(b.residuals, a.residuals, rtol=1e-10)
    np.testing.assert_allclose(b.u, a.u, rtol=0, atol=1e-14)


def test_float32():
    t = np.linspace(0.0, 5.0, 65)
    st = Dahlquist(-1.0, dtype=np.float32)
    res = MGRIT(st, t, cf=2).solve(np.ones(1, np.float32), tol=1e-6)
    assert res.success and res.u.dtype == np.float32


# ------------------------------------------------------ convergence factors
def fmt(x):
    return "[" + ", ".join(f"{v:.2e}" for v in x) + "]"


def fcf_bound(lam_f, lam_c, m, n_c):
    """Two-level FCF bound of Dobrev et al. (2017), for each eigenvalue."""
    lam_f, lam_c = np.abs(lam_f), lam_c
    return (lam_f**m * np.abs(lam_f**m - lam_c)
            * (1 - np.abs(lam_c) ** (n_c - 1)) / (1 - np.abs(lam_c)))


@pytest.mark.parametrize("m", [2, 4])
def test_dahlquist_two_level_factors_match_theory(m):
    n, t_end = 1024, 5.0
    t = np.linspace(0.0, t_end, n + 1)
    st = Dahlquist(-1.0)
    res = MGRIT(st, t, cf=m, max_levels=2).solve(np.ones(1), max_iter=4)
    dt = t_end / n
    bound = fcf_bound(st.amplification(dt), st.amplification(m * dt), m, n // m)
    print(f"\nDahlquist cf={m}: factors {fmt(res.factors)}, "
          f"FCF bound {bound:.2e}")
    assert 1e-3 <= res.factors.max() <= 1e-2
    assert res.factors.max() <= 1.05 * bound
    assert res.factors[0] >= 0.5 * bound


@pytest.mark.parametrize("m", [2, 4])
def test_heat_two_level_factors_match_theory(m):
    heat = Heat1D(nx=63)
    n = 256
    t = np.linspace(0.0, 1.0, n + 1)
    res = MGRIT(heat, t, cf=m, max_levels=2).solve(heat.initial(), max_iter=4)
    z = heat.eigenvalues() * (1.0 / n)
    bound = fcf_bound(1 / (1 - z), 1 / (1 - m * z), m, n // m).max()
    print(f"\nheat cf={m}: factors {fmt(res.factors)}, "
          f"FCF bound {bound:.2e}")
    assert res.factors.max() <= bound
    assert res.factors.max() >= 0.2 * bound


# -------------------------------------------------------------- statistics
def test_statistics_and_step_counts():
    n, m = 128, 4
    t = np.linspace(0.0, 5.0, n + 1)
    solver = MGRIT(Dahlquist(-1.0), t, cf=m, max_levels=2)
    seen = []
    res = solver.solve(np.ones(1), tol=1e-12, callback=lambda r: seen.append(r.nit))
    assert seen == list(range(1, res.nit))
    assert len(res.residuals) == res.nit + 1 and res.initial_residual
    np.testing.assert_allclose(res.factors, res.residuals[1:] / res.residuals[:-1])
    # initial F-sweep: n steps; each FCF iteration: a CF sweep and the F-sweep after the
    # correction (n each); level 1: FAS right-hand side and exact solve (n/m each)
    assert res.level_steps == [n * (1 + 2 * res.nit), 2 * (n // m) * res.nit]
    assert res.n_steps == sum(res.level_steps)
    assert len(res.level_time) == 2 and all(x >= 0 for x in res.level_time)
    assert res.wall_time >= sum(res.level_time) * 0.5
    text = repr(res)
    assert "nit=" in text and "factors" in text and "steps" in text
    text = repr(solver)
    assert "2 levels" in text and "cf = [4]" in text and "129" in text and "33" in text


def test_fixed_iterations_without_residuals():
    res = MGRIT(Dahlquist(-1.0), T128, cf=2).solve(np.ones(1), max_iter=3, residuals=False)
    assert res.nit == 3 and res.success and res.residuals.size == 0
    assert "fixed count" in res.message
    assert "not computed" in repr(res)


def test_callback_stop_iteration_and_tolerance_failure():
    def stop(r):
        raise StopIteration

    res = MGRIT(Dahlquist(-1.0), T128, cf=2).solve(np.ones(1), tol=1e-15, callback=stop)
    assert res.nit == 1 and not res.success and "callback" in res.message
    res = MGRIT(Dahlquist(-1.0), T128, cf=2).solve(np.ones(1), tol=0.0, max_iter=2)
    assert not res.success and "not reached" in res.message
    res = MGRIT(Dahlquist(-1.0), T128, cf=2).solve(np.ones(1), rtol=1e-6)
    assert res.success and res.residuals[-1] <= 1e-6 * res.residuals[0]


def test_index_passed_to_step_is_fine_index_of_t0():
    seen = set()
    t = np.linspace(0.0, 1.0, 33)

    def f(u_in, u_out, t0, t1, level, index):
        stride = [1, 4, 8][level]
        assert t[index] == t0 and t[index + stride] == t1
        seen.add(level)
        np.multiply(u_in, 0.9, out=u_out)

    st = FunctionStepper(f, shape=(1,))
    mgrit(st, t, np.ones(1), cf=[4, 2], max_levels=3, max_iter=2)
    assert seen == {0, 1, 2}


def test_gather_and_hierarchy_non_divisible_grid():
    t = np.linspace(0.0, 5.0, 51)  # 50 intervals, cf=4: 12 coarse intervals + trailing F
    h = TimeHierarchy(t, cf=4, max_levels=2)
    assert h.n_intervals == [50, 12] and np.allclose(h.t[1], t[:49:4])
    solver = MGRIT(Dahlquist(-1.0), t, cf=4, max_levels=2)
    solver.solve(np.ones(1), tol=1e-14)
    np.testing.assert_allclose(solver.gather(), serial_stepping(Dahlquist(-1.0), t, np.ones(1)),
                               atol=1e-13)


# --------------------------------------------------------------- bad input
class NoWrite(Stepper):
    def step(self, u_in, u_out, t0, t1, level, index):
        return u_in * 0.5


class NoWriteNoReturn(Stepper):
    def step(self, u_in, u_out, t0, t1, level, index):
        pass


class Clobber(Stepper):
    def step(self, u_in, u_out, t0, t1, level, index):
        u_in *= 0.5
        u_out[...] = u_in


def test_bad_coarsening_factor():
    with pytest.raises(ValueError, match=r"cf must be >= 2, got 1"):
        MGRIT(Dahlquist(), T128, cf=1)
    with pytest.raises(ValueError, match=r"cf\[1\] must be >= 2"):
        MGRIT(Dahlquist(), T128, cf=[2, 1])
    with pytest.raises(TypeError, match="cf must be an integer"):
        MGRIT(Dahlquist(), T128, cf=2.5)


def test_grid_too_short_for_levels():
    with pytest.raises(ValueError, match=r"max_levels=5 .* t has 8 intervals.* at most 3"):
        MGRIT(Dahlquist(), np.linspace(0, 1, 9), cf=2, max_levels=5)
    with pytest.raises(ValueError, match="at least 2 time points"):
        MGRIT(Dahlquist(), np.zeros(1))
    with pytest.raises(ValueError, match="strictly increasing"):
        MGRIT(Dahlquist(), np.array([0.0, 1.0, 1.0]))


def test_stepper_that_does_not_write_output():
    with pytest.raises(TypeError, match="return None; it returned ndarray"):
        MGRIT(NoWrite((1,)), T128).solve(np.ones(1))
    with pytest.raises(ValueError, match="did not write u_out"):
        MGRIT(NoWriteNoReturn((1,)), T128).solve(np.ones(1))
    with pytest.raises(ValueError, match="modified u_in"):
        MGRIT(Clobber((1,)), T128).solve(np.ones(1))
    # the probe can be turned off (for steppers that only step their own rank's intervals)
    solver = MGRIT(Clobber((1,)), T128, check_stepper=False)
    assert solver.solve(np.ones(1), max_iter=1).nit == 1


def test_mismatched_shapes_and_types():
    solver = MGRIT(Dahlquist(shape=(3,)), T128)
    with pytest.raises(ValueError, match=r"u0 must have shape \(3,?\), got \(2,\)"):
        solver.solve(np.ones(2))
    with pytest.raises(ValueError, match=r"u_guess must have shape \(129, 3\)"):
        solver.solve(np.ones(3), u_guess=np.ones((128, 3)))
    with pytest.raises(TypeError, match="u0 must have dtype float64"):
        solver.solve(np.ones(3, np.float32))
    with pytest.raises(ValueError, match="u0 contains NaN"):
        solver.solve(np.full(3, np.nan))
    with pytest.raises(TypeError, match="missing 'step'"):
        MGRIT(object(), T128)

    class WrongShape(Dahlquist):
        def new_vector(self, level=0):
            return np.empty(2)

    with pytest.raises(ValueError, match=r"new_vector\(0\) must have shape"):
        MGRIT(WrongShape(shape=(3,)), T128)
    with pytest.raises(ValueError, match="unknown cycle 'W'"):
        MGRIT(Dahlquist(), T128, cycle="W")
    with pytest.raises(ValueError, match="omega must be <= 2"):
        MGRIT(Dahlquist(), T128, omega=2.5)
    with pytest.raises(ValueError, match="cf_sweeps must be >= 0"):
        MGRIT(Dahlquist(), T128, cf_sweeps=-1)
