"""RMTR: the recursive multilevel trust-region method (Gratton, Sartenaer & Toint).

Kopaničáková & Krause train residual networks with it: the coarse levels of a
network :class:`~mgnn.multilevel.Hierarchy` (fewer layers, fewer neurons) supply
corrections, and a trust region on every level makes the method globally
convergent without a learning rate. :func:`rmtr` walks any hierarchy through the
level objectives and the transfers ``P``, ``R``, ``Pi`` only, so depth and width
hierarchies run unchanged. Two variants:

``variant='monotone'`` (default)
    The trust-region method of this docstring: every step and every coarse
    correction is accepted by the ratio of actual to predicted reduction.
``variant='off'``
    Objective-function-free (Gratton, Kopaničáková & Toint): AdaGrad steps on
    every level, coarse corrections confined to a region computed from the
    gradient history, no loss evaluation decides anything
    (:mod:`mgnn.multilevel.off`); with one level it is AdaGrad.

One cycle on level ``l`` (level 0 is the finest; its "model" is the objective):

1. ``pre_smooth`` trust-region steps on the level's model ``h_l``;
2. coarse correction(s) (``cycle='V'``: one, by a V-cycle on level ``l + 1``;
   ``'W'``: two W-cycles; ``'F'``: an F-cycle, then a V-cycle), each if the
   restricted gradient is large enough, ``||R g|| >= kappa_g ||g||`` and
   ``||R g|| > eps_g``: build the coarse model ``h_{l+1}`` around ``Pi x``
   (:mod:`~mgnn.multilevel.coarse_models`: first-order, second-order, Galerkin or
   hybrid), minimize it by a cycle on level ``l + 1`` (on the coarsest level:
   ``coarse_iters`` trust-region steps) from ``Pi x``, prolong the displacement,
   ``s = P (x_c - Pi x)``, and accept ``x + s`` by the ratio ``rho = (h_l(x) -
   h_l(x + s)) / (h_{l+1}(Pi x) - h_{l+1}(x_c))``;
3. ``post_smooth`` trust-region steps.

**The radius of the coarse corrections.** With ``coarse_radius='shared'`` (Gratton,
Sartenaer & Toint) a correction lives in the level's trust region: its bound is
the level's radius, and its ratio test updates that radius (a very successful
correction enlarges it). With ``coarse_radius='separate'`` (default) the
corrections computed from level ``l`` have a radius of their own, updated by
their own ratio tests (``eta1``, ``eta2``, ``gamma1``, ``gamma2``) and
independent of the smoothing steps' radius: when the coarse model is good, the
corrections grow to many smoothing steps' length while the fine quadratic model
keeps its own, smaller region; a coarse level then starts each visit with the
radius its previous visit ended with (capped by the correction's bound), not with
the bound itself. Both kinds of step are accepted only by a ratio
test on the level's function, so every accepted step decreases it.

**Norms and the coarse trust region.** The finest level's trust region is in
its objective's ``space`` (Euclidean on ``theta``). Every coarse displacement
must prolong into the region of the level above: ``||P (x_c - Pi x)||_l <= Delta``,
and, recursively, into every ancestor's remaining region.
With ``coarse_norm='prolongation'`` (default; Gratton, Sartenaer & Toint) a
coarse level measures its steps in the norm the prolongation induces,
``||s||_{l+1} := ||P s||_l`` (recursively: the finest Euclidean norm of the
fully prolonged step; :class:`~mgnn.multilevel.coarse_models.GramSpace`, built
from ``P`` and ``R = P^T`` only, with the Gram operator ``M = R M_l P``); its
subproblems are Steihaug-Toint CG in that inner product, i.e. CG
preconditioned by ``M``. A coarse region of radius ``Delta`` is then exactly
the set of steps whose prolongation lies in the finer region of radius
``Delta``: no step is cut back. With ``coarse_norm='euclidean'`` every level
uses the Euclidean norm of its own ``theta``, and a prolonged step that leaves
a region (``||P||`` may exceed 1, e.g. ``sqrt(c)`` for constant depth
interpolation) is shortened along its ray to the boundary, computed exactly
(the Steihaug-CG model decreases monotonically along that ray, so the
shortened step keeps a positive predicted reduction, recomputed exactly). In
both norms a coarse subproblem is solved with radius ``min(Delta_c, Delta -
||P d||_l)`` (``d`` the displacement so far). A coarse visit ends after its
planned steps, when its model gradient is ``<= eps_g``, when its radius falls
below ``min_radius``, or when the prolonged displacement reaches ``1 - 1e-3``
of a bound.

**Rejected coarse corrections.** By default the correction radius shrinks as
after a rejected trust-region step (``gamma1 * min(Delta, ||s||)``); with
``coarse_gamma1`` it becomes ``coarse_gamma1 * Delta`` instead (``1``: a
rejected correction costs its evaluation but leaves the radius, since the
coarse model, not the radius, was at fault).

**Curvature.** ``hessian='lsr1'`` (default; Kopaničáková & Krause: L-SR1 on every
level) keeps an L-SR1 matrix per level (``coarse_hessian`` may choose
differently for the coarse levels) for ``hess f_l`` (pairs of
objective-gradient differences, kept across cycles; a second-order model adds
its correction); ``'exact'`` uses the models' ``hessp`` (the objective's exact
second-order adjoint, plus the model corrections). The hybrid model
(``model='hybrid'``) mixes the two kinds of information: the function of a
coarse level is the first-order model (the exact coarse network, tau-corrected),
its curvature the Galerkin product ``R B P`` of the finer level's curvature ``B``
(L-SR1: free; exact: one fine ``hessp`` per product) frozen at the finer iterate.
Subproblems are solved by Steihaug-Toint CG (or Cauchy / dogleg).

**Mini-batches** (the "hybrid stochastic-deterministic" regime of Kopaničáková &
Krause, the default path): each cycle draws one index array and every level of
that cycle evaluates on it (the data arrays are shared across levels); ratio
tests compare losses on that batch. The batch starts at ``batch_size`` samples
(``'auto'``: ``max(32, n // 16)``) and grows towards all data by
:class:`~mgnn.multilevel.sampling.SampleSize`: by default the norm test of
Byrd, Chin, Nocedal & Wu on a variance estimate from the batch's two halves
(``growth_rule``, ``growth_theta``, ``batch_growth``, ``growth_patience``).
``batch_size=None`` is the deterministic method on all data.

**Work.** Every evaluation is charged by its level objective's counter, in
fine-gradient equivalents (coarse objectives carry the flop ratio as their
counter's scale); ``res.work`` is the sum over levels and
``res.work_per_level`` the split (fine first). With one level, all data
(``batch_size=None``) and ``coarse_iters=1`` RMTR is
``minimize(method='trust-region')`` with the same options: the same iterates,
bit for bit.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np

from mgnn._validation import check_choice, check_positive_int, check_scalar
from mgnn.multilevel.coarse_models import (
    MODELS,
    FirstOrderModel,
    GramSpace,
    make_coarse_model,
)
from mgnn.multilevel.nested import _per_level
from mgnn.multilevel.off import OFFEngine
from mgnn.multilevel.sampling import GROWTH_RULES, SampleSize
from mgnn.optim._common import (
    CALLBACK_MESSAGE,
    RUN_OPTIONS,
    STATUS_CALLBACK,
    STATUS_CONVERGED,
    STATUS_INTERRUPTED,
    STATUS_MAXITER,
    STATUS_STALLED,
    Diverged,
    Run,
    check_maxiter,
    check_tol,
    parse_options,
    prepare_theta0,
    reject_unused,
)
from mgnn.optim.lsr1 import LSR1
from mgnn.optim.trust_region import (
    SR1_OPTIONS,
    SUBPROBLEMS,
    TR_DEFAULTS,
    TRParams,
    reduction_ratio,
    solve_subproblem,
    to_boundary,
    trust_region_step,
    update_radius,
)
from mgnn.runs.state import stateful_components
from mgnn.vectorspace import EuclideanSpace

__all__ = ["rmtr", "RMTR_DEFAULTS", "LevelStatistics", "RMTRStatistics", "VARIANTS",
           "RMTR_MODELS", "CYCLES"]

#: Coarse models of :func:`rmtr` (those of :mod:`~mgnn.multilevel.coarse_models` and
#: the hybrid model).
RMTR_MODELS = MODELS + ("hybrid",)
#: Variants of :func:`rmtr`.
VARIANTS = ("monotone", "off")
#: Cycle kinds and the cycles their coarse corrections run on the next level.
CYCLE_CHILDREN = {"V": ("V",), "W": ("W", "W"), "F": ("F", "V")}
CYCLES = tuple(CYCLE_CHILDREN)

#: Options of :func:`rmtr` and their defaults (the trust-region options are
#: those of ``minimize(method='trust-region')``, except ``hessian='lsr1'``).
RMTR_DEFAULTS = dict(
    TR_DEFAULTS,
    hessian="lsr1",
    maxiter=100,
    variant="monotone",
    cycle="V",
    pre_smooth=[1, 0],
    post_smooth=1,
    coarse_iters="auto",
    model="first-order",
    coarse_norm="prolongation",
    coarse_hessian=None,
    coarse_gamma1=None,
    coarse_radius="separate",
    kappa_g=0.1,
    eps_g=1e-8,
    lr=0.01,
    adagrad_eps=1e-8,
    box_factor=30.0,
    batch_size="auto",
    growth_rule="norm-test",
    growth_theta=1.0,
    batch_growth=2.0,
    growth_patience=1,
    rng=None,
    max_work=None,
    **RUN_OPTIONS,
)

_BATCH_ONLY = ("growth_rule", "growth_theta", "batch_growth", "growth_patience", "rng")
_OFF_ONLY = ("lr", "adagrad_eps", "box_factor")
_TR_ONLY = tuple(k for k in TR_DEFAULTS if k not in ("maxiter", "gtol", *RUN_OPTIONS)) + (
    "coarse_norm", "coarse_hessian", "coarse_gamma1", "coarse_radius")
NORMS = ("prolongation", "euclidean")
RADII = ("separate", "shared")
_BOUNDARY = 1e-3  # a coarse visit stops within this fraction of a bound


@dataclass
class LevelStatistics:
    """What RMTR did on one level.

    Attributes
    ----------
    level : int
    visits : int
        Cycles entered on this level.
    tr_steps, tr_accepted : int
        Trust-region (smoothing / coarse-solve) iterations and accepted ones
        (variant 'off': AdaGrad steps, all accepted).
    cg_iter : int
        CG iterations of those steps.
    truncated : int
        Steps shortened so that their prolongation stays in a finer trust region.
    coarse_tries, coarse_accepted : int
        Coarse corrections computed from this level (evaluated on this level)
        and accepted.
    coarse_skipped : int
        Coarse corrections not attempted: the recursion condition on ``||R g||``
        failed, or this level's displacement already reached a finer level's
        trust-region boundary.
    work : float
        Work charged by this level's objective (fine-gradient equivalents).
    """

    level: int
    visits: int = 0
    tr_steps: int = 0
    tr_accepted: int = 0
    cg_iter: int = 0
    truncated: int = 0
    coarse_tries: int = 0
    coarse_accepted: int = 0
    coarse_skipped: int = 0
    work: float = 0.0


class RMTRStatistics(list):
    """One :class:`LevelStatistics` per level (fine first), printed as a table.

    Examples
    --------
    >>> RMTRStatistics([LevelStatistics(0, visits=3, work=12.5)])
     level  visits  tr_steps  tr_acc  cg_iter  truncated  coarse  coarse_acc  skipped     work
         0       3         0       0        0          0       0           0        0   12.500
    """

    def __repr__(self):
        head = (" level  visits  tr_steps  tr_acc  cg_iter  truncated  coarse  coarse_acc  "
                "skipped     work")
        rows = [f" {s.level:5d}  {s.visits:6d}  {s.tr_steps:8d}  {s.tr_accepted:6d}  "
                f"{s.cg_iter:7d}  {s.truncated:9d}  {s.coarse_tries:6d}  "
                f"{s.coarse_accepted:10d}  {s.coarse_skipped:7d}  {s.work:7.3f}" for s in self]
        return "\n".join([head] + rows)


class _TotalCounter:
    """Fine-level evaluation counts and the work summed over all level counters."""

    def __init__(self, counters):
        self.fine = counters[0]
        self.unique = list({id(c): c for c in counters}.values())

    def snapshot(self):
        f = self.fine
        return (f.nfev, f.njev, f.nhev, sum(c.work for c in self.unique))


class _FineView:
    """The finest objective, with the hierarchy's total counter (for :class:`Run`)."""

    def __init__(self, objective, counter):
        self._obj = objective
        self.counter = counter
        self.space = getattr(objective, "space", None) or EuclideanSpace()
        self.n_samples = getattr(objective, "n_samples", None)

    def value(self, x, batch=None):
        return self._obj.value(x, batch=batch)

    def value_and_grad(self, x, batch=None):
        return self._obj.value_and_grad(x, batch=batch)

    def hessp(self, x, v, batch=None):
        return self._obj.hessp(x, v, batch=batch)


