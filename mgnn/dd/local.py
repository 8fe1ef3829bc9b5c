"""Subdomain problems and their local solvers.

A subdomain problem is an objective in the protocol of :mod:`mgnn.optim`
(``value``, ``value_and_grad``, ``grad``, ``hessp``, ``counter``, ``space``),
built around the current global iterate ``x``:

:class:`ParameterSubproblem`
    ``phi_s(z) = f(x + R_s^T (z - R_s x))``: the objective as a function of
    subdomain ``s``'s entries of ``theta`` (``R_s`` picks them), the others
    frozen. Its gradient at ``z = R_s x`` *is* the restricted global gradient
    ``R_s grad f(x)``: first-order consistency holds by construction. Every
    evaluation is one evaluation of the whole objective (a forward and
    backward sweep of the full network on all data) and is charged as such.
:class:`DataSubproblem`
    ``phi_s(z) = f_s(z) + <shift, z - x>`` with ``f_s`` the objective on the
    subdomain's samples (``batch=``) and, with first-order consistency,
    ``shift = grad f(x) - grad f_s(x)``, so that ``grad phi_s(x) = grad f(x)``
    (DD4ML's APTS_D / APTS_PINN). An evaluation costs the subdomain's share
    of the data.

The local solvers take ``iters`` steps and keep their state (the L-SR1 matrix
or the L-BFGS memory, in the subdomain's coordinates) in an object the caller
owns, so it persists across outer iterations:

:func:`local_trust_region`
    trust-region steps (:func:`~mgnn.optim.trust_region_step`: Steihaug-Toint
    CG, ratio test, radius update), with L-SR1 or exact curvature;
:func:`local_lbfgs`
    L-BFGS steps with a strong-Wolfe search (:func:`~mgnn.optim.lbfgs_step`).

A non-finite local loss or gradient at a trial point is a rejected step (the
trust region shrinks, the line search backtracks), never a crash: the global
iterate is not touched by a subdomain solve.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from mgnn.optim.lbfgs import lbfgs_step
from mgnn.optim.trust_region import trust_region_step
from mgnn.vectorspace import EuclideanSpace

__all__ = ["ParameterSubproblem", "DataSubproblem", "LocalResult", "local_trust_region",
           "local_lbfgs"]


class _Subproblem:
    """Shared plumbing: the counter is the objective's (read at call time)."""

    objective = None

    @property
    def counter(self):
        return self.objective.counter

    def grad(self, z, batch=None):
        """Gradient of the local function at ``z``."""
        return self.value_and_grad(z, batch)[1]


class ParameterSubproblem(_Subproblem):
    """The objective over one parameter subdomain, the other entries frozen at ``x``.

    Parameters
    ----------
    objective : object
        In the objective protocol.
    x : ndarray
        The global iterate (copied; its other entries stay frozen).
    idx : ndarray of int
        The subdomain's entries of ``theta``.

    Attributes
    ----------
    z0 : ndarray
        ``x[idx]``, the local starting point.
    last : tuple or None
        ``(z, f, g_full)`` of the latest evaluation: the point (the very
        array passed in), the loss and the *full* gradient, which a caller
        may reuse at an accepted point.

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.optim import FunctionObjective
    >>> A = np.array([[2.0, 1.0], [1.0, 3.0]])
    >>> obj = FunctionObjective(lambda x: 0.5 * x @ A @ x, lambda x: A @ x,
    ...                         lambda x, v: A @ v)
    >>> x = np.array([1.0, 1.0])
    >>> sub = ParameterSubproblem(obj, x, np.array([1]))
    >>> sub.value_and_grad(sub.z0)        # f(x) and the second entry of grad f(x)
    (3.5, array([4.]))
    >>> sub.hessp(sub.z0, np.array([1.0]))
    array([3.])
    """

    def __init__(self, objective, x, idx):
        self.objective = objective
        self.idx = idx
        self._x = x.copy()
        self.z0 = self._x[idx]
        self.space = EuclideanSpace()
        self.n_samples = getattr(objective, "n_samples", None)
        self.n_params = int(idx.size)
        self.last = None

    def full(self, z):
        """The global parameter vector with the subdomain's entries set to ``z`` (a copy)."""
        out = self._x.copy()
        out[self.idx] = z
        return out

    def _point(self, z):
        self._x[self.idx] = z  # in place: no allocation of a full vector per evaluation
        return self._x

    def value(self, z, batch=None):
        return float(self.objective.value(self._point(z), batch=batch))

    def value_and_grad(self, z, batch=None):
        f, g = self.objective.value_and_grad(self._point(z), batch=batch)
        self.last = (z, float(f), g)
        return float(f), g[self.idx]

    def hessp(self, z, v, batch=None):
        V = np.zeros_like(self._x)
        V[self.idx] = v
        return self.objective.hessp(self._point(z), V, batch=batch)[self.idx]

    def __repr__(self):
        return f"ParameterSubproblem({self.idx.size} of {self._x.size} parameters)"


