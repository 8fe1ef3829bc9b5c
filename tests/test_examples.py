"""The README quick start and the examples run and keep their promises."""

import pathlib
import re
import runpy
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_quick_start_runs(capsys):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start.*?```python\n(.*?)```", text, re.S).group(1)
    ns = {}
    exec(compile(block, "README quick start", "exec"), ns)
    assert ns["res"].success
    assert ns["obj"].accuracy(ns["res"].x, ns["data"].X_val, ns["data"].Y_val) > 0.9


def example_main(name):
    """The ``main(argv)`` of an example script, loaded without running it."""
    return runpy.run_path(str(ROOT / "examples" / name), run_name="not_main")["main"]


def test_peaks_train_reaches_95_percent(tmp_path):
    acc = example_main("peaks_train.py")(["--out", str(tmp_path)])
    assert acc >= 0.95
    assert (tmp_path / "peaks_train.png").stat().st_size > 10_000


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
