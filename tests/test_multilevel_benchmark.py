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


def test_scaled_mtnn_problems_and_tuned_mtnn_rates(bench, tmp_path):
    out = bench["main"](["--quick", "--out", str(tmp_path), "--suite", "mtnn",
                         "--methods", "SGD-MTNN,MGOPT-MTNN", "--tune-mtnn"])
    assert {(r["problem"], r["method"]) for r in out["rows"]} == {
        (p, m) for p in ("poisson-small", "darcy-small") for m in ("SGD-MTNN", "MGOPT-MTNN")}
    factors = bench["MTNN_LR_FACTORS"]
    assert all(r["lr"] == factors[len(factors) // 2] for r in out["rows"])
    assert sum("MG/OPT (MTNN preset) vs SGD-momentum" in c for c in out["claims"]) == 2
    p = bench["make_problems"](["poisson-small"], False, small_width=8, small_samples=40)
    p = p["poisson-small"]
    assert p.net.width == 8 and p.data.X_train.shape == (40, 64)
    # a factor of 1 is MTNN's rate itself: the same run, bit for bit
    a, b = (bench["run_method"]("SGD-MTNN", p, 0, lr, 2.0, {}, True) for lr in (None, 1.0))
    assert a.val == b.val and a.work == b.work
    c = bench["run_method"]("SGD-MTNN", p, 0, 10.0, 2.0, {}, True)
    assert c.val != a.val


def test_rmtr_grid_points_build_their_hierarchy(bench):
    assert bench["fmt_lr"]({}) == "defaults"
    assert bench["fmt_lr"]({"batch_size": 32, "levels": 4}) == "batch_size=32, levels=4"
    assert len(bench["RMTR_GRID"]) == len(bench["LR_GRIDS"]["Adam"])  # the same effort
    p = bench["make_problems"](["regression-deep"], True)["regression-deep"]
    assert bench["tune"]("RMTR", p, 1.0, {}, True) == {}
    assert bench["tune"]("RMTR", p, 1.0, {}, True, tune_rmtr=False) is None
    cfg = {"batch_size": 32, "levels": 3}
    mon = bench["run_method"]("RMTR", p, 0, cfg, 1.0, {}, True)
    assert cfg == {"batch_size": 32, "levels": 3}  # not consumed
    assert len(mon.result.work_per_level) == 3 and mon.result.history["batch_size"][0] == 32


def test_pinn_problem_in_the_harness(bench, tmp_path):
    """The PINN problem (2-D Poisson, issue 14's objective) runs every depth method; its
    validation metric is the relative L2 error against the exact solution."""
    out = bench["main"](["--quick", "--out", str(tmp_path), "--suite", "pinn"])
    assert {r["method"] for r in out["rows"]} == set(bench["DEPTH_METHODS"])
    p = bench["make_problems"](["pinn-poisson"], True)["pinn-poisson"]
    assert p.metric == "val rel. L2" and not p.val_reached(0.6) and p.val_reached(0.4)
    mon = bench["Monitor"](p, 1.0)
    theta = p.theta0(0)
    X, U = p.data.evaluation_grid()
    u = p.objective.solution(theta, X)
    assert p.val_metric(mon.mon, theta) == pytest.approx(
        np.linalg.norm(u - U) / np.linalg.norm(U), rel=1e-12)
    for r in out["rows"]:
        assert r["final_val"]["median"] < 1.5
