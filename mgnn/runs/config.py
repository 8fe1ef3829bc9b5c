"""The configuration of a training run (command line, TOML files).

A run is described by TOML sections; every key has a default (:data:`DEFAULTS`),
and unknown sections or keys are errors, never ignored:

``[data]``
    the problem (``peaks`` or ``smooth_regression``), sample counts, seed, noise.
``[net]``
    the ResNet (width, depth, T, activation, dtype) and its initialisation.
``[objective]``
    Tikhonov and smoothness (time-derivative) regularisation.
``[propagation]``
    ``kind = "serial"`` (layer by layer), ``"mgrit"`` (one-shot MGRIT in one
    process) or ``"layer_parallel"`` (``LayerParallelObjective``: layers over the
    MPI ranks, run under ``mpiexec``), with the MGRIT settings of
    :class:`~mgnn.mgrit.MGRITPropagation` (its defaults; TOML has no None, so
    ``levels = 0``, ``rtol = 0`` and ``tol = 0`` stand for it).
``[solver]``
    ``name = "minimize"``, ``"nested_iteration"``, ``"rmtr"``, ``"mgopt"``, or the
    domain-decomposition methods ``"apts"`` and ``"spqn"``.
``[optimizer]``
    ``method`` of :func:`mgnn.optim.minimize` (the level optimizer of nested
    iteration, the smoother of MG/OPT) and its ``options``. The options' defaults
    follow the method (:data:`METHOD_DEFAULTS`): ``--set optimizer.method=lbfgs``
    gets L-BFGS's defaults, not Adam's; given options are added to them. With
    nested iteration and MG/OPT the default ``maxiter`` is left out (the schedule,
    ``pre``/``post``/``cycles`` set the iterations).
``[hierarchy]``, ``[nested_iteration]``, ``[rmtr]``, ``[mgopt]``
    the multilevel solvers' settings.
``[dd]``
    APTS/SPQN: the decomposition (``layers``, ``neurons``, ``tensors``, ``data``),
    the number of subdomains, the overlap (layers for ``layers``, a fraction for
    ``data``), ``two_level`` (a coarse correction from ``[hierarchy]``), the seed of
    ``tensors`` and the method's ``options``.
``[checkpoint]``, ``[progress]``
    checkpoint interval (iterations and/or seconds; 0 = off) and how many to
    keep; progress-line interval (0 = about 20 lines per run).

TOML has no ``null``: 0 stands for "off" where the key says so.
"""

from __future__ import annotations

import ast
import copy
import json
import math

__all__ = ["DEFAULTS", "METHOD_DEFAULTS", "load_config", "resolve", "to_toml", "parse_set",
           "SOLVERS", "PROPAGATIONS"]

SOLVERS = ("minimize", "nested_iteration", "rmtr", "mgopt", "apts", "spqn")
PROPAGATIONS = ("serial", "mgrit", "layer_parallel")

DEFAULTS = {
    "data": {"problem": "peaks", "n_train": 5000, "n_val": 1000, "seed": 0, "noise": 0.0},
    "net": {"width": 8, "depth": 16, "T": 5.0, "activation": "tanh", "dtype": "float64",
            "init": "glorot", "inner_scale": 0.0, "seed": 0},
    "objective": {"tikhonov": 1e-6, "smoothness": 0.0},
    "propagation": {"kind": "serial", "levels": 0, "cf": [8, 4], "relax": "F", "cycle": "F",
                    "fwd_iters": 3, "bwd_iters": 3, "rtol": 1e-4, "tol": 0.0,
                    "coarse_weights": "average", "min_coarse": 2, "reuse_tau": True,
                    "layer_ranks": 0},
    "solver": {"name": "minimize"},
    "optimizer": {"method": "adam", "options": {}},
    "hierarchy": {"kind": "depth", "levels": 3, "factor": 2, "interpolation": "constant"},
    "nested_iteration": {"schedule": [400, 200, 100], "eval_every": 10,
                         "refine_iterations": 0, "refine_steps": 3},
    "rmtr": {"options": {"maxiter": 50, "hessian": "lsr1"}},
    "mgopt": {"cycles": 20, "pre": 1, "post": 1, "tau": "full", "line_search": False,
              "rng": 0},
    "dd": {"decomposition": "layers", "subdomains": 2, "overlap": 0, "two_level": False,
           "seed": 0, "options": {"maxiter": 50}},
    "checkpoint": {"every": 0, "seconds": 0.0, "keep": 3},
    "progress": {"every": 0},
}

#: Default ``optimizer.options`` of each method (given options are added to these).
METHOD_DEFAULTS = {
    "adam": {"lr": 1e-2, "batch_size": 100, "maxiter": 2000, "rng": 0},
    "sgd": {"lr": 1e-2, "momentum": 0.9, "batch_size": 100, "maxiter": 2000, "rng": 0},
    "lbfgs": {"maxiter": 500},
    "trust-region": {"maxiter": 200, "hessian": "lsr1"},
}

