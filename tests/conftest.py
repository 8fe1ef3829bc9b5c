import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "mgnn", deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=False
)
settings.load_profile("mgnn")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def _mpi_available():
    import shutil

    if shutil.which("mpiexec") is None:
        return False
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def run_under_mpi(tmp_path_factory):
    """``run(script, counts, timeout)``: run ``script OUT.json`` under ``mpiexec -n P`` for
    each P in ``counts`` and return ``{P: json_of_P["cases"]}``.

    BLAS and Numba run single-threaded in the launched processes (P ranks x 2 threads
    would oversubscribe the cores, and a threaded GEMM may sum in another order). Skips
    when mpiexec or mpi4py is missing, or when the MPI refuses that many ranks.
    """
    import json
    import os
    import subprocess
    import sys

    if not _mpi_available():
        pytest.skip("mpiexec or mpi4py not available")
    tmp = tmp_path_factory.mktemp("mpi")
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               NUMBA_NUM_THREADS="1")

    def run(script, counts=(1, 2, 3), timeout=90):
        out = {}
        for p in counts:
            path = tmp / f"{script.stem}_p{p}.json"
            cmd = ["mpiexec", "-n", str(p), sys.executable, str(script), str(path)]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                      env=env)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{' '.join(cmd)} timed out")
            if proc.returncode != 0 and p > 1 and "oversubscri" in proc.stderr.lower():
                pytest.skip(f"cannot launch {p} ranks here: {proc.stderr[-300:]}")
            assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
            data = json.loads(path.read_text())
            assert data["size"] == p
            out[p] = data["cases"]
        return out

    return run


# ----------------------------------------------------------------------------- backends
def _backend_params():
    from mgnn.backend import gpu_available

    gpu = gpu_available()
    return ["cpu", "fake", pytest.param("gpu", marks=pytest.mark.skipif(
        not gpu, reason="GPU backend needs CuPy and a CUDA device"))]


@pytest.fixture(params=_backend_params())
def backend(request):
    """Every available array backend: ``'cpu'`` always, ``'fake'`` (the CPU stand-in for
    CuPy, :mod:`mgnn.testing.fakecupy`) always, ``'gpu'`` where CuPy sees a CUDA device
    (skipped cleanly otherwise). Pair it with :func:`to_backend` to move data."""
    return request.param


def device_namespace(backend):
    """The array namespace of a backend name (NumPy, the stand-in, or CuPy)."""
    if backend == "cpu":
        return np
    if backend == "fake":
        from mgnn.testing import fakecupy

        return fakecupy
    import cupy

    return cupy


@pytest.fixture
def to_backend(backend):
    """``move(*arrays)``: the arrays on the test's backend (NumPy as is, or copied to the
    device by :func:`mgnn.backend.to_device`); one array in, one out."""
    def move(*arrays):
        if backend == "cpu":
            return arrays[0] if len(arrays) == 1 else arrays
        from mgnn.backend import to_device

        return to_device(*arrays, xp=device_namespace(backend))
    return move


@pytest.fixture(autouse=True)
def _fakecupy_capture_reset():
    """A test that fails inside an emulated CUDA-graph capture must not leave the
    stand-in capturing for the next test."""
    yield
    import sys

    fc = sys.modules.get("mgnn.testing.fakecupy")
    if fc is not None:
        fc.reset()