class _FineModel:
    """Level 0's model: the objective on the cycle's batch, through the Run's checks."""

    kind = "objective"

    def __init__(self, run, batch):
        self.run, self.batch = run, batch

    def value_and_grad(self, x):
        return self.run.value_and_grad(x, self.batch, what="a trial point")

    def hessp(self, x, v):
        return self.run.hessp(x, v, self.batch)

    def correction_hessp(self, v):
        return None


@dataclass
class _Constraint:
    """``||offset + lift(d)|| <= bound`` in the space of an ancestor level."""

    lift: object
    offset: object
    bound: float
    space: object

    def lifted(self, d):
        v = self.lift(d)
        return v if self.offset is None else self.offset + v


class MonotoneEngine:
    """The recursion of the monotone variant: state shared by all levels of one run."""

    variant = "monotone"

    def __init__(self, hierarchy, run, opts, params, lsr1_opts, stats, batch_of):
        self.H = hierarchy
        self.L = hierarchy.n_levels
        self.run = run
        self.params = params
        self.kind = opts["subproblem"]
        self.model_kind = opts["model"]
        self.cycle_kind = opts["cycle"]
        self.pre = opts["pre_smooth"]
        self.post = opts["post_smooth"]
        self.coarse_iters = opts["coarse_iters"]
        self.kappa_g, self.eps_g = opts["kappa_g"], opts["eps_g"]
        self.gtol, self.min_radius = opts["gtol"], opts["min_radius"]
        self.cg_tol, self.cg_maxiter = opts["cg_tol"], opts["cg_maxiter"]
        self.separate = opts["coarse_radius"] == "separate"
        self.spaces = [getattr(lv.objective, "space", None) or EuclideanSpace()
                       for lv in hierarchy.levels]
        # trust-region norms: level 0's space; coarse levels the prolongation norm
        self.tr_spaces = list(self.spaces)
        if opts["coarse_norm"] == "prolongation":
            for l in range(1, self.L):
                lev = hierarchy[l - 1]
                n = getattr(hierarchy[l].objective, "n_params", None) or lev.transfer.n_coarse
                self.tr_spaces[l] = GramSpace(lev.P, lev.R, n, self.tr_spaces[l - 1])
        coarse_h = opts["coarse_hessian"] or opts["hessian"]
        self.lsr1_at = [opts["hessian"] == "lsr1"] + [coarse_h == "lsr1"] * (self.L - 1)
        if self.model_kind == "hybrid":  # coarse curvature is the Galerkin product
            self.lsr1_at[1:] = [False] * (self.L - 1)
        self.B = [LSR1(lsr1_opts[0], sp, gamma=lsr1_opts[1], skip=lsr1_opts[2]) if on else None
                  for sp, on in zip(self.spaces, self.lsr1_at, strict=True)]
        self.coarse_gamma1 = opts["coarse_gamma1"]
        self.stats = stats
        self._batch = batch_of
        self.full = True
        self.radius = float(opts["initial_radius"])
        # the radius of the coarse corrections computed from each level, and the radius
        # each coarse level ended its last visit with ('separate')
        self.corr_radius = [self.radius] * max(self.L - 1, 0)
        self.level_radius = [self.radius] * self.L

    # -- the driver's interface ---------------------------------------------
    def stalled(self):
        return self.radius < self.min_radius

    def cycle(self, fine, x, f, g):
        x, f, g, self.radius, _ = self._visit(0, fine, x, f, g, self.radius, [],
                                              self.cycle_kind)
        return x, f, g

    def state_dict(self):
        return {"radius": self.radius, "corr_radius": list(self.corr_radius),
                "level_radius": list(self.level_radius),
                "lsr1": [None if B is None else B.state_dict() for B in self.B]}

    def load_state_dict(self, d):
        self.radius = float(d["radius"])
        self.corr_radius = [float(r) for r in d["corr_radius"]]
        self.level_radius = [float(r) for r in d["level_radius"]]
        if [B is None for B in self.B] != [b is None for b in d["lsr1"]]:
            raise ValueError("resume: the checkpoint was written with other 'hessian' / "
                             "'coarse_hessian' / 'model' options")
        for B, b in zip(self.B, d["lsr1"], strict=True):
            if B is not None:
                B.load_state_dict(b)

    # -- evaluations -------------------------------------------------------
    def _fg(self, l, model):
        if l == 0:
            return model.value_and_grad
        space = self.spaces[l]

        def fg(z):  # a non-finite trial point on a coarse level is rejected, not fatal
            f, g = model.value_and_grad(z)
            if not (math.isfinite(f) and space.all_finite(g)):
                return math.nan, g
            return f, g

        return fg

    def _hess(self, l, model, x):
        """``v -> B v`` for the model of level ``l`` at ``x``."""
        hybrid = getattr(model, "galerkin_hessp", None)
        if hybrid is not None:
            return hybrid
        if model.kind == "galerkin" or not self.lsr1_at[l]:
            return functools.partial(model.hessp, x)
        B = self.B[l]
        if model.kind != "second-order":
            return B.matvec
        return lambda v: B.matvec(v) + model.correction_hessp(v)

    def _cg_tol(self, l, gnorm):
        if self.cg_tol is not None:
            return self.cg_tol
        return 1e-8 if self.lsr1_at[l] or l > 0 and self.model_kind == "hybrid" else \
            min(0.5, math.sqrt(gnorm))

    def _update_lsr1(self, l, model, s, dg):
        if not self.lsr1_at[l] or model.kind == "galerkin":
            return
        Cs = model.correction_hessp(s)
        self.B[l].update(s, dg if Cs is None else dg - Cs)

    # -- one trust-region iteration ----------------------------------------
    def _smooth(self, l, model, x, f, g, radius, cons, x_entry):
        """One trust-region step on level ``l``; returns ``(x, f, g, radius, status)``."""
        space = self.spaces[l]
        gnorm = space.norm(g)
        if l == 0:
            if self.full and gnorm <= self.gtol:
                return x, f, g, radius, "converged"
        elif gnorm <= self.eps_g:
            return x, f, g, radius, "converged"
        if radius < self.min_radius:
            return x, f, g, radius, "small_radius"
        hess = self._hess(l, model, x)
        tol = self._cg_tol(l, gnorm)
        fg = self._fg(l, model)
        st = self.stats[l]
        if not cons:
            r = trust_region_step(fg, x, f, g, radius, hess, space=space, params=self.params,
                                  subproblem=self.kind, tol=tol, maxiter=self.cg_maxiter)
            step, g_trial, accepted, niter = r.step, r.g_trial, r.accepted, r.sub.niter
            xn, fn, gn, radius = r.x, r.f, r.g, r.radius
        else:
            out = self._constrained_step(l, fg, x, f, g, radius, hess, tol, cons, x - x_entry)
            if out is None:
                return x, f, g, radius, "boundary"
            step, g_trial, accepted, niter, xn, fn, gn, radius = out
        st.tr_steps += 1
        st.tr_accepted += bool(accepted)
        st.cg_iter += niter
        self._update_lsr1(l, model, step, g_trial - g)
        return xn, fn, gn, radius, "step"

    def _constrained_step(self, l, fg, x, f, g, radius, hess, tol, cons, d):
        space, tsp = self.spaces[l], self.tr_spaces[l]
        a = [c.lifted(d) for c in cons]
        room = min(c.bound - c.space.norm(ak) for c, ak in zip(cons, a, strict=True))
        if room <= _BOUNDARY * min(c.bound for c in cons):
            return None
        if tsp is space:
            sub = solve_subproblem(self.kind, g, hess, min(radius, room), space, tol,
                                   self.cg_maxiter)
        else:  # the subproblem in the M-norm: CG preconditioned by M = P^T M_f P
            Minv = tsp.solve
            sub = solve_subproblem(self.kind, Minv(g), lambda v: Minv(hess(v)),
                                   min(radius, room), tsp, tol, self.cg_maxiter)
        s, pred, on, snorm = sub.step, sub.pred, sub.hits_boundary, sub.step_norm
        tau = 1.0
        for c, ak in zip(cons, a, strict=True):
            b = c.lift(s)
            if c.space.norm(ak + b) > c.bound * (1.0 + 1e-12):  # beyond round-off
                tau = min(tau, to_boundary(c.space, ak, b, c.bound))
        if tau < 1.0:
            gs = space.dot(g, s)
            sBs = 2.0 * (-pred - gs)
            s = tau * s
            pred = -(tau * gs + 0.5 * tau * tau * sBs)
            on, snorm = True, tsp.norm(s)
            self.stats[l].truncated += 1
        x_trial = x + s
        f_trial, g_trial = fg(x_trial)
        rho = reduction_ratio(float(f) - f_trial, pred)
        radius, accepted = update_radius(rho, radius, snorm, self.params, on)
        if accepted:
            return s, g_trial, True, sub.niter, x_trial, f_trial, g_trial, radius
        return s, g_trial, False, sub.niter, x, f, g, radius

    # -- coarse correction ---------------------------------------------------
    def _coarse_correction(self, l, model, x, f, g, radius, cons, x_entry, kind):
        lev, child_obj = self.H[l], self.H[l + 1].objective
        st = self.stats[l]
        bound = self.corr_radius[l] if self.separate else radius
        gc = lev.R(g)
        ngc = self.spaces[l + 1].norm(gc)
        if not (ngc >= self.kappa_g * self.spaces[l].norm(g) and ngc > self.eps_g) or \
                bound < self.min_radius:
            st.coarse_skipped += 1
            return x, f, g, radius
        d = x - x_entry if cons else None
        P = lev.P
        child_cons = [_Constraint((lambda v, c=c: c.lift(P(v))), c.lifted(d), c.bound, c.space)
                      for c in cons]
        if any(c.bound - c.space.norm(c.offset) <= _BOUNDARY * c.bound for c in child_cons):
            st.coarse_skipped += 1  # this level's displacement already fills a finer region
            return x, f, g, radius
        child_cons.append(_Constraint(P, None, bound, self.tr_spaces[l]))
        xc0 = lev.Pi(x)
        coarse_hessp = None
        if self.lsr1_at[l + 1] and self.model_kind == "second-order":
            coarse_hessp = copy.copy(self.B[l + 1]).matvec  # frozen: B_c at Pi x
        hess = self._hess(l, model, x)
        batch = self._batch()
        if self.model_kind == "hybrid":
            child = FirstOrderModel(child_obj, xc0, gc, batch)
            R = lev.R
            child.galerkin_hessp = lambda v: R(hess(P(v)))  # R B P, frozen at x
        else:
            child = make_coarse_model(self.model_kind, child_obj, xc0, gc, hess, P, lev.R,
                                      coarse_hessp, batch)
        start = min(bound, self.level_radius[l + 1]) if self.separate else bound
        xc, fc, _, rc, _ = self._visit(l + 1, child, xc0, child.f0, child.g0, start,
                                       child_cons, kind)
        if self.separate:
            self.level_radius[l + 1] = max(rc, self.min_radius)
        pred = child.f0 - fc
        if not pred > 0:  # the coarse level made no progress: nothing to try
            return x, f, g, radius
        st.coarse_tries += 1
        s = P(xc - xc0)
        f_trial, g_trial = self._fg(l, model)(x + s)
        rho = reduction_ratio(float(f) - f_trial, pred)
        bound_new, accepted = update_radius(rho, bound, self.tr_spaces[l].norm(s),
                                            self.params, True)
        if not accepted and self.coarse_gamma1 is not None:
            bound_new = self.coarse_gamma1 * bound
        if self.separate:
            self.corr_radius[l] = bound_new
        else:
            radius = bound_new
        self._update_lsr1(l, model, s, g_trial - g)
        if accepted:
            st.coarse_accepted += 1
            return x + s, f_trial, g_trial, radius
        return x, f, g, radius

    # -- one cycle on a level -------------------------------------------------
    def _visit(self, l, model, x, f, g, radius, cons, kind):
        """A cycle on level ``l`` from ``x``; returns ``(x, f, g, radius, status)``."""
        self.stats[l].visits += 1
        x_entry = x

        def smooth(n, x, f, g, radius):
            status = "step"
            for _ in range(n):
                x, f, g, radius, status = self._smooth(l, model, x, f, g, radius, cons,
                                                       x_entry)
                if status != "step":
                    break
            return x, f, g, radius, status

        if l == self.L - 1:
            return smooth(self.coarse_iters, x, f, g, radius)
        x, f, g, radius, status = smooth(self.pre[l], x, f, g, radius)
        if status != "step":
            return x, f, g, radius, status
        for child_kind in CYCLE_CHILDREN[kind]:
            x, f, g, radius = self._coarse_correction(l, model, x, f, g, radius, cons, x_entry,
                                                      child_kind)
        return smooth(self.post[l], x, f, g, radius)


