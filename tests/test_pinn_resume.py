"""Checkpoint and resume of PINN training (issue 13's promise on a PINNObjective).

A run interrupted at a drawn iteration (stop request: the SIGINT/SIGTERM path) and
resumed from its checkpoint with a fresh objective reproduces the uninterrupted run
bit for bit: iterates, losses, work and histories. Mini-batches of collocation points
(Adam) and depth hierarchies (RMTR) included.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgnn import minimize
from mgnn.data.pde import poisson_1d
from mgnn.multilevel import depth_hierarchy, rmtr
from mgnn.nets import ResNet
from mgnn.pinn import PINNObjective
from mgnn.runs import Checkpointer

PROBLEM = poisson_1d()
POINTS = PROBLEM.sample(24, 2, seed=0)
NET = ResNet(1, 5, 4, 1, task="regression", T=2.0, activation="tanh")
THETA0 = NET.init(0)


def objective():
    return PINNObjective.from_problem(NET, PROBLEM, POINTS, bc="penalty")


def same_history(a, b):
    assert a.keys() == b.keys()
    for k in a.keys():
        if k != "time":
            assert np.array_equal(a[k], b[k], equal_nan=True), k


def interrupted(run, folder, at):
    ck = Checkpointer(folder)

    def cb(intermediate_result):
        if intermediate_result.nit == at:
            ck.request_stop()

    res = run(ck, cb)
    assert res.status == 4 and res.checkpoint == ck.last_path, res.message
    return res


CASES = {
    "adam-batches": ("adam", dict(lr=1e-2, batch_size=8, maxiter=10, rng=3)),
    "lbfgs": ("lbfgs", dict(maxiter=10)),
    "trust-region-lsr1": ("trust-region", dict(maxiter=8, hessian="lsr1")),
}


@pytest.mark.parametrize("case", sorted(CASES))
@settings(max_examples=3, deadline=None)
@given(at=st.integers(1, 7))
def test_pinn_minimize_resumes_bit_for_bit(case, at, tmp_path_factory):
    method, opts = CASES[case]
    full = minimize(objective(), THETA0, method=method, options=opts)
    folder = tmp_path_factory.mktemp("ck")
    part = interrupted(lambda ck, cb: minimize(objective(), THETA0, method=method,
                                               options=dict(opts, checkpoint=ck), callback=cb),
                       folder, at)
    assert part.nit == at
    res = minimize(objective(), THETA0, method=method, options=dict(opts, resume=folder))
    assert np.array_equal(res.x, full.x)
    assert res.fun == full.fun and res.nit == full.nit and res.work == full.work
    same_history(res.history, full.history)


@settings(max_examples=3, deadline=None)
@given(at=st.integers(1, 5))
def test_pinn_rmtr_resumes_bit_for_bit(at, tmp_path_factory):
    opts = dict(maxiter=6)
    full = rmtr(depth_hierarchy(objective(), 2), THETA0, options=opts)
    folder = tmp_path_factory.mktemp("ck")
    interrupted(lambda ck, cb: rmtr(depth_hierarchy(objective(), 2), THETA0,
                                    options=dict(opts, checkpoint=ck), callback=cb),
                folder, at)
    res = rmtr(depth_hierarchy(objective(), 2), THETA0, options=dict(opts, resume=folder))
    assert np.array_equal(res.x, full.x) and res.work == full.work
    assert res.work_per_level == full.work_per_level
    same_history(res.history, full.history)
