"""GPU (CuPy) twins of :mod:`mgnn.kernels.cpu_pinn`: stream kernels with the CPU signatures.

The stacked GEMMs go to cuBLAS through ``cupy.matmul(..., out=...)`` on the
``(S*s, w)`` row views; the elementwise work of all streams of a layer is one
``ElementwiseKernel`` launch (one thread per element of a stream plane, looping
over the streams). The CUDA C is in :mod:`mgnn.kernels.cuda_pinn_source`, which
``tests/test_pinn_gpu_source.py`` compiles with nvcc.

Untested at run time on this project's CI (no GPU): only the sources are
compiled there; ``tests/test_pinn.py`` compares this module with the CPU kernels
wherever CuPy finds a device and skips otherwise.
"""

from __future__ import annotations

import cupy as cp
from mgnn.kernels.cpu import ACTIVATIONS  # noqa: F401  (the same activation codes)
from mgnn.kernels.cuda_pinn_source import KERNELS, PREAMBLE


def _kernel(name):
    inp, out, body = KERNELS[name]
    return cp.ElementwiseKernel(inp, out, body, "mgnn_" + name, preamble=PREAMBLE)


_forward = _kernel("stream_forward")
_delta = _kernel("stream_delta")
_tangent = _kernel("stream_tangent")
_soadjoint = _kernel("stream_soadjoint")


def _rows(A):
    return A.reshape(-1, A.shape[-1])


def _flat(A):
    return A.reshape(-1)


def _plane(G):
    S, s, w = G.shape
    return S, s * w, w


def forward_step(V, W, b, h, act, m2, G, out, skip=True):
    """GPU twin of :func:`mgnn.kernels.cpu_pinn.forward_step`."""
    cp.matmul(_rows(V), W.T, out=_rows(G))
    S, n, w = _plane(G)
    _forward(_flat(V) if skip else _flat(out), b, G.dtype.type(h), act, S, m2, n, w, skip,
             _flat(G), _flat(out), size=n)


def adjoint_step(L_next, V, W, G, h, act, m2, D, L=None, gW=None, gb=None, skip=True):
    """GPU twin of :func:`mgnn.kernels.cpu_pinn.adjoint_step`."""
    S, n, _ = _plane(G)
    _delta(_flat(G), _flat(L_next), G.dtype.type(h), act, S, m2, n, _flat(D), size=n)
    if L is not None:
        cp.matmul(_rows(D), W, out=_rows(L))
        if skip:
            cp.add(L, L_next, out=L)
    if gW is not None:
        cp.matmul(_rows(D).T, _rows(V), out=gW)
    if gb is not None:
        cp.sum(D[0], axis=0, out=gb)


def tangent_step(V, dV, W, dW, db, G, h, act, m2, dG, out, T=None, skip=True):
    """GPU twin of :func:`mgnn.kernels.cpu_pinn.tangent_step`."""
    if dV is not None:
        cp.matmul(_rows(dV), W.T, out=_rows(dG))
    elif dW is None:
        dG.fill(0)
    want_T = dW is not None
    if want_T:
        if dV is None:
            cp.matmul(_rows(V), dW.T, out=_rows(dG))
            want_T = False
        else:
            cp.matmul(_rows(V), dW.T, out=_rows(T))
    S, n, w = _plane(G)
    _tangent(_flat(T) if want_T else _flat(dG), db, _flat(G),
             _flat(dV) if dV is not None else _flat(dG), G.dtype.type(h), act, S, m2, n, w,
             skip and dV is not None, want_T, _flat(dG), _flat(out), size=n)


def soadjoint_step(L_next, dL_next, V, dV, W, dW, G, dG, h, act, m2, D, dD,
                   L=None, dL=None, gW=None, gb=None, dgW=None, dgb=None,
                   tmp=None, tmpW=None, skip=True):
    """GPU twin of :func:`mgnn.kernels.cpu_pinn.soadjoint_step`."""
    S, n, _ = _plane(G)
    _soadjoint(_flat(G), _flat(dG), _flat(L_next), _flat(dL_next), G.dtype.type(h), act, S,
               m2, n, _flat(D), _flat(dD), size=n)
    if L is not None:
        cp.matmul(_rows(D), W, out=_rows(L))
        if skip:
            cp.add(L, L_next, out=L)
    if dL is not None:
        cp.matmul(_rows(dD), W, out=_rows(dL))
        if skip:
            cp.add(dL, dL_next, out=dL)
        if dW is not None:
            cp.matmul(_rows(D), dW, out=_rows(tmp))
            cp.add(dL, tmp, out=dL)
    if gW is not None:
        cp.matmul(_rows(D).T, _rows(V), out=gW)
    if gb is not None:
        cp.sum(D[0], axis=0, out=gb)
    if dgW is not None:
        cp.matmul(_rows(dD).T, _rows(V), out=dgW)
        if dV is not None:
            cp.matmul(_rows(D).T, _rows(dV), out=tmpW)
            cp.add(dgW, tmpW, out=dgW)
    if dgb is not None:
        cp.sum(dD[0], axis=0, out=dgb)


def flops(S, s, w_in, w_out):
    """GEMM flops of one layer's forward step on ``S`` streams (as on the CPU)."""
    return 2 * S * s * w_in * w_out
