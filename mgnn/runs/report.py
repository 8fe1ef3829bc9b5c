"""Files a training run leaves in its output folder: history as JSON and CSV, plots.

:func:`write_history` writes ``history.json`` (``{column: [values]}``, NaN as
``null``) and ``history.csv`` (one row per history row, empty cells for NaN);
:func:`write_plots` writes ``loss.png`` (loss against iterations), ``work.png``
(loss against work units) and ``accuracy.png`` (validation accuracy or error against
work) when matplotlib is installed, and returns the names it wrote.
"""

from __future__ import annotations

import csv
import json
import math
import os

import numpy as np

from mgnn.runs.archive import atomic_write

__all__ = ["write_history", "write_plots", "write_json"]


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def write_json(path, obj):
    """Write ``obj`` as JSON (arrays as lists, non-finite floats as ``null``), atomically."""

    def default(a):
        if isinstance(a, np.ndarray):
            return [_clean(float(x)) for x in a.ravel()]
        if isinstance(a, np.generic):
            return _clean(a.item())
        raise TypeError(f"cannot write a {type(a).__name__} as JSON")

    def fix(o):
        if isinstance(o, dict):
            return {k: fix(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [fix(v) for v in o]
        return _clean(o)

    text = json.dumps(fix(obj), default=default, indent=1, allow_nan=False)
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def write_history(folder, history, extra=None):
    """``history.json`` and ``history.csv`` in ``folder``; ``extra`` columns (dict of
    equal-length lists) are written to ``validation.csv``/``.json`` when given."""
    cols = history.as_dict() if hasattr(history, "as_dict") else dict(history)
    write_json(os.path.join(folder, "history.json"), cols)
    keys = list(cols)
    n = len(next(iter(cols.values()))) if cols else 0

    def write_csv(fh):
        import io

        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(keys)
        for i in range(n):
            w.writerow(["" if not math.isfinite(float(cols[k][i])) else repr(float(cols[k][i]))
                        for k in keys])
        fh.write(buf.getvalue().encode("utf-8"))

    atomic_write(os.path.join(folder, "history.csv"), write_csv)


def write_plots(folder, history, title="", validation=None):
    """PNG plots of a history (needs matplotlib; returns the files written, [] without)."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    cols = history.as_dict() if hasattr(history, "as_dict") else dict(history)
    written = []

    def plot(name, x, ys, xlabel, ylabel, log=True):
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, y in ys:
            ok = np.isfinite(x) & np.isfinite(y)
            if ok.any():
                (ax.semilogy if log and np.all(y[ok] > 0) else ax.plot)(x[ok], y[ok],
                                                                        label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        if len(ys) > 1:
            ax.legend()
        fig.tight_layout()
        path = os.path.join(folder, name)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(name)

    fun = cols.get("fun")
    if fun is not None:
        it = cols.get("nit", cols.get("cycle", np.arange(len(fun), dtype=float)))
        plot("loss.png", np.asarray(it, float), [("loss", np.asarray(fun, float))],
             "iteration", "loss")
        if "work" in cols:
            plot("work.png", np.asarray(cols["work"], float),
                 [("loss", np.asarray(fun, float))], "work (fine-gradient equivalents)",
                 "loss")
    val = validation if validation is not None else cols
    for key, label in (("val_acc", "validation accuracy"),
                       ("val_mean_error", "validation mean error")):
        if key in val and "work" in val:
            y = np.asarray(val[key], float)
            if np.isfinite(y).any():
                plot("accuracy.png", np.asarray(val["work"], float), [(label, y)],
                     "work (fine-gradient equivalents)", label, log=key != "val_acc")
                break
    return written
