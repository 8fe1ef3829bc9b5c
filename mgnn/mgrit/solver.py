"""MGRIT: multigrid reduction in time for any one-step integrator.

The fine-grid problem is the all-at-once system of N + 1 states
``u_0 = g_0`` (the fixed initial value), ``u_i - Phi(u_{i-1}) = 0``. MGRIT
solves it iteratively with F- or F(CF)^nu-relaxation, an FAS coarse-grid
correction on the grids of a :class:`~mgnn.mgrit.hierarchy.TimeHierarchy`
(so nonlinear steppers work), V- or F-cycles, optional nested iteration, and
XBraid's ``skip`` of the work of the first down-cycle.

Implementation notes
--------------------
* All states of a level live in one preallocated block of shape
  ``(n_local, *state_shape)``; every step reads and writes views of it. The
  sweeps run from precomputed plans (lists of ``(u_in, u_out, t0, t1, index)``),
  so the inner loop does no allocation and little Python work.
* An F-sweep also steps into each C-point, storing ``s_c = Phi(u_{c-1}) + g_c``
  (not ``u_c``). With it, C-relaxation is ``u_c <- omega s_c + (1 - omega) u_c``
  without further steps, the residual at C-points is ``r_c = s_c - u_c``, and
  the FAS right-hand side of the next level is ``g_c = s_c - Phi_c(v_{j-1})``.
  F(CF)^nu relaxation plus the residual thus costs ``(nu + 1)`` fine steps per
  fine interval; the F-sweep after the coarse-grid correction leaves the
  residual (the stopping test) for free and is reused by the next iteration.
* The F-interpolation after a coarse-grid correction steps into the C-points
  too only where the result is used: on level 0 when a residual norm or a
  following relaxation needs ``S`` (or the stepper asks for every step of its
  final sweep, see below); on coarser levels only in an F-cycle, which relaxes
  the level again right away. Elsewhere those ``n_l / cf`` steps are skipped.
* Coarse iterates live in the finer level's storage: level ``l + 1``'s points
  are the C-points of level ``l``, so its block is a strided view of theirs and
  the injection and the FAS correction of the C-points cost nothing (without
  spatial coarsening).
* Final sweep: a stepper may define ``final_sweep(active)``; MGRIT calls it with
  True before and False after the last fine sweep of a solve (the last
  F-interpolation with a fixed iteration count; every one with a tolerance, since
  any may be the last; the sequential sweep with one level) and that sweep then
  takes every fine step. A ResNet's adjoint stepper writes the parameter
  gradient in it, its forward stepper the layer records of the final states.
* Whole intervals: a stepper may define ``sweep(U, t, level, index)``; the
  unbatched solver then hands each run of two or more level-0 steps from point
  to point (an F-interval, the one-level solve) to one call of it (see
  :mod:`mgnn.mgrit.stepper`).
* Kept right-hand side (one-shot): ``solve(..., keep_tau=True)`` ends by
  restricting the final iterate to level 1 and keeping the FAS right-hand side
  ``tau = S - Phi_1(v)``; the next ``solve(..., reuse_tau=True)`` starts its first
  cycle from there, skipping the fine relaxation and restriction. With an
  unchanged stepper this is the uninterrupted iteration; for a stepper whose
  parameters changed a little (an optimization step) it saves a fine sweep per
  solve at the price of a tau lagged by one step.
* Residuals are those of F-relaxed iterates at the C-points of level 0
  (the F-point residuals are then zero), combined as
  ``sqrt(sum_c norm(r_c)**2)``.
* MPI: fine points are split in contiguous blocks over the ranks; a coarse
  point belongs to the rank owning its fine point, so a rank may own no point
  of a coarse level (it then sits that level out). Each sweep sends the last
  local state to the next non-empty rank with ``Isend`` and receives the
  previous one with ``Irecv`` (NumPy buffers, tag = level): one message per
  neighbour and sweep, posted before the steps that do not need it and sent as
  soon as it is final. On level 0 the received ghost sits in the row before the
  rank's own states (``u_with_ghost``). Iterates do not depend on the number of
  ranks, nor do residual norms (the squares of the C-point residuals are
  gathered and summed exactly, in point order, on every rank). The step
  counts of all ranks (``level_steps_all``) follow from the hierarchy, without
  communication; a fixed iteration count without residual norms has no
  collective operation at all.
* Batched relaxation (``batched=True``, for steppers with ``step_batch``): the
  steps of an F-sweep that do not wait for the ghost are grouped into *waves*;
  wave ``j`` (``j = 1 .. m``) holds the step into offset ``j`` of every interval
  (``j = m``: into the C-point's ``s_c``). The inputs and outputs of a wave are
  strided views of the level's blocks (rows ``c + j - 1`` and ``c + j`` for every
  C-point ``c``), so one ``step_batch`` call advances all intervals at once (one
  batched GEMM per wave for a ResNet) without copies. The coarse ``Phi_c(v_{j-1})``
  sweep of the FAS right-hand side is one wave. Steps taken, their order within an
  interval and the iterates are those of the unbatched sweep.
* States may be CuPy arrays (``stepper.new_vector`` decides): all blocks are
  then allocated on the device and the vector work runs there.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from mgnn._validation import (
    check_array,
    check_choice,
    check_positive_int,
    check_scalar,
    per_level,
)
from mgnn.backend import get_namespace, to_host
from mgnn.mgrit.hierarchy import TimeHierarchy
from mgnn.mgrit.stepper import Stepper
from mgnn.parallel.comm import get_comm
from mgnn.parallel.partition import block_offsets

__all__ = ["MGRIT", "MGRITResult", "mgrit"]


@dataclass(repr=False)
class MGRITResult:
    """Outcome and statistics of one :meth:`MGRIT.solve`.

    Attributes
    ----------
    u : ndarray, shape (n_local, *shape)
        The fine-grid states this rank owns (all of them on one process):
        row ``k`` is the state at fine index ``start + k``. This is the
        solver's storage (``MGRIT.u``), overwritten by the next solve.
    t : ndarray
        Times of the rows of ``u``.
    start : int
        Fine index of the first row of ``u``.
    success : bool
        Tolerance reached (or the fixed iteration count done).
    message : str
    nit : int
        Iterations (cycles) done.
    residuals : ndarray
        Residual norm after each iteration; ``residuals[0]`` is that of the
        (F-relaxed) initial guess when it was computed (see
        ``initial_residual``).
    initial_residual : bool
        Whether ``residuals[0]`` belongs to the initial guess (False with
        ``skip`` or with one level).
    factors : ndarray
        Convergence factors ``residuals[k] / residuals[k-1]``.
    level_time : list of float
        Wall time spent on each level (steps and vector work), seconds.
    level_steps : list of int
        Steps taken on each level (by this rank).
    level_steps_all : list of int
        Steps taken on each level by all ranks together (known on every rank
        without communication: each sweep's count follows from the hierarchy).
    wall_time : float
        Wall time of the solve, seconds.
    """

    u: np.ndarray
    t: np.ndarray
    start: int
    success: bool
    message: str
    nit: int
    residuals: np.ndarray
    initial_residual: bool
    factors: np.ndarray
    level_time: list = field(default_factory=list)
    level_steps: list = field(default_factory=list)
    level_steps_all: list = field(default_factory=list)
    wall_time: float = 0.0

    @property
    def n_steps(self):
        """Total steps taken by this rank on all levels."""
        return int(sum(self.level_steps))

    def __repr__(self):
        res = self.residuals
        if res.size:
            rs = f"{res[-1]:.3e}" + (f" (from {res[0]:.3e})" if res.size > 1 else "")
        else:
            rs = "not computed"
        fac = ", ".join(f"{f:.2e}" for f in self.factors[-5:])
        more = "..., " if self.factors.size > 5 else ""
        levels = "\n".join(
            f"    {lvl:>5} {n:>10} {tm:>10.4f}"
            for lvl, (n, tm) in enumerate(zip(self.level_steps, self.level_time, strict=True))
        )
        return (
            f"MGRITResult(success={self.success}, nit={self.nit}, message={self.message!r},\n"
            f"  residual {rs},\n"
            f"  factors [{more}{fac}],\n"
            f"  u: {self.u.shape[0]} states of shape {self.u.shape[1:]} from fine index "
            f"{self.start}, wall_time {self.wall_time:.4f} s,\n"
            f"    level      steps   time [s]\n{levels})"
        )


class _Plan:
    """Precomputed steps of one sweep: independent ones, then ghost-dependent ones."""

    __slots__ = ("indep", "dep", "send_early", "add_g", "n_steps", "n_global", "waves", "ops")

    def __init__(self, indep, dep, send_early, add_g):
        self.indep = indep
        self.dep = dep
        self.send_early = send_early
        self.add_g = add_g
        self.n_steps = len(indep) + len(dep)
        self.n_global = 0  # steps of this sweep on all ranks together (set by MGRIT._setup)
        self.waves = None  # batched form of ``indep`` (see MGRIT._make_waves)
        self.ops = None  # (indep, dep) as calls with whole-interval sweeps (MGRIT._ops)


class _Level:
    """Local storage of one level on one rank."""


def _ceil_div(a, b):
    return -(-a // b)


class MGRIT:
    """Multigrid-reduction-in-time solver for a :class:`~mgnn.mgrit.Stepper`.

    Parameters
    ----------
    stepper : Stepper
        The one-step integrator (any object with ``step``, ``shape``,
        ``dtype``, ``new_vector``; see :mod:`mgnn.mgrit.stepper`).
    t : array_like, shape (N + 1,)
        Strictly increasing fine time points; ``u_0`` sits at ``t[0]``.
    cf : int or list of int
        Coarsening factor per level (>= 2); the last entry repeats.
    max_levels : int or None
        Number of levels; ``None``: as many as ``min_coarse`` allows. An
        integer the grid cannot support raises ``ValueError``.
    min_coarse : int
        Minimum number of intervals on the coarsest grid.
    cf_sweeps : int or list of int
        Number ``nu`` of CF sweeps after the first F-sweep, per level:
        0 is F-relaxation, 1 is FCF, 2 is FCFCF.
    omega : float or list of float
        Weight of the C-relaxation, per level, in (0, 2]
        (``u_c <- omega Phi(u_{c-1}) + (1 - omega) u_c``).
    cycle : {'V', 'F'}
        V-cycles, or F-cycles (on the way up each level does one extra
        V-cycle before correcting the next finer level).
    nested_iteration : bool
        Replace the initial guess by the coarse-grid solution interpolated up
        the hierarchy (coarsest solve, then on each level an F-interpolation
        and, on intermediate levels, one V-cycle). Ignores ``u_guess`` except
        at ``t[0]``.
    skip : bool
        XBraid's ``skip``: the first down-cycle does no relaxation and no
        residual; coarse levels get the injected iterate and a zero
        right-hand side. The initial residual is then not computed.
    comm : None, Comm or mpi4py communicator
        Communicator over which the time points are distributed
        (see :func:`mgnn.parallel.get_comm`).
    offsets : array_like of int, optional
        Fine-point partition: rank ``r`` owns fine points
        ``offsets[r] <= i < offsets[r + 1]`` (``comm.size + 1`` non-decreasing
        entries from 0 to ``N + 1``). Default: the block partition
        :func:`mgnn.parallel.block_offsets`. Layer-parallel propagation uses it
        to align the points with the layers a rank owns.
    batched : bool
        Batched relaxation: advance all intervals of a level together, one
        ``stepper.step_batch(u_in, u_out, t0, t1, level, index)`` call per
        offset inside the intervals (stacks ``(k, *shape)``, arrays ``t0``,
        ``t1``, ``index`` of length ``k``) instead of ``k`` calls of ``step``.
        Same steps, same iterates (bit-identical when ``step_batch`` does per
        slice the arithmetic of ``step``); on a GPU it turns MGRIT's
        layer-parallelism into batched GEMMs. The stepper must implement
        ``step_batch``.
    check_stepper : bool
        Probe the stepper on the first solve (one step from ``u0`` at the first
        interval: it must write ``u_out``, leave ``u_in`` alone and return None).
        Turn it off for steppers that can only step the intervals of their own
        rank (the layer-parallel ResNet steppers, which are tested directly).

    Attributes
    ----------
    hierarchy : TimeHierarchy
    comm : Comm
    u : ndarray
        This rank's fine-grid states (rows ``start ... stop - 1``).
    u_with_ghost : ndarray
        The same states preceded by the state at ``start - 1`` as received from the
        left neighbour in the last fine sweep (row 0; unused on the rank owning
        point 0): ``u`` is ``u_with_ghost[1:]``.
    start, stop : int
        Fine index range of this rank.

    Examples
    --------
    Two-level MGRIT with FCF relaxation on u' = -u, backward Euler:

    >>> import numpy as np
    >>> from mgnn.mgrit import MGRIT, serial_stepping
    >>> from mgnn.mgrit.problems import Dahlquist
    >>> t = np.linspace(0.0, 5.0, 1025)
    >>> stepper = Dahlquist(lam=-1.0)
    >>> solver = MGRIT(stepper, t, cf=4, max_levels=2)
    >>> res = solver.solve(np.ones(1), tol=1e-10, max_iter=20)
    >>> res.success, res.nit
    (True, 5)
    >>> res.factors.round(4)           # two-level theory: about 6e-3 for cf=4
    array([0.0059, 0.0057, 0.0054, 0.0049, 0.0045])
    >>> ref = serial_stepping(stepper, t, np.ones(1))
    >>> float(np.max(np.abs(res.u - ref))) < 1e-9
    True
    """

    def __init__(
        self,
        stepper,
        t,
        cf=2,
        max_levels=None,
        min_coarse=2,
        cf_sweeps=1,
        omega=1.0,
        cycle="V",
        nested_iteration=False,
        skip=False,
        comm=None,
        offsets=None,
        batched=False,
        check_stepper=True,
    ):
        for attr in ("step", "shape", "dtype", "new_vector"):
            if not hasattr(stepper, attr):
                raise TypeError(
                    f"stepper must implement the Stepper protocol (missing {attr!r}); "
                    f"got {type(stepper).__name__}"
                )
        self.batched = bool(batched)
        if self.batched and not callable(getattr(stepper, "step_batch", None)):
            raise TypeError(
                "batched=True needs a stepper with a step_batch(u_in, u_out, t0, t1, level, "
                f"index) method; {type(stepper).__name__} has none"
            )
        self.stepper = stepper
        self.hierarchy = TimeHierarchy(t, cf=cf, min_coarse=min_coarse, max_levels=max_levels)
        nl = self.hierarchy.n_levels
        self.cf_sweeps = per_level(
            cf_sweeps, nl, "cf_sweeps", lambda v, n: check_positive_int(v, n, minimum=0),
            allow_longer=True,
        )
        self.omega = per_level(
            omega, nl, "omega", lambda v, n: check_scalar(v, n, low=0.0, low_open=True, high=2.0),
            allow_longer=True,
        )
        self.cycle = check_choice(cycle, "cycle", ("V", "F"))
        self.nested_iteration = bool(nested_iteration)
        self.skip = bool(skip)
        self.comm = get_comm(comm)
        self._offsets = self._check_offsets(offsets)
        self._spatial = bool(getattr(stepper, "spatial_coarsening", False))
        self._fast_norm = type(stepper).norm is Stepper.norm if isinstance(
            stepper, Stepper
        ) else False
        self._checked = not check_stepper
        self._wants_final = callable(getattr(stepper, "final_sweep", None))
        # whole level-0 F-intervals in one call where the stepper can (not batched:
        # waves group the same steps across intervals instead)
        self._sweeps = callable(getattr(stepper, "sweep", None)) and not batched
        self._plan_sweeps = callable(getattr(stepper, "plan_sweep", None)) and not batched
        self._state_rtol, self._state_norm = None, 0.0
        self.tau_ready = False
        self._setup()

    # ------------------------------------------------------------------ setup
    def _check_offsets(self, offsets):
        n_fine = self.hierarchy.n_points[0]
        size = self.comm.size
        if offsets is None:
            return block_offsets(n_fine, size)
        offs = np.asarray(offsets)
        if (offs.shape != (size + 1,) or offs.dtype.kind not in "iu" or offs[0] != 0
                or offs[-1] != n_fine or bool(np.any(np.diff(offs) < 0))):
            raise ValueError(
                f"offsets must be {size + 1} non-decreasing integers from 0 to {n_fine} "
                f"(one block of fine points per rank), got {offsets!r}"
            )
        return offs.astype(np.int64)

    def _setup(self):
        h = self.hierarchy
        comm = self.comm
        st = self.stepper
        offs = self._offsets
        self.start, self.stop = int(offs[comm.rank]), int(offs[comm.rank + 1])
        self.levels = []
        for lvl in range(h.n_levels):
            lv = _Level()
            lv.lvl = lvl
            lv.n = h.n_intervals[lvl]
            lv.stride = h.strides[lvl]
            lv.coarsest = lvl == h.n_levels - 1
            lv.m = None if lv.coarsest else h.cf[lvl]
            # ranges of every rank on this level (identical on all ranks)
            ranges = []
            for r in range(comm.size):
                lo, hi = int(offs[r]), int(offs[r + 1])
                a = _ceil_div(lo, lv.stride)
                b = min(_ceil_div(hi, lv.stride), lv.n + 1)
                ranges.append((a, max(a, b)))
            lv.a, lv.b = ranges[comm.rank]
            lv.nloc = lv.b - lv.a
            if lvl == 0 and not lv.coarsest:
                # C-points (but point 0) of every rank: the rows of the residual norms
                m = lv.m
                self._c_counts = [len(range((-a) % m if a + (-a) % m > 0 else m, b - a, m))
                                  if b > a else 0 for a, b in ranges]
            nonempty = [r for r in range(comm.size) if ranges[r][1] > ranges[r][0]]
            lv.left = lv.right = None
            if lv.nloc:
                pos = nonempty.index(comm.rank)
                lv.left = nonempty[pos - 1] if pos > 0 else None
                lv.right = nonempty[pos + 1] if pos + 1 < len(nonempty) else None
            proto = st.new_vector(lvl)
            if not (isinstance(proto, np.ndarray) or get_namespace(proto) is not np):
                raise TypeError(
                    f"stepper.new_vector({lvl}) must return a NumPy or CuPy array, got "
                    f"{type(proto).__name__}"
                )
            xp = self._xp = get_namespace(proto)
            if lvl == 0 and proto.shape != tuple(st.shape):
                raise ValueError(
                    f"stepper.new_vector(0) must have shape stepper.shape={tuple(st.shape)}, "
                    f"got {proto.shape}"
                )
            if proto.dtype != np.dtype(st.dtype):
                raise TypeError(
                    f"stepper.new_vector({lvl}) must have dtype {np.dtype(st.dtype)}, "
                    f"got {proto.dtype}"
                )
            if not self._spatial and proto.shape != tuple(st.shape):
                raise ValueError(
                    f"stepper.new_vector({lvl}) has shape {proto.shape} but the stepper does "
                    f"no spatial coarsening: expected stepper.shape={tuple(st.shape)}"
                )
            lv.shape = proto.shape
            dt = proto.dtype
            fine = self.levels[-1] if lvl else None
            lv.aliased = fine is not None and not self._spatial
            if lv.aliased:
                # a coarse level's points are the finer level's C-points: its iterate is
                # a strided view of theirs, so injection and the FAS correction of the
                # C-points are free (the finer level is idle while the coarse one works)
                lv.U = fine.U[fine.c0 :: fine.m]
                if lv.U.shape[0] != lv.nloc:  # pragma: no cover - internal
                    raise AssertionError("coarse points are not the finer C-points")
                lv.block = None
                lv.ghost = xp.zeros(lv.shape, dtype=dt)
            else:
                # row 0 of the block receives the left neighbour's last point (the
                # ghost); the rank's own points follow: ghost and states in one array
                lv.block = xp.zeros((lv.nloc + 1,) + lv.shape, dtype=dt)
                lv.U = lv.block[1:]
                lv.ghost = lv.block[0]
            lv.Uv = list(lv.U)
            lv.G = None if lvl == 0 else xp.zeros((lv.nloc,) + lv.shape, dtype=dt)
            lv.Gv = None if lv.G is None else list(lv.G)
            lv.tmp = xp.zeros(lv.shape, dtype=dt)
            lv.tl = h.t[lvl].tolist()
            lv.consistent = False
            if not lv.coarsest:
                m = lv.m
                c0 = (-lv.a) % m
                cs = c0 if lv.a + c0 > 0 else c0 + m
                lv.c0, lv.cs = c0, cs
                n_c = len(range(cs, lv.nloc, m))
                lv.S = xp.zeros((n_c,) + lv.shape, dtype=dt)
                lv.R = xp.zeros_like(lv.S)
                lv.Sv = list(lv.S)
                lv.Rv = list(lv.R)
            self.levels.append(lv)
        for lvl, lv in enumerate(self.levels):
            lv.plan_f = None if lv.coarsest else self._make_plan(lv, "F")
            lv.plan_fi = None if lv.coarsest else self._make_plan(lv, "Fi")
            lv.plan_solve = self._make_plan(lv, "solve") if lv.coarsest else None
            lv.plan_stepc = self._make_plan(lv, "stepC") if lvl > 0 else None
            # steps of each sweep on all ranks: every interval of the level is stepped
            # once, except the steps into C-points in an F-interpolation
            n_c = 0 if lv.coarsest else lv.n // lv.m
            for plan, n_glob in ((lv.plan_f, lv.n), (lv.plan_fi, lv.n - n_c),
                                 (lv.plan_solve, lv.n), (lv.plan_stepc, lv.n)):
                if plan is not None:
                    plan.n_global = n_glob
            if self.batched:
                for kind, plan in (("F", lv.plan_f), ("Fi", lv.plan_fi),
                                   ("stepC", lv.plan_stepc)):
                    if plan is not None:
                        plan.waves = self._make_waves(lv, kind, plan)
            if lvl > 0:
                lv.j0 = 1 if lv.a == 0 else 0
                if self._spatial:
                    lv.V = self._xp.zeros_like(lv.U)
        self.u = self.levels[0].U
        self.u_with_ghost = self.levels[0].block
        self.t_local = np.asarray(self.levels[0].tl[self.start : self.stop])
        self._reset_stats()

    def _make_plan(self, lv, kind):
        """Steps of a sweep of ``kind`` on this rank: 'F' (F-relaxation, stepping into
        the C-points' ``S`` too), 'Fi' (F-interpolation: the F-points only), 'solve'
        (sequential solve of the coarsest level) or 'stepC' (the coarse steps of the
        FAS right-hand side)."""
        if lv.nloc == 0:
            return _Plan([], [], True, False)
        a, b, s = lv.a, lv.b, lv.stride
        tl, Uv = lv.tl, lv.Uv
        m = lv.m
        entries = []
        chain = []  # per entry: whether it steps Uv[k-1] (or the ghost) into Uv[k]
        first_c = None  # local index of the first point whose input is local
        for i in range(max(a, 1), b):
            k = i - a
            ui = lv.ghost if k == 0 else Uv[k - 1]
            if kind in ("F", "Fi"):
                is_c = i % m == 0
                uo = lv.Sv[(k - lv.cs) // m] if is_c else Uv[k]
                if is_c and first_c is None:
                    first_c = k
                if is_c and kind == "Fi":
                    entries.append(None)  # placeholder: keeps the ghost split below
                    chain.append(False)
                    continue
            elif kind == "solve":
                uo = Uv[k]
            else:  # stepC: Phi_c(v_{j-1}) into G[j]
                uo = lv.Gv[k]
            g = lv.Gv[k] if (lv.G is not None and kind != "stepC") else None
            entries.append((ui, uo, tl[i - 1], tl[i], (i - 1) * s, g))
            chain.append(g is None and uo is Uv[k])
        add_g = lv.G is not None and kind != "stepC"
        if a == 0:
            # point 0 is local and fixed: nothing depends on a ghost
            split = len(entries)
            indep, dep, early = entries, [], True
        elif kind in ("F", "Fi"):
            if first_c is None:  # every local point waits for the ghost
                split, early = len(entries), False
            else:
                # points a..first_c depend on the ghost, the rest do not
                split, early = first_c + 1, True
        elif kind == "solve":
            split, early = len(entries), False
        else:
            split, early = 1, True
        if a != 0:  # entries[:split] wait for the ghost
            dep, indep = entries[:split], entries[split:]
        plan = _Plan([e for e in indep if e is not None], [e for e in dep if e is not None],
                     early, add_g)
        if self._plan_sweeps:
            # the stepper may take each part of a sweep in a few kernel calls
            prep = self.stepper.plan_sweep
            ops = (prep(lv.lvl, plan.indep) if plan.indep else [],
                   prep(lv.lvl, plan.dep) if plan.dep else [])
            if ops[0] is not None and ops[1] is not None:
                plan.ops = ops
                return plan
        if lv.lvl == 0 and self._sweeps and lv.block is not None:
            k0 = max(a, 1) - a  # local index of entries[0]
            if a == 0:
                plan.ops = (self._ops(lv, k0, entries, chain), [])
            else:
                plan.ops = (self._ops(lv, k0 + split, entries[split:], chain[split:]),
                            self._ops(lv, k0, entries[:split], chain[:split]))
        return plan

    def _ops(self, lv, k0, entries, chain):
        """Calls doing the steps ``entries`` (local indices ``k0, k0+1, ...``) on level 0:
        runs of two or more steps from point to point become one ``stepper.sweep`` over
        a view of the block (ghost row, then the rank's points)."""
        step, sweep = self.stepper.step, self.stepper.sweep
        ops, q, n = [], 0, len(entries)
        while q < n:
            if entries[q] is None:
                q += 1
                continue
            r = q
            while r + 1 < n and chain[q] and chain[r + 1]:
                r += 1
            if r > q:
                # points k0+q .. k0+r from point k0+q-1 (block rows k0+q .. k0+r+1)
                ka, kb = k0 + q, k0 + r
                t = lv.tl[lv.a + ka - 1:lv.a + kb + 1]
                ops.append((sweep, (lv.block[ka:kb + 2], t, 0, entries[q][4])))
            else:
                ui, uo, t0, t1, idx, _ = entries[q]
                ops.append((step, (ui, uo, t0, t1, 0, idx)))
            q = r + 1
        return ops

    def _make_waves(self, lv, kind, plan):
        """Batched form of ``plan.indep``: a list of waves ``(u_in, u_out, g, t0, t1,
        index)`` of independent steps whose states are strided views of the blocks."""
        if not plan.indep:
            return []
        a, nloc, m, st = lv.a, lv.nloc, lv.m, lv.stride
        tl = np.asarray(lv.tl)
        U, G = lv.U, lv.G
        waves = []

        def wave(ks, u_in, u_out, g):
            i = a + ks  # level indices of the points stepped into
            waves.append((u_in, u_out, g, tl[i - 1].copy(), tl[i].copy(), (i - 1) * st))

        if kind == "stepC":
            # Phi_c(v_{k-1}) into G[k], k = 1 .. nloc-1: all independent
            ks = np.arange(1, nloc)
            wave(ks, U[: nloc - 1], G[1:nloc], None)
        else:
            # intervals start at local C-point c0: 0 on the rank holding point 0,
            # else the first local C-point (the steps before it wait for the ghost)
            c0 = 0 if a == 0 else next(k for k in range(nloc) if (a + k) % m == 0 and a + k > 0)
            for j in range(1, m if kind == "Fi" else m + 1):
                ks = np.arange(c0 + j, nloc, m)
                n = ks.size
                if n == 0:
                    continue
                u_in = U[c0 + j - 1 :: m][:n]
                if j < m:
                    u_out = U[c0 + j :: m][:n]
                else:
                    q0 = (c0 + m - lv.cs) // m
                    u_out = lv.S[q0 : q0 + n]
                g = G[c0 + j :: m][:n] if (G is not None and plan.add_g) else None
                wave(ks, u_in, u_out, g)
        if sum(w[5].size for w in waves) != len(plan.indep):  # pragma: no cover - internal
            raise AssertionError("batched plan does not cover the sweep")
        return waves

    def _reset_stats(self):
        n = self.hierarchy.n_levels
        self._time = [0.0] * n
        self._steps = [0] * n
        self._gsteps = [0] * n

    # ---------------------------------------------------------------- kernels
    def _run(self, lv, entries, add_g):
        step = self.stepper.step
        lvl = lv.lvl
        if add_g:
            add = self._xp.add
            for ui, uo, t0, t1, idx, g in entries:
                step(ui, uo, t0, t1, lvl, idx)
                add(uo, g, out=uo)
        else:
            for ui, uo, t0, t1, idx, _ in entries:
                step(ui, uo, t0, t1, lvl, idx)

    def _sweep(self, lv, plan):
        """Run a plan with the ghost exchange of this level."""
        self._gsteps[lv.lvl] += plan.n_global  # counted on every rank, even without points
        if lv.nloc == 0:
            return
        tic = time.perf_counter()
        comm = self.comm
        rreq = comm.Irecv(lv.ghost, lv.left, lv.lvl) if lv.left is not None else None
        sreq = None
        if plan.waves is not None:
            step_batch = self.stepper.step_batch
            add = self._xp.add
            for ui, uo, g, t0, t1, idx in plan.waves:
                step_batch(ui, uo, t0, t1, lv.lvl, idx)
                if g is not None:
                    add(uo, g, out=uo)
        elif plan.ops is not None:
            for fn, args in plan.ops[0]:
                fn(*args)
        else:
            self._run(lv, plan.indep, plan.add_g)
        if plan.send_early and lv.right is not None:
            sreq = comm.Isend(lv.Uv[-1], lv.right, lv.lvl)
        if rreq is not None:
            rreq.Wait()
        if plan.ops is not None:
            for fn, args in plan.ops[1]:
                fn(*args)
        else:
            self._run(lv, plan.dep, plan.add_g)
        if not plan.send_early and lv.right is not None:
            sreq = comm.Isend(lv.Uv[-1], lv.right, lv.lvl)
        if sreq is not None:
            sreq.Wait()
        self._steps[lv.lvl] += plan.n_steps
        self._time[lv.lvl] += time.perf_counter() - tic

    def _relax(self, lv):
        """F(CF)^nu relaxation; leaves F-points consistent and ``S`` valid."""
        if not lv.consistent:
            self._sweep(lv, lv.plan_f)
        omega = self.omega[lv.lvl]
        for _ in range(self.cf_sweeps[lv.lvl]):
            tic = time.perf_counter()
            uc = lv.U[lv.cs :: lv.m]
            if omega == 1.0:
                self._xp.copyto(uc, lv.S)
            else:
                self._xp.multiply(uc, 1.0 - omega, out=uc)
                self._xp.multiply(lv.S, omega, out=lv.R)
                self._xp.add(uc, lv.R, out=uc)
            self._time[lv.lvl] += time.perf_counter() - tic
            self._sweep(lv, lv.plan_f)
        lv.consistent = True

    def _restrict(self, lv, co, zero_rhs=False):
        """Inject level ``lv`` into ``co`` and form the FAS right-hand side."""
        tic = time.perf_counter()
        st = self.stepper
        m = lv.m
        if self._spatial:
            for k in range(co.nloc):
                st.restrict(lv.Uv[lv.c0 + k * m], co.Uv[k], lv.lvl)
            self._xp.copyto(co.V, co.U)
        elif not co.aliased:
            self._xp.copyto(co.U, lv.U[lv.c0 :: m])
        self._time[lv.lvl] += time.perf_counter() - tic
        co.consistent = False
        if zero_rhs:
            co.G.fill(0.0)
            return
        self._sweep(co, co.plan_stepc)  # G[j] = Phi_c(v_{j-1})
        tic = time.perf_counter()
        g = co.G[co.j0 :]
        if self._spatial:
            self._xp.subtract(lv.S, lv.U[lv.cs :: m], out=lv.R)
            for k in range(lv.R.shape[0]):
                j = co.j0 + k
                st.restrict(lv.Rv[k], co.tmp, lv.lvl)
                self._xp.subtract(co.Uv[j], co.Gv[j], out=co.Gv[j])
                self._xp.add(co.Gv[j], co.tmp, out=co.Gv[j])
        else:
            self._xp.subtract(lv.S, g, out=g)
        self._time[co.lvl] += time.perf_counter() - tic

    def _correct(self, lv, co, full=True, final=False):
        """FAS correction of level ``lv`` from ``co``, then F-interpolation.

        ``full``: also step into the C-points (their ``S``), leaving the level
        consistent for a following relaxation or residual; otherwise only the
        F-points are updated. ``final``: the sweep is the solve's last on level 0
        (see :meth:`_final_sweep`)."""
        tic = time.perf_counter()
        m = lv.m
        if self._spatial:
            st = self.stepper
            for k in range(co.nloc):
                self._xp.subtract(co.Uv[k], co.V[k], out=co.tmp)
                st.interpolate(co.tmp, lv.tmp, lv.lvl)
                u = lv.Uv[lv.c0 + k * m]
                self._xp.add(u, lv.tmp, out=u)
        elif not co.aliased:
            self._xp.copyto(lv.U[lv.c0 :: m], co.U)
        self._time[lv.lvl] += time.perf_counter() - tic
        # a stepper that wants final sweeps gets every fine step of them
        plan = lv.plan_f if full or (final and self._wants_final) else lv.plan_fi
        if final:
            self._final_sweep(lv, plan)
        else:
            self._sweep(lv, plan)
        lv.consistent = plan is lv.plan_f

    def _final_sweep(self, lv, plan):
        """A sweep of level 0 that may be the solve's last: the stepper's
        ``final_sweep(True)`` / ``final_sweep(False)`` bracket it when the stepper
        wants final sweeps (e.g. to accumulate a parameter gradient)."""
        if not self._wants_final:
            self._sweep(lv, plan)
            return
        self.stepper.final_sweep(True)
        try:
            self._sweep(lv, plan)
        finally:
            self.stepper.final_sweep(False)
        self._final_done = True

    def _cycle(self, lvl, fcycle, skip=False, last=False, reuse=False):
        """One V- or F-cycle from level ``lvl``. ``last`` (level 0 only): the cycle's
        F-interpolation is the last sweep of the solve. ``reuse`` (level 0 only): level
        1 already holds the injected iterate and the FAS right-hand side (kept from
        the previous solve), so the fine relaxation and restriction are skipped."""
        lv = self.levels[lvl]
        if lv.coarsest:
            if lvl == 0:
                self._final_sweep(lv, lv.plan_solve)
            else:
                self._sweep(lv, lv.plan_solve)
            return
        co = self.levels[lvl + 1]
        if not reuse:
            if not skip:
                self._relax(lv)
            self._restrict(lv, co, zero_rhs=skip)
        self._cycle(lvl + 1, fcycle, skip)
        if fcycle and not co.coarsest:
            self._cycle(lvl + 1, False)
        if lvl > 0:
            # a coarse level is restricted afresh before its next relaxation, except
            # where the F-cycle's extra V-cycle relaxes it again right away
            self._correct(lv, co, full=fcycle)
        else:
            final = last or not self._fixed
            full = (not last) or self._final_residual or self._keep_tau
            self._correct(lv, co, full=full, final=final)

    def _nested(self):
        levels = self.levels
        for lvl in range(len(levels) - 1):
            self._restrict(levels[lvl], levels[lvl + 1], zero_rhs=True)
        self._cycle(len(levels) - 1, False)
        for lvl in range(len(levels) - 2, -1, -1):
            self._correct(levels[lvl], levels[lvl + 1])
            if lvl > 0:
                self._cycle(lvl, False)

    def _point_sq_norms(self, block, out):
        """Squared norm of each state of ``block`` into ``out`` (one row per state):
        each state's sum is computed alike on any rank."""
        if self._fast_norm:
            # einsum, not BLAS: no thread start-up, no copy of a strided block
            idx = list(range(block.ndim))
            vals = self._xp.einsum(block, idx, block, idx, [0]).real
            out[:] = vals if self._xp is np else to_host(vals)
        else:
            norm = self.stepper.norm
            for k in range(block.shape[0]):
                out[k] = norm(block[k]) ** 2

    def _residual(self):
        """Global norm of the C-point residuals of level 0 (needs S valid); with
        ``state_rtol`` also the norm of the C-point states (``self._state_norm``).

        Each C-point's squared norm is computed on its rank, all of them are gathered
        (one collective) and summed exactly rounded (``math.fsum``): the norms, and
        so any decision taken on them, do not depend on the number of ranks."""
        lv = self.levels[0]
        tic = time.perf_counter()
        two = self._state_rtol is not None
        n = lv.R.shape[0]
        local = np.zeros((n, 2))
        if n:
            uc = lv.U[lv.cs :: lv.m]
            self._xp.subtract(lv.S, uc, out=lv.R)
            self._point_sq_norms(lv.R, local[:, 0])
            if two:
                self._point_sq_norms(uc, local[:, 1])
        if self.comm.size > 1:
            allsq = np.empty((sum(self._c_counts), 2))
            self.comm.allgatherv(local, allsq, self._c_counts)
        else:
            allsq = local
        self._state_norm = math.sqrt(math.fsum(allsq[:, 1])) if two else 0.0
        self._time[0] += time.perf_counter() - tic
        return math.sqrt(math.fsum(allsq[:, 0]))

    def _check_stepper(self, u0):
        """One probe step: the stepper must fill u_out in place and leave u_in alone."""
        st = self.stepper
        h = self.hierarchy
        xp = self._xp
        u_in = u0.copy()
        out = xp.full(u0.shape, np.nan, dtype=u0.dtype)
        ret = st.step(u_in, out, float(h.t[0][0]), float(h.t[0][1]), 0, 0)
        if ret is not None:
            raise TypeError(
                "stepper.step must write its result into u_out and return None; it returned "
                f"{type(ret).__name__}"
            )
        if not np.array_equal(u_in, u0):
            raise ValueError("stepper.step modified u_in; it must only write u_out")
        if not bool(np.isfinite(out).all()):
            raise ValueError(
                "stepper.step did not write u_out: after a step from u0 over "
                f"[{h.t[0][0]:g}, {h.t[0][1]:g}] u_out (pre-filled with NaN) still holds "
                "NaN or inf; step(u_in, u_out, t0, t1, level, index) must fill u_out in place"
            )
        if self.batched:
            self._check_step_batch(u0, out)
        self._checked = True

    def _check_step_batch(self, u0, ref0):
        """Probe ``step_batch`` on a stack of two states against ``step`` (cheap: 3 steps)."""
        st = self.stepper
        xp = self._xp
        t = self.hierarchy.t[0]
        k = 2 if t.shape[0] > 2 else 1
        u_in = xp.stack([u0] * k)
        keep = u_in.copy()
        ref = xp.empty_like(u_in)
        ref[0] = ref0
        if k == 2:
            st.step(u_in[1], ref[1], float(t[1]), float(t[2]), 0, 1)
        out = xp.full(u_in.shape, np.nan, dtype=u0.dtype)
        ret = st.step_batch(u_in, out, t[:k].copy(), t[1 : k + 1].copy(), 0, np.arange(k))
        if ret is not None:
            raise TypeError(
                "stepper.step_batch must write its results into u_out and return None; it "
                f"returned {type(ret).__name__}"
            )
        if not bool(xp.array_equal(u_in, keep)):
            raise ValueError("stepper.step_batch modified u_in; it must only write u_out")
        err = float(xp.max(xp.abs(out - ref))) if out.size else 0.0
        scale = max(1.0, float(xp.max(xp.abs(ref)))) if out.size else 1.0
        if not err <= 1e-10 * scale:  # also catches NaN left in u_out
            raise ValueError(
                "stepper.step_batch disagrees with stepper.step: on a stack of "
                f"{k} states from u0 (steps 0..{k - 1} of level 0) the largest difference "
                f"is {err:.3e} (scale {scale:.3e}); u_out[q] must be the step of u_in[q] "
                "over [t0[q], t1[q]] with index[q]"
            )

    # ------------------------------------------------------------------ solve
    def solve(self, u0, u_guess=None, *, tol=None, rtol=None, state_rtol=None, max_iter=20,
              residuals=True, callback=None, divtol=1e4, skip=None, keep_tau=False,
              reuse_tau=False):
        """Solve for all fine-grid states from the initial value ``u0``.

        Parameters
        ----------
        u0 : ndarray, shape ``stepper.shape``
            Initial value at ``t[0]`` (the same on every rank).
        u_guess : ndarray, optional
            Initial guess (warm start) for the fine states: shape
            ``(N + 1, *shape)`` (all points) or ``(n_local, *shape)`` (this
            rank's rows, e.g. ``solver.u`` from a previous solve). Row 0 is
            replaced by ``u0``. Default: ``u0`` at every point.
        tol, rtol, state_rtol : float, optional
            Stop when the residual norm is ``<= max(tol, rtol * residuals[0],
            state_rtol * |u_C|)``, with ``|u_C|`` the norm of the current iterate at
            the C-points of level 0 (the states' own scale; computed in the same
            reduction as the residual). With all three ``None`` exactly
            ``max_iter`` iterations are done.
        max_iter : int
            Maximum number of iterations (cycles).
        residuals : bool
            With a fixed iteration count, whether to compute residual norms
            anyway (a global reduction per iteration). Always True with a
            tolerance.
        callback : callable, optional
            ``callback(intermediate_result)`` after each iteration, with an
            :class:`MGRITResult`; raising ``StopIteration`` ends the solve.
        divtol : float or None, default 1e4
            Divergence test (PETSc's ``divtol``): stop with ``success=False`` as soon
            as a residual norm exceeds ``divtol`` times the first one computed,
            also with a fixed iteration count. The states returned are those of
            that iteration (no earlier copy is kept). Needs residuals (with a fixed
            count and ``residuals=False`` nothing is tested); ``None`` turns it off.
        skip : bool, optional
            Override the solver's ``skip`` for this solve (e.g. skip the first
            down-cycle of a cold solve but not of a warm-started one, whose
            initial guess the skipped cycle would discard).
        keep_tau : bool
            After the solve, restrict the final iterate to level 1 and keep the
            FAS right-hand side ``tau = S - Phi_1(v)`` computed with the stepper
            as it is now (``tau_ready`` becomes True). Costs one coarse sweep.
        reuse_tau : bool
            Start from what ``keep_tau`` left: the first cycle skips the fine
            relaxation and restriction and goes straight to level 1 with the kept
            iterate and right-hand side. ``u_guess`` must be the previous solution
            (``None`` keeps ``solver.u``). For a sequence of nearby problems (a
            stepper whose parameters changed a little, as in one-shot training)
            this saves one fine sweep per solve; the first cycle then uses the
            previous problem's fine-level information, so its error is that of the
            lagged ``tau``; with an unchanged stepper the iterates are those of the
            uninterrupted iteration. Raises ``RuntimeError`` when nothing was kept.

        Returns
        -------
        MGRITResult
        """
        wall = time.perf_counter()
        st = self.stepper
        shape = tuple(st.shape)
        xp = self._xp
        if xp is not np and get_namespace(u0) is np:
            u0 = xp.asarray(u0)  # one copy to the device, before the cycles
        u0 = check_array(u0, "u0", shape=shape, dtype=st.dtype, xp=xp)
        if tol is not None:
            tol = check_scalar(tol, "tol", low=0.0)
        if rtol is not None:
            rtol = check_scalar(rtol, "rtol", low=0.0)
        if state_rtol is not None:
            state_rtol = check_scalar(state_rtol, "state_rtol", low=0.0)
        self._state_rtol = state_rtol
        max_iter = check_positive_int(max_iter, "max_iter", minimum=0)
        if divtol is not None:
            divtol = check_scalar(divtol, "divtol", low=1.0)
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        if not self._checked:
            self._check_stepper(u0)
        n_fine = self.hierarchy.n_points[0]
        lv0 = self.levels[0]
        reuse_tau = bool(reuse_tau)
        if reuse_tau:
            if not self.tau_ready:
                raise RuntimeError("reuse_tau=True needs a previous solve with keep_tau=True "
                                   "(and no solve without it since)")
            if u_guess is None:
                u_guess = lv0.U
        self.tau_ready = False
        if u_guess is None:
            lv0.U[...] = u0
        elif u_guess is lv0.U:
            pass  # warm start from the solver's own storage: nothing to check or copy
        else:
            if xp is not np and get_namespace(u_guess) is np:
                u_guess = xp.asarray(u_guess)
            ug = check_array(u_guess, "u_guess", dtype=st.dtype, xp=xp)
            if ug.shape[1:] != shape or ug.shape[0] not in (n_fine, lv0.nloc):
                raise ValueError(
                    f"u_guess must have shape ({n_fine}, {', '.join(map(str, shape))}) "
                    f"(all fine points) or ({lv0.nloc}, {', '.join(map(str, shape))}) "
                    f"(this rank's points), got {ug.shape}"
                )
            if ug.shape[0] == n_fine and ug.shape[0] != lv0.nloc:
                ug = ug[self.start : self.stop]
            if ug is not lv0.U:
                xp.copyto(lv0.U, ug)
        if lv0.nloc and self.start == 0:
            xp.copyto(lv0.U[0], u0)
        for lv in self.levels:
            lv.consistent = False
        self._reset_stats()
        one_level = self.hierarchy.n_levels == 1
        keep_tau = bool(keep_tau) and not one_level
        reuse_tau = reuse_tau and not one_level
        if reuse_tau:
            lv1 = self.levels[1]
            if lv1.nloc and lv1.a == 0:  # the new initial value on level 1 too
                if self._spatial:
                    self.stepper.restrict(u0, lv1.Uv[0], 0)
                    xp.copyto(lv1.V[0], lv1.U[0])
                else:
                    xp.copyto(lv1.U[0], u0)

        fixed = tol is None and rtol is None and state_rtol is None
        compute = residuals or not fixed
        self._fixed, self._final_residual, self._final_done = fixed, compute, False
        self._keep_tau = keep_tau
        skip = self.skip if skip is None else bool(skip)
        hist = []
        initial = False
        nit = 0
        message = ""
        success = False
        if not one_level and not reuse_tau:
            if self.nested_iteration:
                self._nested()
            elif not skip:
                self._sweep(lv0, lv0.plan_f)
                lv0.consistent = True
            if lv0.consistent and compute:
                hist.append(self._residual())
                initial = True

        def target():
            goal = tol if tol is not None else 0.0
            if rtol is not None and hist:
                goal = max(goal, rtol * hist[0])
            if state_rtol is not None and hist:
                goal = max(goal, state_rtol * self._state_norm)
            return goal

        def result():
            res = np.asarray(hist, dtype=np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                fac = res[1:] / res[:-1] if res.size > 1 else np.zeros(0)
            return MGRITResult(
                u=lv0.U, t=self.t_local, start=self.start, success=success, message=message,
                nit=nit, residuals=res, initial_residual=initial, factors=fac,
                level_time=list(self._time), level_steps=list(self._steps),
                level_steps_all=list(self._gsteps),
                wall_time=time.perf_counter() - wall,
            )

        done = False
        if hist and not fixed and hist[0] <= target():
            success, done = True, True
            message = "initial guess satisfies the tolerance"
        if hist and not math.isfinite(hist[0]):
            done, message = True, "residual of the initial guess is not finite"
        while not done and nit < max_iter:
            first = nit == 0
            self._cycle(0, self.cycle == "F", skip=first and skip and not
                        self.nested_iteration, last=nit == max_iter - 1,
                        reuse=first and reuse_tau)
            nit += 1
            if one_level:
                hist.append(0.0)  # the coarsest solve is exact
                success, done, message = True, True, "one level: solved by time stepping"
            elif compute:
                hist.append(self._residual())
                if not math.isfinite(hist[-1]):
                    done, message = True, f"residual is not finite at iteration {nit}"
                elif divtol is not None and hist[-1] > divtol * hist[0]:
                    done, success = True, False
                    message = (f"diverged: residual {hist[-1]:.3e} at iteration {nit} exceeds "
                               f"divtol = {divtol:g} times the first residual {hist[0]:.3e}")
                elif not fixed and hist[-1] <= target():
                    success, done = True, True
                    message = f"residual {hist[-1]:.3e} <= tolerance {target():.3e}"
            if callback is not None and not done:
                try:
                    callback(result())
                except StopIteration:
                    done, message = True, f"stopped by callback at iteration {nit}"
                    success = fixed
        if not done:
            if fixed:
                success, message = True, f"{nit} iterations done (fixed count)"
            else:
                message = f"tolerance {target():.3e} not reached in {max_iter} iterations"
        if self._wants_final and not self._final_done:
            # no cycle ran (max_iter=0, an initial guess within the tolerance, a stop
            # by the callback): one more F-sweep of the final states, which leaves
            # them unchanged when they are F-relaxed already
            self._final_sweep(lv0, lv0.plan_f if lv0.plan_f is not None else lv0.plan_solve)
            lv0.consistent = lv0.plan_f is not None
        if keep_tau and math.isfinite(hist[-1] if hist else 0.0):
            if not lv0.consistent:  # e.g. max_iter=0 after reuse_tau: S is stale
                self._sweep(lv0, lv0.plan_f)
                lv0.consistent = True
            self._restrict(lv0, self.levels[1])
            self.tau_ready = True
        return result()

    # ------------------------------------------------------------- utilities
    def gather(self):
        """Return all fine-grid states, shape ``(N + 1, *shape)``, on every rank."""
        counts = [len(range(*self._fine_range(r))) for r in range(self.comm.size)]
        out = self._xp.empty((sum(counts),) + self.u.shape[1:], dtype=self.u.dtype)
        self.comm.allgatherv(self.u, out, counts)
        return out

    def _fine_range(self, rank):
        offs = self._offsets
        return int(offs[rank]), int(offs[rank + 1])

    def __repr__(self):
        opts = (
            f"cycle={self.cycle!r}, cf_sweeps={self.cf_sweeps[:-1] or self.cf_sweeps}, "
            f"omega={self.omega[:-1] or self.omega}, nested_iteration={self.nested_iteration}, "
            f"skip={self.skip}{', batched=True' if self.batched else ''}"
        )
        return (
            f"MGRIT({self.stepper!r}, {opts},\n      ranks={self.comm.size}, "
            f"rank {self.comm.rank} owns fine points {self.start}..{self.stop - 1})\n"
            f"{self.hierarchy!r}"
        )


def mgrit(stepper, t, u0, *, u_guess=None, tol=None, rtol=None, max_iter=20, callback=None,
          **options):
    """One-line MGRIT solve: ``MGRIT(stepper, t, **options).solve(u0, ...)``.

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.mgrit.problems import Dahlquist
    >>> res = mgrit(Dahlquist(-1.0), np.linspace(0, 1, 65), np.ones(1), tol=1e-12)
    >>> res.success
    True
    """
    solver = MGRIT(stepper, t, **options)
    return solver.solve(u0, u_guess, tol=tol, rtol=rtol, max_iter=max_iter, callback=callback)
