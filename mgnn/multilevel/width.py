r"""Coarsening in width: pair similar neurons of the residual state (MTNN).

Following Ponce, Li et al. ("Multilevel-in-width training for deep neural network
regression"), a coarse network is built by pairing similar neurons
(:func:`~mgnn.multilevel.matching.match_neurons`) and merging each pair into one.

**One pairing for the state.** In a ResNet the residual state u (the width) is
carried by the skip connections through every layer, so neuron j is the same
state component in the opening layer's output, in every residual layer's input
and output, and in the closing layer's input. The transfer therefore uses *one*
pairing of the w state neurons for all blocks. Neuron j is described by its
incoming weights and bias in every layer that writes the state, each layer's block
divided by that layer's Frobenius norm (so no layer dominates by scale alone,
and a neuron whose rows are all scaled by one factor keeps a collinear
descriptor)::

    d_j = [ (W_open[j], b_open[j]) / |(W_open, b_open)|_F ,
            (W_0[j, :], b_0[j])     / |(W_0, b_0)|_F , ... ,
            (W_{N-1}[j, :], b_{N-1}[j]) / |(W_{N-1}, b_{N-1})|_F ]

(layers whose block is zero contribute zeros). The output layer is never coarsened.

**State-space operators.** With the coarse neuron c(j) of each fine neuron and
its share s_j = |d_j| / sum over its group |d_k| (shares sum to 1 per group):

* R_s (w_c x w): (R_s)_{c j} = 1 if c = c(j) -- sums a pair;
* P_s (w x w_c): (P_s)_{j c} = s_j if c = c(j) -- splits by weight-norm shares;

so R_s P_s = I.

**Parameter-space operators** (what a :class:`~mgnn.multilevel.Transfer` holds),
block by block of theta:

=============  ===========================  ==========================  =======================
block          Pi (iterates, fine->coarse)  P (prolongation)            R = P^T (gradients)
=============  ===========================  ==========================  =======================
W_open, b_open R_s W_open, R_s b_open       P_s W_open^c, P_s b_open^c  P_s^T G_open, P_s^T g
W_n            R_s W_n P_s                  P_s W_n^c R_s               P_s^T G_n R_s^T
b_n            R_s b_n                      P_s b_n^c                   P_s^T g_n
W_close        W_close P_s                  W_close^c R_s               G_close R_s^T
b_close        b_close                      b_close^c                   g_close
=============  ===========================  ==========================  =======================

Pi is the coarsening of the issue (``W_c = R W P``: incoming weights summed,
outgoing weights averaged with the shares); P puts the coarse network back into the
fine space by splitting incoming weights with the shares and copying outgoing
ones; Pi P = I. R is the Euclidean adjoint of P, so grad(f o P) = R grad f
exactly and the tau-correction of :func:`~mgnn.multilevel.mgopt` makes the coarse
gradient at Pi theta equal R grad f(theta) (first-order coherence).

**Exactness.** If u = P_s u_c then W_n u + b_n = P_s (W_n^c u_c + b_n^c) for the
prolonged weights, and for a positively homogeneous activation (ReLU, identity)
sigma(s_j z) = s_j sigma(z) with s_j >= 0: the prolonged network computes the same
outputs as the coarse one, i.e. f(P x_c) = f_c(x_c) for the loss (the regularisers
are not invariant). Conversely, a fine network whose state neurons come in
positively collinear pairs (rows of every state-writing layer proportional with
the same factor) is reproduced exactly by its coarse network Pi theta. For tanh the
operators are the same but these identities hold only to first order in the
pair's difference.

**Convolutional networks.** For a :class:`~mgnn.nets.ConvResNet` the state neurons
are the c channels: a channel is one state component at every pixel, and a 3x3
convolution mixes channels by the same c x c matrix at each of its nine offsets.
Channel j is described by its incoming kernel entries ``K[:, :, :, j]`` (9 C_in or
9 c numbers) and bias, layer by layer as above, and the table applies with the
channel axes of the kernels (HWIO: ``R_s`` / ``P_s`` on the output axis, ``P_s^T``
/ ``R_s^T`` on the input axis, the same at all nine offsets) and of the closing
layer's input (the c channel means with ``pooling='average'``; the channel axis
of each pixel's block with ``pooling='flatten'``). Convolution acts per pixel
linearly in the channels, so the exactness statements hold unchanged.
"""

