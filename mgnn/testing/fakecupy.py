"""A CPU stand-in for CuPy, for tests: device-array semantics on NumPy data.

CI has no GPU, yet a solver that converts a CuPy array to NumPy (``np.asarray``,
``np.concatenate`` of a device and a host array, ``float(x)`` inside a captured
CUDA graph, ...) fails only on the GPU. This module is a namespace, importable in
place of ``cupy``, whose :class:`ndarray` wraps a NumPy array and behaves as a CuPy
array does where it matters:

- **implicit conversion to NumPy raises** ``TypeError`` ("Implicit conversion to a
  NumPy array is not allowed. ...") as ``cupy.ndarray.__array__`` does, so
  ``np.asarray(x)``, ``np.array([x])``, SciPy and Numba reject it;
- **a NumPy array where a device array is expected raises** ``TypeError``
  ("Unsupported type <class 'numpy.ndarray'>"): arithmetic with, ufuncs of,
  functions of, and kernels given a host array; assigning a non-scalar host array
  through basic indexing raises ``ValueError`` as in CuPy (gh-2079);
- **explicit transfers work and are counted**: ``asarray``/``array`` of host data,
  ``x.get()``, ``asnumpy(x)``, ``x.set(host)``, and the scalar reads ``float(x)``,
  ``int(x)``, ``bool(x)``, ``x.item()``, ``x.tolist()`` (see :func:`transfers`);
- **NumPy functions dispatch** through ``__array_function__`` and
  ``__array_ufunc__`` to this namespace (``np.dot(x, y)`` is a device 0-d array,
  ``np.isfinite(x)`` a device array), and only names that CuPy 14 has exist here;
- reductions return 0-d device arrays, and ``x[i]`` of a 1-D array is a 0-d view,
  as in CuPy.

It registers itself with :mod:`mgnn.backend` as a device namespace whose kernels
are :mod:`mgnn.testing._fake_kernels` (the CPU kernels, run on the unwrapped
data), so ``mgnn.backend.get_namespace`` and ``kernels_for`` treat it as they
treat CuPy, and :func:`mgnn.backend.to_device` moves data to it with
``xp=fakecupy``.

**CUDA-graph capture** (``cuda.Stream.begin_capture`` / ``end_capture`` /
``Graph.launch``) is emulated: while the current stream captures, device work
(ufuncs and functions with ``out=``, in-place operators, assignments, ``fill``,
capturable kernels) is *recorded, not run*, and :meth:`Graph.launch` replays it
on the same buffers, as CUDA does. What CUDA or CuPy refuse during capture is
refused here: host reads (``float(x)``, ``x.get()``), synchronisation, cuBLAS
and cuSOLVER (``matmul``, ``dot``, ``linalg``: CuPy 14 raises
``NotImplementedError``), kernels that are not capturable on the GPU. One rule
is stricter than CUDA, and it is mgnn's: **no allocation during capture** (an
array created while capturing returns to the memory pool afterwards, and the
replayed graph would write into memory that has another owner).

Examples
--------
>>> import numpy as np
>>> from mgnn.testing import fakecupy as cp
>>> x = cp.asarray(np.arange(3.0))           # explicit host -> device copy
>>> x * 2 + 1
array([1., 3., 5.])
>>> float(np.dot(x, x)), type(np.dot(x, x)).__name__
(5.0, 'ndarray')
>>> np.asarray(x)
Traceback (most recent call last):
...
TypeError: Implicit conversion to a NumPy array is not allowed. ...
>>> x + np.ones(3)
Traceback (most recent call last):
...
TypeError: Unsupported type <class 'numpy.ndarray'>
>>> x.get()                                  # explicit device -> host copy
array([0., 1., 2.])

Capture and replay:

>>> y = cp.zeros(3)
>>> s = cp.cuda.Stream(non_blocking=True)
>>> with s:
...     s.begin_capture()
...     _ = cp.multiply(x, 2.0, out=y)       # recorded, not run
...     g = s.end_capture()
>>> y.get()
array([0., 0., 0.])
>>> x += 1.0
>>> g.launch(); y.get()                      # the graph reads x as it is now
array([2., 4., 6.])
"""

from __future__ import annotations

import functools
import threading
import types

import numpy as _np

__version__ = "14.2.0+cpu-stand-in"

_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. "
             "Please use `.get()` to construct a NumPy array explicitly.")

