"""Runs under mpiexec: faults end the job, networks move between rank counts,
layer-parallel training resumes bit for bit, and the command line trains on 2 ranks.

Faults (``tests/mpi/faults.py``): an exception on rank 1 of 2 (in the objective, in a
callback, from NaN data given to one rank, in an MGRIT stepper) while rank 0 waits in
a collective. Without mgnn's abort handler each case hangs forever (checked by hand:
the ``objective`` case ran into a 20 s timeout); with it the job ends within seconds,
with a non-zero status and the error and the failing rank printed.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import _mpi_available

pytestmark = pytest.mark.mpi

HERE = Path(__file__).parent / "mpi"
ENV = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")


def mpiexec(n, *args, timeout=60):
    if not _mpi_available():
        pytest.skip("mpiexec or mpi4py not available")
    cmd = ["mpiexec", "-n", str(n), *args]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(cmd)} hung (timed out after {timeout} s)")
    return proc, time.perf_counter() - t0


@pytest.mark.parametrize("case,error", [
    ("objective", "RuntimeError: objective failed on purpose"),
    ("callback", "ValueError: callback failed on purpose"),
    ("nan_data", "ValueError: X contains NaN or inf"),
    ("stepper", "RuntimeError: stepper failed on purpose"),
])
def test_a_fault_on_one_rank_ends_the_job(case, error):
    proc, wall = mpiexec(2, sys.executable, str(HERE / "faults.py"), case, timeout=60)
    said = f"status {proc.returncode} after {wall:.1f} s\n{proc.stdout}\n{proc.stderr}"
    assert proc.returncode != 0, said
    assert error in proc.stderr, said
    assert "Traceback" in proc.stderr, said
    assert "mgnn: uncaught" in proc.stderr and "on rank 1 of 2" in proc.stderr, said
    assert "finished" not in proc.stdout, said
    assert wall < 45, said


@pytest.fixture(scope="module")
def saved(run_under_mpi):
    return run_under_mpi(HERE / "save_load.py", (2, 1, 3), timeout=90)


def test_saved_on_2_ranks_loads_on_1_and_3(saved):
    ref = saved[2]
    for p in (1, 3):
        got = saved[p]
        assert got["theta"] == ref["theta"]
        assert got["logits"] == ref["logits"]  # the same predictions, bit for bit
        assert got["f_serial"] == ref["f_serial"]
        # the loaded theta, scattered over p ranks, gives the same loss
        assert got["f_distributed"] == pytest.approx(ref["f_serial"], rel=1e-13)


def test_layer_parallel_resume_on_2_ranks(run_under_mpi):
    out = run_under_mpi(HERE / "resume_lp.py", (2,), timeout=90)[2]
    assert out["part_status"] == 4 and out["part_nit"] == 4  # both ranks stopped together
    assert out["equal"] and out["hist_equal"] and out["work_equal"]
    assert out["files"] == ["ckpt-000000004-rank0of2.npz", "ckpt-000000004-rank1of2.npz"]


def test_command_line_layer_parallel_on_2_ranks(tmp_path):
    out = tmp_path / "out"
    args = [sys.executable, "-m", "mgnn.cli", "train", "--set", "data.n_train=200",
            "--set", "data.n_val=50", "--set", "propagation.kind=layer_parallel",
            "--set", "optimizer.method=lbfgs", "--set", "optimizer.options.maxiter=6",
            "--set", "checkpoint.every=3", "--out", str(out)]
    proc, _ = mpiexec(2, *args, timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("ResNet(") == 1  # rank 0 prints, rank 1 does not
    summary = json.loads((out / "summary.json").read_text())
    assert summary["nit"] == 6
    files = sorted(os.listdir(out / "checkpoints"))
    assert files == [f"ckpt-00000000{k}-rank{r}of2.npz" for k in (3, 6) for r in (0, 1)]
    from mgnn.runs import load_network

    net, theta = load_network(out / "network.npz")
    assert theta.shape == (net.n_params,) and np.all(np.isfinite(theta))
