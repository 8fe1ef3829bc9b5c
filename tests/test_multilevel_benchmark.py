"""The multilevel benchmark harness: every method on a deep problem (quick mode), the
statistics it reports, its argument errors."""

import json
import math
import pathlib
import runpy

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    return runpy.run_path(str(ROOT / "examples" / "multilevel_benchmark.py"), run_name="x")


def test_quick_run_of_every_depth_method(bench, tmp_path):
    out = bench["main"](["--quick", "--out", str(tmp_path), "--problems",
                         "regression-deep,rough"])
    methods = set(bench["DEPTH_METHODS"])
    assert {r["method"] for r in out["rows"]} == methods
    assert {r["problem"] for r in out["rows"]} == {"regression-deep", "rough"}
    for r in out["rows"]:
        for what in ("loss", "val"):
            s = r[f"{what}_work"]
            if r[f"{what}_reached"] == r["seeds"]:
                assert s["best"] <= s["median"] <= s["worst"] < math.inf
            else:
                assert s["worst"] == math.inf
        assert r["final_work"]["median"] > 0
    raw = out["raw"]["regression-deep/RMTR"][0]
    assert raw["work"][0] == 0.0 and np.all(np.diff(raw["work"]) > 0)
    data = json.loads((tmp_path / "multilevel_benchmark.json").read_text())
    assert len(data["rows"]) == len(out["rows"])
    text = (tmp_path / "multilevel_benchmark.md").read_text()
    assert "mean / median / worst" in text and "load average" in text


def test_statistics_and_claims(bench):
    class M:
        def __init__(self, hit, val):
            self.hit = {"loss": hit, "val": hit}
            self.val, self.loss, self.work = [val], [1.0], [5.0]

    p = bench["make_problems"](["regression"], True)["regression"]
    r = bench["summarise"](p, "RMTR", None, [M((1.0, 0.1), 0.2), M(None, 0.4)])
    assert r["val_reached"] == 1 and r["val_work"]["worst"] == math.inf
    assert r["val_work"]["best"] == 1.0 and r["final_val"]["worst"] == 0.4
    rows = [dict(r, method="RMTR", val_work={"median": 2.0}),
            dict(r, method="Adam", val_work={"median": 5.0}),
            dict(r, method="TR", val_work={"median": 6.0})]
    (line,) = bench["claims"](rows)
    assert "ratio 2.50 (meets >= 2)" in line and "TR / RMTR = 3.00" in line
    inf = math.inf
    final = {"mean": 0.3, "median": 0.3, "worst": 0.4}
    rows[0] = dict(rows[0], val_work={"median": inf}, final_val=final)
    (line,) = bench["claims"](rows)
    assert "did not reach it (median): misses >= 2" in line and "WORSE than TR" in line
    rows = [dict(rows[0], val_work={"median": 3.0}),
            dict(rows[1], val_work={"median": inf}), dict(rows[2], val_work={"median": inf})]
    (line,) = bench["claims"](rows)
    assert "ratio unbounded, meets >= 2" in line and "TR did not reach it" in line
    rows = [dict(rows[0], val_work={"median": inf}, final_val=final),
            dict(rows[1]), dict(rows[2], final_val=dict(final, median=0.2))]
    (line,) = bench["claims"](rows)
    assert "neither reached it" in line and "0.3 vs TR's 0.2 (WORSE than TR)" in line


def test_bad_arguments(bench, tmp_path):
    with pytest.raises(ValueError, match="unknown problem 'cifar'"):
        bench["main"](["--quick", "--out", str(tmp_path), "--problems", "cifar"])
    with pytest.raises(ValueError, match="unknown method\\(s\\) 'ADAM'; expected Adam, SGD"):
        bench["main"](["--quick", "--out", str(tmp_path), "--methods", "Adam,ADAM"])
    with pytest.raises(SystemExit):
        bench["main"](["--suite", "nope"])


def test_defaults_check_quick(bench):
    res = bench["defaults_check"](1, True)
    assert set(res) == {"rmtr", "mgopt"}
    for rows in res.values():
        (w, acc, w_adam, acc_adam, w_qs, acc_qs), = rows
        assert w > 0 and abs(w_adam - w) <= 1.0 and abs(w_qs - w) <= 1.0
        assert 0 <= acc <= 1 and 0 <= acc_adam <= 1
    text = bench["defaults_table"](res)
    assert text.count("(H, theta0)") == 2
