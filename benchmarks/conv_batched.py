"""Conv steps batched over a stack of layers (MGRIT's relaxation) against the layer loop.

For every case (image size, channels c, samples s, stack of k layers) time, interleaved
in one process, the forward and the adjoint step (with kernel and bias gradients) of
``k`` residual conv layers on MGRIT's descending strided stacks:

* **loop**: :func:`mgnn.kernels.cpu_conv.conv_forward_step` / ``conv_adjoint_step``
  layer by layer (one im2col, GEMM and elementwise pass per layer);
* **batched**: :func:`~mgnn.kernels.cpu_conv.conv_forward_step_layers` /
  ``conv_adjoint_step_layers`` (one im2col over the stack, one batched ``np.matmul``,
  one col2im).

Both give the same bits (checked before timing). ``col KiB`` is one layer's im2col
matrix; :data:`mgnn.nets.conv.BATCH_COL_BYTES` is the threshold the MGRIT steppers
take the batched steps under, chosen from this table. ``%busy`` is the CPU share other
processes took while the row ran. Threads: ``OPENBLAS_NUM_THREADS`` etc. as set
(``--threads`` sets all four in a child process; default 1).

Run ``python benchmarks/conv_batched.py`` (the grid), ``--quick`` for a subset,
``--json PATH`` to save the rows.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

CASES = [  # (H, W, c, s, k)
    (4, 3, 2, 6, 4), (8, 8, 4, 8, 4), (8, 8, 4, 8, 16), (8, 8, 4, 16, 8), (12, 12, 4, 8, 8),
    (8, 8, 8, 8, 8), (8, 8, 4, 32, 8), (8, 8, 8, 16, 8), (8, 8, 16, 8, 8), (8, 8, 8, 32, 8),
    (8, 8, 8, 64, 4), (16, 16, 8, 32, 8), (8, 8, 16, 256, 4),
]
QUICK = [(8, 8, 4, 8, 8), (8, 8, 8, 8, 8), (8, 8, 16, 8, 8), (8, 8, 8, 64, 4)]


def run_case(case, repeats, kc, act):
    H, W, c, s, k = case
    rng = np.random.default_rng(0)
    w, bs, n = H * W * c, 9 * c * c + c, s * H * W
    P = 0.1 * rng.standard_normal((2 * k, bs))
    K, b = P[::-2, : 9 * c * c].reshape(k, 3, 3, c, c), P[::-2, 9 * c * c:]
    U = rng.standard_normal((2 * k, s, w))[::-2]
    S, O = np.empty((2 * k, s, w))[::-2], np.empty((k, s, w))
    G = np.zeros((2 * k, bs))[::-2]
    gK, gb = G[:, : 9 * c * c].reshape(k, 3, 3, c, c), G[:, 9 * c * c:]
    D, L, Ln = np.empty((k, s, w)), np.empty((k, s, w)), rng.standard_normal((k, s, w))
    col1, colk = np.empty(n * 9 * c), np.empty(k * n * 9 * c)

    def loop_f():
        for q in range(k):
            kc.conv_forward_step(U[q], K[q], b[q], 0.1, act, H, W, S[q], O[q], col1)

    def batched_f():
        kc.conv_forward_step_layers(U, K, b, 0.1, act, H, W, S, O, colk)

    def loop_a():
        for q in range(k):
            kc.conv_adjoint_step(Ln[q], U[q], K[q], S[q], 0.1, act, H, W, D[q], col1, L=L[q],
                                 gK=gK[q], gb=gb[q])

    def batched_a():
        kc.conv_adjoint_step_layers(Ln, U, K, S, 0.1, act, H, W, D, colk, L=L, gK=gK, gb=gb)

    loop_f()
    ref = (S.copy(), O.copy())
    batched_f()
    same = np.array_equal(ref[0], S) and np.array_equal(ref[1], O)
    loop_a()
    ref = (D.copy(), L.copy(), G.copy())
    batched_a()
    same = same and all(np.array_equal(x, y) for x, y in zip(ref, (D, L, G), strict=True))
    fns = [loop_f, batched_f, loop_a, batched_a]
    times = [[] for _ in fns]
    for _ in range(repeats):  # A/B interleaved
        for i, f in enumerate(fns):
            t = time.perf_counter()
            f()
            times[i].append(time.perf_counter() - t)
    lf, bf, la, ba = (1e6 * float(np.median(t)) for t in times)
    return dict(H=H, W=W, c=c, s=s, k=k, col_kib=n * 9 * c * 8 / 1024, loop_fwd_us=lf,
                batched_fwd_us=bf, fwd_ratio=bf / lf, loop_adj_us=la, batched_adj_us=ba,
                adj_ratio=ba / la, bit_identical=bool(same))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"the cases {QUICK}")
    ap.add_argument("--repeats", type=int, default=None,
                    help="interleaved repeats per case (default 41, quick 21)")
    ap.add_argument("--threads", type=int, default=None,
                    help="BLAS/OpenMP/Numba threads (re-runs in a child process)")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args(argv)
    if args.threads is not None and os.environ.get("NUMBA_NUM_THREADS") != str(args.threads):
        import subprocess

        nt = str(args.threads)
        env = dict(os.environ, OPENBLAS_NUM_THREADS=nt, OMP_NUM_THREADS=nt,
                   MKL_NUM_THREADS=nt, NUMBA_NUM_THREADS=nt)
        sys.exit(subprocess.call([sys.executable, *sys.argv], env=env))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import numba
    from _common import OtherLoad, blas_info, format_markdown, machine_info, save_json
    from mgnn.kernels import cpu_conv as kc
    from mgnn.kernels.cpu import ACTIVATIONS

    from mgnn.nets.conv import BATCH_COL_BYTES

    repeats = args.repeats or (21 if args.quick else 41)
    print(f"machine : {machine_info()}")
    print(f"blas    : {blas_info()}; numba threads {numba.get_num_threads()}")
    print(f"steps   : tanh, float64, median of {repeats} interleaved repeats; "
          f"BATCH_COL_BYTES = {BATCH_COL_BYTES // 1024} KiB")
    rows = []
    t0 = time.perf_counter()
    for case in QUICK if args.quick else CASES:
        with OtherLoad() as load:
            row = run_case(case, repeats, kc, ACTIVATIONS["tanh"])
        row["other_load_pct"] = None if load.share is None else 100 * load.share
        row["steppers_take"] = ("batched" if row["col_kib"] * 1024 <= BATCH_COL_BYTES
                                else "loop")
        rows.append(row)
    columns = [("H", "H", "d"), ("W", "W", "d"), ("c", "c", "d"), ("s", "s", "d"),
               ("k", "k", "d"), ("col_kib", "col KiB", ".0f"),
               ("loop_fwd_us", "loop fwd us", ".0f"), ("batched_fwd_us", "batched fwd us", ".0f"),
               ("fwd_ratio", "fwd batched/loop", ".3f"), ("loop_adj_us", "loop adj us", ".0f"),
               ("batched_adj_us", "batched adj us", ".0f"),
               ("adj_ratio", "adj batched/loop", ".3f"), ("bit_identical", "same bits", "")
               , ("steppers_take", "steppers take", "s"), ("other_load_pct", "%busy", ".0f")]
    print()
    print(format_markdown(rows, columns))
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    if args.json:
        save_json(args.json, dict(machine=machine_info(), blas=blas_info(), rows=rows,
                                  batch_col_bytes=BATCH_COL_BYTES))
        print(f"saved   : {args.json}")
    return rows


if __name__ == "__main__":
    main()
