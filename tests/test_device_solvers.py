"""Every public solver on device arrays: the CPU stand-in for CuPy here, CuPy where CUDA is.

The stand-in (:mod:`mgnn.testing.fakecupy`) refuses every implicit conversion to NumPy
that CuPy refuses, so a host conversion left in a solver fails here although CI has no
GPU. Its kernels are the CPU kernels, so on the stand-in a solver must reproduce the CPU
run **bit for bit** (iterates, losses, histories, work); on a real GPU the same cases
compare to the CPU to a relative 1e-9 (float64, different summation order).

Checkpoints of device runs are resumed bit for bit on the device and, with the same
files, on the CPU. A value-and-gradient reads back from the device only the handful of
scalars that steer the solver (the loss, the regulariser, the finiteness check): counted.
"""

import numpy as np
import pytest
from conftest import device_namespace

from mgnn import dd
from mgnn.backend import gpu_available, to_device, to_host
from mgnn.data import peaks, smooth_regression
from mgnn.mgrit import MGRITPropagation
from mgnn.multilevel import depth_hierarchy, mgopt, nested_iteration, rmtr, width_hierarchy
from mgnn.nets import ResNet
from mgnn.objective import Objective
from mgnn.optim import minimize
from mgnn.runs import Checkpointer, load_network, save_network
from mgnn.testing import fakecupy

CLS = peaks(60, 30, seed=3)
REG = smooth_regression(60, 30, seed=3)
DEVICES = ["fake", pytest.param("gpu", marks=pytest.mark.skipif(
    not gpu_available(), reason="needs CuPy and a CUDA device"))]


@pytest.fixture(params=DEVICES)
def xp(request):
    return device_namespace(request.param)


def exact(xp):
    """The stand-in runs the CPU kernels: results are bit-identical to the CPU."""
    return xp is fakecupy


def same(a, b, xp, what=""):
    """Device result ``a`` (moved to the host) equals CPU result ``b``."""
    a = to_host(a) if hasattr(a, "dtype") else a
    if exact(xp):
        assert np.array_equal(a, b, equal_nan=True), what
    else:  # pragma: no cover - needs CUDA
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=what)


def same_result(dev, cpu, xp, columns=("fun", "work")):
    """Iterate, loss and history of a device run equal the CPU run's."""
    assert type(dev.x).__module__.split(".")[0] in ("mgnn", "cupy")
    same(dev.x, cpu.x, xp, "x")
    same(dev.fun, cpu.fun, xp, "fun")
    for c in columns:
        if c in cpu.history:
            same(dev.history[c], cpu.history[c], xp, c)


def cls_objective(xp=None, width=3, depth=8, prop=None, **kw):
    net = ResNet(2, width, depth, 5, T=4.0)
    X, Y = (CLS.X_train, CLS.Y_train) if xp is None else to_device(CLS.X_train, CLS.Y_train,
                                                                    xp=xp)
    return Objective(net, X, Y, tikhonov=1e-3, propagation=prop, **kw)


def reg_objective(xp=None, width=6, depth=4, act="relu"):
    net = ResNet(2, width, depth, 1, activation=act, task="regression")
    X, Y = (REG.X_train, REG.Y_train) if xp is None else to_device(REG.X_train, REG.Y_train,
                                                                    xp=xp)
    return Objective(net, X, Y, tikhonov=1e-6)


def dev(x, xp):
    return to_device(x, xp=xp)


# ------------------------------------------------------------------- single level
MINIMIZE = {
    "sgd": dict(lr=0.05, momentum=0.9, nesterov=True, batch_size=20, maxiter=8, rng=2,
                schedule="cosine"),
    "adam": dict(lr=0.05, batch_size=20, maxiter=8, rng=2),
    "lbfgs": dict(maxiter=8),
    "trust-region": dict(maxiter=6),
    "trust-region-lsr1": dict(maxiter=6, hessian="lsr1", subproblem="dogleg"),
    "trust-region-cauchy": dict(maxiter=6, subproblem="cauchy"),
}


