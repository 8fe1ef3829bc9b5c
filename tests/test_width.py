"""Width hierarchies: neuron matching, transfer identities, exactness on collinear pairs."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgnn.data import smooth_regression
from mgnn.multilevel import (
    ComposedTransfer,
    DepthTransfer,
    WidthTransfer,
    match_neurons,
    state_descriptors,
    weight_norm_shares,
    width_hierarchy,
)
from mgnn.nets import ResNet
from mgnn.objective import Objective

cases = st.tuples(
    st.integers(2, 9),  # width
    st.integers(1, 3),  # depth
    st.sampled_from(["relu", "tanh", "identity"]),
    st.sampled_from(["cosine", "gaussian"]),
    st.integers(0, 2**32 - 1),
)


def random_theta(net, rng):
    theta = net.init(rng, "glorot")
    p = net.unpack(theta)
    p.b_open[...] = rng.standard_normal(net.width)
    p.b[...] = 0.3 * rng.standard_normal(p.b.shape)
    p.b_close[...] = rng.standard_normal(net.n_out)
    return theta


@settings(max_examples=40)
@given(cases)
def test_transfer_identities(case):
    """R_s P_s = I on the state, Pi P = I on theta, R = P^T (adjoint identity)."""
    width, depth, act, sim, seed = case
    rng = np.random.default_rng(seed)
    net = ResNet(2, width, depth, 3, activation=act)
    H = width_hierarchy(net, random_theta(net, rng), 2, similarity=sim)
    T = H[0].transfer
    assert T.coarse.width == (width + 1) // 2
    y = rng.standard_normal((T.coarse.width, 3))
    np.testing.assert_allclose(T._sum(T._split(y, 0), 0), y, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(T._avg(T._copy(y, 0), 0), y, rtol=1e-14, atol=1e-14)
    xc = rng.standard_normal(T.n_coarse)
    gf = rng.standard_normal(T.n_fine)
    np.testing.assert_allclose(T.project(T.prolong(xc)), xc, rtol=1e-13, atol=1e-14)
    assert np.dot(T.prolong(xc), gf) == pytest.approx(np.dot(xc, T.restrict(gf)), rel=1e-12,
                                                      abs=1e-12)
    P, R, Pi = T.as_linear_operators()
    np.testing.assert_allclose(P.T @ gf, T.restrict(gf), rtol=1e-14)


def collinear_pair_net(act, rng, w_c=5, n_single=2, depth=3):
    """A fine network whose state neurons come in positively collinear pairs.

    Coarse neuron c owns fine neurons at random positions; neuron j of group c
    gets the incoming rows (opening and every residual layer) of a prototype times
    alpha_j > 0, outgoing (column) weights arbitrary per neuron but, for each
    residual layer, with the pair's columns multiplied by alpha_j summing to the
    prototype's column. Returns the net, theta, planted groups and shares.
    """
    n_pairs = w_c - n_single
    w = 2 * n_pairs + n_single
    net = ResNet(3, w, depth, 2, T=1.0, activation=act, task="regression")
    perm = rng.permutation(w)
    groups = [perm[2 * c: 2 * c + 2] for c in range(n_pairs)] + \
        [perm[2 * n_pairs + k: 2 * n_pairs + k + 1] for k in range(n_single)]
    alpha = rng.uniform(0.2, 2.0, w)
    theta = np.zeros(net.n_params)
    p = net.unpack(theta)
    Wo, bo = rng.standard_normal((w_c, 3)), rng.standard_normal(w_c)
    Wc = rng.standard_normal((depth, w_c, w_c)) / np.sqrt(w_c)
    bc = 0.5 * rng.standard_normal((depth, w_c))
    Wcl = rng.standard_normal((2, w))  # outgoing weights of the closing layer: arbitrary
    shares = np.empty(w)
    for g in groups:
        shares[g] = alpha[g] / alpha[g].sum()
    # outgoing (column) factors, arbitrary per neuron but share-weighted to 1 per group
    col = rng.uniform(0.1, 1.0, w)
    for g in groups:
        col[g] /= col[g] @ shares[g]
    for c, g in enumerate(groups):
        for j in g:
            p.W_open[j] = alpha[j] * Wo[c]
            p.b_open[j] = alpha[j] * bo[c]
            p.b[:, j] = alpha[j] * bc[:, c]
            for k, gk in enumerate(groups):
                p.W[:, j, gk] = alpha[j] * Wc[:, c, k][:, None] * col[gk][None, :]
    p.W_close[...] = Wcl
    p.b_close[...] = rng.standard_normal(2)
    return net, theta, groups, shares


@pytest.mark.parametrize("act", ["relu", "identity"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_collinear_pairs_are_reproduced_exactly(act, seed):
    rng = np.random.default_rng(seed)
    net, theta, groups, shares = collinear_pair_net(act, rng)
    H = width_hierarchy(net, theta, 2, threshold=1 - 1e-12)
    T = H[0].transfer
    m = H.matchings[0]
    found = {tuple(sorted(g.tolist())) for g in m.groups()}
    assert found == {tuple(sorted(g.tolist())) for g in groups}
    np.testing.assert_allclose(T.shares, shares, rtol=1e-12)
    X = rng.uniform(-2, 2, (200, 3))
    Yf = net.forward(theta, X)
    Yc = T.coarse.forward(T.project(theta), X)
    np.testing.assert_allclose(Yc, Yf, rtol=1e-12, atol=1e-12)


def test_collinear_pairs_tanh_is_not_exact():
    """The exactness rests on positive homogeneity: with tanh the coarse net differs."""
    rng = np.random.default_rng(0)
    net, theta, _, _ = collinear_pair_net("tanh", rng)
    T = width_hierarchy(net, theta, 2)[0].transfer
    X = rng.uniform(-2, 2, (50, 3))
    assert np.abs(T.coarse.forward(T.project(theta), X) - net.forward(theta, X)).max() > 1e-3


@settings(max_examples=25)
@given(st.integers(2, 8), st.integers(1, 3), st.integers(0, 2**32 - 1))
def test_relu_coarse_objective_is_galerkin(width, depth, seed):
    """ReLU, no regulariser: f_c(x_c) = f(P x_c) and grad f_c(x_c) = R grad f(P x_c)."""
    rng = np.random.default_rng(seed)
    d = smooth_regression(30, 5, seed=seed % 1000)
    net = ResNet(2, width, depth, 1, activation="relu", task="regression")
    obj = Objective(net, d.X_train, d.Y_train)
    H = width_hierarchy(obj, random_theta(net, rng), 2)
    T, obj_c = H[0].transfer, H[1].objective
    xc = random_theta(T.coarse, rng)
    fc, gc = obj_c.value_and_grad(xc)
    f, g = obj.value_and_grad(T.prolong(xc))
    assert fc == pytest.approx(f, rel=1e-12)
    np.testing.assert_allclose(gc, T.restrict(g), rtol=1e-9, atol=1e-11)


@settings(max_examples=30)
@given(cases)
def test_matching_is_permutation_invariant(case):
    width, depth, act, sim, seed = case
    rng = np.random.default_rng(seed)
    net = ResNet(2, width, depth, 3, activation=act)
    theta = random_theta(net, rng)
    perm = rng.permutation(width)
    theta_p = theta.copy()
    p, q = net.unpack(theta), net.unpack(theta_p)
    q.W_open[...] = p.W_open[perm]
    q.b_open[...] = p.b_open[perm]
    q.W[...] = p.W[:, perm][:, :, perm]
    q.b[...] = p.b[:, perm]
    q.W_close[...] = p.W_close[:, perm]
    X = rng.standard_normal((7, 2))
    np.testing.assert_allclose(net.forward(theta_p, X), net.forward(theta, X), rtol=1e-12,
                               atol=1e-14)  # permuted sums round differently near zero
    m = match_neurons(state_descriptors(net, theta), sim)
    mp = match_neurons(state_descriptors(net, theta_p), sim)
    groups = {tuple(sorted(g.tolist())) for g in m.groups()}
    groups_p = {tuple(sorted(perm[g].tolist())) for g in mp.groups()}
    assert groups_p == groups
    # and the coarse networks compute the same function
    H, Hp = width_hierarchy(net, theta, 2, similarity=sim), width_hierarchy(
        net, theta_p, 2, similarity=sim)
    Tc, Tcp = H[0].transfer, Hp[0].transfer
    np.testing.assert_allclose(Tcp.coarse.forward(Tcp.project(theta_p), X),
                               Tc.coarse.forward(Tc.project(theta), X), rtol=1e-10, atol=1e-12)


def test_matching_rules():
    rng = np.random.default_rng(3)
    D = rng.standard_normal((21, 6))
    m = match_neurons(D)
    assert m.coarse_width == 11 and m.singles.size == 1
    assert m.rounds >= 1
    m2 = match_neurons(D.copy())
    np.testing.assert_array_equal(m.coarse_of, m2.coarse_of)  # deterministic
    mt = match_neurons(D, threshold=0.5)
    assert np.all(mt.pair_similarity >= 0.5)
    assert mt.coarse_width > m.coarse_width
    mp = match_neurons(D, max_pairs=3)
    assert mp.pairs.shape == (3, 2)
    mr = match_neurons(D, max_rounds=1)
    assert mr.rounds == 1
    mg = match_neurons(D, "gaussian", bandwidth=2.0)
    assert mg.coarse_width == 11
    # every pair of a round is a mutual best match among the neurons then unmatched
    S = D / np.linalg.norm(D, axis=1, keepdims=True)
    S = S @ S.T
    np.fill_diagonal(S, -np.inf)
    i, j = m.pairs[np.argmax(m.pair_similarity)]
    assert S[i, j] == pytest.approx(S.max())
    # coarse numbering follows the smallest fine index of each group
    leads = [g.min() for g in m.groups()]
    assert leads == sorted(leads)
    shares = weight_norm_shares(D, m.coarse_of)
    np.testing.assert_allclose(np.bincount(m.coarse_of, weights=shares), 1.0)
    assert "21 -> 11 neurons" in repr(m)


def test_hierarchy_with_objective_and_combined_coarsening():
    d = smooth_regression(40, 10)
    net = ResNet(2, 16, 8, 1, activation="relu", task="regression")
    obj = Objective(net, d.X_train, d.Y_train, tikhonov=1e-4)
    theta = random_theta(net, np.random.default_rng(0))
    H = width_hierarchy(obj, theta, 3)
    assert [lv.net.width for lv in H.levels] == [16, 8, 4]
    assert H[0].objective is obj and H[2].objective.net is H[2].net
    assert H[1].objective.counter.scale == pytest.approx(H[1].net.flops(1) / net.flops(1))
    Hb = width_hierarchy(obj, theta, 3, coarsen=["both", "depth"])
    assert [(lv.net.depth, lv.net.width) for lv in Hb.levels] == [(8, 16), (4, 8), (2, 8)]
    assert isinstance(Hb[0].transfer, ComposedTransfer)
    assert isinstance(Hb[1].transfer, DepthTransfer)
    T = Hb[0].transfer
    xc = np.random.default_rng(1).standard_normal(T.n_coarse)
    np.testing.assert_allclose(T.project(T.prolong(xc)), xc, rtol=1e-13, atol=1e-14)
    g = np.random.default_rng(2).standard_normal(T.n_fine)
    assert np.dot(T.prolong(xc), g) == pytest.approx(np.dot(xc, T.restrict(g)), rel=1e-12)
    # re-matching from other parameters: same level-0 objective, new pairing
    H2 = H.rematch(random_theta(net, np.random.default_rng(5)))
    assert H2[0].objective is obj
    assert not np.array_equal(H2.matchings[0].coarse_of, H.matchings[0].coarse_of)
    assert "width coarsening" in repr(H)


def test_bad_input():
    net = ResNet(2, 4, 2, 1)
    theta = net.init(0)
    with pytest.raises(ValueError, match="width 1"):
        width_hierarchy(net, theta, 4)
    with pytest.raises(ValueError, match="coarsen"):
        width_hierarchy(net, theta, 2, coarsen="height")
    with pytest.raises(ValueError, match="theta"):
        width_hierarchy(net, theta[:-1], 2)
    with pytest.raises(ValueError, match="no neuron pair"):
        width_hierarchy(net, theta, 2, threshold=1.5)
    with pytest.raises(ValueError, match="depth divisible"):
        width_hierarchy(ResNet(2, 4, 3, 1), ResNet(2, 4, 3, 1).init(0), 2, coarsen="depth")
    with pytest.raises(ValueError, match="shares must sum"):
        WidthTransfer(net, net.with_width(2), [0, 0, 1, 1], [0.5, 0.4, 0.5, 0.5])
    with pytest.raises(ValueError, match="every coarse neuron"):
        WidthTransfer(net, net.with_width(3), [0, 0, 1, 1], [0.5, 0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="differ only in width"):
        WidthTransfer(net, ResNet(2, 2, 3, 1), [0, 0, 1, 1], [0.5] * 4)
    with pytest.raises(ValueError, match="similarity"):
        match_neurons(np.eye(3), similarity="euclid")
    with pytest.raises(ValueError, match="bandwidth"):
        match_neurons(np.eye(3), bandwidth=1.0)


def test_nested_iteration_runs_on_a_width_hierarchy():
    from mgnn.multilevel import nested_iteration

    d = smooth_regression(60, 20)
    net = ResNet(2, 8, 2, 1, activation="relu", task="regression")
    obj = Objective(net, d.X_train, d.Y_train)
    theta = random_theta(net, np.random.default_rng(0))
    H = width_hierarchy(obj, theta, 3)
    res = nested_iteration(H, [10, 10, 10], "adam", {"lr": 0.01},
                           theta0=H[1].Pi(H[0].Pi(theta)),
                           validation=(d.X_val, d.Y_val))
    assert res.x.shape == theta.shape and res.nit == 30
    assert "val_max_error" in res.history
