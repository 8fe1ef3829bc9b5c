"""Checkpoint and resume: interrupted at any iteration, every solver continues bit for bit.

The interruption is a stop request at a random iteration (hypothesis draws it), which
takes the same path as SIGINT/SIGTERM: the run stops at the iteration boundary,
writes a checkpoint and returns with status 4. A fresh run (new objective, new
hierarchy, new propagation) resumed from that checkpoint must reproduce the
uninterrupted run exactly: iterates, losses, histories and work (``np.array_equal``).
"""

import os
import signal
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgnn.data import peaks, smooth_regression
from mgnn.mgrit import MGRITPropagation
from mgnn.multilevel import depth_hierarchy, mgopt, nested_iteration, rmtr, width_hierarchy
from mgnn.nets import ResNet
from mgnn.objective import Objective
from mgnn.optim import FunctionObjective, minimize
from mgnn.runs import Checkpointer, list_checkpoints, load_checkpoint

CLS = peaks(48, 12, seed=4)
REG = smooth_regression(48, 12, seed=4)
NET = ResNet(2, 3, 8, 5, T=2.0)
THETA0 = NET.init(1)


def objective(mgrit=False):
    prop = MGRITPropagation(levels=3, cf=2, fwd_iters=1, bwd_iters=1, reuse_tau=True,
                            residuals=2) if mgrit else None
    return Objective(NET, CLS.X_train, CLS.Y_train, tikhonov=1e-3, propagation=prop)


def same_history(a, b, skip=("time",)):
    assert a.keys() == b.keys()
    for k in a.keys():
        if k not in skip:
            assert np.array_equal(a[k], b[k], equal_nan=True), k


def interrupted(run, folder, at):
    """Run ``run(checkpoint, callback)`` with a stop request after iteration ``at``."""
    ck = Checkpointer(folder)

    def stop(nit):
        if nit == at:
            ck.request_stop()

    res = run(ck, stop)
    assert res.status == 4, res.message
    assert "Interrupted" in res.message and res.checkpoint == ck.last_path
    assert os.path.exists(res.checkpoint)
    return res


MINIMIZE_CASES = {
    "sgd": dict(lr=0.05, momentum=0.9, nesterov=True, batch_size=10, maxiter=16, rng=2,
                schedule="cosine"),
    "adam": dict(lr=0.05, batch_size=10, maxiter=16, rng=2),
    "lbfgs": dict(maxiter=16),
    "trust-region": dict(maxiter=12),
    "trust-region-lsr1": dict(maxiter=12, hessian="lsr1", subproblem="dogleg"),
}


@pytest.mark.parametrize("case", sorted(MINIMIZE_CASES))
@settings(max_examples=4)
@given(at=st.integers(1, 11))
def test_minimize_resumes_bit_for_bit(case, at, tmp_path_factory):
    method = case.replace("-lsr1", "")
    opts = MINIMIZE_CASES[case]
    full = minimize(objective(), THETA0, method=method, options=opts)
    folder = tmp_path_factory.mktemp("ck")

    def run(ck, stop):
        def cb(intermediate_result):
            stop(intermediate_result.nit)
        return minimize(objective(), THETA0, method=method, options=dict(opts, checkpoint=ck),
                        callback=cb)

    part = interrupted(run, folder, at)
    assert part.nit == at
    res = minimize(objective(), THETA0, method=method, options=dict(opts, resume=folder))
    assert np.array_equal(res.x, full.x)
    assert res.fun == full.fun and res.nit == full.nit and res.work == full.work
    assert (res.nfev, res.njev, res.nhev) == (full.nfev, full.njev, full.nhev)
    same_history(res.history, full.history)


@settings(max_examples=4)
@given(at=st.integers(1, 9))
def test_layer_parallel_one_shot_resumes_with_mgrit_warm_starts(at, tmp_path_factory):
    """One-shot MGRIT training (warm starts, boost): the propagation's state travels in
    the checkpoint; without it the resumed run would take other iterates. Full batch:
    warm starts (and the kept tau) apply to the same samples only."""
    opts = dict(lr=0.05, maxiter=12)

    def fresh():
        obj = objective(mgrit=True)
        obj.propagation.boost(3, 5)
        return obj

    full = minimize(fresh(), THETA0, method="adam", options=opts)
    folder = tmp_path_factory.mktemp("ck")

    def run(ck, stop):
        def cb(intermediate_result):
            stop(intermediate_result.nit)
        return minimize(fresh(), THETA0, method="adam", options=dict(opts, checkpoint=ck),
                        callback=cb)

    interrupted(run, folder, at)
    saved = load_checkpoint(folder).state["components"]
    assert [c["type"] for c in saved] == ["MGRITPropagation"]
    res = minimize(objective(mgrit=True), THETA0, method="adam",
                   options=dict(opts, resume=folder))
    assert np.array_equal(res.x, full.x) and res.work == full.work
    same_history(res.history, full.history)


