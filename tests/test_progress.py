"""Progress lines: through logging ('mgnn.progress'), at the interval, rank 0 only."""

import logging

import numpy as np
import pytest

from mgnn.data import peaks
from mgnn.multilevel import depth_hierarchy, mgopt, nested_iteration, rmtr
from mgnn.nets import ResNet
from mgnn.objective import Objective
from mgnn.optim import minimize
from mgnn.runs import progress

D = peaks(40, 10)
NET = ResNet(2, 3, 4, 5)


def lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "mgnn.progress"]


@pytest.mark.parametrize("method,opts", [
    ("adam", {"lr": 0.01, "maxiter": 9, "batch_size": 10, "rng": 0}),
    ("sgd", {"lr": 0.01, "maxiter": 9}),
    ("lbfgs", {"maxiter": 9, "gtol": 0.0}),
    ("trust-region", {"maxiter": 9, "gtol": 0.0}),
])
def test_every_method_reports_at_the_interval(caplog, method, opts):
    caplog.set_level(logging.INFO, logger="mgnn")
    obj = Objective(NET, D.X_train, D.Y_train)
    res = minimize(obj, NET.init(0), method=method,
                   options=dict(opts, disp=True, disp_every=3))
    got = lines(caplog)
    its = [int(s.split(" it ")[1].split()[0]) for s in got[:-1]]
    assert its and all(k % 3 == 0 for k in its) and max(its) == 9
    assert all(" f " in s and " work " in s and " t " in s and "|g|" in s for s in got[:-1])
    assert got[-1].startswith(f"{method}: {res.message}")
    caplog.clear()
    minimize(obj, NET.init(0), method=method, options=opts)
    assert not lines(caplog)  # disp off: silent


def test_mgrit_factors_and_multilevel_solvers(caplog):
    from mgnn.mgrit import MGRITPropagation

    caplog.set_level(logging.INFO, logger="mgnn")
    obj = Objective(ResNet(2, 3, 8, 5), D.X_train, D.Y_train,
                    propagation=MGRITPropagation(levels=2, cf=2))
    minimize(obj, obj.net.init(0), method="lbfgs", options={"maxiter": 2, "disp": True})
    assert "mgrit fwd" in lines(caplog)[1] and " bwd " in lines(caplog)[1]
    for name, run in [
        ("nested_iteration", lambda H: nested_iteration(H, [3, 3], disp=True, disp_every=2)),
        ("rmtr", lambda H: rmtr(H, H[0].net.init(0), options={"maxiter": 2, "disp": True})),
        ("mgopt", lambda H: mgopt(H, H[0].net.init(0), cycles=2, disp=True)),
    ]:
        caplog.clear()
        run(depth_hierarchy(Objective(ResNet(2, 3, 8, 5), D.X_train, D.Y_train), 2))
        got = lines(caplog)
        assert got[0].startswith(name) and got[-1].startswith(f"{name}: "), got


def test_only_rank_0_reports(caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="mgnn")
    monkeypatch.setattr(progress, "world_rank", lambda: 1)
    minimize(Objective(NET, D.X_train, D.Y_train), NET.init(0), method="lbfgs",
             options={"maxiter": 2, "disp": True})
    assert not lines(caplog)


def test_disp_prints_without_logging_configuration(capsys, monkeypatch):
    """With no handler anywhere, disp=True still prints (to stdout), like scipy."""
    logger = logging.getLogger("mgnn")
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    minimize(Objective(NET, D.X_train, D.Y_train), NET.init(0), method="lbfgs",
             options={"maxiter": 1, "disp": True})
    out = capsys.readouterr().out
    assert "lbfgs  it 1" in out and logger.level == logging.INFO
    logger.handlers.clear()


def test_bad_progress_options():
    obj = Objective(NET, D.X_train, D.Y_train)
    with pytest.raises(TypeError, match="disp must be bool"):
        minimize(obj, NET.init(0), method="lbfgs", options={"disp": "yes"})
    with pytest.raises(ValueError, match="disp_every must be >= 1"):
        minimize(obj, NET.init(0), method="lbfgs", options={"disp": True, "disp_every": 0})
    with pytest.raises(TypeError, match="disp_every must be an integer"):
        nested_iteration(depth_hierarchy(obj, 2), [1, 1], disp_every=1.5)
    assert np.isfinite(minimize(obj, NET.init(0), method="lbfgs",
                                options={"maxiter": 1}).fun)
