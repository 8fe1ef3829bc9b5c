r"""The physics-informed objective: weighted squared PDE residuals and conditions.

    J(theta) = sum_t  (w_t / (2 n_t)) sum_{i in term t} r_t(x_i; u_theta)^2
               + (tikhonov / 2) ||theta||^2 + smoothness term (as in Objective)

Term ``t`` is the PDE residual on the interior collocation points, or a
condition (Dirichlet ``u - g``, derivative ``u_j - g``) on boundary / initial
points; ``n_t`` is its number of points and ``w_t`` its weight. Each residual is
a polynomial in ``u``, its first and diagonal second input derivatives
(:mod:`mgnn.pinn.operators`); the network propagates exactly the derivative
streams a term needs (:mod:`mgnn.kernels.cpu_pinn`, one batched GEMM per layer),
so a Dirichlet term costs one stream and a 2-D Poisson residual five.

Derivatives with respect to theta are exact:

* ``grad``: the reverse sweep of all streams;
* ``hessp`` with ``hessian='exact'`` (default): the exact Hessian-vector
  product, by a tangent sweep of the streams and the second-order adjoint sweep
  (which uses sigma''' and sigma''''), including the residual's own curvature
  (``u u_x``, ``u^3``, ...). Exact for tanh and identity; for the smoothed ReLU
  (allowed for first-order PDEs only) sigma''' is 0 between its kinks and the
  product is exact wherever no pre-activation sits exactly at a kink;
* ``hessp`` with ``hessian='gauss_newton'`` (and :meth:`PINNObjective.gnp`
  always): the Gauss-Newton product ``J^T C J v`` (J the Jacobian of the
  residuals, C the weights), symmetric positive semidefinite (plus the
  regulariser's Hessian).

Mini-batches: ``batch`` is an index array into all points, numbered term after
term (interior first, then the conditions in order: :attr:`PINNObjective.offsets`).
A batch value is the unbiased estimate ``(n / |batch|) sum_{i in batch}
(w_t(i) / (2 n_t(i))) r_i^2`` (n all points). :meth:`PINNObjective.subset` is the
other use of an index set, for domain decomposition by collocation points: the
objective restricted to those points *without* rescaling, so that the objectives
of a partition of the points sum to this one (values and gradients).

Work: one unit is one plain value-and-gradient of the same network (an
:class:`~mgnn.objective.Objective` sweep) on all points of the objective. A
PINN sweep of S streams over n points costs exactly S times the GEMM flops of a
plain sweep over n points, so a value-and-gradient on all points is charged
``sum_t S_t n_t / n`` units, a value a third of that, an exact Hessian-vector
product 8/3 of it and a Gauss-Newton product 5/3 (the GEMM counts of the
sweeps); a mini-batch is charged its share of these flops. ``benchmarks/pinn.py``
measures the time ratio next to this flop ratio.
"""

from __future__ import annotations

import numbers
from collections import OrderedDict

import numpy as np

from mgnn._validation import check_array, check_choice, check_scalar
from mgnn.backend import get_namespace, to_numpy
from mgnn.objective import Objective
from mgnn.pinn.operators import derivative, dirichlet, make_pde
from mgnn.pinn.streams import (
    SerialStreams,
    StreamLayout,
    StreamPropagation,
    StreamWorkspace,
    backward_sweep,
    check_stream_activation,
    forward_sweep,
    second_order_sweep,
    tangent_sweep,
)
from mgnn.pinn.transforms import IdentityEmbedding, OutputTransform
from mgnn.vectorspace import EuclideanSpace
from mgnn.work import WorkCounter

__all__ = ["Condition", "PINNObjective", "HESSIANS"]

HESSIANS = ("exact", "gauss_newton")
#: Cost of each evaluation relative to a value-and-gradient of the same streams
#: (GEMM counts: forward 1, forward + adjoint 3, + tangent and second-order adjoint 8,
#: Gauss-Newton: forward, tangent and adjoint 5).
_RATIO = {"value": 1.0 / 3.0, "grad": 1.0, "exact": 8.0 / 3.0, "gauss_newton": 5.0 / 3.0}


def _values(spec, X, name, dtype):
    """Data at the points: None (zeros), a number, an array (n,) or a callable f(X)."""
    n = X.shape[0]
    if spec is None:
        return np.zeros(n, dtype)
    if callable(spec):
        v = np.asarray(spec(X), dtype=np.float64)
    elif isinstance(spec, numbers.Real) and not isinstance(spec, bool):
        v = np.full(n, float(spec))
    else:
        v = np.asarray(spec, dtype=np.float64)
    if v.ndim == 2 and v.shape[1] == 1:
        v = v[:, 0]
    if v.shape != (n,):
        raise ValueError(f"{name} must give one value per point ({n}), got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contains NaN or inf")
    return v.astype(dtype)


