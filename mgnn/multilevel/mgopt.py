r"""MG/OPT: full-approximation-scheme cycles for training (Nash; MTNN in width).

One cycle on level l of a :class:`~mgnn.multilevel.Hierarchy`, with the level's
objective f_l (the plain objective on level 0, the tau-corrected model below)::

    x   <- pre-smoothing: `pre` steps of the smoother on f_l
    repeat for each coarse correction of the cycle (V: one; W: two; F: two, the
    first by an F-cycle, the second by a V-cycle on level l+1):
        x_c0 = Pi x                                    (projection of the iterate)
        tau  = grad f_{l+1}(x_c0) - R grad f_l(x)      (0 for tau='none')
        f_{l+1}^tau(y) = f_{l+1}(y) - <tau, y>         (:class:`TauCorrected`)
        x_c  <- cycle on level l+1 from x_c0 on f_{l+1}^tau (on the coarsest
                level: `coarse_iters` smoother steps)
        e    = P (x_c - x_c0)                          (FAS: prolong the correction)
        x   <- x + alpha e, alpha = 1, or by backtracking on f_l (line_search=True)
    x   <- post-smoothing: `post` steps on f_l

With tau on, grad f_{l+1}^tau(x_c0) = R grad f_l(x) (first-order coherence), and
since R = P^T for the transfers of :mod:`mgnn.multilevel` the coarse model's
directional derivatives at x_c0 are those of f_l along the prolonged directions.
Where the two gradients of tau are evaluated: ``tau='full'`` on all data;
``'minibatch'`` on one fresh mini-batch of ``tau_batch_size`` samples;
``'smoothing'`` on the samples the level's pre-smoothing steps of this cycle just
used (MTNN's ``WholeSetTau`` over its cycle subset); each is coherent on its
samples only.

**Smoothers.** ``'sgd'`` and ``'adam'`` (the update rules of
:func:`mgnn.optim.minimize`, with the same mini-batch sequence for the same
``rng``, plus ``weight_decay``: ``g + weight_decay * x`` as PyTorch's optimizers
add it, not part of the objective) keep their optimizer state between calls: the
fine level's momentum (and Adam's second moment and step count) persists across
cycles, and on the way down each coarse level starts from the finer level's
state moved by the same operators as gradients: m_c = R m, v_c = (R sqrt(v))^2,
same step count (a one-level ``mgopt`` is exactly single-level Adam/SGD). With
``state_transfer='fas'`` (SGD; MTNN) the momentum moves like an iterate instead:
m_c = Pi m on the way down, m <- m + P (m_c - Pi m) on the way up. Any other
method of :func:`mgnn.optim.minimize` (``'lbfgs'``, ``'trust-region'``,
``'lsgd'``, a callable) runs as ``minimize(..., options=dict(options,
maxiter=steps))``, a fresh run per call, as does ``'sgd'``/``'adam'`` with
``carry_state=False``.

**Presets.** ``mgopt(H, theta0, **mgopt_preset("mtnn"))`` is MTNN's configuration
(:mod:`mgnn.multilevel.presets`).

**Work** is counted in fine-gradient equivalents by the level objectives' counters
(coarse levels scaled by their flop ratio): smoothing, tau gradients and line
search are charged; the monitoring evaluations of the histories are not.
"""

from __future__ import annotations

import math
import time

import numpy as np
from scipy.optimize import OptimizeResult

from mgnn._validation import (
    check_array,
    check_choice,
    check_positive_int,
    check_scalar,
    check_seed,
    check_validation,
    per_level,
)
from mgnn.optim import minimize
from mgnn.optim._common import STATUS_INTERRUPTED, History, parse_options, wrap_callback
from mgnn.optim.divergence import DivergenceMonitor
from mgnn.optim.stochastic import AdamUpdate, Batches, SGDUpdate
from mgnn.runs.checkpoint import (
    as_checkpoint,
    as_checkpointer,
    interrupted_message,
    rng_state,
    set_rng_state,
)
from mgnn.runs.progress import Progress
from mgnn.runs.state import (
    components_state,
    counter_state,
    load_components_state,
    set_counter_state,
    stateful_components,
)

