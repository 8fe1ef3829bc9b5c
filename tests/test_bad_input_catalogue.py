"""A catalogue of bad arguments to the public functions: each gets a named error at the call.

One row per case: ``(id, call, exception, message fragment)``. The fragment names the
argument and what was expected. Issue 13 (item 5) added the cases marked "item 5";
the runs API (save/load, checkpoints, progress) and the divergence options are here too.
"""

import numpy as np
import pytest

from mgnn.data import peaks, smooth_regression
from mgnn.mgrit import MGRIT, LayerParallelObjective, MGRITPropagation
from mgnn.mgrit.problems import Dahlquist
from mgnn.multilevel import depth_hierarchy, mgopt, nested_iteration, rmtr, width_hierarchy
from mgnn.nets import ResNet
from mgnn.objective import Objective
from mgnn.optim import FunctionObjective, minimize
from mgnn.runs import Checkpointer, load_checkpoint, save_network

D = peaks(30, 10, seed=1)
R = smooth_regression(30, 10, seed=1)
NET = ResNet(2, 4, 4, 5)
RNET = ResNet(2, 4, 4, 1, task="regression")
THETA = NET.init(0)
X, Y = D.X_train, D.Y_train


def obj():
    return Objective(NET, X, Y)


def H():
    return depth_hierarchy(obj(), 2)


def quad(x):
    return 0.5 * x @ x


