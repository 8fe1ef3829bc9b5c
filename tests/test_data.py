import numpy as np
import pytest

from mgnn.data import peaks, peaks_function, smooth_regression


def test_peaks_is_seeded_split_and_labelled_by_level_sets():
    a, b = peaks(300, 100, seed=7), peaks(300, 100, seed=7)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    assert a.X_train.shape == (300, 2) and a.X_val.shape == (100, 2)
    assert not np.isin(a.X_val[:, 0], a.X_train[:, 0]).any()  # separate draws
    assert np.abs(a.X_train).max() <= 3
    z = peaks_function(a.X_train[:, 0], a.X_train[:, 1])
    assert np.all(z[a.Y_train == 0] < -1.5) and np.all(z[a.Y_train == 4] >= 1.5)
    assert set(np.unique(a.Y_train)) == {0, 1, 2, 3, 4}
    assert peaks(5, 5, seed=8).X_train[0, 0] != a.X_train[0, 0]


def test_peaks_function_is_matlabs():
    # MATLAB: peaks(0, 0) = 0.9810
    assert peaks_function(0.0, 0.0) == pytest.approx(0.98101184312384, rel=1e-12)


def test_regression_and_dtype():
    d = smooth_regression(40, 10, n_in=3, noise=0.1, dtype=np.float32)
    assert d.X_train.dtype == np.float32 and d.Y_train.shape == (40, 1)
    with pytest.raises(ValueError, match="n_train must be >= 1"):
        peaks(0)
    with pytest.raises(TypeError, match="dtype"):
        peaks(5, dtype=int)
