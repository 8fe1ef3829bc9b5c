r"""LSGD: the hybrid least-squares / gradient-descent method (Cyr, Gulian, Patel, Perego, Trask).

The hidden layers of a network are read as an adaptive basis: their last states
``A`` (s x width) are combined linearly by the closing layer, ``Y = A W^T + b``.
For a loss that is quadratic in the closing layer (mean squared error) the best
closing layer for the current basis is a linear least-squares problem. One LSGD
iteration (a *cycle*) is

1. **solve** for the closing layer xi = [W^T; b] ((width + 1) x n_out) with the
   hidden parameters fixed, exactly::

       min_xi  (1 / (2 s)) ||[A 1] xi - Y||_F^2 + ((mu + eps) / 2) ||xi||_F^2 - <tau, xi>

   on all data or a mini-batch of ``s`` samples (``ls_batch_size``), where mu is
   the objective's Tikhonov weight, eps the option ``ls_reg`` and tau the linear
   term of a tau-corrected coarse model (:class:`mgnn.multilevel.TauCorrected`;
   zero otherwise). The normal equations are
   ``([A 1]^T [A 1] + s (mu + eps) I) xi = [A 1]^T Y + s tau``, the issue's
   ``(A^T A + eps I) xi = A^T b`` in the loss's scaling;
2. **descend**: ``gd_steps`` (k) steps of Adam or SGD on the hidden parameters
   (opening and residual layers) with the closing layer fixed, on mini-batches
   (``batch_size``) or all data. The optimizer state persists over the cycles.

**PINNs of linear PDEs.** On a :class:`~mgnn.pinn.PINNObjective` whose PDE
operator ``L`` and conditions are linear in u (Poisson, diffusion-advection,
Dirichlet and derivative conditions; output transforms ``u = A + B N`` are affine)
every residual is affine in the closing layer: ``r = D xi - b`` with
``D = L[B [phi; 1]]`` the operator applied to the derivative streams of the
features ``phi`` (which the forward sweep carries) and ``b = f - L[A]``
(:meth:`~mgnn.pinn.PINNObjective.closing_system`). The solve is the same with the
stacked, weighted system ``M = sqrt(s c) [D b]`` (``c_i = w_t / n_t`` of the term
of row ``i``) in place of ``[A 1 Y]``. Nonlinear operators (Burgers,
Allen-Cahn, Klein-Gordon) are refused with the offending terms named.

With ``gd_steps=0`` LSGD is repeated least squares. The whole state of a run (the
iterate, the update rule's moments, the batch generators and counters) is one
:class:`LSGDState`.

**The solver.** The solve never forms the normal equations (that would square the
condition number of the basis, which box-initialised ReLU features make large).
It computes the R factor of the QR factorisation of ``M = [A 1 Y]`` (Householder,
LAPACK ``geqrf`` through :mod:`scipy.linalg.lapack`, in place): its leading
block ``R11`` is the R of ``[A 1]``, the block beside it is ``Q^T Y``, and the
block below the residual, so ``Q`` is never formed. The small ``R11`` is then
decomposed by the SVD (``gesdd``) and the solution written with filter factors::

    xi = V diag(1 / (sigma_i^2 + s (mu + eps))) (Sigma U^T Q^T Y + s V^T tau)

which is the exact minimiser of the regularised problem, backward stable in the
conditioning of ``[A 1]`` (not its square). Without regularisation
(``mu + eps = 0``) singular values below ``rcond * sigma_max`` are dropped
(``rcond`` defaults to ``eps_64 * max(s, width + 1)``, NumPy's ``lstsq`` rule):
the minimum-norm least-squares solution. The numerical rank, the condition
number ``sigma_max / sigma_min`` of ``[A 1]`` and the least-squares loss are
recorded every cycle (``ls_rank``, ``ls_cond``, ``ls_loss``). (With a tau term,
no regularisation and a rank-deficient basis, the problem is unbounded along
the dropped directions; they are left out and ``ls_rank < width + 1`` shows it.)

The solve runs in float64 also for float32 networks. On CuPy arrays the QR runs
on the device (``cupy.linalg.qr``, cuSOLVER) and only the small ``(k x k)`` R
factor, ``k = width + 1 + n_out``, is copied to the host for the SVD; the new
closing layer is copied back.

**Work.** The forward sweep that gives ``A`` is charged by the objective as a
value evaluation (on its share of the data); the QR and SVD are charged by flop
count relative to one value-and-gradient sweep of the network on all data
(:meth:`mgnn.nets.ResNet.flops`): ``2 s k^2 - 2 k^3 / 3`` for the QR and
``22 (width + 1)^3`` for the SVD (Golub & Van Loan's count with both singular
vector sets). The history column ``ls_work`` shows the solve's share. The QR of a
tall, narrow matrix is memory bound (Householder reflections are BLAS-2), so per
flop it runs several times slower than the GEMMs of a sweep: at s >> 1000 its time
exceeds its charge by that factor (``benchmarks/lsgd_solve.py`` measures both);
``ls_batch_size`` bounds it.

**Generalisation.** The solve gives every feature the coefficient that fits the
training data best, also to a feature the data hardly constrain (a steep ReLU
neuron whose support holds few or no training points) and that gradient descent
would have left alone. Draw the box initialisation on the training points'
bounding box, not a larger domain, and regularise (``ls_reg`` or the objective's
``tikhonov``) when the history shows a large ``ls_cond``.

**Distributed networks.** On a :class:`~mgnn.mgrit.LayerParallelObjective` every
rank takes part in the forward sweep, the last layer rank (which owns the
closing layer) gathers the states over the data communicator and solves, and
the result is written into its slice of theta like any other update; the other
ranks' slices hold hidden parameters only. The statistics are reduced over the
layer communicator, so every rank records the same history.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.linalg.lapack

from mgnn._validation import check_choice, check_positive_int, check_scalar

from ._common import (
    RUN_OPTIONS,
    STATUS_CONVERGED,
    Diverged,
    Run,
    check_maxiter,
    check_tol,
    parse_options,
    prepare_theta0,
    reject_unused,
)
from .schedules import make_schedule
from .stochastic import AdamUpdate, Batches, SGDUpdate

__all__ = ["minimize_lsgd", "LSGD_DEFAULTS", "LSGDState", "ClosingSolver", "solve_closing"]

INNER = ("adam", "sgd")

#: Options of ``method='lsgd'`` and their defaults (``lr`` is 1e-3 for Adam and
#: 1e-2 for SGD when not given).
LSGD_DEFAULTS = {
    "maxiter": 100,
    "gd_steps": 1,
    "inner": "adam",
    "lr": None,
    "schedule": "constant",
    "decay_rate": None,
    "decay_steps": None,
    "lr_min": None,
    "beta1": 0.9,
    "beta2": 0.999,
    "eps": 1e-8,
    "momentum": 0.0,
    "nesterov": False,
    "batch_size": None,
    "ls_batch_size": None,
    "ls_reg": 0.0,
    "ls_rcond": None,
    "final_solve": True,
    "rng": None,
    "gtol": 1e-5,
    **RUN_OPTIONS,
}

_ADAM_ONLY = ("beta1", "beta2", "eps")
_SGD_ONLY = ("momentum", "nesterov")


# ----------------------------------------------------------------------------- the solve
def _filtered_solution(R, n, s, reg, tau, rcond):
    """Solve from the R factor of ``[A 1 Y]``; returns ``(xi, stats)`` on the host."""
    p = min(R.shape[0], n)  # rows of R11 (fewer than n when s < n)
    R11, C = R[:p, :n], R[:p, n:]
    R22 = R[p:, n:]
    U, sig, Vt = scipy.linalg.svd(R11, full_matrices=True, check_finite=False,
                                  lapack_driver="gesdd")
    sig_full = np.zeros(n)
    sig_full[:sig.size] = sig
    num = np.zeros((n, C.shape[1]))
    num[:sig.size] = sig[:, None] * (U.T @ C)[:sig.size]
    if tau is not None:
        num += s * (Vt @ tau)
    smax = float(sig_full[0]) if n else 0.0
    cut = (np.finfo(np.float64).eps * max(s, n) if rcond is None else rcond) * smax
    rank = int(np.count_nonzero(sig_full > cut))
    if reg > 0.0:
        coef = num / (sig_full ** 2 + s * reg)[:, None]
    else:
        keep = sig_full > cut
        coef = np.zeros_like(num)
        coef[keep] = num[keep] / (sig_full[keep] ** 2)[:, None]
    xi = Vt.T @ coef
    resid = R11 @ xi - C
    ls_loss = (float(np.vdot(resid, resid)) + float(np.vdot(R22, R22))) / (2.0 * s)
    smin = float(sig_full[-1])
    cond = smax / smin if smin > 0.0 else math.inf
    return xi, {"ls_rank": rank, "ls_cond": cond, "ls_loss": ls_loss}


def _qr_r(M, xp):
    """The R factor of ``M`` (s x k, float64, Fortran order; overwritten), ``min(s, k)``
    rows, on the host."""
    if xp is np:
        qr, _, _, info = scipy.linalg.lapack.dgeqrf(M, overwrite_a=1)
        if info != 0:  # pragma: no cover - only for invalid arguments
            raise RuntimeError(f"LAPACK dgeqrf failed with info={info}")
        return np.triu(qr[: min(M.shape)])
    R = xp.linalg.qr(M, mode="r")  # pragma: no cover - needs CUDA
    return xp.asnumpy(R)  # pragma: no cover


def solve_flops(s, width, n_out):
    """Flops of one closing-layer solve on ``s`` samples (QR of ``[A 1 Y]`` + SVD)."""
    n, k = width + 1, width + 1 + n_out
    qr = 2.0 * s * k * k - 2.0 * k ** 3 / 3.0 if s >= k else 2.0 * k * s * s - 2.0 * s ** 3 / 3.0
    return qr + 22.0 * n ** 3 + 4.0 * n * n * n_out


def solve_closing(A, Y, reg=0.0, tau=None, rcond=None):
    """The closing layer that minimises the regularised least-squares loss.

    Minimises ``(1/(2s)) ||[A 1] xi - Y||_F^2 + (reg/2) ||xi||_F^2 - <tau, xi>`` over
    ``xi`` ((width + 1) x n_out: the closing weights transposed, then the bias) by
    the QR + SVD solver of :mod:`mgnn.optim.lsgd`.

    Parameters
    ----------
    A : (s, width) array
        The basis (last hidden states).
    Y : (s, n_out) array
        Targets.
    reg : float
        Tikhonov weight (>= 0).
    tau : ((width + 1), n_out) array, optional
        Linear term.
    rcond : float, optional
        Relative cut-off of singular values without regularisation.

    Returns
    -------
    xi : ((width + 1), n_out) float64 array
    stats : dict
        ``ls_rank``, ``ls_cond`` (of ``[A 1]``) and ``ls_loss`` (the data term at xi).

    Examples
    --------
    >>> import numpy as np
    >>> A = np.linspace(0, 1, 5)[:, None]
    >>> xi, st = solve_closing(A, 3 * A - 1)
    >>> np.round(xi.ravel(), 12).tolist(), st["ls_rank"], st["ls_loss"] < 1e-28
    ([3.0, -1.0], 2, True)
    """
    A = np.asarray(A, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    s, w = A.shape
    if Y.shape[0] != s:
        raise ValueError(f"Y must have {s} rows (one per row of A), got {Y.shape[0]}")
    reg = check_scalar(reg, "reg", low=0.0)
    M = np.empty((s, w + 1 + Y.shape[1]), order="F")
    M[:, :w], M[:, w], M[:, w + 1:] = A, 1.0, Y
    if not np.isfinite(M).all():
        raise ValueError("A and Y must be finite")
    if tau is not None:
        tau = np.asarray(tau, dtype=np.float64).reshape(w + 1, Y.shape[1])
    return _filtered_solution(_qr_r(M, np), w + 1, s, reg, tau, rcond)


class ClosingSolver:
    """Fits the closing layer of an objective's network by least squares.

    Keeps one preallocated ``[A 1 Y]`` buffer (reallocated when the batch size
    changes). ``solve(theta,
    batch)`` returns a copy of ``theta`` whose closing layer is the exact
    minimiser of the objective over the closing layer with the hidden
    parameters fixed (plus ``reg/2 ||xi||^2``); see the module docstring.

    Parameters
    ----------
    objective : Objective or LayerParallelObjective
        Needs ``features(theta, batch, out)``, an MSE ``loss``, ``net``,
        ``counter``, or (a PINN of a linear PDE) ``closing_system(theta, batch,
        out)``; a ``tikhonov`` weight and a ``tau`` linear term are used when
        present.
    reg : float
        Extra regularisation eps of the solve (>= 0).
    rcond : float, optional
        Relative singular value cut-off when unregularised.

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.nets import ResNet
    >>> from mgnn.objective import Objective
    >>> X = np.linspace(-1, 1, 40)[:, None]
    >>> net = ResNet(1, 8, 2, 1, activation="relu", task="regression")
    >>> obj = Objective(net, X, np.abs(X))
    >>> solver = ClosingSolver(obj)
    >>> theta, stats = solver.solve(net.init(0, "box", box=(-1, 1)))
    >>> g = net.unpack(obj.grad(theta)).closing
    >>> bool(np.abs(g).max() < 1e-12), stats["ls_rank"]
    (True, 9)
    """

    def __init__(self, objective, reg=0.0, rcond=None):
        check_lsgd_objective(objective)
        self.objective = objective
        self.net = objective.net
        self.reg = check_scalar(reg, "ls_reg", low=0.0)
        self.rcond = None if rcond is None else check_scalar(rcond, "ls_rcond", low=0.0)
        self.mu = float(getattr(objective, "tikhonov", 0.0) or 0.0)
        tau = getattr(objective, "tau", None)
        self.tau = None
        if tau is not None:
            from mgnn.backend import to_numpy

            w, m = _n_features(self.net), self.net.n_out
            t = to_numpy(tau)[-self.net.n_close:].astype(np.float64)
            self.tau = np.vstack([t[: m * w].reshape(m, w).T, t[m * w:][None, :]])
        self._M = {}
        self.holds_closing = None
        # a PINN: the residuals are affine in the closing layer (closing_system)
        self.pinn = callable(getattr(objective, "closing_system", None))

    def __repr__(self):
        kind = ", PDE residuals" if self.pinn else ""
        return (f"ClosingSolver(width={_n_features(self.net)}, n_out={self.net.n_out}{kind}, "
                f"tikhonov={self.mu:g}, reg={self.reg:g}, tau={self.tau is not None})")

    def _buffer(self, s, xp):
        M = self._M.get(s)
        if M is None:
            w, m = _n_features(self.net), self.net.n_out
            M = xp.empty((s, w + 1 + m), dtype=np.float64, order="F")
            self._M = {s: M}  # one buffer (batch sizes rarely change within a run)
        return M

    def n_rows(self, batch):
        return self.objective.n_samples if batch is None else len(batch)

    def solve(self, theta, batch=None):
        """Return ``(theta_new, stats)``: theta with the least-squares closing layer.

        ``stats`` has ``ls_rank``, ``ls_cond``, ``ls_loss`` (NaN on ranks that do
        not own the closing layer) and ``ls_work`` (the solve's flops in work units,
        already charged to the objective's counter).
        """
        from mgnn.backend import get_namespace

        xp = get_namespace(theta)
        net = self.net
        w, m = _n_features(net), net.n_out
        s = self.n_rows(batch)
        M = self._buffer(s, xp)
        if self.pinn:
            return self._solve_pinn(theta, batch, s, M, xp)
        A, Y = self.objective.features(theta, batch=batch, out=M[:, :w])
        holds = A is not None
        self.holds_closing = holds
        c = self.objective.counter
        work = c.scale * solve_flops(s, w, m) / net.flops(self.objective.n_samples)
        c.work += work
        new = theta.copy()
        nan = math.nan
        stats = {"ls_rank": nan, "ls_cond": nan, "ls_loss": nan, "ls_work": work}
        if not holds:
            return new, stats
        M[:, w] = 1.0
        M[:, w + 1:] = Y.reshape(s, m)
        if not bool(xp.isfinite(M[:, :w]).all()):
            new[-net.n_close:] = nan  # a non-finite basis: the caller sees a non-finite iterate
            return new, stats
        R = _qr_r(M, xp)
        xi, st = _filtered_solution(R, w + 1, s, self.mu + self.reg, self.tau, self.rcond)
        stats.update(st)
        closing = np.concatenate([xi[:w].T.ravel(), xi[w]]).astype(net.dtype)
        new[-net.n_close:] = closing if xp is np else xp.asarray(closing)
        return new, stats

    def _solve_pinn(self, theta, batch, s, M, xp):
        """The solve on a PINN objective: ``M = sqrt(s c) [D b]`` from its
        ``closing_system`` (residuals ``D xi - b`` with row weights ``c``), so that
        ``(1/(2s)) ||M[:, :-1] xi - M[:, -1]||^2`` is the loss's residual part."""
        net = self.net
        w = net.width
        obj = self.objective
        _, _, c = obj.closing_system(theta, batch=batch, out=M)
        self.holds_closing = True
        cnt = obj.counter
        n_ref = getattr(obj, "n_reference", obj.n_samples)  # the objective's work unit
        work = cnt.scale * solve_flops(s, w, 1) / net.flops(n_ref)
        cnt.work += work
        new = theta.copy()
        nan = math.nan
        stats = {"ls_rank": nan, "ls_cond": nan, "ls_loss": nan, "ls_work": work}
        if not bool(xp.isfinite(M).all()):
            new[-net.n_close:] = nan  # a non-finite basis: the caller sees a non-finite iterate
            return new, stats
        M *= xp.sqrt(s * c)[:, None]
        R = _qr_r(M, xp)
        xi, st = _filtered_solution(R, w + 1, s, self.mu + self.reg, self.tau, self.rcond)
        stats.update(st)
        closing = np.concatenate([xi[:w, 0], xi[w]]).astype(net.dtype)
        new[-net.n_close:] = closing if xp is np else xp.asarray(closing)
        return new, stats


def _n_features(net):
    """Inputs of the closing layer: ``net.n_features`` (ConvResNet), else the width."""
    return getattr(net, "n_features", net.width)


def check_lsgd_objective(objective):
    """Raise unless ``objective`` has a closing layer fitted by least squares."""
    if not callable(getattr(objective, "features", None)) or \
            getattr(objective, "net", None) is None:
        raise TypeError(
            "method 'lsgd' needs an objective with a network and features(theta, batch) "
            "(the last hidden states), e.g. mgnn.objective.Objective, or a PINNObjective "
            f"of a linear PDE; got "
            f"{type(objective).__name__}")
    check = getattr(objective, "check_closing_system", None)
    if callable(getattr(objective, "closing_system", None)) and callable(check):
        check("method 'lsgd'")  # a PINN: its PDE and conditions must be linear in u
        return
    loss = getattr(getattr(objective, "loss", None), "name", None)
    if loss != "mse":
        raise ValueError(
            "method 'lsgd' needs a loss that is quadratic in the closing layer ('mse'), "
            f"got {loss!r}")


# ----------------------------------------------------------------------------- the method
@dataclass(repr=False)
class LSGDState:
    """Everything an LSGD run carries from one cycle to the next.

    Attributes
    ----------
    x : ndarray
        The current iterate.
    update : AdamUpdate or SGDUpdate
        The update rule of the hidden parameters with its moments.
    gd_batches, ls_batches : Batches
        Mini-batch generators of the descent steps and of the solves.
    n_steps : int
        Descent steps taken (the schedule's and the batches' counter).
    n_solves : int
        Least-squares solves done.
    nit : int
        Cycles completed.
    solver : ClosingSolver
    """

    x: np.ndarray
    update: object
    gd_batches: Batches
    ls_batches: Batches
    solver: ClosingSolver
    n_steps: int = 0
    n_solves: int = 0
    nit: int = 0

    def __repr__(self):
        rule = type(self.update).__name__.replace("Update", "").lower()
        return (f"LSGDState({self.nit} cycles, {self.n_solves} solves, {self.n_steps} "
                f"{rule} steps, {self.x.size} parameters, {self.solver!r})")

    def state_dict(self):
        """The state as plain data (for checkpoints, :mod:`mgnn.runs`); the solver's
        buffers are scratch and not part of it."""
        return {"x": self.x, "update": self.update.state_dict(),
                "gd_batches": self.gd_batches.state_dict(),
                "ls_batches": self.ls_batches.state_dict(), "n_steps": self.n_steps,
                "n_solves": self.n_solves, "nit": self.nit}

    def load_state_dict(self, d):
        self.x = d["x"]
        self.update.load_state_dict(d["update"])
        self.gd_batches.load_state_dict(d["gd_batches"])
        self.ls_batches.load_state_dict(d["ls_batches"])
        self.n_steps, self.n_solves, self.nit = (int(d[k]) for k in
                                                  ("n_steps", "n_solves", "nit"))

    def solve(self, batch=None):
        """Replace the closing layer of ``x`` by the least-squares fit; return the stats."""
        self.x, stats = self.solver.solve(self.x, batch)
        self.n_solves += 1
        return stats


def _batch_size(value, n, name):
    if value is None:
        return None
    value = check_positive_int(value, name)
    if value > n:
        raise ValueError(f"{name} must be <= n_samples = {n}, got {value}")
    return None if value == n else value


def _setup(run, opts, given, x):
    obj = run.obj
    check_lsgd_objective(obj)
    maxiter = check_maxiter(opts["maxiter"])
    k = check_positive_int(opts["gd_steps"], "gd_steps", minimum=0)
    inner = check_choice(opts["inner"], "inner", INNER)
    reject_unused(given, _SGD_ONLY if inner == "adam" else _ADAM_ONLY, f"with inner={inner!r}")
    if k == 0:
        reject_unused(given, ("lr", "schedule", "decay_rate", "decay_steps", "lr_min",
                              "batch_size", "final_solve") + _ADAM_ONLY + _SGD_ONLY,
                      "with gd_steps=0 (no descent steps)")
    n = obj.n_samples
    bs = _batch_size(opts["batch_size"], n, "batch_size")
    ls_bs = _batch_size(opts["ls_batch_size"], n, "ls_batch_size")
    full = bs is None and ls_bs is None
    check_tol(opts["gtol"], "gtol")
    if not full:
        reject_unused(given, ("gtol",),
                      "with mini-batches (gtol is checked on full-batch gradients)")
    if not isinstance(opts["final_solve"], bool):
        raise TypeError(f"final_solve must be bool, got {opts['final_solve']!r}")
    rng = opts["rng"]
    if rng is not None and not isinstance(rng, (int, np.integer, np.random.Generator)):
        raise TypeError(f"rng must be None, an int seed or a numpy Generator, got {rng!r}")
    if bs is None and ls_bs is None:
        reject_unused(given, ("rng",), "without mini-batches")
    rng = np.random.default_rng(rng)
    ls_rng = rng.spawn(1)[0]  # the descent batches are those of adam/sgd with this rng
    gd_batches = Batches(n, bs, True, False, rng)
    ls_batches = Batches(n, ls_bs, True, False, ls_rng)
    lr = opts["lr"]
    if lr is None:
        lr = 1e-3 if inner == "adam" else 1e-2
    sched = make_schedule(lr, opts["schedule"], opts["decay_rate"], opts["decay_steps"],
                          opts["lr_min"], steps_per_epoch=gd_batches.per_epoch,
                          total=max(1, maxiter * k))
    if inner == "adam":
        update = AdamUpdate(opts["beta1"], opts["beta2"], opts["eps"])
    else:
        update = SGDUpdate(opts["momentum"], opts["nesterov"])
    solver = ClosingSolver(obj, opts["ls_reg"], opts["ls_rcond"])
    state = LSGDState(x, update, gd_batches, ls_batches, solver)
    return state, maxiter, k, sched, full


def _reduced(space, stats):
    """The solve's statistics on every rank (the closing layer's rank has them)."""
    keys = ("ls_rank", "ls_cond", "ls_loss")
    comm = getattr(space, "comm", None)
    if comm is None or comm.size == 1:
        return {k: stats[k] for k in keys}
    vals = np.array([-math.inf if math.isnan(stats[k]) else stats[k] for k in keys])
    vals = comm.allreduce(vals, op="max")
    return dict(zip(keys, vals.tolist(), strict=True))


def minimize_lsgd(objective, theta0, options=None, callback=None):
    """Hybrid least-squares / gradient descent (LSGD); see :mod:`mgnn.optim.lsgd`.

    Each iteration solves for the closing layer exactly and then takes
    ``gd_steps`` Adam or SGD steps on the hidden parameters. Called through
    ``minimize(..., method='lsgd')``; the objective must have an MSE loss and
    ``features`` (:class:`~mgnn.objective.Objective`,
    :class:`~mgnn.mgrit.LayerParallelObjective`), or be a
    :class:`~mgnn.pinn.PINNObjective` of a linear PDE (its ``closing_system``), or a
    tau-corrected model of one of them inside :func:`~mgnn.multilevel.mgopt`.

    Options
    -------
    maxiter : int, default 100
        Cycles (solve + ``gd_steps`` descent steps).
    gd_steps : int, default 1
        Descent steps per cycle (k >= 0; 0 is repeated least squares).
    inner : {'adam', 'sgd'}, default 'adam'
        Update rule of the hidden parameters; its state persists over the cycles.
    lr : float, optional
        Learning rate (default 1e-3 for Adam, 1e-2 for SGD).
    schedule, decay_rate, decay_steps, lr_min
        Learning-rate schedule over the descent steps, as for
        :func:`~mgnn.optim.stochastic.minimize_adam`.
    beta1, beta2, eps : float
        Adam's parameters (only with ``inner='adam'``).
    momentum, nesterov
        SGD's parameters (only with ``inner='sgd'``).
    batch_size : int, optional
        Mini-batch of each descent step (default all data).
    ls_batch_size : int, optional
        Mini-batch of each solve (default all data).
    ls_reg : float, default 0
        Extra regularisation eps of the solve, in the loss's scaling: the solve
        minimises the objective plus ``(eps/2) ||xi||^2``.
    ls_rcond : float, optional
        Relative singular-value cut-off of an unregularised solve (default
        ``eps_64 * max(s, width + 1)``).
    final_solve : bool, default True
        Solve once more after the last cycle, so that ``x`` has the least-squares
        closing layer for its basis.
    rng : None, int or Generator
        Seed of the batches (the descent batches are those of ``adam``/``sgd``
        with the same seed).
    gtol : float, default 1e-5
        Full batch only: stop when the gradient norm after a solve is <= gtol.
    disp, disp_every, checkpoint, resume
        Progress lines, checkpoints (the whole :class:`LSGDState`) and resuming,
        bit for bit (:mod:`mgnn.runs`; see :func:`~mgnn.optim.stochastic.minimize_sgd`).

    Returns
    -------
    OptimizeResult
        As for the other methods; ``fun``/``jac`` on all data at ``x``. The
        history has one row per cycle: ``fun`` and ``grad_norm`` at the iterate
        after the solve (on the first descent step's batch), ``step_norm`` (the
        cycle's change of theta), ``lr``, ``ls_loss`` (the solve's data term on
        its batch), ``ls_rank``, ``ls_cond``, ``ls_work`` (the solve's flops in
        work units) and the counts. ``n_solves`` and ``n_steps`` count the solves
        and descent steps.

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn import minimize
    >>> from mgnn.nets import ResNet
    >>> from mgnn.objective import Objective
    >>> X = np.linspace(-1, 1, 200)[:, None]
    >>> net = ResNet(1, 12, 3, 1, activation="relu", task="regression")
    >>> obj = Objective(net, X, np.sin(3 * X))
    >>> theta0 = net.init(0, "box", box=(-1, 1))
    >>> res = minimize(obj, theta0, method="lsgd",
    ...                options={"maxiter": 50, "gd_steps": 5, "lr": 1e-3})
    >>> res.success, res.nit, res.n_solves, res.n_steps
    (True, 50, 51, 250)
    >>> bool(res.fun < 1e-3), bool(res.history["ls_rank"][0] == 13)
    (True, True)

    A PINN of a linear PDE, -u'' = pi^2 sin(pi x) on [0, 1] with u(0) = u(1) = 0:

    >>> from mgnn.pinn import Condition, PINNObjective
    >>> x = np.linspace(0, 1, 40)[1:-1, None]
    >>> pnet = ResNet(1, 10, 3, 1, task="regression")
    >>> pinn = PINNObjective(pnet, "poisson", x, pde_params={"n_dims": 1},
    ...                      source=lambda X: np.pi**2 * np.sin(np.pi * X[:, 0]),
    ...                      conditions=[Condition(np.array([[0.0], [1.0]]), 0.0)])
    >>> res = minimize(pinn, pnet.init(0), method="lsgd",
    ...                options={"maxiter": 200, "gd_steps": 5, "lr": 1e-3})
    >>> xx = np.linspace(0, 1, 101)[:, None]
    >>> res.success, bool(pinn.relative_l2(res.x, xx, np.sin(np.pi * xx[:, 0])) < 1e-5)
    (True, True)
    """
    opts, given = parse_options("lsgd", options, LSGD_DEFAULTS)
    run = Run(objective, callback, "lsgd", opts)
    try:
        return _lsgd(run, objective, opts, given, theta0)
    finally:
        run.close()


def _lsgd(run, objective, opts, given, theta0):
    x = prepare_theta0(theta0)
    state, maxiter, k, sched, full = _setup(run, opts, given, x)
    saved = run.restore(x)
    if saved is not None:
        state.load_state_dict(saved["lsgd"])
    space = run.space
    gtol = opts["gtol"]
    x_prev = state.x  # the last iterate whose loss was finite
    f = g = None
    converged = False
    gnorm = math.nan

    def solve(batch):
        stats = state.solve(batch)
        if not space.all_finite(state.x):
            raise Diverged(f"non-finite closing layer (non-finite hidden states) at "
                           f"iteration {run.nit} in the least-squares solve")
        return stats

    n_hidden = None
    try:
        for c in range(state.nit, maxiter):
            start = state.x
            ls_batch, _ = state.ls_batches(state.n_solves)
            stats = solve(ls_batch)
            if n_hidden is None:  # all of this rank's slice unless it owns the closing layer
                n_hidden = start.size - (objective.net.n_close if state.solver.holds_closing
                                         else 0)
            row = _reduced(space, stats)
            lr = math.nan
            if k == 0:
                f = run.value(state.x, ls_batch, what="the loss after the solve")
                g, gnorm = None, math.nan
                x_prev = state.x
            for j in range(k):
                batch, _ = state.gd_batches(state.n_steps)
                fj, gj = run.value_and_grad(state.x, batch, what="the loss and gradient")
                x_prev = state.x
                if j == 0:
                    f, g, gnorm = fj, gj, space.norm(gj)
                    if full and gnorm <= gtol:
                        converged = True
                        break
                lr = sched(state.n_steps)
                step = state.update(gj[:n_hidden], lr)
                new = state.x.copy()
                new[:n_hidden] -= step
                state.x = new
                state.n_steps += 1
            run.nit = state.nit = c + 1
            run.record(fun=f, grad_norm=gnorm, step_norm=space.norm(state.x - start), lr=lr,
                       ls_work=stats["ls_work"], **row)
            if converged:  # after the solve of this cycle, before its descent steps
                break
            if run.notify(state.x, f, g, lr=lr):
                return run.callback_result(state.x, f, None, n_solves=state.n_solves,
                                           n_steps=state.n_steps)
            if run.boundary(lambda: {"x": state.x, "lsgd": state.state_dict()}):
                return run.interrupted_result(state.x, f, None, n_solves=state.n_solves,
                                              n_steps=state.n_steps)
        if converged:
            msg = f"Optimization terminated successfully: gradient norm {gnorm:.3e} <= gtol."
            return run.result(state.x, f, g, STATUS_CONVERGED, msg, n_solves=state.n_solves,
                              n_steps=state.n_steps)
        if k > 0 and opts["final_solve"]:
            ls_batch, _ = state.ls_batches(state.n_solves)
            solve(ls_batch)
        f_end, g_end = run.value_and_grad(state.x, None, what="the final loss on all data")
    except Diverged as exc:
        return run.diverged_result(x_prev, f, g, exc, n_solves=state.n_solves,
                                   n_steps=state.n_steps)
    msg = f"Completed {state.nit} cycles ({state.n_solves} solves, {state.n_steps} steps)."
    return run.result(state.x, f_end, g_end, STATUS_CONVERGED, msg, success=True,
                      n_solves=state.n_solves, n_steps=state.n_steps)