from __future__ import annotations

import numpy as np

from mgnn._validation import check_choice, check_positive_int
from mgnn.backend import get_namespace, to_host
from mgnn.multilevel.depth import INTERPOLATIONS, DepthTransfer
from mgnn.multilevel.hierarchy import Hierarchy, Level, Transfer
from mgnn.multilevel.matching import (
    NeuronMatching,
    match_neurons,
    weight_norm_shares,
)

COARSENINGS = ("width", "depth", "both")


def _is_conv(net):
    from mgnn.nets.conv import ConvResNet

    return isinstance(net, ConvResNet)


def state_neurons(net):
    """Number of state neurons a width transfer pairs: ``net.width`` for a ResNet,
    ``net.channels`` for a :class:`~mgnn.nets.ConvResNet` (a channel is one neuron
    shared by every pixel)."""
    return net.channels if _is_conv(net) else net.width


def _with_neurons(net, n):
    return net.with_channels(n) if _is_conv(net) else net.with_width(n)


def state_descriptors(net, theta):
    """Descriptors of the state neurons (:func:`state_neurons`): (neurons, d) array
    (module docstring; for a ConvResNet a channel's incoming weights are its
    ``3 x 3 x C_in`` kernel entries).

    Always a NumPy array: the matching is a small sequential computation done on
    the host, so device parameters are copied to the host once per (re)match.

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.nets import ResNet
    >>> net = ResNet(2, 4, 3, 1)
    >>> state_descriptors(net, net.init(0)).shape   # (2 + 1) + 3 * (4 + 1) columns
    (4, 18)
    >>> from mgnn.nets import ConvResNet
    >>> conv = ConvResNet((4, 4), 3, 2, 2)          # (9 + 1) + 2 * (27 + 1) columns
    >>> state_descriptors(conv, conv.init(0)).shape
    (3, 66)
    """
    theta = to_host(net.check_theta(theta))  # the pairing is computed on the host
    p = net.unpack(theta)
    if _is_conv(net):  # channel j: its 3x3xC_in kernel column (incoming weights) and bias
        c = net.channels
        blocks = [np.concatenate([p.K_open.reshape(-1, c).T, p.b_open[:, None]], axis=1)]
        blocks += [np.concatenate([p.K[n].reshape(-1, c).T, p.b[n][:, None]], axis=1)
                   for n in range(net.depth)]
    else:
        blocks = [np.concatenate([p.W_open, p.b_open[:, None]], axis=1)]
        blocks += [np.concatenate([p.W[n], p.b[n][:, None]], axis=1) for n in range(net.depth)]
    out = []
    for B in blocks:
        B = np.asarray(B, dtype=np.float64)
        nrm = np.linalg.norm(B)
        out.append(B / nrm if nrm > 0 else np.zeros_like(B))
    return np.concatenate(out, axis=1)


