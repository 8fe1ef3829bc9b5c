"""The GPU backend: same results as the CPU kernels where CUDA exists; CPU path CuPy-free.

The GPU cases skip cleanly on machines without CuPy or without a CUDA device (as in
CI); there the same code paths run on the CPU stand-in (``tests/test_device_solvers.py``)
and the raw kernels under the CUDA emulation (``tests/test_gpu_source.py``,
``tests/test_gpu_module_emulated.py``). Where CUDA exists these cases check the real
thing: every fused kernel against the CPU kernels in float64 (1e-12) and float32,
the fused and cuBLAS paths against each other, the column sums against exact sums, the
whole-sweep kernels inside objectives, MGRIT's batched relaxation, and CUDA-graph
capture of fused steps with CuPy's stream capture.
"""

import subprocess
import sys

import numpy as np
import pytest

from mgnn.backend import get_namespace, gpu_available, to_host
from mgnn.data import peaks
from mgnn.nets import ResNet
from mgnn.objective import Objective

needs_gpu = pytest.mark.skipif(not gpu_available(), reason="needs CuPy and a CUDA device")


def test_cpu_path_imports_nothing_from_cupy():
    code = (
        "import sys, numpy as np, mgnn\n"
        "from mgnn.data import peaks\n"
        "d = peaks(20, 5)\n"
        "net = mgnn.ResNet(2, 3, 4, 5)\n"
        "obj = mgnn.Objective(net, d.X_train, d.Y_train)\n"
        "th = net.init(0)\n"
        "obj.value_and_grad(th); obj.hessp(th, th)\n"
        "assert not any(m == 'cupy' or m.startswith('cupy.') for m in sys.modules), 'cupy'\n"
        "assert 'mgnn.kernels.gpu' not in sys.modules\n"
        "assert 'mgnn.testing.fakecupy' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_namespace_follows_the_array_type():
    assert get_namespace(np.zeros(2)) is np
    np.testing.assert_array_equal(to_host(np.ones(3)), np.ones(3))


@pytest.mark.skipif(gpu_available(), reason="checks the message without CuPy")
def test_to_device_without_cupy_says_what_to_install():
    try:
        import cupy  # noqa: F401
    except ImportError:
        from mgnn.backend import to_device

        with pytest.raises(ImportError, match=r"pip install -e \"\.\[gpu\]\""):
            to_device(np.ones(2))


# ---------------------------------------------------------------- where CUDA is
def _dev(*a):
    from mgnn.backend import to_device

    return to_device(*a)


@needs_gpu
@pytest.mark.parametrize("act", ["tanh", "relu", "smooth_relu", "identity"])
@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("width", [12, 64, 65])
def test_gpu_equals_cpu_float64(act, task, width):  # pragma: no cover - needs CUDA
    """Width 12 and 64: the fused sweeps; 65: cuBLAS layer by layer."""
    d = peaks(300, 10)
    rng = np.random.default_rng(0)
    net = ResNet(2, width, 12, 5 if task == "classification" else 1, activation=act, task=task)
    Y = d.Y_train if task == "classification" else rng.standard_normal((300, 1))
    cpu = Objective(net, d.X_train, Y, tikhonov=1e-3, smoothness=1e-2)
    gpu = Objective(net, *_dev(d.X_train, Y), tikhonov=1e-3, smoothness=1e-2)
    theta = net.init(rng) + 0.1 * rng.standard_normal(net.n_params)
    v = rng.standard_normal(net.n_params)
    tg, vg = _dev(theta, v)
    np.testing.assert_allclose(to_host(net.forward(tg, _dev(d.X_train))),
                               net.forward(theta, d.X_train), rtol=1e-12, atol=1e-12)
    fc, gc = cpu.value_and_grad(theta)
    fg, gg = gpu.value_and_grad(tg)
    assert fg == pytest.approx(fc, rel=1e-12)
    np.testing.assert_allclose(to_host(gg), gc, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(to_host(gpu.hessp(tg, vg)), cpu.hessp(theta, v), rtol=1e-11,
                               atol=1e-12)


@needs_gpu
@pytest.mark.parametrize("s", [1, 64, 5000])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fused_steps_equal_the_cpu_and_the_cublas_path(s, dtype):  # pragma: no cover
    from mgnn.kernels import cpu, gpu

    rng = np.random.default_rng(s)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for w_in, w_out, skip in ((32, 32, True), (2, 32, False), (64, 64, True), (7, 7, True)):
        U = rng.standard_normal((s, w_in)).astype(dtype)
        W = (0.3 * rng.standard_normal((w_out, w_in))).astype(dtype)
        b, Ln = rng.standard_normal(w_out).astype(dtype), rng.standard_normal((s, w_out))
        Ln = Ln.astype(dtype)
        S0, o0 = np.empty((s, w_out), dtype), np.empty((s, w_out), dtype)
        cpu.forward_step(U, W, b, 0.3, cpu.TANH, S0, o0, skip=skip)
        Sg, og = _dev(np.zeros((s, w_out), dtype), np.zeros((s, w_out), dtype))
        gpu.forward_step(*_dev(U, W, b), 0.3, cpu.TANH, Sg, og, skip=skip)
        np.testing.assert_allclose(to_host(og), o0, rtol=tol, atol=tol)
        D0, L0 = np.empty((s, w_out), dtype), np.empty((s, w_in), dtype)
        gW0, gb0 = np.empty((w_out, w_in), dtype), np.empty(w_out, dtype)
        cpu.adjoint_step(Ln, U, W, S0, 0.3, cpu.TANH, D0, L=L0 if skip else None, gW=gW0,
                         gb=gb0, skip=skip)
        Dg, Lg, gWg, gbg = _dev(np.zeros_like(D0), np.zeros_like(L0), np.zeros_like(gW0),
                                np.zeros_like(gb0))
        gpu.adjoint_step(*_dev(Ln, U, W), Sg, 0.3, cpu.TANH, Dg, L=Lg if skip else None,
                         gW=gWg, gb=gbg, skip=skip)
        for a, r in ((Dg, D0), (gWg, gW0), (gbg, gb0)) + (((Lg, L0),) if skip else ()):
            np.testing.assert_allclose(to_host(a), r, rtol=tol * 10, atol=tol * 10)


@needs_gpu
def test_column_sums_equal_exact_sums():  # pragma: no cover - needs CUDA
    import cupy as cp
    from mgnn.kernels import gpu

    rng = np.random.default_rng(0)
    for shape in ((50000, 32), (1, 5), (7, 333), (16, 5000, 32)):
        A = rng.standard_normal(shape)
        out = cp.empty(shape[:-2] + shape[-1:])
        gpu.column_sum(cp.asarray(A), out)
        np.testing.assert_allclose(out.get(), A.sum(axis=-2), rtol=1e-12, atol=1e-11)


@needs_gpu
@pytest.mark.parametrize("batched", [False, True])
def test_mgrit_on_the_gpu_equals_the_cpu(batched):  # pragma: no cover - needs CUDA
    from mgnn.mgrit import MGRITPropagation

    d = peaks(200, 10)
    net = ResNet(2, 16, 32, 5, T=2.0)

    def obj(X, Y):
        return Objective(net, X, Y, propagation=MGRITPropagation(levels=3, cf=2, fwd_iters=2,
                                                                 bwd_iters=1, batched=batched))
    theta = net.init(0)
    f0, g0 = obj(d.X_train, d.Y_train).value_and_grad(theta)
    f, g = obj(*_dev(d.X_train, d.Y_train)).value_and_grad(_dev(theta))
    assert f == pytest.approx(f0, rel=1e-12)
    np.testing.assert_allclose(to_host(g), g0, rtol=1e-11, atol=1e-12)


@needs_gpu
def test_fused_steps_replay_as_a_cuda_graph():  # pragma: no cover - needs CUDA
    import cupy as cp
    from mgnn.kernels import gpu

    from mgnn.graphs import CaptureError, GraphCache

    rng = np.random.default_rng(1)
    N, s, w = 16, 256, 32
    W = cp.asarray(0.3 * rng.standard_normal((N, w, w)))
    b = cp.asarray(rng.standard_normal((N, w)))
    U, S = cp.zeros((N + 1, s, w)), cp.zeros((N, s, w))
    U[0] = cp.asarray(rng.standard_normal((s, w)))

    def sweep():
        for n in range(N):
            gpu.forward_step(U[n], W[n], b[n], 0.1, 1, S[n], U[n + 1])

    g = GraphCache(cp)
    g.run("sweep", sweep)
    ref = U.get()
    U[1:] = 0
    g.run("sweep", sweep)
    g.run("sweep", sweep)
    cp.cuda.Device().synchronize()
    np.testing.assert_array_equal(U.get(), ref)
    Ww = cp.asarray(rng.standard_normal((128, 128)))
    wide = cp.zeros((s, 128))
    g.run("wide", lambda: gpu.forward_step(wide, Ww, cp.zeros(128), 0.1, 1, wide.copy(), wide))
    with pytest.raises(CaptureError):
        g.run("wide", lambda: gpu.forward_step(wide, Ww, cp.zeros(128), 0.1, 1, wide, wide))
