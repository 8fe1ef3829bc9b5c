"""Schwarz-preconditioned training: APTS (trust region) and SPQN (quasi-Newton).

Both solvers run outer iterations of the same shape on a
:class:`~mgnn.dd.Decomposition` of the parameters or of the data:

1. *coarse correction* (optional, with a ``hierarchy``): a few steps on a
   first-order coherent model of a coarser network, prolonged and globalised
   on the fine objective (:mod:`mgnn.dd.coarse`);
2. *subdomain solves*: every subdomain, from the current iterate, takes up to
   ``local_iters`` steps on its local problem (:mod:`mgnn.dd.local`), in
   parallel over the MPI ranks (additive) or in sequence, each from the
   iterate its predecessor left (multiplicative, Gauss-Seidel);
3. *combination and globalisation*: the local end points are merged (parameter
   subdomains write back their entries, with the partition of unity on shared
   entries; data subdomains are averaged with weights proportional to their
   sample counts) and the combined correction ``c`` is accepted by the method's
   globalisation;
4. *global steps* (optional): single-level steps on the whole objective.

:func:`apts` -- additively (or multiplicatively) preconditioned trust region
    Local trust-region steps start with radius ``omega * Delta`` (``Delta`` the
    global radius; ``omega = 1/sqrt(S)`` for ``S`` parameter subdomains, whose
    corrections are orthogonal, so ``||c|| <= Delta``; 1 for averaged data
    subdomains; ``1/S`` for data subdomains in sequence). The correction is
    clipped to the global trust region if it leaves it (``c <- t c``), and
    accepted by the ratio ``rho = (f(x) - f(x + c)) / pred`` with ``pred`` the
    sum of the model-predicted reductions of the accepted local steps (weighted
    like the combination for data; times ``t`` when clipped, a lower bound of
    the models' reduction along the shortened step when the local models are
    convex). The global radius is updated by the single-level rule
    (:func:`~mgnn.optim.update_radius`; "on the boundary" when the last
    accepted local step of some subdomain was, or when clipped). When no
    subdomain moved, the global radius becomes the largest final local radius
    over ``omega``. ``global_iters`` trust-region steps follow.
:func:`spqn` -- Schwarz-preconditioned quasi-Newton (SPQN; ASPQN when additive)
    Local L-BFGS steps (strong Wolfe) on every subdomain; a line search on the
    global objective along the combined correction ``c`` (strong Wolfe, or
    Armijo backtracking with ``combined_search='armijo'``; only when
    ``<g, c> < 0``; in sequence over parameter subdomains the local searches
    already decreased the global loss and the end point is taken as it is);
    then ``global_iters`` global L-BFGS steps, whose memory holds the secant
    pairs of the global steps only. When neither the subdomains nor the
    combined search made progress and ``global_iters = 0``, one global L-BFGS
    step is taken as a safeguard (history column ``safeguard``); an iteration
    without any progress ends the run (status 2).

**Work** is counted twice, in fine-gradient equivalents (:mod:`mgnn.work`):
``work`` is everything spent (all subdomains, all levels); ``parallel_work``
counts the subdomain phase of an additive iteration by its slowest subdomain
(one processor per subdomain, as the papers count) and every other phase
(coarse correction, global evaluations, line searches, global steps, and all
of a multiplicative sweep) in full. A parameter subdomain's evaluation is a
whole forward and backward sweep (cost 1); a data subdomain's costs its share
of the samples. In a multiplicative sweep over data subdomains with first-order
consistency, the global gradient at every intermediate point is evaluated (a
whole sweep, charged to the subdomain that needs it). Both totals are history
columns; ``local_work_max`` and ``local_work_sum`` split the subdomain phase.

**MPI**: every rank holds the whole objective (replicated data and ``theta``);
subdomain ``s`` is solved on one rank (a block partition of the subdomains
over the ranks, one or more per rank), the end points and statistics are
gathered in subdomain order and every rank combines them in that order, so the
iterates, the losses and both work counts are the same on any number of ranks.
A multiplicative sweep is sequential by nature and runs on every rank.

**State**: everything a run needs to continue is in one
:class:`~mgnn.dd.SchwarzState` (``res.state``); passing it as ``theta0``
continues the run bit for bit.

With one parameter subdomain owning all of ``theta``, ``local_iters=1`` and
``global_iters=0``, APTS is ``minimize(method='trust-region')`` and SPQN is
``minimize(method='lbfgs')``, iterate for iterate.
"""

from __future__ import annotations

import math
import time

import numpy as np

from mgnn._validation import check_choice, check_positive_int, check_scalar
from mgnn.backend import get_namespace
from mgnn.optim._common import (
    CALLBACK_MESSAGE,
    RUN_OPTIONS,
    STATUS_CALLBACK,
    STATUS_CONVERGED,
    STATUS_MAXITER,
    STATUS_STALLED,
    Diverged,
    Run,
    _CountingProxy,
    check_maxiter,
    check_tol,
    parse_options,
    prepare_theta0,
    reject_unused,
)
from mgnn.optim.lbfgs import LBFGSMemory, lbfgs_step
from mgnn.optim.linesearch import armijo, strong_wolfe
from mgnn.optim.lsr1 import LSR1
from mgnn.optim.trust_region import (
    SR1_OPTIONS,
    SUBPROBLEMS,
    TR_DEFAULTS,
    TRParams,
    reduction_ratio,
    trust_region_step,
    update_radius,
)
from mgnn.runs.checkpoint import STATUS_INTERRUPTED, as_checkpoint
from mgnn.runs.state import load_components_state, stateful_components
from mgnn.vectorspace import EuclideanSpace

