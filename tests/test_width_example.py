"""The width suite (MTNN's Poisson and Darcy sets, MG/OPT with MTNN's preset against
the same SGD alone) runs in quick mode, at equal work, and checks the claim."""

import pathlib
import runpy

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_width_multilevel_example_quick(tmp_path):
    main = runpy.run_path(str(ROOT / "examples" / "width_multilevel_regression.py"),
                          run_name="not_main")["main"]
    res = main(["--quick", "--out", str(tmp_path), "--methods", "SGD-MTNN,MGOPT-MTNN,RMTR"])
    rows = {(r["problem"], r["method"]): r for r in res["rows"]}
    assert set(rows) == {(p, m) for p in ("poisson", "darcy")
                         for m in ("SGD-MTNN", "MGOPT-MTNN", "RMTR")}
    for p in ("poisson", "darcy"):
        mg, sgd = rows[(p, "MGOPT-MTNN")], rows[(p, "SGD-MTNN")]
        # equal work: SGD runs to MG/OPT's spend (up to one of its 12-step chunks)
        assert abs(mg["final_work"]["median"] - sgd["final_work"]["median"]) \
            <= 0.25 * mg["final_work"]["median"]
        fv = mg["final_val"]
        assert 0 < fv["best"] <= fv["median"] <= fv["worst"]
    text = (tmp_path / "width_multilevel_regression.md").read_text()
    assert "MG/OPT (MTNN preset) vs SGD-momentum at equal work" in text
    assert (tmp_path / "width_multilevel_regression.png").stat().st_size > 10_000
