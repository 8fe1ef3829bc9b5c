"""ConvResNet and its kernels: NumPy references, adjoint identities, derivatives, solvers."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mgnn.kernels import cpu_conv as kc
from mgnn.kernels.cpu import ACTIVATIONS, SMOOTH_RELU_EPS

from mgnn.nets import ConvResNet
from mgnn.objective import Objective

ACTS = ["tanh", "relu", "smooth_relu", "identity"]
SMOOTH = ["tanh", "smooth_relu", "identity"]  # twice differentiable away from kinks
FAST = settings(max_examples=12, deadline=None)


def ref_conv(U, K, b, H, W):
    """Direct NumPy 3x3 'same' cross-correlation of channels-last rows."""
    s, Ci, Co = U.shape[0], K.shape[2], K.shape[3]
    img = U.reshape(s, H, W, Ci)
    P = np.pad(img, ((0, 0), (1, 1), (1, 1), (0, 0)))
    Z = np.zeros((s, H, W, Co)) + b
    for ky in range(3):
        for kx in range(3):
            Z += np.einsum("shwi,io->shwo", P[:, ky:ky + H, kx:kx + W, :], K[ky, kx])
    return Z.reshape(s, H * W * Co)


def ref_sigma(z, act):
    if act == "tanh":
        return np.tanh(z)
    if act == "relu":
        return np.maximum(z, 0.0)
    if act == "identity":
        return z
    eps = SMOOTH_RELU_EPS
    return np.where(z <= -eps, 0.0, np.where(z >= eps, z, (z + eps) ** 2 / (4 * eps)))


shapes = st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5),
                   st.integers(1, 3), st.integers(1, 3))  # s, H, W, C_in, C_out


@FAST
@given(shapes, st.sampled_from(ACTS), st.booleans(), st.integers(0, 2**31))
def test_forward_step_matches_numpy(shape, act, skip, seed):
    s, H, W, Ci, Co = shape
    if skip:
        Co = Ci
    rng = np.random.default_rng(seed)
    U = rng.standard_normal((s, H * W * Ci))
    K = rng.standard_normal((3, 3, Ci, Co))
    b = rng.standard_normal(Co)
    h = 0.3 if skip else 1.0
    S = np.empty((s, H * W * Co))
    out = np.empty_like(S)
    col = np.empty(s * H * W * 9 * max(Ci, Co))
    kc.conv_forward_step(U, K, b, h, ACTIVATIONS[act], H, W, S, out, col, skip=skip)
    want = h * ref_sigma(ref_conv(U, K, b, H, W), act) + (U if skip else 0.0)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)


@FAST
@given(shapes, st.integers(0, 2**31))
def test_col2im_is_adjoint_of_im2col(shape, seed):
    s, H, W, C, _ = shape
    rng = np.random.default_rng(seed)
    U = rng.standard_normal((s, H * W * C))
    E = rng.standard_normal((s * H * W, 9 * C))
    col = np.empty_like(E)
    kc.im2col(U, H, W, C, col)
    back = np.empty_like(U)
    kc.col2im_add(E, H, W, C, U, back, False)
    assert np.isclose(np.vdot(col, E), np.vdot(U, back), rtol=1e-12, atol=1e-12)


@FAST
@given(shapes, st.sampled_from(SMOOTH), st.integers(0, 2**31))
def test_layer_adjoint_identity(shape, act, seed):
    """<J (dU, dK, db), L> = <dU, J_u^T L> + <dK, gK> + <db, gb> for a residual layer."""
    s, H, W, C, _ = shape
    rng = np.random.default_rng(seed)
    a = ACTIVATIONS[act]
    n = H * W * C
    U, dU, L = (rng.standard_normal((s, n)) for _ in range(3))
    K, dK = rng.standard_normal((3, 3, C, C)), rng.standard_normal((3, 3, C, C))
    b, db = rng.standard_normal(C), rng.standard_normal(C)
    S, out, dZ, T, D = (np.empty((s, n)) for _ in range(5))
    col = np.empty(s * H * W * 9 * C)
    kc.conv_forward_step(U, K, b, 0.7, a, H, W, S, out, col)
    dout = np.empty((s, n))
    kc.conv_tangent_step(U, dU, K, dK, db, S, 0.7, a, H, W, dZ, dout, col, T)
    Lout, gK, gb = np.empty((s, n)), np.empty_like(K), np.empty(C)
    kc.conv_adjoint_step(L, U, K, S, 0.7, a, H, W, D, col, L=Lout, gK=gK, gb=gb)
    lhs = np.vdot(dout, L)
    rhs = np.vdot(dU, Lout) + np.vdot(dK, gK) + np.vdot(db, gb)
    assert np.isclose(lhs, rhs, rtol=1e-10, atol=1e-10 * (abs(lhs) + 1))


def _objective(rng, shape, act, pooling, task="classification"):
    H, W, Ci, c, N = shape
    net = ConvResNet((H, W, Ci), c, N, 3, T=1.0, activation=act, pooling=pooling, task=task)
    X = rng.standard_normal((4, net.n_in))
    Y = rng.integers(0, 3, 4) if task == "classification" else rng.standard_normal((4, 3))
    obj = Objective(net, X, Y, tikhonov=1e-3, smoothness=1e-2)
    theta = net.init(rng, "he") + 0.1 * rng.standard_normal(net.n_params)
    return net, obj, theta


nets = st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 2), st.integers(1, 3),
                 st.integers(1, 3))


@FAST
@given(nets, st.sampled_from(SMOOTH), st.sampled_from(["average", "flatten"]),
       st.sampled_from(["classification", "regression"]), st.integers(0, 2**31))
def test_gradient_and_hessp_against_finite_differences(shape, act, pooling, task, seed):
    rng = np.random.default_rng(seed)
    net, obj, theta = _objective(rng, shape, act, pooling, task)
    v = rng.standard_normal(net.n_params)
    e = 1e-6
    f, g = obj.value_and_grad(theta)
    fd = (obj.value(theta + e * v) - obj.value(theta - e * v)) / (2 * e)
    assert np.isclose(g @ v, fd, rtol=1e-6, atol=1e-7)
    hv = obj.hessp(theta, v)
    hfd = (obj.grad(theta + e * v) - obj.grad(theta - e * v)) / (2 * e)
    np.testing.assert_allclose(hv, hfd, rtol=1e-5, atol=1e-6 * (1 + np.abs(hfd).max()))
    # the Hessian is symmetric: <w, H v> = <v, H w>
    w = rng.standard_normal(net.n_params)
    assert np.isclose(w @ hv, v @ obj.hessp(theta, w), rtol=1e-10, atol=1e-12)


def test_forward_matches_numpy_network():
    rng = np.random.default_rng(1)
    net = ConvResNet((4, 3, 2), 3, 2, 4, T=2.0, activation="tanh")
    theta = net.init(rng)
    X = rng.standard_normal((5, net.n_in))
    p = net.unpack(theta)
    U = np.tanh(ref_conv(X, p.K_open, p.b_open, 4, 3))
    for n in range(2):
        U = U + net.h * np.tanh(ref_conv(U, p.K[n], p.b[n], 4, 3))
    F = U.reshape(5, 12, 3).mean(axis=1)
    np.testing.assert_allclose(net.forward(theta, X), F @ p.W_close.T + p.b_close,
                               rtol=1e-12, atol=1e-12)


def test_layout_views_and_blocks():
    net = ConvResNet((5, 5), 4, 3, 2)
    theta = np.arange(net.n_params, dtype=float)
    p = net.unpack(theta)
    assert all(np.shares_memory(a, theta) for a in (p.K_open, p.K, p.b, p.W_close))
    assert net.block_size == 9 * 16 + 4
    np.testing.assert_array_equal(theta[net.layer_slice(1)], p.blocks[1])
    np.testing.assert_array_equal(p.K[1].ravel(), p.blocks[1][:144])
    assert net.n_params == net.n_open + net.n_residual + net.n_close


@pytest.mark.parametrize("scheme", ["glorot", "he", "layer_parallel", "box"])
def test_init_schemes(scheme):
    net = ConvResNet((4, 4, 2), 3, 4, 2, activation="relu")
    theta = net.init(0, scheme)
    assert theta.shape == (net.n_params,) and np.all(np.isfinite(theta))
    np.testing.assert_array_equal(theta, net.init(0, scheme))
    p = net.unpack(theta)
    if scheme == "layer_parallel":
        assert not p.K.any()
    if scheme == "box":  # every opening channel's hyperplane cuts the patch box [0, 1]^18
        W = p.K_open.reshape(18, 3).T
        corners = (np.random.default_rng(0).random((4000, 18)) < 0.5).astype(float)
        z = corners @ W.T + p.b_open
        assert np.all(z.max(0) > 0) and np.all(z.min(0) <= 1e-12)


def test_bad_input():
    with pytest.raises(ValueError, match="image_shape"):
        ConvResNet(64, 4, 2, 10)
    with pytest.raises(ValueError, match="channels"):
        ConvResNet((8, 8), 0, 2, 10)
    with pytest.raises(ValueError, match="pooling"):
        ConvResNet((8, 8), 4, 2, 10, pooling="max")
    net = ConvResNet((8, 8), 2, 2, 10)
    theta = net.init(0)
    with pytest.raises(ValueError, match="X"):
        net.forward(theta, np.zeros((3, 8, 8)))
    with pytest.raises(ValueError, match="X"):
        net.forward(theta, np.zeros((3, 63)))
    with pytest.raises(ValueError, match="theta"):
        net.forward(theta[:-1], np.zeros((3, 64)))
    with pytest.raises(ValueError, match="multiple of the 64 pixels"):
        net.with_width(4)
    assert net.with_width(64 * 3).channels == 3
    with pytest.raises(TypeError, match="box"):
        net.init(0, "box", box=3.0)


def test_depth_transfer_and_nested_iteration():
    from mgnn.multilevel import depth_hierarchy, nested_iteration

    rng = np.random.default_rng(0)
    net = ConvResNet((4, 4), 2, 4, 2, T=1.0)
    X = rng.standard_normal((12, 16))
    y = (X.mean(1) > 0).astype(int)
    obj = Objective(net, X, y)
    H = depth_hierarchy(obj, 3)
    assert [lv.net.depth for lv in H.levels] == [4, 2, 1]
    assert H.levels[1].net.h == 2 * net.h
    tr = H.levels[0].transfer
    xc = H.levels[1].net.init(1)
    np.testing.assert_array_equal(tr.project(tr.prolong(xc)), xc)
    # the prolonged coarse network with constant interpolation: fine gradient restricted
    res = nested_iteration(H, [3, 3, 3], method="adam", options={"lr": 1e-2})
    assert res.x.shape == (net.n_params,) and np.isfinite(res.fun)


@pytest.mark.parametrize("method", ["sgd", "adam", "lbfgs", "trust-region", "lsgd"])
def test_minimize_every_method(method):
    from mgnn.optim import minimize

    rng = np.random.default_rng(0)
    task = "regression" if method == "lsgd" else "classification"
    net = ConvResNet((3, 3), 2, 2, 2, activation="tanh", task=task)
    X = rng.standard_normal((10, 9))
    Y = rng.standard_normal((10, 2)) if task == "regression" else (X[:, 4] > 0).astype(int)
    obj = Objective(net, X, Y, tikhonov=1e-4)
    theta0 = net.init(0)
    res = minimize(obj, theta0, method=method, options={"maxiter": 4})
    assert res.x.shape == theta0.shape and res.nit >= 1
    assert res.fun <= obj.value(theta0) + 1e-12


def test_rmtr_runs_on_conv():
    from mgnn.multilevel import depth_hierarchy, rmtr

    rng = np.random.default_rng(0)
    net = ConvResNet((3, 3), 2, 4, 2)
    X = rng.standard_normal((8, 9))
    obj = Objective(net, X, (X[:, 0] > 0).astype(int), tikhonov=1e-4)
    theta0 = net.init(0)
    res = rmtr(depth_hierarchy(obj, 2), theta0, options={"maxiter": 2})
    assert res.fun <= obj.value(theta0) + 1e-12


def test_save_load_roundtrip(tmp_path):
    from mgnn.runs import load_network, save_network

    net = ConvResNet((4, 5, 2), 3, 2, 4, T=2.0, activation="relu", pooling="flatten",
                     task="regression", dtype=np.float32)
    theta = net.init(0)
    save_network(tmp_path / "c.npz", net, theta)
    net2, theta2 = load_network(tmp_path / "c.npz")
    assert repr(net2) == repr(net) and isinstance(net2, ConvResNet)
    np.testing.assert_array_equal(theta2, theta)


def test_float32_forward_close_to_float64():
    net64 = ConvResNet((4, 4), 3, 3, 2)
    net32 = ConvResNet((4, 4), 3, 3, 2, dtype=np.float32)
    theta = net64.init(0)
    X = np.random.default_rng(0).standard_normal((3, 16))
    y64 = net64.forward(theta, X)
    y32 = net32.forward(theta.astype(np.float32), X.astype(np.float32))
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-5)


def test_solvers_refuse_conv_clearly():
    from mgnn.dd import by_layers
    from mgnn.mgrit import LayerParallelObjective

    rng = np.random.default_rng(0)
    net = ConvResNet((3, 3), 2, 4, 2)
    X = rng.standard_normal((5, 9))
    y = np.zeros(5, int)
    theta = net.init(0)
    lp = LayerParallelObjective(net, X, y)
    with pytest.raises(NotImplementedError, match="LayerParallelObjective.features"):
        lp.features(lp.scatter(theta))
    d = by_layers(net, 2)  # layers are contiguous blocks: DD by layers works
    assert d.n_subdomains == 2


def test_mgopt_and_dd_on_conv():
    from mgnn.dd import apts, by_layers, by_neurons, by_tensors, spqn
    from mgnn.multilevel import depth_hierarchy, mgopt

    rng = np.random.default_rng(0)
    net = ConvResNet((3, 3), 2, 4, 2)
    X = rng.standard_normal((8, 9))
    obj = Objective(net, X, (X[:, 0] > 0).astype(int), tikhonov=1e-4)
    theta0 = net.init(0)
    f0 = obj.value(theta0)
    # with the safeguard (without it the loss grows: the tau-corrected coarse model is
    # bounded only by Tikhonov, see test_conv_multilevel)
    res = mgopt(depth_hierarchy(obj, 2), theta0, "lbfgs", {}, cycles=2, line_search=True)
    assert res.fun <= f0 + 1e-12
    for d in (by_layers(net, 2), by_neurons(net, 2), by_tensors(net, 3, rng=0)):
        for solve in (apts, spqn):
            res = solve(obj, theta0, d, {"maxiter": 2})
            assert np.isfinite(res.fun) and res.fun <= f0 + 1e-12, (d.description, solve)


def _lp_problem(depth=8, pooling="average"):
    rng = np.random.default_rng(3)
    net = ConvResNet((4, 3), 2, depth, 3, T=2.0, activation="tanh", pooling=pooling)
    X = rng.standard_normal((6, 12))
    y = rng.integers(0, 3, 6)
    theta = net.init(1, "he") + 0.05 * rng.standard_normal(net.n_params)
    return net, X, y, theta


@pytest.mark.parametrize("batched,pooling", [(False, "average"), (True, "average"),
                                             (False, "flatten")])
def test_one_level_mgrit_bit_identical_to_serial(batched, pooling):
    """(With pooling='flatten' the closing layer reads the states MGRIT wrote: the
    features once were a stale view of the workspace's first state buffer.)"""
    from mgnn.mgrit import MGRITPropagation

    net, X, y, theta = _lp_problem(pooling=pooling)
    ser = Objective(net, X, y, tikhonov=1e-3)
    par = Objective(net, X, y, tikhonov=1e-3,
                    propagation=MGRITPropagation(levels=1, batched=batched))
    f0, g0 = ser.value_and_grad(theta)
    ser.value_and_grad(theta)
    for _ in range(2):  # cold and warm
        f, g = par.value_and_grad(theta)
        assert f == f0 and np.array_equal(g, g0)
    assert np.array_equal(par.hessp(theta, g0), ser.hessp(theta, g0))
    assert par.counter.work == pytest.approx(ser.counter.work)


@pytest.mark.parametrize("weights,pooling", [("inject", "average"), ("average", "flatten")])
def test_multilevel_mgrit_converges_to_serial(weights, pooling):
    from mgnn.mgrit import MGRITPropagation

    net, X, y, theta = _lp_problem(depth=16, pooling=pooling)
    f0, g0 = Objective(net, X, y).value_and_grad(theta)
    prop = MGRITPropagation(levels=3, cf=2, relax="FCF", tol=1e-13, rtol=None, fwd_iters=60,
                            bwd_iters=60, coarse_weights=weights, warm_start=False)
    obj = Objective(net, X, y, propagation=prop)
    f, g = obj.value_and_grad(theta)
    assert abs(f - f0) <= 1e-12 * abs(f0)
    assert np.max(np.abs(g - g0)) <= 1e-10 * np.max(np.abs(g0))
    assert obj.counter.work > 1.0  # the MGRIT iterations are charged beyond one sweep


def test_layer_parallel_objective_one_rank_matches_serial():
    from mgnn.mgrit import LayerParallelObjective, MGRITPropagation

    net, X, y, theta = _lp_problem()
    f0, g0 = Objective(net, X, y, tikhonov=1e-3, smoothness=1e-2).value_and_grad(theta)
    lp = LayerParallelObjective(net, X, y, tikhonov=1e-3, smoothness=1e-2,
                                propagation=MGRITPropagation(levels=1))
    f, g = lp.value_and_grad(lp.scatter(theta))
    assert f == f0 and np.array_equal(lp.gather(g), g0)


# ------------------------------------------------------- steps batched over layers
@FAST
@given(st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 3), st.integers(1, 4),
                 st.integers(2, 5)), st.sampled_from(ACTS), st.booleans(), st.booleans(),
       st.integers(0, 2**31))
