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
    FUSED_MAX_WIDTH,
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
from mgnn.kernels.cpu_tiles import gemm_rows, gemm_tn_acc
from numba import njit, prange


# ----------------------------------------------------------------------------
# tanh's derivatives from its record r = tanh(z) (polynomials in r)
# ----------------------------------------------------------------------------
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
def _zero(r):
    return _c(0.0, r)


_CODES = frozenset(ACTIVATIONS.values())


def _check_act(act):
    if act not in _CODES:
        raise ValueError(f"unknown activation code {act!r}; expected one of {sorted(_CODES)}")


@njit(cache=True, error_model="numpy")
def _derivatives(Z, act, order, out):
    z = Z.reshape(-1)
    o = out.reshape(-1)
    for i in range(z.size):
        x = z[i]
        a = _sigma(x, act)
        r = a if act == TANH else x
        if order == 0:
            o[i] = a
        elif order == 1:
            o[i] = _dsigma(r, act)
        elif order == 2:
            o[i] = _d2sigma(r, act)
        elif order == 3:
            o[i] = _tanh_d3(r) if act == TANH else _zero(r)
        else:
            o[i] = _tanh_d4(r) if act == TANH else _zero(r)


def activation_derivatives(Z, act, order, out):
    """``out = sigma^(order)(Z)`` elementwise for order 0..4, from the pre-activation.

    The third and fourth derivatives of the piecewise polynomial activations are 0
    almost everywhere (their jumps are not represented: see the module docstring).

    Examples
    --------
    >>> import numpy as np
    >>> out = np.empty(2)
    >>> activation_derivatives(np.array([0.0, 1.0]), ACTIVATIONS["tanh"], 2, out)
    >>> bool(np.allclose(out, [0.0, -2 * np.tanh(1.0) / np.cosh(1.0) ** 2]))
    True
    """
    _check_act(act)
    if not 0 <= int(order) <= 4:
        raise ValueError(f"order must be 0..4, got {order}")
    _derivatives(Z, act, int(order), out)


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
def _zero_fill(A):
    a = A.reshape(-1)
    for i in range(a.size):
        a[i] = 0.0


@njit(cache=True, error_model="numpy")
def _colsum(A, out):
    s, w = A.shape
    for k in range(w):
        out[k] = 0.0
    for i in range(s):
        for k in range(w):
            out[k] += A[i, k]


# The fused kernels come in two forms with the same loops: ``*_tanh`` (tanh's
# derivatives as polynomials of the record: branch-free loops that LLVM vectorises)
# and ``*_any`` (the other activations through the runtime-``act`` scalar functions of
# :mod:`mgnn.kernels.cpu`; their third and fourth derivatives vanish almost
# everywhere). One form for all would test ``act`` inside the loops, which stops
# vectorisation (2.5x slower at w = 64), and passing the derivative functions as
# Numba arguments costs ~25 us of argument typing per call. Both forms are checked
# against finite differences by the tests; the step functions below send tanh to
# ``*_tanh`` and every other activation to ``*_any``.
@njit(cache=True, error_model="numpy")
def _forward_fuse_tanh(V, G, b, h, m2, skip, out):
    # G holds [Z; P; Q] on entry (the bias is added here) and the record on exit;
    # out = V + h Phi(G), or h Phi(G) without skip (then V is ``out`` itself, zeroed)
    _add_bias(G[0], b)
    if not skip:
        _zero_fill(out)
        V = out
    S = G.shape[0]
    n = G.shape[1] * G.shape[2]
    m1 = S - 1 - m2
    g = G.reshape(S, n)
    o = out.reshape(S, n)
    v = V.reshape(S, n)
    g0, o0, v0 = g[0], o[0], v[0]
    for e in range(n):
        z = g0[e]
        a = _tanh(z)
        g0[e] = a
        o0[e] = v0[e] + h * a
    for j in range(1, m1 + 1):
        gj, oj, vj = g[j], o[j], v[j]
        for e in range(n):
            oj[e] = vj[e] + h * _tanh_d1(g0[e]) * gj[e]
    for q in range(m2):
        gp, gq, oq, vq = g[1 + q], g[1 + m1 + q], o[1 + m1 + q], v[1 + m1 + q]
        for e in range(n):
            r = g0[e]
            P = gp[e]
            oq[e] = vq[e] + h * (_tanh_d2(r) * P * P + _tanh_d1(r) * gq[e])


