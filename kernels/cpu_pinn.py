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
on stream 0 only), and everything elementwise is fused into one pass over the
streams, in cache-sized chunks. The same step with ``skip=False`` and ``h=1`` is
the opening layer: its input stack holds the input points and their derivatives
with respect to the coordinates (unit vectors for raw coordinates, the Jacobian
and Hessian diagonal of a feature map otherwise).

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
)
from numba import njit

#: Elements of one stream handled per chunk of the fused loops (all streams of a
#: chunk stay in L1/L2 while the chunk is processed).
_CHUNK = 512


@njit(inline="always", cache=True, error_model="numpy")
def _d3sigma(r, act):
    """sigma'''(z) from the record r (A = tanh(z) for tanh, Z otherwise); 0 a.e. for
    the piecewise polynomial activations."""
    if act == TANH:
        a2 = r * r
        return (_c(1.0, r) - a2) * (_c(6.0, r) * a2 - _c(2.0, r))
    return _c(0.0, r)


@njit(inline="always", cache=True, error_model="numpy")
def _d4sigma(r, act):
    """sigma''''(z) from the record r; 0 a.e. except for tanh."""
    if act == TANH:
        a2 = r * r
        return _c(8.0, r) * r * (_c(2.0, r) - _c(3.0, r) * a2) * (_c(1.0, r) - a2)
    return _c(0.0, r)


@njit(cache=True, error_model="numpy")
def activation_derivatives(Z, act, order, out):
    """``out = sigma^(order)(Z)`` elementwise for order 0..4, from the pre-activation."""
    z = Z.reshape(-1)
    o = out.reshape(-1)
    for i in range(z.size):
        x = z[i]
        if order == 0:
            o[i] = _sigma(x, act)
            continue
        r = _sigma(x, act) if act == TANH else x
        if order == 1:
            o[i] = _dsigma(r, act)
        elif order == 2:
            o[i] = _d2sigma(r, act)
        elif order == 3:
            o[i] = _d3sigma(r, act)
        else:
            o[i] = _d4sigma(r, act)


# ----------------------------------------------------------------------------
# fused elementwise kernels (streams flattened to (S, s*w), processed in chunks)
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
def _forward_fuse(V, G, h, act, m2, skip, out):
    # G holds [Z; P; Q] (bias added) on entry and the record on exit
    S = G.shape[0]
    n = G.shape[1] * G.shape[2]
    m1 = S - 1 - m2
    keep_a = act == TANH
    g = G.reshape(S, n)
    o = out.reshape(S, n)
    v = V.reshape(S, n) if skip else o
    for c0 in range(0, n, _CHUNK):
        c1 = min(c0 + _CHUNK, n)
        if skip:
            for e in range(c0, c1):
                z = g[0, e]
                a = _sigma(z, act)
                g[0, e] = a if keep_a else z
                o[0, e] = v[0, e] + h * a
        else:
            for e in range(c0, c1):
                z = g[0, e]
                a = _sigma(z, act)
                g[0, e] = a if keep_a else z
                o[0, e] = h * a
        for j in range(1, m1 + 1):
            if skip:
                for e in range(c0, c1):
                    o[j, e] = v[j, e] + h * _dsigma(g[0, e], act) * g[j, e]
            else:
                for e in range(c0, c1):
                    o[j, e] = h * _dsigma(g[0, e], act) * g[j, e]
        for q in range(m2):
            jp = 1 + q
            jq = 1 + m1 + q
            for e in range(c0, c1):
                r = g[0, e]
                P = g[jp, e]
                val = h * (_d2sigma(r, act) * P * P + _dsigma(r, act) * g[jq, e])
                o[jq, e] = v[jq, e] + val if skip else val


@njit(cache=True, error_model="numpy")
def _delta_fuse(G, Ln, h, act, m2, D):
    S = G.shape[0]
    n = G.shape[1] * G.shape[2]
    m1 = S - 1 - m2
    g = G.reshape(S, n)
    ln = Ln.reshape(S, n)
    d = D.reshape(S, n)
    for c0 in range(0, n, _CHUNK):
        c1 = min(c0 + _CHUNK, n)
        for e in range(c0, c1):
            d[0, e] = h * _dsigma(g[0, e], act) * ln[0, e]
        for j in range(1, m1 + 1):
            for e in range(c0, c1):
                r = g[0, e]
                M = h * ln[j, e]
                d[0, e] += _d2sigma(r, act) * g[j, e] * M
                d[j, e] = _dsigma(r, act) * M
        for q in range(m2):
            jp = 1 + q
            jq = 1 + m1 + q
            for e in range(c0, c1):
                r = g[0, e]
                P = g[jp, e]
                N = h * ln[jq, e]
                d2 = _d2sigma(r, act)
                d[0, e] += (_d3sigma(r, act) * P * P + d2 * g[jq, e]) * N
                d[jp, e] += _c(2.0, r) * d2 * P * N
                d[jq, e] = _dsigma(r, act) * N


