"""CPU kernels of the dense residual layer: forward, adjoint, tangent, second-order adjoint.

One layer maps a batch of states ``U`` (s x w, one sample per row) to

    Z = U W^T + b,        U_next = skip * U + h * sigma(Z),

with ``skip = 1`` for a residual layer (an explicit-Euler step of the ODE
u' = sigma(W u + b)) and ``skip = 0``, ``h = 1`` for a plain dense layer (the
opening layer of a ResNet). Everything here is stateless: every function writes
into caller-provided buffers and allocates nothing of the size of a batch.

GEMMs go to BLAS through ``np.matmul(..., out=...)``; the elementwise work around
them (bias, activation, derivative, axpy, column sums for the bias gradient) is
fused into single-pass Numba kernels. ``tanh`` is evaluated by a branch-free
polynomial/doubling scheme (:func:`_tanh`) that LLVM vectorises: Numba's scalar
libm ``tanh`` is ~10x slower than NumPy's SIMD ufunc, which in turn could not be
fused with the bias and the axpy.

The *record* of a layer is what the forward step stores for the backward sweeps:
the activation value ``A = tanh(Z)`` for tanh (sigma' = 1 - A^2 needs no
transcendental), the pre-activation ``Z`` for every other activation.

Activations are passed as integer codes (:data:`ACTIVATIONS`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

IDENTITY, TANH, RELU, SMOOTH_RELU = 0, 1, 2, 3
ACTIVATIONS = {"identity": IDENTITY, "tanh": TANH, "relu": RELU, "smooth_relu": SMOOTH_RELU}
#: Half-width of the quadratic piece of the smoothed ReLU (Guenther et al. 2020):
#: sigma(z) = max(z, 0) for |z| > EPS and (z + EPS)^2 / (4 EPS) for |z| <= EPS.
SMOOTH_RELU_EPS = 0.1
#: Layers narrower than this use a flat activation loop (see ``_forward_fuse``).
_NARROW = 16


# ----------------------------------------------------------------------------
# scalar activation pieces (inlined into the loops below)
#
# Constants are cast to the type of the data (``_c(x, like)``) so that float32
# loops stay in float32: a bare literal would promote them to float64 and halve
# the SIMD width. All kernels use ``error_model='numpy'``: with Python's error
# model every division carries a zero check that stops LLVM from vectorising.
# ----------------------------------------------------------------------------
def _c(x, like):
    """``x`` as a constant of the floating type of ``like`` (Numba overload below)."""
    return x


@overload(_c, inline="always")
def _c_impl(x, like):
    if isinstance(like, types.Float) and like.bitwidth == 32:
        return lambda x, like: np.float32(x)
    return lambda x, like: np.float64(x)


@njit(inline="always", cache=True, error_model="numpy")
def _tanh(x):
    """tanh by a vectorisable expm1: a Taylor polynomial of expm1(2|x|/64) and six
    doublings expm1(2a) = expm1(a) (expm1(a) + 2); then tanh = e / (e + 2).

    Branch-free and free of cancellation (all terms positive); within a few ulp of
    libm's tanh in float64 (checked in the tests). NumPy's SIMD ``np.tanh`` cannot
    be fused with the bias and the axpy, this can.
    """
    ax = min(abs(x), _c(20.0, x))
    a = ax * _c(2.0 / 64.0, x)
    p = _c(1.0 / 20922789888000.0, x)
    p = p * a + _c(1.0 / 1307674368000.0, x)
    p = p * a + _c(1.0 / 87178291200.0, x)
    p = p * a + _c(1.0 / 6227020800.0, x)
    p = p * a + _c(1.0 / 479001600.0, x)
    p = p * a + _c(1.0 / 39916800.0, x)
    p = p * a + _c(1.0 / 3628800.0, x)
    p = p * a + _c(1.0 / 362880.0, x)
    p = p * a + _c(1.0 / 40320.0, x)
    p = p * a + _c(1.0 / 5040.0, x)
    p = p * a + _c(1.0 / 720.0, x)
    p = p * a + _c(1.0 / 120.0, x)
    p = p * a + _c(1.0 / 24.0, x)
    p = p * a + _c(1.0 / 6.0, x)
    p = p * a + _c(0.5, x)
    p = p * a + _c(1.0, x)
    e = p * a
    two = _c(2.0, x)
    e = e * (e + two)
    e = e * (e + two)
    e = e * (e + two)
    e = e * (e + two)
    e = e * (e + two)
    e = e * (e + two)
    return math.copysign(e / (e + two), x)


@njit(inline="always", cache=True, error_model="numpy")
def _sigma(z, act):
    zero = _c(0.0, z)
    eps = _c(SMOOTH_RELU_EPS, z)
    # z != z only for NaN, which must propagate (a run that overflowed has to be seen)
    if act == RELU:
        return z if (z > zero or z != z) else zero
    if act == SMOOTH_RELU:
        if z <= -eps:
            return zero
        if z >= eps:
            return z
        return (z + eps) * (z + eps) * _c(0.25 / SMOOTH_RELU_EPS, z)
    if act == TANH:
        return _tanh(z)
    return z


@njit(inline="always", cache=True, error_model="numpy")
def _dsigma(r, act):
    """sigma'(z) from the record r (A for tanh, Z otherwise)."""
    zero, one = _c(0.0, r), _c(1.0, r)
    eps = _c(SMOOTH_RELU_EPS, r)
    if act == RELU:
        return one if r > zero else zero
    if act == SMOOTH_RELU:
        if r <= -eps:
            return zero
        if r >= eps:
            return one
        return (r + eps) * _c(0.5 / SMOOTH_RELU_EPS, r)
    if act == TANH:
        return one - r * r
    return one


