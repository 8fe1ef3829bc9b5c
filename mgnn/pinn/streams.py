"""Derivative streams of a ResNet's output with respect to its inputs.

A :class:`StreamLayout` says which input derivatives travel through the network
next to the value: first derivatives along the coordinates ``first`` and
diagonal second derivatives along ``second`` (a subset of ``first``). A stack of
``S = 1 + len(first) + len(second)`` streams is ordered as in
:mod:`mgnn.kernels.cpu_pinn`: the value, the first derivatives along
``second``'s coordinates, then along the other ``first`` coordinates, then the
second derivatives in the order of ``second``.

:class:`StreamWorkspace` holds the buffers of one sweep of a network over a stack
of ``s`` points (states ``V`` (N+1, S, s, w), records ``G`` (N, S, s, w), the
opening record, the output stack, adjoints and scratch): nothing is allocated
inside a sweep. :func:`output_streams` evaluates ``u`` and its derivatives at
points, through the opening layer, the residual layers (by a
:class:`StreamPropagation`) and the closing layer.
"""

from __future__ import annotations

import numpy as np

from mgnn._validation import check_array, check_positive_int
from mgnn.backend import get_namespace


def stream_kernels(xp):
    """The stream kernel module for the array namespace ``xp`` (CPU Numba or CuPy)."""
    if xp is np:
        from mgnn.kernels import cpu_pinn

        return cpu_pinn
    from mgnn.kernels import gpu_pinn  # pragma: no cover - needs CUDA

    return gpu_pinn  # pragma: no cover


class StreamLayout:
    """Which input derivatives of the output are propagated, and where they sit.

    Parameters
    ----------
    n_dims : int
        Number of coordinates of a point.
    first : sequence of int
        Coordinates whose first derivatives are needed.
    second : sequence of int
        Coordinates whose diagonal second derivatives are needed (each must
        also be in ``first``; added to it when missing).

    Examples
    --------
    >>> lay = StreamLayout(2, first=[0, 1], second=[0])   # u, u_x, u_t, u_xx
    >>> lay
    StreamLayout(n_dims=2, first=(0, 1), second=(0,), streams=4)
    >>> lay.d(1), lay.dd(0), lay.m2
    (2, 3, 1)
    """

    def __init__(self, n_dims, first=(), second=()):
        self.n_dims = check_positive_int(n_dims, "n_dims")
        first = [int(j) for j in first]
        second = [int(j) for j in second]
        for name, dims in (("first", first), ("second", second)):
            bad = [j for j in dims if not 0 <= j < self.n_dims]
            if bad:
                raise ValueError(f"{name} names coordinates {bad} outside 0..{self.n_dims - 1}")
            if len(set(dims)) != len(dims):
                raise ValueError(f"{name} lists a coordinate twice: {dims}")
        second = sorted(second)
        first = second + sorted(set(first) - set(second))
        self.second = tuple(second)
        self.first = tuple(first)
        self.m1, self.m2 = len(self.first), len(self.second)
        self.S = 1 + self.m1 + self.m2
        self._d = {j: 1 + i for i, j in enumerate(self.first)}
        self._dd = {j: 1 + self.m1 + i for i, j in enumerate(self.second)}

    def d(self, j):
        """Stream index of the first derivative along coordinate ``j``."""
        try:
            return self._d[j]
        except KeyError:
            raise KeyError(f"coordinate {j} has no first-derivative stream in {self}") from None

    def dd(self, j):
        """Stream index of the second derivative along coordinate ``j``."""
        try:
            return self._dd[j]
        except KeyError:
            raise KeyError(f"coordinate {j} has no second-derivative stream in {self}") from None

    def union(self, other):
        """The smallest layout holding the streams of both."""
        if other.n_dims != self.n_dims:
            raise ValueError("layouts of different dimension")
        return StreamLayout(self.n_dims, set(self.first) | set(other.first),
                            set(self.second) | set(other.second))

    def __eq__(self, other):
        return (isinstance(other, StreamLayout) and other.n_dims == self.n_dims
                and other.first == self.first and other.second == self.second)

    def __hash__(self):
        return hash((self.n_dims, self.first, self.second))

    def __repr__(self):
        return (f"StreamLayout(n_dims={self.n_dims}, first={self.first}, "
                f"second={self.second}, streams={self.S})")

    def coordinate_stack(self, X, out=None):
        """Input stack of raw coordinates: ``[X; e_j for j in first; 0 for second]``.

        The derivative of the point ``x`` along coordinate ``j`` is the unit
        vector ``e_j``, its second derivative zero.
        """
        n, d = X.shape
        xp = get_namespace(X)
        if out is None:
            out = xp.zeros((self.S, n, d), X.dtype)
        else:
            out[...] = 0
        out[0] = X
        for i, j in enumerate(self.first):
            out[1 + i, :, j] = 1
        return out