#: NumPy names that CuPy 14.2 also has at the top level (from ``cupy/__init__.py``);
#: only these exist in this namespace.
_CUPY_NAMES = frozenset("""
    abs absolute acos acosh add all allclose amax amin angle any append apply_along_axis
    apply_over_axes arange arccos arccosh arcsin arcsinh arctan arctan2 arctanh argmax argmin
    argpartition argsort argwhere around array array2string array_equal array_equiv array_repr
    array_split array_str asanyarray asarray asarray_chkfinite ascontiguousarray asfortranarray
    asin asinh astype atan atan2 atanh atleast_1d atleast_2d atleast_3d average bartlett
    base_repr binary_repr bincount bitwise_and bitwise_count bitwise_invert bitwise_left_shift
    bitwise_not bitwise_or bitwise_right_shift bitwise_xor blackman bool bool_ broadcast
    broadcast_arrays broadcast_shapes broadcast_to byte c_ can_cast cbrt cdouble ceil choose
    clip column_stack common_type complex128 complex64 complexfloating compress concat
    concatenate conj conjugate convolve copy copysign copyto corrcoef correlate cos cosh
    count_nonzero cov cross csingle cumprod cumsum cumulative_prod cumulative_sum deg2rad
    degrees delete diag diag_indices diag_indices_from diagflat diagonal diff digitize divide
    divmod dot double dsplit dstack dtype dtypes e ediff1d einsum empty empty_like equal
    euler_gamma exceptions exp exp2 expand_dims expm1 extract eye fabs fft fill_diagonal finfo
    fix flatiter flatnonzero flip fliplr flipud float16 float32 float64 float_power floating
    floor floor_divide fmax fmin fmod format_float_positional format_float_scientific frexp
    from_dlpack frombuffer fromfile fromfunction fromiter fromstring full full_like gcd generic
    genfromtxt get_printoptions gradient greater greater_equal half hamming hanning heaviside
    histogram histogram2d histogramdd hsplit hstack hypot i0 identity iinfo imag index_exp
    indices inexact inf inner int16 int32 int64 int8 int_ intc integer interp intersect1d intp
    invert isclose iscomplex iscomplexobj isdtype isfinite isfortran isin isinf isnan isneginf
    isposinf isreal isrealobj isscalar issubdtype iterable ix_ kaiser kron lcm ldexp left_shift
    less less_equal lexsort linalg linspace load loadtxt log log10 log1p log2 logaddexp
    logaddexp2 logical_and logical_not logical_or logical_xor logspace long longlong
    mask_indices matmul matrix_transpose max maximum may_share_memory mean median meshgrid mgrid
    min min_scalar_type minimum mintypecode mod modf moveaxis multiply nan nan_to_num nanargmax
    nanargmin nancumprod nancumsum nanmax nanmean nanmedian nanmin nanprod nanstd nansum nanvar
    ndarray ndim ndindex negative newaxis nextafter nonzero not_equal number ogrid ones
    ones_like outer packbits pad partition percentile permute_dims pi piecewise place poly
    poly1d polyadd polyfit polymul polynomial polysub polyval positive pow power printoptions
    prod promote_types ptp put put_along_axis putmask quantile r_ rad2deg radians random ravel
    ravel_multi_index real real_if_close reciprocal remainder repeat require reshape resize
    result_type right_shift rint roll rollaxis roots rot90 round row_stack s_ save savetxt savez
    savez_compressed searchsorted select set_printoptions setdiff1d setxor1d shape shares_memory
    short show_config sign signbit signedinteger sin sinc single sinh size sort sort_complex
    split sqrt square squeeze stack std subtract sum swapaxes take take_along_axis tan tanh
    tensordot testing tile trace transpose trapezoid tri tril tril_indices tril_indices_from
    trim_zeros triu triu_indices triu_indices_from true_divide trunc typename ubyte ufunc uint
    uint16 uint32 uint64 uint8 uintc uintp ulong ulonglong union1d unique unique_all
    unique_counts unique_inverse unique_values unpackbits unravel_index unsignedinteger unwrap
    ushort vander var vdot vectorize vsplit vstack where zeros zeros_like""".split())

_LINALG_NAMES = frozenset(
    "cholesky cond cross det eig eigh eigvals eigvalsh inv lstsq matmul matrix_power "
    "matrix_rank matrix_transpose norm pinv qr slogdet solve svd tensorinv tensorsolve".split())

# functions that take host data on purpose (explicit host -> device or device -> host)
_FROM_HOST = frozenset("asarray array asanyarray asarray_chkfinite frombuffer fromfile fromiter "
                       "fromstring fromfunction load loadtxt genfromtxt".split())
_TO_HOST = frozenset("save savez savez_compressed savetxt".split())
# functions of metadata only (no device work, any argument)
_META = frozenset("shape ndim size result_type can_cast promote_types isscalar iterable "
                  "may_share_memory shares_memory issubdtype isdtype min_scalar_type "
                  "common_type broadcast_shapes isfortran iscomplexobj isrealobj typename "
                  "mintypecode finfo iinfo dtype get_printoptions set_printoptions "
                  "printoptions base_repr binary_repr format_float_positional "
                  "format_float_scientific ndindex index_exp s_ c_ r_ mgrid ogrid "
                  "diag_indices mask_indices tril_indices triu_indices indices".split())
# cuBLAS / cuSOLVER work: CuPy 14 refuses it during stream capture
_BLAS = frozenset("matmul dot vdot inner outer tensordot einsum kron cross "
                  "convolve correlate".split())
# reductions: CuPy may allocate temporary storage (CUB); refused during capture here
_REDUCE = frozenset("sum prod mean var std max min amax amin argmax argmin any all ptp "
                    "average median nansum nanprod nanmean nanvar nanstd nanmax nanmin "
                    "nanargmax nanargmin count_nonzero cumsum cumprod trace allclose "
                    "array_equal array_equiv nonzero argwhere flatnonzero unique "
                    "sort argsort partition argpartition lexsort searchsorted percentile "
                    "quantile histogram bincount".split())


# ---------------------------------------------------------------------------- errors
class CUDARuntimeError(RuntimeError):
    """What CuPy raises for a CUDA runtime error (here: illegal work during capture)."""


