"""CUDA C sources of the fused elementwise kernels of :mod:`mgnn.kernels.gpu`.

Kept apart from the CuPy module so that the sources can be inspected and
compiled (``tests/test_gpu_source.py`` runs ``nvcc`` on them) without CuPy or a
GPU. Each entry of :data:`KERNELS` is ``(in_params, out_params, body)`` in the
form of ``cupy.ElementwiseKernel``: array parameters are element references
inside ``body`` (any shape: the same kernels serve one layer and a stack of
layers, whose bias broadcasts as (k, 1, w)); :data:`SCALARS` names the parameters passed as scalars.
"""

from mgnn.kernels.cpu import RELU, SMOOTH_RELU, SMOOTH_RELU_EPS, TANH

PREAMBLE = r"""
#define MG_EPS %(eps)r
template <typename T> __device__ T mg_sigma(T z, int act) {
    if (act == %(relu)d) return (z > T(0) || z != z) ? z : T(0);  /* NaN propagates */
    if (act == %(srelu)d) {
        if (z <= T(-MG_EPS)) return T(0);
        if (z >= T(MG_EPS)) return z;
        return (z + T(MG_EPS)) * (z + T(MG_EPS)) * T(0.25 / MG_EPS);
    }
    if (act == %(tanh)d) return tanh(z);
    return z;
}
template <typename T> __device__ T mg_dsigma(T r, int act) {
    if (act == %(relu)d) return r > T(0) ? T(1) : T(0);
    if (act == %(srelu)d) {
        if (r <= T(-MG_EPS)) return T(0);
        if (r >= T(MG_EPS)) return T(1);
        return (r + T(MG_EPS)) * T(0.5 / MG_EPS);
    }
    if (act == %(tanh)d) return T(1) - r * r;
    return T(1);
}
template <typename T> __device__ T mg_d2sigma(T r, int act) {
    if (act == %(srelu)d) {
        if (r <= T(-MG_EPS) || r >= T(MG_EPS)) return T(0);
        return T(0.5 / MG_EPS);
    }
    if (act == %(tanh)d) return T(-2) * r * (T(1) - r * r);
    return T(0);
}
""" % {"eps": SMOOTH_RELU_EPS, "relu": RELU, "srelu": SMOOTH_RELU, "tanh": TANH}

#: Parameters passed as scalars (all others are arrays, broadcast elementwise).
SCALARS = {"h", "act", "skip", "want_T", "which"}

KERNELS = {
    # S holds U W^T on entry and the record on exit (tanh(Z) for tanh, else Z)
    "forward": (
        "T U, T b, T h, int32 act, bool skip", "T S, T out",
        "T z = S + b; T a = mg_sigma<T>(z, act); S = (act == %d) ? a : z;"
        " out = skip ? U + h * a : h * a;" % TANH),
    "delta": ("T S, T L, T h, int32 act", "T D", "D = h * mg_dsigma<T>(S, act) * L;"),
    "tangent": (
        "T Tm, T db, T S, T dU, T h, int32 act, bool skip, bool want_T", "T dZ, T out",
        "T z = dZ + db; if (want_T) z += Tm; dZ = z;"
        " T v = h * mg_dsigma<T>(S, act) * z; out = skip ? dU + v : v;"),
    "soadjoint": (
        "T S, T dZ, T L, T dL, T h, int32 act", "T D, T dD",
        "T d1 = mg_dsigma<T>(S, act); D = h * d1 * L;"
        " dD = h * (mg_d2sigma<T>(S, act) * dZ * L + d1 * dL);"),
    "activation": (
        "T Z, int32 act, int32 which", "T out",
        "T r = (act == %d) ? tanh(Z) : Z;"
        " out = which == 0 ? mg_sigma<T>(Z, act) : (which == 1 ? mg_dsigma<T>(r, act)"
        " : mg_d2sigma<T>(r, act));" % TANH),
}
