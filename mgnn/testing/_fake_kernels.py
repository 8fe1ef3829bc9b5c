"""Kernels of the CPU stand-in for CuPy (:mod:`mgnn.testing.fakecupy`).

Every public kernel of :mod:`mgnn.kernels.cpu` under the same name and signature,
run on the NumPy data behind the stand-in's arrays (unwrapped explicitly here). A
NumPy array where the GPU kernel expects a device array raises ``TypeError``, as
CuPy does. While a stream captures a CUDA graph, a kernel that the GPU module can
capture (:func:`mgnn.kernels.cuda_source.capturable`) is recorded for the replay;
one it cannot (a loss, which returns a host float; a step wide enough to need
cuBLAS) raises as CuPy would.

The stand-in models the GPU module, so it has the GPU's :func:`column_sum` (the bias
gradients) and its whole-sweep kernels
(``forward_sweep``, ``adjoint_sweep``, ``tangent_sweep``, ``soadjoint_sweep``, the
signatures of :mod:`mgnn.kernels.gpu`) for the widths the GPU runs them at
(:func:`uses_fused`); here they step layer by layer with the CPU kernels, the
reference the GPU sweeps are tested against.
"""

from __future__ import annotations

import functools

import numpy as np

from mgnn.kernels import cpu as _cpu
from mgnn.kernels import cuda_source as _cs
from mgnn.testing import fakecupy as _fc


def _kernel(name, fn):
    @functools.wraps(fn)
    def k(*args, **kwargs):
        a, kw = _fc._unwrap(args), _fc._unwrap(kwargs)  # host arrays raise here
        if _fc._capturing():
            why = _cs.capturable(name, *a, **kw)
            if why is True:
                _fc._record(lambda: fn(*a, **kw))
                return None
            _fc._violation(NotImplementedError(
                f"{name} cannot be captured in a CUDA graph: {why}"))  # auditing: run it
        r = fn(*a, **kw)
        if isinstance(r, float):  # a loss: on the GPU a device-to-host read
            _fc._refuse_sync(name)
            _fc._to_host_count()
        return _fc._wrap(r)
    return k


#: The closing layer runs on the CPU's kernels here as on the CPU (the GPU module keeps
#: cuBLAS for it): the stand-in's results stay bit-identical to the CPU's.
CLOSING_ON_FUSED = True


def uses_fused(w_in, w_out, dtype):
    """The GPU module's rule: widths <= 64 run on the fused kernels and whole sweeps."""
    return _cs.fused(w_in, w_out) and np.dtype(dtype) in (np.dtype(np.float32),
                                                          np.dtype(np.float64))


def _blocks(P, N, w):
    B = P.reshape(N, w * w + w)
    return B[:, : w * w].reshape(N, w, w), B[:, w * w:]


def _forward_sweep(U, P, h, act, S, n0=0, n1=None):
    N, s, w = S.shape
    Wn, bn = _blocks(P, N, w)
    for n in range(n0, N if n1 is None else n1):
        _cpu.forward_step(U[n], Wn[n], bn[n], h, act, S[n], U[n + 1])


def _adjoint_sweep(L, cur, U, P, S, h, act, D, G, n0=0, n1=None):
    N, s, w = S.shape
    Wn, _ = _blocks(P, N, w)
    gW, gb = _blocks(G, N, w)
    for n in range((N if n1 is None else n1) - 1, n0 - 1, -1):
        _cpu.adjoint_step(L[cur], U[n], Wn[n], S[n], h, act, D, L=L[1 - cur], gW=gW[n],
                          gb=gb[n])
        cur = 1 - cur
    return cur


def _tangent_sweep(U, dU, P, dP, S, h, act, dZ, n0=0, n1=None):
    N, s, w = S.shape
    Wn, _ = _blocks(P, N, w)
    dWn, dbn = _blocks(dP, N, w)
    T = np.empty((s, w), S.dtype)
    for n in range(n0, N if n1 is None else n1):
        _cpu.tangent_step(U[n], dU[n], Wn[n], dWn[n], dbn[n], S[n], h, act, dZ[n], dU[n + 1],
                          T=T)


def _soadjoint_sweep(L, dL, cur, U, dU, P, dP, S, dZ, h, act, D, dD, H, n0=0, n1=None):
    N, s, w = S.shape
    Wn, _ = _blocks(P, N, w)
    dWn, _ = _blocks(dP, N, w)
    hW, hb = _blocks(H, N, w)
    tmp, tmpW = np.empty((s, w), S.dtype), np.empty((w, w), S.dtype)
    for n in range((N if n1 is None else n1) - 1, n0 - 1, -1):
        _cpu.soadjoint_step(L[cur], dL[cur], U[n], dU[n], Wn[n], dWn[n], S[n], dZ[n], h, act,
                            D, dD, L=L[1 - cur], dL=dL[1 - cur], dgW=hW[n], dgb=hb[n], tmp=tmp,
                            tmpW=tmpW)
        cur = 1 - cur
    return cur


def _column_sum(A, out):
    np.sum(A, axis=-2, out=out)


column_sum = _kernel("column_sum", _column_sum)
forward_sweep = _kernel("forward_sweep", _forward_sweep)
adjoint_sweep = _kernel("adjoint_sweep", _adjoint_sweep)
tangent_sweep = _kernel("tangent_sweep", _tangent_sweep)
soadjoint_sweep = _kernel("soadjoint_sweep", _soadjoint_sweep)


class _Family:
    """The stand-in's twin of a kernel family ``mgnn.kernels.cpu_<name>``: its
    functions run on the unwrapped data, with the capture rules of :func:`_kernel`."""

    def __init__(self, name):
        import importlib

        self.__name__ = f"{__name__}.family({name!r})"
        self._cpu = importlib.import_module(f"mgnn.kernels.cpu_{name}")

    def __getattr__(self, name):
        obj = getattr(self._cpu, name)
        if name.startswith("_") or not callable(obj) or isinstance(obj, type):
            return obj
        k = _kernel(name, obj)
        setattr(self, name, k)
        return k


_families = {}


def family(name):
    """The stand-in's kernels of the family ``name`` (see :func:`mgnn.backend.kernels_for`)."""
    f = _families.get(name)
    if f is None:
        f = _families[name] = _Family(name)
    return f


def __getattr__(name):
    obj = getattr(_cpu, name)  # AttributeError for names the CPU module lacks
    if name.startswith("_") or not callable(obj) or isinstance(obj, type):
        return obj
    k = _kernel(name, obj)
    globals()[name] = k
    return k
