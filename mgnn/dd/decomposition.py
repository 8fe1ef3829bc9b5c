"""Decompositions: which entries of ``theta``, or which samples, each subdomain owns.

A :class:`Decomposition` is a list of sorted index arrays, one per subdomain,
over either the parameter vector (``kind='parameters'``: a subdomain solves for
its entries of ``theta`` with the others frozen) or the data (``kind='data'``:
a subdomain solves for all of ``theta`` on its samples, through the objective
protocol's ``batch=`` index interface). The builders:

``by_layers``
    contiguous blocks of residual layers, the block partition of
    :class:`~mgnn.mgrit.LayerParallelObjective` (subdomain ``s`` owns the
    slice of ``theta`` that rank ``s`` of ``S`` holds there: the opening layer
    goes with the first block, the closing layer with the last), optionally
    overlapping by whole layers;
``by_neurons``
    groups of state neurons across all layers: neuron ``j``'s incoming weights
    and bias in the opening layer and in every residual layer, and its
    outgoing weights in the closing layer (the width structure of
    :mod:`mgnn.multilevel.width`; the closing bias goes with the last group).
    Given ``theta``, matched neurons (:func:`~mgnn.multilevel.match_neurons`,
    the pairs of neuron coarsening) are kept in one group;
``by_tensors``
    the weight and bias tensors of every layer dealt out at random to the
    subdomains, disjoint and balanced by size (as DD4ML's APTS_P);
``by_data``
    blocks of samples (or collocation points), in index order or sorted along
    one input coordinate (a spatial split, as DD4ML's APTS_PINN), optionally
    overlapping;
``by_blocks``
    contiguous blocks of any vector of length ``n``.

Every parameter (or sample) is covered: exactly once, or, with overlap, at
least once; the constructor rejects a decomposition that misses an index or,
without ``overlap=True``, counts one twice. Overlapping parameter subdomains are
combined with the partition of unity ``1 / multiplicity`` per entry (see
:attr:`Decomposition.weights`); data subdomains with weights proportional to
their sample counts.
"""

from __future__ import annotations

import numpy as np

from mgnn._validation import check_choice, check_positive_int, check_scalar
from mgnn.parallel.partition import block_offsets

__all__ = ["Decomposition", "KINDS", "by_blocks", "by_data", "by_layers", "by_neurons",
           "by_tensors"]

KINDS = ("parameters", "data")


def _as_index_array(idx, name, n):
    arr = np.asarray(idx)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of indices, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: every subdomain must own at least one index")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer indices, got dtype {arr.dtype}")
    arr = np.sort(arr.astype(np.int64))
    if arr[0] < 0 or arr[-1] >= n:
        raise ValueError(f"{name} has indices outside [0, {n}): "
                         f"min {int(arr[0])}, max {int(arr[-1])}")
    if np.any(arr[1:] == arr[:-1]):
        dup = int(arr[1:][arr[1:] == arr[:-1]][0])
        raise ValueError(f"{name} lists index {dup} twice")
    return arr