class DataSubproblem(_Subproblem):
    """The objective on one data subdomain, plus a first-order-consistency term.

    Parameters
    ----------
    objective : object
        In the objective protocol, with ``n_samples`` and ``batch=``.
    x : ndarray
        The global iterate (copied): the expansion point of the linear term.
    batch : ndarray of int or None
        The subdomain's samples (None: all of them).
    shift : ndarray or None
        ``grad f(x) - grad f_s(x)`` (first-order consistency) or None.

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.optim import FunctionObjective
    >>> X, y = np.eye(3), np.array([1.0, 2.0, 3.0])
    >>> def loss(t, i):
    ...     i = slice(None) if i is None else i
    ...     return 0.5 * np.mean((X[i] @ t - y[i]) ** 2)
    >>> def grad(t, i):
    ...     i = slice(None) if i is None else i
    ...     return X[i].T @ (X[i] @ t - y[i]) / len(y[i])
    >>> obj = FunctionObjective(loss, grad, n_samples=3)
    >>> x = np.zeros(3); b = np.array([0, 1])
    >>> shift = obj.grad(x) - obj.grad(x, batch=b)
    >>> sub = DataSubproblem(obj, x, b, shift)
    >>> bool(np.allclose(sub.grad(x), obj.grad(x)))      # first-order consistent
    True
    """

    def __init__(self, objective, x, batch, shift=None):
        self.objective = objective
        self.x0 = x.copy()
        self.batch = batch
        self.shift = shift
        self.space = EuclideanSpace()
        self.n_samples = getattr(objective, "n_samples", None)
        self.n_params = int(self.x0.size)
        self.last = None

    def _check_batch(self, batch):
        if batch is not None:
            raise ValueError("batch must be None: a data subproblem evaluates on its own "
                             "samples")

    def value(self, z, batch=None):
        self._check_batch(batch)
        f = float(self.objective.value(z, batch=self.batch))
        if self.shift is not None:
            f += float(np.dot(self.shift, z - self.x0))
        return f

    def value_and_grad(self, z, batch=None):
        self._check_batch(batch)
        f, g = self.objective.value_and_grad(z, batch=self.batch)
        f = float(f)
        if self.shift is not None:
            f += float(np.dot(self.shift, z - self.x0))
            g = g + self.shift
        self.last = (z, f, None)
        return f, g

    def hessp(self, z, v, batch=None):
        self._check_batch(batch)
        return self.objective.hessp(z, v, batch=self.batch)

    def __repr__(self):
        n = "all" if self.batch is None else str(len(self.batch))
        foc = "with" if self.shift is not None else "without"
        return (f"DataSubproblem({n} of {self.n_samples} samples, {foc} first-order "
                "consistency)")


@dataclass
class LocalResult:
    """Outcome of a local solve on one subdomain.

    Attributes
    ----------
    z, f, g : ndarray, float, ndarray
        End point, local loss and local gradient there.
    pred : float
        Trust region: the sum of the model-predicted reductions of the
        accepted steps. L-BFGS: the local loss reduction ``f_start - f``.
    steps, accepted : int
        Steps taken and accepted (L-BFGS: every successful step is accepted).
    inner : int
        CG iterations (trust region) or trial points of the line searches.
    radius : float
        Final local radius (trust region; NaN for L-BFGS).
    on_boundary : bool
        The last accepted step reached its trust-region boundary.
    status : str
        'iterations' (all ``iters`` steps taken), 'converged' (local gradient
        below ``gtol``), 'small_radius', 'line_search_failed'.
    full : tuple or None
        ``(f, grad f)`` of the whole objective at the end point, when the
        subproblem is a parameter subproblem and the end point was evaluated.
    """

    z: object
    f: float
    g: object
    pred: float = 0.0
    steps: int = 0
    accepted: int = 0
    inner: int = 0
    radius: float = math.nan
    on_boundary: bool = False
    status: str = "iterations"
    full: tuple = None

    @property
    def moved(self):
        return self.accepted > 0