class Condition:
    """A boundary or initial condition imposed as a penalty term.

    Parameters
    ----------
    points : (n, d) array
        Where the condition holds.
    value : float, array (n,) or callable ``g(X) -> (n,)``
        Right-hand side ``g`` (default 0).
    kind : {'dirichlet', 'derivative'}
        ``u = g``, or ``du/dx_dim = g``.
    dim : int, optional
        The coordinate of a 'derivative' condition.
    weight : float
        Weight ``w_t`` of the term (the mean of its squared residuals is scaled by it).
    name : str, optional
        Label in ``repr`` and :meth:`PINNObjective.term_values`.

    Examples
    --------
    >>> import numpy as np
    >>> Condition(np.zeros((4, 2)), kind="derivative", dim=1, name="u_t(x,0)=0")
    Condition('u_t(x,0)=0', derivative along coordinate 1, 4 points, weight 1)
    """

    KINDS = ("dirichlet", "derivative")

    def __init__(self, points, value=0.0, *, kind="dirichlet", dim=None, weight=1.0, name=None):
        self.points = check_array(points, "points", ndim=2)
        self.value = value
        self.kind = check_choice(kind, "kind", self.KINDS)
        if self.kind == "derivative":
            if dim is None:
                raise ValueError("a 'derivative' condition needs dim (the coordinate)")
            if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or not (
                    0 <= dim < self.points.shape[1]):
                raise ValueError(f"dim must be a coordinate index in 0.."
                                 f"{self.points.shape[1] - 1}, got {dim!r}")
        elif dim is not None:
            raise ValueError("dim has no effect on a 'dirichlet' condition")
        self.dim = dim
        self.weight = check_scalar(weight, "weight", low=0.0, low_open=True)
        self.name = name or (self.kind if dim is None else f"{self.kind}_{dim}")

    def __repr__(self):
        what = "dirichlet" if self.kind == "dirichlet" else \
            f"derivative along coordinate {self.dim}"
        return (f"Condition({self.name!r}, {what}, {self.points.shape[0]} points, "
                f"weight {self.weight:g})")

    def operator(self, n_dims, coords=None):
        if self.kind == "dirichlet":
            return dirichlet(n_dims, coords)
        return derivative(n_dims, self.dim, coords)


class _Term:
    """One residual term on its points: operator, data, stream layout, input stack,
    transform coefficients and the per-point weight c = w_t / n_t."""

    def __init__(self, name, op, X, f, weight, c, embedding, transform, xp=np):
        # X (host) for subsets; Vin, f and the transform coefficients live in xp
        self.name, self.op, self.X = name, op, X
        self.weight, self.c = weight, c
        self.layout = op.layout()
        self.n = X.shape[0]
        self.f = xp.asarray(f)
        self.Vin = xp.asarray(embedding.stack(X, self.layout))
        self.coef = None if transform is None else tuple(
            xp.asarray(a) for a in transform.coefficients(X, self.layout))

    def take(self, idx):
        """A term on the subset ``idx`` of the points (same per-point weight)."""
        t = _Term.__new__(_Term)
        t.__dict__.update(self.__dict__)
        xp = get_namespace(self.Vin)
        di = xp.asarray(idx)
        t.X, t.f, t.n = self.X[idx], self.f[di], len(idx)
        t.Vin = xp.ascontiguousarray(self.Vin[:, di])
        t.coef = None if self.coef is None else tuple(xp.ascontiguousarray(a[:, di])
                                                     for a in self.coef)
        return t


