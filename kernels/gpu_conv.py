"""GPU (CuPy) twins of :mod:`mgnn.kernels.cpu_conv`: the 3x3 convolutional layer on the device.

The same signatures, layouts and record convention as the CPU module (images
``(s, H*W*C)`` channels last, kernels HWIO, ``col`` the ``(s*H*W, 9*C_in)`` im2col
matrix in the flat scratch ``colbuf``):

* im2col and col2im are one ``ElementwiseKernel`` launch each (CUDA C in
  :mod:`mgnn.kernels.cuda_conv_source`; col2im gathers, it never scatters, so there are
  no atomics and the sums are deterministic);
* the GEMMs go to cuBLAS through ``cupy.matmul(..., out=...)`` into the caller's
  buffers (the pixel-row views ``(s*H*W, C)`` of the image batches);
* the elementwise work (bias, activation, record, skip, derivatives) is the dense
  GPU module's fused ``ElementwiseKernel`` bodies
  (:data:`mgnn.kernels.cuda_source.KERNELS`) on those row views, and every bias
  gradient is :func:`mgnn.backend.column_sum` (the GPU module's deterministic
  two-phase column sum, not CuPy's slow axis-0 reduction).

Nothing is allocated per step except the partial sums of a column sum (the memory
pool reuses them); the second-order adjoint takes a ``tmpK`` scratch for its second
kernel-gradient product (``(9*C_in, C_out)``, as the CPU twin does).

The image batches given to a step must be C-contiguous (each layer of MGRIT's stacks
is); a strided batch raises ``ValueError``, since the raw kernels index flat memory.

Untested at run time on this project's CI (no GPU): ``tests/test_conv_gpu.py``
compiles the CUDA C with nvcc, runs the same C text on the CPU, runs this module's
Python with CuPy replaced by :mod:`mgnn.testing.fakecupy`, and compares with the CPU
kernels on a real device where CuPy finds one (skipped otherwise).
"""

from __future__ import annotations

import cupy as cp
from mgnn.kernels.cpu import ACTIVATIONS  # noqa: F401  (the same activation codes)
from mgnn.kernels.cuda_conv_source import KERNELS
from mgnn.kernels.cuda_source import KERNELS as _DENSE
from mgnn.kernels.cuda_source import PREAMBLE

from mgnn.backend import column_sum


def _kernel(table, name, preamble=""):
    inp, out, body = table[name]
    return cp.ElementwiseKernel(inp, out, body, "mgnn_conv_" + name, preamble=preamble)


_im2col = _kernel(KERNELS, "im2col")
_col2im = _kernel(KERNELS, "col2im_add")
_forward = _kernel(_DENSE, "forward", PREAMBLE)
_delta = _kernel(_DENSE, "delta", PREAMBLE)
_tangent = _kernel(_DENSE, "tangent", PREAMBLE)
_soadjoint = _kernel(_DENSE, "soadjoint", PREAMBLE)


def _flat(a, name):
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous for the GPU conv kernels, got strides "
                         f"{a.strides} for shape {a.shape}")
    return a.reshape(-1)


def _i32(x):
    return int(x)


def im2col(U, H, W, C, col):
    """GPU twin of :func:`mgnn.kernels.cpu_conv.im2col` (one launch)."""
    _im2col(_flat(U, "U"), _i32(H), _i32(W), _i32(C), _flat(col, "col"), size=col.size)


def col2im_add(E, H, W, C, base, out, has_base):
    """GPU twin of :func:`mgnn.kernels.cpu_conv.col2im_add` (one launch); ``out`` may be
    ``base``."""
    o = _flat(out, "out")
    _col2im(_flat(E, "E"), _flat(base, "base") if has_base else o, _i32(H), _i32(W),
            _i32(C), bool(has_base), o, size=out.size)


def _rows(a, C):
    """An image batch ``(s, H*W*C)`` as its pixel rows ``(s*H*W, C)`` (a view)."""
    if not a.flags.c_contiguous:
        raise ValueError(f"an image batch must be C-contiguous for the GPU conv kernels, got "
                         f"strides {a.strides} for shape {a.shape}")
    return a.reshape(-1, C)


def _col(buf, n_rows, width):
    return buf[: n_rows * width].reshape(n_rows, width)


