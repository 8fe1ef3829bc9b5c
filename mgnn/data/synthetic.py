"""More procedural benchmark problems: an MNIST-1D-like set and a rough regression."""

from __future__ import annotations

import numpy as np

from mgnn._validation import check_dtype, check_positive_int, check_scalar, check_seed
from mgnn.data.problems import Dataset

__all__ = ["mnist1d", "rough_regression"]


def mnist1d(n_train=2000, n_val=500, length=40, seed=0, dtype=np.float64):
    """An MNIST-1D-like classification set, made here: 10 classes of noisy 1-D signals.

    Each class has a template of 12 points (a sine of its own frequency and phase,
    growing for classes 5-9); a sample places it at a random offset in a signal of
    ``length`` points, scales it by U(0.8, 1.2) and adds a random linear trend and
    Gaussian noise (standard deviation 0.25); the signals are standardised.

    Examples
    --------
    >>> d = mnist1d(50, 20, seed=1)
    >>> d
    Dataset('mnist1d', task='classification', n_in=40, n_out=10, n_train=50, n_val=20)
    """
    n_train = check_positive_int(n_train, "n_train")
    n_val = check_positive_int(n_val, "n_val")
    length = check_positive_int(length, "length", minimum=13)
    dtype = check_dtype(dtype)
    rng = np.random.default_rng(check_seed(seed))
    t = np.linspace(0.0, 1.0, 12)
    templates = np.array([np.sin(2 * np.pi * (k % 5 + 1) * t / 2 + k) * (1 + (k >= 5) * t)
                          for k in range(10)])
    n = n_train + n_val
    y = rng.integers(0, 10, n)
    X = np.zeros((n, length))
    for i in range(n):
        s = rng.integers(0, length - 12)
        X[i, s:s + 12] = rng.uniform(0.8, 1.2) * templates[y[i]]
    grid = np.linspace(-1.0, 1.0, length)
    X += rng.normal(0.0, 0.1, (n, 1)) * grid + rng.normal(0.0, 0.25, X.shape)
    X = ((X - X.mean()) / X.std()).astype(dtype)
    return Dataset(X[:n_train], y[:n_train], X[n_train:], y[n_train:], 10,
                   "classification", "mnist1d")


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
