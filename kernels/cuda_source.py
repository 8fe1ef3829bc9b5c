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


# ------------------------------------------------------------------ graph capture
#: Widest layer (input and output width) that the fused narrow-layer kernels take:
#: its weights sit in shared memory. Wider layers go to cuBLAS.
FUSED_MAX_WIDTH = 64

_LOSSES = ("mse_value", "mse_value_grad", "mse_hessp", "cross_entropy_value",
           "cross_entropy_value_grad", "cross_entropy_hessp")
_STEPS = ("forward_step", "adjoint_step", "tangent_step", "soadjoint_step",
          "forward_step_batch", "adjoint_step_batch")


def capturable(name, *args, **kwargs):
    """Can the GPU kernel ``name`` with these arguments be captured in a CUDA graph?

    Returns True, or a string that says why not. CuPy refuses cuBLAS calls during
    stream capture, so a step is capturable only when it runs on the fused
    narrow-layer kernels (every width <= :data:`FUSED_MAX_WIDTH`); a loss returns
    a host float (a synchronising read) and is never capturable. The CPU
    stand-in for CuPy asks this when a kernel is called during a capture, so the
    rules are the GPU module's.

    Examples
    --------
    >>> import numpy as np
    >>> capturable("forward_step", None, np.zeros((8, 8)))
    True
    >>> capturable("forward_step", None, np.zeros((128, 128)))
    'a layer of width 128 > 64 needs cuBLAS, which CuPy does not capture'
    """
    if name in _LOSSES:
        return "a loss returns a host float (a synchronising device-to-host read)"
    if name.startswith("activation"):
        return True
    if name in _STEPS:
        W = args[2] if name in ("adjoint_step", "adjoint_step_batch", "tangent_step",
                                "soadjoint_step") else args[1]
        w = max(W.shape[-2:])
        if w > FUSED_MAX_WIDTH:
            return (f"a layer of width {w} > {FUSED_MAX_WIDTH} needs cuBLAS, which CuPy "
                    "does not capture")
        return True
    return f"{name} has no capturable GPU implementation"
