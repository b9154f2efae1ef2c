"""The fast sampling path is the reference path, bit for bit (fast_decoder.py against decoder.py; diffusion.py,
graph_features.py): the contract of the engine.

Every piece of the fast path (class-based network input, ``fast_decoder.edge_logits``, the table
posterior, the class-based draws, the whole chain) is compared with the
straightforward reference code using ``torch.equal`` -- no tolerance: a single flipped bit would eventually
flip a categorical draw and change the candidates. Randomly initialised models (seeded) need no ../shared;
the official tiny checkpoint is used in addition where the fixtures exist.
"""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from matchms_diffms.model.config import DiffMSConfig, preset
from matchms_diffms.model.decoder import GraphTransformer
from matchms_diffms.model.diffms import DiffMS
from matchms_diffms.model.fast_decoder import edge_classes, edge_logits
from matchms_diffms.model.diffusion import (
    NoiseSchedule, Q_t, Qbar, edge_marginals, posterior_edge_probs, posterior_from_classes, posterior_table,
    reverse_sample, sample_edge_classes, sample_edges, sample_prior, sample_prior_classes, step_transition)
from matchms_diffms.model.graph_features import network_input, network_input_from_classes, static_features

K = 5
# the size of our own default model, shrunk in depth only where a test would get slow
OWN = DiffMSConfig(encoder_hidden=32, magma_modulo=32, fp_sizes=[64, 128], cond_dim=128, decoder_layers=2,
                   dx=64, de=32, dy=64, hidden_mlp_X=64, hidden_mlp_E=64, hidden_mlp_y=64, dim_ffX=64,
                   dim_ffE=64, dim_ffy=64, atom_types=["C", "O", "P", "N", "S", "Cl", "F", "H", "Br", "I"],
                   reference_padding=False, max_n_nodes=60)
CONFIGS = {"tiny": preset("tiny"), "own": OWN}


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_decoder(cfg, seed=0):
    torch.manual_seed(seed)
    return GraphTransformer(cfg).eval()


