"""The examples run and keep their promises (the README: tests/test_readme.py)."""

import pathlib
import runpy
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def example_main(name):
    """The ``main(argv)`` of an example script, loaded without running it."""
    return runpy.run_path(str(ROOT / "examples" / name), run_name="not_main")["main"]


def test_peaks_train_reaches_95_percent(tmp_path):
    acc = example_main("peaks_train.py")(["--out", str(tmp_path)])
    assert acc >= 0.95
    assert (tmp_path / "peaks_train.png").stat().st_size > 10_000


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
