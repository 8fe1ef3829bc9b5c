"""The CPU stand-in for CuPy refuses what CuPy refuses and allows what CuPy allows.

Each rule is CuPy 14's (``cupy/_core/core.pyx``: ``__array__``, ``__array_ufunc__``,
``__array_function__``, ``__setitem__``; ``cupy_backends/cuda/libs/cublas.pyx``: no cuBLAS
during stream capture). The capture emulation records device work and replays it on the
same buffers, as a CUDA graph does.
"""

import pickle
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgnn.backend import get_namespace, is_device, kernels_for, to_device, to_host
from mgnn.testing import fakecupy as cp

IMPLICIT = "Implicit conversion to a NumPy array is not allowed"
HOST = r"Unsupported type <class 'numpy.ndarray'>"


@pytest.fixture
def x():
    return cp.asarray(np.arange(6.0).reshape(2, 3))


# ------------------------------------------------------------------ host conversion
@pytest.mark.parametrize("convert", [
    np.asarray, np.array, lambda a: np.array([a[0, 0], a[0, 1]]), lambda a: np.float64(a),
    lambda a: np.asarray(a).sum(), lambda a: a.__array__(),
])
def test_implicit_conversion_to_numpy_raises(x, convert):
    with pytest.raises(TypeError, match=IMPLICIT):
        convert(x)


@pytest.mark.parametrize("op", [
    lambda a, h: a + h, lambda a, h: h + a, lambda a, h: a * h, lambda a, h: h - a,
    lambda a, h: np.add(a, h), lambda a, h: np.concatenate([a, h]), lambda a, h: np.dot(a, h.T),
    lambda a, h: cp.maximum(a, h), lambda a, h: a.__iadd__(h), lambda a, h: a @ h.T,
    lambda a, h: cp.matmul(a, h.T), lambda a, h: a.dot(h.T),
])
def test_a_host_array_where_a_device_array_is_expected_raises(x, op):
    with pytest.raises(TypeError, match=HOST):
        op(x, np.ones((2, 3)))


def test_assigning_host_data_through_basic_indexing_raises_as_in_cupy(x):
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray cannot be used for fill"):
        x[...] = np.ones((2, 3))
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray"):
        x[0] = np.ones(3)
    x[0] = 5.0                          # a scalar is fine
    x[np.array([1])] = np.full((1, 3), 7.0)  # advanced indexing copies the host data
    assert x.get().tolist() == [[5.0, 5.0, 5.0], [7.0, 7.0, 7.0]]


def test_explicit_transfers_work_and_are_counted(x):
    cp.transfers(reset=True)
    h = x.get()
    assert type(h) is np.ndarray and h.tolist() == [[0, 1, 2], [3, 4, 5]]
    y = cp.asarray(h)
    assert type(y) is cp.ndarray and y is not x
    h[0, 0] = 99.0                      # the device copy does not alias host memory
    assert float(y[0, 0]) == 0.0
    assert cp.asnumpy(y).tolist() == x.tolist()
    assert int(x[1, 2]) == 5 and bool(x[0, 1]) and x[0, 2].item() == 2.0
    assert np.frombuffer(x.tobytes(), x.dtype).tolist() == [0, 1, 2, 3, 4, 5]
    t = cp.transfers(reset=True)
    assert t["to_device"] == 1 and t["to_host"] == 8


def test_numpy_functions_dispatch_to_the_device_and_reductions_stay_there(x):
    for r in (np.dot(x[0], x[1]), np.sum(x), x.sum(), x.max(), np.linalg.norm(x),
              np.isfinite(x).all(), x[0, 1]):
        assert type(r) is cp.ndarray and r.ndim == 0
    assert type(np.exp(x)) is cp.ndarray and type(np.concatenate([x, x])) is cp.ndarray
    assert float(np.vdot(x, x)) == 55.0
    assert np.shares_memory(x[0].get(), x.get()) is False  # get() copies
    v = x[0]
    v += 1.0                            # a view: writes through
    assert x.get()[0].tolist() == [1.0, 2.0, 3.0]


def test_only_what_cupy_has_exists():
    with pytest.raises(AttributeError, match="has no attribute 'errstate'"):
        cp.errstate  # noqa: B018
    assert not hasattr(cp, "geomspace") and not hasattr(cp.linalg, "multi_dot")
    with pytest.raises(TypeError, match="no implementation found"):
        np.geomspace(cp.asarray([1.0]), cp.asarray([2.0]))
    for name in ("zeros", "matmul", "einsum", "take_along_axis", "add", "linalg"):
        assert hasattr(cp, name)
    with pytest.raises(NotImplementedError, match="cannot compile or run CUDA"):
        cp.ElementwiseKernel("T x", "T y", "y = x", "k")


def test_the_backend_treats_it_as_a_device_namespace(x):
    assert get_namespace(np.ones(1), x) is cp and is_device(cp)
    assert kernels_for(cp).__name__ == "mgnn.testing._fake_kernels"
    y = to_device(np.ones(2), xp=cp)
    assert type(y) is cp.ndarray and type(to_host(y)) is np.ndarray
    assert to_device(y, xp=cp) is y and to_device(None, xp=cp) is None


def test_kernels_refuse_host_arrays_and_run_the_cpu_kernels():
    k = kernels_for(cp)
    U, W, b = (cp.asarray(np.random.default_rng(0).standard_normal(s)) for s in
               ((5, 3), (3, 3), (3,)))
    S, out = cp.zeros((5, 3)), cp.zeros((5, 3))
    k.forward_step(U, W, b, 0.5, 1, S, out)
    ref = U.get() + 0.5 * np.tanh(U.get() @ W.get().T + b.get())
    np.testing.assert_allclose(out.get(), ref, rtol=1e-14)
    with pytest.raises(TypeError, match=HOST):
        k.forward_step(U.get(), W, b, 0.5, 1, S, out)


