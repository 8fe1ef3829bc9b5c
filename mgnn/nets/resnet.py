"""A residual network as an explicit parameter object over one flat vector ``theta``.

The network is the forward-Euler discretisation of the ODE u' = sigma(W(t) u + b(t))
on [0, T] with ``depth`` steps of size h = T/depth, between an opening layer and a
closing layer::

    U_0     = sigma_o(X W_open^T + b_open)                    (s x width)
    U_{n+1} = U_n + h sigma(U_n W_n^T + b_n),  n = 0..N-1     (residual layers)
    Y       = U_N W_close^T + b_close                         (s x n_out)

Layout of ``theta`` (all blocks C-ordered, contiguous)::

    [ W_open (width x n_in) | b_open (width) |
      layer 0: W_0 (width x width), b_0 (width) | ... | layer N-1 |
      W_close (n_out x width) | b_close (n_out) ]

Each residual layer's weights and bias sit together, so a contiguous range of
layers is a contiguous slice of ``theta`` (what a rank owns when layers are
distributed over MPI).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mgnn._validation import (
    check_array,
    check_choice,
    check_dtype,
    check_positive_int,
    check_scalar,
)
from mgnn.backend import column_sum, get_namespace, kernels_for
from mgnn.kernels.cpu import ACTIVATIONS

_IDENTITY = ACTIVATIONS["identity"]

TASKS = ("classification", "regression")
INIT_SCHEMES = ("glorot", "he", "layer_parallel", "box")


@dataclass(frozen=True)
class ResNetParams:
    """Zero-copy named views into a parameter vector (see :meth:`ResNet.unpack`)."""

    W_open: np.ndarray  # (width, n_in)
    b_open: np.ndarray  # (width,)
    W: np.ndarray  # (depth, width, width)
    b: np.ndarray  # (depth, width)
    W_close: np.ndarray  # (n_out, width)
    b_close: np.ndarray  # (n_out,)
    blocks: np.ndarray  # (depth, width*width + width): layer n's [W_n, b_n]
    opening: np.ndarray  # flat view of [W_open, b_open]
    residual: np.ndarray  # flat view of all residual layers
    closing: np.ndarray  # flat view of [W_close, b_close]


class Workspace:
    """Preallocated buffers for the sweeps of a network on a batch of ``s`` samples.

    Attributes hold every state ``U`` (depth+1, s, width), every layer record
    ``S`` (depth, s, width), the opening record, output and loss gradient, and
    scratch. The tangent / second-order buffers are created on first use by
    :meth:`ensure_second_order`. Nothing is allocated inside a sweep.
    """

    def __init__(self, net, s, xp=np):
        w, N, m = net.width, net.depth, net.n_out
        dt = net.dtype
        self.s = s
        self.xp = xp
        self.U = xp.empty((N + 1, s, w), dt)
        self.S = xp.empty((N, s, w), dt)
        self.S_open = xp.empty((s, w), dt)
        self.Y = xp.empty((s, m), dt)
        self.G = xp.empty((s, m), dt)
        self.L = xp.empty((2, s, w), dt)  # ping-pong adjoints
        self.D = xp.empty((s, w), dt)
        self.D_open = xp.empty((s, w), dt)
        self.second_order = False
        self._net = net

    def ensure_second_order(self):
        """Allocate the tangent and second-order adjoint buffers (once)."""
        if self.second_order:
            return
        net, xp, s = self._net, self.xp, self.s
        w, N, m = net.width, net.depth, net.n_out
        dt = net.dtype
        self.dU = xp.empty((N + 1, s, w), dt)
        self.dZ = xp.empty((N, s, w), dt)
        self.dZ_open = xp.empty((s, w), dt)
        self.dL = xp.empty((2, s, w), dt)
        self.dD = xp.empty((s, w), dt)
        self.dY = xp.empty((s, m), dt)
        self.dG = xp.empty((s, m), dt)
        self.tmp = xp.empty((s, w), dt)
        self.tmpW = xp.empty((w, w), dt)
        self.tmpWc = xp.empty((m, w), dt)
        self.tmpWo = xp.empty((w, net.n_in), dt)
        self.second_order = True

    def nbytes(self):
        return sum(v.nbytes for v in vars(self).values() if hasattr(v, "nbytes"))


class ResNet:
    """Residual network u_{n+1} = u_n + h sigma(W_n u_n + b_n) over a flat ``theta``.

    Parameters
    ----------
    n_in : int
        Number of input features.
    width : int
        Width of the residual layers (the state dimension of the ODE).
    depth : int
        Number of residual layers N (time steps); h = T / N.
    n_out : int
        Number of outputs (classes for classification).
    T : float
        Final time of the ODE.
    activation : {'tanh', 'relu', 'smooth_relu', 'identity'}
        Activation sigma of the residual layers.
    task : {'classification', 'regression'}
        Selects the default loss of an :class:`~mgnn.objective.Objective`
        (cross-entropy or mean squared error).
    opening_activation : bool
        Apply sigma in the opening layer (as the layer-parallel papers do).
    dtype : {float64, float32}
        Floating type of ``theta``, states and data.

    Examples
    --------
    >>> import numpy as np
    >>> net = ResNet(2, 8, 16, 5, T=5.0, activation="smooth_relu")
    >>> net
    ResNet(n_in=2, width=8, depth=16, n_out=5, T=5.0, h=0.3125,
           activation='smooth_relu', n_params=1221, dtype=float64)
    >>> theta = net.init(np.random.default_rng(0))
    >>> net.forward(theta, np.zeros((3, 2))).shape
    (3, 5)
    >>> p = net.unpack(theta)
    >>> p.W.shape, np.shares_memory(p.W, theta)
    ((16, 8, 8), True)
    """

    def __init__(self, n_in, width, depth, n_out, *, T=1.0, activation="tanh",
                 task="classification", opening_activation=True, dtype=np.float64):
        self.n_in = check_positive_int(n_in, "n_in")
        self.width = check_positive_int(width, "width")
        self.depth = check_positive_int(depth, "depth")
        self.n_out = check_positive_int(n_out, "n_out")
        self.T = check_scalar(T, "T", low=0.0, low_open=True)
        self.activation = check_choice(activation, "activation", tuple(ACTIVATIONS))
        self.act = ACTIVATIONS[activation]
        self.task = check_choice(task, "task", TASKS)
        self.opening_activation = bool(opening_activation)
        self.dtype = check_dtype(dtype)
        self.h = self.T / self.depth
        w = self.width
        self.block_size = w * w + w
        self.n_open = w * self.n_in + w
        self.n_residual = self.depth * self.block_size
        self.n_close = self.n_out * w + self.n_out
        self.n_params = self.n_open + self.n_residual + self.n_close
        self.act_open = self.act if self.opening_activation else ACTIVATIONS["identity"]

    # ------------------------------------------------------------------ layout
    def __repr__(self):
        return (f"ResNet(n_in={self.n_in}, width={self.width}, depth={self.depth}, "
                f"n_out={self.n_out}, T={self.T}, h={self.h:.6g}, "
                f"activation={self.activation!r}, n_params={self.n_params}, "
                f"dtype={self.dtype})")

    def with_depth(self, depth, T=None):
        """A network of the same kind with another depth (same T unless given)."""
        return ResNet(self.n_in, self.width, depth, self.n_out, T=self.T if T is None else T,
                      activation=self.activation, task=self.task,
                      opening_activation=self.opening_activation, dtype=self.dtype)

    def with_width(self, width):
        """A network of the same kind (depth, T, activation, ...) with another width."""
        return ResNet(self.n_in, width, self.depth, self.n_out, T=self.T,
                      activation=self.activation, task=self.task,
                      opening_activation=self.opening_activation, dtype=self.dtype)

    def flops(self, s):
        """Floating-point operations of one value-and-gradient sweep on ``s`` samples.

        Counts the GEMMs (2 flops per multiply-add): the forward product and the
        two backward products (input adjoint, weight gradient) of every residual
        layer, the opening layer's forward and weight gradient, and the closing
        layer's three products. Elementwise work is not counted.
        """
        w, d, m = self.width, self.n_in, self.n_out
        return 2 * s * (3 * self.depth * w * w + 2 * w * d + 3 * w * m)

    def layer_slice(self, n0, n1=None):
        """Slice of ``theta`` holding residual layers ``n0 .. n1-1`` (default: n0 only)."""
        n1 = n0 + 1 if n1 is None else n1
        if not 0 <= n0 <= n1 <= self.depth:
            raise ValueError(f"layer range [{n0}, {n1}) outside 0..{self.depth}")
        start = self.n_open + n0 * self.block_size
        return slice(start, start + (n1 - n0) * self.block_size)

    def check_theta(self, theta, name="theta"):
        """Validate a parameter vector: 1-D, length ``n_params``, this dtype, finite."""
        xp = get_namespace(theta)
        return check_array(theta, name, shape=(self.n_params,), dtype=self.dtype, xp=xp)

    def unpack(self, theta):
        """Named zero-copy views (:class:`ResNetParams`) into ``theta``."""
        if theta.ndim != 1 or theta.shape[0] != self.n_params:
            raise ValueError(f"theta must have shape ({self.n_params},), got {tuple(theta.shape)}")
        w, N, m, d = self.width, self.depth, self.n_out, self.n_in
        o = 0
        opening = theta[o:o + self.n_open]
        W_open = opening[: w * d].reshape(w, d)
        b_open = opening[w * d:]
        o += self.n_open
        residual = theta[o:o + self.n_residual]
        blocks = residual.reshape(N, self.block_size)
        W = blocks[:, : w * w].reshape(N, w, w)
        b = blocks[:, w * w:]
        o += self.n_residual
        closing = theta[o:]
        W_close = closing[: m * w].reshape(m, w)
        b_close = closing[m * w:]
        return ResNetParams(W_open, b_open, W, b, W_close, b_close, blocks,
                            opening, residual, closing)

    def init(self, rng, scheme="glorot", inner_scale=0.0, box=None):
        """Return a new parameter vector drawn from ``rng``.

        Parameters
        ----------
        rng : numpy.random.Generator or int
            Random source (an int is used as a seed).
        scheme : {'glorot', 'he', 'layer_parallel', 'box'}
            ``'glorot'``: uniform with limit sqrt(6/(fan_in+fan_out)) for every
            weight; ``'he'``: normal with variance 2/fan_in; ``'layer_parallel'``:
            the scheme of the layer-parallel papers - Glorot opening and closing
            layers and residual weights ``inner_scale * U(-1, 1)`` (zero by
            default). Biases are zero in these three schemes. ``'box'``: every
            hidden neuron's hyperplane cuts the box its inputs live in (Cyr,
            Gulian, Patel, Perego and Trask 2020); see :func:`box_layer` and the
            Notes. The closing layer is Glorot in every scheme.
        inner_scale : float
            Magnitude of the residual weights for ``'layer_parallel'``.
        box : (lo, hi), optional
            Only with ``scheme='box'``: the input box, ``lo`` and ``hi`` scalars or
            arrays of length ``n_in`` with ``lo < hi`` (default the unit box
            [0, 1]^n_in). Scale it to the data, e.g. ``(X.min(0), X.max(0))``.

        Notes
        -----
        Box initialisation. A neuron ``z = w . x + b`` on inputs from the box
        [0, m]^d gets a direction n drawn uniformly on the unit sphere and a point p
        drawn uniformly in the box; with ``p_max = m max(0, sign(n))`` (the corner
        of the box furthest along n) and ``k = 1 / ((p_max - p) . n)`` it is
        ``w = k n``, ``b = -k n . p``. Its hyperplane ``w . x + b = 0`` passes
        through p, so it cuts the box, and ``z`` is 1 at ``p_max``, its maximum
        over the box. With ReLU the neuron's output lies in [0, 1] on the box.

        - Opening layer: the box ``[lo, hi]`` is mapped affinely onto [0, 1]^n_in
          (``w_j = k n_j / (hi_j - lo_j)``), so the opened states lie in
          [0, 1]^width (with a ReLU opening activation).
        - Residual layer n = 0..N-1 (the seed paper's layer l = n + 2 of
          L = N + 1): inputs from [0, m_n]^width with ``m_n = (1 + h)^n``. The
          paper writes ``m = (1 + 1/(L-1))^(l-2)`` and divides k by L - 1 to keep
          the residual updates small; in mgnn that factor is the step h = T/N of
          ``u + h sigma(W u + b)``, so k is not divided again and, for T = 1 and
          ReLU, the network is the paper's. The boxes nest: an update adds at
          most h per component, so the states stay in [0, 1 + n h], inside
          [0, (1 + h)^n].

        The construction is exact for ReLU (and smoothed ReLU up to its
        smoothing); for other activations the hyperplanes still cut the boxes,
        but the states need not stay inside them.

        Examples
        --------
        >>> import numpy as np
        >>> net = ResNet(1, 4, 2, 1, activation="relu", task="regression")
        >>> theta = net.init(0, "box", box=(-1.0, 1.0))
        >>> p = net.unpack(theta)
        >>> z = np.array([[-1.0], [1.0]]) @ p.W_open.T + p.b_open   # at the box's ends
        >>> bool(np.all(z.max(axis=0) > 0.999999) and np.all(z.min(axis=0) <= 0))
        True
        """
        check_choice(scheme, "scheme", INIT_SCHEMES)
        inner_scale = check_scalar(inner_scale, "inner_scale", low=0.0)
        if box is not None and scheme != "box":
            raise ValueError(f"box has no effect with scheme={scheme!r}; use scheme='box'")
        rng = np.random.default_rng(rng)
        theta = np.zeros(self.n_params, dtype=self.dtype)
        p = self.unpack(theta)

        def draw(shape):
            fan_out, fan_in = shape[-2], shape[-1]
            if scheme == "he":
                return rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)
            lim = np.sqrt(6.0 / (fan_in + fan_out))
            return rng.uniform(-lim, lim, size=shape)

        if scheme == "box":
            lo, hi = self._check_box(box)
            p.W_open[...], p.b_open[...] = box_layer(rng, self.width, lo, hi)
            zero, w = np.zeros(self.width), self.width
            for n in range(self.depth):
                m = (1.0 + self.h) ** n
                p.W[n], p.b[n] = box_layer(rng, w, zero, np.full(w, m))
            p.W_close[...] = draw(p.W_close.shape)
            return theta
        p.W_open[...] = draw(p.W_open.shape)
        p.W_close[...] = draw(p.W_close.shape)
        if scheme == "layer_parallel":
            p.W[...] = inner_scale * rng.uniform(-1.0, 1.0, size=p.W.shape)
        else:
            p.W[...] = draw(p.W.shape)
        return theta

    def _check_box(self, box):
        if box is None:
            return np.zeros(self.n_in), np.ones(self.n_in)
        if not isinstance(box, (tuple, list)) or len(box) != 2:
            raise TypeError(f"box must be a pair (lo, hi), got {box!r}")
        lo, hi = (np.full(self.n_in, b, dtype=np.float64) if np.ndim(b) == 0
                  else np.asarray(b, dtype=np.float64) for b in box)
        check_array(lo, "box lo", shape=(self.n_in,))
        check_array(hi, "box hi", shape=(self.n_in,))
        if not np.all(lo < hi):
            raise ValueError(f"box must have lo < hi in every coordinate, got lo={lo}, hi={hi}")
        return lo, hi

    def workspace(self, s, xp=np):
        """Preallocated buffers for a batch of ``s`` samples."""
        return Workspace(self, check_positive_int(s, "s"), xp)

    def check_input(self, X, name="X"):
        xp = get_namespace(X)
        return check_array(X, name, shape=(None, self.n_in), dtype=self.dtype, xp=xp)

    # ------------------------------------------------------------ layer steps
    def open(self, theta, X, U0, S_open):
        """Opening layer: ``U0 = sigma_o(X W_open^T + b_open)`` (record in ``S_open``)."""
        p = self.unpack(theta)
        k = kernels_for(get_namespace(theta))
        k.forward_step(X, p.W_open, p.b_open, 1.0, self.act_open, S_open, U0, skip=False)

    def step(self, n, u_in, u_out, theta, h=None, record=None):
        """Residual layer ``n``: ``u_out = u_in + h sigma(u_in W_n^T + b_n)``.

        The in-place propagator that serial sweeps and MGRIT call. ``h`` defaults
        to the network's step (coarse MGRIT levels pass a larger one);
        ``record`` (s, width) receives the layer record needed by the backward
        sweeps (a scratch buffer when the caller does not keep it).
        """
        p = self.unpack(theta)
        k = kernels_for(get_namespace(u_in))
        if record is None:
            record = np.empty_like(u_out)
        k.forward_step(u_in, p.W[n], p.b[n], self.h if h is None else h, self.act,
                       record, u_out)

    def step_adjoint(self, n, lam_next, lam_out, theta, u_n, record, D, h=None,
                     grad_block=None):
        """Adjoint of residual layer ``n``: ``lam_out = lam_next + D W_n`` with
        ``D = h sigma'(z_n) lam_next``; when ``grad_block`` (a length
        ``block_size`` view into a gradient) is given, it receives layer ``n``'s
        weight and bias gradient ``[D^T u_n, sum_rows D]``.
        """
        p = self.unpack(theta)
        k = kernels_for(get_namespace(lam_next))
        w = self.width
        gW = gb = None
        if grad_block is not None:
            gW = grad_block[: w * w].reshape(w, w)
            gb = grad_block[w * w:]
        k.adjoint_step(lam_next, u_n, p.W[n], record, self.h if h is None else h, self.act,
                       D, L=lam_out, gW=gW, gb=gb)

    def step_tangent(self, n, u_n, du_n, du_out, theta, dtheta, record, dZ, T, h=None):
        """Tangent of residual layer ``n`` along (du_n, dtheta's layer-n block)."""
        p = self.unpack(theta)
        dp = self.unpack(dtheta)
        k = kernels_for(get_namespace(u_n))
        k.tangent_step(u_n, du_n, p.W[n], dp.W[n], dp.b[n], record, self.h if h is None else h,
                       self.act, dZ, du_out, T=T)

    # ---------------------------------------------------------------- sweeps
    def forward(self, theta, X):
        """Network output for the samples ``X`` (s, n_in): logits or predictions."""
        theta = self.check_theta(theta)
        X = self.check_input(X)
        xp = get_namespace(theta)
        ws = Workspace(self, X.shape[0], xp)
        from mgnn.propagation import SerialPropagation

        return self.output(theta, X, ws, SerialPropagation()).copy()

    def output(self, theta, X, ws, propagation):
        """Fill ``ws`` by a forward sweep with ``propagation`` and return ``ws.Y``."""
        self.open(theta, X, ws.U[0], ws.S_open)
        propagation.forward(self, theta, ws)
        p = self.unpack(theta)
        xp = ws.xp
        k = self._closing_kernels(ws.xp)
        if k is not None:  # ws.G (overwritten by the loss next) holds the record
            k.forward_step(ws.U[-1], p.W_close, p.b_close, 1.0, _IDENTITY, ws.G, ws.Y,
                           skip=False)
            return ws.Y
        xp.matmul(ws.U[-1], p.W_close.T, out=ws.Y)
        ws.Y += p.b_close
        return ws.Y

    def _closing_kernels(self, xp):
        """The kernel module when the closing layer runs on its fused kernels, else None.

        A narrow network's sweeps run on Numba's threads; a multi-threaded OpenBLAS
        call for the small closing GEMMs between them leaves OpenBLAS's workers
        spinning on the cores the next sweep needs (measured: a 2-thread
        value-and-gradient of ResNet(2, 32, 64, 5), float32, s = 5000, took 48 ms with
        the closing layer on OpenBLAS and 24 ms without any OpenBLAS call, against
        45 ms on one thread). So a closing layer that the fused kernels take (an
        identity activation with step 1: the same values as the GEMM, up to the
        rounding of the tiles' summation order) never calls BLAS. A kernel module opts in
        with ``CLOSING_ON_FUSED`` (the CPU's, and the CPU stand-in for CuPy, which must
        stay bit-identical to it); the GPU module keeps cuBLAS for the closing layer.
        """
        k = kernels_for(xp)
        uses = getattr(k, "uses_fused", None)
        if not getattr(k, "CLOSING_ON_FUSED", False) or uses is None \
                or not uses(self.width, self.n_out, self.dtype):
            return None
        return k

    def predict(self, theta, X):
        """Class labels (classification) or outputs (regression) for ``X``."""
        Y = self.forward(theta, X)
        if self.task == "classification":
            return Y.argmax(axis=1)
        return Y

    # ------------------------------------- opening and closing (the Objective protocol)
    # What :class:`~mgnn.objective.Objective` asks of a network around the residual
    # layers (which a Propagation sweeps): the closing layer's adjoint, tangent and
    # second-order adjoint, and the opening layer's. Another network class
    # (:class:`~mgnn.nets.ConvResNet`) implements the same methods.
    def close_adjoint(self, theta, ws, grad):
        """Closing layer's gradient (into ``grad``) from the loss gradient ``ws.G``;
        returns the adjoint ``lam_N`` of the last state (``ws.L[0]``)."""
        xp = ws.xp
        p, g = self.unpack(theta), self.unpack(grad)
        lam_N = ws.L[0]
        k = self._closing_kernels(ws.xp)
        if k is not None:
            # identity activation, step 1: the kernel's delta D = 1 * 1 * G is G itself,
            # so D may be G (rewritten with its own bits); the record (ws.Y) is not read
            k.adjoint_step(ws.G, ws.U[-1], p.W_close, ws.Y, 1.0, _IDENTITY, ws.G, L=lam_N,
                           gW=g.W_close, gb=g.b_close, skip=False)
            return lam_N
        xp.matmul(ws.G.T, ws.U[-1], out=g.W_close)
        column_sum(ws.G, g.b_close, xp)
        xp.matmul(ws.G, p.W_close, out=lam_N)
        return lam_N

    def close_local(self, closing, U_N, Y, bufs):
        """Output ``Y`` from the last states and the slice ``closing`` = [W_close, b_close]
        (NumPy; the layer-parallel objective's last rank), with the same kernels and
        bits as :meth:`output`; ``bufs["G"]`` (s, n_out) is scratch."""
        m, w = self.n_out, self.width
        Wc, bc = closing[: m * w].reshape(m, w), closing[m * w:]
        k = self._closing_kernels(np)
        if k is not None:
            k.forward_step(U_N, Wc, bc, 1.0, _IDENTITY, bufs["G"], Y, skip=False)
            return
        np.matmul(U_N, Wc.T, out=Y)
        Y += bc

    def close_adjoint_local(self, closing, U_N, G, gclosing, lam_N, bufs):
        """Closing layer's gradient (into ``gclosing``) and ``lam_N`` from ``G``, as
        :meth:`close_adjoint` computes them; after :meth:`close_local` (its output
        ``bufs["Y"]`` is the record, unread for the identity)."""
        m, w = self.n_out, self.width
        Wc = closing[: m * w].reshape(m, w)
        gW, gb = gclosing[: m * w].reshape(m, w), gclosing[m * w:]
        k = self._closing_kernels(np)
        if k is not None:
            k.adjoint_step(G, U_N, Wc, bufs["Y"], 1.0, _IDENTITY, G, L=lam_N, gW=gW, gb=gb,
                           skip=False)
            return
        np.matmul(G.T, U_N, out=gW)
        column_sum(G, gb, np)
        np.matmul(G, Wc, out=lam_N)

    def open_adjoint(self, theta, X, ws, lam_0, grad):
        """Opening layer's weight and bias gradient (into ``grad``) from ``lam_0``."""
        k = kernels_for(ws.xp)
        p, g = self.unpack(theta), self.unpack(grad)
        k.adjoint_step(lam_0, X, p.W_open, ws.S_open, 1.0, self.act_open, ws.D_open,
                       gW=g.W_open, gb=g.b_open, skip=False)

    def open_tangent(self, theta, v, X, ws):
        """Tangent of the opening layer along ``v``: fills ``ws.dU[0]``, ``ws.dZ_open``."""
        k = kernels_for(ws.xp)
        p, dp = self.unpack(theta), self.unpack(v)
        k.tangent_step(X, None, p.W_open, dp.W_open, dp.b_open, ws.S_open, 1.0, self.act_open,
                       ws.dZ_open, ws.dU[0], skip=False)

    def close_tangent(self, theta, v, ws):
        """Tangent of the output along ``v``: fills ``ws.dY`` (uses ``ws.G`` as scratch)."""
        xp = ws.xp
        p, dp = self.unpack(theta), self.unpack(v)
        k = self._closing_kernels(ws.xp)
        if k is not None:  # dY = dU W^T + U dW^T + db in one running sum; G as scratch
            k.tangent_step(ws.U[-1], ws.dU[-1], p.W_close, dp.W_close, dp.b_close, ws.Y, 1.0,
                           _IDENTITY, ws.G, ws.dY, skip=False)
            return
        xp.matmul(ws.dU[-1], p.W_close.T, out=ws.dY)
        xp.matmul(ws.U[-1], dp.W_close.T, out=ws.G)  # G as scratch
        ws.dY += ws.G
        ws.dY += dp.b_close

    def close_soadjoint(self, theta, v, ws, hv):
        """Closing layer's Hessian-vector product (into ``hv``) from ``ws.G`` and
        ``ws.dG``; returns ``(lam_N, dlam_N)``."""
        xp = ws.xp
        p, dp, h = self.unpack(theta), self.unpack(v), self.unpack(hv)
        k = self._closing_kernels(ws.xp)
        if k is not None:
            # identity, step 1: D = G and dD = 0 dY G + dG = dG exactly, so D and dD may
            # be G and dG (rewritten with their own bits); the record (ws.Y) is not read
            lam_N, dlam_N = ws.L[0], ws.dL[0]
            k.soadjoint_step(ws.G, ws.dG, ws.U[-1], ws.dU[-1], p.W_close, dp.W_close, ws.Y,
                             ws.dY, 1.0, _IDENTITY, ws.G, ws.dG, L=lam_N, dL=dlam_N,
                             dgW=h.W_close, dgb=h.b_close, skip=False)
            return lam_N, dlam_N
        xp.matmul(ws.dG.T, ws.U[-1], out=h.W_close)
        xp.matmul(ws.G.T, ws.dU[-1], out=ws.tmpWc)
        xp.add(h.W_close, ws.tmpWc, out=h.W_close)
        column_sum(ws.dG, h.b_close, xp)
        lam_N, dlam_N = ws.L[0], ws.dL[0]
        xp.matmul(ws.G, p.W_close, out=lam_N)
        xp.matmul(ws.dG, p.W_close, out=dlam_N)
        xp.matmul(ws.G, dp.W_close, out=ws.tmp)
        dlam_N += ws.tmp
        return lam_N, dlam_N

    def open_soadjoint(self, theta, v, X, ws, lam_0, dlam_0, hv):
        """Opening layer's Hessian-vector product (into ``hv``); its input is data."""
        k = kernels_for(ws.xp)
        p, dp, h = self.unpack(theta), self.unpack(v), self.unpack(hv)
        k.soadjoint_step(lam_0, dlam_0, X, None, p.W_open, dp.W_open, ws.S_open, ws.dZ_open,
                         1.0, self.act_open, ws.D_open, ws.dD, dgW=h.W_open, dgb=h.b_open,
                         skip=False)

    def features(self, ws):
        """The closing layer's input of the last forward sweep (``ws.U[-1]``)."""
        return ws.U[-1]


def box_layer(rng, n_neurons, lo, hi):
    """Weights and biases of a dense layer whose neurons' hyperplanes cut a box.

    For each neuron: a direction ``n`` uniform on the unit sphere and a point
    ``p`` uniform in the unit box; with ``p_max = max(0, sign(n))`` and
    ``k = 1 / ((p_max - p) . n)`` the neuron on the unit box is
    ``z = k n . (x - p)``, which vanishes at p and reaches its maximum 1 at
    ``p_max``. The box ``[lo, hi]`` is mapped onto the unit box, so the neuron on
    the input ``x`` has ``W = k n / (hi - lo)`` and ``b = -k n . (p + lo / (hi - lo))``.
    Seed: Cyr, Gulian, Patel, Perego, Trask (2020), "Robust training and
    initialization of deep neural networks: an adaptive basis viewpoint".

    Parameters
    ----------
    rng : numpy.random.Generator
    n_neurons : int
    lo, hi : (d,) arrays
        Corners of the input box, ``lo < hi``.

    Returns
    -------
    W : (n_neurons, d) array
    b : (n_neurons,) array

    Examples
    --------
    >>> import numpy as np
    >>> W, b = box_layer(np.random.default_rng(0), 3, np.zeros(2), np.full(2, 2.0))
    >>> corners = np.array([[0, 0], [0, 2], [2, 0], [2, 2]], float)
    >>> z = corners @ W.T + b
    >>> np.allclose(z.max(axis=0), 1.0), bool(np.all(z.min(axis=0) < 0))
    (True, True)
    """
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    d = lo.shape[0]
    n = rng.standard_normal((n_neurons, d))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    pt = rng.uniform(0.0, 1.0, size=(n_neurons, d))
    p_max = (n > 0).astype(np.float64)
    k = 1.0 / np.einsum("ij,ij->i", p_max - pt, n)
    scale = hi - lo
    W = (k[:, None] * n) / scale
    b = -k * np.einsum("ij,ij->i", n, pt + lo / scale)
    return W, b
