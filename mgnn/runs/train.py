"""Run a configured training (:mod:`mgnn.runs.config`): what ``mgnn train`` does.

:func:`build` makes the data, network, objective (serial, MGRIT or distributed over
the MPI ranks) and initial parameters; :func:`run_solver` runs the configured
solver with progress, checkpoints and resume; :func:`summarize` gives the final
numbers (loss, iterations, work, validation metrics).
"""

from __future__ import annotations

import numpy as np

from mgnn.runs.config import PROPAGATIONS, SOLVERS

__all__ = ["build", "run_solver", "summarize", "Setup"]


class Setup:
    """What :func:`build` made: ``data, net, objective, theta0`` (this rank's slice for a
    distributed objective), ``hierarchy`` (multilevel solvers), ``distributed``."""

    def __init__(self, data, net, objective, theta0, hierarchy, distributed):
        self.data, self.net, self.objective = data, net, objective
        self.theta0, self.hierarchy, self.distributed = theta0, hierarchy, distributed


def _choice(value, name, choices):
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of "
                         f"{', '.join(repr(c) for c in choices)}")
    return value


def _propagation(p):
    from mgnn.mgrit import MGRITPropagation

    def none(v):  # TOML has no None: 0 stands for it
        return v or None

    return MGRITPropagation(levels=none(p["levels"]), cf=p["cf"], relax=p["relax"],
                            cycle=p["cycle"], fwd_iters=p["fwd_iters"],
                            bwd_iters=p["bwd_iters"], rtol=none(p["rtol"]),
                            tol=none(p["tol"]), coarse_weights=p["coarse_weights"],
                            min_coarse=p["min_coarse"], reuse_tau=p["reuse_tau"])


def build(cfg):
    """Data, network, objective, initial parameters and hierarchy of a resolved config."""
    from mgnn.data import peaks, smooth_regression
    from mgnn.nets import ResNet
    from mgnn.objective import Objective

    d, n, p = cfg["data"], cfg["net"], cfg["propagation"]
    solver = _choice(cfg["solver"]["name"], "solver.name", SOLVERS)
    kind = _choice(p["kind"], "propagation.kind", PROPAGATIONS)
    makers = {"peaks": peaks, "smooth_regression": smooth_regression}
    problem = _choice(d["problem"], "data.problem", tuple(makers))
    dtype = np.dtype(n["dtype"]) if n["dtype"] in ("float32", "float64") else n["dtype"]
    kw = {"noise": d["noise"]} if problem == "smooth_regression" else {}
    if problem == "peaks" and d["noise"]:
        raise ValueError("data.noise applies to smooth_regression only")
    data = makers[problem](d["n_train"], d["n_val"], seed=d["seed"], dtype=dtype, **kw)
    net = ResNet(data.n_in, n["width"], n["depth"], data.n_out, T=n["T"],
                 activation=n["activation"], task=data.task, dtype=dtype)
    theta0 = net.init(np.random.default_rng(n["seed"]), n["init"],
                      inner_scale=n["inner_scale"])
    o = cfg["objective"]
    distributed = kind == "layer_parallel"
    if distributed:
        from mgnn.mgrit import LayerParallelObjective
        from mgnn.parallel import get_comm, process_grid

        if solver != "minimize":
            raise ValueError(f"propagation.kind='layer_parallel' runs with solver.name="
                             f"'minimize' only (the hierarchies of {solver} need serial "
                             "objectives); use propagation.kind='mgrit'")
        if o["smoothness"]:
            raise ValueError("objective.smoothness is not available with "
                             "propagation.kind='layer_parallel'")
        world = get_comm()
        layers = p["layer_ranks"] or None
        lc, dc = process_grid(world, layers=layers)
        obj = LayerParallelObjective(net, data.X_train, data.Y_train, comm=lc, data_comm=dc,
                                     tikhonov=o["tikhonov"], propagation=_propagation(p))
        return Setup(data, net, obj, obj.scatter(theta0), None, True)
    prop = _propagation(p) if kind == "mgrit" else None
    obj = Objective(net, data.X_train, data.Y_train, tikhonov=o["tikhonov"],
                    smoothness=o["smoothness"], propagation=prop)
    hierarchy = None
    if solver in ("nested_iteration", "rmtr", "mgopt") or (
            solver in ("apts", "spqn") and cfg["dd"]["two_level"]):
        from mgnn.multilevel import depth_hierarchy, width_hierarchy

        h = cfg["hierarchy"]
        hk = _choice(h["kind"], "hierarchy.kind", ("depth", "width"))
        if hk == "depth":
            levelprop = (lambda l, net_l: _propagation(p)) if kind == "mgrit" else None
            hierarchy = depth_hierarchy(obj, h["levels"], h["factor"], h["interpolation"],
                                        propagation=levelprop)
        else:
            if kind == "mgrit":
                raise ValueError("hierarchy.kind='width' runs with serial propagation")
            hierarchy = width_hierarchy(obj, theta0, h["levels"], depth_factor=h["factor"],
                                        interpolation=h["interpolation"])
        if solver == "nested_iteration":  # training starts on the coarsest network
            coarse = hierarchy[hierarchy.n_levels - 1].net
            theta0 = coarse.init(np.random.default_rng(n["seed"]), n["init"],
                                 inner_scale=n["inner_scale"])
    return Setup(data, net, obj, theta0, hierarchy, False)


