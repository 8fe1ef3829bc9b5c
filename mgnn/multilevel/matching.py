"""Neuron matching: pair similar neurons (algebraic-multigrid-style coarsening in width).

Each neuron is described by a vector (its incoming weights and bias; see
:func:`mgnn.multilevel.width.state_descriptors` for the ResNet state). Two
neurons are compared by

``'cosine'`` (default)
    S_ij = <d_i, d_j> / (|d_i| |d_j|) in [-1, 1] (0 when a descriptor is zero);
``'gaussian'``
    S_ij = exp(-|d_i - d_j|^2 / (2 sigma^2)) in (0, 1], with ``bandwidth`` sigma
    (default: the median distance between distinct neurons).

The pairing is a *mutual best match*, repeated in rounds: in each round every
unmatched neuron points at its most similar unmatched neuron (among those whose
similarity is >= ``threshold``); pairs that point at each other are matched. The
rounds stop when no mutual pair is left (or after ``max_rounds`` rounds, or when
``max_pairs`` pairs exist); the neurons left over stay single. Each round matches
at least the globally most similar remaining pair, so without a threshold all
but at most one neuron end up paired and the width halves (rounded up).

Cost: the similarity matrix is O(n^2 d) for n neurons with d-dimensional
descriptors, computed once; round k costs O(m_k^2) for the m_k neurons still
unmatched (a copy and an ``argmax`` of the sub-matrix). On generic weights a
round matches a fixed fraction of the remaining neurons, so a handful of rounds
suffice; the worst case (a chain of strictly ordered similarities) needs n/2
rounds, which ``max_rounds`` caps.

Determinism and permutation invariance: ties in ``argmax`` go to the smallest
index, so the result is a deterministic function of the descriptors. Permuting
the neurons permutes the pairs in the same way whenever the similarities of
each neuron's candidates are distinct (always, up to a set of measure zero).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mgnn._validation import check_array, check_choice, check_positive_int, check_scalar

SIMILARITIES = ("cosine", "gaussian")


@dataclass(frozen=True)
class NeuronMatching:
    """Result of :func:`match_neurons`: a partition of n neurons into pairs and singles.

    Attributes
    ----------
    coarse_of : (n,) int array
        Coarse neuron of each fine neuron. Coarse neurons are numbered by the
        smallest fine index of their group, so the order is deterministic.
    pairs : (k, 2) int array
        Matched pairs (i < j), in the order of their coarse neurons.
    pair_similarity : (k,) float array
        Similarity of each pair.
    singles : (n - 2k,) int array
        Unmatched neurons.
    rounds : int
        Matching rounds that produced at least one pair.
    similarity : str
        The similarity measure used.
    """

    coarse_of: np.ndarray
    pairs: np.ndarray
    pair_similarity: np.ndarray
    singles: np.ndarray
    rounds: int
    similarity: str

    @property
    def width(self):
        """Number of fine neurons."""
        return int(self.coarse_of.shape[0])

    @property
    def coarse_width(self):
        """Number of coarse neurons (pairs + singles)."""
        return int(self.pairs.shape[0] + self.singles.shape[0])

    def groups(self):
        """Fine neurons of each coarse neuron, as a list of int arrays."""
        order = np.argsort(self.coarse_of, kind="stable")
        starts = np.searchsorted(self.coarse_of[order], np.arange(self.coarse_width))
        return np.split(order, starts[1:])

    def __repr__(self):
        k = self.pairs.shape[0]
        sim = (f", pair similarity min {self.pair_similarity.min():.4g} "
               f"median {np.median(self.pair_similarity):.4g}") if k else ""
        return (f"NeuronMatching({self.width} -> {self.coarse_width} neurons: {k} pairs, "
                f"{self.singles.shape[0]} single; {self.similarity}, {self.rounds} rounds{sim})")


def similarity_matrix(descriptors, similarity="cosine", bandwidth=None):
    """Symmetric (n, n) similarity of the rows of ``descriptors`` (see module docstring).

    Examples
    --------
    >>> import numpy as np
    >>> D = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    >>> similarity_matrix(D)
    array([[1., 1., 0.],
           [1., 1., 0.],
           [0., 0., 1.]])
    """
    D = check_array(descriptors, "descriptors", ndim=2)
    check_choice(similarity, "similarity", SIMILARITIES)
    D = np.asarray(D, dtype=np.float64)
    if similarity == "cosine":
        if bandwidth is not None:
            raise ValueError("bandwidth is only used with similarity='gaussian'")
        norms = np.linalg.norm(D, axis=1)
        Dn = np.divide(D, norms[:, None], out=np.zeros_like(D), where=norms[:, None] > 0)
        S = Dn @ Dn.T
        np.clip(S, -1.0, 1.0, out=S)
        return S
    sq = np.einsum("ij,ij->i", D, D)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (D @ D.T)
    np.maximum(d2, 0.0, out=d2)
    np.fill_diagonal(d2, 0.0)
    if bandwidth is None:
        n = D.shape[0]
        off = np.sqrt(d2[np.triu_indices(n, 1)])
        sigma = float(np.median(off)) if off.size else 1.0
        if sigma == 0.0:
            sigma = 1.0
    else:
        sigma = check_scalar(bandwidth, "bandwidth", low=0.0, low_open=True)
    return np.exp(-d2 / (2.0 * sigma * sigma))


def match_neurons(descriptors, similarity="cosine", threshold=None, bandwidth=None,
                  max_pairs=None, max_rounds=None):
    """Pair neurons by repeated mutual best match (see module docstring).

    Parameters
    ----------
    descriptors : (n, d) float array
        One row per neuron (e.g. its incoming weights and bias).
    similarity : {'cosine', 'gaussian'}
        Similarity measure.
    threshold : float, optional
        Only pairs with similarity >= ``threshold`` are matched (default: any).
    bandwidth : float, optional
        Bandwidth sigma of the Gaussian kernel (default: median distance).
    max_pairs : int, optional
        At most this many pairs (the most similar mutual pairs are taken first).
    max_rounds : int, optional
        At most this many matching rounds.

    Returns
    -------
    NeuronMatching

    Examples
    --------
    >>> import numpy as np
    >>> D = np.array([[1.0, 0.1], [0.0, 1.0], [2.0, 0.2], [0.1, 3.0], [-1.0, 0.0]])
    >>> m = match_neurons(D)
    >>> m  # doctest: +NORMALIZE_WHITESPACE
    NeuronMatching(5 -> 3 neurons: 2 pairs, 1 single; cosine, 1 rounds,
                   pair similarity min 0.9994 median 0.9997)
    >>> m.pairs.tolist(), m.singles.tolist(), m.coarse_of.tolist()
    ([[0, 2], [1, 3]], [4], [0, 1, 0, 1, 2])
    """
    S = similarity_matrix(descriptors, similarity, bandwidth)
    n = S.shape[0]
    if threshold is not None:
        threshold = check_scalar(threshold, "threshold")
    if max_pairs is not None:
        max_pairs = check_positive_int(max_pairs, "max_pairs", minimum=0)
    if max_rounds is not None:
        max_rounds = check_positive_int(max_rounds, "max_rounds", minimum=0)
    budget = n // 2 if max_pairs is None else min(max_pairs, n // 2)
    S = S.copy()
    np.fill_diagonal(S, -np.inf)
    if threshold is not None:
        S[S < threshold] = -np.inf
    partner = np.full(n, -1, dtype=np.int64)
    sim_of = np.zeros(n)
    free = np.arange(n)
    rounds = 0
    n_pairs = 0
    while free.size >= 2 and n_pairs < budget and (max_rounds is None or rounds < max_rounds):
        sub = S[np.ix_(free, free)]
        best = np.argmax(sub, axis=1)
        m = free.size
        val = sub[np.arange(m), best]
        idx = np.arange(m)
        mutual = np.isfinite(val) & (best[best] == idx) & (idx < best)
        cand = np.flatnonzero(mutual)
        if cand.size == 0:
            break
        if cand.size > budget - n_pairs:
            order = np.lexsort((cand, -val[cand]))  # most similar first, then by index
            cand = cand[order[: budget - n_pairs]]
        i, j = free[cand], free[best[cand]]
        partner[i], partner[j] = j, i
        sim_of[i] = sim_of[j] = val[cand]
        n_pairs += cand.size
        rounds += 1
        free = free[partner[free] < 0]
    # coarse numbering by the smallest fine index of each group
    lead = np.where(partner >= 0, np.minimum(np.arange(n), partner), np.arange(n))
    leaders = np.flatnonzero(lead == np.arange(n))
    number = np.empty(n, dtype=np.int64)
    number[leaders] = np.arange(leaders.size)
    coarse_of = number[lead]
    paired = leaders[partner[leaders] >= 0]
    pairs = np.stack([paired, partner[paired]], axis=1) if paired.size else np.empty(
        (0, 2), dtype=np.int64)
    singles = leaders[partner[leaders] < 0]
    return NeuronMatching(coarse_of, pairs, sim_of[paired], singles, rounds, similarity)


def weight_norm_shares(descriptors, coarse_of):
    """Share of each neuron in its group: |d_j| / sum over the group of |d_k|.

    Shares are positive and sum to one over every group (a group whose
    descriptors are all zero splits equally), so the splitting prolongation P_s
    and the summing restriction R_s satisfy R_s P_s = I.

    Examples
    --------
    >>> import numpy as np
    >>> weight_norm_shares(np.array([[3.0], [1.0], [0.0]]), np.array([0, 0, 1])).tolist()
    [0.75, 0.25, 1.0]
    """
    D = check_array(descriptors, "descriptors", ndim=2)
    coarse_of = np.asarray(coarse_of)
    norms = np.linalg.norm(D, axis=1)
    nc = int(coarse_of.max()) + 1 if coarse_of.size else 0
    total = np.bincount(coarse_of, weights=norms, minlength=nc)
    size = np.bincount(coarse_of, minlength=nc)
    t = total[coarse_of]
    return np.where(t > 0, norms / np.where(t > 0, t, 1.0), 1.0 / size[coarse_of])
