"""Compile the CUDA sources of the GPU kernels with nvcc, for float and double.

This checks, without a GPU, that every fused kernel of ``mgnn.kernels.gpu`` is
valid CUDA C in the form CuPy's ElementwiseKernel instantiates it: array
parameters become element references, scalars stay scalars, and the body is
instantiated for ``T = float`` and ``T = double``. Skipped where nvcc is absent.
"""

import shutil
import subprocess

import pytest
from mgnn.kernels.cuda_source import KERNELS, PREAMBLE, SCALARS

NVCC = shutil.which("nvcc")

CTYPES = {"T": "T", "int32": "int", "bool": "bool"}


def harness(name, inp, out, body):
    params, binds = [], []
    for kind, spec in (("in", inp), ("out", out)):
        for item in spec.split(","):
            typ, var = item.split()
            ctype = CTYPES[typ]
            if var in SCALARS:
                params.append(f"{ctype} {var}")
            elif kind == "in":
                params.append(f"const {ctype}* __restrict__ {var}_")
                binds.append(f"const {ctype} {var} = {var}_[i];")
            else:
                params.append(f"{ctype}* __restrict__ {var}_")
                binds.append(f"{ctype}& {var} = {var}_[i];")
    return (f"template <typename T> __global__ void mgnn_{name}({', '.join(params)}, int n) {{\n"
            f"  int i = blockIdx.x * blockDim.x + threadIdx.x; if (i >= n) return;\n"
            f"  {' '.join(binds)}\n  {body}\n}}\n"
            f"template __global__ void mgnn_{name}<float>({', '.join(params).replace('T', 'float')}, int);\n"  # noqa: E501
            f"template __global__ void mgnn_{name}<double>({', '.join(params).replace('T', 'double')}, int);\n")  # noqa: E501


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
def test_cuda_sources_compile(tmp_path):
    src = PREAMBLE + "\n".join(harness(n, *k) for n, k in KERNELS.items())
    cu = tmp_path / "mgnn_kernels.cu"
    cu.write_text(src)
    res = subprocess.run([NVCC, "--ptx", "-arch=sm_90", "-o", str(tmp_path / "k.ptx"), str(cu)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr + "\n" + src
    ptx = (tmp_path / "k.ptx").read_text()
    for name in KERNELS:
        assert f"mgnn_{name}" in ptx
