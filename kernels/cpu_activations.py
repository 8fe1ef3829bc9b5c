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
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

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


#: float64 tanh goes through e = expm1(2|x|) and tanh = e / (e + 2), with
#: 2|x| = k ln 2 + r, |r| <= ln(2)/2, and expm1(r) = r + r^2 c(r): EXPM1_C are the
#: coefficients of c (degree 9, constant term first), the minimax of the relative
#: error of expm1 on [-0.35, 0.35] (2.0e-17, 0.18 ulp), fitted by
#: ``python benchmarks/tanh.py --fit`` (Lawson's iteration).
EXPM1_C = (0.5000000000000006, 0.16666666666666582, 0.041666666666569506,
           0.008333333333394106, 0.001388888893412336, 0.00019841269711645305,
           2.480150202400096e-05, 2.7557411061057935e-06, 2.762738716216984e-07,
           2.505380331569154e-08)
#: tanh(19.1) rounds to 1 in float64; |x| is clamped here (so 2^k <= 2^58).
TANH64_CLAMP = 20.0
#: ln 2 split in two doubles (hi = ln 2 rounded, lo = the rest), for the reduction.
LN2_HI = 0.6931471805599453
LN2_LO = 2.3190468138462996e-17
#: 1.5 * 2^52: adding it rounds a double below 2^51 to an integer held in the low
#: bits of the sum.
_ROUND_MAGIC = 6755399441055744.0
_E0, _E1, _E2, _E3, _E4, _E5, _E6, _E7, _E8, _E9 = EXPM1_C


@intrinsic
def _fma(typingctx, a, b, c):
    """``a * b + c`` rounded once (``llvm.fma``: one vfmadd per lane when vectorised)."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None
    sig = a(a, a, a)

    def codegen(context, builder, signature, args):
        t = args[0].type
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(t, [t, t, t]),
                                            f"llvm.fma.f{a.bitwidth}")
        return builder.call(fn, args)

    return sig, codegen


@intrinsic
def _pow2_of_rounded(typingctx, m):
    """``2^k`` from ``m = k + 1.5 * 2^(p-1)`` (k a small integer in m's low bits).

    The low bits of m's significand hold k (two's complement); shifted into the
    exponent field and added to the bits of 1.0 they give the double (float) 2^k.
    Valid for |k| < 1022 (float64) or 126 (float32); two integer operations.
    """
    if not isinstance(m, types.Float):
        return None
    sig = m(m)

    def codegen(context, builder, signature, args):
        single = m.bitwidth == 32
        it = ir.IntType(m.bitwidth)
        shift, one = (23, 0x3F800000) if single else (52, 0x3FF0000000000000)
        bits = builder.bitcast(args[0], it)
        e = builder.add(builder.shl(bits, ir.Constant(it, shift)), ir.Constant(it, one))
        return builder.bitcast(e, args[0].type)

    return sig, codegen


@njit(inline="always", cache=True, error_model="numpy")
def _tanh(x):
    """tanh, vectorisable and branch-free, in the precision of ``x``.

    float32: the rational ``x P(x^2) / Q(x^2)`` (:data:`TANH32_P`, :data:`TANH32_Q`)
    with x clamped to [-9, 9] and the result to [-1, 1], P and Q by Horner's rule in
    explicit FMAs: 14 operations and one division for 16 lanes. Its error,
    measured at every float32 in [0, 9.5] (``python benchmarks/tanh.py``), is at
    most 5.5 ulp, within 1 ulp at 97.3 % and within 2 ulp at 99.8 % of them; the
    large errors are rounding in P and Q where tanh is near 1. (The float32
    scheme used before, expm1(2|x|/64) by a Taylor polynomial and six doublings,
    took 1.8x as long and erred by up to 16 ulp at subnormal x.)

    float64: ``tanh = e / (e + 2)`` with ``e = expm1(2|x|)`` (|x| clamped to 20).
    With ``t = 2|x| = k ln2 + r`` (k rounded by :data:`_ROUND_MAGIC`, r reduced
    by the two-part ln 2 in FMAs), ``expm1(r) = r + r^2 c(r)`` (:data:`EXPM1_C`,
    Horner in FMAs) and ``e = 2^k expm1(r) + (2^k - 1)`` (one FMA; 2^k from k's
    bits): 26 operations and one division for 8 lanes, no cancellation (for
    k >= 1 the two terms of e have the same sign or e >= 0.41). Its error,
    measured against an 80-bit tanh on 2^25 arguments (``python
    benchmarks/tanh.py``), is at most 2.6 ulp, within 1 ulp at 98.5 % of them.
    The FMAs are explicit (``llvm.fma``), so the scalar and the vectorised loop
    give the same bits. (Before, float64 used expm1(2|x|/64) by a Taylor
    polynomial of degree 16 and six doublings: 1.6x the time, up to 8.9 ulp.)

    Both keep the sign of zero and propagate NaN. NumPy's SIMD ``np.tanh`` cannot
    be fused with the bias and the axpy, this can.
    """
    if _single(x):
        y = max(min(x, _X32), -_X32)
        t = y * y
        # (_c: this branch is typed for float64 too, where _fma needs one type)
        p = _fma(_c(_P4, x), t, _c(_P3, x))
        p = _fma(_fma(_fma(p, t, _c(_P2, x)), t, _c(_P1, x)), t, _c(_P0, x))
        q = _fma(_c(_Q4, x), t, _c(_Q3, x))
        q = _fma(_fma(_fma(q, t, _c(_Q2, x)), t, _c(_Q1, x)), t, _c(1.0, x))
        return max(min(y * p / q, np.float32(1.0)), np.float32(-1.0))
    # float64 (Numba types this branch for float32 too; the constants are cast by
    # _c so that it compiles, but float32 never runs it)
    ax = min(abs(x), _c(TANH64_CLAMP, x))
    t = ax + ax
    m = _fma(t, _c(1.0 / LN2_HI, x), _c(_ROUND_MAGIC, x))
    k = m - _c(_ROUND_MAGIC, x)
    r = _fma(-k, _c(LN2_HI, x), t)
    r = _fma(-k, _c(LN2_LO, x), r)
    c = _fma(_c(_E9, x), r, _c(_E8, x))
    c = _fma(c, r, _c(_E7, x))
    c = _fma(c, r, _c(_E6, x))
    c = _fma(c, r, _c(_E5, x))
    c = _fma(c, r, _c(_E4, x))
    c = _fma(c, r, _c(_E3, x))
    c = _fma(c, r, _c(_E2, x))
    c = _fma(c, r, _c(_E1, x))
    c = _fma(c, r, _c(_E0, x))
    p = _fma(r * r, c, r)
    sc = _pow2_of_rounded(m)
    e = _fma(sc, p, sc - _c(1.0, x))
    return math.copysign(e / (e + _c(2.0, x)), x)


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
