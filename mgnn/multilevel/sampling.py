"""Dynamic sample size: one mini-batch per cycle, grown when sampling noise dominates.

The stochastic multilevel solvers (:func:`~mgnn.multilevel.rmtr`) draw one index
array per cycle and evaluate every level of that cycle on it. Early in training a
small batch is enough (the gradient is large against its sampling error); later
the noise hides the progress and the batch must grow towards all data: the
"hybrid (stochastic-deterministic)" regime of Kopaničáková & Krause.
:class:`SampleSize` decides when and by how much, by one of three rules:

``'norm-test'`` (default)
    The norm test of Byrd, Chin, Nocedal & Wu (2012): keep the batch while the
    estimated variance of the batch-mean gradient is at most ``theta^2 ||g||^2``.
    The variance is estimated at no extra cost by evaluating the batch as two
    halves ``B1, B2`` (the same samples, charged the same work) and comparing
    their mean gradients: with ``b1, b2`` samples, ``E ||g1 - g2||^2 = tr(S) (1/b1
    + 1/b2)`` for the per-sample covariance ``S``, and the batch mean has variance
    ``tr(S) / b * (n - b) / (n - 1)`` when drawn without replacement. When the
    test fails ``patience`` cycles in a row, the next batch has
    ``min(n, ceil(b * min(growth, max(ratio, 1 + 1/b))))`` samples, ``ratio`` the
    variance over ``theta^2 ||g||^2`` (the size that would pass).
``'stall'``
    Grow by ``growth`` when the loss at the start of a cycle, measured on that
    cycle's fresh batch, has not reached a new minimum for ``patience`` cycles.
``'fixed'``
    Never grow.

A batch that reaches all data stays there (deterministic from then on).
"""

from __future__ import annotations

import math

import numpy as np

from mgnn._validation import check_choice, check_positive_int, check_scalar
from mgnn.runs.checkpoint import rng_state, set_rng_state
from mgnn.vectorspace import EuclideanSpace

__all__ = ["SampleSize", "GROWTH_RULES"]

#: Names of the growth rules of :class:`SampleSize`.
GROWTH_RULES = ("norm-test", "stall", "fixed")


class SampleSize:
    """The mini-batch of each cycle and its growth (module docstring).

    Parameters
    ----------
    n : int
        Number of samples of the objective.
    batch_size : int or None
        Initial batch size (None or ``n``: all data from the start).
    rule : {'norm-test', 'stall', 'fixed'}
        Growth rule.
    growth : float
        Largest factor of one growth step (``> 1``).
    theta : float
        Norm-test constant (``> 0``): the tolerated ratio of the gradient's sampling
        error to its norm.
    patience : int
        Consecutive failed tests (or cycles without a new minimum) before growing.
    rng : None, int or numpy.random.Generator
        Source of the batch draws.
    space : vector space, optional
        Inner products of the gradients (default Euclidean).

    Attributes
    ----------
    batch : ndarray or None
        The current cycle's sorted indices (None: all data).
    size : int
        Current batch size (``n`` for all data).
    noise : float
        Last estimate of ``sqrt(variance) / ||g||`` (NaN when not measured).

    Examples
    --------
    >>> import numpy as np
    >>> s = SampleSize(100, 10, "norm-test", 2.0, 0.5, 1, np.random.default_rng(0))
    >>> b = s.draw(); b.size, s.full
    (10, False)
    >>> fg = lambda idx: (1.0, np.ones(2) if idx[0] == b[0] else -np.ones(2))
    >>> f, g = s.evaluate(fg)      # halves with opposite gradients: pure noise
    >>> s.grow_after(f, g)          # the test fails: the next batch doubles
    True
    >>> s.size
    20
    """

    def __init__(self, n, batch_size, rule="norm-test", growth=2.0, theta=1.0, patience=1,
                 rng=None, space=None):
        check_choice(rule, "growth_rule", GROWTH_RULES)
        self.n = n
        self.rule = rule
        self.growth = check_scalar(growth, "batch_growth", low=1.0, low_open=True)
        self.theta = check_scalar(theta, "growth_theta", low=0.0, low_open=True)
        self.patience = check_positive_int(patience, "growth_patience")
        self.rng = np.random.default_rng(rng)
        self.size = n if batch_size is None else int(batch_size)
        self.batch = None
        self.best = math.inf
        self.fails = 0
        self.noise = math.nan
        self.space = EuclideanSpace() if space is None else space

    @property
    def full(self):
        """True when every cycle uses all data."""
        return self.size >= self.n

    def draw(self):
        """A fresh batch for the next cycle (None when all data are used)."""
        self.batch = None if self.full else np.sort(
            self.rng.choice(self.n, size=self.size, replace=False))
        return self.batch

    def evaluate(self, fg):
        """``(f, g)`` on the current batch; ``fg(indices_or_None)``.

        With the norm test the batch is evaluated as two halves (combined exactly as
        the mean over the batch) and the noise estimate is kept for :meth:`grow_after`.
        """
        b = self.batch
        self._var = None
        if b is None or self.rule != "norm-test" or b.size < 2:
            return fg(b)
        h = b.size // 2
        (f1, g1), (f2, g2) = fg(b[:h]), fg(b[h:])
        b1, b2 = h, b.size - h
        w1, w2 = b1 / b.size, b2 / b.size
        d = g1 - g2
        trace = self.space.dot(d, d) / (1.0 / b1 + 1.0 / b2)
        fpc = (self.n - b.size) / (self.n - 1) if self.n > 1 else 0.0
        self._var = trace / b.size * fpc
        return w1 * f1 + w2 * f2, w1 * g1 + w2 * g2

    def grow_after(self, f, g):
        """Apply the rule to the cycle-start evaluation ``(f, g)``; True when the next
        batch is larger."""
        if self.full or self.rule == "fixed":
            self.noise = math.nan
            return False
        if self.rule == "norm-test":
            var = getattr(self, "_var", None)
            if var is None:
                return False
            gg = self.space.dot(g, g)
            self.noise = math.sqrt(var / gg) if gg > 0 else math.inf
            ratio = var / (self.theta ** 2 * gg) if gg > 0 else math.inf
            self.fails = self.fails + 1 if ratio > 1.0 else 0
            if self.fails < self.patience:
                return False
            factor = min(self.growth, max(ratio, 1.0 + 1.0 / self.size))
        else:
            if f < self.best:
                self.best, self.fails = f, 0
                return False
            self.fails += 1
            if self.fails < self.patience:
                return False
            factor = self.growth
        self.size = min(self.n, math.ceil(self.size * factor))
        self.best, self.fails = math.inf, 0
        return True

    def state_dict(self):
        return {"size": self.size, "batch": self.batch, "best": self.best,
                "fails": self.fails, "noise": self.noise, "rng": rng_state(self.rng)}

    def load_state_dict(self, d):
        self.size, self.batch = int(d["size"]), d["batch"]
        self.best, self.fails, self.noise = float(d["best"]), int(d["fails"]), float(d["noise"])
        set_rng_state(self.rng, d["rng"])

    def __repr__(self):
        return (f"SampleSize({self.size} of {self.n} samples, rule={self.rule!r}, "
                f"growth={self.growth:g}, theta={self.theta:g}, patience={self.patience})")
