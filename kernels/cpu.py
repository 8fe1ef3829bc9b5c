"""CPU kernels of the dense residual layer: forward, adjoint, tangent, second-order adjoint.

One layer maps a batch of states ``U`` (s x w, one sample per row) to

    Z = U W^T + b,        U_next = skip * U + h * sigma(Z),

with ``skip = 1`` for a residual layer (an explicit-Euler step of the ODE
u' = sigma(W u + b)) and ``skip = 0``, ``h = 1`` for a plain dense layer (the
opening layer of a ResNet). Everything here is stateless: every function writes
into caller-provided buffers and allocates nothing of the size of a batch.

GEMMs go to BLAS through ``np.matmul(..., out=...)``; the elementwise work around
them (bias, activation, derivative, axpy, column sums for the bias gradient) is
fused into single-pass Numba kernels. ``tanh`` is evaluated by branch-free
formulas (:func:`_tanh`: a rational in float32, a reduced expm1 in float64) that
LLVM vectorises: Numba's scalar libm ``tanh`` is ~10x slower than NumPy's SIMD
ufunc, which in turn could not be fused with the bias and the axpy.

The *record* of a layer is what the forward step stores for the backward sweeps:
the activation value ``A = tanh(Z)`` for tanh (sigma' = 1 - A^2 needs no
transcendental), the pre-activation ``Z`` for every other activation.

Activations are passed as integer codes (:data:`ACTIVATIONS`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import cpu_fused as _F
from .cpu_activations import (  # noqa: F401  (re-exported: the codes are public)
    ACTIVATIONS,
    IDENTITY,
    RELU,
    SMOOTH_RELU,
    SMOOTH_RELU_EPS,
    TANH,
    _c,
    _d2sigma,
    _dsigma,
    _sigma,
    _tanh,
)
from .cpu_fused import n_chunks  # noqa: F401  (public: how gradient sums are chunked)

#: Layers narrower than this use a flat activation loop (see ``_forward_fuse``).
_NARROW = 16


# ----------------------------------------------------------------------------
# fused elementwise kernels
# ----------------------------------------------------------------------------
@njit(cache=True, error_model="numpy")
def activation(Z, act, out):
    """out = sigma(Z), elementwise (any shape, C-contiguous)."""
    z = Z.reshape(-1)
    o = out.reshape(-1)
    for i in range(z.size):
        o[i] = _sigma(z[i], act)


@njit(cache=True, error_model="numpy")
def _activation_derivatives(Z, act, order, out):
    z = Z.reshape(-1)
    o = out.reshape(-1)
    for i in range(z.size):
        r = _tanh(z[i]) if act == TANH else z[i]
        o[i] = _dsigma(r, act) if order == 1 else _d2sigma(r, act)


def activation_derivative(Z, act, out):
    """out = sigma'(Z), elementwise, from the pre-activation Z."""
    _activation_derivatives(Z, act, 1, out)


def activation_second_derivative(Z, act, out):
    """out = sigma''(Z), elementwise, from the pre-activation Z."""
    _activation_derivatives(Z, act, 2, out)


@njit(cache=True, error_model="numpy")
def _forward_fuse(U, S, b, h, act, skip, out):
    # S holds U W^T on entry, the record on exit: tanh(Z) for tanh, Z = U W^T + b else.
    s, w = S.shape
    keep_a = act == TANH
    if w >= _NARROW:
        for i in range(s):
            for j in range(w):
                z = S[i, j] + b[j]
                a = _sigma(z, act)
                S[i, j] = a if keep_a else z
                out[i, j] = U[i, j] + h * a if skip else h * a
        return
    # Narrow layers: rows shorter than a SIMD register do not vectorise, so add the
    # bias row by row (cheap) and evaluate the activation in one flat loop.
    for i in range(s):
        for j in range(w):
            S[i, j] += b[j]
    z_ = S.reshape(-1)
    o_ = out.reshape(-1)
    if skip:
        u_ = U.reshape(-1)
        for k in range(z_.size):
            z = z_[k]
            a = _sigma(z, act)
            z_[k] = a if keep_a else z
            o_[k] = u_[k] + h * a
    else:
        for k in range(z_.size):
            z = z_[k]
            a = _sigma(z, act)
            z_[k] = a if keep_a else z
            o_[k] = h * a


@njit(cache=True, error_model="numpy")
def _delta_fuse(S, L, h, act, D, gb, want_gb):
    # D = h sigma'(S) * L ; gb = column sums of D
    s, w = S.shape
    if want_gb:
        gb[:] = 0.0
    for i in range(s):
        for j in range(w):
            d = h * _dsigma(S[i, j], act) * L[i, j]
            D[i, j] = d
            if want_gb:
                gb[j] += d


@njit(cache=True, error_model="numpy")
def _tangent_fuse(dZ, T, db, S, dU, h, act, skip, want_T, out):
    # dZ <- dZ + T + db (the tangent record); out = skip*dU + h sigma'(S) dZ
    s, w = S.shape
    for i in range(s):
        for j in range(w):
            z = dZ[i, j] + db[j]
            if want_T:
                z += T[i, j]
            dZ[i, j] = z
            v = h * _dsigma(S[i, j], act) * z
            out[i, j] = dU[i, j] + v if skip else v


@njit(cache=True, error_model="numpy")
def _soadjoint_fuse(S, dZ, L, dL, h, act, D, dD, gb, dgb, want_gb):
    # D  = h sigma'(S) L
    # dD = h (sigma''(S) dZ L + sigma'(S) dL)
    s, w = S.shape
    dgb[:] = 0.0
    if want_gb:
        gb[:] = 0.0
    for i in range(s):
        for j in range(w):
            r = S[i, j]
            d1 = _dsigma(r, act)
            d = h * d1 * L[i, j]
            dd = h * (_d2sigma(r, act) * dZ[i, j] * L[i, j] + d1 * dL[i, j])
            D[i, j] = d
            dD[i, j] = dd
            dgb[j] += dd
            if want_gb:
                gb[j] += d


# ----------------------------------------------------------------------------
# which kernels a layer shape gets: fused Numba kernels for narrow layers, BLAS
# GEMMs plus fused elementwise passes for wide ones
# ----------------------------------------------------------------------------
#: Widest layer (the larger of input and output width) that the fused kernels
#: take, per dtype; wider layers use BLAS GEMMs. Measured at stop 22 (one thread,
#: AMD EPYC Zen 4, OpenBLAS 0.3.31, value_and_grad and hessp of ResNet(2, w, 64, 5),
#: tanh, s = 1000 and 5000; time fused / time BLAS): float64 w = 8: 1.0-1.1 /
#: 0.8-1.0, w = 32: 0.83-0.92 / 0.76-0.86, w = 64: 0.93-1.02 / 0.81-0.95. Since
#: float32 tiles are 16 columns wide (``cpu_tiles.NRW``; session 24, one process
#: A/B of value_and_grad, s = 1000, min of 5 x 3 rounds, shared machine): float32
#: w = 64: 1.00 on one thread, 0.65 on two; w = 128: 1.01 on one thread, 0.42 on
#: two; float64 w = 128: 1.10 on one thread, 0.88 on two. Two threads decide it:
#: between BLAS calls OpenBLAS's spinning workers and Numba's threads compete for
#: the cores, the fused path has no BLAS call inside a sweep.
FUSED_MAX_WIDTH = {np.dtype(np.float64): 128, np.dtype(np.float32): 128}
#: The dense networks' closing layer (width -> outputs, identity, step 1) runs on
#: these kernels when :func:`uses_fused` takes its shape (``ResNet._closing_kernels``):
#: a narrow network's value-and-gradient then calls no BLAS between Numba's sweeps.
CLOSING_ON_FUSED = True


