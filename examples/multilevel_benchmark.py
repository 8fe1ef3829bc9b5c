"""Multilevel training against single-level training: work and wall time to targets.

    python examples/multilevel_benchmark.py [--quick] [--seeds 10] [--problems a,b]
                                            [--methods A,B] [--suite all|rmtr|width]
                                            [--out out]

One harness for every multilevel solver of mgnn (RMTR and its objective-function-free
variant, MG/OPT, nested iteration) against the single-level methods (Adam, SGD with
momentum, L-BFGS, trust region), on the problems of :data:`PROBLEMS`:

``peaks-deep``, ``regression-deep``, ``regression4-deep``
    Deep residual networks (N = 256 layers, width 8, tanh; peaks, the smooth
    regression in 2 and in 4 dimensions) in the setting of the layer-parallel /
    multilevel-in-depth literature: ``init='layer_parallel'`` (residual weights
    ``0.1 U(-1, 1)``), time-derivative regulariser 1e-3; depth hierarchy of 3 levels,
    factor 4 (256, 64, 16 layers; the coarsest costs about 1/16 of a fine evaluation).
``peaks``, ``mnist1d``, ``regression``, ``rough``
    Depth 32, 3 levels (the problems of the former ``rmtr_benchmark.py``, plus a
    non-smooth regression).
``poisson``, ``darcy``
    MTNN's operator-learning regressions (:func:`mgnn.data.poisson_regression`,
    :func:`mgnn.data.darcy_regression`; 16 x 16 grids), ReLU networks of MTNN's
    width (400 for Poisson; 1024 for Darcy reduced to 256 here to bound the run
    time), Glorot initialisation, with MTNN's two-level width hierarchy. MTNN's
    learning rate and weight decay are converted from PyTorch's ``MSELoss`` to mgnn's
    MSE (``mgopt_preset('mtnn', mse_outputs=m)``).
``poisson-small``, ``darcy-small``
    The same problems scaled down so that 100 MTNN cycles take seconds, not minutes:
    8 x 8 grids (64 inputs; Poisson 64 outputs), width :data:`SMALL_WIDTH` (128;
    ``--mtnn-width``) instead of 400 / 1024, :data:`SMALL_SAMPLES` (500;
    ``--mtnn-samples``) training and as many validation samples instead of 1000.
    MTNN's optimiser settings are kept (SGD lr 0.01 momentum 0.9 weight decay 1e-6
    in PyTorch's units, converted; 100 V-cycles, 4 pre-, post- and coarse smoothing
    steps, tau on the smoothing batches, re-matching every 10 cycles); the batch is
    ``min(200, n // 4)`` samples (125 here), so that one smoothing stage is one pass
    over the data as MTNN's 4 batches of 200 are most of its 1000 samples.
    ``--suite mtnn`` runs these two.
``pinn-poisson``
    A physics-informed problem (:class:`~mgnn.pinn.PINNObjective`): -Laplace u = f on
    [0, 1]^2 with u = sin(pi x) sin(pi y), boundary values exact by an output
    transform, 1000 Latin-hypercube collocation points, a tanh ResNet of width 16 and
    depth 16 on a 3-level depth hierarchy; the validation metric is the relative L2
    error against the exact solution on the problem's evaluation grid (target 1e-2).
    ``--suite pinn`` runs it.

Methods (:data:`DEPTH_METHODS` on the depth problems, :data:`WIDTH_METHODS` on the
width problems):

``Adam``, ``SGD``
    Mini-batches of 100, SGD with momentum 0.9; learning rate tuned.
``SGD-MTNN``
    The smoother of MTNN's preset alone (one level): SGD, momentum 0.9, weight decay,
    batch 200, MTNN's learning rate (converted to mgnn's MSE), run to the work that
    MG/OPT-MTNN spends.
``L-BFGS``, ``TR``
    Full batch; strong-Wolfe L-BFGS, and the trust region with L-SR1 (memory 10).
``NI``
    Nested iteration: Adam (its tuned rate) for two epochs on each coarse level, then
    on the finest until the targets or the budget.
``RMTR``
    ``rmtr(H, theta0)`` with its defaults (:data:`RMTR_OPTIONS` lists any deviation):
    mini-batches from ``max(32, n // 16)`` samples grown by the norm test, L-SR1 on
    every level, V-cycles, separate correction radii, coarse visits of about one
    fine evaluation.
``RMTR-OFF``
    ``rmtr(..., variant='off')``: AdaGrad on every level, learning rate tuned,
    ``box_factor`` 30.
``MGOPT``
    MG/OPT V-cycles with an Adam smoother (batch 100, rate tuned), one pre- and one
    post-smoothing step, 20 coarse steps, tau on a fresh mini-batch.
``MGOPT-MTNN``
    ``mgopt(H, theta0, **mgopt_preset('mtnn', mse_outputs=m))``: 100 V-cycles.
    With ``--tune-mtnn`` the learning rate of SGD-MTNN and of MGOPT-MTNN is tuned
    on :data:`MTNN_LR_FACTORS` times MTNN's (the ``lr`` column shows the factor);
    otherwise both take MTNN's rate.

Every run starts from the same initial network per seed (``net.init(seed, ...)``;
mini-batches seeded by the seed too). A run stops when it has reached both
targets of its problem (a training loss and a validation metric: accuracy for
classification, mean absolute error for regression) or spent the problem's work
budget. Work is counted in fine-gradient equivalents (:mod:`mgnn.work`: one
value-and-gradient sweep of the finest network on all training data = 1; mini-batches
by their share, coarse levels by their flop ratio, Hessian-vector products 8/3);
wall time excludes the monitoring, which evaluates the full training loss and the
validation metric with separate, uncharged objectives whenever the work has grown
by ``budget / MONITOR_POINTS`` (this sets the resolution of work-to-target).

Learning rates are tuned per method and problem on a fixed grid (:data:`LR_GRIDS`)
on seed 0: the rate with the least work to the validation target, or, if none
reaches it, the best final validation metric. The monotone RMTR, which has no
learning rate, is tuned the same way on the points of :data:`RMTR_GRID` (its
sample-size rule, number of levels, coarse iterations; ``--tune-rmtr off``: its
defaults; the ``lr`` column then shows the chosen options). L-BFGS and trust region
run with their defaults. All seeds
(0 .. seeds-1) then run with the chosen rate or options.

Writes ``multilevel_benchmark.md`` (tables: work and wall time to each target,
mean / median / worst over seeds; ratios; the claims of issue 17 checked),
``multilevel_benchmark.png`` (median validation metric against work, min-max band)
and ``multilevel_benchmark.json`` into ``--out``. ``main(argv)`` returns the summary.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np

import mgnn
from mgnn.data import (
    darcy_regression,
    mnist1d,
    peaks,
    poisson_regression,
    rough_regression,
    smooth_regression,
)
from mgnn.data.pde import poisson_2d
from mgnn.multilevel import (
    Hierarchy,
    Level,
    depth_hierarchy,
    mgopt,
    mgopt_preset,
    nested_iteration,
    rmtr,
    width_hierarchy,
)
from mgnn.pinn import PINNObjective

MONITOR_POINTS = 40
BIG = 10 ** 7
BATCH = 100
INNER_SCALE = 0.1
SMOOTHNESS = 1e-3

#: Learning-rate grids (tuned on seed 0; the same grid for every problem).
LR_GRIDS = {
    "Adam": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
    "SGD": (1e-2, 3e-2, 1e-1, 3e-1),
    "NI": None,  # nested iteration uses Adam's tuned rate
    "RMTR-OFF": (1e-2, 3e-2, 1e-1, 3e-1),
    "MGOPT": (1e-3, 3e-3, 1e-2, 3e-2),  # MG/OPT with an Adam smoother, its own rate
}


# ----------------------------------------------------------------------------- problems
@dataclass
class Problem:
    """A benchmark problem: data, network, objective, hierarchy, budget and targets."""

    name: str
    data: object
    net: object
    tikhonov: float
    smoothness: float
    init: str
    hierarchy: str  # 'depth' or 'width'
    levels: int
    factor: int
    budget: float
    loss_target: float
    val_target: float
    methods: tuple
    note: str = ""
    objective: object = field(default=None, repr=False)

    @property
    def classification(self):
        return self.net.task == "classification"

    @property
    def metric(self):
        return "val accuracy" if self.classification else "val MAE"

    def theta0(self, seed):
        kw = {"inner_scale": INNER_SCALE} if self.init == "layer_parallel" else {}
        return self.net.init(seed, self.init, **kw)

    def make_objective(self):
        return mgnn.Objective(self.net, self.data.X_train, self.data.Y_train,
                              tikhonov=self.tikhonov, smoothness=self.smoothness)

    def make_hierarchy(self, obj, theta0, levels=None, factor=None):
        levels = self.levels if levels is None else levels
        if self.hierarchy == "depth":
            return depth_hierarchy(obj, levels, factor=self.factor if factor is None else factor)
        return width_hierarchy(obj, theta0, levels)

    def val_metric(self, mon, x):
        d = self.data
        if self.classification:
            return mon.accuracy(x, d.X_val, d.Y_val)
        return mon.error(x, d.X_val, d.Y_val)[0]

    def val_reached(self, v):
        return v >= self.val_target if self.classification else v <= self.val_target


@dataclass
class PINNProblem(Problem):
    """A physics-informed problem: the objective is a :class:`~mgnn.pinn.PINNObjective`
    on collocation points (``data``: the PDE problem), the validation metric the
    relative L2 error of ``u`` against the reference solution on its evaluation grid."""

    points: object = field(default=None, repr=False)
    bc: str = "exact"

    @property
    def metric(self):
        return "val rel. L2"

    def make_objective(self):
        return PINNObjective.from_problem(self.net, self.data, self.points, bc=self.bc)

    def val_metric(self, mon, x):
        X, U = self.data.evaluation_grid()
        return mon.relative_l2(x, X, U)


DEPTH_METHODS = ("Adam", "SGD", "L-BFGS", "TR", "NI", "RMTR", "RMTR-OFF", "MGOPT")
WIDTH_METHODS = ("Adam", "SGD-MTNN", "L-BFGS", "TR", "RMTR", "RMTR-OFF", "MGOPT-MTNN")
SUITES = {
    "all": ("peaks-deep", "regression-deep", "regression4-deep", "peaks", "mnist1d",
            "regression", "rough", "pinn-poisson", "poisson-small", "darcy-small", "poisson",
            "darcy"),
    "rmtr": ("peaks", "mnist1d", "regression"),
    "width": ("poisson", "darcy"),
    "mtnn": ("poisson-small", "darcy-small"),
    "pinn": ("pinn-poisson",),
}
#: The scaled-down MTNN problems (``poisson-small``, ``darcy-small``): network width and
#: number of training (and of validation) samples.
SMALL_WIDTH = 128
SMALL_SAMPLES = 500


def make_problems(names, quick, small_width=None, small_samples=None):
    """The problems named, full size or (``quick``) tiny for a seconds-long smoke run;
    ``small_width`` / ``small_samples`` override :data:`SMALL_WIDTH` /
    :data:`SMALL_SAMPLES` of the scaled-down MTNN problems."""
    small_width = SMALL_WIDTH if small_width is None else small_width
    small_samples = SMALL_SAMPLES if small_samples is None else small_samples
    n = 120 if quick else 2000
    nv = 60 if quick else 500
    out = {}
    for name in names:
        if name in ("peaks-deep", "regression-deep", "regression4-deep"):
            N = 16 if quick else 256
            levels, factor = (2, 2) if quick else (3, 4)
            budget = 3.0 if quick else 40.0
            if name == "peaks-deep":
                d = peaks(n, nv, seed=0)
                net = mgnn.ResNet(2, 8, N, 5, T=5.0)
                tgt, tik = ((1.2, 0.4) if quick else (0.35, 0.88)), 1e-4
            else:
                d = smooth_regression(n, nv, n_in=2 if name == "regression-deep" else 4, seed=0)
                net = mgnn.ResNet(d.n_in, 8, N, 1, T=2.0, task="regression")
                tgt = (0.05, 0.3) if quick else ((2e-3, 0.05) if name == "regression-deep"
                                                 else (4e-3, 0.065))
                tik = 1e-6
            p = Problem(name, d, net, tik, SMOOTHNESS, "layer_parallel", "depth", levels,
                        factor, budget, *tgt, DEPTH_METHODS)
        elif name in ("peaks", "mnist1d", "regression", "rough"):
            N = 8 if quick else 32
            levels = 2 if quick else 3
            budget = 3.0 if quick else 60.0
            if name == "peaks":
                d = peaks(n, nv, seed=0)
                net = mgnn.ResNet(2, 8, N, 5, T=5.0)
                tgt = (1.2, 0.4) if quick else (0.45, 0.85)
                tik = 1e-4
            elif name == "mnist1d":
                d = mnist1d(n, nv, seed=0)
                net = mgnn.ResNet(40, 16, N, 10, T=4.0)
                tgt = (2.0, 0.2) if quick else (0.30, 0.80)
                tik = 1e-4
            elif name == "regression":
                d = smooth_regression(n, nv, seed=0)
                net = mgnn.ResNet(2, 8, N, 1, T=2.0, task="regression")
                tgt = (0.05, 0.3) if quick else (2e-3, 0.05)
                tik = 1e-6
            else:
                d = rough_regression(n, nv, seed=0)
                net = mgnn.ResNet(2, 16, N, 1, T=2.0, task="regression")
                tgt = (0.2, 0.5) if quick else (1.5e-2, 0.17)
                tik = 1e-6
            p = Problem(name, d, net, tik, SMOOTHNESS, "layer_parallel", "depth", levels, 2,
                        budget, *tgt, DEPTH_METHODS)
        elif name == "pinn-poisson":
            # -Laplace u = f on [0, 1]^2, u = sin(pi x) sin(pi y), boundary values exact by
            # an output transform; a ResNet PINN on Latin-hypercube collocation points
            pde = poisson_2d()
            N = 4 if quick else 16
            pts = pde.sample(64 if quick else 1000, 16 if quick else 200, "lhs", seed=0)
            net = mgnn.ResNet(2, 8 if quick else 16, N, 1, T=4.0, task="regression")
            tgt = (1.0, 0.5) if quick else (1e-3, 1e-2)
            p = PINNProblem(name, pde, net, 0.0, 0.0, "glorot", "depth", 2 if quick else 3, 2,
                            3.0 if quick else 400.0, *tgt, DEPTH_METHODS,
                            note="PINN (issue 14): 2-D Poisson, relative L2 error against "
                                 "the exact solution", points=pts)
        elif name in ("poisson-small", "darcy-small"):
            grid = 4 if quick else 8
            n_pde = 100 if quick else small_samples
            width = 16 if quick else small_width
            if name == "poisson-small":
                d = poisson_regression(n_pde, n_pde, n_grid=grid, seed=0)
                net = mgnn.ResNet(d.n_in, width, 1, d.n_out, activation="relu",
                                  task="regression")
                tgt = (0.5, 0.9) if quick else (0.02, 0.12)
            else:
                d = darcy_regression(n_pde, n_pde, n_grid=grid, seed=0)
                net = mgnn.ResNet(d.n_in, width, 2, 1, activation="relu", task="regression")
                tgt = (0.5, 0.9) if quick else (0.01, 0.10)
            p = Problem(name, d, net, 0.0, 0.0, "glorot", "width", 2, 2,
                        3.0 if quick else 50.0, *tgt, WIDTH_METHODS,
                        note="MTNN's problem scaled down (grid 8, width "
                             f"{width}, {n_pde} samples); budget: the work of 100 MTNN "
                             "cycles")
        elif name in ("poisson", "darcy"):
            grid = 4 if quick else 16
            n_pde = 100 if quick else 1000
            if name == "poisson":
                d = poisson_regression(n_pde, n_pde, n_grid=grid, seed=0)
                net = mgnn.ResNet(d.n_in, 16 if quick else 400, 1, d.n_out, activation="relu",
                                  task="regression")
                tgt = (0.5, 0.9) if quick else (0.02, 0.12)
            else:
                d = darcy_regression(n_pde, n_pde, n_grid=grid, seed=0)
                net = mgnn.ResNet(d.n_in, 16 if quick else 256, 2, 1, activation="relu",
                                  task="regression")
                tgt = (0.5, 0.9) if quick else (0.01, 0.10)
            p = Problem(name, d, net, 0.0, 0.0, "glorot", "width", 2, 2,
                        3.0 if quick else 50.0, *tgt, WIDTH_METHODS,
                        note="budget: the work of 100 MTNN cycles (MG/OPT-MTNN's own spend)")
        else:
            raise ValueError(f"unknown problem {name!r}; expected one of "
                             + ", ".join(SUITES["all"]))
        p.objective = p.make_objective()
        out[name] = p
    return out


# ----------------------------------------------------------------------------- monitoring
class Monitor:
    """Training loss and validation metric against work and wall time; stops the run at
    both targets or at the budget. Its objective has its own counter: not charged."""

    def __init__(self, problem, budget, stop_at_targets=True):
        self.p = problem
        self.mon = problem.objective.with_net(problem.net)
        self.budget = budget
        self.every = budget / MONITOR_POINTS
        self.stop_at_targets = stop_at_targets
        self.work, self.wall, self.loss, self.val = [], [], [], []
        self.hit = {"loss": None, "val": None}  # (work, wall)
        self.overhead = 0.0
        self.t0 = time.perf_counter()
        self.last = -math.inf

    def start(self, x):
        self.t0 = time.perf_counter()
        self.observe(x, 0.0, force=True)

    def observe(self, x, work, force=False):
        """Record ``x`` if due; True when the run should stop."""
        if not force and work - self.last < self.every and work < self.budget:
            return False
        t = time.perf_counter()
        loss = self.mon.value(x)
        val = self.p.val_metric(self.mon, x)
        self.overhead += time.perf_counter() - t
        wall = time.perf_counter() - self.t0 - self.overhead
        self.last = work
        self.work.append(work)
        self.wall.append(wall)
        self.loss.append(loss)
        self.val.append(val)
        if self.hit["loss"] is None and loss <= self.p.loss_target:
            self.hit["loss"] = (work, wall)
        if self.hit["val"] is None and self.p.val_reached(val):
            self.hit["val"] = (work, wall)
        done = self.hit["loss"] is not None and self.hit["val"] is not None
        return work >= self.budget or (self.stop_at_targets and done) or not math.isfinite(loss)

    def callback(self, intermediate_result):
        r = intermediate_result
        if self.observe(r.x, r.work):
            raise StopIteration

    def final(self, x, work):
        if not self.work or self.work[-1] != work:
            self.observe(x, work, force=True)


class _CounterMeter:
    """Work over the counters of a hierarchy's level objectives (nested iteration)."""

    def __init__(self, H):
        self.counters = list({id(lv.objective.counter): lv.objective.counter
                              for lv in H.levels}.values())
        self.w0 = [c.work for c in self.counters]

    def __call__(self):
        return sum(c.work - w for c, w in zip(self.counters, self.w0, strict=True))


