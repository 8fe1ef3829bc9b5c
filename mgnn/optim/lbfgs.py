"""Limited-memory BFGS with a strong-Wolfe line search."""

from __future__ import annotations

from collections import deque

from mgnn._validation import check_positive_int, check_scalar

from ._common import (
    CALLBACK_MESSAGE,
    RUN_OPTIONS,
    STATUS_CALLBACK,
    STATUS_CONVERGED,
    STATUS_MAXITER,
    STATUS_STALLED,
    Diverged,
    Run,
    check_maxiter,
    check_tol,
    parse_options,
    prepare_theta0,
)
from .linesearch import strong_wolfe

__all__ = ["LBFGSMemory", "lbfgs_step", "minimize_lbfgs", "LBFGS_DEFAULTS"]

#: Options of ``method='lbfgs'`` and their defaults.
LBFGS_DEFAULTS = {
    "maxiter": 1000,
    "gtol": 1e-5,
    "ftol": 0.0,
    "memory": 10,
    "c1": 1e-4,
    "c2": 0.9,
    "maxls": 20,
    **RUN_OPTIONS,
}


class LBFGSMemory:
    """The last ``m`` pairs ``(s, y)`` and the two-loop recursion for ``H g``.

    ``H0 = gamma I`` with ``gamma = <s, y> / <y, y>`` of the newest pair.
    Pairs with ``<s, y> <= eps <y, y>`` (no positive curvature) are skipped.

    Examples
    --------
    >>> import numpy as np
    >>> A = np.diag([1.0, 10.0])
    >>> mem = LBFGSMemory(5)
    >>> for s in (np.array([1.0, 0.0]), np.array([0.0, 1.0])):
    ...     _ = mem.update(s, A @ s)
    >>> mem.apply(A @ np.array([3.0, 4.0])).round(12).tolist()   # H = A^-1 on span
    [3.0, 4.0]
    """

    def __init__(self, m, space=None, eps=1e-10):
        from mgnn.vectorspace import EuclideanSpace

        self.m = check_positive_int(m, "memory")
        self.space = EuclideanSpace() if space is None else space
        self.eps = eps
        self.pairs = deque(maxlen=self.m)  # (s, y, rho = 1 / <s, y>)
        self.gamma = 1.0

    def __len__(self):
        return len(self.pairs)

    def clear(self):
        self.pairs.clear()
        self.gamma = 1.0

    def update(self, s, y):
        """Store ``(s, y)``; return False when skipped for lack of curvature."""
        sy = self.space.dot(s, y)
        yy = self.space.dot(y, y)
        if not sy > self.eps * yy or yy == 0.0:
            return False
        self.pairs.append((s, y, 1.0 / sy))
        self.gamma = sy / yy
        return True

    def state_dict(self):
        """The stored pairs (oldest first) and ``gamma``."""
        return {"pairs": [(s, y, rho) for s, y, rho in self.pairs], "gamma": self.gamma}

    def load_state_dict(self, d):
        if len(d["pairs"]) > self.m:
            raise ValueError(f"the saved memory holds {len(d['pairs'])} pairs, more than "
                             f"memory = {self.m}")
        self.pairs.clear()
        for s, y, rho in d["pairs"]:
            self.pairs.append((s, y, float(rho)))
        self.gamma = float(d["gamma"])

    def apply(self, g):
        """``H g`` by the two-loop recursion (inner products through the space)."""
        dot = self.space.dot
        q = g.copy()
        alphas = []
        for s, y, rho in reversed(self.pairs):
            a = rho * dot(s, q)
            alphas.append(a)
            q -= a * y
        r = self.gamma * q
        for (s, y, rho), a in zip(self.pairs, reversed(alphas), strict=True):
            b = rho * dot(y, r)
            r += (a - b) * s
        return r


def lbfgs_step(fun_and_grad, x, f, g, memory, *, space=None, c1=1e-4, c2=0.9, maxls=20,
               gnorm=None):
    """One L-BFGS iteration: two-loop direction, strong-Wolfe search, memory update.

    The direction is ``-H g`` from ``memory`` (an :class:`LBFGSMemory`), or
    ``-g / ||g||`` when the memory is empty or ``-H g`` is not a descent
    direction (the memory is then cleared). If the search fails with a
    non-empty memory, the memory is cleared and a steepest-descent search is
    tried once. On success the pair ``(x_new - x, g_new - g)`` is offered to
    the memory. This is the loop body of :func:`minimize_lbfgs`; the
    domain-decomposition solvers (:mod:`mgnn.dd`) call it on subdomains.

    Parameters
    ----------
    fun_and_grad : callable
        ``x -> (f, g)``; one call per trial step.
    x, f, g : ndarray, float, ndarray
        Current iterate, loss and gradient.
    memory : LBFGSMemory
        Updated in place.
    space : vector space, optional
        Inner products (default: the memory's).
    c1, c2, maxls
        Strong-Wolfe constants and the trial budget of :func:`strong_wolfe`.
    gnorm : float, optional
        ``||g||`` when the caller has it.

    Returns
    -------
    LineSearchResult
        ``alpha`` is None when no step satisfied the strong Wolfe conditions
        (the memory is then empty); ``x, f, g`` are the new point otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> A = np.diag([1.0, 10.0])
    >>> fg = lambda x: (0.5 * x @ A @ x, A @ x)
    >>> x = np.array([1.0, 1.0]); mem = LBFGSMemory(5)
    >>> for _ in range(6):
    ...     ls = lbfgs_step(fg, x, *fg(x), mem)
    ...     x = ls.x
    >>> bool(np.linalg.norm(x) < 1e-8), len(mem) > 0
    (True, True)
    """
    space = memory.space if space is None else space
    if gnorm is None:
        gnorm = space.norm(g)
    ls = None
    for attempt in range(2):
        if len(memory):
            d = -memory.apply(g)
            if not space.dot(g, d) < 0:  # lost positive definiteness
                memory.clear()
        if not len(memory):
            d = -g / max(gnorm, 1e-300)
        ls = strong_wolfe(fun_and_grad, x, d, f, g, space=space, c1=c1, c2=c2, maxls=maxls)
        if ls.alpha is not None or not len(memory) or attempt:
            break
        memory.clear()
    if ls.alpha is not None:
        memory.update(ls.x - x, ls.g - g)
    return ls


