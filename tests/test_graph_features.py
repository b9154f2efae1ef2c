"""Extra structural features of the decoder input (graph_features.py).

Hand-made graphs (no ../shared needed) plus the conformance fixture ``decoder_io.npz`` (skips without it).
"""
import itertools

import numpy as np
import pytest
import torch

from matchms_diffms.model.config import preset
from matchms_diffms.model.graph_features import (extra_features, network_input, valency_feature,
                                                 weight_feature)

CFG = preset("tiny")               # atom types C O P N S Cl F H, max_n_nodes 50
TYPE = {a: i for i, a in enumerate(CFG.atom_types)}
SINGLE, DOUBLE, TRIPLE, AROMATIC = 1, 2, 3, 4


# ----------------------------------------------------------------------------- graph builders
def make_graph(atoms, bonds, n_pad=None, diag_class0=True):
    """One graph as a batch of 1: X (1, n, 8), E (1, n, n, 5), node_mask (1, n).

    bonds: list of (i, j, class). Padded slots (n_pad > len(atoms)) are all-zero.
    """
    n = len(atoms)
    n_pad = n_pad or n
    X = torch.zeros(1, n_pad, CFG.n_atom_types)
    for i, a in enumerate(atoms):
        X[0, i, TYPE[a]] = 1
    cls = torch.zeros(n_pad, n_pad, dtype=torch.long)
    for i, j, c in bonds:
        cls[i, j] = cls[j, i] = c
    E = torch.nn.functional.one_hot(cls, 5).float().unsqueeze(0)
    mask = torch.zeros(1, n_pad, dtype=torch.bool)
    mask[0, :n] = True
    E = E * (mask[:, :, None, None] & mask[:, None, :, None]).float()
    if not diag_class0:
        E[0, torch.arange(n), torch.arange(n)] = 0
    return X, E, mask


def ring(n, cls=SINGLE, start=0):
    return [(start + i, start + (i + 1) % n, cls) for i in range(n)]


def feats(atoms, bonds, n_pad=None, **kw):
    X, E, m = make_graph(atoms, bonds, n_pad)
    eX, ey = extra_features(X, E, m, CFG, **kw)
    return eX[0], ey[0]


# extra_X columns / extra_y columns
XK3, XK4, XK5, NONLCC, EV1, EV2, CHARGE, VALENCY = range(8)
YN, YK3, YK4, YK5, YK6, NCC = range(6)
YEIG = slice(6, 11)
YW = 11


# ----------------------------------------------------------------------------- cycles
def test_benzene_six_cycle():
    eX, ey = feats(["C"] * 6, ring(6, AROMATIC))
    assert ey[YK6].item() == pytest.approx(0.1)
    assert ey[YK3].item() == ey[YK4].item() == ey[YK5].item() == 0
    assert torch.all(eX[:, XK3:XK5 + 1] == 0)
    # aromatic bonds count 4 (class index): valency 8, "charge" = type index 0 - 8
    assert torch.all(eX[:, VALENCY] == 8)
    assert torch.all(eX[:, CHARGE] == -8)
    assert ey[NCC].item() == 1
    assert ey[YN].item() == pytest.approx(6 / 50)


def test_naphthalene_two_six_cycles():
    bonds = ring(6, AROMATIC) + [(1, 6, AROMATIC), (6, 7, AROMATIC), (7, 8, AROMATIC),
                                 (8, 9, AROMATIC), (9, 2, AROMATIC)]
    _, ey = feats(["C"] * 10, bonds)
    assert ey[YK6].item() == pytest.approx(0.2)
    assert ey[YK3].item() == ey[YK4].item() == ey[YK5].item() == 0


def test_triangle():
    eX, ey = feats(["C", "C", "O"], ring(3))
    assert torch.allclose(eX[:, XK3], torch.full((3,), 0.1))
    assert torch.all(eX[:, XK4:XK5 + 1] == 0)
    assert ey[YK3].item() == pytest.approx(0.1)
    assert ey[YK4].item() == ey[YK5].item() == ey[YK6].item() == 0


def test_house_graph_node_cycles():
    # square 0-1-2-3 plus roof node 4 on edge (0, 1): one triangle, one square, one pentagon
    bonds = ring(4) + [(0, 4, SINGLE), (1, 4, SINGLE)]
    eX, ey = feats(["C"] * 5, bonds)
    np.testing.assert_allclose(eX[:, XK3].numpy(), [0.1, 0.1, 0, 0, 0.1], atol=1e-7)
    np.testing.assert_allclose(eX[:, XK4].numpy(), [0.1, 0.1, 0.1, 0.1, 0], atol=1e-7)
    np.testing.assert_allclose(eX[:, XK5].numpy(), [0.1] * 5, atol=1e-7)
    np.testing.assert_allclose(ey[YK3:YK6 + 1].numpy(), [0.1, 0.1, 0.1, 0], atol=1e-7)


