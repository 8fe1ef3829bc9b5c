"""Limited-memory SR1 in compact representation."""

from __future__ import annotations

import math

import numpy as np

from mgnn._validation import check_positive_int, check_scalar
from mgnn.vectorspace import EuclideanSpace

__all__ = ["LSR1"]


class LSR1:
    """Limited-memory symmetric rank-one matrix ``B`` (may be indefinite).

    Compact representation (Byrd, Nocedal & Schnabel 1994)::

        B = gamma I + Psi M^{-1} Psi^T,   Psi = Y - gamma S,
        M = D + L + L^T - gamma S^T S,

    with ``S^T Y = L + D + U`` (``L`` strictly lower triangular, ``D``
    diagonal). It equals ``m`` recursive SR1 updates of ``B0 = gamma I`` and
    satisfies the newest secant equation ``B s = y``; when the stored pairs come
    from one symmetric matrix (``S^T Y`` symmetric, e.g. a quadratic) it
    satisfies ``B s_i = y_i`` for every stored pair.

    A new pair is skipped (``update`` returns False) when the SR1 update is
    ill-defined, ``|<s, y - B s>| < skip * ||s|| ||y - B s||`` (Nocedal &
    Wright (6.26)), or when adding it would make ``M`` numerically singular
    (``min |eig(M)| <= cond_tol * max |eig(M)|``).

    Parameters
    ----------
    memory : int
        Number of stored pairs ``m``.
    space : vector space, optional
        Inner products (default Euclidean).
    gamma : 'auto' or float, default 'auto'
        ``B0 = gamma I``. 'auto' starts at 1 and takes ``<y, y> / <s, y>`` of the
        newest accepted pair when that is positive.
    skip : float, default 1e-8
        Constant of the skipping rule.
    cond_tol : float, default 1e-10
        Relative size below which an eigenvalue of ``M`` counts as zero.

    Examples
    --------
    >>> import numpy as np
    >>> A = np.diag([1.0, -2.0, 3.0])
    >>> B = LSR1(memory=5)
    >>> for s in np.eye(3)[:2]:
    ...     _ = B.update(s, A @ s)
    >>> B.matvec(np.array([1.0, 1.0, 0.0])).round(12).tolist()
    [1.0, -2.0, 0.0]
    >>> bool(B.secant_residuals().max() < 1e-12)
    True
    """

    def __init__(self, memory=10, space=None, gamma="auto", skip=1e-8, cond_tol=1e-10):
        self.memory = check_positive_int(memory, "memory")
        self.space = EuclideanSpace() if space is None else space
        if isinstance(gamma, str):
            if gamma != "auto":
                raise ValueError(f"gamma must be 'auto' or a positive number, got {gamma!r}")
            self.auto = True
            self.gamma = 1.0
        else:
            self.auto = False
            self.gamma = check_scalar(gamma, "gamma", low=0.0, low_open=True)
        self.skip = check_scalar(skip, "skip", low=0.0)
        self.cond_tol = check_scalar(cond_tol, "cond_tol", low=0.0)
        self.S, self.Y = [], []
        self._SY = np.zeros((0, 0))  # SY[i, j] = <s_i, y_j>
        self._SS = np.zeros((0, 0))
        self._psi = []
        self._Minv = np.zeros((0, 0))
        self.n_updates = 0
        self.n_skipped = 0

    def __len__(self):
        return len(self.S)

    def clear(self):
        """Forget all pairs (B = gamma I)."""
        self.S, self.Y, self._psi = [], [], []
        self._SY = self._SS = self._Minv = np.zeros((0, 0))

    # -- products ---------------------------------------------------------
    def matvec(self, v):
        """``B v``."""
        out = float(self.gamma) * v  # a Python float keeps float32 vectors float32
        if self.S:
            c = self._Minv @ np.array([self.space.dot(p, v) for p in self._psi])
            for ci, p in zip(c, self._psi, strict=True):
                out += ci * p
        return out

    __call__ = matvec

    def secant_residuals(self):
        """``||B s_i - y_i|| / max(||y_i||, tiny)`` for the stored pairs, oldest first."""
        norm = self.space.norm
        return np.array(
            [
                norm(self.matvec(s) - y) / max(norm(y), 1e-300)
                for s, y in zip(self.S, self.Y, strict=True)
            ]
        )

    # -- updating ---------------------------------------------------------
    def _rebuild(self, S, Y, SY, SS, gamma):
        """Psi and M^{-1} for the given pairs, or None if M is singular."""
        m = len(S)
        L = np.tril(SY, -1)
        M = np.diag(np.diag(SY)) + L + L.T - gamma * SS
        w, V = np.linalg.eigh(M)
        aw = np.abs(w)
        if m and (not np.all(np.isfinite(w)) or aw.min() <= self.cond_tol * aw.max()):
            return None
        Minv = (V / w) @ V.T
        psi = [y - gamma * s for s, y in zip(S, Y, strict=True)]
        return psi, Minv

    def update(self, s, y):
        """Add the pair ``(s, y)``; return True if stored, False if skipped."""
        dot, norm = self.space.dot, self.space.norm
        r = y - self.matvec(s)
        sr = dot(s, r)
        ns, nr = norm(s), norm(r)
        if not (math.isfinite(sr) and ns > 0) or abs(sr) <= self.skip * ns * nr or nr == 0.0:
            self.n_skipped += 1
            return False
        S, Y = self.S + [s.copy()], self.Y + [y.copy()]
        m = len(S)
        SY = np.zeros((m, m))
        SS = np.zeros((m, m))
        SY[:-1, :-1], SS[:-1, :-1] = self._SY, self._SS
        for i in range(m):
            SY[i, -1] = dot(S[i], y)
            SY[-1, i] = dot(s, Y[i])
            SS[i, -1] = SS[-1, i] = dot(S[i], s)
        if m > self.memory:
            S, Y, SY, SS = S[1:], Y[1:], SY[1:, 1:], SS[1:, 1:]
        gamma = self.gamma
        if self.auto:
            sy = SY[-1, -1]
            if sy > 0:
                gamma = dot(y, y) / sy
        built = self._rebuild(S, Y, SY, SS, gamma)
        if built is None:
            self.n_skipped += 1
            return False
        self.S, self.Y, self._SY, self._SS, self.gamma = S, Y, SY, SS, gamma
        self._psi, self._Minv = built
        self.n_updates += 1
        return True

    def state_dict(self):
        """Pairs, the compact representation's matrices and counters (plain data)."""
        return {"S": list(self.S), "Y": list(self.Y), "SY": self._SY, "SS": self._SS,
                "psi": list(self._psi), "Minv": self._Minv, "gamma": self.gamma,
                "n_updates": self.n_updates, "n_skipped": self.n_skipped}

    def load_state_dict(self, d):
        if len(d["S"]) > self.memory:
            raise ValueError(f"the saved L-SR1 matrix holds {len(d['S'])} pairs, more than "
                             f"memory = {self.memory}")
        self.S, self.Y, self._psi = list(d["S"]), list(d["Y"]), list(d["psi"])
        self._SY, self._SS, self._Minv = d["SY"], d["SS"], d["Minv"]
        self.gamma = float(d["gamma"])
        self.n_updates, self.n_skipped = int(d["n_updates"]), int(d["n_skipped"])

    def __repr__(self):
        return f"LSR1(memory={self.memory}, pairs={len(self)}, gamma={self.gamma:.3g})"
