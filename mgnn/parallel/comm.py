"""Communicators: a thin wrapper over mpi4py and a serial stand-in.

Every module of mgnn that needs MPI asks :func:`get_comm` for a communicator
and talks to it through the small interface below; with one process, or
without mpi4py, the same code runs on :class:`SerialComm`.

Point-to-point traffic is buffer based (``Send``/``Recv``/``Isend``/``Irecv``
on contiguous NumPy arrays, never pickled objects); reductions act on floats or
arrays.

**Faults.** An exception on one rank of an MPI job would leave the other ranks
waiting in their next collective forever. As soon as mgnn wraps a communicator of
a job with more than one process (:class:`MPIComm`), it installs
:func:`install_abort_handler`: an uncaught exception is printed (traceback, then
one line naming the rank) and ``MPI_Abort`` ends the whole job with a non-zero
status, as ``python -m mpi4py script.py`` does. :func:`uninstall_abort_handler`
removes it.

Examples
--------
>>> import numpy as np
>>> comm = get_comm()            # SerialComm unless run under mpiexec -n P>1
>>> comm.rank, comm.size
(0, 1)
>>> comm.allreduce(2.5)
2.5
>>> comm.allreduce(np.array([1.0, 2.0]), op="max")
array([1., 2.])
"""

from __future__ import annotations

import numpy as np

from mgnn._validation import check_choice

__all__ = ["Comm", "SerialComm", "MPIComm", "get_comm", "install_abort_handler",
           "uninstall_abort_handler"]

_OPS = ("sum", "max", "min")


class Comm:
    """Interface of an mgnn communicator (documentation; see the subclasses).

    Attributes
    ----------
    rank, size : int
        This process's rank and the number of processes.
    """

    rank = 0
    size = 1

    def allreduce(self, x, op="sum"):
        """Reduce a float or an array over all ranks; every rank gets the result."""
        raise NotImplementedError

    def Send(self, buf, dest, tag=0):  # noqa: N802 - MPI naming
        """Blocking send of the contiguous array ``buf`` to ``dest``."""
        raise NotImplementedError

    def Recv(self, buf, source, tag=0):  # noqa: N802
        """Blocking receive into the contiguous array ``buf`` from ``source``."""
        raise NotImplementedError

    def Isend(self, buf, dest, tag=0):  # noqa: N802
        """Non-blocking send; returns a request with ``Wait()``."""
        raise NotImplementedError

    def Irecv(self, buf, source, tag=0):  # noqa: N802
        """Non-blocking receive; returns a request with ``Wait()``."""
        raise NotImplementedError

    def waitall(self, requests):
        """Wait for every request in ``requests`` (``None`` entries are skipped)."""
        for r in requests:
            if r is not None:
                r.Wait()

    def barrier(self):
        """Synchronise all ranks."""

    def Bcast(self, buf, root=0):  # noqa: N802
        """Broadcast the contiguous array ``buf`` of rank ``root`` into ``buf`` on every rank."""
        raise NotImplementedError

    def allgatherv(self, sendbuf, recvbuf, counts):
        """Gather blocks of rows: rank r sends ``counts[r]`` rows of ``sendbuf``.

        ``recvbuf`` has ``sum(counts)`` rows of the same trailing shape and
        receives the blocks in rank order, on every rank.
        """
        raise NotImplementedError


class _DoneRequest:
    """A request that is already complete (serial stand-in)."""

    def __init__(self, action=None):
        self._action = action

    def Wait(self):  # noqa: N802
        if self._action is not None:
            action, self._action = self._action, None
            action()

    def Test(self):  # noqa: N802
        self.Wait()
        return True


class SerialComm(Comm):
    """The one-process communicator: reductions are identities.

    Point-to-point messages to oneself are matched in order by tag, so code
    written for P ranks also runs at P = 1.

    Examples
    --------
    >>> import numpy as np
    >>> c = SerialComm()
    >>> c.Send(np.array([1.0, 2.0]), dest=0, tag=3)
    >>> out = np.empty(2)
    >>> c.Recv(out, source=0, tag=3)
    >>> out
    array([1., 2.])
    """

    rank = 0
    size = 1

    def __init__(self):
        self._mailbox = {}

    def __repr__(self):
        return "SerialComm(rank=0, size=1)"

    def _check_peer(self, peer, name):
        if peer != 0:
            raise ValueError(f"{name} must be 0 on a SerialComm, got {peer}")

    def allreduce(self, x, op="sum"):
        check_choice(op, "op", _OPS)
        if isinstance(x, np.ndarray):
            return x.copy()
        return float(x)

    def Send(self, buf, dest, tag=0):  # noqa: N802
        self._check_peer(dest, "dest")
        self._mailbox.setdefault(tag, []).append(np.array(buf, copy=True))

    def Recv(self, buf, source, tag=0):  # noqa: N802
        self._check_peer(source, "source")
        queue = self._mailbox.get(tag)
        if not queue:
            raise RuntimeError(f"SerialComm.Recv: no message with tag {tag} was sent")
        np.copyto(buf, queue.pop(0))

    def Isend(self, buf, dest, tag=0):  # noqa: N802
        self.Send(buf, dest, tag)
        return _DoneRequest()

    def Irecv(self, buf, source, tag=0):  # noqa: N802
        self._check_peer(source, "source")
        return _DoneRequest(lambda: self.Recv(buf, source, tag))

    def Bcast(self, buf, root=0):  # noqa: N802
        self._check_peer(root, "root")

    def allgatherv(self, sendbuf, recvbuf, counts):
        if len(counts) != 1 or counts[0] != len(sendbuf):
            raise ValueError(f"counts must be [{len(sendbuf)}] on a SerialComm, got {counts}")
        np.copyto(recvbuf, sendbuf)


