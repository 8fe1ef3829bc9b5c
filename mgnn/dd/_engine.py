"""Machinery shared by the domain-decomposition solvers.

* :class:`SchwarzState`: everything a run needs to continue (iterate, radius,
  curvature memories of every subdomain this rank solves, of the global and
  the coarse steps, work ledger, statistics, history);
* metering: every phase of an outer iteration is charged to fresh work
  counters (swapped into the objectives for the phase), so the work of a
  subdomain is the same number on any number of ranks;
* :class:`Exchange`: subdomain ``s`` is solved on rank ``owner[s]`` (a block
  partition of the subdomains over the ranks); the end points and the
  statistics of all subdomains are gathered on every rank in subdomain order,
  and every rank combines them in that order, so iterates do not depend on the
  mapping of subdomains to ranks;
* :class:`SubdomainStatistics` / :class:`DDStatistics`: per-subdomain table.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from mgnn.backend import get_namespace, to_host
from mgnn.optim._common import History
from mgnn.parallel.comm import get_comm
from mgnn.parallel.partition import block_offsets
from mgnn.work import WorkCounter

__all__ = ["SchwarzState", "SubdomainStatistics", "DDStatistics", "Exchange", "metered"]


@contextmanager
def metered(objectives):
    """Charge the evaluations inside the block to fresh counters; merge them back after.

    Yields the list of fresh :class:`~mgnn.work.WorkCounter` (same ``cost``
    and ``scale`` as the objectives' own). On exit each objective gets its
    own counter back, increased by what the fresh one counted.
    """
    saved = [o.counter for o in objectives]
    fresh = [WorkCounter(cost=dict(c.cost), scale=c.scale) for c in saved]
    for o, c in zip(objectives, fresh, strict=True):
        o.counter = c
    try:
        yield fresh
    finally:
        for o, c0, c in zip(objectives, saved, fresh, strict=True):
            o.counter = c0
            c0.nfev += c.nfev
            c0.njev += c.njev
            c0.nhev += c.nhev
            c0.work += c.work


@dataclass
class SubdomainStatistics:
    """What the local solves did on one subdomain (summed over the run).

    Attributes
    ----------
    index : int
    entries : int
        Parameters (or samples) the subdomain owns.
    owner : int
        Rank that solves it.
    label : str
    solves, steps, accepted : int
        Local solves, local steps and accepted local steps.
    inner : int
        CG iterations (trust region) or line-search trial points (L-BFGS).
    work : float
        Work of its local solves (fine-gradient equivalents).
    radius : float
        Local radius at the end of its last solve (trust region).
    """

    index: int
    entries: int
    owner: int
    label: str
    solves: int = 0
    steps: int = 0
    accepted: int = 0
    inner: int = 0
    work: float = 0.0
    radius: float = math.nan


class DDStatistics(list):
    """One :class:`SubdomainStatistics` per subdomain, printed as a table.

    Examples
    --------
    >>> DDStatistics([SubdomainStatistics(0, 120, 0, "layers 0..3", solves=4, steps=12,
    ...                                    accepted=10, inner=30, work=12.0, radius=0.5)])
     subdomain  owner  entries  solves  steps  accepted  inner     work    radius  holds
             0      0      120       4     12        10     30   12.000     0.5    layers 0..3
    """

    def __repr__(self):
        head = (" subdomain  owner  entries  solves  steps  accepted  inner     work    radius"
                "  holds")
        rows = [f" {s.index:9d}  {s.owner:5d}  {s.entries:7d}  {s.solves:6d}  {s.steps:5d}  "
                f"{s.accepted:8d}  {s.inner:5d}  {s.work:7.3f}  {s.radius:8.3g}    {s.label}"
                for s in self]
        return "\n".join([head] + rows)


class Exchange:
    """Subdomains over the ranks of ``comm`` and the gather of their results.

    Rank ``r`` solves the subdomains ``block_offsets(S, size)[r] ..
    [r + 1] - 1`` (one or more per rank; ranks beyond ``S`` solve none).

    Examples
    --------
    >>> import numpy as np
    >>> ex = Exchange(None, 3)
    >>> ex.mine, ex.owner.tolist()
    ([0, 1, 2], [0, 0, 0])
    >>> vecs, rows = ex.gather({0: np.ones(2), 1: np.zeros(1), 2: np.ones(1)}, [2, 1, 1],
    ...                        {s: np.array([s, 2.0 * s]) for s in range(3)}, np.float64, 2)
    >>> [v.tolist() for v in vecs], rows[:, 1].tolist()
    ([[1.0, 1.0], [0.0], [1.0]], [0.0, 2.0, 4.0])
    """

    def __init__(self, comm, n_subdomains):
        self.comm = get_comm(comm)
        self.n = int(n_subdomains)
        self.offsets = block_offsets(self.n, self.comm.size)
        r = self.comm.rank
        self.mine = list(range(int(self.offsets[r]), int(self.offsets[r + 1])))
        self.owner = np.searchsorted(self.offsets, np.arange(self.n), side="right") - 1

    def gather(self, vectors, lengths, rows, dtype, K):
        """All subdomains' vectors and scalar rows on every rank, in subdomain order.

        ``vectors[s]`` (1-D, length ``lengths[s]``) and ``rows[s]`` (``K``
        floats) for the subdomains of this rank. Returns ``(list of vectors,
        (S, K) array)``. Device vectors (CuPy) come back on the device: with one
        process they are not copied; across processes they travel through one
        host buffer (one copy to the host, one back per call).
        """
        lengths = [int(v) for v in lengths]
        mine = self.mine
        xp = get_namespace(*(vectors[s] for s in mine))
        if self.comm.size == 1:
            vecs = [vectors[s].astype(dtype, copy=False) for s in range(self.n)]
        else:
            send = (np.concatenate([to_host(vectors[s]).astype(dtype, copy=False)
                                    for s in mine]) if mine else np.empty(0, dtype=dtype))
            per_rank = [sum(lengths[int(a):int(b)]) for a, b in
                        zip(self.offsets[:-1], self.offsets[1:], strict=True)]
            recv = np.empty(sum(lengths), dtype=dtype)
            self.comm.allgatherv(send, recv, per_rank)
            if xp is not np:
                recv = xp.asarray(recv)
            cuts = np.cumsum([0] + lengths)
            vecs = [recv[cuts[s]:cuts[s + 1]] for s in range(self.n)]
        rsend = (np.stack([np.asarray(rows[s], dtype=np.float64) for s in mine])
                 if mine else np.empty((0, K)))
        rrecv = np.empty((self.n, K))
        self.comm.allgatherv(rsend, rrecv, [int(b - a) for a, b in
                                            zip(self.offsets[:-1], self.offsets[1:],
                                                strict=True)])
        return vecs, rrecv


class SchwarzState:
    """The whole state of a domain-decomposition run, in one object.

    A run continues from it bit for bit: pass it as ``theta0`` of
    :func:`~mgnn.dd.apts` or :func:`~mgnn.dd.spqn` (``res.state`` of an
    earlier run; it is a private copy, later runs do not change it).

    Attributes
    ----------
    method : str
        'apts' or 'spqn'.
    options : dict
        The validated options of the run.
    x, f, g : ndarray, float, ndarray
        Iterate, loss and gradient.
    radius : float
        Global trust-region radius (APTS; NaN for SPQN).
    nit : int
        Outer iterations done.
    local : dict
        Subdomain index -> its curvature memory (L-SR1 or L-BFGS, in the
        subdomain's coordinates), for the subdomains this rank solves.
    global_memory, coarse_memory : object or None
        Curvature memory of the global steps and of the coarse level.
    ledger : dict
        ``nfev, njev, nhev`` (fine objective) and ``work`` (all levels,
        total) and ``parallel_work`` since the start of the run.
    statistics : DDStatistics
    history : History
    elapsed : float
        Wall seconds spent so far.
    n_params, decomposition : int, str
        What the state belongs to (checked on resume).
    """

    def __init__(self, method, options, x, n_subdomains_desc):
        self.method = method
        self.options = dict(options)
        self.x = x
        self.f = None
        self.g = None
        self.radius = math.nan
        self.nit = 0
        self.local = {}
        self.global_memory = None
        self.coarse_memory = None
        self.ledger = {"nfev": 0, "njev": 0, "nhev": 0, "work": 0.0, "parallel_work": 0.0}
        self.statistics = None
        self.history = History()
        self.elapsed = 0.0
        self.n_params = int(x.size)
        self.decomposition = n_subdomains_desc

    def copy(self):
        """A deep copy (memories, history and ledger included)."""
        return copy.deepcopy(self)

    def state_dict(self):
        """The state as plain data (for checkpoint files, :mod:`mgnn.runs`): memories by
        their ``state_dict`` (None where a run keeps none), statistics as dicts."""
        def mem(m):
            return None if m is None else m.state_dict()

        return {"method": self.method, "options": dict(self.options), "x": self.x,
                "f": self.f, "g": self.g, "radius": self.radius, "nit": self.nit,
                "local": {str(s): mem(m) for s, m in self.local.items()},
                "global_memory": mem(self.global_memory),
                "coarse_memory": mem(self.coarse_memory), "ledger": dict(self.ledger),
                "statistics": [dataclasses.asdict(t) for t in self.statistics],
                "history": self.history.state_dict(), "elapsed": self.elapsed,
                "n_params": self.n_params, "decomposition": self.decomposition,
                "ranks": list(getattr(self, "ranks", (1, 0))),
                "two_level": bool(getattr(self, "two_level", False))}

    @classmethod
    def from_state_dict(cls, d):
        """A state from :meth:`state_dict`'s output; its memories stay plain dicts until a
        solver gives them their objects (``materialize``)."""
        st = cls(d["method"], d["options"], d["x"], d["decomposition"])
        st.f, st.g, st.radius, st.nit = d["f"], d["g"], d["radius"], int(d["nit"])
        st.local = {int(s): m for s, m in d["local"].items()}
        st.global_memory, st.coarse_memory = d["global_memory"], d["coarse_memory"]
        st.ledger = dict(d["ledger"])
        st.statistics = DDStatistics(SubdomainStatistics(**t) for t in d["statistics"])
        st.history = History()
        st.history.load_state_dict(d["history"])
        st.elapsed, st.n_params = d["elapsed"], int(d["n_params"])
        st.ranks, st.two_level = tuple(d["ranks"]), bool(d["two_level"])
        return st

    def materialize(self, new_local, new_global, new_coarse):
        """Turn memories held as plain dicts into objects made by the given factories."""
        def build(m, make):
            if not isinstance(m, dict):
                return m
            obj = make()
            obj.load_state_dict(m)
            return obj

        self.local = {s: build(m, new_local) for s, m in self.local.items()}
        self.global_memory = build(self.global_memory, new_global)
        self.coarse_memory = build(self.coarse_memory, new_coarse)

    def __repr__(self):
        f = "None" if self.f is None else f"{self.f:.6g}"
        return (f"SchwarzState({self.method}, nit={self.nit}, fun={f}, "
                f"work={self.ledger['work']:.4g}, parallel_work="
                f"{self.ledger['parallel_work']:.4g}, {self.n_params} parameters, "
                f"{len(self.local)} local memories)")


class LedgerCounter:
    """The counter the :class:`~mgnn.optim._common.Run` of a DD solver reads: the ledger."""

    def __init__(self, ledger):
        self.ledger = ledger

    def snapshot(self):
        L = self.ledger
        return (L["nfev"], L["njev"], L["nhev"], L["work"])


class FineView:
    """The objective as the Run sees it: evaluations forwarded, counts from the ledger."""

    def __init__(self, objective, ledger, space):
        self._obj = objective
        self.counter = LedgerCounter(ledger)
        self.space = space
        self.n_samples = getattr(objective, "n_samples", None)
        # an MGRIT propagation's statistics become history columns, as in minimize
        self.propagation = getattr(objective, "propagation", None)

    def value(self, x, batch=None):
        return self._obj.value(x, batch=batch)

    def value_and_grad(self, x, batch=None):
        return self._obj.value_and_grad(x, batch=batch)

    def hessp(self, x, v, batch=None):
        return self._obj.hessp(x, v, batch=batch)


def charge(ledger, counters, parallel=True, fine=0):
    """Add the fresh counters of one phase to the ledger.

    Evaluation counts are those of ``counters[fine]`` (the fine objective);
    work is summed over all counters. ``parallel``: the phase also counts in
    the parallel work (a serial phase). Returns the phase's work.
    """
    c = counters[fine]
    ledger["nfev"] += c.nfev
    ledger["njev"] += c.njev
    ledger["nhev"] += c.nhev
    w = 0.0
    for k in counters:
        w += k.work
    ledger["work"] += w
    if parallel:
        ledger["parallel_work"] += w
    return w


def timer_start(state):
    return time.perf_counter() - state.elapsed