@pytest.mark.parametrize("case", sorted(MINIMIZE))
def test_minimize_on_the_device_equals_the_cpu(xp, case):
    method = case.split("-")[0] + ("-region" if case.startswith("trust") else "")
    theta0 = cls_objective().net.init(1)
    cpu = minimize(cls_objective(), theta0, method=method, options=MINIMIZE[case])
    res = minimize(cls_objective(xp), dev(theta0, xp), method=method, options=MINIMIZE[case])
    same_result(res, cpu, xp, ("fun", "grad_norm", "work"))
    assert res.status == cpu.status and res.nit == cpu.nit


@pytest.mark.parametrize("batch", [None, 20])
def test_lsgd_on_the_device_equals_the_cpu(xp, batch):
    opts = {"maxiter": 3, "gd_steps": 2, "lr": 1e-3}
    if batch:
        opts.update(batch_size=batch, ls_batch_size=40, rng=1)
    theta0 = reg_objective().net.init(0, "box", box=(-1, 1))
    cpu = minimize(reg_objective(), theta0, method="lsgd", options=opts)
    res = minimize(reg_objective(xp), dev(theta0, xp), method="lsgd", options=opts)
    same_result(res, cpu, xp)


@pytest.mark.parametrize("batched", [False, True])
def test_mgrit_propagation_on_the_device_equals_the_cpu(xp, batched):
    def prop():
        return MGRITPropagation(levels=2, cf=4, fwd_iters=2, bwd_iters=1, batched=batched)
    cpu_obj = cls_objective(depth=16, prop=prop())
    obj = cls_objective(xp, depth=16, prop=prop())
    theta, v = cpu_obj.net.init(0), cpu_obj.net.init(1)
    f0, g0 = cpu_obj.value_and_grad(theta)
    f, g = obj.value_and_grad(dev(theta, xp))
    same(f, f0, xp)
    same(g, g0, xp)
    same(obj.hessp(dev(theta, xp), dev(v, xp)), cpu_obj.hessp(theta, v), xp)
    assert obj.propagation.last_stats()["forward"].nit == 2
    cpu = minimize(cls_objective(depth=16, prop=prop()), theta, method="adam",
                   options={"maxiter": 4, "lr": 0.01})
    res = minimize(cls_objective(xp, depth=16, prop=prop()), dev(theta, xp), method="adam",
                   options={"maxiter": 4, "lr": 0.01})
    same_result(res, cpu, xp, ("fun", "work", "mgrit_fwd_residual"))


def test_one_shot_mgrit_defaults_on_the_device_equal_the_cpu(xp):
    """MGRITPropagation's one-shot defaults (F-cycles over every level, averaged coarse
    weights, kept FAS tau, warm starts on the same samples, a relative tolerance) on
    full-batch L-BFGS and mini-batch Adam: the device run equals the CPU run."""
    theta = cls_objective(depth=16).net.init(0)
    for method, opts in (("lbfgs", {"maxiter": 4}),
                         ("adam", {"maxiter": 4, "lr": 0.01, "batch_size": 20, "rng": 1})):
        cpu = minimize(cls_objective(depth=16, prop=MGRITPropagation()), theta,
                       method=method, options=opts)
        res = minimize(cls_objective(xp, depth=16, prop=MGRITPropagation()),
                       dev(theta, xp), method=method, options=opts)
        same_result(res, cpu, xp, ("fun", "work", "mgrit_fwd_residual"))


def test_mgrit_adjoint_reuses_the_averaged_weights_of_the_forward_on_the_device(
        xp, monkeypatch):
    """The adjoint solve of a value-and-gradient finds the weights its forward bound (same
    device memory) and does not average them again."""
    import mgnn.mgrit.layer_parallel as lp
    binds = []
    bind = lp._Weights.bind
    monkeypatch.setattr(lp._Weights, "bind", lambda self, *a: (binds.append(1), bind(self, *a)))
    obj = cls_objective(xp, depth=16, prop=MGRITPropagation())
    obj.value_and_grad(dev(obj.net.init(0), xp))
    assert len(binds) == 1


