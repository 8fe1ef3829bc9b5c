"""Bad input gets an error that names the argument and what was expected."""

import numpy as np
import pytest

from mgnn.data import peaks
from mgnn.nets import ResNet
from mgnn.objective import Objective


@pytest.fixture
def setup():
    d = peaks(20, 5)
    net = ResNet(2, 3, 4, 5)
    return d, net, Objective(net, d.X_train, d.Y_train), net.init(0)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(depth=0), ValueError, "depth must be >= 1"),
    (dict(depth=2.5), TypeError, "depth must be an integer"),
    (dict(width=-1), ValueError, "width"),
    (dict(activation="sigmoid"), ValueError, "unknown activation 'sigmoid'"),
    (dict(task="ranking"), ValueError, "unknown task"),
    (dict(T=0.0), ValueError, "T must be > 0"),
    (dict(T=float("nan")), ValueError, "T must be finite"),
    (dict(dtype=np.int32), TypeError, "dtype must be float32 or float64"),
])
def test_network_arguments(kwargs, exc, match):
    args = dict(n_in=2, width=3, depth=4, n_out=2)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        ResNet(**args)


def test_theta_checks(setup):
    d, net, obj, theta = setup
    with pytest.raises(ValueError, match=r"theta must have shape \(%d,\)" % net.n_params):
        obj.value(theta[:-1])
    with pytest.raises(TypeError, match="theta must have dtype float64, got float32"):
        obj.value(theta.astype(np.float32))
    bad = theta.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="theta contains NaN or inf"):
        obj.value_and_grad(bad)
    with pytest.raises(ValueError, match="v contains NaN or inf"):
        obj.hessp(theta, bad)
    with pytest.raises(ValueError, match="theta must be a|theta must have shape"):
        net.forward(theta.reshape(1, -1), d.X_train)


def test_data_checks(setup):
    d, net, obj, theta = setup
    with pytest.raises(ValueError, match=r"X must have shape \(\*, 2\), got \(20, 3\)"):
        Objective(net, np.ones((20, 3)), d.Y_train)
    X = d.X_train.copy()
    X[0, 0] = np.inf
    with pytest.raises(ValueError, match="X contains NaN or inf"):
        Objective(net, X, d.Y_train)
    with pytest.raises(TypeError, match="X must be a floating-point array"):
        Objective(net, np.ones((20, 2), dtype=int), d.Y_train)
    with pytest.raises(ValueError, match="Y must have 20 rows"):
        Objective(net, d.X_train, d.Y_train[:-1])
    with pytest.raises(TypeError, match="Y must hold integer class labels"):
        Objective(net, d.X_train, d.Y_train.astype(float))
    with pytest.raises(ValueError, match=r"Y labels must lie in \[0, 5\)"):
        Objective(net, d.X_train, d.Y_train + 5)
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        Objective(net, d.X_train, d.Y_train, loss="hinge")
    with pytest.raises(ValueError, match="loss 'mse' needs a network with task='regression'"):
        Objective(net, d.X_train, d.Y_train, loss="mse")
    with pytest.raises(ValueError, match="tikhonov must be >= 0"):
        Objective(net, d.X_train, d.Y_train, tikhonov=-1.0)
    with pytest.raises(TypeError, match="propagation must be a Propagation"):
        Objective(net, d.X_train, d.Y_train, propagation="mgrit")


def test_batch_checks(setup):
    d, net, obj, theta = setup
    with pytest.raises(ValueError, match=r"batch indices must lie in \[0, 20\)"):
        obj.value(theta, batch=np.array([0, 20]))
    with pytest.raises(TypeError, match="batch must be a 1-D integer index array"):
        obj.value(theta, batch=np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="batch must not be empty"):
        obj.value(theta, batch=np.array([], dtype=int))


def test_init_checks():
    net = ResNet(2, 3, 4, 2)
    with pytest.raises(ValueError, match="unknown scheme 'xavier'"):
        net.init(0, "xavier")
    with pytest.raises(ValueError, match="inner_scale must be >= 0"):
        net.init(0, "layer_parallel", inner_scale=-1.0)
    with pytest.raises(ValueError, match="layer range"):
        net.layer_slice(3, 7)