class WidthTransfer(Transfer):
    """Transfer between a ResNet of width w and one of width w_c by a neuron pairing.

    Parameters
    ----------
    fine_net, coarse_net : ResNet
        Networks equal in everything but the width.
    coarse_of : (w,) int array
        Coarse neuron of each fine state neuron (every coarse index used).
    shares : (w,) float array
        Share s_j >= 0 of each fine neuron in its group; shares sum to 1 per group.
    matching : NeuronMatching, optional
        The matching the pairing came from (kept for ``repr`` and re-matching).

    Notes
    -----
    The operators, block by block, are in the module docstring; everything is
    matrix-free (gathers and segment sums on the views of :meth:`ResNet.unpack`).

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.nets import ResNet
    >>> fine = ResNet(1, 3, 2, 1, activation="relu")
    >>> T = WidthTransfer(fine, fine.with_width(2), [0, 1, 0], [0.25, 1.0, 0.75])
    >>> T
    WidthTransfer(width 3 -> 2: 1 pairs, 1 single)
    >>> xc = np.random.default_rng(0).standard_normal(T.n_coarse)
    >>> bool(np.allclose(T.project(T.prolong(xc)), xc))
    True
    >>> X = np.linspace(-1, 1, 5)[:, None]
    >>> bool(np.allclose(fine.forward(T.prolong(xc), X), T.coarse.forward(xc, X)))
    True
    """

    def __init__(self, fine_net, coarse_net, coarse_of, shares, matching=None):
        coarse_of = np.asarray(coarse_of)
        shares = np.asarray(shares, dtype=np.float64)
        self.conv = _is_conv(fine_net)
        if self.conv != _is_conv(coarse_net):
            raise ValueError("width transfer needs two networks of the same kind: "
                             f"{fine_net!r} vs {coarse_net!r}")
        w, wc = state_neurons(fine_net), state_neurons(coarse_net)
        if coarse_of.shape != (w,) or coarse_of.dtype.kind not in "iu":
            raise ValueError(f"coarse_of must be an integer array of shape ({w},), got "
                             f"{coarse_of.dtype} {coarse_of.shape}")
        if shares.shape != (w,):
            raise ValueError(f"shares must have shape ({w},), got {shares.shape}")
        keys = ("n_in", "depth", "n_out", "T", "activation", "task", "opening_activation",
                "dtype") + (("image_shape", "pooling") if self.conv else ())
        if any(getattr(fine_net, k) != getattr(coarse_net, k) for k in keys):
            raise ValueError("width transfer needs networks that differ only in width: "
                             f"{fine_net!r} vs {coarse_net!r}")
        if w and (coarse_of.min() < 0 or coarse_of.max() >= wc
                  or np.bincount(coarse_of, minlength=wc).min() == 0):
            raise ValueError(f"coarse_of must map onto every coarse neuron 0..{wc - 1}")
        if not np.all(np.isfinite(shares)) or shares.min() < 0:
            raise ValueError("shares must be finite and >= 0")
        sums = np.bincount(coarse_of, weights=shares, minlength=wc)
        if not np.allclose(sums, 1.0, rtol=0, atol=1e-12):
            raise ValueError("shares must sum to 1 over every group of coarse_of "
                             f"(worst sum {sums[np.argmax(abs(sums - 1))]:.17g})")
        self.fine, self.coarse = fine_net, coarse_net
        self.neurons, self.coarse_neurons = w, wc
        self.n_fine, self.n_coarse = fine_net.n_params, coarse_net.n_params
        self.coarse_of = coarse_of.astype(np.int64)
        self.shares = shares
        self.matching = matching
        self._order = np.argsort(self.coarse_of, kind="stable")
        self._starts = np.searchsorted(self.coarse_of[self._order], np.arange(wc))
        self._index = {"numpy": (self._order, self._starts, self.coarse_of, self.shares)}

    def _arrays(self, X):
        """``(order, starts, coarse_of, shares)`` in the namespace of ``X`` (copied once)."""
        xp = get_namespace(X)
        a = self._index.get(xp.__name__)
        if a is None:
            a = self._index[xp.__name__] = tuple(xp.asarray(v) for v in self._index["numpy"])
        return xp, a

    # state-space operators along one axis ---------------------------------
    def _sum(self, X, axis):
        """R_s along ``axis`` (sum each group)."""
        xp, (order, starts, _, _) = self._arrays(X)
        return xp.add.reduceat(xp.take(X, order, axis=axis), starts, axis=axis)

    def _shape(self, axis, ndim, shares):
        s = [1] * ndim
        s[axis] = -1
        return shares.reshape(s)

    def _avg(self, X, axis):
        """P_s^T along ``axis`` (share-weighted sum of each group)."""
        shares = self._arrays(X)[1][3]
        return self._sum(X * self._shape(axis, X.ndim, shares), axis)

    def _split(self, Y, axis):
        """P_s along ``axis`` (coarse value times the share)."""
        xp, (_, _, coarse_of, shares) = self._arrays(Y)
        return xp.take(Y, coarse_of, axis=axis) * self._shape(axis, Y.ndim, shares)

    def _copy(self, Y, axis):
        """R_s^T along ``axis`` (coarse value copied to the group)."""
        xp, (_, _, coarse_of, _) = self._arrays(Y)
        return xp.take(Y, coarse_of, axis=axis)

    def _apply(self, x, src, dst, ops):
        self._check(x, src.n_params, "x")
        out = get_namespace(x).empty(dst.n_params, dtype=x.dtype)
        a, b = src.unpack(x), dst.unpack(out)
        o_rows, r_rows, r_cols, c_cols = ops
        if self.conv:  # kernels HWIO: the output channel is axis 3 (opening), 4 (residual)
            b.K_open[...] = o_rows(a.K_open, 3)
            b.b_open[...] = o_rows(a.b_open, 0)
            b.K[...] = r_rows(r_cols(a.K, 3), 4)
            b.b[...] = r_rows(a.b, 1)
            if src.pooling == "average":  # features: the channel means
                b.W_close[...] = c_cols(a.W_close, 1)
            else:  # features: pixel-major, channel-last
                m = src.n_out
                b.W_close.reshape(m, dst.n_pixels, -1)[...] = c_cols(
                    a.W_close.reshape(m, src.n_pixels, -1), 2)
            b.b_close[...] = a.b_close
            return out
        b.W_open[...] = o_rows(a.W_open, 0)
        b.b_open[...] = o_rows(a.b_open, 0)
        b.W[...] = r_rows(r_cols(a.W, 2), 1)
        b.b[...] = r_rows(a.b, 1)
        b.W_close[...] = c_cols(a.W_close, 1)
        b.b_close[...] = a.b_close
        return out

    def project(self, x_fine):
        """Pi: coarse network from a fine one (incoming summed, outgoing averaged)."""
        return self._apply(x_fine, self.fine, self.coarse,
                           (self._sum, self._sum, self._avg, self._avg))

    def prolong(self, x_coarse):
        """P: fine network from a coarse one (incoming split by shares, outgoing copied)."""
        return self._apply(x_coarse, self.coarse, self.fine,
                           (self._split, self._split, self._copy, self._copy))

    def restrict(self, g_fine):
        """R = P^T: restriction of gradients (and gradient-like optimizer state)."""
        return self._apply(g_fine, self.fine, self.coarse,
                           (self._avg, self._avg, self._sum, self._sum))

    def description(self):
        what = "channel" if self.conv else "width"
        return (f"{what} coarsening {self.neurons} -> {self.coarse_neurons}"
                + (f", {self.matching.similarity} matching" if self.matching else ""))

    def __repr__(self):
        npairs = self.neurons - self.coarse_neurons
        nsingle = self.coarse_neurons - npairs
        what = "channels" if self.conv else "width"
        return (f"WidthTransfer({what} {self.neurons} -> {self.coarse_neurons}: {npairs} pairs, "
                f"{nsingle} single)")


