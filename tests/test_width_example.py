"""The multilevel-in-width example runs (smoke mode) and writes its table and figure."""

import pathlib
import runpy

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_width_multilevel_example_quick(tmp_path):
    main = runpy.run_path(str(ROOT / "examples" / "width_multilevel_regression.py"),
                          run_name="not_main")["main"]
    res = main(["--quick", "--out", str(tmp_path)])
    assert set(res) == {"diffusion", "smooth2d"}
    for prob in res.values():
        # equal work up to one mini-batch
        assert abs(prob["mg"]["work"] - prob["single"]["work"]) < 0.5
        for meth in prob.values():
            mean, median, worst = meth["mean_error"]
            assert 0 < median <= worst and np.isfinite(mean)
            assert meth["max_error"][1] >= median
    text = (tmp_path / "width_multilevel_regression.md").read_text()
    assert "| diffusion | MG/OPT, 3 width levels |" in text
    assert (tmp_path / "width_multilevel_regression.png").stat().st_size > 10_000
