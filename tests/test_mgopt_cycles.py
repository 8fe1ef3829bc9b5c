"""MG/OPT's cycle kinds, weight decay, MTNN's momentum transfer and tau on the
pre-smoothing batches, and the MTNN preset."""

import importlib

import numpy as np
import pytest

from mgnn.data import smooth_regression
from mgnn.multilevel import (
    Hierarchy,
    Level,
    depth_hierarchy,
    mgopt,
    mgopt_preset,
    mtnn_hierarchy,
    width_hierarchy,
)
from mgnn.nets import ResNet
from mgnn.objective import Objective
from mgnn.optim import minimize

DATA = smooth_regression(120, 40, seed=5)


def problem(width=8, depth=4, tikhonov=0.0):
    net = ResNet(2, width, depth, 1, activation="relu", task="regression")
    return net, Objective(net, DATA.X_train, DATA.Y_train, tikhonov=tikhonov), net.init(0)


@pytest.mark.parametrize("cycle,per_cycle", [("V", [1, 1]), ("W", [2, 4]), ("F", [2, 3])])
def test_cycle_kinds_visit_the_levels_as_multigrid_does(cycle, per_cycle):
    net, obj, theta = problem(depth=8)
    H = depth_hierarchy(obj, 3)
    res = mgopt(H, theta, "adam", {"lr": 0.01, "batch_size": 30}, pre=1, post=1,
                coarse_iters=2, cycles=3, cycle=cycle, rng=0)
    lh = res.level_history
    counts = [int(np.sum(lh["level"][lh["cycle"] > 0] == l)) for l in (1, 2)]
    assert counts == [3 * c for c in per_cycle]
    assert res.success and f"{cycle}-cycles" in res.message


def test_weight_decay_is_tikhonov_in_the_update():
    """One level: SGD with weight decay wd is SGD on the objective plus (wd/2)|x|^2."""
    wd = 1e-2
    net, obj, theta = problem()
    _, obj_t, _ = problem(tikhonov=wd)
    opts = {"lr": 0.05, "momentum": 0.9, "batch_size": 40, "rng": 3}
    res = mgopt(Hierarchy([Level(net, obj)]), theta, "sgd", dict(opts, weight_decay=wd),
                coarse_iters=5, cycles=4)
    ref = minimize(obj_t, theta, "sgd", dict(opts, maxiter=20))
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-13, atol=1e-15)
    with pytest.raises(ValueError, match="weight_decay"):
        mgopt(Hierarchy([Level(net, obj)]), theta, "sgd", {"weight_decay": -1.0})


def test_mtnn_preset_in_mgnn_units_is_the_pytorch_mseloss_trajectory():
    """mse_outputs=m: SGD on mgnn's MSE with the converted rate and weight decay takes
    the steps PyTorch's SGD takes on MSELoss (mean over samples and outputs) with
    MTNN's numbers; the MSELoss gradient is 2/m times mgnn's."""
    m = 3
    Y = np.hstack([DATA.Y_train, DATA.Y_train ** 2, -DATA.Y_train])
    net = ResNet(2, 8, 2, m, activation="relu", task="regression")
    obj = Objective(net, DATA.X_train, Y)
    theta = net.init(0, "glorot")
    so = dict(mgopt_preset("mtnn", mse_outputs=m)["smoother_options"], batch_size=None)
    res = mgopt(Hierarchy([Level(net, obj)]), theta, "sgd", so, coarse_iters=5, cycles=2)
    pt = mgopt_preset("mtnn")["smoother_options"]
    x, buf = theta.copy(), np.zeros_like(theta)
    for _ in range(10):  # torch.optim.SGD(lr, momentum, weight_decay) on MSELoss
        d = 2.0 / m * obj.grad(x) + pt["weight_decay"] * x
        buf = pt["momentum"] * buf + d
        x = x - pt["lr"] * buf
    np.testing.assert_allclose(res.x, x, rtol=1e-12, atol=1e-14)
    assert so["lr"] == pytest.approx(0.01 * 2 / 3)
    with pytest.raises(ValueError, match="mse_outputs"):
        mgopt_preset("mtnn", mse_outputs=0)


