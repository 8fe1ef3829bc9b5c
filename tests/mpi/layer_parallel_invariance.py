"""Layer-parallel training on the ranks of COMM_WORLD; rank 0 dumps JSON.

Usage: ``mpiexec -n P python tests/mpi/layer_parallel_invariance.py OUT.json``

Cases (all ranks in the layer communicator): the loss and the gathered gradient
at a fixed theta with 1, 2 and 3 MGRIT levels (one-shot, warm-started, three
evaluations), and short L-BFGS and Adam runs (theta, losses). With P = 2 also
the 2 x 1 and 1 x 2 (layers x data) process grids. ``tests/test_mpi_layer_parallel.py``
compares the files for P = 1, 2, 3.
"""

import json
import sys

import numpy as np

import mgnn
from mgnn.mgrit import LayerParallelObjective, MGRITPropagation
from mgnn.nets import ResNet
from mgnn.objective import Objective
from mgnn.parallel import get_comm, process_grid


def problem():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((48, 2))
    y = ((X[:, 0] * X[:, 1] > 0) + (X[:, 0] > 0.5)).astype(int)
    net = ResNet(2, 4, 13, 3, T=3.0, activation="tanh")
    theta = net.init(rng)
    theta[net.layer_slice(0, net.depth)] = 0.3 * rng.standard_normal(net.n_residual)
    return net, X, y, theta


def main(path):
    world = get_comm()
    net, X, y, theta = problem()
    serial = Objective(net, X, y, tikhonov=1e-3)
    f_ser, g_ser = serial.value_and_grad(theta)
    out = {"size": world.size, "cases": {}}
    cases = out["cases"]
    for levels, avg in ((1, "inject"), (2, "inject"), (3, "average")):
        prop = MGRITPropagation(levels=levels, cf=2, min_coarse=1, coarse_weights=avg,
                                relax="FCF", cycle="V", fwd_iters=2, bwd_iters=1, rtol=None,
                                reuse_tau=False)
        obj = LayerParallelObjective(net, X, y, comm=world, tikhonov=1e-3, propagation=prop)
        tl = obj.scatter(theta)
        fs = []
        for _ in range(3):
            f, g = obj.value_and_grad(tl)
            fs.append(f)
        G = obj.gather(g)
        cases[f"grad_L{levels}"] = {
            "f": fs, "g": G.tolist(), "work": obj.counter.work,
            "bitwise_serial_grad": bool(np.array_equal(G, g_ser)),
            "err_serial": float(np.max(np.abs(G - g_ser))),
            "fwd_nit": prop.last_stats()["forward"].nit,
        }
    # the one-shot options: kept tau, F-relaxation, averaged weights, every level; V and F
    # cycles; with the smoothness regulariser; gradient written in the last fine sweep
    one_shot = dict(levels=None, cf=2, min_coarse=1, relax="F", cycle="V", fwd_iters=1,
                    bwd_iters=1, rtol=None, coarse_weights="average", reuse_tau=True,
                    residuals=False)
    for name, opts in (("one_shot_V", one_shot),
                       ("one_shot_F", dict(one_shot, cf=[4, 2], cycle="F", residuals=2)),
                       # the defaults: iterations chosen by the residual (rtol)
                       ("defaults", dict(min_coarse=2))):
        prop = MGRITPropagation(**opts)
        obj = LayerParallelObjective(net, X, y, comm=world, tikhonov=1e-3, smoothness=1e-2,
                                     propagation=prop)
        tl = obj.scatter(theta)
        fs = [obj.value_and_grad(tl)[0] for _ in range(3)]
        f, g = obj.value_and_grad(tl)
        res = mgnn.minimize(obj, tl, method="adam", options={"maxiter": 5, "lr": 1e-2})
        eng = next(iter(prop._engines.values()))
        st_ = prop.last_stats()["forward"]
        # this rank's steps of the last forward solve, summed over the ranks
        summed = world.allreduce(np.asarray(eng.fwd._steps, dtype=np.float64)).tolist()
        cases[name] = {"f": fs + [f], "g": obj.gather(g).tolist(),
                       "x": obj.gather(res.x).tolist(), "hist_fun": res.history["fun"].tolist(),
                       "work": res.work, "steps_all": st_.level_steps,
                       "steps_summed": [int(v) for v in summed]}
    serial_s = Objective(net, X, y, tikhonov=1e-3, smoothness=1e-2)
    g_s = serial_s.grad(theta)
    obj = LayerParallelObjective(net, X, y, comm=world, tikhonov=1e-3, smoothness=1e-2)
    G = obj.gather(obj.grad(obj.scatter(theta)))
    cases["smooth_L1"] = {"bitwise_serial_grad": bool(np.array_equal(G, g_s))}
    for method, options in (("lbfgs", {"maxiter": 6}), ("adam", {"maxiter": 6, "lr": 1e-2})):
        prop = MGRITPropagation(levels=2, cf=2, fwd_iters=2, bwd_iters=1, relax="FCF",
                                cycle="V", rtol=None, coarse_weights="inject",
                                reuse_tau=False)
        obj = LayerParallelObjective(net, X, y, comm=world, tikhonov=1e-3, propagation=prop)
        res = mgnn.minimize(obj, obj.scatter(theta), method=method, options=options)
        hist = res.history
        cases[method] = {"x": obj.gather(res.x).tolist(), "fun": res.fun,
                         "hist_fun": hist["fun"].tolist(),
                         "mgrit_fwd_residual": hist["mgrit_fwd_residual"].tolist(),
                         "nit": res.nit, "work": res.work}
    # an overflowing forward: every rank skips the adjoint (no rank raises), the gradient
    # is NaN everywhere, and the next evaluation starts cold and is finite again
    prop = MGRITPropagation()
    rnet = ResNet(2, 4, 13, 3, T=3.0, activation="relu")
    obj = LayerParallelObjective(rnet, X, y, comm=world, propagation=prop)
    rtheta = rnet.init(np.random.default_rng(4))
    tl = obj.scatter(rtheta)
    obj.value_and_grad(tl)
    bad = rtheta.copy()
    bad[rnet.layer_slice(0, rnet.depth)] = 1e200
    with np.errstate(all="ignore"):
        f_bad, g_bad = obj.value_and_grad(obj.scatter(bad))
    f_ok, g_ok = obj.value_and_grad(tl)
    cases["overflow"] = {"f_bad_finite": bool(np.isfinite(f_bad)),
                         "g_bad_all_nan": bool(world.allreduce(int(np.all(np.isnan(g_bad))),
                                                               op="min")),
                         "f_ok": f_ok, "g_ok": obj.gather(g_ok).tolist(),
                         "warm_after": bool(prop.last_stats()["forward"].warm)}
    if world.size == 2:
        for layers in (2, 1):
            lc, dc = process_grid(world, layers=layers)
            obj = LayerParallelObjective(net, X, y, comm=lc, data_comm=dc, tikhonov=1e-3)
            f, g = obj.value_and_grad(obj.scatter(theta))
            G = obj.gather(g)
            cases[f"grid_{layers}x{2 // layers}"] = {
                "f_err": abs(f - f_ser), "g_err": float(np.max(np.abs(G - g_ser))),
                "g_scale": float(np.max(np.abs(g_ser)))}
    if world.rank == 0:
        with open(path, "w") as fh:
            json.dump(out, fh)


if __name__ == "__main__":
    main(sys.argv[1])
