"""Image data sets with explicit, seeded train/validation splits (offline).

Images are returned as rows, channels last (``X[i].reshape(H, W, C)`` is image
``i``), the layout :class:`~mgnn.nets.ConvResNet` reads; ``Dataset.image_shape`` is
``(H, W, C)``.

* :func:`digits`: scikit-learn's 8x8 handwritten digits (1797 images, 10 classes).
  The data ship inside the scikit-learn wheel, so loading is offline; scikit-learn
  is an optional dependency (``pip install mgnn[images]``).
* :func:`mnist1d`: a procedural one-dimensional digit problem in the spirit of
  Greydanus' MNIST-1D (templates of ten classes, randomly padded, shifted, scaled,
  sheared, blurred and noised), as ``1 x length`` images.
* :func:`shapes`: procedural 2-D images of four shape classes (disc, square,
  cross, ring) at random position and size, with noise; the image size is a
  parameter, so the problem can be made large enough for layer-parallelism.
"""

from __future__ import annotations

import numpy as np

from mgnn._validation import check_dtype, check_positive_int, check_scalar, check_seed
from mgnn.data.problems import Dataset

__all__ = ["digits", "mnist1d", "shapes"]


def _split(X, y, n_val, seed, name, n_out, dtype, image_shape):
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(X))
    val, train = perm[:n_val], perm[n_val:]
    X = np.ascontiguousarray(X, dtype=dtype)
    y = np.asarray(y, dtype=np.int64)
    return Dataset(X[train], y[train], X[val], y[val], n_out, "classification", name,
                   image_shape)


def digits(n_val=360, seed=0, dtype=np.float64):
    """scikit-learn's 8x8 digits, pixel values scaled to [0, 1], split at random.

    Parameters
    ----------
    n_val : int
        Validation images (the rest of the 1797 train).
    seed : int
        Seed of the split.
    dtype : {float64, float32}

    Raises
    ------
    ImportError
        When scikit-learn is not installed (the data ship with it).

    Examples
    --------
    >>> d = digits()                                        # doctest: +SKIP
    >>> d.X_train.shape, d.image_shape                      # doctest: +SKIP
    ((1437, 64), (8, 8, 1))
    """
    n_val = check_positive_int(n_val, "n_val")
    check_seed(seed, "seed")
    dtype = check_dtype(dtype)
    if n_val >= 1797:
        raise ValueError(f"n_val must be less than the 1797 images, got {n_val}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("digits() needs scikit-learn, which ships the 8x8 digits data "
                          "(pip install scikit-learn, or mgnn[images])") from exc
    data = load_digits()
    return _split(data.data / 16.0, data.target, n_val, seed, "digits 8x8", 10, dtype,
                  (8, 8, 1))


def _templates(rng_len=12):
    """Ten piecewise-linear 1-D templates of length ``rng_len`` (one per class)."""
    t = np.linspace(0.0, 1.0, rng_len)
    tri = 1.0 - np.abs(2 * t - 1)
    return np.stack([
        np.sin(2 * np.pi * t),              # 0: one period
        np.sin(4 * np.pi * t),              # 1: two periods
        tri,                                # 2: hat
        -tri,                               # 3: inverted hat
        2 * t - 1,                          # 4: ramp up
        1 - 2 * t,                          # 5: ramp down
        np.where(t < 0.5, 1.0, -1.0),       # 6: step down
        np.where(t < 0.5, -1.0, 1.0),       # 7: step up
        np.cos(3 * np.pi * t),              # 8: one and a half periods
        np.exp(-((t - 0.5) / 0.12) ** 2) * 2 - 1,  # 9: narrow bump
    ])


