"""Scalar activation pieces of the CPU kernels, inlined into every loop that uses them.

Activations are integer codes (:data:`ACTIVATIONS`). Every function here is
``inline='always'`` and typed by its argument: constants are cast to the type
of the data (``_c(x, like)``) so that float32 loops stay in float32 (a bare
literal would promote them to float64 and halve the SIMD width), and every
kernel uses ``error_model='numpy'`` (with Python's error model each division
carries a zero check that stops LLVM from vectorising).

The *record* of a layer is what the forward step stores for the backward
sweeps: the activation value ``A = tanh(Z)`` for tanh (sigma' = 1 - A^2 needs
no transcendental), the pre-activation ``Z`` for every other activation.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

IDENTITY, TANH, RELU, SMOOTH_RELU = 0, 1, 2, 3
ACTIVATIONS = {"identity": IDENTITY, "tanh": TANH, "relu": RELU, "smooth_relu": SMOOTH_RELU}
#: Half-width of the quadratic piece of the smoothed ReLU (Guenther et al. 2020):
#: sigma(z) = max(z, 0) for |z| > EPS and (z + EPS)^2 / (4 EPS) for |z| <= EPS.
SMOOTH_RELU_EPS = 0.1


def _c(x, like):
    """``x`` as a constant of the floating type of ``like`` (Numba overload below)."""
    return x


@overload(_c, inline="always")
def _c_impl(x, like):
    if isinstance(like, types.Float) and like.bitwidth == 32:
        return lambda x, like: np.float32(x)
    return lambda x, like: np.float64(x)


def _single(like):
    """True when ``like`` is float32 (a compile-time constant in Numba code)."""
    return False


@overload(_single, inline="always")
def _single_impl(like):
    if isinstance(like, types.Float) and like.bitwidth == 32:
        return lambda like: True
    return lambda like: False


#: float32 tanh(x) = x P(x^2) / Q(x^2) on |x| <= TANH32_CLAMP: the minimax rational
#: of relative error 2.1e-8 (0.35 ulp) with P of degree 4, Q of degree 4 and
#: Q(0) = 1, fitted by ``python benchmarks/tanh.py --fit`` (Lawson's iteration).
TANH32_P = (0.9999999794844748839277493, 0.1338102952844204643980984,
            0.00349559214565994885112229, 0.0000206091259679857488617615,
            1.33546834113613211566389e-8)
TANH32_Q = (1.0, 0.467143451431031188039825, 0.0258769990318952073237454,
            0.0003285640395077885909997214, 0.0000007776575244079564777077254)
#: tanh(9) = 1 - 3.0e-8 rounds to the float32 below 1; beyond 9.01 tanh rounds to 1.
TANH32_CLAMP = 9.0
_P0, _P1, _P2, _P3, _P4 = (np.float32(c) for c in TANH32_P)
_Q1, _Q2, _Q3, _Q4 = (np.float32(c) for c in TANH32_Q[1:])
_X32 = np.float32(TANH32_CLAMP)


@njit(inline="always", cache=True, error_model="numpy")
def _tanh(x):
    """tanh, vectorisable and branch-free, in the precision of ``x``.

    float32: the rational ``x P(x^2) / Q(x^2)`` (:data:`TANH32_P`, :data:`TANH32_Q`)
    with x clamped to [-9, 9] and the result to [-1, 1]: 19 operations and one
    division for 16 lanes. Its error, measured at every float32 in [0, 9.5]
    (``python benchmarks/tanh.py``), is at most 6.1 ulp, within 1 ulp at 97.2 %
    and within 2 ulp at 99.8 % of them; the large errors are rounding in P and Q
    where tanh is near 1. (The expm1 scheme below, which float32 used before,
    took twice as long and erred by up to 16 ulp at subnormal x.)

    float64: a vectorisable expm1, the Taylor polynomial of expm1(2|x| / 2^6) of
    degree 16 (Estrin's scheme) on |x| <= 20 (tanh rounds to 1 beyond 19.1) and
    six doublings expm1(2a) = expm1(a) (expm1(a) + 2); then tanh = e / (e + 2).
    Free of cancellation (all terms positive); within a few ulp of libm's tanh.

    Both keep the sign of zero and propagate NaN. NumPy's SIMD ``np.tanh`` cannot
    be fused with the bias and the axpy, this can.
    """
    if _single(x):
        y = max(min(x, _X32), -_X32)
        t = y * y
        p = ((((_P4 * t + _P3) * t + _P2) * t + _P1) * t + _P0)
        q = ((((_Q4 * t + _Q3) * t + _Q2) * t + _Q1) * t + np.float32(1.0))
        return max(min(y * p / q, np.float32(1.0)), np.float32(-1.0))
    else:
        # degree 15 in Estrin's scheme (four levels instead of a 16-step Horner
        # chain: the loop runs ~25 % faster at the same accuracy). Constants typed by
        # _c: both branches are typed for either dtype, and must not promote float32
        ax = min(abs(x), _c(20.0, x))
        a = ax * _c(2.0 / 64.0, x)
        a2 = a * a
        a4 = a2 * a2
        a8 = a4 * a4
        q0 = _c(1.0, x) + _c(0.5, x) * a
        q1 = _c(1.0 / 6.0, x) + _c(1.0 / 24.0, x) * a
        q2 = _c(1.0 / 120.0, x) + _c(1.0 / 720.0, x) * a
        q3 = _c(1.0 / 5040.0, x) + _c(1.0 / 40320.0, x) * a
        q4 = _c(1.0 / 362880.0, x) + _c(1.0 / 3628800.0, x) * a
        q5 = _c(1.0 / 39916800.0, x) + _c(1.0 / 479001600.0, x) * a
        q6 = _c(1.0 / 6227020800.0, x) + _c(1.0 / 87178291200.0, x) * a
        q7 = _c(1.0 / 1307674368000.0, x) + _c(1.0 / 20922789888000.0, x) * a
        r0 = q0 + q1 * a2
        r1 = q2 + q3 * a2
        r2 = q4 + q5 * a2
        r3 = q6 + q7 * a2
        p = (r0 + r1 * a4) + (r2 + r3 * a4) * a8
    e = p * a
    two = _c(2.0, x)
    e = e * (e + two)
    e = e * (e + two)
    e = e * (e + two)
    e = e * (e + two)
    e = e * (e + two)
    e = e * (e + two)
    return math.copysign(e / (e + two), x)


@njit(inline="always", cache=True, error_model="numpy")
def _sigma(z, act):
    zero = _c(0.0, z)
    eps = _c(SMOOTH_RELU_EPS, z)
    # z != z only for NaN, which must propagate (a run that overflowed has to be seen)
    if act == RELU:
        return z if (z > zero or z != z) else zero
    if act == SMOOTH_RELU:
        if z <= -eps:
            return zero
        if z >= eps:
            return z
        return (z + eps) * (z + eps) * _c(0.25 / SMOOTH_RELU_EPS, z)
    if act == TANH:
        return _tanh(z)
    return z


@njit(inline="always", cache=True, error_model="numpy")
def _dsigma(r, act):
    """sigma'(z) from the record r (A for tanh, Z otherwise)."""
    zero, one = _c(0.0, r), _c(1.0, r)
    eps = _c(SMOOTH_RELU_EPS, r)
    if act == RELU:
        return one if r > zero else zero
    if act == SMOOTH_RELU:
        if r <= -eps:
            return zero
        if r >= eps:
            return one
        return (r + eps) * _c(0.5 / SMOOTH_RELU_EPS, r)
    if act == TANH:
        return one - r * r
    return one


@njit(inline="always", cache=True, error_model="numpy")
def _d2sigma(r, act):
    """sigma''(z) from the record r (A for tanh, Z otherwise)."""
    zero, one = _c(0.0, r), _c(1.0, r)
    eps = _c(SMOOTH_RELU_EPS, r)
    if act == SMOOTH_RELU:
        if r <= -eps or r >= eps:
            return zero
        return _c(0.5 / SMOOTH_RELU_EPS, r)
    if act == TANH:
        return _c(-2.0, r) * r * (one - r * r)
    return zero
