"""Train a ResNet on the peaks problem with Adam; plot decision regions and loss history.

    python examples/peaks_train.py [--width 8] [--depth 32] [--epochs 60] [--out out] [--quick]

Prints the training loss and the training / validation accuracy, and writes
``peaks_train.png`` (decision regions over [-3, 3]^2 with validation points, and
the loss against work units) into ``--out``.
"""

import argparse
import os
import time

import numpy as np

import mgnn
from mgnn.data import peaks


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--depth", type=int, default=32)
    ap.add_argument("--T", type=float, default=5.0)
    ap.add_argument("--activation", default="tanh")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="out")
    ap.add_argument("--quick", action="store_true", help="5 epochs, for a smoke test")
    args = ap.parse_args(argv)
    if args.quick:
        args.epochs = 5

    data = peaks(n_train=5000, n_val=1000, seed=args.seed)
    net = mgnn.ResNet(2, args.width, args.depth, 5, T=args.T, activation=args.activation)
    obj = mgnn.Objective(net, data.X_train, data.Y_train, tikhonov=1e-6)
    theta0 = net.init(np.random.default_rng(args.seed), scheme="glorot")
    print(net)
    t0 = time.perf_counter()
    res = mgnn.minimize(obj, theta0, method="adam",
                        options={"lr": args.lr, "batch_size": args.batch_size,
                                 "epochs": args.epochs, "schedule": "cosine",
                                 "rng": args.seed})
    wall = time.perf_counter() - t0
    acc_train = obj.accuracy(res.x)
    acc_val = obj.accuracy(res.x, data.X_val, data.Y_val)
    print(f"{res.message}  loss {obj.value(res.x):.4f}  work {res.work:.1f}  wall {wall:.1f} s")
    print(f"accuracy: training {acc_train:.4f}, validation {acc_val:.4f}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(args.out, exist_ok=True)
    g = np.linspace(-3, 3, 300)
    gx, gy = np.meshgrid(g, g)
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    labels = net.predict(res.x, grid).reshape(gx.shape)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.5))
    a1.contourf(gx, gy, labels, levels=np.arange(-0.5, 5), cmap="viridis", alpha=0.6)
    a1.scatter(data.X_val[:, 0], data.X_val[:, 1], c=data.Y_val, s=4, cmap="viridis",
               edgecolors="none")
    a1.set_title(f"decision regions, validation accuracy {acc_val:.3f}")
    a1.set_aspect("equal")
    h = res.history
    a2.semilogy(h["work"], h["fun"], lw=0.8)
    a2.set_xlabel("work units (fine-gradient equivalents)")
    a2.set_ylabel("mini-batch loss")
    a2.set_title("Adam on peaks")
    fig.tight_layout()
    path = os.path.join(args.out, "peaks_train.png")
    fig.savefig(path, dpi=120)
    print("wrote", path)
    return acc_val


if __name__ == "__main__":
    main()
