"""Gradient error of one-shot layer-parallel ``value_and_grad`` on the conv digits network.

Trains ``examples/conv_digits.py``'s network (ConvResNet 8x8 digits, 8 channels, 16
layers, ReLU, flatten pooling) serially with its Adam settings and, at a few steps of
that trajectory, evaluates the gradient on a fresh mini-batch of 64 with
``MGRITPropagation`` three times: cold (a batch it has not seen: what mini-batch
training meets at every step, since shuffled batches never repeat), then warm twice on
the same batch. Rows: the relative error ``|g - g_serial| / |g_serial|`` of each
evaluation and the MGRIT iterations (forward, adjoint) they took, per configuration:
the defaults (``cf=[8, 4]``: two levels on 16 layers), ``cf=4`` and ``cf=2`` with four
levels. Work is the MGRIT steps of the cold evaluation in units of one serial
value-and-gradient on the batch.

Run ``python benchmarks/conv_one_shot.py`` (``--quick``: fewer training steps);
``--json PATH`` saves the rows. Set ``NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1`` on
a busy machine (threads that wait on an oversubscribed CPU cost far more than they
give).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import format_markdown, machine_info, save_json  # noqa: E402

import mgnn  # noqa: E402
from mgnn.data import digits  # noqa: E402
from mgnn.mgrit import MGRITPropagation  # noqa: E402
from mgnn.nets import ConvResNet  # noqa: E402

CONFIGS = {"defaults": {}, "cf=4": dict(cf=4), "cf=2, 4 levels": dict(cf=2, levels=4)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 epochs of training, not 19")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    data = digits(seed=0)
    net = ConvResNet(data.image_shape, 8, 16, 10, T=2.0, activation="relu", pooling="flatten")
    obj = mgnn.Objective(net, data.X_train, data.Y_train, tikhonov=1e-5)
    theta0 = net.init(np.random.default_rng(0), scheme="he")
    at = (1, 30, 100) if args.quick else (1, 100, 400)
    snaps = {}

    def callback(intermediate_result):
        if intermediate_result.nit in at:
            snaps[intermediate_result.nit] = intermediate_result.x.copy()

    res = mgnn.minimize(obj, theta0, method="adam", callback=callback,
                        options={"lr": 3e-3, "batch_size": 64, "epochs": 3 if args.quick
                                 else 19, "schedule": "cosine", "rng": 0})
    snaps[res.nit] = res.x
    rng = np.random.default_rng(1)
    rows = []
    for step, theta in snaps.items():
        batch = rng.choice(obj.n_samples, 64, replace=False)
        _, g0 = obj.value_and_grad(theta, batch=batch)
        for name, kw in CONFIGS.items():
            prop = MGRITPropagation(**kw)
            o = mgnn.Objective(net, data.X_train, data.Y_train, tikhonov=1e-5, propagation=prop)
            row = {"step": step, "config": name}
            for k, tag in enumerate(("cold", "warm1", "warm2")):
                w0 = o.counter.work
                _, g = o.value_and_grad(theta, batch=batch)
                st = prop.last_stats()
                row[tag] = float(np.linalg.norm(g - g0) / np.linalg.norm(g0))
                row[f"{tag}_it"] = f"{st['forward'].nit},{st['adjoint'].nit}"
                if k == 0:
                    row["levels"] = len(st["forward"].level_steps)
                    row["work"] = (o.counter.work - w0) * obj.n_samples / len(batch)
            rows.append(row)
    cols = [("step", "Adam step", "d"), ("config", "MGRITPropagation", "s"),
            ("levels", "levels", "d"), ("cold", "cold error", ".1e"), ("cold_it", "it", "s"),
            ("work", "cold work", ".2f"), ("warm1", "warm error", ".1e"),
            ("warm1_it", "it", "s"), ("warm2", "2nd warm", ".1e"), ("warm2_it", "it", "s")]
    print(f"serial Adam: {res.nit} steps, validation accuracy "
          f"{obj.accuracy(res.x, data.X_val, data.Y_val):.4f}")
    print(format_markdown(rows, cols))
    if args.json:
        save_json(args.json, {"machine": machine_info(), "rows": rows})
    return rows


if __name__ == "__main__":
    main()