class CaptureAllocationError(RuntimeError):
    """An allocation while a stream captures (mgnn's rule; see the module docstring)."""


# ----------------------------------------------------------------- streams and capture
class _Local(threading.local):
    def __init__(self):
        self.stack = []  # streams entered with ``with``/``use``; empty: the null stream


_local = _Local()
_capturing_streams = {}  # id -> stream, for streams that capture (process-wide in CUDA)
_counts = {"to_device": 0, "to_host": 0, "graph_launches": 0, "captured_ops": 0}


def transfers(reset=False):
    """Counts of explicit transfers since the last reset: ``to_device`` (host data made
    a device array), ``to_host`` (``get``, ``asnumpy``, ``float(x)``, ``x.item()``,
    ...), ``graph_launches`` and ``captured_ops``. ``reset=True`` zeroes them
    (after reading).

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.testing import fakecupy as cp
    >>> _ = transfers(reset=True)
    >>> x = cp.asarray(np.ones(3)); f = float(x.sum())
    >>> transfers()["to_device"], transfers()["to_host"]
    (1, 1)
    """
    out = dict(_counts)
    if reset:
        for k in _counts:
            _counts[k] = 0
    return out


def reset():
    """End every capture and forget the streams entered (after a test that failed
    inside a capture). Recorded work is dropped."""
    for s in list(_capturing_streams.values()):
        s._ops = None
    _local.stack.clear()
    _capturing_streams.clear()


def _current():
    return _local.stack[-1] if _local.stack else Stream.null


def _capturing():
    return _current()._ops is not None


def _record(fn):
    _current()._ops.append(fn)
    _counts["captured_ops"] += 1


_audit_log = None  # a list while audit_capture() runs


class audit_capture:
    """Context manager: list every operation that would break a capture, instead of
    raising at the first one.

    Inside it, an illegal operation during a capture (a host read, an allocation, a
    cuBLAS call, a kernel that is not capturable) is appended to the list it returns,
    with the first line of the caller outside the stand-in, and then *runs eagerly*
    (the capture goes on), so one pass over a code path shows all the lines to
    change. For diagnosis only: the recorded graph is not a faithful one.

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.testing import fakecupy as cp
    >>> x = cp.asarray(np.ones(3))
    >>> s = cp.cuda.Stream(non_blocking=True)
    >>> with cp.audit_capture() as problems, s:
    ...     s.begin_capture()
    ...     y = x + 1.0
    ...     f = float(y.sum())
    ...     _ = s.end_capture()
    >>> [p[0].split(":")[0] for p in problems]
    ['CaptureAllocationError', 'CaptureAllocationError', 'CUDARuntimeError']
    """

    def __enter__(self):
        global _audit_log
        _audit_log = []
        return _audit_log

    def __exit__(self, *exc):
        global _audit_log
        _audit_log = None


def _where():
    import traceback

    for fr in reversed(traceback.extract_stack()[:-2]):
        if "/testing/fakecupy.py" not in fr.filename and "_fake_kernels" not in fr.filename:
            return f"{fr.filename}:{fr.lineno}: {fr.line}"
    return "?"  # pragma: no cover


def _violation(exc):
    """Raise ``exc``, or log it when auditing (then the operation runs eagerly)."""
    if _audit_log is None:
        raise exc
    _audit_log.append((f"{type(exc).__name__}: {exc}", _where()))


def _refuse_sync(what):
    """A host read or synchronisation: illegal while any stream captures."""
    if _capturing_streams:
        _violation(CUDARuntimeError("cudaErrorStreamCaptureUnsupported: operation not "
                                    f"permitted when stream is capturing ({what})"))


def _refuse_alloc(what):
    if _capturing():
        _violation(CaptureAllocationError(
            f"{what} allocates device memory while the stream captures a CUDA graph: the "
            "memory returns to the pool after the capture while the graph still writes to "
            "it; preallocate the buffer before capturing"))


def _to_host_count():
    _counts["to_host"] += 1


# ----------------------------------------------------------------- wrapping helpers
def _wrap(x):
    if isinstance(x, _np.ndarray):
        r = ndarray.__new__(ndarray)
        r._a = x
        return r
    if isinstance(x, _np.generic):
        return _wrap(_np.asarray(x))
    if type(x) is tuple:
        return tuple(_wrap(v) for v in x)
    if type(x) is list:
        return [_wrap(v) for v in x]
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # named tuples (linalg results)
        return tuple(_wrap(v) for v in x)
    return x


def _unsupported(x):
    return TypeError(f"Unsupported type {type(x)}")


def _unwrap(x):
    """Device arrays -> their NumPy data; a host array raises as CuPy does."""
    if type(x) is ndarray:
        return x._a
    if isinstance(x, _np.ndarray):
        raise _unsupported(x)
    if type(x) in (list, tuple):
        return type(x)(_unwrap(v) for v in x)
    if type(x) is dict:
        return {k: _unwrap(v) for k, v in x.items()}
    return x


def _unwrap_any(x):
    """Device arrays -> their NumPy data; host arrays pass (metadata functions)."""
    if type(x) is ndarray:
        return x._a
    if type(x) in (list, tuple):
        return type(x)(_unwrap_any(v) for v in x)
    if type(x) is dict:
        return {k: _unwrap_any(v) for k, v in x.items()}
    return x


