"""Checkpoints: the whole state of a solver run, written atomically, read back to resume.

See :mod:`mgnn.runs` for the protocol a solver follows. This module holds the
pieces: :class:`Checkpointer` (when and where to write; SIGINT/SIGTERM handling),
:class:`Checkpoint` (a checkpoint read back) and :func:`load_checkpoint`.

File names are ``<prefix>-<nit, 9 digits>.npz`` (one process) or
``<prefix>-<nit>-rank<r>of<P>.npz`` (one file per rank of a run on ``P`` MPI
ranks, each holding that rank's slices; resuming needs the same ``P``). ``nit`` is
the iteration count of the outermost solver, so names sort in run order and a
resumed run continues the sequence.
"""

from __future__ import annotations

import datetime
import os
import re
import signal
import sys
import threading
import time

import numpy as np

from mgnn._validation import check_positive_int, check_scalar
from mgnn.runs.archive import read_archive, to_namespace, write_archive

__all__ = ["Checkpointer", "Checkpoint", "load_checkpoint", "list_checkpoints",
           "as_checkpoint", "STATUS_INTERRUPTED", "rng_state", "set_rng_state"]

#: ``OptimizeResult.status`` of a run stopped by SIGINT/SIGTERM (checkpoint written).
STATUS_INTERRUPTED = 4

FORMAT = "mgnn-checkpoint"
FORMAT_VERSION = 1
_SIGNALS = ("SIGINT", "SIGTERM")


def rng_state(rng):
    """The state of a NumPy ``Generator`` as plain data (``bit_generator.state``)."""
    return rng.bit_generator.state


def set_rng_state(rng, state):
    """Restore a ``Generator`` from :func:`rng_state` (same bit generator required)."""
    name = type(rng.bit_generator).__name__
    if state.get("bit_generator") != name:
        raise ValueError(f"the checkpoint holds a {state.get('bit_generator')} state, "
                         f"the run uses {name}")
    rng.bit_generator.state = state


def _world():
    """``COMM_WORLD`` wrapped when mpi4py's MPI is loaded and several ranks run, else serial."""
    from mgnn.parallel.comm import SerialComm, get_comm

    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.COMM_WORLD.Get_size() > 1:
        return get_comm(mpi.COMM_WORLD)
    return SerialComm()


def _pattern(prefix):
    return re.compile(rf"^{re.escape(prefix)}-(\d{{9}})(?:-rank(\d+)of(\d+))?\.npz$")


def list_checkpoints(directory, prefix="ckpt", rank=0, size=1):
    """``[(nit, path), ...]`` of this rank's checkpoints in ``directory``, oldest first."""
    if not os.path.isdir(directory):
        return []
    pat = _pattern(prefix)
    out = []
    for name in os.listdir(directory):
        m = pat.match(name)
        if m is None:
            continue
        r, p = (0, 1) if m.group(2) is None else (int(m.group(2)), int(m.group(3)))
        if (r, p) == (rank, size):
            out.append((int(m.group(1)), os.path.join(directory, name)))
    return sorted(out)


class Checkpoint:
    """A checkpoint read back from disk (or handed from an outer solver to an inner one).

    Attributes
    ----------
    state : dict
        The state tree: ``{"solver": name, "run": ..., "method": ..., ...}``.
    meta : dict
        ``format``, ``mgnn_version``, ``solver``, ``nit``, ``rank``, ``size``,
        ``written`` (UTC time), ``metadata`` (what the :class:`Checkpointer` was
        given, e.g. the command line's configuration).
    path : str or None
    """

    def __init__(self, state, meta=None, path=None):
        if not isinstance(state, dict) or "solver" not in state:
            raise ValueError("a checkpoint state must be a dict with a 'solver' entry")
        self.state = state
        self.meta = {} if meta is None else meta
        self.path = path

    @property
    def solver(self):
        return self.state["solver"]

    @property
    def nit(self):
        return self.meta.get("nit")

    def __repr__(self):
        where = f", path={self.path!r}" if self.path else ""
        return f"Checkpoint(solver={self.solver!r}, nit={self.nit}{where})"


