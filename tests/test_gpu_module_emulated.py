"""The GPU module itself (``kernels/gpu.py``) on the CPU: its Python, its raw kernels.

``kernels/gpu.py`` is imported with ``cupy`` bound to the CPU stand-in
(:mod:`mgnn.testing.fakecupy`), extended with the two things the stand-in cannot do:
``cupy.RawModule`` compiles nothing but launches the *same* CUDA source under the CPU
emulation of ``tests/cuda_emulation.py``, and ``cupy.ElementwiseKernel`` runs a NumPy
transcription of each fused elementwise body. Everything else the GPU module does
(layouts and layer strides of stacks, launch plans, the choice between fused and cuBLAS
paths, the batched weight gradients of the sweeps, the column sums, the losses) runs as
written and is compared with the CPU kernels; then the module serves as the kernels of
the stand-in's namespace and whole evaluations (value, gradient, Hessian-vector
product, MGRIT with batched relaxation, a training run) are compared with the CPU.
"""

import importlib.util
import pathlib
import re
import sys
import types

import numpy as np
import pytest
from mgnn.kernels import cpu
from mgnn.kernels import cuda_source as cs

from mgnn.backend import register_namespace, to_device, to_host
from mgnn.testing import fakecupy

GPU_FILE = pathlib.Path(cpu.__file__).with_name("gpu.py")
W, W_IN, WIDE = 6, 2, 65
RPTS = (1, 2, 4, 8)
INSTANCES = (
    [(n, "double", wio, r) for n in ("mgnn_fwd_step", "mgnn_adj_step")
     for wio in ((W, W), (W_IN, W)) for r in RPTS]
    + [(n, "double", (W,), r) for n in ("mgnn_fwd_sweep", "mgnn_adj_sweep", "mgnn_tan_sweep",
                                        "mgnn_soadj_sweep") for r in RPTS]
    + [(n, "double", (), None) for n in ("mgnn_colsum_part", "mgnn_colsum_final",
                                         "mgnn_xent_rows")])


# ------------------------------------------------------ NumPy elementwise bodies
def _sig(z, act):
    if act == cpu.RELU:
        return np.where((z > 0) | np.isnan(z), z, 0.0)
    if act == cpu.SMOOTH_RELU:
        e = cpu.SMOOTH_RELU_EPS
        return np.where(z <= -e, 0.0, np.where(z >= e, z, (z + e) ** 2 * (0.25 / e)))
    if act == cpu.TANH:
        return np.tanh(z)
    return z


def _dsig(r, act):
    if act == cpu.RELU:
        return (r > 0).astype(r.dtype)
    if act == cpu.SMOOTH_RELU:
        e = cpu.SMOOTH_RELU_EPS
        return np.where(r <= -e, 0.0, np.where(r >= e, 1.0, (r + e) * (0.5 / e)))
    if act == cpu.TANH:
        return 1.0 - r * r
    return np.ones_like(r)


def _d2sig(r, act):
    if act == cpu.SMOOTH_RELU:
        e = cpu.SMOOTH_RELU_EPS
        return np.where((r <= -e) | (r >= e), 0.0, 0.5 / e)
    if act == cpu.TANH:
        return -2.0 * r * (1.0 - r * r)
    return np.zeros_like(r)


def _ew_forward(U, b, h, act, skip, S, out):
    z = S + b
    a = _sig(z, act)
    rec, o = (a if act == cpu.TANH else z), (U + h * a if skip else h * a)
    S[...], out[...] = rec, o


def _ew_delta(S, L, h, act, D):
    D[...] = h * _dsig(S, act) * L


def _ew_tangent(Tm, db, S, dU, h, act, skip, want_T, dZ, out):
    z = dZ + db
    if want_T:
        z = z + Tm
    v = h * _dsig(S, act) * z
    o = dU + v if skip else v
    dZ[...], out[...] = z, o


def _ew_soadjoint(S, dZ, L, dL, h, act, D, dD):
    d1 = _dsig(S, act)
    D[...], dD[...] = h * d1 * L, h * (_d2sig(S, act) * dZ * L + d1 * dL)


def _ew_activation(Z, act, which, out):
    r = np.tanh(Z) if act == cpu.TANH else Z
    out[...] = (_sig(Z, act), _dsig(r, act), _d2sig(r, act))[which]


EW = {"mgnn_forward": _ew_forward, "mgnn_delta": _ew_delta, "mgnn_tangent": _ew_tangent,
      "mgnn_soadjoint": _ew_soadjoint, "mgnn_activation": _ew_activation}


