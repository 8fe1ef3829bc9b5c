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


def to_numpy(a):
    """Return ``a`` as a NumPy array (copying from the device if needed)."""
    if type(a).__module__.startswith("cupy"):  # pragma: no cover - needs CUDA
        return a.get()
    return np.asarray(a)
