"""Decoder training pieces: batching, environment and hydrogen features, widening a start, time budget."""
import numpy as np
import pytest
import torch

from matchms_diffms.chem.environments import (batch_environment_bits, environment_bits, plain_environment_bits,
                                             rdkit_environment_bits, set_workers)
from matchms_diffms.chem.molecules import mol_to_graph, morgan_fingerprint
from matchms_diffms.model.config import DiffMSConfig
from matchms_diffms.model.decoder import GraphTransformer
from matchms_diffms.model.graph_features import hydrogen_features, network_input
from matchms_diffms.train.common import parse_duration
from matchms_diffms.train.assembly import load_decoder_state
from matchms_diffms.train.graphs import GraphSet, featurize_smiles

ATOMS = ["C", "O", "P", "N", "S", "Cl", "F", "H", "Br", "I"]
SMILES = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "C#N", "OC(=O)C=CC(=O)O", "O=C1CCCCC1"]
SMALL = dict(decoder_layers=2, hidden_mlp_X=16, hidden_mlp_E=8, hidden_mlp_y=32, dx=16, de=8, dy=16,
             dim_ffX=16, dim_ffE=8, dim_ffy=16, atom_types=ATOMS, max_n_nodes=20, reference_padding=False)


def graph_set():
    recs = [featurize_smiles(s, ATOMS, 2048, 2, 60)[0] for s in SMILES]
    return GraphSet.from_records([r[1] for r in recs], [r[2] for r in recs], [r[3] for r in recs],
                                 [r[0] for r in recs], [r[4] for r in recs])


def test_batch_rebuilds_every_graph():
    order = [4, 1, 3, 0, 5]
    X, E, mask = graph_set().batch(order, len(ATOMS), torch.device("cpu"))
    for b, i in enumerate(order):
        nodes, adj = mol_to_graph(SMILES[i], ATOMS)
        k = len(nodes)
        assert int(mask[b].sum()) == k and not mask[b, k:].any()
        assert (X[b, :k].argmax(-1).numpy() == nodes).all() and X[b, k:].sum() == 0
        assert (E[b, :k, :k].argmax(-1).numpy() == adj).all()
        assert E[b, :k, :k].sum() == k * (k - 1)          # one-hot off the diagonal, zero on it
        assert E[b, k:].sum() == 0 and E[b, :, k:].sum() == 0


