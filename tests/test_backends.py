"""Representative property tests on every available backend (fixture ``backend``).

On a machine without CuPy or CUDA only the 'cpu' cases run and the 'gpu' ones are
reported as skipped. Data and theta are moved with :func:`mgnn.backend.to_device`; the
assertions compare host copies (:func:`mgnn.backend.to_host`).
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mgnn.backend import get_namespace, to_host
from mgnn.mgrit import MGRITPropagation
from mgnn.nets import ResNet
from mgnn.objective import Objective

# the backend fixtures are stateless (a name and a mover), safe to share between examples
FIXTURES_OK = [HealthCheck.function_scoped_fixture]
ACTS = st.sampled_from(["tanh", "smooth_relu", "identity"])


def _problem(seed, act, task="classification", N=6, w=4, s=15):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((s, 2))
    Y = (X[:, 0] > X[:, 1]).astype(int) if task == "classification" else \
        rng.standard_normal((s, 2))
    net = ResNet(2, w, N, 2, T=1.5, activation=act, task=task)
    theta = net.init(rng) + 0.1 * rng.standard_normal(net.n_params)
    v = rng.standard_normal(net.n_params)
    u = rng.standard_normal(net.n_params)
    return net, X, Y, theta, v, u


def _dot(a, b):
    return float(np.dot(to_host(a), to_host(b)))


@settings(max_examples=6, suppress_health_check=FIXTURES_OK)
@given(seed=st.integers(0, 2**16), act=ACTS, task=st.sampled_from(["classification",
                                                                  "regression"]))
def test_gradient_matches_finite_differences(backend, to_backend, seed, act, task):
    net, X, Y, theta, v, _ = _problem(seed, act, task)
    Xb, Yb, tb, vb = to_backend(X, Y, theta, v)
    obj = Objective(net, Xb, Yb, tikhonov=1e-3)
    xp = get_namespace(tb)
    f, g = obj.value_and_grad(tb)
    assert get_namespace(g) is xp
    eps = 1e-6
    fd = (obj.value(tb + eps * vb) - obj.value(tb - eps * vb)) / (2 * eps)
    assert _dot(g, vb) == pytest.approx(fd, rel=1e-6, abs=1e-9)


@settings(max_examples=6, suppress_health_check=FIXTURES_OK)
@given(seed=st.integers(0, 2**16), act=ACTS)
def test_hessp_is_symmetric_and_matches_gradient_differences(backend, to_backend, seed, act):
    net, X, Y, theta, v, u = _problem(seed, act)
    Xb, Yb, tb, vb, ub = to_backend(X, Y, theta, v, u)
    obj = Objective(net, Xb, Yb, tikhonov=1e-3, smoothness=1e-2)
    Hv, Hu = obj.hessp(tb, vb), obj.hessp(tb, ub)
    a, b = _dot(ub, Hv), _dot(vb, Hu)
    assert a == pytest.approx(b, rel=1e-10, abs=1e-12)
    eps = 1e-6
    fd = (to_host(obj.grad(tb + eps * vb)) - to_host(obj.grad(tb - eps * vb))) / (2 * eps)
    np.testing.assert_allclose(to_host(Hv), fd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("levels,cf", [(2, 4), (3, 2)])
def test_mgrit_converges_to_serial(backend, to_backend, batched, levels, cf):
    net, X, Y, theta, _, _ = _problem(5, "tanh", N=32, w=4, s=20)
    Xb, Yb, tb = to_backend(X, Y, theta)
    f0, g0 = Objective(net, Xb, Yb).value_and_grad(tb)
    prop = MGRITPropagation(levels=levels, cf=cf, fwd_iters=40, bwd_iters=40, tol=1e-14, rtol=None,
                            batched=batched)
    f, g = Objective(net, Xb, Yb, propagation=prop).value_and_grad(tb)
    assert get_namespace(g) is get_namespace(tb)
    g0, g = to_host(g0), to_host(g)
    assert f == pytest.approx(f0, rel=1e-12)
    assert np.linalg.norm(g - g0) <= 1e-10 * np.linalg.norm(g0)
    st_ = prop.last_stats()
    assert st_["forward"].residual <= 1e-14 and st_["adjoint"].residual <= 1e-14
