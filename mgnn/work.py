"""Work accounting in fine-gradient equivalents.

One *work unit* is the cost of one full forward + backward sweep (value and
gradient) of the finest objective on all of its data. Every evaluation that an
objective performs is charged to its :class:`WorkCounter` in these units:
a mini-batch evaluation costs its share of the data, a value-only evaluation
costs ``cost['value']`` (about 1/3 of a gradient), and a Hessian-vector product
costs ``cost['hessp']`` (about 2.5-3). The ratios can be measured on the
machine with :func:`measure_costs`. Coarse levels of a hierarchy are charged in
the finest level's units through ``scale`` (their cost relative to the fine
level), so methods that move between levels and batch sizes are compared on one
axis.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

DEFAULT_COST = {"value": 1.0 / 3.0, "grad": 1.0, "hessp": 8.0 / 3.0}


@dataclass
class WorkCounter:
    """Counts evaluations and the work they cost.

    Attributes
    ----------
    nfev, njev, nhev : int
        Number of value, gradient and Hessian-vector evaluations (a
        ``value_and_grad`` call counts once in ``nfev`` and once in ``njev``).
    work : float
        Work in fine-gradient equivalents.
    cost : dict
        Cost of each kind of evaluation on all data, in units of one
        value-and-gradient evaluation of *this* objective.
    scale : float
        Cost of one value-and-gradient evaluation of this objective in units of
        the finest objective's (1 on the finest level).

    Examples
    --------
    >>> c = WorkCounter()
    >>> c.charge("grad", share=0.5)
    >>> c.charge("hessp")
    >>> c.njev, c.nhev, round(c.work, 4)
    (1, 1, 3.1667)
    """

    nfev: int = 0
    njev: int = 0
    nhev: int = 0
    work: float = 0.0
    cost: dict = field(default_factory=lambda: dict(DEFAULT_COST))
    scale: float = 1.0

    def charge(self, kind, share=1.0):
        """Record one evaluation of ``kind`` ('value', 'grad' or 'hessp')."""
        if kind == "value":
            self.nfev += 1
        elif kind == "grad":  # value and gradient together
            self.nfev += 1
            self.njev += 1
        elif kind == "hessp":
            self.nhev += 1
        else:
            raise ValueError(f"unknown evaluation kind {kind!r}")
        self.work += self.scale * self.cost[kind] * share

    def snapshot(self):
        """Return ``(nfev, njev, nhev, work)`` for computing differences."""
        return (self.nfev, self.njev, self.nhev, self.work)

    def reset(self):
        self.nfev = self.njev = self.nhev = 0
        self.work = 0.0


def measure_costs(objective, theta, repeats=5):
    """Measure the relative cost of value, gradient and hessp on ``objective``.

    Returns a dict like :data:`DEFAULT_COST` with the medians of ``repeats``
    timings each, relative to ``value_and_grad``. The counter is restored, so
    the measurement itself is not charged.
    """
    import numpy as np

    saved = objective.counter.snapshot()
    v = np.ones_like(theta)

    def med(fn):
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return float(np.median(ts))

    objective.value_and_grad(theta)  # warm up (JIT)
    objective.hessp(theta, v)
    t_g = med(lambda: objective.value_and_grad(theta))
    t_f = med(lambda: objective.value(theta))
    t_h = med(lambda: objective.hessp(theta, v))
    c = objective.counter
    c.nfev, c.njev, c.nhev, c.work = saved
    return {"value": t_f / t_g, "grad": 1.0, "hessp": t_h / t_g}