class Decomposition:
    """Subdomains of the parameter vector or of the data.

    Parameters
    ----------
    subdomains : sequence of 1-D integer arrays
        The indices each subdomain owns (sorted here; duplicates within one
        subdomain are an error).
    size : int
        Length of the decomposed index set: ``n_params`` (kind 'parameters')
        or ``n_samples`` (kind 'data').
    kind : {'parameters', 'data'}
    overlap : bool, default False
        Whether subdomains may share indices. Without it an index owned twice
        is an error; in every case an index owned by no subdomain is one.
    labels : sequence of str, optional
        What each subdomain holds, for the printout.
    description : str, optional
        How the decomposition was built, for the printout.

    Attributes
    ----------
    subdomains : tuple of ndarray
    n_subdomains, size, kind, overlap, labels, description
    weights : tuple of ndarray or None
        Parameters with overlap: for each subdomain the partition-of-unity
        weight ``1 / multiplicity`` of each of its entries (the entries of
        the subdomains' weights sum to one per parameter). None otherwise.
    data_weights : ndarray or None
        Data: the weight of each subdomain's correction in the combination,
        its sample count over the sum of all counts. None for parameters.

    Examples
    --------
    >>> import numpy as np
    >>> d = Decomposition([np.array([0, 1]), np.array([2, 3, 4])], size=5)
    >>> d
    Decomposition of 5 parameters into 2 subdomains (user-defined, disjoint)
     subdomain  entries  share  holds
             0        2  0.400  entries 0..1
             1        3  0.600  entries 2..4
    >>> Decomposition([np.array([0, 1]), np.array([1, 2])], size=4)
    Traceback (most recent call last):
    ...
    ValueError: subdomains miss index 3 (and 0 more) of the 4 parameters: every index must be owned
    >>> Decomposition([np.array([0, 1]), np.array([1, 2, 3])], size=4)
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: subdomains count index 1 twice (subdomains 0 and 1); pass overlap=True ...
    """

    def __init__(self, subdomains, size, kind="parameters", *, overlap=False, labels=None,
                 description="user-defined"):
        self.kind = check_choice(kind, "kind", KINDS)
        self.size = check_positive_int(size, "size")
        if isinstance(subdomains, np.ndarray) or not hasattr(subdomains, "__len__"):
            raise TypeError("subdomains must be a list of 1-D integer index arrays")
        if len(subdomains) == 0:
            raise ValueError("subdomains must not be empty")
        if not isinstance(overlap, bool):
            raise TypeError(f"overlap must be bool, got {type(overlap).__name__}")
        self.overlap = overlap
        self.subdomains = tuple(_as_index_array(s, f"subdomains[{i}]", self.size)
                                for i, s in enumerate(subdomains))
        count = np.zeros(self.size, dtype=np.int64)
        for s in self.subdomains:
            count[s] += 1
        what = "parameters" if self.kind == "parameters" else "samples"
        missing = np.flatnonzero(count == 0)
        if missing.size:
            raise ValueError(f"subdomains miss index {int(missing[0])} (and {missing.size - 1} "
                             f"more) of the {self.size} {what}: every index must be owned")
        if not overlap and np.any(count > 1):
            i = int(np.flatnonzero(count > 1)[0])
            owners = [k for k, s in enumerate(self.subdomains) if np.any(s == i)]
            raise ValueError(f"subdomains count index {i} twice (subdomains {owners[0]} and "
                             f"{owners[1]}); pass overlap=True to allow shared indices")
        self.multiplicity = count
        if labels is None:
            labels = [self._range_label(s) for s in self.subdomains]
        labels = [str(x) for x in labels]
        if len(labels) != len(self.subdomains):
            raise ValueError(f"labels must have {len(self.subdomains)} entries, "
                             f"got {len(labels)}")
        self.labels = tuple(labels)
        self.description = str(description)
        self.weights = None
        self.data_weights = None
        if self.kind == "parameters":
            if overlap and np.any(count > 1):
                self.weights = tuple(1.0 / count[s] for s in self.subdomains)
        else:
            n = np.array([s.size for s in self.subdomains], dtype=np.float64)
            self.data_weights = n / n.sum()

    @staticmethod
    def _range_label(s):
        if s[-1] - s[0] + 1 == s.size:
            return f"entries {int(s[0])}..{int(s[-1])}"
        return f"{s.size} entries in {int(s[0])}..{int(s[-1])}"

    @property
    def n_subdomains(self):
        """Number of subdomains."""
        return len(self.subdomains)

    @property
    def sizes(self):
        """Number of indices of each subdomain."""
        return np.array([s.size for s in self.subdomains], dtype=np.int64)

    @property
    def is_trivial(self):
        """One parameter subdomain owning all of ``theta``: the single-level method."""
        return self.kind == "parameters" and self.n_subdomains == 1

    def restrict(self, x, s):
        """Subdomain ``s``'s entries of the parameter vector ``x`` (a copy)."""
        self._check_params("restrict")
        return x[self.subdomains[s]]

    def combine(self, x, local_ends):
        """The point whose entries are the subdomains' local end values.

        Parameters: each entry of ``x`` is replaced by the value its owner
        left (with overlap, the partition-of-unity average of its owners'
        values). Data: the average of the subdomains' end points (full
        vectors) with :attr:`data_weights`, summed in subdomain order.
        ``local_ends[s]`` is None for a subdomain that did not move.

        Examples
        --------
        >>> import numpy as np
        >>> d = by_blocks(4, 2)
        >>> d.combine(np.zeros(4), [np.array([1.0, 2.0]), None]).tolist()
        [1.0, 2.0, 0.0, 0.0]
        """
        if len(local_ends) != self.n_subdomains:
            raise ValueError(f"local_ends must have {self.n_subdomains} entries, "
                             f"got {len(local_ends)}")
        if self.kind == "data":
            out = np.zeros_like(x)
            for w, z in zip(self.data_weights, local_ends, strict=True):
                out += w * (x if z is None else z)
            return out
        out = x.copy()
        if self.weights is None:
            for idx, z in zip(self.subdomains, local_ends, strict=True):
                if z is not None:
                    out[idx] = z
            return out
        acc = np.zeros_like(x)
        for idx, w, z in zip(self.subdomains, self.weights, local_ends, strict=True):
            acc[idx] += w * (x[idx] if z is None else z)
        moved = np.zeros(self.size, dtype=bool)
        for idx, z in zip(self.subdomains, local_ends, strict=True):
            if z is not None:
                moved[idx] = True
        out[moved] = acc[moved]
        return out

    def _check_params(self, what):
        if self.kind != "parameters":
            raise ValueError(f"{what} needs a decomposition of the parameters, this one "
                             "decomposes the data")

    def check_objective(self, objective, name="decomposition"):
        """Raise unless the decomposition fits ``objective`` (its parameters or samples)."""
        if self.kind == "parameters":
            n = getattr(objective, "n_params", None)
            if n is not None and n != self.size:
                raise ValueError(f"{name} decomposes {self.size} parameters but the objective "
                                 f"has {n}")
        else:
            n = getattr(objective, "n_samples", None)
            if n is None:
                raise ValueError(f"{name} decomposes the data but the objective has no "
                                 "n_samples (no batch= interface)")
            if n != self.size:
                raise ValueError(f"{name} decomposes {self.size} samples but the objective "
                                 f"has {n}")

    def __repr__(self):
        what = "parameters" if self.kind == "parameters" else "samples"
        extra = self.multiplicity.sum() - self.size
        ov = f"overlap: {extra} extra entries" if extra else "disjoint"
        head = (f"Decomposition of {self.size} {what} into {self.n_subdomains} subdomains "
                f"({self.description}, {ov})")
        rows = [" subdomain  entries  share  holds"]
        for i, (s, lab) in enumerate(zip(self.subdomains, self.labels, strict=True)):
            rows.append(f" {i:9d}  {s.size:7d}  {s.size / self.size:5.3f}  {lab}")
        return "\n".join([head] + rows)