def uses_fused(w_in, w_out, dtype):
    """True when a layer ``w_in -> w_out`` of ``dtype`` runs on the fused kernels.

    Examples
    --------
    >>> import numpy as np
    >>> uses_fused(32, 32, np.float64), uses_fused(512, 512, np.float64)
    (True, False)
    """
    return max(w_in, w_out) <= FUSED_MAX_WIDTH.get(np.dtype(dtype), 0)


def _cin(a):
    """``a`` as a C-contiguous array (a view when it already is one)."""
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


class _Out:
    """A C-contiguous stand-in for an output buffer; ``done()`` copies it back."""

    __slots__ = ("dst", "buf")

    def __init__(self, dst):
        self.dst = dst
        self.buf = dst if dst.flags.c_contiguous else np.empty(dst.shape, dst.dtype)

    def done(self):
        if self.buf is not self.dst:
            self.dst[...] = self.buf


_DUMMY = {}


def _dummy(dtype, ndim):
    """A tiny array standing in for an output that is not wanted (never read or written)."""
    key = (np.dtype(dtype).char, ndim)
    d = _DUMMY.get(key)
    if d is None:
        d = _DUMMY[key] = np.zeros((1,) * ndim, dtype)
    return d


def _partials(s, w_out, w_in, dtype, shape_tail):
    """Buffers for the partial sums of chunks 1..C-1 (a stand-in when C = 1)."""
    if s < 2 * _F.MIN_CHUNK_ROWS:  # n_chunks(s, w) == 1 for any w: nothing to hold
        return _dummy(dtype, 1 + len(shape_tail))
    C = n_chunks(s, max(w_in, w_out))
    return np.empty((max(C - 1, 1),) + shape_tail, dtype)


def _all_c(*arrays):
    for a in arrays:
        if a is not None and not a.flags.c_contiguous:
            return False
    return True


# ----------------------------------------------------------------------------
# layer steps; all outputs are caller buffers
# ----------------------------------------------------------------------------
def forward_step(U, W, b, h, act, S, out, skip=True):
    """One layer forward: ``out = skip*U + h*sigma(U W^T + b)``; ``S`` gets the record.

    Narrow layers (:func:`uses_fused`) run one fused kernel (register-tiled GEMM,
    bias, activation and skip per block of rows, threads over row chunks); wide
    ones a BLAS GEMM and one fused elementwise pass. The result does not depend
    on the number of threads.

    Parameters
    ----------
    U : (s, w_in) array
        Input states (one sample per row).
    W : (w_out, w_in) array
        Weights; ``b`` : (w_out,) bias.
    h : float
        Step size (1 for a dense layer).
    act : int
        Activation code from :data:`ACTIVATIONS`.
    S : (s, w_out) array
        Output: the layer's record (``tanh(Z)`` for tanh, else ``Z``).
    out : (s, w_out) array
        Output states. May not alias ``U``.
    skip : bool
        Residual connection (requires ``w_in == w_out``).

    Examples
    --------
    >>> import numpy as np
    >>> U = np.ones((2, 3)); W = np.eye(3); b = np.zeros(3)
    >>> S = np.empty((2, 3)); out = np.empty((2, 3))
    >>> forward_step(U, W, b, 0.5, ACTIVATIONS["relu"], S, out)
    >>> out[0]
    array([1.5, 1.5, 1.5])
    """
    if uses_fused(W.shape[1], W.shape[0], S.dtype):
        if _all_c(U, W, b, S, out):  # the common case: no wrappers
            _F.forward_layer(U, W, b, S.dtype.type(h), int(act), bool(skip), S, out)
            return
        So, Oo = _Out(S), _Out(out)
        _F.forward_layer(_cin(U), _cin(W), _cin(b), S.dtype.type(h), int(act), bool(skip),
                         So.buf, Oo.buf)
        So.done()
        Oo.done()
        return
    np.matmul(U, W.T, out=S)
    _forward_fuse(U, S, b, S.dtype.type(h), act, skip, out)


def adjoint_step(L_next, U, W, S, h, act, D, L=None, gW=None, gb=None, skip=True):
    """Transpose of one layer's Jacobian applied to the adjoint ``L_next``.

    With ``D = h*sigma'(Z) * L_next`` (written to ``D``):
    ``L = skip*L_next + D W`` (adjoint of the input states, skipped when ``L`` is
    None), ``gW = D^T U`` and ``gb = sum_rows(D)`` (the parameter gradient,
    skipped when None).

    On the fused kernels the gradient sums run over
    ``n_chunks(s, max(w_in, w_out))`` consecutive chunks of samples (each in row
    order) added in chunk order: bit-identical for any number of threads, and to
    the batched step and the whole-sweep kernels.
    """
    wo, wi = W.shape
    dt = S.dtype
    if uses_fused(wi, wo, dt):
        want_g = gW is not None or gb is not None
        s = S.shape[0]
        if gW is not None and gb is not None and _all_c(L_next, U, W, S, D, L, gW, gb):
            _F.adjoint_layer(L_next, U, W, S, dt.type(h), int(act), D,
                             L if L is not None else _dummy(dt, 2), L is not None, gW, gb, True,
                             bool(skip), _partials(s, wo, wi, dt, (wo, wi)),
                             _partials(s, wo, wi, dt, (wo,)), True)
            return
        if not want_g and L is not None and _all_c(L_next, U, W, S, D, L):
            # adjoint of the states only (MGRIT's non-final sweeps): no wrappers
            _F.adjoint_layer(L_next, U, W, S, dt.type(h), int(act), D, L, True,
                             _dummy(dt, 2), _dummy(dt, 1), False, bool(skip),
                             _dummy(dt, 3), _dummy(dt, 2), True)
            return
        Do = _Out(D)
        Lo = _Out(L) if L is not None else None
        gWo = _Out(gW if gW is not None else np.empty((wo, wi), dt)) if want_g else None
        gbo = _Out(gb if gb is not None else np.empty(wo, dt)) if want_g else None
        _F.adjoint_layer(_cin(L_next), _cin(U), _cin(W), _cin(S), dt.type(h), int(act), Do.buf,
                         Lo.buf if Lo else _dummy(dt, 2), L is not None,
                         gWo.buf if want_g else _dummy(dt, 2),
                         gbo.buf if want_g else _dummy(dt, 1), want_g, bool(skip),
                         _partials(s, wo, wi, dt, (wo, wi)) if want_g else _dummy(dt, 3),
                         _partials(s, wo, wi, dt, (wo,)) if want_g else _dummy(dt, 2), True)
        for o in (Do, Lo, gWo, gbo):
            if o is not None:
                o.done()
        return
    h = dt.type(h)
    _delta_fuse(S, L_next, h, act, D, gb if gb is not None else D[0], gb is not None)
    if L is not None:
        np.matmul(D, W, out=L)
        if skip:
            np.add(L, L_next, out=L)
    if gW is not None:
        np.matmul(D.T, U, out=gW)


