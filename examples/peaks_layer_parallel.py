"""Layer-parallel training on peaks: serial sweeps vs one-shot MGRIT, side by side.

    python examples/peaks_layer_parallel.py [--out out/] [--quick]

A ResNet of width 8 and 64 residual layers (T = 5) is trained with Adam twice
from the same start, in the setting of the layer-parallel papers (smoothed ReLU,
inner weights initialised small, the time-derivative regulariser on the layer
weights, which keeps the weights smooth in depth so that MGRIT converges):
with serial propagation, and layer-parallel with one-shot MGRIT (2 levels, cf 4,
FCF, 2 forward / 1 adjoint iterations per step, warm-started from the previous
step). Prints both final validation
accuracies and the work (fine-gradient equivalents, MGRIT steps included), and
plots the MGRIT convergence factors of the forward and adjoint solves over
training (``peaks_layer_parallel.png``). ``main(argv)`` returns the key numbers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import mgnn
from mgnn.data import peaks
from mgnn.mgrit import MGRITPropagation
from mgnn.nets import ResNet
from mgnn.objective import Objective


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="out")
    ap.add_argument("--quick", action="store_true", help="small run for smoke tests")
    ap.add_argument("--depth", type=int, default=None)
    ap.add_argument("--maxiter", type=int, default=None)
    ap.add_argument("--activation", default="smooth_relu")
    ap.add_argument("--init", default="layer_parallel",
                    choices=["glorot", "he", "layer_parallel"])
    ap.add_argument("--smoothness", type=float, default=1e-3,
                    help="weight of the time-derivative regulariser of the layer weights")
    args = ap.parse_args(argv)
    depth = args.depth or (16 if args.quick else 64)
    maxiter = args.maxiter or (30 if args.quick else 1500)
    n_train = 500 if args.quick else 5000
    data = peaks(n_train=n_train, n_val=1000, seed=0)
    net = ResNet(2, 8, depth, 5, T=5.0, activation=args.activation)
    theta0 = net.init(np.random.default_rng(0), scheme=args.init, inner_scale=1e-2)
    opts = {"lr": 1e-2, "batch_size": 250, "maxiter": maxiter, "rng": 0}
    results = {}
    props = {"serial": None,
             "mgrit": MGRITPropagation(levels=2, cf=4, relax="FCF", fwd_iters=2, bwd_iters=1)}
    for name, prop in props.items():
        obj = Objective(net, data.X_train, data.Y_train, tikhonov=1e-6,
                        smoothness=args.smoothness, propagation=prop)
        res = mgnn.minimize(obj, theta0, method="adam", options=opts)
        results[name] = {"val_acc": obj.accuracy(res.x, data.X_val, data.Y_val),
                         "loss": float(res.fun), "work": float(res.work),
                         "time": float(res.time), "history": res.history}
    prop = props["mgrit"]
    fwd, bwd = prop.factors("forward"), prop.factors("adjoint")
    print(f"ResNet width 8, {depth} layers, {args.activation}, init {args.init}, smoothness "
          f"{args.smoothness:g}, Adam {maxiter} steps, batch 250, {n_train} training samples")
    print(f"{'':>8} {'val. acc.':>10} {'loss':>8} {'work':>8} {'time [s]':>9}")
    for name, r in results.items():
        print(f"{name:>8} {r['val_acc']:>10.4f} {r['loss']:>8.4f} {r['work']:>8.1f} "
              f"{r['time']:>9.1f}")
    print(f"MGRIT convergence factor (geometric mean per step): forward median "
          f"{np.nanmedian(fwd):.3g}, adjoint median {np.nanmedian(bwd):.3g}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png = out / "peaks_layer_parallel.png"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.semilogy(fwd, ".", ms=2, label="forward (states)")
        ax.semilogy(bwd, ".", ms=2, label="adjoint")
        ax.set_xlabel("evaluation (optimization step)")
        ax.set_ylabel("MGRIT convergence factor")
        ax.set_title(f"one-shot MGRIT, {depth} layers, cf 4, 2 levels, 2/1 iterations")
        ax.legend()
        fig.tight_layout()
        fig.savefig(png, dpi=120)
        plt.close(fig)
    except ImportError:
        png = None
    return {"val_acc_serial": results["serial"]["val_acc"],
            "val_acc_mgrit": results["mgrit"]["val_acc"],
            "work_serial": results["serial"]["work"], "work_mgrit": results["mgrit"]["work"],
            "factor_fwd": float(np.nanmedian(fwd)), "factor_bwd": float(np.nanmedian(bwd)),
            "png": None if png is None else str(png)}


if __name__ == "__main__":
    main()