def _check_hierarchy(hierarchy):
    levels = getattr(hierarchy, "levels", None)
    if not levels:
        raise TypeError(f"hierarchy must be a Hierarchy with levels, got "
                        f"{type(hierarchy).__name__}")
    for l, lv in enumerate(levels):
        if lv.objective is None:
            raise ValueError(f"level {l} of the hierarchy has no objective")
        if l + 1 < len(levels) and lv.transfer is None:
            raise ValueError(f"level {l} of the hierarchy has no transfer to level {l + 1}")


def rmtr(hierarchy, theta0, options=None, callback=None):
    """Recursive multilevel trust-region method on a hierarchy (see module docstring).

    Parameters
    ----------
    hierarchy : Hierarchy
        Levels with objectives, ``levels[0]`` the finest (e.g.
        ``depth_hierarchy(objective, 3)``). A hierarchy of one level gives the
        single-level trust-region method (variant 'off': AdaGrad).
    theta0 : ndarray
        Initial parameters of the finest level (not modified).
    options : dict, optional
        All options of ``minimize(method='trust-region')`` (``gtol``,
        ``hessian`` (default here ``'lsr1'``), ``subproblem``,
        ``initial_radius``, ``max_radius``, ``min_radius``, ``eta1``, ``eta2``,
        ``gamma1``, ``gamma2``, ``expand_on_boundary``, ``cg_tol``,
        ``cg_maxiter``, ``memory``, ``sr1_gamma``, ``sr1_skip``: the same meaning
        on every level; the monotone variant only), and

        maxiter : int, default 100
            Number of cycles.
        variant : {'monotone', 'off'}, default 'monotone'
            Trust-region steps accepted by ratio tests, or objective-function-free
            AdaGrad steps (:mod:`mgnn.multilevel.off`).
        cycle : {'V', 'W', 'F'}, default 'V'
            The coarse corrections of a visit of a non-coarsest level: one V-cycle,
            two W-cycles, or an F-cycle followed by a V-cycle.
        pre_smooth, post_smooth : int or list of int, default [1, 0] and 1
            Steps before / after the coarse correction on the levels above the
            coarsest; a list gives one entry per level, fine first, whose last
            entry repeats. No pre-smoothing below the finest level by default:
            an intermediate level starts with the finer radius, so its first step
            usually reaches the finer trust-region boundary and would leave no
            room for the coarser levels.
        coarse_iters : int or 'auto', default 'auto'
            Steps per visit of the coarsest level (with one level: per cycle);
            ``'auto'``: ``max(5, round(1 / w))`` with ``w`` the coarsest level's cost
            relative to the finest (its counter's scale), so that a visit costs about
            one fine evaluation (one level: 1).
        model : {'first-order', 'second-order', 'galerkin', 'hybrid'}, default 'first-order'
            Coarse model (:mod:`mgnn.multilevel.coarse_models`; 'hybrid': the
            first-order model with the Galerkin curvature ``R B P``). The variant
            'off' takes 'first-order' only.
        coarse_norm : {'prolongation', 'euclidean'}, default 'prolongation'
            Norm of the coarse trust regions: ``||s||_c = ||P s||`` on the
            finer level (recursively), or each level's Euclidean norm.
        coarse_hessian : {None, 'exact', 'lsr1'}, default None
            Curvature on the coarse levels (None: as ``hessian``).
        coarse_gamma1 : float in (0, 1] or None, default None
            Radius factor after a rejected coarse correction (None: the
            rule of a rejected trust-region step).
        coarse_radius : {'separate', 'shared'}, default 'separate'
            The coarse corrections' own radius, or the level's (module docstring).
        kappa_g, eps_g : float, default 0.1, 1e-8
            Recursion only when ``||R g|| >= kappa_g ||g||`` and
            ``||R g|| > eps_g``; ``eps_g`` also ends a coarse visit whose model
            gradient falls below it.
        lr, adagrad_eps, box_factor : float, default 0.01, 1e-8, 30
            Variant 'off' only: AdaGrad's learning rate and denominator shift, and
            the coarse corrections' max-norm bound ``box_factor * lr / sqrt(k)``.
        batch_size : 'auto', int or None, default 'auto'
            Initial mini-batch size (``'auto'``: ``max(32, n // 16)``, at most
            ``n``; None: all data, deterministic).
        growth_rule : {'norm-test', 'stall', 'fixed'}, default 'norm-test'
            How the batch grows (:class:`~mgnn.multilevel.sampling.SampleSize`).
        growth_theta : float, default 1.0
            Norm test: the tolerated ratio of the gradient's sampling error to its
            norm.
        batch_growth : float, default 2.0
            Largest factor of one growth step (``> 1``).
        growth_patience : int, default 1
            Consecutive failed tests (norm test) or cycles without a new minimum
            of the start-of-cycle batch loss ('stall') before the batch grows.
        rng : None, int or Generator
            Seed of the batch draws.
        max_work : float or None
            Stop (status 1) once the work of all levels reaches it.
        disp, disp_every, checkpoint, resume
            Progress lines (one per cycle), checkpoints at cycle boundaries and
            resuming bit for bit (:mod:`mgnn.runs`; as for
            :func:`~mgnn.optim.stochastic.minimize_sgd`).

    callback : callable, optional
        ``callback(intermediate_result)`` after every cycle (scipy convention,
        with ``x, fun, jac, nit, work, radius, batch_size``); ``StopIteration``
        ends the run (status 99).

    Returns
    -------
    OptimizeResult
        ``x, fun, jac, nit`` (cycles), ``nfev, njev, nhev`` (of the finest
        objective), ``work`` (all levels), ``work_per_level`` (fine first),
        ``evaluations_per_level`` (``(nfev, njev, nhev)`` per level),
        ``statistics`` (:class:`RMTRStatistics`), ``radius`` (monotone: the fine
        smoothing radius; off: the correction bound), ``batch_size``, ``time``,
        ``success``, ``status`` (0 converged or the cycles done, 1 maxiter or
        max_work, 2 radius collapsed, 3 NaN/inf on the finest level, 4
        interrupted, 99 callback), ``message`` and ``history`` (one row per cycle:
        ``fun`` (monotone: the loss at the end of the cycle on the cycle's batch;
        off: the loss at the start of the cycle on its batch, the last value the
        method evaluated), ``grad_norm`` (likewise), ``radius``,
        ``correction_radius`` (monotone with separate radii: the fine level's),
        ``batch_size``, ``grad_noise`` (norm test: estimated sampling error over
        the gradient norm), ``coarse_accepted``, ``work`` (all levels),
        ``work_l0, work_l1, ...``, ``time``, counts). With mini-batches
        ``fun``/``jac`` are evaluated once on all data at the end (charged).

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.data import peaks
    >>> from mgnn.nets import ResNet
    >>> from mgnn.objective import Objective
    >>> from mgnn.multilevel import depth_hierarchy
    >>> d = peaks(200, 10)
    >>> obj = Objective(ResNet(2, 4, 8, 5, T=5.0), d.X_train, d.Y_train, tikhonov=1e-4)
    >>> H = depth_hierarchy(obj, 3)
    >>> theta0 = obj.net.init(0)
    >>> res = rmtr(H, theta0, options={"maxiter": 5, "batch_size": None})
    >>> res.nit, bool(res.fun < obj.value(theta0)), len(res.work_per_level)
    (5, True, 3)
    >>> bool(np.all(np.diff(res.history['fun']) <= 0))      # monotone on all data
    True
    >>> off = rmtr(H, theta0, options={"variant": "off", "lr": 0.05, "maxiter": 20, "rng": 0})
    >>> bool(off.fun < obj.value(theta0)), int(off.history["batch_size"][0])
    (True, 32)
    """
    _check_hierarchy(hierarchy)
    L = hierarchy.n_levels
    objs = [lv.objective for lv in hierarchy.levels]
    counters = [o.counter for o in objs]
    starts = [c.snapshot() for c in counters]
    opts, given = parse_options("rmtr", options, RMTR_DEFAULTS)
    total = _TotalCounter(counters)
    run = Run(_FineView(objs[0], total), callback, "rmtr", opts, counters=total.unique,
              components=stateful_components(*objs))
    try:
        return _rmtr(hierarchy, theta0, run, opts, given, L, objs, counters, starts)
    finally:
        run.close()