def test_resume_without_the_propagation_state_differs(tmp_path):
    """The MGRIT warm starts matter: dropping them from the checkpoint changes the run
    (so the bit-for-bit test above tests something)."""
    from mgnn.runs.archive import read_archive, write_archive

    opts = dict(lr=0.05, maxiter=8)
    full = minimize(objective(mgrit=True), THETA0, method="adam", options=opts)
    ck = Checkpointer(tmp_path, every=4)
    minimize(objective(mgrit=True), THETA0, method="adam", options=dict(opts, checkpoint=ck))
    path = list_checkpoints(tmp_path)[0][1]
    meta, tree = read_archive(path)
    tree["components"][0]["state"]["engines"] = []
    write_archive(path, meta, tree)
    res = minimize(objective(mgrit=True), THETA0, method="adam",
                   options=dict(opts, resume=path))
    assert not np.array_equal(res.x, full.x)


RMTR_CASES = {
    "exact": dict(maxiter=8, hessian="exact", batch_size=None),
    "lsr1-batches": dict(maxiter=8, hessian="lsr1", batch_size=12, rng=3, growth_patience=1),
}


@pytest.mark.parametrize("case", sorted(RMTR_CASES))
@settings(max_examples=3)
@given(at=st.integers(1, 7))
def test_rmtr_resumes_bit_for_bit(case, at, tmp_path_factory):
    opts = RMTR_CASES[case]

    def H():
        return depth_hierarchy(objective(), 3)

    full = rmtr(H(), THETA0, options=opts)
    folder = tmp_path_factory.mktemp("ck")

    def run(ck, stop):
        def cb(intermediate_result):
            stop(intermediate_result.nit)
        return rmtr(H(), THETA0, options=dict(opts, checkpoint=ck), callback=cb)

    interrupted(run, folder, at)
    res = rmtr(H(), THETA0, options=dict(opts, resume=folder))
    assert np.array_equal(res.x, full.x) and res.work == full.work
    assert res.work_per_level == full.work_per_level
    assert repr(res.statistics) == repr(full.statistics)
    same_history(res.history, full.history)


@settings(max_examples=4)
@given(at=st.integers(1, 17), mgrit=st.booleans())
def test_nested_iteration_resumes_bit_for_bit(at, mgrit, tmp_path_factory):
    def H():
        prop = (lambda l, net: MGRITPropagation(levels=2, cf=2, fwd_iters=1, bwd_iters=1)) \
            if mgrit else None
        return depth_hierarchy(Objective(NET, CLS.X_train, CLS.Y_train, tikhonov=1e-3), 2,
                               propagation=prop)

    kw = dict(method="adam", options={"lr": 0.05, "batch_size": 12, "rng": 1},
              validation=(CLS.X_val, CLS.Y_val), eval_every=3,
              refine_iterations=3 if mgrit else None)
    full = nested_iteration(H(), [10, 8], **kw)
    folder = tmp_path_factory.mktemp("ck")

    def run(ck, stop):
        count = {"n": 0}

        def cb(level, r):
            count["n"] += 1
            stop(count["n"])
        return nested_iteration(H(), [10, 8], checkpoint=ck, callback=cb, **kw)

    interrupted(run, folder, at)
    res = nested_iteration(H(), [10, 8], resume=folder, **kw)
    assert np.array_equal(res.x, full.x) and res.work == full.work and res.nit == full.nit
    assert res.work_per_level == full.work_per_level
    same_history(res.history, full.history)
    for a, b in zip(res.levels, full.levels, strict=True):
        assert np.array_equal(a.x, b.x)


MGOPT_CASES = {
    "adam-width-rematch": dict(smoother="adam", smoother_options={"lr": 0.01, "batch_size": 12},
                               pre=2, post=1, cycles=6, rng=0, rematch_every=2),
    "lbfgs-depth-linesearch": dict(smoother="lbfgs", cycles=5, line_search=True),
    "sgd-minibatch-tau": dict(smoother="sgd", smoother_options={"lr": 0.01, "momentum": 0.5,
                                                                 "batch_size": 12},
                              cycles=6, rng=0, tau="minibatch"),
}


