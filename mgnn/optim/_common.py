"""Shared machinery of the single-level optimizers.

Every method in :mod:`mgnn.optim` runs through one :class:`Run`: it validates the
options, evaluates the objective (checking for NaN/inf), keeps the
:class:`History`, calls the user's callback, prints progress, writes checkpoints
and resumes from them, and builds the :class:`scipy.optimize.OptimizeResult`. A
new method only writes its loop.

**Run services** (:data:`RUN_OPTIONS`, adopted by a method by merging them into
its defaults and passing the parsed options to :class:`Run`):

``disp`` (bool, default False) and ``disp_every`` (int, default 1)
    progress lines through :mod:`logging` (:mod:`mgnn.runs.progress`).
``checkpoint`` (a :class:`~mgnn.runs.Checkpointer` or a directory; default None)
    write the run's whole state every k iterations / t seconds and on SIGINT or
    SIGTERM (then the run returns with status 4, "interrupted").
``resume`` (a checkpoint file or directory, or a :class:`~mgnn.runs.Checkpoint`)
    continue the run a checkpoint holds, bit for bit.

The loop of a method, in the protocol of :mod:`mgnn.runs`::

    opts, given = parse_options(name, options, DEFAULTS)      # DEFAULTS has RUN_OPTIONS
    run = Run(objective, callback, name, opts)
    x = prepare_theta0(theta0)
    ...                                                        # build the method's state
    saved = run.restore(x)                                     # None, or the method's dict
    if saved is not None:
        x = saved["x"]; memory.load_state_dict(saved["memory"]); ...
    try:
        while ...:
            ...                                                # one iteration
            run.nit += 1
            run.record(fun=f, grad_norm=gnorm, ...)
            if run.notify(x, f, g):
                return run.callback_result(x, f, g)
            if run.boundary(lambda: {"x": x, "memory": memory.state_dict(), ...}):
                return run.interrupted_result(x, f, g)
    finally:
        run.close()
"""

from __future__ import annotations

import inspect
import math
import os
import time

import numpy as np
from scipy.optimize import OptimizeResult

from mgnn._validation import check_array, check_positive_int, check_scalar
from mgnn.backend import get_namespace
from mgnn.runs.checkpoint import (
    STATUS_INTERRUPTED,
    as_checkpoint,
    as_checkpointer,
    interrupted_message,
)
from mgnn.runs.progress import Progress
from mgnn.runs.state import (
    components_state,
    counter_state,
    load_components_state,
    set_counter_state,
    stateful_components,
)
from mgnn.vectorspace import EuclideanSpace
from mgnn.work import WorkCounter

__all__ = ["History", "Run", "Diverged", "parse_options", "RUN_OPTIONS", "STATUS_INTERRUPTED"]

# termination status codes shared by all methods
STATUS_CONVERGED = 0
STATUS_MAXITER = 1
STATUS_STALLED = 2  # line search failed, trust radius collapsed, precision loss
STATUS_DIVERGED = 3  # NaN or inf in the loss or gradient, or sustained growth
# STATUS_INTERRUPTED = 4: SIGINT/SIGTERM, checkpoint written (mgnn.runs.checkpoint)
STATUS_CALLBACK = 99  # the callback raised StopIteration (scipy's convention)

CALLBACK_MESSAGE = "`callback` raised `StopIteration`."

#: Options every method that adopts the run services accepts (see the module docstring).
RUN_OPTIONS = {"disp": False, "disp_every": 1, "checkpoint": None, "resume": None}


class Diverged(Exception):
    """Raised inside a run when an evaluation returns NaN or inf."""


