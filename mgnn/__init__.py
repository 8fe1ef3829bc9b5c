"""mgnn: training neural networks with the solvers of numerical analysis.

The main entry points are re-exported here:

- :class:`mgnn.nets.ResNet`, :class:`mgnn.nets.ConvResNet`, :class:`mgnn.objective.Objective`
- :func:`mgnn.optim.minimize`
"""

__version__ = "0.1.0"

from mgnn.nets import ConvResNet, ResNet  # noqa: E402
from mgnn.objective import Objective  # noqa: E402
from mgnn.optim import minimize  # noqa: E402

__all__ = ["ResNet", "ConvResNet", "Objective", "minimize", "__version__"]