TAUS = ("auto", "none", "full", "minibatch", "smoothing")
STATEFUL = ("sgd", "adam")
_STATE_OPTIONS = {
    "sgd": dict(lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0, batch_size=None,
                rng=None),
    "adam": dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, batch_size=None,
                 rng=None),
}
#: Cycle kinds and the cycles their coarse corrections run on the next level.
CYCLE_CHILDREN = {"V": ("V",), "W": ("W", "W"), "F": ("F", "V")}
STATE_TRANSFERS = ("restrict", "fas")


class TauCorrected:
    """The objective ``f(x) - <tau, x>`` in the objective protocol (MG/OPT coarse model).

    Any method of :func:`mgnn.optim.minimize` can run on it. Evaluations are
    charged to the wrapped objective's counter; the linear term is free.

    Parameters
    ----------
    objective : Objective
        The coarse objective f.
    tau : ndarray
        The correction (same length as the objective's parameters).

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.optim import FunctionObjective
    >>> f = FunctionObjective(lambda x: 0.5 * x @ x, lambda x: x)
    >>> m = TauCorrected(f, np.array([1.0, 2.0]))
    >>> m.value_and_grad(np.zeros(2))
    (0.0, array([-1., -2.]))
    >>> m
    TauCorrected(FunctionObjective(<lambda>, n_samples=None), |tau| = 2.236)
    """

    def __init__(self, objective, tau):
        self.objective = objective
        self.tau = check_array(tau, "tau", ndim=1)
        self.counter = objective.counter
        self.space = objective.space
        self.n_samples = getattr(objective, "n_samples", None)

    def __getattr__(self, name):  # net, error, accuracy, X, ... of the wrapped objective
        if name == "objective":
            raise AttributeError(name)
        return getattr(self.objective, name)

    def value(self, theta, batch=None):
        return self.objective.value(theta, batch=batch) - self.space.dot(self.tau, theta)

    def value_and_grad(self, theta, batch=None):
        f, g = self.objective.value_and_grad(theta, batch=batch)
        return f - self.space.dot(self.tau, theta), g - self.tau

    def grad(self, theta, batch=None):
        return self.value_and_grad(theta, batch)[1]

    def hessp(self, theta, v, batch=None):
        return self.objective.hessp(theta, v, batch=batch)

    def __repr__(self):
        return f"TauCorrected({self.objective!r}, |tau| = {self.space.norm(self.tau):.4g})"


class _Diverged(Exception):
    pass


