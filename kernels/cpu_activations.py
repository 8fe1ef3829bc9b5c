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


@njit(inline="always", cache=True, error_model="numpy")
def _tanh(x):
    """tanh by a vectorisable expm1: a Taylor polynomial of expm1(2|x| / 2^6) and six
    doublings expm1(2a) = expm1(a) (expm1(a) + 2); then tanh = e / (e + 2).

    Branch-free and free of cancellation (all terms positive). float64 uses the
    Taylor polynomial of degree 16 (Estrin's scheme) on |x| <= 20 (tanh rounds to 1
    beyond 19.1); float32 the one of degree 7 on |x| <= 10 (tanh rounds to 1 beyond 9.1 in float32),
    whose truncation error 3e-9 is below half an ulp; both are within a few ulp
    of libm's tanh (checked in the tests). NumPy's SIMD ``np.tanh`` cannot be
    fused with the bias and the axpy, this can.
    """
    if _single(x):
        ax = min(abs(x), np.float32(10.0))
        a = ax * np.float32(2.0 / 64.0)
        p = np.float32(1.0 / 5040.0)
        p = p * a + np.float32(1.0 / 720.0)
        p = p * a + np.float32(1.0 / 120.0)
        p = p * a + np.float32(1.0 / 24.0)
        p = p * a + np.float32(1.0 / 6.0)
        p = p * a + np.float32(0.5)
        p = p * a + np.float32(1.0)
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