class History:
    """Per-iteration record of a run: a table with one row per iteration.

    Columns are created on first use; a row that does not set a column gets
    NaN there. Every column comes back as a float NumPy array, so plotting is
    ``plt.semilogy(h['work'], h['fun'])``.

    Standard columns: ``nit`` (iteration), ``fun`` (loss), ``grad_norm``,
    ``step_norm``, ``radius`` (trust region only), ``lr`` (stochastic only),
    ``nfev``, ``njev``, ``nhev`` (evaluation counts since the start of the
    run), ``work`` (fine-gradient equivalents since the start) and ``time``
    (wall seconds since the start). Methods add their own (``rho``,
    ``accepted``, ``epoch``, ``alpha`` ...).

    Examples
    --------
    >>> h = History()
    >>> h.append(nit=0, fun=2.0)
    >>> h.append(nit=1, fun=1.0, radius=0.5)
    >>> h['fun']
    array([2., 1.])
    >>> h['radius']
    array([nan, 0.5])
    >>> len(h), 'radius' in h
    (2, True)
    """

    def __init__(self):
        self._cols = {}
        self._n = 0

    def append(self, **row):
        """Add one row; unknown columns are created and back-filled with NaN."""
        for key in row:
            if key not in self._cols:
                self._cols[key] = [math.nan] * self._n
        for key, col in self._cols.items():
            val = row.get(key, math.nan)
            col.append(math.nan if val is None else float(val))
        self._n += 1

    def __getitem__(self, key):
        return np.asarray(self._cols[key], dtype=float)

    def __contains__(self, key):
        return key in self._cols

    def __len__(self):
        return self._n

    def __iter__(self):
        return iter(self._cols)

    def keys(self):
        """Column names."""
        return list(self._cols)

    def as_dict(self):
        """The table as ``{column: ndarray}``."""
        return {k: self[k] for k in self._cols}

    def last(self, key, default=math.nan):
        """Value of ``key`` in the last row."""
        col = self._cols.get(key)
        return col[-1] if col else default

    def state_dict(self):
        """The table as plain data (for checkpoints): ``{"n": rows, "columns": {...}}``."""
        return {"n": self._n, "columns": {k: np.asarray(v, dtype=float)
                                          for k, v in self._cols.items()}}

    def load_state_dict(self, d):
        """Replace the table by :meth:`state_dict`'s output (values bit for bit)."""
        self._n = int(d["n"])
        self._cols = {k: [float(v) for v in np.asarray(col, dtype=float)]
                      for k, col in d["columns"].items()}

    def __repr__(self):
        return f"History({self._n} rows; columns: {', '.join(self._cols)})"


def parse_options(method, options, defaults):
    """Merge ``options`` into ``defaults``; unknown names raise ``TypeError``.

    Returns ``(opts, given)``: the merged dict and the set of names the caller
    set explicitly (so that a method can reject options that would have no
    effect in the chosen configuration).
    """
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise TypeError(f"options must be a dict, got {type(options).__name__}")
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        valid = ", ".join(sorted(defaults))
        raise TypeError(
            f"unknown option {unknown[0]!r} for method {method!r}; valid options: {valid}"
        )
    opts = dict(defaults)
    opts.update(options)
    return opts, set(options)


def reject_unused(given, names, reason):
    """Raise ``ValueError`` if any of ``names`` was given although unused."""
    for name in names:
        if name in given:
            raise ValueError(f"option {name!r} has no effect {reason}")


def check_maxiter(value, name="maxiter"):
    return check_positive_int(value, name, minimum=0)


def check_tol(value, name):
    return check_scalar(value, name, low=0.0)


def prepare_theta0(theta0):
    """Copy and validate the initial guess (a 1-D float array, all finite)."""
    if not (hasattr(theta0, "dtype") and hasattr(theta0, "shape")):
        theta0 = np.asarray(theta0)
    if theta0.dtype.kind in "biu":
        theta0 = theta0.astype(np.float64)
    check_array(theta0, "theta0", ndim=1)
    return theta0.copy()


def wrap_callback(callback):
    """scipy's convention: ``callback(intermediate_result)`` if that is the only
    parameter's name, else the legacy ``callback(xk)``."""
    if callback is None:
        return None
    if not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    try:
        params = set(inspect.signature(callback).parameters)
    except (TypeError, ValueError):  # builtins without a signature
        params = set()
    if params == {"intermediate_result"}:
        return lambda res: callback(intermediate_result=res)
    return lambda res: callback(res.x.copy())


class _CountingProxy:
    """Adds a WorkCounter to an objective that has none (charged here)."""

    def __init__(self, obj):
        self._obj = obj
        self.counter = WorkCounter()
        self.n_samples = getattr(obj, "n_samples", None)
        self.space = getattr(obj, "space", None)

    def _share(self, batch):
        if batch is None or not self.n_samples:
            return 1.0
        return len(batch) / self.n_samples

    def value(self, theta, batch=None):
        self.counter.charge("value", self._share(batch))
        return self._obj.value(theta, batch=batch)

    def grad(self, theta, batch=None):
        self.counter.charge("grad", self._share(batch))
        return self._obj.grad(theta, batch=batch)

    def value_and_grad(self, theta, batch=None):
        self.counter.charge("grad", self._share(batch))
        return self._obj.value_and_grad(theta, batch=batch)

    def hessp(self, theta, v, batch=None):
        self.counter.charge("hessp", self._share(batch))
        return self._obj.hessp(theta, v, batch=batch)