@pytest.fixture(scope="module")
def gpu(tmp_path_factory):
    """``kernels/gpu.py`` bound to the stand-in with emulated raw kernels."""
    import shutil

    if shutil.which("g++") is None:
        pytest.skip("g++ not installed")
    from cuda_emulation import Emulator, build

    emu = Emulator(build(INSTANCES, str(tmp_path_factory.mktemp("emu"))), INSTANCES)
    launches = []

    class RawFunction:
        def __init__(self, expr):
            m = re.fullmatch(r"(\w+)<(\w+)((?:,\d+)*)>", expr)
            self.name, self.T = m.group(1), m.group(2)
            ints = [int(x) for x in m.group(3).split(",")[1:]]
            many = len(cs.RAW_KERNELS[self.name][0]) > 1
            self.widths, self.rpt = (tuple(ints[:-1]), ints[-1]) if many else ((), None)

        def __call__(self, grid, block, args, shared_mem=0):
            launches.append(self.name)
            host = [a._a if isinstance(a, fakecupy.ndarray) else a for a in args]
            emu.launch(self.name, np.float64 if self.T == "double" else np.float32,
                       self.widths, self.rpt, grid, block, shared_mem, *host)

    class RawModule:
        def __init__(self, code, options=(), name_expressions=()):
            assert "mgnn_fwd_sweep" in code and options == ("-std=c++17",)

        def get_function(self, expr):
            return RawFunction(expr)

    def elementwise(inp, out, body, name, preamble=""):
        fn = EW[name]

        def call(*args):
            return fn(*[a._a if isinstance(a, fakecupy.ndarray) else a for a in args])
        return call

    cp = types.ModuleType("cupy")
    cp.__getattr__ = lambda name: getattr(fakecupy, name)
    cp.RawModule, cp.ElementwiseKernel = RawModule, elementwise
    saved = sys.modules.get("cupy")
    sys.modules["cupy"] = cp
    try:
        spec = importlib.util.spec_from_file_location("mgnn_gpu_emulated", GPU_FILE)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        if saved is None:
            del sys.modules["cupy"]
        else:  # pragma: no cover
            sys.modules["cupy"] = saved
    sys.modules["mgnn_gpu_emulated"] = mod
    mod.launches = launches
    yield mod
    del sys.modules["mgnn_gpu_emulated"]


@pytest.fixture
def on_emulated_gpu(gpu):
    """The stand-in's namespace runs the emulated GPU module's kernels (restored after)."""
    register_namespace(fakecupy.ndarray, fakecupy, "mgnn_gpu_emulated")
    yield gpu
    register_namespace(fakecupy.ndarray, fakecupy, "mgnn.testing._fake_kernels")


def D(*a):
    return to_device(*a, xp=fakecupy)


def close(a, b, tol=1e-12):
    np.testing.assert_allclose(to_host(a), to_host(b), rtol=tol, atol=tol)


def rnd(rng, *shape):
    return rng.standard_normal(shape)


# ------------------------------------------------------------------ steps
@pytest.mark.parametrize("act", sorted(cpu.ACTIVATIONS.values()))
@pytest.mark.parametrize("w_in, w_out, skip", [(W, W, True), (W_IN, W, False),
                                               (WIDE, WIDE, True)])
def test_forward_and_adjoint_steps_equal_the_cpu(gpu, act, w_in, w_out, skip):
    rng = np.random.default_rng(act)
    s, h = 70, 0.3
    U, Wm, b, Ln = rnd(rng, s, w_in), rnd(rng, w_out, w_in), rnd(rng, w_out), rnd(rng, s, w_out)
    S0, o0 = np.empty((s, w_out)), np.empty((s, w_out))
    cpu.forward_step(U, Wm, b, h, act, S0, o0, skip=skip)
    Sd, od = D(np.zeros((s, w_out)), np.zeros((s, w_out)))
    n = len(gpu.launches)
    gpu.forward_step(*D(U, Wm, b), h, act, Sd, od, skip=skip)
    close(Sd, S0)
    close(od, o0)
    assert (len(gpu.launches) > n) == cs.fused(w_in, w_out)   # fused: a raw launch
    D0, L0, gW0, gb0 = (np.empty((s, w_out)), np.empty((s, w_in)), np.empty((w_out, w_in)),
                        np.empty(w_out))
    L = L0 if skip else None
    cpu.adjoint_step(Ln, U, Wm, S0, h, act, D0, L=L, gW=gW0, gb=gb0, skip=skip)
    Dd, Ld, gWd, gbd = D(np.zeros_like(D0), np.zeros_like(L0), np.zeros_like(gW0),
                         np.zeros_like(gb0))
    gpu.adjoint_step(D(Ln), D(U), D(Wm), Sd, h, act, Dd, L=Ld if skip else None, gW=gWd, gb=gbd,
                     skip=skip)
    close(Dd, D0)
    close(gWd, gW0)
    close(gbd, gb0)
    if skip:
        close(Ld, L0)


