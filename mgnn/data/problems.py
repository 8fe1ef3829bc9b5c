"""Problem generators with explicit, seeded train/validation splits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mgnn._validation import check_dtype, check_positive_int, check_scalar, check_seed

#: Level-set thresholds that cut MATLAB's ``peaks`` into five classes.
PEAKS_LEVELS = (-1.5, -0.25, 0.25, 1.5)


@dataclass(frozen=True)
class Dataset:
    """A problem with separate training and validation samples.

    Attributes
    ----------
    X_train, Y_train, X_val, Y_val : arrays
        Inputs (s, n_in) and targets (integer labels, or (s, n_out) floats).
    n_out : int
        Number of classes or outputs.
    task : str
        'classification' or 'regression'.
    name : str
    image_shape : (H, W, C) or None
        For image data (rows channels last, :mod:`mgnn.data.images`).
    """

    X_train: np.ndarray
    Y_train: np.ndarray
    X_val: np.ndarray
    Y_val: np.ndarray
    n_out: int
    task: str
    name: str
    image_shape: tuple | None = None

    @property
    def n_in(self):
        return self.X_train.shape[1]

    def __repr__(self):
        return (f"Dataset({self.name!r}, task={self.task!r}, n_in={self.n_in}, "
                f"n_out={self.n_out}, n_train={len(self.X_train)}, n_val={len(self.X_val)})")


def peaks_function(x, y):
    """MATLAB's ``peaks``: 3(1-x)^2 e^{-x^2-(y+1)^2} - 10(x/5-x^3-y^5) e^{-x^2-y^2}
    - e^{-(x+1)^2-y^2}/3."""
    return (3 * (1 - x) ** 2 * np.exp(-x ** 2 - (y + 1) ** 2)
            - 10 * (x / 5 - x ** 3 - y ** 5) * np.exp(-x ** 2 - y ** 2)
            - np.exp(-(x + 1) ** 2 - y ** 2) / 3)


def peaks(n_train=5000, n_val=1000, seed=0, dtype=np.float64):
    """The peaks classification problem (Haber & Ruthotto).

    Points drawn uniformly from [-3, 3]^2 are labelled 0..4 by the level sets of
    :func:`peaks_function` at :data:`PEAKS_LEVELS` (about 9, 12, 42, 18 and 18 %
    of the square). Training and validation points are independent draws.

    Examples
    --------
    >>> d = peaks(100, 50, seed=1)
    >>> d
    Dataset('peaks', task='classification', n_in=2, n_out=5, n_train=100, n_val=50)
    >>> int(d.Y_train.max()) <= 4
    True
    """
    n_train = check_positive_int(n_train, "n_train")
    n_val = check_positive_int(n_val, "n_val")
    dtype = check_dtype(dtype)
    rng = np.random.default_rng(check_seed(seed))
    X = rng.uniform(-3.0, 3.0, size=(n_train + n_val, 2))
    y = np.digitize(peaks_function(X[:, 0], X[:, 1]), PEAKS_LEVELS).astype(np.int64)
    X = X.astype(dtype)
    return Dataset(X[:n_train], y[:n_train], X[n_train:], y[n_train:], 5,
                   "classification", "peaks")


def smooth_regression(n_train=2000, n_val=500, n_in=2, noise=0.0, seed=0, dtype=np.float64):
    """A smooth scalar regression problem on [-1, 1]^n_in.

    f(x) = sin(pi x_1) cos(pi x_2 / 2) + 0.5 exp(-|x|^2) (only the first
    ``n_in`` coordinates that exist are used), plus optional Gaussian noise of
    standard deviation ``noise`` on the training targets.

    Examples
    --------
    >>> d = smooth_regression(10, 5, seed=0)
    >>> d.Y_train.shape, d.task
    ((10, 1), 'regression')
    """
    n_train = check_positive_int(n_train, "n_train")
    n_val = check_positive_int(n_val, "n_val")
    n_in = check_positive_int(n_in, "n_in")
    noise = check_scalar(noise, "noise", low=0.0)
    dtype = check_dtype(dtype)
    rng = np.random.default_rng(check_seed(seed))
    X = rng.uniform(-1.0, 1.0, size=(n_train + n_val, n_in))
    f = np.sin(np.pi * X[:, 0]) + 0.5 * np.exp(-np.sum(X ** 2, axis=1))
    if n_in > 1:
        f = np.sin(np.pi * X[:, 0]) * np.cos(0.5 * np.pi * X[:, 1]) + 0.5 * np.exp(
            -np.sum(X ** 2, axis=1))
    Y = f[:, None]
    if noise:
        Y = Y.copy()
        Y[:n_train] += noise * rng.standard_normal((n_train, 1))
    X, Y = X.astype(dtype), Y.astype(dtype)
    return Dataset(X[:n_train], Y[:n_train], X[n_train:], Y[n_train:], 1,
                   "regression", "smooth_regression")