from ._engine import (
    DDStatistics,
    Exchange,
    FineView,
    SchwarzState,
    SubdomainStatistics,
    charge,
    metered,
)
from .coarse import CoarseSpace, coarse_lbfgs, coarse_trust_region
from .decomposition import Decomposition
from .local import DataSubproblem, LocalResult, ParameterSubproblem, local_lbfgs, local_trust_region

__all__ = ["apts", "spqn", "APTS_DEFAULTS", "SPQN_DEFAULTS", "VARIANTS"]

VARIANTS = ("additive", "multiplicative")

#: Options shared by :func:`apts` and :func:`spqn`.
COMMON_DEFAULTS = {
    "maxiter": 100,
    "gtol": 1e-5,
    "variant": "additive",
    "local_iters": 3,
    "local_gtol": None,
    "first_order_consistency": None,
    "coarse_level": 1,
    "coarse_iters": 5,
    "max_work": None,
}

#: Options of :func:`apts` (the trust-region options of ``minimize`` plus the above).
APTS_DEFAULTS = dict(TR_DEFAULTS, **COMMON_DEFAULTS, hessian="lsr1", global_iters=0,
                     local_radius="auto")

#: Options of :func:`spqn`.
SPQN_DEFAULTS = dict(COMMON_DEFAULTS, global_iters=1, memory=10, c1=1e-4, c2=0.9, maxls=20,
                     combined_search="wolfe")

_COARSE_ONLY = ("coarse_level", "coarse_iters")
#: options a resumed run may change (the stopping criteria)
_STOP_KEYS = ("maxiter", "gtol", "max_work")
#: fields of the scalar row each subdomain reports
_ROW = ("pred", "steps", "accepted", "inner", "radius", "on_boundary", "work", "nfev",
        "njev", "nhev", "f_full", "has_full")
_K = len(_ROW)


class _Summary:
    """One subdomain's gathered result."""

    __slots__ = ("z", "full") + _ROW

    def __init__(self, z, row, full):
        for name, v in zip(_ROW, row, strict=True):
            setattr(self, name, float(v))
        self.z = z if self.accepted > 0 else None
        self.full = full


