"""Cost per time step inside MGRIT against plain serial stepping.

Run by hand::

    python benchmarks/mgrit.py [--repeats 7] [--iters 5]

For each problem, one run measures (medians over repeats):

* the wall time of an MGRIT solve (two levels, FCF, cf = 4, a fixed number of
  iterations, residual norms computed every iteration), and the number of
  steps it took on all levels;
* the time of one plain step: serial stepping over the whole grid with the
  same stepper and preallocated states, divided by N.

``ratio = MGRIT time / (steps taken x plain step time)``; the solver's own
machinery (plans, restriction, correction, residuals, C-relaxation,
bookkeeping) is the excess over 1. Target: ratio <= 1.2.

Problems: Dahlquist u' = -u (state of shape (1,)), heat equation (nx = 63,
backward Euler, sparse LU per step size), and a ResNet-like stepper
u <- u + h tanh(u W_n^T + b_n) with width w = 32, batch s = 100, N = 1024
layers, written with preallocated buffers (coarse steps use the weights of
their first fine layer, ``index``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

# one BLAS thread: the MPI model is one process per core, and BLAS threads that
# spin on a busy machine would swamp the per-step costs measured here
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from mgnn.mgrit import MGRIT, Stepper  # noqa: E402
from mgnn.mgrit.problems import Dahlquist, Heat1D  # noqa: E402


class ResNetLike(Stepper):
    """u <- u + h tanh(u W_n^T + b_n), n = index of the first fine layer of the step."""

    def __init__(self, n_layers=1024, width=32, batch=100, seed=0):
        super().__init__((batch, width))
        rng = np.random.default_rng(seed)
        self.W = rng.standard_normal((n_layers, width, width)) / np.sqrt(width)
        self.WT = np.ascontiguousarray(self.W.transpose(0, 2, 1))
        self.b = rng.standard_normal((n_layers, width)) * 0.1
        self.z = np.empty((batch, width))

    def step(self, u_in, u_out, t0, t1, level, index):
        z = self.z
        np.matmul(u_in, self.WT[index], out=z)
        z += self.b[index]
        np.tanh(z, out=z)
        z *= t1 - t0
        np.add(u_in, z, out=u_out)


def plain_sweep(stepper, t, states):
    """Time one serial sweep over the grid with preallocated states."""
    views = list(states)
    tt = t.tolist()
    step = stepper.step
    n = len(t) - 1
    tic = time.perf_counter()
    for i in range(n):
        step(views[i], views[i + 1], tt[i], tt[i + 1], 0, i)
    return time.perf_counter() - tic


def measure(stepper, t, u0, repeats, iters, **opts):
    """Medians of plain-step time and MGRIT wall time, measured interleaved."""
    n = len(t) - 1
    states = np.empty((n + 1,) + stepper.shape)
    states[0] = u0
    solver = MGRIT(stepper, t, **opts)
    solver.solve(u0, max_iter=1)  # warm-up (caches, first touch)
    plain_sweep(stepper, t, states)
    plain, wall = [], []
    for _ in range(repeats):
        plain.append(plain_sweep(stepper, t, states) / n)
        tic = time.perf_counter()
        res = solver.solve(u0, max_iter=iters)
        wall.append(time.perf_counter() - tic)
    return statistics.median(plain), statistics.median(wall), res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--cf", type=int, default=4)
    ap.add_argument("--levels", type=int, default=2)
    args = ap.parse_args(argv)

    heat = Heat1D(nx=63)
    problems = [
        ("dahlquist", Dahlquist(-1.0), np.linspace(0.0, 5.0, 1025), np.ones(1)),
        ("heat", heat, np.linspace(0.0, 1.0, 1025), heat.initial()),
        ("resnet w=32 s=100", ResNetLike(), np.linspace(0.0, 1.0, 1025),
         np.random.default_rng(1).standard_normal((100, 32))),
    ]
    print(f"MGRIT: {args.levels} levels, FCF, cf={args.cf}, {args.iters} iterations, "
          f"medians of {args.repeats} repeats; N = 1024 fine steps")
    head = f"{'problem':<20}{'steps':>8}{'MGRIT [s]':>12}{'steps x plain [s]':>19}{'ratio':>8}"
    print(head)
    print("-" * len(head))
    for name, stepper, t, u0 in problems:
        plain, wall, res = measure(stepper, t, u0, args.repeats, args.iters,
                                   cf=args.cf, max_levels=args.levels)
        steps = res.n_steps
        ideal = steps * plain
        print(f"{name:<20}{steps:>8}{wall:>12.4f}{ideal:>19.4f}{wall / ideal:>8.3f}")

if __name__ == "__main__":
    main()
