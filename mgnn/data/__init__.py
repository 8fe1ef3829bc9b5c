"""Data sets and problem generators (seeded; nothing is downloaded: the 8x8 digits ship
with scikit-learn)."""

from mgnn.data.images import digits, mnist1d, shapes
from mgnn.data.operator_learning import darcy_regression, poisson_regression
from mgnn.data.problems import Dataset, peaks, peaks_function, smooth_regression
from mgnn.data.synthetic import rough_regression

__all__ = ["Dataset", "darcy_regression", "digits", "mnist1d", "peaks", "peaks_function",
           "poisson_regression", "rough_regression", "shapes", "smooth_regression"]