def test_batched_steps_on_descending_views_equal_the_cpu(gpu):
    """MGRIT's relaxation passes stacks of layers as strided (descending) views."""
    rng = np.random.default_rng(2)
    s, h, k, act = 50, 0.2, 3, cpu.TANH
    theta = rnd(rng, 7, W * W + W)
    Wst, bst = theta[6::-3, : W * W].reshape(k, W, W), theta[6::-3, W * W:]
    U, Ln = rnd(rng, 2 * k, s, W)[::-2], rnd(rng, k, s, W)
    S0, o0 = np.empty((k, s, W)), np.empty((k, s, W))
    cpu.forward_step_batch(U, Wst, bst, h, act, S0, o0)
    Sbig, obig = D(np.zeros((2 * k, s, W)), np.zeros((k, s, W)))
    Sd, od = Sbig[::-2], obig
    gpu.forward_step_batch(*D(U, Wst, bst), h, act, Sd, od)
    close(Sd, S0)
    close(od, o0)
    G0 = np.zeros((k, W * W + W))
    D0, L0 = np.empty((k, s, W)), np.empty((k, s, W))
    cpu.adjoint_step_batch(Ln, U, Wst, S0, h, act, D0, L=L0,
                           gW=G0[:, : W * W].reshape(k, W, W), gb=G0[:, W * W:])
    Gd = D(np.zeros((k, W * W + W)))
    Dd, Ld = D(np.zeros((k, s, W)), np.zeros((k, s, W)))
    gpu.adjoint_step_batch(D(Ln), D(U), D(Wst), Sd, h, act, Dd, L=Ld,
                           gW=Gd[:, : W * W].reshape(k, W, W), gb=Gd[:, W * W:])
    close(Ld, L0)
    close(Gd, G0)


@pytest.mark.parametrize("shape", [(1, 3), (300, 40), (4, 130, 6), (2, 70, 70)])
def test_column_sums(gpu, shape):
    rng = np.random.default_rng(sum(shape))
    A = rnd(rng, *shape)
    out = D(np.full(shape[:-2] + shape[-1:], np.nan))
    gpu.column_sum(D(A), out)
    close(out, A.sum(axis=-2), 1e-13)
    # a strided output, as the bias rows of a gradient's blocks
    if len(shape) == 3:
        big = D(np.full((shape[0], shape[2] + 4), np.nan))
        gpu.column_sum(D(A), big[:, 4:])
        close(big[:, 4:], A.sum(axis=1), 1e-13)
        assert np.isnan(to_host(big[:, :4])).all()


def test_losses_equal_the_cpu(gpu):
    rng = np.random.default_rng(0)
    Y, T = rnd(rng, 80, 5), rnd(rng, 80, 5)
    labels = rng.integers(0, 5, 80)
    G0, G = np.empty((80, 5)), D(np.zeros((80, 5)))
    assert gpu.cross_entropy_value_grad(D(Y), D(labels), G) == pytest.approx(
        cpu.cross_entropy_value_grad(Y, labels, G0), rel=1e-13)
    close(G, G0)
    assert gpu.cross_entropy_value(D(Y), D(labels)) == pytest.approx(
        cpu.cross_entropy_value(Y, labels), rel=1e-13)
    assert gpu.mse_value_grad(D(Y), D(T), G) == pytest.approx(cpu.mse_value_grad(Y, T, G0),
                                                              rel=1e-13)
    close(G, G0)
    out0, out = np.empty((80, 5)), D(np.zeros((80, 5)))
    cpu.cross_entropy_hessp(Y, T, out0)
    gpu.cross_entropy_hessp(D(Y), D(T), out)
    close(out, out0)