def test_a_device_batch_of_indices_equals_a_host_batch(xp):
    """Mini-batch indices may live on the device: the same value and gradient as host
    indices, and an MGRIT propagation recognises the same samples (warm start)."""
    idx = np.arange(3, 40, 2)
    theta = dev(cls_objective(depth=16).net.init(0), xp)
    host = cls_objective(xp, depth=16, prop=MGRITPropagation())
    f0, g0 = host.value_and_grad(theta, idx)
    obj = cls_objective(xp, depth=16, prop=MGRITPropagation())
    f1, g1 = obj.value_and_grad(theta, xp.asarray(idx))
    assert f1 == f0
    assert np.array_equal(to_host(g1), to_host(g0))
    obj.value_and_grad(theta, xp.asarray(idx))
    assert obj.propagation.last_stats()["forward"].warm


# --------------------------------------------------------------------- multilevel
@pytest.mark.parametrize("interp", ["constant", "linear"])
def test_depth_transfers_on_the_device(xp, interp):
    H = depth_hierarchy(cls_objective(depth=8), 3, interpolation=interp)
    T = H[0].transfer
    rng = np.random.default_rng(0)
    xc, xf = rng.standard_normal(T.n_coarse), rng.standard_normal(T.n_fine)
    for op, x in ((T.prolong, xc), (T.restrict, xf), (T.project, xf)):
        y = op(dev(x, xp))
        assert type(y) is type(dev(x, xp))
        same(y, op(x), xp, op.__name__)


@pytest.mark.parametrize("coarsen", ["width", "both"])
def test_width_hierarchy_and_transfers_on_the_device(xp, coarsen):
    obj = reg_objective(depth=4)
    theta = obj.net.init(0)
    Hc = width_hierarchy(obj, theta, 2, coarsen=coarsen)
    Hd = width_hierarchy(reg_objective(xp, depth=4), dev(theta, xp), 2, coarsen=coarsen)
    assert [lv.net.width for lv in Hd.levels] == [lv.net.width for lv in Hc.levels]
    Tc, Td = Hc[0].transfer, Hd[0].transfer
    rng = np.random.default_rng(1)
    xc, xf = rng.standard_normal(Tc.n_coarse), rng.standard_normal(Tc.n_fine)
    same(Td.prolong(dev(xc, xp)), Tc.prolong(xc), xp)
    same(Td.restrict(dev(xf, xp)), Tc.restrict(xf), xp)
    same(Td.project(dev(xf, xp)), Tc.project(xf), xp)


def test_nested_iteration_on_the_device_with_host_validation_data(xp):
    kw = dict(method="adam", options={"lr": 0.02, "batch_size": 20, "rng": 1},
              validation=(CLS.X_val, CLS.Y_val), eval_every=2)
    cpu = nested_iteration(depth_hierarchy(cls_objective(), 3), [4, 3, 2], **kw)
    res = nested_iteration(depth_hierarchy(cls_objective(xp), 3), [4, 3, 2], **kw)
    same_result(res, cpu, xp, ("fun", "work", "val_acc"))
    assert res.work_per_level == pytest.approx(cpu.work_per_level, rel=1e-12)
    lbfgs = nested_iteration(depth_hierarchy(cls_objective(xp), 2), [3, 2], method="lbfgs")
    assert type(lbfgs.x) is type(dev(np.zeros(1), xp))


RMTR = {  # seeded: RMTR's default path draws growing mini-batches
    "V-first-order": dict(maxiter=4, rng=0),
    "W-second-order-euclidean": dict(maxiter=3, cycle="W", model="second-order",
                                     coarse_norm="euclidean", rng=1),
    "galerkin-lsr1": dict(maxiter=3, model="galerkin", hessian="lsr1", rng=2),
    "batches": dict(maxiter=4, batch_size=20, rng=3, growth_patience=1),
}


@pytest.mark.parametrize("case", sorted(RMTR))
def test_rmtr_on_the_device_equals_the_cpu(xp, case):
    theta0 = cls_objective().net.init(1)
    interp = "linear" if "W" in case else "constant"
    cpu = rmtr(depth_hierarchy(cls_objective(), 3, interpolation=interp), theta0,
               options=RMTR[case])
    res = rmtr(depth_hierarchy(cls_objective(xp), 3, interpolation=interp), dev(theta0, xp),
               options=RMTR[case])
    same_result(res, cpu, xp, ("fun", "radius", "work"))
    assert res.work_per_level == pytest.approx(cpu.work_per_level, rel=1e-12)


