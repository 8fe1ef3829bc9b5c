"""Differential operators of PINN residuals, as polynomials in u and its derivatives.

Every residual in this module is a polynomial in the *streams* of the solution
at a point (``u``, first derivatives ``u_j``, diagonal second derivatives
``u_jj``) minus given data ``f(x)``::

    r(x) = sum_m c_m prod_k U_k(x)^(p_mk) - f(x)

e.g. Burgers ``u_t + u u_x - nu u_xx - f``. This one form covers the PDEs of the
PINN literature that mgnn ships (Poisson, diffusion-advection, viscous Burgers,
Allen-Cahn, Klein-Gordon) and the boundary and initial conditions (Dirichlet
``u - g``, derivative ``u_j - g``), and gives the residual's exact first and
second derivatives with respect to the streams (``jvp``, ``vjp``, ``hvp``), which
the PINN objective chains with the network's stream sweeps.

Streams are named by keys: ``'u'``, ``('d', j)`` for du/dx_j and ``('dd', j)``
for d2u/dx_j^2, ``j`` a coordinate index.

Examples
--------
>>> op = burgers(nu=0.01)
>>> op
Operator('burgers', u_t + u*u_x - 0.01*u_xx, coordinates ('x', 't'))
>>> op.layout()
StreamLayout(n_dims=2, first=(0, 1), second=(0,), streams=4)
"""

from __future__ import annotations

import numbers

import numpy as np

from mgnn._validation import check_positive_int, check_scalar
from mgnn.backend import get_namespace
from mgnn.pinn.streams import StreamLayout

__all__ = ["Operator", "PDES", "make_pde", "poisson", "diffusion_advection", "burgers",
           "allen_cahn", "klein_gordon", "dirichlet", "derivative"]


def _check_key(key, n_dims):
    if key == "u":
        return key
    if (isinstance(key, tuple) and len(key) == 2 and key[0] in ("d", "dd")
            and isinstance(key[1], numbers.Integral) and 0 <= key[1] < n_dims):
        return (key[0], int(key[1]))
    raise ValueError(f"stream key must be 'u', ('d', j) or ('dd', j) with 0 <= j < {n_dims}, "
                     f"got {key!r}")


