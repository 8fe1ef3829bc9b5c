"""MGRIT: multigrid reduction in time for any one-step time integrator.

The solver knows nothing about what it steps: a :class:`Stepper` advances a
state in place, ``step(u_in, u_out, t0, t1, level, index)``, and
:class:`MGRIT` solves for all states on a time grid at once, in parallel over
the ranks of a communicator.

Examples
--------
>>> import numpy as np
>>> from mgnn.mgrit import MGRIT
>>> from mgnn.mgrit.problems import Dahlquist
>>> solver = MGRIT(Dahlquist(-1.0), np.linspace(0.0, 5.0, 1025), cf=2, max_levels=2)
>>> solver.hierarchy
TimeHierarchy: 2 levels on [0, 5], cf = [2]
 level  points  intervals  stride         dt  cf
     0    1025       1024       1  4.883e-03   2
     1     513        512       2  9.766e-03   -
>>> res = solver.solve(np.ones(1), tol=1e-12)
>>> res.nit, bool(res.residuals[-1] <= 1e-12)
(5, True)
"""

from mgnn.mgrit import problems
from mgnn.mgrit.distributed import LayerBlockSpace, LayerParallelObjective
from mgnn.mgrit.hierarchy import TimeHierarchy
from mgnn.mgrit.layer_parallel import (
    MGRITPropagation,
    ResNetAdjointStepper,
    ResNetStepper,
    SolveStats,
)
from mgnn.mgrit.solver import MGRIT, MGRITResult, mgrit
from mgnn.mgrit.stepper import FunctionStepper, Stepper, serial_stepping

__all__ = [
    "MGRIT",
    "MGRITResult",
    "mgrit",
    "Stepper",
    "FunctionStepper",
    "serial_stepping",
    "TimeHierarchy",
    "problems",
    "MGRITPropagation",
    "ResNetStepper",
    "ResNetAdjointStepper",
    "SolveStats",
    "LayerParallelObjective",
    "LayerBlockSpace",
]
