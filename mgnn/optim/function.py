"""An objective in the mgnn protocol built from plain scipy-style callables."""

from __future__ import annotations

import numpy as np

from mgnn._validation import check_positive_int
from mgnn.vectorspace import EuclideanSpace
from mgnn.work import WorkCounter

__all__ = ["FunctionObjective"]


class FunctionObjective:
    """Wrap ``fun``/``jac``/``hessp`` callables as an mgnn objective.

    The optimizers of :mod:`mgnn.optim` consume objectives with ``value``,
    ``grad``, ``value_and_grad``, ``hessp``, ``n_samples``, ``counter`` and
    ``space`` (see :class:`mgnn.objective.Objective`). This adapter gives plain
    functions (Rosenbrock, quadratics, least squares written by hand) the same
    interface and charges its own :class:`~mgnn.work.WorkCounter`: a value
    costs ``counter.cost['value']``, a gradient or value-and-gradient 1, a
    Hessian-vector product ``counter.cost['hessp']``, each times the share of
    the data in the batch.

    Parameters
    ----------
    fun : callable
        ``fun(theta)`` (or ``fun(theta, batch)`` when ``n_samples`` is given)
        returning the loss, or ``(loss, grad)`` when ``jac is True``.
    jac : callable or True, optional
        Gradient ``jac(theta[, batch])``; ``True`` when ``fun`` returns both.
        Without it, ``grad`` and ``value_and_grad`` raise ``NotImplementedError``.
    hessp : callable, optional
        ``hessp(theta, v[, batch])``, the Hessian applied to ``v``.
    n_samples : int, optional
        Number of data samples. When given the callables receive the batch
        (an integer index array, or ``None`` for all data) as last argument
        and the stochastic methods may draw mini-batches.
    space : object, optional
        Vector space for inner products (default :class:`EuclideanSpace`).
    counter : WorkCounter, optional
        Counter to charge (default: a fresh one).

    Examples
    --------
    >>> from scipy.optimize import rosen, rosen_der, rosen_hess_prod
    >>> obj = FunctionObjective(rosen, rosen_der, rosen_hess_prod)
    >>> f, g = obj.value_and_grad(np.array([1.0, 1.0]))
    >>> f, g.tolist(), obj.counter.work
    (0.0, [0.0, 0.0], 1.0)

    A least-squares loss over 4 samples; a batch of two costs half a gradient:

    >>> X, y = np.eye(4), np.arange(4.0)
    >>> def loss(t, i):
    ...     i = slice(None) if i is None else i
    ...     return 0.5 * np.mean((X[i] @ t - y[i]) ** 2)
    >>> def grad(t, i):
    ...     i = slice(None) if i is None else i
    ...     return X[i].T @ (X[i] @ t - y[i]) / len(y[i])
    >>> obj = FunctionObjective(loss, grad, n_samples=4)
    >>> _ = obj.grad(np.zeros(4), batch=np.array([0, 1]))
    >>> obj.counter.work
    0.5
    """

    def __init__(self, fun, jac=None, hessp=None, n_samples=None, space=None, counter=None):
        if not callable(fun):
            raise TypeError(f"fun must be callable, got {type(fun).__name__}")
        if not (jac is None or jac is True or callable(jac)):
            raise TypeError(f"jac must be callable, True or None, got {jac!r}")
        if hessp is not None and not callable(hessp):
            raise TypeError(f"hessp must be callable or None, got {type(hessp).__name__}")
        self._fun = fun
        self._jac = jac
        self._hessp = hessp
        self.n_samples = None if n_samples is None else check_positive_int(n_samples, "n_samples")
        self.space = EuclideanSpace() if space is None else space
        self.counter = WorkCounter() if counter is None else counter

    @property
    def has_hessp(self):
        """True when a Hessian-vector product was given."""
        return self._hessp is not None

    def _args(self, batch):
        if self.n_samples is None:
            if batch is not None:
                raise ValueError("batch must be None: this objective has no n_samples")
            return (), 1.0
        if batch is None:
            return (None,), 1.0
        batch = np.asarray(batch)
        if batch.ndim != 1 or batch.dtype.kind not in "iu":
            raise TypeError("batch must be a 1-D integer index array")
        if batch.size == 0:
            raise ValueError("batch must not be empty")
        return (batch,), batch.size / self.n_samples

    @staticmethod
    def _scalar(f, what="fun"):
        """The loss as a float; a vector or a non-number is a named error."""
        a = np.asarray(f)
        if a.dtype.kind not in "biuf":
            raise TypeError(f"{what} must return a real number, got {type(f).__name__}"
                            + (f" of dtype {a.dtype}" if hasattr(f, "dtype") else ""))
        if a.size != 1:
            raise ValueError(f"{what} must return a scalar, got an array of shape {a.shape}")
        return float(a.reshape(()))

    @staticmethod
    def _vector(g, theta, what):
        """``g`` as an array of ``theta``'s shape and dtype, or a named error."""
        a = np.asarray(g)
        if a.dtype.kind not in "biuf":
            raise TypeError(f"{what} must return a real array, got dtype {a.dtype}")
        if a.shape != theta.shape:
            raise ValueError(f"{what} must return an array of shape {theta.shape} (the shape "
                             f"of theta), got {a.shape}")
        return np.asarray(a, dtype=theta.dtype)

    def _split(self, out):
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError("with jac=True, fun must return a pair (loss, gradient), got "
                            f"{type(out).__name__}")
        return out

    def value(self, theta, batch=None):
        """Loss at ``theta`` on ``batch`` (all data when ``None``)."""
        args, share = self._args(batch)
        self.counter.charge("value", share)
        out = self._fun(theta, *args)
        return self._scalar(self._split(out)[0] if self._jac is True else out)

    def value_and_grad(self, theta, batch=None):
        """``(loss, gradient)`` at ``theta``; charged as one gradient."""
        args, share = self._args(batch)
        if self._jac is None:
            raise NotImplementedError("this FunctionObjective has no jac")
        self.counter.charge("grad", share)
        if self._jac is True:
            f, g = self._split(self._fun(theta, *args))
            return self._scalar(f), self._vector(g, theta, "fun (its gradient)")
        f, g = self._fun(theta, *args), self._jac(theta, *args)
        return self._scalar(f), self._vector(g, theta, "jac")

    def grad(self, theta, batch=None):
        """Gradient at ``theta``; charged as one gradient."""
        if self._jac is True:
            return self.value_and_grad(theta, batch)[1]
        args, share = self._args(batch)
        if self._jac is None:
            raise NotImplementedError("this FunctionObjective has no jac")
        self.counter.charge("grad", share)
        return self._vector(self._jac(theta, *args), theta, "jac")

    def hessp(self, theta, v, batch=None):
        """Hessian at ``theta`` applied to ``v``."""
        args, share = self._args(batch)
        if self._hessp is None:
            raise NotImplementedError("this FunctionObjective has no hessp")
        self.counter.charge("hessp", share)
        return self._vector(self._hessp(theta, v, *args), theta, "hessp")

    def __repr__(self):
        name = getattr(self._fun, "__name__", type(self._fun).__name__)
        return f"FunctionObjective({name}, n_samples={self.n_samples})"
