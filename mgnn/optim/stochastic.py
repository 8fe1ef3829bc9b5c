"""Stochastic first-order methods: SGD (momentum, Nesterov) and Adam.

Both draw mini-batches from the objective's data (``objective.n_samples``):
each epoch is a fresh permutation (seeded by ``rng``) cut into batches of
``batch_size``; ``batch_size=None`` uses all data (deterministic gradient
descent). The loss recorded in the history is the mini-batch loss seen by the
iteration (the full loss when ``batch_size`` is ``None``); at the end the loss
and gradient on all data are evaluated once at the final iterate for
``res.fun``/``res.jac`` (and charged, so ``res.work`` includes them).
"""

from __future__ import annotations

import math

import numpy as np

from mgnn._validation import check_positive_int, check_scalar
from mgnn.runs.checkpoint import rng_state, set_rng_state

from ._common import (
    RUN_OPTIONS,
    STATUS_CONVERGED,
    STATUS_DIVERGED,
    Diverged,
    Run,
    check_maxiter,
    check_tol,
    parse_options,
    prepare_theta0,
    reject_unused,
)
from .divergence import DIVERGENCE_DEFAULTS, DivergenceMonitor
from .schedules import make_schedule

__all__ = ["minimize_sgd", "minimize_adam", "SGD_DEFAULTS", "ADAM_DEFAULTS", "SGDUpdate",
           "AdamUpdate", "Batches"]

_COMMON = {
    "lr": None,
    "schedule": "constant",
    "decay_rate": None,
    "decay_steps": None,
    "lr_min": None,
    "batch_size": None,
    "epochs": None,
    "maxiter": None,
    "shuffle": True,
    "drop_last": False,
    "rng": None,
    "gtol": 1e-5,
    **DIVERGENCE_DEFAULTS,
    **RUN_OPTIONS,
}

#: Options of ``method='sgd'`` and their defaults (``lr=0.01``; ``maxiter`` is
#: 1000 when neither it nor ``epochs`` is given).
SGD_DEFAULTS = dict(_COMMON, lr=0.01, momentum=0.0, nesterov=False)
#: Options of ``method='adam'`` and their defaults.
ADAM_DEFAULTS = dict(_COMMON, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)


