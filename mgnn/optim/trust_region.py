"""Trust-region method: subproblem solvers, radius update, one step, the driver.

The pieces are separate functions so that multilevel trust-region methods
(RMTR) can call them with a model that is not the objective:

* :func:`steihaug_cg`, :func:`cauchy_point`, :func:`dogleg` solve
  ``min_s m(s) = <g, s> + 1/2 <s, B s>`` subject to ``||s|| <= radius`` given
  only ``g`` and ``s -> B s``; they return a :class:`SubproblemResult` whose
  ``pred = -m(s)`` is the predicted reduction.
* :func:`update_radius` is the ratio test ``rho = ared / pred`` with
  :class:`TRParams` (``eta1, eta2, gamma1, gamma2, max_radius``).
* :func:`trust_region_step` does one iteration: solve, evaluate the trial
  point, compute ``rho``, accept or reject, update the radius.
* :func:`minimize_trust_region` is ``minimize(..., method='trust-region')``
  with the exact Hessian (``hessp``) or the limited-memory SR1 matrix
  :class:`~mgnn.optim.lsr1.LSR1`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

from mgnn._validation import check_choice, check_positive_int, check_scalar
from mgnn.vectorspace import EuclideanSpace

from ._common import (
    CALLBACK_MESSAGE,
    RUN_OPTIONS,
    STATUS_CALLBACK,
    STATUS_CONVERGED,
    STATUS_MAXITER,
    STATUS_STALLED,
    Diverged,
    Run,
    check_maxiter,
    check_tol,
    parse_options,
    prepare_theta0,
    reject_unused,
)
from .lsr1 import LSR1

__all__ = [
    "TRParams",
    "SubproblemResult",
    "TRStepResult",
    "steihaug_cg",
    "cauchy_point",
    "dogleg",
    "solve_subproblem",
    "update_radius",
    "reduction_ratio",
    "trust_region_step",
    "minimize_trust_region",
    "LSR1",
    "TR_DEFAULTS",
    "SUBPROBLEMS",
    "SR1_OPTIONS",
    "to_boundary",
]

SUBPROBLEMS = ("cg", "cauchy", "dogleg")


# ---------------------------------------------------------------------------
# parameters and the radius update
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TRParams:
    """Constants of the ratio test and the radius update.

    Parameters
    ----------
    eta1 : float, default 0.1
        A step is accepted when ``rho >= eta1`` (``0 <= eta1 <= eta2 < 1``).
    eta2 : float, default 0.75
        A very successful step (``rho >= eta2``) enlarges the radius.
    gamma1 : float, default 0.25
        Shrink factor on rejection: ``radius <- gamma1 * min(radius, ||s||)``
        (``0 < gamma1 < 1``).
    gamma2 : float, default 2.0
        Expansion factor on very successful steps (``>= 1``), capped at
        ``max_radius``.
    max_radius : float, default 1000.0
    expand_on_boundary : bool, default True
        Only expand when the step reached the boundary (as scipy's trust-ncg),
        since an interior step shows the radius was not binding.

    Examples
    --------
    >>> TRParams(eta1=0.8, eta2=0.5)
    Traceback (most recent call last):
    ...
    ValueError: eta1 must be <= eta2 = 0.5, got 0.8
    """

    eta1: float = 0.1
    eta2: float = 0.75
    gamma1: float = 0.25
    gamma2: float = 2.0
    max_radius: float = 1000.0
    expand_on_boundary: bool = True

    def __post_init__(self):
        eta2 = check_scalar(self.eta2, "eta2", low=0.0, high=1.0, high_open=True)
        eta1 = check_scalar(self.eta1, "eta1", low=0.0, high=1.0, high_open=True)
        if eta1 > eta2:
            raise ValueError(f"eta1 must be <= eta2 = {eta2}, got {eta1}")
        check_scalar(self.gamma1, "gamma1", low=0.0, high=1.0, low_open=True, high_open=True)
        check_scalar(self.gamma2, "gamma2", low=1.0)
        check_scalar(self.max_radius, "max_radius", low=0.0, low_open=True)
        if not isinstance(self.expand_on_boundary, bool):
            raise TypeError("expand_on_boundary must be bool")


def reduction_ratio(ared, pred):
    """``rho = ared / pred``; ``-inf`` when the model predicts no decrease or
    ``ared`` is NaN (a trial point with a non-finite loss is never accepted).

    Examples
    --------
    >>> reduction_ratio(0.5, 1.0), reduction_ratio(1.0, 0.0)
    (0.5, -inf)
    """
    if not pred > 0 or math.isnan(ared):
        return -math.inf
    return ared / pred


def update_radius(rho, radius, step_norm, params=None, hits_boundary=True):
    """Ratio test: accept or reject, and the next radius.

    Parameters
    ----------
    rho : float
        ``ared / pred`` (see :func:`reduction_ratio`).
    radius : float
        Current radius.
    step_norm : float
        ``||s||``.
    params : TRParams, optional
    hits_boundary : bool
        Whether the step lies on the boundary.

    Returns
    -------
    new_radius : float
    accepted : bool
        ``rho >= eta1``.

    Examples
    --------
    >>> p = TRParams()
    >>> update_radius(0.9, 1.0, 1.0, p)     # very successful, on the boundary
    (2.0, True)
    >>> update_radius(0.5, 1.0, 1.0, p)     # successful
    (1.0, True)
    >>> update_radius(0.01, 1.0, 0.5, p)    # rejected: shrink around the step
    (0.125, False)
    """
    p = TRParams() if params is None else params
    accepted = rho >= p.eta1
    if not accepted:
        return p.gamma1 * min(radius, step_norm), False
    if rho >= p.eta2 and (hits_boundary or not p.expand_on_boundary):
        return min(p.gamma2 * radius, p.max_radius), True
    return radius, True


# ---------------------------------------------------------------------------
# subproblem solvers
# ---------------------------------------------------------------------------
@dataclass
class SubproblemResult:
    """Approximate minimizer ``step`` of the model in the ball.

    Attributes
    ----------
    step : ndarray
    step_norm : float
    pred : float
        Predicted reduction ``-(<g, s> + 1/2 <s, B s>)``.
    hits_boundary : bool
    status : str
        'converged' (residual tolerance met inside the ball), 'boundary',
        'negative_curvature', 'maxiter', 'zero_gradient', 'cauchy',
        'newton' (dogleg: full Newton step), 'dogleg'.
    niter : int
        CG iterations.
    nhessp : int
        Products with ``B``.
    """

    step: object
    step_norm: float
    pred: float
    hits_boundary: bool
    status: str
    niter: int = 0
    nhessp: int = 0


def to_boundary(space, z, d, radius):
    """``tau >= 0`` with ``||z + tau d|| = radius`` (``||z|| <= radius``).

    The positive root of the quadratic in ``tau``, in the norm of ``space``,
    computed in the cancellation-free form.

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.vectorspace import EuclideanSpace
    >>> to_boundary(EuclideanSpace(), np.zeros(2), np.array([3.0, 4.0]), 10.0)
    2.0
    """
    a = space.dot(d, d)
    b = 2.0 * space.dot(z, d)
    c = space.dot(z, z) - radius * radius
    disc = math.sqrt(max(b * b - 4.0 * a * c, 0.0))
    if c >= 0:  # z on (or, by round-off, beyond) the boundary
        return max((-b + disc) / (2.0 * a), 0.0)
    # stable root: c < 0 so the two roots have opposite signs
    return (-b + disc) / (2.0 * a) if b <= 0 else (2.0 * c) / (-b - disc)


_to_boundary = to_boundary  # the former private name


def steihaug_cg(grad, hessp_fn, radius, space=None, tol=1e-5, maxiter=None):
    """Steihaug–Toint truncated conjugate gradients for the trust-region subproblem.

    Minimizes ``m(s) = <g, s> + 1/2 <s, B s>`` over ``||s|| <= radius`` by CG
    from ``s = 0``, stopping when the residual ``||g + B s|| <= tol * ||g||``,
    when an iterate would leave the ball (the step is cut at the boundary) or
    when a direction of non-positive curvature appears (the step follows it to
    the boundary). Every iterate decreases ``m`` and has growing norm, so the
    result lies in the ball and ``pred > 0`` whenever ``g != 0``.

    Parameters
    ----------
    grad : ndarray
        Model gradient ``g`` at ``s = 0``.
    hessp_fn : callable
        ``v -> B v``.
    radius : float
        Trust-region radius (> 0).
    space : vector space, optional
        Inner products (default Euclidean).
    tol : float, default 1e-5
        Relative residual tolerance.
    maxiter : int, optional
        Maximum CG iterations (default: the length of ``grad``).

    Returns
    -------
    SubproblemResult

    Examples
    --------
    >>> import numpy as np
    >>> H = np.diag([1.0, 4.0]); g = np.array([1.0, 1.0])
    >>> r = steihaug_cg(g, lambda v: H @ v, radius=10.0, tol=1e-12)
    >>> r.status, r.step.round(12).tolist(), round(r.pred, 12)   # interior Newton step
    ('converged', [-1.0, -0.25], 0.625)
    >>> r = steihaug_cg(g, lambda v: H @ v, radius=0.1)
    >>> r.status, round(r.step_norm, 12)
    ('boundary', 0.1)
    >>> steihaug_cg(g, lambda v: -v, radius=2.0).status
    'negative_curvature'
    """
    space = EuclideanSpace() if space is None else space
    radius = check_scalar(radius, "radius", low=0.0, low_open=True)
    tol = check_scalar(tol, "tol", low=0.0)
    if maxiter is None:
        maxiter = max(int(getattr(grad, "size", len(grad))), 1)
    maxiter = check_positive_int(maxiter, "maxiter")
    z = grad * 0.0
    r = grad.copy()
    rr = space.dot(r, r)
    gnorm = math.sqrt(rr)
    if gnorm == 0.0:
        return SubproblemResult(z, 0.0, 0.0, False, "zero_gradient")
    stop = tol * gnorm
    d = -r
    mval = 0.0  # m(z)
    nh = 0
    for j in range(maxiter):
        Bd = hessp_fn(d)
        nh += 1
        dBd = space.dot(d, Bd)
        rd = space.dot(r, d)
        if not dBd > 0:
            tau = to_boundary(space, z, d, radius)
            s = z + tau * d
            mval += tau * rd + 0.5 * tau * tau * dBd
            return SubproblemResult(s, radius, -mval, True, "negative_curvature", j + 1, nh)
        alpha = rr / dBd
        z_next = z + alpha * d
        if space.norm(z_next) >= radius:
            tau = to_boundary(space, z, d, radius)
            s = z + tau * d
            mval += tau * rd + 0.5 * tau * tau * dBd
            return SubproblemResult(s, radius, -mval, True, "boundary", j + 1, nh)
        mval += alpha * rd + 0.5 * alpha * alpha * dBd
        z = z_next
        r = r + alpha * Bd
        rr_next = space.dot(r, r)
        if math.sqrt(rr_next) <= stop:
            return SubproblemResult(z, space.norm(z), -mval, False, "converged", j + 1, nh)
        d = -r + (rr_next / rr) * d
        rr = rr_next
    return SubproblemResult(z, space.norm(z), -mval, False, "maxiter", maxiter, nh)


def cauchy_point(grad, hessp_fn, radius, space=None):
    """Minimizer of the model along ``-g`` within the ball.

    Examples
    --------
    >>> import numpy as np
    >>> r = cauchy_point(np.array([3.0, 4.0]), lambda v: v, radius=1.0)
    >>> r.step.tolist(), r.hits_boundary, r.pred
    ([-0.6, -0.8], True, 4.5)
    """
    space = EuclideanSpace() if space is None else space
    radius = check_scalar(radius, "radius", low=0.0, low_open=True)
    gg = space.dot(grad, grad)
    gnorm = math.sqrt(gg)
    if gnorm == 0.0:
        return SubproblemResult(grad * 0.0, 0.0, 0.0, False, "zero_gradient")
    gBg = space.dot(grad, hessp_fn(grad))
    c_bound = radius / gnorm
    if gBg > 0 and gg / gBg < c_bound:
        c, on = gg / gBg, False
    else:
        c, on = c_bound, True
    pred = c * gg - 0.5 * c * c * gBg
    return SubproblemResult(-c * grad, c * gnorm, pred, on, "cauchy", 0, 1)


def dogleg(grad, hessp_fn, radius, space=None, tol=1e-10, maxiter=None):
    """Dogleg step: the Cauchy point, the Newton step, or the path between them.

    The Newton step ``-B^{-1} g`` is computed by CG to the relative residual
    ``tol``; if ``B`` shows non-positive curvature (dogleg needs ``B``
    positive definite) the Cauchy point is returned.

    Examples
    --------
    >>> import numpy as np
    >>> H = np.diag([1.0, 4.0]); g = np.array([1.0, 1.0])
    >>> dogleg(g, lambda v: H @ v, radius=10.0).status
    'newton'
    >>> r = dogleg(g, lambda v: H @ v, radius=0.8)
    >>> r.status, round(r.step_norm, 12)
    ('dogleg', 0.8)
    """
    space = EuclideanSpace() if space is None else space
    radius = check_scalar(radius, "radius", low=0.0, low_open=True)
    dot = space.dot
    gg = dot(grad, grad)
    if gg == 0.0:
        return SubproblemResult(grad * 0.0, 0.0, 0.0, False, "zero_gradient")
    Bg = hessp_fn(grad)
    gBg = dot(grad, Bg)
    if not gBg > 0:
        res = cauchy_point(grad, hessp_fn, radius, space)
        res.nhessp += 1
        return res
    # Newton step by plain CG (no radius), detecting non-positive curvature
    if maxiter is None:
        maxiter = max(int(getattr(grad, "size", len(grad))), 1)
    maxiter = check_positive_int(maxiter, "maxiter")
    p = grad * 0.0
    r = grad.copy()
    rr = gg
    d = -r
    nh, it, Bd = 1, 0, -Bg  # d = -g
    for it in range(1, maxiter + 1):
        if it > 1:
            Bd = hessp_fn(d)
            nh += 1
        dBd = dot(d, Bd)
        if not dBd > 0:
            res = cauchy_point(grad, lambda v: Bg, radius, space)  # reuse B g
            res.nhessp, res.niter = nh, it
            return res
        alpha = rr / dBd
        p = p + alpha * d
        r = r + alpha * Bd
        rr_next = dot(r, r)
        if math.sqrt(rr_next) <= tol * math.sqrt(gg):
            break
        d = -r + (rr_next / rr) * d
        rr = rr_next
    Bp = r - grad  # residual r = g + B p
    pnorm = space.norm(p)

    def finish(s, Bs, on, status):
        pred = -(dot(grad, s) + 0.5 * dot(s, Bs))
        return SubproblemResult(s, radius if on else space.norm(s), pred, on, status, it, nh)

    if pnorm <= radius:
        return finish(p, Bp, False, "newton")
    t = gg / gBg
    pu, Bpu = -t * grad, -t * Bg
    if t * math.sqrt(gg) >= radius:
        c = radius / math.sqrt(gg)
        return finish(-c * grad, -c * Bg, True, "cauchy")
    tau = to_boundary(space, pu, p - pu, radius)
    return finish(pu + tau * (p - pu), Bpu + tau * (Bp - Bpu), True, "dogleg")


def solve_subproblem(kind, grad, hessp_fn, radius, space=None, tol=1e-5, maxiter=None):
    """Dispatch to :func:`steihaug_cg` ('cg'), :func:`cauchy_point` ('cauchy')
    or :func:`dogleg` ('dogleg')."""
    check_choice(kind, "subproblem", SUBPROBLEMS)
    if kind == "cg":
        return steihaug_cg(grad, hessp_fn, radius, space, tol, maxiter)
    if kind == "cauchy":
        return cauchy_point(grad, hessp_fn, radius, space)
    return dogleg(grad, hessp_fn, radius, space, tol, maxiter)


# ---------------------------------------------------------------------------
# one trust-region iteration
# ---------------------------------------------------------------------------
@dataclass
class TRStepResult:
    """Outcome of :func:`trust_region_step`.

    ``x, f, g`` are the new iterate (the trial point if accepted, else the old
    one); ``f_trial, g_trial`` the evaluation at ``x + s`` (for quasi-Newton
    updates); ``radius`` the next radius.
    """

    x: object
    f: float
    g: object
    accepted: bool
    rho: float
    ared: float
    pred: float
    radius: float
    step: object
    f_trial: float
    g_trial: object
    sub: SubproblemResult = field(repr=False)


def trust_region_step(fun_and_grad, x, f, g, radius, hessp_fn, *, space=None, params=None,
                      subproblem="cg", tol=1e-5, maxiter=None):
    """One trust-region iteration on the model ``m(s) = f + <g, s> + 1/2 <s, B s>``.

    Solves the subproblem, evaluates ``fun_and_grad(x + s)``, computes
    ``rho = (f - f(x + s)) / pred`` and updates the radius with
    :func:`update_radius`. The model (``g``, ``hessp_fn``) need not be the
    objective's: RMTR passes coarse-level models here.

    Parameters
    ----------
    fun_and_grad : callable
        ``x -> (f, g)`` of the function the model approximates.
    x, f, g : ndarray, float, ndarray
        Current iterate, its value and the model gradient.
    radius : float
    hessp_fn : callable
        ``v -> B v``.
    space, params, subproblem, tol, maxiter
        See :func:`solve_subproblem` and :class:`TRParams`.

    Returns
    -------
    TRStepResult

    Examples
    --------
    >>> import numpy as np
    >>> fg = lambda x: (0.5 * x @ x, x)
    >>> x = np.array([3.0, 4.0])
    >>> r = trust_region_step(fg, x, *fg(x), 1.0, lambda v: v)
    >>> r.accepted, r.x.round(12).tolist(), r.rho, r.radius
    (True, [2.4, 3.2], 1.0, 2.0)
    """
    space = EuclideanSpace() if space is None else space
    params = TRParams() if params is None else params
    sub = solve_subproblem(subproblem, g, hessp_fn, radius, space, tol, maxiter)
    x_trial = x + sub.step
    f_trial, g_trial = fun_and_grad(x_trial)
    f_trial = float(f_trial)
    ared = float(f) - f_trial
    rho = reduction_ratio(ared, sub.pred)
    new_radius, accepted = update_radius(rho, radius, sub.step_norm, params, sub.hits_boundary)
    if accepted:
        xn, fn, gn = x_trial, f_trial, g_trial
    else:
        xn, fn, gn = x, f, g
    return TRStepResult(xn, fn, gn, accepted, rho, ared, sub.pred, new_radius, sub.step,
                        f_trial, g_trial, sub)


# ---------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------
#: Options of ``method='trust-region'`` and their defaults.
TR_DEFAULTS = {
    "maxiter": 1000,
    "gtol": 1e-5,
    "hessian": "exact",
    "subproblem": "cg",
    "initial_radius": 1.0,
    "max_radius": 1000.0,
    "min_radius": 1e-14,
    "eta1": 0.1,
    "eta2": 0.75,
    "gamma1": 0.25,
    "gamma2": 2.0,
    "expand_on_boundary": True,
    "cg_tol": None,
    "cg_maxiter": None,
    "memory": 10,
    "sr1_gamma": "auto",
    "sr1_skip": 1e-8,
    **RUN_OPTIONS,
}

#: The options that only ``hessian='lsr1'`` uses.
SR1_OPTIONS = ("memory", "sr1_gamma", "sr1_skip")
_SR1_ONLY = SR1_OPTIONS  # the former private name


def minimize_trust_region(objective, theta0, options=None, callback=None):
    """Trust-region method with exact Hessian-vector products or L-SR1.

    Called through ``minimize(..., method='trust-region')``. Each iteration
    solves the subproblem (:func:`solve_subproblem`), evaluates the loss and
    gradient at the trial point (one ``value_and_grad``; the L-SR1 pair is
    updated from it whether the step is accepted or not) and applies the
    ratio test (:func:`update_radius`). Every iteration, accepted or not, is
    counted in ``nit`` and has a history row (with ``radius``, ``rho``,
    ``accepted``, ``cg_iter``).

    Options
    -------
    maxiter : int, default 1000
    gtol : float, default 1e-5
        Stop when ``||g|| <= gtol``.
    hessian : {'exact', 'lsr1'}, default 'exact'
        'exact' uses ``objective.hessp`` (each product charged to the work
        counter); 'lsr1' the limited-memory SR1 matrix.
    subproblem : {'cg', 'cauchy', 'dogleg'}, default 'cg'
        Steihaug–Toint CG, Cauchy point, or dogleg.
    initial_radius : float, default 1.0
    max_radius : float, default 1000.0
    min_radius : float, default 1e-14
        Stop (status 2) when the radius falls below it.
    eta1, eta2, gamma1, gamma2, expand_on_boundary
        Ratio test, see :class:`TRParams` (0.1, 0.75, 0.25, 2.0, True).
    cg_tol : float or None, default None
        Relative residual tolerance of CG (also of dogleg's Newton solve);
        None uses the forcing term ``min(0.5, sqrt(||g||))`` with
        ``hessian='exact'`` (superlinear convergence, as scipy's trust-ncg)
        and 1e-8 with ``hessian='lsr1'`` (whose products cost no work).
    cg_maxiter : int or None, default None
        CG iterations per subproblem; None = number of parameters.
    memory : int, default 10
        L-SR1 pairs (``hessian='lsr1'`` only).
    sr1_gamma : 'auto' or float, default 'auto'
        L-SR1 initial matrix ``gamma I`` (see :class:`LSR1`).
    sr1_skip : float, default 1e-8
        L-SR1 skipping constant.
    disp, disp_every, checkpoint, resume
        Progress lines, checkpoints and resuming (:mod:`mgnn.runs`; see
        :func:`~mgnn.optim.stochastic.minimize_sgd`).

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.optimize import rosen, rosen_der
    >>> from mgnn.optim import minimize, FunctionObjective
    >>> obj = FunctionObjective(rosen, rosen_der)
    >>> res = minimize(obj, np.array([-1.2, 1.0]), method='trust-region',
    ...                options={'hessian': 'lsr1', 'gtol': 1e-8})
    >>> res.success, np.allclose(res.x, 1.0), res.nhev
    (True, True, 0)
    """
    opts, given = parse_options("trust-region", options, TR_DEFAULTS)
    run = Run(objective, callback, "trust-region", opts)
    try:
        return _trust_region(run, objective, opts, given, theta0)
    finally:
        run.close()


def _trust_region(run, objective, opts, given, theta0):
    maxiter = check_maxiter(opts["maxiter"])
    gtol = check_tol(opts["gtol"], "gtol")
    hessian = check_choice(opts["hessian"], "hessian", ("exact", "lsr1"))
    kind = check_choice(opts["subproblem"], "subproblem", SUBPROBLEMS)
    params = TRParams(
        opts["eta1"], opts["eta2"], opts["gamma1"], opts["gamma2"], opts["max_radius"],
        opts["expand_on_boundary"],
    )
    radius = check_scalar(opts["initial_radius"], "initial_radius", low=0.0, low_open=True)
    if radius > params.max_radius:
        raise ValueError(
            f"initial_radius must be <= max_radius = {params.max_radius}, got {radius}"
        )
    min_radius = check_scalar(opts["min_radius"], "min_radius", low=0.0)
    cg_tol = opts["cg_tol"]
    if cg_tol is not None:
        cg_tol = check_scalar(cg_tol, "cg_tol", low=0.0)
    cg_maxiter = opts["cg_maxiter"]
    if cg_maxiter is not None:
        cg_maxiter = check_positive_int(cg_maxiter, "cg_maxiter")
    if kind == "cauchy":
        reject_unused(given, ("cg_tol", "cg_maxiter"), "with subproblem='cauchy'")
    space = run.space
    if hessian == "lsr1":
        B = LSR1(opts["memory"], space, gamma=opts["sr1_gamma"], skip=opts["sr1_skip"])
    else:
        reject_unused(given, SR1_OPTIONS, "with hessian='exact'")
        B = None
        if getattr(objective, "has_hessp", True) is False:
            raise ValueError("hessian='exact' needs an objective with hessp; "
                             "pass hessp or use options={'hessian': 'lsr1'}")
    x = prepare_theta0(theta0)

    def fg(z):
        return run.value_and_grad(z, what="a trial point")

    def state():
        return {"x": x, "f": f, "g": g, "gnorm": gnorm, "radius": radius,
                "lsr1": None if B is None else B.state_dict()}

    f = g = None
    try:
        saved = run.restore(x)
        if saved is None:
            f, g = run.value_and_grad(x, what="the initial point")
            gnorm = space.norm(g)
            run.record(fun=f, grad_norm=gnorm, step_norm=0.0, radius=radius)
        else:
            x, f, g, gnorm, radius = (saved[k] for k in ("x", "f", "g", "gnorm", "radius"))
            if (saved["lsr1"] is None) != (B is None):
                raise ValueError("resume: the checkpoint was written with another 'hessian' "
                                 "option")
            if B is not None:
                B.load_state_dict(saved["lsr1"])
        while True:
            if gnorm <= gtol:
                msg = f"Optimization terminated successfully: gradient norm {gnorm:.3e} <= gtol."
                return run.result(x, f, g, STATUS_CONVERGED, msg, radius=radius)
            if run.nit >= maxiter:
                return run.result(x, f, g, STATUS_MAXITER,
                                  "Maximum number of iterations has been exceeded.",
                                  radius=radius)
            if radius < min_radius:
                return run.result(x, f, g, STATUS_STALLED,
                                  f"Trust radius {radius:.3e} fell below min_radius "
                                  f"at iteration {run.nit} (precision loss?).", radius=radius)
            hess = B.matvec if B is not None else functools.partial(run.hessp, x)
            if cg_tol is not None:
                tol = cg_tol
            elif B is None:
                tol = min(0.5, math.sqrt(gnorm))
            else:  # products with the L-SR1 matrix are cheap: solve accurately
                tol = 1e-8
            st = trust_region_step(fg, x, f, g, radius, hess, space=space, params=params,
                                   subproblem=kind, tol=tol, maxiter=cg_maxiter)
            if B is not None:
                B.update(st.step, st.g_trial - g)
            run.nit += 1
            x, f, g, radius = st.x, st.f, st.g, st.radius
            if st.accepted:
                gnorm = space.norm(g)
            run.record(fun=f, grad_norm=gnorm, step_norm=st.sub.step_norm, radius=radius,
                       rho=st.rho, accepted=st.accepted, cg_iter=st.sub.niter)
            if run.notify(x, f, g, radius=radius, rho=st.rho, accepted=st.accepted):
                return run.result(x, f, g, STATUS_CALLBACK, CALLBACK_MESSAGE, success=False,
                                  radius=radius)
            if run.boundary(state):
                return run.interrupted_result(x, f, g, radius=radius)
    except NotImplementedError as exc:
        raise ValueError(
            f"hessian='exact' needs objective.hessp ({exc}); use options={{'hessian': 'lsr1'}}"
        ) from exc
    except Diverged as exc:
        return run.diverged_result(x, f, g, exc, radius=radius)