class _Smoother:
    """Smoothing steps on one level; SGD/Adam keep a state that moves between levels."""

    def __init__(self, method, options, n_samples, rng, level, carry_state):
        self.method = method
        self.stateful = carry_state and isinstance(method, str) and method.lower() in STATEFUL
        self.options = dict(options)
        self.batch_size = self.options.get("batch_size")
        seed = self.options.get("rng", rng)
        if isinstance(seed, (int, np.integer)) and level > 0:
            seed = (int(seed), level)
        if not self.stateful:
            for key in ("maxiter", "epochs"):
                if key in self.options:
                    raise ValueError(f"smoother_options may not set {key!r}: pre, post and "
                                     "coarse_iters do")
            if isinstance(method, str) and method.lower() in STATEFUL and \
                    self.batch_size is not None:
                # one generator per level, advancing over the calls (not one seed per call)
                self.options["rng"] = np.random.default_rng(seed)
            return
        self.kind = method.lower()
        opts, _ = parse_options(self.kind, self.options, _STATE_OPTIONS[self.kind])
        opts["lr"] = check_scalar(opts["lr"], "smoother_options['lr']", low=0.0, low_open=True)
        opts["weight_decay"] = check_scalar(opts["weight_decay"],
                                            "smoother_options['weight_decay']", low=0.0)
        self.opts = opts
        bs = opts["batch_size"]
        if bs == "auto":
            bs = min(n_samples, max(32, n_samples // 16))
        if bs is not None:
            bs = check_positive_int(bs, "batch_size")
            if bs > n_samples:
                raise ValueError(f"batch_size must be <= n_samples = {n_samples}, got {bs}")
            if bs == n_samples:
                bs = None
        self.batch_size = bs
        self.batches = Batches(n_samples, bs, True, False, np.random.default_rng(seed))
        self.k = 0
        self.last_batches = []  # the batches of the last run() (tau='smoothing')

    def state_dict(self):
        """Batch generator and position (stateful), or the generator a fresh-run smoother
        passes to its runs."""
        if self.stateful:
            return {"batches": self.batches.state_dict(), "k": self.k}
        gen = self.options.get("rng")
        return {"rng": rng_state(gen) if isinstance(gen, np.random.Generator) else None}

    def load_state_dict(self, d):
        if self.stateful:
            self.batches.load_state_dict(d["batches"])
            self.k = int(d["k"])
        elif d["rng"] is not None:
            set_rng_state(self.options["rng"], d["rng"])

    def new_state(self):
        """A fresh update rule (with empty momentum / moments), or None."""
        if not self.stateful:
            return None
        o = self.opts
        if self.kind == "sgd":
            return SGDUpdate(o["momentum"], o["nesterov"])
        return AdamUpdate(o["beta1"], o["beta2"], o["eps"])

    def coarse_state(self, state, transfer, mode="restrict"):
        """The state moved to the next coarser level: by the gradient restriction
        (``'restrict'``), or the momentum projected like an iterate (``'fas'``, SGD)."""
        if state is None:
            return None
        if mode == "fas":
            return state.transferred(transfer.project)
        return state.transferred(transfer.restrict)

    def run(self, obj, x, steps, state):
        if steps == 0:
            return x
        if not self.stateful:
            res = minimize(obj, x, method=self.method,
                           options=dict(self.options, maxiter=steps))
            if res.status == 3:
                raise _Diverged(res.message)
            return res.x
        wd = self.opts["weight_decay"]
        self.last_batches = []
        for _ in range(steps):
            batch, _ = self.batches(self.k)
            self.k += 1
            self.last_batches.append(batch)
            f, g = obj.value_and_grad(x, batch=batch)
            if not (math.isfinite(f) and np.isfinite(g).all()):
                raise _Diverged(f"non-finite loss or gradient ({f}) in a smoothing step")
            if wd:
                g = g + wd * x
            x = _finite(x - state(g, self.opts["lr"]), "a smoothing step")
        return x

    def smoothing_batch(self):
        """The samples of the last :meth:`run` (None: all data)."""
        if not self.last_batches or any(b is None for b in self.last_batches):
            return None
        return np.concatenate(self.last_batches)


def _finite(x, where):
    if not np.isfinite(x).all():
        raise _Diverged(f"non-finite values in {where}")
    return x


class _Meter:
    """Work spent since the start, summed over the level objectives (no double counting);
    the work of objectives dropped by a re-matching is kept in ``retired``."""

    def __init__(self):
        self._seen = {}
        self.retired = 0.0

    def watch(self, hierarchy):
        current = {id(lvl.objective.counter): lvl.objective.counter for lvl in hierarchy.levels}
        for key in list(self._seen):
            if key not in current:
                c, w0 = self._seen.pop(key)
                self.retired += c.work - w0
        for key, c in current.items():
            self._seen.setdefault(key, (c, c.work))

    def work(self):
        return self.retired + sum(c.work - w0 for c, w0 in self._seen.values())

    def state_dict(self):
        return {"retired": self.retired,
                "counters": [[counter_state(c), w0] for c, w0 in self._seen.values()]}

    def load_state_dict(self, d):
        if len(d["counters"]) != len(self._seen):
            raise ValueError("resume: the checkpoint's hierarchy has another number of level "
                             "objectives")
        self.retired = d["retired"]
        for key, (st, w0) in zip(list(self._seen), d["counters"], strict=True):
            c = self._seen[key][0]
            set_counter_state(c, st)
            self._seen[key] = (c, w0)


def _uncharged(obj, fn):
    c = obj.counter
    saved = c.snapshot()
    try:
        return fn()
    finally:
        c.nfev, c.njev, c.nhev, c.work = saved


def mgopt(hierarchy, theta0=None, smoother="adam", smoother_options=None, pre=10, post=10,
          coarse_iters=None, tau="auto", line_search=False, cycles=20, max_work=None,
          validation=None, callback=None, rematch_every=None, tau_batch_size=None,
          carry_state=True, rng=None, *, cycle="V", state_transfer="restrict",
          divergence_factor=10.0, divergence_patience=3, disp=False, disp_every=1,
          checkpoint=None, resume=None):
    """MG/OPT cycles on a hierarchy (width, depth, or both); see module docstring.

    Parameters
    ----------
    hierarchy : Hierarchy
        Levels with objectives, fine first (``width_hierarchy(objective, ...)``,
        ``depth_hierarchy(objective, ...)``).
    theta0 : ndarray, optional
        Fine initial parameters (default: ``net.init(0)``).
    smoother : str or callable
        ``'sgd'``, ``'adam'`` (state carried between calls and levels), or any
        method of :func:`mgnn.optim.minimize`.
    smoother_options : dict or list of dict, optional
        Options of the smoother; a list gives one dict per level, **fine first**,
        whose last entry repeats. Default for ``'sgd'``/``'adam'``:
        ``{'batch_size': 'auto'}`` (the method's own learning rate, mini-batches of
        ``max(32, n // 16)`` samples; ``'auto'`` is accepted by these two only).
    pre, post : int or list of int, default 10, 10
        Smoothing steps before and after the coarse correction, per level (fine
        first; a list's last entry repeats).
    coarse_iters : int, optional
        Smoothing steps on the coarsest level (default ``pre + post`` of the level
        above).
    tau : {'auto', 'none', 'full', 'minibatch', 'smoothing'}, default 'auto'
        The tau-correction of the coarse model (module docstring); ``'auto'``:
        ``'minibatch'`` (on the smoother's batch size) when the smoother carries its
        state over mini-batches, else ``'full'``.
    line_search : bool
        Backtrack on the correction (alpha = 1, 1/2, ..., 1/32; rejected, alpha = 0,
        if no trial decreases the level objective on all data); else accept it. The
        coarse model ``f_c(y) - <tau, y>`` is first-order coherent at ``Pi x`` only:
        where the coarse loss saturates (tanh) it is bounded below by the Tikhonov
        term alone, and an unsafeguarded correction from many coarse steps can raise
        the fine loss by orders of magnitude.
    cycles : int, default 20
        Maximum number of cycles.
    max_work : float, optional
        Stop after the cycle in which the work reaches ``max_work``.
    validation : tuple (X_val, Y_val), optional
        Per cycle and per level: accuracy (classification) or mean and worst-case
        absolute error (regression) of each level's network at its last iterate.
    callback : callable, optional
        ``callback(intermediate_result)`` after every cycle (``x, fun, nit, work``);
        ``StopIteration`` ends the run.
    rematch_every : int, optional
        Rebuild the hierarchy's pairing from the current iterate every this many
        cycles (needs ``hierarchy.rematch``, e.g. from :func:`width_hierarchy`).
    tau_batch_size : int, optional
        Batch of ``tau='minibatch'`` (default: the smoother's ``batch_size``).
    carry_state : bool
        Carry the SGD/Adam state between calls and levels (else a fresh run per call).
    rng : int or Generator, optional
        Seed of the smoothers' batches (unless their options give ``rng``) and of
        the tau batches.
    cycle : {'V', 'W', 'F'}
        The coarse corrections of a visit of a non-coarsest level: one V-cycle,
        two W-cycles, or an F-cycle then a V-cycle on the next level (each a
        correction of its own: projection, tau, cycle, prolongation).
    state_transfer : {'restrict', 'fas'}
        How the SGD/Adam state moves between levels: ``'restrict'`` (the coarse
        level starts from ``R m``, Adam's ``(R sqrt(v))^2``; the finer state is kept)
        or ``'fas'`` (SGD only, MTNN: the momentum is projected like an iterate,
        ``m_c = Pi m``, and its coarse change comes back, ``m <- m + P (m_c -
        Pi m)``).
    divergence_factor, divergence_patience : float or None, int, default 10.0, 3
        Stop (status 3, ``x`` the iterate of the lowest fine loss) when the fine
        loss after a cycle stays more than ``divergence_factor * max(|f_0|,
        |f_best|)`` above the best for ``divergence_patience`` consecutive cycles
        (:class:`~mgnn.optim.divergence.DivergenceMonitor`; None turns it off).
    disp, disp_every : bool, int
        A progress line every ``disp_every`` cycles (:mod:`mgnn.runs.progress`).
    checkpoint : Checkpointer or str, optional
        Checkpoints at cycle boundaries (:class:`~mgnn.runs.Checkpointer`); on
        SIGINT/SIGTERM the run stops after the current cycle, writes one and
        returns with status 4.
    resume : str or Checkpoint, optional
        Continue the run a checkpoint holds, bit for bit.

    Returns
    -------
    OptimizeResult
        ``x, fun`` (fine loss on all data), ``nit`` (cycles), ``work``,
        ``history`` (one row per cycle, cycle 0 = the initial guess: ``cycle, work,
        fun, time`` and the validation metrics of level 0), ``level_history`` (one
        row per level and cycle: ``cycle, level, work, fun`` (the level's plain
        objective), the validation metrics, ``alpha`` (step on the correction from
        the level below), ``tau_norm``), ``hierarchy`` (the last one, after
        re-matching), ``success``, ``status`` (0 done, 3 diverged: ``x`` is the
        last finite iterate, 99 callback), ``message``, ``time``.

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.data import smooth_regression
    >>> from mgnn.nets import ResNet
    >>> from mgnn.objective import Objective
    >>> from mgnn.multilevel import width_hierarchy
    >>> d = smooth_regression(200, 100)
    >>> net = ResNet(2, 16, 4, 1, activation="relu", task="regression")
    >>> obj = Objective(net, d.X_train, d.Y_train)
    >>> theta0 = net.init(0)
    >>> H = width_hierarchy(obj, theta0, 3)
    >>> res = mgopt(H, theta0, "adam", {"lr": 0.01, "batch_size": 50}, pre=5, post=5,
    ...             cycles=20, validation=(d.X_val, d.Y_val), rng=0)
    >>> res.nit, bool(res.fun < 0.5 * res.history["fun"][0])
    (20, True)
    >>> sorted(set(res.level_history["level"].tolist()))
    [0.0, 1.0, 2.0]
    """
    L = hierarchy.n_levels
    for l, lvl in enumerate(hierarchy.levels):
        if lvl.objective is None:
            raise ValueError(f"level {l} of the hierarchy has no objective")
    check_choice(tau, "tau", TAUS)
    check_choice(cycle, "cycle", tuple(CYCLE_CHILDREN))
    check_choice(state_transfer, "state_transfer", STATE_TRANSFERS)
    cycles = check_positive_int(cycles, "cycles")
    if not isinstance(line_search, bool):
        raise TypeError(f"line_search must be bool, got {line_search!r}")
    pre = [check_positive_int(p, "pre", minimum=0) for p in per_level(pre, L, "pre")]
    post = [check_positive_int(p, "post", minimum=0) for p in per_level(post, L, "post")]
    if coarse_iters is None:
        coarse_iters = pre[L - 2] + post[L - 2] if L > 1 else pre[0] + post[0]
    coarse_iters = check_positive_int(coarse_iters, "coarse_iters", minimum=0)
    if max_work is not None and not (isinstance(max_work, (int, float)) and max_work > 0):
        raise ValueError(f"max_work must be a positive number, got {max_work!r}")
    if rematch_every is not None:
        rematch_every = check_positive_int(rematch_every, "rematch_every")
        if not hasattr(hierarchy, "rematch"):
            raise ValueError("rematch_every needs a hierarchy with a rematch() method "
                             "(from width_hierarchy)")
    if smoother_options is None:  # mini-batches for the stateful smoothers by default
        stateful = carry_state and isinstance(smoother, str) and smoother.lower() in STATEFUL
        smoother_options = {"batch_size": "auto"} if stateful else {}
    sopts = per_level(smoother_options, L, "smoother_options")
    for o in sopts:
        if not isinstance(o, dict):
            raise TypeError("smoother_options must be a dict or a list of dicts, got "
                            f"{type(o).__name__}")
    rng = check_seed(rng, "rng")
    if not (callable(smoother) or isinstance(smoother, str)):
        raise TypeError(f"smoother must be a method name or a callable, got {smoother!r}")
    fine_obj = hierarchy[0].objective
    n = fine_obj.n_samples
    smoothers = [_Smoother(smoother, sopts[l], n, rng, l, carry_state) for l in range(L)]
    if state_transfer == "fas" and not (smoothers[0].stateful and smoothers[0].kind == "sgd"):
        raise ValueError("state_transfer='fas' moves SGD momentum like an iterate: it needs "
                         "smoother='sgd' with carry_state=True")
    if tau == "smoothing":
        if L > 1 and not all(sm.stateful and sm.batch_size not in (None, n)
                             for sm in smoothers[:-1]):
            raise ValueError("tau='smoothing' computes tau on the pre-smoothing mini-batches: "
                             "it needs smoother 'sgd' or 'adam' with carry_state=True and a "
                             "batch_size below n_samples on every level above the coarsest")
        if L > 1 and min(pre[:L - 1]) < 1:
            raise ValueError("tau='smoothing' needs pre >= 1 on every level above the "
                             "coarsest (tau is computed on the pre-smoothing batches)")
    if tau == "auto":
        tau = "minibatch" if smoothers[0].stateful and smoothers[0].batch_size is not None \
            else "full"
    if tau == "minibatch":
        tau_batch_size = tau_batch_size if tau_batch_size is not None else \
            smoothers[0].batch_size
        if tau_batch_size is None:
            raise ValueError("tau='minibatch' needs tau_batch_size or a smoother batch_size")
        tau_batch_size = min(check_positive_int(tau_batch_size, "tau_batch_size"), n)
    elif tau_batch_size is not None:
        raise ValueError("tau_batch_size has no effect unless tau='minibatch'")
    tau_rng = np.random.default_rng(None if rng is None else (
        rng if isinstance(rng, np.random.Generator) else (int(rng), 10**6)))
    user_cb = wrap_callback(callback)
    x = hierarchy[0].net.init(0) if theta0 is None else hierarchy[0].net.check_theta(
        theta0, "theta0").copy()
    val = check_validation(validation, hierarchy[0].net,
                           xp=getattr(hierarchy[0].objective, "xp", np))
    monitor = DivergenceMonitor(divergence_factor, divergence_patience, unit="cycle")
    progress = Progress("mgopt", disp, disp_every)
    ck = as_checkpointer(checkpoint)
    if ck is not None:
        ck.activate()
    try:
        return _mgopt(hierarchy, x, smoothers, pre, post, coarse_iters, tau, line_search,
                      cycles, max_work, val, user_cb, rematch_every, tau_batch_size, tau_rng,
                      monitor, progress, ck, resume, cycle, state_transfer)
    finally:
        if ck is not None:
            ck.release()


def _mgopt(hierarchy, x, smoothers, pre, post, coarse_iters, tau, line_search, cycles,
           max_work, val, user_cb, rematch_every, tau_batch_size, tau_rng, monitor, progress,
           ck, resume, cycle_kind="V", state_transfer="restrict"):
    L = hierarchy.n_levels
    n = hierarchy[0].objective.n_samples
    H = hierarchy
    meter = _Meter()
    meter.watch(H)
    hist, lhist = History(), History()
    t0 = time.perf_counter()

    def metrics(level, xl):
        if val is None:
            return {}
        obj = H[level].objective
        if obj.net.task == "classification":
            return {"val_acc": obj.accuracy(xl, *val)}
        mean, worst = obj.error(xl, *val)
        return {"val_mean_error": mean, "val_max_error": worst}

    def level_fun(level, xl):
        obj = H[level].objective
        return _uncharged(obj, lambda: obj.value(xl))

    def correction(l, xl, obj_l, state, cycle, kind, row):
        """One coarse correction of level ``l`` by a ``kind``-cycle on level ``l + 1``."""
        lvl, sm = H[l], smoothers[l]
        T, obj_c = lvl.transfer, H[l + 1].objective
        xc0 = _finite(T.project(xl), f"projection to level {l + 1}")
        model = obj_c
        if tau != "none":
            if tau == "full":
                batch = None
            elif tau == "smoothing":
                batch = sm.smoothing_batch()
            else:
                batch = tau_rng.choice(n, tau_batch_size, replace=False)
            tv = _finite(obj_c.grad(xc0, batch=batch) - T.restrict(
                obj_l.grad(xl, batch=batch)), f"the tau-correction of level {l + 1}")
            model = TauCorrected(obj_c, tv)
            row["tau_norm"] = model.space.norm(tv)
        cstate = sm.coarse_state(state, T, state_transfer)
        fas = cstate is not None and state_transfer == "fas"
        m0 = cstate.v if fas else None  # SGDUpdate replaces, never mutates, its buffer
        xc = vcycle(l + 1, xc0, model, cstate, cycle, kind)
        e = T.prolong(xc - xc0)
        alpha = 1.0
        if line_search:
            f0 = obj_l.value(xl)
            alpha = 0.0
            for a in 0.5 ** np.arange(6):
                trial = xl + a * e
                if np.isfinite(trial).all() and obj_l.value(trial) < f0:
                    alpha = float(a)
                    break
        row["alpha"] = alpha
        if fas and cstate.v is not None:  # MTNN: the coarse change of the momentum comes back
            dm = T.prolong(cstate.v if m0 is None else cstate.v - m0)
            state.v = dm if state.v is None else state.v + dm
        return _finite(xl + alpha * e, f"the correction from level {l + 1}")

    def vcycle(l, xl, obj_l, state, cycle, kind="V"):
        sm = smoothers[l]
        row = {}
        if l == L - 1:
            xl = sm.run(obj_l, xl, coarse_iters, state)
        else:
            xl = sm.run(obj_l, xl, pre[l], state)
            for child in CYCLE_CHILDREN[kind]:
                xl = correction(l, xl, obj_l, state, cycle, child, row)
            xl = sm.run(obj_l, xl, post[l], state)
        _finite(xl, f"the cycle on level {l}")
        if l > 0:
            lhist.append(cycle=cycle, level=l, work=meter.work(), fun=level_fun(l, xl),
                         **metrics(l, xl), **row)
        else:
            level0_row.clear()
            level0_row.update(row)
        return xl

    level0_row = {}
    state0 = smoothers[0].new_state()
    status, message = 0, f"completed {cycles} {cycle_kind}-cycles"
    nit = 0
    rematch_x = None
    first = 1
    saved = as_checkpoint(resume, None if ck is None else ck.root.comm,
                          xp=getattr(hierarchy[0].objective, "xp", np))
    if saved is None:
        f = level_fun(0, x)
        hist.append(cycle=0, work=0.0, fun=f, time=0.0, **metrics(0, x))
        lhist.append(cycle=0, level=0, work=0.0, fun=f, **metrics(0, x))
        monitor.update(f, x, 0)
    else:
        st = saved.state
        if st.get("solver") != "mgopt":
            raise ValueError(f"resume: the checkpoint was written by {st.get('solver')!r}, "
                             "not by mgopt")
        if st["rematch_x"] is not None:
            rematch_x = st["rematch_x"]
            H = H.rematch(rematch_x)
            meter.watch(H)
        x, f, nit = st["x"], st["f"], st["nit"]
        if x.shape != (H[0].net.n_params,) or x.dtype != H[0].net.dtype:
            raise ValueError(f"resume: the checkpoint's iterate has shape {x.shape}, the fine "
                             f"network {H[0].net.n_params} parameters")
        hist.load_state_dict(st["history"])
        lhist.load_state_dict(st["level_history"])
        meter.load_state_dict(st["meter"])
        set_rng_state(tau_rng, st["tau_rng"])
        for sm, d in zip(smoothers, st["smoothers"], strict=True):
            sm.load_state_dict(d)
        if (state0 is None) != (st["state0"] is None):
            raise ValueError("resume: the checkpoint was written with another smoother or "
                             "carry_state")
        if state0 is not None:
            state0.load_state_dict(st["state0"])
        monitor.load_state_dict(st["monitor"])
        load_components_state(stateful_components(*(lv.objective for lv in H.levels)),
                              st["components"])
        t0 = time.perf_counter() - st["elapsed"]
        first = nit + 1

    def state():
        return {"solver": "mgopt", "x": x, "f": f, "nit": nit, "rematch_x": rematch_x,
                "history": hist.state_dict(), "level_history": lhist.state_dict(),
                "meter": meter.state_dict(), "tau_rng": rng_state(tau_rng),
                "smoothers": [sm.state_dict() for sm in smoothers],
                "state0": None if state0 is None else state0.state_dict(),
                "monitor": monitor.state_dict(),
                "components": components_state(stateful_components(
                    *(lv.objective for lv in H.levels))),
                "elapsed": time.perf_counter() - t0}

    best = None
    for cycle in range(first, cycles + 1):
        if rematch_every is not None and cycle > 1 and (cycle - 1) % rematch_every == 0:
            rematch_x = x
            H = H.rematch(x)
            meter.watch(H)
        try:
            x_new = vcycle(0, x, H[0].objective, state0, cycle, cycle_kind)
            f_new = level_fun(0, x_new)
            if not math.isfinite(f_new):
                raise _Diverged(f"non-finite fine loss {f_new} after cycle {cycle}")
        except _Diverged as exc:
            status, message = 3, f"Diverged in cycle {cycle}: {exc}; x is the last finite iterate"
            break
        x, f, nit = x_new, f_new, cycle
        m = metrics(0, x)
        w = meter.work()
        row = dict(cycle=cycle, work=w, fun=f, time=time.perf_counter() - t0, **m,
                   **level0_row)
        hist.append(**row)
        lhist.append(cycle=cycle, level=0, work=w, fun=f, **m, **level0_row)
        progress.row(row, key="cycle")
        if monitor.update(f, x, cycle):
            best = (monitor.best_x, monitor.best)
            status, message = 3, (f"Diverged: {monitor.message()}. x is the iterate of the "
                                  f"lowest fine loss (cycle {monitor.best_nit})")
            break
        if user_cb is not None:
            try:
                user_cb(OptimizeResult(x=x, fun=f, nit=cycle, work=w))
            except StopIteration:
                status, message = 99, "`callback` raised `StopIteration`."
                break
        if max_work is not None and w >= max_work:
            message = f"work budget {max_work:g} reached after {cycle} {cycle_kind}-cycles"
            break
        if ck is not None:
            due, stop = ck.poll(cycle)
            if due or stop:
                ck.save(state(), cycle, "mgopt")
            if stop:
                status = STATUS_INTERRUPTED
                message = interrupted_message(ck, cycle, ck.last_path)
                break
    if best is not None:
        x, f = best
    progress.final(f"{message} (f {f:.6e}, {nit} cycles, work {meter.work():.4g})")
    res = OptimizeResult(x=x, fun=f, nit=nit, work=meter.work(), history=hist,
                         level_history=lhist, hierarchy=H, success=status == 0,
                         status=status, message=message, time=time.perf_counter() - t0)
    if ck is not None:
        res["checkpoint"] = ck.last_path
    return res


__all__ = ["TauCorrected", "mgopt"]