def _has_host(x):
    if isinstance(x, _np.ndarray):
        return True
    if type(x) in (list, tuple):
        return any(_has_host(v) for v in x)
    return False


def _out_of(kwargs):
    out = kwargs.get("out")
    if type(out) is tuple and len(out) == 1:
        out = out[0]
    return out


# functions that write into their first argument (no allocation)
_INPLACE = frozenset("copyto put place putmask fill_diagonal put_along_axis".split())


def _device_call(name, fn, args, kwargs, *, blas=False, reduce=False):
    """Run ``fn`` (a NumPy callable) with device semantics (see the module docstring)."""
    a, k = _unwrap(args), _unwrap(kwargs)
    out = args[0] if name in _INPLACE and args else _out_of(kwargs)
    if _capturing():
        eager = _audit_log is not None and (blas or reduce or out is None)
        if blas:
            _violation(NotImplementedError(
                f"calling cuBLAS API during stream capture is currently unsupported ({name})"))
        elif reduce:
            _violation(CaptureAllocationError(
                f"{name}: a CuPy reduction may allocate temporary storage; it cannot be "
                "captured safely"))
        elif out is None:
            _refuse_alloc(name)
        if not eager:
            _record(lambda: fn(*a, **k))
            return out
    r = fn(*a, **k)
    if out is not None and r is _out_of(k):
        return out
    return _wrap(r)


# ------------------------------------------------------------------------ ufuncs
class ufunc:
    """A NumPy ufunc with device semantics (``out=`` work is capturable)."""

    def __init__(self, np_ufunc):
        self._u = np_ufunc
        self.__name__ = np_ufunc.__name__
        self.nin, self.nout, self.nargs = np_ufunc.nin, np_ufunc.nout, np_ufunc.nargs

    def __repr__(self):
        return f"<ufunc '{self.__name__}'>"

    def __call__(self, *args, **kwargs):
        return _device_call(self.__name__, self._u, args, kwargs, blas=self.__name__ in _BLAS)

    def reduce(self, *args, **kwargs):
        return _device_call(self.__name__ + ".reduce", self._u.reduce, args, kwargs,
                            reduce=True)

    def accumulate(self, *args, **kwargs):
        return _device_call(self.__name__ + ".accumulate", self._u.accumulate, args, kwargs,
                            reduce=True)

    def reduceat(self, array, indices, axis=0, dtype=None, out=None):
        if self.__name__ != "add":  # CuPy 14 has add.reduceat only
            raise NotImplementedError(f"`{self.__name__}.reduceat` is not supported yet")
        kw = {"axis": axis, "dtype": dtype} if out is None else {"axis": axis, "dtype": dtype,
                                                                    "out": out}
        return _device_call("add.reduceat", self._u.reduceat, (array, indices), kw,
                            reduce=True)

    def outer(self, *args, **kwargs):
        return _device_call(self.__name__ + ".outer", self._u.outer, args, kwargs)

    def at(self, a, indices, b=None):
        args = (a, indices) if b is None else (a, indices, b)
        a_, rest = _unwrap(a), _unwrap_any(args[1:])
        if _capturing():
            _record(lambda: self._u.at(a_, *rest))
            return None
        self._u.at(a_, *rest)


# ------------------------------------------------------------------ the ndarray
def _is_basic(key):
    """True when indexing by ``key`` gives a view (basic indexing)."""
    items = key if type(key) is tuple else (key,)
    for k in items:
        if k is None or k is Ellipsis or isinstance(k, (slice, int, _np.integer)):
            if isinstance(k, (bool, _np.bool_)):
                return False
            continue
        return False
    return True


def _index(key):
    """An index for the NumPy data: device index arrays unwrapped, host ones allowed
    (CuPy copies host index arrays to the device)."""
    return _unwrap_any(key)


def _binary(name, reflected=False, inplace=False):
    def op(self, other):
        if isinstance(other, _np.ndarray):
            raise _unsupported(other)
        if other is None or isinstance(other, (str, bytes, list, dict, set)):
            if name in ("equal", "not_equal"):
                return NotImplemented
            raise _unsupported(other)
        if not isinstance(other, (ndarray, int, float, complex, bool, _np.generic)):
            return NotImplemented
        u = _UFUNCS[name]
        if inplace:
            u(self, other, out=self)
            return self
        return u(other, self) if reflected else u(self, other)
    op.__name__ = name
    return op


def _unary(name):
    def op(self):
        return _UFUNCS[name](self)
    return op


class _MemoryPointer:
    """``x.data``: the address of the first element (``ptr``), as CuPy's MemoryPointer."""

    __slots__ = ("ptr",)

    def __init__(self, ptr):
        self.ptr = ptr

    def __repr__(self):
        return f"<MemoryPointer 0x{self.ptr:x}>"