def load_checkpoint(path, prefix="ckpt", comm=None):
    """Read a checkpoint file, or the newest complete one in a directory.

    Parameters
    ----------
    path : str or os.PathLike
        A checkpoint file, or a directory of them (the newest is taken; on ``P``
        ranks the newest iteration that every rank has a file for).
    prefix : str
        File-name prefix in a directory.
    comm : Comm, optional
        The ranks of a distributed run (default: ``COMM_WORLD`` when several
        ranks run): each rank reads its own file.

    Returns
    -------
    Checkpoint
    """
    comm = _world() if comm is None else comm
    path = os.fspath(path)
    r, p = comm.rank, comm.size
    if p > 1 and not os.path.isdir(path) and "-rank" not in os.path.basename(path):
        base, ext = os.path.splitext(path)
        path = f"{base}-rank{r}of{p}{ext}"
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint file or folder {path}")
    if os.path.isdir(path):
        found = list_checkpoints(path, prefix, r, p)
        nit = found[-1][0] if found else -1
        if p > 1:  # the newest iteration all ranks have
            have = {n for n, _ in found}
            nit = int(comm.allreduce(float(nit), op="min"))
            if nit >= 0 and nit not in have:
                nit = -1
            nit = int(comm.allreduce(float(nit), op="min"))
        if nit < 0:
            raise FileNotFoundError(f"no checkpoint '{prefix}-*.npz' for rank {r} of {p} in "
                                    f"{path}")
        path = dict(found)[nit]
    meta, tree = read_archive(path)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not an mgnn checkpoint (format {meta.get('format')!r})")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path} has checkpoint format version {meta['format_version']}; "
                         f"this mgnn reads up to {FORMAT_VERSION}")
    if (meta.get("rank", 0), meta.get("size", 1)) != (r, p):
        raise ValueError(f"{path} was written by rank {meta.get('rank')} of {meta.get('size')}"
                         f" ranks; this is rank {r} of {p} (resume on the same number of ranks)")
    return Checkpoint(tree, meta, path)


def as_checkpoint(resume, comm=None, xp=None):
    """``resume`` as a :class:`Checkpoint`: a path (file or directory) is read,
    a :class:`Checkpoint` returned as it is, ``None`` stays ``None``.

    With ``xp`` (the array namespace of the resuming run), the arrays that were on
    a device when the checkpoint was written come back as arrays of ``xp``
    (:func:`~mgnn.runs.archive.to_namespace`); the others stay on the host.
    """
    if resume is None:
        return None
    if isinstance(resume, Checkpoint):
        ck = resume
    elif isinstance(resume, (str, os.PathLike)):
        ck = load_checkpoint(resume, comm=comm)
    else:
        raise TypeError("resume must be None, a checkpoint path (file or directory) or a "
                        f"Checkpoint, got {type(resume).__name__}")
    if xp is not None:
        ck = Checkpoint(to_namespace(ck.state, xp), ck.meta, ck.path)
    return ck


