"""The GPU backend: same results as the CPU kernels where CUDA exists; CPU path CuPy-free.

The GPU cases skip cleanly on machines without CuPy or without a CUDA device
(as in CI); the CPU-side promises are checked everywhere.
"""

import subprocess
import sys

import numpy as np
import pytest

from mgnn.backend import get_namespace, gpu_available, to_host
from mgnn.data import peaks
from mgnn.nets import ResNet
from mgnn.objective import Objective

needs_gpu = pytest.mark.skipif(not gpu_available(), reason="needs CuPy and a CUDA device")


def test_cpu_path_imports_nothing_from_cupy():
    code = (
        "import sys, numpy as np, mgnn\n"
        "from mgnn.data import peaks\n"
        "d = peaks(20, 5)\n"
        "net = mgnn.ResNet(2, 3, 4, 5)\n"
        "obj = mgnn.Objective(net, d.X_train, d.Y_train)\n"
        "th = net.init(0)\n"
        "obj.value_and_grad(th); obj.hessp(th, th)\n"
        "assert not any(m == 'cupy' or m.startswith('cupy.') for m in sys.modules), 'cupy'\n"
        "assert 'mgnn.kernels.gpu' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_namespace_follows_the_array_type():
    assert get_namespace(np.zeros(2)) is np
    np.testing.assert_array_equal(to_host(np.ones(3)), np.ones(3))


@pytest.mark.skipif(gpu_available(), reason="checks the message without CuPy")
def test_to_device_without_cupy_says_what_to_install():
    pytest.importorskip("numpy")
    try:
        import cupy  # noqa: F401
    except ImportError:
        from mgnn.backend import to_device

        with pytest.raises(ImportError, match=r"pip install -e \"\.\[gpu\]\""):
            to_device(np.ones(2))


@needs_gpu
@pytest.mark.parametrize("act", ["tanh", "relu", "smooth_relu", "identity"])
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_gpu_equals_cpu_float64(act, task):  # pragma: no cover - needs CUDA
    from mgnn.backend import to_device

    d = peaks(300, 10)
    rng = np.random.default_rng(0)
    net = ResNet(2, 16, 12, 5 if task == "classification" else 1, activation=act, task=task)
    Y = d.Y_train if task == "classification" else rng.standard_normal((300, 1))
    cpu = Objective(net, d.X_train, Y, tikhonov=1e-3, smoothness=1e-2)
    gpu = Objective(net, *to_device(d.X_train, Y), tikhonov=1e-3, smoothness=1e-2)
    theta = net.init(rng) + 0.1 * rng.standard_normal(net.n_params)
    v = rng.standard_normal(net.n_params)
    tg, vg = to_device(theta, v)
    np.testing.assert_allclose(to_host(net.forward(tg, to_device(d.X_train))),
                               net.forward(theta, d.X_train), rtol=1e-12, atol=1e-12)
    fc, gc = cpu.value_and_grad(theta)
    fg, gg = gpu.value_and_grad(tg)
    assert fg == pytest.approx(fc, rel=1e-12)
    np.testing.assert_allclose(to_host(gg), gc, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(to_host(gpu.hessp(tg, vg)), cpu.hessp(theta, v), rtol=1e-12,
                               atol=1e-12)