class ComposedTransfer(Transfer):
    """Two transfers in sequence (fine -> mid -> coarse): P = P1 P2, R = R2 R1, Pi = Pi2 Pi1.

    Used for a level pair that coarsens in depth and width at once.
    """

    def __init__(self, first, second):
        if first.n_coarse != second.n_fine:
            raise ValueError("the first transfer's coarse space must be the second's fine space")
        self.first, self.second = first, second
        self.n_fine, self.n_coarse = first.n_fine, second.n_coarse

    def prolong(self, x_coarse):
        return self.first.prolong(self.second.prolong(x_coarse))

    def restrict(self, g_fine):
        return self.second.restrict(self.first.restrict(g_fine))

    def project(self, x_fine):
        return self.second.project(self.first.project(x_fine))

    def description(self):
        return f"{self.first.description()}, then {self.second.description()}"

    def __repr__(self):
        return f"ComposedTransfer({self.first!r}, {self.second!r})"


def _width_transfer(net, theta, match_options, max_pairs=None):
    D = state_descriptors(net, theta)
    m = match_neurons(D, max_pairs=max_pairs, **match_options)
    n = state_neurons(net)
    if m.coarse_width == n:
        what = "channel" if _is_conv(net) else "neuron"
        raise ValueError(f"no {what} pair found in a network of {n} {what}s "
                         f"(threshold={match_options.get('threshold')}): cannot coarsen")
    shares = weight_norm_shares(D, m.coarse_of)
    return WidthTransfer(net, _with_neurons(net, m.coarse_width), m.coarse_of, shares, m)