MGOPT = {
    "width-adam-rematch": dict(smoother="adam", smoother_options={"lr": 0.01, "batch_size": 20},
                               pre=2, post=1, cycles=4, rng=0, rematch_every=2),
    "depth-lbfgs-linesearch": dict(smoother="lbfgs", cycles=3, line_search=True, tau="full"),
    "both-sgd-minibatch-tau": dict(smoother="sgd", smoother_options={"lr": 0.01,
                                                                     "batch_size": 20},
                                   cycles=3, rng=0, tau="minibatch"),
}


@pytest.mark.parametrize("case", sorted(MGOPT))
def test_mgopt_on_the_device_equals_the_cpu(xp, case):
    kw = MGOPT[case]
    theta0 = reg_objective().net.init(0)

    def H(obj, theta):
        if case.startswith("depth"):
            return depth_hierarchy(obj, 2)
        return width_hierarchy(obj, theta, 2, coarsen=case.split("-")[0])

    cpu = mgopt(H(reg_objective(), theta0), theta0, validation=(REG.X_val, REG.Y_val), **kw)
    res = mgopt(H(reg_objective(xp), dev(theta0, xp)), dev(theta0, xp),
                validation=(REG.X_val, REG.Y_val), **kw)
    same_result(res, cpu, xp, ("fun", "work", "val_mean_error"))


DD = {
    "apts-layers": ("apts", "layers", {"maxiter": 3}, False),
    "apts-data-multiplicative": ("apts", "data", {"maxiter": 3, "variant": "multiplicative"},
                                 False),
    "apts-blocks": ("apts", "blocks", {"maxiter": 2}, False),
    "spqn-neurons": ("spqn", "neurons", {"maxiter": 2}, False),
    "spqn-tensors": ("spqn", "tensors", {"maxiter": 2}, False),
    "spqn-data-two-level": ("spqn", "data", {"maxiter": 3}, True),
}


def dd_run(xp, case, theta0, **kw):
    name, kind, opts, two = DD[case]
    obj = cls_objective(xp)
    net = obj.net
    dec = {"layers": lambda: dd.by_layers(net, 2), "data": lambda: dd.by_data(obj, 3),
           "blocks": lambda: dd.by_blocks(net.n_params, 3),
           "neurons": lambda: dd.by_neurons(net, 2),
           "tensors": lambda: dd.by_tensors(net, 2, 0)}[kind]()
    fn = dd.apts if name == "apts" else dd.spqn
    opts = dict(opts, **kw.pop("options", {}))
    return fn(obj, theta0, dec, options=opts,
              hierarchy=depth_hierarchy(obj, 2) if two else None, **kw)


@pytest.mark.parametrize("case", sorted(DD))
def test_domain_decomposition_on_the_device_equals_the_cpu(xp, case):
    theta0 = cls_objective().net.init(1)
    cpu = dd_run(None, case, theta0)
    res = dd_run(xp, case, dev(theta0, xp))
    same_result(res, cpu, xp)
    assert res.parallel_work == pytest.approx(cpu.parallel_work, rel=1e-12)


# --------------------------------------------------------------- checkpoint, resume
def interrupted(run, folder, at):
    ck = Checkpointer(folder)

    def cb(intermediate_result):
        if intermediate_result.nit == at:
            ck.request_stop()
    res = run(ck, cb)
    assert res.status == 4, res.message
    return res


RESUME = ["adam", "trust-region-lsr1", "lbfgs-mgrit", "rmtr", "nested-mgrit", "mgopt", "apts",
          "lsgd"]


