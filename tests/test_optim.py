"""Single-level optimizers: accuracy against scipy, work, history, callbacks,
divergence and option checking."""

import numpy as np
import pytest
import scipy.optimize as so
from scipy.optimize import OptimizeResult, rosen, rosen_der, rosen_hess_prod

from mgnn.optim import FunctionObjective, History, minimize, schedules
from mgnn.vectorspace import EuclideanSpace

# ---------------------------------------------------------------------------
# problems with known minimisers
# ---------------------------------------------------------------------------


def _quadratic(n=20, cond=1e3, seed=0):
    """f = 1/2 (x - x*)^T A (x - x*), A SPD with the given condition number."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = Q @ np.diag(np.logspace(0, np.log10(cond), n)) @ Q.T
    xs = rng.standard_normal(n)

    def f(x):
        d = x - xs
        return 0.5 * d @ A @ d

    return (f, lambda x: A @ (x - xs), lambda x, v: A @ v), np.zeros(n), xs


def _rosen(x0):
    return (rosen, rosen_der, rosen_hess_prod), np.asarray(x0, float), np.ones(len(x0))


PROBLEMS = {
    "quadratic20": _quadratic(),
    "rosen2": _rosen([-1.2, 1.0]),
    "rosen10": _rosen(np.zeros(10)),
}

ITER_TABLE = {}  # filled by the comparison tests, printed at the end


def _obj(fns):
    return FunctionObjective(*fns)


def _gnorm(res):
    return float(np.linalg.norm(res.jac))


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_lbfgs_matches_scipy(name):
    fns, x0, xs = PROBLEMS[name]
    res = minimize(_obj(fns), x0, method="lbfgs", options={"gtol": 1e-8})
    # L-BFGS-B tests the infinity norm of the gradient; ask for the 2-norm bound
    ref = so.minimize(fns[0], x0, jac=fns[1], method="L-BFGS-B",
                      options={"gtol": 1e-8 / np.sqrt(x0.size), "ftol": 0.0, "maxiter": 5000})
    ITER_TABLE[("lbfgs", name)] = (res.nit, ref.nit)
    print(f"{name}: lbfgs nit={res.nit} (L-BFGS-B {ref.nit}), work={res.work:.1f}")
    assert res.success, res.message
    assert _gnorm(res) <= 1e-8
    np.testing.assert_allclose(res.x, xs, atol=1e-6)
    assert res.nit <= 2 * ref.nit + 5


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_trust_region_exact_matches_scipy(name):
    fns, x0, xs = PROBLEMS[name]
    res = minimize(_obj(fns), x0, method="trust-region", options={"gtol": 1e-8})
    ref = so.minimize(fns[0], x0, jac=fns[1], hessp=fns[2], method="trust-ncg",
                      options={"gtol": 1e-8})
    ITER_TABLE[("trust-region", name)] = (res.nit, ref.nit)
    print(f"{name}: trust-region nit={res.nit} (trust-ncg {ref.nit}), nhev={res.nhev}")
    assert res.success, res.message
    assert _gnorm(res) <= 1e-8
    np.testing.assert_allclose(res.x, xs, atol=1e-6)
    assert res.nit <= 2 * ref.nit + 5


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_trust_region_lsr1_converges(name):
    fns, x0, xs = PROBLEMS[name]
    res = minimize(FunctionObjective(fns[0], fns[1]), x0, method="trust-region",
                   options={"gtol": 1e-8, "hessian": "lsr1", "maxiter": 2000})
    print(f"{name}: trust-region L-SR1 nit={res.nit}")
    assert res.success, res.message
    assert _gnorm(res) <= 1e-8 and res.nhev == 0
    np.testing.assert_allclose(res.x, xs, atol=1e-6)


@pytest.mark.parametrize("subproblem", ["dogleg", "cauchy"])
def test_trust_region_other_subproblems(subproblem):
    fns, x0, xs = _quadratic(n=8, cond=10.0)
    res = minimize(_obj(fns), x0, method="trust-region",
                   options={"gtol": 1e-8, "subproblem": subproblem, "maxiter": 3000})
    assert res.success, res.message
    np.testing.assert_allclose(res.x, xs, atol=1e-6)
    if subproblem == "dogleg":  # Newton steps on a convex quadratic
        assert res.nit <= 10


def test_rosenbrock_dogleg():
    fns, x0, xs = PROBLEMS["rosen2"]
    res = minimize(_obj(fns), x0, method="trust-region",
                   options={"gtol": 1e-8, "subproblem": "dogleg"})
    assert res.success and np.allclose(res.x, xs)


def test_zzz_print_iteration_table():
    """Prints the iteration counts collected above (run with -s to see them)."""
    for (method, name), (ours, ref) in sorted(ITER_TABLE.items()):
        print(f"{method:13s} {name:12s} mgnn {ours:4d}  scipy {ref:4d}")


# ---------------------------------------------------------------------------
# result, work and history
# ---------------------------------------------------------------------------


def test_result_fields_and_theta0_untouched():
    fns, x0, _ = PROBLEMS["rosen2"]
    keep = x0.copy()
    res = minimize(_obj(fns), x0, method="trust-region")
    for key in ("x", "fun", "jac", "nit", "nfev", "njev", "nhev", "success", "status",
                "message", "work", "history"):
        assert key in res
    assert isinstance(res, OptimizeResult)
    np.testing.assert_array_equal(x0, keep)
    assert res.x is not x0


@pytest.mark.parametrize("method,opts", [
    ("lbfgs", {}),
    ("trust-region", {}),
    ("trust-region", {"hessian": "lsr1"}),
    ("sgd", {"lr": 1e-3, "maxiter": 20}),
    ("adam", {"lr": 1e-2, "maxiter": 20}),
])
def test_work_and_history(method, opts):
    fns, x0, _ = PROBLEMS["rosen2"]
    obj = _obj(fns) if opts.get("hessian") != "lsr1" else FunctionObjective(*fns[:2])
    obj.counter.work = 5.0  # work done before the run does not count
    res = minimize(obj, x0, method=method, options=opts)
    h = res.history
    assert isinstance(h, History)
    cost = obj.counter.cost
    assert res.work == pytest.approx(obj.counter.work - 5.0)
    # each value_and_grad costs 1, each hessp cost['hessp']
    assert res.work == pytest.approx(res.njev + cost["hessp"] * res.nhev)
    work = h["work"]
    assert np.all(np.diff(work) > 0)
    assert work[-1] <= res.work + 1e-12
    for key in ("fun", "grad_norm", "step_norm", "nfev", "njev", "nhev", "time", "nit"):
        assert len(h[key]) == len(h)
    if method in ("lbfgs", "trust-region"):
        assert len(h) == res.nit + 1  # row 0 is the initial point
        assert h["fun"][-1] == res.fun
        assert work[-1] == pytest.approx(res.work)
    else:
        assert len(h) == res.nit
    if method == "trust-region":
        assert np.all(np.isfinite(h["radius"]))
    d = h.as_dict()
    assert set(d) == set(h.keys())


def test_mini_batch_work_shares():
    obj, n = _least_squares(n_samples=40)
    res = minimize(obj, np.zeros(3), method="sgd",
                   options={"lr": 0.05, "batch_size": 10, "epochs": 3, "rng": 0})
    assert res.nit == 12
    # 12 batches of a quarter of the data, plus one final full evaluation
    assert res.work == pytest.approx(12 * 0.25 + 1.0)
    np.testing.assert_allclose(res.history["work"], 0.25 * np.arange(1, 13))
    assert res.history["epoch"].tolist() == [0] * 4 + [1] * 4 + [2] * 4


# ---------------------------------------------------------------------------
# stochastic methods
# ---------------------------------------------------------------------------


def _least_squares(n_samples=50, dim=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, dim))
    w = np.arange(1.0, dim + 1)
    y = X @ w

    def loss(t, idx):
        i = slice(None) if idx is None else idx
        return 0.5 * np.mean((X[i] @ t - y[i]) ** 2)

    def grad(t, idx):
        i = slice(None) if idx is None else idx
        return X[i].T @ (X[i] @ t - y[i]) / len(y[i])

    return FunctionObjective(loss, grad, n_samples=n_samples), n_samples


@pytest.mark.parametrize("method,opts", [
    ("sgd", {"lr": 0.5}),
    ("sgd", {"lr": 0.2, "momentum": 0.8}),
    ("sgd", {"lr": 0.2, "momentum": 0.8, "nesterov": True}),
    ("adam", {"lr": 0.05, "maxiter": 5000}),
])
def test_stochastic_full_batch_converges(method, opts):
    fns, x0, xs = _quadratic(n=5, cond=3.0)
    res = minimize(_obj(fns), x0, method=method, options=dict(opts, gtol=1e-8))
    assert res.success and res.status == 0, res.message
    assert _gnorm(res) <= 1e-8
    np.testing.assert_allclose(res.x, xs, atol=1e-7)


@pytest.mark.parametrize("method", ["sgd", "adam"])
def test_mini_batch_reproducible(method):
    obj, _ = _least_squares()
    opts = {"lr": 0.05, "batch_size": 8, "epochs": 5, "rng": 42}
    a = minimize(obj, np.zeros(3), method=method, options=opts)
    b = minimize(obj, np.zeros(3), method=method, options=opts)
    c = minimize(obj, np.zeros(3), method=method, options=dict(opts, rng=7))
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.history["fun"], b.history["fun"])
    assert not np.array_equal(a.x, c.x)
    assert a.nit == 5 * 7  # ceil(50 / 8) batches per epoch
    d = minimize(obj, np.zeros(3), method=method, options=dict(opts, drop_last=True))
    assert d.nit == 5 * 6


def test_sgd_mini_batch_makes_progress():
    obj, _ = _least_squares()
    res = minimize(obj, np.zeros(3), method="sgd",
                   options={"lr": 0.1, "momentum": 0.5, "batch_size": 10, "epochs": 40, "rng": 1,
                            "schedule": "step", "decay_rate": 0.7, "decay_steps": 50})
    assert res.success
    np.testing.assert_allclose(res.x, [1.0, 2.0, 3.0], atol=1e-3)


def test_schedules():
    fns, x0, _ = _quadratic(n=3, cond=2.0)
    base = {"lr": 0.1, "maxiter": 10, "gtol": 0.0}
    lr = minimize(_obj(fns), x0, "sgd", dict(base, schedule="step", decay_rate=0.5,
                                              decay_steps=4)).history["lr"]
    np.testing.assert_allclose(lr, 0.1 * 0.5 ** (np.arange(10) // 4))
    lr = minimize(_obj(fns), x0, "sgd", dict(base, schedule="exponential", decay_rate=0.5,
                                              decay_steps=2)).history["lr"]
    np.testing.assert_allclose(lr, 0.1 * 0.5 ** (np.arange(10) / 2))
    lr = minimize(_obj(fns), x0, "sgd", dict(base, schedule="cosine")).history["lr"]
    np.testing.assert_allclose(lr, 0.05 * (1 + np.cos(np.pi * np.arange(10) / 10)))
    lr = minimize(_obj(fns), x0, "adam", dict(base, schedule=lambda k: 1.0 / (k + 1))
                  ).history["lr"]
    np.testing.assert_allclose(lr, 0.1 / np.arange(1, 11))
    assert schedules.step_decay(1.0, 0.5, 2)(3) == 0.5


# ---------------------------------------------------------------------------
# callbacks
# ---------------------------------------------------------------------------

ALL_METHODS = [
    ("lbfgs", {}),
    ("trust-region", {}),
    ("trust-region", {"hessian": "lsr1"}),
    ("sgd", {"lr": 1e-3}),
    ("adam", {"lr": 1e-2}),
]


@pytest.mark.parametrize("method,opts", ALL_METHODS)
def test_callback_stop_iteration(method, opts):
    fns, x0, _ = PROBLEMS["rosen2"]
    seen = []

    def cb(intermediate_result):
        assert isinstance(intermediate_result, OptimizeResult)
        seen.append((intermediate_result.nit, intermediate_result.x.copy(),
                     intermediate_result.work))
        if intermediate_result.nit == 3:
            raise StopIteration

    res = minimize(_obj(fns), x0, method=method, options=opts, callback=cb)
    assert res.status == 99 and not res.success
    assert "StopIteration" in res.message
    assert res.nit == 3 and [s[0] for s in seen] == [1, 2, 3]
    np.testing.assert_array_equal(res.x, seen[-1][1])
    assert seen[-1][2] <= res.work


def test_legacy_callback_gets_x():
    fns, x0, _ = PROBLEMS["rosen2"]
    xs = []
    res = minimize(_obj(fns), x0, method="lbfgs", callback=lambda xk: xs.append(xk))
    assert len(xs) == res.nit and isinstance(xs[0], np.ndarray)
    np.testing.assert_array_equal(xs[-1], res.x)


def test_method_callable():
    def method(objective, theta0, options, callback):
        f, g = objective.value_and_grad(theta0)
        return OptimizeResult(x=theta0 - options["step"] * g, fun=f)

    fns, x0, _ = PROBLEMS["rosen2"]
    res = minimize(_obj(fns), x0, method=method, options={"step": 0.0})
    np.testing.assert_array_equal(res.x, x0)
    with pytest.raises(TypeError, match="OptimizeResult"):
        minimize(_obj(fns), x0, method=lambda *a: 1.0)


def test_plain_function_and_jac_keywords():
    res = minimize(rosen, np.array([-1.2, 1.0]), method="trust-region", jac=rosen_der,
                   hessp=rosen_hess_prod, options={"gtol": 1e-8})
    assert res.success and np.allclose(res.x, 1.0)
    with pytest.raises(ValueError, match="jac"):
        minimize(rosen, np.zeros(2))
    with pytest.raises(ValueError, match="jac"):
        minimize(FunctionObjective(rosen, rosen_der), np.zeros(2), jac=rosen_der)
    with pytest.raises(ValueError, match="hessian"):
        minimize(FunctionObjective(rosen, rosen_der), np.zeros(2), method="trust-region")


# ---------------------------------------------------------------------------
# the vector space
# ---------------------------------------------------------------------------


class SpySpace(EuclideanSpace):
    def __init__(self):
        self.calls = 0

    def dot(self, x, y):
        self.calls += 1
        return super().dot(x, y)


@pytest.mark.parametrize("method,opts", ALL_METHODS + [
    ("trust-region", {"subproblem": "dogleg"}), ("trust-region", {"subproblem": "cauchy"})])
def test_inner_products_go_through_space(method, opts, monkeypatch):
    fns, x0, _ = PROBLEMS["rosen2"]
    space = SpySpace()
    obj = FunctionObjective(*fns, space=space)
    # np.dot on vectors of length 2 would bypass the space: forbid it
    real_dot = np.dot

    def no_dot(a, b, *args):
        if np.ndim(a) == 1 and np.ndim(b) == 1 and np.size(a) == 2:
            raise AssertionError("np.dot called on theta")
        return real_dot(a, b, *args)

    monkeypatch.setattr(np, "dot", no_dot)
    monkeypatch.setattr(EuclideanSpace, "dot", lambda self, x, y: float((x * y).sum()))
    res = minimize(obj, x0, method=method, options=dict(opts, maxiter=20))
    assert space.calls > 0 and res.nit > 0


# ---------------------------------------------------------------------------
# divergence
# ---------------------------------------------------------------------------


def _nan_after(calls, fns):
    """Objective that returns NaN from the ``calls``-th evaluation on."""
    f, g, h = fns
    count = [0]

    def fun(x):
        count[0] += 1
        return np.nan if count[0] > calls else f(x)

    return FunctionObjective(fun, g, h)


@pytest.mark.parametrize("method,opts", ALL_METHODS)
def test_divergence_keeps_last_finite_iterate(method, opts):
    fns, x0, _ = PROBLEMS["rosen2"]
    iterates = []
    res = minimize(_nan_after(6, fns), x0, method=method, options=opts,
                   callback=lambda intermediate_result: iterates.append(
                       intermediate_result.x.copy()))
    assert not res.success and res.status == 3
    assert "non-finite loss" in res.message and "iteration" in res.message
    assert np.all(np.isfinite(res.x)) and np.isfinite(res.fun)
    # the returned x is the last iterate (x0 or one passed to the callback)
    candidates = [x0] + iterates
    assert any(np.array_equal(res.x, c) for c in candidates)
    if method in ("lbfgs", "trust-region"):
        np.testing.assert_array_equal(res.x, candidates[-1])


def test_divergence_at_start():
    fns, x0, _ = PROBLEMS["rosen2"]
    res = minimize(_nan_after(0, fns), x0, method="lbfgs")
    assert not res.success and "iteration 0" in res.message
    np.testing.assert_array_equal(res.x, x0)


def test_inf_gradient_detected():
    res = minimize(rosen, np.array([-1.2, 1.0]), method="trust-region",
                   jac=lambda x: np.full(2, np.inf) if x[0] > -1.0 else rosen_der(x),
                   hessp=rosen_hess_prod)
    assert not res.success and "gradient" in res.message


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_sgd_diverging_learning_rate():
    fns, x0, _ = _quadratic(n=4, cond=10.0)
    res = minimize(_obj(fns), x0, method="sgd", options={"lr": 10.0, "maxiter": 10000})
    assert not res.success and res.status == 3
    assert np.all(np.isfinite(res.x)) and np.isfinite(res.fun)


# ---------------------------------------------------------------------------
# options
# ---------------------------------------------------------------------------

BAD_OPTIONS = [
    ("trust-region", {"initial_radius": -1.0}, ValueError, "initial_radius"),
    ("trust-region", {"initial_radius": 0.0}, ValueError, "initial_radius"),
    ("trust-region", {"max_radius": 0.5, "initial_radius": 1.0}, ValueError, "initial_radius"),
    ("trust-region", {"eta1": 0.9, "eta2": 0.5}, ValueError, "eta1"),
    ("trust-region", {"eta2": 1.5}, ValueError, "eta2"),
    ("trust-region", {"gamma1": 1.5}, ValueError, "gamma1"),
    ("trust-region", {"gamma2": 0.5}, ValueError, "gamma2"),
    ("trust-region", {"hessian": "bfgs"}, ValueError, "hessian"),
    ("trust-region", {"subproblem": "exact"}, ValueError, "subproblem"),
    ("trust-region", {"memory": 5}, ValueError, "memory"),
    ("trust-region", {"subproblem": "cauchy", "cg_tol": 0.1}, ValueError, "cg_tol"),
    ("trust-region", {"cg_maxiter": 0}, ValueError, "cg_maxiter"),
    ("trust-region", {"hessian": "lsr1", "memory": 0}, ValueError, "memory"),
    ("trust-region", {"radius": 1.0}, TypeError, "radius"),
    ("lbfgs", {"memory": 0}, ValueError, "memory"),
    ("lbfgs", {"c1": 0.95, "c2": 0.9}, ValueError, "c2"),
    ("lbfgs", {"gtol": -1.0}, ValueError, "gtol"),
    ("lbfgs", {"maxiter": 2.5}, TypeError, "maxiter"),
    ("lbfgs", {"lr": 0.1}, TypeError, "lr"),
    ("sgd", {"lr": 0.0}, ValueError, "lr"),
    ("sgd", {"lr": -0.1}, ValueError, "lr"),
    ("sgd", {"momentum": 1.0}, ValueError, "momentum"),
    ("sgd", {"nesterov": True}, ValueError, "nesterov"),
    ("sgd", {"batch_size": 8}, ValueError, "batch_size"),  # no data
    ("sgd", {"schedule": "linear"}, ValueError, "schedule"),
    ("sgd", {"decay_rate": 0.5}, ValueError, "decay_rate"),
    ("sgd", {"schedule": "step", "decay_rate": 1.5}, ValueError, "decay_rate"),
    ("sgd", {"schedule": "cosine", "lr_min": 1.0}, ValueError, "lr_min"),
    ("sgd", {"rng": 1}, ValueError, "rng"),
    ("sgd", {"epochs": 0}, ValueError, "epochs"),
    ("adam", {"beta1": 1.0}, ValueError, "beta1"),
    ("adam", {"eps": 0.0}, ValueError, "eps"),
    ("adam", {"momentum": 0.9}, TypeError, "momentum"),
    ("adam", {"schedule": lambda k: -1.0}, ValueError, "lr"),
]


@pytest.mark.parametrize("method,opts,exc,name", BAD_OPTIONS)
def test_bad_options_raise(method, opts, exc, name):
    fns, x0, _ = PROBLEMS["rosen2"]
    with pytest.raises(exc, match=name):
        minimize(_obj(fns), x0, method=method, options=opts)


def test_bad_batch_size_with_data():
    obj, n = _least_squares(n_samples=10)
    with pytest.raises(ValueError, match="batch_size"):
        minimize(obj, np.zeros(3), method="sgd", options={"batch_size": 11})
    with pytest.raises(ValueError, match="gtol"):
        minimize(obj, np.zeros(3), method="sgd", options={"batch_size": 5, "gtol": 1e-3})


def test_bad_arguments():
    fns, x0, _ = PROBLEMS["rosen2"]
    with pytest.raises(ValueError, match="method"):
        minimize(_obj(fns), x0, method="bfgs")
    with pytest.raises(TypeError, match="options"):
        minimize(_obj(fns), x0, options=[("gtol", 1.0)])
    with pytest.raises(ValueError, match="theta0"):
        minimize(_obj(fns), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="theta0"):
        minimize(_obj(fns), np.array([np.nan, 1.0]))
    with pytest.raises(TypeError, match="callback"):
        minimize(_obj(fns), x0, callback=3)
    with pytest.raises(TypeError, match="objective"):
        minimize(3, x0)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
def test_sgd_blowing_up_on_a_network_objective_returns_the_last_finite_iterate():
    """An mgnn Objective rejects a non-finite theta; the optimizer must stop first."""
    from mgnn.data import peaks
    from mgnn.nets import ResNet
    from mgnn.objective import Objective

    d = peaks(50, 5)
    net = ResNet(2, 4, 3, 5, activation="identity", opening_activation=False)
    obj = Objective(net, d.X_train, d.Y_train)
    theta0 = net.init(0, "he")
    res = minimize(obj, theta0, method="sgd", options={"lr": 1e30, "maxiter": 50})
    assert res.status == 3 and not res.success
    assert "non-finite" in res.message
    assert np.isfinite(res.x).all()
