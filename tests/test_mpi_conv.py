"""Layer-parallel ConvResNet under mpiexec: identical results on 1, 2 and 3 ranks.

Runs ``tests/mpi/conv_invariance.py`` (single-threaded BLAS and Numba) and checks
that losses, gathered gradients and Adam iterates are identical for P = 1, 2, 3 and
that one MGRIT level reproduces the serial gradient bit for bit.
"""

from pathlib import Path

import pytest

pytestmark = pytest.mark.mpi

SCRIPT = Path(__file__).parent / "mpi" / "conv_invariance.py"


@pytest.fixture(scope="module")
def runs(run_under_mpi):
    return run_under_mpi(SCRIPT, (1, 2, 3), timeout=240)


@pytest.mark.parametrize("case", ["grad_L1", "grad_L2", "grad_L3", "adam"])
def test_identical_on_1_2_3_ranks(runs, case):
    ref = runs[1][case]
    for p in (2, 3):
        assert runs[p][case] == ref, f"{case} differs between 1 and {p} ranks"


def test_one_level_is_serial_bit_for_bit(runs):
    for p in (1, 2, 3):
        assert runs[p]["grad_L1"]["bitwise_serial_grad"]
        assert runs[p]["grad_L1"]["work"] == 3.0
