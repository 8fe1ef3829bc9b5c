"""Process-count invariance of MGRIT: 1, 2 and 3 ranks under mpiexec.

Each launch runs ``tests/mpi/mgrit_invariance.py`` (a handful of small MGRIT
configurations, including a hierarchy where a rank owns no point of a coarse
level) and dumps JSON; this test compares the residual histories to 1e-12
relative, checks convergence to serial stepping, and that one level is
bit-identical to serial stepping on every process count.
"""

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.mpi

SCRIPT = Path(__file__).parent / "mpi" / "mgrit_invariance.py"


@pytest.fixture(scope="module")
def runs(run_under_mpi):
    return run_under_mpi(SCRIPT, (1, 2, 3), timeout=60)


def test_residual_histories_agree_across_process_counts(runs):
    for name, ref in runs[1].items():
        r1 = np.array(ref["residuals"])
        for p in (2, 3):
            rp = np.array(runs[p][name]["residuals"])
            assert rp.shape == r1.shape, (name, p)
            assert runs[p][name]["nit"] == ref["nit"], (name, p)
            scale = np.maximum(np.abs(r1), 1e-300)
            np.testing.assert_array_less(np.abs(rp - r1) / scale, 1e-12 + 0 * r1,
                                         err_msg=f"{name}, P={p}")


def test_all_configurations_reach_serial_solution(runs):
    for p, cases in runs.items():
        for name, case in cases.items():
            if "err" in case:
                assert case["err"] <= 1e-12, (name, p, case["err"])


def test_one_level_bitwise_on_every_process_count(runs):
    for p in (1, 2, 3):
        assert runs[p]["one_level"]["bitwise"]


def test_converged_warm_start_stays_converged(runs):
    for p in (1, 2, 3):
        case = runs[p]["warm_start"]
        assert case["nit"] == 0
        assert case["residuals"][0] <= 1e-13


def test_a_rank_owns_no_point_of_a_coarse_level(runs):
    # 17 points on 3 ranks, cf=2, down to 1 interval: rank 1 owns nothing on level 4
    assert runs[3]["deep_v_empty_ranks"]["levels_with_empty_rank"] == [4]