def tangent_step(U, dU, W, dW, db, S, h, act, dZ, out, T=None, skip=True):
    """Directional derivative of one layer in the direction (dU, dW, db).

    ``dZ = dU W^T + U dW^T + db`` (written to ``dZ``, the tangent record) and
    ``out = skip*dU + h*sigma'(Z) * dZ``. Pass ``dU=None`` for a direction with no
    state part (the opening layer, whose input is data) and ``dW=None`` for one
    with no weight part; ``T`` is an (s, w_out) scratch buffer needed when both
    are present (on the BLAS path; the fused kernels sum both products in one
    running sum per entry and need no scratch).
    """
    wo, wi = W.shape
    dt = S.dtype
    if uses_fused(wi, wo, dt):
        Zo, Oo = _Out(dZ), _Out(out)
        Uc = _cin(U)
        Wc = _cin(W)
        _F.tangent_layer(Uc, _cin(dU) if dU is not None else Uc, Wc,
                         _cin(dW) if dW is not None else Wc, _cin(db), _cin(S), dt.type(h),
                         int(act), dU is not None, dW is not None, bool(skip), Zo.buf, Oo.buf)
        Zo.done()
        Oo.done()
        return
    h = dt.type(h)
    if dU is not None:
        np.matmul(dU, W.T, out=dZ)
    elif dW is None:
        dZ[...] = 0
    want_T = dW is not None
    if want_T:
        if dU is None:
            np.matmul(U, dW.T, out=dZ)
            want_T = False
        else:
            np.matmul(U, dW.T, out=T)
    _tangent_fuse(dZ, T if want_T else dZ, db, S, dU if dU is not None else dZ, h, act,
                  skip and dU is not None, want_T, out)


def soadjoint_step(L_next, dL_next, U, dU, W, dW, S, dZ, h, act, D, dD,
                   L=None, dL=None, gW=None, gb=None, dgW=None, dgb=None,
                   tmp=None, tmpW=None, skip=True):
    """Second-order adjoint of one layer: the derivative of :func:`adjoint_step`.

    Differentiating the adjoint step along the tangent (dU, dW, dZ) and the
    adjoint direction ``dL_next`` gives, with ``D = h sigma'(Z) L_next`` and
    ``dD = h (sigma''(Z) dZ L_next + sigma'(Z) dL_next)``::

        L   = skip*L_next  + D W
        dL  = skip*dL_next + dD W + D dW
        gW  = D^T U,           gb  = sum_rows(D)
        dgW = dD^T U + D^T dU, dgb = sum_rows(dD)

    ``dU=None`` / ``dW=None`` mean zero directions. ``tmp`` (s, w_in) and
    ``tmpW`` (w_out, w_in) are scratch buffers used on the BLAS path when the
    two-term sums are needed. Outputs left as None are not computed. On the fused
    kernels each two-term product is one running sum per entry and the sums over
    samples are chunked as in :func:`adjoint_step`.
    """
    wo, wi = W.shape
    dt = S.dtype
    if uses_fused(wi, wo, dt):
        s = S.shape[0]
        want_g = gW is not None or gb is not None
        want_dg = dgW is not None or dgb is not None
        outs = {}

        def o(name, a, shape):
            if a is None:
                a = np.empty(shape, dt)
            outs[name] = _Out(a)
            return outs[name].buf

        Dd, dDd = o("D", D, None), o("dD", dD, None)
        Lb = o("L", L, None) if L is not None else _dummy(dt, 2)
        dLb = o("dL", dL, None) if dL is not None else _dummy(dt, 2)
        Gb = o("gW", gW, (wo, wi)) if want_g else _dummy(dt, 2)
        gbb = o("gb", gb, (wo,)) if want_g else _dummy(dt, 1)
        dGb = o("dgW", dgW, (wo, wi)) if want_dg else _dummy(dt, 2)
        dgbb = o("dgb", dgb, (wo,)) if want_dg else _dummy(dt, 1)
        Uc, Wc = _cin(U), _cin(W)
        _F.soadjoint_layer(_cin(L_next), _cin(dL_next), Uc, _cin(dU) if dU is not None else Uc,
                           Wc, _cin(dW) if dW is not None else Wc, _cin(S), _cin(dZ),
                           dt.type(h), int(act), Dd, dDd, Lb, dLb, Gb, gbb, dGb, dgbb,
                           L is not None, dL is not None, want_g, want_dg, dU is not None,
                           dW is not None, bool(skip),
                           _partials(s, wo, wi, dt, (2, wo * wi + wo)), True)
        for v in outs.values():
            v.done()
        return
    h = dt.type(h)
    _soadjoint_fuse(S, dZ, L_next, dL_next, h, act, D, dD,
                    gb if gb is not None else dgb, dgb, gb is not None)
    if L is not None:
        np.matmul(D, W, out=L)
        if skip:
            np.add(L, L_next, out=L)
    if dL is not None:
        np.matmul(dD, W, out=dL)
        if skip:
            np.add(dL, dL_next, out=dL)
        if dW is not None:
            np.matmul(D, dW, out=tmp)
            np.add(dL, tmp, out=dL)
    if gW is not None:
        np.matmul(D.T, U, out=gW)
    if dgW is not None:
        np.matmul(dD.T, U, out=dgW)
        if dU is not None:
            np.matmul(D.T, dU, out=tmpW)
            np.add(dgW, tmpW, out=dgW)


# ----------------------------------------------------------------------------
# whole sweeps over a contiguous range of residual layers (fused kernels only)
# ----------------------------------------------------------------------------
def _check_sweep(U, P, n0, n1, name="U"):
    if U.ndim != 3 or not U.flags.c_contiguous:
        raise ValueError(f"{name} must be a C-contiguous (N+1, s, w) stack of states")
    w = U.shape[2]
    if P.ndim != 1 or P.size % (w * w + w) or not P.flags.c_contiguous:
        raise ValueError(f"parameters must be a contiguous 1-D array of blocks of "
                         f"{w * w + w} (w^2 + w), got shape {P.shape}")
    N = P.size // (w * w + w)
    if not 0 <= n0 <= n1 <= N or U.shape[0] < n1 + 1 - 0:
        raise ValueError(f"layer range [{n0}, {n1}) outside the {N} layers of the stack")
    return w, N


