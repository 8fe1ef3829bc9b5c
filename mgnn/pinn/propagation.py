"""Layer-parallel propagation of derivative streams: MGRIT over the extended state.

A PINN sweep carries a stack of ``S`` streams (value, first and second input
derivatives) through the residual layers; the stack is the state of a
time-stepping problem in the layer dimension, exactly as the plain state is for
:class:`~mgnn.mgrit.MGRITPropagation`. :class:`MGRITStreams` solves the forward
recursion of the stack and its adjoint recursion (reversed time) with the
generic :class:`~mgnn.mgrit.MGRIT` solver and the steppers below; tangent and
second-order sweeps (for Hessian products) stay serial, linearised at the
states of the preceding MGRIT forward solve.

Steppers (time measured in layers, as in :mod:`mgnn.mgrit.layer_parallel`):

* :class:`StreamStepper`: on level 0 the step from fine index ``n`` is residual
  layer ``n`` on the stack, writing its record into the workspace; on a coarse
  level spanning ``m`` layers it is one layer with step ``m h`` and the weights
  of its first fine layer (injection).
* :class:`StreamAdjointStepper`: reversed index ``j`` is layer ``N-1-j``; on level
  0 the transposed Jacobian of that layer (writing its gradient block), on a
  coarse level the transpose of the coarse forward step over layers ``n0 ..
  n0+m-1``, linearised at ``V_{n0}`` (whose record is that of fine layer ``n0``:
  the record ``V W^T + b`` does not depend on the step size).

With one level both solves are the serial sweeps, bit for bit.
"""

from __future__ import annotations

import math
import weakref

import numpy as np

from mgnn._validation import check_choice, check_positive_int, check_scalar
from mgnn.mgrit import MGRIT, SolveStats, Stepper
from mgnn.mgrit.layer_parallel import MGRITStatistics
from mgnn.pinn.streams import SerialStreams, StreamPropagation, stream_kernels

__all__ = ["MGRITStreams", "StreamStepper", "StreamAdjointStepper"]

RELAX = {"F": 0, "FCF": 1, "FCFCF": 2}


class _Bound:
    """Weights bound for one solve (views into theta)."""

    W = b = None


class StreamStepper(Stepper):
    """Forward MGRIT stepper of the residual layers on a stream stack (S, s, w).

    Examples
    --------
    >>> from mgnn.nets import ResNet
    >>> StreamStepper(ResNet(2, 4, 8, 1, task="regression"), 5, 3, 1)
    StreamStepper(8 layers, width 4, h=0.125, 3 streams at 5 points)
    """

    def __init__(self, net, s, S, m2, xp=np):
        super().__init__((S, s, net.width), net.dtype)
        self.net, self.m2, self.xp = net, m2, xp
        self.k = stream_kernels(xp)
        self.h, self.act = net.h, net.act
        self.bound = _Bound()
        self.G = None
        self.rec = xp.empty(self.shape, net.dtype)

    def new_vector(self, level=0):
        return self.xp.empty(self.shape, self.dtype)

    def __repr__(self):
        S, s, w = self.shape
        return (f"{type(self).__name__}({self.net.depth} layers, width {w}, h={self.h:g}, "
                f"{S} streams at {s} points)")

    def step(self, u_in, u_out, t0, t1, level, index):
        W, b = self.bound.W[index], self.bound.b[index]
        if level == 0:
            self.k.forward_step(u_in, W, b, self.h, self.act, self.m2, self.G[index], u_out)
            return
        span = int(round(t1 - t0))
        self.k.forward_step(u_in, W, b, self.h * span, self.act, self.m2, self.rec, u_out)


class StreamAdjointStepper(StreamStepper):
    """Adjoint MGRIT stepper of the residual layers on a stream stack, in reversed time."""

    def __init__(self, net, s, S, m2, xp=np):
        super().__init__(net, s, S, m2, xp)
        self.N, self.w = net.depth, net.width
        self.V = self.grad_blocks = None
        self.D = xp.empty(self.shape, net.dtype)

    def step(self, u_in, u_out, t0, t1, level, index):
        k, W = self.k, self.bound.W
        if level == 0:
            n = self.N - 1 - index
            g = self.grad_blocks[n]
            ww = self.w * self.w
            k.adjoint_step(u_in, self.V[n], W[n], self.G[n], self.h, self.act, self.m2, self.D,
                           L=u_out, gW=g[:ww].reshape(self.w, self.w), gb=g[ww:])
            return
        span = int(round(t1 - t0))
        n0 = self.N - index - span
        k.adjoint_step(u_in, self.V[n0], W[n0], self.G[n0], self.h * span, self.act, self.m2,
                       self.D, L=u_out)


