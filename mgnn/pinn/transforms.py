"""Input embeddings and output transforms of a PINN, with their derivative streams.

**Input embeddings** map a point ``x`` (d coordinates) to the network input
``phi(x)`` (n_in features). The stream sweep needs, per point, ``phi``, its
derivatives ``d phi / dx_j`` and the diagonal second derivatives
``d2 phi / dx_j^2``: that stack is the input of the opening layer, so the chain
rule through the embedding costs nothing extra. :class:`PeriodicEmbedding`
replaces a periodic coordinate by ``(cos, sin)`` of its phase, which makes ``u``
and every derivative exactly periodic in it.

**Output transforms** impose boundary or initial conditions exactly:
``u(x) = A(x) + B(x) N(x)``, with ``A`` meeting the conditions and ``B``
vanishing where they are imposed. The transform is linear in the network's
output streams, so its adjoint (for the gradient) is its transpose and it adds
no second-order term::

    u     = A     + B N
    u_j   = A_j   + B_j N + B N_j
    u_jj  = A_jj  + B_jj N + 2 B_j N_j + B N_jj

``A`` and ``B`` are :class:`Field` objects: a function returning the value, the
gradient and the Hessian diagonal at points.
"""

from __future__ import annotations

import numpy as np

from mgnn._validation import check_array, check_positive_int

__all__ = ["IdentityEmbedding", "PeriodicEmbedding", "Field", "OutputTransform",
           "box_factor"]


class IdentityEmbedding:
    """``phi(x) = x``: the network sees the raw coordinates.

    Examples
    --------
    >>> from mgnn.pinn.streams import StreamLayout
    >>> import numpy as np
    >>> emb = IdentityEmbedding(2)
    >>> emb.stack(np.array([[0.5, 2.0]]), StreamLayout(2, [1], [1]))[:, 0, :]
    array([[0.5, 2. ],
           [0. , 1. ],
           [0. , 0. ]])
    """

    def __init__(self, n_dims):
        self.n_dims = check_positive_int(n_dims, "n_dims")
        self.n_features = self.n_dims

    def __repr__(self):
        return f"IdentityEmbedding(n_dims={self.n_dims})"

    def stack(self, X, layout, out=None):
        """The input stack (S, n, n_features) of the points ``X`` (n, n_dims)."""
        return layout.coordinate_stack(X, out)


class PeriodicEmbedding:
    """Periodic coordinates enter as ``(cos, sin)`` of their phase; the others as they are.

    Coordinate ``j`` with period ``[lo, hi)`` becomes ``cos(2 pi (x_j - lo)/(hi - lo))``
    and ``sin(...)``, so that ``u`` and all its derivatives are exactly periodic
    in ``x_j`` (Allen-Cahn's periodic boundary conditions need no penalty).
    Features: the non-periodic coordinates in order, then a (cos, sin) pair per
    periodic coordinate.

    Parameters
    ----------
    n_dims : int
    periodic : dict {coordinate: (lo, hi)}

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.pinn.streams import StreamLayout
    >>> emb = PeriodicEmbedding(2, {0: (-1.0, 1.0)})
    >>> emb, emb.n_features
    (PeriodicEmbedding(n_dims=2, periodic={0: (-1.0, 1.0)}), 3)
    >>> S = emb.stack(np.array([[0.5, 0.2], [-1.5, 0.2]]), StreamLayout(2, [0], [0]))
    >>> bool(np.allclose(S[:, 0], S[:, 1]))       # x = 0.5 and x = -1.5: one period apart
    True
    """

    def __init__(self, n_dims, periodic):
        self.n_dims = check_positive_int(n_dims, "n_dims")
        if not isinstance(periodic, dict) or not periodic:
            raise ValueError("periodic must be a non-empty dict {coordinate: (lo, hi)}")
        per = {}
        for j, span in periodic.items():
            if not isinstance(j, (int, np.integer)) or not 0 <= j < self.n_dims:
                raise ValueError(f"periodic coordinate {j!r} outside 0..{self.n_dims - 1}")
            lo, hi = (float(v) for v in span)
            if not hi > lo:
                raise ValueError(f"periodic span of coordinate {j} must have hi > lo, got "
                                 f"{span!r}")
            per[int(j)] = (lo, hi)
        self.periodic = dict(sorted(per.items()))
        self.plain = [j for j in range(self.n_dims) if j not in self.periodic]
        self.n_features = len(self.plain) + 2 * len(self.periodic)

    def __repr__(self):
        return f"PeriodicEmbedding(n_dims={self.n_dims}, periodic={self.periodic})"

    def stack(self, X, layout, out=None):
        n = X.shape[0]
        if out is None:
            out = np.zeros((layout.S, n, self.n_features), X.dtype)
        else:
            out[...] = 0
        for f, j in enumerate(self.plain):
            out[0, :, f] = X[:, j]
            if j in layout.first:
                out[layout.d(j), :, f] = 1
        f = len(self.plain)
        for j, (lo, hi) in self.periodic.items():
            om = 2 * np.pi / (hi - lo)
            ph = om * (X[:, j] - lo)
            c, s = np.cos(ph), np.sin(ph)
            out[0, :, f], out[0, :, f + 1] = c, s
            if j in layout.first:
                out[layout.d(j), :, f], out[layout.d(j), :, f + 1] = -om * s, om * c
            if j in layout.second:
                out[layout.dd(j), :, f], out[layout.dd(j), :, f + 1] = -om * om * c, -om * om * s
            f += 2
        return out


