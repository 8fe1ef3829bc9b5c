"""PDE problems: reference solutions, exact-condition transforms, collocation sampling."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgnn.data.pde import (
    PDE_PROBLEMS,
    BoundaryCondition,
    Box,
    PDEProblem,
    allen_cahn_spectral,
    burgers_cole_hopf,
    pde_problem,
)
from mgnn.pinn.operators import make_pde
from mgnn.pinn.streams import StreamLayout

CLOSED_FORM = ["poisson_1d", "poisson_2d", "diffusion_advection_1d", "klein_gordon_1d"]


def _fd_streams(u, X, layout, h=1e-4):
    """Stream stack of a function by central differences."""
    U = np.empty((layout.S, X.shape[0]))
    U[0] = u(X)
    for j in layout.first:
        E = np.zeros(X.shape[1])
        E[j] = h
        U[layout.d(j)] = (u(X + E) - u(X - E)) / (2 * h)
        if j in layout.second:
            U[layout.dd(j)] = (u(X + E) - 2 * U[0] + u(X - E)) / h ** 2
    return U


@pytest.mark.parametrize("name", CLOSED_FORM)
def test_closed_form_solutions_solve_their_pde(name):
    p = pde_problem(name)
    op = make_pde(p.pde, **p.pde_params)
    lay = op.layout()
    X = p.domain.sample_interior(40, "uniform", 0)
    r = op.residual(_fd_streams(p.solution, X, lay), lay, p.source_values(X))
    f = p.source_values(X)
    assert np.abs(r).max() <= 2e-5 * (1 + np.abs(f).max())


@pytest.mark.parametrize("name", sorted(PDE_PROBLEMS))
def test_exact_condition_transforms(name):
    """A meets every condition, B vanishes where they hold, and the hand-written
    derivatives of A and B match finite differences."""
    p = pde_problem(name)
    A, B, _ = p.exact_bc
    d = p.domain.d
    X = p.domain.sample_interior(15, "uniform", 1)
    for F in (A, B):
        v, g, H = (np.broadcast_to(np.asarray(a, dtype=float), s)
                   for a, s in zip(F(X), [(15,), (15, d), (15, d)], strict=True))
        for j in range(d):
            E = np.zeros(d)
            E[j] = 1e-4

            def val(Y, F=F):
                return np.broadcast_to(F(Y)[0], (Y.shape[0],))
            np.testing.assert_allclose(g[:, j], (val(X + E) - val(X - E)) / 2e-4, rtol=2e-6,
                                       atol=1e-6)
            np.testing.assert_allclose(H[:, j], (val(X + E) - 2 * v + val(X - E)) / 1e-8,
                                       atol=2e-4 * (1 + np.abs(H).max()))
    for bc in p.boundary:
        P = p.domain.sample_face(bc.face, 7, "uniform", 2)
        a, ga, _ = A(P)
        b, gb, _ = B(P)
        np.testing.assert_allclose(np.broadcast_to(b, (len(P),)), 0.0, atol=1e-14)
        if bc.kind == "dirichlet":
            np.testing.assert_allclose(np.broadcast_to(a, (len(P),)), bc.values(P), atol=1e-12)
        else:  # u_j = A_j + B_j N + B N_j: needs B_j = 0 there too
            np.testing.assert_allclose(np.broadcast_to(ga, (len(P), d))[:, bc.dim],
                                       bc.values(P), atol=1e-12)
            np.testing.assert_allclose(np.broadcast_to(gb, (len(P), d))[:, bc.dim], 0.0,
                                       atol=1e-14)


def test_burgers_reference_by_cole_hopf():
    nu = 0.01 / np.pi
    x = np.linspace(-1, 1, 7)
    np.testing.assert_allclose(burgers_cole_hopf(x, 0.0, nu), -np.sin(np.pi * x))
    np.testing.assert_allclose(burgers_cole_hopf(x, 1e-9, nu), -np.sin(np.pi * x), atol=1e-7)
    # odd in x, zero at the ends (the problem on [-1, 1] with zero boundary values)
    t = 0.6
    np.testing.assert_allclose(burgers_cole_hopf(x, t, nu), -burgers_cole_hopf(-x, t, nu),
                               atol=1e-12)
    assert abs(burgers_cole_hopf(1.0, t, nu)) < 1e-12
    # the PDE holds (central differences, away from the shock)
    h = 1e-4
    for x0, t0 in [(0.5, 0.5), (-0.3, 0.8), (0.05, 0.2)]:
        def u(a, b):
            return float(burgers_cole_hopf(a, b, nu))
        ut = (u(x0, t0 + h) - u(x0, t0 - h)) / (2 * h)
        ux = (u(x0 + h, t0) - u(x0 - h, t0)) / (2 * h)
        uxx = (u(x0 + h, t0) - 2 * u(x0, t0) + u(x0 - h, t0)) / h ** 2
        assert abs(ut + u(x0, t0) * ux - nu * uxx) < 1e-5 * (abs(ut) + abs(nu * uxx))
    # the steepest slope (at x = 0, t = 0.51) is the published -152.00516
    xs = np.linspace(-1e-3, 1e-3, 201)
    slope = np.min(np.diff(burgers_cole_hopf(xs, 0.51, nu)) / np.diff(xs))
    assert slope == pytest.approx(-152.005, abs=0.01)


def test_allen_cahn_reference_converges():
    t = [0.0, 0.25, 1.0]
    x1, _, U1 = allen_cahn_spectral(eps=1e-2, n_modes=64, dt=2e-3, t_out=t)
    _, _, U2 = allen_cahn_spectral(eps=1e-2, n_modes=128, dt=1e-3, t_out=t)
    np.testing.assert_allclose(U1[:, 0], x1 ** 2 * np.cos(np.pi * x1), atol=1e-14)
    rel = np.linalg.norm(U1 - U2[::2]) / np.linalg.norm(U2)
    assert rel < 2e-4
    # the solution settles towards the stable states -1 and +1
    assert np.abs(U2[:, -1]).max() <= 1.0 + 1e-6 and np.abs(U2[:, -1]).max() > 0.9


@settings(max_examples=20)
@given(n=st.integers(1, 40), d=st.integers(1, 3), seed=st.integers(0, 2**16),
       method=st.sampled_from(["lhs", "uniform", "sobol"]))
def test_sampling_is_seeded_and_inside(n, d, seed, method):
    box = Box(-np.arange(1, d + 1.0), np.arange(1, d + 1.0))
    X = box.sample_interior(n, method, seed)
    assert X.shape == (n, d) and box.contains(X).all()
    assert np.array_equal(X, box.sample_interior(n, method, seed))
    if method == "lhs":  # one point in each of the n strata of every coordinate
        strata = np.floor((X - box.lower) / (box.upper - box.lower) * n).astype(int)
        for j in range(d):
            assert sorted(strata[:, j]) == list(range(n))
    for face in box.faces:
        P = box.sample_face(face, n, method, seed)
        j, side = box.face(face)
        assert np.all(P[:, j] == (box.lower[j] if side == "lo" else box.upper[j]))
        assert box.contains(P).all()


def test_problem_sampling_and_errors():
    p = pde_problem("klein_gordon_1d")
    pts = p.sample(50, 40, "sobol", seed=3)
    assert list(pts.boundary) == ["u@x=0", "u@x=1", "u@t=0", "u_t@t=0"]
    assert len(pts.interior) == 50
    X, U = p.evaluation_grid()
    assert p.relative_l2(U) == 0.0 and p.relative_l2(p.solution) == 0.0
    with pytest.raises(ValueError, match="u must give one value per grid point"):
        p.relative_l2(U[:-1])
    with pytest.raises(ValueError, match="name must be one of"):
        pde_problem("heat_3d")
    box = Box([0, 0], [1, 1], ("x", "t"))
    with pytest.raises(ValueError, match=r"boundary\[0\]: unknown face 'x=2'"):
        PDEProblem("bad", "burgers", {}, box, None, (BoundaryCondition("x=2"),), {}, None,
                   None, None, (2, 2))
    with pytest.raises(ValueError, match=r"boundary\[0\].dim must be a coordinate index"):
        PDEProblem("bad", "burgers", {}, box, None,
                   (BoundaryCondition("t=0", kind="derivative", dim=5),), {}, None, None,
                   None, (2, 2))
    with pytest.raises(ValueError, match="periodic coordinate 0 with span"):
        PDEProblem("bad", "burgers", {}, box, None, (), {0: (-1.0, 1.0)}, None, None, None,
                   (2, 2))
    with pytest.raises(ValueError, match="on face 'x=0' of the periodic coordinate"):
        PDEProblem("bad", "burgers", {}, box, None, (BoundaryCondition("x=0"),),
                   {0: (0.0, 1.0)}, None, None, None, (2, 2))
    with pytest.raises(ValueError, match="method must be one of|unknown method"):
        p.sample(10, 10, "halton")
    with pytest.raises(ValueError, match="upper > lower"):
        Box([0, 1], [1, 1])


def test_stream_layout_of_each_problem_pde():
    lays = {n: make_pde(pde_problem(n).pde, **pde_problem(n).pde_params).layout()
            for n in ["poisson_2d", "burgers_1d", "klein_gordon_1d"]}
    assert lays["poisson_2d"] == StreamLayout(2, [0, 1], [0, 1]) and lays["poisson_2d"].S == 5
    assert lays["burgers_1d"].S == 4 and lays["klein_gordon_1d"].S == 5
