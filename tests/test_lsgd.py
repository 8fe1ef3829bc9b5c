"""LSGD: the exact least-squares solve for the closing layer, the alternation with
Adam/SGD on the hidden layers, work accounting, options, and its use as a
smoother of nested iteration and MG/OPT."""

import numpy as np
import pytest
import scipy.linalg
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mgnn import minimize
from mgnn.multilevel import (
    TauCorrected,
    depth_hierarchy,
    mgopt,
    nested_iteration,
    width_hierarchy,
)
from mgnn.nets import ResNet
from mgnn.objective import Objective
from mgnn.optim import FunctionObjective
from mgnn.optim.lsgd import ClosingSolver, solve_closing, solve_flops
from mgnn.optim.stochastic import AdamUpdate


def _problem(n_in=1, width=8, depth=3, n_out=1, s=120, act="relu", seed=0, **kw):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, (s, n_in))
    Y = np.column_stack([np.sin(3 * X[:, 0] + j) + X[:, -1] ** 2 for j in range(n_out)])
    net = ResNet(n_in, width, depth, n_out, activation=act, task="regression",
                 dtype=kw.pop("dtype", np.float64))
    obj = Objective(net, X.astype(net.dtype), Y.astype(net.dtype), **kw)
    return net, obj, net.init(seed, "box", box=(-1.0, 1.0))


# ----------------------------------------------------------------------------- the solve
@settings(max_examples=40)
@given(n_in=st.integers(1, 3), width=st.integers(1, 10), depth=st.integers(1, 4),
       n_out=st.integers(1, 3), act=st.sampled_from(["relu", "tanh", "smooth_relu"]),
       tikhonov=st.sampled_from([0.0, 1e-3]), reg=st.sampled_from([0.0, 1e-2]),
       tau=st.booleans(), batch=st.sampled_from([None, 7, 40]), seed=st.integers(0, 999))
def test_closing_gradient_vanishes_after_the_solve(n_in, width, depth, n_out, act, tikhonov,
                                                    reg, tau, batch, seed):
    """The solve is the exact minimiser over the closing layer: the closing block of the
    gradient of (objective + reg/2 |xi|^2) vanishes, also for mini-batches (even fewer
    samples than unknowns), tau-corrected models and a smoothness term."""
    net, obj, theta = _problem(n_in, width, depth, n_out, s=60, act=act, seed=seed,
                               tikhonov=tikhonov, smoothness=1e-2)
    rng = np.random.default_rng(seed)
    if act != "relu":
        theta = net.init(seed, "glorot")
    model = TauCorrected(obj, 0.1 * rng.standard_normal(net.n_params)) if tau else obj
    idx = None if batch is None else rng.choice(60, batch, replace=False)
    g0 = net.unpack(model.grad(theta, batch=idx)).closing
    new, stats = ClosingSolver(model, reg=reg).solve(theta, idx)
    # without regularisation a tau model on a rank-deficient basis (fewer samples than
    # unknowns, dead ReLU neurons) is unbounded below: no minimiser to find
    assume(not (tau and tikhonov + reg == 0.0 and stats["ls_rank"] < width + 1))
    np.testing.assert_array_equal(new[:-net.n_close], theta[:-net.n_close])
    xi = net.unpack(new).closing
    g = net.unpack(model.grad(new, batch=idx)).closing + reg * xi
    # backward stability: round-off times the size of the gradient's terms
    A, Y = obj.features(new, batch=idx)
    At = np.hstack([A, np.ones((A.shape[0], 1))])
    nA = np.linalg.norm(At, 2)
    t = net.unpack(model.tau).closing if tau else np.zeros(1)
    scale = (nA * (nA * np.linalg.norm(xi) + np.linalg.norm(Y)) / A.shape[0]
             + (tikhonov + reg) * np.linalg.norm(xi) + np.linalg.norm(t))
    assert np.linalg.norm(g) <= 1e-13 * scale, stats
    if not tau and stats["ls_cond"] <= 1e6:
        # plain least squares on a well-conditioned basis: 1e-10 relative to the gradient
        # before the solve (a tau model's minimiser can be far away, its terms large)
        assert np.linalg.norm(g) <= 1e-10 * np.linalg.norm(g0), stats
    assert 1 <= stats["ls_rank"] <= width + 1


@settings(max_examples=30)
@given(s=st.integers(1, 50), w=st.integers(1, 8), m=st.integers(1, 3),
       reg=st.sampled_from([0.0, 1e-8, 1e-1]), rank_drop=st.booleans(),
       seed=st.integers(0, 999))
