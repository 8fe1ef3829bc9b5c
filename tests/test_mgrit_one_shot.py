"""The MGRIT features that make one-shot (layer-parallel) training cheap, on the generic
solver: F-interpolation without C-point steps, the final-sweep hook, the FAS right-hand
side kept from one solve and reused by the next, global step counts, per-solve skip."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgnn.mgrit import MGRIT, serial_stepping
from mgnn.mgrit.problems import Dahlquist, DampedPendulum, Heat1D

T = np.linspace(0.0, 4.0, 97)


class Watch(Dahlquist):
    """Dahlquist stepper that records the final-sweep brackets and the steps inside."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.events = []
        self.active = False

    def final_sweep(self, active):
        self.events.append(active)
        self.active = active

    def step(self, u_in, u_out, t0, t1, level, index):
        if self.active:
            assert level == 0
            self.events.append(index)
        super().step(u_in, u_out, t0, t1, level, index)


def finals(events):
    """The runs of fine step indices between final_sweep(True) and final_sweep(False)."""
    runs, cur = [], None
    for e in events:
        if e is True:
            cur = []
        elif e is False:
            runs.append(cur)
            cur = None
        elif cur is not None:
            cur.append(e)
    return runs


@pytest.mark.parametrize("levels,cf", [(2, 4), (3, 2), (4, 2)])
def test_fixed_count_without_residuals_skips_c_steps_and_keeps_iterates(levels, cf):
    """Without residual norms the last fine F-interpolation and every coarse one skip the
    steps into the C-points: the same iterates with fewer steps."""
    st_ = Dahlquist(-1.0)
    a = MGRIT(st_, T, cf=cf, max_levels=levels).solve(np.ones(1), max_iter=3)
    b = MGRIT(st_, T, cf=cf, max_levels=levels).solve(np.ones(1), max_iter=3, residuals=False)
    assert np.array_equal(a.u, b.u)
    n = MGRIT(st_, T, cf=cf, max_levels=levels).hierarchy.n_intervals
    # level 0: the last F-interpolation skips its n0 // cf C-steps
    assert a.level_steps[0] - b.level_steps[0] == n[0] // cf
    assert b.level_steps_all == b.level_steps  # one rank: all steps are this rank's


def test_final_sweep_brackets_the_last_fine_sweep():
    n = T.size - 1
    # fixed count: one final sweep, the last one, over every fine interval
    w = Watch(-1.0)
    res = MGRIT(w, T, cf=4, max_levels=3).solve(np.ones(1), max_iter=3, residuals=False)
    runs = finals(w.events)
    assert len(runs) == 1 and sorted(runs[0]) == list(range(n))
    assert w.events[-1] is False and res.nit == 3
    # with a tolerance every correction's F-sweep may be the last: each is bracketed
    w = Watch(-1.0)
    res = MGRIT(w, T, cf=4, max_levels=2).solve(np.ones(1), tol=1e-10)
    assert len(finals(w.events)) == res.nit
    assert all(sorted(r) == list(range(n)) for r in finals(w.events))
    # one level: the sequential solve is the final sweep
    w = Watch(-1.0)
    MGRIT(w, T, max_levels=1).solve(np.ones(1), max_iter=1)
    assert [sorted(r) for r in finals(w.events)] == [list(range(n))]
    # no cycle at all: one extra F-sweep gives the final states
    w = Watch(-1.0)
    res = MGRIT(w, T, cf=4, max_levels=2).solve(np.ones(1), max_iter=0)
    assert res.nit == 0 and [sorted(r) for r in finals(w.events)] == [list(range(n))]


def test_final_sweep_leaves_the_iterates_alone():
    ref = MGRIT(Dahlquist(-1.0), T, cf=4, max_levels=3).solve(np.ones(1), max_iter=2,
                                                                   residuals=False)
    w = MGRIT(Watch(-1.0), T, cf=4, max_levels=3).solve(np.ones(1), max_iter=2,
                                                         residuals=False)
    assert np.array_equal(ref.u, w.u)


@pytest.mark.parametrize("name", ["dahlquist", "heat", "pendulum"])
@pytest.mark.parametrize("levels,cf,cycle", [(2, 4, "V"), (3, 2, "V"), (3, 2, "F")])
def test_reuse_tau_equals_the_uninterrupted_iteration(name, levels, cf, cycle):
    """With F-relaxation on the fine level and an unchanged stepper, k solves of one
    iteration each, every one reusing the right-hand side the previous kept, are the k
    iterations of one solve, bit for bit (the first cycle's fine relaxation and
    restriction are exactly what the previous solve's end computed)."""
    stepper, t, u0 = {
        "dahlquist": (Dahlquist(-1.0), T, np.ones(1)),
        "heat": (Heat1D(nx=15), np.linspace(0.0, 0.5, 97), Heat1D(nx=15).initial()),
        "pendulum": (DampedPendulum(1.0, batch=2), np.linspace(0, 2.0, 97),
                     np.array([[1.0, 0.0], [2.5, 0.3]])),
    }[name]
    opts = dict(cf=cf, max_levels=levels, cf_sweeps=[0, 1], cycle=cycle)
    ref = MGRIT(stepper, t, **opts).solve(u0, max_iter=4, residuals=False)
    s = MGRIT(stepper, t, **opts)
    s.solve(u0, max_iter=1, residuals=False, keep_tau=True)
    for _ in range(3):
        assert s.tau_ready
        res = s.solve(u0, s.u, max_iter=1, residuals=False, keep_tau=True, reuse_tau=True)
    assert np.array_equal(res.u, ref.u)