def forward_sweep(U, P, h, act, S, n0=0, n1=None):
    """Residual layers ``n0 .. n1-1`` forward in one call (fused kernels).

    ``U[n+1] = U[n] + h sigma(U[n] W_n^T + b_n)`` and ``S[n]`` = record, with
    ``U`` (N+1, s, w) and ``S`` (N, s, w) C-contiguous and ``P`` the residual
    parameters as N contiguous blocks ``[W_n (w*w), b_n (w)]``. Threads take
    chunks of samples through all the layers; the result is bit-identical to
    :func:`forward_step` layer by layer (and independent of the thread count).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> N, s, w = 3, 5, 4
    >>> P = rng.standard_normal(N * (w * w + w))
    >>> U = np.empty((N + 1, s, w)); U[0] = rng.standard_normal((s, w))
    >>> S = np.empty((N, s, w))
    >>> forward_sweep(U, P, 0.1, ACTIVATIONS["tanh"], S)
    >>> V, S1 = U[0].copy(), np.empty((s, w))
    >>> for n in range(N):
    ...     blk = P[n * 20:(n + 1) * 20]
    ...     out = np.empty((s, w))
    ...     forward_step(V, blk[:16].reshape(4, 4), blk[16:], 0.1, ACTIVATIONS["tanh"], S1, out)
    ...     V = out
    >>> bool(np.array_equal(V, U[N]))
    True
    """
    n1 = P.size // (U.shape[2] ** 2 + U.shape[2]) if n1 is None else n1
    _check_sweep(U, P, n0, n1)
    _F.forward_sweep_k(U, P, U.dtype.type(h), int(act), S, n0, n1)


def adjoint_sweep(L, cur, U, P, S, h, act, D, G, n0=0, n1=None):
    """Adjoint sweep with gradient from layer ``n1-1`` down to ``n0`` in one call.

    ``L`` (2, s, w) holds ping-pong adjoints, ``L[cur]`` the adjoint of ``U[n1]``;
    ``G`` (same layout as ``P``) receives the gradient blocks of layers
    ``n0 .. n1-1``; ``D`` (s, w) is scratch. Returns the index of the buffer of
    ``L`` that holds the adjoint of ``U[n0]``. Bit-identical to
    :func:`adjoint_step` layer by layer, for any thread count.
    """
    n1 = P.size // (U.shape[2] ** 2 + U.shape[2]) if n1 is None else n1
    _check_sweep(U, P, n0, n1)
    return int(_F.adjoint_sweep_k(L, int(cur), U, P, S, U.dtype.type(h), int(act), D, G, n0, n1))


def adjoint_chain(L, U, P, S, h, act, D, G=None):
    """Adjoint steps through the ``n`` layers of a stack, keeping every adjoint.

    ``L`` (n+1, s, w): ``L[0]`` holds the adjoint of ``U[n]``; ``L[k]`` receives
    that of ``U[n-k]``. ``U`` and ``S`` hold (at least) the n layers' input
    states and records, ``P`` their parameter blocks ``[W_q, b_q]`` and ``G``
    (same layout as ``P``, or None for no gradient) receives their gradient
    blocks. The stepping of MGRIT's adjoint F-intervals; bit-identical to
    :func:`adjoint_step` layer by layer (for any thread count).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> n, s, w = 3, 5, 4
    >>> P = rng.standard_normal(n * (w * w + w))
    >>> U = np.empty((n + 1, s, w)); U[0] = rng.standard_normal((s, w))
    >>> S = np.empty((n, s, w)); act = ACTIVATIONS["tanh"]
    >>> forward_sweep(U, P, 0.1, act, S)
    >>> L = np.empty((n + 1, s, w)); L[0] = rng.standard_normal((s, w))
    >>> adjoint_chain(L, U, P, S, 0.1, act, np.empty((s, w)))
    >>> lam, D = L[0].copy(), np.empty((s, w))
    >>> for q in range(n - 1, -1, -1):
    ...     blk = P[q * 20:(q + 1) * 20]
    ...     out = np.empty((s, w))
    ...     adjoint_step(lam, U[q], blk[:16].reshape(4, 4), S[q], 0.1, act, D, L=out)
    ...     lam = out
    >>> bool(np.array_equal(lam, L[n]))
    True
    """
    n = L.shape[0] - 1
    if L.ndim != 3 or not L.flags.c_contiguous:
        raise ValueError(f"L must be a C-contiguous (n+1, s, w) stack, got shape {L.shape}")
    s, w = L.shape[1], L.shape[2]
    for name, a in (("U", U), ("S", S)):
        if a.ndim != 3 or not a.flags.c_contiguous or a.shape[0] < n or a.shape[1:] != (s, w):
            raise ValueError(f"{name} must be a C-contiguous stack of at least {n} "
                             f"({s}, {w}) arrays, got shape {a.shape}")
    if P.ndim != 1 or not P.flags.c_contiguous or P.size != n * (w * w + w):
        raise ValueError(f"P must be {n} contiguous blocks of w^2 + w = {w * w + w}, "
                         f"got shape {P.shape}")
    want_g = G is not None
    if want_g and (G.shape != P.shape or not G.flags.c_contiguous):
        raise ValueError(f"G must be a contiguous array like P {P.shape}, got {G.shape}")
    dt = U.dtype
    _F.adjoint_chain_k(L, U, P, S, dt.type(h), int(act), D, G if want_g else _dummy(dt, 1),
                       want_g, _partials(s, w, w, dt, (w, w)) if want_g else _dummy(dt, 3),
                       _partials(s, w, w, dt, (w,)) if want_g else _dummy(dt, 2))


def tangent_sweep(U, dU, P, dP, S, h, act, dZ, n0=0, n1=None):
    """Tangent sweep over layers ``n0 .. n1-1`` in one call: fills ``dU[n0+1:n1+1]``
    and the tangent records ``dZ``; bit-identical to :func:`tangent_step` layer by
    layer."""
    n1 = P.size // (U.shape[2] ** 2 + U.shape[2]) if n1 is None else n1
    _check_sweep(U, P, n0, n1)
    _F.tangent_sweep_k(U, dU, P, dP, S, U.dtype.type(h), int(act), dZ, n0, n1)


def soadjoint_sweep(L, dL, cur, U, dU, P, dP, S, dZ, h, act, D, dD, H, n0=0, n1=None):
    """Second-order adjoint sweep from layer ``n1-1`` down to ``n0`` in one call.

    ``H`` receives the Hessian-vector product blocks of the residual layers;
    returns the index of the buffers of ``L``, ``dL`` holding the adjoint and its
    derivative at ``U[n0]``. Bit-identical to :func:`soadjoint_step` layer by layer.
    """
    n1 = P.size // (U.shape[2] ** 2 + U.shape[2]) if n1 is None else n1
    _check_sweep(U, P, n0, n1)
    return int(_F.soadjoint_sweep_k(L, dL, int(cur), U, dU, P, dP, S, dZ, U.dtype.type(h),
                                    int(act), D, dD, H, n0, n1))


# ----------------------------------------------------------------------------
# tables of dependent steps between rows of up to three state arrays (MGRIT's
# coarse-level sweeps in one call each; fused kernels only)
# ----------------------------------------------------------------------------
#: Columns of a step table: input array, input row, output array, output row,
#: row of the added right-hand side G (-1: none), row of the weights.
STEP_TABLE_COLUMNS = ("in_array", "in_row", "out_array", "out_row", "g_row", "w_row")