class Field:
    """A scalar function of the coordinates with its gradient and Hessian diagonal.

    Parameters
    ----------
    fn : callable
        ``fn(X) -> (value (n,), gradient (n, d), hessian_diagonal (n, d))``.
    name : str

    Examples
    --------
    >>> import numpy as np
    >>> sq = Field(lambda X: (X[:, 0] ** 2, np.c_[2 * X[:, 0]], np.c_[2 + 0 * X[:, 0]]),
    ...            "x^2")
    >>> v, g, H = sq(np.array([[3.0]]))
    >>> float(v[0]), float(g[0, 0]), float(H[0, 0])
    (9.0, 6.0, 2.0)
    """

    def __init__(self, fn, name="field"):
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.name = str(name)

    def __call__(self, X):
        v, g, H = self.fn(X)
        n, d = X.shape
        v = np.broadcast_to(np.asarray(v, dtype=X.dtype), (n,))
        g = np.broadcast_to(np.asarray(g, dtype=X.dtype), (n, d))
        H = np.broadcast_to(np.asarray(H, dtype=X.dtype), (n, d))
        return v, g, H

    def __repr__(self):
        return f"Field({self.name})"

    @staticmethod
    def constant(value=0.0):
        """The constant ``value`` (zero derivatives)."""
        return Field(lambda X: (value, 0.0, 0.0), f"{value:g}")

    def stack(self, X, layout):
        """(S, n): value, first derivatives and second derivatives in ``layout``'s order."""
        v, g, H = self(X)
        out = np.empty((layout.S, X.shape[0]), X.dtype)
        out[0] = v
        for j in layout.first:
            out[layout.d(j)] = g[:, j]
        for j in layout.second:
            out[layout.dd(j)] = H[:, j]
        return out


