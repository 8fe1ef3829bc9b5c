"""Vector spaces: the inner product that optimizers and solvers use on theta.

No optimizer or multilevel solver calls ``np.dot`` on a parameter vector
directly; it asks its vector space. :class:`EuclideanSpace` is the default on one
process. A distributed space (each rank holding a slice of theta) overrides
:meth:`dot` with a reduction over the communicator, and every algorithm above
runs unchanged.
"""

from __future__ import annotations

import math

import numpy as np


class EuclideanSpace:
    """The plain Euclidean inner product on local 1-D arrays.

    Examples
    --------
    >>> import numpy as np
    >>> s = EuclideanSpace()
    >>> s.dot(np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    11.0
    >>> s.norm(np.array([3.0, 4.0]))
    5.0
    """

    def dot(self, x, y):
        """Global inner product <x, y> as a Python float."""
        return float(np.dot(x, y))

    def norm(self, x):
        """Global 2-norm of x."""
        return math.sqrt(max(self.dot(x, x), 0.0))

    def max_abs(self, x):
        """Global infinity norm of x."""
        return float(np.max(np.abs(x))) if x.size else 0.0

    def all_finite(self, x):
        """True when every entry of x is finite (on every rank)."""
        return bool(np.isfinite(x).all())

    def __repr__(self):
        return "EuclideanSpace()"