# ----------------------------------------------------------------------------- builders
def _check_count(n_subdomains, limit, what):
    n_subdomains = check_positive_int(n_subdomains, "n_subdomains")
    if n_subdomains > limit:
        raise ValueError(f"n_subdomains must be <= {limit} (the number of {what}), "
                         f"got {n_subdomains}")
    return n_subdomains


def by_blocks(n, n_subdomains):
    """Contiguous blocks of a vector of length ``n`` (first blocks one longer).

    Examples
    --------
    >>> [s.tolist() for s in by_blocks(5, 2).subdomains]
    [[0, 1, 2], [3, 4]]
    """
    n = check_positive_int(n, "n")
    S = _check_count(n_subdomains, n, "entries")
    off = block_offsets(n, S)
    return Decomposition([np.arange(off[s], off[s + 1]) for s in range(S)], n,
                         description="contiguous blocks")


def by_layers(net, n_subdomains, overlap=0):
    """Contiguous blocks of residual layers, as the layer-parallel layout.

    Parameters
    ----------
    net : ResNet
    n_subdomains : int
        At most ``net.depth``.
    overlap : int, default 0
        Each block also owns this many layers on either side (clipped at the
        ends); shared entries are averaged with the partition of unity.

    Examples
    --------
    >>> from mgnn.nets import ResNet
    >>> net = ResNet(2, 3, 5, 2)
    >>> by_layers(net, 2)
    Decomposition of 77 parameters into 2 subdomains (by layers, disjoint)
     subdomain  entries  share  holds
             0       45  0.584  opening layer, layers 0..2
             1       32  0.416  layers 3..4, closing layer
    >>> by_layers(net, 2, overlap=1).sizes.tolist()
    [57, 44]
    """
    N = net.depth
    S = _check_count(n_subdomains, N, "residual layers")
    overlap = check_positive_int(overlap, "overlap", minimum=0)
    if S == 1 and overlap:
        raise ValueError("overlap has no effect with one subdomain")
    off = block_offsets(N, S)
    subs, labels = [], []
    for s in range(S):
        a, b = max(int(off[s]) - overlap, 0), min(int(off[s + 1]) + overlap, N)
        sl = net.layer_slice(a, b)
        parts = [np.arange(sl.start, sl.stop)]
        lab = [f"layers {a}..{b - 1}" if b - a > 1 else f"layer {a}"]
        if s == 0:
            parts.insert(0, np.arange(0, net.n_open))
            lab.insert(0, "opening layer")
        if s == S - 1:
            parts.append(np.arange(net.n_params - net.n_close, net.n_params))
            lab.append("closing layer")
        subs.append(np.concatenate(parts))
        labels.append(", ".join(lab))
    desc = "by layers" + (f", overlap {overlap} layer{'s' if overlap > 1 else ''}"
                          if overlap else "")
    return Decomposition(subs, net.n_params, overlap=overlap > 0, labels=labels,
                         description=desc)


