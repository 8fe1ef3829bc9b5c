"""The RMTR suite of the multilevel benchmark runs (quick mode) and writes its outputs."""

import json
import pathlib
import runpy

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_rmtr_benchmark_quick(tmp_path):
    main = runpy.run_path(str(ROOT / "examples" / "rmtr_benchmark.py"), run_name="x")["main"]
    out = main(["--quick", "--out", str(tmp_path)])
    rows = out["rows"]
    assert {r["problem"] for r in rows} == {"peaks", "mnist1d", "regression"}
    assert {r["method"] for r in rows} == {"RMTR", "RMTR-OFF", "TR", "L-BFGS", "Adam", "SGD"}
    for r in rows:
        assert r["seeds"] == 1 and 0 <= r["val_reached"] <= 1
        # work to a target never exceeds what the run spent
        if r["val_reached"]:
            assert r["val_work"]["median"] <= r["final_work"]["median"] + 1e-12
    text = (tmp_path / "rmtr_benchmark.md").read_text()
    assert "| problem | method | lr |" in text and "## Claims of issue 17" in text
    assert "RMTR needs" in text and "than TR" in text  # every claim compares with TR
    assert (tmp_path / "rmtr_benchmark.png").stat().st_size > 10_000
    data = json.loads((tmp_path / "rmtr_benchmark.json").read_text())
    assert set(data) >= {"rows", "lrs", "raw", "claims", "load", "cpu"}