class Operator:
    """A residual ``r = sum_m c_m prod_k U_k^p_mk - f`` over the streams of ``u``.

    Parameters
    ----------
    name : str
    n_dims : int
        Coordinates of a point.
    monomials : list of (coefficient, {key: power})
        The polynomial; keys are ``'u'``, ``('d', j)``, ``('dd', j)``; powers >= 1.
    coords : tuple of str, optional
        Names of the coordinates (for printing), default ``x0, x1, ...``.
    params : dict, optional
        The parameters the operator was made from (for ``repr`` and copies).

    Examples
    --------
    >>> import numpy as np
    >>> op = Operator("cubic", 1, [(1.0, {("dd", 0): 1}), (2.0, {"u": 3})], coords=("x",))
    >>> op
    Operator('cubic', u_xx + 2*u^3, coordinates ('x',))
    >>> lay = op.layout()
    >>> U = np.array([[2.0], [0.0], [5.0]])       # u, u_x, u_xx at one point
    >>> op.residual(U, lay, np.array([1.0]))      # 5 + 2*8 - 1
    array([20.])
    """

    def __init__(self, name, n_dims, monomials, coords=None, params=None):
        self.name = str(name)
        self.n_dims = check_positive_int(n_dims, "n_dims")
        if coords is None:
            coords = tuple(f"x{j}" for j in range(self.n_dims))
        coords = tuple(str(c) for c in coords)
        if len(coords) != self.n_dims:
            raise ValueError(f"coords must name {self.n_dims} coordinates, got {coords}")
        self.coords = coords
        self.params = dict(params or {})
        mons = []
        for item in monomials:
            try:
                c, factors = item
            except (TypeError, ValueError):
                raise ValueError("monomials must be (coefficient, {key: power}) pairs, got "
                                 f"{item!r}") from None
            c = check_scalar(c, "monomial coefficient")
            fs = []
            for key, p in dict(factors).items():
                fs.append((_check_key(key, self.n_dims), check_positive_int(p, "power")))
            if not fs:
                raise ValueError("a monomial needs at least one factor (constants belong to "
                                 "the data f)")
            mons.append((c, tuple(fs)))
        if not mons:
            raise ValueError("monomials must not be empty")
        self.monomials = mons
        keys = {k for _, fs in mons for k, _ in fs}
        self.first = tuple(sorted({k[1] for k in keys if k != "u" and k[0] == "d"}
                                  | {k[1] for k in keys if k != "u" and k[0] == "dd"}))
        self.second = tuple(sorted({k[1] for k in keys if k != "u" and k[0] == "dd"}))
        self.linear = all(len(fs) == 1 and fs[0][1] == 1 for _, fs in mons)
        self.order = 2 if self.second else (1 if self.first else 0)

    def layout(self):
        """The smallest :class:`~mgnn.pinn.streams.StreamLayout` this residual needs."""
        return StreamLayout(self.n_dims, self.first, self.second)

    # ------------------------------------------------------------- printing
    def _name(self, key):
        if key == "u":
            return "u"
        kind, j = key
        c = self.coords[j]
        return f"u_{c}" if kind == "d" else f"u_{c}{c}"

    def equation(self):
        """The polynomial as text, e.g. ``u_t + u*u_x - 0.01*u_xx``."""
        parts = []
        for c, fs in self.monomials:
            body = "*".join(self._name(k) + (f"^{p}" if p > 1 else "") for k, p in fs)
            mag = abs(c)
            term = body if mag == 1 else f"{mag:.6g}*{body}"
            if not parts:
                parts.append(("-" if c < 0 else "") + term)
            else:
                parts.append(("- " if c < 0 else "+ ") + term)
        return " ".join(parts)

    def __repr__(self):
        return f"Operator({self.name!r}, {self.equation()}, coordinates {self.coords})"

    # ------------------------------------------------------------ evaluation
    @staticmethod
    def _idx(layout, key):
        if key == "u":
            return 0
        return layout.d(key[1]) if key[0] == "d" else layout.dd(key[1])

    def _factors(self, U, layout):
        return [(c, [(self._idx(layout, k), p) for k, p in fs]) for c, fs in self.monomials]

    def residual(self, U, layout, f=None):
        """``r`` (n,) from the stream stack ``U`` (S, n) and the data ``f`` (n,) or None."""
        xp = get_namespace(U)
        r = xp.zeros(U.shape[1], dtype=U.dtype) if f is None else -xp.asarray(f, U.dtype)
        for c, fs in self._factors(U, layout):
            term = c
            for k, p in fs:
                term = term * (U[k] if p == 1 else U[k] ** p)
            r = r + term
        return r

    def jvp(self, U, dU, layout):
        """Linearisation: ``dr = sum_k dr/dU_k dU_k`` (n,)."""
        dr = get_namespace(U).zeros(U.shape[1], dtype=U.dtype)
        for c, fs in self._factors(U, layout):
            for a, (k, p) in enumerate(fs):
                t = c * p * (U[k] ** (p - 1) if p > 1 else 1.0) * dU[k]
                for b, (l, q) in enumerate(fs):
                    if b != a:
                        t = t * (U[l] ** q if q > 1 else U[l])
                dr += t
        return dr

    def vjp(self, U, rbar, layout, out):
        """Write ``rbar * dr/dU`` into ``out`` (S, n) (rows of unused streams are zeroed)."""
        out[...] = 0
        for c, fs in self._factors(U, layout):
            for a, (k, p) in enumerate(fs):
                t = c * p * rbar
                if p > 1:
                    t = t * U[k] ** (p - 1)
                for b, (l, q) in enumerate(fs):
                    if b != a:
                        t = t * (U[l] ** q if q > 1 else U[l])
                out[k] += t
        return out

    def nonlinear_terms(self):
        """The monomials that make the residual nonlinear in ``u`` (products or powers
        of streams), as text; empty for a linear operator."""
        return [(f"{c:g}*" if c != 1 else "") + "*".join(
            self._name(k) + (f"^{p}" if p > 1 else "") for k, p in fs)
            for c, fs in self.monomials if not (len(fs) == 1 and fs[0][1] == 1)]

    def check_linear(self, purpose="this method"):
        """Raise a ValueError naming the operator and its nonlinear terms unless it is
        linear in ``u`` (:attr:`linear`)."""
        if not self.linear:
            raise ValueError(
                f"{purpose} needs a PDE operator that is linear in u; {self.name!r} "
                f"({self.equation()}) is nonlinear through {', '.join(self.nonlinear_terms())}")

    def apply_linear(self, U, layout, out=None):
        """The linear map ``L[u] = sum_m c_m U_k(m)`` on a stream stack ``U`` (S, n, ...).

        Only for a linear operator (:attr:`linear`). The trailing axes of ``U`` are
        carried along, so applied to the streams of the last hidden state
        (S, n, width) it gives ``L`` of every feature at once: the columns of the
        design matrix of a least-squares fit of the closing layer. ``residual(U)``
        is ``apply_linear(U) - f``.

        Examples
        --------
        >>> import numpy as np
        >>> op = poisson(1)                              # -u_xx
        >>> lay = op.layout()
        >>> Phi = np.arange(12.0).reshape(3, 2, 2)       # streams x points x features
        >>> op.apply_linear(Phi, lay)                    # -(second-derivative stream)
        array([[ -8.,  -9.],
               [-10., -11.]])
        >>> burgers().apply_linear(Phi, burgers().layout())
        Traceback (most recent call last):
        ...
        ValueError: apply_linear needs a PDE operator that is linear in u; 'burgers' ... u*u_x
        """
        self.check_linear("apply_linear")
        xp = get_namespace(U)
        if out is None:
            out = xp.zeros(U.shape[1:], dtype=U.dtype)
        else:
            out[...] = 0
        for c, ((k, _),) in self._factors(U, layout):
            out += c * U[k]
        return out

    def hvp(self, U, rbar, dU, layout, out):
        """Add ``sum_i rbar_i d2r_i/dU2 dU`` to ``out`` (S, n); nothing for a linear residual."""
        if self.linear:
            return out
        for c, fs in self._factors(U, layout):
            for a, (k, p) in enumerate(fs):
                # d/dU_l of  c p U_k^(p-1) prod_{b != a} U_b^q  (the k-row of the gradient)
                for b, (l, q) in enumerate(fs):
                    if b == a:
                        if p < 2:
                            continue
                        t = c * p * (p - 1) * (U[k] ** (p - 2) if p > 2 else 1.0) * dU[k]
                        rest = [(m, r_) for e, (m, r_) in enumerate(fs) if e != a]
                    else:
                        t = c * p * (U[k] ** (p - 1) if p > 1 else 1.0)
                        t = t * q * (U[l] ** (q - 1) if q > 1 else 1.0) * dU[l]
                        rest = [(m, r_) for e, (m, r_) in enumerate(fs) if e not in (a, b)]
                    for m, r_ in rest:
                        t = t * (U[m] ** r_ if r_ > 1 else U[m])
                    out[k] += rbar * t
        return out


