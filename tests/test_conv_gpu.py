"""The GPU conv kernels (``kernels/gpu_conv.py``) without a GPU, and on one where present.

* the CUDA C of :mod:`mgnn.kernels.cuda_conv_source` compiles with nvcc (float, double);
* the *same C text* runs on the CPU (``g++``, one loop over the element index ``i``,
  as CuPy's ElementwiseKernel runs one thread per ``i``) and equals the CPU im2col /
  col2im bit for bit;
* ``kernels/gpu_conv.py`` itself runs with ``cupy`` bound to the CPU stand-in
  (:mod:`mgnn.testing.fakecupy`), its im2col/col2im launches going to that C and the
  dense fused elementwise bodies to the NumPy transcriptions of
  ``tests/test_gpu_module_emulated.py``: every step equals the CPU kernels to rounding,
  a conv step does no allocation and no host synchronisation (fakecupy's capture
  audit), and as the kernels of the stand-in's namespace a ConvResNet objective's
  value, gradient and Hessian-vector product on a device theta equal the CPU's, with
  serial propagation and with MGRIT;
* with CuPy and a device, the module against the CPU kernels (skipped otherwise).
"""

import ctypes
import importlib.util
import pathlib
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
from mgnn.kernels import cpu
from mgnn.kernels import cpu_conv as kc
from mgnn.kernels.cuda_conv_source import KERNELS, SCALARS

from mgnn.backend import gpu_available, register_namespace, to_device, to_host
from mgnn.testing import fakecupy

NVCC, GXX = shutil.which("nvcc"), shutil.which("g++")
GPU_CONV_FILE = pathlib.Path(kc.__file__).with_name("gpu_conv.py")
CTYPES = {"int32": "int", "bool": "bool"}


def _params(inp, out, T):
    """``[(C declaration, name, is_array)]`` of an ElementwiseKernel's parameters."""
    res = []
    for spec in (inp, out):
        for item in spec.split(","):
            words = item.split()
            name = words[-1]
            if name in SCALARS:
                res.append((f"{CTYPES[words[-2]]} {name}", name, False))
            else:
                assert words[0] == "raw" and words[1] == "T", item
                res.append((f"{T}* {name}", name, True))
    return res


def _cuda_harness(name, inp, out, body):
    """The kernel as CuPy instantiates an ElementwiseKernel of raw arrays: one thread
    per index ``i < n``."""
    text = ""
    for T in ("float", "double"):
        plist = ", ".join(d for d, _, _ in _params(inp, out, T))
        text += (f"__global__ void mgnn_conv_{name}_{T}({plist}, ptrdiff_t n) {{\n"
                 f"  typedef {T} T;\n"
                 f"  ptrdiff_t i = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x;\n"
                 f"  if (i >= n) return;\n{body}\n}}\n")
    return text


