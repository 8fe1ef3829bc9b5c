"""The ``mgnn`` command line: runs on a workstation or under ``mpiexec`` on an HPC node.

``mgnn info``
    versions, BLAS threads, Numba, MPI and GPU availability.
``mgnn train [--config run.toml] [--set section.key=value ...]``
    train a ResNet on a shipped problem with any optimizer of :mod:`mgnn.optim`;
    prints a summary and optionally writes the result (history included) as JSON.

A run is described by a TOML file (read with :mod:`tomllib`) with the sections
``[data]``, ``[net]``, ``[objective]`` and ``[optimizer]``; every key has a default
(see :data:`DEFAULTS`), and ``--set`` overrides single keys, e.g.
``--set optimizer.method=lbfgs --set net.depth=64``. Unknown sections or keys are
errors, never ignored.

Examples
--------
>>> main(["train", "--set", "optimizer.options.maxiter=3", "--set", "data.n_train=200",
...       "--quiet"])
0
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import sys
import time

import numpy as np

DEFAULTS = {
    "data": {"problem": "peaks", "n_train": 5000, "n_val": 1000, "seed": 0},
    "net": {"width": 8, "depth": 16, "T": 5.0, "activation": "tanh", "dtype": "float64",
            "init": "glorot", "inner_scale": 0.0, "seed": 0},
    "objective": {"tikhonov": 1e-6, "smoothness": 0.0},
    "optimizer": {"method": "adam",
                  "options": {"lr": 1e-2, "batch_size": 100, "maxiter": 2000, "rng": 0}},
}


def _merge(base, new, where=""):
    for key, val in new.items():
        if key not in base:
            raise ValueError(f"unknown setting '{where}{key}'; expected one of "
                             f"{sorted(base)}")
        if isinstance(base[key], dict) and key != "options":
            if not isinstance(val, dict):
                raise ValueError(f"setting {where}{key} must be a table")
            _merge(base[key], val, f"{where}{key}.")
        else:
            base[key] = val


def _parse_set(item):
    if "=" not in item:
        raise ValueError(f"--set needs section.key=value, got {item!r}")
    path, raw = item.split("=", 1)
    try:
        val = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        val = raw
    keys = path.split(".")
    out = cur = {}
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
    cur[keys[-1]] = val
    return out


def load_config(path=None, overrides=()):
    """The run configuration: defaults, then the TOML file, then ``--set`` overrides."""
    import tomllib

    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        with open(path, "rb") as fh:
            user = tomllib.load(fh)
        opts = user.get("optimizer", {}).get("options")
        if opts is not None:  # the optimizer's own options replace the default ones
            cfg["optimizer"]["options"] = {}
        _merge(cfg, user)
    for item in overrides:
        upd = _parse_set(item)
        opt = upd.get("optimizer", {}).get("options")
        if opt is not None:
            cfg["optimizer"]["options"].update(opt)
            upd["optimizer"].pop("options")
        _merge(cfg, upd)
    return cfg


def build(cfg):
    """Data, network, objective and initial parameters for a configuration."""
    from mgnn.data import peaks, smooth_regression
    from mgnn.nets import ResNet
    from mgnn.objective import Objective

    d = cfg["data"]
    makers = {"peaks": peaks, "smooth_regression": smooth_regression}
    if d["problem"] not in makers:
        raise ValueError(f"unknown data.problem {d['problem']!r}; expected one of "
                         f"{sorted(makers)}")
    data = makers[d["problem"]](d["n_train"], d["n_val"], seed=d["seed"],
                                dtype=np.dtype(cfg["net"]["dtype"]))
    n = cfg["net"]
    net = ResNet(data.n_in, n["width"], n["depth"], data.n_out, T=n["T"],
                 activation=n["activation"], task=data.task, dtype=np.dtype(n["dtype"]))
    obj = Objective(net, data.X_train, data.Y_train, **cfg["objective"])
    theta0 = net.init(np.random.default_rng(n["seed"]), n["init"], inner_scale=n["inner_scale"])
    return data, net, obj, theta0


def cmd_info(args):
    import numba
    import scipy

    import mgnn
    from mgnn.backend import gpu_available

    print(f"mgnn {mgnn.__version__}  numpy {np.__version__}  scipy {scipy.__version__}  "
          f"numba {numba.__version__}  python {sys.version.split()[0]}")
    try:
        from threadpoolctl import threadpool_info

        for p in threadpool_info():
            if p.get("user_api") == "blas":
                print(f"BLAS: {p.get('internal_api')} {p.get('version')}, "
                      f"{p.get('num_threads')} threads")
                break
    except ImportError:
        pass
    try:
        from mpi4py import MPI

        print(f"MPI: {MPI.Get_library_version().splitlines()[0]}; "
              f"this run has {MPI.COMM_WORLD.Get_size()} process(es)")
    except ImportError:
        print("MPI: mpi4py not installed (serial stand-in)")
    print(f"GPU: {'available' if gpu_available() else 'not available'}")
    return 0


def cmd_train(args):
    from mgnn.optim import minimize

    cfg = load_config(args.config, args.set or ())
    data, net, obj, theta0 = build(cfg)
    opt = cfg["optimizer"]
    if not args.quiet:
        print(net)
    t0 = time.perf_counter()
    res = minimize(obj, theta0, method=opt["method"], options=dict(opt["options"]))
    wall = time.perf_counter() - t0
    summary = {"message": res.message, "success": bool(res.success), "fun": float(res.fun),
               "nit": int(res.nit), "work": float(res.work), "wall_s": wall}
    if data.task == "classification":
        summary["val_accuracy"] = obj.accuracy(res.x, data.X_val, data.Y_val)
    else:
        summary["val_mean_error"], summary["val_max_error"] = obj.error(res.x, data.X_val,
                                                                         data.Y_val)
    if not args.quiet:
        for k, v in summary.items():
            print(f"{k:>15}: {v}")
    if args.json:
        out = dict(summary, config=cfg, history=res.history.as_dict())
        with open(args.json, "w") as fh:
            json.dump(out, fh, default=lambda a: np.asarray(a).tolist(), indent=1)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="mgnn", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, threads, MPI and GPU")
    tr = sub.add_parser("train", help="train a ResNet on a shipped problem")
    tr.add_argument("--config", help="TOML file with [data], [net], [objective], [optimizer]")
    tr.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                    help="override one setting (repeatable)")
    tr.add_argument("--json", help="write the summary, configuration and history here")
    tr.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    return {"info": cmd_info, "train": cmd_train}[args.command](args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