class StreamWorkspace:
    """Buffers for the sweeps of ``net`` over a stack of ``S`` streams at ``s`` points.

    Attributes: ``Vin`` (S, s, n_in) input stack, ``V`` (N+1, S, s, w) states,
    ``G`` (N, S, s, w) records, ``G_open`` (S, s, w), ``O`` (S, s, n_out)
    output stack, ``Obar`` its adjoint, ``L`` (2, S, s, w) ping-pong adjoints,
    ``D`` (S, s, w). Second-order buffers come with :meth:`ensure_second_order`.

    Examples
    --------
    >>> from mgnn.nets import ResNet
    >>> StreamWorkspace(ResNet(2, 8, 4, 1, task="regression"), StreamLayout(2, [0, 1], [0, 1]),
    ...                 100)
    StreamWorkspace(5 streams x 100 points x width 8, 4 layers, 0.4 MiB)
    """

    def __init__(self, net, layout, s, xp=np):
        w, N, m = net.width, net.depth, net.n_out
        dt = net.dtype
        S = layout.S
        self.layout = layout
        self.m2 = layout.m2
        self.s = s
        self.xp = xp
        self.Vin = xp.empty((S, s, net.n_in), dt)
        self.V = xp.empty((N + 1, S, s, w), dt)
        self.G = xp.empty((N, S, s, w), dt)
        self.G_open = xp.empty((S, s, w), dt)
        self.O = xp.empty((S, s, m), dt)
        self.Obar = xp.empty((S, s, m), dt)
        self.L = xp.empty((2, S, s, w), dt)
        self.D = xp.empty((S, s, w), dt)
        self.D_open = xp.empty((S, s, w), dt)
        self.second_order = False
        self._net = net

    def ensure_second_order(self):
        """Allocate the tangent and second-order adjoint buffers (once)."""
        if self.second_order:
            return
        net, xp, s, S = self._net, self.xp, self.s, self.layout.S
        w, N, m = net.width, net.depth, net.n_out
        dt = net.dtype
        self.dV = xp.empty((N + 1, S, s, w), dt)
        self.dG = xp.empty((N, S, s, w), dt)
        self.dG_open = xp.empty((S, s, w), dt)
        self.dL = xp.empty((2, S, s, w), dt)
        self.dD = xp.empty((S, s, w), dt)
        self.dO = xp.empty((S, s, m), dt)
        self.dObar = xp.empty((S, s, m), dt)
        self.tmp = xp.empty((S, s, w), dt)
        self.tmpO = xp.empty((S, s, m), dt)
        self.tmpW = xp.empty((w, w), dt)
        self.tmpWc = xp.empty((m, w), dt)
        self.tmpWo = xp.empty((w, net.n_in), dt)
        self.second_order = True

    def nbytes(self):
        return sum(v.nbytes for v in vars(self).values() if hasattr(v, "nbytes"))

    def __repr__(self):
        return (f"StreamWorkspace({self.layout.S} streams x {self.s} points x width "
                f"{self._net.width}, {self._net.depth} layers, {self.nbytes() / 2**20:.1f} MiB"
                f"{', second order' if self.second_order else ''})")