def test_batched_layer_steps_equal_the_loop_bit_for_bit(shape, act, with_grad, with_L, seed):
    """One im2col over the stack and one batched GEMM (``np.matmul`` over the layers,
    the same BLAS call per layer) give the single steps' bits, on MGRIT's descending
    strided stacks."""
    H, W, c, s, k = shape
    rng = np.random.default_rng(seed)
    a, h, w, bs = ACTIVATIONS[act], 0.3, H * W * c, 9 * c * c + c
    P = 0.5 * rng.standard_normal((2 * k, bs))
    K, b = P[::-2, : 9 * c * c].reshape(k, 3, 3, c, c), P[::-2, 9 * c * c:]
    U = rng.standard_normal((2 * k, s, w))[::-2]
    Ln = rng.standard_normal((k, s, w))
    col1, colk = np.empty(s * H * W * 9 * c), np.empty(k * s * H * W * 9 * c)
    res = {}
    for how in ("loop", "batched"):
        S, out = np.full((2 * k, s, w), np.nan)[1::2], np.full((k, s, w), np.nan)
        D, L = np.full((k, s, w), np.nan), np.full((k, s, w), np.nan)
        G = np.full((2 * k, bs), np.nan)[::-2]
        gK, gb = G[:, : 9 * c * c].reshape(k, 3, 3, c, c), G[:, 9 * c * c:]
        kw = dict(L=L if with_L else None, gK=gK if with_grad else None,
                  gb=gb if with_grad else None)
        if how == "loop":
            for q in range(k):
                kc.conv_forward_step(U[q], K[q], b[q], h, a, H, W, S[q], out[q], col1)
                kc.conv_adjoint_step(Ln[q], U[q], K[q], S[q], h, a, H, W, D[q], col1,
                                     **{n: None if v is None else v[q] for n, v in kw.items()})
        else:
            kc.conv_forward_step_layers(U, K, b, h, a, H, W, S, out, colk)
            kc.conv_adjoint_step_layers(Ln, U, K, S, h, a, H, W, D, colk, **kw)
        res[how] = (S, out, D, L, G)
    for x, y in zip(res["loop"], res["batched"], strict=True):
        assert np.array_equal(x, y, equal_nan=True)


