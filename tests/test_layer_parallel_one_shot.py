"""One-shot layer-parallel propagation: the options that make it cheap keep the XBraid
ladder (one level is serial bit for bit, enough iterations give the serial gradient),
the kept FAS right-hand side is reused only on the same samples, the adjoint writes the
gradient in its last fine sweep only, residual norms are computed only when asked,
work is charged as counted, and the performance model replays the solver's steps."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_layer_parallel import make, rel

from mgnn.mgrit import MGRITPropagation
from mgnn.mgrit.layer_parallel import ResNetAdjointStepper, ResNetStepper
from mgnn.mgrit.model import PerformanceModel, StepCosts, mgrit_level_steps, sweep_trace
from mgnn.nets import ResNet
from mgnn.objective import Objective

ONE_SHOT = dict(levels=None, min_coarse=2, cf=4, relax="F", cycle="V", fwd_iters=1,
                bwd_iters=1, rtol=None, coarse_weights="average", reuse_tau=True,
                residuals=False)


@pytest.mark.parametrize("opts", [
    dict(ONE_SHOT, levels=1),
    dict(levels=1, relax=["F", "FCF"], cycle="F", skip=True, residuals=3, reuse_tau=True),
    dict(levels=1, coarse_weights="average", batched=True, reuse_tau=True),
])
def test_one_level_stays_serial_bit_for_bit(opts):
    net, X, y, theta = make(depth=11)
    ser = Objective(net, X, y, tikhonov=1e-3)
    par = Objective(net, X, y, tikhonov=1e-3, propagation=MGRITPropagation(**opts))
    f0, g0 = ser.value_and_grad(theta)
    for _ in range(3):
        f, g = par.value_and_grad(theta)
        assert f == f0 and np.array_equal(g, g0)
    assert np.array_equal(par.hessp(theta, g0), ser.hessp(theta, g0))
    assert par.counter.work == pytest.approx(3.0 + ser.counter.cost["hessp"])


@pytest.mark.parametrize("opts", [
    ONE_SHOT,
    dict(ONE_SHOT, cf=[8, 2], cycle="F"),
    dict(ONE_SHOT, relax=["F", "FCF"], coarse_weights="inject"),
    dict(ONE_SHOT, batched=True),
])
def test_repeated_one_shot_evaluations_converge_to_the_serial_gradient(opts):
    net, X, y, theta = make(depth=48)
    f0, g0 = Objective(net, X, y).value_and_grad(theta)
    obj = Objective(net, X, y, propagation=MGRITPropagation(**opts))
    errs = []
    for _ in range(25):
        f, g = obj.value_and_grad(theta)
        errs.append(rel(g, g0))
    assert errs[-1] <= 1e-10 and abs(f - f0) <= 1e-12 * abs(f0)
    assert errs[-1] < 1e-6 * errs[0]


def test_tolerance_with_reuse_reaches_the_serial_gradient():
    net, X, y, theta = make(depth=48)
    g0 = Objective(net, X, y).grad(theta)
    prop = MGRITPropagation(**dict(ONE_SHOT, tol=1e-13, fwd_iters=50, bwd_iters=50))
    obj = Objective(net, X, y, propagation=prop)
    for _ in range(2):
        g = obj.grad(theta)
        assert rel(g, g0) <= 1e-10
        assert prop.last_stats()["adjoint"].residual <= 1e-13


def test_warm_starts_and_tau_only_on_the_same_samples():
    net, X, y, theta = make(depth=32)
    prop = MGRITPropagation(**ONE_SHOT)
    obj = Objective(net, X, y, propagation=prop)
    N = net.depth

    def fine_steps():
        return prop.last_stats()["forward"].level_steps[0]

    obj.grad(theta)
    assert fine_steps() == 2 * N  # cold: F-relaxation, then the F-interpolation
    obj.grad(theta)
    assert fine_steps() == N  # warm, same samples: the kept tau saves the relaxation
    a, b = np.arange(0, 30, 2), np.arange(1, 30, 2)
    obj.grad(theta, batch=a)
    assert fine_steps() == 2 * N  # other samples (another workspace: cold)
    obj.grad(theta, batch=a)
    assert fine_steps() == N
    obj.grad(theta, batch=b)  # same size, other samples: a cold start
    assert fine_steps() == 2 * N and not prop.last_stats()["forward"].warm
    obj.grad(theta, batch=b)
    assert fine_steps() == N and prop.last_stats()["forward"].warm
    obj.grad(theta)
    assert fine_steps() == N  # the full-data engine kept its own tau


def test_adjoint_writes_the_gradient_in_its_last_fine_sweep_only():
    net, X, y, theta = make(depth=32)
    prop = MGRITPropagation(**dict(ONE_SHOT, bwd_iters=3, reuse_tau=False))
    obj = Objective(net, X, y, propagation=prop)
    obj.grad(theta)
    eng = next(iter(prop._engines.values()))
    assert eng.bstep.grad_sweeps == 1
    obj.grad(theta)
    assert eng.bstep.grad_sweeps == 2
    # work: a fine adjoint step is one GEMM, plus one where it writes a gradient
    st_ = prop.last_stats()
    fwd, adj = st_["forward"].level_steps, st_["adjoint"].level_steps
    n = eng.bwd.hierarchy.n_intervals
    gemms = sum(fwd) + adj[0] + net.depth + sum(adj[1:]) + sum(n[1:])
    s, w = X.shape[0], net.width
    expect = (gemms - 3 * net.depth) * 2.0 * s * w * w / net.flops(s)
    obj.counter.work = 0.0
    obj.grad(theta)
    assert obj.counter.work == pytest.approx(1.0 + expect, rel=1e-12)


def test_residual_norms_every_k_evaluations():
    net, X, y, theta = make(depth=32)
    prop = MGRITPropagation(**dict(ONE_SHOT, residuals=3))
    obj = Objective(net, X, y, propagation=prop)
    for _ in range(7):
        obj.grad(theta)
    have = [e["forward"].residuals.size > 0 for e in prop.stats]
    assert have == [False, False, True, False, False, True, False]
    row = prop.history_row()
    assert np.isnan(row["mgrit_fwd_residual"])
    assert np.isfinite(prop.stats[2]["adjoint"].residual)
    # residuals=True: every evaluation, one norm after the (reused) cycle
    prop = MGRITPropagation(**dict(ONE_SHOT, residuals=True))
    obj = Objective(net, X, y, propagation=prop)
    obj.grad(theta)
    obj.grad(theta)
    assert prop.last_stats()["forward"].residuals.size == 1


def test_a_non_finite_loss_drops_the_warm_starts():
    net, X, y, theta = make(depth=32, act="relu")
    prop = MGRITPropagation(**ONE_SHOT)
    obj = Objective(net, X, y, propagation=prop)
    obj.grad(theta)
    bad = theta.copy()
    bad[net.layer_slice(0, net.depth)] = 1e200
    with np.errstate(all="ignore"):
        assert not np.isfinite(obj.value(bad))
    g = obj.grad(theta)
    assert not prop.last_stats()["forward"].warm
    assert np.all(np.isfinite(g))


def test_options_and_bad_input():
    prop = MGRITPropagation(levels=None, cf=[8, 4], relax=["F", "FCF"], residuals=5,
                            skip=True, reuse_tau=True)
    text = repr(prop)
    assert "levels=None" in text and "residuals=5" in text and "skip=True" in text
    assert "reuse_tau=True" in text
    with pytest.raises(ValueError, match="relax"):
        MGRITPropagation(relax=[])
    with pytest.raises(ValueError, match="relax"):
        MGRITPropagation(relax=["F", "CF"])
    with pytest.raises(ValueError, match="residuals"):
        MGRITPropagation(residuals=-1)
    with pytest.raises(TypeError, match="residuals"):
        MGRITPropagation(residuals=1.5)


# ------------------------------------------------------------------------ the model
@settings(max_examples=15)
@given(depth=st.integers(16, 80), cf=st.sampled_from([2, 4, [8, 2], [4, 2]]),
       levels=st.sampled_from([2, 3, None]), relax=st.sampled_from(["F", ["F", "FCF"]]),
       cycle=st.sampled_from(["V", "F"]), fwd=st.integers(1, 2), bwd=st.integers(1, 2),
       reuse=st.booleans(), weights=st.sampled_from(["inject", "average"]))
def test_model_replays_the_steps_of_the_solver(depth, cf, levels, relax, cycle, fwd, bwd,
                                               reuse, weights):
    cfg = dict(levels=levels, cf=cf, relax=relax, cycle=cycle, fwd_iters=fwd,
               bwd_iters=bwd, reuse_tau=reuse, coarse_weights=weights)
    net, X, y, theta = make(depth=depth, s=6)
    prop = MGRITPropagation(residuals=False, rtol=None, **cfg)
    obj = Objective(net, X, y, propagation=prop)
    try:
        obj.grad(theta)
    except ValueError:
        return  # the grid cannot hold that many levels
    obj.grad(theta)
    st_ = prop.last_stats()
    steps = mgrit_level_steps(depth, **cfg)
    assert steps["forward"] == st_["forward"].level_steps
    assert steps["adjoint"] == st_["adjoint"].level_steps
    finals = [e for e in sweep_trace(depth, **cfg)["adjoint"] if e[3]]
    assert len(finals) == 1 and finals[0][1] == 0  # the last fine sweep (F, or the solve)


def test_model_breakdown_adds_up_and_scales():
    costs = StepCosts(forward=1e-5, forward_coarse=1.1e-5, adjoint=1e-5, adjoint_grad=2e-5,
                      adjoint_coarse=1.1e-5, record=1e-5, serial_layer=3e-5, io=1e-4,
                      latency=2e-6, bandwidth=5e9, state_bytes=8192, sweep=2e-6)
    model = PerformanceModel(costs)
    cfg = dict(levels=None, cf=4)
    for P in (1, 3, 16):
        b = model.breakdown(256, P, **cfg)
        assert sum(v for k, v in b.items() if k != "total") == pytest.approx(b["total"])
    t1, t16 = model.mgrit_time(256, 1, **cfg), model.mgrit_time(256, 16, **cfg)
    assert t16 < t1 / 4
    # one rank: no messages, no waiting; the work is the steps times their costs
    b = model.breakdown(256, 1, **cfg)
    assert b["messages"] == 0.0 and b["waiting"] == 0.0
    steps = mgrit_level_steps(256, **cfg)
    assert b["fine forward"] == pytest.approx(steps["forward"][0] * costs.forward)
    assert b["fine adjoint"] == pytest.approx(steps["adjoint"][0] * costs.adjoint_grad)
    with pytest.raises(ValueError, match="ranks"):
        model.mgrit_time(8, 16, **cfg)
    with pytest.raises(TypeError, match="unknown MGRIT option"):
        model.mgrit_time(64, 2, tol=1e-3)


@pytest.mark.parametrize("width", [4, 16])
def test_whole_interval_kernels_equal_single_steps(width, monkeypatch):
    """Level-0 F-intervals through one kernel call (forward sweep, adjoint chain with the
    gradient in the final sweep) give the single steps' values and gradients bit for bit,
    over warm-started evaluations."""
    net, X, y, theta = make(depth=64, width=width)
    thetas = [theta, theta * (1 + 1e-3), theta]

    def run():
        obj = Objective(net, X, y, propagation=MGRITPropagation())
        return [obj.value_and_grad(t) for t in thetas]

    monkeypatch.setattr(ResNetStepper, "plan_sweep", None)  # whole intervals, not tables
    monkeypatch.setattr(ResNetAdjointStepper, "plan_sweep", None)
    chained = run()
    monkeypatch.setattr(ResNetStepper, "sweep", None)
    monkeypatch.setattr(ResNetAdjointStepper, "sweep", None)
    for (f1, g1), (f2, g2) in zip(chained, run(), strict=True):
        assert f1 == f2
        np.testing.assert_array_equal(g1, g2)


@pytest.mark.parametrize("width,depth,dtype,opts", [
    (4, 64, np.float64, dict()),
    (16, 61, np.float64, dict(cf=2, relax="FCF", cycle="V")),  # short last intervals
    (8, 50, np.float32, dict(cf=(4, 2), relax=["F", "FCF"])),
])
def test_step_tables_equal_single_steps(width, depth, dtype, opts, monkeypatch):
    """Sweeps as step tables (the fine sweep in one kernel call with records and the
    gradient; on coarse levels one call per run of steps sharing a block of averaged
    weights, FAS right-hand sides added in the kernel, coarse adjoint records computed
    once per linearisation) give the single steps' values and gradients bit for bit,
    over warm-started evaluations and for short last intervals."""
    net, X, y, theta = make(depth=depth, width=width)
    if dtype is np.float32:
        net = ResNet(2, width, depth, 3, T=3.0, activation="tanh", dtype=np.float32)
        X, theta = X.astype(np.float32), theta.astype(np.float32)
    thetas = [theta, theta * (1 + 1e-3), theta]

    def run():
        prop = MGRITPropagation(**opts)
        obj = Objective(net, X, y, propagation=prop)
        return [obj.value_and_grad(t) for t in thetas], prop

    tabled, prop = run()
    eng = next(iter(prop._engines.values()))
    for sol in (eng.fwd, eng.bwd):
        for lv in sol.levels[:2]:
            assert lv.plan_f.ops is not None and len(lv.plan_f.ops[0]) < len(lv.plan_f.indep)
    assert len(eng.fwd.levels[0].plan_f.ops[0]) == 1  # the fine sweep: one call
    for cls in (ResNetStepper, ResNetAdjointStepper):
        monkeypatch.setattr(cls, "plan_sweep", None)
        monkeypatch.setattr(cls, "sweep", None)
    single, prop = run()
    assert next(iter(prop._engines.values())).bwd.levels[1].plan_f.ops is None
    for (f1, g1), (f2, g2) in zip(tabled, single, strict=True):
        assert f1 == f2
        np.testing.assert_array_equal(g1, g2)