def _is_conv(net):
    from mgnn.nets.conv import ConvResNet

    return isinstance(net, ConvResNet)


def _neuron_entries(net):
    """For each state neuron j (a channel of a ConvResNet), the indices of theta that
    belong to it, and those of b_close."""
    p = net.unpack(np.arange(net.n_params, dtype=np.float64))  # views of index values
    ents = []
    if _is_conv(net):  # channel j: output axis of the kernels (HWIO), closing columns
        c = net.channels
        for j in range(c):
            parts = [p.K_open[..., j].ravel(), p.b_open[j:j + 1], p.K[..., j].ravel(),
                     p.b[:, j], p.W_close[:, j::c].ravel()]
            ents.append(np.concatenate(parts).astype(np.int64))
        return ents, p.b_close.astype(np.int64)
    for j in range(net.width):
        parts = [p.W_open[j], p.b_open[j:j + 1], p.W[:, j, :].ravel(), p.b[:, j],
                 p.W_close[:, j]]
        ents.append(np.concatenate(parts).astype(np.int64))
    return ents, p.b_close.astype(np.int64)


def by_neurons(net, n_subdomains, theta=None, similarity="cosine"):
    """Groups of state neurons across all layers (the width structure).

    Neuron ``j`` owns row ``j`` of the opening layer (``W_open[j]``,
    ``b_open[j]``), row ``j`` of every residual layer (``W_n[j, :]``,
    ``b_n[j]``: its incoming weights and bias, the descriptor of
    :func:`~mgnn.multilevel.state_descriptors`) and column ``j`` of the
    closing weights (its outgoing weights); the closing bias goes with the
    last group. For a :class:`~mgnn.nets.ConvResNet` the neurons are the
    channels: channel ``j`` owns the output slices ``K_open[..., j]`` and
    ``K_n[..., j]`` of the kernels (HWIO: its incoming 3x3 kernels), the biases
    ``b_open[j]``, ``b_n[j]`` and the closing columns that read it (column ``j``
    with ``pooling='average'``, columns ``j, j + c, ...`` with ``'flatten'``).

    Parameters
    ----------
    net : ResNet or ConvResNet
    n_subdomains : int
        At most ``net.width`` (``net.channels``).
    theta : ndarray, optional
        Without it the groups are contiguous ranges of neurons. With it the
        neurons are paired by :func:`~mgnn.multilevel.match_neurons` on their
        descriptors (the pairing of neuron coarsening); each pair stays in one
        group, so the two similar (strongly coupled) neurons are solved for
        together, and pairs and singles are dealt to the groups in order.
    similarity : {'cosine', 'gaussian'}
        Similarity of the matching (with ``theta`` only).

    Examples
    --------
    >>> from mgnn.nets import ResNet
    >>> net = ResNet(2, 4, 3, 2)
    >>> d = by_neurons(net, 2)
    >>> d.sizes.tolist(), d.labels
    ([40, 42], ('neurons 0..1', 'neurons 2..3, closing bias'))
    >>> from mgnn.nets import ConvResNet
    >>> by_neurons(ConvResNet((3, 3), 4, 2, 2), 2).labels
    ('channels 0..1', 'channels 2..3, closing bias')
    """
    from mgnn.multilevel.width import state_neurons

    w = state_neurons(net)
    unit = "channel" if _is_conv(net) else "neuron"
    S = _check_count(n_subdomains, w, f"state {unit}s")
    ents, b_close = _neuron_entries(net)
    if theta is None:
        off = block_offsets(w, S)
        groups = [list(range(int(off[s]), int(off[s + 1]))) for s in range(S)]
        desc = f"by {unit}s, contiguous"
    else:
        from mgnn.multilevel.matching import match_neurons
        from mgnn.multilevel.width import state_descriptors

        m = match_neurons(state_descriptors(net, theta), similarity=similarity)
        units = [list(g) for g in m.groups()]  # in coarse order: pairs and singles
        if len(units) < S:
            raise ValueError(f"n_subdomains must be <= {len(units)} (the matched pairs and "
                             f"single {unit}s of this theta), got {S}")
        off = block_offsets(len(units), S)
        groups = [sorted(j for u in units[off[s]:off[s + 1]] for j in u) for s in range(S)]
        desc = f"by {unit}s, matched pairs kept together ({similarity})"
    subs, labels = [], []
    for s, g in enumerate(groups):
        parts = [ents[j] for j in g]
        lab = (f"{unit}s {g[0]}..{g[-1]}" if g == list(range(g[0], g[-1] + 1))
               else f"{unit}s " + ",".join(map(str, g)))
        if s == S - 1:
            parts.append(b_close)
            lab += ", closing bias"
        subs.append(np.concatenate(parts))
        labels.append(lab)
    return Decomposition(subs, net.n_params, labels=labels, description=desc)


