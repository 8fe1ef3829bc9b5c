"""A convolutional residual network as an explicit parameter object over one flat ``theta``.

The network is the forward-Euler discretisation of u' = sigma(K(t) * u + b(t)) on
[0, T], where u(t) is a stack of ``channels`` images on an ``H x W`` grid and
``K(t) *`` a 3x3 convolution (zero "same" padding, stride 1)::

    U_0     = sigma_o(K_open * X + b_open)                 (C_in -> c channels)
    U_{n+1} = U_n + h sigma(K_n * U_n + b_n),  n = 0..N-1  (residual layers, c -> c)
    F       = mean over pixels of U_N   (pooling='average';  (s, c))
            = U_N                       (pooling='flatten';  (s, H*W*c))
    Y       = F W_close^T + b_close                        (s x n_out)

Images are rows of a 2-D array, channels last: sample ``i``, pixel ``(y, x)``,
channel ``ch`` at ``X[i, (y*W + x)*C_in + ch]``; so ``X.reshape(s, H, W, C_in)``
is the batch of images, and a batch of one-channel images ``(s, H, W)`` is
``images.reshape(s, H*W)``. The states ``U_n`` are ``(s, H*W*c)`` the same way,
which makes ``width = H*W*c`` the state dimension of the ODE, as for
:class:`~mgnn.nets.ResNet`.

Layout of ``theta`` (C-ordered, contiguous blocks; kernels HWIO)::

    [ K_open (3, 3, C_in, c) | b_open (c) |
      layer 0: K_0 (3, 3, c, c), b_0 (c) | ... | layer N-1 |
      W_close (n_out, n_features) | b_close (n_out) ]

Each residual layer's kernel and bias sit together (``blocks[n]``), so a range of
layers is a contiguous slice of ``theta`` and the depth transfers, the smoothness
regulariser and the layer-range bookkeeping of :class:`~mgnn.nets.ResNet` apply
unchanged.

The kernels are :mod:`mgnn.kernels.cpu_conv` (im2col + BLAS + fused elementwise
passes) on NumPy arrays and their twins :mod:`mgnn.kernels.gpu_conv` (im2col/col2im
kernels + cuBLAS) on CuPy arrays: a ``theta`` and images on the device make every
sweep, the objectives, serial propagation and MGRIT run there.
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
from mgnn.backend import get_namespace, kernels_for
from mgnn.kernels import cpu_conv
from mgnn.kernels.cpu import ACTIVATIONS
from mgnn.nets.resnet import INIT_SCHEMES, TASKS, box_layer

POOLINGS = ("average", "flatten")


@dataclass(frozen=True)
class ConvResNetParams:
    """Zero-copy named views into a parameter vector (see :meth:`ConvResNet.unpack`)."""

    K_open: np.ndarray  # (3, 3, C_in, c)
    b_open: np.ndarray  # (c,)
    K: np.ndarray  # (depth, 3, 3, c, c)
    b: np.ndarray  # (depth, c)
    W_close: np.ndarray  # (n_out, n_features)
    b_close: np.ndarray  # (n_out,)
    blocks: np.ndarray  # (depth, 9 c^2 + c): layer n's [K_n, b_n]
    opening: np.ndarray
    residual: np.ndarray
    closing: np.ndarray

    @property
    def W(self):
        """The residual kernels ``K`` under the dense network's name (what the MGRIT
        steppers bind: a layer's weights, averaged over coarse intervals)."""
        return self.K


