"""The stepper protocol: what MGRIT needs from a one-step time integrator.

A stepper advances one state over one time interval, in place::

    step(u_in, u_out, t0, t1, level, index)

writes ``u_out = Phi_level(u_in)`` (the propagator of level ``level`` from
``t0`` to ``t1``) into the preallocated array ``u_out`` and returns nothing.
States are NumPy arrays of one fixed shape per level (``(s, w)`` batch states
of a ResNet, a vector of grid values of a PDE, ...); MGRIT allocates all of
them up front with :meth:`Stepper.new_vector` and never allocates per step.

Which interval is being stepped
-------------------------------
``index`` is the index of ``t0`` on the *finest* time grid. On level ``l`` a
step covers the fine intervals ``index, index + 1, ..., index + stride_l - 1``
where ``stride_l`` is the product of the coarsening factors of the levels
above (``MGRIT.hierarchy.strides[l]``); on level 0 it is the step number. A
ResNet stepper uses it to pick the weights of layer ``index`` (the usual
"coarse layer j uses the fine weights at its start point" rule); a stepper
that only needs times ignores it.

Batched steps (optional)
------------------------
A stepper may also implement ::

    step_batch(u_in, u_out, t0, t1, level, index)

which advances ``k`` independent states at once: ``u_in`` and ``u_out`` are
stacks of shape ``(k, *shape)`` (strided views into the solver's blocks, not
necessarily contiguous), ``t0``, ``t1`` and ``index`` NumPy arrays of length
``k``; ``u_out[q]`` must equal ``step(u_in[q], ., t0[q], t1[q], level,
index[q])``. ``MGRIT(..., batched=True)`` then advances all intervals of a level
together (one call per offset inside the intervals), e.g. as batched GEMMs on a
GPU. The solver checks it against :meth:`Stepper.step` on its first solve.

Whole-interval sweeps (optional)
--------------------------------
A stepper may implement ::

    sweep(U, t, level, index)

which takes ``n = len(U) - 1`` consecutive steps ``U[q] -> U[q+1]`` with times
``t[q], t[q+1]`` and indices ``index + q``; ``U`` is a contiguous view of the
solver's level-0 block. The unbatched solver hands every run of two or more
level-0 steps from point to point (the F-points of an interval, the sequential
solve of one level) to it, so a stepper can take an F-interval in one kernel
call (the ResNet steppers call the fused whole-sweep kernels). The result must
equal the single steps bit for bit.

Planned sweeps (optional)
-------------------------
A stepper may implement ::

    plan_sweep(level, entries)

which MGRIT calls once per sweep plan (and part of it: the steps that do not wait
for the ghost, then those that do) when it sets up, with the steps in order:
``entries`` is a list of ``(u_in, u_out, t0, t1, index, g)``, ``g`` the array to
add to ``u_out`` after the step (a coarse level's FAS right-hand side) or None. It
returns a list of calls ``(fn, args)`` that do exactly these steps and additions
when run in order (bit for bit), or None to let the solver step (or ``sweep``) on
its own. The arrays are the solver's storage for its lifetime; what the steps
depend on (weights, ``final_sweep``) may change between sweeps. The ResNet
steppers turn a fine sweep into one step-table kernel call and every run of coarse
steps sharing a block of averaged weights into one
(:func:`mgnn.kernels.cpu.forward_steps_layers`, :func:`mgnn.kernels.cpu.forward_steps`).

Final sweep (optional)
----------------------
A stepper may implement ``final_sweep(active)``: MGRIT calls it with ``True``
before and ``False`` after the last fine-level sweep of a solve, which then
steps every fine interval (into the C-points too). A stepper that derives
something from the final states does it in the steps of that sweep: the
ResNet adjoint stepper writes the parameter gradient there (and propagates
adjoints only, one GEMM per step instead of two, in every other sweep).

Spatial coarsening
------------------
A stepper may use smaller states on coarse levels: override
:meth:`Stepper.new_vector` to return the level's shape and
:meth:`Stepper.restrict` / :meth:`Stepper.interpolate` to move between
levels. The defaults are identity copies (no spatial coarsening).
"""

from __future__ import annotations

import math

import numpy as np

from mgnn._validation import check_array, check_dtype

__all__ = ["Stepper", "FunctionStepper", "serial_stepping"]


