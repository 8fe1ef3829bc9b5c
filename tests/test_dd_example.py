"""Smoke test of ``examples/dd_benchmark.py --quick`` (seconds)."""

import ast
import json
import math
import pathlib
import runpy

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "dd_benchmark.py"


def test_dd_benchmark_quick(tmp_path):
    ns = runpy.run_path(str(SCRIPT), run_name="not_main")
    out = ns["main"](["--quick", "--out", str(tmp_path)])
    methods = list(ns["METHODS"])
    rows = out["rows"]
    assert [(r["problem"], r["method"]) for r in rows] == [
        (p, m) for p in ("peaks", "regression") for m in methods]
    assert {r["method"] for r in out["plain_rows"]} == set(ns["PLAIN_METHODS"])
    assert [(r["problem"], r["method"]) for r in out["pinn_rows"]] == [
        ("poisson-pinn", m) for m in ns["PINN_METHODS"]]
    for r in out["pinn_rows"]:  # validation: relative L2 error of the PINN solution
        assert 0 < r["val"] < 10
    for r in rows + out["plain_rows"] + out["pinn_rows"]:
        assert r["seeds"] == 1 and 0 <= r["reached"] <= 1
        if r["reached"]:
            assert 0 < r["parallel"] <= r["total"] * (1 + 1e-12)
        else:
            assert math.isinf(r["parallel"])
    data = json.loads((tmp_path / "dd_benchmark.json").read_text())
    for run in data["runs"]:
        assert run["parallel_work"] <= run["work"] * (1 + 1e-12)
        assert math.isfinite(run["final_loss"])
    md = (tmp_path / "dd_benchmark.md").read_text()
    assert "Target (>= 2x fewer parallel work units than L-BFGS" in md
    assert "| regression | 0.06 | ASPQN data S=8 |" in md
    assert "outer iterations" in md  # the note on the headline method
    assert "| poisson-pinn | 2 | L-BFGS |" in md and "PINN (poisson-pinn): L-BFGS /" in md
    assert (tmp_path / "dd_benchmark.png").stat().st_size > 5_000


def test_dd_benchmark_documents_its_command_line():
    doc = ast.get_docstring(ast.parse(SCRIPT.read_text()))
    assert "python examples/dd_benchmark.py" in doc and "--quick" in doc


def test_readme_domain_decomposition_block_runs(capsys):
    import re

    text = (ROOT / "README.md").read_text()
    block = re.search(r"\*\*Domain decomposition\*\*.*?```python\n(.*?)```", text, re.S).group(1)
    ns = {}
    exec(compile(block, "README domain decomposition", "exec"), ns)
    res = ns["res_dd"]
    assert res.nit == 20 and res.fun < ns["robj"].value(ns["rtheta0"])
    assert "subdomain" in capsys.readouterr().out