@njit(inline="always", cache=True, error_model="numpy")
def _d2sigma(r, act):
    """sigma''(z) from the record r (A for tanh, Z otherwise)."""
    zero, one = _c(0.0, r), _c(1.0, r)
    eps = _c(SMOOTH_RELU_EPS, r)
    if act == SMOOTH_RELU:
        if r <= -eps or r >= eps:
            return zero
        return _c(0.5 / SMOOTH_RELU_EPS, r)
    if act == TANH:
        return _c(-2.0, r) * r * (one - r * r)
    return zero


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
# layer steps (BLAS GEMMs + fused kernels); all outputs are caller buffers
# ----------------------------------------------------------------------------
def forward_step(U, W, b, h, act, S, out, skip=True):
    """One layer forward: ``out = skip*U + h*sigma(U W^T + b)``; ``S`` gets the record.

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
    np.matmul(U, W.T, out=S)
    _forward_fuse(U, S, b, S.dtype.type(h), act, skip, out)


def adjoint_step(L_next, U, W, S, h, act, D, L=None, gW=None, gb=None, skip=True):
    """Transpose of one layer's Jacobian applied to the adjoint ``L_next``.

    With ``D = h*sigma'(Z) * L_next`` (written to ``D``):
    ``L = skip*L_next + D W`` (adjoint of the input states, skipped when ``L`` is
    None), ``gW = D^T U`` and ``gb = sum_rows(D)`` (the parameter gradient,
    skipped when None).
    """
    h = S.dtype.type(h)
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
    are present.
    """
    h = S.dtype.type(h)
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
    ``tmpW`` (w_out, w_in) are scratch buffers used when the two-term sums are
    needed. Outputs left as None are not computed.
    """
    h = S.dtype.type(h)
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
# batched layer steps: k independent layers on stacks (k, s, w), e.g. the F-points
# at one offset of every MGRIT interval. Per slice the arithmetic is exactly that of
# the 2-D step (the same BLAS GEMM call per slice, the same fused loop), so a batched
# sweep reproduces the unbatched one bit for bit. Stacks may be strided views.
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
    if a.ndim != 3 or a.shape != shape:
        raise ValueError(f"{name} must be a stack of shape {shape}, got {a.shape}")


def forward_step_batch(U, W, b, h, act, S, out, skip=True):
    """:func:`forward_step` on ``k`` independent layers at once.

    ``out[q] = skip*U[q] + h*sigma(U[q] W[q]^T + b[q])`` for ``q < k``; ``S[q]``
    gets the record. One stacked GEMM (NumPy calls BLAS once per slice, with the
    arguments of the 2-D call) and one fused pass over all slices: each slice is
    bit-identical to :func:`forward_step`.

    Parameters
    ----------
    U : (k, s, w) array
        Input states (strided views allowed, rows of a slice contiguous).
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
    k, s, w = U.shape
    _check_stack("S", S, (k, s, W.shape[1]))
    _check_stack("out", out, (k, s, W.shape[1]))
    np.matmul(U, W.swapaxes(-1, -2), out=S)
    h = S.dtype.type(h)
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
    left as None are skipped. Each slice is bit-identical to :func:`adjoint_step`.

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
    k, s, w = L_next.shape
    _check_stack("D", D, (k, s, w))
    h = S.dtype.type(h)
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