def _host_harness(name, inp, out, body):
    """The same body as a host loop over ``i`` (C linkage, for ctypes)."""
    text = ""
    for T in ("float", "double"):
        plist = ", ".join(d for d, _, _ in _params(inp, out, T))
        text += (f'extern "C" void mgnn_conv_{name}_{T}({plist}, ptrdiff_t n) {{\n'
                 f"  typedef {T} T;\n"
                 f"  for (ptrdiff_t i = 0; i < n; ++i) {{\n{body}\n  }}\n}}\n")
    return text


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
def test_conv_cuda_sources_compile(tmp_path):
    from test_gpu_source import nvcc_ptx

    src = "#include <cstddef>\n" + "\n".join(_cuda_harness(n, *k) for n, k in KERNELS.items())
    ptx = nvcc_ptx(src, tmp_path, "mgnn_conv_kernels")
    for name in KERNELS:
        assert f"mgnn_conv_{name}_double" in ptx and f"mgnn_conv_{name}_float" in ptx


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory):
    """The CUDA C of the conv kernels compiled for the host (``g++``): name -> call."""
    if GXX is None:
        pytest.skip("g++ not installed")
    folder = tmp_path_factory.mktemp("conv_emu")
    src = "#include <cstddef>\n" + "\n".join(_host_harness(n, *k) for n, k in KERNELS.items())
    (folder / "k.cpp").write_text(src)
    lib = folder / "libk.so"
    res = subprocess.run([GXX, "-O1", "-shared", "-fPIC", "-o", str(lib), str(folder / "k.cpp")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    dll = ctypes.CDLL(str(lib))
    launches = []

    def make(name):
        params = _params(*KERNELS[name][:2], "T")

        def call(*args, size):
            assert len(args) == len(params)
            arrays = [a._a if isinstance(a, fakecupy.ndarray) else a for a in args]
            T = next(a.dtype for a, (_, _, arr) in zip(arrays, params, strict=True) if arr)
            cargs = []
            for a, (_, _, arr) in zip(arrays, params, strict=True):
                if arr:  # the launch's flat raw views of C-contiguous arrays
                    assert a.dtype == T and a.flags.c_contiguous and a.ndim == 1
                    cargs.append(ctypes.c_void_p(a.ctypes.data))
                else:
                    cargs.append(ctypes.c_bool(a) if isinstance(a, bool) else ctypes.c_int(a))
            launches.append(name)
            f = getattr(dll, f"mgnn_conv_{name}_{'double' if T == np.float64 else 'float'}")
            f(*cargs, ctypes.c_ssize_t(size))
        return call
    kernels = {name: make(name) for name in KERNELS}
    kernels["launches"] = launches
    return kernels


@pytest.fixture(scope="module")
def gpu_conv(host_kernels):
    """``kernels/gpu_conv.py`` with ``cupy`` bound to the stand-in: its ElementwiseKernels
    run the host-compiled C (im2col, col2im) or the NumPy transcriptions of the dense
    fused bodies."""
    from test_gpu_module_emulated import EW

    def elementwise(inp, out, body, name, preamble=""):
        short = name.removeprefix("mgnn_conv_")
        if short in KERNELS:
            return host_kernels[short]
        fn = EW["mgnn_" + short]

        def call(*args):
            return fn(*[a._a if isinstance(a, fakecupy.ndarray) else a for a in args])
        return call

    cp = types.ModuleType("cupy")
    cp.__getattr__ = lambda name: getattr(fakecupy, name)
    cp.ElementwiseKernel = elementwise
    saved = sys.modules.get("cupy")
    sys.modules["cupy"] = cp
    try:
        spec = importlib.util.spec_from_file_location("mgnn_gpu_conv_emulated", GPU_CONV_FILE)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        if saved is None:
            del sys.modules["cupy"]
        else:  # pragma: no cover
            sys.modules["cupy"] = saved
    mod.launches = host_kernels["launches"]
    return mod


def D(*a):
    return to_device(*a, xp=fakecupy)


def close(a, b, tol=1e-12):
    np.testing.assert_allclose(to_host(a), to_host(b), rtol=tol, atol=tol)


SHAPES = [(5, 4, 3, 3, True), (3, 6, 1, 4, False), (1, 1, 2, 2, True), (4, 4, 2, 5, False)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("H, W, C", [(5, 4, 3), (1, 1, 2), (3, 7, 1)])
def test_host_compiled_im2col_and_col2im_equal_the_cpu_bit_for_bit(host_kernels, H, W, C,
                                                                  dtype):
    rng = np.random.default_rng(H * W * C)
    s = 3
    U = rng.standard_normal((s, H * W * C)).astype(dtype)
    col0, col1 = np.empty((s * H * W, 9 * C), dtype), np.full((s * H * W, 9 * C), np.nan, dtype)
    kc.im2col(U, H, W, C, col0)
    host_kernels["im2col"](U.reshape(-1), H, W, C, col1.reshape(-1), size=col1.size)
    assert np.array_equal(col0, col1)
    E, base = col0 * 1.5 + 0.25, rng.standard_normal((s, H * W * C)).astype(dtype)
    for has_base in (False, True):
        o0, o1 = np.empty_like(base), np.full_like(base, np.nan)
        kc.col2im_add(E, H, W, C, base, o0, has_base)
        host_kernels["col2im_add"](E.reshape(-1), base.reshape(-1), H, W, C, has_base,
                                   o1.reshape(-1), size=o1.size)
        assert np.array_equal(o0, o1)
    # in place: out is base
    o0, o1 = base.copy(), base.copy()
    kc.col2im_add(E, H, W, C, o0, o0, True)
    host_kernels["col2im_add"](E.reshape(-1), o1.reshape(-1), H, W, C, True, o1.reshape(-1),
                               size=o1.size)
    assert np.array_equal(o0, o1)


def _step_data(rng, H, W, Ci, Co, s=4):
    U, dU = rng.standard_normal((2, s, H * W * Ci))
    K, dK = 0.4 * rng.standard_normal((2, 3, 3, Ci, Co))
    b, db = rng.standard_normal((2, Co))
    Ln, dLn = rng.standard_normal((2, s, H * W * Co))
    return U, dU, K, dK, b, db, Ln, dLn


def _run_steps(k, arrays, H, W, Ci, Co, act, skip, new):
    """Every step of the kernel module ``k`` (buffers from ``new(shape)``)."""
    U, dU, K, dK, b, db, Ln, dLn = arrays
    s, h = U.shape[0], 0.3
    w = H * W * Co
    col = new((s * H * W * 9 * max(Ci, Co),))
    S, out = new((s, w)), new((s, w))
    k.conv_forward_step(U, K, b, h, act, H, W, S, out, col, skip=skip)
    Dd, gK, gb = new((s, w)), new((3, 3, Ci, Co)), new((Co,))
    L = new((s, H * W * Ci)) if (skip or Ci == Co) else None
    k.conv_adjoint_step(Ln, U, K, S, h, act, H, W, Dd, col, L=L, gK=gK, gb=gb, skip=skip)
    dZ, dout, T = new((s, w)), new((s, w)), new((s, w))
    k.conv_tangent_step(U, dU, K, dK, db, S, h, act, H, W, dZ, dout, col, T, skip=skip)
    D2, dD, L2, dL2 = new((s, w)), new((s, w)), new((s, H * W * Ci)), new((s, H * W * Ci))
    hK, hb, tmpK = new((3, 3, Ci, Co)), new((Co,)), new((9 * Ci * Co,))
    k.conv_soadjoint_step(Ln, dLn, U, dU, K, dK, S, dZ, h, act, H, W, D2, dD, col, L=L2,
                          dL=dL2, dgK=hK, dgb=hb, skip=skip, tmpK=tmpK)
    # the opening layer's tangent (no input tangent)
    dZo, douto = new((s, w)), new((s, w))
    k.conv_tangent_step(U, None, K, dK, db, S, h, act, H, W, dZo, douto, col, T, skip=False)
    outs = [S, out, Dd, gK, gb, dZ, dout, D2, dD, L2, dL2, hK, hb, dZo, douto]
    return outs + ([L] if L is not None else [])


@pytest.mark.parametrize("act", sorted(cpu.ACTIVATIONS))
@pytest.mark.parametrize("H, W, Ci, Co, skip", SHAPES)
def test_gpu_conv_steps_equal_the_cpu(gpu_conv, act, H, W, Ci, Co, skip):
    if skip and Ci != Co:
        pytest.skip("a residual layer has C_in == C_out")
    rng = np.random.default_rng(7)
    arrays = _step_data(rng, H, W, Ci, Co)
    a = cpu.ACTIVATIONS[act]
    ref = _run_steps(kc, arrays, H, W, Ci, Co, a, skip, lambda sh: np.full(sh, np.nan))
    got = _run_steps(gpu_conv, D(*arrays), H, W, Ci, Co, a, skip,
                     lambda sh: D(np.full(sh, np.nan)))
    assert len(got) == len(ref)
    for g, r in zip(got, ref, strict=True):
        close(g, r)


def test_gpu_conv_refuses_strided_batches(gpu_conv):
    U = D(np.zeros((4, 2 * 2 * 3)))[::2]
    with pytest.raises(ValueError, match="C-contiguous"):
        gpu_conv.im2col(U, 2, 2, 3, D(np.zeros(2 * 4 * 27)))


def test_a_conv_step_allocates_nothing_and_never_synchronises(gpu_conv):
    """fakecupy's capture audit over the steps: the only operations a CUDA graph could
    not hold are the cuBLAS GEMMs (CuPy refuses cuBLAS during capture); no allocation,
    no host read. The buffers are made before the capture."""
    rng = np.random.default_rng(1)
    H, W, C = 3, 4, 2
    arrays = D(*_step_data(rng, H, W, C, C))
    bufs = {}

    def new(shape):  # preallocated: the second pass reuses the first pass's buffers
        key = (len(bufs), shape)
        if key not in bufs:
            bufs[key] = D(np.zeros(shape))
        return bufs[key]
    _run_steps(gpu_conv, arrays, H, W, C, C, cpu.TANH, True, new)
    keys = list(bufs)
    it = iter(keys)

    def reuse(shape):
        return bufs[next(it)]
    stream = fakecupy.cuda.Stream(non_blocking=True)
    with fakecupy.audit_capture() as problems, stream:
        stream.begin_capture()
        _run_steps(gpu_conv, arrays, H, W, C, C, cpu.TANH, True, reuse)
        stream.end_capture()
    kinds = {p[0].split(":")[0] for p in problems}
    assert problems and kinds == {"NotImplementedError"}, problems
    assert all("cuBLAS" in p[0] and "gpu_conv.py" in p[1] for p in problems), problems


# ------------------------------------------------- whole evaluations on a device theta
@pytest.fixture
def emulated_conv_family(gpu_conv):
    """The stand-in's namespace with the emulated ``gpu_conv`` as its conv kernels."""
    from mgnn.testing import _fake_kernels

    mod = types.ModuleType("mgnn_conv_family_emulated")
    mod.family = lambda name: gpu_conv if name == "conv" else _fake_kernels.family(name)
    mod.__getattr__ = lambda name: getattr(_fake_kernels, name)
    sys.modules[mod.__name__] = mod
    register_namespace(fakecupy.ndarray, fakecupy, mod.__name__)
    yield gpu_conv
    register_namespace(fakecupy.ndarray, fakecupy, "mgnn.testing._fake_kernels")
    del sys.modules[mod.__name__]


def _conv_problem(pooling="average", depth=6):
    from mgnn.nets import ConvResNet

    rng = np.random.default_rng(5)
    net = ConvResNet((4, 3, 2), 3, depth, 3, T=1.5, activation="tanh", pooling=pooling)
    X, y = rng.standard_normal((5, net.n_in)), rng.integers(0, 3, 5)
    theta = net.init(2, "he") + 0.1 * rng.standard_normal(net.n_params)
    return net, X, y, theta, rng.standard_normal(net.n_params)


@pytest.mark.parametrize("prop", ["serial", "mgrit", "mgrit-batched", "flatten"])
def test_conv_objective_on_the_emulated_gpu_equals_the_cpu(emulated_conv_family, prop):
    from mgnn.mgrit import MGRITPropagation
    from mgnn.objective import Objective

    def propagation():
        if prop.startswith("mgrit"):
            return MGRITPropagation(levels=2, cf=2, fwd_iters=2, bwd_iters=1,
                                    batched=prop == "mgrit-batched")
        return None
    net, X, y, theta, v = _conv_problem("flatten" if prop == "flatten" else "average")
    ref = Objective(net, X, y, tikhonov=1e-3, smoothness=1e-2, propagation=propagation())
    dev = Objective(net, *D(X, y), tikhonov=1e-3, smoothness=1e-2, propagation=propagation())
    f0, g0 = ref.value_and_grad(theta)
    n = len(emulated_conv_family.launches)
    f, g = dev.value_and_grad(D(theta))
    assert {"im2col", "col2im_add"} <= set(emulated_conv_family.launches[n:])  # gpu_conv ran
    assert isinstance(g, fakecupy.ndarray)
    assert f == pytest.approx(f0, rel=1e-12)
    close(g, g0, 1e-11)
    close(dev.hessp(D(theta), D(v)), ref.hessp(theta, v), 1e-10)
    close(net.forward(D(theta), D(X)), net.forward(theta, X))


@pytest.mark.parametrize("backend", ["fake"])
@pytest.mark.parametrize("mgrit", [False, True])
def test_conv_objective_on_the_stand_in_equals_the_cpu_bit_for_bit(backend, to_backend, mgrit):
    """The stand-in's own conv family runs the CPU kernels on the device arrays'
    data: the same bits, and no implicit host conversion anywhere in the sweeps."""
    from mgnn.mgrit import MGRITPropagation
    from mgnn.objective import Objective

    net, X, y, theta, v = _conv_problem()

    def prop():
        return MGRITPropagation(levels=1, batched=True) if mgrit else None
    ref = Objective(net, X, y, tikhonov=1e-3, propagation=prop())
    dev = Objective(net, *to_backend(X, y), tikhonov=1e-3, propagation=prop())
    f0, g0 = ref.value_and_grad(theta)
    f, g = dev.value_and_grad(to_backend(theta))
    assert f == f0 and np.array_equal(to_host(g), g0)
    assert np.array_equal(to_host(dev.hessp(*to_backend(theta, v))), ref.hessp(theta, v))


# ------------------------------------------------------------------ a real device
@pytest.mark.skipif(not gpu_available(), reason="needs CuPy and a CUDA device")
@pytest.mark.parametrize("act", ["tanh", "relu"])
@pytest.mark.parametrize("H, W, Ci, Co, skip", SHAPES)
def test_gpu_conv_steps_on_a_device_equal_the_cpu(act, H, W, Ci, Co, skip):  # pragma: no cover
    import cupy as cp
    from mgnn.kernels import gpu_conv

    if skip and Ci != Co:
        pytest.skip("a residual layer has C_in == C_out")
    arrays = _step_data(np.random.default_rng(3), H, W, Ci, Co, s=33)
    a = cpu.ACTIVATIONS[act]
    ref = _run_steps(kc, arrays, H, W, Ci, Co, a, skip, lambda sh: np.full(sh, np.nan))
    got = _run_steps(gpu_conv, [cp.asarray(x) for x in arrays], H, W, Ci, Co, a, skip,
                     lambda sh: cp.full(sh, np.nan))
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(g.get(), r, rtol=1e-11, atol=1e-11)


@pytest.mark.skipif(not gpu_available(), reason="needs CuPy and a CUDA device")
@pytest.mark.parametrize("prop", ["serial", "mgrit-batched"])
def test_conv_objective_on_a_device_equals_the_cpu(prop):  # pragma: no cover
    import cupy as cp

    from mgnn.mgrit import MGRITPropagation
    from mgnn.objective import Objective

    def propagation():
        return (MGRITPropagation(levels=2, cf=2, fwd_iters=2, bwd_iters=1, batched=True)
                if prop != "serial" else None)
    net, X, y, theta, v = _conv_problem()
    ref = Objective(net, X, y, tikhonov=1e-3, propagation=propagation())
    dev = Objective(net, cp.asarray(X), cp.asarray(y), tikhonov=1e-3,
                    propagation=propagation())
    f0, g0 = ref.value_and_grad(theta)
    f, g = dev.value_and_grad(cp.asarray(theta))
    assert f == pytest.approx(f0, rel=1e-11)
    np.testing.assert_allclose(g.get(), g0, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dev.hessp(cp.asarray(theta), cp.asarray(v)).get(),
                               ref.hessp(theta, v), rtol=1e-9, atol=1e-11)