def minimize_lbfgs(objective, theta0, options=None, callback=None):
    """L-BFGS: two-loop recursion with a strong-Wolfe line search.

    Called through ``minimize(..., method='lbfgs')``. Every trial step of the
    line search costs one ``value_and_grad``. The first step (and any step after
    a reset of the memory) is along ``-g / ||g||`` with trial length 1, as in
    L-BFGS-B; later trial steps have length 1. If the line search fails the
    memory is cleared and a steepest-descent search is tried once before the run
    stops with status 2.

    Options
    -------
    maxiter : int, default 1000
    gtol : float, default 1e-5
        Stop when ``||g|| <= gtol`` (the space's norm).
    ftol : float, default 0.0
        Stop when ``f_k - f_{k+1} <= ftol * max(|f_k|, |f_{k+1}|, 1)``; 0 turns
        the test off.
    memory : int, default 10
        Number of stored pairs.
    c1, c2 : float, default 1e-4, 0.9
        Strong-Wolfe constants (``0 < c1 < c2 < 1``).
    maxls : int, default 20
        Maximum number of trial steps per line search.
    disp, disp_every, checkpoint, resume
        Progress lines, checkpoints and resuming (:mod:`mgnn.runs`; see
        :func:`~mgnn.optim.stochastic.minimize_sgd`).

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.optimize import rosen, rosen_der
    >>> from mgnn.optim import minimize
    >>> res = minimize(rosen, np.array([-1.2, 1.0]), method='lbfgs', jac=rosen_der,
    ...                options={'gtol': 1e-8})
    >>> res.success, np.allclose(res.x, 1.0), res.nit < 60
    (True, True, True)
    >>> bool(res.history['work'][-1] == res.work)
    True
    """
    opts, _ = parse_options("lbfgs", options, LBFGS_DEFAULTS)
    run = Run(objective, callback, "lbfgs", opts)
    try:
        return _lbfgs(run, opts, theta0)
    finally:
        run.close()


def _lbfgs(run, opts, theta0):
    maxiter = check_maxiter(opts["maxiter"])
    gtol = check_tol(opts["gtol"], "gtol")
    ftol = check_tol(opts["ftol"], "ftol")
    c1 = check_scalar(opts["c1"], "c1", low=0.0, high=1.0, low_open=True, high_open=True)
    c2 = check_scalar(opts["c2"], "c2", low=c1, high=1.0, low_open=True, high_open=True)
    maxls = check_positive_int(opts["maxls"], "maxls")
    space = run.space
    mem = LBFGSMemory(opts["memory"], space)
    x = prepare_theta0(theta0)

    def fg(z):
        return run.value_and_grad(z, what="a line-search trial point")

    def state():
        return {"x": x, "f": f, "g": g, "gnorm": gnorm, "memory": mem.state_dict()}

    f = g = None
    try:
        saved = run.restore(x)
        if saved is None:
            f, g = run.value_and_grad(x, what="the initial point")
            gnorm = space.norm(g)
            run.record(fun=f, grad_norm=gnorm, step_norm=0.0)
        else:
            x, f, g, gnorm = saved["x"], saved["f"], saved["g"], saved["gnorm"]
            mem.load_state_dict(saved["memory"])
        while True:
            if gnorm <= gtol:
                msg = f"Optimization terminated successfully: gradient norm {gnorm:.3e} <= gtol."
                return run.result(x, f, g, STATUS_CONVERGED, msg)
            if run.nit >= maxiter:
                return run.result(x, f, g, STATUS_MAXITER,
                                  "Maximum number of iterations has been exceeded.")
            ls = lbfgs_step(fg, x, f, g, mem, space=space, c1=c1, c2=c2, maxls=maxls,
                            gnorm=gnorm)
            if ls.alpha is None:
                return run.result(x, f, g, STATUS_STALLED,
                                  f"Line search failed at iteration {run.nit + 1}: no step "
                                  "satisfies the strong Wolfe conditions (precision loss?).")
            s = ls.x - x
            f_old = f
            x, f, g = ls.x, ls.f, ls.g
            gnorm = space.norm(g)
            run.nit += 1
            run.record(fun=f, grad_norm=gnorm, step_norm=space.norm(s), alpha=ls.alpha,
                       nls=ls.nevals)
            if run.notify(x, f, g):
                return run.result(x, f, g, STATUS_CALLBACK, CALLBACK_MESSAGE, success=False)
            if ftol > 0 and f_old - f <= ftol * max(abs(f_old), abs(f), 1.0):
                msg = "Optimization terminated successfully: relative reduction <= ftol."
                return run.result(x, f, g, STATUS_CONVERGED, msg)
            if run.boundary(state):
                return run.interrupted_result(x, f, g)
    except Diverged as exc:
        return run.diverged_result(x, f, g, exc)