def test_k4_has_no_five_cycles():
    # distinguishes the correct 5-cycle formula from simpler variants
    bonds = [(i, j, SINGLE) for i, j in itertools.combinations(range(4), 2)]
    eX, ey = feats(["C"] * 4, bonds)
    np.testing.assert_allclose(eX[:, XK3].numpy(), [0.3] * 4, atol=1e-7)
    np.testing.assert_allclose(eX[:, XK4].numpy(), [0.3] * 4, atol=1e-7)
    np.testing.assert_allclose(eX[:, XK5].numpy(), [0] * 4, atol=1e-7)
    np.testing.assert_allclose(ey[YK3:YK6 + 1].numpy(), [0.4, 0.3, 0, 0], atol=1e-7)


def _count_cycles(adj, k):
    """Brute force: number of simple k-cycles through each node, and in total."""
    n = len(adj)
    per_node = np.zeros(n)
    total = 0
    for nodes in itertools.combinations(range(n), k):
        first, rest = nodes[0], nodes[1:]
        for perm in itertools.permutations(rest):
            if perm[0] > perm[-1]:           # each cycle once (fix start, one direction)
                continue
            path = (first,) + perm
            if all(adj[path[i], path[(i + 1) % k]] for i in range(k)):
                total += 1
                per_node[list(nodes)] += 1
    return per_node, total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cycles_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 8
    adj = np.triu(rng.random((n, n)) < 0.35, 1)
    adj = adj | adj.T
    bonds = [(i, j, SINGLE) for i, j in zip(*np.nonzero(np.triu(adj, 1)))]
    eX, ey = feats(["C"] * n, bonds)
    for k, col in [(3, XK3), (4, XK4), (5, XK5)]:
        per_node, _ = _count_cycles(adj, k)
        np.testing.assert_allclose(eX[:, col].numpy(), np.minimum(per_node / 10, 1), atol=1e-6)
    for k, col in [(3, YK3), (4, YK4), (5, YK5), (6, YK6)]:
        _, total = _count_cycles(adj, k)
        assert ey[col].item() == pytest.approx(min(total / 10, 1), abs=1e-6), k


# ----------------------------------------------------------------------------- molecular features
def test_valency_and_charge_quirks():
    # C(=O)-N with C-N aromatic, diagonal class 0 like a noisy graph
    eX, _ = feats(["C", "O", "N"], [(0, 1, DOUBLE), (0, 2, AROMATIC)])
    np.testing.assert_array_equal(eX[:, VALENCY].numpy(), [6, 2, 4])
    # "charge" = atom-type index (C 0, O 1, N 3) - valency
    np.testing.assert_array_equal(eX[:, CHARGE].numpy(), [-6, -1, -1])


def test_valency_all_zero_diagonal():
    X, E, m = make_graph(["C", "C"], [(0, 1, TRIPLE)], diag_class0=False)
    np.testing.assert_array_equal(valency_feature(E)[0].numpy(), [3, 3])


def test_weight_unpadded_and_padding_quirk():
    _, ey = feats(["C", "O"], [(0, 1, DOUBLE)])
    assert ey[YW].item() == pytest.approx(28 / 35)          # 0.8
    _, ey = feats(["C", "O"], [(0, 1, DOUBLE)], n_pad=3, reference_padding=True)
    assert ey[YW].item() == pytest.approx(40 / 35)          # padded slot counts as C
    _, ey = feats(["C", "O"], [(0, 1, DOUBLE)], n_pad=3, reference_padding=False)
    assert ey[YW].item() == pytest.approx(28 / 35)
    X, _, m = make_graph(["Cl", "F"], [], n_pad=4)
    assert weight_feature(X, CFG, m).item() == pytest.approx(54 / 35)
    assert weight_feature(X, CFG).item() == pytest.approx(78 / 35)


# ----------------------------------------------------------------------------- spectrum
def test_eigenvalue_filler_small_unpadded_graph():
    # path C-C-O: Laplacian eigenvalues 0, 1, 3 -> /3
    eX, ey = feats(["C", "C", "O"], [(0, 1, SINGLE), (1, 2, SINGLE)])
    assert ey[NCC].item() == 1
    np.testing.assert_allclose(ey[YEIG].numpy(), [1 / 3, 1, 2, 2, 2], atol=1e-6)
    assert torch.all(eX[:, NONLCC] == 0)


def _p3_p2_isolated():
    # 8 nodes, 5 components: path of 3 (eig 0, 1, 3), path of 2 (0, 2), 3 isolated nodes
    return ["C"] * 8, [(0, 1, SINGLE), (1, 2, SINGLE), (3, 4, SINGLE)]