class _Solver:
    """One run of a DD solver: validation, state, phases, the loop."""

    method = None
    defaults = None

    # -- construction ---------------------------------------------------------
    def __init__(self, objective, theta0, decomposition, options, callback, hierarchy, comm):
        if getattr(objective, "counter", None) is None:
            objective = _CountingProxy(objective)
        if not callable(getattr(objective, "value_and_grad", None)):
            raise TypeError(f"objective must follow the objective protocol (value_and_grad, "
                            f"...), got {type(objective).__name__}")
        space = getattr(objective, "space", None) or EuclideanSpace()
        if getattr(getattr(space, "comm", None), "size", 1) > 1:
            raise ValueError("the objective must be replicated on every rank (a serial "
                             "Objective); its space reduces over a communicator of "
                             f"{space.comm.size} ranks")
        if not isinstance(decomposition, Decomposition):
            raise TypeError(f"decomposition must be a mgnn.dd.Decomposition, got "
                            f"{type(decomposition).__name__}")
        decomposition.check_objective(objective)
        self.obj, self.space, self.dec = objective, space, decomposition
        self.S = decomposition.n_subdomains
        # the run services (progress, checkpoint files, resume from a file) are not options
        # of the algorithm: they are neither validated against nor stored in the state
        self.run_options, from_file = {}, None
        if isinstance(options, dict):
            options = dict(options)
            self.run_options = {k: options.pop(k) for k in RUN_OPTIONS if k in options}
            from_file = self.run_options.pop("resume", None)
        if from_file is not None:
            if isinstance(theta0, SchwarzState):
                raise ValueError("give the state to continue from either as theta0 (a "
                                 "SchwarzState) or as the 'resume' option, not both")
            ck = as_checkpoint(from_file, xp=get_namespace(theta0))
            if ck.state.get("solver") != self.method:
                raise ValueError(f"resume: the checkpoint was written by "
                                 f"{ck.state.get('solver')!r}, this run is {self.method!r}")
            theta0 = SchwarzState.from_state_dict(ck.state["method"]["dd"])
            self._components_saved = ck.state["components"]
        resume = isinstance(theta0, SchwarzState)
        opts, given = parse_options(self.method, options, self.defaults)
        if resume:
            state = theta0
            if state.method != self.method:
                raise ValueError(f"theta0 is the state of a {state.method!r} run, not of "
                                 f"{self.method!r}")
            if state.two_level != (hierarchy is not None):
                raise ValueError("theta0 is the state of a run " + (
                    "with" if state.two_level else "without") + " a hierarchy (coarse "
                    "correction); pass the same")
            before = dict(self.defaults, **state.options["_raw"])
            for k in sorted(given):
                if k not in _STOP_KEYS and opts[k] != before[k]:
                    raise ValueError(f"option {k!r} differs from the resumed run's "
                                     f"({opts[k]!r} vs {before[k]!r}); only "
                                     f"{', '.join(_STOP_KEYS)} may change on resume")
            raw = dict(state.options["_raw"])
            raw.update({k: opts[k] for k in given if k in _STOP_KEYS})
            opts, given = parse_options(self.method, raw, self.defaults)
        self.raw_options = {k: opts[k] for k in given}
        self.hierarchy = hierarchy
        self._validate_common(opts, given)
        self._validate(opts, given)
        self.opts = opts
        self.exchange = Exchange(comm, self.S)
        self.comm = self.exchange.comm
        self.callback = callback
        if resume:
            self._resume(theta0)
        else:
            self._fresh(theta0)

    def _validate_common(self, opts, given):
        check_maxiter(opts["maxiter"])
        check_tol(opts["gtol"], "gtol")
        check_choice(opts["variant"], "variant", VARIANTS)
        check_positive_int(opts["local_iters"], "local_iters")
        check_positive_int(opts["global_iters"], "global_iters", minimum=0)
        dec = self.dec
        if opts["local_gtol"] is None:
            opts["local_gtol"] = (opts["gtol"] / math.sqrt(self.S) if dec.kind == "parameters"
                                  else opts["gtol"])
        else:
            check_tol(opts["local_gtol"], "local_gtol")
        foc = opts["first_order_consistency"]
        if dec.kind == "parameters":
            if "first_order_consistency" in given:
                raise ValueError("option 'first_order_consistency' has no effect with a "
                                 "decomposition of the parameters: a parameter subdomain's "
                                 "local gradient is the restricted global gradient")
            opts["first_order_consistency"] = False
        elif foc is None:
            opts["first_order_consistency"] = True
        elif not isinstance(foc, bool):
            raise TypeError(f"first_order_consistency must be bool, got {type(foc).__name__}")
        if self.hierarchy is None:
            reject_unused(given, _COARSE_ONLY, "without a hierarchy (no coarse correction)")
            self.cspace = None
        else:
            check_positive_int(opts["coarse_iters"], "coarse_iters")
            n = getattr(self.obj, "n_params", None)
            levels = getattr(self.hierarchy, "levels", None)
            if n is None and levels:
                n = levels[0].transfer.n_fine if levels[0].transfer is not None else None
            self.cspace = CoarseSpace(self.hierarchy, opts["coarse_level"], n)
        if opts["max_work"] is not None:
            opts["max_work"] = check_scalar(opts["max_work"], "max_work", low=0.0,
                                            low_open=True)

    def _validate(self, opts, given):
        raise NotImplementedError

    def _new_memory(self):
        raise NotImplementedError

    def _fresh(self, theta0):
        x = prepare_theta0(theta0)
        n = getattr(self.obj, "n_params", None)
        if self.dec.kind == "parameters":
            n = self.dec.size
        if n is not None and x.shape != (n,):
            raise ValueError(f"theta0 must have shape ({n},) (the objective's parameters), "
                             f"got {x.shape}")
        st = SchwarzState(self.method, dict(self.opts, _raw=self.raw_options), x,
                          self._dec_key())
        st.ranks = (self.comm.size, self.comm.rank)
        st.two_level = self.cspace is not None
        for s in self._solved_here():
            st.local[s] = self._new_memory()
        if self.opts["global_iters"] > 0:
            st.global_memory = self._new_global_memory()
        if self.cspace is not None:
            st.coarse_memory = self._new_coarse_memory()
        mult = self.opts["variant"] == "multiplicative"
        st.statistics = DDStatistics(
            SubdomainStatistics(s, int(self.dec.sizes[s]), -1 if mult else
                                int(self.exchange.owner[s]), self.dec.labels[s])
            for s in range(self.S))
        st.radius = self._initial_radius()
        self.state = st
        self.run = self._make_run()
        try:
            with metered([self.obj]) as cs:
                st.f, st.g = self.run.value_and_grad(x, what="the initial point")
            charge(st.ledger, cs)
        except Diverged as exc:
            self._initial_failure = exc
            return
        self._initial_failure = None
        self._record({"step_norm": 0.0})

    def _resume(self, state):
        if state.ranks != (self.comm.size, self.comm.rank):
            raise ValueError(f"the state was written by rank {state.ranks[1]} of "
                             f"{state.ranks[0]}; this is rank {self.comm.rank} of "
                             f"{self.comm.size}")
        if state.decomposition != self._dec_key():
            raise ValueError("the state belongs to another decomposition: "
                             f"{state.decomposition} vs {self._dec_key()}")

        st = state.copy()
        st.options = dict(self.opts, _raw=self.raw_options)
        st.materialize(self._new_memory, self._new_global_memory, self._new_coarse_memory)
        self.state = st
        self.run = self._make_run()
        saved = getattr(self, "_components_saved", None)
        if saved is not None:  # resumed from a checkpoint file
            load_components_state(self.run.components, saved)
        self._initial_failure = None

    def _dec_key(self):
        d = self.dec
        return (f"{d.kind}: {d.size} entries in {d.n_subdomains} subdomains "
                f"({d.description}), sizes {d.sizes.tolist()}")

    def _solved_here(self):
        if self.opts["variant"] == "multiplicative":
            return list(range(self.S))
        return list(self.exchange.mine)

    def _make_run(self):
        st = self.state
        run = Run(FineView(self.obj, st.ledger, self.space), self.callback, self.method,
                  self.run_options, counters=[], components=stateful_components(self.obj))
        run.history = st.history
        run._start = (0, 0, 0, 0.0)  # counts are the run's totals (cumulative over resumes)
        run._t0 = time.perf_counter() - st.elapsed
        run.nit = st.nit
        return run

    def _initial_radius(self):
        return math.nan

    # -- evaluations and records -------------------------------------------------
    def _fg(self, z):
        return self.run.value_and_grad(z, what="a trial point")

    def _record(self, row):
        st = self.state
        row = dict(row)
        row.setdefault("fun", st.f)
        row.setdefault("grad_norm", self.space.norm(st.g))
        if not math.isnan(st.radius):
            row.setdefault("radius", st.radius)
        row["parallel_work"] = st.ledger["parallel_work"]
        self.run.nit = st.nit
        self.run.record(**row)

    # -- the subdomain phase -----------------------------------------------------------
    def _start_local(self, s, x, f, g):
        """The local problem of subdomain ``s`` at ``x`` and its start ``(z, f, g)``."""
        d = self.dec
        if d.kind == "parameters":
            idx = d.subdomains[s]
            sub = ParameterSubproblem(self.obj, x, idx)
            return sub, sub.z0, f, g[idx]
        batch = None if d.sizes[s] == d.size else d.subdomains[s]
        fs, gs = self.obj.value_and_grad(x, batch=batch)
        fs = float(fs)
        if not (math.isfinite(fs) and bool(np.isfinite(gs).all())):
            return None
        shift = g - gs if self.opts["first_order_consistency"] else None
        sub = DataSubproblem(self.obj, x, batch, shift)
        return sub, x, fs, (gs + shift if shift is not None else gs)

    def _solve(self, s, sub, z, f, g, local_radius):
        raise NotImplementedError

    def _local_radius(self, radius):
        return math.nan

    def _row(self, res, c):
        full = res.full
        return np.array([res.pred, res.steps, res.accepted, res.inner, res.radius,
                         float(res.on_boundary), c.work, c.nfev, c.njev, c.nhev,
                         full[0] if full is not None else math.nan,
                         1.0 if full is not None else 0.0])

    def _update_stats(self, s, sm):
        t = self.state.statistics[s]
        t.solves += 1
        t.steps += int(sm.steps)
        t.accepted += int(sm.accepted)
        t.inner += int(sm.inner)
        t.work += sm.work
        if not math.isnan(sm.radius):
            t.radius = sm.radius

    def _local_additive(self, x, f, g, radius):
        """Every subdomain from ``x`` (this rank's in parallel); gathered summaries."""
        dec, st = self.dec, self.state
        trivial = dec.is_trivial
        n = x.size
        vectors, rows = {}, {}
        for s in self.exchange.mine:
            with metered([self.obj]) as (c,):
                start = self._start_local(s, x, f, g)
                if start is None:
                    res = LocalResult(None, math.nan, None, status="start_not_finite")
                else:
                    res = self._solve(s, *start, self._local_radius(radius))
            zlen = dec.sizes[s] if dec.kind == "parameters" else n
            xp = get_namespace(x)
            z = res.z if res.accepted else xp.zeros(zlen, dtype=x.dtype)
            if trivial:
                G = res.full[1] if res.full is not None else xp.zeros(n, dtype=x.dtype)
                z = xp.concatenate([z, G])
            vectors[s] = z
            rows[s] = self._row(res, c)
        lengths = [(dec.sizes[s] if dec.kind == "parameters" else n) + (n if trivial else 0)
                   for s in range(self.S)]
        vecs, R = self.exchange.gather(vectors, lengths, rows, x.dtype, _K)
        out = []
        for s in range(self.S):
            v = vecs[s]
            full = None
            if trivial:
                v, G = v[:-n], v[-n:]
                if R[s, _ROW.index("has_full")]:
                    full = (float(R[s, _ROW.index("f_full")]), G.copy())
            sm = _Summary(v.copy(), R[s], full)
            out.append(sm)
            self._update_stats(s, sm)
        works = np.array([sm.work for sm in out])
        led = st.ledger
        for sm in out:
            led["nfev"] += int(sm.nfev)
            led["njev"] += int(sm.njev)
            led["nhev"] += int(sm.nhev)
        led["work"] += float(np.sum(works))
        led["parallel_work"] += float(np.max(works))
        return out, float(np.max(works)), float(np.sum(works))

    def _local_multiplicative(self, x, f, g, radius):
        """The subdomains in sequence (on every rank); the end point and what is known there."""
        dec, st = self.dec, self.state
        foc = self.opts["first_order_consistency"]
        xc, fc, gc = x, f, g
        good = (xc, fc, gc, 0.0)  # the last point with a finite global loss, and pred there
        out, pred, wsum, wmax = [], 0.0, 0.0, 0.0
        for s in range(self.S):
            broken = False
            with metered([self.obj]) as (c,):
                if dec.kind == "data" and gc is None and foc:
                    fc, gc = self.obj.value_and_grad(xc)
                    fc = float(fc)
                    if math.isfinite(fc) and bool(np.isfinite(gc).all()):
                        good = (xc, fc, gc, pred)
                    else:  # back to the last good point; the sweep ends here
                        xc, fc, gc, pred = good
                        broken = True
                start = None
                if not broken:
                    start = self._start_local(s, xc, fc, gc)
                if start is None:
                    res = LocalResult(None, math.nan, None, status="start_not_finite")
                else:
                    res = self._solve(s, *start, self._local_radius(radius))
            sm = _Summary(res.z, self._row(res, c), res.full)
            out.append(sm)
            self._update_stats(s, sm)
            w = charge(st.ledger, [c])
            wsum += w
            wmax = max(wmax, w)
            if broken:
                break
            if res.accepted:
                pred += res.pred
                if dec.kind == "parameters":
                    xc = xc.copy()
                    xc[dec.subdomains[s]] = res.z
                    fc, gc = res.full
                else:
                    xc, fc, gc = res.z, None, None
        known = (fc, gc) if gc is not None and fc is not None else None
        return out, xc, known, pred, wmax, wsum

    # -- the loop --------------------------------------------------------------------
    def _stop_check(self):
        return None

    def solve(self):
        try:
            return self._loop()
        finally:
            self.run.close()

    def _loop(self):
        st, run = self.state, self.run
        opts = self.opts
        if self._initial_failure is not None:
            return self._finish(3, self._initial_failure)
        try:
            while True:
                gnorm = self.space.norm(st.g)
                if gnorm <= opts["gtol"]:
                    return self._finish(STATUS_CONVERGED, "Optimization terminated "
                                        f"successfully: gradient norm {gnorm:.3e} <= gtol.")
                if st.nit >= opts["maxiter"]:
                    return self._finish(STATUS_MAXITER,
                                        "Maximum number of iterations has been exceeded.")
                if opts["max_work"] is not None and st.ledger["work"] >= opts["max_work"]:
                    return self._finish(STATUS_MAXITER, f"Work budget max_work = "
                                        f"{opts['max_work']:g} spent.")
                stop = self._stop_check()
                if stop is not None:
                    return self._finish(*stop)
                row = self._iterate()
                stalled = row.pop("stalled", None)
                st.nit += 1
                self._record(row)
                if run.notify(st.x, st.f, st.g, **self._extra(brief=True)):
                    return self._finish(STATUS_CALLBACK, CALLBACK_MESSAGE, success=False)
                if stalled:
                    return self._finish(STATUS_STALLED, stalled)
                if run.boundary(lambda: {"x": st.x, "dd": st.state_dict()}):
                    return self._finish(STATUS_INTERRUPTED, None)
        except Diverged as exc:
            return self._finish(3, exc)

    def _extra(self, brief=False):
        st = self.state
        out = {"parallel_work": st.ledger["parallel_work"]}
        if not math.isnan(st.radius):
            out["radius"] = st.radius
        if brief:
            return out
        out.update(work_per_subdomain=np.array([t.work for t in st.statistics]),
                   statistics=st.statistics, decomposition=self.dec, n_subdomains=self.S)
        return out

    def _finish(self, status, message, success=None):
        st, run = self.state, self.run
        st.elapsed = time.perf_counter() - run._t0
        extra = self._extra()
        extra["state"] = st.copy()
        if status == 3:
            return run.diverged_result(st.x, st.f, st.g, message, **extra)
        if status == STATUS_INTERRUPTED:
            return run.interrupted_result(st.x, st.f, st.g, **extra)
        return run.result(st.x, st.f, st.g, status, message, success=success, **extra)


