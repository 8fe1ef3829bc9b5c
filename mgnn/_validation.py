"""Argument checks shared by the whole package.

Every public entry point validates what it is given with these helpers, so that
a bad argument produces one kind of message everywhere: the argument's name,
what was expected, and what was received.
"""

from __future__ import annotations

import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_dtype(dtype, name="dtype"):
    """Return ``dtype`` as a NumPy float dtype, or raise naming ``name``."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{name} must be float32 or float64, got {dtype!r}") from exc
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {dt}")
    return dt


def check_array(x, name, *, ndim=None, shape=None, dtype=None, finite=True, xp=np):
    """Validate an array argument and return it (no copy when already valid).

    Parameters
    ----------
    x : array_like
        The argument.
    name : str
        Its name, used in the error message.
    ndim : int, optional
        Required number of dimensions.
    shape : tuple, optional
        Required shape; ``None`` entries match any length.
    dtype : dtype, optional
        Required floating dtype. Arrays of another float dtype raise
        ``TypeError`` (no silent casts); integer and bool input raise too.
        Without it any real floating dtype passes; complex arrays raise
        ``TypeError`` (a cast to real would drop the imaginary part).
    finite : bool
        Reject NaN and inf.
    xp : module
        Array namespace (numpy or cupy).

    Examples
    --------
    >>> import numpy as np
    >>> check_array(np.zeros((2, 3)), "X", ndim=2).shape
    (2, 3)
    >>> check_array(np.zeros(3), "X", ndim=2)
    Traceback (most recent call last):
    ...
    ValueError: X must be a 2-D array, got shape (3,)
    """
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        try:
            x = xp.asarray(x)
        except Exception as exc:  # pragma: no cover - exotic input
            raise TypeError(f"{name} must be an array, got {type(x).__name__}") from exc
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, got shape {tuple(x.shape)}")
    if shape is not None:
        if len(shape) != x.ndim or any(
            s is not None and s != t for s, t in zip(shape, x.shape, strict=True)
        ):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape)
            want += ",)" if len(shape) == 1 else ")"
            raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    if dtype is not None:
        dt = np.dtype(dtype)
        if x.dtype != dt:
            raise TypeError(f"{name} must have dtype {dt}, got {x.dtype}")
    elif x.dtype.kind != "f":
        extra = " (complex values are not supported)" if x.dtype.kind == "c" else ""
        raise TypeError(f"{name} must be a floating-point array, got dtype {x.dtype}{extra}")
    if finite and x.size and not bool(xp.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def check_positive_int(value, name, minimum=1):
    """Return ``value`` as int if it is an integer >= ``minimum``, else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_scalar(value, name, *, low=None, high=None, low_open=False, high_open=False):
    """Return ``value`` as float if it is a finite real in the given interval."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if low is not None and (v < low or (low_open and v == low)):
        op = ">" if low_open else ">="
        raise ValueError(f"{name} must be {op} {low}, got {v}")
    if high is not None and (v > high or (high_open and v == high)):
        op = "<" if high_open else "<="
        raise ValueError(f"{name} must be {op} {high}, got {v}")
    return v


def check_choice(value, name, choices):
    """Return ``value`` if it is one of ``choices``, else raise naming them."""
    if value not in choices:
        opts = ", ".join(repr(c) for c in choices)
        raise ValueError(f"unknown {name} {value!r}; expected one of {opts}")
    return value


def per_level(value, n, name, check=None, allow_longer=False):
    """Expand a per-level option to ``n`` entries: a scalar repeats, and so does the
    last entry of a list (pyamg's convention).

    Parameters
    ----------
    value : scalar, dict or list/tuple/ndarray
        The option.
    n : int
        Number of levels.
    name : str
        Option name for messages (entries are named ``name[i]``).
    check : callable, optional
        ``check(entry, entry_name)`` validating and returning each entry.
    allow_longer : bool
        Accept a list longer than ``n`` (its tail is unused, e.g. when the
        number of levels is decided later); otherwise that is an error.

    Examples
    --------
    >>> per_level([4, 2], 4, "cf")
    [4, 2, 2, 2]
    >>> per_level(3, 2, "cf")
    [3, 3]
    >>> per_level([1, 2, 3], 2, "pre")
    Traceback (most recent call last):
    ...
    ValueError: pre has 3 entries for 2 levels
    """
    if isinstance(value, (list, tuple, np.ndarray)):
        vals = list(value)
        if not vals:
            raise ValueError(f"{name} must be a value or a non-empty list, got []")
        if len(vals) > n and not allow_longer:
            raise ValueError(f"{name} has {len(vals)} entries for {n} levels")
    else:
        vals = [value]
    if check is not None:
        vals = [check(v, f"{name}[{i}]" if len(vals) > 1 else name) for i, v in enumerate(vals)]
    return (vals + [vals[-1]] * n)[:n]


def check_validation(validation, net, name="validation", xp=np):
    """Validate a ``(X_val, Y_val)`` pair for ``net``; return it as arrays (or None).

    ``X_val`` gets the network's dtype (a real float array is converted);
    ``Y_val`` must be targets for ``net.task`` with one row per sample. The pair is
    returned in the array namespace ``xp`` (that of the training data): host
    arrays are copied to the device once, here.

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.nets import ResNet
    >>> check_validation((np.zeros((3, 2)),), ResNet(2, 3, 2, 2))
    Traceback (most recent call last):
    ...
    ValueError: validation must be a pair (X_val, Y_val), got a tuple of length 1
    """
    if validation is None:
        return None
    if not isinstance(validation, (tuple, list)) or len(validation) != 2:
        what = (f"a {type(validation).__name__} of length {len(validation)}"
                if isinstance(validation, (tuple, list)) else type(validation).__name__)
        raise ValueError(f"{name} must be a pair (X_val, Y_val), got {what}")
    from mgnn.backend import get_namespace
    from mgnn.objective import check_targets

    X, Y = validation
    if get_namespace(X) is not xp:
        X = xp.asarray(X)
    if get_namespace(Y) is not xp:
        Y = xp.asarray(Y)
    X = check_array(X, f"{name}[0] (X_val)", shape=(None, net.n_in), xp=xp)
    if X.shape[0] == 0:
        raise ValueError(f"{name}[0] (X_val) must hold at least one sample")
    X = xp.ascontiguousarray(X, dtype=net.dtype)
    Y = check_targets(net, Y, f"{name}[1] (Y_val)", n=X.shape[0])
    return X, Y


def check_seed(seed, name="seed"):
    """Return ``seed`` if it is None, an int >= 0 or a NumPy ``Generator``, else raise."""
    if seed is None or isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be None, an int or a numpy Generator, got "
                        f"{type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"{name} must be >= 0, got {seed}")
    return int(seed)
