"""Sub-communicators: splitting, reversing, and the 2-D (layers x data) process grid.

Layer-parallel training runs on a grid of ``P_layers x P_data`` processes: the
ranks of one *layer communicator* hold consecutive blocks of layers of the
same samples; the ranks of one *data communicator* hold the same layers of
different samples. World rank ``r`` sits at layer position ``r % P_layers``
and data position ``r // P_layers``.

Examples
--------
>>> from mgnn.parallel import SerialComm
>>> layer, data = process_grid(SerialComm(), layers=1)
>>> layer.size, data.size
(1, 1)
>>> reversed_comm(SerialComm()).rank
0
"""

from __future__ import annotations

from mgnn._validation import check_positive_int
from mgnn.parallel.comm import MPIComm, SerialComm, get_comm

__all__ = ["split_comm", "reversed_comm", "process_grid"]


def split_comm(comm, color, key):
    """``MPI_Comm_split``: the sub-communicator of the ranks with the same ``color``,
    ordered by ``key``. On a :class:`SerialComm` a new :class:`SerialComm`."""
    comm = get_comm(comm)
    if isinstance(comm, MPIComm):
        return MPIComm(comm.comm.Split(int(color), int(key)))
    if comm.size == 1:
        return SerialComm()
    raise TypeError(f"cannot split a {type(comm).__name__}")


def reversed_comm(comm):
    """The same ranks in reverse order (rank ``r`` becomes ``size - 1 - r``).

    MGRIT in reversed time (the adjoint sweep) uses it so that the rank owning
    the last layers also owns the first reversed time points.
    """
    comm = get_comm(comm)
    return split_comm(comm, 0, comm.size - 1 - comm.rank)


def process_grid(comm=None, layers=None):
    """Split ``comm`` into a layer and a data communicator.

    Parameters
    ----------
    comm : None, Comm or mpi4py communicator
        The world (see :func:`mgnn.parallel.get_comm`).
    layers : int, optional
        Ranks along the layer axis; must divide ``comm.size``. Default: all
        ranks (no data parallelism).

    Returns
    -------
    layer_comm, data_comm : Comm
        World rank ``r`` has rank ``r % layers`` in ``layer_comm`` and
        ``r // layers`` in ``data_comm``.
    """
    comm = get_comm(comm)
    layers = comm.size if layers is None else check_positive_int(layers, "layers")
    if comm.size % layers:
        raise ValueError(f"layers must divide the number of processes {comm.size}, got {layers}")
    lpos, dpos = comm.rank % layers, comm.rank // layers
    return split_comm(comm, dpos, lpos), split_comm(comm, lpos, dpos)
