"""Domain decomposition: Schwarz-preconditioned training (APTS, SPQN/ASPQN, two-level).

The parameters ``theta`` or the data of an objective are split into subdomains
(:class:`Decomposition`: :func:`by_layers`, :func:`by_neurons`,
:func:`by_tensors`, :func:`by_data`, :func:`by_blocks`); every outer
iteration solves the subdomains' local problems (in parallel over MPI ranks,
or in sequence), merges their corrections and globalises them on the whole
objective:

- :func:`apts`: additively (or multiplicatively) preconditioned trust region;
- :func:`spqn`: Schwarz-preconditioned quasi-Newton (ASPQN additive, SPQN
  multiplicative);

both with an optional coarse correction from a level of a
:class:`~mgnn.multilevel.Hierarchy` (depth or width), work counted in total and
in parallel (the slowest subdomain), results as ``OptimizeResult`` and the
whole state in one :class:`SchwarzState` (``res.state``, resumable).

Examples
--------
>>> import numpy as np
>>> from mgnn.data import peaks
>>> from mgnn.nets import ResNet
>>> from mgnn.objective import Objective
>>> from mgnn.dd import spqn, by_data
>>> d = peaks(400, 10)
>>> net = ResNet(2, 4, 6, 5, T=5.0)
>>> obj = Objective(net, d.X_train, d.Y_train, tikhonov=1e-4)
>>> res = spqn(obj, net.init(0), by_data(obj, 4), options={"maxiter": 10})
>>> res.nit, bool(res.parallel_work < res.work)
(10, True)
"""

from mgnn.dd._engine import DDStatistics, SchwarzState, SubdomainStatistics
from mgnn.dd.coarse import CoarseSpace
from mgnn.dd.decomposition import (
    KINDS,
    Decomposition,
    by_blocks,
    by_data,
    by_layers,
    by_neurons,
    by_tensors,
)
from mgnn.dd.local import DataSubproblem, ParameterSubproblem
from mgnn.dd.schwarz import APTS_DEFAULTS, SPQN_DEFAULTS, VARIANTS, apts, spqn

__all__ = ["APTS_DEFAULTS", "CoarseSpace", "DDStatistics", "DataSubproblem", "Decomposition",
           "KINDS", "ParameterSubproblem", "SPQN_DEFAULTS", "SchwarzState",
           "SubdomainStatistics", "VARIANTS", "apts", "by_blocks", "by_data", "by_layers",
           "by_neurons", "by_tensors", "spqn"]
