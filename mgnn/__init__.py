"""mgnn: training neural networks with the solvers of numerical analysis."""

__version__ = "0.1.0"
