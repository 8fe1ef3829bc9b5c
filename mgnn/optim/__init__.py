"""Single-level optimizers on raw parameter vectors.

``minimize(objective, theta0, method=..., options=..., callback=...)`` runs SGD,
Adam, L-BFGS, a trust-region method (exact Hessian-vector products or L-SR1;
Steihaug–Toint CG, Cauchy point or dogleg) or LSGD (least-squares closing layer
alternating with Adam/SGD on the hidden layers) and returns a
:class:`scipy.optimize.OptimizeResult` with the work spent (fine-gradient
equivalents, see :mod:`mgnn.work`) and a per-iteration :class:`History`.
All inner products go through the objective's vector space.

The trust-region building blocks (:func:`steihaug_cg`, :func:`update_radius`,
:func:`trust_region_step`, :class:`LSR1`, ...) are public for the multilevel
solvers.

Examples
--------
>>> import numpy as np
>>> from scipy.optimize import rosen, rosen_der
>>> from mgnn.optim import minimize
>>> res = minimize(rosen, np.zeros(5), method='lbfgs', jac=rosen_der,
...                options={'gtol': 1e-10})
>>> res.success, np.allclose(res.x, 1.0)
(True, True)
"""

from . import schedules
from ._common import History
from .function import FunctionObjective
from .lbfgs import LBFGSMemory, lbfgs_step, minimize_lbfgs
from .linesearch import LineSearchResult, armijo, strong_wolfe
from .lsgd import ClosingSolver, LSGDState, minimize_lsgd, solve_closing
from .lsr1 import LSR1
from .minimize import METHODS, minimize
from .stochastic import minimize_adam, minimize_sgd
from .trust_region import (
    SubproblemResult,
    TRParams,
    TRStepResult,
    cauchy_point,
    dogleg,
    minimize_trust_region,
    reduction_ratio,
    solve_subproblem,
    steihaug_cg,
    trust_region_step,
    update_radius,
)

__all__ = [
    "minimize",
    "METHODS",
    "History",
    "FunctionObjective",
    "minimize_sgd",
    "minimize_adam",
    "minimize_lbfgs",
    "minimize_trust_region",
    "minimize_lsgd",
    "ClosingSolver",
    "LSGDState",
    "solve_closing",
    "LBFGSMemory",
    "lbfgs_step",
    "LSR1",
    "strong_wolfe",
    "armijo",
    "LineSearchResult",
    "TRParams",
    "SubproblemResult",
    "TRStepResult",
    "steihaug_cg",
    "cauchy_point",
    "dogleg",
    "solve_subproblem",
    "update_radius",
    "reduction_ratio",
    "trust_region_step",
    "schedules",
]
