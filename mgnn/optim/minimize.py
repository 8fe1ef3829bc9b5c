"""``minimize``: one entry point for every single-level method."""

from __future__ import annotations

from scipy.optimize import OptimizeResult

from .function import FunctionObjective
from .lbfgs import minimize_lbfgs
from .lsgd import minimize_lsgd
from .stochastic import minimize_adam, minimize_sgd
from .trust_region import minimize_trust_region

__all__ = ["minimize", "METHODS"]

#: Registered methods: name -> ``fn(objective, theta0, options, callback)``.
METHODS = {
    "sgd": minimize_sgd,
    "adam": minimize_adam,
    "lbfgs": minimize_lbfgs,
    "trust-region": minimize_trust_region,
    "lsgd": minimize_lsgd,
}


def _is_objective(obj):
    return all(callable(getattr(obj, name, None)) for name in ("value", "value_and_grad"))


def minimize(objective, theta0, method="lbfgs", options=None, callback=None, *, jac=None,
             hessp=None):
    """Minimize an objective over theta, in the shape of ``scipy.optimize.minimize``.

    Parameters
    ----------
    objective : Objective or callable
        An object in the objective protocol (``value``, ``grad``,
        ``value_and_grad``, ``hessp``, ``counter``, ``space``, ``n_samples``;
        e.g. :class:`mgnn.objective.Objective` or
        :class:`~mgnn.optim.FunctionObjective`), or a plain function ``fun(x)``
        that is wrapped with ``jac`` and ``hessp`` in a ``FunctionObjective``.
    theta0 : ndarray
        Initial guess, 1-D; never modified.
    method : str or callable, default 'lbfgs'
        'sgd', 'adam', 'lbfgs', 'trust-region' or 'lsgd' (case-insensitive), or a
        callable ``method(objective, theta0, options, callback)`` returning an
        ``OptimizeResult``.
    options : dict, optional
        Method options; see :func:`~mgnn.optim.stochastic.minimize_sgd`,
        :func:`~mgnn.optim.stochastic.minimize_adam`,
        :func:`~mgnn.optim.lbfgs.minimize_lbfgs`,
        :func:`~mgnn.optim.trust_region.minimize_trust_region`,
        :func:`~mgnn.optim.lsgd.minimize_lsgd`. Unknown names
        raise ``TypeError``; values out of range or options that would have no
        effect raise ``ValueError``.
    callback : callable, optional
        Called after every iteration as ``callback(intermediate_result)``
        (an ``OptimizeResult`` with ``x, fun, jac, nit, nfev, njev, nhev, work,
        time``) when its only parameter is named ``intermediate_result``,
        otherwise as ``callback(xk)`` (scipy's convention). Raising
        ``StopIteration`` ends the run: ``x`` is the current iterate,
        ``success=False``, ``status=99`` (scipy's convention).
    jac, hessp : callable, optional
        Only with a plain function ``objective``: gradient (or ``True`` when
        ``fun`` returns ``(f, g)``) and Hessian-vector product.

    Returns
    -------
    OptimizeResult
        ``x, fun, jac, nit, nfev, njev, nhev, success, status, message`` as in
        scipy, plus ``work`` (fine-gradient equivalents spent by the run),
        ``time`` (wall seconds) and ``history`` (a :class:`~mgnn.optim.History`
        with one row per iteration: ``fun, grad_norm, step_norm, radius, nfev,
        njev, nhev, work, time``...). Status: 0 converged (or, for stochastic
        methods, the planned iterations done), 1 ``maxiter`` reached, 2 stalled
        (line search failed, trust radius collapsed), 3 NaN/inf met (``x`` is
        the last iterate with a finite loss and gradient), 99 callback stop.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.optimize import rosen, rosen_der, rosen_hess_prod
    >>> x0 = np.array([-1.2, 1.0])
    >>> res = minimize(rosen, x0, method='trust-region', jac=rosen_der,
    ...                hessp=rosen_hess_prod, options={'gtol': 1e-8})
    >>> res.success, np.allclose(res.x, [1.0, 1.0]), x0.tolist()
    (True, True, [-1.2, 1.0])
    >>> h = res.history
    >>> len(h['work']) == res.nit + 1, bool(h['fun'][-1] < 1e-15)
    (True, True)
    """
    if _is_objective(objective):
        if jac is not None or hessp is not None:
            raise ValueError(
                "jac and hessp are only accepted with a plain function; the objective "
                f"{type(objective).__name__} provides its own derivatives"
            )
    elif callable(objective):
        if jac is None:
            raise ValueError("jac is required with a plain function (gradient-based methods)")
        objective = FunctionObjective(objective, jac=jac, hessp=hessp)
    else:
        raise TypeError(
            "objective must be an objective (value, value_and_grad, ...) or a callable, "
            f"got {type(objective).__name__}"
        )
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"options must be a dict, got {type(options).__name__}")
    if callable(method):
        res = method(objective, theta0, dict(options or {}), callback)
        if not isinstance(res, OptimizeResult):
            raise TypeError(
                f"method {getattr(method, '__name__', method)!r} must return an OptimizeResult, "
                f"got {type(res).__name__}"
            )
        return res
    if not isinstance(method, str):
        raise TypeError(f"method must be a string or a callable, got {type(method).__name__}")
    key = method.lower()
    if key not in METHODS:
        opts = ", ".join(repr(m) for m in METHODS)
        raise ValueError(f"unknown method {method!r}; expected one of {opts} or a callable")
    return METHODS[key](objective, theta0, options, callback)
