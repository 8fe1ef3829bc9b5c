"""Progress lines through :mod:`logging` (logger ``"mgnn"``), on rank 0 only.

Every solver of mgnn takes ``disp`` (print progress) and ``disp_every`` (the
interval in iterations, default 1). A progress line is one ``INFO`` record on the
logger ``mgnn.progress`` (a child of ``mgnn``), so an application routes, filters
or silences it like any other log record::

    import logging
    logging.getLogger("mgnn").setLevel(logging.WARNING)   # silence mgnn's progress

A line shows what the solver's history row holds, in this order: the solver,
iteration (``it``; ``level`` and ``cycle`` where they exist), loss ``f``,
gradient norm ``|g|``, trust radius, learning rate, work (fine-gradient
equivalents), MGRIT forward/adjoint convergence factors, validation metrics and the
elapsed time. With ``disp`` on and no logging configured anywhere (no handler on
``mgnn`` or the root logger), mgnn adds one handler printing the bare message to
``sys.stdout``, as ``scipy.optimize``'s ``disp`` does; if the ``mgnn`` logger has no
level of its own and the effective level would drop ``INFO``, its level is set to
``INFO``. Under MPI only world rank 0 emits.

Examples
--------
>>> import logging, sys
>>> to_stdout = logging.StreamHandler(sys.stdout)     # what an application might do
>>> logger.addHandler(to_stdout)
>>> p = Progress("adam", disp=True, every=2)
>>> p.row(dict(nit=2, fun=0.5, grad_norm=0.25, work=2.0, time=0.125, lr=0.01))
adam  it 2  f 5.000000e-01  |g| 2.50e-01  lr 1.00e-02  work 2  t 0.1 s
>>> p.row(dict(nit=3, fun=0.4))            # not on the interval: nothing
>>> p.final("Completed 3 iterations.")
adam: Completed 3 iterations.
>>> logger.removeHandler(to_stdout)
"""

from __future__ import annotations

import logging
import math
import sys

import numpy as np

from mgnn._validation import check_positive_int

__all__ = ["Progress", "logger", "world_rank", "ensure_visible", "format_row"]

#: The package logger; progress lines go to its child ``mgnn.progress``.
logger = logging.getLogger("mgnn")
_progress = logging.getLogger("mgnn.progress")
_HANDLER_NAME = "mgnn-disp"


def world_rank():
    """Rank in ``MPI.COMM_WORLD`` when mpi4py's MPI is loaded (else 0; importing
    nothing, so a serial run never initialises MPI for a progress line)."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is None:
        return 0
    try:
        return mpi.COMM_WORLD.Get_rank()
    except Exception:  # pragma: no cover - MPI finalized
        return 0


class _StdoutHandler(logging.StreamHandler):
    """Writes to the *current* ``sys.stdout`` (so doctest and pytest capture it)."""

    def __init__(self):
        super().__init__(sys.stdout)
        self.set_name(_HANDLER_NAME)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record):
        self.stream = sys.stdout
        super().emit(record)


def ensure_visible():
    """Make ``INFO`` records of the ``mgnn`` logger reach an output (see module docstring)."""
    if logger.level == logging.NOTSET and logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    if not logger.hasHandlers():
        logger.addHandler(_StdoutHandler())


def _fmt(key, v):
    if key in ("fun",):
        return f"f {v:.6e}"
    if key == "grad_norm":
        return f"|g| {v:.2e}"
    if key == "radius":
        return f"radius {v:.2e}"
    if key == "lr":
        return f"lr {v:.2e}"
    if key == "work":
        return f"work {v:.4g}"
    if key == "mgrit_fwd_factor":
        return f"mgrit fwd {v:.2g}"
    if key == "mgrit_bwd_factor":
        return f"bwd {v:.2g}"
    if key == "val_acc":
        return f"val acc {v:.4f}"
    if key == "val_mean_error":
        return f"val err {v:.3e}"
    if key == "val_max_error":
        return f"max {v:.3e}"
    if key == "batch_size":
        return f"batch {int(v)}"
    if key == "time":
        return f"t {v:.1f} s"
    return f"{key} {v:.4g}"


_ORDER = ("fun", "grad_norm", "radius", "lr", "batch_size", "work", "mgrit_fwd_factor",
          "mgrit_bwd_factor", "val_acc", "val_mean_error", "val_max_error", "time")


def format_row(name, row):
    """One progress line from a history row (keys that are missing or NaN are skipped)."""
    parts = [name]
    for key, label in (("level", "level"), ("cycle", "cycle"), ("nit", "it")):
        v = row.get(key)
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            parts.append(f"{label} {int(v)}")
    for key in _ORDER:
        v = row.get(key)
        if v is None:
            continue
        try:
            v = float(v)
        except (TypeError, ValueError):
            continue
        if math.isnan(v):
            continue
        parts.append(_fmt(key, v))
    return "  ".join(parts)


class Progress:
    """Progress lines of one solver run (rank 0 only, through ``logging``).

    Parameters
    ----------
    name : str
        Printed at the start of each line (the solver or method).
    disp : bool
        Emit lines at all.
    every : int
        Emit the rows whose iteration counter (``nit``, or ``cycle``) is a multiple
        of ``every`` (the first row, iteration 0, always qualifies).
    """

    def __init__(self, name, disp=False, every=1):
        if not isinstance(disp, (bool, np.bool_)):
            raise TypeError(f"disp must be bool, got {type(disp).__name__}")
        self.name = name
        self.every = check_positive_int(every, "disp_every")
        self.on = bool(disp) and world_rank() == 0
        if self.on:
            ensure_visible()

    def row(self, row, key="nit"):
        """Emit ``row`` if its iteration counter ``row[key]`` is on the interval."""
        if not self.on:
            return
        k = row.get(key)
        if k is not None and not (isinstance(k, float) and math.isnan(k)) and \
                int(k) % self.every:
            return
        _progress.info(format_row(self.name, row))

    def final(self, message):
        """Emit the closing line ``name: message``."""
        if self.on:
            _progress.info(f"{self.name}: {message}")