@pytest.mark.parametrize("smiles", ["c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "OC(=O)C=CC(=O)O", "CC(C)(C)C#N"])
def test_environment_bits_of_a_clean_graph_are_in_its_fingerprint(smiles):
    nodes, adj = mol_to_graph(smiles, ATOMS)
    bits = environment_bits(nodes, adj, ATOMS, 2, 2048)
    fp = morgan_fingerprint(smiles, 2048, 2)
    assert bits.shape == (len(nodes), 3) and (bits >= 0).all()
    assert fp[bits].all()


def test_environment_bits_flag_a_broken_atom_and_skip_padding():
    nodes, adj = mol_to_graph("CC(=O)Nc1ccc(O)cc1", ATOMS)
    fp = morgan_fingerprint("CC(=O)Nc1ccc(O)cc1", 2048, 2)
    broken = adj.copy()
    broken[1, 2] = broken[2, 1] = 0                       # the carbonyl oxygen loses its bond
    bits = environment_bits(np.append(nodes, -1), np.pad(broken, ((0, 1), (0, 1))), ATOMS, 2, 2048)
    assert (bits[-1] == -1).all()
    assert not fp[bits[2, 0]]                             # a lone O (water-like) is not in paracetamol


def noisy_graphs(seed: int, count: int):
    """Graphs of SMILES with bonds redrawn, random atom types, padding and out-of-range classes."""
    smiles = [*SMILES, "c1ccsc1", "O=P(O)(O)c1ccccc1", "C1CC2CCC1C2", "Clc1ccc2[nH]ccc2c1", "OS(=O)(=O)c1ccncc1",
              "IC(Br)=C", "C1=CC=CC=C1C1CC1"]
    rng = np.random.default_rng(seed)
    for k in range(count):
        nodes, adj = mol_to_graph(smiles[k % len(smiles)], ATOMS)
        nodes, adj = nodes.astype(np.int64), adj.astype(np.int64)
        n = len(nodes)
        for _ in range(int(rng.integers(0, 3 * n)) if k % 4 else 0):
            i, j = sorted(rng.choice(n, 2, replace=False))
            adj[i, j] = adj[j, i] = int(rng.integers(0, 5))
        if k % 5 == 1:
            nodes = rng.integers(0, len(ATOMS), n)                           # hydrogens, halogens in chains
        if k % 7 == 2:
            adj = adj + rng.integers(0, 7, adj.shape) * (rng.random(adj.shape) < 0.2)
        if k % 3 == 0:
            nodes, adj = np.append(nodes, [-1, -1]), np.pad(adj, ((0, 2), (0, 2)), constant_values=1)
        yield nodes, adj


def test_environment_bits_without_rdkit_equal_rdkits():
    """The plain replica of RDKit's Morgan environments gives RDKit's bits on clean and noisy graphs
    (checked here on 600; on 10,000 graphs of the pretraining set with noise when it was written)."""
    for k, (nodes, adj) in enumerate(noisy_graphs(0, 600)):
        radius = 3 if k % 10 == 0 else 2
        expected = rdkit_environment_bits(nodes, adj, ATOMS, radius, 2048)
        np.testing.assert_array_equal(plain_environment_bits(nodes, adj, ATOMS, radius, 2048), expected, str(k))
    assert np.array_equal(environment_bits(nodes, adj, ATOMS, 2, 2048), rdkit_environment_bits(nodes, adj, ATOMS))
    with pytest.raises(ValueError, match="Fe"):
        plain_environment_bits(np.array([0]), np.zeros((1, 1)), ["Fe"])


def test_batch_environment_bits_are_the_same_in_worker_processes():
    graphs = list(noisy_graphs(1, 12))
    n = max(len(nodes) for nodes, _ in graphs)
    nodes = np.stack([np.pad(x, (0, n - len(x)), constant_values=-1) for x, _ in graphs])
    adj = np.stack([np.pad(a, ((0, n - len(a)), (0, n - len(a)))) for _, a in graphs])
    alone = batch_environment_bits(nodes, adj, ATOMS)
    assert alone.shape == (12, n, 3)
    try:
        set_workers(2)
        np.testing.assert_array_equal(batch_environment_bits(nodes, adj, ATOMS), alone)
    finally:
        set_workers(1)


def test_environment_features_in_the_network_input():
    cfg = DiffMSConfig(**SMALL, environment_features=True)
    gs = graph_set()
    X, E, mask = gs.batch([0, 2], len(ATOMS), torch.device("cpu"))
    y = gs.fingerprints([0, 2], torch.device("cpu"))
    X_in, E_in, y_in = network_input(X, E, y, mask, torch.tensor([[0.1], [0.1]]), cfg)
    assert X_in.shape[-1] == cfg.input_dims["X"] and y_in.shape[-1] == cfg.input_dims["y"]
    env = X_in[..., -3:]
    assert (env[mask] == 1).all() and (env[~mask] == 0).all()   # clean graphs: every environment found
    assert torch.allclose(y_in[:, -3:-1], torch.ones(2, 2))       # precision and recall 1
    assert torch.allclose(y_in[:, -1], torch.tensor([0.1, 0.1]))  # t stays last


@pytest.mark.parametrize("smiles,hydrogens", [("CCO", 6), ("c1ccccc1O", 6), ("CC(=O)Nc1ccc(O)cc1", 9),
                                               ("C#N", 1), ("OC(=O)C=CC(=O)O", 4)])
def test_featurised_hydrogen_counts(smiles, hydrogens):
    assert featurize_smiles(smiles, ATOMS, 2048, 2, 60)[0][4] == hydrogens


def test_hydrogen_features_are_the_bond_budget():
    cfg = DiffMSConfig(**SMALL, hydrogen_features=True)
    gs = graph_set()
    X, E, mask = gs.batch([0, 4], len(ATOMS), torch.device("cpu"))          # CCO (3 atoms), fumaric acid (8)
    E_cls = torch.where(mask[:, :, None] & mask[:, None, :], E.argmax(-1), 0)
    h = gs.hydrogen_counts([0, 4], torch.device("cpu"))
    free, budget = hydrogen_features(X, E_cls, h, mask, cfg)
    assert torch.allclose(free[0, :3, 0] * 4, torch.tensor([3.0, 2.0, 1.0]))   # C: 4 - 1, C: 4 - 2, O: 2 - 1
    assert (free[0, 3:] == 0).all()                                            # padding
    assert torch.allclose(budget[:, 0], torch.zeros(2))                        # true graphs lack no bond
    assert torch.allclose(budget[:, 1], h / cfg.max_n_nodes)
    E_cls[0, 0, 2] = E_cls[0, 2, 0] = 1                                        # a ring: one bond too many
    E_cls[1, 0, 1] = E_cls[1, 1, 0] = 0                                        # a bond missing
    free2, budget2 = hydrogen_features(X, E_cls, h, mask, cfg)
    assert torch.allclose(budget2[:, 0] * 2, torch.tensor([-1.0, 2.0]))
    assert torch.allclose(free2[0, :3, 0] * 4, torch.tensor([2.0, 2.0, 0.0]))
    X_in, _, y_in = network_input(X, E, gs.fingerprints([0, 4], torch.device("cpu")), mask,
                                  torch.tensor([[0.2], [0.2]]), cfg, hydrogens=h)
    assert X_in.shape[-1] == cfg.input_dims["X"] and y_in.shape[-1] == cfg.input_dims["y"]
    assert torch.equal(X_in[..., -1:], free) and torch.equal(y_in[:, -3:-1], budget)
    with pytest.raises(ValueError, match="hydrogen"):
        network_input(X, E, y_in[:, :2048], mask, 0.2, cfg)


def test_graph_storage_keeps_hydrogen_counts(tmp_path):
    from matchms_diffms.train.graphs import load_graphs, save_graphs

    gs = graph_set()
    save_graphs(tmp_path / "g.npz", gs, {})
    back, _ = load_graphs(tmp_path / "g.npz")
    assert back.hydrogens.tolist() == gs.hydrogens.tolist() == [6, 6, 9, 1, 4, 10]
    assert back.subset([5, 0]).hydrogens.tolist() == [10, 6]
    with pytest.raises(ValueError, match="hydrogen counts"):
        GraphSet.from_records([np.zeros(2, np.int8)], [np.zeros((0, 3), np.int16)]).hydrogen_counts([0], "cpu")


@pytest.mark.parametrize("groups", [{"environment_features": True},
                                    {"environment_features": True, "hydrogen_features": True},
                                    {"hydrogen_features": True}])
def test_fast_sampling_path_equals_reference_with_our_features(groups):
    from matchms_diffms.model.diffusion import NoiseSchedule, reverse_sample

    cfg = DiffMSConfig(**SMALL, **groups)
    torch.manual_seed(0)

    class Model:
        config, schedule, decoder = cfg, NoiseSchedule(cfg.diffusion_steps), GraphTransformer(cfg).eval()

    X = torch.zeros(3, 6, len(ATOMS))
    X[:, :4, 0] = 1
    X[:, 4:, 1] = 1
    mask = torch.ones(3, 6, dtype=torch.bool)
    y = (torch.rand(1, 2048) < 0.02).float().expand(3, -1)
    h = torch.tensor([10.0, 12.0, 8.0])
    a = reverse_sample(Model, X, mask, y, steps=5, generator=torch.Generator().manual_seed(1), fast=True,
                       hydrogens=h)
    b = reverse_sample(Model, X, mask, y, steps=5, generator=torch.Generator().manual_seed(1), fast=False,
                       hydrogens=h)
    assert torch.equal(a, b)


@pytest.mark.parametrize("before,after", [({}, {"environment_features": True}),
                                          ({}, {"environment_features": True, "hydrogen_features": True}),
                                          ({"environment_features": True},
                                           {"environment_features": True, "hydrogen_features": True}),
                                          ({"hydrogen_features": True},
                                           {"environment_features": True, "hydrogen_features": True})])
def test_widening_a_start_keeps_its_outputs(before, after):
    old = DiffMSConfig(**SMALL, **before)
    new = DiffMSConfig(**SMALL, **after)
    torch.manual_seed(0)
    a = GraphTransformer(old).eval()
    b = GraphTransformer(new).eval()
    load_decoder_state(b, a.state_dict(), old, new)
    gs = graph_set()
    X, E, mask = gs.batch([1, 2], len(ATOMS), torch.device("cpu"))
    y = gs.fingerprints([1, 2], torch.device("cpu"))
    h = gs.hydrogen_counts([1, 2], torch.device("cpu"))
    t = torch.tensor([[0.3], [0.3]])
    out_a = a(*network_input(X, E, y, mask, t, old, hydrogens=h), mask)[1]
    out_b = b(*network_input(X, E, y, mask, t, new, hydrogens=h), mask)[1]
    assert torch.allclose(out_a, out_b, atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        load_decoder_state(GraphTransformer(old.replace(dx=32)), a.state_dict(), old, old)
    with pytest.raises(ValueError, match="shape"):                 # narrowing loses inputs: refused
        load_decoder_state(GraphTransformer(old), b.state_dict(), new, old)


@pytest.mark.parametrize("text,seconds", [("2h", 7200), ("90m", 5400), ("1h30m", 5400), (600, 600), ("45s", 45)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "x", "0", "-5", "h"])
def test_parse_duration_refuses(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)
