r"""Operator-learning regression problems from elliptic PDEs (MTNN's Poisson and Darcy sets).

MTNN (LLNL's multilevel-in-width training) benchmarks on two data sets made by
a finite-volume solver: a Poisson problem whose network maps a diffusion
coefficient field to the x-flux field, and a Darcy-flow problem whose network
maps a permeability field to the total flux through the outflow boundary. The
files are not public; these generators make data of the same kind, procedurally
and seeded, with scipy.sparse (nothing is downloaded).

Both solve ``-div(kappa grad u) = f`` on the unit square with the cell-centred
finite-volume scheme on an ``n_grid x n_grid`` grid: harmonic means of ``kappa``
on the faces, boundary faces at half a cell. The coefficient is log-normal,
``kappa = exp(sigma * z)``, with ``z`` a smooth Gaussian random field (a
cosine series with independent normal coefficients of variance
``(1 + (i^2 + j^2) / ell^2)^(-nu)`` for ``i, j < modes``, normalised to unit
pointwise variance on average).

:func:`poisson_regression`
    ``f = 1``, ``u = 0`` on the boundary; input the coefficient field
    ``log kappa`` (``n_grid^2`` values), target the x-flux ``-kappa du/dx`` at the
    cell centres (``n_grid^2`` values, central differences inside, one-sided at the
    boundary). MTNN's own inputs add two constant coordinate grids, which carry no
    information per sample and are left out here.
:func:`darcy_regression`
    ``f = 0``, ``u = 1`` on the left edge, ``u = 0`` on the right, no flux on the
    top and bottom; input ``log kappa`` (``n_grid^2`` values), target the total
    flux through the right edge (one value).

Inputs and targets are standardised with the training set's mean and standard
deviation (per input feature: the field's mean and standard deviation over all
training samples and cells; per target component), so the mean-squared error of
the zero predictor is about 1.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from mgnn._validation import check_dtype, check_positive_int, check_scalar, check_seed
from mgnn.data.problems import Dataset

__all__ = ["gaussian_random_field", "diffusion_operator", "poisson_regression",
           "darcy_regression"]


def gaussian_random_field(n_fields, n_grid, rng, modes=8, ell=2.0, nu=2.0):
    """``n_fields`` smooth Gaussian random fields on the cell centres of an ``n_grid``
    square grid: (n_fields, n_grid, n_grid), unit pointwise variance on average.

    Examples
    --------
    >>> import numpy as np
    >>> z = gaussian_random_field(200, 16, np.random.default_rng(0))
    >>> z.shape, bool(abs(z.var() - 1.0) < 0.2)
    ((200, 16, 16), True)
    """
    c = (np.arange(n_grid) + 0.5) / n_grid
    k = np.arange(modes)
    C = np.cos(np.pi * k[:, None] * c[None, :])  # (modes, n_grid)
    lam = (1.0 + (k[:, None] ** 2 + k[None, :] ** 2) / ell ** 2) ** (-nu)
    xi = rng.standard_normal((n_fields, modes, modes)) * np.sqrt(lam)
    z = np.einsum("nij,ia,jb->nab", xi, C, C)
    return z / np.sqrt(np.mean(np.einsum("ij,ia,jb->ab", lam, C ** 2, C ** 2)))


def diffusion_operator(kappa, dirichlet=("left", "right", "bottom", "top")):
    """The finite-volume matrix of ``-div(kappa grad u)`` on the unit square.

    ``kappa`` is (n, n), indexed ``[ix, iy]``; unknowns are ordered ``ix * n + iy``.
    Faces between cells carry the harmonic mean of their coefficients; a boundary
    face in ``dirichlet`` couples its cell to the boundary value at half a cell
    (the returned vector ``bnd`` holds those couplings per boundary, so the right
    side of ``u = g`` on a boundary is ``g * bnd[side]``); other boundary faces are
    no-flux.

    Returns
    -------
    A : scipy.sparse.csr_matrix
    bnd : dict of side -> (n*n,) array

    Examples
    --------
    >>> import numpy as np
    >>> A, bnd = diffusion_operator(np.ones((4, 4)))
    >>> A.shape, bool(np.allclose(A.toarray(), A.toarray().T))
    ((16, 16), True)
    """
    n = kappa.shape[0]
    h = 1.0 / n
    idx = np.arange(n * n).reshape(n, n)
    kx = 2.0 * kappa[1:, :] * kappa[:-1, :] / (kappa[1:, :] + kappa[:-1, :])  # x-faces
    ky = 2.0 * kappa[:, 1:] * kappa[:, :-1] / (kappa[:, 1:] + kappa[:, :-1])  # y-faces
    rows, cols, vals = [], [], []
    diag = np.zeros((n, n))
    for kf, a, b in ((kx, idx[1:, :], idx[:-1, :]), (ky, idx[:, 1:], idx[:, :-1])):
        w = kf / h ** 2
        rows += [a.ravel(), b.ravel()]
        cols += [b.ravel(), a.ravel()]
        vals += [-w.ravel(), -w.ravel()]
    diag[1:, :] += kx / h ** 2
    diag[:-1, :] += kx / h ** 2
    diag[:, 1:] += ky / h ** 2
    diag[:, :-1] += ky / h ** 2
    bnd = {}
    sides = {"left": (0, slice(None)), "right": (n - 1, slice(None)),
             "bottom": (slice(None), 0), "top": (slice(None), n - 1)}
    for side in dirichlet:
        cell = sides[side]
        w = np.zeros((n, n))
        w[cell] = 2.0 * kappa[cell] / h ** 2
        diag += w
        bnd[side] = w.ravel()
    rows.append(idx.ravel())
    cols.append(idx.ravel())
    vals.append(diag.ravel())
    A = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(n * n, n * n))
    return A, bnd


def _fields(n, n_grid, seed, sigma, modes):
    rng = np.random.default_rng(check_seed(seed))
    return sigma * gaussian_random_field(n, n_grid, rng, modes=modes)


def _standardise(X, Y, n_train, dtype, name, n_out):
    mx, sx = X[:n_train].mean(), X[:n_train].std()
    X = (X - mx) / (sx if sx > 0 else 1.0)
    my, sy = Y[:n_train].mean(axis=0), Y[:n_train].std(axis=0)
    Y = (Y - my) / np.where(sy > 0, sy, 1.0)
    X, Y = X.astype(dtype), Y.astype(dtype)
    return Dataset(X[:n_train], Y[:n_train], X[n_train:], Y[n_train:], n_out, "regression",
                   name)


def _check(n_train, n_val, n_grid, sigma, modes, dtype):
    n_train = check_positive_int(n_train, "n_train", minimum=2)
    n_val = check_positive_int(n_val, "n_val")
    n_grid = check_positive_int(n_grid, "n_grid", minimum=2)
    sigma = check_scalar(sigma, "sigma", low=0.0)
    modes = check_positive_int(modes, "modes")
    return n_train, n_val, n_grid, sigma, modes, check_dtype(dtype)


def poisson_regression(n_train=1000, n_val=1000, n_grid=32, sigma=1.0, modes=8, seed=0,
                       dtype=np.float64):
    """Coefficient field to x-flux field of ``-div(kappa grad u) = 1``, ``u = 0`` on the
    boundary (MTNN's Poisson set; module docstring).

    Parameters
    ----------
    n_train, n_val : int
        Training and validation samples (independent draws).
    n_grid : int
        Cells per direction; inputs and targets have ``n_grid**2`` components.
    sigma : float
        Standard deviation of ``log kappa``.
    modes : int
        Cosine modes per direction of the random field.
    seed : int
    dtype : numpy dtype

    Examples
    --------
    >>> d = poisson_regression(20, 10, n_grid=8)
    >>> d
    Dataset('poisson', task='regression', n_in=64, n_out=64, n_train=20, n_val=10)
    >>> import numpy as np; bool(abs(d.Y_train.std() - 1.0) < 1e-12)
    True
    """
    n_train, n_val, n_grid, sigma, modes, dtype = _check(n_train, n_val, n_grid, sigma,
                                                         modes, dtype)
    logk = _fields(n_train + n_val, n_grid, seed, sigma, modes)
    h = 1.0 / n_grid
    Y = np.empty((logk.shape[0], n_grid, n_grid))
    f = np.ones(n_grid * n_grid)
    for s, z in enumerate(logk):
        kappa = np.exp(z)
        A, _ = diffusion_operator(kappa)
        u = spla.spsolve(A.tocsc(), f).reshape(n_grid, n_grid)
        # ghost cells -u at the walls: u = 0 half a cell outside the first and last centre
        ub = np.concatenate([-u[:1], u, -u[-1:]], axis=0)
        Y[s] = -kappa * (ub[2:] - ub[:-2]) / (2.0 * h)
    X = logk.reshape(logk.shape[0], -1)
    return _standardise(X, Y.reshape(Y.shape[0], -1), n_train, dtype, "poisson",
                        n_grid * n_grid)


def darcy_regression(n_train=1000, n_val=1000, n_grid=32, sigma=1.0, modes=8, seed=0,
                     dtype=np.float64):
    """Permeability field to outflow of Darcy flow, ``u = 1`` left, ``u = 0`` right, no
    flux top and bottom (MTNN's Darcy set; module docstring).

    Parameters are those of :func:`poisson_regression`; the target is one value per
    sample, the total flux ``-integral kappa du/dx`` through the right edge.

    Examples
    --------
    >>> d = darcy_regression(20, 10, n_grid=8, sigma=0.0)    # homogeneous: flux 1 each
    >>> d.Y_train.shape, d.n_in
    ((20, 1), 64)
    """
    n_train, n_val, n_grid, sigma, modes, dtype = _check(n_train, n_val, n_grid, sigma,
                                                         modes, dtype)
    logk = _fields(n_train + n_val, n_grid, seed, sigma, modes)
    h = 1.0 / n_grid
    Q = np.empty((logk.shape[0], 1))
    for s, z in enumerate(logk):
        kappa = np.exp(z)
        A, bnd = diffusion_operator(kappa, dirichlet=("left", "right"))
        u = spla.spsolve(A.tocsc(), bnd["left"] * 1.0)
        # flux density 2 kappa u / h through each right face of width h: sum of w u h^2
        w = bnd["right"].reshape(n_grid, n_grid)[-1]
        Q[s, 0] = np.sum(w * u.reshape(n_grid, n_grid)[-1]) * h ** 2
    X = logk.reshape(logk.shape[0], -1)
    return _standardise(X, Q, n_train, dtype, "darcy", 1)
