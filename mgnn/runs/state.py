"""Helpers for the resumable-state protocol (see :mod:`mgnn.runs`).

A *stateful component* is any object with ``state_dict()`` (plain data: NumPy
arrays, Python scalars, strings, ``None``, lists, tuples and dicts with string
keys) and ``load_state_dict(d)`` (restore exactly that state). The functions here
apply the protocol to the pieces every solver shares: work counters, random
generators, the components attached to an objective, and finished
``OptimizeResult`` objects kept inside an outer solver's state.
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy.optimize import OptimizeResult

__all__ = ["counter_state", "set_counter_state", "stateful_components", "components_state",
           "load_components_state", "result_state", "result_from_state"]


def counter_state(counter):
    """``[nfev, njev, nhev, work]`` of a :class:`~mgnn.work.WorkCounter`."""
    return [int(counter.nfev), int(counter.njev), int(counter.nhev), float(counter.work)]


def set_counter_state(counter, state):
    """Set a work counter to :func:`counter_state`'s values (bit for bit)."""
    counter.nfev, counter.njev, counter.nhev = (int(v) for v in state[:3])
    counter.work = float(state[3])


def stateful_components(*objectives):
    """The objects whose state a checkpoint must hold: each objective and its
    ``propagation`` that has ``state_dict``/``load_state_dict``, each once, in order."""
    out, seen = [], set()
    for obj in objectives:
        for c in (obj, getattr(obj, "propagation", None)):
            if c is None or id(c) in seen:
                continue
            if callable(getattr(c, "state_dict", None)) and \
                    callable(getattr(c, "load_state_dict", None)):
                seen.add(id(c))
                out.append(c)
    return out


def components_state(components):
    """``[{"type": class name, "state": c.state_dict()}, ...]``."""
    return [{"type": type(c).__name__, "state": c.state_dict()} for c in components]


def load_components_state(components, states):
    """Restore :func:`components_state`'s output into the same kind of components."""
    if len(states) != len(components):
        have = ", ".join(type(c).__name__ for c in components) or "none"
        saved = ", ".join(s["type"] for s in states) or "none"
        raise ValueError(f"the checkpoint holds the state of {len(states)} stateful "
                         f"component(s) ({saved}); this run has {len(components)} ({have})")
    for c, s in zip(components, states, strict=True):
        if type(c).__name__ != s["type"]:
            raise ValueError(f"the checkpoint holds the state of a {s['type']}, this run "
                             f"has a {type(c).__name__} in its place")
        c.load_state_dict(s["state"])


_PLAIN = (str, bool, type(None), numbers.Real, np.ndarray)


def result_state(res):
    """The plain-data fields of an ``OptimizeResult`` (its ``history`` included)."""
    out = {}
    for key, val in res.items():
        if isinstance(val, _PLAIN):
            out[key] = val
        elif callable(getattr(val, "state_dict", None)) and key.endswith("history"):
            out[key] = {"mgnn.History": val.state_dict()}
        elif isinstance(val, (list, tuple)) and all(isinstance(v, _PLAIN) for v in val):
            out[key] = list(val)
    return out


def result_from_state(state):
    """Inverse of :func:`result_state` (histories come back as :class:`History`)."""
    from mgnn.optim._common import History

    res = OptimizeResult()
    for key, val in state.items():
        if isinstance(val, dict) and "mgnn.History" in val:
            h = History()
            h.load_state_dict(val["mgnn.History"])
            res[key] = h
        else:
            res[key] = val
    return res
