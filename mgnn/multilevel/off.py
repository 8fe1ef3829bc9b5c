r"""The objective-function-free variant of RMTR (``rmtr(..., options={'variant': 'off'})``).

After Gratton, Kopaničáková & Toint (multilevel objective-function-free
optimization, SIOPT 2023): a multilevel method that never evaluates the loss to
accept or reject a step, so that noisy (mini-batch) losses cannot mislead it,
and whose single-level instance is AdaGrad without momentum.

**Steps.** Every level keeps AdaGrad accumulators ``v`` (sums of squared model
gradients) and a count ``k``; a step from ``x`` with model gradient ``g`` is::

    v <- v + g * g,   k <- k + 1,   s = -lr * g / (sqrt(v) + eps)

**Trust region from the gradient history.** A coarse correction computed from
level ``l`` is confined to the max-norm ball of radius
``Delta_l = box_factor * lr / sqrt(k_l)``: ``box_factor`` AdaGrad steps of a
gradient of root-mean-square size (for ``eps = 0`` every component with a
nonzero history has ``lr * rms_i / sqrt(v_i) = lr / sqrt(k)``), so the radius
shrinks as AdaGrad's steps do. A coarse step whose prolongation would leave the
ball of any ancestor level (recursively) is shortened along its ray to the
boundary; a visit stops when its displacement reaches ``1 - 1e-3`` of a bound.
The max-norm suits the transfers of :mod:`mgnn.multilevel`: their prolongations
have rows of non-negative weights summing to at most one, so ``||P d||_inf <=
||d||_inf``.

**Coarse models** are first-order coherent (the tau-correction of
:class:`~mgnn.multilevel.coarse_models.FirstOrderModel`): at ``Pi x`` the coarse
gradient equals ``R g``. A coarse level starts its visit with the finer level's
accumulators moved by the gradient restriction, ``v_c = (R sqrt(v))^2`` and the
same count, so its first step is the finer step seen through ``R``.

**Cycle** on level ``l`` (V, W or F, as the monotone variant): ``pre_smooth``
steps, the coarse correction(s) if ``||R g|| >= kappa_g ||g||`` (``x <- x +
P (x_c - Pi x)``, always taken), ``post_smooth`` steps; ``coarse_iters`` steps on
the coarsest level. A gradient is evaluated only where a step or a restriction
needs it (one per step; the cycle-start gradient of the fine level serves its
first step or restriction).
"""

from __future__ import annotations

import math

import numpy as np

from mgnn.backend import get_namespace
from mgnn.multilevel.coarse_models import FirstOrderModel

__all__ = ["AdaGradState"]

_BOUNDARY = 1e-3


class AdaGradState:
    """AdaGrad accumulators of one level: the step rule and the radius of its history.

    Examples
    --------
    >>> import numpy as np
    >>> a = AdaGradState(lr=0.1, eps=0.0)
    >>> a.step(np.array([3.0, -4.0]))          # the first step has size lr in every entry
    array([-0.1,  0.1])
    >>> a.step(np.array([0.0, -4.0])).round(6).tolist(), round(a.radius(2.0), 6)
    ([-0.0, 0.070711], 0.141421)
    """

    def __init__(self, lr, eps):
        self.lr, self.eps = lr, eps
        self.v = None
        self.k = 0

    def step(self, g):
        """Accumulate ``g`` and return the AdaGrad step ``-lr g / (sqrt(v) + eps)``."""
        self.v = g * g if self.v is None else self.v + g * g
        self.k += 1
        return -self.lr * g / (self.v ** 0.5 + self.eps)

    def radius(self, factor):
        """``factor * lr / sqrt(k)`` (``factor * lr`` before the first step)."""
        return factor * self.lr / math.sqrt(max(self.k, 1))

    def transferred(self, restrict):
        """A copy for the next coarser level: ``v -> (R sqrt(v))^2``, the same ``k``."""
        new = AdaGradState(self.lr, self.eps)
        if self.v is not None:
            new.v = restrict(self.v ** 0.5) ** 2
        new.k = self.k
        return new

    def state_dict(self):
        return {"v": self.v, "k": self.k}

    def load_state_dict(self, d):
        self.v, self.k = d["v"], int(d["k"])


class _Box:
    """``||offset + lift(d)||_inf <= bound`` in the space of an ancestor level."""

    def __init__(self, lift, offset, bound, space):
        self.lift, self.offset, self.bound, self.space = lift, offset, bound, space

    def lifted(self, d):
        v = self.lift(d)
        return v if self.offset is None else self.offset + v

    def room(self, a):
        return self.bound - self.space.max_abs(a)


def ray_to_box(space, a, b, bound):
    """Largest ``t`` in [0, 1] with ``||a + t b||_inf <= bound`` (``||a||_inf <= bound``).

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.vectorspace import EuclideanSpace
    >>> ray_to_box(EuclideanSpace(), np.array([0.5, 0.0]), np.array([1.0, -4.0]), 1.0)
    0.25
    """
    xp = get_namespace(a, b)
    lim = bound - xp.sign(b) * a  # room towards the side b points to (>= 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = xp.where(b != 0, xp.abs(b) / xp.maximum(lim, 0.0), 0.0)
    r = xp.where(xp.isnan(r), xp.inf, r)
    m = space.max_abs(r)
    return 1.0 if m <= 1.0 else (0.0 if math.isinf(m) else 1.0 / m)


