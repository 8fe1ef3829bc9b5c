"""The ``mgnn`` command line: runs on a workstation or under ``mpiexec`` on an HPC node.

``mgnn --version``
    the version.
``mgnn info``
    versions; BLAS and OpenMP libraries with their thread counts (threadpoolctl);
    Numba's threads; MPI library and number of processes; GPU.
``mgnn config [--defaults] [--config run.toml] [--set section.key=value ...]``
    print every setting with its default (``--defaults``), or the configuration a
    run would use, as TOML.
``mgnn train [--config run.toml] [--set ...] [--out DIR] [--resume CHECKPOINT] [--json F]``
    train a ResNet on a shipped problem with any solver: ``minimize`` (every
    method), ``nested_iteration``, ``rmtr``, ``mgopt``, with serial, MGRIT or
    layer-parallel (``mpiexec``) propagation (:mod:`mgnn.runs.config`).

``--out DIR`` writes ``config.toml`` (the resolved configuration),
``summary.json``, ``history.json``/``.csv``, ``network.npz`` (the trained network:
:func:`mgnn.runs.load_network`), ``loss.png``/``work.png``/``accuracy.png``
(with matplotlib) and ``checkpoints/``: a checkpoint every ``checkpoint.every``
iterations or ``checkpoint.seconds`` seconds, and on SIGINT/SIGTERM, after which
the command writes its files and exits with status 128 + the signal number.
``--resume`` continues from a checkpoint (file or folder) with the configuration
stored in it (``--config``/``--set`` override it). Under MPI only rank 0 prints and
writes. Exit status: 0 trained, 1 the run diverged, 2 a usage or configuration
error (one line on stderr, no traceback; ``MGNN_DEBUG=1`` shows it), 128 + N
interrupted by signal N.

Progress: a bar (tqdm, the ``progress`` extra) on an interactive terminal, plain
lines through :mod:`logging` otherwise (``progress.every`` iterations apart; 0
chooses about 20 lines); ``--quiet`` prints nothing.

Examples
--------
>>> main(["train", "--set", "optimizer.options.maxiter=3", "--set", "data.n_train=200",
...       "--quiet"])
0
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time

import numpy as np

from mgnn.runs.config import DEFAULTS, METHOD_DEFAULTS, load_config, resolve, to_toml

__all__ = ["main", "load_config", "DEFAULTS"]


class UsageError(Exception):
    """A mistake in the command line or the configuration (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, status 2
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _world():
    """COMM_WORLD when launched by mpiexec (MPI started only then), else serial."""
    from mgnn.parallel.comm import SerialComm, get_comm

    launched = any(int(os.environ.get(k, "1") or 1) > 1 for k in
                   ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"))
    if launched or "mpi4py.MPI" in sys.modules:
        try:
            from mpi4py import MPI
        except ImportError:
            return SerialComm()
        if MPI.COMM_WORLD.Get_size() > 1:
            return get_comm(MPI.COMM_WORLD)
    return SerialComm()


# ----------------------------------------------------------------------------- info
def cmd_info(args, world):
    import numba
    import scipy

    import mgnn
    from mgnn.backend import gpu_available

    print(f"mgnn {mgnn.__version__}  numpy {np.__version__}  scipy {scipy.__version__}  "
          f"numba {numba.__version__}  python {sys.version.split()[0]}")
    try:
        from threadpoolctl import threadpool_info

        libs = threadpool_info()
        for p in libs:
            print(f"{p.get('user_api', '?').upper()}: {p.get('internal_api')} "
                  f"{p.get('version')}, {p.get('num_threads')} threads "
                  f"({os.path.basename(p.get('filepath', ''))})")
        if not any(p.get("user_api") == "blas" for p in libs):
            print("BLAS: none loaded by NumPy/SciPy yet")
    except ImportError:
        print("BLAS: threadpoolctl is not installed (pip install threadpoolctl)")
    layer = numba.config.THREADING_LAYER
    print(f"Numba: {numba.get_num_threads()} threads (NUMBA_NUM_THREADS="
          f"{numba.config.NUMBA_NUM_THREADS}, threading layer {layer!r})")
    env = [f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                             "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
           if k in os.environ]
    print(f"thread variables: {', '.join(env) if env else 'none set'}")
    try:
        from mpi4py import MPI

        print(f"MPI: {MPI.Get_library_version().splitlines()[0].strip()}; "
              f"this run has {MPI.COMM_WORLD.Get_size()} process(es)")
    except ImportError:
        print("MPI: mpi4py not installed (serial stand-in)")
    print(f"GPU: {'available' if gpu_available() else 'not available'}")
    extras = []
    for mod in ("tqdm", "matplotlib"):
        try:
            __import__(mod)
            extras.append(f"{mod} yes")
        except ImportError:
            extras.append(f"{mod} no")
    print(f"optional: {', '.join(extras)}")
    return 0


# ----------------------------------------------------------------------------- config
def _method_comments():
    lines = ["optimizer.options defaults by method (given options are added to them;",
             "with nested_iteration and mgopt the default maxiter is left out):"]
    for m, o in METHOD_DEFAULTS.items():
        lines.append(f"  {m}: {o}")
    lines.append("any other key of the method's options (see mgnn.optim.minimize) may be set")
    return lines


def cmd_config(args, world):
    if args.defaults:
        if args.config or args.set:
            raise UsageError("--defaults takes no --config or --set")
        text = to_toml(DEFAULTS, comments={"optimizer.options": _method_comments()})
    else:
        text = to_toml(resolve(load_config(args.config, args.set or ())))
    if world.rank == 0:
        sys.stdout.write(text)
    return 0


# ----------------------------------------------------------------------------- train
def _check_out(path):
    """Create ``path`` (a folder) and make sure it is writable, before training."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"--out {path}: exists and is not a folder")
    os.makedirs(path, exist_ok=True)
    probe = os.path.join(path, f".mgnn-write-test-{os.getpid()}")
    try:
        with open(probe, "w") as fh:
            fh.write("")
        os.remove(probe)
    except OSError as exc:
        raise UsageError(f"--out {path}: not writable ({exc.strerror})") from exc


def _check_file(path, option):
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"{option} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"{option} {path}: the folder {folder} is not writable")
    if os.path.isdir(path):
        raise UsageError(f"{option} {path}: is a folder")


def _positive_or_none(value, name, kind):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (
            kind is int and not isinstance(value, int)):
        raise UsageError(f"{name} must be a {'n integer' if kind is int else ' number'} >= 0 "
                         f"(0 = off), got {value!r}")
    return value or None


class _Bar:
    """tqdm progress bar (rank 0, interactive terminal) or nothing."""

    def __init__(self, total, enabled):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="it", dynamic_ncols=True)

    def update(self, nit, res):
        if self.bar is None:
            return
        self.bar.update(max(nit - self.bar.n, 0))
        fun = res.get("fun")
        if fun is not None and math.isfinite(fun):
            self.bar.set_postfix(loss=f"{fun:.4e}", refresh=False)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _bar_available():
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True


def cmd_train(args, world):
    from mgnn.runs import Checkpointer, load_checkpoint, save_network
    from mgnn.runs.report import write_history, write_json, write_plots
    from mgnn.runs.train import build, final_theta, planned_iterations, run_solver, summarize

    rank0 = world.rank == 0
    base = None
    resume = None
    if args.resume:
        resume = load_checkpoint(args.resume, comm=world)
        base = (resume.meta.get("metadata") or {}).get("config")
        if base is None and not args.config:
            raise UsageError(f"--resume {args.resume}: the checkpoint holds no 'mgnn train' "
                             "configuration; give --config")
        if args.config:
            base = None
    cfg = resolve(load_config(args.config, args.set or (), base=base))
    ck_cfg = cfg["checkpoint"]
    every = _positive_or_none(ck_cfg["every"], "checkpoint.every", int)
    seconds = _positive_or_none(ck_cfg["seconds"], "checkpoint.seconds", float)
    keep = _positive_or_none(ck_cfg["keep"], "checkpoint.keep", int)
    disp_every = _positive_or_none(cfg["progress"]["every"], "progress.every", int)
    if (every or seconds) and not args.out:
        raise UsageError("checkpoint.every/checkpoint.seconds need --out DIR (the checkpoints "
                         "go to DIR/checkpoints)")
    if rank0:
        if args.out:
            _check_out(args.out)
        if args.json:
            _check_file(args.json, "--json")
    if world.size > 1:
        world.barrier()

    setup = build(cfg)
    checkpointer = None
    if args.out:
        checkpointer = Checkpointer(os.path.join(args.out, "checkpoints"), every=every,
                                    seconds=seconds, keep=keep, signals=True,
                                    comm=world, metadata={"config": cfg})
    total = planned_iterations(cfg)
    interactive = (rank0 and not args.quiet and sys.stdout.isatty() and _bar_available()
                   and not args.no_bar)
    disp = rank0 and not args.quiet and not interactive
    if disp_every is None:
        disp_every = max(1, (total or 20) // 20)
    if not args.quiet and rank0:
        print(setup.net)
        if setup.hierarchy is not None:
            print(setup.hierarchy)
    bar = _Bar(total, interactive)
    track = {"nit": [], "work": [], "val": []}
    solver = cfg["solver"]["name"]
    data = setup.data

    def callback(nit, res):
        bar.update(nit, res)
        if args.out and solver == "minimize" and nit % disp_every == 0:
            x = res.x
            if data.task == "classification":
                v = setup.objective.accuracy(x, data.X_val, data.Y_val)
            else:
                v = setup.objective.error(x, data.X_val, data.Y_val)[0] if not \
                    setup.distributed else math.nan
            track["nit"].append(nit)
            track["work"].append(res.get("work", math.nan))
            track["val"].append(v)

    handler = None
    if disp:  # the command line is the application: its progress lines go to stdout
        import logging

        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        progress_log = logging.getLogger("mgnn.progress")
        progress_log.addHandler(handler)
        progress_log.setLevel(logging.INFO)
        saved_propagate, progress_log.propagate = progress_log.propagate, False
    t0 = time.perf_counter()
    try:
        res = run_solver(cfg, setup, callback=callback, disp=disp, disp_every=disp_every,
                         checkpoint=checkpointer, resume=resume)
    finally:
        bar.close()
        if handler is not None:
            progress_log.removeHandler(handler)
            progress_log.propagate = saved_propagate
            progress_log.setLevel(logging.NOTSET)
    wall = time.perf_counter() - t0
    summary = summarize(setup, res, wall)
    theta = final_theta(setup, res)
    if not args.quiet and rank0:
        for k, v in summary.items():
            print(f"{k:>15}: {v}")
    hist = res.history
    if args.json and rank0:
        write_json(args.json, dict(summary, config=cfg, history=hist.as_dict()))
    if args.out:
        H = res.get("hierarchy", setup.hierarchy)
        save_network(os.path.join(args.out, "network.npz"), setup.net, theta,
                     hierarchy=H if solver != "nested_iteration" else setup.hierarchy,
                     metadata={"config": cfg, "summary": summary})
        if rank0:
            with open(os.path.join(args.out, "config.toml"), "w") as fh:
                fh.write(to_toml(cfg))
            write_json(os.path.join(args.out, "summary.json"), summary)
            write_history(args.out, hist)
            val = None
            if track["nit"]:
                key = "val_acc" if data.task == "classification" else "val_mean_error"
                val = {"nit": np.array(track["nit"], float),
                       "work": np.array(track["work"], float), key: np.array(track["val"])}
                write_json(os.path.join(args.out, "validation.json"), val)
            pngs = write_plots(args.out, hist, title=f"{solver} ({cfg['optimizer']['method']})",
                               validation=val)
            if not args.quiet:
                note = ", ".join(pngs) if pngs else "no plots (matplotlib not installed)"
                print(f"{'written':>15}: {args.out} (config.toml, summary.json, history.json, "
                      f"history.csv, network.npz, {note})")
    if res.status == 4:
        name = checkpointer.signal_received if checkpointer is not None else None
        try:
            return 128 + signal.Signals[name].value
        except (KeyError, TypeError):
            return 128 + signal.SIGTERM.value
    if res.status == 3:
        return 1
    return 0


# ----------------------------------------------------------------------------- main
def _parser():
    import mgnn

    ap = _Parser(prog="mgnn", description=__doc__.splitlines()[0])
    ap.add_argument("--version", action="version", version=f"mgnn {mgnn.__version__}")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("info", help="versions, BLAS/OpenMP/Numba threads, MPI and GPU")
    co = sub.add_parser("config", help="print the settings (defaults or resolved) as TOML")
    co.add_argument("--defaults", action="store_true", help="every key with its default")
    co.add_argument("--config", help="TOML file")
    co.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                    help="override one setting (repeatable)")
    tr = sub.add_parser("train", help="train a ResNet on a shipped problem")
    tr.add_argument("--config", help="TOML file (see 'mgnn config --defaults')")
    tr.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                    help="override one setting (repeatable)")
    tr.add_argument("--out", metavar="DIR",
                    help="write config, history (JSON/CSV), network, plots, checkpoints here")
    tr.add_argument("--resume", metavar="CHECKPOINT",
                    help="continue from a checkpoint file or folder")
    tr.add_argument("--json", metavar="FILE", help="write the summary, configuration and "
                    "history here")
    tr.add_argument("--quiet", action="store_true", help="print nothing")
    tr.add_argument("--no-bar", action="store_true", help="plain progress lines even on a "
                    "terminal")
    return ap


def main(argv=None):
    """Run the command line; returns the exit status (see the module docstring)."""
    import tomllib

    world = None
    try:
        try:
            args = _parser().parse_args(argv)
        except SystemExit as exc:  # --help, --version
            return int(exc.code or 0)
        world = _world()
        return {"info": cmd_info, "train": cmd_train, "config": cmd_config}[args.command](
            args, world)
    except (UsageError, ValueError, TypeError, OSError, KeyError,
            tomllib.TOMLDecodeError) as exc:
        if os.environ.get("MGNN_DEBUG"):
            raise
        msg = str(exc) if not isinstance(exc, KeyError) else f"missing setting {exc}"
        if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in msg:
            msg = f"{exc.filename}: {msg}"
        where = f" (rank {world.rank} of {world.size})" if world is not None and \
            world.size > 1 else ""
        sys.stderr.write(f"mgnn: error{where}: {' '.join(msg.split())}\n")
        sys.stderr.flush()
        if world is not None and world.size > 1:
            from mpi4py import MPI

            MPI.COMM_WORLD.Abort(2)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