def random_graphs(cfg, B, n, n_real=None, prior_diagonal=False, seed=0):
    """Network inputs for noisy one-hot graphs: X_in, one-hot E, y_in, node_mask, E classes."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, n, dtype=torch.bool)
    if n_real is not None:
        mask = torch.arange(n)[None] < torch.tensor(n_real)[:, None]
    X = torch.randn(B, n, cfg.input_dims["X"], generator=g) * mask[..., None]
    p = torch.tensor([0.7, 0.15, 0.05, 0.03, 0.07])
    cls = torch.multinomial(p, B * n * n, replacement=True, generator=g).reshape(B, n, n)
    cls = torch.triu(cls, 1)
    cls = cls + cls.transpose(1, 2)
    if prior_diagonal:
        cls[:, torch.arange(n), torch.arange(n)] = K
    cls = torch.where(mask[:, :, None] & mask[:, None, :], cls, K)
    E = F.one_hot(cls, K + 1)[..., :K].float()
    y = torch.randn(B, cfg.input_dims["y"], generator=g)
    return X, E, y, mask, cls


def atoms_batch(cfg, B, n, n_real=None, seed=0):
    """Fixed one-hot atoms (several elements), padded rows zero."""
    g = torch.Generator().manual_seed(seed)
    types = torch.randint(0, 4, (n,), generator=g)
    X = F.one_hot(types, cfg.n_atom_types).float().expand(B, n, -1).clone()
    mask = torch.ones(B, n, dtype=torch.bool)
    if n_real is not None:
        mask = torch.arange(n)[None] < torch.tensor(n_real)[:, None]
    return X * mask[..., None], mask


# ----------------------------------------------------------------------------- network
@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("B,n,n_real,prior_diagonal", [
    (4, 9, None, False), (3, 12, None, True), (9, 7, None, False),
    (5, 10, [10, 7, 3, 10, 1], False), (2, 6, [6, 0], True), (2, 5, [0, 0], False)])
def test_edge_logits_bit_identical(name, B, n, n_real, prior_diagonal):
    cfg = CONFIGS[name]
    model = random_decoder(cfg)
    X, E, y, mask, cls = random_graphs(cfg, B, n, n_real, prior_diagonal)
    assert torch.equal(edge_classes(E), cls)
    with torch.no_grad():
        ref = model(X, E, y, mask)[1]
        for chunk in (None, 1, 2, B):
            fast = edge_logits(model, X, cls, y, mask, chunk=chunk)
            assert torch.equal(fast, ref), (chunk, float((fast - ref).abs().max()))


def test_edge_logits_with_reference_padding_model():
    """reference_padding=True (official checkpoints): padded batches leak into the pooling, fast path too."""
    cfg = preset("tiny")
    assert cfg.reference_padding
    model = random_decoder(cfg, seed=3)
    X, E, y, mask, cls = random_graphs(cfg, 4, 8, [8, 5, 2, 7], seed=2)
    with torch.no_grad():
        assert torch.equal(edge_logits(model, X, cls, y, mask), model(X, E, y, mask)[1])


def test_edge_logits_official_tiny_on_fixture(tiny_state_dict, conformance_dir):
    io = np.load(conformance_dir / "decoder_io.npz")
    model = GraphTransformer(preset("tiny"))
    model.load_state_dict({k[len("decoder."):]: v for k, v in tiny_state_dict.items()
                           if k.startswith("decoder.")}, strict=True)
    model.eval()
    mask = torch.tensor(io["node_mask"])
    with torch.no_grad():
        for ti in range(len(io["t_values"])):
            X, E, y = (torch.tensor(io[k][ti]) for k in ("X_in", "E_in", "y_in"))
            fast = edge_logits(model, X, edge_classes(E), y, mask)
            assert torch.equal(fast, model(X, E, y, mask)[1])
            assert float((fast - torch.tensor(io["out_E"][ti])).abs().max()) <= 1e-5


def test_edge_logits_needs_eval_mode():
    model = random_decoder(preset("tiny")).train()
    X, _, y, mask, cls = random_graphs(preset("tiny"), 2, 4)
    with pytest.raises(RuntimeError, match="eval"):
        edge_logits(model, X, cls, y, mask)


# ----------------------------------------------------------------------------- features, posterior, draws
@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("n_real,prior_diagonal", [(None, False), (None, True), ([9, 4, 1, 9], False)])
def test_network_input_from_classes(name, n_real, prior_diagonal):
    cfg = CONFIGS[name]
    X, mask = atoms_batch(cfg, 4, 9, n_real)
    _, E, _, _, cls = random_graphs(cfg, 4, 9, n_real, prior_diagonal, seed=5)
    y = torch.randn(4, cfg.cond_dim)
    t = torch.full((4, 1), 0.37)
    g1, g2 = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    X_ref, E_ref, y_ref = network_input(X, E, y, mask, t, cfg, g1)
    X_in, y_in = network_input_from_classes(static_features(X, mask, cfg), cls, y, mask, t, cfg, g2)
    assert torch.equal(X_in, X_ref) and torch.equal(y_in, y_ref) and torch.equal(E_ref, E)
    assert torch.equal(g1.get_state(), g2.get_state())            # same random numbers consumed


@pytest.mark.parametrize("t,s", [(1, 0), (250, 249), (500, 499), (500, 490), (260, 130), (20, 0)])
def test_posterior_from_classes(t, s):
    schedule, m = NoiseSchedule(500), edge_marginals(DiffMSConfig().edge_marginals)
    Qt, Qsb, Qtb = step_transition(schedule, t, s, m), Qbar(schedule.alpha_bar(s), m), Qbar(schedule.alpha_bar(t), m)
    _, E, _, _, cls = random_graphs(OWN, 3, 11, [11, 6, 11], prior_diagonal=True, seed=t)
    pred = torch.softmax(3 * torch.randn(3, 11, 11, K, generator=torch.Generator().manual_seed(s)), -1)
    pred[0, 0, 1] = torch.tensor([1.0, 0, 0, 0, 0])                 # a certain prediction: zero rows possible
    ref = posterior_edge_probs(E, pred, Qt, Qsb, Qtb)
    assert torch.equal(posterior_from_classes(cls, pred, posterior_table(Qt, Qsb, Qtb)), ref)
    if s == t - 1:
        assert torch.equal(Qt, Q_t(schedule.beta(t), m))


@pytest.mark.parametrize("n_real", [None, [7, 3, 7, 1]])
def test_class_draws_equal_one_hot_draws(n_real):
    _, mask = atoms_batch(OWN, 4, 7, n_real)
    m = edge_marginals(DiffMSConfig().edge_marginals)
    prior = sample_prior(mask, m, torch.Generator().manual_seed(4))
    assert torch.equal(sample_prior_classes(mask, m, torch.Generator().manual_seed(4)), edge_classes(prior))
    prob = torch.softmax(torch.randn(4, 7, 7, K, generator=torch.Generator().manual_seed(1)), -1)
    one_hot = sample_edges(prob, mask, torch.Generator().manual_seed(9))
    assert torch.equal(sample_edge_classes(prob, mask, torch.Generator().manual_seed(9)), edge_classes(one_hot))


# ----------------------------------------------------------------------------- the whole chain
def chain_model(cfg, seed=1):
    torch.manual_seed(seed)
    return SimpleNamespace(decoder=GraphTransformer(cfg).eval(), config=cfg, schedule=NoiseSchedule(500))


@pytest.mark.parametrize("name,steps,n_real", [("tiny", 150, None), ("own", 500, None), ("own", 37, [8, 5, 8, 1]),
                                               ("tiny", 20, [8, 8, 3, 0])])
def test_fast_chain_equals_reference_chain(name, steps, n_real):
    """With 500 steps (and skip steps) and a fixed seed, the fast path returns exactly the reference graphs."""
    cfg = CONFIGS[name]
    model = chain_model(cfg)
    X, mask = atoms_batch(cfg, 4, 8, n_real)
    y = torch.randn(4, cfg.cond_dim, generator=torch.Generator().manual_seed(2))
    run = lambda fast: reverse_sample(model, X, mask, y, steps=steps, fast=fast, return_probs=True,  # noqa: E731
                                      generator=torch.Generator().manual_seed(3))
    ref, ref_prob = run(False)
    fast, fast_prob = run(True)
    assert torch.equal(fast, ref) and torch.equal(fast_prob, ref_prob)
    assert (ref > 0).any()                                          # not a trivial all-empty result
    assert torch.equal(run(None)[0], ref)                           # the default is the fast path


def test_diffms_sample_fast_equals_reference_candidates():
    """DiffMS.sample with 500 steps: identical bond matrices, hence identical molecules, both paths."""
    from matchms_diffms.chem.molecules import check_molecule, graph_to_mol

    cfg = preset("tiny")
    torch.manual_seed(5)
    model = DiffMS(cfg).eval()
    atoms = ["C", "C", "O", "C", "N", "C", "C"]
    y = torch.randn(cfg.cond_dim, generator=torch.Generator().manual_seed(0))
    fast = model.sample(atoms, y, n_samples=6, steps=500, generator=torch.Generator().manual_seed(8))
    ref = model.sample(atoms, y, n_samples=6, steps=500, generator=torch.Generator().manual_seed(8), fast=False)
    np.testing.assert_array_equal(fast, ref)
    smiles = lambda adj: [check_molecule(graph_to_mol(atoms, a)).smiles for a in adj]  # noqa: E731
    assert smiles(fast) == smiles(ref)


def test_fast_path_selection():
    cfg = preset("tiny")
    model = chain_model(cfg)
    X, mask = atoms_batch(cfg, 2, 4)
    y = torch.randn(2, cfg.cond_dim)
    model.decoder.train()
    torch.manual_seed(0)
    reverse_sample(model, X, mask, y, steps=2)                      # training mode: reference path, no error
    with pytest.raises(ValueError, match="fast sampling path"):
        reverse_sample(model, X, mask, y, steps=2, fast=True)
    with pytest.raises(ValueError, match="fast sampling path"):
        reverse_sample(model.decoder.eval() and model, X, mask, y, steps=2, fast=True,
                       features=lambda *a, **k: network_input(*a, **k))


def test_eigen_solver_thread_setting_restored():
    """The features run the eigen-decomposition on one thread and restore the caller's thread count."""
    X, mask = atoms_batch(OWN, 3, 6)
    _, E, _, _, _ = random_graphs(OWN, 3, 6, seed=1)
    torch.set_num_threads(2)
    a = network_input(X, E, torch.zeros(3, OWN.cond_dim), mask, 0.5, OWN, torch.Generator().manual_seed(0))
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)
    b = network_input(X, E, torch.zeros(3, OWN.cond_dim), mask, 0.5, OWN, torch.Generator().manual_seed(0))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