def _tensors(net):
    """(name, start, stop) of every weight and bias tensor of ``net``, in layout order
    (a ConvResNet's kernels are named ``K``)."""
    p = net.unpack(np.arange(net.n_params, dtype=np.float64))  # views of index values
    K = "K" if _is_conv(net) else "W"
    span = lambda a: (int(a.min()), int(a.max()) + 1)  # noqa: E731  (contiguous tensors)
    out = [(f"{K}_open", *span(p.K_open if K == "K" else p.W_open)),
           ("b_open", *span(p.b_open))]
    Ws = p.K if K == "K" else p.W
    for n in range(net.depth):
        out += [(f"{K}_{n}", *span(Ws[n])), (f"b_{n}", *span(p.b[n]))]
    out += [("W_close", *span(p.W_close)), ("b_close", *span(p.b_close))]
    return out


def by_tensors(net, n_subdomains, rng):
    """The weight and bias tensors dealt out at random, disjoint, balanced by size.

    The ``2 depth + 4`` tensors (``W_open, b_open, W_0, b_0, ..., W_close,
    b_close``; ``K_open``, ``K_n`` for the kernels of a ConvResNet) are shuffled
    with ``rng`` and each is given, in that order, to the subdomain with the
    fewest parameters so far (ties: lowest index).

    Parameters
    ----------
    net : ResNet or ConvResNet
    n_subdomains : int
        At most the number of tensors.
    rng : int or numpy.random.Generator
        The draw (the same seed gives the same decomposition on every rank).

    Examples
    --------
    >>> from mgnn.nets import ResNet
    >>> d = by_tensors(ResNet(2, 4, 3, 2), 3, rng=0)
    >>> d.n_subdomains, int(d.sizes.sum()), d.description
    (3, 82, 'random tensors (seeded)')
    """
    tensors = _tensors(net)
    S = _check_count(n_subdomains, len(tensors), "weight and bias tensors")
    if rng is None:
        raise ValueError("rng is required (an int seed or a Generator): every rank must draw "
                         "the same decomposition")
    gen = np.random.default_rng(rng)
    order = gen.permutation(len(tensors))
    load = np.zeros(S, dtype=np.int64)
    owned = [[] for _ in range(S)]
    # the S largest first would be greedy-optimal; random order keeps the draw random
    for t in order:
        name, a, b = tensors[t]
        s = int(np.argmin(load))
        owned[s].append(t)
        load[s] += b - a
    subs, labels = [], []
    for s in range(S):
        ts = sorted(owned[s])
        if not ts:  # pragma: no cover - S <= number of tensors guarantees one each
            raise ValueError("a subdomain received no tensor")
        subs.append(np.concatenate([np.arange(tensors[t][1], tensors[t][2]) for t in ts]))
        names = [tensors[t][0] for t in ts]
        labels.append(", ".join(names) if len(names) <= 4 else
                      ", ".join(names[:3]) + f", ... ({len(names)} tensors)")
    return Decomposition(subs, net.n_params, labels=labels,
                         description="random tensors (seeded)")