@njit(cache=True, error_model="numpy")
def _delta_fuse_tanh(G, Ln, h, m2, D):
    S = G.shape[0]
    n = G.shape[1] * G.shape[2]
    m1 = S - 1 - m2
    g = G.reshape(S, n)
    ln = Ln.reshape(S, n)
    d = D.reshape(S, n)
    g0, d0, l0 = g[0], d[0], ln[0]
    for e in range(n):
        d0[e] = h * _tanh_d1(g0[e]) * l0[e]
    for j in range(1, m1 + 1):
        gj, lj, dj = g[j], ln[j], d[j]
        for e in range(n):
            r = g0[e]
            M = h * lj[e]
            d0[e] += _tanh_d2(r) * gj[e] * M
            dj[e] = _tanh_d1(r) * M
    for q in range(m2):
        gp, gq, lq = g[1 + q], g[1 + m1 + q], ln[1 + m1 + q]
        dp, dq = d[1 + q], d[1 + m1 + q]
        for e in range(n):
            r = g0[e]
            P = gp[e]
            N = h * lq[e]
            c2 = _tanh_d2(r)
            d0[e] += (_tanh_d3(r) * P * P + c2 * gq[e]) * N
            dp[e] += _c(2.0, r) * c2 * P * N
            dq[e] = _tanh_d1(r) * N


@njit(cache=True, error_model="numpy")
def _tangent_fuse_tanh(dG, db, G, dV, h, m2, plain, out):
    # dG <- dG + [db; 0] (the tangent record); out = dV + h Phi'(G) dG, or h Phi'(G) dG
    # (``plain`` False: no skip or no stack direction; then dV is ``out``, zeroed)
    if not plain:
        _zero_fill(out)
        dV = out
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
        o0[e] = dv0[e] + h * _tanh_d1(g0[e]) * dg0[e]
    for j in range(1, m1 + 1):
        gj, dgj, oj, dvj = g[j], dg[j], o[j], dv[j]
        for e in range(n):
            r = g0[e]
            oj[e] = dvj[e] + h * (_tanh_d2(r) * dg0[e] * gj[e] + _tanh_d1(r) * dgj[e])
    for q in range(m2):
        gp, dgp = g[1 + q], dg[1 + q]
        gq, dgq, oq, dvq = g[1 + m1 + q], dg[1 + m1 + q], o[1 + m1 + q], dv[1 + m1 + q]
        for e in range(n):
            r = g0[e]
            dz = dg0[e]
            P = gp[e]
            c2 = _tanh_d2(r)
            oq[e] = dvq[e] + h * (_tanh_d3(r) * dz * P * P + _c(2.0, r) * c2 * P * dgp[e]
                                  + c2 * dz * gq[e] + _tanh_d1(r) * dgq[e])


