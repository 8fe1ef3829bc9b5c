"""Block partitions: which rank owns which contiguous range of n items.

The first ``n % size`` ranks get one item more than the others (the
convention of ``numpy.array_split``), so the blocks differ in length by at
most one and rank order is index order.
"""

from __future__ import annotations

import numpy as np

from mgnn._validation import check_positive_int

__all__ = ["block_offsets", "block_range", "block_owner"]


def block_offsets(n, size):
    """Return the ``size + 1`` offsets of a block partition of ``n`` items.

    Rank ``r`` owns items ``offsets[r] <= i < offsets[r + 1]``.

    Parameters
    ----------
    n : int
        Number of items (may be smaller than ``size``: some blocks are empty).
    size : int
        Number of ranks.

    Examples
    --------
    >>> block_offsets(10, 3)
    array([ 0,  4,  7, 10])
    >>> block_offsets(2, 3)
    array([0, 1, 2, 2])
    """
    n = check_positive_int(n, "n", minimum=0)
    size = check_positive_int(size, "size")
    q, r = divmod(n, size)
    counts = np.full(size, q, dtype=np.int64)
    counts[:r] += 1
    return np.concatenate(([0], np.cumsum(counts)))


def block_range(n, size, rank):
    """Return ``(start, stop)``: the items rank ``rank`` owns.

    Examples
    --------
    >>> block_range(10, 3, 1)
    (4, 7)
    """
    rank = check_positive_int(rank, "rank", minimum=0)
    if rank >= size:
        raise ValueError(f"rank must be < size={size}, got {rank}")
    off = block_offsets(n, size)
    return int(off[rank]), int(off[rank + 1])


def block_owner(i, n, size):
    """Return the rank that owns item ``i`` of ``n``.

    Examples
    --------
    >>> [block_owner(i, 10, 3) for i in range(10)]
    [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    """
    i = check_positive_int(i, "i", minimum=0)
    if i >= n:
        raise ValueError(f"i must be < n={n}, got {i}")
    off = block_offsets(n, size)
    return int(np.searchsorted(off, i, side="right") - 1)
