"""CPU kernels of the dense residual layer acting on *derivative streams* (PINNs).

A physics-informed loss needs the network output ``u(x)`` together with its
derivatives with respect to the inputs: first derivatives ``du/dx_j`` (Jacobian
columns) and the diagonal second derivatives ``d2u/dx_j^2`` (for a Laplacian,
``u_xx``, ``u_tt``). They are propagated through the layers in forward (Taylor)
mode alongside the value. For one layer with pre-activation ``Z = U W^T + b``:

    U'      = skip*U      + h sigma(Z)
    dU_j'   = skip*dU_j   + h sigma'(Z) * P_j,                   P_j = dU_j  W^T
    d2U_q'  = skip*d2U_q  + h (sigma''(Z) * P_q^2 + sigma'(Z) * Q_q),  Q_q = d2U_q W^T

(``*`` and powers elementwise). The streams of a layer are stacked in one array
``V`` of shape ``(S, s, w)``, ``S = 1 + m1 + m2``::

    V[0]                  the value U
    V[1 .. m1]            m1 first-derivative streams dU_j
    V[1+m1 .. m1+m2]      m2 second-derivative streams d2U_q, where stream q
                          belongs to the input direction of first stream 1+q
                          (so m2 <= m1: the directions with second derivatives
                          come first among the first-derivative streams)

so that ``[Z; P; Q] = V W^T`` is ONE GEMM of ``(S s) x w`` by ``w x w`` (bias
on stream 0 only), and everything elementwise is fused into one kernel: one
branch-free, vectorised loop per stream plane, compiled once per activation (the
activation's scalar derivative functions are compile-time arguments). The same
step with ``skip=False`` and ``h=1`` is the opening layer: its input stack holds
the input points and their derivatives with respect to the coordinates (unit
vectors for raw coordinates, the Jacobian and Hessian diagonal of a feature map
otherwise).

The *record* of a layer is ``G = V W^T`` with ``b`` added to stream 0 and stream 0
replaced by ``tanh(Z)`` for tanh (as in :mod:`mgnn.kernels.cpu`): it holds
everything the reverse sweeps need (``Z``, ``P``, ``Q``).

Reverse mode. With adjoints ``Lam`` (stream 0), ``M_j``, ``N_q`` of the outputs
and ``D = h Phi'(G)^T Lam'`` the adjoint of the stacked GEMM output::

    D[0]    = h (sigma' Lam + sum_j sigma'' P_j M_j
                 + sum_q (sigma''' P_q^2 + sigma'' Q_q) N_q)
    D[p_j]  = h (sigma' M_j + 2 sigma'' P_j N_j)      (second term if j has a q)
    D[q]    = h sigma' N_q

    L   = skip*L' + D W      (one GEMM)
    gW  = D^T V              (one GEMM over the stacked rows)
    gb  = column sums of D[0]

which is the exact gradient of any loss of u, grad u and the diagonal second
derivatives. The tangent (forward-mode in theta) and the second-order adjoint
(its reverse) follow by differentiating once more and need sigma''' and
sigma''''; they give exact Hessian-vector products.

Activations: tanh (smooth: every formula is exact), identity, and the smoothed
ReLU, whose sigma'' jumps at ``|z| = eps``: the first-derivative streams and
their gradients are exact (sigma' is continuous and piecewise linear), but a
loss of second derivatives is discontinuous in theta where some ``z`` crosses
``+-eps`` and its "gradient" (sigma''' = 0) ignores the jumps. The objectives in
:mod:`mgnn.pinn` refuse it for second-order PDEs. ReLU (sigma' jumps) is refused
for any derivative stream.
"""

from __future__ import annotations

