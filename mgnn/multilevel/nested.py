"""Nested iteration: train coarse, prolong, continue finer (Cyr, Guenther, Schroder).

Starting on the coarsest level of a :class:`~mgnn.multilevel.Hierarchy`, the
network is trained for its share of the schedule, its parameters are prolonged to
the next finer level (``P``: opening and closing layers copied, residual weights
interpolated in depth or width), and training continues there, up to the finest
level. Each level is a fresh run of a single-level optimizer from
:mod:`mgnn.optim` (optimizer state such as Adam's moments starts anew after a
refinement).

With layer-parallel (MGRIT) propagation, the first optimization steps after a
refinement can use more MGRIT iterations than the rest, since the prolonged
states are a poor initial guess for the finer network (the paper uses 10
iterations for the first 3 steps, then 2): ``refine_iterations`` and
``refine_steps``. This needs a propagation with a ``boost(iterations, steps)``
method; on serial propagation the options are rejected rather than ignored.
"""

from __future__ import annotations

import time

import numpy as np
from scipy.optimize import OptimizeResult

from mgnn._validation import check_positive_int, check_validation, per_level
from mgnn.optim import minimize
from mgnn.optim._common import STATUS_INTERRUPTED, History
from mgnn.runs.checkpoint import Checkpoint, as_checkpoint, as_checkpointer, interrupted_message
from mgnn.runs.progress import Progress
from mgnn.runs.state import counter_state, result_from_state, result_state, set_counter_state

_per_level = per_level  # the name other modules imported before it moved


def _level_callback(level, obj, start, base_work, base_nit, eval_every, record, user,
                    progress, t0):
    def callback(intermediate_result):
        r = intermediate_result
        work = base_work + obj.counter.work - start
        if r.nit % eval_every == 0:
            record(level, base_nit + r.nit, work, r.fun, r.x)
        if progress.on:
            row = dict(level=level, nit=base_nit + r.nit, fun=r.fun, work=work,
                       time=time.perf_counter() - t0)
            if r.get("jac") is not None:
                row["grad_norm"] = obj.space.norm(r.jac)
            stats = getattr(getattr(obj, "propagation", None), "history_row", None)
            if callable(stats):
                row.update(stats())
            progress.row(row)
        if user is not None:
            user(level, r)

    return callback


