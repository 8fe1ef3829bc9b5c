"""Line searches on a vector space: strong Wolfe, and Armijo backtracking.

The one-dimensional search is scipy's: MINPACK's ``dcsrch`` (Moré–Thuente, the
search of L-BFGS-B) with the Nocedal–Wright zoom (``scalar_search_wolfe2``) as
fallback; :func:`armijo` is scipy's backtracking (``scalar_search_armijo``,
quadratic then cubic interpolation) for the sufficient-decrease condition alone.
What is ours is the restriction to the line: ``phi(alpha) =
f(x + alpha d)`` and ``phi'(alpha) = <grad f(x + alpha d), d>`` with the inner
product of the vector space, and one ``value_and_grad`` per trial step.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize._linesearch import (
    LineSearchWarning,
    scalar_search_armijo,
    scalar_search_wolfe2,
)

try:  # scipy >= 1.11
    from scipy.optimize._dcsrch import DCSRCH
except ImportError:  # pragma: no cover
    DCSRCH = None

from mgnn.vectorspace import EuclideanSpace

__all__ = ["strong_wolfe", "armijo", "LineSearchResult"]


@dataclass
class LineSearchResult:
    """Outcome of :func:`strong_wolfe`.

    ``alpha`` is None when no step satisfying the strong Wolfe conditions was
    found; ``x``, ``f``, ``g`` are then the last trial point (or None).
    """

    alpha: float | None
    x: object
    f: float | None
    g: object
    nevals: int


class _TooManyEvals(Exception):
    pass


def strong_wolfe(fun_and_grad, x, d, f0, g0, *, space=None, c1=1e-4, c2=0.9, maxls=20,
                 alpha0=1.0, amax=1e10):
    """Find ``alpha`` with the strong Wolfe conditions along ``d``.

    ``f(x + a d) <= f0 + c1 a <g0, d>`` and ``|<g(x + a d), d>| <= c2 |<g0, d>|``.

    Parameters
    ----------
    fun_and_grad : callable
        ``x -> (f, g)``.
    x, d : ndarray
        Point and descent direction (``<g0, d> < 0``).
    f0, g0 : float, ndarray
        Loss and gradient at ``x``.
    space : vector space, optional
        Inner products (default Euclidean).
    c1, c2 : float
        Wolfe constants, ``0 < c1 < c2 < 1``.
    maxls : int
        Maximum number of trial steps (each one ``value_and_grad``).
    alpha0 : float
        First trial step.

    Returns
    -------
    LineSearchResult

    Examples
    --------
    >>> import numpy as np
    >>> fg = lambda x: (0.5 * x @ x, x)
    >>> x = np.array([2.0, 0.0])
    >>> r = strong_wolfe(fg, x, -x, *fg(x))
    >>> r.alpha, r.x.tolist(), r.nevals
    (1.0, [0.0, 0.0], 1)
    """
    space = EuclideanSpace() if space is None else space
    derphi0 = space.dot(g0, d)
    if not derphi0 < 0:
        raise ValueError(f"d must be a descent direction, got <g, d> = {derphi0}")
    cache = {}
    count = [0]

    def evaluate(alpha, limit=True):
        alpha = float(alpha)
        if alpha not in cache:
            if limit and count[0] >= maxls:
                raise _TooManyEvals
            count[0] += 1
            xa = x + alpha * d
            fa, ga = fun_and_grad(xa)
            cache.clear()  # keep one point: memory is O(1) vectors
            cache[alpha] = (xa, fa, ga)
        return cache[alpha]

    def phi(alpha):
        return 0.0 + evaluate(alpha)[1] if alpha else f0

    def derphi(alpha):
        return space.dot(evaluate(alpha)[2], d) if alpha else derphi0

    alpha = None
    if DCSRCH is not None:
        try:
            search = DCSRCH(phi, derphi, c1, c2, 1e-14, 0.0, amax)
            stp, _, _, task = search(alpha0, phi0=f0, derphi0=derphi0, maxiter=maxls)
            if task[:4] == b"CONV":
                alpha = stp
        except _TooManyEvals:
            pass
    if alpha is None and count[0] < maxls:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LineSearchWarning)
            try:
                alpha = scalar_search_wolfe2(
                    phi, derphi, f0, None, derphi0, c1=c1, c2=c2, amax=amax,
                    maxiter=maxls - count[0],
                )[0]
            except _TooManyEvals:
                alpha = None
    if alpha is None or not math.isfinite(alpha) or alpha <= 0:
        last = next(iter(cache.values()), (None, None, None))
        return LineSearchResult(None, *last, count[0])
    xa, fa, ga = evaluate(alpha, limit=False)
    return LineSearchResult(float(alpha), xa, fa, ga, count[0])


def armijo(fun_and_grad, x, d, f0, g0, *, space=None, c1=1e-4, maxls=20, alpha0=1.0):
    """Backtracking search for the sufficient-decrease (Armijo) condition along ``d``.

    ``f(x + a d) <= f0 + c1 a <g0, d>``, starting from ``alpha0`` and
    backtracking by quadratic, then cubic interpolation (scipy's
    ``scalar_search_armijo``, Nocedal & Wright pp. 56-57). Each trial costs
    one ``value_and_grad`` (the gradient at the accepted point is returned).
    Unlike :func:`strong_wolfe` there is no curvature condition: it suits a
    direction whose length is meaningful (a preconditioned step, ``alpha0 = 1``).

    Parameters
    ----------
    fun_and_grad, x, d, f0, g0, space, c1, maxls, alpha0
        As for :func:`strong_wolfe`.

    Returns
    -------
    LineSearchResult

    Examples
    --------
    >>> import numpy as np
    >>> fg = lambda x: (0.5 * x @ x, x)
    >>> x = np.array([2.0, 0.0])
    >>> r = armijo(fg, x, -3.0 * x, *fg(x))      # alpha 1 overshoots: backtrack
    >>> round(r.alpha, 12), r.nevals, bool(r.f < 2.0)
    (0.333333333333, 2, True)
    """
    space = EuclideanSpace() if space is None else space
    derphi0 = space.dot(g0, d)
    if not derphi0 < 0:
        raise ValueError(f"d must be a descent direction, got <g, d> = {derphi0}")
    last = {}
    count = [0]

    def phi(alpha):
        alpha = float(alpha)
        if count[0] >= maxls:
            raise _TooManyEvals
        count[0] += 1
        xa = x + alpha * d
        fa, ga = fun_and_grad(xa)
        last.clear()
        last[alpha] = (xa, fa, ga)
        return fa if math.isfinite(fa) else math.inf

    try:
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            alpha, _ = scalar_search_armijo(phi, f0, derphi0, c1=c1, alpha0=alpha0, amin=1e-12)
    except _TooManyEvals:
        alpha = None
    if alpha is None or not math.isfinite(alpha) or alpha <= 0 or float(alpha) not in last:
        prev = next(iter(last.values()), (None, None, None))
        return LineSearchResult(None, *prev, count[0])
    xa, fa, ga = last[float(alpha)]
    return LineSearchResult(float(alpha), xa, fa, ga, count[0])
