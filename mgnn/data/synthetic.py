"""More procedural benchmark problems: a rough regression (the MNIST-1D-like set is
:func:`mgnn.data.images.mnist1d`)."""

from __future__ import annotations

import numpy as np

from mgnn._validation import check_dtype, check_positive_int, check_scalar, check_seed
from mgnn.data.problems import Dataset

__all__ = ["rough_regression"]


def rough_regression(n_train=2000, n_val=500, noise=0.0, seed=0, dtype=np.float64):
    """A non-smooth scalar regression problem on [-1, 1]^2.

    ``f(x) = |x_1 - 0.2| + 0.5 sign(x_2) |x_2|^{1/2} + 0.25 sin(6 pi x_1 x_2)``: a kink,
    a cusp and an oscillation; Gaussian noise of standard deviation ``noise`` on the
    training targets only.

    Examples
    --------
    >>> d = rough_regression(10, 5)
    >>> d.Y_train.shape, d.name
    ((10, 1), 'rough_regression')
    """
    n_train = check_positive_int(n_train, "n_train")
    n_val = check_positive_int(n_val, "n_val")
    noise = check_scalar(noise, "noise", low=0.0)
    dtype = check_dtype(dtype)
    rng = np.random.default_rng(check_seed(seed))
    X = rng.uniform(-1.0, 1.0, size=(n_train + n_val, 2))
    x1, x2 = X[:, 0], X[:, 1]
    f = np.abs(x1 - 0.2) + 0.5 * np.sign(x2) * np.sqrt(np.abs(x2)) + 0.25 * np.sin(
        6 * np.pi * x1 * x2)
    Y = f[:, None].copy()
    if noise:
        Y[:n_train] += noise * rng.standard_normal((n_train, 1))
    X, Y = X.astype(dtype), Y.astype(dtype)
    return Dataset(X[:n_train], Y[:n_train], X[n_train:], Y[n_train:], 1, "regression",
                   "rough_regression")