class WidthHierarchy(Hierarchy):
    """A :class:`Hierarchy` built by :func:`width_hierarchy`; it can re-match its pairs.

    Attributes
    ----------
    matchings : list of NeuronMatching or None
        The matching of each level pair (None for a depth-only pair).
    """

    def __init__(self, levels, description, builder):
        super().__init__(levels, description)
        self._builder = builder
        self.matchings = []
        for lvl in self.levels[:-1]:
            t = lvl.transfer
            t = t.second if isinstance(t, ComposedTransfer) else t
            self.matchings.append(t.matching if isinstance(t, WidthTransfer) else None)

    def rematch(self, theta):
        """A new hierarchy whose pairings are computed from the fine iterate ``theta``.

        The level-0 objective is kept (the same object); coarser levels get new
        networks and objectives when their width changes.
        """
        return self._builder(theta)


def width_hierarchy(model, theta, levels, *, similarity="cosine", threshold=None,
                    bandwidth=None, max_rounds=None, coarsen="width", depth_factor=2,
                    interpolation="constant"):
    """Build a hierarchy by pairing similar state neurons of a ResNet (and, optionally, layers).

    Parameters
    ----------
    model : ResNet, ConvResNet or Objective
        The finest network (a ConvResNet pairs channels), or an objective on it
        (then every level gets ``objective.with_net(coarse_net)``: same data, work
        charged by flop ratio).
    theta : ndarray
        Fine parameters: the neuron descriptors, hence the pairing, come from them;
        coarser levels are matched on the projected parameters Pi theta.
    levels : int
        Number of levels (1 = the fine network alone).
    similarity : {'cosine', 'gaussian'}
        Neuron similarity (:func:`~mgnn.multilevel.matching.match_neurons`).
    threshold : float, optional
        Pair only neurons at least this similar (default: pair all, width halves).
    bandwidth : float, optional
        Gaussian kernel bandwidth.
    max_rounds : int, optional
        Cap on the number of matching rounds.
    coarsen : {'width', 'depth', 'both'} or list of them
        What each level pair coarsens, fine to coarse (a list's last entry
        repeats): pairs of neurons, every ``depth_factor``-th layer
        (:class:`~mgnn.multilevel.DepthTransfer`), or both at once
        (:class:`ComposedTransfer`: depth first, then width).
    depth_factor, interpolation
        Options of the depth steps.

    Returns
    -------
    WidthHierarchy
        A :class:`Hierarchy`; its ``rematch(theta)`` rebuilds it from new parameters.

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.nets import ResNet
    >>> net = ResNet(2, 16, 4, 1, activation="relu", task="regression")
    >>> H = width_hierarchy(net, net.init(0), levels=3)
    >>> H  # doctest: +NORMALIZE_WHITESPACE
    Hierarchy of 3 levels (width coarsening, cosine matching)
     level  layers  width  h          parameters  work (fine = 1)
         0       4     16  0.25             1153            1.000
         1       4      8  0.25              321            0.259
         2       4      4  0.25               97            0.069
    cycle complexity (V-cycle, 1 visit per level): 1.328
    >>> H.matchings[0]  # doctest: +ELLIPSIS
    NeuronMatching(16 -> 8 neurons: 8 pairs, 0 single; cosine, ... rounds, ...)
    >>> Hd = width_hierarchy(net, net.init(0), 2, coarsen="both")
    >>> [(lv.net.depth, lv.net.width) for lv in Hd.levels]
    [(4, 16), (2, 8)]
    """
    from mgnn.objective import Objective

    levels = check_positive_int(levels, "levels")
    objective = model if isinstance(model, Objective) else None
    net = objective.net if objective is not None else model
    theta = net.check_theta(theta, "theta")
    steps = list(coarsen) if isinstance(coarsen, (list, tuple)) else [coarsen]
    if not steps:
        raise ValueError("coarsen must not be an empty list")
    for s in steps:
        check_choice(s, "coarsen", COARSENINGS)
    if len(steps) > max(levels - 1, 1):
        raise ValueError(f"coarsen has {len(steps)} entries for {levels - 1} level pairs")
    steps = (steps + [steps[-1]] * levels)[: levels - 1]
    depth_factor = check_positive_int(depth_factor, "depth_factor", minimum=2)
    check_choice(interpolation, "interpolation", INTERPOLATIONS)
    match_options = dict(similarity=similarity, threshold=threshold, bandwidth=bandwidth,
                         max_rounds=max_rounds)

    nets, transfers = [net], []
    x = theta
    for step in steps:
        fine = nets[-1]
        parts = []
        if step in ("depth", "both"):
            if fine.depth % depth_factor:
                raise ValueError(f"coarsen={step!r} needs a depth divisible by {depth_factor}; "
                                 f"level {len(nets) - 1} has depth {fine.depth}")
            mid = fine.with_depth(fine.depth // depth_factor)
            parts.append(DepthTransfer(fine, mid, interpolation))
            x = parts[-1].project(x)
        if step in ("width", "both"):
            cur = parts[-1].coarse if parts else fine
            if state_neurons(cur) < 2:
                what = (f"{cur.channels} channel" if _is_conv(cur) else f"width {cur.width}")
                raise ValueError(f"level {len(nets)} would coarsen a network of {what}: "
                                 f"at most {len(nets)} width levels")
            parts.append(_width_transfer(cur, x, match_options))
            x = parts[-1].project(x)
        t = parts[0] if len(parts) == 1 else ComposedTransfer(*parts)
        transfers.append(t)
        nets.append(parts[-1].coarse)

    objs = [objective] + [None] * (levels - 1)
    if objective is not None:
        objs[1:] = [objective.with_net(n) for n in nets[1:]]
    lv = [Level(nets[l], objs[l], transfers[l] if l < levels - 1 else None)
          for l in range(levels)]
    kinds = sorted(set(steps), key=COARSENINGS.index)
    desc = ("fine level only" if not steps else
            " / ".join(f"{k} coarsening" for k in kinds) + f", {similarity} matching")

    def builder(new_theta):
        return width_hierarchy(model, new_theta, levels, similarity=similarity,
                               threshold=threshold, bandwidth=bandwidth, max_rounds=max_rounds,
                               coarsen=coarsen, depth_factor=depth_factor,
                               interpolation=interpolation)

    return WidthHierarchy(lv, desc, builder)


__all__ = ["ComposedTransfer", "NeuronMatching", "WidthHierarchy", "WidthTransfer",
           "state_descriptors", "state_neurons", "width_hierarchy"]