class Checkpointer:
    """When and where a run writes checkpoints, and what it does on SIGINT/SIGTERM.

    Pass it as the ``checkpoint`` option of a solver (``minimize(...,
    options={"checkpoint": ck})``, ``rmtr(..., options={"checkpoint": ck})``,
    ``nested_iteration(..., checkpoint=ck)``, ``mgopt(..., checkpoint=ck)``); a
    directory name stands for ``Checkpointer(directory)``.

    Parameters
    ----------
    directory : str or os.PathLike
        Folder of the checkpoint files (created on the first write).
    every : int, optional
        Write after every ``every``-th iteration (of the outermost solver).
    seconds : float, optional
        Write when at least this many seconds passed since the last write (or the
        start). With neither ``every`` nor ``seconds`` a checkpoint is written only
        when the run is interrupted.
    keep : int or None, default 3
        Keep the newest ``keep`` checkpoints of this run's prefix, delete older
        ones (None keeps all).
    prefix : str, default 'ckpt'
        File-name prefix.
    signals : bool, default True
        While a run is active, SIGINT and SIGTERM (in the main thread only) set a
        flag instead of raising: the run stops at the next iteration boundary,
        writes a checkpoint and returns a result with ``status = 4`` and a message
        saying it was interrupted. A second signal raises ``KeyboardInterrupt`` at
        once. The previous handlers are restored when the run ends.
    comm : Comm, optional
        The ranks of a distributed run (default: ``COMM_WORLD`` when mpi4py is
        loaded and several ranks run). Each rank writes its own file; the decision
        to write or stop is agreed over ``comm`` (one small all-reduce per
        iteration, only on several ranks).
    metadata : dict, optional
        JSON-able data stored in every checkpoint (``Checkpoint.meta["metadata"]``).
    fsync : bool, default True
        Wait until each checkpoint is on disk (``fsync``) before renaming it into
        place: it then survives a crash of the machine. The rename is atomic either
        way; ``fsync=False`` saves the disk wait (about 20 ms per write on this
        project's test machine), which matters when writing every few iterations.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from mgnn.optim import minimize, FunctionObjective
    >>> obj = FunctionObjective(lambda x: 0.5 * x @ x, lambda x: x)
    >>> folder = tempfile.mkdtemp()
    >>> ck = Checkpointer(folder, every=10, keep=2)
    >>> res = minimize(obj, np.ones(3), method="sgd",
    ...                options={"lr": 0.1, "maxiter": 30, "gtol": 0.0, "checkpoint": ck})
    >>> [n for n, _ in list_checkpoints(folder)]
    [20, 30]
    >>> again = minimize(obj, np.ones(3), method="sgd",
    ...                  options={"lr": 0.1, "maxiter": 40, "gtol": 0.0,
    ...                           "resume": folder})     # continue from iteration 30
    >>> again.nit, bool(np.array_equal(again.history["fun"][:30], res.history["fun"]))
    (40, True)
    """

    def __init__(self, directory, *, every=None, seconds=None, keep=3, prefix="ckpt",
                 signals=True, comm=None, metadata=None, fsync=True):
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"directory must be a path, got {type(directory).__name__}")
        self.directory = os.fspath(directory)
        self.every = None if every is None else check_positive_int(every, "every")
        self.seconds = None if seconds is None else check_scalar(seconds, "seconds", low=0.0,
                                                                 low_open=True)
        self.keep = None if keep is None else check_positive_int(keep, "keep")
        if not isinstance(prefix, str) or not re.fullmatch(r"[A-Za-z0-9_.]+", prefix):
            raise ValueError(f"prefix must be letters, digits, '_' or '.', got {prefix!r}")
        self.prefix = prefix
        if not isinstance(signals, bool):
            raise TypeError(f"signals must be bool, got {signals!r}")
        self.signals = signals
        self._comm = comm
        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
        self.metadata = metadata
        if not isinstance(fsync, bool):
            raise TypeError(f"fsync must be bool, got {fsync!r}")
        self.fsync = fsync
        self.signal_received = None  # name of the signal that asked the run to stop
        self.last_path = None
        self._depth = 0
        self._saved_handlers = {}
        self._last = time.monotonic()

    def __repr__(self):
        when = []
        if self.every:
            when.append(f"every={self.every}")
        if self.seconds:
            when.append(f"seconds={self.seconds:g}")
        return (f"Checkpointer({self.directory!r}, {', '.join(when) or 'on interruption only'}"
                f", keep={self.keep}, prefix={self.prefix!r}, signals={self.signals})")

    # -- communicator -----------------------------------------------------------
    @property
    def comm(self):
        if self._comm is None:
            self._comm = _world()
        else:
            from mgnn.parallel.comm import get_comm

            self._comm = get_comm(self._comm)
        return self._comm

    # -- a run's lifetime ---------------------------------------------------------
    def activate(self):
        """Enter a run (nested calls count): install the signal handlers once."""
        if self._depth == 0:
            self.signal_received = None
            self._last = time.monotonic()
            if self.signals and threading.current_thread() is threading.main_thread():
                for name in _SIGNALS:
                    sig = getattr(signal, name, None)
                    if sig is not None:
                        self._saved_handlers[sig] = signal.signal(sig, self._handler)
        self._depth += 1

    def release(self):
        """Leave a run; the outermost release restores the previous handlers."""
        self._depth = max(self._depth - 1, 0)
        if self._depth == 0:
            for sig, old in self._saved_handlers.items():
                signal.signal(sig, old)
            self._saved_handlers.clear()

    def _handler(self, signum, frame):
        if self.signal_received is not None:  # a second signal: stop waiting
            raise KeyboardInterrupt
        self.signal_received = signal.Signals(signum).name
        try:
            from mgnn.runs.progress import world_rank

            if world_rank() == 0:
                sys.stderr.write(f"mgnn: {self.signal_received} received; stopping at the "
                                 "next iteration boundary and writing a checkpoint (send it "
                                 "again to abort at once)\n")
                sys.stderr.flush()
        except Exception:  # pragma: no cover - never fail inside a handler
            pass

    def request_stop(self, reason="request_stop()"):
        """Ask the active run to stop at the next iteration boundary (as a signal would)."""
        self.signal_received = reason

    # -- decisions at an iteration boundary -----------------------------------------
    def poll(self, nit):
        """``(due, stop)`` after iteration ``nit``: write now? stop now? (agreed by all ranks)."""
        now = time.monotonic()
        due = bool((self.every and nit % self.every == 0)
                   or (self.seconds and now - self._last >= self.seconds))
        stop = self.signal_received is not None
        comm = self.comm
        if comm.size > 1:
            flags = comm.allreduce(np.array([float(due), float(stop)]), op="max")
            due, stop = bool(flags[0]), bool(flags[1])
            if stop and self.signal_received is None:
                self.signal_received = "a signal on another rank"
        return due, stop

    def save(self, state, nit, solver):
        """Write ``state`` as the checkpoint of iteration ``nit``; return its path."""
        comm = self.comm
        os.makedirs(self.directory, exist_ok=True)
        name = f"{self.prefix}-{nit:09d}"
        if comm.size > 1:
            name += f"-rank{comm.rank}of{comm.size}"
        path = os.path.join(self.directory, name + ".npz")
        import mgnn

        meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "mgnn_version": mgnn.__version__, "solver": solver, "nit": int(nit),
                "rank": comm.rank, "size": comm.size,
                "written": datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds"),
                "metadata": self.metadata}
        write_archive(path, meta, state, durable=self.fsync)
        if comm.size > 1:
            comm.barrier()  # every rank's file is in place before any is pruned
        self._prune()
        self.last_path = path
        self._last = time.monotonic()
        return path

    def _prune(self):
        if self.keep is None:
            return
        comm = self.comm
        found = list_checkpoints(self.directory, self.prefix, comm.rank, comm.size)
        for _, path in found[:-self.keep]:
            try:
                os.remove(path)
            except FileNotFoundError:  # pragma: no cover - removed by someone else
                pass

    def scope(self, wrap, offset, solver):
        """The checkpointer an inner solver sees (see :class:`Scope`)."""
        return Scope(self, wrap, offset, solver)

    @property
    def root(self):
        return self


