"""The training objective on a flat parameter vector: value, gradient, Hessian-vector product.

    J(theta) = loss(net(theta; X), targets)
               + (tikhonov / 2) ||theta||^2
               + (smoothness / (2 h)) sum_{n=0}^{N-2} ||theta_{n+1} - theta_n||^2

where theta_n is residual layer n's block [W_n, b_n]; the last term is the
time-derivative regulariser of the layer-parallel papers, h sum ||d theta/dt||^2.

The gradient is computed by the adjoint sweep and ``hessp`` by the
second-order adjoint (forward tangent sweep + backward second-order sweep): it
is the exact Hessian-vector product of J, not a finite difference.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from mgnn._validation import check_array, check_choice, check_scalar
from mgnn.backend import get_namespace
from mgnn.losses import LOSSES, Loss
from mgnn.propagation import Propagation, SerialPropagation
from mgnn.vectorspace import EuclideanSpace
from mgnn.work import WorkCounter


def check_targets(net, Y, name="Y", n=None):
    """Validate targets for ``net.task``: integer labels or an (s, n_out) float array."""
    xp = get_namespace(Y)
    Y = xp.asarray(Y)
    if net.task == "classification":
        if Y.ndim != 1:
            raise ValueError(f"{name} must be a 1-D array of class labels, got shape {Y.shape}")
        if Y.dtype.kind not in "iu":
            raise TypeError(f"{name} must hold integer class labels, got dtype {Y.dtype}")
        if Y.size and (int(Y.min()) < 0 or int(Y.max()) >= net.n_out):
            raise ValueError(f"{name} labels must lie in [0, {net.n_out}), got "
                             f"[{int(Y.min())}, {int(Y.max())}]")
        Y = xp.ascontiguousarray(Y, dtype=np.int64)
    else:
        if Y.ndim == 1 and net.n_out == 1:
            Y = Y.reshape(-1, 1)
        Y = check_array(Y, name, shape=(None, net.n_out), xp=xp)
        Y = xp.ascontiguousarray(Y, dtype=net.dtype)
    if n is not None and Y.shape[0] != n:
        raise ValueError(f"{name} must have {n} rows (one per sample of X), got {Y.shape[0]}")
    return Y


def _namespace_name(xp):
    return "NumPy" if xp is np else getattr(xp, "__name__", str(xp))


class Objective:
    """Loss of a network on data, with regularisation, as a function of ``theta``.

    Parameters
    ----------
    net : ResNet
        The network (any object with the ResNet interface).
    X : (s, n_in) float array
        Inputs. Stored in the network's dtype (a float64 array given to a float32
        network is converted once, here). A device (CuPy) array puts every
        evaluation on the device.
    Y : array
        Targets: integer labels (classification) or (s, n_out) floats (regression);
        host targets of device inputs are copied to the device once.
    loss : {'cross_entropy', 'mse'}, optional
        Defaults to cross-entropy for classification, MSE for regression.
    tikhonov : float
        Weight of (1/2)||theta||^2.
    smoothness : float
        Weight of the time-derivative term (1/(2h)) sum ||theta_{n+1} - theta_n||^2.
    propagation : Propagation, optional
        How states travel through the layers (default: :class:`SerialPropagation`).
    space : EuclideanSpace, optional
        Inner product used by optimizers on this objective.

    Attributes
    ----------
    counter : WorkCounter
        Every evaluation is charged here in fine-gradient equivalents.

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.nets import ResNet
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((50, 2)); y = (X[:, 0] > 0).astype(int)
    >>> net = ResNet(2, 4, 8, 2)
    >>> obj = Objective(net, X, y, tikhonov=1e-4)
    >>> theta = net.init(rng)
    >>> f, g = obj.value_and_grad(theta)
    >>> g.shape == theta.shape, obj.counter.njev
    (True, 1)
    >>> Hv = obj.hessp(theta, g)
    >>> bool(np.dot(g, Hv) > 0)
    True
    """

    def __init__(self, net, X, Y, *, loss=None, tikhonov=0.0, smoothness=0.0,
                 propagation=None, space=None):
        self.net = net
        xp = get_namespace(X)
        X = check_array(X, "X", shape=(None, net.n_in), xp=xp)
        if X.shape[0] == 0:
            raise ValueError("X must hold at least one sample, got shape "
                             f"{tuple(X.shape)}")
        self.X = xp.ascontiguousarray(X, dtype=net.dtype)
        if get_namespace(Y) is not xp:
            if xp is np:
                raise TypeError(f"X is a NumPy array but Y is a {_namespace_name(get_namespace(Y))}"
                                " array: give both on the same device")
            Y = xp.asarray(Y)  # host targets for device data: copied once
        self.Y = check_targets(net, Y, "Y", n=X.shape[0])
        if loss is None:
            loss = "cross_entropy" if net.task == "classification" else "mse"
        check_choice(loss, "loss", LOSSES)
        if loss == "cross_entropy" and net.task != "classification":
            raise ValueError("loss 'cross_entropy' needs a network with task='classification'")
        if loss == "mse" and net.task != "regression":
            raise ValueError("loss 'mse' needs a network with task='regression'")
        self.loss = Loss(loss)
        self.tikhonov = check_scalar(tikhonov, "tikhonov", low=0.0)
        self.smoothness = check_scalar(smoothness, "smoothness", low=0.0)
        if propagation is None:
            propagation = SerialPropagation()
        if not isinstance(propagation, Propagation):
            raise TypeError(f"propagation must be a Propagation, got {type(propagation).__name__}")
        self.propagation = propagation
        self.space = EuclideanSpace() if space is None else space
        self.counter = WorkCounter()
        self.xp = xp
        self._workspaces = OrderedDict()

    # ------------------------------------------------------------- plumbing
    @property
    def n_samples(self):
        """Number of data samples."""
        return self.X.shape[0]

    @property
    def n_params(self):
        return self.net.n_params

    def with_net(self, net, propagation=None):
        """The same data, loss and regularisation on another network (e.g. a coarse level).

        The data arrays are shared, not copied. The new objective has its own work
        counter whose ``scale`` is the new network's cost relative to this one's
        (ratio of :meth:`ResNet.flops`), so its work is charged in this objective's
        units.
        """
        if net.n_in != self.net.n_in or net.n_out != self.net.n_out or net.task != self.net.task:
            raise ValueError("net must have the same n_in, n_out and task as the objective's")
        new = Objective.__new__(Objective)
        new.__dict__.update(self.__dict__)
        new.net = net
        new.propagation = SerialPropagation() if propagation is None else propagation
        new.counter = WorkCounter(cost=dict(self.counter.cost),
                                  scale=self.counter.scale * net.flops(1) / self.net.flops(1))
        new._workspaces = OrderedDict()
        return new

    def __repr__(self):
        return (f"Objective({self.net!r}, n_samples={self.n_samples}, loss={self.loss.name!r}, "
                f"tikhonov={self.tikhonov:g}, smoothness={self.smoothness:g}, "
                f"propagation={self.propagation!r})")

    def _check_theta(self, theta, name="theta"):
        """Validate ``theta`` for the network, on this objective's array namespace."""
        theta = self.net.check_theta(theta, name)
        xp = get_namespace(theta)
        if xp is not self.xp:
            raise TypeError(
                f"{name} is a {_namespace_name(xp)} array but the objective's data are "
                f"{_namespace_name(self.xp)} arrays: move {name} with "
                f"mgnn.backend.{'to_device' if xp is np else 'to_host'}")
        return theta

    def _workspace(self, s, batch=None):
        """The buffers for ``s`` samples; ``ws.key`` names the samples (``None`` for
        all data, else the batch's indices as bytes) so that a propagation can tell
        a re-evaluation on the same samples (a warm start) from a new batch."""
        ws = self._workspaces.get(s)
        if ws is None:
            ws = self.net.workspace(s, self.xp)
            self._workspaces[s] = ws
            while len(self._workspaces) > 3:
                self._workspaces.popitem(last=False)
        else:
            self._workspaces.move_to_end(s)
        if batch is None:
            ws.key = "all"
        else:
            ws.key = batch.tobytes() if hasattr(batch, "tobytes") else np.asarray(batch).tobytes()
        return ws

    def _data(self, batch):
        """``(X, Y, share)`` of the samples ``batch`` (all when None)."""
        if batch is None:
            return self.X, self.Y, 1.0
        xp = self.xp
        # indices drawn on the host are checked there and copied to the device once
        bxp = get_namespace(batch)
        batch = bxp.asarray(batch)
        if batch.ndim != 1 or batch.dtype.kind not in "iu":
            raise TypeError(f"batch must be a 1-D integer index array, got dtype "
                            f"{batch.dtype} and shape {batch.shape}")
        if batch.size == 0:
            raise ValueError("batch must not be empty")
        if int(batch.min()) < 0 or int(batch.max()) >= self.n_samples:
            raise ValueError(f"batch indices must lie in [0, {self.n_samples})")
        if bxp is not xp:
            batch = xp.asarray(batch)
        return self.X[batch], self.Y[batch], batch.size / self.n_samples

    def _regularisation(self, theta, grad=None):
        """Value of the regulariser; adds its gradient to ``grad`` when given.

        On a device the terms are summed there and read back once.
        """
        val = 0.0
        if self.tikhonov:
            val = 0.5 * self.tikhonov * self.xp.dot(theta, theta)
            if grad is not None:
                grad += self.tikhonov * theta
        if self.smoothness and self.net.depth > 1:
            blocks = self.net.unpack(theta).blocks
            d = blocks[1:] - blocks[:-1]
            c = self.smoothness / self.net.h
            val = val + 0.5 * c * self.xp.vdot(d, d)
            if grad is not None:
                gb = self.net.unpack(grad).blocks
                gb[:-1] -= c * d
                gb[1:] += c * d
        return float(val)

    def _after_evaluation(self, val):
        """Charge the propagation's extra work; after a NaN/inf loss, drop its warm
        starts (they would carry the NaN into the next evaluation)."""
        self._charge_propagation()
        if not math.isfinite(val):
            reset = getattr(self.propagation, "reset", None)
            if reset is not None:
                reset()

    def _charge_propagation(self):
        """Charge work a propagation did beyond the serial sweeps (MGRIT iterations)."""
        take = getattr(self.propagation, "take_extra_work", None)
        if take is not None:
            self.counter.work += self.counter.scale * take(self.net, self.n_samples)

    def _forward(self, theta, X, ws):
        return self.net.output(theta, X, ws, self.propagation)

    # ---------------------------------------------------------- evaluations
    def value(self, theta, batch=None):
        """Objective value at ``theta`` (on the mini-batch ``batch`` when given)."""
        theta = self._check_theta(theta)
        X, Y, share = self._data(batch)
        ws = self._workspace(X.shape[0], batch)
        out = self._forward(theta, X, ws)
        val = self.loss.value(out, Y, self.xp) + self._regularisation(theta)
        self.counter.charge("value", share)
        self._after_evaluation(val)
        return val

    def value_and_grad(self, theta, batch=None):
        """Objective value and gradient (by the adjoint sweep)."""
        theta = self._check_theta(theta)
        net, xp = self.net, self.xp
        X, Y, share = self._data(batch)
        ws = self._workspace(X.shape[0], batch)
        out = self._forward(theta, X, ws)
        val = self.loss.value_grad(out, Y, ws.G, xp)
        grad = xp.empty_like(theta)
        if not math.isfinite(val):
            # the forward overflowed: no adjoint (MGRIT refuses a non-finite start); a
            # NaN gradient lets the optimizer's divergence check stop the run
            grad.fill(math.nan)
            self.counter.charge("grad", share)
            self._after_evaluation(val)
            return val, grad
        lam_N = net.close_adjoint(theta, ws, grad)
        lam_0 = self.propagation.backward(net, theta, ws, lam_N, net.unpack(grad).blocks)
        net.open_adjoint(theta, X, ws, lam_0, grad)
        val += self._regularisation(theta, grad)
        self.counter.charge("grad", share)
        self._after_evaluation(val)
        return val, grad

    def grad(self, theta, batch=None):
        """Gradient of the objective (see :meth:`value_and_grad`)."""
        return self.value_and_grad(theta, batch)[1]

    def hessp(self, theta, v, batch=None):
        """Exact Hessian-vector product H(theta) v by the second-order adjoint."""
        theta = self._check_theta(theta)
        v = self._check_theta(v, "v")
        net, xp = self.net, self.xp
        X, Y, share = self._data(batch)
        ws = self._workspace(X.shape[0], batch)
        ws.ensure_second_order()
        out = self._forward(theta, X, ws)
        # tangent sweep
        net.open_tangent(theta, v, X, ws)
        self.propagation.tangent(net, theta, v, ws)
        net.close_tangent(theta, v, ws)
        # loss: first and second derivative at the output
        self.loss.value_grad(out, Y, ws.G, xp)
        self.loss.hessp(out, ws.dY, ws.dG, xp)
        hv = xp.empty_like(theta)
        lam_N, dlam_N = net.close_soadjoint(theta, v, ws, hv)
        # residual layers
        lam_0, dlam_0 = self.propagation.second_order_backward(net, theta, v, ws, lam_N,
                                                               dlam_N, net.unpack(hv).blocks)
        net.open_soadjoint(theta, v, X, ws, lam_0, dlam_0, hv)
        # the regulariser is a quadratic form: its gradient at v is its Hessian applied to v
        self._regularisation(v, hv)
        self.counter.charge("hessp", share)
        self._charge_propagation()
        return hv

    # ------------------------------------------------------------- metrics
    def _eval_data(self, X, Y):
        """Evaluation data on this objective's namespace (host data are copied once)."""
        if X is None:
            return self.X, self.Y
        xp = self.xp
        if get_namespace(X) is not xp:
            X = xp.asarray(X)
        if get_namespace(Y) is not xp:
            Y = xp.asarray(Y)
        X = self.net.check_input(xp.ascontiguousarray(X, dtype=self.net.dtype))
        return X, check_targets(self.net, Y, "Y", n=X.shape[0])

    def accuracy(self, theta, X=None, Y=None):
        """Fraction of correctly classified samples (default: this objective's data)."""
        if self.net.task != "classification":
            raise ValueError("accuracy needs a classification network; use error() instead")
        X, Y = self._eval_data(X, Y)
        pred = self.net.forward(self._check_theta(theta), X).argmax(axis=1)
        return float((pred == Y).mean())

    def error(self, theta, X=None, Y=None):
        """Regression errors ``(mean absolute error, worst-case absolute error)``."""
        if self.net.task != "regression":
            raise ValueError("error needs a regression network; use accuracy() instead")
        X, Y = self._eval_data(X, Y)
        err = abs(self.net.forward(self._check_theta(theta), X) - Y)
        return float(err.mean()), float(err.max())

    # ------------------------------------------------------ adaptive basis
    def features(self, theta, batch=None, out=None):
        """The last hidden states of a forward sweep and the matching targets.

        The rows of ``A = U_N`` are the adaptive basis that the closing layer
        combines: the output is ``A W_close^T + b_close``. Used by
        :func:`mgnn.optim.lsgd.minimize_lsgd` to fit the closing layer by least
        squares. Charged as one value evaluation (the sweep is the same).

        Parameters
        ----------
        theta : (n_params,) array
        batch : 1-D integer array, optional
            Sample indices (default all data).
        out : (s, width) array, optional
            Written with the states (any float dtype, may be a strided view);
            default a new array of the network's dtype.

        Returns
        -------
        A : (s, width) array
            ``out`` when given.
        Y : array
            The targets of the same samples (not a copy for all data).

        Examples
        --------
        >>> import numpy as np
        >>> from mgnn.nets import ResNet
        >>> rng = np.random.default_rng(0)
        >>> X = rng.standard_normal((6, 2)); Y = rng.standard_normal((6, 1))
        >>> net = ResNet(2, 3, 4, 1, task="regression")
        >>> obj = Objective(net, X, Y)
        >>> theta = net.init(rng)
        >>> A, T = obj.features(theta, batch=np.array([0, 2]))
        >>> A.shape, bool(np.array_equal(T, Y[[0, 2]]))
        ((2, 3), True)
        >>> p = net.unpack(theta)
        >>> np.allclose(A @ p.W_close.T + p.b_close, net.forward(theta, X[[0, 2]]))
        True
        """
        theta = self._check_theta(theta)
        X, Y, share = self._data(batch)
        ws = self._workspace(X.shape[0])
        self._forward(theta, X, ws)
        self.counter.charge("value", share)
        self._charge_propagation()
        A = self.net.features(ws)
        if out is None:
            return A.copy(), Y
        if tuple(out.shape) != tuple(A.shape):
            raise ValueError(f"out must have shape {tuple(A.shape)}, got {tuple(out.shape)}")
        out[...] = A
        return out, Y