def test_reuse_tau_follows_a_new_initial_value_and_converges():
    t = np.linspace(0.0, 4.0, 129)
    st_ = Dahlquist(-1.0)
    s = MGRIT(st_, t, cf=4, max_levels=3)
    s.solve(np.ones(1), max_iter=1, keep_tau=True)
    u1 = np.array([3.0])
    exact = serial_stepping(st_, t, u1)
    errs = []
    for _ in range(10):
        res = s.solve(u1, max_iter=1, keep_tau=True, reuse_tau=True)
        errs.append(float(np.max(np.abs(res.u - exact))))
    assert res.u[0, 0] == 3.0
    assert errs[-1] <= 1e-12 and all(b <= a for a, b in zip(errs, errs[1:], strict=False))
    # the residual after a reused cycle is that of the new problem
    assert res.residuals.size == 1 and res.residuals[0] <= 1e-13 and not res.initial_residual


def test_reuse_tau_needs_a_kept_tau():
    s = MGRIT(Dahlquist(-1.0), T, cf=4, max_levels=2)
    with pytest.raises(RuntimeError, match="keep_tau"):
        s.solve(np.ones(1), reuse_tau=True)
    s.solve(np.ones(1), max_iter=1, keep_tau=True)
    s.solve(np.ones(1), max_iter=1)  # a solve without keep_tau spends it
    assert not s.tau_ready
    with pytest.raises(RuntimeError, match="keep_tau"):
        s.solve(np.ones(1), reuse_tau=True)
    # one level: nothing to keep, the solve is exact anyway
    s1 = MGRIT(Dahlquist(-1.0), T, max_levels=1)
    s1.solve(np.ones(1), keep_tau=True)
    assert not s1.tau_ready


def test_keep_tau_costs_one_coarse_sweep():
    n = MGRIT(Dahlquist(-1.0), T, cf=4, max_levels=2).hierarchy.n_intervals
    a = MGRIT(Dahlquist(-1.0), T, cf=4, max_levels=2).solve(np.ones(1), max_iter=2)
    b = MGRIT(Dahlquist(-1.0), T, cf=4, max_levels=2).solve(np.ones(1), max_iter=2,
                                                            keep_tau=True)
    assert np.array_equal(a.u, b.u)
    assert b.level_steps[1] - a.level_steps[1] == n[1]
    assert b.level_steps[0] == a.level_steps[0]


def test_skip_per_solve_overrides_the_solver_option():
    s = MGRIT(Dahlquist(-1.0), T, cf=4, max_levels=2, skip=True)
    a = s.solve(np.ones(1), max_iter=2, skip=False)
    assert a.initial_residual
    b = MGRIT(Dahlquist(-1.0), T, cf=4, max_levels=2).solve(np.ones(1), max_iter=2)
    assert np.array_equal(a.u, b.u)
    c = s.solve(np.ones(1), max_iter=2)
    assert not c.initial_residual


def test_coarse_levels_are_views_of_the_finer_c_points():
    s = MGRIT(Dahlquist(-1.0), T, cf=4, max_levels=3)
    lv0, lv1, lv2 = s.levels
    assert np.shares_memory(lv1.U, lv0.U) and np.shares_memory(lv2.U, lv0.U)
    assert np.array_equal(lv1.U, lv0.U[::4]) and lv2.U.shape[0] == lv0.U[::16].shape[0]
    assert s.u_with_ghost.shape[0] == s.u.shape[0] + 1
    assert np.shares_memory(s.u_with_ghost[1:], s.u)


@settings(max_examples=25)
@given(n=st.integers(8, 70), cf=st.sampled_from([2, 3, 4]), levels=st.integers(2, 4),
       iters=st.integers(1, 3), nu=st.sampled_from([0, 1]), keep=st.booleans())
def test_steps_of_all_ranks_follow_the_hierarchy(n, cf, levels, iters, nu, keep):
    t = np.linspace(0.0, 1.0, n + 1)
    try:
        s = MGRIT(Dahlquist(-1.0), t, cf=cf, max_levels=levels, cf_sweeps=nu)
    except ValueError:
        return  # grid too short for the levels
    res = s.solve(np.ones(1), max_iter=iters, residuals=False, keep_tau=keep)
    assert res.level_steps_all == res.level_steps


class Chained(Dahlquist):
    """Dahlquist stepper with a whole-interval ``sweep`` (step by step, recording runs)."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.runs = []

    def sweep(self, U, t, level, index):
        assert level == 0 and U.shape[0] >= 3
        self.runs.append((index, U.shape[0] - 1))
        for q in range(U.shape[0] - 1):
            self.step(U[q], U[q + 1], t[q], t[q + 1], level, index + q)


@pytest.mark.parametrize("relax,cycle,levels", [("F", "V", 3), ("FCF", "F", 2), ("F", "F", 1)])
def test_whole_interval_sweeps_equal_the_steps(relax, cycle, levels):
    """A stepper's ``sweep`` takes the runs of consecutive fine F-steps (two or more,
    never a C-point step or a coarse one); the iterates equal those of single steps."""
    opts = dict(cf=4, max_levels=levels, cf_sweeps=1 if relax == "FCF" else 0, cycle=cycle)
    ref = MGRIT(Dahlquist(lam=-1.0), T, **opts).solve(np.ones(1), max_iter=3, tol=0.0)
    st = Chained(lam=-1.0)
    res = MGRIT(st, T, **opts).solve(np.ones(1), max_iter=3, tol=0.0)
    np.testing.assert_array_equal(res.u, ref.u)
    assert st.runs
    for index, n in st.runs:
        if levels > 1:  # runs stay inside an F-interval: no C-point is stepped into
            assert index // 4 == (index + n - 1) // 4 and (index + n) % 4 != 0
        else:  # one level: the sequential solve is one run
            assert (index, n) == (0, len(T) - 1)