def mnist1d(n_train=4000, n_val=1000, length=40, noise=0.1, seed=0, dtype=np.float64):
    """Procedural MNIST-1D-like signals as ``1 x length`` images (10 classes).

    Each sample takes its class template (12 points), pads it randomly to 36
    points (random left/right split), scales it by U(0.7, 1.3), adds a random
    linear trend (shear, slope U(-0.5, 0.5)), resamples it to ``length`` points by
    linear interpolation with a random shift, smooths it with a 3-point filter and
    adds Gaussian noise of standard deviation ``noise`` and correlated noise
    (a cumulative random walk of step ``noise / 4``). Train and validation are
    independent draws.

    Examples
    --------
    >>> d = mnist1d(200, 50)
    >>> d.X_train.shape, d.image_shape, d.n_out
    ((200, 40), (1, 40, 1), 10)
    """
    n_train = check_positive_int(n_train, "n_train")
    n_val = check_positive_int(n_val, "n_val")
    length = check_positive_int(length, "length", minimum=8)
    noise = check_scalar(noise, "noise", low=0.0)
    check_seed(seed, "seed")
    dtype = check_dtype(dtype)
    rng = np.random.default_rng(seed)
    n = n_train + n_val
    T = _templates()
    y = rng.integers(0, 10, n)
    X = np.empty((n, length))
    grid = np.linspace(0.0, 1.0, length)
    for i in range(n):
        left = rng.integers(0, 25)
        sig = np.zeros(36)
        sig[left:left + 12] = T[y[i]] * rng.uniform(0.7, 1.3)
        sig += rng.uniform(-0.5, 0.5) * np.linspace(-1, 1, 36)
        shift = rng.uniform(-0.05, 0.05)
        x = np.interp(np.clip(grid + shift, 0, 1), np.linspace(0, 1, 36), sig)
        x = np.convolve(np.pad(x, 1, mode="edge"), [0.25, 0.5, 0.25], mode="valid")
        x += noise * rng.standard_normal(length)
        x += np.cumsum(noise / 4 * rng.standard_normal(length))
        X[i] = x
    X = np.ascontiguousarray(X, dtype=dtype)
    return Dataset(X[:n_train], y[:n_train], X[n_train:], y[n_train:], 10, "classification",
                   "mnist1d (procedural)", (1, length, 1))


SHAPES = ("disc", "square", "cross", "ring")


def shapes(n_train=2000, n_val=500, size=16, noise=0.1, seed=0, dtype=np.float64):
    """Procedural ``size x size`` images of a disc, square, cross or ring (4 classes).

    Each image holds one shape of radius U(0.2, 0.35) * size centred at a random
    point at least a radius from the border, drawn with intensity U(0.6, 1.0) on a
    zero background, plus Gaussian noise of standard deviation ``noise``.

    Examples
    --------
    >>> d = shapes(40, 10, size=12)
    >>> d.X_train.shape, d.image_shape, d.n_out
    ((40, 144), (12, 12, 1), 4)
    """
    n_train = check_positive_int(n_train, "n_train")
    n_val = check_positive_int(n_val, "n_val")
    size = check_positive_int(size, "size", minimum=8)
    noise = check_scalar(noise, "noise", low=0.0)
    check_seed(seed, "seed")
    dtype = check_dtype(dtype)
    rng = np.random.default_rng(seed)
    n = n_train + n_val
    y = rng.integers(0, 4, n)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    X = np.empty((n, size * size))
    for i in range(n):
        r = rng.uniform(0.2, 0.35) * size
        cy, cx = rng.uniform(r, size - r, 2)
        dy, dx = yy - cy, xx - cx
        if y[i] == 0:
            m = dy ** 2 + dx ** 2 <= r ** 2
        elif y[i] == 1:
            m = (np.abs(dy) <= 0.8 * r) & (np.abs(dx) <= 0.8 * r)
        elif y[i] == 2:
            m = ((np.abs(dy) <= r) & (np.abs(dx) <= 0.3 * r)) | \
                ((np.abs(dx) <= r) & (np.abs(dy) <= 0.3 * r))
        else:
            d2 = dy ** 2 + dx ** 2
            m = (d2 <= r ** 2) & (d2 >= (0.55 * r) ** 2)
        X[i] = (rng.uniform(0.6, 1.0) * m + noise * rng.standard_normal(m.shape)).ravel()
    X = np.ascontiguousarray(X, dtype=dtype)
    return Dataset(X[:n_train], y[:n_train], X[n_train:], y[n_train:], 4, "classification",
                   f"shapes {size}x{size} (procedural)", (size, size, 1))
