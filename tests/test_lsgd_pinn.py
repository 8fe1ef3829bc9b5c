"""LSGD on PINN objectives of linear PDEs: the closing layer's least-squares system
(design matrix of the operator applied to the feature streams), the exact solve,
repeated least squares, refusal of nonlinear operators and bad input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgnn import minimize
from mgnn.data.pde import diffusion_advection_1d, poisson_1d, poisson_2d
from mgnn.multilevel import TauCorrected
from mgnn.nets import ResNet
from mgnn.optim.lsgd import ClosingSolver, solve_flops
from mgnn.pinn import Condition, PINNObjective, burgers

PROBLEMS = {"poisson_1d": poisson_1d, "poisson_2d": poisson_2d,
            "diffusion_advection": diffusion_advection_1d}


def _pinn(name="poisson_1d", width=6, depth=2, act="tanh", bc="penalty", n=30, seed=0,
          **kw):
    p = PROBLEMS[name]()
    net = ResNet(p.domain.d, width, depth, 1, activation=act, task="regression")
    obj = PINNObjective.from_problem(net, p, p.sample(n, 8, seed=seed), bc=bc,
                                     boundary_weight=kw.pop("boundary_weight", 1.0), **kw)
    return net, obj, net.init(seed, "glorot")


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(sorted(PROBLEMS)), width=st.integers(1, 8),
       depth=st.integers(1, 3), act=st.sampled_from(["tanh", "identity"]),
       bc=st.sampled_from(["penalty", "exact"]), tikhonov=st.sampled_from([0.0, 1e-3]),
       reg=st.sampled_from([0.0, 1e-2]), tau=st.booleans(), batch=st.sampled_from([None, 5, 20]),
       seed=st.integers(0, 999))
def test_closing_gradient_vanishes_after_the_solve(name, width, depth, act, bc, tikhonov, reg,
                                                    tau, batch, seed):
    """The solve is the exact minimiser of the PINN loss over the closing layer: its
    gradient block (plus reg * xi) vanishes to round-off, and to 1e-10 relative to the
    gradient before the solve when the system is well conditioned."""
    net, obj, theta = _pinn(name, width, depth, act, bc, seed=seed, tikhonov=tikhonov,
                            smoothness=1e-2)
    rng = np.random.default_rng(seed)
    model = TauCorrected(obj, 0.1 * rng.standard_normal(net.n_params)) if tau else obj
    idx = None if batch is None else rng.choice(obj.n_samples, batch, replace=False)
    g0 = net.unpack(model.grad(theta, batch=idx)).closing
    new, stats = ClosingSolver(model, reg=reg).solve(theta, idx)
    np.testing.assert_array_equal(new[:-net.n_close], theta[:-net.n_close])
    xi = net.unpack(new).closing
    g = net.unpack(model.grad(new, batch=idx)).closing + reg * xi
    D, b, c = obj.closing_system(new, idx)
    M = np.sqrt(c)[:, None] * D
    nM = np.linalg.norm(M, 2)
    t = net.unpack(model.tau).closing if tau else np.zeros(1)
    mu = tikhonov + reg
    if tau and mu == 0.0 and stats["ls_rank"] < width + 1:
        return  # unbounded along the dropped directions: no minimiser
    scale = (nM * (nM * np.linalg.norm(xi) + np.linalg.norm(np.sqrt(c) * b))
             + mu * np.linalg.norm(xi) + np.linalg.norm(t))
    assert np.linalg.norm(g) <= 1e-12 * scale, stats
    if not tau and stats["ls_cond"] <= 1e6:
        assert np.linalg.norm(g) <= 1e-10 * np.linalg.norm(g0), stats
    assert 0 <= stats["ls_rank"] <= width + 1  # 0: -u_xx of linear features on a batch


@pytest.mark.parametrize("name,bc", [("poisson_1d", "penalty"), ("poisson_2d", "exact"),
                                     ("diffusion_advection", "exact"),
                                     ("diffusion_advection", "penalty")])
def test_design_matrix_reproduces_the_residuals(name, bc):
    """``D xi - b`` are the objective's residuals: the interior rows equal
    ``residuals()``, the Dirichlet rows ``u - g``, and the weighted sum of squares is
    the value, on all points and on a mini-batch."""
    net, obj, theta = _pinn(name, width=5, depth=3, bc=bc, n=25, boundary_weight=3.0)
    p = PROBLEMS[name]()
    xi = net.unpack(theta).closing
    D, b, c = obj.closing_system(theta)
    r = D @ xi - b
    n_int = obj.terms[0].n
    r_int = obj.residuals(theta, obj.terms[0].X, p.source)
    np.testing.assert_allclose(r[:n_int], r_int, rtol=1e-12, atol=1e-12 * np.abs(r_int).max())
    for k, term in enumerate(obj.terms[1:], start=1):
        rows = slice(obj.offsets[k], obj.offsets[k + 1])
        u, g = obj.solution(theta, term.X), term.f
        np.testing.assert_allclose(r[rows], u - g, rtol=1e-12, atol=1e-13)
        np.testing.assert_array_equal(c[rows], 3.0 / term.n)
    val = obj.value(theta)
    assert 0.5 * np.dot(c * r, r) == pytest.approx(val, rel=1e-13)
    idx = np.array([0, 3, 4, obj.n_samples - 1])
    Db, bb, cb = obj.closing_system(theta, idx)
    rb = Db @ xi - bb
    np.testing.assert_allclose(rb, r[idx], rtol=1e-13, atol=1e-13)
    assert 0.5 * np.dot(cb * rb, rb) == pytest.approx(obj.value(theta, idx), rel=1e-13)


def test_k0_is_exactly_repeated_least_squares():
    net, obj, theta = _pinn("poisson_2d", width=6, depth=2)
    res = minimize(obj, theta, "lsgd", {"maxiter": 3, "gd_steps": 0})
    once, _ = ClosingSolver(obj).solve(theta)
    np.testing.assert_array_equal(res.x, once)
    h = res.history
    assert res.nit == 3 and res.n_solves == 3 and res.n_steps == 0
    assert np.all(h["fun"] == h["fun"][0]) and np.all(h["ls_loss"] == h["ls_loss"][0])
    assert h["fun"][0] == pytest.approx(h["ls_loss"][0], rel=1e-12)


def test_the_solve_is_charged_as_a_value_sweep_plus_its_flops():
    net, obj, theta = _pinn("poisson_2d", width=6, depth=2, n=40)
    before = obj.counter.work
    obj.value(theta)
    sweep = obj.counter.work - before
    before = obj.counter.work
    _, stats = ClosingSolver(obj).solve(theta)
    s = obj.n_samples
    assert stats["ls_work"] == pytest.approx(solve_flops(s, 6, 1) / net.flops(s), rel=1e-15)
    assert obj.counter.work - before == pytest.approx(sweep + stats["ls_work"], rel=1e-14)


def test_lsgd_runs_on_mini_batches_and_trains_on_all_points():
    net, obj, _ = _pinn("poisson_2d", width=10, depth=2, n=40)
    theta = net.init(0, "box", box=(0.0, 1.0))
    f0 = obj.value(theta)
    res = minimize(obj, theta, "lsgd", {"maxiter": 20, "gd_steps": 2, "lr": 1e-3,
                                        "batch_size": 16, "ls_batch_size": 30, "rng": 1})
    # a solve on a batch fits that batch (and may extrapolate badly to the others)
    assert res.success and res.n_solves == 21 and res.n_steps == 40
    assert np.all(np.isfinite(res.history["ls_loss"])) and np.isfinite(res.fun)
    full = minimize(obj, theta, "lsgd", {"maxiter": 20, "gd_steps": 2, "lr": 1e-3})
    assert full.success and full.fun < 0.05 * f0
    assert np.abs(net.unpack(obj.grad(full.x)).closing).max() < 1e-9  # ends with a solve


def test_nonlinear_pdes_are_refused_with_the_operator_named():
    x = np.linspace(0.1, 0.9, 5)
    X = np.c_[x, x]
    net = ResNet(2, 4, 2, 1, task="regression")
    bc = Condition(np.c_[x, 0 * x], np.sin(x), name="u(x,0)")
    for pde, term in (("burgers", r"u\*u_x"), ("allen_cahn", r"5\*u\^3"),
                      ("klein_gordon", r"u\^3")):
        obj = PINNObjective(net, pde, X, conditions=[bc])
        with pytest.raises(ValueError, match=rf"method 'lsgd' .* linear in u; '{pde}' "
                                             rf"\(.*\) is nonlinear through {term}"):
            minimize(obj, net.init(0), "lsgd", {"maxiter": 1})
        with pytest.raises(ValueError, match=f"'{pde}'"):
            obj.closing_system(net.init(0))
    with pytest.raises(ValueError, match="apply_linear needs .* linear in u; 'burgers'"):
        burgers().apply_linear(np.zeros((4, 2, 3)), burgers().layout())
    # a derivative condition is linear: accepted
    obj = PINNObjective(net, "diffusion_advection", X,
                        conditions=[bc, Condition(np.c_[x, 0 * x], kind="derivative", dim=1)])
    assert minimize(obj, net.init(0), "lsgd", {"maxiter": 1, "gd_steps": 0}).success


def test_bad_input():
    net, obj, theta = _pinn("poisson_1d", width=4, depth=2, n=10)
    s = obj.n_samples
    with pytest.raises(ValueError, match=rf"out must have shape \({s}, 6\)"):
        obj.closing_system(theta, out=np.empty((s, 5)))
    with pytest.raises(ValueError, match=r"batch indices must lie in \[0, "):
        obj.closing_system(theta, np.array([s]))
    with pytest.raises(TypeError, match="batch must be a 1-D integer index array"):
        obj.closing_system(theta, np.array([0.5]))
    with pytest.raises(ValueError, match="theta"):
        obj.closing_system(theta[:-1])
    with pytest.raises(NotImplementedError, match="closing_system"):
        obj.features(theta)
    bad = theta.copy()
    bad[0] = np.nan
    with pytest.raises(ValueError, match="theta0 contains NaN"):
        minimize(obj, bad, "lsgd", {"maxiter": 3})


def test_lsgd_with_layer_parallel_stream_sweeps():
    """With MGRIT stream sweeps (the layer-parallel propagation of PINNs) the solve uses
    the same inexact forward sweep as the loss: its closing gradient vanishes too."""
    from mgnn.pinn import MGRITStreams

    p = poisson_2d()
    net = ResNet(2, 8, 8, 1, task="regression")
    obj = PINNObjective.from_problem(net, p, p.sample(40, 8), bc="exact",
                                     propagation=MGRITStreams())
    res = minimize(obj, net.init(0, "box", box=(0.0, 1.0)), "lsgd",
                   {"maxiter": 5, "gd_steps": 2, "lr": 1e-3})
    g = obj.grad(res.x)
    assert res.success and np.abs(net.unpack(g).closing).max() < 1e-10 * np.abs(g).max()
