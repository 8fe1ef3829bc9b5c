"""Saving and loading networks (and hierarchies): round trips, format, bad input."""

import json
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgnn.data import peaks
from mgnn.multilevel import depth_hierarchy, width_hierarchy
from mgnn.nets import ResNet
from mgnn.objective import Objective
from mgnn.runs import attach_objective, load_network, save_network
from mgnn.runs.archive import read_archive, write_archive


@settings(max_examples=15)
@given(width=st.integers(1, 6), depth=st.integers(1, 5), n_out=st.integers(1, 4),
       activation=st.sampled_from(["tanh", "relu", "smooth_relu", "identity"]),
       task=st.sampled_from(["classification", "regression"]),
       dtype=st.sampled_from([np.float32, np.float64]), T=st.floats(0.1, 10.0),
       seed=st.integers(0, 2**32 - 1))
def test_round_trip_any_network(tmp_path_factory, width, depth, n_out, activation, task, dtype,
                                T, seed):
    net = ResNet(3, width, depth, n_out, T=T, activation=activation, task=task, dtype=dtype,
                 opening_activation=bool(seed % 2))
    theta = net.init(seed)
    path = save_network(tmp_path_factory.mktemp("n") / "net.npz", net, theta)
    back = load_network(path)
    assert repr(back.net) == repr(net) and back.net.T == net.T
    assert back.net.opening_activation == net.opening_activation
    assert back.theta.dtype == net.dtype and np.array_equal(back.theta, theta)
    X = np.random.default_rng(seed).standard_normal((4, 3)).astype(dtype)
    assert np.array_equal(back.net.forward(back.theta, X), net.forward(theta, X))


def test_format_is_npz_with_json_metadata(tmp_path):
    net = ResNet(2, 3, 4, 2)
    theta = net.init(0)
    path = save_network(tmp_path / "model", net, theta, metadata={"note": "peaks"})
    assert path.endswith("model.npz")
    assert np.array_equal(np.load(path)["theta"], theta)
    with zipfile.ZipFile(path) as zf:
        meta = json.loads(zf.read("meta.json"))
    assert meta["format"] == "mgnn-network" and meta["network"]["class"] == "mgnn.nets.ResNet"
    assert meta["network"]["config"]["depth"] == 4 and meta["dtype"] == "float64"
    assert meta["metadata"] == {"note": "peaks"} and meta["mgnn_version"]
    net2, theta2 = load_network(path)  # unpacks as a pair
    assert np.array_equal(theta2, theta)


@pytest.mark.parametrize("kind", ["depth-linear", "width", "both"])
def test_hierarchies_round_trip(tmp_path, kind):
    d = peaks(40, 10)
    net = ResNet(2, 8, 8, 5)
    theta = net.init(0)
    obj = Objective(net, d.X_train, d.Y_train)
    if kind == "depth-linear":
        H = depth_hierarchy(obj, 3, interpolation="linear")
    else:
        H = width_hierarchy(obj, theta, 3, coarsen="width" if kind == "width" else
                            ["both", "width"])
    back = load_network(save_network(tmp_path / "h.npz", net, theta, hierarchy=H))
    H2 = attach_objective(back.hierarchy, obj)
    assert repr(H2) == repr(H)
    rng = np.random.default_rng(1)
    for l in range(2):
        xc = rng.standard_normal(H[l + 1].net.n_params)
        xf = rng.standard_normal(H[l].net.n_params)
        assert np.array_equal(H2[l].P(xc), H[l].P(xc))
        assert np.array_equal(H2[l].R(xf), H[l].R(xf))
        assert np.array_equal(H2[l].Pi(xf), H[l].Pi(xf))
    assert H2[0].objective is obj and H2[2].objective.counter.scale == \
        H[2].objective.counter.scale


def test_bad_input(tmp_path):
    net = ResNet(2, 3, 4, 2)
    theta = net.init(0)
    with pytest.raises(ValueError, match=r"theta must have shape \(65,\)"):
        save_network(tmp_path / "a.npz", net, theta[:-1])
    bad = theta.copy()
    bad[0] = np.nan
    with pytest.raises(ValueError, match="theta contains NaN or inf"):
        save_network(tmp_path / "a.npz", net, bad)
    with pytest.raises(TypeError, match="cannot save a dict"):
        save_network(tmp_path / "a.npz", {"net": 1}, theta)
    with pytest.raises(TypeError, match="metadata must be a dict"):
        save_network(tmp_path / "a.npz", net, theta, metadata=[1])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_network(tmp_path / "missing" / "a.npz", net, theta)
    other = depth_hierarchy(ResNet(2, 3, 8, 2), 2)
    with pytest.raises(ValueError, match="levels\\[0\\].net must be the saved network"):
        save_network(tmp_path / "a.npz", net, theta, hierarchy=other)
    with pytest.raises(TypeError, match="hierarchy must be a Hierarchy"):
        save_network(tmp_path / "a.npz", net, theta, hierarchy=[1, 2])
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="is not an mgnn archive"):
        load_network(tmp_path / "junk.npz")
    np.savez(tmp_path / "plain.npz", theta=theta)
    with pytest.raises(ValueError, match="no meta.json member"):
        load_network(tmp_path / "plain.npz")
    write_archive(tmp_path / "other.npz", {"format": "something"}, {"theta": theta})
    with pytest.raises(ValueError, match="is not a saved mgnn network"):
        load_network(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError):
        load_network(tmp_path / "nothing.npz")


@settings(max_examples=30)
@given(tree=st.recursive(
    st.none() | st.booleans() | st.integers(-2**80, 2**80) | st.text(max_size=5)
    | st.floats(allow_nan=False)
    | st.builds(lambda n, s: np.random.default_rng(s).standard_normal(n),
                st.integers(0, 4), st.integers(0, 9)),
    lambda kids: st.lists(kids, max_size=3) | st.tuples(kids, kids)
    | st.dictionaries(st.text("abcxyz", min_size=1, max_size=3), kids, max_size=3),
    max_leaves=10))
def test_archive_round_trips_any_plain_tree(tmp_path_factory, tree):
    path = tmp_path_factory.mktemp("a") / "t.npz"
    write_archive(path, {"k": 1}, {"root": tree})
    meta, back = read_archive(path)

    def same(a, b):
        if isinstance(a, np.ndarray):
            return isinstance(b, np.ndarray) and np.array_equal(a, b) and a.dtype == b.dtype
        if isinstance(a, dict):
            return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, (list, tuple)):
            return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
        return type(a) is type(b) and a == b

    assert meta == {"k": 1} and same(tree, back["root"])


def test_archive_rejects_what_it_cannot_store(tmp_path):
    with pytest.raises(TypeError, match="state/f: cannot store a builtin_function_or_method"):
        write_archive(tmp_path / "x.npz", {}, {"state": {"f": len}})
    with pytest.raises(TypeError, match="dict keys must be strings"):
        write_archive(tmp_path / "x.npz", {}, {"state": {1: 2}})
    with pytest.raises(TypeError, match="object arrays cannot be stored"):
        write_archive(tmp_path / "x.npz", {}, {"a": np.array([None])})
    assert not list(tmp_path.iterdir())  # nothing half-written
