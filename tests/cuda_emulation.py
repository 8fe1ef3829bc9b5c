"""Run mgnn's raw CUDA kernels on the CPU: an emulation of the CUDA execution model.

The kernels of :data:`mgnn.kernels.cuda_source.RAW_SOURCE` are compiled as host C++
(``g++ -std=c++20``) after a header that defines CUDA's built-ins: every thread of a
block is an OS thread, ``__syncthreads()`` is a ``std::barrier`` of the block's
threads, dynamic and static shared memory are per-block buffers (blocks run one after
another), ``threadIdx``/``blockIdx`` are thread-local. The *same source text* that NVRTC
compiles for the GPU runs here, so its indexing, tiling, barriers, padding and
guards are tested without a GPU; what is not tested is the hardware (warp scheduling,
memory model corner cases beyond the barriers, NVRTC itself).

:func:`build` compiles a shared library with C launchers generated from
:data:`mgnn.kernels.cuda_source.RAW_KERNELS` for the requested template instances;
:class:`Emulator` launches them on NumPy arrays with the launch plans of
:func:`mgnn.kernels.cuda_source.plan`, as :mod:`mgnn.kernels.gpu` does on CuPy arrays.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess

import numpy as np
from mgnn.kernels import cuda_source as cs

HEADER = r"""
#include <barrier>
#include <cmath>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>
using std::exp; using std::log; using std::tanh;
#define MG_EMULATION 1
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(x)
#define __shared__ static
#define __align__(n) alignas(n)
struct mg_dim3 { unsigned x, y, z; };
thread_local mg_dim3 threadIdx, blockIdx;
static mg_dim3 blockDim, gridDim;
static unsigned char* mg_emu_smem = nullptr;
static std::barrier<>* mg_emu_barrier = nullptr;
#define MG_DECLARE_SMEM unsigned char* mg_smem = mg_emu_smem;
static inline void __syncthreads() { mg_emu_barrier->arrive_and_wait(); }

static void mg_emu_launch(unsigned gx, unsigned gy, unsigned bx, size_t smem,
                          const std::function<void()>& body) {
    blockDim = {bx, 1, 1};
    gridDim = {gx, gy, 1};
    std::vector<unsigned char> buf(smem + 64);
    for (unsigned y = 0; y < gy; ++y)
        for (unsigned x = 0; x < gx; ++x) {
            // fill shared memory with NaN bytes: a kernel that reads it before writing shows
            std::memset(buf.data(), 0xff, buf.size());
            mg_emu_smem = buf.data();
            std::barrier<> bar(bx);
            mg_emu_barrier = &bar;
            std::vector<std::thread> th;
            th.reserve(bx);
            for (unsigned t = 0; t < bx; ++t)
                th.emplace_back([&, t, x, y] {
                    threadIdx = {t, 0, 0};
                    blockIdx = {x, y, 0};
                    body();
                });
            for (auto& t : th) t.join();
        }
}
"""

_CT = {"T": None, "int": ctypes.c_int, "long long": ctypes.c_longlong}


def _ctype(param_type, T):
    if "*" in param_type:
        return ctypes.c_void_p
    if param_type == "T":
        return ctypes.c_double if T == "double" else ctypes.c_float
    return _CT[param_type]


def _launcher(name, T, widths, rpt):
    tparams, params = cs.RAW_KERNELS[name]
    targs = ",".join([T] + [str(w) for w in widths] + ([] if rpt is None else [str(rpt)]))
    cname = re.sub(r"\W", "_", f"{name}_{targs}")
    plist = ", ".join(f"{t.replace('T', T)} {n}" for t, n in params)
    args = ", ".join(n for _, n in params)
    return cname, (f"extern \"C\" void {cname}(unsigned gx, unsigned gy, unsigned bx, "
                   f"size_t smem{', ' if plist else ''}{plist}) {{\n"
                   f"  mg_emu_launch(gx, gy, bx, smem, [&] {{ {name}<{targs}>({args}); }});\n}}\n")


def build(instances, folder):
    """Compile the launchers of ``instances`` ((name, 'double'|'float', widths, rpt))
    into a shared library in ``folder``; return its path (cached by content)."""
    gxx = shutil.which("g++")
    if gxx is None:
        raise RuntimeError("g++ not found")
    src = [HEADER, cs.PREAMBLE, cs.RAW_PREAMBLE, cs.RAW_SOURCE]
    for inst in instances:
        src.append(_launcher(*inst)[1])
    text = "\n".join(src)
    key = hashlib.sha1(text.encode()).hexdigest()[:16]
    lib = os.path.join(folder, f"mgemu_{key}.so")
    if not os.path.exists(lib):
        cpp = os.path.join(folder, f"mgemu_{key}.cpp")
        with open(cpp, "w") as fh:
            fh.write(text)
        res = subprocess.run([gxx, "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread",
                              "-Wno-unknown-pragmas", "-o", lib, cpp], capture_output=True,
                             text=True, timeout=600)
        if res.returncode:
            raise RuntimeError(res.stderr[-4000:])
    return lib


class Emulator:
    """Launch emulated kernels on NumPy arrays (pointers of views, strides in elements)."""

    def __init__(self, lib, instances):
        self.lib = ctypes.CDLL(lib)
        self.fns = {}
        for name, T, widths, rpt in instances:
            cname, _ = _launcher(name, T, widths, rpt)
            f = getattr(self.lib, cname)
            params = cs.RAW_KERNELS[name][1]
            f.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_size_t] + [
                _ctype(t, T) for t, _ in params]
            f.restype = None
            self.fns[(name, T, tuple(widths), rpt)] = f

    def launch(self, name, dtype, widths, rpt, grid, block, smem, *args):
        T = "double" if np.dtype(dtype) == np.float64 else "float"
        f = self.fns[(name, T, tuple(widths), rpt)]
        conv = []
        for a in args:
            if isinstance(a, np.ndarray):
                conv.append(ctypes.c_void_p(a.__array_interface__["data"][0]))
            else:
                conv.append(a)
        f(grid[0], grid[1], block[0], smem, *conv)

    def planned(self, name, dtype, w_in, w_out, s, k, n_sm, widths, *args):
        """Launch with the GPU module's plan (``n_sm`` picks the tile size)."""
        p = cs.plan(name, np.dtype(dtype).itemsize, w_in, w_out, s, k, n_sm)
        self.launch(name, dtype, widths, p["rpt"], p["grid"], p["block"], p["smem"], *args)
        return p