class Batches:
    """Mini-batch index generator: a permutation per epoch, cut in pieces."""

    def __init__(self, n, batch_size, shuffle, drop_last, rng):
        self.n, self.bs = n, batch_size
        self.shuffle, self.rng = shuffle, rng
        if batch_size is None:
            self.per_epoch = 1
        elif drop_last:
            self.per_epoch = n // batch_size
        else:
            self.per_epoch = -(-n // batch_size)
        self._perm = None

    def __call__(self, k):
        """Batch of iteration ``k`` (None for all data) and its epoch."""
        epoch, j = divmod(k, self.per_epoch)
        if self.bs is None:
            return None, epoch
        if j == 0:
            self._perm = self.rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        return self._perm[j * self.bs:(j + 1) * self.bs], epoch

    def state_dict(self):
        """The generator's state and the current epoch's permutation."""
        return {"rng": None if self.rng is None else rng_state(self.rng), "perm": self._perm}

    def load_state_dict(self, d):
        if d["rng"] is not None:
            set_rng_state(self.rng, d["rng"])
        self._perm = d["perm"]


def _setup(run, opts, given, name):
    """Validate the options shared by SGD and Adam; return (batches, total, schedule)."""
    n = getattr(run.obj, "n_samples", None)
    bs = opts["batch_size"]
    if bs is not None:
        bs = check_positive_int(bs, "batch_size")
        if n is None:
            raise ValueError(
                "batch_size needs an objective with data (n_samples); this one has none"
            )
        if bs > n:
            raise ValueError(f"batch_size must be <= n_samples = {n}, got {bs}")
    if bs is None:
        reject_unused(given, ("shuffle", "drop_last", "rng"),
                      "without mini-batches (batch_size=None)")
    elif bs < n:
        reject_unused(given, ("gtol",),
                      "with mini-batches (gtol is checked on full-batch gradients)")
    if not isinstance(opts["shuffle"], bool) or not isinstance(opts["drop_last"], bool):
        raise TypeError("options 'shuffle' and 'drop_last' must be bool")
    rng = opts["rng"]
    if rng is not None and not isinstance(rng, (int, np.integer, np.random.Generator)):
        raise TypeError(f"rng must be None, an int seed or a numpy Generator, got {rng!r}")
    rng = np.random.default_rng(rng)
    if bs == n:
        bs = None  # one batch of all data: the order of the samples does not matter
    full = bs is None
    batches = Batches(n, bs, opts["shuffle"], opts["drop_last"], rng)
    epochs, maxiter = opts["epochs"], opts["maxiter"]
    if epochs is not None:
        epochs = check_positive_int(epochs, "epochs")
    if maxiter is not None:
        maxiter = check_maxiter(maxiter)
    if epochs is None and maxiter is None:
        maxiter = 1000
    total = min(
        maxiter if maxiter is not None else math.inf,
        epochs * batches.per_epoch if epochs is not None else math.inf,
    )
    check_tol(opts["gtol"], "gtol")
    sched = make_schedule(
        opts["lr"], opts["schedule"], opts["decay_rate"], opts["decay_steps"], opts["lr_min"],
        steps_per_epoch=batches.per_epoch, total=int(total),
    )
    return batches, int(total), sched, full


def _run_stochastic(name, objective, theta0, options, callback, defaults, make_update):
    opts, given = parse_options(name, options, defaults)
    run = Run(objective, callback, name, opts)
    try:
        return _stochastic_loop(run, name, opts, given, theta0, make_update)
    finally:
        run.close()


def _stochastic_loop(run, name, opts, given, theta0, make_update):
    x = prepare_theta0(theta0)
    batches, total, sched, full = _setup(run, opts, given, name)
    update = make_update(opts, x)
    monitor = DivergenceMonitor(opts["divergence_factor"], opts["divergence_patience"])
    gtol = opts["gtol"]
    space = run.space
    saved = run.restore(x)
    if saved is not None:
        x = saved["x"]
        update.load_state_dict(saved["update"])
        batches.load_state_dict(saved["batches"])
        monitor.load_state_dict(saved["monitor"])
    x_prev = x  # last iterate whose evaluation was finite
    f = g = None
    converged = False

    def state():
        return {"x": x, "update": update.state_dict(), "batches": batches.state_dict(),
                "monitor": monitor.state_dict()}

    try:
        for k in range(run.nit, total):
            batch, epoch = batches(k)
            f, g = run.value_and_grad(x, batch, what="the mini-batch loss" if batch is not None
                                      else "the loss")
            x_prev = x
            gnorm = space.norm(g)
            if full and gnorm <= gtol:
                converged = True
                break
            lr = sched(k)
            step = update(g, lr)
            x = x - step
            run.nit = k + 1
            run.record(fun=f, grad_norm=gnorm, step_norm=space.norm(step), lr=lr, epoch=epoch)
            if monitor.update(f, x_prev, run.nit):
                return run.result(monitor.best_x, monitor.best, None, STATUS_DIVERGED,
                                  f"Diverged: {monitor.message()}. x is the iterate of the "
                                  "lowest loss; fun its (mini-batch) loss.", success=False)
            if run.notify(x, f, g, lr=lr, epoch=epoch):
                # the loss at the new x is unknown; report the last one seen
                return run.callback_result(x, f, None)
            if run.boundary(state):
                return run.interrupted_result(x, f, None)
    except Diverged as exc:
        return run.diverged_result(x_prev, f, g, exc)
    if converged:
        msg = f"Optimization terminated successfully: gradient norm {gnorm:.3e} <= gtol."
        return run.result(x, f, g, STATUS_CONVERGED, msg)
    try:
        f_end, g_end = run.value_and_grad(x, None, what="the final loss on all data")
    except Diverged as exc:
        return run.diverged_result(x_prev, f, g, exc)
    epochs_done = total / batches.per_epoch
    msg = f"Completed {total} iterations ({epochs_done:g} epochs)."
    return run.result(x, f_end, g_end, STATUS_CONVERGED, msg, success=True)


class SGDUpdate:
    """The SGD step with heavy-ball or Nesterov momentum, and its momentum buffer.

    ``v <- momentum * v + g`` (``v = g`` on the first call); the step is
    ``lr * v``, or ``lr * (g + momentum * v)`` with Nesterov (PyTorch's convention),
    or ``lr * g`` without momentum. Multilevel solvers move the buffer between
    levels with :meth:`transferred`.

    Examples
    --------
    >>> import numpy as np
    >>> u = SGDUpdate(momentum=0.5)
    >>> u(np.ones(2), 0.1), u(np.ones(2), 0.1)
    (array([0.1, 0.1]), array([0.15, 0.15]))
    """

    def __init__(self, momentum=0.0, nesterov=False):
        self.momentum = check_scalar(momentum, "momentum", low=0.0, high=1.0, high_open=True)
        if not isinstance(nesterov, bool):
            raise TypeError(f"nesterov must be bool, got {nesterov!r}")
        if nesterov and self.momentum == 0.0:
            raise ValueError("nesterov=True needs momentum > 0")
        self.nesterov = nesterov
        self.v = None

    def __call__(self, g, lr):
        mu = self.momentum
        if mu == 0.0:
            return lr * g
        self.v = g.copy() if self.v is None else mu * self.v + g
        return lr * (g + mu * self.v) if self.nesterov else lr * self.v

    def state_dict(self):
        return {"v": self.v}

    def load_state_dict(self, d):
        self.v = d["v"]

    def transferred(self, restrict):
        """A copy whose buffer is mapped by the linear ``restrict`` (e.g. to a coarse level)."""
        new = SGDUpdate(self.momentum, self.nesterov)
        new.v = None if self.v is None else restrict(self.v)
        return new


class AdamUpdate:
    """The Adam step (Kingma & Ba 2015) with bias correction, and its moments.

    ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g^2``; the step is
    ``lr * mhat / (sqrt(vhat) + eps)`` with ``mhat = m / (1 - b1^t)``,
    ``vhat = v / (1 - b2^t)`` after ``t`` calls.

    Examples
    --------
    >>> import numpy as np
    >>> u = AdamUpdate()
    >>> u(np.array([2.0, -3.0]), 0.1)  # the first step has size lr in every entry
    array([ 0.1, -0.1])
    """

    def __init__(self, beta1=0.9, beta2=0.999, eps=1e-8):
        self.beta1 = check_scalar(beta1, "beta1", low=0.0, high=1.0, high_open=True)
        self.beta2 = check_scalar(beta2, "beta2", low=0.0, high=1.0, high_open=True)
        self.eps = check_scalar(eps, "eps", low=0.0, low_open=True)
        self.m = self.v = None
        self.t = 0

    def __call__(self, g, lr):
        b1, b2 = self.beta1, self.beta2
        if self.m is None:
            self.m = (1.0 - b1) * g
            self.v = (1.0 - b2) * (g * g)
        else:
            self.m = b1 * self.m + (1.0 - b1) * g
            self.v = b2 * self.v + (1.0 - b2) * (g * g)
        self.t += 1
        mhat = self.m / (1.0 - b1**self.t)
        vhat = self.v / (1.0 - b2**self.t)
        return lr * mhat / (vhat**0.5 + self.eps)

    def state_dict(self):
        return {"m": self.m, "v": self.v, "t": self.t}

    def load_state_dict(self, d):
        self.m, self.v, self.t = d["m"], d["v"], int(d["t"])

    def transferred(self, restrict):
        """A copy with moments mapped by ``restrict``: ``m -> R m`` and
        ``v -> (R sqrt(v))^2`` (so that v stays a square of a gradient scale); ``t`` is kept."""
        new = AdamUpdate(self.beta1, self.beta2, self.eps)
        if self.m is not None:
            new.m = restrict(self.m)
            new.v = restrict(np.sqrt(self.v)) ** 2
        new.t = self.t
        return new


def _sgd_update(opts, x):
    return SGDUpdate(opts["momentum"], opts["nesterov"])


def _adam_update(opts, x):
    return AdamUpdate(opts["beta1"], opts["beta2"], opts["eps"])


def minimize_sgd(objective, theta0, options=None, callback=None):
    """Stochastic gradient descent with momentum and Nesterov acceleration.

    ``v <- momentum * v + g``; ``theta <- theta - lr_k * v`` (or
    ``lr_k * (g + momentum * v)`` with ``nesterov=True``), the PyTorch
    convention. Called through ``minimize(..., method='sgd')``.

    Options
    -------
    lr : float, default 0.01
        Base learning rate (> 0).
    momentum : float, default 0.0
        Heavy-ball momentum in [0, 1).
    nesterov : bool, default False
        Nesterov momentum (needs ``momentum > 0``).
    schedule : str or callable, default 'constant'
        'constant', 'step', 'exponential', 'cosine' or ``k -> factor``; see
        :func:`mgnn.optim.schedules.make_schedule` for ``decay_rate``,
        ``decay_steps`` and ``lr_min`` (default None: the schedule's default).
    batch_size : int or None, default None
        Mini-batch size (<= ``n_samples``); None for all data.
    epochs, maxiter : int or None
        Stop after that many epochs or iterations, whichever comes first
        (1000 iterations when neither is given).
    shuffle : bool, default True
        Draw a new permutation each epoch (else batches in order).
    drop_last : bool, default False
        Drop the last, smaller batch of an epoch.
    rng : None, int or numpy.random.Generator
        Seed of the batch permutations.
    gtol : float, default 1e-5
        Full batch only: stop when the gradient norm is <= gtol.
    divergence_factor, divergence_patience : float or None, int, default 10.0, 20
        Stop with ``success=False`` (status 3) when the loss stays more than
        ``divergence_factor * max(|f_first|, |f_best|)`` above the best loss seen
        for ``divergence_patience`` consecutive iterations; ``x`` is then the
        iterate of the lowest loss (:class:`~mgnn.optim.divergence.DivergenceMonitor`).
        ``divergence_factor=None`` turns the test off.
    disp, disp_every, checkpoint, resume
        Progress lines, checkpoints and resuming (:mod:`mgnn.runs`): ``disp=True``
        prints a line every ``disp_every`` iterations; ``checkpoint`` is a
        :class:`~mgnn.runs.Checkpointer` or a directory; ``resume`` a checkpoint
        file or directory to continue from, bit for bit.

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.optim import minimize, FunctionObjective
    >>> obj = FunctionObjective(lambda x: 0.5 * x @ x, lambda x: x)
    >>> res = minimize(obj, np.ones(3), method='sgd',
    ...                options={'lr': 0.5, 'momentum': 0.2, 'gtol': 1e-10})
    >>> res.success, bool(np.linalg.norm(res.x) < 1e-9)
    (True, True)
    """
    return _run_stochastic("sgd", objective, theta0, options, callback, SGD_DEFAULTS, _sgd_update)


def minimize_adam(objective, theta0, options=None, callback=None):
    """Adam (Kingma & Ba 2015) with bias correction.

    Called through ``minimize(..., method='adam')``.

    Options
    -------
    lr : float, default 1e-3
    beta1, beta2 : float, default 0.9, 0.999
        Decay of the first and second moment estimates, in [0, 1).
    eps : float, default 1e-8
        Added to the root of the second moment.
    schedule, decay_rate, decay_steps, lr_min, batch_size, epochs, maxiter,
    shuffle, drop_last, rng, gtol, divergence_factor, divergence_patience, disp,
    disp_every, checkpoint, resume
        As for :func:`minimize_sgd`.

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.optim import minimize, FunctionObjective
    >>> obj = FunctionObjective(lambda x: 0.5 * x @ x, lambda x: x)
    >>> res = minimize(obj, np.ones(3), method='adam',
    ...                options={'lr': 0.1, 'maxiter': 300, 'schedule': 'cosine',
    ...                         'gtol': 0.0})
    >>> bool(np.linalg.norm(res.x) < 1e-2), res.nit, len(res.history['lr'])
    (True, 300, 300)
    """
    return _run_stochastic("adam", objective, theta0, options, callback, ADAM_DEFAULTS,
                           _adam_update)
