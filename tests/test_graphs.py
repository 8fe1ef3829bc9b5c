"""CUDA-graph capture and replay (mgnn.graphs) on the CPU stand-in's capture emulation.

The rules are CUDA's and CuPy 14's (no host read, no allocation, no cuBLAS inside a
capture; arguments bound by address): a replay must equal an eager run on the current
contents of the buffers, and work that breaks a rule must fail with a message naming
the graph and the cause. The last tests show what a single-GPU layer-parallel solve
needs for capture: a one-shot MGRIT forward solve without residuals, on the fused
batched steps, is capture-safe once its input check runs outside the capture.
"""

import numpy as np
import pytest

from mgnn.backend import kernels_for, to_device, to_host
from mgnn.graphs import CaptureError, GraphCache
from mgnn.testing import fakecupy as cp


def test_first_run_eager_second_captured_then_replayed():
    x, y = cp.asarray(np.arange(3.0)), cp.zeros(3)
    g = GraphCache(cp)
    calls = []

    def work():
        calls.append(1)
        cp.multiply(x, 2.0, out=y)
        cp.add(y, 1.0, out=y)

    g.run("k", work)
    assert y.get().tolist() == [1.0, 3.0, 5.0] and (g.eager, g.captures, g.launches) == (1, 0, 0)
    y.fill(0)
    g.run("k", work)          # captured and launched: the result is there
    assert y.get().tolist() == [1.0, 3.0, 5.0] and (g.captures, g.launches) == (1, 1)
    x[...] = 10.0
    g.run("k", work)          # replayed: Python does not run, the graph reads x now
    assert len(calls) == 2 and y.get().tolist() == [21.0] * 3
    assert repr(g) == "GraphCache(1 graph; 1 eager run, 1 capture, 2 launches)"


@pytest.mark.parametrize("illegal, cause", [
    (lambda x, y: float(x.sum()), "CaptureAllocationError"),
    (lambda x, y: float(x[0]), "not permitted when stream is capturing"),
    (lambda x, y: x + y, "allocates device memory"),
    (lambda x, y: cp.dot(x, y), "cuBLAS"),
])
def test_work_that_breaks_a_capture_rule_is_named(illegal, cause):
    x, y = cp.asarray(np.ones(3)), cp.zeros(3)
    g = GraphCache(cp)
    g.run("bad", lambda: illegal(x, y))     # eager: fine
    with pytest.raises(CaptureError, match=f"graph 'bad' cannot be captured: .*{cause}"):
        g.run("bad", lambda: illegal(x, y))
    assert float(x[0]) == 1.0 and len(g) == 0   # the capture was ended; host reads work


def test_buffers_eviction_and_numpy():
    g = GraphCache(cp, max_graphs=2)
    b = g.buffer("theta", (4,), np.float64)
    assert g.buffer("theta", (4,), np.float64) is b and g.buffer("theta", (5,), np.float64) is not b
    y = cp.zeros(1)
    for key in "abc":
        for _ in range(2):
            g.run(key, lambda: cp.add(y, 1.0, out=y))
    assert len(g) == 2
    g.clear()
    assert len(g) == 0
    with pytest.raises(TypeError, match="NumPy has no CUDA graphs"):
        GraphCache(np)


@pytest.mark.parametrize("w", [8, 128])
def test_a_sweep_of_fused_steps_is_captured_a_cublas_one_is_not(w):
    k = kernels_for(cp)
    rng = np.random.default_rng(w)
    N, s = 4, 10
    W = to_device(0.3 * rng.standard_normal((N, w, w)), xp=cp)
    b = to_device(rng.standard_normal((N, w)), xp=cp)
    U, S = cp.zeros((N + 1, s, w)), cp.zeros((N, s, w))
    U[0] = to_device(rng.standard_normal((s, w)), xp=cp)

    def sweep():
        for n in range(N):
            k.forward_step(U[n], W[n], b[n], 0.25, 1, S[n], U[n + 1])

    g = GraphCache(cp)
    g.run("sweep", sweep)
    ref = to_host(U)
    if w > 64:
        with pytest.raises(CaptureError, match="needs cuBLAS"):
            g.run("sweep", sweep)
        return
    U[1:] = 0.0
    g.run("sweep", sweep)
    np.testing.assert_array_equal(to_host(U), ref)
    W *= 0.5                                   # new weights in the same buffer
    g.run("sweep", sweep)
    U2, S2 = cp.zeros((N + 1, s, w)), cp.zeros((N, s, w))
    U2[0] = U[0]
    for n in range(N):
        k.forward_step(U2[n], W[n], b[n], 0.25, 1, S2[n], U2[n + 1])
    np.testing.assert_array_equal(to_host(U), to_host(U2))


def test_a_one_shot_mgrit_forward_solve_replays_as_a_graph(monkeypatch):
    """The recipe for single-GPU layer-parallel graphs (see the report of issue 19): with
    the fused batched steps, a fixed iteration count and ``residuals=False``, MGRIT's
    forward solve does no host read and no allocation except its input check; with the
    check done before the capture, the replayed graph equals the eager solve for new
    weights copied into the bound buffer. Injected coarse weights: averaged ones are
    cached per bind (and allocated by ``mean``), so a replay would keep the averages
    of the weights seen at capture (see the report of issue 19)."""
    import mgnn.mgrit.solver as solver_mod
    from mgnn.data import peaks
    from mgnn.mgrit import MGRITPropagation
    from mgnn.nets import ResNet
    from mgnn.objective import Objective

    d = peaks(24, 6)
    net = ResNet(2, 5, 16, 5, T=2.0)

    def engine(theta):
        prop = MGRITPropagation(levels=2, cf=4, fwd_iters=2, bwd_iters=1, batched=True,
                                coarse_weights="inject")
        obj = Objective(net, *to_device(d.X_train, d.Y_train, xp=cp), propagation=prop)
        obj.value(theta)                      # builds the engine, checks the steppers
        eng = next(iter(prop._engines.values()))
        ws = obj._workspaces[24]
        p = net.unpack(theta)
        eng.weights.bind(p.W, p.b, 0)
        eng.fstep.S = ws.S
        return eng, ws

    theta = to_device(net.init(0), xp=cp)       # the buffer the graph reads
    eng, ws = engine(theta)
    u0 = ws.U[0]
    monkeypatch.setattr(solver_mod, "check_array", lambda x, *a, **k: x)  # checked already

    def solve():
        eng.fwd.solve(u0, None, tol=None, max_iter=2, residuals=False)

    g = GraphCache(cp)
    g.run("fwd", solve)
    g.run("fwd", solve)                         # captured
    assert g.captures == 1
    theta[...] = to_device(net.init(7), xp=cp)  # new weights, same buffer
    g.run("fwd", solve)                         # replayed
    monkeypatch.undo()
    ref_eng, _ = engine(theta)
    ref = ref_eng.fwd.solve(u0, None, tol=None, max_iter=2, residuals=False)  # same u0
    np.testing.assert_array_equal(to_host(eng.fwd.u), to_host(ref.u))