def by_data(n_samples, n_subdomains, overlap=0.0, X=None, axis=0):
    """Blocks of samples (or collocation points), optionally overlapping.

    Parameters
    ----------
    n_samples : int or objective
        Number of samples, or an objective with ``n_samples`` (its ``X`` is
        then used when ``X`` is the string ``'objective'``).
    n_subdomains : int
        At most ``n_samples``.
    overlap : float in [0, 1), default 0
        Each block also owns ``round(overlap * block size)`` neighbouring
        samples on either side (in the order below).
    X : (n_samples, d) array, optional
        Inputs or collocation points: the samples are ordered by ``X[:, axis]``
        (a spatial split into slabs, as APTS_PINN splits its interval)
        before being cut into blocks; without ``X``, by index.
    axis : int, default 0
        Coordinate of ``X`` that orders the samples.

    Examples
    --------
    >>> import numpy as np
    >>> d = by_data(10, 2, overlap=0.2)
    >>> [s.tolist() for s in d.subdomains]
    [[0, 1, 2, 3, 4, 5], [4, 5, 6, 7, 8, 9]]
    >>> d.data_weights.tolist()
    [0.5, 0.5]
    >>> X = np.array([[3.0], [1.0], [2.0], [0.0]])
    >>> [s.tolist() for s in by_data(4, 2, X=X).subdomains]
    [[1, 3], [0, 2]]
    """
    if not isinstance(n_samples, (int, np.integer)):
        obj = n_samples
        n_samples = getattr(obj, "n_samples", None)
        if n_samples is None:
            raise TypeError("n_samples must be an int or an objective with n_samples")
        if isinstance(X, str) and X == "objective":
            X = getattr(obj, "X", None)
            if X is None:
                raise ValueError("X='objective' needs an objective with an X attribute")
    n = check_positive_int(n_samples, "n_samples")
    S = _check_count(n_subdomains, n, "samples")
    overlap = check_scalar(overlap, "overlap", low=0.0, high=1.0, high_open=True)
    if S == 1 and overlap:
        raise ValueError("overlap has no effect with one subdomain")
    if X is None:
        order = np.arange(n)
        desc = "by data, index blocks"
    else:
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[0] != n:
            raise ValueError(f"X must have shape ({n}, d), got {X.shape}")
        axis = check_positive_int(axis, "axis", minimum=0)
        if axis >= X.shape[1]:
            raise ValueError(f"axis must be < {X.shape[1]} (the columns of X), got {axis}")
        order = np.argsort(X[:, axis], kind="stable")
        desc = f"by data, slabs along x[{axis}]"
    off = block_offsets(n, S)
    subs, labels = [], []
    for s in range(S):
        a, b = int(off[s]), int(off[s + 1])
        k = int(round(overlap * (b - a)))
        a2, b2 = max(a - k, 0), min(b + k, n)
        subs.append(order[a2:b2])
        labels.append(f"samples {a2}..{b2 - 1}" + (" (in order)" if X is not None else ""))
    if overlap:
        desc += f", overlap {overlap:g}"
    return Decomposition(subs, n, "data", overlap=overlap > 0, labels=labels, description=desc)