def _safe(fg):
    """A local evaluation that maps non-finite results to a rejected trial."""

    def call(z):
        f, g = fg(z)
        if not (math.isfinite(f) and bool(np.isfinite(g).all())):
            return math.inf, np.where(np.isfinite(g), g, 0.0)
        return f, g

    return call


def local_trust_region(sub, z, f, g, radius, iters, *, B=None, params=None, subproblem="cg",
                       cg_tol=None, cg_maxiter=None, gtol=0.0, min_radius=0.0):
    """Up to ``iters`` trust-region steps on ``sub`` from ``z``.

    Parameters
    ----------
    sub : subproblem
        The local function (objective protocol).
    z, f, g : ndarray, float, ndarray
        Start point, its local loss and gradient.
    radius : float
        Initial local radius.
    iters : int
        Maximum number of steps (accepted or not).
    B : LSR1 or None
        L-SR1 matrix of this subdomain (updated in place with every trial
        pair), or None for the exact ``sub.hessp``.
    params, subproblem, cg_tol, cg_maxiter
        As for ``minimize(method='trust-region')``; ``cg_tol=None`` is the
        forcing term ``min(0.5, sqrt(||g||))`` with exact curvature and 1e-8
        with L-SR1, as there.
    gtol : float
        Stop when the local gradient norm is ``<= gtol``.
    min_radius : float
        Stop when the radius falls below it.

    Returns
    -------
    LocalResult
    """
    fg = _safe(sub.value_and_grad)
    space = sub.space
    out = LocalResult(z, f, g, radius=radius)
    full = None
    for _ in range(iters):
        gnorm = space.norm(g)
        if gnorm <= gtol:
            out.status = "converged"
            break
        if radius < min_radius:
            out.status = "small_radius"
            break
        hess = B.matvec if B is not None else functools.partial(sub.hessp, z)
        if cg_tol is not None:
            tol = cg_tol
        elif B is None:
            tol = min(0.5, math.sqrt(gnorm))
        else:
            tol = 1e-8
        st = trust_region_step(fg, z, f, g, radius, hess, space=space, params=params,
                               subproblem=subproblem, tol=tol, maxiter=cg_maxiter)
        if B is not None:
            B.update(st.step, st.g_trial - g)
        out.steps += 1
        out.inner += st.sub.niter
        if st.accepted:
            out.accepted += 1
            out.pred += st.pred
            out.on_boundary = st.sub.hits_boundary
            last = getattr(sub, "last", None)
            full = (last[1], last[2]) if last is not None and last[0] is st.x and \
                last[2] is not None else None
        z, f, g, radius = st.x, st.f, st.g, st.radius
    out.z, out.f, out.g, out.radius = z, f, g, radius
    out.full = full if out.accepted else None
    return out


def local_lbfgs(sub, z, f, g, iters, memory, *, c1=1e-4, c2=0.9, maxls=20, gtol=0.0):
    """Up to ``iters`` L-BFGS steps on ``sub`` from ``z`` (``memory`` updated in place).

    Returns
    -------
    LocalResult
        ``pred`` is the local loss reduction; ``inner`` the number of
        line-search trial points.
    """
    fg = _safe(sub.value_and_grad)
    space = sub.space
    f0 = f
    out = LocalResult(z, f, g)
    full = None
    for _ in range(iters):
        gnorm = space.norm(g)
        if gnorm <= gtol:
            out.status = "converged"
            break
        ls = lbfgs_step(fg, z, f, g, memory, space=space, c1=c1, c2=c2, maxls=maxls,
                        gnorm=gnorm)
        out.steps += 1
        out.inner += ls.nevals
        if ls.alpha is None:
            out.status = "line_search_failed"
            break
        out.accepted += 1
        z, f, g = ls.x, ls.f, ls.g
        last = getattr(sub, "last", None)
        full = (last[1], last[2]) if last is not None and last[0] is z and \
            last[2] is not None else None
    out.z, out.f, out.g = z, f, g
    out.pred = f0 - f
    out.full = full if out.accepted else None
    return out