def run_solver(cfg, setup, *, callback=None, disp=False, disp_every=1, checkpoint=None,
               resume=None):
    """Run the configured solver; ``callback(nit, intermediate_result)`` after each
    iteration (cycle for RMTR and MG/OPT; the iteration over all levels for nested
    iteration). Returns the solver's ``OptimizeResult``."""
    from mgnn.optim import minimize

    solver = cfg["solver"]["name"]
    method = cfg["optimizer"]["method"]
    opts = dict(cfg["optimizer"]["options"])
    # only the services asked for: a method that has not adopted them still runs
    services = {k: v for k, v in (("disp", disp), ("checkpoint", checkpoint),
                                  ("resume", resume)) if v}
    if disp:
        services["disp_every"] = disp_every
    cb = None
    if solver == "minimize":
        if callback is not None:
            def cb(intermediate_result):
                callback(intermediate_result.nit, intermediate_result)
        return minimize(setup.objective, setup.theta0, method=method,
                        options=dict(opts, **services), callback=cb)
    H = setup.hierarchy
    if solver == "nested_iteration":
        from mgnn.multilevel import nested_iteration

        ni = cfg["nested_iteration"]
        base = {"nit": 0}
        if callback is not None:
            def cb(level, r):
                base["nit"] += 1
                callback(base["nit"], r)
        return nested_iteration(
            H, list(ni["schedule"]), method=method, options=opts, theta0=setup.theta0,
            callback=cb, validation=(setup.data.X_val, setup.data.Y_val),
            eval_every=ni["eval_every"], refine_iterations=ni["refine_iterations"] or None,
            refine_steps=ni["refine_steps"], **services)
    if solver == "rmtr":
        from mgnn.multilevel import rmtr

        if callback is not None:
            def cb(intermediate_result):
                callback(intermediate_result.nit, intermediate_result)
        return rmtr(H, setup.theta0, options=dict(cfg["rmtr"]["options"], **services),
                    callback=cb)
    if solver in ("apts", "spqn"):
        from mgnn import dd as ddm

        d = cfg["dd"]
        kind = _choice(d["decomposition"], "dd.decomposition",
                       ("layers", "neurons", "tensors", "data"))
        S, net, obj = d["subdomains"], setup.net, setup.objective
        if kind == "layers":
            dec = ddm.by_layers(net, S, overlap=d["overlap"])
        elif kind == "neurons":
            dec = ddm.by_neurons(net, S, theta=setup.theta0)
        elif kind == "tensors":
            dec = ddm.by_tensors(net, S, rng=d["seed"])
        else:
            dec = ddm.by_data(obj, S, overlap=d["overlap"])
        if kind != "layers" and kind != "data" and d["overlap"]:
            raise ValueError(f"dd.overlap applies to 'layers' and 'data' decompositions, "
                             f"not {kind!r}")
        if callback is not None:
            def cb(intermediate_result):
                callback(intermediate_result.nit, intermediate_result)
        fn = ddm.apts if solver == "apts" else ddm.spqn
        return fn(obj, setup.theta0, dec, options=dict(d["options"], **services), callback=cb,
                  hierarchy=H)
    from mgnn.multilevel import mgopt

    m = cfg["mgopt"]
    if callback is not None:
        def cb(intermediate_result):
            callback(intermediate_result.nit, intermediate_result)
    return mgopt(H, setup.theta0, smoother=method, smoother_options=opts, pre=m["pre"],
                 post=m["post"], cycles=m["cycles"], tau=m["tau"],
                 line_search=m["line_search"], validation=(setup.data.X_val, setup.data.Y_val),
                 callback=cb, rng=m["rng"], **services)


def planned_iterations(cfg):
    """Iterations the configured run plans (for a progress bar), or None if unknown."""
    solver = cfg["solver"]["name"]
    if solver == "minimize":
        return cfg["optimizer"]["options"].get("maxiter")
    if solver == "nested_iteration":
        return int(sum(cfg["nested_iteration"]["schedule"]))
    if solver == "rmtr":
        return cfg["rmtr"]["options"].get("maxiter", 100)
    if solver in ("apts", "spqn"):
        return cfg["dd"]["options"].get("maxiter", 100)
    return cfg["mgopt"]["cycles"]


def final_theta(setup, res):
    """The trained finest parameters, whole (gathered from the ranks when distributed)."""
    if setup.distributed:
        return setup.objective.gather(res.x)
    return res.x


def summarize(setup, res, wall):
    """The numbers a run reports: message, success, status, loss, iterations, work,
    wall time, validation accuracy (classification) or errors (regression)."""
    summary = {"message": res.message, "success": bool(res.success),
               "status": int(res.status), "fun": float(res.fun), "nit": int(res.nit),
               "work": float(res.work), "wall_s": wall}
    if res.get("checkpoint"):
        summary["checkpoint"] = res["checkpoint"]
    data = setup.data
    theta = final_theta(setup, res)
    from mgnn.objective import Objective

    ev = Objective(setup.net, data.X_train[:1], data.Y_train[:1])  # evaluation only
    if data.task == "classification":
        summary["val_accuracy"] = ev.accuracy(theta, data.X_val, data.Y_val)
    else:
        summary["val_mean_error"], summary["val_max_error"] = ev.error(theta, data.X_val,
                                                                       data.Y_val)
    return summary