# =====================================================================================
# APTS
# =====================================================================================
class _APTS(_Solver):
    method = "apts"
    defaults = APTS_DEFAULTS

    def _validate(self, opts, given):
        check_choice(opts["hessian"], "hessian", ("exact", "lsr1"))
        check_choice(opts["subproblem"], "subproblem", SUBPROBLEMS)
        self.params = TRParams(opts["eta1"], opts["eta2"], opts["gamma1"], opts["gamma2"],
                               opts["max_radius"], opts["expand_on_boundary"])
        r = check_scalar(opts["initial_radius"], "initial_radius", low=0.0, low_open=True)
        if r > self.params.max_radius:
            raise ValueError(f"initial_radius must be <= max_radius = "
                             f"{self.params.max_radius}, got {r}")
        check_scalar(opts["min_radius"], "min_radius", low=0.0)
        if opts["cg_tol"] is not None:
            check_scalar(opts["cg_tol"], "cg_tol", low=0.0)
        if opts["cg_maxiter"] is not None:
            check_positive_int(opts["cg_maxiter"], "cg_maxiter")
        if opts["subproblem"] == "cauchy":
            reject_unused(given, ("cg_tol", "cg_maxiter"), "with subproblem='cauchy'")
        if opts["hessian"] == "lsr1":
            LSR1(opts["memory"], gamma=opts["sr1_gamma"], skip=opts["sr1_skip"])  # validate
        else:
            reject_unused(given, SR1_OPTIONS, "with hessian='exact'")
            if getattr(self.obj, "has_hessp", True) is False:
                raise ValueError("hessian='exact' needs an objective with hessp; use "
                                 "options={'hessian': 'lsr1'}")
        lr = opts["local_radius"]
        if isinstance(lr, str):
            check_choice(lr, "local_radius", ("auto",))
            if self.dec.kind == "parameters":
                self.omega = 1.0 / math.sqrt(self.S)
            elif opts["variant"] == "additive":
                self.omega = 1.0
            else:
                self.omega = 1.0 / self.S
        else:
            self.omega = check_scalar(lr, "local_radius", low=0.0, low_open=True)
        if self.cspace is not None:
            self.tsp = self.cspace.gram_space()

    def _lsr1(self):
        o = self.opts
        return LSR1(o["memory"], gamma=o["sr1_gamma"], skip=o["sr1_skip"])

    def _new_memory(self):
        return self._lsr1() if self.opts["hessian"] == "lsr1" else None

    _new_global_memory = _new_memory
    _new_coarse_memory = _new_memory

    def _initial_radius(self):
        return float(self.opts["initial_radius"])

    def _local_radius(self, radius):
        return self.omega * radius

    def _solve(self, s, sub, z, f, g, local_radius):
        o = self.opts
        return local_trust_region(sub, z, f, g, local_radius, o["local_iters"],
                                  B=self.state.local[s], params=self.params,
                                  subproblem=o["subproblem"], cg_tol=o["cg_tol"],
                                  cg_maxiter=o["cg_maxiter"], gtol=o["local_gtol"],
                                  min_radius=self.omega * o["min_radius"])

    def _stop_check(self):
        r = self.state.radius
        if r < self.opts["min_radius"]:
            return (STATUS_STALLED, f"Trust radius {r:.3e} fell below min_radius at "
                    f"iteration {self.state.nit} (precision loss?).")
        return None

    def _iterate(self):
        st, o, dec, space = self.state, self.opts, self.dec, self.space
        x_start = st.x
        row = {}
        if self.cspace is not None:
            with metered([self.obj, self.cspace.objective]) as cs:
                cr = coarse_trust_region(self.cspace, self._fg, st.x, st.f, st.g, st.radius,
                                         o["coarse_iters"], B=st.coarse_memory,
                                         params=self.params, subproblem=o["subproblem"],
                                         cg_tol=o["cg_tol"], cg_maxiter=o["cg_maxiter"],
                                         tsp=self.tsp)
            row["coarse_work"] = charge(st.ledger, cs)
            row.update(coarse_tried=cr.tried, coarse_accepted=cr.accepted, coarse_rho=cr.rho)
            if cr.tried:
                st.radius = cr.radius
            st.x, st.f, st.g = cr.x, cr.f, cr.g
            if st.radius < o["min_radius"]:
                row["step_norm"] = space.norm(st.x - x_start)
                return row
        x, f, g, radius = st.x, st.f, st.g, st.radius
        if o["variant"] == "additive":
            sums, wmax, wsum = self._local_additive(x, f, g, radius)
            moved = [sm for sm in sums if sm.accepted > 0]
            trial = dec.combine(x, [sm.z for sm in sums]) if moved else None
            if dec.kind == "data":
                pred = float(sum(w * sm.pred for w, sm in zip(dec.data_weights, sums,
                                                              strict=True) if sm.accepted))
            else:
                pred = float(sum(sm.pred for sm in moved))
            known = moved[0].full if dec.is_trivial and moved else None
        else:
            sums, trial, known, pred, wmax, wsum = self._local_multiplicative(x, f, g, radius)
            moved = [sm for sm in sums if sm.accepted > 0]
        row.update(local_work_max=wmax, local_work_sum=wsum, moved=len(moved),
                   local_steps=int(sum(sm.steps for sm in sums)),
                   local_accepted=int(sum(sm.accepted for sm in sums)))
        if not moved:
            tried = [sm.radius for sm in sums if sm.steps > 0]
            if tried:
                st.radius = max(tried) / self.omega
            row.update(rho=math.nan, accepted=False, clipped=False)
        else:
            c = trial - x
            cnorm = space.norm(c)
            on = any(sm.on_boundary for sm in moved)
            clipped = cnorm > radius * (1.0 + 1e-12)
            if clipped:
                t = radius / cnorm
                trial = x + t * c
                pred *= t
                cnorm = space.norm(trial - x)
                on, known = True, None
            if known is not None:
                f_t, g_t = known
            else:
                with metered([self.obj]) as cs:
                    f_t, g_t = self.run.value_and_grad(trial, what="the combined trial point")
                charge(st.ledger, cs)
            rho = reduction_ratio(float(f) - f_t, pred)
            st.radius, accepted = update_radius(rho, radius, cnorm, self.params, on)
            if accepted:
                st.x, st.f, st.g = trial, f_t, g_t
            row.update(rho=rho, accepted=accepted, clipped=clipped, pred=pred)
        # global trust-region steps
        B = st.global_memory
        gsteps = 0
        for _ in range(o["global_iters"]):
            gnorm = space.norm(st.g)
            if gnorm <= o["gtol"] or st.radius < o["min_radius"]:
                break
            hess = B.matvec if B is not None else (lambda v, z=st.x: self.run.hessp(z, v))
            tol = o["cg_tol"] if o["cg_tol"] is not None else (
                1e-8 if B is not None else min(0.5, math.sqrt(gnorm)))
            with metered([self.obj]) as cs:
                r = trust_region_step(self._fg, st.x, st.f, st.g, st.radius, hess,
                                      space=space, params=self.params,
                                      subproblem=o["subproblem"], tol=tol,
                                      maxiter=o["cg_maxiter"])
            charge(st.ledger, cs)
            if B is not None:
                B.update(r.step, r.g_trial - st.g)
            st.x, st.f, st.g, st.radius = r.x, r.f, r.g, r.radius
            gsteps += int(r.accepted)
        if o["global_iters"]:
            row["global_accepted"] = gsteps
        row["step_norm"] = space.norm(st.x - x_start)
        return row