class Run:
    """State shared by every method: evaluations, history, callback, services, result.

    Parameters
    ----------
    objective : object
        In the objective protocol (``value``, ``grad``, ``value_and_grad``,
        ``hessp``, ``counter``, ``space``, ``n_samples``).
    callback : callable or None
        The user's callback (scipy convention).
    method : str
        Name used in messages, progress lines and checkpoints.
    options : dict, optional
        The method's parsed options; the :data:`RUN_OPTIONS` among them
        (``disp``, ``disp_every``, ``checkpoint``, ``resume``) configure the
        services. Without them the run has no progress, checkpoints or resume.
    counters : list of WorkCounter, optional
        The counters a checkpoint saves and a resume restores (default: the
        objective's counter).
    components : list, optional
        Stateful components (``state_dict``/``load_state_dict``) a checkpoint
        holds (default: the objective and its propagation, where they have them).
    """

    def __init__(self, objective, callback, method, options=None, *, counters=None,
                 components=None):
        user_objective = objective
        if getattr(objective, "counter", None) is None:
            objective = _CountingProxy(objective)
        self.obj = objective
        self.counter = objective.counter
        self.space = getattr(objective, "space", None) or EuclideanSpace()
        self.comm = getattr(self.space, "comm", None)
        self.method = method
        self.callback = wrap_callback(callback)
        self.history = History()
        self._start = self.counter.snapshot()
        self._t0 = time.perf_counter()
        self.nit = 0
        opts = {} if options is None else options
        self.progress = Progress(method, opts.get("disp", False), opts.get("disp_every", 1))
        self.checkpointer = as_checkpointer(opts.get("checkpoint"))
        self._resume = opts.get("resume")
        if self._resume is not None and not isinstance(self._resume, (str, os.PathLike)):
            as_checkpoint(self._resume)  # type check now
        self.counters = [self.counter] if counters is None else list(counters)
        self.components = (stateful_components(user_objective) if components is None
                           else list(components))
        self.checkpoint_path = None
        self.resumed_from = None
        self._active = False
        if self.checkpointer is not None:
            self.checkpointer.activate()
            self._active = True

    def close(self):
        """End the run's services (restores signal handlers); idempotent."""
        if self._active:
            self._active = False
            self.checkpointer.release()

    # -- checkpoint and resume ----------------------------------------------
    def state(self, method_state):
        """The whole state of the run: the method's dict plus the run's own."""
        return {
            "solver": self.method,
            "run": {"nit": self.nit, "history": self.history.state_dict(),
                    "counters": [counter_state(c) for c in self.counters],
                    "start": list(self._start),
                    "elapsed": time.perf_counter() - self._t0},
            "method": method_state,
            "components": components_state(self.components),
        }

    def restore(self, x0):
        """Resume from the ``resume`` option: restore the run's own state and the
        stateful components, and return the method's dict (None when not resuming).

        ``x0`` (the prepared ``theta0``) must match the checkpoint's iterate in
        shape and dtype.
        """
        ck = as_checkpoint(self._resume, self.checkpointer.root.comm
                           if self.checkpointer is not None else None, xp=get_namespace(x0))
        if ck is None:
            return None
        st = ck.state
        where = f" {ck.path}" if ck.path else ""
        if st.get("solver") != self.method:
            raise ValueError(f"resume: the checkpoint{where} was written by "
                             f"{st.get('solver')!r}, this run is {self.method!r}")
        saved = st["method"]
        x = saved.get("x")
        if x is not None and (x.shape != x0.shape or x.dtype != x0.dtype):
            raise ValueError(f"resume: the checkpoint's iterate has shape {x.shape} and dtype "
                             f"{x.dtype}; theta0 has shape {x0.shape} and dtype {x0.dtype}")
        r = st["run"]
        if len(r["counters"]) != len(self.counters):
            raise ValueError(f"resume: the checkpoint holds {len(r['counters'])} work "
                             f"counter(s), this run has {len(self.counters)}")
        load_components_state(self.components, st["components"])
        self.nit = int(r["nit"])
        self.history.load_state_dict(r["history"])
        for c, v in zip(self.counters, r["counters"], strict=True):
            set_counter_state(c, v)
        self._start = tuple(r["start"])
        self._t0 = time.perf_counter() - float(r["elapsed"])
        self.resumed_from = ck.path
        return saved

    def boundary(self, state_fn):
        """At the end of an iteration: write a checkpoint when one is due or a signal
        asked the run to stop (``state_fn()`` gives the method's dict); return True
        when the run must stop (then return :meth:`interrupted_result`)."""
        ck = self.checkpointer
        if ck is None:
            return False
        due, stop = ck.poll(self.nit)
        if due or stop:
            self.checkpoint_path = ck.save(self.state(state_fn()), self.nit, self.method)
        return stop

    def interrupted_result(self, x, fun, jac, **extra):
        """The result of a run stopped by SIGINT/SIGTERM after its checkpoint was written."""
        msg = interrupted_message(self.checkpointer, self.nit, self.checkpoint_path)
        return self.result(x, fun, jac, STATUS_INTERRUPTED, msg, success=False, **extra)

    # -- counting ---------------------------------------------------------
    def counts(self):
        """``dict(nfev, njev, nhev, work, time)`` since the start of the run."""
        now = self.counter.snapshot()
        s = self._start
        return {
            "nfev": now[0] - s[0],
            "njev": now[1] - s[1],
            "nhev": now[2] - s[2],
            "work": now[3] - s[3],
            "time": time.perf_counter() - self._t0,
        }

    # -- evaluations with divergence checks -------------------------------
    def _check(self, f, g, what):
        if not math.isfinite(f):
            raise Diverged(
                f"non-finite loss ({f}) at iteration {self.nit} while evaluating {what}"
            )
        if g is not None and not self.space.all_finite(g):
            raise Diverged(
                f"non-finite gradient (NaN or inf entries) at iteration {self.nit} "
                f"while evaluating {what}"
            )

    def _check_iterate(self, x, what):
        # an objective may reject a non-finite theta with ValueError: catch it here
        if not self.space.all_finite(x):
            raise Diverged(f"non-finite iterate (NaN or inf entries) at iteration {self.nit} "
                           f"before evaluating {what}")

    def value(self, x, batch=None, what="the loss"):
        self._check_iterate(x, what)
        f = float(self.obj.value(x, batch=batch))
        self._check(f, None, what)
        return f

    def value_and_grad(self, x, batch=None, what="the loss and gradient"):
        self._check_iterate(x, what)
        f, g = self.obj.value_and_grad(x, batch=batch)
        f = float(f)
        self._check(f, g, what)
        return f, g

    def hessp(self, x, v, batch=None):
        hv = self.obj.hessp(x, v, batch=batch)
        if not self.space.all_finite(hv):
            raise Diverged(
                f"non-finite Hessian-vector product at iteration {self.nit}"
            )
        return hv

    # -- history and callback ---------------------------------------------
    def record(self, **row):
        """Append a history row (counts, work and time are added here) and print it
        when progress lines are on."""
        row.setdefault("nit", self.nit)
        row.update(self.counts())
        # a propagation with statistics (MGRIT) adds its columns (mgrit_fwd_nit, ...)
        stats = getattr(getattr(self.obj, "propagation", None), "history_row", None)
        if callable(stats):
            row.update(stats())
        self.history.append(**row)
        self.progress.row(row)

    def notify(self, x, fun, jac=None, **extra):
        """Call the callback; return True if it asked to stop (on several ranks: if it
        asked on any rank, so that all ranks stop together)."""
        if self.callback is None:
            return False
        res = OptimizeResult(x=x, fun=fun, jac=jac, nit=self.nit, **self.counts(), **extra)
        stop = False
        try:
            self.callback(res)
        except StopIteration:
            stop = True
        if self.comm is not None and self.comm.size > 1:
            stop = self.comm.allreduce(float(stop), op="max") > 0
        return stop

    def result(self, x, fun, jac, status, message, success=None, **extra):
        """Build the final :class:`~scipy.optimize.OptimizeResult`."""
        if success is None:
            success = status == STATUS_CONVERGED
        c = self.counts()
        res = OptimizeResult(
            x=x,
            fun=fun,
            jac=jac,
            nit=self.nit,
            nfev=c["nfev"],
            njev=c["njev"],
            nhev=c["nhev"],
            work=c["work"],
            time=c["time"],
            success=bool(success),
            status=int(status),
            message=message,
            method=self.method,
            history=self.history,
        )
        if self.checkpointer is not None:
            res["checkpoint"] = self.checkpoint_path
        res.update(extra)
        f = f"f {fun:.6e}, " if isinstance(fun, (int, float)) and fun is not None else ""
        self.progress.final(f"{message} ({f}{self.nit} iterations, work {res.work:.4g}, "
                            f"{res.time:.1f} s)")
        return res

    def callback_result(self, x, fun, jac, **extra):
        return self.result(x, fun, jac, STATUS_CALLBACK, CALLBACK_MESSAGE, success=False, **extra)

    def diverged_result(self, x, fun, jac, exc, **extra):
        return self.result(
            x, fun, jac, STATUS_DIVERGED, f"Diverged: {exc}", success=False, **extra
        )
