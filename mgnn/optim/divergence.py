"""Divergence that stays finite: sustained growth of the loss far above the best seen.

A NaN or inf stops every run at once (status 3). A method whose loss may rise
(SGD, Adam, MG/OPT cycles without a line search) can also run away while staying
finite: a learning rate that is far too large drives the loss from 0.5 to 500 and
keeps it there. :class:`DivergenceMonitor` watches the loss sequence and declares
divergence when, for ``patience`` consecutive iterations,

    f_k - f_best > factor * max(|f_first|, |f_best|),

with ``f_best`` the lowest loss seen so far and ``f_first`` the first. Scaling by
the first loss makes the test independent of the loss's units; the defaults
(``factor = 10``, ``patience = 20``) flag a loss that stays more than ten times
the initial loss above the best, which mini-batch noise does not do. The run then
stops with ``success=False``, status 3 and a message, and returns the iterate at
which the best loss was measured.
"""

from __future__ import annotations

import math

from mgnn._validation import check_positive_int, check_scalar

__all__ = ["DivergenceMonitor", "DIVERGENCE_DEFAULTS"]

#: Options of the methods that watch for finite divergence, with their defaults.
DIVERGENCE_DEFAULTS = {"divergence_factor": 10.0, "divergence_patience": 20}


class DivergenceMonitor:
    """Watch a loss sequence for sustained growth far above the best value.

    Parameters
    ----------
    factor : float or None, default 10.0
        Growth threshold relative to ``max(|f_first|, |f_best|)`` (> 0); ``None``
        turns the test off.
    patience : int, default 20
        Consecutive iterations above the threshold that count as divergence.
    unit : str, default 'iteration'
        What an update is called in the message ('cycle' for MG/OPT).

    Examples
    --------
    >>> m = DivergenceMonitor(factor=10.0, patience=3)
    >>> [m.update(f, x=f, nit=k) for k, f in enumerate([1.0, 0.5, 50.0, 60.0, 70.0])]
    [False, False, False, False, True]
    >>> m.best, m.best_x, m.best_nit
    (0.5, 0.5, 1)
    >>> m.message()  # doctest: +NORMALIZE_WHITESPACE
    'the loss stayed more than 10 x 1 above its best value 5.000000e-01 (iteration 1)
     for 3 consecutive iterations (now 7.000000e+01 at iteration 4); divergence_factor
     and divergence_patience set this test'
    """

    def __init__(self, factor=10.0, patience=20, unit="iteration"):
        self.factor = None if factor is None else check_scalar(
            factor, "divergence_factor", low=0.0, low_open=True)
        self.patience = check_positive_int(patience, "divergence_patience")
        self.unit = unit
        self.first = None
        self.best = math.inf
        self.best_x = None
        self.best_nit = None
        self.count = 0
        self.last = None
        self.last_nit = None

    @property
    def scale(self):
        return max(abs(self.first), abs(self.best)) if self.first is not None else math.nan

    def update(self, f, x, nit):
        """Record the loss ``f`` measured at the iterate ``x`` (kept by reference when it
        is the best: the caller must not modify it in place); True once diverged."""
        if self.factor is None:
            return False
        if self.first is None:
            self.first = f
        if f < self.best:
            self.best, self.best_x, self.best_nit = f, x, nit
        self.last, self.last_nit = f, nit
        if f - self.best > self.factor * self.scale:
            self.count += 1
        else:
            self.count = 0
        return self.count >= self.patience

    def message(self):
        u = self.unit
        return (f"the loss stayed more than {self.factor:g} x {self.scale:.3g} above its best "
                f"value {self.best:.6e} ({u} {self.best_nit}) for {self.count} "
                f"consecutive {u}s (now {self.last:.6e} at {u} {self.last_nit}); "
                "divergence_factor and divergence_patience set this test")

    def state_dict(self):
        return {"first": self.first, "best": self.best, "best_x": self.best_x,
                "best_nit": self.best_nit, "count": self.count, "last": self.last,
                "last_nit": self.last_nit}

    def load_state_dict(self, d):
        self.first, self.best, self.best_x = d["first"], d["best"], d["best_x"]
        self.best_nit, self.count = d["best_nit"], d["count"]
        self.last, self.last_nit = d["last"], d["last_nit"]
