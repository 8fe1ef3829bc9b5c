r"""PDE problems for physics-informed training: domains, data, reference solutions, sampling.

Each :class:`PDEProblem` names its residual (``pde`` and ``pde_params``, the
operators of :mod:`mgnn.pinn.operators`), a box domain with named faces, the
source ``f``, boundary and initial conditions on faces, periodic coordinates,
a reference solution on an evaluation grid (closed form, or computed), and the
fields of an output transform that imposes the conditions exactly. Collocation
points are drawn by :meth:`PDEProblem.sample`: uniformly at random, by Latin
hypercube or by scrambled Sobol sampling (``scipy.stats.qmc``), seeded.

================================  ================================================
problem                           equation, domain, reference solution
================================  ================================================
:func:`poisson_1d`                -u'' = f on [0, 1], u(0) = u(1) = 0;
                                  u = sin 2 pi x + 0.1 sin 8 pi x
:func:`poisson_2d`                -Laplace u = f on [0, 1]^2, u = 0 on the
                                  boundary; u = sin pi x sin pi y
:func:`burgers_1d`                u_t + u u_x = nu u_xx, x in [-1, 1], t in [0, 1],
                                  u(x, 0) = -sin pi x, u(+-1, t) = 0,
                                  nu = 0.01/pi; Cole-Hopf formula by quadrature
:func:`allen_cahn_1d`             u_t = eps u_xx + 5 u - 5 u^3, x in [-1, 1]
                                  periodic, u(x, 0) = x^2 cos pi x; Fourier
                                  ETDRK4 (512 modes)
:func:`diffusion_advection_1d`    u_t + a u_x = nu u_xx on [0, 1] x [0, 1];
                                  u = exp(-nu k^2 t) sin k(x - a t)
:func:`klein_gordon_1d`           u_tt - u_xx + u^3 = f on [0, 1] x [0, 1],
                                  u_t(x, 0) = 0; u = x cos 5 pi t + (x t)^3
================================  ================================================

Error measure: the relative L2 error on the evaluation grid,
``||u - u_ref||_2 / ||u_ref||_2`` (:meth:`PDEProblem.relative_l2`).
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from mgnn._validation import check_choice, check_positive_int, check_scalar

__all__ = ["Box", "BoundaryCondition", "Collocation", "PDEProblem", "PDE_PROBLEMS",
           "SAMPLING", "pde_problem", "poisson_1d", "poisson_2d", "burgers_1d",
           "allen_cahn_1d", "diffusion_advection_1d", "klein_gordon_1d",
           "burgers_cole_hopf", "allen_cahn_spectral"]

SAMPLING = ("lhs", "uniform", "sobol")


def _unit_samples(n, d, method, rng):
    """``n`` points in [0, 1)^d by ``method`` (seeded by the Generator ``rng``)."""
    if d == 0:
        return np.zeros((n, 0))
    if method == "uniform":
        return rng.uniform(0.0, 1.0, size=(n, d))
    from scipy.stats import qmc

    if method == "lhs":
        return qmc.LatinHypercube(d, seed=rng).random(n)
    m = max(0, math.ceil(math.log2(max(n, 1))))
    return qmc.Sobol(d, scramble=True, seed=rng).random_base2(m)[:n]


class Box:
    """An axis-aligned box with named coordinates and faces.

    Faces are named ``'<coordinate>=<bound>'``, e.g. ``'x=0'``, ``'t=0'``.

    Examples
    --------
    >>> B = Box([-1, 0], [1, 1], ("x", "t"))
    >>> B
    Box(x in [-1, 1], t in [0, 1])
    >>> B.faces
    ('x=-1', 'x=1', 't=0', 't=1')
    >>> B.face("t=0")
    (1, 'lo')
    >>> B.sample_face("x=1", 3, "lhs", 0)[:, 0]
    array([1., 1., 1.])
    """

    def __init__(self, lower, upper, names=None):
        lo = np.asarray(lower, dtype=np.float64).reshape(-1)
        hi = np.asarray(upper, dtype=np.float64).reshape(-1)
        if lo.shape != hi.shape or lo.size == 0 or not np.all(hi > lo):
            raise ValueError(f"lower and upper must have the same length and upper > lower, "
                             f"got {lower!r}, {upper!r}")
        self.lower, self.upper = lo, hi
        self.d = lo.size
        if names is None:
            names = ("x", "y", "z")[: self.d] if self.d <= 3 else tuple(
                f"x{j}" for j in range(self.d))
        names = tuple(str(n) for n in names)
        if len(names) != self.d or len(set(names)) != self.d:
            raise ValueError(f"names must be {self.d} distinct coordinate names, got {names}")
        self.names = names
        self._faces = {}
        for j, nm in enumerate(names):
            self._faces[f"{nm}={lo[j]:g}"] = (j, "lo")
            self._faces[f"{nm}={hi[j]:g}"] = (j, "hi")
        self.faces = tuple(self._faces)

    def __repr__(self):
        parts = [f"{n} in [{a:g}, {b:g}]" for n, a, b in zip(self.names, self.lower, self.upper,
                                                             strict=True)]
        return f"Box({', '.join(parts)})"

    def face(self, name):
        """``(coordinate, 'lo'|'hi')`` of a face name, or ValueError listing the faces."""
        try:
            return self._faces[name]
        except (KeyError, TypeError):
            raise ValueError(f"unknown face {name!r}; the faces of {self!r} are "
                             f"{list(self.faces)}") from None

    def measure(self, name):
        """(d-1)-dimensional size of a face (1 for the end points of an interval)."""
        j, _ = self.face(name)
        return float(np.prod(np.delete(self.upper - self.lower, j)))

    def contains(self, X, tol=1e-12):
        return np.all((X >= self.lower - tol) & (X <= self.upper + tol), axis=1)

    def sample_interior(self, n, method="lhs", seed=None):
        check_choice(method, "method", SAMPLING)
        rng = np.random.default_rng(seed)
        return self.lower + (self.upper - self.lower) * _unit_samples(n, self.d, method, rng)

    def sample_face(self, name, n, method="lhs", seed=None):
        """``n`` points on a face (one point for a face of a 1-D box)."""
        j, side = self.face(name)
        check_choice(method, "method", SAMPLING)
        if self.d == 1:
            n = 1
        rng = np.random.default_rng(seed)
        others = [i for i in range(self.d) if i != j]
        U = _unit_samples(n, len(others), method, rng)
        X = np.empty((n, self.d))
        X[:, others] = self.lower[others] + (self.upper - self.lower)[others] * U
        X[:, j] = self.lower[j] if side == "lo" else self.upper[j]
        return X

    def grid(self, n):
        """Tensor grid with ``n[j]`` points along coordinate j (ends included), (prod n, d)."""
        n = [n] * self.d if isinstance(n, numbers.Integral) else list(n)
        axes = [np.linspace(a, b, k) for a, b, k in zip(self.lower, self.upper, n, strict=True)]
        mesh = np.meshgrid(*axes, indexing="ij")
        return np.stack([m.ravel() for m in mesh], axis=1)


@dataclass(frozen=True)
class BoundaryCondition:
    """``u = g`` (``kind='dirichlet'``) or ``du/dx_dim = g`` (``'derivative'``) on a face."""

    face: str
    value: object = 0.0  # number or callable g(X) -> (n,)
    kind: str = "dirichlet"
    dim: int = None

    def values(self, X):
        if callable(self.value):
            return np.asarray(self.value(X), dtype=np.float64).reshape(-1)
        return np.full(X.shape[0], float(self.value))


@dataclass
class Collocation:
    """Collocation points: ``interior`` (n, d) and ``boundary`` {face condition label: (n_f, d)}."""

    interior: np.ndarray
    boundary: dict = field(default_factory=dict)

    def __repr__(self):
        b = ", ".join(f"{k}: {len(v)}" for k, v in self.boundary.items())
        return f"Collocation(interior: {len(self.interior)}, boundary: {{{b}}})"


@dataclass(eq=False)
class PDEProblem:
    """A PDE on a box with data, conditions and a reference solution (module docstring).

    Attributes
    ----------
    name : str
    pde : str
        Operator name (:data:`mgnn.pinn.operators.PDES`); ``pde_params`` its parameters.
    domain : Box
    source : callable or None
        ``f(X) -> (n,)``.
    boundary : tuple of BoundaryCondition
    periodic : dict {coordinate: (lo, hi)}
    solution : callable or None
        Closed-form ``u(X)`` where one exists.
    reference : callable
        ``reference() -> (X, U)`` on the evaluation grid (cached by :meth:`evaluation_grid`).
    exact_bc : tuple or None
        ``(A, B, description)``: callables ``X -> (value, gradient, Hessian
        diagonal)`` of an output transform ``u = A + B N`` meeting every
        condition in ``boundary``.
    grid_shape : tuple
        Shape of the evaluation grid (for plotting).
    """

    name: str
    pde: str
    pde_params: dict
    domain: Box
    source: object
    boundary: tuple
    periodic: dict
    solution: object
    reference: object
    exact_bc: object
    grid_shape: tuple
    description: str = ""

    def __post_init__(self):
        for i, bc in enumerate(self.boundary):
            if not isinstance(bc, BoundaryCondition):
                raise TypeError(f"boundary[{i}] must be a BoundaryCondition, got "
                                f"{type(bc).__name__}")
            try:
                j, _ = self.domain.face(bc.face)
            except ValueError as exc:
                raise ValueError(f"boundary[{i}]: {exc}") from None
            check_choice(bc.kind, f"boundary[{i}].kind", ("dirichlet", "derivative"))
            if bc.kind == "derivative" and not (isinstance(bc.dim, numbers.Integral)
                                                and 0 <= bc.dim < self.domain.d):
                raise ValueError(f"boundary[{i}].dim must be a coordinate index in 0.."
                                 f"{self.domain.d - 1}, got {bc.dim!r}")
            if j in self.periodic:
                raise ValueError(f"boundary[{i}] is on face {bc.face!r} of the periodic "
                                 f"coordinate {self.domain.names[j]!r}")
        for j, span in self.periodic.items():
            lo, hi = span
            if not (0 <= j < self.domain.d) or lo != self.domain.lower[j] or \
                    hi != self.domain.upper[j]:
                raise ValueError(f"periodic coordinate {j} with span {span} does not match "
                                 f"the domain {self.domain!r}")

    def __repr__(self):
        conds = ", ".join(f"{b.kind}@{b.face}" + (f"(d/d{self.domain.names[b.dim]})"
                                                   if b.kind == "derivative" else "")
                          for b in self.boundary)
        per = (", periodic in " + ", ".join(self.domain.names[j] for j in self.periodic)
               if self.periodic else "")
        return (f"PDEProblem({self.name!r}, pde={self.pde!r} {self.pde_params}, "
                f"{self.domain!r}{per}, conditions: {conds or 'none'})")

    def condition_label(self, i):
        bc = self.boundary[i]
        if bc.kind == "dirichlet":
            return f"u@{bc.face}"
        return f"u_{self.domain.names[bc.dim]}@{bc.face}"

    def sample(self, n_interior, n_boundary, method="lhs", seed=0):
        """Seeded collocation points.

        ``n_boundary`` is split over the conditions in proportion to the size of
        their faces (at least one point each; a face of a 1-D domain is one point).

        Examples
        --------
        >>> p = burgers_1d()
        >>> p.sample(100, 40, "lhs", seed=0)
        Collocation(interior: 100, boundary: {u@x=-1: 10, u@x=1: 10, u@t=0: 20})
        """
        n_interior = check_positive_int(n_interior, "n_interior")
        n_boundary = check_positive_int(n_boundary, "n_boundary",
                                        minimum=1 if self.boundary else 0)
        check_choice(method, "method", SAMPLING)
        ss = np.random.SeedSequence(seed)
        seeds = ss.spawn(1 + len(self.boundary))
        X = self.domain.sample_interior(n_interior, method, np.random.default_rng(seeds[0]))
        sizes = np.array([self.domain.measure(b.face) for b in self.boundary])
        out = {}
        if len(sizes):
            counts = np.maximum(1, np.round(n_boundary * sizes / sizes.sum()).astype(int))
            for i, (b, k) in enumerate(zip(self.boundary, counts, strict=True)):
                out[self.condition_label(i)] = self.domain.sample_face(
                    b.face, int(k), method, np.random.default_rng(seeds[1 + i]))
        return Collocation(X, out)

    def source_values(self, X):
        if self.source is None:
            return np.zeros(X.shape[0])
        return np.asarray(self.source(X), dtype=np.float64).reshape(-1)

    def evaluation_grid(self):
        """``(X, U)``: the reference solution on the evaluation grid (computed once)."""
        return _cached_reference(self)

    def relative_l2(self, u):
        """Relative L2 error of values ``u`` (n,) on the evaluation grid, or of a callable
        ``u(X)``."""
        X, U = self.evaluation_grid()
        v = u(X) if callable(u) else u
        v = np.asarray(v, dtype=np.float64).reshape(-1)
        if v.shape != U.shape:
            raise ValueError(f"u must give one value per grid point ({U.size}), got {v.size}")
        return float(np.linalg.norm(v - U) / np.linalg.norm(U))


@functools.lru_cache(maxsize=16)
def _cached_reference(problem):
    X, U = problem.reference()
    X = np.ascontiguousarray(X, dtype=np.float64)
    U = np.ascontiguousarray(U, dtype=np.float64).reshape(-1)
    X.flags.writeable = False
    U.flags.writeable = False
    return X, U


def _closed_form_reference(domain, solution, shape):
    def ref():
        X = domain.grid(shape)
        return X, solution(X)
    return ref


# ---------------------------------------------------------------------------
# Poisson
# ---------------------------------------------------------------------------
def poisson_1d(grid=1001):
    """-u'' = f on [0, 1], u(0) = u(1) = 0, u = sin(2 pi x) + 0.1 sin(8 pi x).

    >>> p = poisson_1d()
    >>> X, U = p.evaluation_grid()
    >>> X.shape, round(float(abs(U).max()), 3)
    ((1001, 1), 1.053)
    """
    grid = check_positive_int(grid, "grid", minimum=2)
    a, b = 2 * np.pi, 8 * np.pi

    def u(X):
        return np.sin(a * X[:, 0]) + 0.1 * np.sin(b * X[:, 0])

    def f(X):
        return a * a * np.sin(a * X[:, 0]) + 0.1 * b * b * np.sin(b * X[:, 0])

    box = Box([0.0], [1.0], ("x",))
    return PDEProblem("poisson_1d", "poisson", {"n_dims": 1}, box, f,
                      (BoundaryCondition("x=0"), BoundaryCondition("x=1")), {}, u,
                      _closed_form_reference(box, u, grid),
                      (lambda X: (0.0, 0.0, 0.0), _box_bubble(box, [(0, "lo"), (0, "hi")]),
                       "u = x(1-x) N"), (grid,),
                      "manufactured: sin(2 pi x) + 0.1 sin(8 pi x)")


def poisson_2d(grid=101):
    """-Laplace u = f on [0, 1]^2, u = 0 on the boundary, u = sin(pi x) sin(pi y).

    >>> poisson_2d()                                  # doctest: +NORMALIZE_WHITESPACE
    PDEProblem('poisson_2d', pde='poisson' {'n_dims': 2}, Box(x in [0, 1], y in [0, 1]),
               conditions: dirichlet@x=0, dirichlet@x=1, dirichlet@y=0, dirichlet@y=1)
    """
    grid = check_positive_int(grid, "grid", minimum=2)

    def u(X):
        return np.sin(np.pi * X[:, 0]) * np.sin(np.pi * X[:, 1])

    def f(X):
        return 2 * np.pi ** 2 * u(X)

    box = Box([0.0, 0.0], [1.0, 1.0], ("x", "y"))
    faces = [(0, "lo"), (0, "hi"), (1, "lo"), (1, "hi")]
    return PDEProblem("poisson_2d", "poisson", {"n_dims": 2}, box, f,
                      tuple(BoundaryCondition(n) for n in box.faces), {}, u,
                      _closed_form_reference(box, u, grid),
                      (lambda X: (0.0, 0.0, 0.0), _box_bubble(box, faces),
                       "u = x(1-x)y(1-y) N"), (grid, grid),
                      "manufactured: sin(pi x) sin(pi y)")


def _box_bubble(box, faces, power=None):
    """Triple-valued callable of prod over faces of the normalised distance (power p)."""
    lo, hi = box.lower, box.upper
    power = dict(power or {})
    factors = []
    for j, side in faces:
        L = hi[j] - lo[j]
        c0, c1 = (-lo[j] / L, 1.0 / L) if side == "lo" else (hi[j] / L, -1.0 / L)
        factors.append((j, c0, c1, int(power.get((j, side), 1))))

    def fn(X):
        n, d = X.shape
        polys = [np.polynomial.Polynomial([1.0]) for _ in range(d)]
        for j, c0, c1, p in factors:
            polys[j] = polys[j] * np.polynomial.Polynomial([c0, c1]) ** p
        vals = np.stack([q(X[:, j]) for j, q in enumerate(polys)], axis=1)
        v = np.prod(vals, axis=1)
        g, H = np.empty_like(X), np.empty_like(X)
        for j in range(d):
            others = np.prod(np.delete(vals, j, axis=1), axis=1) if d > 1 else 1.0
            g[:, j] = polys[j].deriv(1)(X[:, j]) * others
            H[:, j] = polys[j].deriv(2)(X[:, j]) * others
        return v, g, H

    return fn


# ---------------------------------------------------------------------------
# Burgers (Cole-Hopf)
# ---------------------------------------------------------------------------
def burgers_cole_hopf(x, t, nu, n_quad=1601):
    r"""Viscous Burgers with u(x, 0) = -sin(pi x) on the whole line (= on [-1, 1] with
    zero boundary values, by symmetry), by the Cole-Hopf formula::

        u(x, t) = - int sin(pi (x - e)) F(x - e) G(e) de / int F(x - e) G(e) de,
        F(y) = exp(-cos(pi y) / (2 pi nu)),  G(e) = exp(-e^2 / (4 nu t))

    evaluated by the trapezoidal rule on ``n_quad`` nodes over the interval where
    the integrand is not negligible (the exponents are combined and their maximum
    subtracted first, so nothing overflows for small nu). ``x`` and ``t`` broadcast;
    ``t = 0`` gives the initial value.

    Examples
    --------
    >>> import numpy as np
    >>> float(burgers_cole_hopf(0.5, 1e-12, 0.01 / np.pi))   # the initial value -sin(pi/2)
    -1.0
    """
    x, t = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(t, dtype=np.float64))
    out = np.empty(x.shape)
    xf, tf, of = x.reshape(-1), t.reshape(-1), out.reshape(-1)
    small = tf <= 0
    of[small] = -np.sin(np.pi * xf[small])
    idx = np.flatnonzero(~small)
    a = 1.0 / (2 * np.pi * nu)
    z = np.linspace(-1.0, 1.0, n_quad)
    for c0 in range(0, idx.size, 256):
        k = idx[c0:c0 + 256]
        xs, ts = xf[k][:, None], tf[k][:, None]
        half = np.sqrt(4 * nu * ts * (2 * a + 60.0))  # beyond: exp(< -60) relative
        e = half * z[None, :]
        y = xs - e
        E = -a * np.cos(np.pi * y) - e * e / (4 * nu * ts)
        E -= E.max(axis=1, keepdims=True)
        w = np.exp(E)
        w[:, 0] *= 0.5
        w[:, -1] *= 0.5
        of[k] = -(np.sin(np.pi * y) * w).sum(axis=1) / w.sum(axis=1)
    return out


def burgers_1d(nu=0.01 / np.pi, grid=(256, 101)):
    """u_t + u u_x = nu u_xx on [-1, 1] x [0, 1], u(x, 0) = -sin(pi x), u(+-1, t) = 0.

    The reference is the Cole-Hopf solution (:func:`burgers_cole_hopf`) on a
    256 x 101 grid (x, t); the shock at x = 0 steepens until t ~ 0.3 and has a
    width of a few nu.
    """
    nu = check_scalar(nu, "nu", low=0.0, low_open=True)
    box = Box([-1.0, 0.0], [1.0, 1.0], ("x", "t"))

    def ref():
        X = box.grid(grid)
        return X, burgers_cole_hopf(X[:, 0], X[:, 1], nu)

    def A(X):
        x = X[:, 0]
        g = np.zeros_like(X)
        H = np.zeros_like(X)
        g[:, 0] = -np.pi * np.cos(np.pi * x)
        H[:, 0] = np.pi ** 2 * np.sin(np.pi * x)
        return -np.sin(np.pi * x), g, H

    conds = (BoundaryCondition("x=-1"), BoundaryCondition("x=1"),
             BoundaryCondition("t=0", lambda X: -np.sin(np.pi * X[:, 0])))
    return PDEProblem("burgers_1d", "burgers", {"nu": nu}, box, None, conds, {}, None, ref,
                      (A, _box_bubble(box, [(0, "lo"), (0, "hi"), (1, "lo")]),
                       "u = -sin(pi x) + (1+x)(1-x) t N / 4"), tuple(grid),
                      f"viscous Burgers, nu = {nu:.6g}; reference by Cole-Hopf quadrature")


# ---------------------------------------------------------------------------
# Allen-Cahn (Fourier spectral, ETDRK4)
# ---------------------------------------------------------------------------
def allen_cahn_spectral(eps=1e-4, k=5.0, n_modes=512, dt=1e-4, t_out=None):
    """Allen-Cahn ``u_t = eps u_xx + k u - k u^3``, periodic on [-1, 1), u(x, 0) =
    x^2 cos(pi x), by Fourier pseudo-spectral differentiation and ETDRK4 time stepping
    (Kassam & Trefethen 2005; phi-functions by a contour integral of 32 points).

    Returns ``(x, t_out, U)`` with ``U[i, j] = u(x[i], t_out[j])``.

    Examples
    --------
    >>> x, t, U = allen_cahn_spectral(n_modes=64, dt=1e-3, t_out=[0.0, 0.5])
    >>> U.shape, bool(np.allclose(U[:, 0], x**2 * np.cos(np.pi * x)))
    ((64, 2), True)
    """
    n_modes = check_positive_int(n_modes, "n_modes", minimum=8)
    dt = check_scalar(dt, "dt", low=0.0, low_open=True)
    t_out = np.linspace(0.0, 1.0, 201) if t_out is None else np.asarray(t_out, dtype=np.float64)
    x = -1.0 + 2.0 * np.arange(n_modes) / n_modes
    kk = np.pi * np.fft.rfftfreq(n_modes, d=1.0 / n_modes)  # wavenumbers on a period of 2
    Lin = -eps * kk ** 2 + k
    E, E2 = np.exp(dt * Lin), np.exp(dt * Lin / 2)
    M = 32
    r = np.exp(1j * np.pi * (np.arange(1, M + 1) - 0.5) / M)
    LR = dt * Lin[:, None] + r[None, :]
    Q = dt * np.real(np.mean((np.exp(LR / 2) - 1) / LR, axis=1))
    f1 = dt * np.real(np.mean((-4 - LR + np.exp(LR) * (4 - 3 * LR + LR ** 2)) / LR ** 3, axis=1))
    f2 = dt * np.real(np.mean((2 + LR + np.exp(LR) * (-2 + LR)) / LR ** 3, axis=1))
    f3 = dt * np.real(np.mean((-4 - 3 * LR - LR ** 2 + np.exp(LR) * (4 - LR)) / LR ** 3,
                              axis=1))

    def N(vh):
        u = np.fft.irfft(vh, n_modes)
        return np.fft.rfft(-k * u ** 3)

    u = x ** 2 * np.cos(np.pi * x)
    v = np.fft.rfft(u)
    U = np.empty((n_modes, t_out.size))
    t = 0.0
    for j, target in enumerate(t_out):
        while t < target - 1e-12:
            h = min(dt, target - t)
            if h < dt - 1e-14:  # a partial step to land on t_out: plain RK4 on the ODE
                v = _rk4_partial(v, h, Lin, N)
            else:
                Nv = N(v)
                a = E2 * v + Q * Nv
                Na = N(a)
                b = E2 * v + Q * Na
                Nb = N(b)
                c = E2 * a + Q * (2 * Nb - Nv)
                Nc = N(c)
                v = E * v + Nv * f1 + 2 * (Na + Nb) * f2 + Nc * f3
            t += h
        U[:, j] = np.fft.irfft(v, n_modes)
    return x, t_out, U


def _rk4_partial(v, h, Lin, N):
    def F(w):
        return Lin * w + N(w)
    k1 = F(v)
    k2 = F(v + 0.5 * h * k1)
    k3 = F(v + 0.5 * h * k2)
    k4 = F(v + h * k3)
    return v + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def allen_cahn_1d(eps=1e-4, k=5.0, n_modes=512, dt=1e-4):
    """u_t - eps u_xx + k u^3 - k u = 0, x in [-1, 1] periodic, t in [0, 1],
    u(x, 0) = x^2 cos(pi x) (Raissi et al.'s Allen-Cahn); reference by
    :func:`allen_cahn_spectral` on 512 x 201 points (relative L2 difference 1.1e-5 from
    a 2048-mode solve, concentrated near x = +-1 at small t, where the initial value's
    derivative is not periodic).
    """
    eps = check_scalar(eps, "eps", low=0.0, low_open=True)
    box = Box([-1.0, 0.0], [1.0, 1.0], ("x", "t"))

    def ref():
        x, t, U = allen_cahn_spectral(eps, k, n_modes, dt)
        Xg, Tg = np.meshgrid(x, t, indexing="ij")
        return np.stack([Xg.ravel(), Tg.ravel()], axis=1), U.ravel()

    def u0(X):
        return X[:, 0] ** 2 * np.cos(np.pi * X[:, 0])

    def A(X):
        x = X[:, 0]
        c, s = np.cos(np.pi * x), np.sin(np.pi * x)
        g = np.zeros_like(X)
        H = np.zeros_like(X)
        g[:, 0] = 2 * x * c - np.pi * x * x * s
        H[:, 0] = 2 * c - 4 * np.pi * x * s - np.pi ** 2 * x * x * c
        return x * x * c, g, H

    return PDEProblem("allen_cahn_1d", "allen_cahn", {"eps": eps, "k": k}, box, None,
                      (BoundaryCondition("t=0", u0),), {0: (-1.0, 1.0)}, None, ref,
                      (A, _box_bubble(box, [(1, "lo")]), "u = x^2 cos(pi x) + t N"),
                      (n_modes, 201),
                      f"Allen-Cahn, eps = {eps:g}; reference by Fourier ETDRK4")


# ---------------------------------------------------------------------------
# diffusion-advection and Klein-Gordon (closed forms)
# ---------------------------------------------------------------------------
def diffusion_advection_1d(nu=0.05, a=1.0, grid=(201, 101)):
    """u_t + a u_x = nu u_xx on [0, 1] x [0, 1] with u = exp(-nu k^2 t) sin(k (x - a t)),
    k = 2 pi; Dirichlet data on x = 0, 1 and t = 0 from it."""
    nu = check_scalar(nu, "nu", low=0.0, low_open=True)
    a = check_scalar(a, "a")
    kw = 2 * np.pi
    box = Box([0.0, 0.0], [1.0, 1.0], ("x", "t"))

    def u(X):
        return np.exp(-nu * kw ** 2 * X[:, 1]) * np.sin(kw * (X[:, 0] - a * X[:, 1]))

    def A(X):
        # sin(k x) + g(t), g(t) = u(0, t) = u(1, t)
        x, t = X[:, 0], X[:, 1]
        dec = np.exp(-nu * kw ** 2 * t)
        g = -dec * np.sin(kw * a * t)
        gt = nu * kw ** 2 * dec * np.sin(kw * a * t) - dec * kw * a * np.cos(kw * a * t)
        gtt = (-(nu * kw ** 2) ** 2 * dec * np.sin(kw * a * t)
               + 2 * nu * kw ** 2 * dec * kw * a * np.cos(kw * a * t)
               + dec * (kw * a) ** 2 * np.sin(kw * a * t))
        G = np.stack([kw * np.cos(kw * x), gt], axis=1)
        H = np.stack([-kw ** 2 * np.sin(kw * x), gtt], axis=1)
        return np.sin(kw * x) + g, G, H

    conds = (BoundaryCondition("x=0", u), BoundaryCondition("x=1", u),
             BoundaryCondition("t=0", u))
    return PDEProblem("diffusion_advection_1d", "diffusion_advection", {"nu": nu, "a": a},
                      box, None, conds, {}, u, _closed_form_reference(box, u, grid),
                      (A, _box_bubble(box, [(0, "lo"), (0, "hi"), (1, "lo")]),
                       "u = sin(2 pi x) + u(0, t) + x(1-x) t N"), tuple(grid),
                      "travelling decaying wave exp(-nu k^2 t) sin(k(x - a t))")


def klein_gordon_1d(grid=(101, 101)):
    """u_tt - u_xx + u^3 = f on [0, 1] x [0, 1] with u = x cos(5 pi t) + (x t)^3
    (Wang, Teng & Perdikaris 2021); u on x = 0, 1 and t = 0, u_t(x, 0) = 0."""
    box = Box([0.0, 0.0], [1.0, 1.0], ("x", "t"))
    w = 5 * np.pi

    def u(X):
        x, t = X[:, 0], X[:, 1]
        return x * np.cos(w * t) + (x * t) ** 3

    def f(X):
        x, t = X[:, 0], X[:, 1]
        utt = -w * w * x * np.cos(w * t) + 6 * x ** 3 * t
        uxx = 6 * x * t ** 3
        return utt - uxx + u(X) ** 3

    def A(X):
        x, t = X[:, 0], X[:, 1]
        c = np.cos(w * t) + t ** 3
        ct = -w * np.sin(w * t) + 3 * t * t
        ctt = -w * w * np.cos(w * t) + 6 * t
        return x * c, np.stack([c, x * ct], axis=1), np.stack([0 * x, x * ctt], axis=1)

    conds = (BoundaryCondition("x=0", u), BoundaryCondition("x=1", u),
             BoundaryCondition("t=0", u), BoundaryCondition("t=0", 0.0, "derivative", 1))
    return PDEProblem("klein_gordon_1d", "klein_gordon",
                      {"alpha": -1.0, "beta": 0.0, "gamma": 1.0, "power": 3}, box, f, conds,
                      {}, u, _closed_form_reference(box, u, grid),
                      (A, _box_bubble(box, [(0, "lo"), (0, "hi"), (1, "lo")],
                                      {(1, "lo"): 2}),
                       "u = x (cos(5 pi t) + t^3) + x(1-x) t^2 N"), tuple(grid),
                      "manufactured: x cos(5 pi t) + (x t)^3")


#: The problems by name.
PDE_PROBLEMS = {"poisson_1d": poisson_1d, "poisson_2d": poisson_2d, "burgers_1d": burgers_1d,
                "allen_cahn_1d": allen_cahn_1d,
                "diffusion_advection_1d": diffusion_advection_1d,
                "klein_gordon_1d": klein_gordon_1d}


def pde_problem(name, **params):
    """A problem from :data:`PDE_PROBLEMS` by name.

    >>> pde_problem("heat_3d")
    Traceback (most recent call last):
    ...
    ValueError: name must be one of ['allen_cahn_1d', 'burgers_1d', ...], got 'heat_3d'
    """
    if name not in PDE_PROBLEMS:
        raise ValueError(f"name must be one of {sorted(PDE_PROBLEMS)}, got {name!r}")
    return PDE_PROBLEMS[name](**params)