# =====================================================================================
# SPQN
# =====================================================================================
class _SPQN(_Solver):
    method = "spqn"
    defaults = SPQN_DEFAULTS

    def _validate(self, opts, given):
        check_positive_int(opts["memory"], "memory")
        c1 = check_scalar(opts["c1"], "c1", low=0.0, high=1.0, low_open=True, high_open=True)
        check_scalar(opts["c2"], "c2", low=c1, high=1.0, low_open=True, high_open=True)
        check_positive_int(opts["maxls"], "maxls")
        check_choice(opts["combined_search"], "combined_search", ("wolfe", "armijo"))

    def _new_memory(self):
        return LBFGSMemory(self.opts["memory"])

    def _new_global_memory(self):
        return LBFGSMemory(self.opts["memory"], self.space)

    def _fresh(self, theta0):
        super()._fresh(theta0)
        if self.state.global_memory is None:  # the safeguard step needs one
            self.state.global_memory = self._new_global_memory()

    _new_coarse_memory = _new_memory

    def _ls_opts(self):
        o = self.opts
        return {"c1": o["c1"], "c2": o["c2"], "maxls": o["maxls"]}

    def _solve(self, s, sub, z, f, g, local_radius):
        o = self.opts
        return local_lbfgs(sub, z, f, g, o["local_iters"], self.state.local[s],
                           gtol=o["local_gtol"], **self._ls_opts())

    def _iterate(self):
        st, o, dec, space = self.state, self.opts, self.dec, self.space
        x_start = st.x
        row = {}
        if self.cspace is not None:
            with metered([self.obj, self.cspace.objective]) as cs:
                cr = coarse_lbfgs(self.cspace, self._fg, st.x, st.f, st.g, o["coarse_iters"],
                                  st.coarse_memory, **self._ls_opts())
            row["coarse_work"] = charge(st.ledger, cs)
            row.update(coarse_tried=cr.tried, coarse_accepted=cr.accepted,
                       coarse_alpha=cr.alpha)
            st.x, st.f, st.g = cr.x, cr.f, cr.g
        x, f, g = st.x, st.f, st.g
        if o["variant"] == "additive":
            sums, wmax, wsum = self._local_additive(x, f, g, None)
            moved = [sm for sm in sums if sm.accepted > 0]
            trial = dec.combine(x, [sm.z for sm in sums]) if moved else None
            known = moved[0].full if dec.is_trivial and moved else None
        else:
            sums, trial, known, _, wmax, wsum = self._local_multiplicative(x, f, g, None)
            moved = [sm for sm in sums if sm.accepted > 0]
            if dec.kind == "data":
                known = None
        row.update(local_work_max=wmax, local_work_sum=wsum, moved=len(moved),
                   local_steps=int(sum(sm.steps for sm in sums)),
                   local_accepted=int(sum(sm.accepted for sm in sums)))
        alpha = math.nan
        if moved:
            if known is not None:  # the local searches were on f itself
                st.x, st.f, st.g = trial, known[0], known[1]
                alpha = 1.0
            else:
                c = trial - x
                if space.dot(g, c) < 0:
                    with metered([self.obj]) as cs:
                        if o["combined_search"] == "wolfe":
                            ls = strong_wolfe(self._fg, x, c, f, g, space=space,
                                              **self._ls_opts())
                        else:
                            ls = armijo(self._fg, x, c, f, g, space=space, c1=o["c1"],
                                        maxls=o["maxls"])
                    charge(st.ledger, cs)
                    row["nls"] = ls.nevals
                    if ls.alpha is not None:
                        st.x, st.f, st.g = ls.x, ls.f, ls.g
                        alpha = ls.alpha
                else:
                    row["not_descent"] = True
        row["alpha"] = alpha
        n_global = o["global_iters"]
        if st.x is x and n_global == 0:  # no progress from the subdomains: safeguard step
            n_global = 1
            row["safeguard"] = True
        gsteps = 0
        for _ in range(n_global):
            gnorm = space.norm(st.g)
            if gnorm <= o["gtol"]:
                break
            with metered([self.obj]) as cs:
                ls = lbfgs_step(self._fg, st.x, st.f, st.g, st.global_memory, space=space,
                                gnorm=gnorm, **self._ls_opts())
            charge(st.ledger, cs)
            if ls.alpha is None:
                break
            st.x, st.f, st.g = ls.x, ls.f, ls.g
            gsteps += 1
        if o["global_iters"]:
            row["global_accepted"] = gsteps
        row["step_norm"] = space.norm(st.x - x_start)
        if st.x is x_start:
            row["stalled"] = (f"No progress at iteration {st.nit + 1}: no subdomain, "
                                      "combined or global step decreased the loss "
                                      "(precision loss?).")
        return row