@pytest.mark.parametrize("n_pad, expected", [(None, 2.0), (11, 2.75), (18, 4.5)])
def test_eigenvalue_padding_quirk(n_pad, expected):
    atoms, bonds = _p3_p2_isolated()
    _, ey = feats(atoms, bonds, n_pad=n_pad, reference_padding=True)
    assert ey[NCC].item() == 5
    np.testing.assert_allclose(ey[YEIG].numpy(), [0.125, 0.25, 0.375, expected, expected], atol=1e-6)
    _, ey = feats(atoms, bonds, n_pad=n_pad, reference_padding=False)
    np.testing.assert_allclose(ey[YEIG].numpy(), [0.125, 0.25, 0.375, 2, 2], atol=1e-6)


def test_eigenvectors_of_path_up_to_sign():
    bonds = [(0, 1, SINGLE), (1, 2, SINGLE), (2, 3, SINGLE)]
    eX, ey = feats(["C"] * 4, bonds, n_pad=6)
    L = np.diag([1, 2, 2, 1.0]) - np.eye(4, k=1) - np.eye(4, k=-1)
    w, v = np.linalg.eigh(L)
    np.testing.assert_allclose(ey[YEIG].numpy()[:3], w[1:] / 4, atol=1e-6)
    for c in range(2):
        ours, ref = eX[:4, EV1 + c].numpy(), v[:, 1 + c]
        assert min(np.abs(ours - ref).max(), np.abs(ours + ref).max()) < 1e-5
    assert torch.all(eX[4:] == 0)                            # padded rows are zero


def test_nonlcc_noise_uses_generator():
    atoms, bonds = _p3_p2_isolated()
    out = [feats(atoms, bonds, n_pad=12, generator=torch.Generator().manual_seed(5))[0] for _ in range(2)]
    assert torch.equal(out[0], out[1])
    assert torch.all(out[0][8:, NONLCC] == 0)


def test_batch_independence_without_reference_padding():
    atoms, bonds = _p3_p2_isolated()
    alone = feats(atoms, bonds, reference_padding=False)
    padded = feats(atoms, bonds, n_pad=15, reference_padding=False)
    for a, b in zip(alone, padded):
        a_cmp = a if a.dim() == 1 else a[:, [XK3, XK4, XK5, CHARGE, VALENCY]]
        b_cmp = b if b.dim() == 1 else b[:8, [XK3, XK4, XK5, CHARGE, VALENCY]]
        torch.testing.assert_close(a_cmp, b_cmp, atol=1e-6, rtol=0)


def test_network_input_layout_custom_vocabulary():
    cfg = preset("tiny").replace(atom_types=["C", "O", "P", "N", "S", "Cl", "F", "H", "Br", "I"])
    X = torch.zeros(2, 3, 10)
    X[0, :, 0] = 1
    X[1, :2, 9] = 1                                            # two iodine atoms, one padded slot
    E = torch.zeros(2, 3, 3, 5)
    E[..., 0] = 1
    mask = torch.tensor([[True, True, True], [True, True, False]])
    E = E * (mask[:, :, None, None] & mask[:, None, :, None]).float()
    y = torch.randn(2, cfg.cond_dim)
    X_in, E_in, y_in = network_input(X, E, y, mask, torch.tensor([0.5, 0.25]), cfg, reference_padding=False)
    assert X_in.shape == (2, 3, cfg.input_dims["X"]) == (2, 3, 18)
    assert E_in.shape == (2, 3, 3, cfg.input_dims["E"])
    assert y_in.shape == (2, cfg.input_dims["y"])
    assert torch.equal(X_in[..., :10], X) and torch.equal(E_in, E) and torch.equal(y_in[:, :cfg.cond_dim], y)
    np.testing.assert_allclose(y_in[:, -1].numpy(), [0.5, 0.25])
    np.testing.assert_allclose(y_in[:, -2].numpy(), [36 / 127, 254 / 127], rtol=1e-6)   # weight / I
    np.testing.assert_array_equal(X_in[1, :, 10 + CHARGE].numpy(), [9, 9, 0])         # type index 9


# ----------------------------------------------------------------------------- conformance fixture
@pytest.fixture(scope="module")
def dec_io(conformance_dir):
    return dict(np.load(conformance_dir / "decoder_io.npz"))


def _maxdev(a, b):
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


@pytest.fixture(scope="module")
def fixture_features(dec_io):
    """Our extra features for every t of the fixture (padded batch of 10 graphs, n_max 40)."""
    X = torch.tensor(dec_io["X"]).float()
    mask = torch.tensor(dec_io["node_mask"])
    y = torch.tensor(dec_io["y_cond"])
    out = []
    for ti in range(len(dec_io["t_values"])):
        E_t = torch.tensor(dec_io["E_t"][ti]).float()
        t = torch.tensor(dec_io["t"][ti])
        X_in, E_in, y_in = network_input(X, E_t, y, mask, t, CFG, reference_padding=True)
        out.append((X_in[..., 8:].numpy(), y_in[:, 2048:].numpy(), X_in.numpy(), E_in.numpy(), y_in.numpy()))
    return out


