"""Coarsening in depth: every ``factor``-th layer, step size times ``factor``.

A ResNet of N residual layers on [0, T] is the forward-Euler discretisation of an
ODE whose weights are functions of time. The coarse network has N/c layers of step
c h over the same [0, T]; its layer n sits at the fine layer c n. Opening and
closing layers are shared (copied unchanged).

Interpolation of the residual blocks theta_n = [W_n, b_n] (Cyr, Guenther, Schroder),
for the fine layers k = c n + j, j = 0..c-1:

``'constant'``
    theta_k = theta^c_n (piecewise constant in time).
``'linear'``
    theta_k = (1 - j/c) theta^c_n + (j/c) theta^c_{n+1} (linear in time); on the last
    coarse interval, which has no right neighbour, theta_k = theta^c_{N_c - 1}
    (constant extrapolation: the weight function is not defined beyond T - c h).

Projection of iterates is injection, theta^c_n = theta_{c n}, so Pi P = I for both.
Restriction is R = P^T.
"""

from __future__ import annotations

import numpy as np

from mgnn._validation import check_choice, check_positive_int
from mgnn.backend import get_namespace
from mgnn.multilevel.hierarchy import Hierarchy, Level, Transfer

INTERPOLATIONS = ("constant", "linear")


class DepthTransfer(Transfer):
    """Transfer between a ResNet of depth ``c * Nc`` and one of depth ``Nc``.

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.nets import ResNet
    >>> fine = ResNet(1, 1, 4, 1)
    >>> coarse = fine.with_depth(2)
    >>> T = DepthTransfer(fine, coarse, interpolation="linear")
    >>> x = np.zeros(coarse.n_params)
    >>> x[coarse.layer_slice(0)] = [1.0, 10.0]   # W_0, b_0
    >>> x[coarse.layer_slice(1)] = [3.0, 30.0]
    >>> T.prolong(x)[fine.layer_slice(0, 4)].reshape(4, 2)[:, 0]
    array([1., 2., 3., 3.])
    """

    def __init__(self, fine_net, coarse_net, interpolation="constant"):
        check_choice(interpolation, "interpolation", INTERPOLATIONS)
        if fine_net.depth % coarse_net.depth:
            raise ValueError(f"fine depth {fine_net.depth} is not a multiple of coarse depth "
                             f"{coarse_net.depth}")
        if fine_net.block_size != coarse_net.block_size or fine_net.n_open != coarse_net.n_open:
            raise ValueError("depth transfer needs networks of the same width and inputs")
        self.fine, self.coarse = fine_net, coarse_net
        self.factor = fine_net.depth // coarse_net.depth
        self.interpolation = interpolation
        self.n_fine, self.n_coarse = fine_net.n_params, coarse_net.n_params
        c = self.factor
        # weights of theta^c_n and theta^c_{n+1} in fine layer c n + j
        j = np.arange(c)
        self._left = 1.0 - j / c if interpolation == "linear" else np.ones(c)
        self._right = j / c if interpolation == "linear" else np.zeros(c)
        self._weights = {"numpy": (self._left, self._right)}  # per array namespace

    def _interp(self, xp):
        """The interpolation weights as arrays of the namespace ``xp`` (copied once)."""
        w = self._weights.get(xp.__name__)
        if w is None:
            w = self._weights[xp.__name__] = (xp.asarray(self._left), xp.asarray(self._right))
        return w

    def description(self):
        return f"depth coarsening, factor {self.factor}, {self.interpolation} interpolation"

    def _split(self, x, net):
        n1 = net.n_open
        n2 = n1 + net.n_residual
        return x[:n1], x[n1:n2].reshape(net.depth, net.block_size), x[n2:]

    def prolong(self, x_coarse):
        self._check(x_coarse, self.n_coarse, "x_coarse")
        xp = get_namespace(x_coarse)
        left, right = self._interp(xp)
        out = xp.empty(self.n_fine, dtype=x_coarse.dtype)
        o_c, B_c, e_c = self._split(x_coarse, self.coarse)
        o_f, B_f, e_f = self._split(out, self.fine)
        o_f[...] = o_c
        e_f[...] = e_c
        Nc, c = self.coarse.depth, self.factor
        F = B_f.reshape(Nc, c, -1)
        F[...] = left[None, :, None] * B_c[:, None, :]
        if self.interpolation == "linear":
            F[:-1] += right[None, :, None] * B_c[1:, None, :]
            F[-1] += right[:, None] * B_c[-1][None, :]  # constant at the end
        return out

    def restrict(self, g_fine):
        self._check(g_fine, self.n_fine, "g_fine")
        xp = get_namespace(g_fine)
        left, right = self._interp(xp)
        out = xp.empty(self.n_coarse, dtype=g_fine.dtype)
        o_f, B_f, e_f = self._split(g_fine, self.fine)
        o_c, B_c, e_c = self._split(out, self.coarse)
        o_c[...] = o_f
        e_c[...] = e_f
        Nc, c = self.coarse.depth, self.factor
        F = B_f.reshape(Nc, c, -1)
        B_c[...] = xp.einsum("j,njp->np", left, F)
        if self.interpolation == "linear":
            B_c[1:] += xp.einsum("j,njp->np", right, F[:-1])
            B_c[-1] += xp.einsum("j,jp->p", right, F[-1])
        return out

    def project(self, x_fine):
        self._check(x_fine, self.n_fine, "x_fine")
        out = get_namespace(x_fine).empty(self.n_coarse, dtype=x_fine.dtype)
        o_f, B_f, e_f = self._split(x_fine, self.fine)
        o_c, B_c, e_c = self._split(out, self.coarse)
        o_c[...] = o_f
        e_c[...] = e_f
        B_c[...] = B_f[:: self.factor]
        return out