class ndarray:
    """A device array of the stand-in: NumPy data behind CuPy's interface.

    ``ndarray(shape, dtype)`` allocates (uninitialised, as CuPy does). Implicit
    conversion to NumPy raises; use :meth:`get` or :func:`asnumpy`.
    """

    __slots__ = ("_a", "__weakref__")
    __array_priority__ = 100
    __hash__ = None

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        if memptr is not None or strides is not None:
            raise NotImplementedError("the CPU stand-in does not take memptr or strides")
        _refuse_alloc("cupy.ndarray(...)")
        self._a = _np.empty(shape, dtype=dtype, order=order)

    # -- interoperability: the points where CuPy refuses the host --------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError(_IMPLICIT)

    def __array_ufunc__(self, uf, method, *inputs, **kwargs):
        mine = _UFUNCS.get(uf.__name__)
        if mine is None:
            return NotImplemented
        for x in inputs + tuple(kwargs.get("out", ()) or ()):
            if isinstance(x, _np.ndarray):
                raise _unsupported(x)
            if not isinstance(x, (ndarray, int, float, complex, bool, _np.generic)):
                return NotImplemented
        if "out" in kwargs:
            out = kwargs["out"]
            if len(out) != 1:
                raise ValueError("The 'out' parameter must have exactly one array value")
            kwargs["out"] = out[0]
        if method == "__call__":
            return mine(*inputs, **kwargs)
        if method in ("reduce", "accumulate", "outer", "at"):
            return getattr(mine, method)(*inputs, **kwargs)
        return NotImplemented

    def __array_function__(self, func, types_, args, kwargs):
        mod = func.__module__
        if mod == "numpy":
            target = _this
        elif mod == "numpy.linalg":
            target = linalg
        else:
            return NotImplemented
        try:
            mine = getattr(target, func.__name__)
        except AttributeError:
            return NotImplemented
        for t in types_:
            if not issubclass(t, (ndarray, _np.ndarray)):
                return NotImplemented
        return mine(*args, **kwargs)

    # -- attributes ------------------------------------------------------------
    @property
    def shape(self):
        return self._a.shape

    @shape.setter
    def shape(self, value):
        self._a.shape = value

    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: _wrap(self._a.T))
    mT = property(lambda self: _wrap(_np.swapaxes(self._a, -1, -2)))
    real = property(lambda self: _wrap(self._a.real))
    imag = property(lambda self: _wrap(self._a.imag))
    data = property(lambda self: _MemoryPointer(self._a.__array_interface__["data"][0]))
    device = property(lambda self: cuda.Device(0))

    @property
    def base(self):
        b = self._a.base
        return _wrap(b) if isinstance(b, _np.ndarray) else None

    # -- explicit transfers ------------------------------------------------------
    def get(self, stream=None, order="C", out=None, blocking=True):
        """Copy to the host: a NumPy array (into ``out`` when given)."""
        _refuse_sync("ndarray.get")
        _to_host_count()
        if out is not None:
            if not isinstance(out, _np.ndarray):
                raise TypeError("Only numpy.ndarray can be obtained from cupy.ndarray")
            out[...] = self._a
            return out
        return _np.array(self._a, order=order, copy=True)

    def set(self, arr, stream=None):
        """Copy host data ``arr`` (same shape and dtype) into this array."""
        if not isinstance(arr, _np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, got {type(arr)}")
        if arr.shape != self.shape or arr.dtype != self.dtype:
            raise ValueError(f"Shape or dtype mismatch: {arr.shape} {arr.dtype} vs "
                             f"{self.shape} {self.dtype}")
        _refuse_sync("ndarray.set")
        _counts["to_device"] += 1
        self._a[...] = arr

    def item(self, *args):
        _refuse_sync("ndarray.item")
        _to_host_count()
        return self._a.item(*args)

    def tolist(self):
        _refuse_sync("ndarray.tolist")
        _to_host_count()
        return self._a.tolist()

    def tobytes(self, order="C"):
        """The data as host bytes (a copy to the host, as CuPy's ``tobytes``)."""
        _refuse_sync("ndarray.tobytes")
        _to_host_count()
        return self._a.tobytes(order)

    def __float__(self):
        _refuse_sync("float(ndarray)")
        _to_host_count()
        return float(self._a)

    def __int__(self):
        _refuse_sync("int(ndarray)")
        _to_host_count()
        return int(self._a)

    def __complex__(self):
        _refuse_sync("complex(ndarray)")
        _to_host_count()
        return complex(self._a)

    def __bool__(self):
        if self.size == 0:
            return False
        if self.size > 1:
            raise ValueError("The truth value of an array with more than one element is "
                             "ambiguous. Use a.any() or a.all()")
        _refuse_sync("bool(ndarray)")
        _to_host_count()
        return bool(self._a)

    def __repr__(self):
        _refuse_sync("repr(ndarray)")
        return repr(self._a)

    def __str__(self):
        _refuse_sync("str(ndarray)")
        return str(self._a)

    def __format__(self, spec):
        _refuse_sync("format(ndarray)")
        return format(self._a, spec)

    # -- copies and views --------------------------------------------------------
    def copy(self, order="C"):
        _refuse_alloc("ndarray.copy")
        return _wrap(self._a.copy(order=order))

    __copy__ = copy

    def __deepcopy__(self, memo):
        return self.copy()

    def __reduce__(self):
        return (_rebuild, (self.get(),))

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        if not copy and _np.dtype(dtype) == self.dtype:
            return self
        _refuse_alloc("ndarray.astype")
        return _wrap(self._a.astype(dtype, order=order))

    def _view_or_copy(self, r, what):
        if r.size and not _np.may_share_memory(r, self._a):
            _refuse_alloc(what)
        return _wrap(r)

    def reshape(self, *shape, order="C"):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return self._view_or_copy(self._a.reshape(shape, order=order), "ndarray.reshape")

    def ravel(self, order="C"):
        return self._view_or_copy(self._a.ravel(order=order), "ndarray.ravel")

    def flatten(self, order="C"):
        _refuse_alloc("ndarray.flatten")
        return _wrap(self._a.flatten(order=order))

    def view(self, dtype=None):
        return _wrap(self._a.view() if dtype is None else self._a.view(dtype))

    def swapaxes(self, a1, a2):
        return _wrap(self._a.swapaxes(a1, a2))

    def transpose(self, *axes):
        return _wrap(self._a.transpose(*axes))

    def squeeze(self, axis=None):
        return _wrap(self._a.squeeze(axis))

    def diagonal(self, offset=0, axis1=0, axis2=1):
        return _wrap(self._a.diagonal(offset, axis1, axis2))

    def fill(self, value):
        if type(value) is ndarray:
            if value.shape != ():
                raise ValueError("non-scalar cupy.ndarray cannot be used for fill")
            v = value._a
            if _capturing():
                _record(lambda: self._a.fill(v[()]))
            else:
                self._a.fill(v[()])
            return
        v = _np.asarray(value, dtype=self.dtype)
        if v.shape != ():
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        if _capturing():
            _record(lambda: self._a.fill(v[()]))
        else:
            self._a.fill(v[()])

    # -- indexing ----------------------------------------------------------------
    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of unsized object")
        return self._a.shape[0]

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self._a.shape[0]))

    def __getitem__(self, key):
        if _is_basic(key):
            k = key if type(key) is tuple else (key,)
            r = self._a[k + (Ellipsis,)] if Ellipsis not in k else self._a[k]
            return _wrap(r)  # a view (0-d for a full integer index, as CuPy)
        _refuse_alloc("advanced indexing")
        return _wrap(self._a[_index(key)])

    def __setitem__(self, key, value):
        basic = _is_basic(key)
        if isinstance(value, _np.ndarray):
            if basic and value.shape != ():
                # CuPy refuses assignment from CPU arrays through basic indexing (gh-2079)
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
            if not basic:
                _counts["to_device"] += 1
            v = value.copy()
        else:
            v = _unwrap(value)
        k = key if basic else _index(key)
        if _capturing():
            if not basic:
                _refuse_alloc("advanced-index assignment")
            _record(lambda: self._a.__setitem__(k, v))
            return
        self._a[k] = v

    # -- methods with device work ------------------------------------------------
    def _method(name, reduce=True, blas=False):  # noqa: N805 - builds methods
        def m(self, *args, **kwargs):
            return _device_call("ndarray." + name, getattr(self._a, name), args, kwargs,
                                reduce=reduce, blas=blas)
        m.__name__ = name
        return m

    for _n in ("sum", "prod", "mean", "var", "std", "max", "min", "argmax", "argmin", "any",
               "all", "cumsum", "cumprod", "ptp", "trace", "nonzero", "argsort",
               "argpartition", "searchsorted"):
        locals()[_n] = _method(_n)
    for _n in ("clip", "round", "conj", "conjugate", "take", "repeat", "compress", "choose",
               "sort", "partition", "put"):
        locals()[_n] = _method(_n, reduce=False)
    dot = _method("dot", reduce=False, blas=True)
    del _n, _method

    def __matmul__(self, other):
        if isinstance(other, _np.ndarray):
            raise _unsupported(other)
        return _this.matmul(self, other)

    def __rmatmul__(self, other):
        if isinstance(other, _np.ndarray):
            raise _unsupported(other)
        return _this.matmul(other, self)

    def __imatmul__(self, other):
        return _this.matmul(self, other, out=self)


