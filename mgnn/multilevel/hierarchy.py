"""The multilevel hierarchy shared by every multilevel solver in mgnn.

A :class:`Hierarchy` is a list of :class:`Level` objects from fine (index 0) to
coarse, in the spirit of pyamg's ``MultilevelSolver``. Level ``l`` holds its
network and objective, and the transfer between itself and the next coarser level
``l + 1``:

``P`` (prolongation)
    coarse -> fine, for corrections and for interpolating iterates upwards;
``R`` (restriction)
    fine -> coarse, for gradients; by default the adjoint of ``P`` in the
    Euclidean inner product of ``theta`` (``R = P^T``), so that
    ``grad (f o P) = R grad f`` holds exactly;
``Pi`` (projection)
    fine -> coarse, for iterates; ``Pi P = I``.

All three act matrix-free on raw ``theta`` vectors; :meth:`Transfer.as_linear_operators`
gives scipy ``LinearOperator`` views. A new coarsening (depth, width, both) is a new
:class:`Transfer` subclass and a builder function; the solvers do not change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse.linalg import LinearOperator


class Transfer:
    """Linear maps between a fine and a coarse parameter space (one level pair).

    Subclasses implement :meth:`prolong`, :meth:`restrict` and :meth:`project`
    for 1-D vectors of length ``n_fine`` / ``n_coarse``.
    """

    n_fine: int
    n_coarse: int

    def prolong(self, x_coarse):
        raise NotImplementedError

    def restrict(self, g_fine):
        raise NotImplementedError

    def project(self, x_fine):
        raise NotImplementedError

    def _check(self, x, n, name):
        if x.ndim != 1 or x.shape[0] != n:
            raise ValueError(f"{name} must have shape ({n},), got {tuple(x.shape)}")

    def as_linear_operators(self):
        """``(P, R, Pi)`` as ``scipy.sparse.linalg.LinearOperator`` objects."""
        nf, nc = self.n_fine, self.n_coarse
        P = LinearOperator((nf, nc), matvec=self.prolong, rmatvec=self.restrict,
                           dtype=np.float64)
        R = LinearOperator((nc, nf), matvec=self.restrict, rmatvec=self.prolong,
                           dtype=np.float64)
        Pi = LinearOperator((nc, nf), matvec=self.project, dtype=np.float64)
        return P, R, Pi

    def description(self):
        return type(self).__name__


@dataclass
class Level:
    """One level of a :class:`Hierarchy`.

    Attributes
    ----------
    net : ResNet
        The network on this level.
    objective : Objective or None
        Its objective (None for a hierarchy of networks only).
    transfer : Transfer or None
        Maps between this level and the next coarser one (None on the coarsest).
    """

    net: object
    objective: object = None
    transfer: Transfer = None

    @property
    def P(self):
        """Prolongation from the next coarser level (callable)."""
        return self.transfer.prolong

    @property
    def R(self):
        """Restriction to the next coarser level (callable)."""
        return self.transfer.restrict

    @property
    def Pi(self):
        """Projection of iterates to the next coarser level (callable)."""
        return self.transfer.project


class Hierarchy:
    """Levels from fine (``levels[0]``) to coarse, with transfers between neighbours.

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.nets import ResNet
    >>> from mgnn.multilevel import depth_hierarchy
    >>> H = depth_hierarchy(ResNet(2, 8, 64, 5, T=5.0), levels=3)
    >>> H  # doctest: +NORMALIZE_WHITESPACE
    Hierarchy of 3 levels (depth coarsening, factor 2, constant interpolation)
     level  layers  width  h          parameters  work (fine = 1)
         0      64      8  0.078125         4677            1.000
         1      32      8  0.15625          2373            0.506
         2      16      8  0.3125           1221            0.259
    cycle complexity (V-cycle, 1 visit per level): 1.765
    >>> x_c = np.random.default_rng(0).standard_normal(H.levels[1].net.n_params)
    >>> bool(np.array_equal(H.levels[0].Pi(H.levels[0].P(x_c)), x_c))
    True
    """

    def __init__(self, levels, description=""):
        if not levels:
            raise ValueError("a hierarchy needs at least one level")
        self.levels = list(levels)
        self.description = description

    def __len__(self):
        return len(self.levels)

    def __getitem__(self, l):
        return self.levels[l]

    @property
    def n_levels(self):
        return len(self.levels)

    def work_per_level(self):
        """Cost of one value-and-gradient evaluation per level, fine = 1 (flop ratio)."""
        f0 = self.levels[0].net.flops(1)
        return [lvl.net.flops(1) / f0 for lvl in self.levels]

    def cycle_complexity(self, visits=None):
        """Work of one cycle relative to one fine evaluation.

        ``visits[l]`` is how often a cycle evaluates on level ``l`` relative to
        level 0 (default 1 everywhere: a V-cycle with equal smoothing).
        """
        w = self.work_per_level()
        v = [1] * len(w) if visits is None else list(visits)
        return sum(a * b for a, b in zip(w, v, strict=True)) / 1.0

    def operator_complexity(self):
        """Total number of parameters over all levels relative to the finest."""
        n0 = self.levels[0].net.n_params
        return sum(lvl.net.n_params for lvl in self.levels) / n0

    def prolong_to_finest(self, x, level):
        """Carry an iterate of ``level`` up to level 0 by repeated prolongation."""
        for l in range(level - 1, -1, -1):
            x = self.levels[l].P(x)
        return x

    def __repr__(self):
        head = f"Hierarchy of {len(self)} levels"
        if self.description:
            head += f" ({self.description})"
        rows = [" level  layers  width  h          parameters  work (fine = 1)"]
        w = self.work_per_level()
        for l, lvl in enumerate(self.levels):
            n = lvl.net
            rows.append(f" {l:5d}  {n.depth:6d}  {n.width:5d}  {n.h:<9.6g}  {n.n_params:10d}"
                        f"  {w[l]:15.3f}")
        rows.append(f"cycle complexity (V-cycle, 1 visit per level): {self.cycle_complexity():.3f}")
        return "\n".join([head] + rows)