@njit(cache=True, error_model="numpy")
def _tangent_fuse(dG, T, db, G, dV, h, act, m2, skip, want_T, out):
    # dG <- dG + T + [db; 0] (the tangent record); out = skip*dV + h Phi'(G) dG
    S = G.shape[0]
    s, w = G.shape[1], G.shape[2]
    n = s * w
    m1 = S - 1 - m2
    if want_T:
        dgf = dG.reshape(-1)
        tf = T.reshape(-1)
        for e in range(dgf.size):
            dgf[e] += tf[e]
    for i in range(s):
        for k in range(w):
            dG[0, i, k] += db[k]
    g = G.reshape(S, n)
    dg = dG.reshape(S, n)
    o = out.reshape(S, n)
    dv = dV.reshape(S, n) if skip else o
    for c0 in range(0, n, _CHUNK):
        c1 = min(c0 + _CHUNK, n)
        for e in range(c0, c1):
            val = h * _dsigma(g[0, e], act) * dg[0, e]
            o[0, e] = dv[0, e] + val if skip else val
        for j in range(1, m1 + 1):
            for e in range(c0, c1):
                r = g[0, e]
                val = h * (_d2sigma(r, act) * dg[0, e] * g[j, e] + _dsigma(r, act) * dg[j, e])
                o[j, e] = dv[j, e] + val if skip else val
        for q in range(m2):
            jp = 1 + q
            jq = 1 + m1 + q
            for e in range(c0, c1):
                r = g[0, e]
                dz = dg[0, e]
                P = g[jp, e]
                d2 = _d2sigma(r, act)
                val = h * (_d3sigma(r, act) * dz * P * P + _c(2.0, r) * d2 * P * dg[jp, e]
                           + d2 * dz * g[jq, e] + _dsigma(r, act) * dg[jq, e])
                o[jq, e] = dv[jq, e] + val if skip else val


@njit(cache=True, error_model="numpy")
def _soadjoint_fuse(G, dG, Ln, dLn, h, act, m2, D, dD):
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
    two = _c(2.0, h)
    for c0 in range(0, n, _CHUNK):
        c1 = min(c0 + _CHUNK, n)
        for e in range(c0, c1):
            r = g[0, e]
            d1 = _dsigma(r, act)
            L0 = h * ln[0, e]
            d[0, e] = d1 * L0
            dd[0, e] = _d2sigma(r, act) * dg[0, e] * L0 + d1 * h * dln[0, e]
        for j in range(1, m1 + 1):
            for e in range(c0, c1):
                r = g[0, e]
                d1 = _dsigma(r, act)
                d2 = _d2sigma(r, act)
                dz = dg[0, e]
                P = g[j, e]
                M = h * ln[j, e]
                dM = h * dln[j, e]
                d[0, e] += d2 * P * M
                d[j, e] = d1 * M
                dd[0, e] += _d3sigma(r, act) * dz * P * M + d2 * (dg[j, e] * M + P * dM)
                dd[j, e] = d2 * dz * M + d1 * dM
        for q in range(m2):
            jp = 1 + q
            jq = 1 + m1 + q
            for e in range(c0, c1):
                r = g[0, e]
                d1 = _dsigma(r, act)
                d2 = _d2sigma(r, act)
                d3 = _d3sigma(r, act)
                dz = dg[0, e]
                P = g[jp, e]
                dP = dg[jp, e]
                Q = g[jq, e]
                N = h * ln[jq, e]
                dN = h * dln[jq, e]
                d[0, e] += (d3 * P * P + d2 * Q) * N
                d[jp, e] += two * d2 * P * N
                d[jq, e] = d1 * N
                dd[0, e] += ((_d4sigma(r, act) * dz * P * P + two * d3 * P * dP + d3 * dz * Q
                              + d2 * dg[jq, e]) * N + (d3 * P * P + d2 * Q) * dN)
                dd[jp, e] += two * (d3 * dz * P * N + d2 * dP * N + d2 * P * dN)
                dd[jq, e] = d2 * dz * N + d1 * dN


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
    np.matmul(_rows(V), W.T, out=_rows(G))
    _add_bias(G[0], b)
    _forward_fuse(V, G, G.dtype.type(h), act, m2, skip, out)


def adjoint_step(L_next, V, W, G, h, act, m2, D, L=None, gW=None, gb=None, skip=True):
    """Transpose of one layer's Jacobian (in the stack and in W, b) applied to ``L_next``.

    ``D = h Phi'(G)^T L_next`` (written to ``D``, shape (S, s, w_out)); then
    ``L = skip*L_next + D W`` (input-stack adjoint, skipped when None),
    ``gW = D^T V`` over all stream rows and ``gb`` = column sums of ``D[0]``
    (skipped when None).
    """
    _delta_fuse(G, L_next, G.dtype.type(h), act, m2, D)
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
    h = G.dtype.type(h)
    if dV is not None:
        np.matmul(_rows(dV), W.T, out=_rows(dG))
    elif dW is None:
        dG[...] = 0
    want_T = dW is not None
    if want_T:
        if dV is None:
            np.matmul(_rows(V), dW.T, out=_rows(dG))
            want_T = False
        else:
            np.matmul(_rows(V), dW.T, out=_rows(T))
    _tangent_fuse(dG, T if want_T else dG, db, G, dV if dV is not None else dG, h, act, m2,
                  skip and dV is not None, want_T, out)


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
    _soadjoint_fuse(G, dG, L_next, dL_next, G.dtype.type(h), act, m2, D, dD)
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
