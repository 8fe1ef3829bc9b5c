"""Forward propagation: serial layer-by-layer vs MGRIT with batched / unbatched relaxation.

    python benchmarks/batched_relaxation.py [--N 1024] [--width 32] [--samples 5000 100]
        [--levels 3] [--cf 4] [--relax F] [--iters 2 3] [--repeats 3] [--out DIR]

For each batch size s: the median wall time of one forward propagation through the N
residual layers (``propagation.forward`` on a filled workspace, opening layer excluded)
with :class:`~mgnn.propagation.SerialPropagation` and with
:class:`~mgnn.mgrit.MGRITPropagation` at a fixed number of iterations from the opened
states (no warm start), ``batched=True`` and ``batched=False``; the relative error of
the final state ``U_N`` against the serial one; and the share of the machine's CPUs that
other processes used while each row was timed.

On a CPU the batched relaxation cannot beat the serial sweep: NumPy runs a stacked
matmul as one BLAS call per slice, so the arithmetic and the BLAS work are those of the
unbatched sweeps and MGRIT does 2-3x the serial work per iteration count. What batching
removes is the Python and dispatch overhead of one step call per layer, visible at
small s. The speed-up target of the issue (>= 3x over serial) is for a GPU, where one
batched GEMM over all intervals fills the device (benchmarks/gpu.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import (  # noqa: E402
    OtherLoad,
    blas_threads,
    format_table,
    machine_info,
    measure,
    save_json,
)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--N", type=int, default=1024, help="residual layers")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--samples", type=int, nargs="+", default=[5000, 100])
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--cf", type=int, default=4)
    ap.add_argument("--relax", default="F", choices=["F", "FCF", "FCFCF"])
    ap.add_argument("--iters", type=int, nargs="+", default=[2, 3])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--out", type=Path, default=None, help="write results JSON here")
    return ap.parse_args(argv)


def forward_case(net, theta, X, prop, ws, reset):
    """A closure running one forward propagation (opening layer done once, outside)."""
    net.open(theta, X, ws.U[0], ws.S_open)
    U0 = ws.U[0].copy()

    def run():
        if reset:
            prop.reset()
        ws.U[0] = U0
        prop.forward(net, theta, ws)
    return run


def main(argv=None):
    args = parse_args(argv)
    from mgnn.mgrit import MGRITPropagation
    from mgnn.nets import ResNet
    from mgnn.propagation import SerialPropagation

    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    net = ResNet(2, args.width, args.N, 5, T=5.0, activation="tanh", dtype=dtype)
    theta = net.init(rng).astype(dtype)
    print(f"machine: {machine_info()}, BLAS threads {blas_threads()}")
    print(f"{net}\nMGRIT: levels={args.levels}, cf={args.cf}, relax={args.relax}, "
          f"cold start every call, {args.repeats} repeats (median)\n")
    rows = []
    for s in args.samples:
        X = rng.standard_normal((s, 2)).astype(dtype)
        ws = net.workspace(s)
        serial = SerialPropagation()
        with OtherLoad() as load:
            t_ser = measure(forward_case(net, theta, X, serial, ws, False),
                            repeats=args.repeats, min_sample=0.0)
        ref = ws.U[-1].copy()
        rows.append(dict(s=s, method="serial", iters=None, time=t_ser, ratio=1.0, err=0.0,
                         load=load.share))
        print(format_table(rows[-1:], COLUMNS), flush=True)
        for iters in args.iters:
            for batched in (True, False):
                prop = MGRITPropagation(levels=args.levels, cf=args.cf, relax=args.relax,
                                        fwd_iters=iters, batched=batched)
                run = forward_case(net, theta, X, prop, ws, True)
                with OtherLoad() as load:
                    t = measure(run, repeats=args.repeats, min_sample=0.0)
                err = float(np.linalg.norm(ws.U[-1] - ref) / np.linalg.norm(ref))
                rows.append(dict(s=s, method="MGRIT batched" if batched else "MGRIT unbatched",
                                 iters=iters, time=t, ratio=t / t_ser, err=err,
                                 load=load.share))
                print(format_table(rows[-1:], COLUMNS).split("\n")[-1], flush=True)
                del prop, run
        del ws
    print()
    print(format_table(rows, COLUMNS))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        save_json(args.out / "batched_relaxation.json",
                  dict(machine=machine_info(), args={k: str(v) for k, v in vars(args).items()},
                       rows=rows))
    return rows


COLUMNS = [("s", "s", "d"), ("method", "propagation", "s"), ("iters", "iters", "d"),
           ("time", "median [s]", ".4f"), ("ratio", "/ serial", ".2f"),
           ("err", "rel. err U_N", ".1e"), ("load", "other load", ".0%")]


if __name__ == "__main__":
    main()
