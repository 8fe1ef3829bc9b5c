"""Data sets and problem generators (all procedural and seeded: nothing is downloaded)."""

from mgnn.data.problems import Dataset, peaks, peaks_function, smooth_regression

__all__ = ["Dataset", "peaks", "peaks_function", "smooth_regression"]