def _check_states(X, tab, s, w, dt):
    """The state arrays of a step table and its first four columns."""
    if not 1 <= len(X) <= 3:
        raise ValueError(f"X must hold 1 to 3 state arrays, got {len(X)}")
    for i, x in enumerate(X):
        if x.ndim != 3 or x.shape[1:] != (s, w) or x.dtype != dt or not x.flags.c_contiguous:
            raise ValueError(f"X[{i}] must be a C-contiguous (rows, {s}, {w}) {dt} array, "
                             f"got shape {x.shape}, dtype {x.dtype}")
    if not isinstance(tab, np.ndarray) or tab.ndim != 2 or tab.shape[1] != 6 \
            or tab.dtype != np.int64:
        raise ValueError(f"tab must be an (n, 6) int64 table, got {getattr(tab, 'shape', tab)}"
                         f" of {getattr(tab, 'dtype', type(tab).__name__)}")
    if tab.shape[0] == 0:
        return None
    lo, hi = tab.min(axis=0), tab.max(axis=0)
    for col in (0, 2):
        if lo[col] < 0 or hi[col] >= len(X):
            raise ValueError(f"tab[:, {col}] must index the {len(X)} arrays of X")
    rows = np.asarray([x.shape[0] for x in X])
    for col, arr in ((1, 0), (3, 2)):
        if lo[col] < 0 or bool(np.any(tab[:, col] >= rows[tab[:, arr]])):
            raise ValueError(f"tab[:, {col}] holds a row outside its array")
    return lo, hi


def _check_steps(X, tab, W, b, G, s, w, dt):
    for name, a, shape in (("W", W, (w, w)), ("b", b, (w,))):
        if a is not None and (a.shape[1:] != shape or a.dtype != dt
                              or not a.flags.c_contiguous):
            raise ValueError(f"{name} must be a C-contiguous (k, {', '.join(map(str, shape))})"
                             f" {dt} stack, got shape {a.shape}, dtype {a.dtype}")
    if G is not None and (G.ndim != 3 or G.shape[1:] != (s, w) or G.dtype != dt
                          or not G.flags.c_contiguous):
        raise ValueError(f"G must be a C-contiguous (rows, {s}, {w}) {dt} array or None")
    ext = _check_states(X, tab, s, w, dt)
    if ext is None:
        return
    lo, hi = ext
    if hi[4] >= 0 and (G is None or hi[4] >= G.shape[0] or lo[4] < -1):
        raise ValueError("tab[:, 4] holds a G row outside G (or G is None)")
    if lo[5] < 0 or hi[5] >= W.shape[0]:
        raise ValueError(f"tab[:, 5] must index the {W.shape[0]} layers of W")


def _check_rows(n, items, s, w, dt):
    for name, rows, aname, A in items:
        if A.ndim != 3 or A.shape[1:] != (s, w) or A.dtype != dt or not A.flags.c_contiguous:
            raise ValueError(f"{aname} must be a C-contiguous (rows, {s}, {w}) {dt} array, "
                             f"got shape {A.shape}, dtype {A.dtype}")
        if (rows.shape != (n,) or rows.dtype != np.int64
                or (n and (int(rows.min()) < 0 or int(rows.max()) >= A.shape[0]))):
            raise ValueError(f"{name} must be {n} int64 rows inside {aname}")


def forward_records(U, urow, W, b, wrow, act, R, tmp, check=True):
    """Records of ``n`` forward steps at once: ``R[j]`` = the record of the step of
    ``U[urow[j]]`` with ``W[wrow[j]]``, ``b[wrow[j]]`` (what :func:`forward_step`
    writes to ``S``; ``tmp`` (s, w) receives the discarded states). Per ``j``
    bit-identical to :func:`forward_step`'s record. MGRIT's coarse adjoint sweeps
    linearise at these.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> U, W, b = rng.standard_normal((3, 4, 2)), rng.standard_normal((2, 2, 2)), np.ones((2, 2))
    >>> R, tmp = np.empty((2, 4, 2)), np.empty((4, 2))
    >>> forward_records(U, np.array([2, 0]), W, b, np.array([1, 1]), ACTIVATIONS["tanh"], R, tmp)
    >>> S = np.empty((4, 2))
    >>> forward_step(U[0], W[1], b[1], 1.0, ACTIVATIONS["tanh"], S, tmp)
    >>> bool(np.array_equal(R[1], S))
    True
    """
    s, w = tmp.shape
    dt = tmp.dtype
    urow = np.asarray(urow, dtype=np.int64)
    wrow = np.asarray(wrow, dtype=np.int64)
    if check:
        n = urow.size
        _check_rows(n, (("urow", urow, "U", U),), s, w, dt)
        _check_rows(n, (("range(n)", np.arange(n, dtype=np.int64), "R", R),), s, w, dt)
        if (W.shape[1:] != (w, w) or b.shape[1:] != (w,) or W.shape[0] != b.shape[0]
                or W.dtype != dt or b.dtype != dt
                or not (W.flags.c_contiguous and b.flags.c_contiguous)):
            raise ValueError(f"W, b must be C-contiguous (k, {w}, {w}), (k, {w}) {dt} stacks")
        if wrow.shape != (n,) or (n and (int(wrow.min()) < 0 or int(wrow.max()) >= W.shape[0])):
            raise ValueError(f"wrow must be {n} rows inside W")
    _F.forward_records_k(U, urow, W, b, wrow, dt.type(1.0), int(act), R, tmp)


def _check_layer_table(X, tab, P, rows, s, w, dt):
    """Checks of a table of steps through flat layer blocks (column 4: a row of each
    array of ``rows``, column 5: a layer of ``P``)."""
    bs = w * w + w
    if P.ndim != 1 or P.dtype != dt or not P.flags.c_contiguous or P.size % bs:
        raise ValueError(f"P must be a contiguous 1-D {dt} array of blocks of w^2 + w = {bs}, "
                         f"got shape {P.shape}, dtype {P.dtype}")
    for name, A in rows:
        if A.dtype != dt or not A.flags.c_contiguous:
            raise ValueError(f"{name} must be a C-contiguous {dt} array")
    ext = _check_states(X, tab, s, w, dt)
    if ext is None:
        return
    lo, hi = ext
    if lo[5] < 0 or hi[5] >= P.size // bs:
        raise ValueError(f"tab[:, 5] must index the {P.size // bs} layers of P")
    for name, A in rows:
        if lo[4] < 0 or hi[4] >= A.shape[0]:
            raise ValueError(f"tab[:, 4] holds a row outside {name}")


def forward_steps_layers(X, tab, P, h, act, S, check=True):
    """Forward steps given by a table through residual layers of flat blocks.

    As :func:`forward_steps`, but step ``j`` uses the layer ``n = tab[j, 5]`` of
    ``P`` (contiguous blocks ``[W_n, b_n]``, as :func:`forward_sweep`) and writes
    its record to ``S[tab[j, 4]]`` ((rows, s, w), the records the adjoint needs);
    no right-hand side. MGRIT's level-0 sweeps in one call. Each step is
    bit-identical to :func:`forward_step`, for any thread count.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> s, w = 5, 3
    >>> P = rng.standard_normal(2 * (w * w + w))
    >>> X = np.zeros((3, s, w)); X[0] = rng.standard_normal((s, w))
    >>> S = np.empty((2, s, w))
    >>> tab = np.array([[0, 0, 0, 1, 0, 0], [0, 1, 0, 2, 1, 1]], dtype=np.int64)
    >>> forward_steps_layers([X], tab, P, 0.5, ACTIVATIONS["tanh"], S)
    >>> Y = np.empty((3, s, w)); Y[0] = X[0]; R = np.empty((2, s, w))
    >>> forward_sweep(Y, P, 0.5, ACTIVATIONS["tanh"], R)
    >>> bool(np.array_equal(Y, X) and np.array_equal(R, S))
    True
    """
    s, w = S.shape[1], S.shape[2]
    dt = S.dtype
    if check:
        _check_layer_table(X, tab, P, (("S", S),), s, w, dt)
    X0, X1, X2 = _three(X, dt)
    _F.forward_steps_layers_k(X0, X1, X2, tab, P, dt.type(h), int(act), S)


