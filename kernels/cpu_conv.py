"""CPU kernels of the 3x3 convolutional residual layer (im2col + BLAS + fused elementwise).

A layer maps a batch of images ``U`` with ``C`` channels on an ``H x W`` grid to

    Z = K * U + b,        U_next = skip * U + h * sigma(Z),

where ``K * U`` is the 3x3 convolution (cross-correlation, as in every deep-learning
library) with zero "same" padding and stride 1, ``K`` maps ``C_in`` to ``C_out``
channels. ``skip = 1``, ``C_in = C_out`` is a residual layer; ``skip = 0``, ``h = 1``
the opening layer.

Layouts (all C-contiguous):

* an image batch is a 2-D array ``(s, H*W*C)``, channels last: sample ``i``,
  pixel ``(y, x)``, channel ``c`` at ``[i, (y*W + x)*C + c]``. Seen as
  ``(s*H*W, C)`` it is one row per pixel, which is how the GEMMs see it;
* a kernel ``K`` is ``(3, 3, C_in, C_out)`` (HWIO), seen as the matrix
  ``(9*C_in, C_out)`` whose row ``(ky*3 + kx)*C_in + ci`` multiplies the input
  pixel at offset ``(ky - 1, kx - 1)``, channel ``ci``;
* the im2col matrix ``col`` is ``(s*H*W, 9*C_in)``: row ``(i, y, x)`` holds the
  3x3 neighbourhood of pixel ``(y, x)`` of sample ``i`` (zeros outside the image).

Then ``Z = col(U) @ K + b`` (one BLAS GEMM), the kernel gradient is
``col(U)^T D`` and the input adjoint is ``col^T(D K^T)``: the GEMM ``E = D K^T``
(``(s*H*W, 9*C_in)``) followed by :func:`col2im_add`, which gathers each
pixel's nine contributions (no scatter, no write conflicts). The elementwise work
(bias, activation, its derivatives, skip, bias-gradient sums) is the dense layer's
fused kernels of :mod:`mgnn.kernels.cpu` applied to the ``(s*H*W, C)`` view.

Why im2col + BLAS and not a direct loop: at the shapes of the examples (8x8 to
28x28 images, 4 to 32 channels) the convolution is a GEMM of inner dimension
``9*C`` = 36..288, where BLAS runs near its peak; a direct Numba loop over the nine
offsets has an inner dimension of ``C`` only. Measured (forward product only, one
thread, float64, OpenBLAS 0.3.31 on a shared 2-core AMD EPYC at load ~13, so
ratios only): a plain direct Numba loop (offsets, input channel, output channel
innermost) took 1.40x (8x8, c = 8, s = 256), 1.27x (8x8, c = 16), 1.52x (16x16,
c = 16, s = 128) and 1.45x (16x16, c = 32, s = 64) the time of im2col + GEMM, so
every shape takes im2col + GEMM. A register-tiled direct kernel (as
:mod:`mgnn.kernels.cpu_fused` does for narrow dense layers) was not tried.

Threads: im2col and col2im run on one thread and the threads go to the GEMMs. A
Numba parallel region between two BLAS calls leaves its OpenMP workers spinning
(libgomp's default wait policy) against OpenBLAS's threads: with both on 2 threads a
value-and-gradient took 2.0-3.5x longer than on one thread (``benchmarks/conv_step.py
--quick --threads 1 2``, quiet machine: 157.7 against 51.1 ms at 8x8, c = 8, s = 256);
with serial im2col/col2im, 44.8 ms on 2 threads (and 51.1 on one). Results do not
depend on the thread count either way.

Splitting im2col/col2im over the samples between Python threads (``nogil`` Numba
loops, workers that block rather than spin) did not pay either: on 2 threads at 8x8,
c = 16, s = 256 im2col took 2.70 ms split against 1.89 ms on one thread (the GEMM's
OpenBLAS workers still spin on the other core), a value-and-gradient 190 against 179 ms
(``benchmarks/conv_step.py --breakdown``, load ~2 on 2 cores).

Every function writes into caller buffers; nothing of the size of a batch is
allocated.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .cpu import _delta_fuse, _dummy, _forward_fuse, _soadjoint_fuse, _tangent_fuse


@njit(cache=True, error_model="numpy")
def im2col(U, H, W, C, col):
    """``col[(i*H + y)*W + x, (ky*3 + kx)*C + c] = U[i, ((y+ky-1)*W + x+kx-1)*C + c]``
    (zero outside the image).

    Examples
    --------
    >>> import numpy as np
    >>> U = np.arange(4.0).reshape(1, 4)          # one 2x2 image, one channel
    >>> col = np.empty((4, 9))
    >>> im2col(U, 2, 2, 1, col)
    >>> col[0]                                     # neighbourhood of pixel (0, 0)
    array([0., 0., 0., 0., 0., 1., 0., 2., 3.])
    """
    s = U.shape[0]
    zero = col.dtype.type(0.0)
    for i in range(s):
        for y in range(H):
            for x in range(W):
                r = (i * H + y) * W + x
                for ky in range(3):
                    yy = y + ky - 1
                    for kx in range(3):
                        xx = x + kx - 1
                        o = (ky * 3 + kx) * C
                        if 0 <= yy < H and 0 <= xx < W:
                            src = (yy * W + xx) * C
                            for c in range(C):
                                col[r, o + c] = U[i, src + c]
                        else:
                            for c in range(C):
                                col[r, o + c] = zero


@njit(cache=True, error_model="numpy")
def im2col_layers(U, H, W, C, col):
    """:func:`im2col` of every layer of a stack: ``U`` (k, s, H*W*C), any layer
    stride (MGRIT's strided stacks), ``col`` (k, s*H*W, 9*C)."""
    for q in range(U.shape[0]):
        im2col(U[q], H, W, C, col[q])


@njit(cache=True, error_model="numpy")
def col2im_add_layers(E, H, W, C, base, out, has_base):
    """:func:`col2im_add` of every layer of a stack (``E`` (k, s*H*W, 9*C), ``base``
    and ``out`` (k, s, H*W*C), any layer stride)."""
    for q in range(out.shape[0]):
        col2im_add(E[q], H, W, C, base[q], out[q], has_base)


@njit(cache=True, error_model="numpy")
def col2im_add(E, H, W, C, base, out, has_base):
    """``out = base + col^T(E)``: the adjoint of :func:`im2col` (``base`` ignored
    unless ``has_base``). ``out`` may be ``base``.

    Pixel ``(y, x)`` gathers ``E[row of (y-ky+1, x-kx+1), (ky*3 + kx)*C + c]`` over the
    nine offsets, in a fixed order (``base`` first, then ``ky``, ``kx`` ascending), each
    offset's ``C`` channels as one contiguous run (vectorised; 0.65-0.85x the time of a
    channel-outer loop at 8x8, c = 8..16, s = 256, the same bits).
    """
    s = out.shape[0]
    zero = out.dtype.type(0.0)
    for i in range(s):
        for y in range(H):
            for x in range(W):
                dst = (y * W + x) * C
                if has_base:
                    for c in range(C):
                        out[i, dst + c] = base[i, dst + c]
                else:
                    for c in range(C):
                        out[i, dst + c] = zero
                for ky in range(3):
                    yy = y - ky + 1
                    if yy < 0 or yy >= H:
                        continue
                    for kx in range(3):
                        xx = x - kx + 1
                        if xx < 0 or xx >= W:
                            continue
                        r = (i * H + yy) * W + xx
                        o = (ky * 3 + kx) * C
                        for c in range(C):
                            out[i, dst + c] += E[r, o + c]


def _rows(a, C):
    """An image batch ``(s, H*W*C)`` as its pixel rows ``(s*H*W, C)`` (a view)."""
    return a.reshape(-1, C)


def _col(buf, n_rows, width):
    """A C-contiguous ``(n_rows, width)`` view at the start of the flat scratch ``buf``."""
    return buf[: n_rows * width].reshape(n_rows, width)


def conv_forward_step(U, K, b, h, act, H, W, S, out, colbuf, skip=True):
    """One convolutional layer forward: ``out = skip*U + h*sigma(K * U + b)``.

    Parameters
    ----------
    U : (s, H*W*C_in) array
        Input images (channels last).
    K : (3, 3, C_in, C_out) array
        Kernel; ``b`` : (C_out,) bias.
    h : float
        Step size (1 for the opening layer).
    act : int
        Activation code (:data:`mgnn.kernels.cpu.ACTIVATIONS`).
    H, W : int
        Image height and width.
    S : (s, H*W*C_out) array
        Output: the record (``tanh(Z)`` for tanh, else ``Z``).
    out : (s, H*W*C_out) array
        Output images; may not alias ``U``.
    colbuf : 1-D array
        Scratch of at least ``s*H*W*9*C_in`` entries.
    skip : bool
        Residual connection (``C_in == C_out``).

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.kernels.cpu import ACTIVATIONS
    >>> U = np.ones((1, 4)); K = np.zeros((3, 3, 1, 1)); K[1, 1] = 2.0   # 2x2 image
    >>> S = np.empty((1, 4)); out = np.empty((1, 4)); col = np.empty(36)
    >>> conv_forward_step(U, K, np.zeros(1), 0.5, ACTIVATIONS["relu"], 2, 2, S, out, col)
    >>> out
    array([[2., 2., 2., 2.]])
    """
    C_in, C_out = K.shape[2], K.shape[3]
    s = U.shape[0]
    col = _col(colbuf, s * H * W, 9 * C_in)
    im2col(U, H, W, C_in, col)
    S2 = _rows(S, C_out)
    np.matmul(col, K.reshape(9 * C_in, C_out), out=S2)
    O2 = _rows(out, C_out)
    _forward_fuse(_rows(U, C_in) if skip else O2, S2, b, S.dtype.type(h), act, bool(skip), O2)


def conv_adjoint_step(L_next, U, K, S, h, act, H, W, D, colbuf, L=None, gK=None, gb=None,
                      skip=True):
    """Transpose of one convolutional layer's Jacobian applied to ``L_next``.

    With ``D = h*sigma'(Z) * L_next`` (written to ``D``, ``(s, H*W*C_out)``):
    ``L = skip*L_next + col^T(D K^T)`` (skipped when ``L`` is None),
    ``gK = col(U)^T D`` and ``gb = sum over pixels and samples of D`` (skipped when
    None). ``colbuf`` holds at least ``s*H*W*9*max(C_in, C_out)`` entries; ``L`` may
    be ``L_next``.
    """
    C_in, C_out = K.shape[2], K.shape[3]
    s = U.shape[0]
    n = s * H * W
    D2 = _rows(D, C_out)
    want_gb = gb is not None
    _delta_fuse(_rows(S, C_out), _rows(L_next, C_out), S.dtype.type(h), act, D2,
                gb if want_gb else _dummy(S.dtype, 1), want_gb)
    if gK is not None:
        col = _col(colbuf, n, 9 * C_in)
        im2col(U, H, W, C_in, col)
        np.matmul(col.T, D2, out=gK.reshape(9 * C_in, C_out))
    if L is not None:
        E = _col(colbuf, n, 9 * C_in)
        np.matmul(D2, K.reshape(9 * C_in, C_out).T, out=E)
        col2im_add(E, H, W, C_in, L_next, L, bool(skip))


def conv_tangent_step(U, dU, K, dK, db, S, h, act, H, W, dZ, out, colbuf, T, skip=True):
    """Tangent of one convolutional layer along ``(dU, dK, db)``.

    ``dZ = K * dU + dK * U + db`` (the tangent record, written to ``dZ``) and
    ``out = skip*dU + h*sigma'(Z) dZ``. ``dU`` may be None (the opening layer: its
    input is data). ``T`` is ``(s, H*W*C_out)`` scratch.
    """
    C_in, C_out = K.shape[2], K.shape[3]
    s = U.shape[0]
    n = s * H * W
    col = _col(colbuf, n, 9 * C_in)
    dZ2 = _rows(dZ, C_out)
    im2col(U, H, W, C_in, col)
    np.matmul(col, dK.reshape(9 * C_in, C_out), out=dZ2)
    want_T = dU is not None
    T2 = _rows(T, C_out)
    if want_T:
        im2col(dU, H, W, C_in, col)
        np.matmul(col, K.reshape(9 * C_in, C_out), out=T2)
    O2 = _rows(out, C_out)
    _tangent_fuse(dZ2, T2, db, _rows(S, C_out), _rows(dU, C_in) if (skip and want_T) else O2,
                  S.dtype.type(h), act, bool(skip and want_T), want_T, O2)


def conv_soadjoint_step(L_next, dL_next, U, dU, K, dK, S, dZ, h, act, H, W, D, dD, colbuf,
                        L=None, dL=None, dgK=None, dgb=None, skip=True, tmpK=None):
    """Second-order adjoint of one convolutional layer.

    With ``D = h sigma'(Z) L_next`` and ``dD = h (sigma''(Z) dZ L_next + sigma'(Z)
    dL_next)``: ``dgK = col(U)^T dD + col(dU)^T D``, ``dgb = sums of dD`` (the layer's
    Hessian-vector product), ``L = skip*L_next + col^T(D K^T)`` and ``dL =
    skip*dL_next + col^T(dD K^T + D dK^T)``. ``dU`` may be None (opening layer),
    ``L``/``dL`` None when not wanted. ``colbuf`` holds at least
    ``s*H*W*9*max(C_in, C_out)`` entries; ``tmpK`` (at least ``9*C_in*C_out``
    entries) is the scratch of ``col(dU)^T D`` (allocated when None and needed).
    """
    C_in, C_out = K.shape[2], K.shape[3]
    s = U.shape[0]
    n = s * H * W
    D2, dD2 = _rows(D, C_out), _rows(dD, C_out)
    hb = dgb if dgb is not None else np.empty(C_out, S.dtype)
    _soadjoint_fuse(_rows(S, C_out), _rows(dZ, C_out), _rows(L_next, C_out),
                    _rows(dL_next, C_out), S.dtype.type(h), act, D2, dD2,
                    _dummy(S.dtype, 1), hb, False)
    Km = K.reshape(9 * C_in, C_out)
    col = _col(colbuf, n, 9 * C_in)
    if dgK is not None:
        G = dgK.reshape(9 * C_in, C_out)
        im2col(U, H, W, C_in, col)
        np.matmul(col.T, dD2, out=G)
        if dU is not None:
            P = (np.empty((9 * C_in, C_out), G.dtype) if tmpK is None
                 else tmpK.reshape(-1)[: 9 * C_in * C_out].reshape(9 * C_in, C_out))
            im2col(dU, H, W, C_in, col)
            np.matmul(col.T, D2, out=P)
            G += P
    if L is not None:
        np.matmul(D2, Km.T, out=col)
        col2im_add(col, H, W, C_in, L_next, L, bool(skip))
    if dL is not None:
        np.matmul(dD2, Km.T, out=col)
        col2im_add(col, H, W, C_in, dL_next, dL, bool(skip))
        np.matmul(D2, dK.reshape(9 * C_in, C_out).T, out=col)
        col2im_add(col, H, W, C_in, dL, dL, True)


# ------------------------------------------------------- steps batched over layers
def _layer_rows(a, C, name):
    """A stack of image batches ``(k, s, H*W*C)`` as ``(k, s*H*W, C)`` (a view; every
    layer must be C-contiguous, the layer stride is free)."""
    if a.ndim != 3 or not a[0].flags.c_contiguous:
        raise ValueError(f"{name} must be a stack (k, s, H*W*C) of C-contiguous layers, got "
                         f"shape {a.shape} and strides {a.strides}")
    return _view(a, (a.shape[0], -1, C), name)


def _layer_kernels(K, name="K"):
    """A stack of kernels ``(k, 3, 3, C_in, C_out)`` as ``(k, 9*C_in, C_out)`` (a view)."""
    return _view(K, (K.shape[0], 9 * K.shape[3], K.shape[4]), name)


def _view(a, shape, name):
    v = a.reshape(shape)
    if v.__array_interface__["data"][0] != a.__array_interface__["data"][0]:
        raise ValueError(f"{name} (shape {a.shape}, strides {a.strides}) cannot be seen as "
                         f"{shape} without a copy; pass a stack of C-contiguous layers")
    return v


def conv_forward_step_layers(U, K, b, h, act, H, W, S, out, colbuf, skip=True):
    """:func:`conv_forward_step` on a stack of ``k`` layers (MGRIT's batched relaxation):
    ``U``, ``S``, ``out`` (k, s, H*W*C), ``K`` (k, 3, 3, C_in, C_out), ``b`` (k, C_out),
    each layer C-contiguous, any layer stride. One im2col over the stack, one batched
    GEMM (``np.matmul`` over (k, s*H*W, 9*C_in) x (k, 9*C_in, C_out)), the fused
    elementwise pass per layer; ``colbuf`` holds ``k*s*H*W*9*C_in`` entries. Each layer
    is bit-identical to :func:`conv_forward_step` (the same GEMM per layer).
    """
    k, C_in, C_out = U.shape[0], K.shape[3], K.shape[4]
    n = U.shape[1] * H * W
    col = colbuf[: k * n * 9 * C_in].reshape(k, n, 9 * C_in)
    im2col_layers(U, H, W, C_in, col)
    S3, O3 = _layer_rows(S, C_out, "S"), _layer_rows(out, C_out, "out")
    np.matmul(col, _layer_kernels(K), out=S3)
    U3 = _layer_rows(U, C_in, "U") if skip else O3
    hh = S.dtype.type(h)
    for q in range(k):
        _forward_fuse(U3[q], S3[q], b[q], hh, act, bool(skip), O3[q])


def conv_adjoint_step_layers(L_next, U, K, S, h, act, H, W, D, colbuf, L=None, gK=None,
                             gb=None, skip=True):
    """:func:`conv_adjoint_step` on a stack of ``k`` layers (see
    :func:`conv_forward_step_layers`): ``gK`` (k, 3, 3, C_in, C_out) and ``gb``
    (k, C_out) when given; one im2col, one col2im and batched GEMMs over the stack;
    each layer bit-identical to :func:`conv_adjoint_step`."""
    k, C_in, C_out = U.shape[0], K.shape[3], K.shape[4]
    n = U.shape[1] * H * W
    D3 = _layer_rows(D, C_out, "D")
    S3, Ln3 = _layer_rows(S, C_out, "S"), _layer_rows(L_next, C_out, "L_next")
    hh = S.dtype.type(h)
    want_gb = gb is not None
    dummy = _dummy(S.dtype, 1)
    for q in range(k):
        _delta_fuse(S3[q], Ln3[q], hh, act, D3[q], gb[q] if want_gb else dummy, want_gb)
    col = colbuf[: k * n * 9 * C_in].reshape(k, n, 9 * C_in)
    if gK is not None:
        im2col_layers(U, H, W, C_in, col)
        np.matmul(col.transpose(0, 2, 1), D3, out=_layer_kernels(gK, "gK"))
    if L is not None:
        np.matmul(D3, _layer_kernels(K).transpose(0, 2, 1), out=col)
        col2im_add_layers(col, H, W, C_in, L_next, L, bool(skip))