class StreamPropagation:
    """How stream stacks travel through the residual layers (the PINN twin of
    :class:`mgnn.propagation.Propagation`), on a :class:`StreamWorkspace`:

    ``forward(net, theta, ws)`` fills ``ws.V[1:]`` and ``ws.G`` from ``ws.V[0]``;
    ``backward(net, theta, ws, lam_N, grad_blocks)`` returns the adjoint of
    ``V[0]`` and writes every residual layer's gradient block;
    ``tangent(net, theta, dtheta, ws)`` fills ``ws.dV[1:]``, ``ws.dG`` from ``ws.dV[0]``;
    ``second_order_backward(net, theta, dtheta, ws, lam_N, dlam_N, hv_blocks)``
    returns ``(lam_0, dlam_0)`` and writes the Hessian-vector product blocks.
    """

    def forward(self, net, theta, ws):
        raise NotImplementedError

    def backward(self, net, theta, ws, lam_N, grad_blocks):
        raise NotImplementedError

    def tangent(self, net, theta, dtheta, ws):
        raise NotImplementedError

    def second_order_backward(self, net, theta, dtheta, ws, lam_N, dlam_N, hv_blocks):
        raise NotImplementedError


class SerialStreams(StreamPropagation):
    """The exact layer-by-layer sweep of the stream stacks.

    Examples
    --------
    >>> SerialStreams()
    SerialStreams()
    """

    def __repr__(self):
        return "SerialStreams()"

    def forward(self, net, theta, ws):
        k = stream_kernels(ws.xp)
        p = net.unpack(theta)
        V, G, h, act, m2 = ws.V, ws.G, net.h, net.act, ws.m2
        for n in range(net.depth):
            k.forward_step(V[n], p.W[n], p.b[n], h, act, m2, G[n], V[n + 1])

    def backward(self, net, theta, ws, lam_N, grad_blocks):
        k = stream_kernels(ws.xp)
        p = net.unpack(theta)
        w = net.width
        gW = grad_blocks[:, : w * w].reshape(net.depth, w, w)
        gb = grad_blocks[:, w * w:]
        L = ws.L
        cur = 0
        if lam_N is not L[0]:
            L[0][...] = lam_N
        for n in range(net.depth - 1, -1, -1):
            k.adjoint_step(L[cur], ws.V[n], p.W[n], ws.G[n], net.h, net.act, ws.m2, ws.D,
                           L=L[1 - cur], gW=gW[n], gb=gb[n])
            cur = 1 - cur
        return L[cur]

    def tangent(self, net, theta, dtheta, ws):
        k = stream_kernels(ws.xp)
        p, dp = net.unpack(theta), net.unpack(dtheta)
        for n in range(net.depth):
            k.tangent_step(ws.V[n], ws.dV[n], p.W[n], dp.W[n], dp.b[n], ws.G[n], net.h,
                           net.act, ws.m2, ws.dG[n], ws.dV[n + 1], T=ws.tmp)

    def second_order_backward(self, net, theta, dtheta, ws, lam_N, dlam_N, hv_blocks):
        k = stream_kernels(ws.xp)
        p, dp = net.unpack(theta), net.unpack(dtheta)
        w = net.width
        hW = hv_blocks[:, : w * w].reshape(net.depth, w, w)
        hb = hv_blocks[:, w * w:]
        L, dL = ws.L, ws.dL
        cur = 0
        if lam_N is not L[0]:
            L[0][...] = lam_N
        if dlam_N is not dL[0]:
            dL[0][...] = dlam_N
        for n in range(net.depth - 1, -1, -1):
            k.soadjoint_step(L[cur], dL[cur], ws.V[n], ws.dV[n], p.W[n], dp.W[n], ws.G[n],
                             ws.dG[n], net.h, net.act, ws.m2, ws.D, ws.dD,
                             L=L[1 - cur], dL=dL[1 - cur], dgW=hW[n], dgb=hb[n],
                             tmp=ws.tmp, tmpW=ws.tmpW)
            cur = 1 - cur
        return L[cur], dL[cur]