# ---------------------------------------------------------------------------
# the PDEs and conditions mgnn ships
# ---------------------------------------------------------------------------
def poisson(n_dims=2, kappa=1.0):
    """``-kappa Laplace(u) = f`` in ``n_dims`` dimensions.

    >>> poisson(2)
    Operator('poisson', -u_xx - u_yy, coordinates ('x', 'y'))
    """
    n_dims = check_positive_int(n_dims, "n_dims")
    kappa = check_scalar(kappa, "kappa", low=0.0, low_open=True)
    coords = ("x", "y", "z")[:n_dims] if n_dims <= 3 else None
    return Operator("poisson", n_dims, [(-kappa, {("dd", j): 1}) for j in range(n_dims)],
                    coords, {"n_dims": n_dims, "kappa": kappa})


def diffusion_advection(nu=0.01, a=1.0):
    """``u_t + a u_x - nu u_xx = f`` on (x, t).

    >>> diffusion_advection(0.1, 2.0)
    Operator('diffusion_advection', u_t + 2*u_x - 0.1*u_xx, coordinates ('x', 't'))
    """
    nu = check_scalar(nu, "nu", low=0.0, low_open=True)
    a = check_scalar(a, "a")
    mons = [(1.0, {("d", 1): 1}), (-nu, {("dd", 0): 1})]
    if a:
        mons.insert(1, (a, {("d", 0): 1}))
    return Operator("diffusion_advection", 2, mons, ("x", "t"), {"nu": nu, "a": a})


