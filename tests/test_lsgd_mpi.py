"""LSGD on layer-distributed networks under mpiexec (1, 2 and 3 ranks; 2 x 1 and 1 x 2 grids).

Runs ``tests/mpi/lsgd_invariance.py``: the closing layer is solved on the last
rank and is part of theta like any other update, so the gathered iterates, losses,
work and solve statistics are identical for P = 1, 2, 3 and equal to the serial
objective's bit for bit (one MGRIT level is the serial sweep); the data-parallel
grid gathers the states of all samples before the solve and agrees with serial to
round-off.
"""

from pathlib import Path

import pytest

pytestmark = pytest.mark.mpi

SCRIPT = Path(__file__).parent / "mpi" / "lsgd_invariance.py"
CASES = ("full", "minibatch", "k0")


@pytest.fixture(scope="module")
def runs(run_under_mpi):
    return run_under_mpi(SCRIPT, (1, 2, 3), timeout=120)


@pytest.mark.parametrize("case", CASES)
def test_identical_on_1_2_3_ranks_and_to_serial(runs, case):
    ref = runs[1][case]
    for p in (1, 2, 3):
        assert runs[p][case]["bitwise_serial"], f"{case} on {p} ranks differs from serial"
        assert runs[p][case] == ref, f"{case} differs between 1 and {p} ranks"
    assert ref["work"] == pytest.approx(ref["serial_work"], rel=1e-14)
    assert min(ref["hist"]["ls_rank"]) >= 1


def test_data_parallel_grids_agree_with_serial(runs):
    for grid in ("grid_2x1", "grid_1x2"):
        c = runs[2][grid]
        assert c["x_err"] <= 1e-12 * max(1.0, c["x_scale"]), grid
        assert c["work"] == pytest.approx(c["serial_work"], rel=1e-14)