def _check_options(opts, given, L, n, counters):
    """Validate the options; returns ``(params, lsr1_opts, batch_size)``."""
    check_maxiter(opts["maxiter"])
    check_tol(opts["gtol"], "gtol")
    variant = check_choice(opts["variant"], "variant", VARIANTS)
    check_choice(opts["cycle"], "cycle", CYCLES)
    check_choice(opts["model"], "model", RMTR_MODELS)
    for name in ("pre_smooth", "post_smooth"):
        value = opts[name] if name in given else RMTR_DEFAULTS[name][:L] if isinstance(
            RMTR_DEFAULTS[name], list) else RMTR_DEFAULTS[name]
        opts[name] = [check_positive_int(v, name, minimum=0)
                      for v in _per_level(value, L, name)]
    if opts["coarse_iters"] == "auto":  # a visit of the coarsest level ~ one fine evaluation
        ratio = counters[-1].scale / counters[0].scale if counters[0].scale else 1.0
        opts["coarse_iters"] = 1 if L == 1 else max(5, round(1.0 / ratio))
    opts["coarse_iters"] = check_positive_int(opts["coarse_iters"], "coarse_iters")
    check_scalar(opts["kappa_g"], "kappa_g", low=0.0)
    check_scalar(opts["eps_g"], "eps_g", low=0.0)
    if L == 1:
        reject_unused(given, ("cycle", "pre_smooth", "post_smooth", "model", "kappa_g",
                              "eps_g", "coarse_norm", "coarse_hessian", "coarse_gamma1",
                              "coarse_radius", "box_factor"), "with a hierarchy of one level")
    if opts["max_work"] is not None:
        opts["max_work"] = check_scalar(opts["max_work"], "max_work", low=0.0, low_open=True)
    params = lsr1_opts = None
    if variant == "off":
        reject_unused(given, _TR_ONLY, "with variant='off' (AdaGrad steps, no trust-region "
                      "ratio tests)")
        if opts["model"] != "first-order":
            raise ValueError(f"variant='off' takes model='first-order' only, got "
                             f"{opts['model']!r}")
        opts["lr"] = check_scalar(opts["lr"], "lr", low=0.0, low_open=True)
        opts["adagrad_eps"] = check_scalar(opts["adagrad_eps"], "adagrad_eps", low=0.0)
        opts["box_factor"] = check_scalar(opts["box_factor"], "box_factor", low=0.0,
                                          low_open=True)
    else:
        reject_unused(given, _OFF_ONLY, "with variant='monotone' (they belong to "
                      "variant='off')")
        hessian = check_choice(opts["hessian"], "hessian", ("exact", "lsr1"))
        check_choice(opts["subproblem"], "subproblem", SUBPROBLEMS)
        check_choice(opts["coarse_norm"], "coarse_norm", NORMS)
        check_choice(opts["coarse_radius"], "coarse_radius", RADII)
        if opts["coarse_hessian"] is not None:
            check_choice(opts["coarse_hessian"], "coarse_hessian", ("exact", "lsr1"))
            if opts["model"] == "hybrid":
                raise ValueError("coarse_hessian has no effect with model='hybrid' (the "
                                 "coarse curvature is the Galerkin product R B P)")
        if opts["coarse_gamma1"] is not None:
            check_scalar(opts["coarse_gamma1"], "coarse_gamma1", low=0.0, high=1.0,
                         low_open=True)
        params = TRParams(opts["eta1"], opts["eta2"], opts["gamma1"], opts["gamma2"],
                          opts["max_radius"], opts["expand_on_boundary"])
        radius = check_scalar(opts["initial_radius"], "initial_radius", low=0.0,
                              low_open=True)
        if radius > params.max_radius:
            raise ValueError(f"initial_radius must be <= max_radius = {params.max_radius}, "
                             f"got {radius}")
        check_scalar(opts["min_radius"], "min_radius", low=0.0)
        if opts["cg_tol"] is not None:
            check_scalar(opts["cg_tol"], "cg_tol", low=0.0)
        if opts["cg_maxiter"] is not None:
            check_positive_int(opts["cg_maxiter"], "cg_maxiter")
        if opts["subproblem"] == "cauchy":
            reject_unused(given, ("cg_tol", "cg_maxiter"), "with subproblem='cauchy'")
        lsr1_opts = (opts["memory"], opts["sr1_gamma"], opts["sr1_skip"])
        coarse_h = opts["coarse_hessian"] or hessian
        if "lsr1" in (hessian, coarse_h) and not (
                hessian == "exact" and opts["model"] == "hybrid"):
            LSR1(*lsr1_opts[:1], gamma=lsr1_opts[1], skip=lsr1_opts[2])  # validate
        else:
            reject_unused(given, SR1_OPTIONS, "with hessian='exact'")
    # mini-batches
    bs = opts["batch_size"]
    if bs == "auto":
        bs = None if n is None else min(n, max(32, n // 16))
    elif bs is not None:
        bs = check_positive_int(bs, "batch_size")
        if n is None:
            raise ValueError("batch_size needs an objective with data (n_samples); "
                             "this one has none")
        if bs > n:
            raise ValueError(f"batch_size must be <= n_samples = {n}, got {bs}")
    if bs is None or bs == n:
        reject_unused(given, _BATCH_ONLY, "without mini-batches (batch_size=None or all "
                      "data)")
        bs = None
    check_choice(opts["growth_rule"], "growth_rule", GROWTH_RULES)
    check_scalar(opts["growth_theta"], "growth_theta", low=0.0, low_open=True)
    check_scalar(opts["batch_growth"], "batch_growth", low=1.0, low_open=True)
    check_positive_int(opts["growth_patience"], "growth_patience")
    rng = opts["rng"]
    if rng is not None and not isinstance(rng, (int, np.integer, np.random.Generator)):
        raise TypeError(f"rng must be None, an int seed or a numpy Generator, got {rng!r}")
    return params, lsr1_opts, bs


def _rmtr(hierarchy, theta0, run, opts, given, L, objs, counters, starts):
    n = getattr(objs[0], "n_samples", None)
    params, lsr1_opts, bs = _check_options(opts, given, L, n, counters)
    maxiter, max_work = opts["maxiter"], opts["max_work"]
    space = run.space
    sampler = SampleSize(n if n is not None else 1, bs, opts["growth_rule"],
                         opts["batch_growth"], opts["growth_theta"], opts["growth_patience"],
                         opts["rng"], space)
    stats = RMTRStatistics(LevelStatistics(l) for l in range(L))
    spaces = [getattr(lv.objective, "space", None) or EuclideanSpace()
              for lv in hierarchy.levels]

    def batch_of():
        return sampler.batch

    if opts["variant"] == "off":
        def fg_of(l, model):
            if l == 0:
                return model.value_and_grad

            def fg(z):  # the first-order model of a coarse level, checked
                f, g = model.value_and_grad(z)
                if not (math.isfinite(f) and spaces[l].all_finite(g)):
                    raise Diverged(f"non-finite loss or gradient on level {l} at cycle "
                                   f"{run.nit}")
                return f, g
            return fg

        eng = OFFEngine(hierarchy, run, opts, stats, spaces, fg_of, batch_of)
    else:
        eng = MonotoneEngine(hierarchy, run, opts, params, lsr1_opts, stats, batch_of)
    x = prepare_theta0(theta0)
    n_params = getattr(objs[0], "n_params", None)
    if n_params is not None and x.shape != (n_params,):
        raise ValueError(f"theta0 must have shape ({n_params},) (the finest level's "
                         f"parameters), got {x.shape}")

    def evaluate(what):
        eng.full = sampler.batch is None
        return sampler.evaluate(lambda b: run.value_and_grad(x, b, what=what))

    def level_work():
        return {f"work_l{l}": c.work - s[3] for l, (c, s) in
                enumerate(zip(counters, starts, strict=True))}

    def record():
        row = dict(fun=f, grad_norm=gnorm, radius=eng.radius,
                   batch_size=n if sampler.batch is None else len(sampler.batch),
                   grad_noise=sampler.noise, coarse_accepted=stats[0].coarse_accepted - acc0)
        if getattr(eng, "separate", False) and L > 1:
            row["correction_radius"] = eng.corr_radius[0]
        run.record(**row, **level_work())

    def finish(status, message, success=None):
        nonlocal f, g
        if not eng.full or g is None:
            if status not in (3, STATUS_INTERRUPTED):  # the loss on all data
                f, g = run.value_and_grad(x, None, what="the final iterate")
        works = level_work()
        for l, st in enumerate(stats):
            st.work = works[f"work_l{l}"]
        evals = [tuple(a - b for a, b in zip(c.snapshot()[:3], s[:3], strict=True))
                 for c, s in zip(counters, starts, strict=True)]
        kw = dict(radius=eng.radius, work_per_level=[works[f"work_l{l}"] for l in range(L)],
                  evaluations_per_level=evals, statistics=stats, n_levels=L,
                  batch_size=sampler.size if n is not None else None, variant=eng.variant)
        if status == 3:
            return run.diverged_result(x, f, g, message, **kw)
        if status == STATUS_INTERRUPTED:
            return run.interrupted_result(x, f, g, **kw)
        return run.result(x, f, g, status, message, success=success, **kw)

    def state():
        return {"x": x, "f": f, "g": g, "gnorm": gnorm, "sampler": sampler.state_dict(),
                "full": eng.full, "engine": eng.state_dict(),
                "starts": [list(st) for st in starts],
                "statistics": [dataclasses.asdict(st) for st in stats]}

    f = g = None
    acc0 = 0
    try:
        saved = run.restore(x)
        if saved is None:
            sampler.draw()
            f, g = evaluate("the initial point")
            gnorm = space.norm(g)
            sampler.grow_after(f, g)
            record()
        else:
            x, f, g, gnorm = (saved[k] for k in ("x", "f", "g", "gnorm"))
            sampler.load_state_dict(saved["sampler"])
            eng.full = saved["full"]
            eng.load_state_dict(saved["engine"])
            starts[:] = [tuple(st) for st in saved["starts"]]
            for st, d in zip(stats, saved["statistics"], strict=True):
                for key, val in d.items():
                    setattr(st, key, val)
        while True:
            if eng.full and g is not None and gnorm <= opts["gtol"]:
                return finish(STATUS_CONVERGED, "Optimization terminated successfully: "
                              f"gradient norm {gnorm:.3e} <= gtol.")
            if run.nit >= maxiter:
                return finish(STATUS_MAXITER, "Maximum number of cycles has been exceeded.")
            if max_work is not None and run.counts()["work"] >= max_work:
                return finish(STATUS_MAXITER, f"Work budget max_work = {max_work:g} spent.")
            if eng.stalled():
                return finish(STATUS_STALLED, f"Trust radius {eng.radius:.3e} fell below "
                              f"min_radius at cycle {run.nit} (precision loss?).")
            if run.nit > 0 and (not eng.full or g is None):  # a fresh batch
                sampler.draw()
                f, g = evaluate("a new mini-batch")
                gnorm = space.norm(g)
                sampler.grow_after(f, g)
                if eng.full and gnorm <= opts["gtol"]:
                    continue
            acc0 = stats[0].coarse_accepted
            fine = _FineModel(run, sampler.batch)
            x_new, f_new, g_new = eng.cycle(fine, x, f, g)
            x = x_new
            if g_new is not None:
                f, g = f_new, g_new
                gnorm = space.norm(g)
            run.nit += 1
            record()
            if g_new is None:
                g = None  # the gradient at the new x is not known (variant 'off')
            if run.notify(x, f, g, radius=eng.radius, batch_size=sampler.size):
                return finish(STATUS_CALLBACK, CALLBACK_MESSAGE, success=False)
            if run.boundary(state):
                return finish(STATUS_INTERRUPTED, None, success=False)
    except NotImplementedError as exc:
        raise ValueError(f"hessian='exact' needs every level objective's hessp ({exc}); "
                         "use options={'hessian': 'lsr1'}") from exc
    except Diverged as exc:
        return finish(3, exc)