def test_solve_matches_lstsq_on_the_augmented_system(s, w, m, reg, rank_drop, seed):
    """Against scipy.linalg.lstsq: [A 1; sqrt(s reg) I] xi = [Y; 0] (min-norm when
    reg = 0); a repeated column makes the basis rank deficient. The normal equations
    hold to round-off (backward stability); the solutions agree to round-off times
    the effective condition number sigma_max^2 / (sigma_min^2 + s reg)."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((s, w))
    if rank_drop and w > 1:
        A[:, -1] = A[:, 0]
    Y = rng.standard_normal((s, m))
    xi, stats = solve_closing(A, Y, reg=reg)
    At = np.hstack([A, np.ones((s, 1))])
    normal = At.T @ (At @ xi - Y) + s * reg * xi
    scale = np.linalg.norm(At, 2) * (np.linalg.norm(At, 2) * np.linalg.norm(xi)
                                     + np.linalg.norm(Y))
    assert np.linalg.norm(normal) <= 1e-13 * scale
    sv = np.linalg.svd(At, compute_uv=False)
    smin = sv[-1] if s >= w + 1 else 0.0
    Aa, Ya = At, Y
    if reg:
        Aa = np.vstack([At, np.sqrt(s * reg) * np.eye(w + 1)])
        Ya = np.vstack([Y, np.zeros((w + 1, m))])
    # the same cut-off as the solver (SciPy's default eps keeps round-off singular values)
    ref = scipy.linalg.lstsq(Aa, Ya, cond=np.finfo(float).eps * max(s, w + 1))[0]
    if reg or smin > 1e-8 * sv[0]:
        kappa = sv[0] ** 2 / (smin**2 + s * reg)
        assert np.linalg.norm(xi - ref) <= 1e-14 * kappa * max(1.0, np.linalg.norm(ref))
    else:  # rank deficient: both are the minimum-norm solution
        assert np.linalg.norm(xi - ref) <= 1e-10 * max(1.0, np.linalg.norm(ref))
        assert stats["ls_rank"] == np.linalg.matrix_rank(At)


def test_solve_reports_loss_rank_and_conditioning():
    A = np.linspace(0, 1, 9)[:, None] ** np.arange(1, 4)
    Y = np.cos(A[:, :1])
    xi, st_ = solve_closing(A, Y)
    r = np.hstack([A, np.ones((9, 1))]) @ xi - Y
    assert st_["ls_loss"] == pytest.approx(0.5 * np.mean(r**2), rel=1e-10)
    assert st_["ls_cond"] == pytest.approx(np.linalg.cond(np.hstack([A, np.ones((9, 1))])),
                                           rel=1e-8)
    assert st_["ls_rank"] == 4
    with pytest.raises(ValueError, match="finite"):
        solve_closing(np.array([[np.nan]]), np.ones(1))
    with pytest.raises(ValueError, match="rows"):
        solve_closing(np.ones((3, 1)), np.ones(2))


def test_float32_network_solves_in_float64():
    net, obj, theta = _problem(dtype=np.float32)
    new, _ = ClosingSolver(obj).solve(theta)
    assert new.dtype == np.float32
    g = net.unpack(obj.grad(new)).closing
    assert np.abs(g).max() < 1e-5


def test_solve_on_backend(backend, to_backend):
    net, obj, theta = _problem()
    ref, _ = ClosingSolver(obj).solve(theta)
    X, Y, th = to_backend(obj.X, obj.Y, theta)
    dobj = Objective(net, X, Y)
    new, stats = ClosingSolver(dobj).solve(th)
    assert type(new) is type(th)
    from mgnn.backend import to_host

    np.testing.assert_allclose(to_host(new), ref, rtol=1e-12, atol=1e-12)
    res = minimize(dobj, th, "lsgd", {"maxiter": 3, "gd_steps": 2})
    assert res.success and type(res.x) is type(th)


# ----------------------------------------------------------------------------- the method
def test_k0_is_exactly_repeated_least_squares():
    net, obj, theta = _problem()
    res = minimize(obj, theta, "lsgd", {"maxiter": 4, "gd_steps": 0})
    once, _ = ClosingSolver(obj).solve(theta)
    np.testing.assert_array_equal(res.x, once)
    h = res.history
    assert res.nit == 4 and res.n_solves == 4 and res.n_steps == 0
    assert np.all(h["fun"] == h["fun"][0]) and np.all(h["ls_loss"] == h["ls_loss"][0])
    assert h["step_norm"][0] > 0 and np.all(h["step_norm"][1:] == 0)
    assert h["fun"][0] == pytest.approx(h["ls_loss"][0], rel=1e-12)  # no regulariser
    # mini-batch solves: each cycle fits the closing layer to its batch, nothing else moves
    res = minimize(obj, theta, "lsgd", {"maxiter": 5, "gd_steps": 0, "ls_batch_size": 30,
                                        "rng": 3})
    np.testing.assert_array_equal(res.x[:-net.n_close], theta[:-net.n_close])
    ls_rng = np.random.default_rng(3).spawn(1)[0]  # the solves' batches (4 per epoch)
    perms = [ls_rng.permutation(120) for _ in range(2)]  # the 5th is the first of epoch 2
    np.testing.assert_array_equal(res.x, ClosingSolver(obj).solve(theta, perms[1][:30])[0])


def test_descent_steps_move_only_the_hidden_layers_by_adam():
    net, obj, theta = _problem()
    k, lr = 3, 1e-2
    res = minimize(obj, theta, "lsgd", {"maxiter": 1, "gd_steps": k, "lr": lr,
                                        "final_solve": False})
    x, _ = ClosingSolver(obj).solve(theta)
    upd = AdamUpdate()
    hid = net.n_params - net.n_close
    for _ in range(k):
        g = obj.grad(x)
        x = x.copy()
        x[:hid] -= upd(g[:hid], lr)
    np.testing.assert_array_equal(res.x, x)
    # with the final solve, the closing layer is the least-squares one for the new basis
    res2 = minimize(obj, theta, "lsgd", {"maxiter": 1, "gd_steps": k, "lr": lr})
    np.testing.assert_array_equal(res2.x, ClosingSolver(obj).solve(x)[0])
    assert np.abs(net.unpack(res2.jac).closing).max() < 1e-12 * np.abs(res2.jac).max() + 1e-14


def test_work_is_counted_exactly():
    net, obj, theta = _problem(s=100)
    res = minimize(obj, theta, "lsgd", {"maxiter": 6, "gd_steps": 2, "batch_size": 25,
                                        "ls_batch_size": 50, "rng": 0})
    ls = solve_flops(50, net.width, 1) / net.flops(100)
    # 7 solves (one after the last cycle), each a value sweep on half the data and its
    # flops; 12 descent steps on a quarter; the final evaluation on all data
    expect = 7 * (0.5 / 3 + ls) + 12 * 0.25 + 1.0
    assert res.work == pytest.approx(expect, rel=1e-12)
    assert np.allclose(res.history["ls_work"], ls)
    assert res.nfev == 7 + 12 + 1 and res.njev == 12 + 1


def test_convergence_history_and_result():
    net, obj, theta = _problem(s=200, width=10)
    res = minimize(obj, theta, "lsgd", {"maxiter": 60, "gd_steps": 3, "lr": 3e-3,
                                        "gtol": 0.0})
    h = res.history
    assert res.success and res.status == 0 and "60 cycles" in res.message
    for col in ("fun", "grad_norm", "step_norm", "lr", "ls_loss", "ls_rank", "ls_cond",
                "ls_work", "work", "time"):
        assert col in h and len(h[col]) == 60, col
    assert h["fun"][-1] < 0.2 * h["fun"][0]
    np.testing.assert_allclose(h["fun"], h["ls_loss"], rtol=1e-10)  # full batch, no regulariser
    assert res.fun <= h["fun"][-1] * 1.01
    # the adaptive basis beats the best fit in the initial basis
    assert res.fun < 0.5 * ClosingSolver(obj).solve(theta)[1]["ls_loss"]
    # gtol stops a full-batch run after a solve
    res = minimize(obj, theta, "lsgd", {"maxiter": 10, "gtol": 1e3})
    assert res.success and res.nit == 1 and "gtol" in res.message and res.n_steps == 0
    assert len(res.history["ls_rank"]) == 1 and res.history["step_norm"][0] > 0


def test_descent_batches_are_those_of_adam():
    net, obj, theta = _problem(s=60)
    seen = {"lsgd": [], "adam": []}

    class Recording(Objective):
        key = None

        def value_and_grad(self, theta, batch=None):
            seen[self.key].append(None if batch is None else np.asarray(batch).copy())
            return super().value_and_grad(theta, batch)

    rec = Recording(net, obj.X, obj.Y)
    rec.key = "adam"
    minimize(rec, theta, "adam", {"maxiter": 9, "batch_size": 20, "rng": 4})
    rec.key = "lsgd"
    minimize(rec, theta, "lsgd", {"maxiter": 3, "gd_steps": 3, "batch_size": 20, "rng": 4})
    assert len(seen["lsgd"]) == 10 and seen["lsgd"][-1] is None  # + the final evaluation
    for a, b in zip(seen["adam"][:9], seen["lsgd"][:9], strict=True):
        np.testing.assert_array_equal(a, b)


def test_sgd_inner_and_schedule():
    net, obj, theta = _problem()
    res = minimize(obj, theta, "lsgd", {"maxiter": 20, "gd_steps": 2, "inner": "sgd",
                                        "momentum": 0.9, "lr": 1e-3, "schedule": "cosine"})
    assert res.success and res.n_steps == 40
    lr = res.history["lr"]
    assert lr[0] == pytest.approx(1e-3 * 0.5 * (1 + np.cos(np.pi * 1 / 40)))
    assert np.all(np.diff(lr) < 0)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
def test_divergence_and_callback_stop():
    net, obj, theta = _problem(act="smooth_relu")
    res = minimize(obj, theta, "lsgd", {"maxiter": 50, "gd_steps": 2, "inner": "sgd",
                                        "lr": 1e100})
    assert not res.success and res.status == 3 and "Diverged" in res.message
    assert np.isfinite(res.x).all() and np.isfinite(obj.value(res.x))

    def stop(intermediate_result):
        if intermediate_result.nit == 2:
            raise StopIteration

    res = minimize(obj, theta, "lsgd", {"maxiter": 10}, callback=stop)
    assert res.status == 99 and res.nit == 2 and not res.success


def test_bad_options_and_objectives():
    net, obj, theta = _problem()
    bad = [({"gd_steps": -1}, ValueError, "gd_steps"),
           ({"inner": "lbfgs"}, ValueError, "inner"),
           ({"momentum": 0.9}, ValueError, "'momentum' has no effect with inner='adam'"),
           ({"beta1": 0.5, "inner": "sgd"}, ValueError, "'beta1' has no effect"),
           ({"gd_steps": 0, "lr": 0.1}, ValueError, "'lr' has no effect with gd_steps=0"),
           ({"batch_size": 10, "gtol": 1e-3}, ValueError, "gtol"),
           ({"batch_size": 1000}, ValueError, "batch_size must be <= n_samples"),
           ({"ls_batch_size": 0}, ValueError, "ls_batch_size"),
           ({"ls_reg": -1.0}, ValueError, "ls_reg"),
           ({"final_solve": 1}, TypeError, "final_solve"),
           ({"rng": 3}, ValueError, "'rng' has no effect without mini-batches"),
           ({"maxiter": 2.5}, TypeError, "maxiter"),
           ({"bogus": 1}, TypeError, "unknown option 'bogus' for method 'lsgd'")]
    for opts, exc, match in bad:
        with pytest.raises(exc, match=match):
            minimize(obj, theta, "lsgd", opts)
    X = np.zeros((4, 1))
    cnet = ResNet(1, 3, 2, 2)
    with pytest.raises(ValueError, match="quadratic in the closing layer"):
        minimize(Objective(cnet, X, np.zeros(4, int)), cnet.init(0), "lsgd")
    with pytest.raises(TypeError, match="features"):
        minimize(FunctionObjective(lambda x: x @ x, lambda x: 2 * x), np.ones(2), "lsgd")


# ----------------------------------------------------------------------------- multilevel
def test_lsgd_in_nested_iteration_and_mgopt():
    net, obj, theta = _problem(s=150, width=8, depth=4)
    H = depth_hierarchy(obj, 2)
    th_coarse = H[1].net.init(0, "box", box=(-1.0, 1.0))
    res = nested_iteration(H, [10, 10], method="lsgd", options={"gd_steps": 2, "lr": 3e-3},
                           theta0=th_coarse)
    assert res.success and res.nit == 20
    assert res.fun < ClosingSolver(obj).solve(H[0].P(th_coarse))[1]["ls_loss"]
    assert np.abs(net.unpack(obj.grad(res.x)).closing).max() < 1e-10  # ends with a solve
    for tau in ("none", "full"):
        Hw = width_hierarchy(obj, theta, 2)
        r = mgopt(Hw, theta, smoother="lsgd", smoother_options={"gd_steps": 2, "lr": 3e-3},
                  pre=1, post=1, tau=tau, cycles=4)
        assert r.success and np.isfinite(r.fun)
        assert r.fun < r.history["fun"][0]
    # a callable smoother too
    r = mgopt(depth_hierarchy(obj, 2), theta,
              smoother=lambda o, x, options, cb: minimize(o, x, "lsgd", options, cb),
              smoother_options={"gd_steps": 1}, cycles=2, tau="full")
    assert r.success and r.fun < r.history["fun"][0]