def apts(objective, theta0, decomposition, options=None, callback=None, *, hierarchy=None,
         comm=None):
    """Additively (or multiplicatively) preconditioned trust region (APTS).

    See :mod:`mgnn.dd.schwarz` for the method. Local steps are trust-region
    steps (Steihaug-Toint CG, L-SR1 or exact curvature) on every subdomain's
    local problem; the merged correction is accepted by the global ratio of
    actual to predicted reduction.

    Parameters
    ----------
    objective : object
        In the objective protocol (``value``, ``value_and_grad``, ``hessp``,
        ``counter``, ``space``; ``n_samples`` and ``batch=`` for data
        decompositions), replicated on every rank.
    theta0 : ndarray or SchwarzState
        Initial parameters, or the ``state`` of an earlier run to continue it
        bit for bit (then only ``maxiter``, ``gtol`` and ``max_work`` may
        differ from that run's options).
    decomposition : Decomposition
        Of the parameters or of the data (:func:`by_layers`, :func:`by_neurons`,
        :func:`by_tensors`, :func:`by_data`, ...).
    options : dict, optional
        The options of ``minimize(method='trust-region')`` (``hessian``
        default 'lsr1' here; ``initial_radius``, ``max_radius``,
        ``min_radius``, ``eta1``, ``eta2``, ``gamma1``, ``gamma2``,
        ``expand_on_boundary``, ``subproblem``, ``cg_tol``, ``cg_maxiter``,
        ``memory``, ``sr1_gamma``, ``sr1_skip``: they apply to the local, the
        global and the coarse steps), and

        maxiter : int, default 100
            Outer iterations.
        gtol : float, default 1e-5
            Stop when the global gradient norm is ``<= gtol``.
        variant : {'additive', 'multiplicative'}, default 'additive'
        local_iters : int, default 3
            Trust-region steps per subdomain and outer iteration.
        local_gtol : float or None
            A subdomain stops when its local gradient norm is below it
            (default ``gtol / sqrt(S)`` for parameters, ``gtol`` for data).
        local_radius : 'auto' or float, default 'auto'
            Local initial radius over the global one (``omega`` above).
        first_order_consistency : bool, default True (data only)
            Add ``<grad f(x) - grad f_s(x), z - x>`` to a data subdomain's
            loss; an error with parameter decompositions (where it holds by
            construction).
        global_iters : int, default 0
            Global trust-region steps after the merge.
        coarse_level, coarse_iters : int, default 1 and 5
            With a ``hierarchy``: the coarse level and its steps per iteration.
        max_work : float or None
            Stop (status 1) when the total work reaches it.
        disp, disp_every, checkpoint, resume
            Progress lines, checkpoint files (the whole :class:`SchwarzState`, as
            plain data, every k outer iterations / t seconds and on
            SIGINT/SIGTERM: status 4) and resuming from such a file, bit for bit
            (:mod:`mgnn.runs`). ``resume`` is the file form of passing a state as
            ``theta0``.

    callback : callable, optional
        ``callback(intermediate_result)`` after every outer iteration (with
        ``x, fun, jac, nit, work, parallel_work, radius``); ``StopIteration``
        ends the run (status 99).
    hierarchy : Hierarchy, optional
        Levels whose ``levels[0]`` has the objective's parameters; turns on
        the coarse correction (two-level method).
    comm : None, Comm or mpi4py communicator
        Ranks over which the subdomains are solved (default: all processes).

    Returns
    -------
    OptimizeResult
        ``x, fun, jac, nit, nfev, njev, nhev`` (of the fine objective, all
        subdomains and ranks), ``work`` (total), ``parallel_work``,
        ``work_per_subdomain``, ``statistics`` (:class:`DDStatistics`),
        ``radius``, ``state`` (:class:`SchwarzState`), ``decomposition``,
        ``success``, ``status`` (0 converged, 1 maxiter or max_work, 2 radius
        collapsed, 3 NaN/inf met: ``x`` is the last good iterate, 99
        callback), ``message``, ``time`` and ``history`` (one row per outer
        iteration: ``fun, grad_norm, step_norm, radius, rho, accepted,
        clipped, moved, local_steps, local_accepted, local_work_max,
        local_work_sum, work, parallel_work, time``, coarse columns ...).

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.data import peaks
    >>> from mgnn.nets import ResNet
    >>> from mgnn.objective import Objective
    >>> from mgnn.dd import apts, by_layers
    >>> d = peaks(200, 10)
    >>> net = ResNet(2, 4, 8, 5, T=5.0)
    >>> obj = Objective(net, d.X_train, d.Y_train, tikhonov=1e-4)
    >>> theta0 = net.init(0)
    >>> res = apts(obj, theta0, by_layers(net, 4), options={"maxiter": 5})
    >>> res.nit, bool(res.fun < obj.value(theta0)), res.parallel_work < res.work
    (5, True, True)
    >>> bool(np.all(np.diff(res.history['fun']) <= 0))      # monotone
    True
    """
    return _APTS(objective, theta0, decomposition, options, callback, hierarchy,
                 comm).solve()


