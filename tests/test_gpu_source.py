"""The CUDA sources of the GPU kernels, checked without a GPU.

1. ``nvcc`` compiles them for float and double (sm_90): the fused elementwise kernels
   in the form CuPy's ElementwiseKernel instantiates them, and the raw fused
   narrow-layer kernels for several widths and tile sizes (skipped where nvcc is
   absent).
2. The raw kernels *run* on the CPU under an emulation of the CUDA execution model
   (``tests/cuda_emulation.py``: a thread per CUDA thread, a barrier per block, shared
   memory per block, filled with NaN bytes so that a read before a write shows) with
   the launch plans of the GPU module, and must equal the CPU kernels of
   :mod:`mgnn.kernels.cpu`: single steps, stacks with negative layer strides (MGRIT's
   descending views), the opening layer's rectangular weights, whole forward, adjoint,
   tangent and second-order sweeps over a sub-range of layers, the column sums and the
   cross-entropy rows. Width 6 leaves 4 of 256 threads idle and every tile partly
   padded (skipped where g++ is absent).
"""

import shutil
import subprocess

import numpy as np
import pytest
from mgnn.kernels import cpu
from mgnn.kernels import cuda_source as cs
from mgnn.kernels.cuda_source import KERNELS, PREAMBLE, SCALARS

NVCC = shutil.which("nvcc")
GXX = shutil.which("g++")

CTYPES = {"T": "T", "int32": "int", "bool": "bool"}