def adjoint_steps_layers(X, tab, U, P, S, h, act, D, G=None, check=True):
    """Adjoint steps given by a table through residual layers of flat blocks.

    Step ``j`` reads ``l = X[tab[j, 0]][tab[j, 1]]`` and writes
    ``X[tab[j, 2]][tab[j, 3]] = l + D W_n``, ``D = h sigma'(S[r]) * l``, for the
    layer ``n = tab[j, 5]`` of ``P`` linearised at ``U[r]``, ``r = tab[j, 4]``; with
    ``G`` ((rows, w^2 + w)) it writes the layer's gradient block
    ``G[r] = [D^T U[r], colsum D]``. Each step is bit-identical to
    :func:`adjoint_step` (with ``gW``, ``gb`` when ``G`` is given), for any thread
    count. ``D`` (s, w) is scratch.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> s, w, act = 4, 3, ACTIVATIONS["tanh"]
    >>> P = rng.standard_normal(w * w + w)
    >>> U = np.empty((2, s, w)); U[0] = rng.standard_normal((s, w)); S = np.empty((1, s, w))
    >>> forward_sweep(U, P, 0.5, act, S)
    >>> X = np.zeros((2, s, w)); X[0] = rng.standard_normal((s, w))
    >>> G = np.empty((1, w * w + w))
    >>> tab = np.array([[0, 0, 0, 1, 0, 0]], dtype=np.int64)
    >>> adjoint_steps_layers([X], tab, U, P, S, 0.5, act,
    ...                      np.empty((s, w)), G)
    >>> L, gW, gb = np.empty((s, w)), np.empty((w, w)), np.empty(w)
    >>> adjoint_step(X[0], U[0], P[:9].reshape(3, 3), S[0], 0.5, act, np.empty((s, w)),
    ...              L=L, gW=gW, gb=gb)
    >>> bool(np.array_equal(X[1], L) and np.array_equal(G[0], np.r_[gW.ravel(), gb]))
    True
    """
    s, w = D.shape
    dt = D.dtype
    want_g = G is not None
    if check:
        rows = [("U", U), ("S", S)] + ([("G", G)] if want_g else [])
        _check_layer_table(X, tab, P, rows, s, w, dt)
        if U.shape[1:] != (s, w) or S.shape[1:] != (s, w):
            raise ValueError(f"U and S must be stacks of ({s}, {w}) states")
        if want_g and G.shape[1:] != (w * w + w,):
            raise ValueError(f"G must be (rows, {w * w + w}), got {G.shape}")
    X0, X1, X2 = _three(X, dt)
    _F.adjoint_steps_layers_k(X0, X1, X2, tab, U, P, S, dt.type(h), int(act), D,
                              G if want_g else _dummy(dt, 2), want_g,
                              _partials(s, w, w, dt, (w, w)) if want_g else _dummy(dt, 3),
                              _partials(s, w, w, dt, (w,)) if want_g else _dummy(dt, 2))


def _three(X, dt):
    X = tuple(X)
    return X + (_dummy(dt, 3),) * (3 - len(X))


def forward_steps(X, tab, W, b, h, act, S, G=None, check=True):
    """Forward steps given by a table, in order, in one call (fused kernels).

    Step ``j`` reads ``u = X[tab[j, 0]][tab[j, 1]]`` and writes
    ``X[tab[j, 2]][tab[j, 3]] = u + h sigma(u W_q^T + b_q)`` with
    ``q = tab[j, 5]``, then adds ``G[tab[j, 4]]`` unless that entry is -1 (the FAS
    right-hand side of an MGRIT coarse level). ``S`` (s, w) receives the records
    (scratch). A step may read what an earlier one wrote. Each step is bit-identical
    to :func:`forward_step` followed by ``np.add(out, g, out=out)``, for any thread
    count: threads take chunks of samples through all the steps.

    Parameters
    ----------
    X : sequence of 1 to 3 arrays (rows, s, w)
        C-contiguous state arrays the table's rows refer to.
    tab : (n, 6) int64 array
        The steps (columns :data:`STEP_TABLE_COLUMNS`).
    W, b : (k, w, w), (k, w) arrays
        Weights and biases the steps pick by row.
    h : float
        Step size.
    act : int
        Activation code.
    S : (s, w) array
        Record scratch.
    G : (rows, s, w) array or None
        Right-hand sides.
    check : bool
        Validate the arrays and the table (``False``: the caller validated these
        arrays and this table before; an out-of-range row is then undefined
        behaviour).

    Examples
    --------
    Two steps from row 0 of a stack, the second adding a right-hand side:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> s, w = 5, 3
    >>> X = np.zeros((3, s, w)); X[0] = rng.standard_normal((s, w))
    >>> W, b = rng.standard_normal((2, w, w)), rng.standard_normal((2, w))
    >>> G = rng.standard_normal((1, s, w))
    >>> tab = np.array([[0, 0, 0, 1, -1, 0], [0, 1, 0, 2, 0, 1]], dtype=np.int64)
    >>> forward_steps([X], tab, W, b, 0.5, ACTIVATIONS["tanh"], np.empty((s, w)), G)
    >>> u, S = np.empty((s, w)), np.empty((s, w))
    >>> forward_step(X[1], W[1], b[1], 0.5, ACTIVATIONS["tanh"], S, u)
    >>> bool(np.array_equal(X[2], u + G[0]))
    True
    """
    s, w = S.shape
    dt = S.dtype
    if check:
        _check_steps(X, tab, W, b, G, s, w, dt)
    X0, X1, X2 = _three(X, dt)
    _F.forward_steps_k(X0, X1, X2, tab, W, b, dt.type(h), int(act), S,
                       G if G is not None else _dummy(dt, 3))