class OFFEngine:
    """The recursion of the objective-function-free variant (module docstring)."""

    variant = "off"

    def __init__(self, hierarchy, run, opts, stats, spaces, fg_of, batch_of):
        self.H, self.L, self.run = hierarchy, hierarchy.n_levels, run
        self.lr, self.eps = opts["lr"], opts["adagrad_eps"]
        self.box_factor = opts["box_factor"]
        self.cycle_kind = opts["cycle"]
        self.pre, self.post = opts["pre_smooth"], opts["post_smooth"]
        self.coarse_iters = opts["coarse_iters"]
        self.kappa_g, self.eps_g = opts["kappa_g"], opts["eps_g"]
        self.spaces = spaces
        self.stats = stats
        self._fg_of = fg_of  # (level, model) -> x -> (f, g), finite-checked
        self._batch = batch_of  # () -> the cycle's batch
        self.state0 = AdaGradState(self.lr, self.eps)
        self.full = True

    # the driver's interface ------------------------------------------------
    @property
    def radius(self):
        """The fine level's current coarse-correction bound (max-norm)."""
        return self.state0.radius(self.box_factor)

    def stalled(self):
        return False

    def cycle(self, fine, x, f, g):
        x, _, _ = self._visit(0, fine, x, f, g, self.state0, [], self.cycle_kind)
        return x, None, None

    def state_dict(self):
        return {"adagrad": self.state0.state_dict()}

    def load_state_dict(self, d):
        self.state0.load_state_dict(d["adagrad"])

    # the recursion -----------------------------------------------------------
    def _step(self, l, x, g, state, cons, x_entry):
        """One AdaGrad step, shortened to every ancestor's box; None at a boundary."""
        s = state.step(g)
        if cons:
            d = x - x_entry
            t = 1.0
            for c in cons:
                a = c.lifted(d)
                if c.room(a) <= _BOUNDARY * c.bound:
                    return None
                t = min(t, ray_to_box(c.space, a, c.lift(s), c.bound))
            if t < 1.0:
                self.stats[l].truncated += 1
                if t <= 0.0:
                    return None
                s = t * s
        st = self.stats[l]
        st.tr_steps += 1
        st.tr_accepted += 1
        return x + s

    def _visit(self, l, model, x, f, g, state, cons, kind):
        """A cycle of kind ``kind`` on level ``l``; returns ``(x, f, g)`` (f, g of the
        returned x when known, else None)."""
        self.stats[l].visits += 1
        x_entry = x
        fg = self._fg_of(l, model)

        def smooth(n, x, f, g):
            for _ in range(n):
                if g is None:
                    f, g = fg(x)
                    if not math.isfinite(f):
                        return x, f, g, "nonfinite"
                gnorm = self.spaces[l].norm(g)
                if l > 0 and gnorm <= self.eps_g:
                    return x, f, g, "converged"
                xn = self._step(l, x, g, state, cons, x_entry)
                if xn is None:
                    return x, f, g, "boundary"
                x, f, g = xn, None, None
            return x, f, g, "step"

        if l == self.L - 1:
            x, f, g, _ = smooth(self.coarse_iters, x, f, g)
            return x, f, g
        x, f, g, status = smooth(self.pre[l], x, f, g)
        if status != "step":
            return x, f, g
        kinds = {"V": ("V",), "W": ("W", "W"), "F": ("F", "V")}[kind]
        for child_kind in kinds:
            if g is None:
                f, g = fg(x)
                if not math.isfinite(f):
                    return x, f, g
            x, f, g = self._correction(l, x, g, state, cons, x_entry, child_kind)
        x, f, g, _ = smooth(self.post[l], x, f, g)
        return x, f, g

    def _correction(self, l, x, g, state, cons, x_entry, kind):
        lev, st = self.H[l], self.stats[l]
        gc = lev.R(g)
        ngc = self.spaces[l + 1].norm(gc)
        if not (ngc >= self.kappa_g * self.spaces[l].norm(g) and ngc > self.eps_g):
            st.coarse_skipped += 1
            return x, None, g
        P = lev.P
        d = x - x_entry if cons else None
        child_cons = [_Box((lambda v, c=c: c.lift(P(v))), c.lifted(d), c.bound, c.space)
                      for c in cons]
        if any(c.room(c.offset) <= _BOUNDARY * c.bound for c in child_cons):
            st.coarse_skipped += 1
            return x, None, g
        child_cons.append(_Box(P, None, state.radius(self.box_factor), self.spaces[l]))
        xc0 = lev.Pi(x)
        child = FirstOrderModel(self.H[l + 1].objective, xc0, gc, self._batch())
        cstate = state.transferred(lev.R)
        xc, _, _ = self._visit(l + 1, child, xc0, child.f0, child.g0, cstate, child_cons, kind)
        st.coarse_tries += 1
        if xc is xc0:
            return x, None, g
        st.coarse_accepted += 1
        return x + P(xc - xc0), None, None
