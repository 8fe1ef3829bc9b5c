"""A PINN objective through every optimizer and multilevel solver, and through MGRIT."""

import numpy as np
import pytest

from mgnn import minimize
from mgnn.data.pde import burgers_1d, poisson_1d
from mgnn.multilevel import (
    depth_hierarchy,
    mgopt,
    nested_iteration,
    rmtr,
    width_hierarchy,
)
from mgnn.nets import ResNet
from mgnn.pinn import MGRITStreams, PINNObjective, SerialStreams


def _poisson(width=6, depth=8, act="tanh", n=24, bc="penalty", **kw):
    p = poisson_1d()
    net = ResNet(1, width, depth, 1, task="regression", T=2.0, activation=act)
    return PINNObjective.from_problem(net, p, p.sample(n, 2, seed=0), bc=bc, **kw), p


@pytest.mark.parametrize("method,options", [
    ("sgd", {"lr": 1e-5, "momentum": 0.9, "batch_size": 8, "maxiter": 30, "rng": 0}),
    ("adam", {"lr": 1e-2, "batch_size": 8, "maxiter": 30, "rng": 0}),
    ("lbfgs", {"maxiter": 20}),
    ("trust-region", {"maxiter": 10}),
    ("trust-region", {"maxiter": 10, "hessian": "lsr1"}),
])
def test_every_optimizer_reduces_the_pinn_loss(method, options):
    obj, _ = _poisson()
    theta0 = obj.net.init(0)
    f0 = obj.value(theta0)
    res = minimize(obj, theta0, method=method, options=options)
    assert obj.value(res.x) < f0 and np.isfinite(res.x).all()
    assert res.work > 0 and len(res.history["work"]) > 1


def test_trust_region_with_gauss_newton_products():
    obj, _ = _poisson(hessian="gauss_newton")
    theta0 = obj.net.init(0)
    res = minimize(obj, theta0, method="trust-region", options={"maxiter": 15})
    assert res.fun < obj.value(theta0) and res.nhev > 0


def test_depth_hierarchy_nested_iteration_rmtr_mgopt():
    obj, p = _poisson(depth=8)
    H = depth_hierarchy(obj, levels=3)
    assert [type(lv.objective).__name__ for lv in H.levels] == ["PINNObjective"] * 3
    assert [lv.objective.counter.scale for lv in H.levels][1] < 1.0
    # exact first-order coherence of the transfer on the PINN loss: grad(f o P) = R grad f
    T = H.levels[0].transfer
    xc = H.levels[1].net.init(1)
    v = np.random.default_rng(0).standard_normal(xc.size)
    e = 1e-6
    fd = (obj.value(T.prolong(xc + e * v)) - obj.value(T.prolong(xc - e * v))) / (2 * e)
    assert fd == pytest.approx(T.restrict(obj.grad(T.prolong(xc))) @ v, rel=1e-6)

    res = nested_iteration(H, [20, 10, 10], method="lbfgs")
    assert res.x.shape == (obj.net.n_params,) and np.isfinite(res.fun)
    theta0 = obj.net.init(0)
    f0 = obj.value(theta0)
    r = rmtr(H, theta0, {"maxiter": 3})
    assert r.fun < f0
    X, U = p.evaluation_grid()
    m = mgopt(H, theta0, "adam", {"lr": 1e-2}, pre=3, post=3, cycles=3, rng=0,
              validation=(X[::50], U[::50]))
    assert m.fun < f0 and "val_mean_error" in m.history


def test_width_transfer_is_exact_on_pinn_losses_of_homogeneous_networks():
    # The width transfer acts on theta only, so it applies to PINN objectives unchanged.
    # For a positively homogeneous activation (identity) the prolonged coarse network
    # computes the coarse network's outputs for all inputs, hence the same input
    # derivatives and the same PINN loss: f(P x_c) = f_c(x_c).
    obj, _ = _poisson(width=8, depth=4, act="identity")
    H = width_hierarchy(obj, obj.net.init(0), levels=2)
    T, fc = H.levels[0].transfer, H.levels[1].objective
    xc = H.levels[1].net.init(3) + 0.1
    assert obj.value(T.prolong(xc)) == pytest.approx(fc.value(xc), rel=1e-12)
    res = mgopt(H, obj.net.init(0), "adam", {"lr": 1e-2}, pre=2, post=2, cycles=2, rng=0)
    assert np.isfinite(res.fun)