class MPIComm(Comm):
    """An mgnn communicator over an ``mpi4py.MPI.Comm``.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        The communicator to wrap (kept as ``.comm``).
    """

    def __init__(self, comm):
        from mpi4py import MPI

        self._MPI = MPI
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self._ops = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}
        if MPI.COMM_WORLD.Get_size() > 1:
            install_abort_handler()

    def __repr__(self):
        return f"MPIComm(rank={self.rank}, size={self.size})"

    def allreduce(self, x, op="sum"):
        check_choice(op, "op", _OPS)
        if isinstance(x, np.ndarray):
            send = np.ascontiguousarray(x)
            out = np.empty_like(send)
            self.comm.Allreduce(send, out, op=self._ops[op])
            return out
        send = np.array([float(x)])
        out = np.empty(1)
        self.comm.Allreduce(send, out, op=self._ops[op])
        return float(out[0])

    def Send(self, buf, dest, tag=0):  # noqa: N802
        self.comm.Send(buf, dest=dest, tag=tag)

    def Recv(self, buf, source, tag=0):  # noqa: N802
        self.comm.Recv(buf, source=source, tag=tag)

    def Isend(self, buf, dest, tag=0):  # noqa: N802
        return self.comm.Isend(buf, dest=dest, tag=tag)

    def Irecv(self, buf, source, tag=0):  # noqa: N802
        return self.comm.Irecv(buf, source=source, tag=tag)

    def barrier(self):
        self.comm.Barrier()

    def Bcast(self, buf, root=0):  # noqa: N802
        self.comm.Bcast(buf, root=root)

    def allgatherv(self, sendbuf, recvbuf, counts):
        row = int(np.prod(recvbuf.shape[1:], dtype=np.int64))
        counts = np.asarray(counts, dtype=np.int64) * row
        displs = np.concatenate(([0], np.cumsum(counts)[:-1]))
        self.comm.Allgatherv(np.ascontiguousarray(sendbuf), [recvbuf, (counts, displs)])


_previous_hook = None


def _abort_hook(etype, value, tb):
    """``sys.excepthook`` of an MPI job: print the error, then abort every rank."""
    import sys

    try:
        (_previous_hook or sys.__excepthook__)(etype, value, tb)
    finally:
        try:
            from mpi4py import MPI

            world = MPI.COMM_WORLD
            rank, size = world.Get_rank(), world.Get_size()
            sys.stderr.write(f"mgnn: uncaught {etype.__name__} on rank {rank} of {size}; "
                             "calling MPI_Abort to end the whole job\n")
            sys.stderr.flush()
            if size > 1:
                import time

                time.sleep(0.5)  # let the launcher forward the message before the abort
                world.Abort(1)
        except Exception:  # pragma: no cover - MPI already gone
            pass


def install_abort_handler():
    """Make an uncaught exception on any rank end the whole MPI job (``MPI_Abort``).

    Installs a ``sys.excepthook`` that first runs the previous hook (the traceback
    is printed), then writes which rank failed and calls ``MPI_Abort`` on
    ``COMM_WORLD`` when more than one process runs. Idempotent; mgnn calls it when
    it wraps a communicator of a multi-process job.
    """
    import sys

    global _previous_hook
    if sys.excepthook is not _abort_hook:
        _previous_hook = sys.excepthook
        sys.excepthook = _abort_hook


def uninstall_abort_handler():
    """Restore the ``sys.excepthook`` that :func:`install_abort_handler` replaced."""
    import sys

    global _previous_hook
    if sys.excepthook is _abort_hook:
        sys.excepthook = _previous_hook or sys.__excepthook__
        _previous_hook = None


def get_comm(comm=None):
    """Return an mgnn communicator.

    Parameters
    ----------
    comm : None, Comm or mpi4py.MPI.Comm
        ``None`` gives ``MPI.COMM_WORLD`` when mpi4py is installed and more
        than one process runs, else a :class:`SerialComm`. An mgnn
        communicator is returned as it is; an mpi4py communicator is wrapped.

    Examples
    --------
    >>> get_comm(SerialComm())
    SerialComm(rank=0, size=1)
    """
    if comm is None:
        try:
            from mpi4py import MPI
        except ImportError:
            return SerialComm()
        world = MPI.COMM_WORLD
        return MPIComm(world) if world.Get_size() > 1 else SerialComm()
    if isinstance(comm, Comm):
        return comm
    if hasattr(comm, "Get_rank") and hasattr(comm, "Allreduce"):
        return MPIComm(comm)
    raise TypeError(
        f"comm must be None, an mgnn Comm or an mpi4py communicator, got {type(comm).__name__}"
    )