# tables whose keys are free (the options of a method), not checked against defaults
_FREE = {("optimizer", "options"), ("rmtr", "options"), ("dd", "options")}


def _merge(base, new, where=()):
    for key, val in new.items():
        path = where + (key,)
        name = ".".join(path)
        if key not in base:
            raise ValueError(f"unknown setting '{name}'; expected one of "
                             f"{', '.join(sorted(base))}")
        if path in _FREE:
            if not isinstance(val, dict):
                raise ValueError(f"setting {name} must be a table of options")
            base[key].update(val)
        elif isinstance(base[key], dict):
            if not isinstance(val, dict):
                raise ValueError(f"setting {name} must be a table")
            _merge(base[key], val, path)
        else:
            if isinstance(val, dict):
                raise ValueError(f"setting {name} must be a value, got a table")
            base[key] = val


def parse_value(raw):
    """A command-line value: a Python/TOML literal, ``true``/``false``, or a bare string.

    Examples
    --------
    >>> parse_value("[8, 4]"), parse_value("true"), parse_value("F"), parse_value("1e-4")
    ([8, 4], True, 'F', 0.0001)
    """
    raw = raw.strip()
    if raw in ("true", "false"):
        return raw == "true"
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def parse_options(items):
    """``["key=value", ...]`` as a dict of :func:`parse_value` values (scripts' options).

    Examples
    --------
    >>> parse_options(["cf=[8, 4]", "relax=F"])
    {'cf': [8, 4], 'relax': 'F'}
    """
    out = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"an option must read key=value, got {item!r}")
        out[key.strip()] = parse_value(raw)
    return out


def parse_set(item):
    """``"section.key=value"`` as a nested dict; the value is a Python/TOML literal or a
    bare string (``true``/``false`` are booleans)."""
    if not isinstance(item, str) or "=" not in item:
        raise ValueError(f"--set needs section.key=value, got {item!r}")
    path, raw = item.split("=", 1)
    keys = [k.strip() for k in path.split(".")]
    if len(keys) < 2 or not all(keys):
        raise ValueError(f"--set needs section.key=value, got {item!r}")
    val = parse_value(raw)
    out = cur = {}
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
    cur[keys[-1]] = val
    return out


def load_config(path=None, overrides=(), base=None):
    """Defaults (or ``base``), then the TOML file ``path``, then ``--set`` overrides.

    The result holds only what was given for ``optimizer.options``; :func:`resolve`
    adds the method's defaults.

    Examples
    --------
    >>> cfg = load_config(overrides=["optimizer.method=lbfgs", "net.depth=8"])
    >>> resolve(cfg)["optimizer"]
    {'method': 'lbfgs', 'options': {'maxiter': 500}}
    >>> load_config(overrides=["net.widht=3"])
    Traceback (most recent call last):
    ...
    ValueError: unknown setting 'net.widht'; expected one of T, activation, depth, ...
    """
    import tomllib

    cfg = copy.deepcopy(DEFAULTS if base is None else base)
    if path is not None:
        try:
            with open(path, "rb") as fh:
                user = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: invalid TOML: {exc}") from exc
        _merge(cfg, user)
    for item in overrides:
        _merge(cfg, parse_set(item))
    return cfg


def resolve(cfg):
    """The configuration with every default filled in (the method's option defaults)."""
    out = copy.deepcopy(cfg)
    method = out["optimizer"]["method"]
    if not isinstance(method, str):
        raise ValueError(f"optimizer.method must be a string, got {method!r}")
    opts = dict(METHOD_DEFAULTS.get(method.lower(), {}))
    if out["solver"]["name"] not in ("minimize",):  # iterations come from the solver
        opts.pop("maxiter", None)
    opts.update(out["optimizer"]["options"])
    out["optimizer"]["options"] = opts
    return out


def _value(v, where):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x, where) for x in v) + "]"
    raise ValueError(f"setting {where} = {v!r} cannot be written as TOML")


def to_toml(cfg, comments=None):
    """The configuration as TOML text (tables in order; ``comments`` by table name)."""
    lines = []

    def table(name, d):
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict)}
        subs = {k: v for k, v in d.items() if isinstance(v, dict)}
        if name:
            if lines:
                lines.append("")
            if comments and name in comments:
                lines.extend(f"# {c}" for c in comments[name])
            lines.append(f"[{name}]")
        for k, v in scalars.items():
            if v is None:
                continue
            lines.append(f"{k} = {_value(v, f'{name}.{k}')}")
        for k, v in subs.items():
            table(f"{name}.{k}" if name else k, v)

    table("", cfg)
    return "\n".join(lines) + "\n"
