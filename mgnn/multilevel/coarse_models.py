"""Coarse-level models of recursive multilevel trust-region methods (RMTR).

On a coarse level of a :class:`~mgnn.multilevel.Hierarchy` RMTR does not minimize
the coarse objective ``f_c`` itself but a model ``h`` of the next finer level's
function ``f`` (which may itself be a model) around the fine iterate ``theta``:
with ``x0 = Pi theta``, ``d = x - x0``, the fine gradient ``g`` and the fine
Hessian (or its L-SR1 approximation) ``B`` at ``theta``,

``FirstOrderModel``
    ``h(x) = f_c(x) + <R g - grad f_c(x0), d>``: first-order coherent,
    ``grad h(x0) = R g``;
``SecondOrderModel``
    the first-order model plus ``1/2 <d, (R B P - B_c) d>`` with ``B_c`` the
    Hessian of ``f_c`` at ``x0``: also ``hess h(x0) = R B P``;
``GalerkinModel``
    ``h(x) = <R g, d> + 1/2 <d, R B P d>``: the fine quadratic model on the
    range of ``P`` (``f_c`` is not evaluated).

The models follow the objective protocol of :mod:`mgnn.optim` (``value``,
``grad``, ``value_and_grad``, ``hessp``, ``counter``, ``space``, ``n_samples``),
so a coarse-level solve can be a trust-region method or, recursively, RMTR.
Their ``counter`` is the coarse objective's: every evaluation of ``f_c`` is
charged there, and every product with ``B`` is charged by whatever computes it
(the fine objective's ``hessp`` charges the fine counter; an L-SR1 matrix costs
nothing). All corrections are computed on one mini-batch, ``batch``, fixed when
the model is built; the methods accept ``batch=None`` (that batch) or the same
index array, and reject any other.

Costs per evaluation (in calls): first-order, one ``f_c`` evaluation;
second-order and Galerkin add one product with ``R B P`` per ``value``,
``value_and_grad`` and ``hessp`` call, which with ``B`` the exact fine Hessian is
one fine ``hessp`` (more than a fine gradient): these models pay off with L-SR1
curvature or when ``f_c`` is much cheaper than ``f``.
"""

from __future__ import annotations

import math

import numpy as np

from mgnn.vectorspace import EuclideanSpace

__all__ = ["CoarseModel", "FirstOrderModel", "SecondOrderModel", "GalerkinModel",
           "MODELS", "make_coarse_model", "GramSpace"]


class CoarseModel:
    """Common part of the coarse models: expansion point, batch, counter, space.

    Attributes
    ----------
    objective : object
        The coarse objective ``f_c`` (its ``counter`` is the model's).
    x0 : ndarray
        Expansion point ``Pi theta``.
    target_grad : ndarray
        ``R g``, the gradient the model has at ``x0``.
    f0, g0 : float, ndarray
        Model value and gradient at ``x0`` (computed when the model is built).
    batch : ndarray or None
        The mini-batch every evaluation uses.
    """

    kind = "abstract"

    def __init__(self, objective, x0, target_grad, batch=None):
        self.objective = objective
        self.x0 = x0.copy()
        self.target_grad = target_grad
        if self.x0.shape != target_grad.shape:
            raise ValueError(f"target_grad must have shape {self.x0.shape}, "
                             f"got {target_grad.shape}")
        self.batch = batch
        self.counter = objective.counter
        self.space = getattr(objective, "space", None) or EuclideanSpace()
        self.n_samples = getattr(objective, "n_samples", None)

    def _batch(self, batch):
        if batch is not None and batch is not self.batch and not (
                self.batch is not None and np.array_equal(batch, self.batch)):
            raise ValueError("batch must be None or the batch the model was built on: its "
                             "corrections are computed on that batch")
        return self.batch

    def grad(self, x, batch=None):
        """Model gradient at ``x``."""
        return self.value_and_grad(x, batch)[1]

    def correction_hessp(self, v):
        """``C v`` where ``hess h = hess f_c + C`` (None: no correction)."""
        return None

    def __repr__(self):
        bs = "all data" if self.batch is None else f"batch of {len(self.batch)}"
        return (f"{type(self).__name__}(n={self.x0.size}, {bs}, |R g| = "
                f"{self.space.norm(self.target_grad):.3e}, objective={self.objective!r})")


