"""A performance model of serial and layer-parallel (MGRIT) value-and-gradient evaluations.

The model does not re-derive MGRIT's work by formula: it *replays* the solver.

1. **The sweeps.** A one-rank solve with a stand-in stepper (no arithmetic) records
   the sequence of sweeps one layer-parallel evaluation makes, forward and adjoint,
   in the steady one-shot state (warm-started, with the kept FAS right-hand side
   where ``reuse_tau`` is on): for each sweep its level, its kind (F-relaxation,
   F-interpolation, coarse right-hand side, coarsest solve) and whether it is the
   final fine sweep (where the adjoint writes the gradient). Every rank makes the
   same sequence of sweeps (a rank without points of a level skips them).
2. **Who steps what.** For each of ``P`` ranks the solver's own set-up (on a
   communicator that only knows its rank and size) gives each sweep's steps on that
   rank, split as the solver runs them: steps that need the left neighbour's last
   state (the ghost) and steps that do not, and whether the rank can send its own
   last state before receiving.
3. **A clock per rank.** Each sweep advances every rank's clock: the independent
   steps first, then, once the ghost has arrived (the neighbour's send time plus
   one message), the dependent ones. The coarsest level is a sequential chain
   through the ranks; a coarse level with fewer points than ranks becomes one.
   Restrictions add one elementwise pass per coarse point, every sweep a fixed
   overhead, every evaluation the opening and closing layers and the loss (on the
   first and last rank), and the coarse weights: averaging them, and the window
   means (or, for injected weights, the layers) the ranks exchange for them.

The time of an evaluation is the largest clock. :meth:`PerformanceModel.breakdown`
returns the terms of the rank that finishes last, so the overhead over the ideal
``serial / P`` is explained term by term. Step costs come from
:func:`measure_step_costs` (the steppers themselves, timed on this machine), the
message cost from :func:`measure_latency` (MPI ping-pong).

Examples
--------
>>> costs = StepCosts(forward=1e-5, forward_coarse=1.1e-5, adjoint=1e-5,
...                   adjoint_grad=2e-5, adjoint_coarse=1.1e-5, record=1e-5,
...                   serial_layer=3e-5, io=1e-4)
>>> model = PerformanceModel(costs)
>>> model.serial_time(1024)
0.03082
>>> cfg = dict(cf=[8, 4], fwd_iters=1, bwd_iters=1)   # F-cycles, kept tau, ...
>>> mgrit_level_steps(1024, **cfg)
{'forward': [1024, 480, 208, 74, 16], 'adjoint': [1024, 480, 208, 74, 16]}
>>> round(model.serial_time(1024) / model.mgrit_time(1024, P=1, **cfg), 2)
0.62
>>> round(model.serial_time(1024) / model.mgrit_time(1024, P=16, **cfg), 1)
8.3
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from mgnn._validation import check_positive_int
from mgnn.parallel.comm import Comm

__all__ = ["StepCosts", "PerformanceModel", "measure_step_costs", "measure_latency",
           "mgrit_level_steps", "sweep_trace"]

#: Options of :class:`~mgnn.mgrit.MGRITPropagation` that shape the sweeps. ``fwd_iters``
#: and ``bwd_iters`` are the iterations a solve *does* (for solves stopped by a
#: tolerance: the number they took); ``norms``: a residual norm (one reduction) after
#: every iteration, as with ``tol``, ``rtol`` or ``residuals``.
_DEFAULTS = dict(levels=None, cf=[8, 4], relax="F", fwd_iters=1, bwd_iters=1, cycle="F",
                 min_coarse=2, reuse_tau=True, coarse_weights="average", norms=False)


@dataclass
class StepCosts:
    """Measured costs (seconds) on one machine, for one network shape and batch size.

    Attributes
    ----------
    forward : float
        One fine forward step (layer GEMM, activation, skip, record).
    forward_coarse : float
        One coarse forward step plus the FAS right-hand side added to it.
    adjoint : float
        One fine adjoint step without the parameter gradient.
    adjoint_grad : float
        One fine adjoint step that also writes the layer's gradient.
    adjoint_coarse : float
        One coarse adjoint step plus the FAS right-hand side.
    record : float
        The cached record of one coarse interval (averaged weights: one GEMM and
        the activation, once per adjoint solve).
    serial_layer : float
        One layer of the serial value-and-gradient sweep (forward and adjoint).
    io : float
        Opening layer, closing layer and loss, forward and backward.
    state : float
        One elementwise pass over a state (a restriction's subtraction).
    sweep : float
        Fixed cost of one sweep (dispatch, plan, bookkeeping).
    call : float
        Fixed cost of one step-table kernel call beyond its steps (argument
        handling and dispatch): a sweep makes one call for the steps that need no
        neighbour's state and one for those that do, and a level's coarse records
        one more; small next to the steps at width 32, a sizeable part of a short
        coarse sweep at width 8.
    solve : float
        Fixed cost of one solve (validation, set-up, statistics).
    norm : float
        The residual norm's work per fine C-point (one subtraction and two squared
        norms of a state), after every iteration of a solve stopped by a tolerance.
    bind : float
        Binding the weights of one layer (halo copy, averaged weights).
    latency : float
        Message latency (0 on one rank).
    bandwidth : float
        Bytes per second of a message.
    state_bytes : int
        Size of one state message (s * w * itemsize).
    layer_bytes : int
        Size of one residual layer's weights and bias: of a layer of the halo that
        injected coarse weights need, or of one window mean that averaged coarse
        weights exchange.
    """

    forward: float
    forward_coarse: float
    adjoint: float
    adjoint_grad: float
    adjoint_coarse: float
    record: float = 0.0
    serial_layer: float = 0.0
    io: float = 0.0
    state: float = 0.0
    sweep: float = 0.0
    call: float = 0.0
    solve: float = 0.0
    norm: float = 0.0
    bind: float = 0.0
    latency: float = 0.0
    bandwidth: float = math.inf
    state_bytes: int = 0
    layer_bytes: int = 0

    @property
    def message(self):
        """Cost of one state message."""
        return self.latency + self.state_bytes / self.bandwidth


def _config(cfg):
    unknown = sorted(set(cfg) - set(_DEFAULTS))
    if unknown:
        raise TypeError(f"unknown MGRIT option(s) {unknown}; expected some of "
                        f"{sorted(_DEFAULTS)}")
    out = dict(_DEFAULTS)
    out.update(cfg)
    return out


# ---------------------------------------------------------------------------
# 1. the sweeps of one evaluation (a replay of the solver on one rank)
# ---------------------------------------------------------------------------
class _LayoutComm(Comm):
    """A communicator that only knows a rank and a size: enough for the solver's set-up
    (partition and plans), never used to communicate."""

    def __init__(self, rank, size):
        self.rank, self.size = rank, size

    def allreduce(self, x, op="sum"):
        return x


def _stepper_class():
    from mgnn.mgrit.stepper import Stepper

    class _Null(Stepper):
        """No arithmetic; wants a final sweep like the ResNet steppers."""

        def step(self, u_in, u_out, t0, t1, level, index):
            pass

        def final_sweep(self, active):
            self.final = active

    return _Null


def _solver_class():
    from mgnn.mgrit.solver import MGRIT

    class _Recorder(MGRIT):
        """An MGRIT that logs its sweeps and restrictions instead of timing them."""

        log = None

        def _sweep(self, lv, plan):
            if self.log is not None:
                kind = {id(lv.plan_f): "F", id(lv.plan_fi): "Fi", id(lv.plan_solve): "solve",
                        id(lv.plan_stepc): "stepC"}[id(plan)]
                self.log.append(("sweep", lv.lvl, kind, bool(getattr(self.stepper, "final",
                                                                     False))))
            super()._sweep(lv, plan)

        def _restrict(self, lv, co, zero_rhs=False):
            if self.log is not None:
                self.log.append(("restrict", co.lvl, None, False))
            super()._restrict(lv, co, zero_rhs)

    return _Recorder


def _solver(N, cfg, comm=None, offsets=None):
    from mgnn.mgrit.layer_parallel import RELAX

    relax = cfg["relax"] if isinstance(cfg["relax"], (list, tuple)) else [cfg["relax"]]
    return _solver_class()(
        _stepper_class()((1,)), np.arange(N + 1, dtype=np.float64), cf=cfg["cf"],
        max_levels=cfg["levels"], min_coarse=cfg["min_coarse"],
        cf_sweeps=[RELAX[r] for r in relax], cycle=cfg["cycle"], comm=comm, offsets=offsets,
        check_stepper=False)


def sweep_trace(N, **cfg):
    """The sweeps of one steady-state one-shot evaluation: ``{'forward': [...],
    'adjoint': [...]}``, each a list of ``(event, level, kind, final)`` with event
    ``'sweep'`` (kind ``'F'``, ``'Fi'``, ``'solve'`` or ``'stepC'``) or
    ``'restrict'`` (to ``level``).

    Examples
    --------
    >>> tr = sweep_trace(64, levels=2, cf=4)
    >>> [e[:3] for e in tr["forward"]]
    [('sweep', 1, 'solve'), ('sweep', 0, 'F'), ('restrict', 1, None), ('sweep', 1, 'stepC')]
    """
    cfg = _config(cfg)
    solver = _solver(N, cfg)
    u0 = np.zeros(1)
    out = {}
    for kind, iters in (("forward", cfg["fwd_iters"]), ("adjoint", cfg["bwd_iters"])):
        keep = bool(cfg["reuse_tau"])
        solver.log = None
        solver.solve(u0, None, max_iter=iters, residuals=False, keep_tau=keep)  # cold
        solver.log = []
        solver.solve(u0, solver.u, max_iter=iters, residuals=False, keep_tau=keep,
                     reuse_tau=keep and solver.tau_ready)
        out[kind] = solver.log
    return out


def mgrit_level_steps(N, **cfg):
    """Steps per level of one steady-state forward and adjoint solve, summed over the
    ranks (what :attr:`~mgnn.mgrit.MGRITResult.level_steps_all` reports)."""
    cfg = _config(cfg)
    solver = _solver(N, cfg)
    n = solver.hierarchy.n_intervals
    cf = solver.hierarchy.cf
    count = {"F": lambda lvl: n[lvl], "solve": lambda lvl: n[lvl],
             "stepC": lambda lvl: n[lvl], "Fi": lambda lvl: n[lvl] - n[lvl] // cf[lvl]}
    out = {}
    for kind, trace in sweep_trace(N, **cfg).items():
        steps = [0] * len(n)
        for event, lvl, plan, _ in trace:
            if event == "sweep":
                steps[lvl] += count[plan](lvl)
        out[kind] = steps
    return out


# ---------------------------------------------------------------------------
# 2. the per-rank plans
# ---------------------------------------------------------------------------
def _layout(N, P, cfg, reverse):
    """Per rank q (in the solve's rank order), per level: the plans' (indep, dep,
    send_early) step counts, the rank's points and coarse points, and its left
    neighbour on that level (or None)."""
    from mgnn.mgrit.layer_parallel import point_offsets

    offs = point_offsets(N, P)[1 if reverse else 0]
    ranks = []
    for q in range(P):
        s = _solver(N, cfg, comm=_LayoutComm(q, P), offsets=offs)
        levels = []
        for lv in s.levels:
            plans = {}
            for kind, plan in (("F", lv.plan_f), ("Fi", lv.plan_fi), ("solve", lv.plan_solve),
                               ("stepC", lv.plan_stepc)):
                if plan is not None:
                    plans[kind] = (len(plan.indep), len(plan.dep), plan.send_early)
            levels.append(dict(plans=plans, nloc=lv.nloc, left=lv.left))
        ranks.append(levels)
    return ranks, offs


class PerformanceModel:
    """Predicts the wall time of serial and MGRIT value-and-gradient evaluations.

    Parameters
    ----------
    costs : StepCosts

    Examples
    --------
    >>> m = PerformanceModel(StepCosts(1e-5, 1e-5, 1e-5, 2e-5, 1e-5, serial_layer=3e-5))
    >>> b = m.breakdown(256, 4, levels=3, cf=4)
    >>> sorted(b)  # doctest: +NORMALIZE_WHITESPACE
    ['coarse adjoint', 'coarse forward', 'fine adjoint', 'fine forward', 'io', 'messages',
     'overhead', 'total', 'waiting']
    >>> abs(sum(v for k, v in b.items() if k != 'total') - b['total']) < 1e-12
    True
    """

    def __init__(self, costs):
        self.costs = costs
        self._layouts = {}

    def __repr__(self):
        c = self.costs
        return (f"PerformanceModel(forward {c.forward:.3g} s, adjoint {c.adjoint:.3g} / "
                f"{c.adjoint_grad:.3g} s (with gradient), coarse {c.forward_coarse:.3g} / "
                f"{c.adjoint_coarse:.3g} s, serial layer {c.serial_layer:.3g} s, "
                f"message {c.message:.3g} s)")

    def serial_time(self, N):
        """Seconds of one serial value-and-gradient evaluation with ``N`` layers."""
        c = self.costs
        return N * c.serial_layer + c.io

    def mgrit_time(self, N, P, **cfg):
        """Seconds of one steady-state one-shot MGRIT value-and-gradient evaluation on
        ``P`` ranks (options as :class:`~mgnn.mgrit.MGRITPropagation`'s)."""
        return self.breakdown(N, P, **cfg)["total"]

    def speedup(self, N, P, **cfg):
        """Predicted serial time / MGRIT time."""
        return self.serial_time(N) / self.mgrit_time(N, P, **cfg)

    # -- the simulation ------------------------------------------------------------
    def breakdown(self, N, P, **cfg):
        """Time of one evaluation split into terms, for the rank that finishes last.

        Terms: ``fine forward`` / ``fine adjoint`` (steps on level 0),
        ``coarse forward`` / ``coarse adjoint`` (steps on coarser levels, records,
        restrictions), ``messages`` (the coarse weights a rank exchanges: window means
        of averaged weights, a halo of layers for injected ones; and the loss
        reduction),
        ``waiting`` (idle time until a neighbour's state arrived: the message and
        the neighbour's own work before it, e.g. the sequential coarsest solve; and
        until the last rank reaches a collective: the loss, the residual norms),
        ``io`` (opening, closing layer and loss),
        ``overhead`` (fixed cost of sweeps, step-table calls, solves, weight binding,
        and the residual norms of solves stopped by a tolerance); ``total``
        is their sum.
        """
        check_positive_int(P, "P")
        cfg = _config(cfg)
        c = self.costs
        if N < P:
            raise ValueError(f"N={N} layers cannot be split over P={P} ranks")
        key = (N, P, tuple(sorted((k, str(v)) for k, v in cfg.items())))
        if key not in self._layouts:
            from mgnn.mgrit.layer_parallel import halo_ranges
            from mgnn.mgrit.window_means import WindowPlan
            from mgnn.parallel.partition import block_offsets

            hier = _solver(N, cfg).hierarchy
            avg = cfg["coarse_weights"] == "average"
            means = None
            if avg and P > 1:
                L = block_offsets(N, P)
                means = [[(p.messages_in(li) + p.messages_out(li),
                           p.rows_in(li) + p.rows_out(li)) for li in range(len(p.levels))]
                         for p in (WindowPlan(N, L, hier.strides, r) for r in range(P))]
            self._layouts[key] = (sweep_trace(N, **cfg), _layout(N, P, cfg, False)[0],
                                  _layout(N, P, cfg, True)[0],
                                  halo_ranges(N, P, hier, avg), means)
        trace, fwd_ranks, bwd_ranks, halo, means = self._layouts[key]
        msg = c.message if P > 1 else 0.0
        terms = ("fine forward", "fine adjoint", "coarse forward", "coarse adjoint",
                 "messages", "waiting", "io", "overhead")
        acc = [dict.fromkeys(terms, 0.0) for _ in range(P)]
        clock = np.zeros(P)
        # per evaluation: bind the weights (averaged coarse weights); receive the halo
        # of layers that injected coarse weights need from other ranks, or exchange
        # the window means of averaged ones (a round per level with messages; the
        # rows a rank sends and receives go at the measured bandwidth)
        for r in range(P):
            a, b = _block(N, P, r)
            t = (b - a) * c.bind + c.solve * 2
            acc[r]["overhead"] += t
            clock[r] += t
            t = 0.0
            if means is not None:
                t = sum(c.latency + rows * c.layer_bytes / c.bandwidth
                        for n, rows in means[r] if n)
            elif P > 1 and halo[1][r] - halo[0][r] > b - a:
                extra = halo[1][r] - halo[0][r] - (b - a)
                senders = math.ceil(extra / max(N // P, 1))
                t = senders * c.latency + extra * c.layer_bytes / c.bandwidth
            acc[r]["messages"] += t
            clock[r] += t
        # the opening layer on rank 0 before the forward solve
        acc[0]["io"] += c.io / 2
        clock[0] += c.io / 2
        red = math.ceil(math.log2(P)) * c.latency if P > 1 else 0.0

        def sync(t):
            """A collective: every rank waits for the last one, then ``t``."""
            top = clock.max()
            for r in range(P):
                acc[r]["waiting"] += top - clock[r]
                acc[r]["messages"] += t
            clock[:] = top + t

        def residual_norms(ranks, iters, phys):
            """After each iteration: the norms of the rank's fine C-point residuals
            and states, then one collective (all of them gathered)."""
            if not cfg["norms"]:
                return
            for q in range(P):
                nc = ranks[q][1]["nloc"] if len(ranks[q]) > 1 else ranks[q][0]["nloc"]
                t = iters * nc * c.norm
                acc[phys(q)]["overhead"] += t
                clock[phys(q)] += t
            if P > 1:
                sync(iters * red)

        self._solve(trace["forward"], fwd_ranks, clock, acc, "forward", msg, cfg, False)
        residual_norms(fwd_ranks, cfg["fwd_iters"], lambda q: q)
        # closing layer and loss on the last rank; the loss goes to every rank before
        # the adjoint solve starts (one reduction)
        acc[P - 1]["io"] += c.io / 2
        clock[P - 1] += c.io / 2
        if P > 1:
            sync(red)
        self._solve(trace["adjoint"], bwd_ranks, clock, acc, "adjoint", msg, cfg, True)
        residual_norms(bwd_ranks, cfg["bwd_iters"], lambda q: P - 1 - q)
        last = int(np.argmax(clock))
        out = {k: float(v) for k, v in acc[last].items()}
        out["total"] = float(clock[last])
        return out

    def _step_cost(self, kind, lvl, final):
        c = self.costs
        if kind == "forward":
            return (c.forward, "fine forward") if lvl == 0 else (c.forward_coarse,
                                                                 "coarse forward")
        if lvl == 0:
            return (c.adjoint_grad if final else c.adjoint), "fine adjoint"
        return c.adjoint_coarse, "coarse adjoint"

    def _solve(self, trace, ranks, clock, acc, kind, msg, cfg, reverse):
        c = self.costs
        P = len(ranks)
        phys = (lambda q: P - 1 - q) if reverse else (lambda q: q)
        recorded = set()  # coarse levels whose records were filled in this solve
        for event, lvl, plan, final in trace:
            if event == "restrict":
                for q in range(P):
                    r = phys(q)
                    t = ranks[q][lvl]["nloc"] * c.state
                    term = "coarse forward" if kind == "forward" else "coarse adjoint"
                    acc[r][term] += t
                    clock[r] += t
                continue
            cost, term = self._step_cost(kind, lvl, final)
            fill = (kind == "adjoint" and lvl > 0 and cfg["coarse_weights"] == "average"
                    and lvl not in recorded)
            recorded.add(lvl)
            send = [0.0] * P
            for q in range(P):
                r = phys(q)
                info = ranks[q][lvl]
                if info["nloc"] == 0:
                    continue
                indep, dep, early = info["plans"][plan]
                fixed = c.sweep + c.call * ((indep > 0) + (dep > 0) + fill)
                start = clock[r] + fixed
                extra = info["nloc"] * c.record if fill else 0.0
                t_indep = start + extra + indep * cost
                acc[r]["overhead"] += fixed
                acc[r][term] += extra + (indep + dep) * cost
                left = info["left"]
                idle = max(send[left] + msg - t_indep, 0.0) if left is not None else 0.0
                acc[r]["waiting"] += idle
                finish = t_indep + idle + dep * cost
                send[q] = t_indep if early else finish
                clock[r] = finish


def _block(N, P, r):
    from mgnn.parallel.partition import block_offsets

    L = block_offsets(N, P)
    return int(L[r]), int(L[r + 1])


# ---------------------------------------------------------------------------
# measured costs
# ---------------------------------------------------------------------------
def _median_time(fn, repeats, inner):
    ts = []
    for _ in range(repeats):
        tic = time.perf_counter()
        for _ in range(inner):
            fn()
        ts.append((time.perf_counter() - tic) / inner)
    return float(np.median(ts))


def measure_step_costs(net, s, repeats=7, inner=50, comm=None, coarse_weights="average",
                       interval=8):
    """Time the layer steps of ``net`` on ``s`` samples (medians, seconds).

    Uses the MGRIT steppers themselves (so their Python call overhead is included),
    a serial evaluation for the serial cost per layer and the opening/closing/loss
    cost, and a solver's empty sweep for the fixed cost of a sweep. Fine steps are
    timed as the solver takes them on level 0: an F-relaxation (F-intervals of
    ``interval - 1`` steps and the steps into the C-points) through the stepper's
    ``plan_sweep`` (one step-table kernel call, where the width has the fused
    kernels), else each F-interval in one ``sweep`` call and the single step into its
    C-point; coarse steps as a run through ``plan_sweep`` (one call, FAS terms
    added), as the solver takes a coarse level's sweep.
    """
    from mgnn.mgrit.layer_parallel import (
        MGRITPropagation,
        ResNetAdjointStepper,
        ResNetStepper,
        _Weights,
    )
    from mgnn.mgrit.solver import _Plan
    from mgnn.objective import Objective

    rng = np.random.default_rng(0)
    N = net.depth
    theta = net.init(rng)
    p = net.unpack(theta)
    avg = coarse_weights == "average"
    W = _Weights(spans=(4,))
    W.bind(p.W, p.b, 0, p.residual)
    w = net.width
    fs = ResNetStepper(net, s, W, avg)
    bs = ResNetAdjointStepper(net, s, W, avg)
    dt = net.dtype
    U = rng.standard_normal((N + 1, s, w)).astype(dt)
    S = np.empty((N, s, w), dt)
    G = np.empty((N, net.block_size), dt)
    fs.S = S
    bs.U, bs.S, bs.G = U, S, G
    L = rng.standard_normal((N + 1, s, w)).astype(dt)
    U2 = U.copy()
    L2 = L.copy()
    tt = [float(n) for n in range(N + 1)]
    m = max(int(interval), 2)
    span = 4 if N >= 8 else 1
    nc = max((N - span) // span, 1)
    fs.step(U[0], U2[1], 0.0, 1.0, 0, 0)  # warm up the kernels
    if N >= 2:
        fs.sweep(U2[:3], tt[:3], 0, 0)
        bs.sweep(L2[:3], tt[:3], 0, 0)

    def run_ops(ops):
        for fn, args in ops:
            fn(*args)

    # fine steps as the solver takes them in an F-relaxation: every F-interval and the
    # step into its C-point, all in one step-table call where the stepper plans sweeps
    Sc = np.empty((N // m + 1, s, w), dt)

    def fine_ops(stepper, X):
        entries = [(X[i], Sc[(i + 1) // m - 1] if (i + 1) % m == 0 and i + 1 < N else
                    X[i + 1], float(i), i + 1.0, i, None) for i in range(N)]
        plan = getattr(stepper, "plan_sweep", None)
        return plan(0, entries) if plan is not None else None

    fwd_fine = fine_ops(fs, U2)

    def fwd():
        if fwd_fine is not None:
            run_ops(fwd_fine)
            return
        for i in range(0, N, m):
            n = min(m - 1, N - i)
            fs.sweep(U2[i:i + n + 1], tt[i:i + n + 1], 0, i)
            if i + n < N:
                fs.step(U2[i + n], U2[i + n + 1], i + n, i + n + 1.0, 0, i + n)

    # coarse steps as the solver takes them: a run of steps through the stepper's
    # plan_sweep (step tables, one kernel call) where it has one, else one by one
    Gc = np.zeros((nc, s, w), dt)
    Uc, Lc = U2[:nc + 1], L2[:nc + 1]

    def coarse_ops(stepper, X, n=nc):
        entries = [(X[j], X[j + 1], float(j * span), float(j * span + span), j * span, Gc[j])
                   for j in range(n)]
        plan = getattr(stepper, "plan_sweep", None)
        ops = plan(1, entries) if plan is not None else None
        if ops is None:
            ops = [(stepper._single, e[:5] + (1, e[5])) for e in entries]
        return ops

    fwd_ops = coarse_ops(fs, Uc)

    def fwd_c():
        run_ops(fwd_ops)

    adj_fine = fine_ops(bs, L2)

    def adj(grad):
        bs.final_sweep(grad)
        if adj_fine is not None:
            run_ops(adj_fine)
            bs.final_sweep(False)
            return
        for i in range(0, N, m):
            n = min(m - 1, N - i)
            bs.sweep(L2[i:i + n + 1], tt[i:i + n + 1], 0, i)
            if i + n < N:
                bs.step(L2[i + n], L2[i + n + 1], i + n, i + n + 1.0, 0, i + n)
        bs.final_sweep(False)

    adj_ops = coarse_ops(bs, Lc)

    def adj_c():
        run_ops(adj_ops)

    # the fixed cost of one step-table call: a run of one coarse step, less the step
    one_f, one_a = coarse_ops(fs, Uc, 1), coarse_ops(bs, Lc, 1)

    def records():
        bs.new_linearisation()
        adj_c()

    inner_f = max(1, inner // max(N // 8, 1))
    cf_ = _median_time(fwd, repeats, inner_f) / N
    cfc = _median_time(fwd_c, repeats, inner_f) / nc
    ca = _median_time(lambda: adj(False), repeats, inner_f) / N
    cag = _median_time(lambda: adj(True), repeats, inner_f) / N
    adj_c()  # fill the records
    cac = _median_time(adj_c, repeats, inner_f) / nc
    crec = max(_median_time(records, repeats, inner_f) / nc - cac, 0.0) if avg else 0.0
    t1f = _median_time(lambda: run_ops(one_f), repeats, inner)
    t1a = _median_time(lambda: run_ops(one_a), repeats, inner)
    c_call = max(((t1f - cfc) + (t1a - cac)) / 2, 0.0)
    cstate = _median_time(lambda: np.subtract(U[1], U[2], out=U2[0]), repeats, 200)
    # the residual norms after an iteration: C-point residuals and states, squared
    # norms per state by einsum (as MGRIT computes them), per C-point
    kc = max(N // m, 1)
    Rb, Ub, Sb = np.empty((kc, s, w), dt), U[:kc], U2[1:kc + 1]
    idx = [0, 1, 2]

    def norms():
        np.subtract(Sb, Ub, out=Rb)
        np.einsum(Rb, idx, Rb, idx, [0])
        np.einsum(Ub, idx, Ub, idx, [0])
    cnorm = _median_time(norms, repeats, inner_f) / kc
    # serial: value and gradient of the network and of a one-layer copy
    X = rng.standard_normal((s, net.n_in)).astype(dt)
    y = rng.integers(0, net.n_out, s) if net.task == "classification" else \
        rng.standard_normal((s, net.n_out)).astype(dt)
    obj = Objective(net, X, y)
    obj.value_and_grad(theta)
    t_full = _median_time(lambda: obj.value_and_grad(theta), repeats, inner_f)
    small = net.with_depth(1)
    obj1 = Objective(small, X, y)
    th1 = small.init(rng)
    obj1.value_and_grad(th1)
    t_one = _median_time(lambda: obj1.value_and_grad(th1), repeats, inner)
    serial_layer = (t_full - t_one) / max(N - 1, 1)
    io = max(t_one - serial_layer, 0.0)
    # fixed costs: an empty sweep, a solve and the binding of the weights
    prop = MGRITPropagation(levels=2, cf=4, coarse_weights=coarse_weights)
    eng = prop._engine(net, s, np)
    lv = eng.fwd.levels[0]
    empty = _Plan([], [], True, False)
    c_sweep = _median_time(lambda: eng.fwd._sweep(lv, empty), repeats, 200)
    c_bind = 0.0
    if avg:
        def bind():
            eng.weights.bind(p.W, p.b, 0, p.residual)
            for spn in eng.weights.spans:
                eng.weights.average(0, spn)
        c_bind = _median_time(bind, repeats, 20) / N
    tiny = _solver(4, _config(dict(levels=1)))
    c_solve = _median_time(lambda: tiny.solve(np.zeros(1), max_iter=1, residuals=False),
                           repeats, 200)
    nbytes = s * w * np.dtype(dt).itemsize
    lat, bw = measure_latency(comm, nbytes=nbytes)
    return StepCosts(forward=cf_, forward_coarse=cfc, adjoint=ca, adjoint_grad=cag,
                     adjoint_coarse=cac, record=crec, serial_layer=serial_layer, io=io,
                     state=cstate, sweep=c_sweep, call=c_call, solve=c_solve, norm=cnorm,
                     bind=c_bind,
                     latency=lat,
                     bandwidth=bw, state_bytes=nbytes,
                     layer_bytes=net.block_size * np.dtype(dt).itemsize)


def measure_latency(comm=None, nbytes=8, repeats=200):
    """Half the round-trip time of a ping-pong between ranks 0 and 1 of ``comm``:
    returns ``(latency, bandwidth)`` in seconds and bytes/second (``(0, inf)`` on
    one rank). Every rank of ``comm`` must call it."""
    from mgnn.parallel.comm import get_comm

    comm = get_comm(comm)
    if comm.size < 2:
        return 0.0, math.inf

    def pingpong(buf):
        comm.barrier()
        tic = time.perf_counter()
        for _ in range(repeats):
            if comm.rank == 0:
                comm.Send(buf, 1, 91)
                comm.Recv(buf, 1, 91)
            elif comm.rank == 1:
                comm.Recv(buf, 0, 91)
                comm.Send(buf, 0, 91)
        return (time.perf_counter() - tic) / (2 * repeats)

    small = pingpong(np.zeros(1))
    big = pingpong(np.zeros(max(nbytes // 8, 1) * 64))
    lat = comm.allreduce(small if comm.rank == 0 else 0.0)
    big = comm.allreduce(big if comm.rank == 0 else 0.0)
    extra = max(big - lat, 1e-12)
    bw = max(nbytes // 8, 1) * 64 * 8 / extra
    return lat, bw


def costs_as_dict(costs):
    """The fields of a :class:`StepCosts` as a plain dict (for JSON)."""
    return asdict(costs)
