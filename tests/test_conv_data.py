"""Image data sets (seeded, offline) and the ConvResNet example's smoke run."""

import pathlib
import runpy

import numpy as np
import pytest

from mgnn.data import digits, mnist1d, shapes

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_digits_split_and_range():
    pytest.importorskip("sklearn")
    d = digits(n_val=300, seed=1)
    assert d.X_train.shape == (1497, 64) and d.X_val.shape == (300, 64)
    assert d.image_shape == (8, 8, 1) and d.n_out == 10
    assert 0.0 <= d.X_train.min() and d.X_train.max() <= 1.0
    assert set(np.unique(d.Y_train)) == set(range(10))
    e = digits(n_val=300, seed=1)
    np.testing.assert_array_equal(d.X_val, e.X_val)
    f = digits(n_val=300, seed=2)
    assert not np.array_equal(d.Y_val, f.Y_val)
    with pytest.raises(ValueError, match="n_val"):
        digits(n_val=1797)


@pytest.mark.parametrize("make", [lambda s: mnist1d(60, 20, seed=s),
                                  lambda s: shapes(60, 20, size=10, seed=s)])
def test_procedural_images_are_seeded(make):
    a, b, c = make(0), make(0), make(1)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    np.testing.assert_array_equal(a.Y_val, b.Y_val)
    assert not np.array_equal(a.X_train, c.X_train)
    H, W, C = a.image_shape
    assert a.X_train.shape == (60, H * W * C) and a.X_val.shape == (20, H * W * C)
    assert np.all(np.isfinite(a.X_train)) and a.Y_train.min() >= 0
    assert a.Y_train.max() < a.n_out


def test_shapes_classes_differ_in_mean_image():
    d = shapes(400, 10, size=12, noise=0.0, seed=0)
    means = [d.X_train[d.Y_train == k].mean() for k in range(4)]
    assert len(set(np.round(means, 6))) == 4  # disc, square, cross and ring cover different areas


def test_bad_arguments():
    with pytest.raises(ValueError, match="size"):
        shapes(10, 10, size=4)
    with pytest.raises(ValueError, match="noise"):
        mnist1d(10, 10, noise=-1.0)


def test_conv_digits_example_quick(tmp_path):
    pytest.importorskip("sklearn")
    main = runpy.run_path(str(ROOT / "examples" / "conv_digits.py"), run_name="not_main")["main"]
    out = main(["--quick", "--out", str(tmp_path)])
    assert set(out) == {"serial", "layer-parallel"}
    for r in out.values():
        assert 0.0 <= r["val_accuracy"] <= 1.0 and r["work"] > 0
    # --quick has 4 layers: MGRITPropagation() has one level there, the serial sweep bit
    # for bit, so both runs train the same iterates (this caught the stale flatten
    # features of a layer-parallel run)
    assert out["layer-parallel"]["val_accuracy"] == out["serial"]["val_accuracy"]
    assert out["layer-parallel"]["train_accuracy"] == out["serial"]["train_accuracy"]
    assert (tmp_path / "conv_digits.png").stat().st_size > 5_000
    doc = (ROOT / "examples" / "conv_digits.py").read_text()
    assert "python examples/conv_digits.py" in doc and "--quick" in doc