class FirstOrderModel(CoarseModel):
    """``h(x) = f_c(x) + <R g - grad f_c(x0), x - x0>`` (first-order coherent).

    Building it evaluates ``f_c`` and its gradient at ``x0`` once (charged to
    the coarse counter); ``f0 = f_c(x0)`` and ``g0 = grad h(x0)``, which equals
    ``target_grad = R g`` up to round-off.

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.optim import FunctionObjective
    >>> fc = FunctionObjective(lambda x: 0.5 * x @ x, lambda x: x, lambda x, v: v)
    >>> h = FirstOrderModel(fc, np.array([1.0, 2.0]), target_grad=np.array([3.0, 0.0]))
    >>> h.grad(h.x0).tolist(), h.f0
    ([3.0, 0.0], 2.5)
    >>> round(h.value(np.array([0.0, 2.0])), 12)    # 0.5*4 + <[2,-2], [-1, 0]>
    0.0
    """

    kind = "first-order"

    def __init__(self, objective, x0, target_grad, batch=None):
        super().__init__(objective, x0, target_grad, batch)
        f0, gc = objective.value_and_grad(self.x0, batch=batch)
        self.shift = target_grad - gc
        self.f0 = float(f0)
        self.g0 = gc + self.shift

    def value(self, x, batch=None):
        """Model value at ``x``."""
        f = self.objective.value(x, batch=self._batch(batch))
        return float(f) + self.space.dot(self.shift, x - self.x0)

    def value_and_grad(self, x, batch=None):
        """Model value and gradient at ``x``."""
        f, g = self.objective.value_and_grad(x, batch=self._batch(batch))
        return float(f) + self.space.dot(self.shift, x - self.x0), g + self.shift

    def hessp(self, x, v, batch=None):
        """``hess f_c(x) v`` (the correction is linear)."""
        return self.objective.hessp(x, v, batch=self._batch(batch))


class SecondOrderModel(FirstOrderModel):
    """First-order model plus ``1/2 <d, C d>``, ``C = R B P - B_c``, ``d = x - x0``.

    Parameters
    ----------
    objective : object
        Coarse objective ``f_c``.
    x0, target_grad : ndarray
        ``Pi theta`` and ``R g``.
    fine_hessp : callable
        ``v -> B v`` on the fine level (at ``theta``, on the batch).
    prolong, restrict : callable
        ``P`` and ``R`` of the level pair.
    coarse_hessp : callable, optional
        ``v -> B_c v``; default the exact ``f_c`` Hessian at ``x0`` on the batch.
    batch : ndarray, optional

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.optim import FunctionObjective
    >>> fc = FunctionObjective(lambda x: 0.5 * x @ x, lambda x: x, lambda x, v: v)
    >>> P = lambda x: np.repeat(x, 2); R = lambda g: g.reshape(-1, 2).sum(axis=1)
    >>> h = SecondOrderModel(fc, np.zeros(1), np.array([1.0]), lambda v: 3.0 * v, P, R)
    >>> h.hessp(h.x0, np.array([1.0]))      # R B P = 6, as the fine model has
    array([6.])
    """

    kind = "second-order"

    def __init__(self, objective, x0, target_grad, fine_hessp, prolong, restrict,
                 coarse_hessp=None, batch=None):
        super().__init__(objective, x0, target_grad, batch)
        self._fine_hessp, self._P, self._R = fine_hessp, prolong, restrict
        if coarse_hessp is None:
            x0_, b = self.x0, batch

            def coarse_hessp(v):
                return objective.hessp(x0_, v, batch=b)
        self._coarse_hessp = coarse_hessp

    def correction_hessp(self, v):
        return self._R(self._fine_hessp(self._P(v))) - self._coarse_hessp(v)

    def value(self, x, batch=None):
        d = x - self.x0
        return super().value(x, batch) + 0.5 * self.space.dot(d, self.correction_hessp(d))

    def value_and_grad(self, x, batch=None):
        f, g = super().value_and_grad(x, batch)
        d = x - self.x0
        Cd = self.correction_hessp(d)
        return f + 0.5 * self.space.dot(d, Cd), g + Cd

    def hessp(self, x, v, batch=None):
        return super().hessp(x, v, batch) + self.correction_hessp(v)


