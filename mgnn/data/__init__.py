"""Data sets and problem generators (all procedural and seeded: nothing is downloaded)."""

from mgnn.data.operator_learning import darcy_regression, poisson_regression
from mgnn.data.problems import Dataset, peaks, peaks_function, smooth_regression
from mgnn.data.synthetic import mnist1d, rough_regression

__all__ = ["Dataset", "darcy_regression", "mnist1d", "peaks", "peaks_function",
           "poisson_regression", "rough_regression", "smooth_regression"]
