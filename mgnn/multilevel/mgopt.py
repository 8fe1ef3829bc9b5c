r"""MG/OPT: full-approximation-scheme V-cycles for training (Nash; MTNN in width).

One V-cycle on level l of a :class:`~mgnn.multilevel.Hierarchy`, with the level's
objective f_l (the plain objective on level 0, the tau-corrected model below)::

    x   <- pre-smoothing: `pre` steps of the smoother on f_l
    x_c0 = Pi x                                        (projection of the iterate)
    tau  = grad f_{l+1}(x_c0) - R grad f_l(x)          (tau='full' or 'minibatch';
                                                        0 for tau='none')
    f_{l+1}^tau(y) = f_{l+1}(y) - <tau, y>             (:class:`TauCorrected`)
    x_c  <- V-cycle on level l+1 from x_c0 on f_{l+1}^tau (on the coarsest level:
            `coarse_iters` smoother steps)
    e    = P (x_c - x_c0)                              (FAS: prolong the correction)
    x   <- x + alpha e, alpha = 1, or by backtracking on f_l (line_search=True)
    x   <- post-smoothing: `post` steps on f_l

With tau on, grad f_{l+1}^tau(x_c0) = R grad f_l(x) (first-order coherence), and
since R = P^T for the transfers of :mod:`mgnn.multilevel` the coarse model's
directional derivatives at x_c0 are those of f_l along the prolonged directions.
``tau='minibatch'`` evaluates both gradients on one shared mini-batch (cheaper,
coherent on that batch only); ``tau='full'`` uses all data.

**Smoothers.** ``'sgd'`` and ``'adam'`` (the update rules of
:func:`mgnn.optim.minimize`, with the same mini-batch sequence for the same
``rng``) keep their optimizer state between calls: the fine level's momentum (and
Adam's second moment and step count) persists across cycles, and on the way down
each coarse level starts from the finer level's state moved by the same
operators as gradients: m_c = R m, v_c = (R sqrt(v))^2, same step count (a
one-level ``mgopt`` is exactly single-level Adam/SGD). Any other method of
:func:`mgnn.optim.minimize` (``'lbfgs'``, ``'trust-region'``, a callable) runs
as ``minimize(..., options=dict(options, maxiter=steps))``, a fresh run per call,
as does ``'sgd'``/``'adam'`` with ``carry_state=False``.

**Work** is counted in fine-gradient equivalents by the level objectives' counters
(coarse levels scaled by their flop ratio): smoothing, tau gradients and line
search are charged; the monitoring evaluations of the histories are not.
"""

from __future__ import annotations

import math
import time

import numpy as np
from scipy.optimize import OptimizeResult

from mgnn._validation import check_array, check_choice, check_positive_int, per_level
from mgnn.optim import minimize
from mgnn.optim._common import History, parse_options, wrap_callback
from mgnn.optim.stochastic import AdamUpdate, Batches, SGDUpdate

TAUS = ("none", "full", "minibatch")
STATEFUL = ("sgd", "adam")
_STATE_OPTIONS = {
    "sgd": dict(lr=0.01, momentum=0.0, nesterov=False, batch_size=None, rng=None),
    "adam": dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, batch_size=None, rng=None),
}


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
        self.opts = opts
        bs = opts["batch_size"]
        if bs is not None:
            bs = check_positive_int(bs, "batch_size")
            if bs > n_samples:
                raise ValueError(f"batch_size must be <= n_samples = {n_samples}, got {bs}")
            if bs == n_samples:
                bs = None
        self.batches = Batches(n_samples, bs, True, False, np.random.default_rng(seed))
        self.k = 0

    def new_state(self):
        """A fresh update rule (with empty momentum / moments), or None."""
        if not self.stateful:
            return None
        o = self.opts
        if self.kind == "sgd":
            return SGDUpdate(o["momentum"], o["nesterov"])
        return AdamUpdate(o["beta1"], o["beta2"], o["eps"])

    def coarse_state(self, state, transfer):
        """The state moved to the next coarser level by the gradient restriction."""
        return None if state is None else state.transferred(transfer.restrict)

    def run(self, obj, x, steps, state):
        if steps == 0:
            return x
        if not self.stateful:
            res = minimize(obj, x, method=self.method,
                           options=dict(self.options, maxiter=steps))
            if res.status == 3:
                raise _Diverged(res.message)
            return res.x
        for _ in range(steps):
            batch, _ = self.batches(self.k)
            self.k += 1
            f, g = obj.value_and_grad(x, batch=batch)
            if not (math.isfinite(f) and np.isfinite(g).all()):
                raise _Diverged(f"non-finite loss or gradient ({f}) in a smoothing step")
            x = _finite(x - state(g, self.opts["lr"]), "a smoothing step")
        return x


def _finite(x, where):
    if not np.isfinite(x).all():
        raise _Diverged(f"non-finite values in {where}")
    return x


class _Meter:
    """Work spent since the start, summed over every objective seen (no double counting)."""

    def __init__(self):
        self._seen = {}

    def watch(self, hierarchy):
        for lvl in hierarchy.levels:
            c = lvl.objective.counter
            self._seen.setdefault(id(c), (c, c.work))

    def work(self):
        return sum(c.work - w0 for c, w0 in self._seen.values())