def test_batched_layer_steps_refuse_strided_layers():
    U = np.zeros((2, 3, 8))[:, :, ::2]   # layers that are not C-contiguous
    K, b = np.zeros((2, 3, 3, 1, 1)), np.zeros((2, 1))
    with pytest.raises(ValueError, match="C-contiguous layers"):
        kc.conv_forward_step_layers(U, K, b, 0.1, ACTIVATIONS["tanh"], 2, 2, np.zeros((2, 3, 4)),
                                    np.zeros((2, 3, 4)), np.zeros(2 * 3 * 4 * 9))


def test_step_kernels_choose_batched_or_loop_by_shape():
    from mgnn.nets.conv import BATCH_COL_BYTES

    net = ConvResNet((4, 3), 2, 8, 3)
    small, big = net.step_kernels(6), net.step_kernels(BATCH_COL_BYTES // (12 * 18 * 8) + 1)
    assert small.layers > 1 and big.layers == 0
    assert "batched over" in repr(small) and "layer by layer" in repr(big)
    # the batched steps through ConvStepKernels, in chunks of layers, equal the loop
    small.layers = 3
    rng = np.random.default_rng(0)
    k, w = 7, net.width
    U, Wk = rng.standard_normal((k, 6, w)), 0.3 * rng.standard_normal((k, 3, 3, 2, 2))
    b, Ln = rng.standard_normal((k, 2)), rng.standard_normal((k, 6, w))
    outs = []
    for kern in (small, big):
        S, out, D, L = (np.empty((k, 6, w)) for _ in range(4))
        gW, gb = np.empty((k, 3, 3, 2, 2)), np.empty((k, 2))
        kern.forward_step_batch(U, Wk, b, 0.2, net.act, S, out)
        kern.adjoint_step_batch(Ln, U, Wk, S, 0.2, net.act, D, L=L, gW=gW, gb=gb)
        outs.append((S, out, D, L, gW, gb))
    for x, y in zip(*outs, strict=True):
        assert np.array_equal(x, y)


def test_batched_multilevel_mgrit_converges_to_serial():
    from mgnn.mgrit import MGRITPropagation

    net, X, y, theta = _lp_problem(depth=16)
    assert net.step_kernels(X.shape[0]).layers > 0   # the batched kernels run
    f0, g0 = Objective(net, X, y).value_and_grad(theta)
    prop = MGRITPropagation(levels=3, cf=2, relax="FCF", tol=1e-13, rtol=None, fwd_iters=60,
                            bwd_iters=60, batched=True, warm_start=False)
    obj = Objective(net, X, y, propagation=prop)
    f, g = obj.value_and_grad(theta)
    assert abs(f - f0) <= 1e-12 * abs(f0)
    assert np.max(np.abs(g - g0)) <= 1e-10 * np.max(np.abs(g0))


def test_conv_batched_benchmark_runs_and_checks_bits(tmp_path, capsys):
    """``benchmarks/conv_batched.py --quick`` (2 repeats): a Markdown table, JSON, and
    the batched steps' bits equal to the loop's in every row."""
    import json
    import pathlib
    import runpy

    root = pathlib.Path(__file__).resolve().parents[1]
    main = runpy.run_path(str(root / "benchmarks" / "conv_batched.py"), run_name="x")["main"]
    rows = main(["--quick", "--repeats", "2", "--json", str(tmp_path / "b.json")])
    assert rows and all(r["bit_identical"] for r in rows)
    assert {r["steppers_take"] for r in rows} == {"batched", "loop"}
    out = capsys.readouterr().out
    assert "| fwd batched/loop |" in out and "| same bits |" in out
    assert len(json.loads((tmp_path / "b.json").read_text())["rows"]) == len(rows)
