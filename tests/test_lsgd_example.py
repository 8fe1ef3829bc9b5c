"""Smoke test of ``examples/lsgd_regression.py --quick`` (a few seconds): every method runs
for the same work, the tables, JSON and PNG are written, and the ratio is computed from
the tuned rows."""

import ast
import json
import pathlib
import runpy

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "lsgd_regression.py"


def test_quick_run(tmp_path, capsys):
    main = runpy.run_path(str(EXAMPLE), run_name="not_main")["main"]
    results = main(["--quick", "--out", str(tmp_path)])
    assert [r["target"] for r in results] == ["kink-1d", "smooth-2d"]
    budget = 60.0
    for r in results:
        rows = r["rows"]
        assert set(rows) == {"box+lsgd", "glorot+adam", "he+adam", "box+adam", "box+ls"}
        for name, row in rows.items():
            assert len(row["runs"]) == 3 and row["failed"] == 0
            assert row["val_mean"] <= row["val_worst"]
            if name == "box+ls":
                assert row["work_mean"] < 3.0 and row["lr"] is None
                continue
            assert row["lr"] in (3e-3, 1e-2)
            # equal work: Adam spends the budget, LSGD at most one cycle less
            assert budget - 2.0 <= row["work_mean"] <= budget + 1e-9, (name, row["work_mean"])
            for run in row["runs"]:
                work, loss = map(np.asarray, run["curve"])
                assert np.all(np.diff(work) > 0) and np.all(np.isfinite(loss))
        best = min(("glorot+adam", "he+adam"), key=lambda m: rows[m]["val_mean"])
        assert r["ratio_mean"] == rows[best]["val_mean"] / rows["box+lsgd"]["val_mean"]
        assert r["ratio_train"] == rows[best]["train_mean"] / rows["box+lsgd"]["train_mean"]
        # training MSE and curves in the same units (one solve: the same iterate)
        for run in rows["box+ls"]["runs"]:
            assert run["train"] == pytest.approx(run["curve"][1][-1], rel=1e-12)
    md = (tmp_path / "lsgd_regression.md").read_text()
    assert "| kink-1d | box+lsgd |" in md and "validation MSE: mean" in md
    assert "| smooth-2d | glorot+adam |" in capsys.readouterr().out
    saved = json.loads((tmp_path / "lsgd_regression.json").read_text())
    assert saved["arguments"]["quick"] and len(saved["results"]) == 2
    assert (tmp_path / "lsgd_regression.png").stat().st_size > 5_000


def test_documents_its_command_line():
    doc = ast.get_docstring(ast.parse(EXAMPLE.read_text()))
    assert "python examples/lsgd_regression.py --quick" in doc
    assert "Target of the issue" in doc


def test_readme_lsgd_block_runs(capsys):
    import re

    text = (ROOT / "README.md").read_text()
    block = re.search(r"\*\*Adaptive basis.*?```python\n(.*?)```", text, re.S).group(1)
    ns = {}
    exec(compile(block, "README LSGD", "exec"), ns)
    res = ns["res_ls"]
    assert res.success and 0 < res.nit <= 200
    assert 2 * res.fun < 1e-6  # the MSE the block prints
    assert res.history["ls_rank"][-1] == 17
    assert "rank and condition number" in capsys.readouterr().out