class _Engine:
    def __init__(self, prop, net, s, S, m2, xp):
        self.net, self.s, self.S = net, s, S
        self.fstep = StreamStepper(net, s, S, m2, xp)
        self.bstep = StreamAdjointStepper(net, s, S, m2, xp)
        self.bstep.bound = self.fstep.bound
        t = np.arange(net.depth + 1, dtype=np.float64)
        opts = dict(cf=prop.cf, max_levels=prop.levels, min_coarse=prop.min_coarse,
                    cf_sweeps=RELAX[prop.relax], cycle=prop.cycle)
        self.fwd = MGRIT(self.fstep, t, **opts)
        self.bwd = MGRIT(self.bstep, t, check_stepper=False, **opts)
        self.warm_f = self.warm_b = False

    def bind(self, net, theta):
        p = net.unpack(theta)
        self.fstep.bound.W, self.fstep.bound.b = p.W, p.b
        self.net = self.fstep.net = self.bstep.net = net


class MGRITStreams(MGRITStatistics, StreamPropagation):
    """Forward and adjoint sweeps of the derivative streams by MGRIT (layer-parallel PINNs).

    The options are those of :class:`~mgnn.mgrit.MGRITPropagation` (one process).

    Parameters
    ----------
    levels : int
        MGRIT levels (1: the serial sweep, bit for bit).
    cf : int or list of int
        Coarsening factor per level.
    relax : {'FCF', 'F', 'FCFCF'}
    fwd_iters, bwd_iters : int
        Iterations of the forward and adjoint solves (maximum with ``tol``).
    tol : float, optional
        Residual tolerance of each solve (default: fixed iteration counts, one-shot).
    cycle : {'V', 'F'}
    min_coarse : int
    warm_start : bool
        Start each solve from the previous solution on the same workspace (the same
        term of an objective, or the same batch size).

    Attributes
    ----------
    stats : list of dict
        ``{'forward': SolveStats, 'adjoint': SolveStats or None}`` per sweep.

    Notes
    -----
    Work beyond the serial sweeps (:meth:`take_extra_work`) is counted in layer
    GEMMs on the stack (one per forward step, two per fine adjoint step, one per
    coarse adjoint step), in units of a plain value-and-gradient of the network.

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.nets import ResNet
    >>> from mgnn.pinn import PINNObjective
    >>> net = ResNet(1, 4, 16, 1, task="regression")
    >>> x = np.linspace(0, 1, 20)[:, None]
    >>> serial = PINNObjective(net, "poisson", x, pde_params={"n_dims": 1}, source=1.0)
    >>> prop = MGRITStreams(levels=2, cf=4, fwd_iters=8, bwd_iters=8)
    >>> obj = serial.with_net(net, prop)
    >>> theta = net.init(0)
    >>> g0, g = serial.grad(theta), obj.grad(theta)
    >>> bool(np.linalg.norm(g - g0) <= 1e-10 * np.linalg.norm(g0))
    True
    >>> prop.last_stats()["forward"].level_steps
    [272, 64]
    """

    def __init__(self, levels=2, cf=4, relax="FCF", fwd_iters=2, bwd_iters=1, tol=None,
                 cycle="V", min_coarse=2, warm_start=True, max_stats=100000):
        self.levels = check_positive_int(levels, "levels")
        if isinstance(cf, (list, tuple)):
            self.cf = [check_positive_int(c, "cf", minimum=2) for c in cf]
        else:
            self.cf = check_positive_int(cf, "cf", minimum=2)
        self.relax = check_choice(relax, "relax", tuple(RELAX))
        self.fwd_iters = check_positive_int(fwd_iters, "fwd_iters")
        self.bwd_iters = check_positive_int(bwd_iters, "bwd_iters")
        self.tol = None if tol is None else check_scalar(tol, "tol", low=0.0)
        self.cycle = check_choice(cycle, "cycle", ("V", "F"))
        self.min_coarse = check_positive_int(min_coarse, "min_coarse")
        self.warm_start = bool(warm_start)
        self.max_stats = check_positive_int(max_stats, "max_stats")
        self.stats = []
        self._engines = weakref.WeakKeyDictionary()  # workspace -> {shape key: engine}
        self._extra_flops = 0.0
        self._boost_iters = self._boost_left = 0
        self._boosted = False
        self._serial = SerialStreams()

    def __repr__(self):
        return (f"MGRITStreams(levels={self.levels}, cf={self.cf}, relax={self.relax!r}, "
                f"fwd_iters={self.fwd_iters}, bwd_iters={self.bwd_iters}, tol={self.tol}, "
                f"cycle={self.cycle!r}, warm_start={self.warm_start})")

    # -- controls and statistics (as MGRITPropagation) --------------------------
    def boost(self, iterations, steps):
        """``iterations`` MGRIT iterations for the next ``steps`` evaluations."""
        self._boost_iters = check_positive_int(iterations, "iterations")
        self._boost_left = check_positive_int(steps, "steps", minimum=0)

    def reset(self):
        """Forget the warm starts."""
        for engines in self._engines.values():
            for eng in engines.values():
                eng.warm_f = eng.warm_b = False


    def factors(self, kind="forward"):
        key = check_choice(kind, "kind", ("forward", "adjoint"))
        return np.array([e[key].factor if e.get(key) is not None else math.nan
                         for e in self.stats])

    # -- solves ------------------------------------------------------------------
    def _engine(self, net, ws):
        # one engine (solvers and warm starts) per workspace: each term of a PINN
        # objective has its own points, so warm starts must not be shared between terms
        S = ws.layout.S
        key = (net.depth, net.width, net.h, net.act, np.dtype(net.dtype).str, S, ws.m2, ws.s)
        engines = self._engines.get(ws)
        if engines is None:
            engines = self._engines[ws] = {}
        eng = engines.get(key)
        if eng is None:
            eng = engines[key] = _Engine(self, net, ws.s, S, ws.m2, ws.xp)
        return eng

    def _solve(self, eng, kind, u0):
        solver = eng.fwd if kind == "forward" else eng.bwd
        warm = self.warm_start and (eng.warm_f if kind == "forward" else eng.warm_b)
        iters = self._boost_iters if self._boosted else (
            self.fwd_iters if kind == "forward" else self.bwd_iters)
        res = solver.solve(u0, solver.u if warm else None, tol=self.tol, max_iter=iters,
                           residuals=True)
        ok = bool(np.all(np.isfinite(res.residuals)))
        if kind == "forward":
            eng.warm_f = ok
        else:
            eng.warm_b = ok
        steps = [int(x) for x in res.level_steps]
        N = eng.net.depth
        if kind == "forward":
            gemms, serial = sum(steps), N
        else:
            gemms, serial = 2 * steps[0] + sum(steps[1:]), 2 * N
        w = eng.net.width
        self._extra_flops += (gemms - serial) * 2.0 * eng.S * eng.s * w * w
        return res, SolveStats(kind, res.nit, res.residuals.copy(), res.factors.copy(), steps,
                               res.wall_time, warm)

    def _record(self, entry):
        self.stats.append(entry)
        if len(self.stats) > self.max_stats:
            del self.stats[: len(self.stats) - self.max_stats]

    def forward(self, net, theta, ws):
        self._boosted = self._boost_left > 0
        if self._boosted:
            self._boost_left -= 1
        eng = self._engine(net, ws)
        eng.bind(net, theta)
        eng.fstep.G = ws.G
        res, st = self._solve(eng, "forward", ws.V[0])
        ws.xp.copyto(ws.V, res.u)
        self._record({"forward": st, "adjoint": None})

    def backward(self, net, theta, ws, lam_N, grad_blocks):
        eng = self._engine(net, ws)
        eng.bind(net, theta)
        b = eng.bstep
        b.V, b.G, b.grad_blocks = ws.V, ws.G, grad_blocks
        res, st = self._solve(eng, "adjoint", lam_N)
        if self.stats and self.stats[-1]["adjoint"] is None:
            self.stats[-1]["adjoint"] = st
        else:
            self._record({"forward": None, "adjoint": st})
        ws.xp.copyto(ws.L[1], res.u[-1])
        return ws.L[1]

    def tangent(self, net, theta, dtheta, ws):
        self._serial.tangent(net, theta, dtheta, ws)

    def second_order_backward(self, net, theta, dtheta, ws, lam_N, dlam_N, hv_blocks):
        return self._serial.second_order_backward(net, theta, dtheta, ws, lam_N, dlam_N,
                                                  hv_blocks)
