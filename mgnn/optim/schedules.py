"""Learning-rate schedules for the stochastic methods.

A schedule is a function ``k -> lr_k`` of the iteration number ``k = 0, 1, ...``.
:func:`make_schedule` builds one from the ``lr``/``schedule``/``decay_*``
options of :func:`mgnn.optim.minimize`.
"""

from __future__ import annotations

import math

from mgnn._validation import check_positive_int, check_scalar

__all__ = [
    "constant",
    "step_decay",
    "exponential_decay",
    "cosine_decay",
    "make_schedule",
    "SCHEDULES",
]

SCHEDULES = ("constant", "step", "exponential", "cosine")


def constant(lr):
    """``lr_k = lr``.

    Examples
    --------
    >>> constant(0.1)(100)
    0.1
    """
    lr = check_scalar(lr, "lr", low=0.0, low_open=True)
    return lambda k: lr


def step_decay(lr, decay_rate=0.5, decay_steps=100):
    """``lr_k = lr * decay_rate ** (k // decay_steps)``.

    Examples
    --------
    >>> s = step_decay(1.0, 0.5, 10)
    >>> s(0), s(9), s(10), s(25)
    (1.0, 1.0, 0.5, 0.25)
    """
    lr = check_scalar(lr, "lr", low=0.0, low_open=True)
    rate = check_scalar(decay_rate, "decay_rate", low=0.0, high=1.0, low_open=True)
    steps = check_positive_int(decay_steps, "decay_steps")
    return lambda k: lr * rate ** (k // steps)


def exponential_decay(lr, decay_rate=0.5, decay_steps=100):
    """``lr_k = lr * decay_rate ** (k / decay_steps)`` (smooth).

    Examples
    --------
    >>> s = exponential_decay(1.0, 0.5, 10)
    >>> s(0), s(10), round(s(5), 6)
    (1.0, 0.5, 0.707107)
    """
    lr = check_scalar(lr, "lr", low=0.0, low_open=True)
    rate = check_scalar(decay_rate, "decay_rate", low=0.0, high=1.0, low_open=True)
    steps = check_positive_int(decay_steps, "decay_steps")
    return lambda k: lr * rate ** (k / steps)


def cosine_decay(lr, decay_steps, lr_min=0.0):
    """Cosine annealing from ``lr`` to ``lr_min`` over ``decay_steps`` iterations.

    ``lr_k = lr_min + (lr - lr_min) (1 + cos(pi min(k, T) / T)) / 2``.

    Examples
    --------
    >>> s = cosine_decay(1.0, 10, lr_min=0.1)
    >>> s(0), round(s(5), 6), s(10), s(20)
    (1.0, 0.55, 0.1, 0.1)
    """
    lr = check_scalar(lr, "lr", low=0.0, low_open=True)
    steps = check_positive_int(decay_steps, "decay_steps")
    lr_min = check_scalar(lr_min, "lr_min", low=0.0, high=lr)
    def sched(k):
        return lr_min + 0.5 * (lr - lr_min) * (1.0 + math.cos(math.pi * min(k, steps) / steps))

    return sched


def make_schedule(lr, schedule="constant", decay_rate=None, decay_steps=None, lr_min=None,
                  *, steps_per_epoch=1, total=None):
    """Build the schedule ``k -> lr_k`` from the stochastic methods' options.

    Parameters
    ----------
    lr : float
        Base learning rate (> 0).
    schedule : {'constant', 'step', 'exponential', 'cosine'} or callable
        A callable ``schedule(k)`` returns the *factor* multiplying ``lr`` at
        iteration ``k`` (like PyTorch's ``LambdaLR``).
    decay_rate : float, optional
        Factor per ``decay_steps`` for 'step' and 'exponential' (default 0.5).
    decay_steps : int, optional
        Iterations per decay for 'step'/'exponential' (default one epoch,
        ``steps_per_epoch``); length of the annealing for 'cosine' (default
        ``total``, the planned number of iterations).
    lr_min : float, optional
        Final learning rate of 'cosine' (default 0).

    Options that the chosen schedule does not use raise ``ValueError``.

    Examples
    --------
    >>> s = make_schedule(0.1, 'step', decay_rate=0.1, decay_steps=5)
    >>> s(4), round(s(5), 12)
    (0.1, 0.01)
    >>> make_schedule(0.1, 'constant', decay_rate=0.5)
    Traceback (most recent call last):
    ...
    ValueError: option 'decay_rate' has no effect with schedule='constant'
    """
    lr = check_scalar(lr, "lr", low=0.0, low_open=True)
    given = {"decay_rate": decay_rate, "decay_steps": decay_steps, "lr_min": lr_min}
    if callable(schedule):
        used = ()
    elif schedule in ("step", "exponential"):
        used = ("decay_rate", "decay_steps")
    elif schedule == "cosine":
        used = ("decay_steps", "lr_min")
    elif schedule == "constant":
        used = ()
    else:
        opts = ", ".join(repr(s) for s in SCHEDULES)
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {opts} or a callable")
    for name, val in given.items():
        if val is not None and name not in used:
            label = "a callable" if callable(schedule) else repr(schedule)
            raise ValueError(f"option {name!r} has no effect with schedule={label}")
    if callable(schedule):

        def sched(k):
            factor = schedule(k)
            try:
                return check_scalar(factor * lr, "lr", low=0.0, low_open=True)
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"schedule({k}) returned {factor!r}: the learning rate lr * schedule(k) "
                    "must be a positive finite number"
                ) from exc

        return sched
    if schedule == "constant":
        return constant(lr)
    if schedule in ("step", "exponential"):
        rate = 0.5 if decay_rate is None else decay_rate
        steps = steps_per_epoch if decay_steps is None else decay_steps
        fn = step_decay if schedule == "step" else exponential_decay
        return fn(lr, rate, steps)
    steps = decay_steps if decay_steps is not None else total
    if steps is None:
        raise ValueError("schedule='cosine' needs decay_steps or a finite number of iterations")
    return cosine_decay(lr, steps, 0.0 if lr_min is None else lr_min)