def box_factor(lower, upper, faces, power=None, names=None):
    """``B(x) = prod over faces of ((x_j - lo_j)/(hi_j - lo_j))^p`` (or ``(hi_j - x_j)/...``):
    a polynomial that vanishes on the chosen faces of a box and is positive inside.

    Parameters
    ----------
    lower, upper : sequences of float
        The box.
    faces : iterable of (j, side)
        Coordinate ``j`` and ``side`` 'lo' or 'hi'.
    power : dict {(j, side): int}, optional
        Power of a face's factor (default 1; 2 also makes ``dB/dx_j`` vanish
        there, e.g. for an initial velocity).

    Examples
    --------
    >>> import numpy as np
    >>> B = box_factor([0, 0], [1, 1], [(0, "lo"), (0, "hi")])
    >>> v, g, H = B(np.array([[0.5, 0.3], [0.0, 0.7]]))
    >>> v.tolist(), g[0].tolist(), H[0].tolist()
    ([0.25, 0.0], [0.0, 0.0], [-2.0, 0.0])
    """
    lower = np.asarray(lower, dtype=np.float64)
    upper = np.asarray(upper, dtype=np.float64)
    d = lower.size
    power = dict(power or {})
    polys = [np.polynomial.Polynomial([1.0]) for _ in range(d)]
    desc = []
    for j, side in faces:
        if not 0 <= j < d or side not in ("lo", "hi"):
            raise ValueError(f"faces must be (coordinate in 0..{d - 1}, 'lo'|'hi'), got "
                             f"{(j, side)!r}")
        L = upper[j] - lower[j]
        lin = (np.polynomial.Polynomial([-lower[j] / L, 1.0 / L]) if side == "lo"
               else np.polynomial.Polynomial([upper[j] / L, -1.0 / L]))
        p = int(power.get((j, side), 1))
        polys[j] = polys[j] * lin ** p
        nm = (names[j] if names else f"x{j}")
        desc.append(f"{nm}={'lo' if side == 'lo' else 'hi'}" + (f"^{p}" if p > 1 else ""))
    d1 = [q.deriv(1) for q in polys]
    d2 = [q.deriv(2) for q in polys]

    def fn(X):
        vals = np.stack([q(X[:, j]) for j, q in enumerate(polys)], axis=1)
        v = np.prod(vals, axis=1)
        g = np.empty_like(X)
        H = np.empty_like(X)
        for j in range(d):
            others = np.prod(np.delete(vals, j, axis=1), axis=1) if d > 1 else 1.0
            g[:, j] = d1[j](X[:, j]) * others
            H[:, j] = d2[j](X[:, j]) * others
        return v, g, H

    return Field(fn, "vanishing on " + ", ".join(desc))


class OutputTransform:
    """``u = A(x) + B(x) N(x)`` with fields ``A`` (meets the conditions) and ``B``
    (vanishes where they hold); see the module docstring.

    Parameters
    ----------
    A, B : Field
    description : str, optional

    Examples
    --------
    ``u = x(1 - x) N(x)`` vanishes at both ends of [0, 1]:

    >>> import numpy as np
    >>> from mgnn.pinn.streams import StreamLayout
    >>> T = OutputTransform(Field.constant(0.0), box_factor([0], [1], [(0, "lo"), (0, "hi")]))
    >>> lay = StreamLayout(1, [0], [0])
    >>> X = np.array([[0.5]])
    >>> coef = T.coefficients(X, lay)
    >>> N = np.array([[2.0], [3.0], [4.0]])          # N, N_x, N_xx at x = 0.5
    >>> U = np.empty_like(N); T.apply(coef, N, U, lay)
    >>> U.ravel().tolist()                           # B N, B' N + B N', B'' N + 2 B' N' + B N''
    [0.5, 0.75, -3.0]
    """

    def __init__(self, A, B, description=None):
        if not isinstance(A, Field) or not isinstance(B, Field):
            raise TypeError("A and B must be Field objects")
        self.A, self.B = A, B
        self.description = description or f"u = {A.name} + ({B.name}) N"

    def __repr__(self):
        return f"OutputTransform({self.description})"

    def coefficients(self, X, layout):
        """The stacks of A and B at the points (precomputed once per point set)."""
        X = check_array(X, "X", ndim=2)
        return self.A.stack(X, layout), self.B.stack(X, layout)

    def apply(self, coef, N, U, layout, affine=True):
        """``U = A + B N`` stream by stream (``affine=False``: the linear part B N only);
        ``N`` and ``U`` are (S, n) stacks."""
        A, B = coef
        U[...] = B[0] * N
        for j in layout.first:
            k = layout.d(j)
            U[k] += B[k] * N[0]
        for j in layout.second:
            k, kd = layout.dd(j), layout.d(j)
            U[k] += B[k] * N[0] + 2 * B[kd] * N[kd]
        if affine:
            U += A

    def adjoint(self, coef, Ubar, Nbar, layout):
        """``Nbar = (dU/dN)^T Ubar`` (the transpose of the linear part)."""
        _, B = coef
        Nbar[...] = B[0] * Ubar
        for j in layout.first:
            k = layout.d(j)
            Nbar[0] += B[k] * Ubar[k]
        for j in layout.second:
            k, kd = layout.dd(j), layout.d(j)
            Nbar[0] += B[k] * Ubar[k]
            Nbar[kd] += 2 * B[kd] * Ubar[k]