_OPS = {"add": "add", "sub": "subtract", "mul": "multiply", "truediv": "true_divide",
        "floordiv": "floor_divide", "mod": "remainder", "pow": "power", "and": "bitwise_and",
        "or": "bitwise_or", "xor": "bitwise_xor", "lshift": "left_shift",
        "rshift": "right_shift"}
for _k, _v in _OPS.items():
    setattr(ndarray, f"__{_k}__", _binary(_v))
    setattr(ndarray, f"__r{_k}__", _binary(_v, reflected=True))
    setattr(ndarray, f"__i{_k}__", _binary(_v, inplace=True))
for _k, _v in {"lt": "less", "le": "less_equal", "gt": "greater", "ge": "greater_equal",
               "eq": "equal", "ne": "not_equal"}.items():
    setattr(ndarray, f"__{_k}__", _binary(_v))
for _k, _v in {"neg": "negative", "pos": "positive", "abs": "absolute",
               "invert": "invert"}.items():
    setattr(ndarray, f"__{_k}__", _unary(_v))
del _k, _v


def _rebuild(host):
    return _wrap(host)


# ------------------------------------------------------------- module functions
_this = None  # this module, set below (for __array_function__)
_UFUNCS = {n: ufunc(getattr(_np, n)) for n in _CUPY_NAMES
           if isinstance(getattr(_np, n, None), _np.ufunc)}
