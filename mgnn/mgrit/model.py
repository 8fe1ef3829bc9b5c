"""A performance model of serial and layer-parallel (MGRIT) propagation.

The model counts the steps MGRIT takes on every level (exactly as
:class:`~mgnn.mgrit.MGRIT` does; :func:`mgrit_level_steps` reproduces its
``level_steps``) and charges them on the critical path of ``P`` ranks:

* a sweep over ``n_l`` intervals of level ``l`` (F- or CF-relaxation, the
  F-interpolation after a correction, the coarse right-hand side) costs
  ``ceil(n_l / P) * c + m`` where ``c`` is the cost of one step and ``m`` the
  cost of one state message (``latency + bytes / bandwidth``; 0 on one rank);
* the coarsest solve is sequential: ``n_L * c + (min(P, n_L) - 1) * m``;
* each iteration's residual norm is an allreduce, ``ceil(log2 P) * latency``;
* one value-and-gradient evaluation adds the opening and closing layers and the
  loss (``c_io``) and, with MGRIT, the copy of the states and the boundary
  exchanges (one message each way).

Serial propagation costs ``N (c_f + c_b) + c_io``. Step costs come from
:func:`measure_step_costs` (timed kernel calls on this machine), the message
cost from :func:`measure_latency` (MPI ping-pong).

Examples
--------
>>> costs = StepCosts(forward=1e-5, adjoint=2e-5, adjoint_coarse=1e-5, io=1e-4,
...                   latency=2e-6, bandwidth=5e9, state_bytes=8 * 100 * 8)
>>> model = PerformanceModel(costs)
>>> round(model.serial_time(1024), 5)
0.03082
>>> t = model.mgrit_time(1024, P=64, cf=4, levels=4, fwd_iters=2, bwd_iters=1)
>>> round(model.serial_time(1024) / t, 1)
9.4
>>> mgrit_level_steps(32, cf=4, levels=2, nu=1, iters=2)
[160, 32]
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from mgnn._validation import check_positive_int

__all__ = ["StepCosts", "PerformanceModel", "measure_step_costs", "measure_latency",
           "mgrit_level_steps", "level_intervals"]


@dataclass
class StepCosts:
    """Measured costs (seconds) on one machine.

    Attributes
    ----------
    forward : float
        One forward layer step (s x w states).
    adjoint : float
        One fine adjoint step with the parameter gradient.
    adjoint_coarse : float
        One coarse adjoint step (no gradient).
    io : float
        Opening layer, closing layer and loss, forward and backward.
    latency : float
        Message latency (0 on one rank).
    bandwidth : float
        Bytes per second of a message.
    state_bytes : int
        Size of one state (s * w * itemsize).
    copy : float
        Seconds per byte of a state copy (memory bandwidth).
    fas : float
        The FAS right-hand side added after each coarse forward step.
    """

    forward: float
    adjoint: float
    adjoint_coarse: float
    io: float = 0.0
    latency: float = 0.0
    bandwidth: float = math.inf
    state_bytes: int = 0
    copy: float = 0.0
    fas: float = 0.0

    @property
    def message(self):
        """Cost of one state message."""
        return self.latency + self.state_bytes / self.bandwidth


def level_intervals(N, cf, levels):
    """Intervals of each level of MGRIT's hierarchy for ``N`` fine intervals."""
    n = [int(N)]
    cfs = list(cf) if isinstance(cf, (list, tuple)) else [cf]
    for lvl in range(levels - 1):
        m = cfs[min(lvl, len(cfs) - 1)]
        n.append(n[-1] // m)  # points after the last C-point are F-points
    return n


def mgrit_level_steps(N, cf, levels, nu, iters):
    """Steps MGRIT takes per level: V-cycles with F(CF)^nu relaxation from an
    F-relaxed initial guess (what ``MGRITResult.level_steps`` reports)."""
    n = level_intervals(N, cf, levels)
    if levels == 1:
        return [n[0]]
    steps = [0] * levels
    steps[0] += n[0]  # F-relaxation of the initial guess
    for _ in range(iters):
        for lvl in range(levels - 1):
            # relax: F-sweep unless consistent (level 0 after the initial sweep or a
            # correction; coarse levels after injection are not), then nu CF-sweeps
            f = 0 if lvl == 0 else 1
            steps[lvl] += (f + nu) * n[lvl] + n[lvl]  # + F-interpolation after correction
            steps[lvl + 1] += n[lvl + 1]  # coarse right-hand side Phi_c(v)
        steps[-1] += n[-1]  # coarsest solve
    return steps


class PerformanceModel:
    """Predicts the wall time of serial and MGRIT value-and-gradient evaluations.

    Parameters
    ----------
    costs : StepCosts
    """

    def __init__(self, costs):
        self.costs = costs

    def __repr__(self):
        c = self.costs
        return (f"PerformanceModel(forward {c.forward:.3g} s, adjoint {c.adjoint:.3g} s, "
                f"coarse adjoint {c.adjoint_coarse:.3g} s, io {c.io:.3g} s, "
                f"message {c.message:.3g} s)")

    def serial_time(self, N):
        """Seconds of one serial value-and-gradient evaluation with ``N`` layers."""
        c = self.costs
        return N * (c.forward + c.adjoint) + c.io

    def _solve_time(self, N, P, cf, levels, nu, iters, fine, coarse):
        c = self.costs
        msg = c.message if P > 1 else 0.0
        n = level_intervals(N, cf, levels)
        if levels == 1:
            return N * fine + (P - 1) * msg

        def sweep(lvl):
            return math.ceil(n[lvl] / P) * (fine if lvl == 0 else coarse) + msg

        t = sweep(0)
        red = math.ceil(math.log2(P)) * c.latency if P > 1 else 0.0
        for _ in range(iters):
            for lvl in range(levels - 1):
                f = 0 if lvl == 0 else 1
                t += (f + nu + 1) * sweep(lvl) + sweep(lvl + 1)
            t += n[-1] * coarse + (min(P, n[-1]) - 1) * msg
            t += red
        return t

    def mgrit_time(self, N, P, cf=4, levels=2, relax="FCF", fwd_iters=2, bwd_iters=1):
        """Seconds of one MGRIT value-and-gradient evaluation on ``P`` ranks."""
        check_positive_int(P, "P")
        nu = {"F": 0, "FCF": 1, "FCFCF": 2}[relax]
        c = self.costs
        t = c.io
        t += self._solve_time(N, P, cf, levels, nu, fwd_iters, c.forward, c.forward + c.fas)
        t += self._solve_time(N, P, cf, levels, nu, bwd_iters, c.adjoint, c.adjoint_coarse)
        # copy of the local states, boundary state exchange, halo of weights
        t += math.ceil((N + 1) / P) * c.state_bytes * c.copy
        if P > 1:
            t += 2 * c.message
        return t

    def speedup(self, N, P, **mgrit):
        """Predicted serial time / MGRIT time."""
        return self.serial_time(N) / self.mgrit_time(N, P, **mgrit)


def _median_time(fn, repeats, inner):
    ts = []
    for _ in range(repeats):
        tic = time.perf_counter()
        for _ in range(inner):
            fn()
        ts.append((time.perf_counter() - tic) / inner)
    return float(np.median(ts))


def measure_step_costs(net, s, repeats=7, inner=50, comm=None):
    """Time the layer steps of ``net`` on ``s`` samples (medians, seconds).

    Uses the MGRIT steppers themselves (so Python call overhead is included) and
    an objective on a one-layer copy of ``net`` for the opening/closing/loss cost.
    """
    from mgnn.mgrit.layer_parallel import ResNetAdjointStepper, ResNetStepper, _Weights
    from mgnn.objective import Objective

    rng = np.random.default_rng(0)
    theta = net.init(rng)
    p = net.unpack(theta)
    W = _Weights()
    W.bind(p.W, p.b, 0)
    w = net.width
    fs = ResNetStepper(net, s, W)
    bs = ResNetAdjointStepper(net, s, W)
    U = rng.standard_normal((net.depth + 1, s, w)).astype(net.dtype)
    S = np.empty((net.depth, s, w), net.dtype)
    G = np.empty((net.depth, net.block_size), net.dtype)
    fs.S = S
    bs.U, bs.S, bs.G = U, S, G
    L = rng.standard_normal((net.depth + 1, s, w)).astype(net.dtype)
    L2 = np.empty_like(L)
    U2 = np.empty_like(U)
    g = np.zeros((s, w), net.dtype)
    N = net.depth
    fs.step(U[0], U2[1], 0.0, 1.0, 0, 0)  # warm up the kernels

    # whole sweeps over distinct buffers (as in a solve), per step
    def fwd():
        for n in range(N):
            fs.step(U[n], U2[n + 1], n, n + 1.0, 0, n)

    def adj():
        for j in range(N):
            bs.step(L[j], L2[j + 1], j, j + 1.0, 0, j)

    def adj_c():  # coarse adjoint steps (span 1 keeps indices valid) plus the FAS add
        for j in range(N):
            bs.step(L[j], L2[j + 1], j, j + 1.0, 1, j)
            np.add(L2[j + 1], g, out=L2[j + 1])

    def add():
        for j in range(N):
            np.add(U2[j + 1], g, out=U2[j + 1])

    inner = max(1, inner // max(N // 8, 1))
    cf = _median_time(fwd, repeats, inner) / N
    cb = _median_time(adj, repeats, inner) / N
    cbc = _median_time(adj_c, repeats, inner) / N
    cadd = _median_time(add, repeats, inner) / N
    X = rng.standard_normal((s, net.n_in))
    y = rng.integers(0, net.n_out, s) if net.task == "classification" else \
        rng.standard_normal((s, net.n_out))
    small = net.with_depth(1)
    obj = Objective(small, X, y)
    th1 = small.init(rng)
    obj.value_and_grad(th1)
    io = max(_median_time(lambda: obj.value_and_grad(th1), repeats, inner) - cf - cb, 0.0)
    big = np.empty((256, s, w), net.dtype)
    big2 = np.empty_like(big)
    copy = _median_time(lambda: np.copyto(big2, big), repeats, 5) / big.nbytes
    lat, bw = measure_latency(comm, nbytes=s * w * np.dtype(net.dtype).itemsize)
    return StepCosts(cf, cb, cbc, io, lat, bw, s * w * np.dtype(net.dtype).itemsize, copy,
                     cadd)


def measure_latency(comm=None, nbytes=8, repeats=200):
    """Half the round-trip time of a ping-pong between ranks 0 and 1 of ``comm``:
    returns ``(latency, bandwidth)`` in seconds and bytes/second (``(0, inf)`` on
    one rank). Every rank of ``comm`` must call it."""
    from mgnn.parallel.comm import get_comm

    comm = get_comm(comm)
    if comm.size < 2:
        return 0.0, math.inf

    def pingpong(buf):
        comm.barrier()
        tic = time.perf_counter()
        for _ in range(repeats):
            if comm.rank == 0:
                comm.Send(buf, 1, 91)
                comm.Recv(buf, 1, 91)
            elif comm.rank == 1:
                comm.Recv(buf, 0, 91)
                comm.Send(buf, 0, 91)
        return (time.perf_counter() - tic) / (2 * repeats)

    small = pingpong(np.zeros(1))
    big = pingpong(np.zeros(max(nbytes // 8, 1) * 64))
    lat = comm.allreduce(small if comm.rank == 0 else 0.0)
    big = comm.allreduce(big if comm.rank == 0 else 0.0)
    extra = max(big - lat, 1e-12)
    bw = max(nbytes // 8, 1) * 64 * 8 / extra
    return lat, bw