def depth_hierarchy(model, levels, factor=2, interpolation="constant", propagation=None):
    """Build a hierarchy by coarsening a ResNet in depth.

    Parameters
    ----------
    model : ResNet or Objective
        The finest network, or an objective whose network is the finest one (then
        every level gets an objective on the same data: :meth:`Objective.with_net`).
    levels : int
        Number of levels (1 = the fine level alone). Level l has depth N / factor^l,
        which must be an integer >= 1.
    factor : int
        Coarsening factor in depth (>= 2).
    interpolation : {'constant', 'linear'}
        Interpolation of the residual weights in time (see module docstring).
    propagation : callable, optional
        ``propagation(level_index, net)`` returning the propagation of each level's
        objective (serial by default).

    Returns
    -------
    Hierarchy
    """
    from mgnn.objective import Objective

    levels = check_positive_int(levels, "levels")
    factor = check_positive_int(factor, "factor", minimum=2)
    check_choice(interpolation, "interpolation", INTERPOLATIONS)
    objective = model if isinstance(model, Objective) else None
    net = model.net if objective is not None else model
    N = net.depth
    if N % factor ** (levels - 1):
        raise ValueError(f"levels={levels} with factor={factor} needs a depth divisible by "
                         f"{factor ** (levels - 1)}; the network has depth {N} (at most "
                         f"{max_depth_levels(N, factor)} levels)")
    nets = [net] + [net.with_depth(N // factor ** l) for l in range(1, levels)]
    objs = [None] * levels
    if objective is not None:
        objs[0] = objective
        if propagation is not None:
            objs[0].propagation = propagation(0, net)
        for l in range(1, levels):
            objs[l] = objective.with_net(nets[l], None if propagation is None
                                         else propagation(l, nets[l]))
    lv = []
    for l in range(levels):
        tr = DepthTransfer(nets[l], nets[l + 1], interpolation) if l + 1 < levels else None
        lv.append(Level(nets[l], objs[l], tr))
    desc = f"depth coarsening, factor {factor}, {interpolation} interpolation"
    return Hierarchy(lv, desc)


def max_depth_levels(depth, factor=2):
    """Largest number of levels a network of ``depth`` layers supports."""
    n = 1
    while depth % factor == 0:
        depth //= factor
        n += 1
    return n