@pytest.mark.parametrize("case", sorted(MGOPT_CASES))
@settings(max_examples=3)
@given(at=st.integers(1, 4))
def test_mgopt_resumes_bit_for_bit(case, at, tmp_path_factory):
    kw = MGOPT_CASES[case]
    net = ResNet(2, 6, 4, 1, activation="relu", task="regression")
    theta0 = net.init(0)

    def H():
        obj = Objective(net, REG.X_train, REG.Y_train)
        return width_hierarchy(obj, theta0, 2) if "width" in case else depth_hierarchy(obj, 2)

    full = mgopt(H(), theta0, validation=(REG.X_val, REG.Y_val), **kw)
    folder = tmp_path_factory.mktemp("ck")

    def run(ck, stop):
        def cb(intermediate_result):
            stop(intermediate_result.nit)
        return mgopt(H(), theta0, validation=(REG.X_val, REG.Y_val), checkpoint=ck,
                     callback=cb, **kw)

    interrupted(run, folder, at)
    res = mgopt(H(), theta0, validation=(REG.X_val, REG.Y_val), resume=folder, **kw)
    assert np.array_equal(res.x, full.x) and res.work == full.work
    same_history(res.history, full.history)
    same_history(res.level_history, full.level_history)


# ----------------------------------------------------------------------------- the writer
QUAD = FunctionObjective(lambda x: 0.5 * x @ x, lambda x: x)


def test_every_k_iterations_keeps_the_last_m(tmp_path):
    ck = Checkpointer(tmp_path, every=3, keep=2, prefix="run1")
    res = minimize(QUAD, np.ones(4), method="sgd",
                   options={"lr": 0.1, "maxiter": 14, "gtol": 0.0, "checkpoint": ck})
    assert [n for n, _ in list_checkpoints(tmp_path, "run1")] == [9, 12]
    assert res.status == 0 and res.checkpoint.endswith("run1-000000012.npz")
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]  # no temporary left
    c = load_checkpoint(tmp_path, prefix="run1")
    assert c.solver == "sgd" and c.nit == 12 and c.meta["format"] == "mgnn-checkpoint"


def test_every_t_seconds(tmp_path, monkeypatch):
    import mgnn.runs.checkpoint as mod

    clock = {"t": 0.0}
    monkeypatch.setattr(mod.time, "monotonic", lambda: clock["t"])
    ck = Checkpointer(tmp_path, seconds=10.0, keep=None)

    def cb(intermediate_result):
        clock["t"] += 4.0  # each iteration "takes" 4 s: a write after iterations 3, 6, 9

    minimize(QUAD, np.ones(2), method="sgd",
             options={"lr": 0.1, "maxiter": 10, "gtol": 0.0, "checkpoint": ck}, callback=cb)
    assert [n for n, _ in list_checkpoints(tmp_path)] == [3, 6, 9]


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    import mgnn.runs.archive as archive

    ck = Checkpointer(tmp_path, every=1)
    minimize(QUAD, np.ones(2), method="sgd",
             options={"lr": 0.1, "maxiter": 2, "gtol": 0.0, "checkpoint": ck})
    before = sorted(os.listdir(tmp_path))

    def broken(fh, *a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(archive.np.lib.format, "write_array", broken)
    with pytest.raises(OSError, match="disk full"):
        minimize(QUAD, np.ones(2), method="sgd",
                 options={"lr": 0.1, "maxiter": 3, "gtol": 0.0, "checkpoint": ck,
                          "resume": tmp_path})
    assert sorted(os.listdir(tmp_path)) == before
    assert load_checkpoint(tmp_path).nit == 2


def test_sigint_stops_at_the_boundary_and_restores_the_handler(tmp_path):
    previous = signal.getsignal(signal.SIGINT)
    ck = Checkpointer(tmp_path)

    def cb(intermediate_result):
        if intermediate_result.nit == 3:
            os.kill(os.getpid(), signal.SIGINT)

    res = minimize(QUAD, np.ones(2), method="sgd",
                   options={"lr": 0.1, "maxiter": 50, "gtol": 0.0, "checkpoint": ck},
                   callback=cb)
    assert res.status == 4 and not res.success and res.nit == 3
    assert res.message.startswith("Interrupted by SIGINT after iteration 3")
    assert signal.getsignal(signal.SIGINT) is previous
    assert load_checkpoint(res.checkpoint).nit == 3


def test_a_second_signal_aborts_at_once(tmp_path):
    ck = Checkpointer(tmp_path)

    def cb(intermediate_result):
        if intermediate_result.nit == 2:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        minimize(QUAD, np.ones(2), method="sgd",
                 options={"lr": 0.1, "maxiter": 50, "gtol": 0.0, "checkpoint": ck},
                 callback=cb)
    assert signal.getsignal(signal.SIGTERM) is previous


def test_no_handlers_outside_the_main_thread(tmp_path):
    out = {}

    def work():
        ck = Checkpointer(tmp_path, every=2)
        out["res"] = minimize(QUAD, np.ones(2), method="sgd",
                              options={"lr": 0.1, "maxiter": 4, "gtol": 0.0,
                                       "checkpoint": ck})

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert out["res"].success and [n for n, _ in list_checkpoints(tmp_path)] == [2, 4]


def test_resume_checks(tmp_path):
    ck = Checkpointer(tmp_path, every=2)
    minimize(QUAD, np.ones(3), method="sgd",
             options={"lr": 0.1, "maxiter": 2, "gtol": 0.0, "checkpoint": ck})
    with pytest.raises(ValueError, match="written by 'sgd', this run is 'adam'"):
        minimize(QUAD, np.ones(3), method="adam", options={"resume": tmp_path})
    with pytest.raises(ValueError, match=r"iterate has shape \(3,\).*theta0 has shape \(4,\)"):
        minimize(QUAD, np.ones(4), method="sgd", options={"lr": 0.1, "resume": tmp_path})
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "empty")
    with pytest.raises(ValueError, match="not by nested_iteration"):
        nested_iteration(depth_hierarchy(objective(), 2), [2, 2], resume=tmp_path)
    with pytest.raises(ValueError, match="not by mgopt"):
        mgopt(depth_hierarchy(objective(), 2), THETA0, resume=tmp_path)
    with pytest.raises(ValueError, match="written by 'sgd', this run is 'rmtr'"):
        rmtr(depth_hierarchy(objective(), 2), THETA0, options={"resume": tmp_path})
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="is not an mgnn archive"):
        load_checkpoint(tmp_path / "junk.npz")