# ------------------------------------------------------------------ sweeps
@pytest.mark.parametrize("s", [5, 300])
def test_sweeps_equal_the_stand_in_reference(gpu, s):
    """The GPU sweeps (one launch each, batched weight gradients) against the layer-by-
    layer reference sweeps of the stand-in (the CPU kernels)."""
    from mgnn.testing import _fake_kernels as ref

    rng = np.random.default_rng(s)
    N, h, act = 5, 0.3, cpu.SMOOTH_RELU
    P, dP = 0.5 * rnd(rng, N * (W * W + W)), rnd(rng, N * (W * W + W))
    U0 = rnd(rng, s, W)
    res = {}
    for name, k in (("gpu", gpu), ("ref", ref)):
        U, S = D(np.zeros((N + 1, s, W)), np.zeros((N, s, W)))
        U[0] = D(U0)
        k.forward_sweep(U, D(P), h, act, S)
        L = D(np.zeros((2, s, W)))
        L[0] = D(rnd(np.random.default_rng(1), s, W))
        G = D(np.zeros(N * (W * W + W)))
        cur = k.adjoint_sweep(L, 0, U, D(P), S, h, act, D(np.zeros((s, W))), G)
        dU, dZ = D(np.zeros((N + 1, s, W)), np.zeros((N, s, W)))
        dU[0] = D(rnd(np.random.default_rng(2), s, W))
        k.tangent_sweep(U, dU, D(P), D(dP), S, h, act, dZ)
        Lb, dLb = D(np.zeros((2, s, W)), np.zeros((2, s, W)))
        Lb[0], dLb[0] = D(rnd(np.random.default_rng(3), s, W), rnd(np.random.default_rng(4),
                                                                     s, W))
        H = D(np.zeros(N * (W * W + W)))
        cur2 = k.soadjoint_sweep(Lb, dLb, 0, U, dU, D(P), D(dP), S, dZ, h, act,
                                 D(np.zeros((s, W))), D(np.zeros((s, W))), H)
        res[name] = [to_host(x) for x in (U, S, L[cur], G, dU, dZ, Lb[cur2], dLb[cur2], H)]
        assert cur == cur2 == N % 2
    for a, b in zip(res["gpu"], res["ref"], strict=True):
        close(a, b, 1e-11)


# --------------------------------------------------------- whole evaluations
def _objective(xp, width, depth=5, prop=None, s=40, seed=0):
    from mgnn.data import peaks
    from mgnn.nets import ResNet
    from mgnn.objective import Objective

    d = peaks(s, 10, seed=seed)
    net = ResNet(2, width, depth, 5, T=2.0, activation="tanh")
    X, Y = (d.X_train, d.Y_train) if xp is None else D(d.X_train, d.Y_train)
    return Objective(net, X, Y, tikhonov=1e-3, smoothness=1e-2, propagation=prop)


@pytest.mark.parametrize("width", [W, WIDE])
def test_value_gradient_and_hessp_on_the_emulated_gpu_equal_the_cpu(on_emulated_gpu, width):
    gpu = on_emulated_gpu
    cpu_obj, obj = _objective(None, width), _objective(fakecupy, width)
    rng = np.random.default_rng(0)
    theta = cpu_obj.net.init(rng) + 0.1 * rng.standard_normal(cpu_obj.n_params)
    v = rng.standard_normal(cpu_obj.n_params)
    n = len(gpu.launches)
    f0, g0 = cpu_obj.value_and_grad(theta)
    f, g = obj.value_and_grad(D(theta))
    assert f == pytest.approx(f0, rel=1e-12)
    close(g, g0, 1e-11)
    close(obj.hessp(D(theta), D(v)), cpu_obj.hessp(theta, v), 1e-10)
    if width == W:   # the sweeps ran as single launches
        assert {"mgnn_fwd_sweep", "mgnn_adj_sweep", "mgnn_tan_sweep",
                "mgnn_soadj_sweep"} <= set(gpu.launches[n:])


@pytest.mark.parametrize("batched", [False, True])
def test_mgrit_on_the_emulated_gpu_equals_the_cpu(on_emulated_gpu, batched):
    from mgnn.mgrit import MGRITPropagation

    def prop():
        return MGRITPropagation(levels=2, cf=4, fwd_iters=2, bwd_iters=1, batched=batched)
    cpu_obj, obj = _objective(None, W, 8, prop()), _objective(fakecupy, W, 8, prop())
    theta = cpu_obj.net.init(3)
    f0, g0 = cpu_obj.value_and_grad(theta)
    f, g = obj.value_and_grad(D(theta))
    assert f == pytest.approx(f0, rel=1e-12)
    close(g, g0, 1e-11)


def test_training_on_the_emulated_gpu_follows_the_cpu(on_emulated_gpu):
    from mgnn.optim import minimize

    cpu_obj, obj = _objective(None, W), _objective(fakecupy, W)
    theta = cpu_obj.net.init(1)
    a = minimize(cpu_obj, theta, method="lbfgs", options={"maxiter": 5})
    b = minimize(obj, D(theta), method="lbfgs", options={"maxiter": 5})
    assert b.nit == a.nit
    np.testing.assert_allclose(b.history["fun"], a.history["fun"], rtol=1e-10)
    close(b.x, a.x, 1e-8)