# ----------------------------------------------------------------------------- methods
def _adam_lr(lrs, p):
    return lrs.get((p.name, "Adam"), 1e-2)


def run_method(method, p, seed, lr, budget, lrs, quick):
    """One run of ``method`` on problem ``p`` from seed ``seed``; returns its Monitor."""
    obj = p.objective
    theta0 = p.theta0(seed)
    mon = Monitor(p, budget)
    mon.start(theta0)
    cb = mon.callback
    n = obj.n_samples
    if method == "Adam":
        res = mgnn.minimize(obj, theta0, "adam", {"lr": lr, "batch_size": min(BATCH, n),
                                                  "maxiter": BIG, "rng": seed}, callback=cb)
    elif method == "SGD":
        res = mgnn.minimize(obj, theta0, "sgd", {"lr": lr, "momentum": 0.9,
                                                 "batch_size": min(BATCH, n), "maxiter": BIG,
                                                 "rng": seed}, callback=cb)
    elif method == "SGD-MTNN":  # the single-level smoother of the MTNN preset, alone
        kw = mgopt_preset("mtnn", mse_outputs=p.net.n_out)["smoother_options"]
        kw["lr"] *= 1.0 if lr is None else lr  # lr: a factor of MTNN's rate (--tune-mtnn)
        bs = min(kw["batch_size"], n // 4)
        one = Hierarchy([Level(p.net, obj)])  # one level: SGD with MTNN's weight decay
        res = mgopt(one, theta0, "sgd", dict(kw, batch_size=bs), coarse_iters=12, cycles=BIG,
                    rng=seed, callback=cb, max_work=budget)
    elif method == "L-BFGS":
        res = mgnn.minimize(obj, theta0, "lbfgs", {"maxiter": BIG, "gtol": 0.0}, callback=cb)
    elif method == "TR":
        res = mgnn.minimize(obj, theta0, "trust-region",
                            {"hessian": "lsr1", "maxiter": BIG, "gtol": 0.0}, callback=cb)
    elif method == "NI":
        H = p.make_hierarchy(obj, theta0)
        L = H.n_levels
        per = max(1, 2 * n // min(BATCH, n))  # two epochs per coarse level
        meter = _CounterMeter(H)

        def ni_cb(level, r):
            if mon.observe(H.prolong_to_finest(r.x, level), meter()):
                raise StopIteration

        theta_c = theta0
        for l in range(L - 1):
            theta_c = H[l].Pi(theta_c)
        res = nested_iteration(H, [per] * (L - 1) + [BIG], "adam",
                               {"lr": _adam_lr(lrs, p), "batch_size": min(BATCH, n),
                                "rng": seed}, theta0=theta_c, callback=ni_cb)
        res.work = meter()
    elif method in ("RMTR", "RMTR-OFF"):
        cfg = dict(lr or {}) if method == "RMTR" else {}  # a point of RMTR_GRID
        H = p.make_hierarchy(obj, theta0, cfg.pop("levels", None), cfg.pop("factor", None))
        opts = dict(RMTR_OPTIONS, **cfg, maxiter=BIG, gtol=0.0, rng=seed, max_work=budget)
        if method == "RMTR-OFF":
            opts = dict(RMTR_OFF_OPTIONS, maxiter=BIG, gtol=0.0, rng=seed, max_work=budget,
                        lr=lr)
        res = rmtr(H, theta0, opts, callback=cb)
    elif method == "MGOPT":
        H = p.make_hierarchy(obj, theta0)
        res = mgopt(H, theta0, "adam", {"lr": lr, "batch_size": min(BATCH, n)},
                    **dict(MGOPT_OPTIONS, cycles=BIG, max_work=budget), rng=seed, callback=cb)
    elif method == "MGOPT-MTNN":
        H = p.make_hierarchy(obj, theta0)
        kw = mgopt_preset("mtnn", mse_outputs=p.net.n_out, cycles=4 if quick else 100)
        so = kw["smoother_options"]
        so["batch_size"] = min(so["batch_size"], n // 4)
        so["lr"] *= 1.0 if lr is None else lr  # lr: a factor of MTNN's rate (--tune-mtnn)
        res = mgopt(H, theta0, **kw, rng=seed, callback=cb)
    else:
        raise ValueError(f"unknown method {method!r}")
    mon.final(res.x, res.work)
    mon.result = res
    return mon


#: RMTR (monotone) in the benchmark: the defaults of :func:`rmtr` but these.
RMTR_OPTIONS = dict()
#: The points on which the monotone RMTR is tuned (seed 0, as the learning rates of
#: the other methods; five points, as Adam's grid): the defaults (initial batch
#: ``max(32, n // 16)``, norm test with theta 1, the problem's levels), smaller
#: initial batches, a laxer norm test (the batch grows later), one level more
#: (``levels``/``factor`` build the hierarchy, the rest are options of :func:`rmtr`).
RMTR_GRID = ({}, {"batch_size": 64}, {"batch_size": 32},
             {"batch_size": 32, "growth_theta": 2.0}, {"batch_size": 32, "levels": 4})
#: RMTR, objective-function-free variant (learning rate tuned).
RMTR_OFF_OPTIONS = dict(variant="off")
#: MG/OPT with an Adam smoother on the depth hierarchies.
MGOPT_OPTIONS = dict(pre=1, post=1, coarse_iters=20, tau="minibatch", tau_batch_size=BATCH)


# ----------------------------------------------------------------------------- statistics
def _key(mon, p):
    if mon.hit["val"] is not None:
        return (0, mon.hit["val"][0])
    best = max(mon.val) if p.classification else min(mon.val)
    if not math.isfinite(best):
        return (2, 0.0)
    return (1, -best if p.classification else best)


#: Factors of MTNN's learning rate tried for SGD-MTNN and MGOPT-MTNN with
#: ``--tune-mtnn`` (otherwise both run at MTNN's rate).
MTNN_LR_FACTORS = (1.0, 3.0, 10.0, 30.0, 100.0)


def tune(method, p, budget, lrs, quick, tune_mtnn=False, tune_rmtr=True):
    """The learning rate (RMTR: the options of :data:`RMTR_GRID`) of ``method`` on ``p``
    with the least work to the validation target on seed 0, or the best final
    validation metric if no point of the grid reaches it; None without a grid."""
    grid = LR_GRIDS.get(method)
    if method in ("SGD-MTNN", "MGOPT-MTNN") and tune_mtnn:
        grid = MTNN_LR_FACTORS
    if method == "RMTR" and tune_rmtr:
        grid = RMTR_GRID
    if not grid:
        return None
    if quick:
        return grid[0] if isinstance(grid[0], dict) else grid[len(grid) // 2]
    best = None
    for lr in grid:
        k = _key(run_method(method, p, 0, lr, budget, lrs, quick), p)
        if best is None or k < best[0]:
            best = (k, lr)
    return best[1]


def _stats(values):
    v = np.asarray(values, dtype=float)
    return {"mean": float(np.mean(v)), "median": float(np.median(v)), "worst": float(np.max(v)),
            "best": float(np.min(v))}


def summarise(p, method, lr, mons):
    out = {"problem": p.name, "method": method, "lr": lr, "seeds": len(mons),
           "metric": p.metric, "loss_target": p.loss_target, "val_target": p.val_target}
    for what in ("loss", "val"):
        w = [m.hit[what][0] if m.hit[what] else math.inf for m in mons]
        t = [m.hit[what][1] if m.hit[what] else math.inf for m in mons]
        out[f"{what}_reached"] = int(sum(math.isfinite(x) for x in w))
        out[f"{what}_work"] = _stats(w)
        out[f"{what}_wall"] = _stats(t)
    fv = [m.val[-1] for m in mons]
    if p.classification:  # worst = lowest accuracy
        s = _stats([-v for v in fv])
        out["final_val"] = {"mean": -s["mean"], "median": -s["median"], "worst": -s["worst"],
                            "best": -s["best"]}
    else:
        out["final_val"] = _stats(fv)
    out["final_loss"] = _stats([m.loss[-1] for m in mons])
    out["final_work"] = _stats([m.work[-1] for m in mons])
    return out


def fmt(v, spec=".1f"):
    """``v`` formatted; '—' when missing or not finite, exponent form from 1e4 (a
    diverged run's error)."""
    if v is None or not math.isfinite(v):
        return "—"
    return format(v, ".3g" if abs(v) >= 1e4 else spec)


def fmt_lr(lr):
    """The tuned learning rate, factor (MTNN methods) or RMTR options (a dict), as text.

    >>> fmt_lr(None), fmt_lr(0.03), fmt_lr({}), fmt_lr({"levels": 4, "growth_theta": 0.5})
    ('', '0.03', 'defaults', 'levels=4, growth_theta=0.5')
    """
    if lr is None:
        return ""
    if isinstance(lr, dict):
        return ", ".join(f"{k}={v}" for k, v in lr.items()) or "defaults"
    return f"{lr:g}"


def _fmt_work(s, reached, seeds):
    txt = f"{fmt(s['mean'])} / {fmt(s['median'])} / {fmt(s['worst'])}"
    return txt + ("" if reached == seeds else f" ({reached}/{seeds})")


SINGLE = ("Adam", "SGD", "SGD-MTNN", "L-BFGS", "TR")


def claims(rows):
    """The targets of issue 17 checked on the rows (text lines)."""
    lines = []
    by = {}
    for r in rows:
        by.setdefault(r["problem"], {})[r["method"]] = r
    for prob, ms in by.items():
        singles = {m: r for m, r in ms.items() if m in SINGLE}
        if not singles:
            continue
        best_m = min(singles, key=lambda m: singles[m]["val_work"]["median"])
        best = singles[best_m]["val_work"]["median"]
        for m in ("RMTR", "RMTR-OFF"):
            if m not in ms:
                continue
            w = ms[m]["val_work"]["median"]
            if not math.isfinite(w):
                vs_best = "did not reach it (median): misses >= 2"
            elif not math.isfinite(best):
                vs_best = ("no single-level method reached it (median): ratio unbounded, "
                           "meets >= 2")
            else:
                ratio = best / w
                vs_best = f"ratio {ratio:.2f} ({'meets' if ratio >= 2 else 'misses'} >= 2)"
            lines.append(f"- {prob}: {m} needs {fmt(w)} work to the validation target (median); "
                         f"the best single-level method ({best_m}) {fmt(best)}: {vs_best}; "
                         + _vs_tr(m, ms))
        if "MGOPT-MTNN" in ms and "SGD-MTNN" in ms:
            a, b = ms["MGOPT-MTNN"]["final_val"], ms["SGD-MTNN"]["final_val"]
            eq = abs(a["mean"] - b["mean"]) <= 0.05 * b["mean"]
            mean = ("lower" if a["mean"] < b["mean"] else "equal within 5 %" if eq
                    else "HIGHER")
            worst = "lower" if a["worst"] < b["worst"] else "NOT lower"
            lines.append(f"- {prob}: MG/OPT (MTNN preset) vs SGD-momentum at equal work, final "
                         f"val MAE over seeds: mean {fmt(a['mean'], '.4f')} vs "
                         f"{fmt(b['mean'], '.4f')} ({mean}); median {fmt(a['median'], '.4f')} "
                         f"vs {fmt(b['median'], '.4f')}; worst {fmt(a['worst'], '.4f')} vs "
                         f"{fmt(b['worst'], '.4f')} ({worst}).")
    return lines


def _vs_tr(m, ms):
    """The comparison of method ``m`` with single-level TR (text)."""
    if "TR" not in ms:
        return "TR not run."
    w, tr = ms[m]["val_work"]["median"], ms["TR"]["val_work"]["median"]
    if math.isfinite(w) and math.isfinite(tr):
        return (f"TR / {m} = {tr / w:.2f} "
                f"({'not worse than TR' if tr >= w else 'WORSE than TR'}).")
    if math.isfinite(w):
        return "TR did not reach it (not worse than TR)."
    if math.isfinite(tr):
        return f"TR reached it, {m} did not (WORSE than TR)."
    a, b = ms[m]["final_val"]["median"], ms["TR"]["final_val"]["median"]
    better = a >= b if "accuracy" in ms[m]["metric"] else a <= b
    return (f"neither reached it; final validation metric (median) {a:.4g} vs TR's {b:.4g} "
            f"({'not worse than TR' if better else 'WORSE than TR'}).")


def table(rows):
    head = ["| problem | method | lr | work to loss target: mean / median / worst "
            "| work to val target: mean / median / worst | wall s to val target (median) "
            "| final val metric: mean / median / worst |",
            "|---|---|---|---|---|---|---|"]
    for r in rows:
        lr = fmt_lr(r["lr"])
        fv = r["final_val"]
        spec = ".3f" if "accuracy" in r["metric"] else ".4f"
        head.append(f"| {r['problem']} | {r['method']} | {lr} | "
                    f"{_fmt_work(r['loss_work'], r['loss_reached'], r['seeds'])} | "
                    f"{_fmt_work(r['val_work'], r['val_reached'], r['seeds'])} | "
                    f"{fmt(r['val_wall']['median'], '.2f')} | "
                    f"{fmt(fv['mean'], spec)} / {fmt(fv['median'], spec)} / "
                    f"{fmt(fv['worst'], spec)} |")
    return "\n".join(head)


def plot(curves, problems, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name in curves if curves[name]]
    if not names:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        p = problems[name]
        for i, (method, mons) in enumerate(curves[name].items()):
            top = min(m.work[-1] for m in mons)
            if top <= 0:
                continue
            grid = np.linspace(0.0, top, 100)
            ys = np.array([np.interp(grid, m.work, m.val) for m in mons])
            ax.plot(grid, np.median(ys, 0), color=f"C{i}", label=method)
            ax.fill_between(grid, ys.min(0), ys.max(0), color=f"C{i}", alpha=0.15)
        ax.axhline(p.val_target, color="k", ls=":", lw=1)
        if not p.classification:
            ax.set_yscale("log")
        ax.set_title(f"{name}: {p.metric} ({len(next(iter(curves[name].values())))} seeds)",
                     fontsize=10)
        ax.set_xlabel("work (fine-gradient equivalents)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- defaults
def defaults_check(seeds, quick):
    """The README's quick-start problem: ``rmtr(H, theta0)`` and ``mgopt(H, theta0)`` with
    default options against ``minimize(method='adam')`` (default options) and the
    quick-start's Adam (lr 1e-2, batch 250) given the same work; validation accuracy."""
    d = peaks(400 if quick else 5000, 100 if quick else 1000, seed=0)
    net = mgnn.ResNet(2, 8, 4 if quick else 16, 5, T=5.0, activation="tanh")
    obj = mgnn.Objective(net, d.X_train, d.Y_train, tikhonov=1e-6)
    H = depth_hierarchy(obj, 2 if quick else 3)
    out = {}
    for solver in ("rmtr", "mgopt"):
        rows = []
        for seed in range(seeds):
            theta0 = net.init(np.random.default_rng(seed), scheme="glorot")
            opts = {"maxiter": 3} if quick else {}
            res = rmtr(H, theta0, dict(opts, rng=seed)) if solver == "rmtr" else \
                mgopt(H, theta0, **({"cycles": 2} if quick else {}), rng=seed)
            w = res.work
            a1 = mgnn.minimize(obj, theta0, "adam", {"maxiter": max(1, int(round(w)))})
            bs = min(250, obj.n_samples)
            a2 = mgnn.minimize(obj, theta0, "adam", {
                "lr": 1e-2, "batch_size": bs, "rng": seed,
                "maxiter": max(1, int(round(w * obj.n_samples / bs)))})
            rows.append([w, obj.accuracy(res.x, d.X_val, d.Y_val), a1.work,
                         obj.accuracy(a1.x, d.X_val, d.Y_val), a2.work,
                         obj.accuracy(a2.x, d.X_val, d.Y_val)])
        out[solver] = np.array(rows).tolist()
    return out


def defaults_table(res):
    lines = ["| solver (default options) | work (mean) | val accuracy: mean / worst | Adam default "
             "options, equal work: mean / worst | quick-start Adam (lr 1e-2, batch 250), "
             "equal work: mean / worst | target (>= Adam default) |",
             "|---|---|---|---|---|---|"]
    for solver, rows in res.items():
        a = np.array(rows)
        met = a[:, 1].mean() >= a[:, 3].mean()
        lines.append(f"| {solver}(H, theta0) | {a[:, 0].mean():.1f} | {a[:, 1].mean():.3f} / "
                     f"{a[:, 1].min():.3f} | {a[:, 3].mean():.3f} / {a[:, 3].min():.3f} | "
                     f"{a[:, 5].mean():.3f} / {a[:, 5].min():.3f} | "
                     f"{'met' if met else 'MISSED'} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--out", default="out")
    ap.add_argument("--quick", action="store_true",
                    help="tiny problems, one seed, no tuning (a seconds-long smoke run)")
    ap.add_argument("--suite", default="all", choices=sorted(SUITES))
    ap.add_argument("--problems", default=None, help="comma-separated problem names")
    ap.add_argument("--methods", default=None, help="comma-separated method names")
    ap.add_argument("--defaults", choices=("on", "off", "only"), default=None,
                    help="check the defaults on the quick-start problem (default: on with "
                         "--suite all; 'only': nothing else)")
    ap.add_argument("--threads", type=int, default=1,
                    help="BLAS and Numba threads (default 1: on a shared machine, threads "
                         "that wait for each other at every layer cost more than they save; "
                         "run several benchmarks side by side instead)")
    ap.add_argument("--mtnn-width", type=int, default=SMALL_WIDTH,
                    help="network width of poisson-small / darcy-small")
    ap.add_argument("--mtnn-samples", type=int, default=SMALL_SAMPLES,
                    help="training (and validation) samples of poisson-small / darcy-small")
    ap.add_argument("--tune-mtnn", action="store_true",
                    help="tune SGD-MTNN's and MGOPT-MTNN's learning rates on the factors "
                         "MTNN_LR_FACTORS of MTNN's rate (default: MTNN's rate)")
    ap.add_argument("--tune-rmtr", choices=("on", "off"), default="on",
                    help="tune RMTR's options on the points of RMTR_GRID on seed 0, as the "
                         "learning rates of the other methods are (default on; off: "
                         "rmtr's defaults)")
    ap.add_argument("--prefix", default="multilevel_benchmark",
                    help="name of the output files (without extension)")
    args = ap.parse_args(argv)
    seeds = 1 if args.quick else args.seeds
    restore = _limit_threads(args.threads)
    try:
        return _main(args, seeds)
    finally:
        restore()


def _limit_threads(n):
    """Limit BLAS and Numba threads to ``n``; returns the function that restores them."""
    import numba
    from threadpoolctl import threadpool_limits

    old = numba.get_num_threads()
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    limits = threadpool_limits(n)

    def restore():
        limits.restore_original_limits()
        numba.set_num_threads(old)

    return restore


def _main(args, seeds):
    names = args.problems.split(",") if args.problems else list(SUITES[args.suite])
    if args.defaults == "only":
        names = []
    only = set(args.methods.split(",")) if args.methods else None
    unknown = sorted((only or set()) - set(DEPTH_METHODS) - set(WIDTH_METHODS))
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(map(repr, unknown))}; expected "
                         + ", ".join(dict.fromkeys(DEPTH_METHODS + WIDTH_METHODS)))
    os.makedirs(args.out, exist_ok=True)
    t_start = time.perf_counter()
    cpu_start = time.process_time()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    problems = make_problems(names, args.quick, args.mtnn_width, args.mtnn_samples)
    rows, curves, lrs, raw = [], {}, {}, {}
    for name, p in problems.items():
        methods = [m for m in p.methods if only is None or m in only]
        budget = p.budget
        if p.hierarchy == "width" and "MGOPT-MTNN" in methods:
            # the budget is what MTNN's 100 cycles spend (measured on seed 0)
            m0 = run_method("MGOPT-MTNN", p, 0, None, math.inf, lrs, args.quick)
            budget = m0.work[-1]
            p.budget = budget
        # Adam first: nested iteration and MG/OPT use its rate
        methods.sort(key=lambda m: m != "Adam")
        curves[name] = {}
        for method in methods:
            lr = tune(method, p, budget, lrs, args.quick, args.tune_mtnn,
                      args.tune_rmtr == "on")
            if lr is not None:
                lrs[(name, method)] = lr
            mons = [run_method(method, p, s, lr, budget, lrs, args.quick)
                    for s in range(seeds)]
            r = summarise(p, method, lr, mons)
            rows.append(r)
            curves[name][method] = mons
            raw[f"{name}/{method}"] = [{"work": m.work, "wall": m.wall, "loss": m.loss,
                                        "val": m.val} for m in mons]
            print(f"{name:16s} {method:11s} lr {fmt_lr(lr) or '—':>6s}  val target "
                  f"{r['val_reached']}/{seeds}, work median {fmt(r['val_work']['median'])}, "
                  f"worst {fmt(r['val_work']['worst'])}; final {p.metric} median "
                  f"{r['final_val']['median']:.4f}", flush=True)
    check = args.defaults in ("on", "only") or (args.defaults is None and args.suite == "all"
                                      and not args.problems and not args.methods)
    dres = defaults_check(min(seeds, 3) if args.quick else seeds, args.quick) if check else None
    total = time.perf_counter() - t_start
    cpu = time.process_time() - cpu_start
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    lines = [f"# Multilevel benchmark ({'quick' if args.quick else 'full'})", "",
             f"{seeds} seed(s); work in fine-gradient equivalents; targets per problem in "
             f"the table below; wall {total:.0f} s, CPU {cpu:.0f} s, load average "
             f"{load:.1f} at the start and {load_end:.1f} at the end.", "",
             "| problem | network | hierarchy | budget | loss target | validation target |",
             "|---|---|---|---|---|---|"]
    for p in problems.values():
        lines.append(f"| {p.name} | {p.net!r} | {p.hierarchy}, {p.levels} levels | "
                     f"{p.budget:.1f} | {p.loss_target:g} | {p.metric} "
                     f"{'>=' if p.classification else '<='} {p.val_target:g} |")
    lines += ["", "Work: mean / median / worst over seeds (worst is '—' when a seed did not "
              "reach the target; (k/n): seeds that did).", "", table(rows), "",
              "## Claims of issue 17", ""] + claims(rows)
    if dres is not None:
        lines += ["", "## Defaults on the quick-start problem (README: peaks, width 8, depth 16, "
                  "3 depth levels)", "", f"{len(dres['rmtr'])} seed(s).", "",
                  defaults_table(dres)]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, f"{args.prefix}.md"), "w") as fh:
        fh.write(text)
    plot(curves, problems, os.path.join(args.out, f"{args.prefix}.png"))
    summary = {"rows": rows, "lrs": {f"{k[0]}/{k[1]}": v for k, v in lrs.items()},
               "wall": total, "cpu": cpu, "load": [load, load_end], "raw": raw,
               "claims": claims(rows), "defaults": dres}
    with open(os.path.join(args.out, f"{args.prefix}.json"), "w") as fh:
        json.dump(summary, fh, indent=1, default=float)
    print(text)
    return summary


if __name__ == "__main__":
    main()