import numpy as np
from mgnn.kernels.cpu import (  # noqa: F401  (re-exported activation codes)
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
from numba import njit


# ----------------------------------------------------------------------------
# activations, specialised: each is a tuple of inlined scalar functions
# (sigma, record, and the first to fourth derivatives) passed to the fused kernels
# as arguments, so Numba compiles one branch-free loop per activation (a runtime
# ``act`` test inside the loops stops LLVM from vectorising them). The derivatives
# take the record r (tanh(z) for tanh, z otherwise).
# ----------------------------------------------------------------------------
@njit(inline="always", cache=True, error_model="numpy")
def _tanh_sigma(z):
    return _tanh(z)


@njit(inline="always", cache=True, error_model="numpy")
def _tanh_record(z, a):
    return a


@njit(inline="always", cache=True, error_model="numpy")
def _tanh_d1(r):
    return _c(1.0, r) - r * r


@njit(inline="always", cache=True, error_model="numpy")
def _tanh_d2(r):
    return _c(-2.0, r) * r * (_c(1.0, r) - r * r)


@njit(inline="always", cache=True, error_model="numpy")
def _tanh_d3(r):
    a2 = r * r
    return (_c(1.0, r) - a2) * (_c(6.0, r) * a2 - _c(2.0, r))


@njit(inline="always", cache=True, error_model="numpy")
def _tanh_d4(r):
    a2 = r * r
    return _c(8.0, r) * r * (_c(2.0, r) - _c(3.0, r) * a2) * (_c(1.0, r) - a2)


@njit(inline="always", cache=True, error_model="numpy")
def _z_record(z, a):
    return z


@njit(inline="always", cache=True, error_model="numpy")
def _zero(r):
    return _c(0.0, r)


@njit(inline="always", cache=True, error_model="numpy")
def _one(r):
    return _c(1.0, r)


@njit(inline="always", cache=True, error_model="numpy")
def _identity_sigma(z):
    return z


@njit(inline="always", cache=True, error_model="numpy")
def _relu_sigma(z):
    return _sigma(z, RELU)


@njit(inline="always", cache=True, error_model="numpy")
def _relu_d1(r):
    return _dsigma(r, RELU)


@njit(inline="always", cache=True, error_model="numpy")
def _srelu_sigma(z):
    return _sigma(z, SMOOTH_RELU)


@njit(inline="always", cache=True, error_model="numpy")
def _srelu_d1(r):
    return _dsigma(r, SMOOTH_RELU)


@njit(inline="always", cache=True, error_model="numpy")
def _srelu_d2(r):
    return _d2sigma(r, SMOOTH_RELU)


#: activation code -> (sigma, record, d1, d2, d3, d4); the third and fourth
#: derivatives of the piecewise polynomial activations are 0 almost everywhere
#: (their jumps are not represented: see the module docstring).
_FUNCS = {
    TANH: (_tanh_sigma, _tanh_record, _tanh_d1, _tanh_d2, _tanh_d3, _tanh_d4),
    IDENTITY: (_identity_sigma, _z_record, _one, _zero, _zero, _zero),
    RELU: (_relu_sigma, _z_record, _relu_d1, _zero, _zero, _zero),
    SMOOTH_RELU: (_srelu_sigma, _z_record, _srelu_d1, _srelu_d2, _zero, _zero),
}


def _funcs(act):
    try:
        return _FUNCS[act]
    except (KeyError, TypeError):
        raise ValueError(f"unknown activation code {act!r}; expected one of "
                         f"{sorted(_FUNCS)}") from None


@njit(cache=True, error_model="numpy")
def _derivatives(Z, order, out, sig, rec, d1, d2, d3, d4):
    z = Z.reshape(-1)
    o = out.reshape(-1)
    for i in range(z.size):
        x = z[i]
        a = sig(x)
        r = rec(x, a)
        if order == 0:
            o[i] = a
        elif order == 1:
            o[i] = d1(r)
        elif order == 2:
            o[i] = d2(r)
        elif order == 3:
            o[i] = d3(r)
        else:
            o[i] = d4(r)


def activation_derivatives(Z, act, order, out):
    """``out = sigma^(order)(Z)`` elementwise for order 0..4, from the pre-activation.

    Examples
    --------
    >>> import numpy as np
    >>> out = np.empty(2)
    >>> activation_derivatives(np.array([0.0, 1.0]), ACTIVATIONS["tanh"], 2, out)
    >>> bool(np.allclose(out, [0.0, -2 * np.tanh(1.0) / np.cosh(1.0) ** 2]))
    True
    """
    if not 0 <= int(order) <= 4:
        raise ValueError(f"order must be 0..4, got {order}")
    _derivatives(Z, int(order), out, *_funcs(act))


# ----------------------------------------------------------------------------
# fused elementwise kernels: every stream is a flat plane of n = s*w elements and
# every loop runs over one plane (contiguous, branch-free, vectorised)
# ----------------------------------------------------------------------------
@njit(cache=True, error_model="numpy")
def _add_bias(G0, b):
    s, w = G0.shape
    for i in range(s):
        for k in range(w):
            G0[i, k] += b[k]


@njit(cache=True, error_model="numpy")
def _colsum(A, out):
    s, w = A.shape
    for k in range(w):
        out[k] = 0.0
    for i in range(s):
        for k in range(w):
            out[k] += A[i, k]


@njit(cache=True, error_model="numpy")
def _forward_fuse(V, G, h, m2, out, sig, rec, d1, d2):
    # G holds [Z; P; Q] (bias added) on entry and the record on exit; out = V + h Phi(G)
    # (V is ``out`` itself, zeroed, for a layer without skip)
    S = G.shape[0]
    n = G.shape[1] * G.shape[2]
    m1 = S - 1 - m2
    g = G.reshape(S, n)
    o = out.reshape(S, n)
    v = V.reshape(S, n)
    g0, o0, v0 = g[0], o[0], v[0]
    for e in range(n):
        z = g0[e]
        a = sig(z)
        g0[e] = rec(z, a)
        o0[e] = v0[e] + h * a
    for j in range(1, m1 + 1):
        gj, oj, vj = g[j], o[j], v[j]
        for e in range(n):
            oj[e] = vj[e] + h * d1(g0[e]) * gj[e]
    for q in range(m2):
        gp, gq, oq, vq = g[1 + q], g[1 + m1 + q], o[1 + m1 + q], v[1 + m1 + q]
        for e in range(n):
            r = g0[e]
            P = gp[e]
            oq[e] = vq[e] + h * (d2(r) * P * P + d1(r) * gq[e])


@njit(cache=True, error_model="numpy")
def _delta_fuse(G, Ln, h, m2, D, d1, d2, d3):
    S = G.shape[0]
    n = G.shape[1] * G.shape[2]
    m1 = S - 1 - m2
    g = G.reshape(S, n)
    ln = Ln.reshape(S, n)
    d = D.reshape(S, n)
    g0, d0, l0 = g[0], d[0], ln[0]
    for e in range(n):
        d0[e] = h * d1(g0[e]) * l0[e]
    for j in range(1, m1 + 1):
        gj, lj, dj = g[j], ln[j], d[j]
        for e in range(n):
            r = g0[e]
            M = h * lj[e]
            d0[e] += d2(r) * gj[e] * M
            dj[e] = d1(r) * M
    for q in range(m2):
        gp, gq, lq = g[1 + q], g[1 + m1 + q], ln[1 + m1 + q]
        dp, dq = d[1 + q], d[1 + m1 + q]
        for e in range(n):
            r = g0[e]
            P = gp[e]
            N = h * lq[e]
            c2 = d2(r)
            d0[e] += (d3(r) * P * P + c2 * gq[e]) * N
            dp[e] += _c(2.0, r) * c2 * P * N
            dq[e] = d1(r) * N


@njit(cache=True, error_model="numpy")
def _tangent_fuse(dG, db, G, dV, h, m2, out, d1, d2, d3):
    # dG <- dG + [db; 0] (the tangent record); out = dV + h Phi'(G) dG
    # (dV is ``out`` itself, zeroed, for a layer without skip or without a stack direction)
    S = G.shape[0]
    s, w = G.shape[1], G.shape[2]
    n = s * w
    m1 = S - 1 - m2
    for i in range(s):
        for k in range(w):
            dG[0, i, k] += db[k]
    g = G.reshape(S, n)
    dg = dG.reshape(S, n)
    o = out.reshape(S, n)
    dv = dV.reshape(S, n)
    g0, dg0, o0, dv0 = g[0], dg[0], o[0], dv[0]
    for e in range(n):
        o0[e] = dv0[e] + h * d1(g0[e]) * dg0[e]
    for j in range(1, m1 + 1):
        gj, dgj, oj, dvj = g[j], dg[j], o[j], dv[j]
        for e in range(n):
            r = g0[e]
            oj[e] = dvj[e] + h * (d2(r) * dg0[e] * gj[e] + d1(r) * dgj[e])
    for q in range(m2):
        gp, dgp = g[1 + q], dg[1 + q]
        gq, dgq, oq, dvq = g[1 + m1 + q], dg[1 + m1 + q], o[1 + m1 + q], dv[1 + m1 + q]
        for e in range(n):
            r = g0[e]
            dz = dg0[e]
            P = gp[e]
            c2 = d2(r)
            oq[e] = dvq[e] + h * (d3(r) * dz * P * P + _c(2.0, r) * c2 * P * dgp[e]
                                  + c2 * dz * gq[e] + d1(r) * dgq[e])


@njit(cache=True, error_model="numpy")
def _soadjoint_fuse(G, dG, Ln, dLn, h, m2, D, dD, d1, d2, d3, d4):
    # D = h Phi'(G)^T Ln ; dD = h [ (d/dG Phi'(G)^T Ln) dG + Phi'(G)^T dLn ]
    S = G.shape[0]
    n = G.shape[1] * G.shape[2]
    m1 = S - 1 - m2
    g = G.reshape(S, n)
    dg = dG.reshape(S, n)
    ln = Ln.reshape(S, n)
    dln = dLn.reshape(S, n)
    d = D.reshape(S, n)
    dd = dD.reshape(S, n)
    g0, dg0, d0, dd0, l0, dl0 = g[0], dg[0], d[0], dd[0], ln[0], dln[0]
    for e in range(n):
        r = g0[e]
        c1 = d1(r)
        L0 = h * l0[e]
        d0[e] = c1 * L0
        dd0[e] = d2(r) * dg0[e] * L0 + c1 * h * dl0[e]
    for j in range(1, m1 + 1):
        gj, dgj, lj, dlj, dj, ddj = g[j], dg[j], ln[j], dln[j], d[j], dd[j]
        for e in range(n):
            r = g0[e]
            c1 = d1(r)
            c2 = d2(r)
            dz = dg0[e]
            P = gj[e]
            M = h * lj[e]
            dM = h * dlj[e]
            d0[e] += c2 * P * M
            dj[e] = c1 * M
            dd0[e] += d3(r) * dz * P * M + c2 * (dgj[e] * M + P * dM)
            ddj[e] = c2 * dz * M + c1 * dM
    for q in range(m2):
        gp, dgp, dp, ddp = g[1 + q], dg[1 + q], d[1 + q], dd[1 + q]
        k = 1 + m1 + q
        gq, dgq, lq, dlq, dq, ddq = g[k], dg[k], ln[k], dln[k], d[k], dd[k]
        for e in range(n):
            r = g0[e]
            c1 = d1(r)
            c2 = d2(r)
            c3 = d3(r)
            two = _c(2.0, r)
            dz = dg0[e]
            P = gp[e]
            dP = dgp[e]
            Q = gq[e]
            N = h * lq[e]
            dN = h * dlq[e]
            d0[e] += (c3 * P * P + c2 * Q) * N
            dp[e] += two * c2 * P * N
            dq[e] = c1 * N
            dd0[e] += ((d4(r) * dz * P * P + two * c3 * P * dP + c3 * dz * Q + c2 * dgq[e]) * N
                       + (c3 * P * P + c2 * Q) * dN)
            ddp[e] += two * (c3 * dz * P * N + c2 * dP * N + c2 * P * dN)
            ddq[e] = c2 * dz * N + c1 * dN


# ----------------------------------------------------------------------------
# layer steps on stream stacks (BLAS GEMMs + fused kernels); outputs are buffers
# ----------------------------------------------------------------------------
def _rows(A):
    """The stack (S, s, w) as the matrix (S*s, w) of all stream rows (a view)."""
    return A.reshape(-1, A.shape[-1])


def forward_step(V, W, b, h, act, m2, G, out, skip=True):
    """One layer on a stream stack: value, first and second derivative streams.

    ``G = V W^T`` (one GEMM over all ``S s`` rows) with ``b`` added to stream 0,
    then the fused elementwise pass (module docstring); ``G`` keeps the record.

    Parameters
    ----------
    V : (S, s, w_in) array
        Input stack, C-contiguous: value, ``m1 = S-1-m2`` first-derivative
        streams, ``m2`` second-derivative streams.
    W : (w_out, w_in) array
        Weights; ``b`` : (w_out,) bias.
    h : float
        Step size (1 for the opening layer).
    act : int
        Activation code (:data:`ACTIVATIONS`).
    m2 : int
        Number of second-derivative streams.
    G : (S, s, w_out) array
        Output: the layer record.
    out : (S, s, w_out) array
        Output stack (may not alias ``V``).
    skip : bool
        Residual connection (needs ``w_in == w_out``); False for the opening layer.

    Examples
    --------
    One tanh neuron on a scalar input: u = tanh(w x + b), with u' and u''.

    >>> import numpy as np
    >>> x = np.array([0.3]); w, b = 1.7, -0.2
    >>> V = np.array([x, [1.0], [0.0]]).reshape(3, 1, 1)   # x, dx/dx, d2x/dx2
    >>> G = np.empty((3, 1, 1)); out = np.empty((3, 1, 1))
    >>> forward_step(V, np.array([[w]]), np.array([b]), 1.0, ACTIVATIONS["tanh"], 1,
    ...              G, out, skip=False)
    >>> a = np.tanh(w * x + b)
    >>> bool(np.allclose(out.ravel(), [a[0], w * (1 - a[0]**2),
    ...                                 -2 * w**2 * a[0] * (1 - a[0]**2)]))
    True
    """
    sig, rec, d1, d2, _, _ = _funcs(act)
    np.matmul(_rows(V), W.T, out=_rows(G))
    _add_bias(G[0], b)
    if not skip:
        out[...] = 0
    _forward_fuse(V if skip else out, G, G.dtype.type(h), m2, out, sig, rec, d1, d2)


def adjoint_step(L_next, V, W, G, h, act, m2, D, L=None, gW=None, gb=None, skip=True):
    """Transpose of one layer's Jacobian (in the stack and in W, b) applied to ``L_next``.

    ``D = h Phi'(G)^T L_next`` (written to ``D``, shape (S, s, w_out)); then
    ``L = skip*L_next + D W`` (input-stack adjoint, skipped when None),
    ``gW = D^T V`` over all stream rows and ``gb`` = column sums of ``D[0]``
    (skipped when None).
    """
    _, _, d1, d2, d3, _ = _funcs(act)
    _delta_fuse(G, L_next, G.dtype.type(h), m2, D, d1, d2, d3)
    if L is not None:
        np.matmul(_rows(D), W, out=_rows(L))
        if skip:
            np.add(L, L_next, out=L)
    if gW is not None:
        np.matmul(_rows(D).T, _rows(V), out=gW)
    if gb is not None:
        _colsum(D[0], gb)


def tangent_step(V, dV, W, dW, db, G, h, act, m2, dG, out, T=None, skip=True):
    """Directional derivative of one layer along ``(dV, dW, db)``.

    ``dG = dV W^T + V dW^T + [db; 0]`` (the tangent record, written to ``dG``) and
    ``out = skip*dV + h Phi'(G) dG``. ``dV=None``: no stack direction (the
    opening layer, whose input is data); ``dW=None``: no weight direction. ``T``
    (S, s, w_out) is scratch, needed when both are present.
    """
    _, _, d1, d2, d3, _ = _funcs(act)
    if dV is not None:
        np.matmul(_rows(dV), W.T, out=_rows(dG))
    elif dW is None:
        dG[...] = 0
    if dW is not None:
        if dV is None:
            np.matmul(_rows(V), dW.T, out=_rows(dG))
        else:
            np.matmul(_rows(V), dW.T, out=_rows(T))
            np.add(dG, T, out=dG)
    plain = skip and dV is not None
    if not plain:
        out[...] = 0
    _tangent_fuse(dG, db, G, dV if plain else out, G.dtype.type(h), m2, out, d1, d2, d3)


def soadjoint_step(L_next, dL_next, V, dV, W, dW, G, dG, h, act, m2, D, dD,
                   L=None, dL=None, gW=None, gb=None, dgW=None, dgb=None,
                   tmp=None, tmpW=None, skip=True):
    """Second-order adjoint of one layer: the derivative of :func:`adjoint_step`
    along the tangent ``(dV, dW, dG)`` and the adjoint direction ``dL_next``::

        D   = h Phi'(G)^T L_next,  dD = h [(Phi''(G) dG)^T L_next + Phi'(G)^T dL_next]
        L   = skip*L_next  + D W
        dL  = skip*dL_next + dD W + D dW
        gW  = D^T V,   gb  = colsum D[0]
        dgW = dD^T V + D^T dV,   dgb = colsum dD[0]

    ``dV=None`` / ``dW=None`` are zero directions; ``tmp`` (S, s, w_in) and
    ``tmpW`` (w_out, w_in) are scratch for the two-term sums. Outputs left as
    None are not computed.
    """
    _, _, d1, d2, d3, d4 = _funcs(act)
    _soadjoint_fuse(G, dG, L_next, dL_next, G.dtype.type(h), m2, D, dD, d1, d2, d3, d4)
    if L is not None:
        np.matmul(_rows(D), W, out=_rows(L))
        if skip:
            np.add(L, L_next, out=L)
    if dL is not None:
        np.matmul(_rows(dD), W, out=_rows(dL))
        if skip:
            np.add(dL, dL_next, out=dL)
        if dW is not None:
            np.matmul(_rows(D), dW, out=_rows(tmp))
            np.add(dL, tmp, out=dL)
    if gW is not None:
        np.matmul(_rows(D).T, _rows(V), out=gW)
    if gb is not None:
        _colsum(D[0], gb)
    if dgW is not None:
        np.matmul(_rows(dD).T, _rows(V), out=dgW)
        if dV is not None:
            np.matmul(_rows(D).T, _rows(dV), out=tmpW)
            np.add(dgW, tmpW, out=dgW)
    if dgb is not None:
        _colsum(dD[0], dgb)


def flops(S, s, w_in, w_out):
    """GEMM flops of one layer's forward step on a stack of ``S`` streams (2 per
    multiply-add); the adjoint with gradient costs twice this."""
    return 2 * S * s * w_in * w_out