# CuPy has every NumPy ufunc under its own name; aliases point to the same object
for _alias in ("abs", "conj", "mod", "true_divide", "acos", "asin", "atan", "atan2", "acosh",
               "asinh", "atanh", "pow", "bitwise_invert", "bitwise_left_shift",
               "bitwise_right_shift"):
    if _alias in _CUPY_NAMES and isinstance(getattr(_np, _alias, None), _np.ufunc):
        _UFUNCS.setdefault(_alias, ufunc(getattr(_np, _alias)))
_UFUNCS.setdefault("true_divide", _UFUNCS["divide"])
_UFUNCS.setdefault("absolute", _UFUNCS.get("abs"))
del _alias


def asarray(a, dtype=None, order=None, *, copy=None, blocking=False):
    """A device array of ``a``: the same array when it is one already (and the dtype
    matches), else a copy of the host data (an explicit host -> device transfer)."""
    if type(a) is ndarray:
        if dtype is None or _np.dtype(dtype) == a.dtype:
            if copy:
                return a.copy()
            return a
        return a.astype(dtype)
    _refuse_alloc("asarray of host data")
    _counts["to_device"] += 1
    return _wrap(_np.array(_unwrap_any(a), dtype=dtype, order=order or "K", copy=True))


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    """A new device array (always a copy unless ``copy=False`` and no copy is needed)."""
    if type(obj) is ndarray and not copy and (dtype is None or _np.dtype(dtype) == obj.dtype):
        return obj
    _refuse_alloc("array")
    if type(obj) is ndarray:
        return _wrap(_np.array(obj._a, dtype=dtype, order=order, ndmin=ndmin, copy=True))
    _counts["to_device"] += 1
    return _wrap(_np.array(_unwrap_any(obj), dtype=dtype, order=order, ndmin=ndmin, copy=True))


asanyarray = asarray


def asnumpy(a, stream=None, order="C", out=None, blocking=True):
    """A NumPy copy of a device array (NumPy input is returned as ``np.asarray``)."""
    if type(a) is ndarray:
        return a.get(order=order, out=out)
    return _np.asarray(a, order=order)


def get_array_module(*args):
    """This module when any argument is one of its arrays, else NumPy."""
    return _this if any(type(a) is ndarray for a in args) else _np


def ascontiguousarray(a, dtype=None):
    if type(a) is not ndarray:
        raise TypeError(f"Argument 'a' has incorrect type (expected cupy._core.core._ndarray_"
                        f"base, got {type(a).__name__})")
    r = _np.ascontiguousarray(a._a, dtype=dtype)
    return a if r is a._a else a._view_or_copy(r, "ascontiguousarray")


def _make_function(name, fn):
    if name in _META:
        @functools.wraps(fn)
        def meta(*args, **kwargs):
            return _wrap(fn(*_unwrap_any(args), **_unwrap_any(kwargs))) \
                if name in ("indices", "tril_indices", "triu_indices", "diag_indices") \
                else fn(*_unwrap_any(args), **_unwrap_any(kwargs))
        return meta
    if name in _TO_HOST:
        @functools.wraps(fn)
        def to_host(*args, **kwargs):
            _refuse_sync(name)
            _to_host_count()
            return fn(*_unwrap_any(args), **_unwrap_any(kwargs))
        return to_host
    if name in _FROM_HOST:
        @functools.wraps(fn)
        def from_host(*args, **kwargs):
            _refuse_alloc(name)
            _counts["to_device"] += 1
            return _wrap(fn(*_unwrap_any(args), **_unwrap_any(kwargs)))
        return from_host

    @functools.wraps(fn)
    def device(*args, **kwargs):
        return _device_call(name, fn, args, kwargs, blas=name in _BLAS, reduce=name in _REDUCE)
    return device


def __getattr__(name):
    if name not in _CUPY_NAMES:
        raise AttributeError(f"module 'cupy' has no attribute {name!r} (the CPU stand-in has "
                             "only what CuPy 14 has)")
    if name in _UFUNCS:
        obj = _UFUNCS[name]
    else:
        obj = getattr(_np, name)
        if name in ("ndarray", "ufunc"):
            obj = globals()[name]
        elif callable(obj) and not isinstance(obj, type):
            obj = _make_function(name, obj)
    globals()[name] = obj
    return obj


# ---------------------------------------------------------------- submodules
def _submodule(modname, np_mod, names, blas):
    mod = types.ModuleType(modname)
    for n in names:
        f = getattr(np_mod, n, None)
        if f is None:
            continue
        setattr(mod, n, functools.wraps(f)(
            functools.partial(lambda _f, _n, *a, **k: _device_call(_n, _f, a, k, blas=blas),
                              f, n)))
    return mod


linalg = _submodule("cupy.linalg", _np.linalg, _LINALG_NAMES, blas=True)
linalg.LinAlgError = _np.linalg.LinAlgError


class _Generator:
    """``cupy.random.Generator``-like: draws on the host generator, returns device arrays."""

    def __init__(self, seed=None):
        self._g = _np.random.default_rng(seed)

    def __getattr__(self, name):
        f = getattr(self._g, name)

        def draw(*args, **kwargs):
            _refuse_alloc("random." + name)
            return _wrap(f(*_unwrap(args), **_unwrap(kwargs)))
        return draw


