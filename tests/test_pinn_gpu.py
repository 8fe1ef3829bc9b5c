"""GPU stream kernels: CUDA sources compile with nvcc (no GPU needed); CuPy = CPU where a
device exists (skipped otherwise); the CPU PINN path imports nothing from CuPy."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
from mgnn.kernels.cuda_pinn_source import KERNELS, PREAMBLE, SCALARS

from mgnn.backend import gpu_available

NVCC = shutil.which("nvcc")
CTYPES = {"T": "T", "int32": "int", "bool": "bool"}


def harness(name, inp, out, body):
    """The kernel as CuPy instantiates an ElementwiseKernel whose arrays are all raw:
    pointers indexed by the loop index ``i`` (one thread per element of a plane)."""
    params = []
    for spec in (inp, out):
        for item in spec.split(","):
            words = item.split()
            var = words[-1]
            ctype = CTYPES[words[-2]]
            if var in SCALARS:
                params.append(f"{ctype} {var}")
            else:
                assert words[0] == "raw", item
                params.append(f"{ctype}* __restrict__ {var}")
    plist = ", ".join(params)
    return (f"template <typename T> __global__ void mgnn_{name}({plist}) {{\n"
            f"  ptrdiff_t i = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x;\n"
            f"  if (i >= n) return;\n  {body}\n}}\n"
            f"template __global__ void mgnn_{name}<float>({plist.replace('T', 'float')});\n"
            f"template __global__ void mgnn_{name}<double>({plist.replace('T', 'double')});\n")


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
def test_stream_cuda_sources_compile(tmp_path):
    from test_gpu_source import nvcc_ptx

    src = PREAMBLE + "\n".join(harness(n, *k) for n, k in KERNELS.items())
    ptx = nvcc_ptx(src, tmp_path, "mgnn_stream_kernels")
    for name in KERNELS:
        assert f"mgnn_{name}" in ptx


def test_cpu_pinn_path_imports_nothing_from_cupy():
    code = (
        "import sys, numpy as np\n"
        "from mgnn.nets import ResNet\n"
        "from mgnn.pinn import PINNObjective\n"
        "net = ResNet(2, 3, 2, 1, task='regression')\n"
        "obj = PINNObjective(net, 'burgers', np.random.default_rng(0).uniform(0, 1, (6, 2)))\n"
        "th = net.init(0); obj.value_and_grad(th)\n"
        "assert not any(m == 'cupy' or m.startswith('cupy.') for m in sys.modules), 'cupy'\n"
        "assert 'mgnn.kernels.gpu_pinn' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.skipif(not gpu_available(), reason="needs CuPy and a CUDA device")
@pytest.mark.parametrize("act", ["tanh", "identity"])
def test_gpu_stream_kernels_equal_cpu(act):  # pragma: no cover - needs CUDA
    import cupy as cp
    from mgnn.kernels import cpu_pinn as kc
    from mgnn.kernels import gpu_pinn as kg

    rng = np.random.default_rng(0)
    S, m2, s, w = 5, 2, 33, 7
    a, h = kc.ACTIVATIONS[act], 0.3
    V, dV, L, dL = (rng.standard_normal((S, s, w)) for _ in range(4))
    W, dW = rng.standard_normal((2, w, w))
    b, db = rng.standard_normal((2, w))
    outs = {}
    for name, k, xp in (("cpu", kc, np), ("gpu", kg, cp)):
        A = [xp.asarray(x) for x in (V, dV, L, dL, W, dW, b, db)]
        Vx, dVx, Lx, dLx, Wx, dWx, bx, dbx = A
        G, out, dG, dout, T = (xp.empty((S, s, w)) for _ in range(5))
        k.forward_step(Vx, Wx, bx, h, a, m2, G, out)
        k.tangent_step(Vx, dVx, Wx, dWx, dbx, G, h, a, m2, dG, dout, T=T)
        D, dD, Lo, dLo, tmp = (xp.empty((S, s, w)) for _ in range(5))
        gW, dgW, tmpW = (xp.empty((w, w)) for _ in range(3))
        gb, dgb = xp.empty(w), xp.empty(w)
        k.soadjoint_step(Lx, dLx, Vx, dVx, Wx, dWx, G, dG, h, a, m2, D, dD, L=Lo, dL=dLo,
                         gW=gW, gb=gb, dgW=dgW, dgb=dgb, tmp=tmp, tmpW=tmpW)
        D2, L2 = xp.empty((S, s, w)), xp.empty((S, s, w))
        gW2, gb2 = xp.empty((w, w)), xp.empty(w)
        k.adjoint_step(Lx, Vx, Wx, G, h, a, m2, D2, L=L2, gW=gW2, gb=gb2)
        outs[name] = [np.asarray(x.get() if xp is cp else x)
                      for x in (out, dout, Lo, dLo, gW, gb, dgW, dgb, L2, gW2, gb2)]
    for c, g in zip(outs["cpu"], outs["gpu"], strict=True):
        np.testing.assert_allclose(g, c, rtol=1e-12, atol=1e-12)
