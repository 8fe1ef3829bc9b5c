"""The communicator layer (serial stand-in), block partitions, distributed space."""

import numpy as np
import pytest

from mgnn.parallel import (
    DistributedSpace,
    SerialComm,
    block_offsets,
    block_owner,
    block_range,
    get_comm,
)


def test_block_partition_covers_and_balances():
    for n in (0, 1, 7, 1025):
        for p in (1, 2, 3, 5):
            off = block_offsets(n, p)
            assert off[0] == 0 and off[-1] == n and np.all(np.diff(off) >= 0)
            sizes = np.diff(off)
            assert sizes.max() - sizes.min() <= 1
            for r in range(p):
                lo, hi = block_range(n, p, r)
                assert all(block_owner(i, n, p) == r for i in range(lo, hi))
    with pytest.raises(ValueError, match="rank must be < size=2"):
        block_range(5, 2, 2)
    with pytest.raises(ValueError, match="size must be >= 1"):
        block_offsets(5, 0)


def test_serial_comm():
    c = get_comm()
    assert isinstance(c, SerialComm) and c.rank == 0 and c.size == 1
    assert get_comm(c) is c
    assert c.allreduce(3.0, op="max") == 3.0
    x = np.arange(3.0)
    y = c.allreduce(x)
    assert y is not x and np.array_equal(x, y)
    out = np.empty(3)
    req = c.Irecv(out, 0, tag=1)
    c.Isend(x, 0, tag=1).Wait()
    c.waitall([req, None])
    assert np.array_equal(out, x)
    recv = np.empty((3,))
    c.allgatherv(x, recv, [3])
    assert np.array_equal(recv, x)
    with pytest.raises(ValueError, match="unknown op"):
        c.allreduce(1.0, op="prod")
    with pytest.raises(ValueError, match="dest must be 0"):
        c.Send(x, 1)
    with pytest.raises(TypeError, match="comm must be"):
        get_comm("world")


def test_mpi_comm_wrapper_single_process():
    mpi = pytest.importorskip("mpi4py.MPI")
    from mgnn.parallel import MPIComm

    c = get_comm(mpi.COMM_SELF)
    assert isinstance(c, MPIComm) and c.size == 1
    assert c.allreduce(2.0) == 2.0
    np.testing.assert_array_equal(c.allreduce(np.ones(2), op="min"), np.ones(2))
    out = np.empty((2, 2))
    c.allgatherv(np.ones((2, 2)), out, [2])
    assert np.array_equal(out, np.ones((2, 2)))


def test_distributed_space_single_process():
    s = DistributedSpace(SerialComm())
    x = np.array([3.0, -4.0])
    assert s.dot(x, x) == 25.0 and s.norm(x) == 5.0 and s.max_abs(x) == 4.0
    assert s.all_finite(x) and not s.all_finite(np.array([np.inf]))
    assert "SerialComm" in repr(s)
