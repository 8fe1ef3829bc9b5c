"""Decompositions of theta and of the data: coverage, overlap, layout, bad input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgnn.dd import Decomposition, by_blocks, by_data, by_layers, by_neurons, by_tensors
from mgnn.mgrit import LayerParallelObjective
from mgnn.nets import ConvResNet, ResNet
from mgnn.objective import Objective
from mgnn.parallel import Comm, block_offsets

nets = st.builds(lambda n_in, w, N, m: ResNet(n_in, w, N, m),
                 st.integers(1, 3), st.integers(1, 6), st.integers(1, 7), st.integers(1, 3))


def _coverage(d):
    count = np.zeros(d.size, dtype=int)
    for s in d.subdomains:
        count[s] += 1
    return count


@given(net=nets, S=st.integers(1, 8), seed=st.integers(0, 10))
def test_every_parameter_decomposition_covers_theta_exactly_once(net, S, seed):
    builders = [(by_layers, net.depth, {}), (by_neurons, net.width, {}),
                (by_tensors, 2 * net.depth + 4, {"rng": seed})]
    for build, limit, kw in builders:
        if S > limit:
            with pytest.raises(ValueError, match="n_subdomains must be <="):
                build(net, S, **kw)
            continue
        d = build(net, S, **kw)
        assert d.kind == "parameters" and d.size == net.n_params and d.n_subdomains == S
        assert np.array_equal(_coverage(d), np.ones(net.n_params, dtype=int))
        assert d.weights is None and not d.overlap
        assert all(np.all(np.diff(s) > 0) for s in d.subdomains)  # sorted, unique


@given(net=nets, S=st.integers(2, 5), overlap=st.integers(1, 3))
def test_layer_overlap_is_the_stated_number_of_layers(net, S, overlap):
    if S > net.depth:
        return
    d = by_layers(net, S, overlap=overlap)
    count = _coverage(d)
    assert count.min() == 1
    L = block_offsets(net.depth, S)
    for n in range(net.depth):  # layer n is owned by every block within `overlap` layers
        owners = sum(1 for s in range(S) if L[s] - overlap <= n < L[s + 1] + overlap)
        assert np.all(count[net.layer_slice(n)] == owners)
    assert np.all(count[:net.n_open] == 1) and np.all(count[-net.n_close:] == 1)
    for s, w in zip(d.subdomains, d.weights, strict=True):  # partition of unity
        assert np.allclose(w, 1.0 / count[s])
    total = np.zeros(net.n_params)
    for s, w in zip(d.subdomains, d.weights, strict=True):
        total[s] += w
    assert np.allclose(total, 1.0)


@given(n=st.integers(1, 60), S=st.integers(1, 8), overlap=st.floats(0.0, 0.9))
def test_data_decomposition_covers_every_sample_with_the_stated_overlap(n, S, overlap):
    if S > n:
        with pytest.raises(ValueError, match="number of samples"):
            by_data(n, S)
        return
    if S == 1:
        overlap = 0.0
    d = by_data(n, S, overlap=overlap)
    count = _coverage(d)
    assert count.min() >= 1
    off = block_offsets(n, S)
    for s, idx in enumerate(d.subdomains):  # the block plus round(overlap * size) each side
        a, b = off[s], off[s + 1]
        k = int(round(overlap * (b - a)))
        assert idx.tolist() == list(range(max(a - k, 0), min(b + k, n)))
    assert np.isclose(d.data_weights.sum(), 1.0)
    assert np.allclose(d.data_weights, d.sizes / d.sizes.sum())
    if not d.overlap:
        assert count.max() == 1


def test_layer_blocks_are_the_layer_parallel_slices():
    """Subdomain r of by_layers(net, P) is the theta slice rank r of P owns in
    LayerParallelObjective (checked against the class itself, ranks faked)."""
    rng = np.random.default_rng(0)
    net = ResNet(2, 3, 7, 2)
    X, y = rng.standard_normal((5, 2)), np.array([0, 1, 0, 1, 1])
    for P in (1, 2, 3):
        d = by_layers(net, P)
        for r in range(P):

            class Rank(Comm):
                rank, size = r, P

            obj = LayerParallelObjective(net, X, y, comm=Rank())
            sl = obj.theta_slice
            assert d.subdomains[r].tolist() == list(range(sl.start, sl.stop))
    d.check_objective(Objective(net, X, y))


def test_neurons_own_their_rows_and_closing_columns():
    net = ResNet(2, 4, 3, 2)
    d = by_neurons(net, 4)
    for j, idx in enumerate(d.subdomains):
        mark = np.zeros(net.n_params)
        mark[idx] = 1.0
        p = net.unpack(mark)
        assert np.all(p.W_open[j] == 1) and p.b_open[j] == 1
        assert np.all(p.W[:, j, :] == 1) and np.all(p.b[:, j] == 1)
        assert np.all(p.W_close[:, j] == 1)
        others = np.delete(np.arange(4), j)
        assert np.all(p.W[:, others, :] == 0) and np.all(p.W_close[:, others] == 0)
        assert np.all(p.b_close == (1 if j == 3 else 0))


conv_nets = st.builds(lambda hw, ci, c, N, m, pool: ConvResNet(hw + (ci,), c, N, m,
                                                                 pooling=pool),
                      st.sampled_from([(2, 2), (3, 2)]), st.integers(1, 2), st.integers(1, 4),
                      st.integers(1, 3), st.integers(1, 2),
                      st.sampled_from(["average", "flatten"]))


@settings(max_examples=25, deadline=None)
@given(net=conv_nets, S=st.integers(1, 5), seed=st.integers(0, 10))
def test_conv_decompositions_cover_theta_exactly_once(net, S, seed):
    for build, limit, kw in [(by_neurons, net.channels, {}),
                             (by_tensors, 2 * net.depth + 4, {"rng": seed})]:
        if S > limit:
            with pytest.raises(ValueError, match="n_subdomains must be <="):
                build(net, S, **kw)
            continue
        d = build(net, S, **kw)
        assert np.array_equal(_coverage(d), np.ones(net.n_params, dtype=int))


@pytest.mark.parametrize("pooling", ["average", "flatten"])
def test_channels_own_their_kernels_biases_and_closing_columns(pooling):
    net = ConvResNet((2, 3, 2), 3, 3, 2, pooling=pooling)
    d = by_neurons(net, 3)
    assert d.labels == ("channels 0..0", "channels 1..1", "channels 2..2, closing bias")
    for j, idx in enumerate(d.subdomains):
        mark = np.zeros(net.n_params)
        mark[idx] = 1.0
        p = net.unpack(mark)
        others = np.delete(np.arange(3), j)
        assert np.all(p.K_open[..., j] == 1) and np.all(p.K_open[..., others] == 0)
        assert np.all(p.K[..., j] == 1) and np.all(p.K[..., others] == 0)
        assert p.b_open[j] == 1 and np.all(p.b[:, j] == 1) and np.all(p.b[:, others] == 0)
        cols = np.arange(net.n_features) % 3 == j  # average: c features; flatten: pixel-major
        assert np.all(p.W_close[:, cols] == 1) and np.all(p.W_close[:, ~cols] == 0)
        assert np.all(p.b_close == (1 if j == 2 else 0))
    wide = ConvResNet((2, 3, 2), 6, 2, 2, pooling=pooling)
    d = by_neurons(wide, 2, theta=wide.init(0))  # matched channel pairs kept together
    assert "channels, matched pairs" in d.description
    assert np.array_equal(_coverage(d), np.ones(wide.n_params, dtype=int))
    names = by_tensors(net, 2 * net.depth + 4, rng=0).labels
    assert sorted(names) == sorted(["K_open", "b_open", "W_close", "b_close"]
                                   + [f"{t}_{n}" for n in range(3) for t in "Kb"])


def test_matched_neurons_share_a_subdomain():
    net = ResNet(2, 6, 3, 2, activation="relu")
    theta = net.init(1)
    p = net.unpack(theta)
    # neurons 0 and 5 positively collinear in every state-writing layer: they must pair
    p.W_open[5] = 2.0 * p.W_open[0]
    p.b_open[5] = 2.0 * p.b_open[0]
    p.W[:, 5, :] = 2.0 * p.W[:, 0, :]
    p.b[:, 5] = 2.0 * p.b[:, 0]
    d = by_neurons(net, 3, theta=theta)
    owner = {}
    for s in range(3):
        mark = np.zeros(net.n_params)
        mark[d.subdomains[s]] = 1.0
        rows = np.flatnonzero(net.unpack(mark).b_open)
        for j in rows:
            owner[int(j)] = s
    assert owner[0] == owner[5]
    assert np.array_equal(_coverage(d), np.ones(net.n_params, dtype=int))


def test_random_tensors_depend_on_the_seed_only():
    net = ResNet(2, 4, 5, 3)
    a, b, c = by_tensors(net, 3, 7), by_tensors(net, 3, 7), by_tensors(net, 3, 8)
    assert all(np.array_equal(x, y) for x, y in zip(a.subdomains, b.subdomains, strict=True))
    assert any(not np.array_equal(x, y) for x, y in zip(a.subdomains, c.subdomains,
                                                          strict=True))
    assert a.sizes.max() - a.sizes.min() <= net.width * net.width  # balanced by greed
    with pytest.raises(ValueError, match="rng is required"):
        by_tensors(net, 3, None)


def test_spatial_data_split_orders_by_the_coordinate():
    X = np.array([[0.9, 0.0], [0.1, 5.0], [0.5, 1.0], [0.3, 2.0]])
    d = by_data(4, 2, X=X)
    assert [s.tolist() for s in d.subdomains] == [[1, 3], [0, 2]]
    d = by_data(4, 2, X=X, axis=1)
    assert [s.tolist() for s in d.subdomains] == [[0, 2], [1, 3]]
    with pytest.raises(ValueError, match="axis must be < 2"):
        by_data(4, 2, X=X, axis=2)


def test_combine_writes_back_and_averages():
    d = Decomposition([np.array([0, 1, 2]), np.array([2, 3])], 4, overlap=True)
    x = np.zeros(4)
    out = d.combine(x, [np.array([1.0, 1.0, 1.0]), np.array([3.0, 3.0])])
    assert out.tolist() == [1.0, 1.0, 2.0, 3.0]
    out = d.combine(x, [np.array([1.0, 1.0, 1.0]), None])  # the other owner stays at x
    assert out.tolist() == [1.0, 1.0, 0.5, 0.0]
    dd = by_data(4, 2)
    out = dd.combine(np.zeros(2), [np.array([2.0, 0.0]), np.array([0.0, 4.0])])
    assert out.tolist() == [1.0, 2.0]


def test_bad_decompositions_name_the_argument():
    with pytest.raises(ValueError, match=r"miss index 4 .* every index must be owned"):
        Decomposition([np.arange(2), np.arange(2, 4)], 5)
    with pytest.raises(ValueError, match="count index 1 twice"):
        Decomposition([np.arange(2), np.arange(1, 4)], 4)
    with pytest.raises(ValueError, match=r"subdomains\[1\] lists index 2 twice"):
        Decomposition([np.arange(2), np.array([2, 2, 3])], 4)
    with pytest.raises(ValueError, match=r"subdomains\[0\] is empty"):
        Decomposition([np.arange(0), np.arange(4)], 4)
    with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
        Decomposition([np.arange(5)], 4)
    with pytest.raises(TypeError, match="integer indices"):
        Decomposition([np.array([0.0, 1.0])], 2)
    with pytest.raises(ValueError, match="unknown kind 'weights'"):
        Decomposition([np.arange(2)], 2, kind="weights")
    with pytest.raises(ValueError, match="labels must have 1 entries"):
        Decomposition([np.arange(2)], 2, labels=["a", "b"])
    net = ResNet(2, 3, 4, 2)
    with pytest.raises(ValueError, match=r"n_subdomains must be <= 4 \(the number of "
                                         "residual layers\\), got 5"):
        by_layers(net, 5)
    with pytest.raises(ValueError, match=r"<= 3 \(the number of state neurons\)"):
        by_neurons(net, 4)
    with pytest.raises(ValueError, match="overlap has no effect with one subdomain"):
        by_layers(net, 1, overlap=1)
    with pytest.raises(ValueError, match=r"overlap must be < 1.0"):
        by_data(10, 2, overlap=1.0)
    with pytest.raises(TypeError, match="n_subdomains must be an integer"):
        by_blocks(10, 2.0)
    X, y = np.zeros((6, 2)), np.zeros(6, dtype=int)
    obj = Objective(net, X, y)
    with pytest.raises(ValueError, match="decomposes 7 samples but the objective has 6"):
        by_data(7, 2).check_objective(obj)
    with pytest.raises(ValueError, match="decomposes 10 parameters but the objective has"):
        by_blocks(10, 2).check_objective(obj)