class GalerkinModel(CoarseModel):
    """``h(x) = <R g, d> + 1/2 <d, R B P d>``, ``d = x - x0`` (``f_c`` unused).

    ``f0 = 0`` and ``g0 = R g``. Each ``value``, ``value_and_grad`` and
    ``hessp`` costs one product with the fine ``B``.

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.optim import FunctionObjective
    >>> fc = FunctionObjective(lambda x: 0.0, lambda x: 0 * x)
    >>> P = lambda x: np.repeat(x, 2); R = lambda g: g.reshape(-1, 2).sum(axis=1)
    >>> h = GalerkinModel(fc, np.zeros(1), np.array([-4.0]), lambda v: v, P, R)
    >>> h.value_and_grad(np.array([2.0]))     # -8 + 1/2 * 2 * 4
    (-4.0, array([0.]))
    """

    kind = "galerkin"

    def __init__(self, objective, x0, target_grad, fine_hessp, prolong, restrict, batch=None):
        super().__init__(objective, x0, target_grad, batch)
        self._fine_hessp, self._P, self._R = fine_hessp, prolong, restrict
        self.f0 = 0.0
        self.g0 = target_grad

    def _RBP(self, v):
        return self._R(self._fine_hessp(self._P(v)))

    def value(self, x, batch=None):
        self._batch(batch)
        d = x - self.x0
        return self.space.dot(self.target_grad, d) + 0.5 * self.space.dot(d, self._RBP(d))

    def value_and_grad(self, x, batch=None):
        self._batch(batch)
        d = x - self.x0
        Bd = self._RBP(d)
        return (self.space.dot(self.target_grad, d) + 0.5 * self.space.dot(d, Bd),
                self.target_grad + Bd)

    def hessp(self, x, v, batch=None):
        self._batch(batch)
        return self._RBP(v)


#: Names of the coarse models accepted by :func:`make_coarse_model` and ``rmtr``.
MODELS = ("first-order", "second-order", "galerkin")


def make_coarse_model(kind, objective, x0, target_grad, fine_hessp, prolong, restrict,
                      coarse_hessp=None, batch=None):
    """Build the coarse model named ``kind`` (one of :data:`MODELS`).

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.optim import FunctionObjective
    >>> fc = FunctionObjective(lambda x: 0.5 * x @ x, lambda x: x, lambda x, v: v)
    >>> make_coarse_model("first-order", fc, np.zeros(2), np.ones(2), None, None, None)
    ... # doctest: +ELLIPSIS
    FirstOrderModel(n=2, all data, |R g| = 1.414e+00, objective=FunctionObjective(...))
    """
    if kind == "first-order":
        return FirstOrderModel(objective, x0, target_grad, batch)
    if kind == "second-order":
        return SecondOrderModel(objective, x0, target_grad, fine_hessp, prolong, restrict,
                                coarse_hessp, batch)
    if kind == "galerkin":
        return GalerkinModel(objective, x0, target_grad, fine_hessp, prolong, restrict, batch)
    raise ValueError(f"unknown model {kind!r}; expected one of "
                     + ", ".join(repr(m) for m in MODELS))