def test_fixture_exact_features(dec_io, fixture_features):
    for ti, (eX, ey, *_) in enumerate(fixture_features):
        rX, ry = dec_io["extra_X"][ti], dec_io["extra_y"][ti]
        for name, ours, ref in [
                ("x_cycles", eX[..., 0:3], dec_io["x_cycles"][ti]),
                ("charge", eX[..., 6:7], dec_io["charge"][ti]),
                ("valency", eX[..., 7:8], dec_io["valency"][ti]),
                ("y_n", ey[:, 0:1], dec_io["y_n"][ti]),
                ("y_cycles", ey[:, 1:5], dec_io["y_cycles"][ti]),
                ("n_components", ey[:, 5:6], dec_io["n_components"][ti]),
                ("weight", ey[:, 11:12], dec_io["weight"][ti]),
                ("t", ey[:, 12:13], ry[:, 12:13])]:
            assert _maxdev(ours, ref) <= 1e-6, (name, int(dec_io["t_values"][ti]))
        assert _maxdev(ey[:, 6:11], dec_io["eigvals5"][ti]) <= 1e-5
    # the fixture exercises the quirks: eigenvalue leak 80/8 = 10 at t = 250, padded weight > 1
    assert np.isclose(dec_io["eigvals5"][2], 10.0).any()
    assert (dec_io["weight"] > 1).any() and (dec_io["x_cycles"][0][..., 2] > 0).any()


def test_fixture_eigenvectors_and_nonlcc(dec_io, fixture_features):
    n_checked = 0
    for ti, (eX, *_) in enumerate(fixture_features):
        defined = dec_io["eigvec2_sign_defined"][ti]
        for b, c in zip(*np.nonzero(defined)):
            ours, ref = eX[b, :, 4 + c], dec_io["eigvec2"][ti, b, :, c]
            assert min(_maxdev(ours, ref), _maxdev(ours, -ref)) <= 1e-4, (ti, b, c)
            n_checked += 1
        ok = dec_io["nonlcc_defined"][ti]
        if ok.any():
            assert _maxdev(eX[ok, :, 3:4], dec_io["nonlcc"][ti][ok]) == 0
    assert n_checked >= 80


def test_fixture_network_input(dec_io, fixture_features):
    for ti, (_, _, X_in, E_in, y_in) in enumerate(fixture_features):
        # the node-feature columns that are solver-independent
        cols = [c for c in range(16) if c not in (11, 12, 13)]
        assert _maxdev(X_in[..., cols], dec_io["X_in"][ti][..., cols]) <= 1e-6
        assert _maxdev(E_in, dec_io["E_in"][ti]) == 0
        assert _maxdev(np.delete(y_in, np.s_[2054:2059], axis=1),
                       np.delete(dec_io["y_in"][ti], np.s_[2054:2059], axis=1)) <= 1e-6
        assert _maxdev(y_in[:, 2054:2059], dec_io["y_in"][ti][:, 2054:2059]) <= 1e-5
        ok = dec_io["nonlcc_defined"][ti]
        if ok.any():
            assert _maxdev(X_in[ok][..., 11], dec_io["X_in"][ti][ok][..., 11]) == 0


def test_fixture_clean_graph_features(dec_io):
    X = torch.tensor(dec_io["X"]).float()
    E = torch.tensor(dec_io["E_clean"]).float()                # diagonal all-zero
    mask = torch.tensor(dec_io["node_mask"])
    eX, ey = extra_features(X, E, mask, CFG, reference_padding=True)
    rX, ry = dec_io["clean_extra_X"], dec_io["clean_extra_y"]
    exact_X = [0, 1, 2, 3, 6, 7]                               # clean molecules are connected
    assert _maxdev(eX.numpy()[..., exact_X], rX[..., exact_X]) <= 1e-6
    assert _maxdev(ey.numpy()[:, [0, 1, 2, 3, 4, 5, 11]], ry[:, [0, 1, 2, 3, 4, 5, 11]]) <= 1e-6
    assert _maxdev(ey.numpy()[:, 6:11], ry[:, 6:11]) <= 1e-5
    for b in range(len(mask)):
        for c in range(2):
            ours, ref = eX[b, :, 4 + c].numpy(), rX[b, :, 4 + c]
            lam = ey[b, 6 + c].item()
            neighbours = ey[b, 6:11].numpy()
            separated = np.sort(np.abs(neighbours - lam))[1] > 1e-4 and lam > 1e-4
            if separated:
                assert min(_maxdev(ours, ref), _maxdev(ours, -ref)) <= 1e-4
