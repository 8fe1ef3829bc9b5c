"""Kernels of the CPU stand-in for CuPy (:mod:`mgnn.testing.fakecupy`).

Every public kernel of :mod:`mgnn.kernels.cpu` under the same name and signature,
run on the NumPy data behind the stand-in's arrays (unwrapped explicitly here). A
NumPy array where the GPU kernel expects a device array raises ``TypeError``, as
CuPy does. While a stream captures a CUDA graph, a kernel that the GPU module can
capture (:func:`mgnn.kernels.cuda_source.capturable`) is recorded for the replay;
one it cannot (a loss, which returns a host float; a step wide enough to need
cuBLAS) raises as CuPy would.
"""

from __future__ import annotations

import functools

from mgnn.kernels import cpu as _cpu
from mgnn.kernels.cuda_source import capturable as _capturable
from mgnn.testing import fakecupy as _fc


def _kernel(name, fn):
    @functools.wraps(fn)
    def k(*args, **kwargs):
        a, kw = _fc._unwrap(args), _fc._unwrap(kwargs)  # host arrays raise here
        if _fc._capturing():
            why = _capturable(name, *a, **kw)
            if why is not True:
                raise NotImplementedError(f"{name} cannot be captured in a CUDA graph: {why}")
            _fc._record(lambda: fn(*a, **kw))
            return None
        r = fn(*a, **kw)
        if isinstance(r, float):  # a loss: on the GPU a device-to-host read
            _fc._refuse_sync(name)
            _fc._to_host_count()
        return _fc._wrap(r)
    return k


#: functions of the CPU module that are predicates, not device work
_NOT_KERNELS = frozenset({"uses_fused"})


def __getattr__(name):
    obj = getattr(_cpu, name)  # AttributeError for names the CPU module lacks
    if (name.startswith("_") or name in _NOT_KERNELS or not callable(obj)
            or isinstance(obj, type)):
        return obj
    k = _kernel(name, obj)
    globals()[name] = k
    return k
