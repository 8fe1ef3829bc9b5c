"""The array namespace: NumPy on the CPU, CuPy (or a registered stand-in) on a device.

Code above the kernels never imports CuPy itself; it asks this module which
namespace (``xp``) and which kernel module belong to the arrays it was given, and
moves data with :func:`to_device` / :func:`to_host`. The CPU path imports nothing
from CuPy.

A *device namespace* is CuPy, or one registered with :func:`register_namespace`:
the test suite registers :mod:`mgnn.testing.fakecupy`, a CPU stand-in whose arrays
refuse implicit conversion to NumPy as CuPy's do, so that every solver's device
code path runs in CI.
"""

from __future__ import annotations

import importlib

import numpy as np

# array type -> (namespace module, name of its kernel module)
_REGISTRY = {}


def register_namespace(array_type, namespace, kernels):
    """Make ``namespace`` a device namespace for arrays of ``array_type``.

    Parameters
    ----------
    array_type : type
        The namespace's array class.
    namespace : module
        The array namespace (CuPy-like: ``asarray``, ``zeros``, ``matmul``, ...,
        and arrays with ``get()``).
    kernels : str
        Importable name of the kernel module for these arrays (the signatures of
        :mod:`mgnn.kernels.cpu`).
    """
    _REGISTRY[array_type] = (namespace, kernels)


def _is_cupy_type(t):
    return t.__module__.startswith("cupy") or t.__module__.startswith("cupy_backends")


def get_namespace(*arrays):
    """Return the array namespace of the arrays: ``numpy``, ``cupy`` or a registered one.

    The first device array decides; without one the namespace is NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> get_namespace(np.zeros(3)).__name__
    'numpy'
    """
    for a in arrays:
        t = type(a)
        if t is np.ndarray:
            continue
        entry = _REGISTRY.get(t)
        if entry is not None:
            return entry[0]
        if _is_cupy_type(t):
            return importlib.import_module("cupy")
    return np


def is_device(xp):
    """True for a device namespace (anything but NumPy)."""
    return xp is not np


def kernels_for(xp, family=None):
    """The kernel module for the namespace ``xp``.

    ``mgnn.kernels.cpu`` for NumPy, ``mgnn.kernels.gpu`` for CuPy, the registered
    module for a registered namespace. A *family* of kernels beside the layer kernels
    (e.g. ``'pinn'``: ``mgnn.kernels.cpu_pinn`` / ``gpu_pinn``) lives in
    ``mgnn.kernels.cpu_<family>`` and ``gpu_<family>``; a registered namespace's module
    provides it through its ``family(name)`` function.

    Examples
    --------
    >>> import numpy as np
    >>> kernels_for(np).__name__
    'mgnn.kernels.cpu'
    """
    cpu, gpu = ("cpu", "gpu") if family is None else (f"cpu_{family}", f"gpu_{family}")
    if xp is np:
        return importlib.import_module(f"mgnn.kernels.{cpu}")
    for ns, kernels in _REGISTRY.values():
        if ns is xp:
            mod = importlib.import_module(kernels)
            return mod if family is None else mod.family(family)
    if getattr(xp, "__name__", "") == "cupy":  # pragma: no cover - needs CUDA
        return importlib.import_module(f"mgnn.kernels.{gpu}")
    raise TypeError(f"no mgnn kernels for the array namespace {getattr(xp, '__name__', xp)!r}")


def column_sum(A, out, xp=None):
    """``out = A.sum(axis=0)``: the kernel module's column sum where it has one (the
    GPU's deterministic block reduction; CuPy's axis-0 reduction is slow), else the
    namespace's."""
    xp = get_namespace(A) if xp is None else xp
    f = getattr(kernels_for(xp), "column_sum", None)
    if f is not None:
        f(A, out)
    else:
        xp.sum(A, axis=0, out=out)


def gpu_available():
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, or CUDA driver/runtime errors
        return False


def to_device(*arrays, xp=None):
    """Copy arrays to the device namespace ``xp`` (default CuPy); one array in, one out.

    Arrays already on that device are returned as they are; ``None`` stays ``None``.

    Raises
    ------
    ImportError
        When ``xp`` is not given and CuPy is not installed (``pip install -e ".[gpu]"``).

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.testing import fakecupy
    >>> x = to_device(np.ones(2), xp=fakecupy)
    >>> type(x).__module__, to_host(x)
    ('mgnn.testing.fakecupy', array([1., 1.]))
    """
    if xp is None:
        try:
            import cupy as xp
        except ImportError as exc:
            raise ImportError("to_device needs CuPy: pip install -e \".[gpu]\"") from exc
    out = tuple(None if a is None else xp.asarray(a) for a in arrays)
    return out[0] if len(out) == 1 else out


def to_host(*arrays):
    """Copy arrays back to NumPy (NumPy arrays pass as they are); one array in, one out.

    Examples
    --------
    >>> import numpy as np
    >>> to_host(np.ones(2))
    array([1., 1.])
    """
    out = tuple(to_numpy(a) for a in arrays)
    return out[0] if len(out) == 1 else out


def to_numpy(a):
    """Return ``a`` as a NumPy array (copying from the device if needed); ``None`` stays."""
    if a is None:
        return None
    if type(a) is not np.ndarray and is_device(get_namespace(a)):
        return a.get()
    return np.asarray(a)


def device_name(xp):
    """A readable name of the device behind ``xp`` ('CPU (NumPy)' for NumPy)."""
    if xp is np:
        return "CPU (NumPy)"
    try:
        props = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # pragma: no cover - exotic namespaces
        return getattr(xp, "__name__", str(xp))


def synchronize(xp):
    """Wait for the device's queued work (nothing to do for NumPy)."""
    if xp is not np:
        xp.cuda.Device().synchronize()