DD_CASES = {
    "spqn-data": ("spqn", "data", {"local_iters": 2, "maxiter": 8}, False),
    "apts-layers-multiplicative": ("apts", "layers", {"maxiter": 8,
                                                      "variant": "multiplicative"}, False),
    "spqn-layers-two-level": ("spqn", "layers", {"maxiter": 8}, True),
}


@pytest.mark.parametrize("case", sorted(DD_CASES))
@settings(max_examples=3)
@given(at=st.integers(1, 7))
def test_domain_decomposition_resumes_from_a_file_bit_for_bit(case, at, tmp_path_factory):
    """The DD solvers' SchwarzState travels in a checkpoint file as plain data."""
    from mgnn import dd

    name, kind, opts, two = DD_CASES[case]
    net = ResNet(2, 4, 8, 1, T=2.0, task="regression")
    theta0 = net.init(0)

    def run(**kw):
        obj = Objective(net, REG.X_train, REG.Y_train, tikhonov=1e-6)
        dec = dd.by_data(obj, 3, overlap=0.1) if kind == "data" else dd.by_layers(net, 2)
        fn = dd.apts if name == "apts" else dd.spqn
        return fn(obj, theta0, dec, hierarchy=depth_hierarchy(obj, 2) if two else None, **kw)

    full = run(options=opts)
    folder = tmp_path_factory.mktemp("ck")

    def interrupted_run(ck, stop):
        def cb(intermediate_result):
            stop(intermediate_result.nit)
        return run(options=dict(opts, checkpoint=ck), callback=cb)

    interrupted(interrupted_run, folder, at)
    res = run(options=dict(opts, resume=folder))
    assert np.array_equal(res.x, full.x) and res.work == full.work
    assert res.parallel_work == full.parallel_work and res.nit == full.nit
    assert repr(res.statistics) == repr(full.statistics)
    same_history(res.history, full.history)
    with pytest.raises(ValueError, match="either as theta0"):
        dd.spqn(Objective(net, REG.X_train, REG.Y_train), full.state, dd.by_layers(net, 2),
                options={"resume": folder})


@settings(max_examples=3)
@given(at=st.integers(1, 9))
def test_lsgd_resumes_bit_for_bit(at, tmp_path_factory):
    net = ResNet(2, 6, 3, 1, activation="relu", task="regression")
    theta0 = net.init(0, "box", box=(-1, 1))
    opts = {"maxiter": 10, "gd_steps": 2, "lr": 1e-3, "batch_size": 12, "ls_batch_size": 24,
            "rng": 5}

    def obj():
        return Objective(net, REG.X_train, REG.Y_train, tikhonov=1e-6)

    full = minimize(obj(), theta0, method="lsgd", options=opts)
    folder = tmp_path_factory.mktemp("ck")

    def run(ck, stop):
        def cb(intermediate_result):
            stop(intermediate_result.nit)
        return minimize(obj(), theta0, method="lsgd", options=dict(opts, checkpoint=ck),
                        callback=cb)

    interrupted(run, folder, at)
    res = minimize(obj(), theta0, method="lsgd", options=dict(opts, resume=folder))
    assert np.array_equal(res.x, full.x) and res.work == full.work
    assert (res.n_solves, res.n_steps) == (full.n_solves, full.n_steps)
    same_history(res.history, full.history)