@njit(cache=True, error_model="numpy")
def _soadjoint_fuse_tanh(G, dG, Ln, dLn, h, m2, D, dD):
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
        c1 = _tanh_d1(r)
        L0 = h * l0[e]
        d0[e] = c1 * L0
        dd0[e] = _tanh_d2(r) * dg0[e] * L0 + c1 * h * dl0[e]
    for j in range(1, m1 + 1):
        gj, dgj, lj, dlj, dj, ddj = g[j], dg[j], ln[j], dln[j], d[j], dd[j]
        for e in range(n):
            r = g0[e]
            c1 = _tanh_d1(r)
            c2 = _tanh_d2(r)
            dz = dg0[e]
            P = gj[e]
            M = h * lj[e]
            dM = h * dlj[e]
            d0[e] += c2 * P * M
            dj[e] = c1 * M
            dd0[e] += _tanh_d3(r) * dz * P * M + c2 * (dgj[e] * M + P * dM)
            ddj[e] = c2 * dz * M + c1 * dM
    for q in range(m2):
        gp, dgp, dp, ddp = g[1 + q], dg[1 + q], d[1 + q], dd[1 + q]
        k = 1 + m1 + q
        gq, dgq, lq, dlq, dq, ddq = g[k], dg[k], ln[k], dln[k], d[k], dd[k]
        for e in range(n):
            r = g0[e]
            c1 = _tanh_d1(r)
            c2 = _tanh_d2(r)
            c3 = _tanh_d3(r)
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
            c4 = _tanh_d4(r)
            dd0[e] += ((c4 * dz * P * P + two * c3 * P * dP + c3 * dz * Q + c2 * dgq[e]) * N
                       + (c3 * P * P + c2 * Q) * dN)
            ddp[e] += two * (c3 * dz * P * N + c2 * dP * N + c2 * P * dN)
            ddq[e] = c2 * dz * N + c1 * dN


@njit(cache=True, error_model="numpy")
def _forward_fuse_any(V, G, b, h, act, m2, skip, out):
    # G holds [Z; P; Q] on entry (the bias is added here) and the record on exit;
    # out = V + h Phi(G), or h Phi(G) without skip (then V is ``out`` itself, zeroed)
    _add_bias(G[0], b)
    if not skip:
        _zero_fill(out)
        V = out
    S = G.shape[0]
    n = G.shape[1] * G.shape[2]
    m1 = S - 1 - m2
    g = G.reshape(S, n)
    o = out.reshape(S, n)
    v = V.reshape(S, n)
    g0, o0, v0 = g[0], o[0], v[0]
    for e in range(n):
        z = g0[e]
        a = _sigma(z, act)
        g0[e] = z if act != TANH else a
        o0[e] = v0[e] + h * a
    for j in range(1, m1 + 1):
        gj, oj, vj = g[j], o[j], v[j]
        for e in range(n):
            oj[e] = vj[e] + h * _dsigma(g0[e], act) * gj[e]
    for q in range(m2):
        gp, gq, oq, vq = g[1 + q], g[1 + m1 + q], o[1 + m1 + q], v[1 + m1 + q]
        for e in range(n):
            r = g0[e]
            P = gp[e]
            oq[e] = vq[e] + h * (_d2sigma(r, act) * P * P + _dsigma(r, act) * gq[e])


@njit(cache=True, error_model="numpy")
def _delta_fuse_any(G, Ln, h, act, m2, D):
    S = G.shape[0]
    n = G.shape[1] * G.shape[2]
    m1 = S - 1 - m2
    g = G.reshape(S, n)
    ln = Ln.reshape(S, n)
    d = D.reshape(S, n)
    g0, d0, l0 = g[0], d[0], ln[0]
    for e in range(n):
        d0[e] = h * _dsigma(g0[e], act) * l0[e]
    for j in range(1, m1 + 1):
        gj, lj, dj = g[j], ln[j], d[j]
        for e in range(n):
            r = g0[e]
            M = h * lj[e]
            d0[e] += _d2sigma(r, act) * gj[e] * M
            dj[e] = _dsigma(r, act) * M
    for q in range(m2):
        gp, gq, lq = g[1 + q], g[1 + m1 + q], ln[1 + m1 + q]
        dp, dq = d[1 + q], d[1 + m1 + q]
        for e in range(n):
            r = g0[e]
            P = gp[e]
            N = h * lq[e]
            c2 = _d2sigma(r, act)
            d0[e] += (_zero(r) * P * P + c2 * gq[e]) * N
            dp[e] += _c(2.0, r) * c2 * P * N
            dq[e] = _dsigma(r, act) * N