# ---------------------------------------------------------------------------
# whole-network sweeps on a workspace (opening, residual layers, closing)
# ---------------------------------------------------------------------------
def forward_sweep(net, theta, ws, propagation):
    """Open ``ws.Vin``, propagate, close: returns the output stack ``ws.O`` (S, s, n_out)."""
    xp = ws.xp
    k = stream_kernels(xp)
    p = net.unpack(theta)
    k.forward_step(ws.Vin, p.W_open, p.b_open, 1.0, net.act_open, ws.m2, ws.G_open, ws.V[0],
                   skip=False)
    propagation.forward(net, theta, ws)
    O = ws.O
    S, s, m = O.shape
    xp.matmul(ws.V[-1].reshape(S * s, -1), p.W_close.T, out=O.reshape(S * s, m))
    O[0] += p.b_close
    return O


def backward_sweep(net, theta, ws, propagation, Obar, grad):
    """Gradient of ``<Obar, O>`` (Obar the adjoint of the output stack) into ``grad``."""
    xp = ws.xp
    k = stream_kernels(xp)
    p, g = net.unpack(theta), net.unpack(grad)
    S, s, m = Obar.shape
    w = net.width
    xp.matmul(Obar.reshape(S * s, m).T, ws.V[-1].reshape(S * s, w), out=g.W_close)
    xp.sum(Obar[0], axis=0, out=g.b_close)
    lam_N = ws.L[0]
    xp.matmul(Obar.reshape(S * s, m), p.W_close, out=lam_N.reshape(S * s, w))
    lam_0 = propagation.backward(net, theta, ws, lam_N, g.blocks)
    k.adjoint_step(lam_0, ws.Vin, p.W_open, ws.G_open, 1.0, net.act_open, ws.m2, ws.D_open,
                   gW=g.W_open, gb=g.b_open, skip=False)


def tangent_sweep(net, theta, v, ws, propagation):
    """Directional derivative of the output stack along ``v``: returns ``ws.dO``."""
    xp = ws.xp
    k = stream_kernels(xp)
    p, dp = net.unpack(theta), net.unpack(v)
    k.tangent_step(ws.Vin, None, p.W_open, dp.W_open, dp.b_open, ws.G_open, 1.0, net.act_open,
                   ws.m2, ws.dG_open, ws.dV[0], skip=False)
    propagation.tangent(net, theta, v, ws)
    dO = ws.dO
    S, s, m = dO.shape
    xp.matmul(ws.dV[-1].reshape(S * s, -1), p.W_close.T, out=dO.reshape(S * s, m))
    xp.matmul(ws.V[-1].reshape(S * s, -1), dp.W_close.T, out=ws.tmpO.reshape(S * s, m))
    dO += ws.tmpO
    dO[0] += dp.b_close
    return dO


