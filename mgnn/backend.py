"""The array namespace: NumPy on the CPU, CuPy on the GPU.

Code above the kernels never imports CuPy itself; it asks this module which
namespace and which kernel module belong to the arrays it was given. The CPU
path imports nothing from CuPy.
"""

from __future__ import annotations

import importlib

import numpy as np


def get_namespace(*arrays):
    """Return ``numpy`` or ``cupy`` according to the arrays' type.

    Examples
    --------
    >>> import numpy as np
    >>> get_namespace(np.zeros(3)).__name__
    'numpy'
    """
    for a in arrays:
        mod = type(a).__module__
        if mod.startswith("cupy"):
            return importlib.import_module("cupy")
    return np


def kernels_for(xp):
    """The kernel module (``mgnn.kernels.cpu`` or ``mgnn.kernels.gpu``) for ``xp``."""
    if xp is np:
        from mgnn.kernels import cpu

        return cpu
    from mgnn.kernels import gpu  # pragma: no cover - needs CUDA

    return gpu  # pragma: no cover


def gpu_available():
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, or CUDA driver/runtime errors
        return False


def to_device(*arrays):
    """Copy NumPy arrays to the GPU (CuPy); one array in, one out.

    Raises
    ------
    ImportError
        When CuPy is not installed (``pip install -e ".[gpu]"``).
    """
    try:
        import cupy
    except ImportError as exc:
        raise ImportError("to_device needs CuPy: pip install -e \".[gpu]\"") from exc
    out = tuple(cupy.asarray(a) for a in arrays)
    return out[0] if len(out) == 1 else out


def to_host(*arrays):
    """Copy arrays back to NumPy (a no-op for NumPy arrays); one array in, one out.

    Examples
    --------
    >>> import numpy as np
    >>> to_host(np.ones(2))
    array([1., 1.])
    """
    out = tuple(to_numpy(a) for a in arrays)
    return out[0] if len(out) == 1 else out


def to_numpy(a):
    """Return ``a`` as a NumPy array (copying from the device if needed)."""
    if type(a).__module__.startswith("cupy"):  # pragma: no cover - needs CUDA
        return a.get()
    return np.asarray(a)