@njit(cache=True, error_model="numpy")
def _tangent_fuse_any(dG, db, G, dV, h, act, m2, plain, out):
    # dG <- dG + [db; 0] (the tangent record); out = dV + h Phi'(G) dG, or h Phi'(G) dG
    # (``plain`` False: no skip or no stack direction; then dV is ``out``, zeroed)
    if not plain:
        _zero_fill(out)
        dV = out
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
        o0[e] = dv0[e] + h * _dsigma(g0[e], act) * dg0[e]
    for j in range(1, m1 + 1):
        gj, dgj, oj, dvj = g[j], dg[j], o[j], dv[j]
        for e in range(n):
            r = g0[e]
            oj[e] = dvj[e] + h * (_d2sigma(r, act) * dg0[e] * gj[e] + _dsigma(r, act) * dgj[e])
    for q in range(m2):
        gp, dgp = g[1 + q], dg[1 + q]
        gq, dgq, oq, dvq = g[1 + m1 + q], dg[1 + m1 + q], o[1 + m1 + q], dv[1 + m1 + q]
        for e in range(n):
            r = g0[e]
            dz = dg0[e]
            P = gp[e]
            c2 = _d2sigma(r, act)
            oq[e] = dvq[e] + h * (_zero(r) * dz * P * P + _c(2.0, r) * c2 * P * dgp[e]
                                  + c2 * dz * gq[e] + _dsigma(r, act) * dgq[e])


@njit(cache=True, error_model="numpy")
def _soadjoint_fuse_any(G, dG, Ln, dLn, h, act, m2, D, dD):
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
        c1 = _dsigma(r, act)
        L0 = h * l0[e]
        d0[e] = c1 * L0
        dd0[e] = _d2sigma(r, act) * dg0[e] * L0 + c1 * h * dl0[e]
    for j in range(1, m1 + 1):
        gj, dgj, lj, dlj, dj, ddj = g[j], dg[j], ln[j], dln[j], d[j], dd[j]
        for e in range(n):
            r = g0[e]
            c1 = _dsigma(r, act)
            c2 = _d2sigma(r, act)
            dz = dg0[e]
            P = gj[e]
            M = h * lj[e]
            dM = h * dlj[e]
            d0[e] += c2 * P * M
            dj[e] = c1 * M
            dd0[e] += _zero(r) * dz * P * M + c2 * (dgj[e] * M + P * dM)
            ddj[e] = c2 * dz * M + c1 * dM
    for q in range(m2):
        gp, dgp, dp, ddp = g[1 + q], dg[1 + q], d[1 + q], dd[1 + q]
        k = 1 + m1 + q
        gq, dgq, lq, dlq, dq, ddq = g[k], dg[k], ln[k], dln[k], d[k], dd[k]
        for e in range(n):
            r = g0[e]
            c1 = _dsigma(r, act)
            c2 = _d2sigma(r, act)
            c3 = _zero(r)
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
            c4 = _zero(r)
            dd0[e] += ((c4 * dz * P * P + two * c3 * P * dP + c3 * dz * Q + c2 * dgq[e]) * N
                       + (c3 * P * P + c2 * Q) * dN)
            ddp[e] += two * (c3 * dz * P * N + c2 * dP * N + c2 * P * dN)
            ddq[e] = c2 * dz * N + c1 * dN


# ----------------------------------------------------------------------------
# layer steps on stream stacks (BLAS GEMMs + fused kernels); outputs are buffers
# ----------------------------------------------------------------------------
def _rows(A):
    """The stack (S, s, w) as the matrix (S*s, w) of all stream rows (a view)."""
    return A.reshape(-1, A.shape[-1])


# Narrow layers: the register-tiled GEMMs of :mod:`mgnn.kernels.cpu_tiles` beat BLAS
# on the tall-skinny products of the stream stacks (one thread, S s = 10000 rows,
# float64: A W^T 1.7x faster at w = 16, 1.4x at 32, 1.2x at 64; D^T V 1.6x faster
# at w = 16, slower from w = 32 on, and 25x slower than BLAS on the opening layer's
# D^T X with 2 columns: scalar tails). Row blocks of A W^T are independent (threads
# split them; same bits for any thread count); D^T V sums over rows in one call.
_ROW_BLOCK = 512
_TN_MAX_WIDTH = 16