class Stepper:
    """Base class of one-step integrators used by :class:`~mgnn.mgrit.MGRIT`.

    Subclasses implement :meth:`step`; the other methods have defaults for
    NumPy states of shape ``shape`` and dtype ``dtype``.

    Parameters
    ----------
    shape : tuple of int
        Shape of one state on the finest level.
    dtype : dtype
        float64 (default) or float32.

    Examples
    --------
    A stepper for u' = -u by forward Euler:

    >>> import numpy as np
    >>> class Decay(Stepper):
    ...     def step(self, u_in, u_out, t0, t1, level, index):
    ...         np.multiply(u_in, 1.0 - (t1 - t0), out=u_out)
    >>> s = Decay(shape=(2,))
    >>> u = s.new_vector()
    >>> s.step(np.ones(2), u, 0.0, 0.5, 0, 0)
    >>> u
    array([0.5, 0.5])
    """

    def __init__(self, shape, dtype=np.float64):
        if isinstance(shape, (int, np.integer)):
            shape = (int(shape),)
        shape = tuple(int(n) for n in shape)
        if any(n < 0 for n in shape):
            raise ValueError(f"shape must have non-negative entries, got {shape}")
        self.shape = shape
        self.dtype = check_dtype(dtype)

    def step(self, u_in, u_out, t0, t1, level, index):
        """Write ``Phi_level(u_in)`` over ``[t0, t1]`` into ``u_out``.

        Parameters
        ----------
        u_in : ndarray
            State at ``t0`` (read only: do not modify).
        u_out : ndarray
            Preallocated output, distinct from ``u_in``; must be overwritten.
        t0, t1 : float
            Start and end time of the step.
        level : int
            Level of the time grid (0 is the finest).
        index : int
            Index of ``t0`` on the finest grid (see the module docstring).
        """
        raise NotImplementedError("Stepper subclasses must implement step()")

    def new_vector(self, level=0):
        """Return a new uninitialised state for ``level`` (``np.empty``)."""
        return np.empty(self.shape, dtype=self.dtype)

    def copy(self, src, dst):
        """Copy ``src`` into ``dst`` in place."""
        np.copyto(dst, src)

    def norm(self, u):
        """Norm of one state (default: Euclidean norm of all entries).

        MGRIT combines the norms of the C-point residuals into
        ``sqrt(sum_c norm(r_c)**2)``. When this method is not overridden the
        solver computes the same quantity block-wise, without a Python loop.
        """
        return math.sqrt(float(np.vdot(u, u).real))

    def restrict(self, u_fine, u_coarse, level):
        """Spatial restriction from ``level`` to ``level + 1`` (default: copy)."""
        np.copyto(u_coarse, u_fine)

    def interpolate(self, u_coarse, u_fine, level):
        """Spatial interpolation from ``level + 1`` to ``level`` (default: copy)."""
        np.copyto(u_fine, u_coarse)

    @property
    def spatial_coarsening(self):
        """True when :meth:`restrict` or :meth:`interpolate` is overridden."""
        cls = type(self)
        return (cls.restrict is not Stepper.restrict) or (
            cls.interpolate is not Stepper.interpolate
        )

    def __repr__(self):
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype})"


class FunctionStepper(Stepper):
    """Wrap a function ``f(u_in, u_out, t0, t1, level, index)`` as a stepper.

    Examples
    --------
    >>> import numpy as np
    >>> def halve(u_in, u_out, t0, t1, level, index):
    ...     np.multiply(u_in, 0.5, out=u_out)
    >>> s = FunctionStepper(halve, shape=(3,))
    >>> serial_stepping(s, np.linspace(0.0, 1.0, 3), np.ones(3))[:, 0]
    array([1.  , 0.5 , 0.25])
    """

    def __init__(self, func, shape, dtype=np.float64):
        if not callable(func):
            raise TypeError(f"func must be callable, got {type(func).__name__}")
        super().__init__(shape, dtype)
        self.func = func
        self.step = func

    def __repr__(self):
        name = getattr(self.func, "__name__", repr(self.func))
        return f"FunctionStepper({name}, shape={self.shape}, dtype={self.dtype})"


def serial_stepping(stepper, t, u0, out=None):
    """Step sequentially over the whole grid ``t`` on level 0.

    This is the reference every MGRIT configuration must reproduce; MGRIT
    with one level performs exactly these steps (bit-identical results).

    Parameters
    ----------
    stepper : Stepper
    t : array_like, shape (N + 1,)
        Increasing time points.
    u0 : ndarray
        Initial state, of shape ``stepper.shape``.
    out : ndarray, shape (N + 1, *stepper.shape), optional
        Where to write the states.

    Returns
    -------
    ndarray, shape (N + 1, *stepper.shape)
        All states ``u_0, ..., u_N``.
    """
    t = np.asarray(t, dtype=np.float64)
    u0 = check_array(u0, "u0", shape=stepper.shape, dtype=stepper.dtype)
    n = len(t) - 1
    if out is None:
        out = np.empty((n + 1,) + stepper.shape, dtype=stepper.dtype)
    else:
        check_array(out, "out", shape=(n + 1,) + stepper.shape, dtype=stepper.dtype,
                    finite=False)
    np.copyto(out[0], u0)
    views = list(out)
    tt = t.tolist()
    step = stepper.step
    for i in range(n):
        step(views[i], views[i + 1], tt[i], tt[i + 1], 0, i)
    return out
