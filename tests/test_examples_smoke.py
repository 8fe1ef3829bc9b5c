"""Smoke tests: each example's ``main(argv)`` runs with its ``--quick`` settings (seconds)."""

import json
import pathlib
import runpy

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def example_main(name):
    """The ``main(argv)`` of an example script, loaded without running it."""
    return runpy.run_path(str(ROOT / "examples" / name), run_name="not_main")["main"]


def test_peaks_optimizers_quick(tmp_path, capsys):
    rows = example_main("peaks_optimizers.py")(["--quick", "--out", str(tmp_path)])
    assert [r["method"] for r in rows] == ["sgd", "adam", "lbfgs", "tr-exact", "tr-lsr1"]
    assert "<=" in rows[3]["setting"]  # the CG cap chosen from the grid
    budget = 8.0  # the --quick budget
    for r in rows:
        assert r["work"] >= budget * (1 - 1e-12), r  # stopped by the budget, none earlier
        assert np.isfinite(r["loss"]) and 0.0 <= r["val_acc"] <= 1.0
        assert r["nit"] > 0 and r["wall"] > 0
        work, acc = r["curve"]
        assert work[0] == 0.0 and np.all(np.diff(work) > 0) and acc[-1] == r["val_acc"]
    assert (tmp_path / "peaks_optimizers.png").stat().st_size > 5_000
    md = (tmp_path / "peaks_optimizers.md").read_text()
    assert "| method | setting | work | training loss | validation accuracy" in md
    assert "| tr-lsr1 |" in capsys.readouterr().out


def test_nested_iteration_peaks_quick(tmp_path):
    table = example_main("nested_iteration_peaks.py")(
        ["--quick", "--widths", "5", "--out", str(tmp_path)])
    s = table[5]
    assert set(s) == {"nested", "non-nested"}
    for kind in s.values():
        assert kind["runs"] == 4  # one run for each of the 4 hyperparameter sets
        assert kind["min"] <= kind["median"] <= kind["max"]
        assert kind["min"] <= kind["mean"] <= kind["max"]
    # non-nested training ran until its measured work reached the nested run's
    assert s["non-nested"]["work_median"] >= s["nested"]["work_median"]
    out = json.loads((tmp_path / "nested_iteration_peaks.json").read_text())
    assert len(out["runs"]) == 8 and out["table"]["5"]["nested"]["runs"] == 4
    for r in out["runs"]:
        if r["kind"] == "nested":
            assert len(r["work_per_level"]) == 3
            assert r["steps"] == sum(out["arguments"]["schedule"])
    assert "| 5 | nested |" in (tmp_path / "nested_iteration_peaks.md").read_text()
    assert (tmp_path / "nested_iteration_peaks.png").stat().st_size > 5_000


@pytest.mark.parametrize("name", ["peaks_optimizers.py", "nested_iteration_peaks.py"])
def test_examples_document_their_command_line(name):
    import ast

    doc = ast.get_docstring(ast.parse((ROOT / "examples" / name).read_text()))
    assert f"python examples/{name}" in doc and "--quick" in doc