def burgers(nu=0.01 / np.pi):
    """Viscous Burgers ``u_t + u u_x - nu u_xx = f`` on (x, t)."""
    nu = check_scalar(nu, "nu", low=0.0, low_open=True)
    return Operator("burgers", 2, [(1.0, {("d", 1): 1}), (1.0, {"u": 1, ("d", 0): 1}),
                                   (-nu, {("dd", 0): 1})], ("x", "t"), {"nu": nu})


def allen_cahn(eps=1e-4, k=5.0):
    """Allen-Cahn ``u_t - eps u_xx + k u^3 - k u = f`` on (x, t).

    >>> allen_cahn()
    Operator('allen_cahn', u_t - 0.0001*u_xx + 5*u^3 - 5*u, coordinates ('x', 't'))
    """
    eps = check_scalar(eps, "eps", low=0.0, low_open=True)
    k = check_scalar(k, "k")
    mons = [(1.0, {("d", 1): 1}), (-eps, {("dd", 0): 1})]
    if k:
        mons += [(k, {"u": 3}), (-k, {"u": 1})]
    return Operator("allen_cahn", 2, mons, ("x", "t"), {"eps": eps, "k": k})


def klein_gordon(alpha=-1.0, beta=0.0, gamma=1.0, power=3):
    """Klein-Gordon ``u_tt + alpha u_xx + beta u + gamma u^power = f`` on (x, t).

    >>> klein_gordon()
    Operator('klein_gordon', u_tt - u_xx + u^3, coordinates ('x', 't'))
    """
    alpha = check_scalar(alpha, "alpha")
    beta = check_scalar(beta, "beta")
    gamma = check_scalar(gamma, "gamma")
    power = check_positive_int(power, "power")
    mons = [(1.0, {("dd", 1): 1})]
    if alpha:
        mons.append((alpha, {("dd", 0): 1}))
    if beta:
        mons.append((beta, {"u": 1}))
    if gamma:
        mons.append((gamma, {"u": power}))
    return Operator("klein_gordon", 2, mons, ("x", "t"),
                    {"alpha": alpha, "beta": beta, "gamma": gamma, "power": power})


def dirichlet(n_dims, coords=None):
    """The condition ``u = g`` (residual ``u - g``).

    >>> dirichlet(2)
    Operator('dirichlet', u, coordinates ('x0', 'x1'))
    """
    return Operator("dirichlet", n_dims, [(1.0, {"u": 1})], coords)


def derivative(n_dims, dim, coords=None):
    """The condition ``du/dx_dim = g`` (e.g. an initial velocity ``u_t(x, 0) = g``).

    >>> derivative(2, 1, ("x", "t"))
    Operator('derivative', u_t, coordinates ('x', 't'))
    """
    n_dims = check_positive_int(n_dims, "n_dims")
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or not 0 <= dim < n_dims:
        raise ValueError(f"dim must be a coordinate index in 0..{n_dims - 1}, got {dim!r}")
    return Operator("derivative", n_dims, [(1.0, {("d", int(dim)): 1})], coords,
                    {"dim": int(dim)})


#: The PDEs by name (what ``PINNObjective(..., pde='burgers')`` accepts).
PDES = {"poisson": poisson, "diffusion_advection": diffusion_advection, "burgers": burgers,
        "allen_cahn": allen_cahn, "klein_gordon": klein_gordon}


def make_pde(pde, **params):
    """An :class:`Operator` from a name in :data:`PDES` (with parameters) or as is.

    >>> make_pde("burgers", nu=0.1)
    Operator('burgers', u_t + u*u_x - 0.1*u_xx, coordinates ('x', 't'))
    >>> make_pde("navier_stokes")
    Traceback (most recent call last):
    ...
    ValueError: pde must be an Operator or one of ['allen_cahn', ...], got 'navier_stokes'
    """
    if isinstance(pde, Operator):
        if params:
            raise ValueError("pde parameters can only be given with a PDE name")
        return pde
    if isinstance(pde, str) and pde in PDES:
        try:
            return PDES[pde](**params)
        except TypeError as exc:
            raise TypeError(f"bad parameters for pde {pde!r}: {exc}") from None
    raise ValueError(f"pde must be an Operator or one of {sorted(PDES)}, got {pde!r}")