def adjoint_steps(X, tab, U, urow, W, R, rrow, h, act, D, G=None, check=True):
    """Adjoint steps given by a table, in order, in one call (fused kernels).

    Step ``j`` reads ``l = X[tab[j, 0]][tab[j, 1]]`` and writes
    ``X[tab[j, 2]][tab[j, 3]] = l + D W_q`` with ``D = h sigma'(R[rrow[j]]) * l``
    (the transpose of the forward step linearised at ``U[urow[j]]`` whose record is
    ``R[rrow[j]]``), ``q = tab[j, 5]``, then adds ``G[tab[j, 4]]`` unless that
    entry is -1. No parameter gradient (MGRIT's coarse adjoint sweeps). Each step is
    bit-identical to :func:`adjoint_step` with ``L=`` followed by the addition, for
    any thread count. ``D`` (s, w) is scratch; ``check`` as in :func:`forward_steps`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> s, w, act = 4, 3, ACTIVATIONS["tanh"]
    >>> U, W, b = rng.standard_normal((1, s, w)), rng.standard_normal((1, w, w)), np.zeros((1, w))
    >>> R, tmp = np.empty((1, s, w)), np.empty((s, w))
    >>> forward_step(U[0], W[0], b[0], 1.0, act, R[0], tmp)
    >>> X = np.zeros((2, s, w)); X[0] = rng.standard_normal((s, w))
    >>> tab = np.array([[0, 0, 0, 1, -1, 0]], dtype=np.int64)
    >>> adjoint_steps([X], tab, U, np.zeros(1, np.int64), W, R, np.zeros(1, np.int64),
    ...               0.5, act, np.empty((s, w)))
    >>> L = np.empty((s, w))
    >>> adjoint_step(X[0], U[0], W[0], R[0], 0.5, act, np.empty((s, w)), L=L)
    >>> bool(np.array_equal(X[1], L))
    True
    """
    s, w = D.shape
    dt = D.dtype
    if check:
        _check_steps(X, tab, W, None, G, s, w, dt)
        _check_rows(tab.shape[0], (("urow", urow, "U", U), ("rrow", rrow, "R", R)), s, w, dt)
    X0, X1, X2 = _three(X, dt)
    _F.adjoint_steps_k(X0, X1, X2, tab, U, urow, W, R, rrow, dt.type(h), int(act), D,
                       G if G is not None else _dummy(dt, 3))


# ----------------------------------------------------------------------------
# batched layer steps: k independent layers on stacks (k, s, w), e.g. the F-points
# at one offset of every MGRIT interval. Per slice the arithmetic is exactly that of
# the 2-D step, so a batched sweep reproduces the unbatched one bit for bit. Stacks
# may be strided views.
# ----------------------------------------------------------------------------
@njit(cache=True, error_model="numpy")
def _forward_fuse_batch(U, S, b, h, act, skip, out):
    # per slice q: _forward_fuse(U[q], S[q], b[q], h, act, skip, out[q])
    k, s, w = S.shape
    keep_a = act == TANH
    for q in range(k):
        for i in range(s):
            for j in range(w):
                z = S[q, i, j] + b[q, j]
                a = _sigma(z, act)
                S[q, i, j] = a if keep_a else z
                out[q, i, j] = U[q, i, j] + h * a if skip else h * a


@njit(cache=True, error_model="numpy")
def _delta_fuse_batch(S, L, h, act, D, gb, want_gb):
    # per slice q: _delta_fuse(S[q], L[q], h, act, D[q], gb[q], want_gb)
    k, s, w = S.shape
    for q in range(k):
        if want_gb:
            for j in range(w):
                gb[q, j] = 0.0
        for i in range(s):
            for j in range(w):
                d = h * _dsigma(S[q, i, j], act) * L[q, i, j]
                D[q, i, j] = d
                if want_gb:
                    gb[q, j] += d


def _contiguous(*arrays):
    return all(a.flags.c_contiguous for a in arrays)


def _check_stack(name, a, shape):
    if a.ndim != len(shape) or a.shape != shape:
        raise ValueError(f"{name} must be a stack of shape {shape}, got {a.shape}")


def _flat(a):
    """``(flat, offsets)``: a 1-D view spanning the stack ``a`` and each slice's offset in
    it (elements), when every slice of ``a`` is C-contiguous; else None.

    Strided stacks such as ``U[c::m][:k]`` (or negative strides) keep their memory:
    the view covers the span from the lowest to the highest slice inside the same
    buffer, and only the slices are read or written.
    """
    k = a.shape[0]
    isz = a.itemsize
    n = 1
    for d in range(a.ndim - 1, 0, -1):
        if a.shape[d] != 1 and a.strides[d] != n * isz:
            return None
        n *= a.shape[d]
    if k == 0 or n == 0:
        return a.reshape(-1), np.zeros(k, np.int64)
    st = a.strides[0] if k > 1 else n * isz
    if st % isz:
        return None
    step = st // isz
    offs = np.arange(k, dtype=np.int64) * step
    lo = int(offs.min())
    first = a[k - 1] if step < 0 else a[0]
    flat = np.lib.stride_tricks.as_strided(first, shape=(int(offs.max()) - lo + n,),
                                           strides=(isz,))
    return flat, offs - lo


class _FlatOut:
    """Flat form of an output stack, through a contiguous copy when it has none."""

    __slots__ = ("dst", "buf", "flat", "offs")

    def __init__(self, dst):
        self.dst = dst
        f = _flat(dst)
        self.buf = dst if f is not None else np.empty(dst.shape, dst.dtype)
        self.flat, self.offs = f if f is not None else _flat(self.buf)

    def done(self):
        if self.buf is not self.dst:
            self.dst[...] = self.buf


def _flat_in(a):
    f = _flat(a)
    return f if f is not None else _flat(np.ascontiguousarray(a))


def forward_step_batch(U, W, b, h, act, S, out, skip=True):
    """:func:`forward_step` on ``k`` independent layers at once.

    ``out[q] = skip*U[q] + h*sigma(U[q] W[q]^T + b[q])`` for ``q < k``; ``S[q]``
    gets the record. Narrow layers: one fused kernel call, threads over slices and
    row chunks, no per-slice Python work. Wide layers: one stacked BLAS GEMM and
    fused passes. Each slice is bit-identical to :func:`forward_step`.

    Parameters
    ----------
    U : (k, s, w) array
        Input states (strided views allowed, e.g. ``V[c::m][:k]``).
    W : (k, w, w) array
        Weights of the ``k`` layers; ``b`` : (k, w) biases.
    h : float
        Step size, shared by all slices.
    act : int
        Activation code.
    S, out : (k, s, w) arrays
        Records and output states. ``out`` may not alias ``U``.
    skip : bool
        Residual connection.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> U = rng.standard_normal((3, 4, 2)); W = rng.standard_normal((3, 2, 2))
    >>> b = rng.standard_normal((3, 2))
    >>> S, out = np.empty_like(U), np.empty_like(U)
    >>> forward_step_batch(U, W, b, 0.5, ACTIVATIONS["tanh"], S, out)
    >>> S1, o1 = np.empty((4, 2)), np.empty((4, 2))
    >>> forward_step(U[1], W[1], b[1], 0.5, ACTIVATIONS["tanh"], S1, o1)
    >>> bool(np.array_equal(out[1], o1) and np.array_equal(S[1], S1))
    True
    """
    k, s, wi = U.shape
    wo = W.shape[1]
    _check_stack("W", W, (k, wo, wi))
    _check_stack("b", b, (k, wo))
    _check_stack("S", S, (k, s, wo))
    _check_stack("out", out, (k, s, wo))
    dt = S.dtype
    if uses_fused(wi, wo, dt):
        (Uf, uo), (Wf, wof), (bf, bo) = _flat_in(U), _flat_in(W), _flat_in(b)
        So, Oo = _FlatOut(S), _FlatOut(out)
        _F.forward_batch_k(Uf, uo, Wf, wof, bf, bo, dt.type(h), int(act), bool(skip),
                           So.flat, So.offs, Oo.flat, Oo.offs, s, wi, wo)
        So.done()
        Oo.done()
        return
    np.matmul(U, W.swapaxes(-1, -2), out=S)
    h = dt.type(h)
    if _contiguous(U, S, b, out):
        _forward_fuse_batch(U, S, b, h, act, skip, out)
    else:
        # strided stacks (MGRIT's waves): Numba cannot vectorise a loop over a
        # non-contiguous 3-D array, but every slice is contiguous: the 2-D kernel
        for q in range(k):
            _forward_fuse(U[q], S[q], b[q], h, act, skip, out[q])