def conv_forward_step(U, K, b, h, act, H, W, S, out, colbuf, skip=True):
    """GPU twin of :func:`mgnn.kernels.cpu_conv.conv_forward_step`."""
    C_in, C_out = K.shape[2], K.shape[3]
    col = _col(colbuf, U.shape[0] * H * W, 9 * C_in)
    im2col(U, H, W, C_in, col)
    S2, O2 = _rows(S, C_out), _rows(out, C_out)
    cp.matmul(col, K.reshape(9 * C_in, C_out), out=S2)
    _forward(_rows(U, C_in) if skip else S2, b, S.dtype.type(h), act, bool(skip), S2, O2)


def conv_adjoint_step(L_next, U, K, S, h, act, H, W, D, colbuf, L=None, gK=None, gb=None,
                      skip=True):
    """GPU twin of :func:`mgnn.kernels.cpu_conv.conv_adjoint_step`."""
    C_in, C_out = K.shape[2], K.shape[3]
    n = U.shape[0] * H * W
    D2 = _rows(D, C_out)
    _delta(_rows(S, C_out), _rows(L_next, C_out), S.dtype.type(h), act, D2)
    if gb is not None:
        column_sum(D2, gb)
    col = _col(colbuf, n, 9 * C_in)
    if gK is not None:
        im2col(U, H, W, C_in, col)
        cp.matmul(col.T, D2, out=gK.reshape(9 * C_in, C_out))
    if L is not None:
        cp.matmul(D2, K.reshape(9 * C_in, C_out).T, out=col)
        col2im_add(col, H, W, C_in, L_next, L, bool(skip))


def conv_tangent_step(U, dU, K, dK, db, S, h, act, H, W, dZ, out, colbuf, T, skip=True):
    """GPU twin of :func:`mgnn.kernels.cpu_conv.conv_tangent_step`."""
    C_in, C_out = K.shape[2], K.shape[3]
    n = U.shape[0] * H * W
    col = _col(colbuf, n, 9 * C_in)
    dZ2, T2, O2 = _rows(dZ, C_out), _rows(T, C_out), _rows(out, C_out)
    im2col(U, H, W, C_in, col)
    cp.matmul(col, dK.reshape(9 * C_in, C_out), out=dZ2)
    want_T = dU is not None
    if want_T:
        im2col(dU, H, W, C_in, col)
        cp.matmul(col, K.reshape(9 * C_in, C_out), out=T2)
    _tangent(T2, db, _rows(S, C_out), _rows(dU, C_in) if (skip and want_T) else O2,
             S.dtype.type(h), act, bool(skip and want_T), want_T, dZ2, O2)


def conv_soadjoint_step(L_next, dL_next, U, dU, K, dK, S, dZ, h, act, H, W, D, dD, colbuf,
                        L=None, dL=None, dgK=None, dgb=None, skip=True, tmpK=None):
    """GPU twin of :func:`mgnn.kernels.cpu_conv.conv_soadjoint_step`; ``tmpK``
    (``9*C_in*C_out`` entries) is the scratch of ``col(dU)^T D`` (allocated when None
    and needed)."""
    C_in, C_out = K.shape[2], K.shape[3]
    n = U.shape[0] * H * W
    D2, dD2 = _rows(D, C_out), _rows(dD, C_out)
    _soadjoint(_rows(S, C_out), _rows(dZ, C_out), _rows(L_next, C_out),
               _rows(dL_next, C_out), S.dtype.type(h), act, D2, dD2)
    if dgb is not None:
        column_sum(dD2, dgb)
    Km = K.reshape(9 * C_in, C_out)
    col = _col(colbuf, n, 9 * C_in)
    if dgK is not None:
        G = dgK.reshape(9 * C_in, C_out)
        im2col(U, H, W, C_in, col)
        cp.matmul(col.T, dD2, out=G)
        if dU is not None:
            P = (cp.empty((9 * C_in, C_out), G.dtype) if tmpK is None
                 else tmpK.reshape(-1)[: 9 * C_in * C_out].reshape(9 * C_in, C_out))
            im2col(dU, H, W, C_in, col)
            cp.matmul(col.T, D2, out=P)
            cp.add(G, P, out=G)
    if L is not None:
        cp.matmul(D2, Km.T, out=col)
        col2im_add(col, H, W, C_in, L_next, L, bool(skip))
    if dL is not None:
        cp.matmul(dD2, Km.T, out=col)
        col2im_add(col, H, W, C_in, dL_next, dL, bool(skip))
        cp.matmul(D2, dK.reshape(9 * C_in, C_out).T, out=col)
        col2im_add(col, H, W, C_in, dL, dL, True)
