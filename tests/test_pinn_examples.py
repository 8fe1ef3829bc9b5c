"""Smoke tests of the PINN examples (``--quick``: seconds) and of benchmarks/pinn.py."""

import ast
import json
import pathlib
import runpy
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def example_main(name):
    return runpy.run_path(str(ROOT / "examples" / name), run_name="not_main")["main"]


def test_pinn_poisson_quick(tmp_path, capsys):
    rows = example_main("pinn_poisson.py")(["--quick", "--out", str(tmp_path)])
    assert [r["method"] for r in rows] == ["adam", "lbfgs", "lbfgs-resample", "tr-lsr1",
                                           "tr-gn", "nested", "rmtr", "mgopt"]
    for r in rows:
        assert np.isfinite(r["error"]) and r["work"] > 0 and r["nit"] >= 1
        w, e = zip(*r["curve"], strict=True)
        assert np.all(np.diff(w) >= 0) and e[-1] == r["error"]
        if r["method"] not in ("mgopt", "rmtr", "nested"):  # stopped at the budget
            assert r["work"] >= 60.0
    out = capsys.readouterr().out
    assert "| method | relative L2 error | work units" in out and "target relative L2" in out
    assert (tmp_path / "pinn_poisson.png").stat().st_size > 5_000
    data = json.loads((tmp_path / "pinn_poisson.json").read_text())
    assert len(data["rows"]) == 8 and "x" not in data["rows"][0]


def test_pinn_burgers_and_benchmark_quick(tmp_path):
    rows = example_main("pinn_burgers.py")(["--quick", "--out", str(tmp_path),
                                            "--methods", "lbfgs-resample", "tr-gn"])
    assert [r["method"] for r in rows] == ["lbfgs-resample", "tr-gn"]
    assert rows[0]["message"].endswith("rounds of collocation points")
    assert (tmp_path / "pinn_burgers.png").stat().st_size > 5_000
    rows = example_main("pinn_benchmark.py")(
        ["--quick", "--out", str(tmp_path), "--problems", "klein_gordon_1d", "allen_cahn_1d"])
    assert [(r["problem"], r["method"]) for r in rows] == [
        ("klein_gordon_1d", "adam"), ("klein_gordon_1d", "lbfgs"),
        ("allen_cahn_1d", "adam"), ("allen_cahn_1d", "lbfgs")]
    assert "| klein_gordon_1d | lbfgs |" in (tmp_path / "pinn_benchmark.md").read_text()
    assert (tmp_path / "pinn_allen_cahn_1d.png").stat().st_size > 5_000


@pytest.mark.parametrize("name", ["pinn_poisson.py", "pinn_burgers.py", "pinn_benchmark.py"])
def test_pinn_examples_document_their_command_line(name):
    doc = ast.get_docstring(ast.parse((ROOT / "examples" / name).read_text()))
    assert f"python examples/{name}" in doc and "--quick" in doc


def test_pinn_benchmark_script_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    mod = runpy.run_path(str(ROOT / "benchmarks" / "pinn.py"), run_name="not_main")
    path = tmp_path / "b.json"
    rows = mod["main"](["--pde", "burgers", "--width", "8", "--samples", "64", "--depth", "2",
                        "--repeats", "1", "--hessp", "--json", str(path)])
    assert rows[0]["S"] == 4 and rows[0]["bound"] == 4.0 and rows[0]["pinn_ms"] > 0
    assert "| burgers | 4 | 8 | 2 | 64 |" in capsys.readouterr().out
    assert json.loads(path.read_text())["rows"][0]["pde"] == "burgers"
    sys.modules.pop("_common", None)


def test_readme_pinn_section_runs(capsys):
    import re

    text = (ROOT / "README.md").read_text()
    block = re.search(r"\*\*Physics-informed training\*\*.*?```python\n(.*?)```", text,
                      re.S).group(1)
    ns = {}
    exec(compile(block, "README PINN section", "exec"), ns)
    assert ns["error"] < 1e-2 and ns["pinn_res"].work > 0
    assert "plain gradients" in capsys.readouterr().out