class ConvWorkspace:
    """Preallocated buffers for the sweeps of a :class:`ConvResNet` on ``s`` samples.

    ``U`` (depth+1, s, width) holds every state, ``S`` (depth, s, width) every
    layer record, ``F`` (s, n_features) the pooled features (``U[-1]`` itself with
    ``pooling='flatten'``, whatever array ``U`` is bound to), ``col`` the im2col
    scratch. Tangent and
    second-order buffers come with :meth:`ensure_second_order`. ``xp`` is the array
    namespace of the buffers (NumPy, CuPy or a registered stand-in); ``kernels`` the
    conv kernels for it (:mod:`mgnn.kernels.cpu_conv` or ``gpu_conv``).
    """

    def __init__(self, net, s, xp=np):
        w, N, m, dt = net.width, net.depth, net.n_out, net.dtype
        self.s, self.xp = s, xp
        self.kernels = kernels_for(xp, "conv")
        self.U = xp.empty((N + 1, s, w), dt)
        self.S = xp.empty((N, s, w), dt)
        self.S_open = xp.empty((s, w), dt)
        self._flat = net.pooling == "flatten"
        self._F = None if self._flat else xp.empty((s, net.n_features), dt)
        self.Y = xp.empty((s, m), dt)
        self.G = xp.empty((s, m), dt)
        self.A = xp.empty((s, net.n_features), dt)  # adjoint of the features
        self.L = xp.empty((2, s, w), dt)
        self.D = xp.empty((s, w), dt)
        self.D_open = xp.empty((s, w), dt)
        self.col = xp.empty(s * net.n_pixels * 9 * max(net.in_channels, net.channels), dt)
        self.second_order = False
        self._net = net

    def ensure_second_order(self):
        """Allocate the tangent and second-order adjoint buffers (once)."""
        if self.second_order:
            return
        net, s, xp = self._net, self.s, self.xp
        w, N, m, dt = net.width, net.depth, net.n_out, net.dtype
        self.dU = xp.empty((N + 1, s, w), dt)
        self.dZ = xp.empty((N, s, w), dt)
        self.dZ_open = xp.empty((s, w), dt)
        self.dL = xp.empty((2, s, w), dt)
        self.dD = xp.empty((s, w), dt)
        self._dF = None if self._flat else xp.empty((s, net.n_features), dt)
        self.dY = xp.empty((s, m), dt)
        self.dG = xp.empty((s, m), dt)
        self.tmp = xp.empty((s, w), dt)
        self.tmpWc = xp.empty((m, net.n_features), dt)
        self.tmpF = xp.empty((s, net.n_features), dt)
        # col(dU)^T D of a second-order adjoint step, (9 C_in, C_out) at most
        self.tmpK = xp.empty(9 * max(net.in_channels, net.channels) * net.channels, dt)
        self.second_order = True

    # With pooling='flatten' the features are the final states themselves, read from
    # ``U`` when asked for: a propagation may rebind ``U`` (MGRITPropagation makes its
    # solver's storage the workspace's states), so a view taken at allocation would go
    # stale.
    @property
    def F(self):
        """The closing layer's input: ``U[-1]`` (flatten) or the pooled channel means."""
        return self.U[-1] if self._flat else self._F

    @property
    def dF(self):
        """Tangent of :attr:`F`: ``dU[-1]`` (flatten) or its pooled means."""
        return self.dU[-1] if self._flat else self._dF

    def nbytes(self):
        return sum(v.nbytes for v in vars(self).values() if hasattr(v, "nbytes"))