def _uncharged(obj, fn):
    c = obj.counter
    saved = c.snapshot()
    try:
        return fn()
    finally:
        c.nfev, c.njev, c.nhev, c.work = saved


def mgopt(hierarchy, theta0=None, smoother="adam", smoother_options=None, pre=1, post=1,
          coarse_iters=None, tau="full", line_search=False, cycles=10, max_work=None,
          validation=None, callback=None, rematch_every=None, tau_batch_size=None,
          carry_state=True, rng=None):
    """MG/OPT V-cycles on a hierarchy (width, depth, or both); see module docstring.

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
    smoother_options : dict or list of dict
        Options of the smoother; a list gives one dict per level, **fine first**,
        whose last entry repeats.
    pre, post : int or list of int
        Smoothing steps before and after the coarse correction, per level (fine
        first; a list's last entry repeats).
    coarse_iters : int or list of int, optional
        Smoothing steps on the coarsest level (default ``pre + post`` of the level
        above).
    tau : {'none', 'full', 'minibatch'}
        The tau-correction of the coarse model (module docstring).
    line_search : bool
        Backtrack on the correction (alpha = 1, 1/2, ..., 1/32; rejected, alpha = 0,
        if no trial decreases the level objective on all data); else accept it.
    cycles : int
        Maximum number of V-cycles.
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
    sopts = per_level({} if smoother_options is None else smoother_options, L,
                       "smoother_options")
    for o in sopts:
        if not isinstance(o, dict):
            raise TypeError("smoother_options must be a dict or a list of dicts, got "
                            f"{type(o).__name__}")
    if not (callable(smoother) or isinstance(smoother, str)):
        raise TypeError(f"smoother must be a method name or a callable, got {smoother!r}")
    fine_obj = hierarchy[0].objective
    n = fine_obj.n_samples
    smoothers = [_Smoother(smoother, sopts[l], n, rng, l, carry_state) for l in range(L)]
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
    val = None if validation is None else (np.asarray(validation[0]),
                                           np.asarray(validation[1]))
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

    def vcycle(l, xl, obj_l, state, cycle):
        lvl, sm = H[l], smoothers[l]
        row = {}
        if l == L - 1:
            xl = sm.run(obj_l, xl, coarse_iters, state)
        else:
            xl = sm.run(obj_l, xl, pre[l], state)
            T, obj_c = lvl.transfer, H[l + 1].objective
            xc0 = _finite(T.project(xl), f"projection to level {l + 1}")
            model = obj_c
            if tau != "none":
                batch = None if tau == "full" else tau_rng.choice(n, tau_batch_size,
                                                                  replace=False)
                tv = _finite(obj_c.grad(xc0, batch=batch) - T.restrict(
                    obj_l.grad(xl, batch=batch)), f"the tau-correction of level {l + 1}")
                model = TauCorrected(obj_c, tv)
                row["tau_norm"] = model.space.norm(tv)
            xc = vcycle(l + 1, xc0, model, sm.coarse_state(state, T), cycle)
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
            xl = _finite(xl + alpha * e, f"the correction from level {l + 1}")
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
    f = level_fun(0, x)
    hist.append(cycle=0, work=0.0, fun=f, time=0.0, **metrics(0, x))
    lhist.append(cycle=0, level=0, work=0.0, fun=f, **metrics(0, x))
    state0 = smoothers[0].new_state()
    status, message = 0, f"completed {cycles} V-cycles"
    nit = 0
    for cycle in range(1, cycles + 1):
        if rematch_every is not None and cycle > 1 and (cycle - 1) % rematch_every == 0:
            H = H.rematch(x)
            meter.watch(H)
        try:
            x_new = vcycle(0, x, H[0].objective, state0, cycle)
            f_new = level_fun(0, x_new)
            if not math.isfinite(f_new):
                raise _Diverged(f"non-finite fine loss {f_new} after cycle {cycle}")
        except _Diverged as exc:
            status, message = 3, f"Diverged in cycle {cycle}: {exc}; x is the last finite iterate"
            break
        x, f, nit = x_new, f_new, cycle
        m = metrics(0, x)
        w = meter.work()
        hist.append(cycle=cycle, work=w, fun=f, time=time.perf_counter() - t0, **m,
                    **level0_row)
        lhist.append(cycle=cycle, level=0, work=w, fun=f, **m, **level0_row)
        if user_cb is not None:
            try:
                user_cb(OptimizeResult(x=x, fun=f, nit=cycle, work=w))
            except StopIteration:
                status, message = 99, "`callback` raised `StopIteration`."
                break
        if max_work is not None and w >= max_work:
            message = f"work budget {max_work:g} reached after {cycle} V-cycles"
            break
    return OptimizeResult(x=x, fun=f, nit=nit, work=meter.work(), history=hist,
                          level_history=lhist, hierarchy=H, success=status == 0,
                          status=status, message=message, time=time.perf_counter() - t0)


__all__ = ["TauCorrected", "mgopt"]
