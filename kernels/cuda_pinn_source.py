"""CUDA C sources of the fused stream kernels of :mod:`mgnn.kernels.gpu_pinn`.

Kept apart from the CuPy module (as :mod:`mgnn.kernels.cuda_source` is) so that
``tests/test_pinn_gpu_source.py`` can compile them with ``nvcc`` for float and
double without CuPy or a GPU. Each entry of :data:`KERNELS` is ``(in_params,
out_params, body)`` in the form of ``cupy.ElementwiseKernel``; every array is
``raw`` (a flat 1-D view of a C-contiguous stack), the index ``i`` runs over one
stream plane of ``n = s * w`` elements and the body loops over the ``S`` streams
(element ``i`` of stream ``j`` is ``X[j * n + i]``); :data:`SCALARS` names the
scalar parameters. The formulas are those of :mod:`mgnn.kernels.cpu_pinn`.
"""

from mgnn.kernels.cpu import TANH
from mgnn.kernels.cuda_source import PREAMBLE as _BASE

PREAMBLE = _BASE + r"""
template <typename T> __device__ T mg_d3sigma(T r, int act) {
    if (act == %(tanh)d) { T a2 = r * r; return (T(1) - a2) * (T(6) * a2 - T(2)); }
    return T(0);
}
template <typename T> __device__ T mg_d4sigma(T r, int act) {
    if (act == %(tanh)d) { T a2 = r * r; return T(8) * r * (T(2) - T(3) * a2) * (T(1) - a2); }
    return T(0);
}
""" % {"tanh": TANH}

#: Scalar parameters (everything else is a raw array).
SCALARS = {"h", "act", "S", "m2", "n", "w", "skip", "want_T"}

_FORWARD = r"""
const int m1 = S - 1 - m2;
T z = G[i] + b[i %% w];
T a = mg_sigma<T>(z, act);
T r = (act == %(tanh)d) ? a : z;
G[i] = r;
out[i] = skip ? V[i] + h * a : h * a;
T d1 = mg_dsigma<T>(r, act), d2 = mg_d2sigma<T>(r, act);
for (int j = 1; j <= m1; ++j) {
    ptrdiff_t e = (ptrdiff_t)j * n + i;
    T v = h * d1 * G[e];
    out[e] = skip ? V[e] + v : v;
}
for (int q = 0; q < m2; ++q) {
    ptrdiff_t ep = (ptrdiff_t)(1 + q) * n + i, eq = (ptrdiff_t)(1 + m1 + q) * n + i;
    T P = G[ep];
    T v = h * (d2 * P * P + d1 * G[eq]);
    out[eq] = skip ? V[eq] + v : v;
}
""" % {"tanh": TANH}

_DELTA = r"""
const int m1 = S - 1 - m2;
T r = G[i];
T d1 = mg_dsigma<T>(r, act), d2 = mg_d2sigma<T>(r, act), d3 = mg_d3sigma<T>(r, act);
T acc = d1 * h * Ln[i];
for (int j = 1; j <= m1; ++j) {
    ptrdiff_t e = (ptrdiff_t)j * n + i;
    T M = h * Ln[e];
    acc += d2 * G[e] * M;
    D[e] = d1 * M;
}
for (int q = 0; q < m2; ++q) {
    ptrdiff_t ep = (ptrdiff_t)(1 + q) * n + i, eq = (ptrdiff_t)(1 + m1 + q) * n + i;
    T P = G[ep], N = h * Ln[eq];
    acc += (d3 * P * P + d2 * G[eq]) * N;
    D[ep] += T(2) * d2 * P * N;
    D[eq] = d1 * N;
}
D[i] = acc;
"""

_TANGENT = r"""
const int m1 = S - 1 - m2;
T r = G[i];
T d1 = mg_dsigma<T>(r, act), d2 = mg_d2sigma<T>(r, act), d3 = mg_d3sigma<T>(r, act);
for (int j = 0; j < S; ++j) {
    ptrdiff_t e = (ptrdiff_t)j * n + i;
    T x = dG[e];
    if (want_T) x += Tm[e];
    if (j == 0) x += db[i % w];
    dG[e] = x;
}
T dz = dG[i];
T v0 = h * d1 * dz;
out[i] = skip ? dV[i] + v0 : v0;
for (int j = 1; j <= m1; ++j) {
    ptrdiff_t e = (ptrdiff_t)j * n + i;
    T v = h * (d2 * dz * G[e] + d1 * dG[e]);
    out[e] = skip ? dV[e] + v : v;
}
for (int q = 0; q < m2; ++q) {
    ptrdiff_t ep = (ptrdiff_t)(1 + q) * n + i, eq = (ptrdiff_t)(1 + m1 + q) * n + i;
    T P = G[ep];
    T v = h * (d3 * dz * P * P + T(2) * d2 * P * dG[ep] + d2 * dz * G[eq] + d1 * dG[eq]);
    out[eq] = skip ? dV[eq] + v : v;
}
"""

_SOADJOINT = r"""
const int m1 = S - 1 - m2;
T r = G[i];
T d1 = mg_dsigma<T>(r, act), d2 = mg_d2sigma<T>(r, act);
T d3 = mg_d3sigma<T>(r, act), d4 = mg_d4sigma<T>(r, act);
T dz = dG[i];
T L0 = h * Ln[i];
T acc = d1 * L0;
T dacc = d2 * dz * L0 + d1 * h * dLn[i];
for (int j = 1; j <= m1; ++j) {
    ptrdiff_t e = (ptrdiff_t)j * n + i;
    T P = G[e], M = h * Ln[e], dM = h * dLn[e];
    acc += d2 * P * M;
    D[e] = d1 * M;
    dacc += d3 * dz * P * M + d2 * (dG[e] * M + P * dM);
    dD[e] = d2 * dz * M + d1 * dM;
}
for (int q = 0; q < m2; ++q) {
    ptrdiff_t ep = (ptrdiff_t)(1 + q) * n + i, eq = (ptrdiff_t)(1 + m1 + q) * n + i;
    T P = G[ep], dP = dG[ep], Q = G[eq], N = h * Ln[eq], dN = h * dLn[eq];
    acc += (d3 * P * P + d2 * Q) * N;
    D[ep] += T(2) * d2 * P * N;
    D[eq] = d1 * N;
    dacc += (d4 * dz * P * P + T(2) * d3 * P * dP + d3 * dz * Q + d2 * dG[eq]) * N
            + (d3 * P * P + d2 * Q) * dN;
    dD[ep] += T(2) * (d3 * dz * P * N + d2 * dP * N + d2 * P * dN);
    dD[eq] = d2 * dz * N + d1 * dN;
}
D[i] = acc;
dD[i] = dacc;
"""

KERNELS = {
    "stream_forward": (
        "raw T V, raw T b, T h, int32 act, int32 S, int32 m2, int32 n, int32 w, bool skip",
        "raw T G, raw T out", _FORWARD),
    "stream_delta": (
        "raw T G, raw T Ln, T h, int32 act, int32 S, int32 m2, int32 n", "raw T D", _DELTA),
    "stream_tangent": (
        "raw T Tm, raw T db, raw T G, raw T dV, T h, int32 act, int32 S, int32 m2, int32 n, "
        "int32 w, bool skip, bool want_T", "raw T dG, raw T out", _TANGENT),
    "stream_soadjoint": (
        "raw T G, raw T dG, raw T Ln, raw T dLn, T h, int32 act, int32 S, int32 m2, int32 n",
        "raw T D, raw T dD", _SOADJOINT),
}