def test_mgrit_streams_one_level_is_the_serial_sweep_bit_for_bit():
    p = burgers_1d()
    net = ResNet(2, 5, 8, 1, task="regression", T=2.0)
    pts = p.sample(12, 6, seed=0)
    serial = PINNObjective.from_problem(net, p, pts, propagation=SerialStreams())
    lp = serial.with_net(net, MGRITStreams(levels=1))
    theta = net.init(0)
    f0, g0 = serial.value_and_grad(theta)
    f1, g1 = lp.value_and_grad(theta)
    assert f0 == f1 and np.array_equal(g0, g1)
    v = np.random.default_rng(0).standard_normal(theta.size)
    assert np.array_equal(serial.hessp(theta, v), lp.hessp(theta, v))


def test_mgrit_streams_converge_to_the_serial_gradient_and_charge_work():
    p = burgers_1d()
    net = ResNet(2, 5, 16, 1, task="regression", T=2.0)
    pts = p.sample(12, 6, seed=0)
    serial = PINNObjective.from_problem(net, p, pts)
    theta = net.init(0)
    g0 = serial.grad(theta)
    exact = serial.with_net(net, MGRITStreams(levels=2, cf=4, tol=1e-13, fwd_iters=30,
                                              bwd_iters=30))
    g = exact.grad(theta)
    assert np.linalg.norm(g - g0) <= 1e-10 * np.linalg.norm(g0)
    prop = MGRITStreams(levels=2, cf=4, fwd_iters=1, bwd_iters=1)
    oneshot = serial.with_net(net, prop)
    errs = [np.linalg.norm(oneshot.grad(theta) - g0) for _ in range(4)]  # warm-started
    assert errs[-1] < errs[0]
    assert oneshot.counter.work > 4 * serial.counter.cost["grad"]  # extra MGRIT steps charged
    res = minimize(oneshot, theta, method="adam", options={"lr": 1e-2, "maxiter": 3})
    assert "mgrit_fwd_factor" in res.history


def test_domain_decomposition_by_collocation_points():
    from mgnn.dd import by_data, spqn

    p = burgers_1d()
    net = ResNet(2, 5, 4, 1, task="regression", T=2.0)
    obj = PINNObjective.from_problem(net, p, p.sample(40, 12, seed=0))
    theta = net.init(0)
    dec = by_data(obj, 3, X="objective", axis=0)  # slabs in x, all terms
    f = obj.value(theta)
    # the weighted batch values of a partition are the subset values: they sum to f
    parts = [w * obj.value(theta, s) for w, s in zip(dec.data_weights, dec.subdomains,
                                                      strict=True)]
    assert sum(parts) == pytest.approx(f, rel=1e-12)
    for s, v in zip(dec.subdomains, parts, strict=True):
        assert obj.subset(s).value(theta) == pytest.approx(v, rel=1e-12)
    res = spqn(obj, theta, dec, options={"local_iters": 2, "global_iters": 1, "maxiter": 3})
    assert res.fun < f


def test_lsgd_runs_on_a_linear_pinn_and_refuses_a_nonlinear_one():
    # LSGD fits the closing layer by least squares when the residuals are affine in it
    # (a linear PDE; tests/test_lsgd_pinn.py); features() is for data targets only
    obj, _ = _poisson()
    res = minimize(obj, obj.net.init(0), method="lsgd", options={"maxiter": 2})
    assert res.success and res.n_solves == 3
    with pytest.raises(NotImplementedError, match="needs data targets"):
        obj.features(obj.net.init(0))
    bobj = PINNObjective.from_problem(ResNet(2, 4, 2, 1, task="regression"), burgers_1d(),
                                      burgers_1d().sample(8, 6))
    with pytest.raises(ValueError, match="'burgers' .* nonlinear through u\\*u_x"):
        minimize(bobj, bobj.net.init(0), method="lsgd", options={"maxiter": 2})
