"""Smoke test of ``examples/lsgd_pinn.py --quick`` (about ten seconds): every method runs
for the same work, the errors are measured against the exact solutions, the tables,
JSON and PNG are written, and the ratios come from the tuned rows."""

import ast
import json
import pathlib
import runpy

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "lsgd_pinn.py"


def test_quick_run(tmp_path, capsys):
    ns = runpy.run_path(str(EXAMPLE), run_name="not_main")
    results = ns["main"](["--quick", "--out", str(tmp_path)])
    assert [r["problem"] for r in results] == ["poisson-1d", "poisson-2d"]
    budget = 100.0
    for r in results:
        rows = r["rows"]
        assert set(rows) == {"box+lsgd", "glorot+adam", "he+adam", "glorot+lsgd", "box+ls"}
        args = ns["parse"](["--quick"])
        p, net, obj = ns["objective"](r["problem"], args)
        grad = obj.counter.cost["grad"]
        for name, row in rows.items():
            assert len(row["runs"]) == 2 and row["failed"] == 0
            assert row["rel_l2_mean"] <= row["rel_l2_worst"]
            if name == "box+ls":
                assert row["work_mean"] < 0.1 * budget and row["lr"] is None
                continue
            assert row["lr"] in (3e-3, 1e-2)
            # equal work: Adam spends the budget up to one gradient, LSGD up to one cycle
            slack = grad if name.endswith("adam") else 2 * grad + 1.0
            assert budget - slack <= row["work_mean"] <= budget + 1e-9, (name, row["work_mean"])
            for run in row["runs"]:
                work, loss = map(np.asarray, run["curve"])
                assert np.all(np.diff(work) > 0) and np.all(np.isfinite(loss))
        # the recorded error is the one of the exact solution on the evaluation grid
        X, U = p.evaluation_grid()
        res = ns["run"]("box+ls", p, net, obj, 0, None, args)
        assert rows["box+ls"]["runs"][0]["rel_l2"] == pytest.approx(
            np.linalg.norm(obj.solution(res.x, X) - U) / np.linalg.norm(U), rel=1e-12)
        best = min(("glorot+adam", "he+adam"), key=lambda m: rows[m]["rel_l2_mean"])
        assert r["best_baseline"] == best
        assert r["ratio_rel_l2_mean"] == rows[best]["rel_l2_mean"] / rows["box+lsgd"][
            "rel_l2_mean"]
    md = (tmp_path / "lsgd_pinn.md").read_text()
    assert "| poisson-1d | box+lsgd |" in md and "rel. L2: mean" in md and "Load average" in md
    assert "| poisson-2d | glorot+adam |" in capsys.readouterr().out
    saved = json.loads((tmp_path / "lsgd_pinn.json").read_text())
    assert saved["arguments"]["quick"] and len(saved["results"]) == 2
    assert (tmp_path / "lsgd_pinn.png").stat().st_size > 5_000


def test_documents_its_command_line():
    doc = ast.get_docstring(ast.parse(EXAMPLE.read_text()))
    assert "python examples/lsgd_pinn.py --quick" in doc
    assert "Target of the issue" in doc


def test_readme_lsgd_pinn_block_runs(capsys):
    import re

    text = (ROOT / "README.md").read_text()
    i = text.index("*LSGD on PINNs.*")
    block = re.search(r"```python\n(.*?)```", text[i:], re.S).group(1)
    ns = {}
    exec(compile("import numpy as np\nimport mgnn\nfrom mgnn.nets import ResNet\n" + block,
                 "README LSGD PINN", "exec"), ns)
    res, pinn, xg = ns["res_pinn"], ns["pinn"], ns["xg"]
    assert res.success and res.nit <= 100
    assert pinn.relative_l2(res.x, xg, np.sin(np.pi * xg[:, 0])) < 1e-6
    assert "relative L2 error" in capsys.readouterr().out