class Scope:
    """An outer solver's checkpointer as seen by an inner solver run.

    The inner run polls and saves through it: its iteration count is shifted by
    ``offset`` (the outer run's iterations before it), and the state it saves is
    passed through ``wrap(inner_state)``, which returns the outer solver's whole
    state with the inner state inside. Activation is the outer run's business.
    """

    def __init__(self, parent, wrap, offset, solver):
        self.parent, self.wrap, self.offset, self.solver = parent, wrap, int(offset), solver

    def activate(self):
        pass

    def release(self):
        pass

    def poll(self, nit):
        return self.parent.poll(nit + self.offset)

    def save(self, state, nit, solver):
        return self.parent.save(self.wrap(state), nit + self.offset, self.solver)

    def scope(self, wrap, offset, solver):
        return Scope(self, wrap, offset, solver)

    @property
    def signal_received(self):
        return self.parent.signal_received

    @property
    def last_path(self):
        return self.parent.last_path

    @property
    def root(self):
        return self.parent.root


def as_checkpointer(value, name="checkpoint"):
    """``None``, a :class:`Checkpointer` / :class:`Scope`, or a directory (-> defaults)."""
    if value is None or isinstance(value, (Checkpointer, Scope)):
        return value
    if isinstance(value, (str, os.PathLike)):
        return Checkpointer(value)
    raise TypeError(f"{name} must be None, a Checkpointer or a directory, got "
                    f"{type(value).__name__}")


def interrupted_message(ck, nit, path):
    """The message of a result stopped by a signal."""
    return (f"Interrupted by {ck.signal_received} after iteration {nit}; "
            f"checkpoint written to {path}.")
