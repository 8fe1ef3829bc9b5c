"""Domain-decomposition solvers on 1, 2 and 3 MPI ranks under mpiexec.

Runs ``tests/mpi/dd_invariance.py`` (single-threaded BLAS) and checks that the
iterates after every outer iteration, the loss histories and both work counts
are identical, bit for bit, whatever the mapping of subdomains to ranks.
"""

from pathlib import Path

import pytest

pytestmark = pytest.mark.mpi

SCRIPT = Path(__file__).parent / "mpi" / "dd_invariance.py"
CASES = ["apts_layers", "apts_data", "aspqn_layers", "aspqn_data", "aspqn_tensors",
         "apts_mult", "spqn_mult_data", "apts_two_level", "aspqn_two_level",
         "apts_one_subdomain", "aspqn_two_subdomains"]


@pytest.fixture(scope="module")
def runs(run_under_mpi):
    return run_under_mpi(SCRIPT, (1, 2, 3), timeout=180)


@pytest.mark.parametrize("case", CASES)
def test_identical_on_1_2_3_ranks(runs, case):
    ref = dict(runs[1][case])
    ref.pop("owners")
    assert len(ref["xs"]) == ref["nit"] == 4
    for p in (2, 3):
        got = dict(runs[p][case])
        got.pop("owners")
        assert got == ref, f"{case} differs between 1 and {p} ranks"


def test_subdomains_are_spread_over_the_ranks(runs):
    assert runs[1]["apts_data"]["owners"] == [0, 0, 0, 0, 0]
    assert runs[2]["apts_data"]["owners"] == [0, 0, 0, 1, 1]
    assert runs[3]["apts_data"]["owners"] == [0, 0, 1, 1, 2]
    assert runs[3]["apts_layers"]["owners"] == [0, 1, 2]
    assert runs[2]["apts_mult"]["owners"] == [-1, -1, -1]  # a sequence runs on every rank
    assert runs[3]["aspqn_two_subdomains"]["owners"] == [0, 1]  # rank 2 idle
    for p in (1, 2, 3):
        c = runs[p]["aspqn_data"]
        assert c["parallel_work"] < c["work"]