class PINNObjective(Objective):
    """Physics-informed loss of a ResNet: PDE residual + conditions, in the objective protocol.

    Parameters
    ----------
    net : ResNet
        Scalar output (``n_out=1``), ``task='regression'``, inputs = the
        embedding's features (the coordinates by default); tanh (or identity)
        for second-order PDEs, tanh or 'smooth_relu' for first-order ones.
    pde : Operator or str
        The residual (:mod:`mgnn.pinn.operators`), or a name from
        :data:`~mgnn.pinn.operators.PDES` (with ``pde_params``).
    interior : (n, d) array
        Collocation points of the residual.
    source : None, float, array (n,) or callable ``f(X)``
        Right-hand side ``f`` of the PDE at the interior points (default 0).
    conditions : sequence of Condition
        Boundary / initial conditions imposed as penalties.
    weight : float
        Weight of the residual term.
    transform : OutputTransform, optional
        ``u = A + B N`` imposing conditions exactly (then leave them out of
        ``conditions``).
    embedding : IdentityEmbedding or PeriodicEmbedding, optional
        Input features of the points (default: the raw coordinates).
    domain : (lower, upper), optional
        A box; when given, interior points must lie in it and condition points
        on its boundary.
    tikhonov, smoothness : float
        Regularisation as in :class:`~mgnn.objective.Objective`.
    hessian : {'exact', 'gauss_newton'}
        What :meth:`hessp` returns.
    propagation : StreamPropagation, optional
        :class:`~mgnn.pinn.streams.SerialStreams` (default) or
        :class:`~mgnn.pinn.propagation.MGRITStreams` (layer-parallel).
    space : EuclideanSpace, optional
    pde_params : dict, optional
        Parameters of a PDE given by name (e.g. ``{"nu": 0.01}`` for Burgers).

    Attributes
    ----------
    terms : list
        The residual terms (interior first, then the conditions): name, points,
        stream layout, weight.
    offsets : ndarray
        Where each term's points start in the numbering of ``batch`` and ``subset``.
    counter : WorkCounter
        Work in plain value-and-gradient units (module docstring).

    Examples
    --------
    -u'' = pi^2 sin(pi x) on [0, 1] with u(0) = u(1) = 0 (solution sin(pi x)):

    >>> import numpy as np
    >>> from mgnn.nets import ResNet
    >>> x = np.linspace(0, 1, 33)[1:-1, None]
    >>> bc = Condition(np.array([[0.0], [1.0]]), 0.0, name="ends")
    >>> net = ResNet(1, 8, 4, 1, task="regression")
    >>> obj = PINNObjective(net, "poisson", x, source=lambda X: np.pi**2 * np.sin(np.pi * X[:, 0]),
    ...                     conditions=[bc], pde_params={"n_dims": 1})
    >>> obj                                                # doctest: +NORMALIZE_WHITESPACE
    PINNObjective(ResNet(n_in=1, width=8, depth=4, n_out=1, T=1.0, h=0.25,
                  activation='tanh', n_params=313, dtype=float64),
      pde: -u_xx = f, hessian='exact', tikhonov=0, smoothness=0, propagation=SerialStreams()
      term      points  streams  weight  kind
      interior      31        3       1  -u_xx = f
      ends           2        1       1  u = g
      work per value-and-gradient on all points: 2.88 plain gradients)
    >>> theta = net.init(0)
    >>> f, g = obj.value_and_grad(theta)
    >>> Hg = obj.hessp(theta, g)
    >>> bool(g @ Hg > 0), obj.counter.njev
    (True, 1)
    """

    def __init__(self, net, pde, interior, *, source=None, conditions=(), weight=1.0,
                 transform=None, embedding=None, domain=None, tikhonov=0.0, smoothness=0.0,
                 hessian="exact", propagation=None, space=None, pde_params=None):
        if net.n_out != 1:
            raise ValueError(f"net must have a scalar output (n_out=1), got n_out={net.n_out}")
        if net.task != "regression":
            raise ValueError(f"net must have task='regression', got {net.task!r}")
        self.net = net
        self.pde = make_pde(pde, **(pde_params or {}))
        d = self.pde.n_dims
        xp = get_namespace(interior)
        X = to_numpy(check_array(interior, "interior", shape=(None, d), xp=xp))
        if X.shape[0] == 0:
            raise ValueError("interior must hold at least one point")
        dt = net.dtype
        if embedding is None:
            embedding = IdentityEmbedding(d)
        if not hasattr(embedding, "stack") or getattr(embedding, "n_dims", None) != d:
            raise ValueError(f"embedding must be an input embedding of {d} coordinates "
                             f"(the PDE's), got {embedding!r}")
        if embedding.n_features != net.n_in:
            raise ValueError(f"net must take the embedding's {embedding.n_features} features "
                             f"as inputs, got n_in={net.n_in}")
        if transform is not None and not isinstance(transform, OutputTransform):
            raise TypeError(f"transform must be an OutputTransform, got "
                            f"{type(transform).__name__}")
        self.embedding, self.transform = embedding, transform
        self.hessian = check_choice(hessian, "hessian", HESSIANS)
        self.tikhonov = check_scalar(tikhonov, "tikhonov", low=0.0)
        self.smoothness = check_scalar(smoothness, "smoothness", low=0.0)
        weight = check_scalar(weight, "weight", low=0.0, low_open=True)
        if isinstance(conditions, Condition):
            conditions = [conditions]
        conditions = list(conditions)
        for i, c in enumerate(conditions):
            if not isinstance(c, Condition):
                raise TypeError(f"conditions[{i}] must be a Condition, got {type(c).__name__}")
            if c.points.shape[1] != d:
                raise ValueError(f"conditions[{i}] ({c.name!r}) has points with "
                                 f"{c.points.shape[1]} coordinates; the PDE has {d}")
        self.domain = None
        if domain is not None:
            self.domain = self._check_domain(domain, d, X, conditions)
        coords = self.pde.coords
        X = np.ascontiguousarray(X, dtype=dt)
        terms = [_Term("interior", self.pde, X, _values(source, X, "source", dt), weight,
                       weight / X.shape[0], embedding, transform, xp)]
        names = {"interior"}
        for i, c in enumerate(conditions):
            name = c.name
            while name in names:
                name = f"{c.name}_{i}"
            names.add(name)
            Xc = np.ascontiguousarray(c.points, dtype=dt)
            terms.append(_Term(name, c.operator(d, coords), Xc,
                               _values(c.value, Xc, f"conditions[{i}].value", dt),
                               c.weight, c.weight / Xc.shape[0], embedding, transform, xp))
        for t in terms:
            check_stream_activation(net, t.layout)
        self.xp = xp
        self._setup(terms, propagation, space)

    @classmethod
    def from_problem(cls, net, problem, points, *, bc="penalty", weight=1.0,
                     boundary_weight=1.0, **options):
        """The PINN objective of a :class:`~mgnn.data.pde.PDEProblem` on collocation points.

        Parameters
        ----------
        net : ResNet
            Inputs: the problem's coordinates, plus one per periodic coordinate
            (which enters as (cos, sin) through a :class:`PeriodicEmbedding`).
        problem : PDEProblem
        points : Collocation
            From ``problem.sample(...)``.
        bc : {'penalty', 'exact'}
            Conditions as penalty terms (one per condition, weight
            ``boundary_weight``), or imposed exactly by the problem's output
            transform (then the boundary points are not used).
        weight : float
            Weight of the residual term.
        **options
            Further :class:`PINNObjective` options (``hessian``, ``tikhonov``,
            ``propagation``, ...).

        Examples
        --------
        >>> from mgnn.data.pde import poisson_2d
        >>> from mgnn.nets import ResNet
        >>> p = poisson_2d()
        >>> obj = PINNObjective.from_problem(ResNet(2, 8, 4, 1, task="regression"), p,
        ...                                  p.sample(64, 16), bc="exact")
        >>> [t.name for t in obj.terms], obj.transform
        (['interior'], OutputTransform(u = x(1-x)y(1-y) N))
        """
        from mgnn.data.pde import Collocation, PDEProblem
        from mgnn.pinn.transforms import Field, PeriodicEmbedding

        if not isinstance(problem, PDEProblem):
            raise TypeError(f"problem must be a PDEProblem, got {type(problem).__name__}")
        if not isinstance(points, Collocation):
            raise TypeError(f"points must be a Collocation (problem.sample(...)), got "
                            f"{type(points).__name__}")
        check_choice(bc, "bc", ("penalty", "exact"))
        for key in ("source", "conditions", "transform", "embedding", "domain", "pde_params"):
            if key in options:
                raise ValueError(f"{key} comes from the problem; it cannot be given to "
                                 "from_problem")
        pde = make_pde(problem.pde, **problem.pde_params)
        d = problem.domain.d
        embedding = PeriodicEmbedding(d, problem.periodic) if problem.periodic else None
        conditions, transform = [], None
        if bc == "exact":
            if problem.exact_bc is None:
                raise ValueError(f"problem {problem.name!r} has no exact output transform; "
                                 "use bc='penalty'")
            A, B, desc = problem.exact_bc
            transform = OutputTransform(Field(A, "A"), Field(B, "B"), desc)
        else:
            for i, b in enumerate(problem.boundary):
                label = problem.condition_label(i)
                if label not in points.boundary:
                    raise ValueError(f"points has no boundary points for the condition "
                                     f"{label!r}; it holds {list(points.boundary)}")
                conditions.append(Condition(points.boundary[label], b.values, kind=b.kind,
                                            dim=b.dim, weight=boundary_weight, name=label))
        dom = (problem.domain.lower, problem.domain.upper)
        return cls(net, pde, points.interior, source=problem.source, conditions=conditions,
                   weight=weight, transform=transform, embedding=embedding, domain=dom,
                   **options)

    def _setup(self, terms, propagation, space, n_ref=None):
        self.terms = terms
        self.offsets = np.cumsum([0] + [t.n for t in terms])
        if propagation is None:
            propagation = SerialStreams()
        if not isinstance(propagation, StreamPropagation):
            raise TypeError("propagation must be a StreamPropagation (SerialStreams or "
                            f"MGRITStreams), got {type(propagation).__name__}")
        self.propagation = propagation
        self.space = EuclideanSpace() if space is None else space
        self._workspaces = OrderedDict()
        self._stream_rows = np.array([t.layout.S for t in terms], dtype=np.float64)
        self._rows_total = float(sum(t.layout.S * t.n for t in terms))
        self._n_ref = int(self.offsets[-1]) if n_ref is None else n_ref
        ratio = self._rows_total / self._n_ref
        self.counter = WorkCounter(cost={"value": ratio * _RATIO["value"],
                                         "grad": ratio * _RATIO["grad"],
                                         "hessp": ratio * _RATIO[self.hessian]})

    @staticmethod
    def _check_domain(domain, d, X, conditions):
        try:
            lo, hi = (np.asarray(a, dtype=np.float64).reshape(-1) for a in domain)
        except (TypeError, ValueError):
            raise ValueError("domain must be (lower, upper) corner arrays") from None
        if lo.shape != (d,) or hi.shape != (d,) or not np.all(hi > lo):
            raise ValueError(f"domain must be (lower, upper) with {d} coordinates each and "
                             f"upper > lower, got {domain!r}")
        tol = 1e-9 * max(1.0, float(np.max(hi - lo)))
        if np.any(X < lo - tol) or np.any(X > hi + tol):
            raise ValueError("interior has points outside the domain")
        for i, c in enumerate(conditions):
            P = c.points
            inside = np.all((P >= lo - tol) & (P <= hi + tol), axis=1)
            on = np.any((np.abs(P - lo) <= tol) | (np.abs(P - hi) <= tol), axis=1)
            if not np.all(inside & on):
                k = int(np.argmin(inside & on))
                raise ValueError(f"conditions[{i}] ({c.name!r}) has points off the boundary "
                                 f"of the domain, e.g. {P[k].tolist()}")
        return lo, hi

    # ------------------------------------------------------------- plumbing
    @property
    def n_samples(self):
        """Number of points of all terms (the index range of ``batch``)."""
        return int(self.offsets[-1])

    @property
    def n_reference(self):
        """Points of the work unit: one plain value-and-gradient of the network on this
        many points is one unit (all points; the parent's for a :meth:`subset`)."""
        return self._n_ref

    @property
    def X(self):
        """All points (n_samples, d), term after term: row i is point i of ``batch`` and
        ``subset`` (e.g. for ``mgnn.dd.by_data(obj, k, X='objective')``, slabs in space)."""
        return np.concatenate([t.X for t in self.terms])

    def features(self, theta, batch=None, out=None):
        """Not available: a PINN loss has no data targets; the least-squares system of
        its closing layer is :meth:`closing_system` (which ``method='lsgd'`` uses)."""
        raise NotImplementedError("features() needs data targets; a PINNObjective has PDE "
                                  "residuals: its closing-layer system is closing_system()")

    def check_closing_system(self, purpose="closing_system"):
        """Raise a ValueError unless every residual term is linear in ``u`` (then the loss
        is quadratic in the closing layer); the message names the nonlinear operator."""
        for t in self.terms:
            t.op.check_linear(f"{purpose} (a least-squares fit of the closing layer)")

    def closing_system(self, theta, batch=None, out=None):
        r"""The residuals as an affine function of the closing layer: ``r = D xi - b``.

        The network output is ``N(x) = xi^T [phi(x); 1]`` with ``phi`` the last
        hidden state and ``xi = [W_close^T; b_close]``. For a PDE operator ``L``
        that is linear in ``u`` (and an output transform ``u = A + B N``, affine in
        ``N``) every residual ``r_i = L[u](x_i) - f(x_i)`` is affine in ``xi``:
        ``L`` is applied to the derivative streams of the features (those the
        forward sweep carries anyway) instead of to ``u``::

            D_i = L[B [phi; 1]](x_i)        (the bias column: L[B])
            b_i = f(x_i) - L[A](x_i)

        so that ``J(theta) = sum_i (c_i / 2) (D_i xi - b_i)^2`` + the regularisers,
        with ``c_i = w_t / n_t`` of the term of point ``i`` (times ``n / |batch|``
        on a mini-batch, as for the value). Rows follow the numbering of
        ``batch`` (all points: interior first, then the conditions). Charged as a
        value evaluation on the same points.

        Parameters
        ----------
        theta : (n_params,) array
        batch : 1-D integer array, optional
            Point indices (default all points).
        out : (s, width + 2) array, optional
            Written with ``[D b]`` (e.g. a float64 Fortran-ordered buffer of the
            least-squares solver); default a new float64 array.

        Returns
        -------
        D : (s, width + 1) array
            The design matrix (a view of ``out``).
        b : (s,) array
            The right-hand side (a view of ``out``).
        c : (s,) float64 array
            The weight of each row in the loss.

        Raises
        ------
        ValueError
            When a term's operator is nonlinear in ``u`` (Burgers, Allen-Cahn,
            ...): the loss is then not quadratic in the closing layer.

        Examples
        --------
        >>> import numpy as np
        >>> from mgnn.nets import ResNet
        >>> x = np.linspace(0, 1, 9)[1:-1, None]
        >>> net = ResNet(1, 6, 3, 1, task="regression")
        >>> obj = PINNObjective(net, "poisson", x, source=1.0, pde_params={"n_dims": 1},
        ...                     conditions=[Condition(np.array([[0.0], [1.0]]), 0.5)])
        >>> theta = net.init(0)
        >>> D, b, c = obj.closing_system(theta)
        >>> D.shape, b.tolist()[-3:], c.tolist()[-2:]
        ((9, 7), [1.0, 0.5, 0.5], [0.5, 0.5])
        >>> p = net.unpack(theta)
        >>> r = D @ np.r_[p.W_close.ravel(), p.b_close] - b         # the residuals
        >>> bool(np.isclose(0.5 * (c * r) @ r, obj.value(theta), rtol=1e-13))
        True
        """
        self.check_closing_system()
        theta = self.net.check_theta(theta)
        net, xp = self.net, self.xp
        w = net.width
        pieces, scale, share = self._plan(batch)
        s = sum(self.terms[t].n if loc is None else len(loc) for t, loc in pieces)
        if out is None:
            out = xp.empty((s, w + 2), dtype=np.float64)
        elif tuple(out.shape) != (s, w + 2):
            raise ValueError(f"out must have shape {(s, w + 2)}, got {tuple(out.shape)}")
        D, b = out[:, : w + 1], out[:, w + 1]
        c = xp.empty(s, dtype=np.float64)
        row = 0
        for t, loc in pieces:
            term = self.terms[t]
            lay = term.layout
            ws = self._workspace(t, loc)
            n = ws.s
            forward_sweep(net, theta, ws, self.propagation)
            Phi = xp.zeros((lay.S, n, w + 1), dtype=net.dtype)  # feature streams + bias
            Phi[:, :, :w] = ws.V[-1]
            Phi[0, :, w] = 1.0
            if self.transform is None:
                b[row:row + n] = ws.f
            else:
                A, B = ws.coef
                U = xp.empty_like(Phi)
                self.transform.apply((A, B[:, :, None]), Phi, U, lay, affine=False)
                Phi = U
                b[row:row + n] = -term.op.residual(A, lay, ws.f)  # f - L[A]
            term.op.apply_linear(Phi, lay, out=D[row:row + n])
            c[row:row + n] = term.c * scale
            row += n
        self.counter.charge("value", share)
        self._charge_propagation()
        return D, b, c

    def with_net(self, net, propagation=None):
        """The same terms on another network (e.g. a coarse level of a hierarchy).

        Point data are shared; the new objective has its own counter, whose
        ``scale`` is the new network's flop ratio to this one's.
        """
        if net.n_in != self.net.n_in or net.n_out != 1 or net.task != "regression":
            raise ValueError("net must have the same inputs, a scalar output and "
                             "task='regression'")
        for t in self.terms:
            check_stream_activation(net, t.layout)
        new = PINNObjective.__new__(PINNObjective)
        new.__dict__.update(self.__dict__)
        new.net = net
        new._setup(self.terms, propagation, self.space, self._n_ref)
        new.counter.scale = self.counter.scale * net.flops(1) / self.net.flops(1)
        return new

    def subset(self, indices, propagation=None):
        """The objective restricted to the points ``indices`` (numbered as ``batch``),
        without rescaling: the subsets of a partition sum to this objective (values,
        gradients, Hessian products; the regularisers are kept whole in each subset,
        so count them once when adding). Work is charged in this objective's units.

        This is what domain decomposition by collocation points evaluates.
        """
        idx = self._check_batch(indices, "indices")
        parts = self._split(idx)
        terms = [self.terms[t].take(loc) for t, loc in parts]
        new = PINNObjective.__new__(PINNObjective)
        new.__dict__.update(self.__dict__)
        new._setup(terms, propagation, self.space, self._n_ref)
        new.counter.scale = self.counter.scale
        return new

    def __repr__(self):
        lines = [f"PINNObjective({self.net!r},",
                 f"  pde: {self.pde.equation()} = f, hessian={self.hessian!r}, "
                 f"tikhonov={self.tikhonov:g}, smoothness={self.smoothness:g}, "
                 f"propagation={self.propagation!r}"]
        if self.transform is not None:
            lines.append(f"  transform: {self.transform.description}")
        if not isinstance(self.embedding, IdentityEmbedding):
            lines.append(f"  embedding: {self.embedding!r}")
        w = max(8, max(len(t.name) for t in self.terms))
        lines.append(f"  {'term':<{w}}  points  streams  weight  kind")
        for t in self.terms:
            kind = f"{t.op.equation()} = {'f' if t.name == 'interior' else 'g'}"
            lines.append(f"  {t.name:<{w}}  {t.n:6d}  {t.layout.S:7d}  {t.weight:6g}  {kind}")
        lines.append("  work per value-and-gradient on all points: "
                     f"{self.counter.cost['grad'] * self.counter.scale:.3g} plain gradients)")
        return "\n".join(lines)

    def _charge_propagation(self):
        """Charge work a propagation did beyond the serial sweeps (MGRIT iterations)."""
        take = getattr(self.propagation, "take_extra_work", None)
        if take is not None:
            self.counter.work += self.counter.scale * take(self.net, self._n_ref)

    def accuracy(self, theta, X=None, Y=None):
        raise ValueError("accuracy needs a classification network; a PINN has error() and "
                         "relative_l2()")

    # -------------------------------------------------------------- batches
    def _check_batch(self, batch, name="batch"):
        batch = np.asarray(batch)
        if batch.ndim != 1 or batch.dtype.kind not in "iu":
            raise TypeError(f"{name} must be a 1-D integer index array, got dtype "
                            f"{batch.dtype} and shape {batch.shape}")
        if batch.size == 0:
            raise ValueError(f"{name} must not be empty")
        if int(batch.min()) < 0 or int(batch.max()) >= self.n_samples:
            raise ValueError(f"{name} indices must lie in [0, {self.n_samples})")
        return batch

    def _split(self, idx):
        """``[(term, local indices)]`` of the terms an index array touches."""
        t_of = np.searchsorted(self.offsets, idx, side="right") - 1
        out = []
        for t in range(len(self.terms)):
            sel = idx[t_of == t]
            if sel.size:
                out.append((t, sel - self.offsets[t]))
        return out

    def _plan(self, batch):
        """``(pieces, scale, share)``: the (term index, local rows or None) to evaluate,
        the batch scaling n/|batch| and the flop share for the work counter."""
        if batch is None:
            return [(t, None) for t in range(len(self.terms))], 1.0, 1.0
        idx = self._check_batch(batch)
        parts = self._split(idx)
        rows = sum(self.terms[t].layout.S * len(loc) for t, loc in parts)
        return parts, self.n_samples / idx.size, rows / self._rows_total

    def _workspace(self, t, loc):
        term = self.terms[t]
        s = term.n if loc is None else len(loc)
        key = (t, s, loc is None)
        ws = self._workspaces.get(key)
        if ws is None:
            ws = StreamWorkspace(self.net, term.layout, s, self.xp)
            ws.full = False
            self._workspaces[key] = ws
            while len(self._workspaces) > 2 * len(self.terms) + 2:
                self._workspaces.popitem(last=False)
        else:
            self._workspaces.move_to_end(key)
        if loc is None:
            if not ws.full:
                ws.Vin[...] = term.Vin
                ws.full = True
            ws.f, ws.coef = term.f, term.coef
        else:
            dloc = self.xp.asarray(loc)
            self.xp.take(term.Vin, dloc, axis=1, out=ws.Vin)
            ws.f = term.f[dloc]
            ws.coef = None if term.coef is None else tuple(a[:, dloc] for a in term.coef)
        return ws

    # ---------------------------------------------------------- evaluations
    def _streams(self, term, ws, O):
        """The solution's stream stack U (S, s) from the network output stack O."""
        N = O[:, :, 0]
        if self.transform is None:
            return N
        U = self.xp.empty_like(N)
        self.transform.apply(ws.coef, N, U, term.layout)
        return U

    def _to_output(self, term, ws, Ubar, out):
        """Write the output-stack adjoint ``out`` (S, s, 1) from the adjoint ``Ubar`` of U."""
        if self.transform is None:
            out[:, :, 0] = Ubar
        else:
            self.transform.adjoint(ws.coef, Ubar, out[:, :, 0], term.layout)
        return out

    def _evaluate(self, theta, batch, want_grad):
        theta = self.net.check_theta(theta)
        xp = self.xp
        pieces, scale, share = self._plan(batch)
        val = 0.0
        grad = xp.zeros_like(theta) if want_grad else None
        gpart = xp.empty_like(theta) if want_grad else None
        for t, loc in pieces:
            term = self.terms[t]
            ws = self._workspace(t, loc)
            O = forward_sweep(self.net, theta, ws, self.propagation)
            U = self._streams(term, ws, O)
            r = term.op.residual(U, term.layout, ws.f)
            c = term.c * scale
            val += 0.5 * c * float(xp.dot(r, r))
            if want_grad:
                Ubar = term.op.vjp(U, c * r, term.layout, xp.empty_like(U))
                self._to_output(term, ws, Ubar, ws.Obar)
                backward_sweep(self.net, theta, ws, self.propagation, ws.Obar, gpart)
                grad += gpart
        val += self._regularisation(theta, grad)
        return val, grad, share

    def value(self, theta, batch=None):
        """Objective value (on the mini-batch ``batch`` when given)."""
        val, _, share = self._evaluate(theta, batch, False)
        self.counter.charge("value", share)
        self._charge_propagation()
        return val

    def value_and_grad(self, theta, batch=None):
        """Value and exact gradient (reverse sweep of all derivative streams)."""
        val, grad, share = self._evaluate(theta, batch, True)
        self.counter.charge("grad", share)
        self._charge_propagation()
        return val, grad

    def grad(self, theta, batch=None):
        """Exact gradient (see :meth:`value_and_grad`)."""
        return self.value_and_grad(theta, batch)[1]

    def hessp(self, theta, v, batch=None):
        """Hessian-vector product: exact, or Gauss-Newton (``hessian='gauss_newton'``)."""
        if self.hessian == "gauss_newton":
            return self.gnp(theta, v, batch)
        return self._second_order(theta, v, batch, exact=True)

    def gnp(self, theta, v, batch=None):
        """Gauss-Newton product ``J^T C J v`` (+ the regulariser's Hessian times v).

        ``J`` is the Jacobian of all residuals with respect to theta and ``C`` the
        diagonal of their weights; symmetric positive semidefinite.
        """
        return self._second_order(theta, v, batch, exact=False)

    def _second_order(self, theta, v, batch, exact):
        theta = self.net.check_theta(theta)
        v = self.net.check_theta(v, "v")
        net = self.net
        pieces, scale, share = self._plan(batch)
        xp = self.xp
        hv = xp.zeros_like(theta)
        part = xp.empty_like(theta)
        for t, loc in pieces:
            term = self.terms[t]
            lay = term.layout
            ws = self._workspace(t, loc)
            ws.ensure_second_order()
            O = forward_sweep(net, theta, ws, self.propagation)
            U = self._streams(term, ws, O)
            dO = tangent_sweep(net, theta, v, ws, self.propagation)
            dN = dO[:, :, 0]
            if self.transform is None:
                dU = dN
            else:
                dU = xp.empty_like(dN)
                self.transform.apply(ws.coef, dN, dU, lay, affine=False)
            c = term.c * scale
            dr = term.op.jvp(U, dU, lay)
            dUbar = term.op.vjp(U, c * dr, lay, xp.empty_like(U))
            if exact:
                r = term.op.residual(U, lay, ws.f)
                term.op.hvp(U, c * r, dU, lay, dUbar)
                Ubar = term.op.vjp(U, c * r, lay, xp.empty_like(U))
                self._to_output(term, ws, Ubar, ws.Obar)
                self._to_output(term, ws, dUbar, ws.dObar)
                second_order_sweep(net, theta, v, ws, self.propagation, ws.Obar, ws.dObar, part)
            else:
                self._to_output(term, ws, dUbar, ws.Obar)
                backward_sweep(net, theta, ws, self.propagation, ws.Obar, part)
            hv += part
        self._regularisation(v, hv)
        self.counter.charge("hessp", share)
        self._charge_propagation()
        return hv

    def term_values(self, theta):
        """``{term name: w_t/(2 n_t) sum r^2}`` on all points (not charged as work)."""
        theta = self.net.check_theta(theta)
        out = {}
        for t, term in enumerate(self.terms):
            ws = self._workspace(t, None)
            U = self._streams(term, ws, forward_sweep(self.net, theta, ws, self.propagation))
            r = term.op.residual(U, term.layout, ws.f)
            out[term.name] = 0.5 * term.c * float(self.xp.dot(r, r))
        return out

    def residuals(self, theta, X, source=None):
        """Pointwise PDE residuals ``r(x)`` at new points ``X`` (n, d), e.g. to choose
        collocation points adaptively (residual-based refinement).

        ``source`` gives ``f`` at ``X`` (None: zeros, a number, an array or a callable,
        as for the constructor). Charged as a value evaluation of ``len(X)`` interior
        points. Returns a NumPy array (n,).
        """
        theta = self.net.check_theta(theta)
        X = to_numpy(check_array(X, "X", shape=(None, self.pde.n_dims), xp=get_namespace(X)))
        X = np.ascontiguousarray(X, dtype=self.net.dtype)
        term = _Term("points", self.pde, X, _values(source, X, "source", self.net.dtype), 1.0,
                     1.0, self.embedding, self.transform, self.xp)
        ws = StreamWorkspace(self.net, term.layout, X.shape[0], self.xp)
        ws.Vin[...] = term.Vin
        ws.f, ws.coef = term.f, term.coef
        U = self._streams(term, ws, forward_sweep(self.net, theta, ws, SerialStreams()))
        r = term.op.residual(U, term.layout, ws.f)
        self.counter.charge("value", term.layout.S * X.shape[0] / self._rows_total)
        return to_numpy(r)

    # --------------------------------------------------------- the solution
    def solution(self, theta, X):
        """``u`` at the points ``X`` (n, d) (embedding and transform applied): a NumPy
        array (n,), evaluated in chunks of 8192 points."""
        theta = self.net.check_theta(theta)
        xp = self.xp
        X = to_numpy(check_array(X, "X", shape=(None, self.pde.n_dims), xp=get_namespace(X)))
        X = np.ascontiguousarray(X, dtype=self.net.dtype)
        lay = StreamLayout(self.pde.n_dims)
        out = np.empty(X.shape[0], dtype=self.net.dtype)
        chunk = 8192
        ws = None
        for a in range(0, X.shape[0], chunk):
            Xc = X[a:a + chunk]
            if ws is None or ws.s != Xc.shape[0]:
                ws = StreamWorkspace(self.net, lay, Xc.shape[0], xp)
            ws.Vin[...] = xp.asarray(self.embedding.stack(Xc, lay))
            O = forward_sweep(self.net, theta, ws, SerialStreams())
            N = O[:, :, 0]
            if self.transform is None:
                out[a:a + chunk] = to_numpy(N[0])
            else:
                U = xp.empty_like(N)
                coef = tuple(xp.asarray(c) for c in self.transform.coefficients(Xc, lay))
                self.transform.apply(coef, N, U, lay)
                out[a:a + chunk] = to_numpy(U[0])
        return out

    def error(self, theta, X=None, Y=None):
        """``(mean absolute error, worst-case absolute error)`` of ``u`` against
        reference values ``Y`` (n,) at the points ``X`` (both required)."""
        if X is None or Y is None:
            raise ValueError("error needs reference points X and values Y")
        u = self.solution(theta, X)
        Y = np.asarray(Y, dtype=np.float64).reshape(-1)
        if Y.shape != u.shape:
            raise ValueError(f"Y must hold one value per point of X ({u.size}), got {Y.size}")
        e = np.abs(u - Y)
        return float(e.mean()), float(e.max())

    def relative_l2(self, theta, X, Y):
        """Relative L2 error ``||u - Y|| / ||Y||`` on the points ``X`` (e.g. a grid)."""
        u = self.solution(theta, X)
        Y = np.asarray(Y, dtype=np.float64).reshape(-1)
        if Y.shape != u.shape:
            raise ValueError(f"Y must hold one value per point of X ({u.size}), got {Y.size}")
        nrm = float(np.linalg.norm(Y))
        if nrm == 0.0:
            raise ValueError("the reference Y is zero: the relative error is undefined")
        return float(np.linalg.norm(u - Y)) / nrm
