"""The PDE data generators: the finite-volume operator is symmetric and conservative,
homogeneous Darcy flow carries unit flux, the sets are seeded and standardised."""

import numpy as np
import pytest
import scipy.sparse.linalg as spla
from hypothesis import given, settings
from hypothesis import strategies as st

from mgnn.data import darcy_regression, mnist1d, poisson_regression, rough_regression
from mgnn.data.operator_learning import diffusion_operator, gaussian_random_field


@settings(max_examples=15, deadline=None)
@given(st.integers(2, 9), st.integers(0, 2**31 - 1))
def test_operator_is_symmetric_positive_and_conservative(n, seed):
    kappa = np.exp(gaussian_random_field(1, n, np.random.default_rng(seed))[0])
    A, bnd = diffusion_operator(kappa)
    D = A.toarray()
    np.testing.assert_allclose(D, D.T, rtol=1e-13)
    assert np.linalg.eigvalsh(D).min() > 0
    # discrete conservation: the source integral leaves through the Dirichlet faces
    u = spla.spsolve(A.tocsc(), np.ones(n * n))
    h = 1.0 / n
    out = sum(np.sum(w * u) for w in bnd.values()) * h ** 2
    assert out == pytest.approx(1.0, rel=1e-10)


def test_homogeneous_darcy_flux_is_one():
    n = 7
    A, bnd = diffusion_operator(np.ones((n, n)), dirichlet=("left", "right"))
    u = spla.spsolve(A.tocsc(), bnd["left"]).reshape(n, n)
    np.testing.assert_allclose(u[:, 0], 1.0 - (np.arange(n) + 0.5) / n, rtol=1e-12)
    Q = np.sum(bnd["right"].reshape(n, n)[-1] * u[-1]) / n ** 2
    assert Q == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("gen", [poisson_regression, darcy_regression])
def test_sets_are_seeded_and_standardised(gen):
    a, b = gen(30, 10, n_grid=6, seed=3), gen(30, 10, n_grid=6, seed=3)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    np.testing.assert_array_equal(a.Y_val, b.Y_val)
    assert a.X_train.shape == (30, 36) and a.task == "regression"
    np.testing.assert_allclose(a.Y_train.mean(axis=0), 0.0, atol=1e-12)
    assert not np.array_equal(a.X_train, gen(30, 10, n_grid=6, seed=4).X_train)
    with pytest.raises(ValueError, match="n_grid"):
        gen(10, 5, n_grid=1)


def test_other_generators():
    d = mnist1d(40, 10, seed=2)
    assert d.X_train.shape == (40, 40) and d.Y_train.max() < 10
    r = rough_regression(40, 10, noise=0.1, seed=2)
    clean = rough_regression(40, 10, seed=2)
    np.testing.assert_array_equal(r.Y_val, clean.Y_val)  # noise on training targets only
    assert not np.array_equal(r.Y_train, clean.Y_train)