random = types.ModuleType("cupy.random")
random.default_rng = _Generator
random.Generator = _Generator
_global_rng = _Generator()
for _n in ("random", "standard_normal", "normal", "uniform", "integers", "permutation",
           "choice"):
    setattr(random, _n, getattr(_global_rng, _n))
random.seed = lambda seed=None: _global_rng.__init__(seed)
del _n


# ------------------------------------------------------------------------ cuda
class Stream:
    """A stream of the stand-in; captures device work between ``begin_capture`` and
    ``end_capture`` (see the module docstring)."""

    null = None  # set below: the legacy default stream

    def __init__(self, null=False, non_blocking=False, ptr=None, priority=None):
        self.ptr = 0 if null else id(self)
        self.non_blocking = bool(non_blocking)
        self._ops = None

    def __repr__(self):
        return f"<Stream 0x{self.ptr:x} (stand-in)>"

    def __enter__(self):
        _local.stack.append(self)
        return self

    def __exit__(self, *exc):
        _local.stack.pop()

    def use(self):
        _local.stack.append(self)
        return self

    def synchronize(self):
        _refuse_sync("Stream.synchronize")

    def record(self, event=None):
        return Event() if event is None else event

    def wait_event(self, event):
        pass

    def begin_capture(self, mode=None):
        if self.ptr == 0:
            raise RuntimeError("cannot capture on the default (legacy) stream")
        if self._ops is not None:
            raise CUDARuntimeError("cudaErrorIllegalState: the stream is already capturing")
        self._ops = []
        _capturing_streams[id(self)] = self

    def end_capture(self):
        if self._ops is None:
            raise CUDARuntimeError("cudaErrorIllegalState: the stream is not capturing")
        ops, self._ops = self._ops, None
        _capturing_streams.pop(id(self), None)
        g = Graph.__new__(Graph)
        g._ops = tuple(ops)
        return g

    def is_capturing(self):
        return self._ops is not None


Stream.null = Stream(null=True)


class Graph:
    """A captured graph: :meth:`launch` replays the recorded work on its buffers."""

    def __init__(self, *args, **kwargs):
        raise NotImplementedError("currently this class cannot be initiated by the user and "
                                  "must be created via stream capture")

    def __len__(self):
        return len(self._ops)

    def launch(self, stream=None):
        _counts["graph_launches"] += 1
        if _capturing():  # a graph launched inside a capture becomes part of it
            ops = self._ops
            _record(lambda: [op() for op in ops])
            return
        for op in self._ops:
            op()

    def upload(self, stream=None):
        pass


class Event:
    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.done = True

    def record(self, stream=None):
        pass

    def synchronize(self):
        _refuse_sync("Event.synchronize")


class Device:
    """The stand-in's one device."""

    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def use(self):
        pass

    def synchronize(self):
        _refuse_sync("Device.synchronize")

    compute_capability = property(lambda self: "00")

    @property
    def mem_info(self):
        return (1 << 34, 1 << 34)


class _Runtime(types.ModuleType):
    def getDeviceCount(self):  # noqa: N802 - CUDA's name
        return 1

    def memGetInfo(self):  # noqa: N802
        return (1 << 34, 1 << 34)

    def getDeviceProperties(self, device):  # noqa: N802
        return {"name": b"CPU stand-in (mgnn.testing.fakecupy)", "totalGlobalMem": 1 << 34,
                "multiProcessorCount": 1, "major": 0, "minor": 0}

    def deviceSynchronize(self):  # noqa: N802
        _refuse_sync("deviceSynchronize")

    def getDevice(self):  # noqa: N802
        return 0


class _MemoryPool:
    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def free_bytes(self):
        return 0

    def free_all_blocks(self, stream=None):
        pass

    def n_free_blocks(self):
        return 0

    def set_limit(self, size=None, fraction=None):
        pass

    def get_limit(self):
        return 0


_pool, _pinned_pool = _MemoryPool(), _MemoryPool()


def get_default_memory_pool():
    return _pool


def get_default_pinned_memory_pool():
    return _pinned_pool


def is_available():
    """The stand-in always 'has' its device."""
    return True


def _get_current_stream(device_id=-1):
    return _current()


def _get_elapsed_time(start, end):
    return 0.0


cuda = types.ModuleType("cupy.cuda")
cuda.Stream, cuda.Graph, cuda.Event, cuda.Device = Stream, Graph, Event, Device
cuda.get_current_stream = _get_current_stream
cuda.get_elapsed_time = _get_elapsed_time
cuda.runtime = _Runtime("cupy.cuda.runtime")
cuda.runtime.CUDARuntimeError = CUDARuntimeError
cuda.MemoryPointer = _MemoryPointer
cuda.is_available = is_available
cuda.get_device_id = lambda: 0


def _no_cuda(*args, **kwargs):
    raise NotImplementedError("the CPU stand-in (mgnn.testing.fakecupy) cannot compile or run "
                              "CUDA kernels")


ElementwiseKernel = RawKernel = RawModule = ReductionKernel = fuse = _no_cuda


def _register():
    import sys

    from mgnn.backend import register_namespace

    global _this
    _this = sys.modules[__name__]
    register_namespace(ndarray, _this, "mgnn.testing._fake_kernels")


_register()