def nvcc_ptx(src, tmp_path, name="mgnn_kernels", extra=()):
    """Compile CUDA C ``src`` to PTX with nvcc (sm_90) and return the PTX text; the
    test fails with nvcc's message and the source when it does not compile. Also
    used by the conv and PINN source tests."""
    cu = tmp_path / f"{name}.cu"
    cu.write_text(src)
    res = subprocess.run([NVCC, "--ptx", "-arch=sm_90", *extra, "-o", str(tmp_path / "k.ptx"),
                          str(cu)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr + "\n" + src
    return (tmp_path / "k.ptx").read_text()
ACTS = sorted(cpu.ACTIVATIONS.items())


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


def instantiation(name, T, widths, rpt):
    tparams, params = cs.RAW_KERNELS[name]
    targs = ",".join([T] + [str(w) for w in widths] + ([] if rpt is None else [str(rpt)]))
    plist = ", ".join(t.replace("T", T) for t, _ in params)
    return f"template __global__ void {name}<{targs}>({plist});"


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
def test_cuda_sources_compile(tmp_path):
    src = PREAMBLE + "\n".join(harness(n, *k) for n, k in KERNELS.items())
    ptx = nvcc_ptx(src, tmp_path)
    for name in KERNELS:
        assert f"mgnn_{name}" in ptx


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
def test_raw_sources_compile_for_every_kernel(tmp_path):
    inst = []
    for name, (tparams, _) in cs.RAW_KERNELS.items():
        for T in ("float", "double"):
            if len(tparams) == 1:
                inst.append(instantiation(name, T, (), None))
            elif len(tparams) == 3:
                inst += [instantiation(name, T, (w,), r) for w, r in ((7, 1), (64, 8))]
            else:
                inst += [instantiation(name, T, wio, r) for wio, r in (((2, 64), 4),
                                                                       ((64, 64), 1))]
    src = PREAMBLE + cs.RAW_PREAMBLE + cs.RAW_SOURCE + "\n".join(inst) + "\n"
    cu = tmp_path / "mgnn_raw.cu"
    cu.write_text(src)
    res = subprocess.run([NVCC, "--ptx", "-arch=sm_90", "-std=c++17", "-o",
                          str(tmp_path / "raw.ptx"), str(cu)], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    ptx = (tmp_path / "raw.ptx").read_text()
    for name in cs.RAW_KERNELS:
        assert name in ptx


def test_plans_fit_shared_memory_and_fill_the_device():
    for name in ("mgnn_fwd_step", "mgnn_adj_step", "mgnn_fwd_sweep", "mgnn_adj_sweep",
                 "mgnn_tan_sweep", "mgnn_soadj_sweep"):
        for w in (1, 5, 32, 64):
            for s in (1, 64, 5000, 50000):
                for it in (4, 8):
                    p = cs.plan(name, it, w, w, s)
                    assert p["smem"] <= cs.SMEM_LIMIT
                    assert p["grid"][0] * p["rows"] >= s > (p["grid"][0] - 1) * p["rows"]
    assert cs.plan("mgnn_fwd_sweep", 8, 32, 32, 50000)["rpt"] == 8
    assert cs.plan("mgnn_fwd_sweep", 8, 32, 32, 64)["rpt"] == 1
    with pytest.raises(ValueError, match="widths <= 64"):
        cs.plan("mgnn_fwd_step", 8, 65, 65, 10)


# ------------------------------------------------------------------- emulation
W, STEP_WIDTHS = 6, ((6, 6), (2, 6))
SWEEPS = ("mgnn_fwd_sweep", "mgnn_adj_sweep", "mgnn_tan_sweep", "mgnn_soadj_sweep")
INSTANCES = (
    [(n, "double", wio, r) for n in ("mgnn_fwd_step", "mgnn_adj_step") for wio in STEP_WIDTHS
     for r in (1, 2)]
    + [(n, "double", (W,), r) for n in SWEEPS for r in (1, 2)]
    + [("mgnn_fwd_step", "float", (6, 6), 2), ("mgnn_fwd_sweep", "float", (W,), 2)]
    + [(n, T, (), None) for n in ("mgnn_colsum_part", "mgnn_colsum_final")
       for T in ("double", "float")]
    + [("mgnn_xent_rows", "double", (), None)])


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    if GXX is None:
        pytest.skip("g++ not installed")
    from cuda_emulation import Emulator, build

    lib = build(INSTANCES, str(tmp_path_factory.mktemp("emu")))
    return Emulator(lib, INSTANCES)


def n_sm_for(name, w_in, w_out, s, k, rpt, itemsize=8):
    """A multiprocessor count for which the GPU module's plan picks ``rpt``."""
    for n in range(1, 200):
        if cs.plan(name, itemsize, w_in, w_out, s, k, n)["rpt"] == rpt:
            return n
    raise AssertionError(f"no plan with rpt={rpt}")


def rnd(rng, *shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


def close(a, b, dtype=np.float64):
    tol = 1e-12 if np.dtype(dtype) == np.float64 else 2e-5
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def stride(a, layer_ndim=2):
    """Layer stride in elements of a stack (0 for a single layer)."""
    return np.int64(a.strides[0] // a.itemsize) if a.ndim > layer_ndim else np.int64(0)


def stk(a, layer_ndim=2):
    """``[a, its layer stride]``: the pair of kernel arguments of a (stack of) layer(s)."""
    return [a, stride(a, layer_ndim)]


@pytest.mark.parametrize("act_name, act", ACTS)
@pytest.mark.parametrize("wio", STEP_WIDTHS)
@pytest.mark.parametrize("rpt", [1, 2])
def test_emulated_forward_step_equals_the_cpu(emu, act_name, act, wio, rpt):
    rng = np.random.default_rng(act + 10 * rpt)
    w_in, w_out = wio
    s, h = 100, 0.3
    skip = int(w_in == w_out)
    U, Wm, b = rnd(rng, s, w_in), rnd(rng, w_out, w_in), rnd(rng, w_out)
    S, out = np.full((s, w_out), np.nan), np.full((s, w_out), np.nan)
    n = n_sm_for("mgnn_fwd_step", w_in, w_out, s, 1, rpt)
    emu.planned("mgnn_fwd_step", np.float64, w_in, w_out, s, 1, n, wio, U, np.int64(0), Wm,
                np.int64(0), b, np.int64(0), S, np.int64(0), out, np.int64(0), s, h, act, skip)
    S0, out0 = np.empty_like(S), np.empty_like(out)
    cpu.forward_step(U, Wm, b, h, act, S0, out0, skip=bool(skip))
    close(S, S0)
    close(out, out0)


def test_emulated_forward_step_on_descending_stacks_and_in_float32(emu):
    rng = np.random.default_rng(1)
    s, w, h, act = 100, W, 0.25, cpu.TANH
    Ubig, Sbig, Obig = rnd(rng, 5, s, w), np.zeros((7, s, w)), np.zeros((5, s, w))
    theta = rnd(rng, 5, w * w + w)
    U, S, out = Ubig[4::-2], Sbig[6::-3], Obig[::2]   # 3 layers, strides -2, -3, +2
    Wm, b = theta[4::-2, : w * w].reshape(3, w, w), theta[4::-2, w * w:]
    n = n_sm_for("mgnn_fwd_step", w, w, s, 3, 2)
    emu.planned("mgnn_fwd_step", np.float64, w, w, s, 3, n, (w, w), *stk(U), *stk(Wm),
                *stk(b, 1), *stk(S), *stk(out), s, h, act, 1)
    for q in range(3):
        S0, o0 = np.empty((s, w)), np.empty((s, w))
        cpu.forward_step(U[q], Wm[q], b[q], h, act, S0, o0)
        close(S[q], S0)
        close(out[q], o0)
    # float32, one layer
    U32, W32, b32 = (a.astype(np.float32) for a in (U[0], Wm[0], b[0]))
    S32, o32 = np.empty((s, w), np.float32), np.empty((s, w), np.float32)
    n = n_sm_for("mgnn_fwd_step", w, w, s, 1, 2, itemsize=4)
    emu.planned("mgnn_fwd_step", np.float32, w, w, s, 1, n, (w, w), U32, np.int64(0), W32,
                np.int64(0), b32, np.int64(0), S32, np.int64(0), o32, np.int64(0), s,
                np.float32(h), act, 1)
    S0, o0 = np.empty_like(S32), np.empty_like(o32)
    cpu.forward_step(U32, W32, b32, h, act, S0, o0)
    close(o32, o0, np.float32)


@pytest.mark.parametrize("act_name, act", ACTS)
@pytest.mark.parametrize("wio", STEP_WIDTHS)
@pytest.mark.parametrize("want_L", [0, 1])
def test_emulated_adjoint_step_equals_the_cpu(emu, act_name, act, wio, want_L):
    if want_L and wio[0] != wio[1]:
        pytest.skip("the opening layer's adjoint needs no input adjoint")
    rng = np.random.default_rng(act + 7)
    w_in, w_out = wio
    s, h, k = 90, 0.4, 3
    skip = int(w_in == w_out)
    # descending stacks of 3 layers, as MGRIT's adjoint relaxation passes them
    Ln = rnd(rng, 3 * k, s, w_out)[::-3]
    S = rnd(rng, 2 * k, s, w_out)[::-2]
    if act == cpu.TANH:
        S = np.tanh(S)
    Wm = rnd(rng, k, w_out, w_in)
    D, L = np.full((k, s, w_out), np.nan), np.full((k, s, w_in), np.nan)
    n = n_sm_for("mgnn_adj_step", w_in, w_out, s, k, 1)
    emu.planned("mgnn_adj_step", np.float64, w_in, w_out, s, k, n, wio, *stk(Ln), *stk(S),
                *stk(Wm), *stk(D), *stk(L), s, h, act, skip, want_L)
    for q in range(k):
        D0, L0 = np.empty((s, w_out)), np.empty((s, w_in))
        cpu.adjoint_step(Ln[q], np.zeros((s, w_in)), Wm[q], S[q], h, act, D0,
                         L=L0 if want_L else None, skip=bool(skip))
        close(D[q], D0)
        if want_L:
            close(L[q], L0)
    if not want_L:
        assert np.isnan(L).all()   # not written


def sweep_problem(rng, act, N=5, s=100, w=W):
    U = np.full((N + 1, s, w), np.nan)
    U[0] = rnd(rng, s, w)
    P = 0.5 * rnd(rng, N * (w * w + w))
    dP = rnd(rng, N * (w * w + w))
    return U, P, dP


def blocks(P, N, w):
    B = P.reshape(N, w * w + w)
    return B[:, : w * w].reshape(N, w, w), B[:, w * w:]


@pytest.mark.parametrize("act_name, act", ACTS)
@pytest.mark.parametrize("rpt", [1, 2])
def test_emulated_sweeps_equal_stepping_with_the_cpu_kernels(emu, act_name, act, rpt):
    rng = np.random.default_rng(act + 100 * rpt)
    N, s, w, h = 5, 100, W, 0.3
    n0, n1 = 1, 5                                  # a sub-range of the layers
    U, P, dP = sweep_problem(rng, act, N, s, w)
    Wn, bn = blocks(P, N, w)
    dWn, dbn = blocks(dP, N, w)
    # reference: the CPU steps layer by layer
    Ur, Sr = U.copy(), np.full((N, s, w), np.nan)
    Ur[n0] = Ur[0]
    for n in range(n0, n1):
        cpu.forward_step(Ur[n], Wn[n], bn[n], h, act, Sr[n], Ur[n + 1])
    Ue, Se = U.copy(), np.full((N, s, w), np.nan)
    Ue[n0] = Ue[0]
    nsm = n_sm_for("mgnn_fwd_sweep", w, w, s, 1, rpt)
    emu.planned("mgnn_fwd_sweep", np.float64, w, w, s, 1, nsm, (w,), Ue, P, Se, n0, n1, s, h,
                act)
    close(Se[n0:n1], Sr[n0:n1])
    close(Ue[n0:], Ur[n0:])
    assert np.isnan(Se[0]).all()                   # layers outside the range untouched
    # adjoint
    lamN = rnd(rng, s, w)
    Lr = lamN.copy()
    Dr = np.empty((N, s, w))
    for n in range(n1 - 1, n0 - 1, -1):
        Lnew = np.empty((s, w))
        cpu.adjoint_step(Lr, Ue[n], Wn[n], Se[n], h, act, Dr[n], L=Lnew)
        Lr = Lnew
    Lio, Dall = lamN.copy(), np.full((N, s, w), np.nan)
    emu.planned("mgnn_adj_sweep", np.float64, w, w, s, 1, n_sm_for("mgnn_adj_sweep", w, w, s, 1,
                                                                   rpt),
                (w,), Lio, Lio, P, Se, Dall, n0, n1, s, h, act)   # in place: Lout is Lin
    close(Lio, Lr)
    close(Dall[n0:n1], Dr[n0:n1])
    # tangent
    dU = np.full((N + 1, s, w), np.nan)
    dU[n0] = rnd(rng, s, w)
    dUr, dZr = dU.copy(), np.full((N, s, w), np.nan)
    T = np.empty((s, w))
    for n in range(n0, n1):
        cpu.tangent_step(Ue[n], dUr[n], Wn[n], dWn[n], dbn[n], Se[n], h, act, dZr[n],
                         dUr[n + 1], T=T)
    dZ = np.full((N, s, w), np.nan)
    emu.planned("mgnn_tan_sweep", np.float64, w, w, s, 1, n_sm_for("mgnn_tan_sweep", w, w, s, 1,
                                                                   rpt),
                (w,), Ue, dU, P, dP, Se, dZ, n0, n1, s, h, act)
    close(dZ[n0:n1], dZr[n0:n1])
    close(dU[n0 + 1:], dUr[n0 + 1:])
    # second-order adjoint
    dlamN = rnd(rng, s, w)
    Lr, dLr = lamN.copy(), dlamN.copy()
    Dr, dDr = np.empty((N, s, w)), np.empty((N, s, w))
    tmp = np.empty((s, w))
    for n in range(n1 - 1, n0 - 1, -1):
        Ln, dLn = np.empty((s, w)), np.empty((s, w))
        cpu.soadjoint_step(Lr, dLr, Ue[n], dU[n], Wn[n], dWn[n], Se[n], dZ[n], h, act, Dr[n],
                           dDr[n], L=Ln, dL=dLn, dgb=np.empty(w), tmp=tmp)
        Lr, dLr = Ln, dLn
    Lin, dLin = lamN.copy(), dlamN.copy()
    Lout, dLout = np.full((s, w), np.nan), np.full((s, w), np.nan)
    Dall, dDall = np.full((N, s, w), np.nan), np.full((N, s, w), np.nan)
    emu.planned("mgnn_soadj_sweep", np.float64, w, w, s, 1,
                n_sm_for("mgnn_soadj_sweep", w, w, s, 1, rpt), (w,), Lin, dLin, Lout, dLout, P,
                dP, Se, dZ, Dall, dDall, n0, n1, s, h, act)
    close(Lout, Lr)
    close(dLout, dLr)
    close(Dall[n0:n1], Dr[n0:n1])
    close(dDall[n0:n1], dDr[n0:n1])


def test_emulated_forward_sweep_in_float32(emu):
    rng = np.random.default_rng(5)
    N, s, w, h, act = 4, 100, W, 0.3, cpu.SMOOTH_RELU
    U, P, _ = sweep_problem(rng, act, N, s, w)
    U, P = U.astype(np.float32), P.astype(np.float32)
    Wn, bn = blocks(P, N, w)
    Ur, Sr = U.copy(), np.empty((N, s, w), np.float32)
    for n in range(N):
        cpu.forward_step(Ur[n], Wn[n], bn[n], h, act, Sr[n], Ur[n + 1])
    S = np.empty((N, s, w), np.float32)
    emu.planned("mgnn_fwd_sweep", np.float32, w, w, s, 1,
                n_sm_for("mgnn_fwd_sweep", w, w, s, 1, 2, itemsize=4), (w,), U, P, S, 0, N, s,
                np.float32(h), act)
    close(U, Ur, np.float32)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("s, w, k", [(1, 3, 1), (257, 40, 1), (1000, 6, 3), (70, 33, 2)])
def test_emulated_column_sums_are_exact_sums(emu, dtype, s, w, k):
    rng = np.random.default_rng(s + w)
    big = rnd(rng, 2 * k, s, w, dtype=dtype)
    A = big[::-2] if k > 1 else big[0]
    outbig = np.full((k, w + 3), np.nan, dtype)
    out = outbig[:, :w] if k > 1 else outbig[0, :w]
    chunk, nchunks = cs.colsum_plan(s, k, n_sm=2)
    part = np.full((k, nchunks, w), np.nan, dtype)
    T = "double" if dtype == np.float64 else "float"
    sa = np.int64(A.strides[0] // A.itemsize) if k > 1 else np.int64(0)
    so = np.int64(out.strides[0] // out.itemsize) if k > 1 else np.int64(0)
    emu.launch("mgnn_colsum_part", dtype, (), None, (nchunks, k, 1), (256, 1, 1), 0, A, sa,
               s, w, chunk, part, nchunks)
    emu.launch("mgnn_colsum_final", dtype, (), None, (-(-w // 256), k, 1), (256, 1, 1), 0, part,
               nchunks, w, out, so)
    assert T
    close(out, A.sum(axis=-2), dtype)
    assert np.isnan(outbig[:, w:]).all()


@pytest.mark.parametrize("want_grad", [0, 1])
def test_emulated_cross_entropy_rows_equal_the_cpu(emu, want_grad):
    rng = np.random.default_rng(3)
    s, m = 300, 5
    Y = 3.0 * rnd(rng, s, m)
    labels = rng.integers(0, m, s).astype(np.int64)
    G, loss = np.full((s, m), np.nan), np.empty(s)
    emu.launch("mgnn_xent_rows", np.float64, (), None, (-(-s // 256), 1, 1), (256, 1, 1), 0, Y,
               labels, s, m, G, loss, want_grad)
    G0 = np.empty((s, m))
    val = cpu.cross_entropy_value_grad(Y, labels, G0)
    assert loss.sum() / s == pytest.approx(val, rel=1e-13)
    if want_grad:
        close(G, G0)
    else:
        assert np.isnan(G).all()