def nested_iteration(hierarchy, schedule, method="adam", options=None, theta0=None,
                     callback=None, validation=None, eval_every=10, refine_iterations=None,
                     refine_steps=3, *, disp=False, disp_every=1, checkpoint=None,
                     resume=None):
    """Train on the coarsest level, then prolong and continue up to the finest.

    Parameters
    ----------
    hierarchy : Hierarchy
        Levels with objectives (e.g. from ``depth_hierarchy(objective, ...)``).
    schedule : list of int
        Optimization iterations per level, **coarsest first**: ``[m_coarse, ...,
        m_fine]`` (one entry per level).
    method : str or callable
        Single-level method of :func:`mgnn.optim.minimize` (on every level).
    options : dict or list of dict
        Options of the method; a list gives one dict per level, coarsest first,
        whose last entry repeats. ``maxiter`` is taken from ``schedule`` and may
        not be given.
    theta0 : ndarray, optional
        Initial parameters on the coarsest level (default: the coarsest network's
        ``init(0, 'layer_parallel')``).
    callback : callable, optional
        ``callback(level, intermediate_result)`` after every iteration; raising
        ``StopIteration`` ends the whole run.
    validation : tuple (X_val, Y_val), optional
        Validation data: accuracy (classification) or mean/worst absolute error
        (regression) is recorded every ``eval_every`` iterations, against the
        work units spent so far.
    eval_every : int
        Iterations between validation evaluations.
    refine_iterations, refine_steps : int, optional
        With MGRIT propagation: MGRIT iterations for the first ``refine_steps``
        evaluations after each refinement.
    disp, disp_every : bool, int
        Progress lines (level, iteration over all levels, loss, gradient norm,
        work over all levels, MGRIT factors, time) every ``disp_every`` iterations
        (:mod:`mgnn.runs.progress`).
    checkpoint : Checkpointer or str, optional
        Checkpoints of the whole run (:class:`~mgnn.runs.Checkpointer`; a directory
        for the defaults): the level, the inner optimizer's state, the histories
        and work of the levels done. On SIGINT/SIGTERM the run stops at the next
        iteration, writes a checkpoint and returns with status 4.
    resume : str or Checkpoint, optional
        Continue the run a checkpoint holds (file or directory), bit for bit.

    Returns
    -------
    OptimizeResult
        ``x`` (finest parameters), ``fun``, ``nit`` (total iterations), ``work``
        (fine-gradient equivalents over all levels; each level's evaluations are
        charged by its objective's counter, scaled by its flop count relative to
        the finest), ``work_per_level`` (coarse to fine), ``levels`` (each level's
        OptimizeResult, coarse to fine), ``history`` (a
        :class:`~mgnn.optim.History` with columns ``level, nit, work, fun`` and
        ``val_acc`` or ``val_mean_error, val_max_error``), ``success``,
        ``message``.

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.data import peaks
    >>> from mgnn.nets import ResNet
    >>> from mgnn.objective import Objective
    >>> from mgnn.multilevel import depth_hierarchy
    >>> d = peaks(200, 100)
    >>> obj = Objective(ResNet(2, 4, 8, 5, T=5.0), d.X_train, d.Y_train)
    >>> H = depth_hierarchy(obj, 3)
    >>> res = nested_iteration(H, [20, 10, 5], method="adam", options={"lr": 0.01},
    ...                        validation=(d.X_val, d.Y_val))
    >>> res.x.shape == (obj.net.n_params,), len(res.levels), res.nit
    (True, 3, 35)
    >>> [round(w, 3) for w in res.work_per_level]  # doctest: +SKIP
    [6.7, 7.7, 5.0]
    """
    L = hierarchy.n_levels
    if isinstance(schedule, (str, bytes)) or not hasattr(schedule, "__len__"):
        raise TypeError(f"schedule must be a list of iterations per level (coarsest first), "
                        f"got {type(schedule).__name__}")
    if len(schedule) != L:
        raise ValueError(f"schedule must have one entry per level ({L}), got {len(schedule)}")
    schedule = [check_positive_int(m, "schedule entry") for m in schedule]
    eval_every = check_positive_int(eval_every, "eval_every")
    opts = per_level({} if options is None else options, L, "options")
    for o in opts:
        if not isinstance(o, dict):
            raise TypeError(f"options must be a dict or a list of dicts, got {type(o).__name__}")
        if "maxiter" in o or "epochs" in o:
            raise ValueError("options may not set 'maxiter' or 'epochs': the schedule does")
        for key in ("checkpoint", "resume"):
            if key in o:
                raise ValueError(f"options may not set {key!r}: pass it to nested_iteration")
    levels = list(range(L - 1, -1, -1))  # coarse -> fine
    for l in levels:
        if hierarchy[l].objective is None:
            raise ValueError(f"level {l} of the hierarchy has no objective")
    if refine_iterations is not None:
        refine_iterations = check_positive_int(refine_iterations, "refine_iterations")
        refine_steps = check_positive_int(refine_steps, "refine_steps")
        for l in levels[1:]:
            if not hasattr(hierarchy[l].objective.propagation, "boost"):
                raise ValueError("refine_iterations needs a propagation with MGRIT iterations "
                                 f"(level {l} uses {hierarchy[l].objective.propagation!r})")

    coarse = hierarchy[L - 1]
    xp = getattr(coarse.objective, "xp", np)  # the array namespace of the data
    x = xp.asarray(coarse.net.init(0, "layer_parallel")) if theta0 is None else \
        coarse.net.check_theta(theta0, "theta0").copy()
    val = check_validation(validation, hierarchy[0].net, xp=getattr(hierarchy[0].objective,
                                                                    "xp", np))
    progress = Progress("nested_iteration", disp, disp_every)
    ck = as_checkpointer(checkpoint)
    if ck is not None:
        ck.activate()
    try:
        return _nested(hierarchy, schedule, method, opts, x, callback, val, eval_every,
                       refine_iterations, refine_steps, levels, progress, ck, resume)
    finally:
        if ck is not None:
            ck.release()