def test_pickle_and_copy_keep_the_device(x):
    y = pickle.loads(pickle.dumps(x))
    assert type(y) is cp.ndarray and np.array_equal(y.get(), x.get())
    z = x.copy()
    z += 1
    assert float(x[0, 0]) == 0.0


@settings(max_examples=15)
@given(a=st.lists(st.floats(-100, 100), min_size=1, max_size=8),
       op=st.sampled_from(["add", "multiply", "subtract", "maximum", "tanh", "exp", "sum",
                           "cumsum", "sort"]))
def test_results_equal_numpy_for_any_input(a, op):
    h = np.asarray(a)
    d = cp.asarray(h)
    f, g = getattr(np, op), getattr(cp, op)
    if op in ("add", "multiply", "subtract", "maximum"):
        want, got = f(h, h[::-1]), g(d, d[::-1])
    else:
        want, got = f(h), g(d)
    np.testing.assert_array_equal(to_host(got), want)


# ---------------------------------------------------------------------------- capture
def test_capture_records_and_launch_replays_on_the_same_buffers():
    a, b = cp.asarray(np.ones(4)), cp.zeros(4)
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        s.begin_capture()
        cp.multiply(a, 3.0, out=b)
        b += a
        b[0] = -1.0
        g = s.end_capture()
    assert len(g) == 3 and b.get().tolist() == [0.0] * 4  # nothing ran
    g.launch()
    assert b.get().tolist() == [-1.0, 4.0, 4.0, 4.0]
    a[...] = 2.0
    g.launch()
    assert b.get().tolist() == [-1.0, 8.0, 8.0, 8.0]


@pytest.mark.parametrize("illegal, error, match", [
    (lambda a: float(a[0]), cp.CUDARuntimeError, "not permitted when stream is capturing"),
    (lambda a: a.get(), cp.CUDARuntimeError, "not permitted"),
    (lambda a: a.sum(), cp.CaptureAllocationError, "reduction"),
    (lambda a: a + 1.0, cp.CaptureAllocationError, "allocates device memory"),
    (lambda a: a.copy(), cp.CaptureAllocationError, "allocates"),
    (lambda a: cp.zeros(3), cp.CaptureAllocationError, "allocates"),
    (lambda a: cp.matmul(a[None], a[:, None], out=a[:1][None]), NotImplementedError,
     "cuBLAS"),
    (lambda a: np.dot(a, a), NotImplementedError, "cuBLAS"),
    (lambda a: cp.cuda.Device().synchronize(), cp.CUDARuntimeError, "not permitted"),
    (lambda a: kernels_for(cp).mse_value(a[:, None], a[:, None]), NotImplementedError,
     "host float"),
])
def test_what_cuda_or_cupy_refuse_during_capture_raises(illegal, error, match):
    a = cp.asarray(np.ones(4))
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        s.begin_capture()
        try:
            with pytest.raises(error, match=match):
                illegal(a)
        finally:
            s.end_capture()
    assert float(a[0]) == 1.0  # legal again after the capture


def test_wide_steps_are_not_capturable_narrow_ones_are():
    k = kernels_for(cp)
    s = cp.cuda.Stream(non_blocking=True)
    for w, ok in ((8, True), (128, False)):
        U, W, b = cp.zeros((4, w)), cp.zeros((w, w)), cp.zeros(w)
        S, out = cp.zeros((4, w)), cp.zeros((4, w))
        with s:
            s.begin_capture()
            try:
                if ok:
                    k.forward_step(U, W, b, 0.5, 1, S, out)
                else:
                    with pytest.raises(NotImplementedError, match="needs cuBLAS"):
                        k.forward_step(U, W, b, 0.5, 1, S, out)
            finally:
                g = s.end_capture()
        assert len(g) == int(ok)


def test_capture_rules_of_the_streams():
    with pytest.raises(RuntimeError, match="default"):
        cp.cuda.Stream.null.begin_capture()
    s = cp.cuda.Stream(non_blocking=True)
    s.begin_capture()
    with pytest.raises(cp.CUDARuntimeError, match="already capturing"):
        s.begin_capture()
    g = s.end_capture()
    with pytest.raises(cp.CUDARuntimeError, match="not capturing"):
        s.end_capture()
    with pytest.raises(NotImplementedError):
        cp.cuda.Graph()
    g.launch()  # an empty graph
    s.begin_capture()
    cp.reset()
    assert not s.is_capturing() and float(cp.asarray([1.0])[0]) == 1.0


def test_kernel_families_resolve_per_namespace(monkeypatch):
    """``kernels_for(xp, family)``: ``mgnn.kernels.cpu_<family>`` on NumPy, its stand-in
    twin (data unwrapped, host arrays refused) on the stand-in."""
    import types

    demo = types.ModuleType("mgnn.kernels.cpu_demo")

    def double(a, out):
        np.multiply(a, 2.0, out=out)
    demo.double = double
    monkeypatch.setitem(sys.modules, "mgnn.kernels.cpu_demo", demo)
    assert kernels_for(np, "demo") is demo
    k = kernels_for(cp, "demo")
    x, out = cp.asarray(np.arange(3.0)), cp.zeros(3)
    k.double(x, out)
    assert out.get().tolist() == [0.0, 2.0, 4.0]
    with pytest.raises(TypeError, match=HOST):
        k.double(np.ones(3), out)
    with pytest.raises(TypeError, match="no mgnn kernels"):
        kernels_for(types.ModuleType("torch"))
