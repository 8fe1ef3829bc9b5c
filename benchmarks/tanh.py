"""The tanh of the CPU kernels, float32 and float64: its error and its speed.

mgnn's ``tanh`` (``kernels.cpu_activations._tanh``) is, in float32, a minimax
rational ``x P(x^2) / Q(x^2)`` (degrees 4 and 4 in x^2, in FMAs) on [-9, 9], and in
float64 ``e / (e + 2)`` with ``e = expm1(2|x|)`` by a reduction ``2|x| = k ln 2 + r``
and a minimax polynomial of expm1 on [-0.35, 0.35] (degree 11), in FMAs. This script

* measures the float32 error at **every** float32 in [0, 9.5] (the function is odd;
  beyond 9.5 it returns 1, which is tanh rounded) against float64 ``np.tanh``,
  in units in the last place of the float32 result, and counts results outside
  [-1, 1];
* measures the float64 error on 2^25 arguments (2^23 each: uniform on [0, 20],
  log-uniform on [1e-300, 20], and within 1e-3 of the points where the reduction
  changes k, (j + 1/2) ln(2)/2; plus 2^23 uniform on [0, 1]) against the 80-bit
  ``np.tanh`` of ``np.longdouble``, in ulp of the float64 result;
* times both (ns per element, median of repeats, inside a Numba loop over 4096
  values drawn from N(0, 1)) against the baselines measured in the same run: the
  schemes used before, expm1(2|x| / 64) by a Taylor polynomial (degree 7 in
  float32, 16 in float64) and six doublings;
* with ``--fit``, derives the coefficients again (Lawson's iteratively reweighted
  least squares, 40-digit mpmath): for float32 the minimax relative error of
  tanh(x)/x = P(t)/Q(t), t = x^2, on [0, 9]; for float64 the minimax relative
  error of expm1(r) = r + r^2 c(r) on [-0.35, 0.35]; and prints them next to
  the committed ones.

Run ``python benchmarks/tanh.py`` (about a minute; ``--fit`` adds two minutes);
``--json PATH`` saves the numbers.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from _common import machine_info, measure, save_json
from mgnn.kernels import cpu as K
from mgnn.kernels.cpu_activations import EXPM1_C, TANH32_CLAMP, TANH32_P, TANH32_Q, _tanh
from numba import njit

#: Largest float32 argument checked (tanh rounds to 1 beyond 9.01).
TOP = 9.5


@njit(inline="always", error_model="numpy")
def _tanh32_expm1(x):
    """The float32 tanh of mgnn before the rational: expm1 by Taylor and doublings."""
    ax = min(abs(x), np.float32(10.0))
    a = ax * np.float32(2.0 / 64.0)
    p = np.float32(1.0 / 5040.0)
    p = p * a + np.float32(1.0 / 720.0)
    p = p * a + np.float32(1.0 / 120.0)
    p = p * a + np.float32(1.0 / 24.0)
    p = p * a + np.float32(1.0 / 6.0)
    p = p * a + np.float32(0.5)
    p = p * a + np.float32(1.0)
    e = p * a
    two = np.float32(2.0)
    for _ in range(6):
        e = e * (e + two)
    return math.copysign(e / (e + two), x)


@njit(inline="always", error_model="numpy")
def _tanh64_taylor(x):
    """The float64 tanh of mgnn before the reduction: expm1(2|x| / 64) by its Taylor
    polynomial of degree 16 (Estrin's scheme) and six doublings."""
    a = min(abs(x), 20.0) * (2.0 / 64.0)
    a2 = a * a
    a4 = a2 * a2
    a8 = a4 * a4
    q0 = 1.0 + 0.5 * a
    q1 = 1.0 / 6.0 + 1.0 / 24.0 * a
    q2 = 1.0 / 120.0 + 1.0 / 720.0 * a
    q3 = 1.0 / 5040.0 + 1.0 / 40320.0 * a
    q4 = 1.0 / 362880.0 + 1.0 / 3628800.0 * a
    q5 = 1.0 / 39916800.0 + 1.0 / 479001600.0 * a
    q6 = 1.0 / 6227020800.0 + 1.0 / 87178291200.0 * a
    q7 = 1.0 / 1307674368000.0 + 1.0 / 20922789888000.0 * a
    p = ((q0 + q1 * a2) + (q2 + q3 * a2) * a4) + ((q4 + q5 * a2) + (q6 + q7 * a2) * a4) * a8
    e = p * a
    for _ in range(6):
        e = e * (e + 2.0)
    return math.copysign(e / (e + 2.0), x)


@njit(error_model="numpy")
def _loop_taylor64(x, y, reps):
    for _ in range(reps):
        for i in range(x.size):
            y[i] = _tanh64_taylor(x[i])


@njit(error_model="numpy")
def _loop_tanh(x, y, reps):
    for _ in range(reps):
        for i in range(x.size):
            y[i] = _tanh(x[i])


@njit(error_model="numpy")
def _loop_expm1(x, y, reps):
    for _ in range(reps):
        for i in range(x.size):
            y[i] = _tanh32_expm1(x[i])


def exhaustive_error(chunk=1 << 24):
    """Max error (ulp), its argument, histogram in half-ulp bins, count outside [-1, 1]."""
    top = int(np.float32(TOP).view(np.int32))
    worst, at, outside = 0.0, 0.0, 0
    hist = np.zeros(13, np.int64)  # [0, 0.5), ..., [5.5, 6), >= 6
    for lo in range(0, top, chunk):
        x = np.arange(lo, min(lo + chunk, top), dtype=np.int32).view(np.float32)
        y = np.empty_like(x)
        K.activation(x, K.TANH, y)
        ref = np.tanh(x.astype(np.float64))
        ulp = np.spacing(ref.astype(np.float32)).astype(np.float64)
        ulp[ref.astype(np.float32) == 1.0] = 2.0**-24  # the float32 spacing below 1
        err = np.abs(y - ref) / ulp
        i = int(np.argmax(err))
        if err[i] > worst:
            worst, at = float(err[i]), float(x[i])
        outside += int((np.abs(y) > 1).sum())
        hist += np.bincount(np.minimum((err * 2).astype(np.int64), 12), minlength=13)
    return worst, at, hist, outside


def float64_arguments(n=1 << 23, seed=0):
    """The float64 test set: uniform, log-uniform, near the reduction's switches, [0, 1]."""
    rng = np.random.default_rng(seed)
    half_ln2 = math.log(2.0) / 2.0
    switch = (rng.integers(0, 58, n) + 0.5) * half_ln2 + rng.uniform(-1e-3, 1e-3, n)
    return np.concatenate([rng.uniform(0.0, 20.0, n), np.exp(rng.uniform(-690.0, 3.0, n)),
                           switch, rng.uniform(0.0, 1.0, n)])


def float64_error(tanh64, x):
    """Max error (ulp of the float64 result), its argument, histogram as for float32."""
    y = np.empty_like(x)
    tanh64(x, y, 1)
    ref = np.tanh(x.astype(np.longdouble))
    ulp = np.spacing(np.abs(ref).astype(np.float64)).astype(np.longdouble)
    err = (np.abs(y.astype(np.longdouble) - ref) / ulp).astype(np.float64)
    i = int(np.argmax(err))
    hist = np.bincount(np.minimum((err * 2).astype(np.int64), 12), minlength=13)
    return float(err[i]), float(x[i]), hist, int((np.abs(y) > 1).sum())


def speed(repeats):
    x = np.random.default_rng(0).standard_normal(4096).astype(np.float32)
    y = np.empty_like(x)
    x64, y64 = x.astype(np.float64), np.empty(x.size)
    reps = 50
    per = reps * x.size * 1e-9
    return {
        "float32 rational": measure(lambda: _loop_tanh(x, y, reps), repeats) / per,
        "float32 expm1 (before)": measure(lambda: _loop_expm1(x, y, reps), repeats) / per,
        "float64 reduction": measure(lambda: _loop_tanh(x64, y64, reps), repeats) / per,
        "float64 Taylor (before)": measure(lambda: _loop_taylor64(x64, y64, reps),
                                           repeats) / per,
    }


def fit(X=TANH32_CLAMP, n_p=5, n_q=5, points=800, iters=80):
    """Minimax (relative error) P/Q for tanh(x)/x in t = x^2 on [0, X]; Q(0) = 1."""
    try:
        import mpmath as mp
    except ImportError as exc:  # pragma: no cover - optional
        raise SystemExit("--fit needs mpmath (pip install mpmath)") from exc
    mp.mp.dps = 40
    xs = [mp.mpf(X) * mp.sin(mp.pi / 2 * (i + 0.5) / points) for i in range(points)]
    ts = [x * x for x in xs]
    fs = [mp.tanh(x) / x for x in xs]
    weight, qprev, best = [mp.mpf(1)] * points, [mp.mpf(1)] * points, None
    for _ in range(iters):
        A = mp.matrix(points, n_p + n_q - 1)
        b = mp.matrix(points, 1)
        for i in range(points):
            sc = mp.sqrt(weight[i]) / (fs[i] * qprev[i])
            for j in range(n_p):
                A[i, j] = ts[i] ** j * sc
            for j in range(1, n_q):
                A[i, n_p + j - 1] = -fs[i] * ts[i] ** j * sc
            b[i] = fs[i] * sc
        c = mp.qr_solve(A, b)[0]
        p = [c[j] for j in range(n_p)]
        q = [mp.mpf(1)] + [c[n_p + j] for j in range(n_q - 1)]
        err = []
        for i in range(points):
            qprev[i] = mp.polyval(q[::-1], ts[i])
            err.append((mp.polyval(p[::-1], ts[i]) / qprev[i] - fs[i]) / fs[i])
        worst = max(abs(e) for e in err)
        if best is None or worst < best[0]:
            best = (worst, p, q)
        total = sum(w * abs(e) for w, e in zip(weight, err, strict=True))
        weight = [w * abs(e) / total * points for w, e in zip(weight, err, strict=True)]
    worst, p, q = best
    return float(worst), [float(v) for v in p], [float(v) for v in q]


def fit_expm1(R=0.35, degree=9, points=600, iters=60):
    """Minimax (relative error) c(r), expm1(r) = r + r^2 c(r), on [-R, R]."""
    try:
        import mpmath as mp
    except ImportError as exc:  # pragma: no cover - optional
        raise SystemExit("--fit needs mpmath (pip install mpmath)") from exc
    mp.mp.dps = 40
    rs = [mp.mpf(R) * mp.cos(mp.pi * (i + 0.5) / points) for i in range(points)]
    fs = [mp.expm1(r) for r in rs]
    gs = [(f - r) / (r * r) for f, r in zip(fs, rs, strict=True)]
    scale = [r * r / f for f, r in zip(fs, rs, strict=True)]  # relative error of expm1
    weight, best = [mp.mpf(1)] * points, None
    for _ in range(iters):
        A = mp.matrix(points, degree + 1)
        b = mp.matrix(points, 1)
        for i in range(points):
            sc = mp.sqrt(weight[i]) * scale[i]
            for j in range(degree + 1):
                A[i, j] = rs[i] ** j * sc
            b[i] = gs[i] * sc
        c = mp.qr_solve(A, b)[0]
        cs = [c[j] for j in range(degree + 1)]
        err = [(r + r * r * mp.polyval(cs[::-1], r) - f) / f
               for r, f in zip(rs, fs, strict=True)]
        worst = max(abs(e) for e in err)
        if best is None or worst < best[0]:
            best = (worst, cs)
        total = sum(w * abs(e) for w, e in zip(weight, err, strict=True))
        weight = [w * abs(e) / total * points for w, e in zip(weight, err, strict=True)]
    worst, cs = best
    return float(worst), [float(v) for v in cs]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fit", action="store_true", help="derive the coefficients again (mpmath)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", metavar="PATH", help="save the results as JSON")
    args = ap.parse_args(argv)
    out = {"machine": machine_info()}
    print(f"machine : {out['machine']}")
    if args.fit:
        worst, p, q = fit()
        print(f"fit     : max relative error {worst:.3e} on [0, {TANH32_CLAMP}]")
        for name, new, old in (("P", p, TANH32_P), ("Q", q, TANH32_Q)):
            for j, (a, b) in enumerate(zip(new, old, strict=True)):
                print(f"  {name}{j}: fitted {a:.17g}  committed {b:.17g}  "
                      f"rel diff {abs(a - b) / abs(b):.1e}")
        out["fit"] = {"max_rel_error": worst, "P": p, "Q": q}
        worst, c = fit_expm1()
        print(f"fit     : expm1 max relative error {worst:.3e} on [-0.35, 0.35]")
        for j, (a, b) in enumerate(zip(c, EXPM1_C, strict=True)):
            print(f"  c{j}: fitted {a:.17g}  committed {b:.17g}  "
                  f"rel diff {abs(a - b) / abs(b):.1e}")
        out["fit_expm1"] = {"max_rel_error": worst, "c": c}
    worst, at, hist, outside = exhaustive_error()
    n = int(hist.sum())
    within = np.cumsum(hist) / n
    print(f"error   : every float32 in [0, {TOP}] ({n} values): max {worst:.2f} ulp at "
          f"x = {at!r}; within 0.5 / 1 / 2 / 4 ulp: {100 * within[0]:.1f} / "
          f"{100 * within[1]:.1f} / {100 * within[3]:.2f} / {100 * within[7]:.3f} %; "
          f"results outside [-1, 1]: {outside}")
    out["error"] = {"max_ulp": worst, "at": at, "half_ulp_histogram": hist.tolist(),
                    "outside_unit_interval": outside}
    x64 = float64_arguments()
    out["error_float64"] = {}
    for name, loop in (("reduction", _loop_tanh), ("Taylor (before)", _loop_taylor64)):
        worst, at, hist, outside = float64_error(loop, x64)
        within = np.cumsum(hist) / hist.sum()
        print(f"error   : float64 {name:16s} ({x64.size} arguments): max {worst:.2f} ulp at "
              f"x = {at!r}; within 0.5 / 1 / 2 / 4 ulp: {100 * within[0]:.1f} / "
              f"{100 * within[1]:.1f} / {100 * within[3]:.2f} / {100 * within[7]:.3f} %; "
              f"results outside [-1, 1]: {outside}")
        out["error_float64"][name] = {"max_ulp": worst, "at": at,
                                      "half_ulp_histogram": hist.tolist(),
                                      "outside_unit_interval": outside}
    t = speed(args.repeats)
    for name, ns in t.items():
        base = t["float32 expm1 (before)" if "32" in name else "float64 Taylor (before)"]
        print(f"speed   : {name:24s} {ns:.3f} ns/element  ({ns / base:.2f}x the scheme before)")
    out["speed_ns_per_element"] = t
    if args.json:
        save_json(args.json, out)


if __name__ == "__main__":
    main()