def second_order_sweep(net, theta, v, ws, propagation, Obar, dObar, hv):
    """Second-order adjoint sweep: with ``Obar`` the output adjoint and ``dObar`` its
    derivative along ``v`` (after :func:`tangent_sweep`), writes the derivative of the
    gradient ``d/de grad <Obar(theta + e v), O(theta + e v)>`` into ``hv``."""
    xp = ws.xp
    k = stream_kernels(xp)
    p, dp, hp = net.unpack(theta), net.unpack(v), net.unpack(hv)
    S, s, m = Obar.shape
    w = net.width
    Vr, dVr = ws.V[-1].reshape(S * s, w), ws.dV[-1].reshape(S * s, w)
    xp.matmul(dObar.reshape(S * s, m).T, Vr, out=hp.W_close)
    xp.matmul(Obar.reshape(S * s, m).T, dVr, out=ws.tmpWc)
    hp.W_close[...] += ws.tmpWc
    xp.sum(dObar[0], axis=0, out=hp.b_close)
    lam_N, dlam_N = ws.L[0], ws.dL[0]
    Ob, dOb = Obar.reshape(S * s, m), dObar.reshape(S * s, m)
    xp.matmul(Ob, p.W_close, out=lam_N.reshape(S * s, w))
    xp.matmul(dOb, p.W_close, out=dlam_N.reshape(S * s, w))
    xp.matmul(Ob, dp.W_close, out=ws.tmp.reshape(S * s, w))
    dlam_N += ws.tmp
    lam_0, dlam_0 = propagation.second_order_backward(net, theta, v, ws, lam_N, dlam_N,
                                                      hp.blocks)
    k.soadjoint_step(lam_0, dlam_0, ws.Vin, None, p.W_open, dp.W_open, ws.G_open, ws.dG_open,
                     1.0, net.act_open, ws.m2, ws.D_open, ws.dD, dgW=hp.W_open, dgb=hp.b_open,
                     skip=False)


def check_stream_activation(net, layout):
    """Refuse activations whose derivatives the streams would get wrong.

    ReLU has a jumping sigma': no derivative stream is meaningful. The smoothed
    ReLU has a continuous sigma' but a jumping sigma'': first-derivative streams
    are fine, second-derivative streams are not (the loss would jump in theta).
    """
    names = {net.activation}
    if layout.m1 and "relu" in names:
        raise ValueError("activation 'relu' has a discontinuous derivative: input-derivative "
                         "streams need tanh, 'smooth_relu' (first derivatives only) or "
                         "'identity'")
    if layout.m2 and "smooth_relu" in names:
        raise ValueError("activation 'smooth_relu' has a discontinuous second derivative: "
                         "second-derivative streams (this PDE has "
                         f"{layout.m2}) need tanh or 'identity'")


def output_streams(net, theta, X, first=(), second=(), propagation=None):
    """The network output and its input derivatives at the points ``X``.

    Parameters
    ----------
    net : ResNet
    theta : (n_params,) array
    X : (s, n_in) array
        Points (raw network inputs).
    first, second : sequences of int
        Input coordinates for first and diagonal second derivatives.
    propagation : StreamPropagation, optional
        Serial by default.

    Returns
    -------
    dict
        ``'u'`` (s, n_out), ``'d'`` {j: du/dx_j (s, n_out)}, ``'dd'`` {j: d2u/dx_j^2}.

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.nets import ResNet
    >>> net = ResNet(2, 4, 3, 1, task="regression")
    >>> theta = net.init(0)
    >>> X = np.array([[0.1, 0.2], [0.3, -0.4]])
    >>> out = output_streams(net, theta, X, first=[0, 1], second=[0, 1])
    >>> eps = 1e-6; E = np.array([eps, 0.0])
    >>> fd = (net.forward(theta, X + E) - net.forward(theta, X - E)) / (2 * eps)
    >>> bool(np.allclose(out["d"][0], fd, atol=1e-8))
    True
    """
    theta = net.check_theta(theta)
    xp = get_namespace(theta)
    X = check_array(X, "X", shape=(None, net.n_in), dtype=net.dtype, xp=xp)
    layout = StreamLayout(net.n_in, first, second)
    check_stream_activation(net, layout)
    ws = StreamWorkspace(net, layout, X.shape[0], xp)
    layout.coordinate_stack(X, ws.Vin)
    O = forward_sweep(net, theta, ws, SerialStreams() if propagation is None else propagation)
    return {"u": O[0].copy(), "d": {j: O[layout.d(j)].copy() for j in layout.first},
            "dd": {j: O[layout.dd(j)].copy() for j in layout.second}}