class GramSpace:
    """The inner product a prolongation induces on a coarse level.

    ``<x, y>_c = <P x, P y>_f`` in the inner product of the finer level, which
    may itself be a :class:`GramSpace` (then the norm is, recursively, the
    Euclidean norm on the finest level of the fully prolonged vector):
    ``||s||_c = ||P s||_f``, the norm of Gratton, Sartenaer & Toint's RMTR,
    in which a coarse trust region of radius ``Delta`` is exactly the set of
    coarse steps whose prolongation lies in the fine one of radius ``Delta``.
    The Gram operator is ``M = R M_f P`` (``R = P^T``, checked on construction);
    :meth:`solve` applies ``M^{-1}`` by conjugate gradients, using only ``P``
    and ``R`` (two CG iterations when ``M`` is diagonal with two distinct
    entries, as for constant depth interpolation). Steihaug-Toint CG in this
    space, with gradient ``M^{-1} g`` and operator ``M^{-1} B``, is CG
    preconditioned by ``M`` on ``min <g, s> + 1/2 <s, B s>``.

    Parameters
    ----------
    prolong, restrict : callable
        ``P`` and ``R = P^T`` of the level pair.
    n : int
        Coarse dimension.
    fine_space : vector space, optional
        Inner product of the finer level (default Euclidean).
    tol : float, default 1e-12
        Relative residual of the CG solve in :meth:`solve`.
    maxiter : int, optional
        CG iterations of :meth:`solve` (default ``min(n, 500)``); not
        converging raises (``P`` without full column rank).
    rng : int, default 0
        Seed of the random vectors of the ``R = P^T`` check.

    Examples
    --------
    >>> import numpy as np
    >>> P = lambda x: np.repeat(x, 2); R = lambda g: g.reshape(-1, 2).sum(axis=1)
    >>> M = GramSpace(P, R, 2)
    >>> M.norm(np.array([3.0, 4.0])), M.gram(np.array([3.0, 4.0])).tolist()
    (7.0710678118654755, [6.0, 8.0])
    >>> M.solve(np.array([6.0, 8.0])).tolist()
    [3.0, 4.0]
    >>> M
    GramSpace(n=2, <x, y> = <P x, P y> in EuclideanSpace())
    """

    def __init__(self, prolong, restrict, n, fine_space=None, tol=1e-12, maxiter=None, rng=0):
        self.P, self.R, self.n = prolong, restrict, int(n)
        self.fine_space = EuclideanSpace() if fine_space is None else fine_space
        self.tol = float(tol)
        self.maxiter = min(self.n, 500) if maxiter is None else int(maxiter)
        r = np.random.default_rng(rng)
        u = r.standard_normal(self.n)
        v = self.P(u)
        w = r.standard_normal(v.size)
        a, b = float(np.dot(self.R(w), u)), float(np.dot(w, v))
        if not abs(a - b) <= 1e-10 * (abs(a) + abs(b) + 1e-300):
            raise ValueError("GramSpace needs R = P^T (the Euclidean adjoint): "
                             f"<R w, u> = {a:.6e} but <w, P u> = {b:.6e}")

    def _fine_gram(self, v):
        g = getattr(self.fine_space, "gram", None)
        return v if g is None else g(v)

    def dot(self, x, y):
        """``<P x, P y>`` in the finer level's inner product."""
        return self.fine_space.dot(self.P(x), self.P(y))

    def norm(self, x):
        """``||P x||`` in the finer level's norm."""
        return self.fine_space.norm(self.P(x))

    def max_abs(self, x):
        return float(np.max(np.abs(x))) if x.size else 0.0

    def all_finite(self, x):
        return bool(np.isfinite(x).all())

    def gram(self, v):
        """``M v = R M_f P v``."""
        return self.R(self._fine_gram(self.P(v)))

    def solve(self, b):
        """``M^{-1} b`` by conjugate gradients to the relative residual ``tol``."""
        x = np.zeros_like(b)
        r = b.astype(np.float64)  # a copy
        rr = float(np.dot(r, r))
        stop = (self.tol ** 2) * rr
        if rr == 0.0:
            return x
        d = r.copy()
        for _ in range(self.maxiter):
            Md = self.gram(d)
            alpha = rr / float(np.dot(d, Md))
            x += alpha * d
            r -= alpha * Md
            rr_next = float(np.dot(r, r))
            if rr_next <= stop:
                return x
            d = r + (rr_next / rr) * d
            rr = rr_next
        raise ValueError(f"GramSpace.solve: CG did not reach the relative residual "
                         f"{self.tol:g} in {self.maxiter} iterations ({math.sqrt(rr):.3e}); "
                         "is P of full column rank?")

    def __repr__(self):
        return f"GramSpace(n={self.n}, <x, y> = <P x, P y> in {self.fine_space!r})"