CASES = [
    # --- item 5 -------------------------------------------------------------------------
    ("mgopt lr <= 0", lambda: mgopt(H(), THETA, "adam", {"lr": 0.0}),
     ValueError, "smoother_options['lr'] must be > 0"),
    ("mgopt lr negative sgd", lambda: mgopt(H(), THETA, "sgd", {"lr": -0.1}),
     ValueError, "smoother_options['lr'] must be > 0"),
    ("mgopt lr not a number", lambda: mgopt(H(), THETA, "adam", {"lr": "fast"}),
     TypeError, "smoother_options['lr'] must be a real number"),
    ("complex X", lambda: Objective(NET, X.astype(complex), Y),
     TypeError, "X must be a floating-point array, got dtype complex128 (complex values"),
    ("complex regression Y", lambda: Objective(RNET, R.X_train, R.Y_train.astype(complex)),
     TypeError, "Y must be a floating-point array, got dtype complex128"),
    ("complex X, distributed", lambda: LayerParallelObjective(NET, X.astype(complex), Y),
     TypeError, "X must be a floating-point array, got dtype complex128"),
    ("noise NaN", lambda: smooth_regression(10, 5, noise=float("nan")),
     ValueError, "noise must be finite"),
    ("noise negative", lambda: smooth_regression(10, 5, noise=-1.0),
     ValueError, "noise must be >= 0"),
    ("empty data", lambda: Objective(NET, np.empty((0, 2)), np.empty(0, dtype=int)),
     ValueError, "X must hold at least one sample"),
    ("nested validation=(X,)", lambda: nested_iteration(H(), [1, 1], validation=(D.X_val,)),
     ValueError, "validation must be a pair (X_val, Y_val), got a tuple of length 1"),
    ("mgopt validation=(X,)", lambda: mgopt(H(), THETA, validation=(D.X_val,)),
     ValueError, "validation must be a pair (X_val, Y_val), got a tuple of length 1"),
    ("validation not a pair", lambda: mgopt(H(), THETA, validation=D.X_val),
     ValueError, "validation must be a pair (X_val, Y_val), got ndarray"),
    ("validation rows", lambda: nested_iteration(H(), [1, 1],
                                                 validation=(D.X_val, D.Y_val[:-1])),
     ValueError, "validation[1] (Y_val) must have 10 rows"),
    ("validation columns", lambda: mgopt(H(), THETA, validation=(D.X_val[:, :1], D.Y_val)),
     ValueError, r"validation[0] (X_val) must have shape (*, 2)"),
    ("jac wrong length", lambda: minimize(quad, np.ones(3), jac=lambda x: x[:2]),
     ValueError, "jac must return an array of shape (3,) (the shape of theta), got (2,)"),
    ("fun vector-valued", lambda: minimize(lambda x: x, np.ones(3), jac=lambda x: x),
     ValueError, "fun must return a scalar, got an array of shape (3,)"),
    ("fun not a number", lambda: minimize(lambda x: "a", np.ones(3), jac=lambda x: x),
     TypeError, "fun must return a real number"),
    ("jac=True without a pair", lambda: minimize(quad, np.ones(3), jac=True),
     TypeError, "with jac=True, fun must return a pair (loss, gradient)"),
    ("hessp wrong length", lambda: minimize(quad, np.ones(3), method="trust-region",
                                            jac=lambda x: x, hessp=lambda x, v: v[:1]),
     ValueError, "hessp must return an array of shape (3,)"),
    # --- data generators and seeds --------------------------------------------------------
    ("peaks seed negative", lambda: peaks(10, 5, seed=-1), ValueError, "seed must be >= 0"),
    ("peaks seed text", lambda: peaks(10, 5, seed="a"), TypeError,
     "seed must be None, an int or a numpy Generator"),
    ("regression n_in", lambda: smooth_regression(10, 5, n_in=0), ValueError,
     "n_in must be >= 1"),
    ("peaks n_val", lambda: peaks(10, 0), ValueError, "n_val must be >= 1"),
    ("mgopt rng", lambda: mgopt(H(), THETA, rng="x"), TypeError,
     "rng must be None, an int or a numpy Generator"),
    # --- minimize and its run services -------------------------------------------------------
    ("method unknown", lambda: minimize(obj(), THETA, method="newton"), ValueError,
     "unknown method 'newton'"),
    ("disp not bool", lambda: minimize(obj(), THETA, options={"disp": 1}), TypeError,
     "disp must be bool"),
    ("disp_every zero", lambda: minimize(obj(), THETA, options={"disp_every": 0}),
     ValueError, "disp_every must be >= 1"),
    ("checkpoint type", lambda: minimize(obj(), THETA, options={"checkpoint": 5}),
     TypeError, "checkpoint must be None, a Checkpointer or a directory"),
    ("resume type", lambda: minimize(obj(), THETA, options={"resume": 5}), TypeError,
     "resume must be None, a checkpoint path (file or directory) or a Checkpoint"),
    ("resume missing", lambda: minimize(obj(), THETA, options={"resume": "/no/such/ck"}),
     FileNotFoundError, "no checkpoint file or folder /no/such/ck"),
    ("divergence_factor on lbfgs", lambda: minimize(obj(), THETA, method="lbfgs",
                                                    options={"divergence_factor": 5.0}),
     TypeError, "unknown option 'divergence_factor' for method 'lbfgs'"),
    ("divergence_factor negative", lambda: minimize(obj(), THETA, method="sgd",
                                                    options={"divergence_factor": -1.0}),
     ValueError, "divergence_factor must be > 0"),
    ("adam lr zero", lambda: minimize(obj(), THETA, method="adam", options={"lr": 0.0}),
     ValueError, "lr must be > 0"),
    ("theta0 complex", lambda: minimize(obj(), THETA.astype(complex)), TypeError,
     "theta0 must be a floating-point array, got dtype complex128"),
    # --- multilevel solvers ----------------------------------------------------------------------
    ("nested checkpoint in options", lambda: nested_iteration(
        H(), [1, 1], options={"checkpoint": "ck"}), ValueError,
     "options may not set 'checkpoint': pass it to nested_iteration"),
    ("nested disp", lambda: nested_iteration(H(), [1, 1], disp="yes"), TypeError,
     "disp must be bool"),
    ("nested checkpoint type", lambda: nested_iteration(H(), [1, 1], checkpoint=3),
     TypeError, "checkpoint must be None, a Checkpointer or a directory"),
    ("nested schedule length", lambda: nested_iteration(H(), [1]), ValueError,
     "schedule must have one entry per level (2), got 1"),
    ("rmtr disp_every", lambda: rmtr(H(), THETA, options={"disp": True, "disp_every": -2}),
     ValueError, "disp_every must be >= 1"),
    ("rmtr option", lambda: rmtr(H(), THETA, options={"cycle": "X"}), ValueError,
     "unknown cycle 'X'"),
    ("mgopt divergence_patience", lambda: mgopt(H(), THETA, divergence_patience=0),
     ValueError, "divergence_patience must be >= 1"),
    ("mgopt resume type", lambda: mgopt(H(), THETA, resume=3.5), TypeError,
     "resume must be None, a checkpoint path"),
    ("depth levels", lambda: depth_hierarchy(obj(), 4), ValueError,
     "levels=4 with factor=2 needs a depth divisible by 8"),
    ("width levels", lambda: width_hierarchy(obj(), THETA, 0), ValueError,
     "levels must be >= 1"),
    # --- MGRIT -----------------------------------------------------------------------------------
    ("MGRIT divtol", lambda: MGRIT(Dahlquist(), np.linspace(0, 1, 17)).solve(
        np.ones(1), divtol=0.0), ValueError, "divtol must be >= 1"),
    ("MGRITPropagation cf", lambda: MGRITPropagation(cf=1), ValueError, "cf must be >= 2"),
    # --- save / load / checkpoints ---------------------------------------------------------------
    ("save net type", lambda: save_network("x.npz", "net", THETA), TypeError,
     "cannot save a str"),
    ("save theta length", lambda: save_network("x.npz", NET, THETA[1:]), ValueError,
     f"theta must have shape ({NET.n_params},)"),
    ("Checkpointer directory", lambda: Checkpointer(3), TypeError,
     "directory must be a path"),
    ("Checkpointer every", lambda: Checkpointer("ck", every=0), ValueError,
     "every must be >= 1"),
    ("Checkpointer seconds", lambda: Checkpointer("ck", seconds=0.0), ValueError,
     "seconds must be > 0"),
    ("Checkpointer keep", lambda: Checkpointer("ck", keep=0), ValueError,
     "keep must be >= 1"),
    ("Checkpointer prefix", lambda: Checkpointer("ck", prefix="a/b"), ValueError,
     "prefix must be letters, digits"),
    ("Checkpointer signals", lambda: Checkpointer("ck", signals="yes"), TypeError,
     "signals must be bool"),
    ("Checkpointer metadata", lambda: Checkpointer("ck", metadata=[1]), TypeError,
     "metadata must be a dict"),
    ("load_checkpoint missing", lambda: load_checkpoint("/no/such/folder"),
     FileNotFoundError, "no checkpoint file or folder"),
    ("FunctionObjective fun", lambda: FunctionObjective(3), TypeError,
     "fun must be callable"),
]


@pytest.mark.parametrize("name,call,exc,match", CASES, ids=[c[0] for c in CASES])
def test_named_error_at_the_call(name, call, exc, match):
    with pytest.raises(exc) as info:
        call()
    assert match in str(info.value), str(info.value)
