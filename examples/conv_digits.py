"""Train a convolutional ResNet on scikit-learn's 8x8 digits, serially and layer-parallel.

    python examples/conv_digits.py [--channels 8] [--depth 16] [--epochs 40] [--out out] [--quick]

Trains the same network from the same initial parameters with Adam twice: with the
serial sweep and with one-shot layer-parallel propagation (``MGRITPropagation()``
with its defaults, on one process: the MGRIT iterations replace the sweeps; their
extra work is charged in the work units). Prints both runs' training loss, work,
wall time and training / validation accuracy side by side (target: >= 97 %
validation accuracy), and writes ``conv_digits.png`` (validation accuracy and loss
against work units for both, and validation images with the serial run's predicted
labels, mistakes in red) and ``conv_digits.json`` into ``--out``.

Measured (defaults, NUMBA_NUM_THREADS=1): both runs 98.33 % validation accuracy; the
layer-parallel run has two MGRIT levels on 16 layers, every solve cold (shuffled
mini-batches never repeat) and two iterations each (exact on two coarse intervals),
3.1x the serial work. On a machine busier than its cores, run it with
``NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1``: waiting threads made a step 40x slower.
"""

import argparse
import json
import os
import time

import numpy as np

import mgnn
from mgnn.data import digits
from mgnn.nets import ConvResNet


def train(net, data, args, propagation=None):
    obj = mgnn.Objective(net, data.X_train, data.Y_train, tikhonov=args.tikhonov,
                         propagation=propagation)
    theta0 = net.init(np.random.default_rng(args.seed), scheme="he")
    curve = []

    def callback(intermediate_result):
        r = intermediate_result
        if r.nit % args.eval_every == 0:
            curve.append((float(obj.counter.work), float(r.fun),
                          obj.accuracy(r.x, data.X_val, data.Y_val)))

    t0 = time.perf_counter()
    res = mgnn.minimize(obj, theta0, method="adam", callback=callback,
                        options={"lr": args.lr, "batch_size": args.batch_size,
                                 "epochs": args.epochs, "schedule": "cosine",
                                 "rng": args.seed})
    wall = time.perf_counter() - t0
    return obj, res, wall, curve


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--depth", type=int, default=16)
    ap.add_argument("--T", type=float, default=2.0)
    ap.add_argument("--activation", default="relu")
    ap.add_argument("--pooling", default="flatten", choices=("average", "flatten"))
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--tikhonov", type=float, default=1e-5)
    ap.add_argument("--eval-every", type=int, default=23)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="out")
    ap.add_argument("--quick", action="store_true", help="2 epochs, 4 channels, for a smoke test")
    args = ap.parse_args(argv)
    if args.quick:
        args.epochs, args.channels, args.depth = 2, 4, 4

    data = digits(seed=args.seed)
    net = ConvResNet(data.image_shape, args.channels, args.depth, 10, T=args.T,
                     activation=args.activation, pooling=args.pooling)
    print(net)
    print(data)
    from mgnn.mgrit import MGRITPropagation

    runs = {}
    for kind, prop in (("serial", None), ("layer-parallel", MGRITPropagation())):
        obj, res, wall, curve = train(net, data, args, propagation=prop)
        runs[kind] = dict(obj=obj, res=res, wall=wall, curve=curve,
                          train_accuracy=obj.accuracy(res.x),
                          val_accuracy=obj.accuracy(res.x, data.X_val, data.Y_val),
                          loss=float(mgnn.Objective(net, data.X_train, data.Y_train,
                                                    tikhonov=args.tikhonov).value(res.x)))
        if prop is not None:
            runs[kind]["propagation"] = repr(prop)
            st = [e for e in prop.stats if e["forward"] is not None and e["adjoint"] is not None]
            runs[kind]["mgrit"] = dict(
                levels=len(st[-1]["forward"].level_steps) if st else 0,
                fwd_iters=float(np.mean([e["forward"].nit for e in st])) if st else 0.0,
                bwd_iters=float(np.mean([e["adjoint"].nit for e in st])) if st else 0.0,
                warm=float(np.mean([e["forward"].warm for e in st])) if st else 0.0)
    print(f"{'run':16s} {'loss':>8s} {'work':>7s} {'wall s':>7s} {'train acc':>9s} "
          f"{'val acc':>8s}  target >= 0.97")
    for kind, r in runs.items():
        print(f"{kind:16s} {r['loss']:8.4f} {r['res'].work:7.1f} {r['wall']:7.1f} "
              f"{r['train_accuracy']:9.4f} {r['val_accuracy']:8.4f}  "
              f"{'met' if r['val_accuracy'] >= 0.97 else 'MISSED'}")
    print(f"layer-parallel propagation: {runs['layer-parallel']['propagation']}")
    m = runs["layer-parallel"]["mgrit"]
    print(f"MGRIT: {m['levels']} levels, mean iterations forward {m['fwd_iters']:.2f}, adjoint "
          f"{m['bwd_iters']:.2f}, warm-started solves {100 * m['warm']:.0f} %; work "
          f"{runs['layer-parallel']['res'].work / runs['serial']['res'].work:.2f}x serial")
    res, acc_val = runs["serial"]["res"], runs["serial"]["val_accuracy"]

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(args.out, exist_ok=True)
    fig = plt.figure(figsize=(12, 4.5))
    a1 = fig.add_subplot(1, 3, 1)
    a1b = a1.twinx()
    for i, (kind, r) in enumerate(runs.items()):
        h = r["res"].history
        a1.semilogy(h["work"], h["fun"], lw=0.4, color=f"C{i}", alpha=0.5)
        if r["curve"]:
            w, _, acc = zip(*r["curve"], strict=True)
            a1b.plot(w, acc, ".-", color=f"C{i}", lw=0.8,
                     label=f"{kind}: {r['val_accuracy']:.4f}")
    a1.set_xlabel("work units (fine-gradient equivalents)")
    a1.set_ylabel("mini-batch loss (thin)")
    a1b.set_ylabel("validation accuracy (dots)")
    a1b.set_ylim(0.0, 1.0)
    a1b.legend(loc="center right", fontsize=8)
    a1.set_title("Adam: serial and layer-parallel")
    pred = net.predict(res.x, data.X_val)
    for k in range(24):
        ax = fig.add_subplot(4, 18, (k // 6) * 18 + 7 + (k % 6) * 2,
                             xticks=[], yticks=[])
        ax.imshow(data.X_val[k].reshape(8, 8), cmap="gray_r")
        ax.set_title(str(pred[k]), fontsize=8,
                     color="k" if pred[k] == data.Y_val[k] else "r")
    fig.suptitle(f"{net!r}\nvalidation accuracy {acc_val:.4f}", fontsize=9)
    fig.subplots_adjust(left=0.06, right=0.98, top=0.85, wspace=0.3)
    path = os.path.join(args.out, "conv_digits.png")
    fig.savefig(path, dpi=120)
    with open(os.path.join(args.out, "conv_digits.json"), "w") as fh:
        json.dump(dict(network=repr(net), arguments=vars(args),
                       runs={k: dict(train_accuracy=r["train_accuracy"],
                                     val_accuracy=r["val_accuracy"], loss=r["loss"],
                                     work=r["res"].work, wall=r["wall"], curve=r["curve"],
                                     mgrit=r.get("mgrit"))
                             for k, r in runs.items()}), fh, indent=1)
    print("wrote", path)
    return {k: dict(val_accuracy=r["val_accuracy"], train_accuracy=r["train_accuracy"],
                    work=r["res"].work) for k, r in runs.items()}


if __name__ == "__main__":
    main()