def resumable(case, xp):
    """``run(**kw)`` of a solver on ``xp`` (None: the CPU) and the iteration to stop at."""
    if case in ("adam", "trust-region-lsr1"):
        opts = MINIMIZE[case]
        method = "adam" if case == "adam" else "trust-region"
        theta0 = cls_objective().net.init(1)

        def run(checkpoint=None, callback=None, resume=None):
            o = dict(opts, checkpoint=checkpoint, resume=resume)
            return minimize(cls_objective(xp), dev(theta0, xp) if xp else theta0,
                            method=method, options=o, callback=callback)
        return run, 3
    if case == "lbfgs-mgrit":  # one-shot defaults: kept tau and warm starts travel
        theta0 = cls_objective(depth=16).net.init(1)

        def run(checkpoint=None, callback=None, resume=None):
            return minimize(cls_objective(xp, depth=16, prop=MGRITPropagation()),
                            dev(theta0, xp) if xp else theta0, method="lbfgs",
                            options={"maxiter": 5, "checkpoint": checkpoint, "resume": resume},
                            callback=callback)
        return run, 3
    if case == "lsgd":
        theta0 = reg_objective().net.init(0, "box", box=(-1, 1))
        opts = {"maxiter": 6, "gd_steps": 2, "lr": 1e-3, "batch_size": 12, "ls_batch_size": 24,
                "rng": 5}

        def run(checkpoint=None, callback=None, resume=None):
            return minimize(reg_objective(xp), dev(theta0, xp) if xp else theta0, method="lsgd",
                            options=dict(opts, checkpoint=checkpoint, resume=resume),
                            callback=callback)
        return run, 2
    if case == "rmtr":
        theta0 = cls_objective().net.init(1)

        def run(checkpoint=None, callback=None, resume=None):
            return rmtr(depth_hierarchy(cls_objective(xp), 3), dev(theta0, xp) if xp else theta0,
                        options=dict(RMTR["batches"], checkpoint=checkpoint, resume=resume),
                        callback=callback)
        return run, 2
    if case == "nested-mgrit":
        def run(checkpoint=None, callback=None, resume=None):
            def prop(l, net):
                return MGRITPropagation(levels=2, cf=2, fwd_iters=1, bwd_iters=1)
            H = depth_hierarchy(cls_objective(xp), 2, propagation=prop)
            cb = None
            if callback is not None:
                count = {"n": 0}

                def cb(level, r):
                    count["n"] += 1
                    callback(type("R", (), {"nit": count["n"]})())
            return nested_iteration(H, [4, 3], method="adam",
                                    options={"lr": 0.05, "batch_size": 12, "rng": 1},
                                    validation=(CLS.X_val, CLS.Y_val), refine_iterations=2,
                                    checkpoint=checkpoint, resume=resume, callback=cb)
        return run, 5
    if case == "mgopt":
        theta0 = reg_objective().net.init(0)

        def run(checkpoint=None, callback=None, resume=None):
            obj = reg_objective(xp)
            th = dev(theta0, xp) if xp else theta0
            return mgopt(width_hierarchy(obj, th, 2), th, checkpoint=checkpoint, resume=resume,
                         callback=callback, **MGOPT["width-adam-rematch"])
        return run, 2
    theta0 = cls_objective().net.init(1)

    def run(checkpoint=None, callback=None, resume=None):
        return dd_run(xp, "apts-layers", dev(theta0, xp) if xp else theta0, callback=callback,
                      options={"maxiter": 4, "checkpoint": checkpoint, "resume": resume})
    return run, 2


@pytest.mark.parametrize("case", RESUME)
def test_device_checkpoints_resume_bit_for_bit_on_the_device_and_on_the_cpu(xp, case,
                                                                            tmp_path):
    run, at = resumable(case, xp)
    full = run()
    interrupted(lambda ck, cb: run(checkpoint=ck, callback=cb), tmp_path, at)
    res = run(resume=tmp_path)
    assert type(res.x) is type(full.x)
    assert np.array_equal(to_host(res.x), to_host(full.x))
    assert res.work == full.work
    np.testing.assert_array_equal(res.history["fun"], full.history["fun"])
    # the same files resume the run on the CPU
    cpu_run, _ = resumable(case, None)
    on_cpu = cpu_run(resume=tmp_path)
    assert type(on_cpu.x) is np.ndarray
    same(full.x, on_cpu.x, xp)


def test_save_and_load_a_network_trained_on_the_device(xp, tmp_path):
    obj = cls_objective(xp)
    theta = dev(obj.net.init(0), xp)
    save_network(tmp_path / "net.npz", obj.net, theta)
    saved = load_network(tmp_path / "net.npz")
    assert type(saved.theta) is np.ndarray
    np.testing.assert_array_equal(saved.theta, to_host(theta))