def _nested(hierarchy, schedule, method, opts, x, callback, val, eval_every,
            refine_iterations, refine_steps, levels, progress, ck, resume):
    L = hierarchy.n_levels
    hist = History()
    results = []
    work_per_level = []
    work_done = 0.0
    nit_total = 0
    t0 = time.perf_counter()
    objectives = [hierarchy[l].objective for l in range(L)]
    counters = list({id(o.counter): o.counter for o in objectives}.values())

    saved = as_checkpoint(resume, None if ck is None else ck.root.comm,
                          xp=getattr(objectives[-1], "xp", np))
    first = 0
    if saved is not None:
        st = saved.state
        if st.get("solver") != "nested_iteration":
            raise ValueError(f"resume: the checkpoint was written by {st.get('solver')!r}, "
                             "not by nested_iteration")
        if len(st["counters"]) != len(counters) or st["n_levels"] != L:
            raise ValueError(f"resume: the checkpoint is of a hierarchy of {st['n_levels']} "
                             f"levels, this one has {L}")
        hist.load_state_dict(st["history"])
        results = [result_from_state(r) for r in st["results"]]
        work_per_level = list(st["work_per_level"])
        work_done, nit_total = st["work_done"], st["nit_total"]
        for c, v in zip(counters, st["counters"], strict=True):
            set_counter_state(c, v)
        t0 = time.perf_counter() - st["elapsed"]
        first = st["level_index"]

    def record(level, nit, work, fun, xk):
        row = dict(level=level, nit=nit, work=work, fun=fun, time=time.perf_counter() - t0)
        if val is not None:
            obj = hierarchy[level].objective
            if obj.net.task == "classification":
                row["val_acc"] = obj.accuracy(xk, *val)
            else:
                row["val_mean_error"], row["val_max_error"] = obj.error(xk, *val)
        hist.append(**row)

    stopped = interrupted = False
    for i, l in enumerate(levels):
        if i < first:
            continue
        obj = hierarchy[l].objective
        o = dict(opts[i], maxiter=schedule[i])
        if saved is not None and i == first:  # resume inside this level
            start, x = saved.state["start"], saved.state["x0"]
            o["resume"] = Checkpoint(saved.state["inner"], saved.meta, saved.path)
        else:
            if i > 0:
                x = hierarchy[l].P(x)
                if refine_iterations is not None:
                    obj.propagation.boost(refine_iterations, refine_steps)
            if i == 0:
                record(l, 0, 0.0, obj.value(x), x)
            start = obj.counter.work  # the initial evaluation is not part of the training
        base_work, base_nit = work_done, nit_total
        if ck is not None:
            def wrap(inner, i=i, start=start, x0=x, work_done=work_done, nit_total=nit_total):
                return {"solver": "nested_iteration", "n_levels": L, "level_index": i,
                        "start": start, "x0": x0, "inner": inner, "history": hist.state_dict(),
                        "results": [result_state(r) for r in results],
                        "work_per_level": list(work_per_level), "work_done": work_done,
                        "nit_total": nit_total,
                        "counters": [counter_state(c) for c in counters],
                        "elapsed": time.perf_counter() - t0}
            o["checkpoint"] = ck.scope(wrap, base_nit, "nested_iteration")
        res = minimize(obj, x, method=method, options=o,
                       callback=_level_callback(l, obj, start, base_work, base_nit, eval_every,
                                                record, callback, progress, t0))
        x = res.x
        spent = obj.counter.work - start
        work_per_level.append(spent)
        work_done += spent
        nit_total += res.nit
        results.append(res)
        if res.status == STATUS_INTERRUPTED:
            interrupted = True
            break
        if res.nit % eval_every:
            record(l, nit_total, work_done, res.fun, x)
        if res.status == 99:
            stopped = True
            break
        if res.status == 3:
            break
    finest = hierarchy[0].objective
    last = results[-1]
    done = len(results) == L and not interrupted
    success = done and last.status in (0, 1)
    if interrupted:
        message = interrupted_message(ck, nit_total, ck.last_path)
    elif stopped:
        message = f"callback stopped the run on level {levels[len(results) - 1]}"
    elif not done or last.status == 3:
        message = f"level {levels[len(results) - 1]} failed: {last.message}"
    else:
        message = "nested iteration completed all levels"
    if not done:  # stopped on a coarser level: carry its iterate up to the finest
        x = hierarchy.prolong_to_finest(x, levels[len(results) - 1])
    fun = last.fun if done else finest.value(x)
    progress.final(f"{message} (f {fun:.6e}, {nit_total} iterations, work {work_done:.4g})")
    out = OptimizeResult(
        x=x, fun=fun,
        nit=nit_total, work=work_done, work_per_level=work_per_level, levels=results,
        history=hist, success=success,
        status=STATUS_INTERRUPTED if interrupted else (0 if success else last.status),
        message=message, time=time.perf_counter() - t0)
    if ck is not None:
        out["checkpoint"] = ck.last_path
    return out