class ConvResNet:
    """Convolutional residual network ``u <- u + h sigma(K_n * u + b_n)`` over a flat ``theta``.

    Parameters
    ----------
    image_shape : (H, W) or (H, W, C_in)
        Image height, width and input channels (default 1).
    channels : int
        Channels c of the residual layers.
    depth : int
        Number of residual layers N; h = T / N.
    n_out : int
        Classes (classification) or outputs (regression).
    T : float
        Final time of the ODE.
    activation : {'tanh', 'relu', 'smooth_relu', 'identity'}
    task : {'classification', 'regression'}
    opening_activation : bool
        Apply sigma after the opening convolution.
    pooling : {'average', 'flatten'}
        Closing layer input: the channel means over the pixels (c features) or the
        whole final state (H*W*c features).
    dtype : {float64, float32}

    Examples
    --------
    >>> import numpy as np
    >>> net = ConvResNet((8, 8), 4, 6, 10, T=3.0, activation="relu")
    >>> net
    ConvResNet(image_shape=(8, 8, 1), channels=4, depth=6, n_out=10, T=3.0, h=0.5,
               activation='relu', pooling='average', n_params=978, dtype=float64)
    >>> theta = net.init(np.random.default_rng(0))
    >>> net.forward(theta, np.zeros((3, 64))).shape
    (3, 10)
    >>> p = net.unpack(theta)
    >>> p.K.shape, np.shares_memory(p.K, theta)
    ((6, 3, 3, 4, 4), True)
    """

    def __init__(self, image_shape, channels, depth, n_out, *, T=1.0, activation="tanh",
                 task="classification", opening_activation=True, pooling="average",
                 dtype=np.float64):
        shape = tuple(image_shape) if isinstance(image_shape, (tuple, list)) else None
        if shape is None or len(shape) not in (2, 3):
            raise ValueError(f"image_shape must be (H, W) or (H, W, C_in), got {image_shape!r}")
        if len(shape) == 2:
            shape = shape + (1,)
        self.H = check_positive_int(shape[0], "image_shape[0] (H)")
        self.W = check_positive_int(shape[1], "image_shape[1] (W)")
        self.in_channels = check_positive_int(shape[2], "image_shape[2] (C_in)")
        self.image_shape = (self.H, self.W, self.in_channels)
        self.channels = check_positive_int(channels, "channels")
        self.depth = check_positive_int(depth, "depth")
        self.n_out = check_positive_int(n_out, "n_out")
        self.T = check_scalar(T, "T", low=0.0, low_open=True)
        self.activation = check_choice(activation, "activation", tuple(ACTIVATIONS))
        self.act = ACTIVATIONS[activation]
        self.task = check_choice(task, "task", TASKS)
        self.opening_activation = bool(opening_activation)
        self.pooling = check_choice(pooling, "pooling", POOLINGS)
        self.dtype = check_dtype(dtype)
        self.h = self.T / self.depth
        c, Ci = self.channels, self.in_channels
        self.n_pixels = self.H * self.W
        self.n_in = self.n_pixels * Ci
        self.width = self.n_pixels * c
        self.n_features = c if self.pooling == "average" else self.width
        self.block_size = 9 * c * c + c
        self.n_open = 9 * Ci * c + c
        self.n_residual = self.depth * self.block_size
        self.n_close = self.n_out * self.n_features + self.n_out
        self.n_params = self.n_open + self.n_residual + self.n_close
        self.act_open = self.act if self.opening_activation else ACTIVATIONS["identity"]

    # ------------------------------------------------------------------ layout
    def __repr__(self):
        return (f"ConvResNet(image_shape={self.image_shape}, channels={self.channels}, "
                f"depth={self.depth}, n_out={self.n_out}, T={self.T}, h={self.h:.6g}, "
                f"activation={self.activation!r}, pooling={self.pooling!r}, "
                f"n_params={self.n_params}, dtype={self.dtype})")

    def get_config(self):
        """Constructor arguments as plain data (what :mod:`mgnn.runs` saves)."""
        return {"image_shape": list(self.image_shape), "channels": self.channels,
                "depth": self.depth, "n_out": self.n_out, "T": self.T,
                "activation": self.activation, "task": self.task,
                "opening_activation": self.opening_activation, "pooling": self.pooling,
                "dtype": np.dtype(self.dtype).name}

    @classmethod
    def from_config(cls, config):
        """The network :meth:`get_config` describes."""
        cfg = dict(config)
        args = [tuple(cfg.pop("image_shape")), cfg.pop("channels"), cfg.pop("depth"),
                cfg.pop("n_out")]
        cfg["dtype"] = np.dtype(cfg["dtype"])
        return cls(*args, **cfg)

    def _replace(self, **kw):
        cfg = self.get_config()
        cfg.update(kw)
        return ConvResNet.from_config(cfg)

    def with_depth(self, depth, T=None):
        """A network of the same kind with another depth (same T unless given)."""
        return self._replace(depth=depth, T=self.T if T is None else T)

    def with_channels(self, channels):
        """A network of the same kind with another number of channels."""
        return self._replace(channels=channels)

    def with_width(self, width):
        """A network with state dimension ``width = H*W*c'`` (``c'`` channels): what the
        dense ResNet's ``with_width`` means for the ODE state; ``width`` must be a
        multiple of the ``H*W`` pixels (:meth:`with_channels` takes ``c'``)."""
        width = check_positive_int(width, "width")
        if width % self.n_pixels:
            raise ValueError(f"width must be a multiple of the {self.n_pixels} pixels "
                             f"(H*W*channels), got {width}; use with_channels")
        return self.with_channels(width // self.n_pixels)

    def flops(self, s):
        """Floating-point operations of one value-and-gradient sweep on ``s`` samples.

        The GEMMs only (2 flops per multiply-add): per residual layer the forward
        product, the kernel gradient and the input adjoint (each ``s*H*W*9*c*c``),
        the opening layer's forward and kernel gradient, and the closing layer's
        three products.
        """
        c, Ci, P, m = self.channels, self.in_channels, self.n_pixels, self.n_out
        return 2 * s * (3 * self.depth * P * 9 * c * c + 2 * P * 9 * Ci * c
                        + 3 * self.n_features * m)

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

    def check_input(self, X, name="X"):
        """Validate images given as rows ``(s, H*W*C_in)`` (channels last)."""
        xp = get_namespace(X)
        if getattr(X, "ndim", 2) != 2:
            raise ValueError(f"{name} must be a 2-D array of images as rows (s, H*W*C_in) = "
                             f"(s, {self.n_in}), got shape {tuple(X.shape)}; use "
                             "images.reshape(len(images), -1) on channels-last images")
        return check_array(X, name, shape=(None, self.n_in), dtype=self.dtype, xp=xp)

    def unpack(self, theta):
        """Named zero-copy views (:class:`ConvResNetParams`) into ``theta``."""
        if theta.ndim != 1 or theta.shape[0] != self.n_params:
            raise ValueError(f"theta must have shape ({self.n_params},), got {tuple(theta.shape)}")
        c, Ci, N, m, F = self.channels, self.in_channels, self.depth, self.n_out, self.n_features
        o = 0
        opening = theta[o:o + self.n_open]
        K_open = opening[: 9 * Ci * c].reshape(3, 3, Ci, c)
        b_open = opening[9 * Ci * c:]
        o += self.n_open
        residual = theta[o:o + self.n_residual]
        blocks = residual.reshape(N, self.block_size)
        K = blocks[:, : 9 * c * c].reshape(N, 3, 3, c, c)
        b = blocks[:, 9 * c * c:]
        o += self.n_residual
        closing = theta[o:]
        W_close = closing[: m * F].reshape(m, F)
        b_close = closing[m * F:]
        return ConvResNetParams(K_open, b_open, K, b, W_close, b_close, blocks, opening,
                                residual, closing)

    def init(self, rng, scheme="glorot", inner_scale=0.0, box=None):
        """Return a new parameter vector drawn from ``rng``.

        The schemes of :meth:`mgnn.nets.ResNet.init`, with a kernel read as a dense
        layer from the 3x3 patch of ``9*C_in`` inputs to the ``C_out`` channels:
        ``'glorot'`` (uniform, limit sqrt(6/(fan_in+fan_out)), fan_in = 9 C_in,
        fan_out = 9 C_out as in PyTorch), ``'he'`` (normal, variance 2/fan_in),
        ``'layer_parallel'`` (Glorot opening and closing, residual kernels
        ``inner_scale * U(-1, 1)``), ``'box'`` (every channel's hyperplane in patch
        space cuts the box of its inputs; ``box = (lo, hi)`` is the range of the
        pixel values, scalars or arrays of length C_in, default [0, 1]; residual
        layer n has the box [0, (1 + h)^n]). Biases are zero except with ``'box'``;
        the closing layer is Glorot in every scheme.

        Examples
        --------
        >>> net = ConvResNet((4, 4), 2, 3, 2, activation="relu")
        >>> theta = net.init(0, "box", box=(0.0, 16.0))
        >>> bool(abs(theta).max() > 0)
        True
        """
        check_choice(scheme, "scheme", INIT_SCHEMES)
        inner_scale = check_scalar(inner_scale, "inner_scale", low=0.0)
        if box is not None and scheme != "box":
            raise ValueError(f"box has no effect with scheme={scheme!r}; use scheme='box'")
        rng = np.random.default_rng(rng)
        theta = np.zeros(self.n_params, dtype=self.dtype)
        p = self.unpack(theta)
        c, Ci = self.channels, self.in_channels

        def draw_kernel(shape):  # (..., 3, 3, C_in, C_out)
            fan_in, fan_out = 9 * shape[-2], 9 * shape[-1]
            if scheme == "he":
                return rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)
            lim = np.sqrt(6.0 / (fan_in + fan_out))
            return rng.uniform(-lim, lim, size=shape)

        lim = np.sqrt(6.0 / (self.n_features + self.n_out))
        if scheme == "box":
            lo, hi = self._check_box(box)
            Wo, p.b_open[...] = box_layer(rng, c, np.tile(lo, 9), np.tile(hi, 9))
            p.K_open[...] = Wo.T.reshape(3, 3, Ci, c)
            zero = np.zeros(9 * c)
            for n in range(self.depth):
                Wn, p.b[n] = box_layer(rng, c, zero, np.full(9 * c, (1.0 + self.h) ** n))
                p.K[n] = Wn.T.reshape(3, 3, c, c)
            p.W_close[...] = rng.uniform(-lim, lim, size=p.W_close.shape)
            return theta
        p.K_open[...] = draw_kernel(p.K_open.shape)
        p.W_close[...] = rng.uniform(-lim, lim, size=p.W_close.shape)
        if scheme == "layer_parallel":
            p.K[...] = inner_scale * rng.uniform(-1.0, 1.0, size=p.K.shape)
        else:
            p.K[...] = draw_kernel(p.K.shape)
        return theta

    def _check_box(self, box):
        Ci = self.in_channels
        if box is None:
            return np.zeros(Ci), np.ones(Ci)
        if not isinstance(box, (tuple, list)) or len(box) != 2:
            raise TypeError(f"box must be a pair (lo, hi), got {box!r}")
        lo, hi = (np.full(Ci, b, dtype=np.float64) if np.ndim(b) == 0
                  else np.asarray(b, dtype=np.float64) for b in box)
        check_array(lo, "box lo", shape=(Ci,))
        check_array(hi, "box hi", shape=(Ci,))
        if not np.all(lo < hi):
            raise ValueError(f"box must have lo < hi in every channel, got lo={lo}, hi={hi}")
        return lo, hi

    def workspace(self, s, xp=np):
        """Preallocated buffers (:class:`ConvWorkspace`) for a batch of ``s`` samples."""
        return ConvWorkspace(self, check_positive_int(s, "s"), xp)

    # ------------------------------------------------------------ layer steps
    def open(self, theta, X, U0, S_open, ws):
        """Opening layer ``U0 = sigma_o(K_open * X + b_open)`` (record in ``S_open``)."""
        p = self.unpack(theta)
        ws.kernels.conv_forward_step(X, p.K_open, p.b_open, 1.0, self.act_open, self.H,
                                     self.W, S_open, U0, ws.col, skip=False)

    def step(self, n, u_in, u_out, theta, ws, h=None, record=None):
        """Residual layer ``n``: ``u_out = u_in + h sigma(K_n * u_in + b_n)``.

        ``ws`` is a :class:`ConvWorkspace` of the batch (its ``col`` is the im2col
        scratch); ``record`` (s, width) receives the layer record and must be given
        (a step allocates nothing).
        """
        p = self.unpack(theta)
        ws.kernels.conv_forward_step(u_in, p.K[n], p.b[n], self.h if h is None else h,
                                     self.act, self.H, self.W, record, u_out, ws.col)

    def step_adjoint(self, n, lam_next, lam_out, theta, u_n, record, D, ws, h=None,
                     grad_block=None):
        """Adjoint of residual layer ``n``; ``grad_block`` (length ``block_size``)
        receives ``[col(u_n)^T D, sums of D]`` when given."""
        p = self.unpack(theta)
        c = self.channels
        gK = gb = None
        if grad_block is not None:
            gK = grad_block[: 9 * c * c].reshape(3, 3, c, c)
            gb = grad_block[9 * c * c:]
        ws.kernels.conv_adjoint_step(lam_next, u_n, p.K[n], record,
                                     self.h if h is None else h, self.act, self.H, self.W,
                                     D, ws.col, L=lam_out, gK=gK, gb=gb)

    def step_tangent(self, n, u_n, du_n, du_out, theta, dtheta, record, dZ, T, ws, h=None):
        """Tangent of residual layer ``n`` along ``(du_n, dtheta's layer-n block)``."""
        p, dp = self.unpack(theta), self.unpack(dtheta)
        ws.kernels.conv_tangent_step(u_n, du_n, p.K[n], dp.K[n], dp.b[n], record,
                                     self.h if h is None else h, self.act, self.H, self.W,
                                     dZ, du_out, ws.col, T)

    def step_soadjoint(self, n, lam_next, dlam_next, lam_out, dlam_out, theta, dtheta, u_n,
                       du_n, record, dZ, D, dD, ws, h=None, hv_block=None):
        """Second-order adjoint of residual layer ``n``; ``hv_block`` receives the
        layer's Hessian-vector product."""
        p, dp = self.unpack(theta), self.unpack(dtheta)
        c = self.channels
        hK = hb = None
        if hv_block is not None:
            hK = hv_block[: 9 * c * c].reshape(3, 3, c, c)
            hb = hv_block[9 * c * c:]
        ws.kernels.conv_soadjoint_step(lam_next, dlam_next, u_n, du_n, p.K[n], dp.K[n],
                                       record, dZ, self.h if h is None else h, self.act,
                                       self.H, self.W, D, dD, ws.col, L=lam_out,
                                       dL=dlam_out, dgK=hK, dgb=hb, tmpK=ws.tmpK)

    # ------------------------------------------- serial sweeps (SerialPropagation)
    def sweep_forward(self, theta, ws):
        """Fill ``ws.U[1:]`` and ``ws.S`` from ``ws.U[0]``, layer after layer."""
        for n in range(self.depth):
            self.step(n, ws.U[n], ws.U[n + 1], theta, ws, record=ws.S[n])

    def sweep_backward(self, theta, ws, lam_N, grad_blocks):
        """Adjoint sweep from ``lam_N``; returns the adjoint of ``U[0]``."""
        L, cur = ws.L, 0
        if lam_N is not L[0]:
            L[0][...] = lam_N
        for n in range(self.depth - 1, -1, -1):
            self.step_adjoint(n, L[cur], L[1 - cur], theta, ws.U[n], ws.S[n], ws.D, ws,
                              grad_block=grad_blocks[n])
            cur = 1 - cur
        return L[cur]

    def sweep_tangent(self, theta, dtheta, ws):
        """Tangent sweep from ``ws.dU[0]`` (fills ``ws.dU[1:]``, ``ws.dZ``)."""
        for n in range(self.depth):
            self.step_tangent(n, ws.U[n], ws.dU[n], ws.dU[n + 1], theta, dtheta, ws.S[n],
                              ws.dZ[n], ws.tmp, ws)

    def sweep_second_order_backward(self, theta, dtheta, ws, lam_N, dlam_N, hv_blocks):
        """Second-order adjoint sweep; returns ``(lam_0, dlam_0)``."""
        L, dL, cur = ws.L, ws.dL, 0
        if lam_N is not L[0]:
            L[0][...] = lam_N
        if dlam_N is not dL[0]:
            dL[0][...] = dlam_N
        for n in range(self.depth - 1, -1, -1):
            self.step_soadjoint(n, L[cur], dL[cur], L[1 - cur], dL[1 - cur], theta, dtheta,
                                ws.U[n], ws.dU[n], ws.S[n], ws.dZ[n], ws.D, ws.dD, ws,
                                hv_block=hv_blocks[n])
            cur = 1 - cur
        return L[cur], dL[cur]

    # ------------------------------------- opening and closing (the Objective protocol)
    def _pool(self, U, out):
        """``out = mean over pixels of U`` for ``pooling='average'`` (no-op for flatten)."""
        if self.pooling == "average":
            xp = get_namespace(U)
            xp.sum(U.reshape(U.shape[0], self.n_pixels, self.channels), axis=1, out=out)
            out *= 1.0 / self.n_pixels

    def _unpool(self, A, out):
        """Adjoint of :meth:`_pool`: ``out[i, pixel, :] = A[i] / n_pixels`` (or copy)."""
        if self.pooling == "average":
            xp = get_namespace(A)
            xp.multiply(A[:, None, :], 1.0 / self.n_pixels,
                        out=out.reshape(out.shape[0], self.n_pixels, self.channels))
        else:
            out[...] = A

    def close(self, theta, ws):
        """Closing layer on ``ws.U[-1]``: fills ``ws.F`` and ``ws.Y``."""
        p = self.unpack(theta)
        self._pool(ws.U[-1], ws.F)
        ws.xp.matmul(ws.F, p.W_close.T, out=ws.Y)
        ws.Y += p.b_close
        return ws.Y

    def output(self, theta, X, ws, propagation):
        """Fill ``ws`` by a forward sweep with ``propagation`` and return ``ws.Y``."""
        self.open(theta, X, ws.U[0], ws.S_open, ws)
        propagation.forward(self, theta, ws)
        return self.close(theta, ws)

    def close_adjoint(self, theta, ws, grad):
        """Closing layer's gradient (into ``grad``) from ``ws.G``; returns lam_N."""
        p, g = self.unpack(theta), self.unpack(grad)
        ws.xp.matmul(ws.G.T, ws.F, out=g.W_close)
        ws.xp.sum(ws.G, axis=0, out=g.b_close)
        lam_N = ws.L[0]
        if self.pooling == "average":
            ws.xp.matmul(ws.G, p.W_close, out=ws.A)
            self._unpool(ws.A, lam_N)
        else:
            ws.xp.matmul(ws.G, p.W_close, out=lam_N)
        return lam_N

    def open_adjoint(self, theta, X, ws, lam_0, grad):
        """Opening layer's kernel and bias gradient (into ``grad``) from ``lam_0``."""
        p, g = self.unpack(theta), self.unpack(grad)
        ws.kernels.conv_adjoint_step(lam_0, X, p.K_open, ws.S_open, 1.0, self.act_open,
                                     self.H, self.W, ws.D_open, ws.col, gK=g.K_open,
                                     gb=g.b_open, skip=False)

    def open_tangent(self, theta, v, X, ws):
        """Tangent of the opening layer along ``v``: fills ``ws.dU[0]``, ``ws.dZ_open``."""
        p, dp = self.unpack(theta), self.unpack(v)
        ws.kernels.conv_tangent_step(X, None, p.K_open, dp.K_open, dp.b_open, ws.S_open,
                                     1.0, self.act_open, self.H, self.W, ws.dZ_open,
                                     ws.dU[0], ws.col, ws.tmp, skip=False)

    def close_tangent(self, theta, v, ws):
        """Tangent of the output: ``ws.dY = dF W_close^T + F dW_close^T + db_close``."""
        p, dp = self.unpack(theta), self.unpack(v)
        self._pool(ws.dU[-1], ws.dF)
        ws.xp.matmul(ws.dF, p.W_close.T, out=ws.dY)
        ws.xp.matmul(ws.F, dp.W_close.T, out=ws.G)  # G as scratch
        ws.dY += ws.G
        ws.dY += dp.b_close

    def close_soadjoint(self, theta, v, ws, hv):
        """Closing layer's Hessian-vector product (into ``hv``) from ``ws.G``,
        ``ws.dG``; returns ``(lam_N, dlam_N)``."""
        p, dp, h = self.unpack(theta), self.unpack(v), self.unpack(hv)
        ws.xp.matmul(ws.dG.T, ws.F, out=h.W_close)
        ws.xp.matmul(ws.G.T, ws.dF, out=ws.tmpWc)
        ws.xp.add(h.W_close, ws.tmpWc, out=h.W_close)
        ws.xp.sum(ws.dG, axis=0, out=h.b_close)
        lam_N, dlam_N = ws.L[0], ws.dL[0]
        ws.xp.matmul(ws.G, p.W_close, out=ws.A)
        self._unpool(ws.A, lam_N)
        ws.xp.matmul(ws.dG, p.W_close, out=ws.A)
        ws.xp.matmul(ws.G, dp.W_close, out=ws.tmpF)
        ws.A += ws.tmpF
        self._unpool(ws.A, dlam_N)
        return lam_N, dlam_N

    def open_soadjoint(self, theta, v, X, ws, lam_0, dlam_0, hv):
        """Opening layer's Hessian-vector product (into ``hv``); its input is data."""
        p, dp, h = self.unpack(theta), self.unpack(v), self.unpack(hv)
        ws.kernels.conv_soadjoint_step(lam_0, dlam_0, X, None, p.K_open, dp.K_open,
                                       ws.S_open, ws.dZ_open, 1.0, self.act_open, self.H,
                                       self.W, ws.D_open, ws.dD, ws.col, dgK=h.K_open,
                                       dgb=h.b_open, skip=False, tmpK=ws.tmpK)

    def features(self, ws):
        """The closing layer's input of the last forward sweep (``ws.F``)."""
        return ws.F

    # ------------------- opening and closing on theta's slices (LayerParallelObjective,
    # NumPy arrays: the MPI layer distribution runs on the CPU)
    @property
    def kernel_shape(self):
        """Shape of one residual layer's weights: ``(3, 3, c, c)``."""
        return (3, 3, self.channels, self.channels)

    def local_buffers(self, s):
        """Scratch of the opening and closing layers on ``s`` samples (a dict)."""
        dt = self.dtype  # the layer-parallel objective runs on NumPy arrays
        return {"col": np.empty(s * self.n_pixels * 9 * max(self.in_channels, self.channels),
                                dt),
                "F": np.empty((s, self.n_features), dt), "A": np.empty((s, self.n_features), dt)}

    def open_local(self, opening, X, U0, S_open, bufs):
        """Opening layer from the slice ``opening`` (``n_open`` entries of theta)."""
        nk = 9 * self.in_channels * self.channels
        K = opening[:nk].reshape(3, 3, self.in_channels, self.channels)
        cpu_conv.conv_forward_step(X, K, opening[nk:], 1.0, self.act_open, self.H, self.W,
                                   S_open, U0, bufs["col"], skip=False)

    def open_adjoint_local(self, opening, X, lam_0, S_open, D_open, gopening, bufs):
        """Opening layer's gradient into the slice ``gopening``."""
        nk = 9 * self.in_channels * self.channels
        shape = (3, 3, self.in_channels, self.channels)
        cpu_conv.conv_adjoint_step(lam_0, X, opening[:nk].reshape(shape), S_open, 1.0,
                                   self.act_open, self.H, self.W, D_open, bufs["col"],
                                   gK=gopening[:nk].reshape(shape), gb=gopening[nk:],
                                   skip=False)

    def close_local(self, closing, U_N, Y, bufs):
        """Output ``Y`` from the last states and the slice ``closing``."""
        m, F = self.n_out, self.n_features
        Fv = bufs["F"] if self.pooling == "average" else U_N
        self._pool(U_N, Fv)
        np.matmul(Fv, closing[: m * F].reshape(m, F).T, out=Y)
        Y += closing[m * F:]

    def close_adjoint_local(self, closing, U_N, G, gclosing, lam_N, bufs):
        """Closing layer's gradient (into ``gclosing``) and ``lam_N`` from ``G``;
        after :meth:`close_local` on the same states."""
        m, F = self.n_out, self.n_features
        Fv = bufs["F"] if self.pooling == "average" else U_N
        Wc = closing[: m * F].reshape(m, F)
        np.matmul(G.T, Fv, out=gclosing[: m * F].reshape(m, F))
        np.sum(G, axis=0, out=gclosing[m * F:])
        np.matmul(G, Wc, out=bufs["A"])
        self._unpool(bufs["A"], lam_N)

    # ------------------------------------------------------------- MGRIT steppers
    def step_kernels(self, s, xp=np):
        """The layer kernels in the dense kernels' signatures, for the MGRIT steppers
        (:class:`ConvStepKernels`)."""
        return ConvStepKernels(self, s, xp)

    def step_gemm_flops(self, s):
        """Flops of one GEMM of a residual step on ``s`` samples (``2 s H W 9 c^2``)."""
        return 2.0 * s * self.n_pixels * 9 * self.channels * self.channels

    # ---------------------------------------------------------------- sweeps
    def forward(self, theta, X):
        """Network output for the images ``X`` (s, H*W*C_in): logits or predictions."""
        theta = self.check_theta(theta)
        X = self.check_input(X)
        ws = self.workspace(X.shape[0], get_namespace(theta))
        from mgnn.propagation import SerialPropagation

        return self.output(theta, X, ws, SerialPropagation()).copy()

    def predict(self, theta, X):
        """Class labels (classification) or outputs (regression) for ``X``."""
        Y = self.forward(theta, X)
        if self.task == "classification":
            return Y.argmax(axis=1)
        return Y


