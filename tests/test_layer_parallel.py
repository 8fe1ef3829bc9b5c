"""MGRIT (layer-parallel) propagation on one process: the XBraid debugging ladder
for ResNets (one level is the serial sweep bit for bit; enough iterations give the
serial gradient; the gradient error decreases with the iterations), one-shot warm
starts, boost, statistics in the optimizer history, work accounting and bad input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mgnn
from mgnn.mgrit import (
    LayerParallelObjective,
    MGRITPropagation,
    ResNetAdjointStepper,
    ResNetStepper,
)
from mgnn.mgrit.layer_parallel import _Weights
from mgnn.nets import ResNet
from mgnn.objective import Objective


def make(depth=24, width=4, act="tanh", seed=0, s=30, T=3.0, scale=0.5):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((s, 2))
    y = ((X[:, 0] > 0) + (X[:, 1] > 0.3)).astype(int)
    net = ResNet(2, width, depth, 3, T=T, activation=act)
    theta = net.init(rng)
    theta[net.layer_slice(0, depth)] = scale * rng.standard_normal(net.n_residual)
    return net, X, y, theta


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("act", ["tanh", "relu", "smooth_relu"])
@pytest.mark.parametrize("depth", [1, 7, 16])
def test_one_level_bit_identical_to_serial(act, depth):
    net, X, y, theta = make(depth=depth, act=act)
    ser = Objective(net, X, y, tikhonov=1e-3)
    par = Objective(net, X, y, tikhonov=1e-3, propagation=MGRITPropagation(levels=1))
    f0, g0 = ser.value_and_grad(theta)
    ser.value_and_grad(theta)
    for _ in range(2):  # cold and warm
        f, g = par.value_and_grad(theta)
        assert f == f0 and np.array_equal(g, g0)
    assert par.value(theta) == ser.value(theta)
    assert np.array_equal(par.hessp(theta, g0), ser.hessp(theta, g0))
    assert par.counter.work == pytest.approx(ser.counter.work)


@pytest.mark.parametrize("weights", ["inject", "average"])
@pytest.mark.parametrize("levels,cf,relax", [(2, 4, "FCF"), (3, 2, "F"), (4, 2, "FCF")])
def test_converges_to_serial_gradient(weights, levels, cf, relax):
    net, X, y, theta = make(depth=32)
    f0, g0 = Objective(net, X, y).value_and_grad(theta)
    prop = MGRITPropagation(levels=levels, cf=cf, relax=relax, tol=1e-13, rtol=None,
                            fwd_iters=60, bwd_iters=60, coarse_weights=weights,
                            warm_start=False)
    obj = Objective(net, X, y, propagation=prop)
    f, g = obj.value_and_grad(theta)
    assert abs(f - f0) <= 1e-12 * abs(f0)
    assert np.max(np.abs(g - g0)) <= 1e-10 * np.max(np.abs(g0))
    st_ = prop.last_stats()
    assert st_["forward"].residual <= 1e-13 and st_["adjoint"].residual <= 1e-13
    assert st_["forward"].level_steps[0] > net.depth  # MGRIT did more than one sweep


@settings(max_examples=12)
@given(depth=st.integers(8, 40), width=st.integers(2, 5), seed=st.integers(0, 10**6),
       cf=st.sampled_from([2, 4]), act=st.sampled_from(["tanh", "smooth_relu"]),
       weights=st.sampled_from(["inject", "average"]))
def test_gradient_error_decreases_with_iterations(depth, width, seed, cf, act, weights):
    net, X, y, theta = make(depth=depth, width=width, act=act, seed=seed, s=10, scale=0.3)
    g0 = Objective(net, X, y).grad(theta)
    errs = []
    for it in range(1, 7):
        prop = MGRITPropagation(levels=2, cf=cf, fwd_iters=it, bwd_iters=it,
                                coarse_weights=weights, warm_start=False)
        errs.append(rel(Objective(net, X, y, propagation=prop).grad(theta), g0))
    floor = 1e-13
    for a, b in zip(errs, errs[1:], strict=False):
        assert b <= a * (1 + 1e-6) + floor, errs
    assert errs[-1] < errs[0] or errs[0] < floor


def test_steppers_match_the_network_layers():
    net, X, y, theta = make(depth=6, width=3)
    p = net.unpack(theta)
    W = _Weights()
    W.bind(p.W, p.b, 0)
    s = 5
    fs = ResNetStepper(net, s, W)
    fs.S = np.empty((net.depth, s, 3))
    u = np.random.default_rng(1).standard_normal((s, 3))
    out, ref = np.empty_like(u), np.empty_like(u)
    fs.step(u, out, 2.0, 3.0, 0, 2)
    net.step(2, u, ref, theta)
    assert np.array_equal(out, ref)
    # a coarse step over 2 layers with injection = layer 2 with step 2h
    fs.step(u, out, 2.0, 4.0, 1, 2)
    net.step(2, u, ref, theta, h=2 * net.h)
    assert np.array_equal(out, ref)
    assert "inject" in repr(fs) and "Adjoint" in repr(ResNetAdjointStepper(net, s, W))


def test_one_shot_warm_start_converges_at_fixed_theta():
    net, X, y, theta = make(depth=32)
    g0 = Objective(net, X, y).grad(theta)
    prop = MGRITPropagation(levels=2, cf=4, fwd_iters=1, bwd_iters=1)
    obj = Objective(net, X, y, propagation=prop)
    errs = [rel(obj.grad(theta), g0) for _ in range(6)]
    assert errs[-1] < 1e-3 * errs[0]
    assert [e["forward"].warm for e in prop.stats] == [False] + [True] * 5
    prop.reset()
    obj.grad(theta)
    assert not prop.last_stats()["forward"].warm


def test_boost_then_back_to_one_shot():
    net, X, y, theta = make(depth=16)
    prop = MGRITPropagation(levels=2, cf=2, fwd_iters=2, bwd_iters=1, rtol=None)
    obj = Objective(net, X, y, propagation=prop)
    prop.boost(5, 2)
    for _ in range(3):
        obj.value_and_grad(theta)
    nits = [(e["forward"].nit, e["adjoint"].nit) for e in prop.stats]
    assert nits == [(5, 5), (5, 5), (2, 1)]


def test_statistics_reach_the_optimizer_history_and_work_is_charged():
    net, X, y, theta = make(depth=16)
    prop = MGRITPropagation(levels=2, cf=4, fwd_iters=2, bwd_iters=1, rtol=None,
                            reuse_tau=False)
    obj = Objective(net, X, y, propagation=prop)
    res = mgnn.minimize(obj, theta, method="adam", options={"maxiter": 5, "lr": 1e-2})
    h = res.history
    for col in ("mgrit_fwd_nit", "mgrit_fwd_residual", "mgrit_fwd_factor",
                "mgrit_bwd_nit", "mgrit_bwd_residual", "mgrit_bwd_factor"):
        assert col in h
    assert np.nanmax(h["mgrit_fwd_nit"]) == 2 and np.nanmax(h["mgrit_bwd_nit"]) == 1
    # each evaluation costs more than a serial sweep: steps counted from level_steps
    assert res.work > res.njev
    fwd = prop.stats[-1]["forward"].level_steps
    assert sum(fwd) > net.depth
    assert np.isfinite(prop.factors("forward")).all()


def test_distributed_objective_on_one_process_matches_objective():
    net, X, y, theta = make(depth=9)
    f0, g0 = Objective(net, X, y).value_and_grad(theta)
    obj = LayerParallelObjective(net, X, y)
    f, g = obj.value_and_grad(obj.scatter(theta))
    assert f == f0 and np.array_equal(obj.gather(g), g0)
    assert obj.value(obj.scatter(theta)) == f0
    assert obj.accuracy(obj.scatter(theta)) == Objective(net, X, y).accuracy(theta)
    # mini-batches and L-BFGS run unchanged on the local slice
    batch = np.arange(0, 30, 3)
    fb, gb = Objective(net, X, y).value_and_grad(theta, batch=batch)
    fl, gl = obj.value_and_grad(obj.scatter(theta), batch=batch)
    assert fl == fb and np.array_equal(gl, gb)
    res = mgnn.minimize(obj, obj.scatter(theta), method="lbfgs", options={"maxiter": 3})
    assert res.nit == 3
    with pytest.raises(NotImplementedError, match="hessp"):
        obj.hessp(obj.scatter(theta), g)


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="relax"):
        MGRITPropagation(relax="C")
    with pytest.raises(ValueError, match="levels"):
        MGRITPropagation(levels=0)
    with pytest.raises(ValueError, match="cf"):
        MGRITPropagation(cf=1)
    with pytest.raises(ValueError, match="coarse_weights"):
        MGRITPropagation(coarse_weights="mean")
    with pytest.raises(ValueError, match="fwd_iters"):
        MGRITPropagation(fwd_iters=0)
    net, X, y, theta = make(depth=4)
    obj = Objective(net, X, y, propagation=MGRITPropagation(levels=5, cf=2))
    with pytest.raises(ValueError, match="max_levels|levels"):
        obj.grad(theta)
    with pytest.raises(TypeError, match="propagation"):
        LayerParallelObjective(net, X, y, propagation=object())


def test_example_smoke(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent.parent / "examples" / "peaks_layer_parallel.py"
    spec = importlib.util.spec_from_file_location("peaks_layer_parallel", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main(["--quick", "--maxiter", "10", "--eval-every", "5", "--out", str(tmp_path),
                    "--mgrit", "levels=2", "cf=4"])
    for name in ("serial", "mgrit"):
        r = out[name]
        assert 0.0 <= r["val_acc"] <= 1.0 and r["steps"] == 10 and r["time"] > 0
        assert [row[0] for row in r["curve"]] == [5, 10]
    assert out["ranks"] == 1
    assert out["png"] is None or Path(out["png"]).exists()


@pytest.mark.mpi
def test_example_under_mpiexec(tmp_path):
    """The example's own form: ``mpiexec -n 2 python examples/peaks_layer_parallel.py``."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    if shutil.which("mpiexec") is None:
        pytest.skip("mpiexec not available")
    path = Path(__file__).parent.parent / "examples" / "peaks_layer_parallel.py"
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    cmd = ["mpiexec", "-n", "2", sys.executable, str(path), "--quick", "--maxiter", "6",
           "--eval-every", "3", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "MGRIT on 2 rank(s)" in proc.stdout and proc.stdout.count("serial") >= 1
    assert (tmp_path / "peaks_layer_parallel.png").exists()
