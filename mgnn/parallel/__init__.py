"""MPI layer: communicators (with a serial stand-in), block partitions and a
distributed vector space.

Examples
--------
>>> from mgnn.parallel import get_comm, block_range
>>> get_comm().size
1
>>> block_range(1025, 2, 1)
(513, 1025)
"""

from mgnn.parallel.comm import (
    Comm,
    MPIComm,
    SerialComm,
    get_comm,
    install_abort_handler,
    uninstall_abort_handler,
)
from mgnn.parallel.grid import process_grid, reversed_comm, split_comm
from mgnn.parallel.partition import block_offsets, block_owner, block_range
from mgnn.parallel.space import DistributedSpace

__all__ = [
    "Comm",
    "MPIComm",
    "SerialComm",
    "get_comm",
    "install_abort_handler",
    "uninstall_abort_handler",
    "block_offsets",
    "block_owner",
    "block_range",
    "DistributedSpace",
    "split_comm",
    "reversed_comm",
    "process_grid",
]