#: The batched conv steps over a stack of layers (one im2col, one batched GEMM) pay
#: where a layer's im2col matrix is small: measured (``benchmarks/conv_batched.py
#: --threads 1``, float64, shared 2-core AMD EPYC), stacks of 4-16 layers took
#: 0.81-0.95x (forward) and 0.79-0.99x (adjoint) the time of the layer-by-layer loop
#: with a matrix of at most 324 KiB per layer, and up to 1.4x (forward) and 1.9x
#: (adjoint) with c >= 8 from 576 KiB on (the loop keeps one layer's matrix in cache
#: between im2col and GEMM). Bytes per layer at or below which the CPU steppers take
#: the batched steps:
BATCH_COL_BYTES = 384 * 1024
#: ... in chunks of layers whose im2col matrices take at most this many bytes together.
BATCH_CHUNK_BYTES = 4 * 1024 * 1024


class ConvStepKernels:
    """The convolutional layer behind the signatures of the dense kernels
    (``forward_step``, ``adjoint_step`` and their ``_batch`` twins of
    :mod:`mgnn.kernels.cpu`), with ``W`` a kernel ``(3, 3, c, c)``: what the MGRIT
    steppers call. Holds the im2col scratch of a batch of ``s`` samples, in the array
    namespace ``xp`` (the kernels are :mod:`mgnn.kernels.cpu_conv` or ``gpu_conv``,
    :func:`mgnn.backend.kernels_for`).

    The batched steps (a stack of ``k`` layers, MGRIT's relaxation) take
    :func:`~mgnn.kernels.cpu_conv.conv_forward_step_layers` /
    ``conv_adjoint_step_layers`` on the CPU where a layer's im2col matrix has at most
    :data:`BATCH_COL_BYTES` (``layers`` is then the chunk of layers per call), and the
    single steps layer by layer otherwise (and on a device); both are bit-identical
    to the single steps.

    Examples
    --------
    >>> net = ConvResNet((8, 8), 4, 16, 10)
    >>> net.step_kernels(8)
    ConvStepKernels(8x8, channels=4, s=8, im2col 144 KiB per layer, batched over 28 layers)
    >>> net.step_kernels(256)
    ConvStepKernels(8x8, channels=4, s=256, im2col 4608 KiB per layer, layer by layer)
    """

    def __init__(self, net, s, xp=np):
        self.net = net
        self.H, self.W = net.H, net.W
        self.s = s
        self.xp = xp
        self.k = kernels_for(xp, "conv")
        n = s * net.n_pixels * 9 * net.channels
        self.col = xp.empty(n, net.dtype)
        self.col_bytes = n * np.dtype(net.dtype).itemsize
        self.layers = 0
        if xp is np and self.col_bytes <= BATCH_COL_BYTES:
            self.layers = max(1, BATCH_CHUNK_BYTES // self.col_bytes)
            self.colk = np.empty(self.layers * n, net.dtype)

    def __repr__(self):
        how = (f"batched over {self.layers} layers" if self.layers else "layer by layer")
        return (f"ConvStepKernels({self.H}x{self.W}, channels={self.net.channels}, "
                f"s={self.s}, im2col {self.col_bytes // 1024} KiB per layer, {how})")

    def forward_step(self, U, W, b, h, act, S, out, skip=True):
        self.k.conv_forward_step(U, W, b, h, act, self.H, self.W, S, out, self.col, skip=skip)

    def adjoint_step(self, L_next, U, W, S, h, act, D, L=None, gW=None, gb=None, skip=True):
        self.k.conv_adjoint_step(L_next, U, W, S, h, act, self.H, self.W, D, self.col, L=L,
                                 gK=gW, gb=gb, skip=skip)

    def _stacked(self, *arrays):
        """True when the batched kernels apply: CPU, small layers, every layer of every
        stack C-contiguous (the layer stride is free)."""
        return self.layers > 0 and all(a is None or a[0].flags.c_contiguous for a in arrays)

    def forward_step_batch(self, U, W, b, h, act, S, out, skip=True):
        k = U.shape[0]
        if k > 1 and self._stacked(U, W, S, out):
            m = self.layers
            for q in range(0, k, m):
                sl = slice(q, q + m)
                self.k.conv_forward_step_layers(U[sl], W[sl], b[sl], h, act, self.H, self.W,
                                                S[sl], out[sl], self.colk, skip=skip)
            return
        for q in range(k):
            self.forward_step(U[q], W[q], b[q], h, act, S[q], out[q], skip=skip)

    def adjoint_step_batch(self, L_next, U, W, S, h, act, D, L=None, gW=None, gb=None,
                           skip=True):
        k = L_next.shape[0]
        if k > 1 and self._stacked(L_next, U, W, S, D, L, gW):
            m = self.layers
            for q in range(0, k, m):
                sl = slice(q, q + m)
                self.k.conv_adjoint_step_layers(
                    L_next[sl], U[sl], W[sl], S[sl], h, act, self.H, self.W, D[sl],
                    self.colk, L=None if L is None else L[sl],
                    gK=None if gW is None else gW[sl], gb=None if gb is None else gb[sl],
                    skip=skip)
            return
        for q in range(k):
            self.adjoint_step(L_next[q], U[q], W[q], S[q], h, act, D[q],
                              L=None if L is None else L[q], gW=None if gW is None else gW[q],
                              gb=None if gb is None else gb[q], skip=skip)


def refuse_conv(net, what, missing):
    """Raise ``NotImplementedError`` when ``net`` is a :class:`ConvResNet`, naming the
    solver (``what``) and what it lacks for convolutional networks (``missing``)."""
    if isinstance(net, ConvResNet):
        raise NotImplementedError(f"{what} does not support ConvResNet yet: {missing}. "
                                  "Use SerialPropagation (the default) and a depth "
                                  "hierarchy, or a dense ResNet.")