# ------------------------------------------------------------------ host traffic
def test_an_evaluation_reads_back_only_the_scalars_that_steer_the_solver():
    obj = cls_objective(fakecupy, depth=16)
    obj.smoothness = 1e-2
    theta = dev(obj.net.init(0), fakecupy)
    obj.value_and_grad(theta)
    fakecupy.transfers(reset=True)
    obj.value_and_grad(theta)
    # finiteness of theta, the loss, the regulariser: independent of the depth
    assert fakecupy.transfers(reset=True) == dict(to_device=0, to_host=3, graph_launches=0,
                                                  captured_ops=0)
    obj.value_and_grad(theta, batch=np.arange(20))
    t = fakecupy.transfers(reset=True)
    assert t["to_device"] == 1 and t["to_host"] == 3  # the batch indices, checked on the host
    res = minimize(obj, theta, method="adam", options={"maxiter": 5})
    t = fakecupy.transfers(reset=True)
    assert t["to_host"] <= 12 * (res.nit + 1), t


def test_a_host_theta_with_device_data_is_named():
    obj = cls_objective(fakecupy)
    with pytest.raises(TypeError, match="theta is a NumPy array but the objective's data are "
                                        "mgnn.testing.fakecupy arrays: move theta with "
                                        "mgnn.backend.to_device"):
        obj.value_and_grad(obj.net.init(0))
    with pytest.raises(TypeError, match="v is a NumPy array"):
        obj.hessp(dev(obj.net.init(0), fakecupy), obj.net.init(0))


# ------------------------------------------------------------- MGRIT, any stepper
@pytest.mark.parametrize("batched", [False, True])
def test_mgrit_solves_with_device_states(xp, batched):
    """A stepper whose vectors are device arrays: the solve equals serial stepping and
    equals the same solve on NumPy states."""
    from mgnn.mgrit import MGRIT
    from mgnn.mgrit.stepper import Stepper

    class Decay(Stepper):
        def __init__(self, ns):
            super().__init__(shape=(3,))
            self.ns = ns

        def new_vector(self, level=0):
            return self.ns.empty(self.shape, self.dtype)

        def step(self, u_in, u_out, t0, t1, level, index):
            self.ns.multiply(u_in, 1.0 / (1.0 + (t1 - t0)), out=u_out)

        def step_batch(self, u_in, u_out, t0, t1, level, index):
            f = self.ns.asarray(1.0 / (1.0 + (t1 - t0)))[:, None]
            self.ns.multiply(u_in, f, out=u_out)

    t = np.linspace(0.0, 2.0, 33)
    u0 = np.array([1.0, -2.0, 0.5])
    res = {}
    for ns in (np, xp):
        solver = MGRIT(Decay(ns), t, cf=2, max_levels=3, batched=batched)
        out = solver.solve(dev(u0, ns) if ns is not np else u0, tol=1e-13, max_iter=30)
        res[ns.__name__] = out
        assert out.success and out.residuals[-1] <= 1e-13
    dev_res, cpu_res = res[xp.__name__], res["numpy"]
    assert type(dev_res.u) is type(dev(u0, xp))
    same(dev_res.u[-1], cpu_res.u[-1], xp)
    np.testing.assert_allclose(to_host(dev_res.u[-1]), u0 / 1.0625 ** 32, rtol=1e-12)
    assert dev_res.nit == cpu_res.nit
    same(dev_res.residuals, cpu_res.residuals, xp)


def test_host_targets_follow_device_inputs_and_the_converse_is_named():
    obj = Objective(ResNet(2, 3, 4, 5), to_device(CLS.X_train, xp=fakecupy), CLS.Y_train)
    assert type(obj.Y) is fakecupy.ndarray
    with pytest.raises(TypeError, match="X is a NumPy array but Y is a mgnn.testing.fakecupy "
                                        "array"):
        Objective(ResNet(2, 3, 4, 5), CLS.X_train, to_device(CLS.Y_train, xp=fakecupy))
