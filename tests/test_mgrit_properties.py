"""Property tests of MGRIT (hypothesis).

Linear problems u' = A u with a random stable A (symmetric negative definite
plus a skew part), backward Euler, random hierarchy options. The all-at-once
system is block lower bidiagonal, ``K = [I; -Phi I; ...; -Phi I]`` (Phi =
(I - dt A)^{-1}), and for a linear problem the error of any iterate u is
``e = u - u* = K^{-1} (K u - g) = -K^{-1} r`` with r the full residual. After
F-relaxation r vanishes at F-points and at t_0, so the C-point residual norm
MGRIT reports is ``||r||_2`` and the bound tested after every iteration is

    ||u_k - u*||_2 <= ||K^{-1}||_2 ||r_k||_2     (2-norms over all points)

with ``||K^{-1}||_2`` computed from the dense matrix. Nonlinear problems
(damped pendulums, random states and damping) must converge to serial
stepping.
"""

import numpy as np
import scipy.linalg as sla
from hypothesis import given, settings
from hypothesis import strategies as st

from mgnn.mgrit import MGRIT, Stepper, serial_stepping
from mgnn.mgrit.problems import DampedPendulum


class LinearBE(Stepper):
    """u' = A u, backward Euler, one LU per distinct dt."""

    def __init__(self, A):
        super().__init__((A.shape[0],))
        self.A = A
        self._lu = {}

    def step(self, u_in, u_out, t0, t1, level, index):
        dt = t1 - t0
        lu = self._lu.get(dt)
        if lu is None:
            lu = self._lu[dt] = sla.lu_factor(np.eye(len(self.A)) - dt * self.A)
        u_out[...] = sla.lu_solve(lu, u_in)

    def phi(self, dt):
        return np.linalg.inv(np.eye(len(self.A)) - dt * self.A)


def all_at_once_inverse_norm(stepper, t):
    n, d = len(t) - 1, stepper.shape[0]
    K = np.eye((n + 1) * d)
    for i in range(1, n + 1):
        K[i * d:(i + 1) * d, (i - 1) * d:i * d] = -stepper.phi(t[i] - t[i - 1])
    return 1.0 / np.linalg.svd(K, compute_uv=False)[-1]


options = st.fixed_dictionaries({
    "cf": st.sampled_from([2, 3, 4, [4, 2]]),
    "cf_sweeps": st.integers(0, 2),
    "cycle": st.sampled_from(["V", "F"]),
    "nested_iteration": st.booleans(),
    "skip": st.booleans(),
})


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), d=st.integers(1, 3), n=st.integers(12, 40),
       t_end=st.floats(0.5, 4.0), opts=options)
def test_linear_error_bounded_by_residual_and_converges(seed, d, n, t_end, opts):
    rng = np.random.default_rng(seed)
    B = rng.standard_normal((d, d))
    S = rng.standard_normal((d, d))
    A = -(B @ B.T + 0.1 * np.eye(d)) + (S - S.T)
    stepper = LinearBE(A)
    t = np.sort(rng.uniform(0.0, t_end, n - 1))
    t = np.concatenate(([0.0], t, [t_end]))
    t = t[np.concatenate(([True], np.diff(t) > 1e-3))]
    if len(t) < 5:
        return
    u0 = rng.standard_normal(d)
    ref = serial_stepping(stepper, t, u0)
    kinv = all_at_once_inverse_norm(stepper, t)
    solver = MGRIT(stepper, t, min_coarse=1, **opts)
    history = []
    guess = rng.standard_normal(ref.shape)
    res = solver.solve(u0, u_guess=guess, max_iter=len(t),
                       tol=1e-13 * np.abs(ref).max(),
                       callback=lambda r: history.append((r.u.copy(), r.residuals[-1])))
    history.append((res.u.copy(), res.residuals[-1]))
    for u, r in history:
        err = np.linalg.norm(u - ref)
        assert err <= kinv * r * (1 + 1e-8) + 1e-13 * np.abs(ref).max()
    assert res.success
    assert np.abs(res.u - ref).max() <= 1e-12 * max(1.0, np.abs(ref).max()) * kinv


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), gamma=st.floats(0.5, 2.0), batch=st.integers(1, 3),
       opts=options)
def test_nonlinear_converges_to_serial(seed, gamma, batch, opts):
    rng = np.random.default_rng(seed)
    stepper = DampedPendulum(gamma=gamma, batch=batch)
    t = np.linspace(0.0, 2.0, 65)
    u0 = rng.uniform(-3.0, 3.0, (batch, 2))
    ref = serial_stepping(stepper, t, u0)
    res = MGRIT(stepper, t, **opts).solve(u0, tol=1e-12, max_iter=40)
    assert res.success, res.message
    assert np.abs(res.u - ref).max() <= 1e-11
