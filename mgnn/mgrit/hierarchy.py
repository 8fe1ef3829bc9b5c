"""The hierarchy of time grids that MGRIT walks."""

from __future__ import annotations

import numpy as np

from mgnn._validation import check_array, check_positive_int, per_level

__all__ = ["TimeHierarchy"]


def _check_cf(v, name):
    return check_positive_int(v, name, minimum=2)


class TimeHierarchy:
    """Time grids of an MGRIT hierarchy, from the fine grid ``t``.

    Level ``l + 1`` keeps every ``cf[l]``-th point of level ``l`` (its
    C-points); the others are F-points. A level with ``N_l`` intervals gets a
    coarser one only if the coarser one has at least ``min_coarse`` intervals.
    When ``N_l`` is not a multiple of ``cf[l]`` the points after the last
    C-point are F-points of a trailing, shorter interval.

    Parameters
    ----------
    t : array_like, shape (N + 1,)
        Strictly increasing fine time points.
    cf : int or list of int
        Coarsening factor per level, each >= 2; the last entry repeats.
    min_coarse : int
        Minimum number of intervals of the coarsest grid.
    max_levels : int or None
        Number of levels. ``None`` builds as many as ``min_coarse`` allows; an
        integer the grid cannot support raises ``ValueError``.

    Attributes
    ----------
    n_levels : int
    t : list of ndarray
        Time points of each level.
    cf : list of int
        Coarsening factor from level l to l + 1 (``n_levels - 1`` entries).
    strides : list of int
        Fine intervals per interval of level l (1 on level 0).

    Examples
    --------
    >>> import numpy as np
    >>> h = TimeHierarchy(np.linspace(0.0, 5.0, 1025), cf=[4, 2], max_levels=3)
    >>> h
    TimeHierarchy: 3 levels on [0, 5], cf = [4, 2]
     level  points  intervals  stride         dt  cf
         0    1025       1024       1  4.883e-03   4
         1     257        256       4  1.953e-02   2
         2     129        128       8  3.906e-02   -
    >>> h.n_points
    [1025, 257, 129]
    """

    def __init__(self, t, cf=2, min_coarse=2, max_levels=None):
        t = check_array(t, "t", ndim=1)
        t = np.asarray(t, dtype=np.float64)
        if t.shape[0] < 2:
            raise ValueError(f"t must have at least 2 time points, got {t.shape[0]}")
        if not np.all(np.diff(t) > 0):
            raise ValueError("t must be strictly increasing")
        min_coarse = check_positive_int(min_coarse, "min_coarse")
        if max_levels is not None:
            max_levels = check_positive_int(max_levels, "max_levels")
        cap = max_levels if max_levels is not None else 64
        cfs = per_level(cf, max(cap - 1, 1), "cf", _check_cf, allow_longer=True)
        n = t.shape[0] - 1
        counts = [n]
        while len(counts) < cap and counts[-1] // cfs[len(counts) - 1] >= min_coarse:
            counts.append(counts[-1] // cfs[len(counts) - 1])
        if max_levels is not None and len(counts) < max_levels:
            raise ValueError(
                f"max_levels={max_levels} asks for more levels than t supports: t has {n} "
                f"intervals, and with cf={cfs[: max_levels - 1]} and min_coarse={min_coarse} "
                f"at most {len(counts)} level(s) are possible"
            )
        self.n_levels = len(counts)
        self.cf = cfs[: self.n_levels - 1]
        self.min_coarse = min_coarse
        self.n_intervals = counts
        self.strides = [1]
        for m in self.cf:
            self.strides.append(self.strides[-1] * m)
        self.t = [t[: s * k + 1 : s].copy() for s, k in zip(self.strides, counts, strict=True)]

    @property
    def n_points(self):
        """Number of time points on each level."""
        return [k + 1 for k in self.n_intervals]

    def __len__(self):
        return self.n_levels

    def __repr__(self):
        t = self.t[0]
        lines = [
            f"TimeHierarchy: {self.n_levels} level{'s' if self.n_levels > 1 else ''} "
            f"on [{t[0]:g}, {t[-1]:g}], cf = {self.cf}",
            " level  points  intervals  stride         dt  cf",
        ]
        for lvl in range(self.n_levels):
            dts = np.diff(self.t[lvl])
            lo, hi = dts.min(), dts.max()
            dt = f"{lo:.3e}" if np.isclose(lo, hi, rtol=1e-9, atol=0) else f"{lo:.2e}..{hi:.2e}"
            cf = str(self.cf[lvl]) if lvl < self.n_levels - 1 else "-"
            lines.append(
                f"{lvl:>6}{self.n_points[lvl]:>8}{self.n_intervals[lvl]:>11}"
                f"{self.strides[lvl]:>8}{dt:>11}{cf:>4}"
            )
        return "\n".join(lines)

