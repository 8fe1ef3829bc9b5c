"""PINNObjective: exact gradient and Hessian products, Gauss-Newton, batches, subsets, errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgnn.data.pde import burgers_1d, poisson_2d
from mgnn.nets import ResNet
from mgnn.pinn import (
    Condition,
    Field,
    Operator,
    OutputTransform,
    PeriodicEmbedding,
    PINNObjective,
    allen_cahn,
    box_factor,
    burgers,
    diffusion_advection,
    klein_gordon,
    output_streams,
    poisson,
)

OPS = {"poisson": lambda: poisson(2), "burgers": lambda: burgers(0.05),
       "allen_cahn": lambda: allen_cahn(0.01), "klein_gordon": klein_gordon,
       "diffusion_advection": lambda: diffusion_advection(0.1, 0.5)}


def _transform():
    A = Field(lambda X: (np.sin(X[:, 0]) * X[:, 1], np.c_[np.cos(X[:, 0]) * X[:, 1],
                                                          np.sin(X[:, 0])],
                         np.c_[-np.sin(X[:, 0]) * X[:, 1], 0 * X[:, 0]]), "A")
    return OutputTransform(A, box_factor([0, 0], [1, 1], [(0, "lo"), (1, "lo")],
                                         {(1, "lo"): 2}))


def _objective(op_name, width, depth, seed, variant, n=12, **kw):
    rng = np.random.default_rng(seed)
    op = OPS[op_name]()
    X = rng.uniform(0, 1, (n, 2))
    n_in = 3 if variant == "periodic" else 2
    net = ResNet(n_in, width, depth, 1, task="regression", T=1.5)
    opts = dict(source=lambda P: np.cos(P[:, 0] + P[:, 1]), **kw)
    if variant == "transform":
        opts["transform"] = _transform()
    else:
        opts["conditions"] = [
            Condition(np.c_[np.zeros(4), rng.uniform(0, 1, 4)], lambda P: P[:, 1], weight=3.0),
            Condition(np.c_[rng.uniform(0, 1, 3), np.zeros(3)], 0.2, kind="derivative", dim=1)]
        if variant == "periodic":
            opts["embedding"] = PeriodicEmbedding(2, {0: (0.0, 1.0)})
    obj = PINNObjective(net, op, X, **opts)
    theta = net.init(rng) + 0.1 * rng.standard_normal(net.n_params)
    return obj, theta, rng


@settings(max_examples=20)
@given(op=st.sampled_from(sorted(OPS)), width=st.integers(1, 5), depth=st.integers(1, 3),
       variant=st.sampled_from(["penalty", "transform", "periodic"]),
       seed=st.integers(0, 2**16), batched=st.booleans())
def test_gradient_and_hessian_against_finite_differences(op, width, depth, variant, seed,
                                                         batched):
    obj, theta, rng = _objective(op, width, depth, seed, variant, tikhonov=1e-3,
                                 smoothness=1e-2)
    batch = rng.choice(obj.n_samples, 7, replace=False) if batched else None
    f, g = obj.value_and_grad(theta, batch)
    v = rng.standard_normal(theta.size)
    e = 1e-6
    fd = (obj.value(theta + e * v, batch) - obj.value(theta - e * v, batch)) / (2 * e)
    assert abs(fd - g @ v) <= 1e-6 * (abs(fd) + np.linalg.norm(g) * np.linalg.norm(v))
    Hv = obj.hessp(theta, v, batch)
    fdH = (obj.grad(theta + e * v, batch) - obj.grad(theta - e * v, batch)) / (2 * e)
    assert np.linalg.norm(Hv - fdH) <= 1e-5 * (1 + np.linalg.norm(fdH))


@settings(max_examples=15)
@given(op=st.sampled_from(sorted(OPS)), width=st.integers(1, 5), depth=st.integers(1, 3),
       variant=st.sampled_from(["penalty", "transform"]), seed=st.integers(0, 2**16))
def test_gauss_newton_is_symmetric_positive_semidefinite(op, width, depth, variant, seed):
    obj, theta, rng = _objective(op, width, depth, seed, variant)
    v, w = rng.standard_normal((2, theta.size))
    Gv, Gw = obj.gnp(theta, v), obj.gnp(theta, w)
    assert abs(w @ Gv - v @ Gw) <= 1e-12 * (1 + abs(w @ Gv))
    assert v @ Gv >= -1e-14 * (v @ v)
    Hv, Hw = obj.hessp(theta, v), obj.hessp(theta, w)  # the exact Hessian: symmetric too
    assert abs(w @ Hv - v @ Hw) <= 1e-11 * (1 + abs(w @ Hv))


def test_gauss_newton_equals_the_hessian_where_the_residuals_vanish():
    # choose the data so that theta solves the problem exactly: r = 0, H = J^T C J
    rng = np.random.default_rng(3)
    net = ResNet(2, 4, 2, 1, task="regression")
    theta = net.init(rng) + 0.2 * rng.standard_normal(net.n_params)
    op = burgers(0.1)
    X = rng.uniform(0, 1, (10, 2))
    Xb = np.c_[np.zeros(5), rng.uniform(0, 1, 5)]
    st_ = output_streams(net, theta, X, first=[0, 1], second=[0])
    f = st_["d"][1] + st_["u"] * st_["d"][0] - 0.1 * st_["dd"][0]
    g = net.forward(theta, Xb)
    obj = PINNObjective(net, op, X, source=f[:, 0], conditions=[Condition(Xb, g[:, 0])])
    assert obj.value(theta) < 1e-28
    v = rng.standard_normal(theta.size)
    np.testing.assert_allclose(obj.hessp(theta, v), obj.gnp(theta, v), rtol=1e-10, atol=1e-13)
    gn = PINNObjective(net, op, X, source=f[:, 0], conditions=[Condition(Xb, g[:, 0])],
                       hessian="gauss_newton")
    assert np.array_equal(gn.hessp(theta, v), obj.gnp(theta, v))


def test_batches_are_unbiased_and_subsets_add_up():
    obj, theta, rng = _objective("burgers", 4, 2, 0, "penalty", n=20)
    n = obj.n_samples
    f, g = obj.value_and_grad(theta)
    perm = rng.permutation(n)
    fb, gb = obj.value_and_grad(theta, perm)  # all points, in another order
    assert fb == pytest.approx(f, rel=1e-13)
    np.testing.assert_allclose(gb, g, rtol=1e-12, atol=1e-14)
    # the batch estimates, weighted by batch size, average to the full value
    parts = np.array_split(perm, 4)
    est = sum(len(p) / n * obj.value(theta, p) for p in parts)
    assert est == pytest.approx(f, rel=1e-12)
    # subsets: no rescaling, they add up (values, gradients, Hessian products)
    v = rng.standard_normal(theta.size)
    subs = [obj.subset(p) for p in parts]
    assert sum(s.value(theta) for s in subs) == pytest.approx(f, rel=1e-12)
    np.testing.assert_allclose(sum(s.grad(theta) for s in subs), g, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(sum(s.hessp(theta, v) for s in subs), obj.hessp(theta, v),
                               rtol=1e-10, atol=1e-12)
    assert sum(s.n_samples for s in subs) == n
    # a subset is charged in the full objective's units
    s0 = subs[0]
    share = sum(t.layout.S * t.n for t in s0.terms) / obj._rows_total
    assert s0.counter.cost["grad"] == pytest.approx(obj.counter.cost["grad"] * share)


def test_work_is_the_flop_ratio_to_a_plain_gradient():
    p = poisson_2d()
    pts = p.sample(30, 10, seed=1)
    obj = PINNObjective.from_problem(ResNet(2, 4, 2, 1, task="regression"), p, pts)
    n_int, n_bnd = 30, sum(len(v) for v in pts.boundary.values())
    ratio = (5 * n_int + 1 * n_bnd) / (n_int + n_bnd)
    assert obj.counter.cost == pytest.approx({"value": ratio / 3, "grad": ratio,
                                              "hessp": ratio * 8 / 3})
    theta = obj.net.init(0)
    obj.value_and_grad(theta, np.arange(5))  # 5 interior points: 25 of all stream rows
    assert obj.counter.work == pytest.approx(ratio * 25 / (5 * n_int + n_bnd))
    gn = PINNObjective.from_problem(obj.net, p, pts, hessian="gauss_newton")
    assert gn.counter.cost["hessp"] == pytest.approx(ratio * 5 / 3)


def test_exact_boundary_conditions_hold_for_any_theta():
    p = burgers_1d()
    net = ResNet(2, 5, 2, 1, task="regression")
    obj = PINNObjective.from_problem(net, p, p.sample(20, 8), bc="exact")
    x = np.linspace(-1, 1, 9)
    for seed in range(3):
        theta = net.init(seed)
        np.testing.assert_allclose(obj.solution(theta, np.c_[x, 0 * x]), -np.sin(np.pi * x),
                                   atol=1e-14)
        np.testing.assert_allclose(obj.solution(theta, np.array([[-1.0, 0.4], [1.0, 0.7]])),
                                   0.0, atol=1e-14)


def test_solution_errors_and_repr():
    p = poisson_2d()
    obj = PINNObjective.from_problem(ResNet(2, 4, 2, 1, task="regression"), p, p.sample(16, 8))
    theta = obj.net.init(0)
    X, U = p.evaluation_grid()
    rel = obj.relative_l2(theta, X, U)
    assert rel == pytest.approx(p.relative_l2(obj.solution(theta, X)))
    mean, worst = obj.error(theta, X[:50], U[:50])
    assert 0 <= mean <= worst
    text = repr(obj)
    assert "-u_xx - u_yy = f" in text and "u@x=0" in text and "plain gradients" in text
    assert set(obj.term_values(theta)) == {"interior", "u@x=0", "u@x=1", "u@y=0", "u@y=1"}
    with pytest.raises(ValueError, match="classification"):
        obj.accuracy(theta)


def test_operator_polynomial_derivatives():
    # residual u_xx + 2 u^3 - 3 u*u_x: jvp, vjp and hvp against finite differences
    op = Operator("test", 1, [(1.0, {("dd", 0): 1}), (2.0, {"u": 3}),
                              (-3.0, {"u": 1, ("d", 0): 1})])
    lay = op.layout()
    rng = np.random.default_rng(0)
    U, dU = rng.standard_normal((2, lay.S, 6))
    rbar = rng.standard_normal(6)
    e = 1e-6
    fd = (op.residual(U + e * dU, lay) - op.residual(U - e * dU, lay)) / (2 * e)
    np.testing.assert_allclose(op.jvp(U, dU, lay), fd, rtol=1e-8)
    g = op.vjp(U, rbar, lay, np.empty_like(U))
    assert np.sum(g * dU) == pytest.approx(rbar @ op.jvp(U, dU, lay), rel=1e-12)
    H = op.hvp(U, rbar, dU, lay, np.zeros_like(U))
    fdH = (op.vjp(U + e * dU, rbar, lay, np.empty_like(U))
           - op.vjp(U - e * dU, rbar, lay, np.empty_like(U))) / (2 * e)
    np.testing.assert_allclose(H, fdH, rtol=1e-7, atol=1e-9)


# ------------------------------------------------------------------ bad input
def test_bad_input_names_the_argument():
    net = ResNet(2, 4, 2, 1, task="regression")
    X = np.random.default_rng(0).uniform(0, 1, (5, 2))
    with pytest.raises(ValueError, match="pde must be an Operator or one of"):
        PINNObjective(net, "navier_stokes", X)
    with pytest.raises(ValueError, match=r"interior must have shape \(\*, 2\)"):
        PINNObjective(net, "burgers", np.zeros((5, 3)))
    with pytest.raises(ValueError, match="interior must have shape"):
        PINNObjective(net, "poisson", np.zeros(5))
    with pytest.raises(ValueError, match="conditions\\[0\\].*3 coordinates"):
        PINNObjective(net, "burgers", X, conditions=[Condition(np.zeros((2, 3)))])
    with pytest.raises(TypeError, match="conditions\\[1\\] must be a Condition"):
        PINNObjective(net, "burgers", X, conditions=[Condition(np.zeros((2, 2))), np.zeros(2)])
    with pytest.raises(ValueError, match="off the boundary"):
        PINNObjective(net, "burgers", X, conditions=[Condition(np.full((2, 2), 0.5))],
                      domain=([0, 0], [1, 1]))
    with pytest.raises(ValueError, match="interior has points outside the domain"):
        PINNObjective(net, "burgers", X + 2, domain=([0, 0], [1, 1]))
    with pytest.raises(ValueError, match="n_out=1"):
        PINNObjective(ResNet(2, 4, 2, 2, task="regression"), "burgers", X)
    with pytest.raises(ValueError, match="task='regression'"):
        PINNObjective(ResNet(2, 4, 2, 1), "burgers", X)
    with pytest.raises(ValueError, match="net must take the embedding's 3 features"):
        PINNObjective(net, "burgers", X, embedding=PeriodicEmbedding(2, {0: (0, 1)}))
    with pytest.raises(ValueError, match="unknown hessian .bfgs."):
        PINNObjective(net, "burgers", X, hessian="bfgs")
    with pytest.raises(ValueError, match="source must give one value per point"):
        PINNObjective(net, "burgers", X, source=np.zeros(4))
    with pytest.raises(ValueError, match="source contains NaN"):
        PINNObjective(net, "burgers", X, source=np.full(5, np.nan))
    with pytest.raises(ValueError, match="a 'derivative' condition needs dim"):
        Condition(np.zeros((2, 2)), kind="derivative")
    with pytest.raises(ValueError, match="dim must be a coordinate index"):
        Condition(np.zeros((2, 2)), kind="derivative", dim=2)
    with pytest.raises(ValueError, match="unknown kind .neumann."):
        Condition(np.zeros((2, 2)), kind="neumann")
    with pytest.raises(TypeError, match="bad parameters for pde 'burgers'"):
        PINNObjective(net, "burgers", X, pde_params={"viscosity": 1.0})
    obj = PINNObjective(net, "burgers", X)
    theta = net.init(0)
    with pytest.raises(TypeError, match="batch must be a 1-D integer index array"):
        obj.value(theta, np.array([0.5]))
    with pytest.raises(ValueError, match=r"batch indices must lie in \[0, 5\)"):
        obj.value(theta, np.array([5]))
    with pytest.raises(ValueError, match="indices must not be empty"):
        obj.subset(np.array([], dtype=int))
    with pytest.raises(ValueError, match="theta must have shape"):
        obj.value(theta[:-1])
    with pytest.raises(ValueError, match="v contains NaN"):
        obj.hessp(theta, np.full_like(theta, np.nan))
    p = poisson_2d()
    with pytest.raises(TypeError, match="points must be a Collocation"):
        PINNObjective.from_problem(net, p, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="unknown bc .weak."):
        PINNObjective.from_problem(net, p, p.sample(4, 4), bc="weak")
    with pytest.raises(ValueError, match="source comes from the problem"):
        PINNObjective.from_problem(net, p, p.sample(4, 4), source=1.0)


def test_pointwise_residuals_at_new_points():
    obj, theta, rng = _objective("burgers", 4, 2, 5, "transform", n=9)
    X = rng.uniform(0, 1, (6, 2))
    src = lambda P: np.cos(P[:, 0] + P[:, 1])  # noqa: E731  (the objective's source)
    r = obj.residuals(theta, X, src)
    # the same residuals as an objective on those points: value = (1/(2n)) sum r^2
    other = PINNObjective(obj.net, obj.pde, X, source=src, transform=obj.transform)
    assert 0.5 * np.mean(r ** 2) == pytest.approx(other.value(theta), rel=1e-13)
    work = obj.counter.work
    obj.residuals(theta, obj.terms[0].X)  # all interior points: a third of a gradient
    assert obj.counter.work - work == pytest.approx(obj.counter.cost["value"])
