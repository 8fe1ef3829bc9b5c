"""The two-level part: a coarse correction from any level of a :class:`~mgnn.multilevel.Hierarchy`.

Before the subdomain solves of an outer iteration, the coarse level ``l`` of a
hierarchy (fewer layers, fewer neurons, or both) supplies a correction: around
the fine iterate ``x`` with gradient ``g`` the first-order coherent coarse model
(:class:`~mgnn.multilevel.coarse_models.FirstOrderModel`)

    ``h(y) = f_l(y) + <R g - grad f_l(Pi x), y - Pi x>``,   ``grad h(Pi x) = R g``

is minimized by a few steps from ``Pi x``; ``P, R, Pi`` are the level
transfers composed from level 0 down to ``l``. The prolonged displacement
``s = P (y - Pi x)`` is then globalised on the fine objective:

trust region (:func:`coarse_trust_region`, with APTS)
    the coarse steps are trust-region steps in the norm ``||P d||`` (a
    :class:`~mgnn.multilevel.coarse_models.GramSpace`, so a coarse region of
    radius ``Delta`` maps into the fine region; RMTR's choice), their total
    displacement kept within the fine radius; ``s`` is accepted by the ratio
    of the fine reduction to the model's, and the fine radius updated as after
    a trust-region step on the boundary;
line search (:func:`coarse_lbfgs`, with SPQN)
    the coarse steps are L-BFGS steps; ``s`` is a search direction on the
    fine objective when ``<g, s> < 0`` (strong Wolfe).

Coarse evaluations are charged by the coarse objective's counter, whose
``scale`` is the coarse network's cost relative to the fine one.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from mgnn._validation import check_positive_int
from mgnn.multilevel.coarse_models import FirstOrderModel, GramSpace
from mgnn.optim.lbfgs import lbfgs_step
from mgnn.optim.linesearch import strong_wolfe
from mgnn.optim.trust_region import reduction_ratio, trust_region_step, update_radius

from .local import _safe

__all__ = ["CoarseSpace", "CoarseResult", "coarse_trust_region", "coarse_lbfgs"]

_ROOM = 1e-3  # stop the coarse steps within this fraction of the fine radius


class CoarseSpace:
    """Level ``level`` of ``hierarchy`` seen from level 0: composed transfers and objective.

    Parameters
    ----------
    hierarchy : Hierarchy
        Levels with objectives and transfers, ``levels[0]`` the fine one.
    level : int
        The coarse level, ``1 <= level < len(hierarchy)``.
    n_fine : int
        Number of fine parameters (checked against the hierarchy).

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.nets import ResNet
    >>> from mgnn.objective import Objective
    >>> from mgnn.multilevel import depth_hierarchy
    >>> net = ResNet(2, 3, 8, 2)
    >>> X = np.zeros((4, 2)); y = np.array([0, 1, 0, 1])
    >>> H = depth_hierarchy(Objective(net, X, y), levels=3)
    >>> C = CoarseSpace(H, 2, net.n_params)
    >>> C
    CoarseSpace(level 2 of 3: 113 -> 41 parameters)
    >>> xc = np.arange(C.n_coarse, dtype=float)
    >>> bool(np.array_equal(C.project(C.prolong(xc)), xc))
    True
    """

    def __init__(self, hierarchy, level, n_fine):
        levels = getattr(hierarchy, "levels", None)
        if not levels:
            raise TypeError(f"hierarchy must be a Hierarchy with levels, got "
                            f"{type(hierarchy).__name__}")
        L = len(levels)
        level = check_positive_int(level, "coarse_level")
        if level >= L:
            raise ValueError(f"coarse_level must be < {L} (the levels of the hierarchy), "
                             f"got {level}")
        for l in range(level):
            if levels[l].transfer is None:
                raise ValueError(f"level {l} of the hierarchy has no transfer to level {l + 1}")
        if levels[level].objective is None:
            raise ValueError(f"level {level} of the hierarchy has no objective")
        self.transfers = [levels[l].transfer for l in range(level)]
        nf = self.transfers[0].n_fine
        if nf != n_fine:
            raise ValueError(f"the hierarchy's finest level has {nf} parameters, the "
                             f"objective {n_fine}")
        self.level, self.n_levels = level, L
        self.objective = levels[level].objective
        self.n_fine = n_fine
        self.n_coarse = self.transfers[-1].n_coarse

    def prolong(self, xc):
        for t in reversed(self.transfers):
            xc = t.prolong(xc)
        return xc

    def restrict(self, g):
        for t in self.transfers:
            g = t.restrict(g)
        return g

    def project(self, x):
        for t in self.transfers:
            x = t.project(x)
        return x

    def gram_space(self, fine_space=None):
        """The prolongation norm ``||P d||`` on the coarse level."""
        return GramSpace(self.prolong, self.restrict, self.n_coarse, fine_space)

    def __repr__(self):
        return (f"CoarseSpace(level {self.level} of {self.n_levels}: {self.n_fine} -> "
                f"{self.n_coarse} parameters)")


@dataclass
class CoarseResult:
    """Outcome of a coarse correction: the new fine ``x, f, g`` (and radius)."""

    x: object
    f: float
    g: object
    radius: float = math.nan
    tried: bool = False
    accepted: bool = False
    steps: int = 0
    pred: float = 0.0
    rho: float = math.nan
    alpha: float = math.nan


def _solve_as(solve, v):
    """``M^-1 v`` in the dtype of ``v`` (the Gram solve works in float64)."""
    return solve(v).astype(v.dtype, copy=False)


def _preconditioned(solve, hess, v):
    """``M^-1 B v`` in the dtype of ``v``."""
    return _solve_as(solve, hess(v)).astype(v.dtype, copy=False)


def coarse_trust_region(cs, fine_fg, x, f, g, radius, iters, *, B=None, params=None,
                        subproblem="cg", cg_tol=None, cg_maxiter=None, tsp=None,
                        eps_g=0.0):
    """A trust-region coarse correction (see the module docstring).

    Parameters
    ----------
    cs : CoarseSpace
    fine_fg : callable
        ``x -> (f, g)`` on the fine objective (with the caller's checks).
    x, f, g : fine iterate, loss, gradient.
    radius : float
        Fine trust-region radius.
    iters : int
        Coarse trust-region steps.
    B : LSR1 or None
        Coarse curvature (L-SR1 in coarse coordinates, updated in place) or
        None for the coarse objective's exact ``hessp``.
    tsp : GramSpace, optional
        The prolongation norm (built once by the caller).
    eps_g : float
        Stop the coarse steps when the model gradient norm is below it.

    Returns
    -------
    CoarseResult
    """
    tsp = cs.gram_space() if tsp is None else tsp
    model = FirstOrderModel(cs.objective, cs.project(x), cs.restrict(g))
    x0 = model.x0
    xc, fc, gc = x0, model.f0, model.g0
    fgc = _safe(model.value_and_grad)
    r = radius
    steps = 0
    for _ in range(iters):
        if float(np.linalg.norm(gc)) <= eps_g:
            break
        room = radius - tsp.norm(xc - x0) if steps else radius
        if room <= _ROOM * radius:
            break
        hess = B.matvec if B is not None else functools.partial(model.hessp, xc)
        gn = float(np.linalg.norm(gc))
        if cg_tol is not None:
            tol = cg_tol
        else:
            tol = 1e-8 if B is not None else min(0.5, math.sqrt(gn))
        # Steihaug-Toint CG in the M-inner product: gradient M^-1 g, operator M^-1 B
        st = trust_region_step(fgc, xc, fc, _solve_as(tsp.solve, gc), min(r, room),
                               functools.partial(_preconditioned, tsp.solve, hess),
                               space=tsp, params=params, subproblem=subproblem, tol=tol,
                               maxiter=cg_maxiter)
        steps += 1
        if B is not None:
            B.update(st.step, st.g_trial - gc)
        r = st.radius
        if st.accepted:
            xc, fc, gc = st.x, st.f, st.g_trial
    out = CoarseResult(x, f, g, radius=radius, steps=steps)
    pred = model.f0 - fc
    if not pred > 0:
        return out
    s = cs.prolong(xc - x0)
    x_t = x + s
    f_t, g_t = fine_fg(x_t)
    rho = reduction_ratio(float(f) - f_t, pred)
    new_radius, accepted = update_radius(rho, radius, float(np.linalg.norm(s)), params, True)
    out.tried, out.pred, out.rho, out.radius = True, pred, rho, new_radius
    if accepted:
        out.accepted = True
        out.x, out.f, out.g = x_t, f_t, g_t
    return out


def coarse_lbfgs(cs, fine_fg, x, f, g, iters, memory, *, c1=1e-4, c2=0.9, maxls=20,
                 eps_g=0.0):
    """An L-BFGS coarse correction with a fine line search (see the module docstring).

    ``memory`` (an :class:`~mgnn.optim.LBFGSMemory` in coarse coordinates) is
    updated in place.

    Returns
    -------
    CoarseResult
        ``alpha`` is the fine line-search step (NaN when not searched).
    """
    model = FirstOrderModel(cs.objective, cs.project(x), cs.restrict(g))
    x0 = model.x0
    xc, fc, gc = x0, model.f0, model.g0
    fgc = _safe(model.value_and_grad)
    steps = 0
    for _ in range(iters):
        if float(np.linalg.norm(gc)) <= eps_g:
            break
        ls = lbfgs_step(fgc, xc, fc, gc, memory, c1=c1, c2=c2, maxls=maxls)
        steps += 1
        if ls.alpha is None:
            break
        xc, fc, gc = ls.x, ls.f, ls.g
    out = CoarseResult(x, f, g, steps=steps)
    pred = model.f0 - fc
    if not pred > 0:
        return out
    s = cs.prolong(xc - x0)
    if not float(np.dot(g, s)) < 0:
        return out
    out.tried, out.pred = True, pred
    ls = strong_wolfe(fine_fg, x, s, f, g, c1=c1, c2=c2, maxls=maxls)
    if ls.alpha is not None:
        out.accepted, out.alpha = True, ls.alpha
        out.x, out.f, out.g = ls.x, ls.f, ls.g
    return out