def adjoint_step_batch(L_next, U, W, S, h, act, D, L=None, gW=None, gb=None, skip=True):
    """:func:`adjoint_step` on ``k`` independent layers at once (stacks (k, s, w)).

    ``D[q] = h sigma'(S[q]) * L_next[q]``, ``L[q] = skip*L_next[q] + D[q] W[q]``,
    ``gW[q] = D[q]^T U[q]`` (k, w, w) and ``gb[q] = sum_rows D[q]`` (k, w); outputs
    left as None are skipped. Each slice is bit-identical to :func:`adjoint_step`
    (the same chunked sums over samples on the fused kernels).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> Ln, U, S = (rng.standard_normal((2, 5, 3)) for _ in range(3))
    >>> W = rng.standard_normal((2, 3, 3))
    >>> D, L = np.empty_like(U), np.empty_like(U)
    >>> gW, gb = np.empty((2, 3, 3)), np.empty((2, 3))
    >>> adjoint_step_batch(Ln, U, W, S, 0.1, ACTIVATIONS["relu"], D, L, gW, gb)
    >>> D1, L1, gW1, gb1 = np.empty((5, 3)), np.empty((5, 3)), np.empty((3, 3)), np.empty(3)
    >>> adjoint_step(Ln[0], U[0], W[0], S[0], 0.1, ACTIVATIONS["relu"], D1, L1, gW1, gb1)
    >>> all(np.array_equal(a, b) for a, b in [(L[0], L1), (gW[0], gW1), (gb[0], gb1)])
    True
    """
    k, s, wo = L_next.shape
    wi = U.shape[2]
    _check_stack("D", D, (k, s, wo))
    dt = S.dtype
    if uses_fused(wi, wo, dt):
        want_g = gW is not None or gb is not None
        Do = _FlatOut(D)
        Lo = _FlatOut(L) if L is not None else None
        gWo = _FlatOut(gW if gW is not None else np.empty((k, wo, wi), dt)) if want_g else None
        gbo = _FlatOut(gb if gb is not None else np.empty((k, wo), dt)) if want_g else None
        (Lnf, lno), (Uf, uo), (Wf, wof), (Sf, so) = (_flat_in(L_next), _flat_in(U), _flat_in(W),
                                                     _flat_in(S))
        d1, z1 = _dummy(dt, 1), np.zeros(k, np.int64)
        _F.adjoint_batch_k(Lnf, lno, Uf, uo, Wf, wof, Sf, so, dt.type(h), int(act),
                           Do.flat, Do.offs, Lo.flat if Lo else d1, Lo.offs if Lo else z1,
                           L is not None, gWo.flat if want_g else d1, gWo.offs if want_g else z1,
                           gbo.flat if want_g else d1, gbo.offs if want_g else z1, want_g,
                           bool(skip), s, wi, wo)
        for o in (Do, Lo, gWo, gbo):
            if o is not None:
                o.done()
        return
    h = dt.type(h)
    want_gb = gb is not None
    if _contiguous(S, L_next, D) and (not want_gb or gb.flags.c_contiguous):
        _delta_fuse_batch(S, L_next, h, act, D, gb if want_gb else D[:, 0], want_gb)
    else:  # strided stacks: per contiguous slice, as in forward_step_batch
        for q in range(k):
            _delta_fuse(S[q], L_next[q], h, act, D[q], gb[q] if want_gb else D[q, 0], want_gb)
    if L is not None:
        np.matmul(D, W, out=L)
        if skip:
            np.add(L, L_next, out=L)
    if gW is not None:
        np.matmul(D.swapaxes(-1, -2), U, out=gW)


# ----------------------------------------------------------------------------
# losses: value, gradient and Hessian-vector product w.r.t. the network output
# ----------------------------------------------------------------------------
@njit(cache=True, error_model="numpy")
def mse_value_grad(Y, T, G):
    """Mean squared error ``(1/(2s)) sum ||y_i - t_i||^2``; ``G`` = dL/dY."""
    s, m = Y.shape
    inv = 1.0 / s
    val = 0.0
    for i in range(s):
        for j in range(m):
            r = Y[i, j] - T[i, j]
            val += r * r
            G[i, j] = r * inv
    return 0.5 * val * inv


@njit(cache=True, error_model="numpy")
def mse_value(Y, T):
    s, m = Y.shape
    val = 0.0
    for i in range(s):
        for j in range(m):
            r = Y[i, j] - T[i, j]
            val += r * r
    return 0.5 * val / s


@njit(cache=True, error_model="numpy")
def mse_hessp(Y, dY, out):
    """Hessian of the MSE in the direction dY: ``dY / s``."""
    s = Y.shape[0]
    inv = 1.0 / s
    a = dY.reshape(-1)
    o = out.reshape(-1)
    for i in range(a.size):
        o[i] = a[i] * inv


@njit(cache=True, error_model="numpy")
def _softmax_row(Y, i, P):
    m = Y.shape[1]
    mx = Y[i, 0]
    for j in range(1, m):
        if Y[i, j] > mx:
            mx = Y[i, j]
    tot = 0.0
    for j in range(m):
        e = np.exp(Y[i, j] - mx)
        P[i, j] = e
        tot += e
    for j in range(m):
        P[i, j] /= tot
    return mx + np.log(tot)


@njit(cache=True, error_model="numpy")
def cross_entropy_value_grad(Y, labels, G):
    """Softmax cross-entropy, mean over samples; ``G`` = dL/dY.

    Stable: log-sum-exp with the row maximum subtracted.
    """
    s, m = Y.shape
    inv = 1.0 / s
    val = 0.0
    for i in range(s):
        lse = _softmax_row(Y, i, G)
        c = labels[i]
        val += lse - Y[i, c]
        for j in range(m):
            G[i, j] *= inv
        G[i, c] -= inv
    return val * inv


@njit(cache=True, error_model="numpy")
def cross_entropy_value(Y, labels):
    s, m = Y.shape
    val = 0.0
    for i in range(s):
        mx = Y[i, 0]
        for j in range(1, m):
            if Y[i, j] > mx:
                mx = Y[i, j]
        tot = 0.0
        for j in range(m):
            tot += np.exp(Y[i, j] - mx)
        val += mx + np.log(tot) - Y[i, labels[i]]
    return val / s


@njit(cache=True, error_model="numpy")
def cross_entropy_hessp(Y, dY, out):
    """Hessian of the cross-entropy in the direction dY: ``(P dY - P <P, dY>)/s``."""
    s, m = Y.shape
    inv = 1.0 / s
    for i in range(s):
        _softmax_row(Y, i, out)
        dot = 0.0
        for j in range(m):
            dot += out[i, j] * dY[i, j]
        for j in range(m):
            out[i, j] = out[i, j] * (dY[i, j] - dot) * inv