def spqn(objective, theta0, decomposition, options=None, callback=None, *, hierarchy=None,
         comm=None):
    """Schwarz-preconditioned quasi-Newton: SPQN / ASPQN (Kopaničáková et al.).

    See :mod:`mgnn.dd.schwarz` for the method. Local steps are L-BFGS steps
    with a strong-Wolfe line search on every subdomain's local problem; the
    merged correction is searched along on the global objective; then
    ``global_iters`` global L-BFGS steps. ``variant='additive'`` is ASPQN
    (subdomains in parallel), ``'multiplicative'`` SPQN (in sequence).

    Parameters
    ----------
    objective, theta0, decomposition, callback, hierarchy, comm
        As for :func:`apts`.
    options : dict, optional
        ``maxiter`` (100), ``gtol`` (1e-5), ``variant`` ('additive'),
        ``local_iters`` (3), ``local_gtol``, ``first_order_consistency``,
        ``coarse_level`` (1), ``coarse_iters`` (5), ``max_work``, ``disp``,
        ``disp_every``, ``checkpoint``, ``resume`` as for :func:`apts`, and

        global_iters : int, default 1
            Global L-BFGS steps per outer iteration.
        memory : int, default 10
            L-BFGS pairs (local, global and coarse memories alike).
        c1, c2 : float, default 1e-4, 0.9
            Strong-Wolfe constants of every line search.
        maxls : int, default 20
            Trial points per line search.
        combined_search : {'wolfe', 'armijo'}, default 'wolfe'
            The line search along the combined correction (its first trial
            is the full correction, ``alpha = 1``).

    Returns
    -------
    OptimizeResult
        As for :func:`apts` (no ``radius``); the history has ``alpha`` (the
        step along the combined correction), ``nls``, ``global_accepted``.
        Status 2 when an outer iteration made no progress at all.

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.data import smooth_regression
    >>> from mgnn.nets import ResNet
    >>> from mgnn.objective import Objective
    >>> from mgnn.dd import spqn, by_data
    >>> d = smooth_regression(200, 10)
    >>> net = ResNet(2, 4, 4, 1, task="regression")
    >>> obj = Objective(net, d.X_train, d.Y_train)
    >>> res = spqn(obj, net.init(0), by_data(obj, 4, overlap=0.1), options={"maxiter": 5})
    >>> res.nit, res.success is False, bool(res.fun < obj.value(net.init(0)))
    (5, True, True)
    """
    return _SPQN(objective, theta0, decomposition, options, callback, hierarchy,
                 comm).solve()