@njit(cache=True, parallel=True, error_model="numpy")
def _gemm_rows_par(A, B, C, bias):
    n = A.shape[0]
    nb = (n + _ROW_BLOCK - 1) // _ROW_BLOCK
    for k in prange(nb):
        gemm_rows(A, B, C, k * _ROW_BLOCK, min(n, (k + 1) * _ROW_BLOCK), bias, False,
                  A, B, False)


def _tiled(A, B):
    w = max(A.shape[1], B.shape[1])
    return (A.dtype == B.dtype and w <= FUSED_MAX_WIDTH.get(A.dtype, 0)
            and A.flags.c_contiguous)


def _matmul(A, B, C):
    """``C = A @ B`` (2-D; ``B`` may be a transposed view): tiles for narrow layers."""
    if _tiled(A, B) and C.flags.c_contiguous:
        _gemm_rows_par(A, np.ascontiguousarray(B), C, C[0])
    else:
        np.matmul(A, B, out=C)


def _matmul_tn(D, V, C):
    """``C = D^T V`` summed over the rows of D and V (2-D, C-contiguous)."""
    if (_tiled(D, V) and V.flags.c_contiguous and C.flags.c_contiguous
            and max(D.shape[1], V.shape[1]) <= _TN_MAX_WIDTH and V.shape[1] % 8 == 0):
        C[...] = 0
        gemm_tn_acc(D, V, D, V, False, C, 0, D.shape[0])
    else:
        np.matmul(D.T, V, out=C)


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
    _check_act(act)
    _matmul(_rows(V), W.T, _rows(G))
    h = G.dtype.type(h)
    Vs = V if skip else out  # (unused without skip)
    if act == TANH:
        _forward_fuse_tanh(Vs, G, b, h, m2, skip, out)
    else:
        _forward_fuse_any(Vs, G, b, h, act, m2, skip, out)


def adjoint_step(L_next, V, W, G, h, act, m2, D, L=None, gW=None, gb=None, skip=True):
    """Transpose of one layer's Jacobian (in the stack and in W, b) applied to ``L_next``.

    ``D = h Phi'(G)^T L_next`` (written to ``D``, shape (S, s, w_out)); then
    ``L = skip*L_next + D W`` (input-stack adjoint, skipped when None),
    ``gW = D^T V`` over all stream rows and ``gb`` = column sums of ``D[0]``
    (skipped when None).
    """
    _check_act(act)
    if act == TANH:
        _delta_fuse_tanh(G, L_next, G.dtype.type(h), m2, D)
    else:
        _delta_fuse_any(G, L_next, G.dtype.type(h), act, m2, D)
    if L is not None:
        _matmul(_rows(D), W, _rows(L))
        if skip:
            np.add(L, L_next, out=L)
    if gW is not None:
        _matmul_tn(_rows(D), _rows(V), gW)
    if gb is not None:
        _colsum(D[0], gb)


def tangent_step(V, dV, W, dW, db, G, h, act, m2, dG, out, T=None, skip=True):
    """Directional derivative of one layer along ``(dV, dW, db)``.

    ``dG = dV W^T + V dW^T + [db; 0]`` (the tangent record, written to ``dG``) and
    ``out = skip*dV + h Phi'(G) dG``. ``dV=None``: no stack direction (the
    opening layer, whose input is data); ``dW=None``: no weight direction. ``T``
    (S, s, w_out) is scratch, needed when both are present.
    """
    _check_act(act)
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
    dVs = dV if plain else out  # (unused when not plain)
    h = G.dtype.type(h)
    if act == TANH:
        _tangent_fuse_tanh(dG, db, G, dVs, h, m2, plain, out)
    else:
        _tangent_fuse_any(dG, db, G, dVs, h, act, m2, plain, out)


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
    _check_act(act)
    if act == TANH:
        _soadjoint_fuse_tanh(G, dG, L_next, dL_next, G.dtype.type(h), m2, D, dD)
    else:
        _soadjoint_fuse_any(G, dG, L_next, dL_next, G.dtype.type(h), act, m2, D, dD)
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
