"""The RMTR benchmark example runs (quick mode) and writes its table and figure."""

import pathlib
import runpy

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_rmtr_benchmark_quick(tmp_path):
    main = runpy.run_path(str(ROOT / "examples" / "rmtr_benchmark.py"), run_name="x")["main"]
    out = main(["--quick", "--out", str(tmp_path)])
    rows = out["rows"]
    assert {r["problem"] for r in rows} == {"peaks", "mnist1d", "regression"}
    assert {r["method"] for r in rows} == {"RMTR", "TR", "L-BFGS", "Adam", "SGD"}
    assert all(r["seeds"] == 1 and 0 <= r["reached"] <= 1 for r in rows)
    text = (tmp_path / "rmtr_benchmark.md").read_text()
    assert "| problem | target loss | method |" in text and "TR work / RMTR work" in text
    assert (tmp_path / "rmtr_benchmark.png").stat().st_size > 10_000
