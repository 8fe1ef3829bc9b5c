"""benchmarks/gpu.py runs end to end on the CPU stand-in (the script, not its timings).

The GPU benchmark is meant to run blind in one device session; this checks its control
flow, tables and JSON on the stand-in for CuPy with tiny sizes, without PyTorch. No time
is asserted.
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_runs_on_the_stand_in(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu as bench
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    data = bench.main(["--stand-in", "--quick", "--no-torch", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "gpu.json").read_text())
    md = (tmp_path / "gpu.md").read_text()
    for section in ("preflight", "kernels", "layer_parallel", "graphs", "grid"):
        assert saved[section], section
        assert all("traceback" not in r for r in saved[section]), section
    assert all(r["verdict"] == "met" for r in saved["preflight"])
    assert {r["what"] for r in saved["graphs"]} == {"eager (residuals off)",
                                                    "replayed CUDA graph"}
    assert saved["graphs"][1]["err"] == 0.0
    assert all(r["verdict"] == "n/a (no torch)" for r in saved["grid"])
    assert "## Value-and-gradient, mgnn against PyTorch eager" in md
    assert data["env"]["stand_in"] is True
