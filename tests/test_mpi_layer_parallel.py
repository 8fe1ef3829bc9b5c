"""Layer-parallel training on 1, 2 and 3 MPI ranks (and 2 x 1, 1 x 2 grids) under mpiexec.

Runs ``tests/mpi/layer_parallel_invariance.py`` with single-threaded BLAS (a
multi-threaded GEMM may sum in another order when the number of processes
changes the thread count) and checks that losses, gathered gradients, L-BFGS
and Adam iterates and their MGRIT statistics are identical for P = 1, 2, 3;
that one MGRIT level reproduces the serial gradient bit for bit; and that the
data-parallel grids agree with the serial objective to round-off.
"""

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.mpi

SCRIPT = Path(__file__).parent / "mpi" / "layer_parallel_invariance.py"


@pytest.fixture(scope="module")
def runs(run_under_mpi):
    return run_under_mpi(SCRIPT, (1, 2, 3), timeout=90)


@pytest.mark.parametrize("case", ["grad_L1", "grad_L2", "grad_L3", "lbfgs", "adam",
                                  "one_shot_V", "one_shot_F", "defaults", "overflow"])
def test_identical_on_1_2_3_ranks(runs, case):
    ref = runs[1][case]
    for p in (2, 3):
        assert runs[p][case] == ref, f"{case} differs between 1 and {p} ranks"


def test_one_level_is_serial_bit_for_bit(runs):
    for p in (1, 2, 3):
        assert runs[p]["grad_L1"]["bitwise_serial_grad"]
        assert runs[p]["grad_L1"]["work"] == 3.0  # three evaluations, no extra MGRIT work


def test_one_shot_steps_of_all_ranks_and_smoothness(runs):
    for p in (1, 2, 3):
        for case in ("one_shot_V", "one_shot_F", "defaults"):
            c = runs[p][case]
            # counted without communication, equal to the sum over the ranks
            assert c["steps_all"] == c["steps_summed"]
        # the smoothness regulariser's gradient over ranks equals the serial one
        assert runs[p]["smooth_L1"]["bitwise_serial_grad"]


def test_multilevel_one_shot_is_inexact_but_close(runs):
    for case in ("grad_L2", "grad_L3"):
        c = runs[1][case]
        assert 0 < c["err_serial"] < 1e-3
        assert c["fwd_nit"] == 2
        assert c["work"] > 3.0  # MGRIT steps charged beyond the serial sweeps


def test_optimizer_history_has_mgrit_statistics(runs):
    for method in ("lbfgs", "adam"):
        res = np.array(runs[1][method]["mgrit_fwd_residual"], dtype=float)
        assert np.all(np.isfinite(res[1:])) and res.size > 1


def test_data_parallel_grids_agree_with_serial(runs):
    for grid in ("grid_2x1", "grid_1x2"):
        c = runs[2][grid]
        assert c["f_err"] <= 1e-14
        assert c["g_err"] <= 1e-13 * max(1.0, c["g_scale"])


def test_an_overflowing_forward_gives_nan_on_every_rank(runs):
    """The last rank's non-finite loss reaches every rank before the adjoint: no rank
    raises, the gradient is NaN on all of them, the warm starts are dropped."""
    for p in (1, 2, 3):
        c = runs[p]["overflow"]
        assert not c["f_bad_finite"] and c["g_bad_all_nan"]
        assert np.isfinite(c["f_ok"]) and not c["warm_after"]
