"""Test problems with known MGRIT behaviour.

* :class:`Dahlquist` -- u' = lambda u, backward or forward Euler (the model
  problem of the MGRIT convergence theory).
* :class:`Heat1D` -- u_t = a u_xx on (0, 1), homogeneous Dirichlet
  conditions, second-order finite differences, backward Euler; one sparse LU
  factorisation per distinct step size.
* :class:`DampedPendulum` -- theta'' = -sin(theta) - gamma theta', a nonlinear
  system, backward Euler with Newton's method (vectorised over a batch of
  pendulums).

Examples
--------
>>> import numpy as np
>>> from mgnn.mgrit import MGRIT
>>> heat = Heat1D(nx=31)
>>> t = np.linspace(0.0, 0.5, 129)
>>> res = MGRIT(heat, t, cf=4, max_levels=2).solve(heat.initial(), tol=1e-10)
>>> res.success, res.nit, bool(res.factors.max() < 0.05)
(True, 7, True)
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from mgnn._validation import check_choice, check_positive_int, check_scalar
from mgnn.mgrit.stepper import Stepper

__all__ = ["Dahlquist", "Heat1D", "DampedPendulum"]


class Dahlquist(Stepper):
    """u' = lambda u with backward (default) or forward Euler.

    One step multiplies by ``1 / (1 - lambda dt)`` (backward) or
    ``1 + lambda dt`` (forward) on every level (the coarse propagator is the
    same method with the coarse step, as in the MGRIT literature).

    Parameters
    ----------
    lam : float
        The eigenvalue lambda (real).
    method : {'backward', 'forward'}
    shape : tuple
        Shape of the state: the equation acts entrywise, so a batch of
        initial values can be propagated at once.
    dtype : dtype

    Examples
    --------
    >>> import numpy as np
    >>> s = Dahlquist(-1.0)
    >>> u = s.new_vector()
    >>> s.step(np.ones(1), u, 0.0, 1.0, 0, 0)
    >>> u
    array([0.5])
    >>> s.amplification(1.0)
    0.5
    """

    def __init__(self, lam=-1.0, method="backward", shape=(1,), dtype=np.float64):
        super().__init__(shape, dtype)
        self.lam = check_scalar(lam, "lam")
        self.method = check_choice(method, "method", ("backward", "forward"))
        self._backward = method == "backward"

    def amplification(self, dt):
        """The factor one step of size ``dt`` multiplies by."""
        z = self.lam * dt
        return 1.0 / (1.0 - z) if self._backward else 1.0 + z

    def step(self, u_in, u_out, t0, t1, level, index):
        z = self.lam * (t1 - t0)
        np.multiply(u_in, 1.0 / (1.0 - z) if self._backward else 1.0 + z, out=u_out)

    def __repr__(self):
        return f"Dahlquist(lam={self.lam:g}, method={self.method!r}, shape={self.shape})"


class Heat1D(Stepper):
    """1-D heat equation u_t = a u_xx on (0, 1), u = 0 at both ends, backward Euler.

    The state holds the ``nx`` interior grid values (mesh width
    ``h = 1 / (nx + 1)``). A step solves ``(I - dt a D2) u_out = u_in`` with a
    sparse LU factorisation computed once per distinct ``dt`` and cached.

    Parameters
    ----------
    nx : int
        Number of interior points.
    a : float
        Diffusion coefficient (> 0).
    dtype : dtype

    Attributes
    ----------
    x : ndarray
        The interior grid points.

    Examples
    --------
    >>> import numpy as np
    >>> heat = Heat1D(nx=15)
    >>> u0 = heat.initial()                      # sin(pi x)
    >>> u1 = heat.new_vector()
    >>> heat.step(u0, u1, 0.0, 0.01, 0, 0)
    >>> bool(np.all(u1 < u0))
    True
    >>> len(heat.eigenvalues())
    15
    """

    def __init__(self, nx=63, a=1.0, dtype=np.float64):
        nx = check_positive_int(nx, "nx")
        super().__init__((nx,), dtype)
        self.a = check_scalar(a, "a", low=0.0, low_open=True)
        self.h = 1.0 / (nx + 1)
        self.x = np.linspace(self.h, 1.0 - self.h, nx)
        main = np.full(nx, -2.0)
        off = np.ones(nx - 1)
        self.laplacian = sp.diags([off, main, off], [-1, 0, 1], format="csc") / self.h**2
        self._eye = sp.identity(nx, format="csc")
        self._lu = {}

    def initial(self):
        """The initial condition sin(pi x) on the interior points."""
        return np.sin(np.pi * self.x).astype(self.dtype)

    def eigenvalues(self):
        """Eigenvalues of ``a D2`` (all negative), for convergence theory."""
        k = np.arange(1, self.shape[0] + 1)
        return -4.0 * self.a / self.h**2 * np.sin(k * np.pi * self.h / 2.0) ** 2

    def _factor(self, dt):
        lu = self._lu.get(dt)
        if lu is None:
            lu = spla.splu((self._eye - (dt * self.a) * self.laplacian).tocsc())
            self._lu[dt] = lu
        return lu

    def step(self, u_in, u_out, t0, t1, level, index):
        u_out[...] = self._factor(t1 - t0).solve(u_in)

    def __repr__(self):
        return f"Heat1D(nx={self.shape[0]}, a={self.a:g}, cached_factorisations={len(self._lu)})"


class DampedPendulum(Stepper):
    """theta'' = -sin(theta) - gamma theta', backward Euler with Newton's method.

    The state has shape ``(batch, 2)``: angle and angular velocity of
    ``batch`` independent pendulums. A step solves, for each pendulum, the
    scalar equation ``F(th) = th - th0 - dt w0 + dt**2 sin(th)
    + gamma dt (th - th0) = 0`` (then ``w = (th - th0) / dt``) by Newton's
    method from the explicit Euler guess, to a relative increment of 1e-14.
    ``F' >= 1 + gamma dt - dt**2 > 0`` for ``dt < (gamma + sqrt(gamma**2 + 4)) / 2``,
    so the implicit step is well defined; larger steps raise ``ValueError``.

    Parameters
    ----------
    gamma : float
        Damping (>= 0).
    batch : int
        Number of pendulums.

    Examples
    --------
    >>> import numpy as np
    >>> p = DampedPendulum(gamma=0.5, batch=2)
    >>> u0 = np.array([[1.0, 0.0], [2.0, 0.5]])
    >>> u1 = p.new_vector()
    >>> p.step(u0, u1, 0.0, 0.1, 0, 0)
    >>> np.round(u1, 4)
    array([[ 0.992 , -0.0797],
           [ 2.0391,  0.3912]])
    """

    def __init__(self, gamma=0.5, batch=1, dtype=np.float64):
        batch = check_positive_int(batch, "batch")
        super().__init__((batch, 2), dtype)
        self.gamma = check_scalar(gamma, "gamma", low=0.0)
        self.dt_max = 0.5 * (self.gamma + np.sqrt(self.gamma**2 + 4.0))

    def step(self, u_in, u_out, t0, t1, level, index):
        dt = t1 - t0
        if dt >= self.dt_max:
            raise ValueError(
                f"DampedPendulum: step {dt:g} on level {level} is too large for a unique "
                f"backward Euler step (need dt < {self.dt_max:g}); use fewer levels"
            )
        th0 = u_in[:, 0]
        w0 = u_in[:, 1]
        c = 1.0 + self.gamma * dt
        rhs = th0 * c + dt * w0
        th = th0 + dt * w0
        for _ in range(50):
            f = c * th + dt * dt * np.sin(th) - rhs
            d = f / (c + dt * dt * np.cos(th))
            th -= d
            if np.max(np.abs(d)) <= 1e-14 * (1.0 + np.max(np.abs(th))):
                break
        u_out[:, 1] = (th - th0) / dt
        u_out[:, 0] = th

    def __repr__(self):
        return f"DampedPendulum(gamma={self.gamma:g}, batch={self.shape[0]})"