def test_fas_momentum_comes_back_from_the_coarse_level(monkeypatch):
    """state_transfer='fas': m_c starts at Pi m; after the coarse cycle the fine momentum
    is m + P (m_c - Pi m)."""
    mod = importlib.import_module("mgnn.multilevel.mgopt")

    net, obj, theta = problem()
    H = width_hierarchy(obj, theta, 2)
    T = H[0].transfer
    log = {}
    orig_run = mod._Smoother.run

    def run(self, o, x, steps, state):
        if steps == 3 and "before" not in log:  # the coarse solve of cycle 1
            log["before"] = state.v.copy()
            out = orig_run(self, o, x, steps, state)
            log["after"] = state.v.copy()
            return out
        return orig_run(self, o, x, steps, state)

    orig_cs = mod._Smoother.coarse_state

    def coarse_state(self, state, transfer, mode="restrict"):
        if "fine" not in log:
            log["fine"] = state.v.copy()
        return orig_cs(self, state, transfer, mode)

    orig_post = {}

    def spy_post(self, o, x, steps, state):
        if steps == 2 and "after" in log and "fine_after" not in log:
            log["fine_after"] = state.v.copy()
        return run(self, o, x, steps, state)

    monkeypatch.setattr(mod._Smoother, "run", spy_post)
    monkeypatch.setattr(mod._Smoother, "coarse_state", coarse_state)
    mgopt(H, theta, "sgd", {"lr": 0.01, "momentum": 0.9, "batch_size": 30}, pre=1, post=2,
          coarse_iters=3, cycles=1, tau="none", state_transfer="fas", rng=0)
    np.testing.assert_allclose(log["before"], T.project(log["fine"]), rtol=1e-14)
    expect = log["fine"] + T.prolong(log["after"] - log["before"])
    np.testing.assert_allclose(log["fine_after"], expect, rtol=1e-12, atol=1e-15)
    del orig_post
    with pytest.raises(ValueError, match="state_transfer='fas'"):
        mgopt(H, theta, "adam", state_transfer="fas")


def test_tau_on_the_pre_smoothing_batches(monkeypatch):
    net, obj, theta = problem()
    H = width_hierarchy(obj, theta, 2)
    seen = []
    orig = Objective.grad

    def grad(self, x, batch=None):
        seen.append((self.net.width, None if batch is None else np.sort(batch)))
        return orig(self, x, batch)

    monkeypatch.setattr(Objective, "grad", grad)
    used = []
    mod = importlib.import_module("mgnn.multilevel.mgopt")

    orig_sb = mod._Smoother.smoothing_batch

    def sb(self):
        b = orig_sb(self)
        used.append(np.sort(b))
        return b

    monkeypatch.setattr(mod._Smoother, "smoothing_batch", sb)
    mgopt(H, theta, "sgd", {"lr": 0.01, "momentum": 0.9, "batch_size": 20}, pre=3, post=1,
          coarse_iters=2, cycles=2, tau="smoothing", rng=1)
    assert len(used) == 2 and all(u.size == 60 for u in used)
    tau_batches = [b for _, b in seen]
    assert len(tau_batches) == 4  # fine and coarse gradient, per cycle
    for k, u in enumerate(used):
        assert np.array_equal(tau_batches[2 * k], u) and np.array_equal(tau_batches[2 * k + 1], u)
    with pytest.raises(ValueError, match="tau='smoothing'"):
        mgopt(H, theta, "sgd", {"lr": 0.01}, tau="smoothing")
    with pytest.raises(ValueError, match="pre >= 1"):
        mgopt(H, theta, "sgd", {"lr": 0.01, "batch_size": 20}, pre=0, tau="smoothing")


def test_mtnn_preset_runs_and_is_what_it_says():
    net = ResNet(2, 12, 1, 1, activation="relu", task="regression")
    obj = Objective(net, DATA.X_train, DATA.Y_train)
    theta = net.init(0, "he")
    kw = mgopt_preset("mtnn", cycles=12, smoother_options={"batch_size": 20})
    res = mgopt(mtnn_hierarchy(obj, theta), theta, **kw, rng=0,
                validation=(DATA.X_val, DATA.Y_val))
    assert res.success and res.nit == 12 and res.hierarchy is not None
    assert res.fun < res.history["fun"][0]
    # re-matched after cycles 10: the hierarchy returned is a new one
    assert res.hierarchy[1].net.width == 6
    p = mgopt_preset("mtnn")
    assert (p["pre"], p["post"], p["coarse_iters"], p["cycles"], p["rematch_every"]) == \
        (4, 4, 4, 100, 10)
    assert p["smoother_options"] == {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-6,
                                     "batch_size": 200}


@pytest.mark.parametrize("kw", [
    dict(mgopt_preset("mtnn", cycles=6, rematch_every=2, smoother_options={"batch_size": 20}),
         cycle="W"),
    dict(smoother="adam", cycle="F", cycles=6, pre=2, post=2),
])
def test_new_cycle_options_resume_bit_for_bit(kw, tmp_path):
    from mgnn.runs import Checkpointer

    net = ResNet(2, 8, 2, 1, activation="relu", task="regression")
    theta = net.init(0, "he")

    def H():
        obj = Objective(net, DATA.X_train, DATA.Y_train)
        return width_hierarchy(obj, theta, 2) if kw.get("rematch_every") else \
            depth_hierarchy(obj, 2)

    full = mgopt(H(), theta, **kw, rng=0)
    ck = Checkpointer(tmp_path, every=1)

    def stop(intermediate_result):
        if intermediate_result.nit == 3:
            ck.request_stop()

    part = mgopt(H(), theta, **kw, rng=0, checkpoint=ck, callback=stop)
    assert part.status == 4
    rest = mgopt(H(), theta, **kw, rng=0, resume=str(tmp_path))
    np.testing.assert_array_equal(rest.x, full.x)
    assert rest.work == full.work
    np.testing.assert_array_equal(rest.history["fun"], full.history["fun"])
