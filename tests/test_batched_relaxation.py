"""Batched relaxation: MGRIT(batched=True) advances all intervals of a level per call.

What must hold: the batched F-sweeps take the same steps as the unbatched ones and give
the same iterates (bit for bit on the CPU kernels, which do per slice the arithmetic of
the 2-D step); the waves cover exactly the independent steps of each sweep, also on the
layouts of ranks > 0; the batched kernels equal the 2-D kernels slice by slice; layer-
parallel gradients with batched relaxation converge to the serial gradient; a stepper
whose ``step_batch`` misbehaves is caught on the first solve.
"""

import numpy as np
import pytest
from mgnn.kernels import cpu

from mgnn.mgrit import MGRIT, serial_stepping
from mgnn.mgrit.layer_parallel import MGRITPropagation
from mgnn.mgrit.problems import Dahlquist
from mgnn.nets import ResNet
from mgnn.objective import Objective
from mgnn.parallel.comm import Comm


class BatchedDahlquist(Dahlquist):
    """Dahlquist with a batched step: per slice the same multiplication as ``step``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batch_calls = []

    def step_batch(self, u_in, u_out, t0, t1, level, index):
        self.batch_calls.append((level, len(index)))
        for q in range(len(index)):
            self.step(u_in[q], u_out[q], float(t0[q]), float(t1[q]), level, int(index[q]))


class VectorDahlquist(Dahlquist):
    """Batched step as one broadcast multiplication (factor per slice)."""

    def step_batch(self, u_in, u_out, t0, t1, level, index):
        z = self.lam * (np.asarray(t1) - np.asarray(t0))
        f = 1.0 / (1.0 - z) if self._backward else 1.0 + z
        np.multiply(u_in, f.reshape((-1,) + (1,) * (u_in.ndim - 1)), out=u_out)


def _iterates(stepper, t, u0, batched, **opts):
    solver = MGRIT(stepper, t, batched=batched, **opts)
    out = []
    res = solver.solve(u0, max_iter=4, callback=lambda r: out.append(r.u.copy()))
    out.append(res.u.copy())
    return out, res


@pytest.mark.parametrize("cls", [BatchedDahlquist, VectorDahlquist])
@pytest.mark.parametrize("cycle", ["V", "F"])
@pytest.mark.parametrize("cf,levels", [(2, 2), (2, 4), (4, 2), (4, 3)])
@pytest.mark.parametrize("cf_sweeps", [0, 1])
def test_dahlquist_batched_iterates_equal_unbatched(cls, cycle, cf, levels, cf_sweeps):
    rng = np.random.default_rng(cf * 10 + levels)
    # non-uniform grid: spans differ inside a wave; 67 intervals: partial last interval
    t = np.concatenate([[0.0], np.cumsum(rng.uniform(0.02, 0.08, 67))])
    st = cls(lam=-2.0, shape=(3,))
    u0 = rng.standard_normal(3)
    opts = dict(cf=cf, max_levels=levels, cycle=cycle, cf_sweeps=cf_sweeps)
    ref, r0 = _iterates(st, t, u0, False, **opts)
    got, r1 = _iterates(st, t, u0, True, **opts)
    assert len(ref) == len(got) == 5  # 4 callbacks and the result
    for a, b in zip(ref, got, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(r0.residuals, r1.residuals)
    assert r0.level_steps == r1.level_steps


def test_one_call_per_offset_and_level():
    st = BatchedDahlquist(lam=-1.0)
    t = np.linspace(0.0, 1.0, 65)
    solver = MGRIT(st, t, cf=4, max_levels=3, cf_sweeps=0, batched=True)
    solver.solve(np.ones(1), max_iter=1)
    # the probe of the first solve, then the initial F-sweep on level 0: 4 waves of
    # 16 intervals
    assert st.batch_calls[:5] == [(0, 2)] + [(0, 16)] * 4
    # the coarse Phi_c sweep of the FAS right-hand side is one wave of all points
    assert (1, 16) in st.batch_calls and (2, 4) in st.batch_calls
    assert all(k > 1 for _, k in st.batch_calls)


def test_batched_converges_to_serial():
    st = VectorDahlquist(lam=-1.0, shape=(2,))
    t = np.linspace(0.0, 4.0, 257)
    u0 = np.array([1.0, -0.5])
    res = MGRIT(st, t, cf=4, batched=True).solve(u0, tol=1e-12, max_iter=30)
    assert res.success
    np.testing.assert_allclose(res.u, serial_stepping(st, t, u0), rtol=0, atol=1e-10)


class _FakeRank(Comm):
    """Rank ``r`` of ``P`` for the setup only (no messages are sent)."""

    def __init__(self, rank, size):
        self.rank, self.size = rank, size


@pytest.mark.parametrize("offsets", [[0, 23, 65], [0, 16, 65], [0, 5, 40, 65], [0, 63, 65]])
@pytest.mark.parametrize("cf", [2, 4])
def test_waves_cover_the_independent_steps_on_every_rank(offsets, cf):
    st = BatchedDahlquist(lam=-1.0)
    t = np.linspace(0.0, 1.0, 65)
    size = len(offsets) - 1
    for rank in range(size):
        solver = MGRIT(st, t, cf=cf, max_levels=3, comm=_FakeRank(rank, size),
                       offsets=offsets, batched=True)
        for lv in solver.levels:
            for plan in (lv.plan_f, lv.plan_stepc):
                if plan is None:
                    continue
                flat = []
                for ui, uo, g, t0, t1, idx in plan.waves:
                    for q in range(idx.size):
                        flat.append((ui[q], uo[q], None if g is None else g[q], t0[q], t1[q],
                                     idx[q]))
                assert len(flat) == len(plan.indep)
                flat.sort(key=lambda e: e[5])
                for (ui, uo, t0, t1, idx, g), (bi, bo, bg, bt0, bt1, bidx) in zip(
                        plan.indep, flat, strict=True):
                    assert (t0, t1, idx) == (bt0, bt1, bidx)
                    assert ui.ctypes.data == bi.ctypes.data
                    assert uo.ctypes.data == bo.ctypes.data
                    assert (g is None) == (bg is None)
                    assert g is None or g.ctypes.data == bg.ctypes.data


# --------------------------------------------------------------- ResNet steppers
def _problem(seed=0, N=32, w=5, s=12, activation="tanh"):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((s, 2))
    y = (X[:, 0] * X[:, 1] > 0).astype(int)
    net = ResNet(2, w, N, 2, T=2.0, activation=activation)
    theta = net.init(rng) + 0.2 * rng.standard_normal(net.n_params)
    return net, X, y, theta


@pytest.mark.parametrize("levels,cf", [(2, 2), (2, 4), (3, 2), (3, 4)])
@pytest.mark.parametrize("cycle", ["V", "F"])
@pytest.mark.parametrize("relax,weights", [("FCF", "inject"), ("F", "average")])
def test_resnet_batched_equals_unbatched(levels, cf, cycle, relax, weights):
    net, X, y, theta = _problem(levels + cf, N=64 if cf == 4 else 32)
    out = []
    for batched in (False, True):
        prop = MGRITPropagation(levels=levels, cf=cf, relax=relax, cycle=cycle,
                                coarse_weights=weights, fwd_iters=2, bwd_iters=2,
                                batched=batched)
        obj = Objective(net, X, y, propagation=prop)
        # three warm-started evaluations (one-shot): iterates of consecutive solves
        out.append([obj.value_and_grad(theta + 0.01 * k) for k in range(3)])
        out[-1].append(prop.last_stats()["adjoint"].level_steps)
    ref, got = out
    assert ref[-1] == got[-1]  # the same steps on every level
    for (f0, g0), (f1, g1) in zip(ref[:-1], got[:-1], strict=True):
        # the CPU batched kernels do per slice the arithmetic of the 2-D ones
        assert f0 == f1
        np.testing.assert_array_equal(g0, g1)


def test_batched_gradient_converges_to_serial():
    net, X, y, theta = _problem(3, N=64, w=4, s=20)
    f0, g0 = Objective(net, X, y).value_and_grad(theta)
    prop = MGRITPropagation(levels=3, cf=4, fwd_iters=40, bwd_iters=40, tol=1e-14, rtol=None,
                            batched=True)
    f, g = Objective(net, X, y, propagation=prop).value_and_grad(theta)
    assert f == pytest.approx(f0, rel=1e-12)
    assert np.linalg.norm(g - g0) <= 1e-10 * np.linalg.norm(g0)
    assert "batched=True" in repr(prop)


# --------------------------------------------------------------------- kernels
@pytest.mark.parametrize("act", sorted(cpu.ACTIVATIONS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batched_kernels_equal_2d_kernels_per_slice(act, dtype):
    rng = np.random.default_rng(7)
    a = cpu.ACTIVATIONS[act]
    k, s, w, m = 4, 9, 6, 3
    big = rng.standard_normal((k * m + 1, s, w)).astype(dtype)
    U = big[1::m]  # strided stacks, as MGRIT's waves
    Ws = rng.standard_normal((k * 2, w, w)).astype(dtype)
    W = Ws[::-2]  # negative stride, as the adjoint's descending layers
    b = rng.standard_normal((k, w)).astype(dtype)
    Ln = rng.standard_normal((k, s, w)).astype(dtype)
    for skip in (True, False):
        S, out = np.empty((2, k, s, w), dtype)
        cpu.forward_step_batch(U, W, b, 0.3, a, S, out, skip=skip)
        D, L = np.empty((2, k, s, w), dtype)
        G = np.empty((k, w * w + w), dtype)
        cpu.adjoint_step_batch(Ln, U, W, S, 0.3, a, D, L=L, gW=G[:, :w * w].reshape(k, w, w),
                               gb=G[:, w * w:], skip=skip)
        for q in range(k):
            S1, o1, D1, L1 = np.empty((4, s, w), dtype)
            gW1, gb1 = np.empty((w, w), dtype), np.empty(w, dtype)
            cpu.forward_step(U[q], W[q], b[q], 0.3, a, S1, o1, skip=skip)
            np.testing.assert_array_equal(S[q], S1)
            np.testing.assert_array_equal(out[q], o1)
            cpu.adjoint_step(Ln[q], U[q], W[q], S1, 0.3, a, D1, L=L1, gW=gW1, gb=gb1,
                             skip=skip)
            np.testing.assert_array_equal(D[q], D1)
            np.testing.assert_array_equal(L[q], L1)
            np.testing.assert_array_equal(G[q, :w * w].reshape(w, w), gW1)
            np.testing.assert_array_equal(G[q, w * w:], gb1)


def test_batched_kernel_shapes_are_checked():
    U = np.zeros((2, 3, 4))
    with pytest.raises(ValueError, match="out must be a stack of shape"):
        cpu.forward_step_batch(U, np.zeros((2, 4, 4)), np.zeros((2, 4)), 0.1, 0,
                               np.zeros((2, 3, 4)), np.zeros((3, 4)))


# ------------------------------------------------------------------- bad input
class _Wrong(Dahlquist):
    def step_batch(self, u_in, u_out, t0, t1, level, index):
        np.copyto(u_out, u_in)  # ignores the step


class _Returns(Dahlquist):
    def step_batch(self, u_in, u_out, t0, t1, level, index):
        VectorDahlquist.step_batch(self, u_in, u_out, t0, t1, level, index)
        return u_out


class _Clobbers(Dahlquist):
    def step_batch(self, u_in, u_out, t0, t1, level, index):
        VectorDahlquist.step_batch(self, u_in, u_out, t0, t1, level, index)
        u_in *= 2.0


class _Lazy(Dahlquist):
    def step_batch(self, u_in, u_out, t0, t1, level, index):
        pass  # leaves u_out unwritten


@pytest.mark.parametrize("cls,exc,match", [
    (_Wrong, ValueError, "step_batch disagrees with stepper.step"),
    (_Lazy, ValueError, "step_batch disagrees with stepper.step"),
    (_Returns, TypeError, "must write its results into u_out and return None"),
    (_Clobbers, ValueError, "step_batch modified u_in"),
])
def test_misbehaving_step_batch_is_caught(cls, exc, match):
    solver = MGRIT(cls(lam=-1.0), np.linspace(0.0, 1.0, 17), cf=2, batched=True)
    with pytest.raises(exc, match=match):
        solver.solve(np.ones(1), max_iter=1)


def test_batched_needs_step_batch():
    with pytest.raises(TypeError, match="batched=True needs a stepper with a step_batch"):
        MGRIT(Dahlquist(-1.0), np.linspace(0.0, 1.0, 17), batched=True)


def test_resnet_step_batch_without_progression_falls_back_to_single_steps():
    from mgnn.mgrit.layer_parallel import ResNetStepper, _Weights

    net = ResNet(2, 3, 8, 2)
    p = net.unpack(net.init(0) + 0.1)
    wts = _Weights()
    wts.bind(p.W, p.b, 0)
    st = ResNetStepper(net, 4, wts)
    st.S = np.empty((8, 4, 3))
    u = np.random.default_rng(0).standard_normal((3, 4, 3))
    out, ref = np.empty_like(u), np.empty_like(u)
    idx = np.array([0, 3, 5])  # not an arithmetic progression
    st.step_batch(u, out, idx.astype(float), idx + 1.0, 0, idx)
    for q, i in enumerate(idx):
        st.step(u[q], ref[q], float(i), i + 1.0, 0, int(i))
    np.testing.assert_array_equal(out, ref)
