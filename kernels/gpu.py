"""GPU kernels (CuPy) with the signatures of :mod:`mgnn.kernels.cpu`.

GEMMs go to cuBLAS through ``cupy.matmul(..., out=...)``; the elementwise work
around them is fused into one CuPy ``ElementwiseKernel`` per step, so a sweep
makes no host-device copies and allocates nothing of the size of a batch. The
record convention is the CPU one (``tanh(Z)`` for tanh, ``Z`` otherwise), so the
same workspace layout serves both backends.

This module imports CuPy at import time; :mod:`mgnn.backend` imports it only
when it is handed CuPy arrays, so the CPU path never touches CuPy.

The CUDA C of the fused kernels lives in :mod:`mgnn.kernels.cuda_source` (no CuPy
import), so ``tests/test_gpu_source.py`` can compile it with ``nvcc`` for float and
double on machines without a GPU. ``tests/test_gpu.py`` compares results with the
CPU kernels wherever CUDA is present and skips otherwise.
"""

from __future__ import annotations

import cupy as cp
from mgnn.kernels.cpu import ACTIVATIONS  # noqa: F401  (the same activation codes)
from mgnn.kernels.cuda_source import KERNELS, PREAMBLE


def _kernel(name):
    inp, out, body = KERNELS[name]
    return cp.ElementwiseKernel(inp, out, body, "mgnn_" + name, preamble=PREAMBLE)


_forward = _kernel("forward")
_delta = _kernel("delta")
_tangent = _kernel("tangent")
_soadjoint = _kernel("soadjoint")
_act = _kernel("activation")


def activation(Z, act, out):
    _act(Z, act, 0, out)


def activation_derivative(Z, act, out):
    _act(Z, act, 1, out)


def activation_second_derivative(Z, act, out):
    _act(Z, act, 2, out)


# The forward and adjoint steps are written for one layer (s, w) or a stack of k
# layers (k, s, w) alike: cuBLAS batches the GEMMs, the elementwise kernels broadcast
# the bias (k, 1, w), and the bias gradient sums over the sample axis (-2).
def forward_step(U, W, b, h, act, S, out, skip=True):
    """GPU twin of :func:`mgnn.kernels.cpu.forward_step` (and of ``forward_step_batch``)."""
    cp.matmul(U, W.swapaxes(-1, -2), out=S)
    _forward(U if skip else S, b[..., None, :], S.dtype.type(h), act, skip, S, out)


def adjoint_step(L_next, U, W, S, h, act, D, L=None, gW=None, gb=None, skip=True):
    """GPU twin of :func:`mgnn.kernels.cpu.adjoint_step` (and of ``adjoint_step_batch``)."""
    _delta(S, L_next, S.dtype.type(h), act, D)
    if gb is not None:
        cp.sum(D, axis=-2, out=gb)
    if L is not None:
        cp.matmul(D, W, out=L)
        if skip:
            cp.add(L, L_next, out=L)
    if gW is not None:
        cp.matmul(D.swapaxes(-1, -2), U, out=gW)


def tangent_step(U, dU, W, dW, db, S, h, act, dZ, out, T=None, skip=True):
    """GPU twin of :func:`mgnn.kernels.cpu.tangent_step`."""
    if dU is not None:
        cp.matmul(dU, W.T, out=dZ)
    elif dW is None:
        dZ.fill(0)
    want_T = dW is not None
    if want_T:
        if dU is None:
            cp.matmul(U, dW.T, out=dZ)
            want_T = False
        else:
            cp.matmul(U, dW.T, out=T)
    _tangent(T if want_T else dZ, db, S, dU if dU is not None else dZ, S.dtype.type(h), act,
             skip and dU is not None, want_T, dZ, out)


def soadjoint_step(L_next, dL_next, U, dU, W, dW, S, dZ, h, act, D, dD,
                   L=None, dL=None, gW=None, gb=None, dgW=None, dgb=None,
                   tmp=None, tmpW=None, skip=True):
    """GPU twin of :func:`mgnn.kernels.cpu.soadjoint_step`."""
    _soadjoint(S, dZ, L_next, dL_next, S.dtype.type(h), act, D, dD)
    if gb is not None:
        cp.sum(D, axis=0, out=gb)
    if dgb is not None:
        cp.sum(dD, axis=0, out=dgb)
    if L is not None:
        cp.matmul(D, W, out=L)
        if skip:
            cp.add(L, L_next, out=L)
    if dL is not None:
        cp.matmul(dD, W, out=dL)
        if skip:
            cp.add(dL, dL_next, out=dL)
        if dW is not None:
            cp.matmul(D, dW, out=tmp)
            cp.add(dL, tmp, out=dL)
    if gW is not None:
        cp.matmul(D.T, U, out=gW)
    if dgW is not None:
        cp.matmul(dD.T, U, out=dgW)
        if dU is not None:
            cp.matmul(D.T, dU, out=tmpW)
            cp.add(dgW, tmpW, out=dgW)


# ------------------------------------------------------- batched layer steps
#: GPU twins of :func:`mgnn.kernels.cpu.forward_step_batch` and ``adjoint_step_batch``:
#: the steps above already take stacks (k, s, w).
forward_step_batch = forward_step
adjoint_step_batch = adjoint_step


# ------------------------------------------------------------------ losses
def mse_value(Y, T):
    r = Y - T
    return 0.5 * float(cp.vdot(r, r)) / Y.shape[0]


def mse_value_grad(Y, T, G):
    cp.subtract(Y, T, out=G)
    val = 0.5 * float(cp.vdot(G, G)) / Y.shape[0]
    G /= Y.shape[0]
    return val


def mse_hessp(Y, dY, out):
    cp.divide(dY, Y.shape[0], out=out)


def _log_softmax_parts(Y):
    mx = Y.max(axis=1, keepdims=True)
    E = cp.exp(Y - mx)
    tot = E.sum(axis=1, keepdims=True)
    return mx, E, tot


def cross_entropy_value(Y, labels):
    mx, _, tot = _log_softmax_parts(Y)
    picked = cp.take_along_axis(Y, labels[:, None], axis=1)
    return float((mx + cp.log(tot) - picked).sum()) / Y.shape[0]


def cross_entropy_value_grad(Y, labels, G):
    s = Y.shape[0]
    mx, E, tot = _log_softmax_parts(Y)
    picked = cp.take_along_axis(Y, labels[:, None], axis=1)
    val = float((mx + cp.log(tot) - picked).sum()) / s
    cp.divide(E, tot * s, out=G)
    G[cp.arange(s), labels] -= 1.0 / s
    return val


def cross_entropy_hessp(Y, dY, out):
    s = Y.shape[0]
    _, E, tot = _log_softmax_parts(Y)
    P = E / tot
    dot = (P * dY).sum(axis=1, keepdims=True)
    cp.multiply(P, dY - dot, out=out)
    out /= s
