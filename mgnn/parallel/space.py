"""A vector space whose inner product reduces over a communicator."""

from __future__ import annotations

import numpy as np

from mgnn.parallel.comm import get_comm
from mgnn.vectorspace import EuclideanSpace

__all__ = ["DistributedSpace"]


class DistributedSpace(EuclideanSpace):
    """Euclidean space of a vector split in slices over the ranks of ``comm``.

    Each rank holds its slice; :meth:`dot`, :meth:`max_abs` and
    :meth:`all_finite` reduce over the communicator, so every rank gets the
    global value.

    Parameters
    ----------
    comm : None, Comm or mpi4py.MPI.Comm
        Passed to :func:`mgnn.parallel.get_comm`.

    Examples
    --------
    >>> import numpy as np
    >>> s = DistributedSpace()          # one process: same as EuclideanSpace
    >>> s.dot(np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    11.0
    >>> s.all_finite(np.array([1.0, np.nan]))
    False
    """

    def __init__(self, comm=None):
        self.comm = get_comm(comm)

    def dot(self, x, y):
        return self.comm.allreduce(float(np.dot(x, y)), op="sum")

    def max_abs(self, x):
        local = float(np.max(np.abs(x))) if x.size else 0.0
        return self.comm.allreduce(local, op="max")

    def all_finite(self, x):
        local = 1.0 if bool(np.isfinite(x).all()) else 0.0
        return self.comm.allreduce(local, op="min") == 1.0

    def __repr__(self):
        return f"DistributedSpace(comm={self.comm!r})"
