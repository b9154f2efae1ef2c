"""Sampling, forward noising, the edge loss and the reverse chain (with a stub denoiser).

The stub denoiser always predicts one fixed clean graph (a 6-ring with single, double and aromatic
bonds). With a perfect prediction the exact reverse chain reproduces the forward marginals
q(e_t | e_0) = Qbar_t[e_0, :] at every visited t, for the reference chain and for skip steps alike, and
ends on the clean graph; the tests check both.
"""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from matchms_diffms.model.config import MSG_EDGE_MARGINALS, DiffMSConfig
from matchms_diffms.model.diffusion import (
    NoiseSchedule, Q_t_given_s, Qbar, edge_cross_entropy, edge_marginals, noise_edges, posterior_edge_probs,
    reverse_sample, sample_edges, sample_prior, step_transition, time_grid)

K = 5
# 6-ring: bonds 0-1 single, 1-2 double, 2-3 single, 3-4 aromatic, 4-5 aromatic, 5-0 single
RING_BONDS = {(0, 1): 1, (1, 2): 2, (2, 3): 1, (3, 4): 4, (4, 5): 4, (0, 5): 1}


def ring_classes(n: int = 6) -> torch.Tensor:
    A = torch.zeros(n, n, dtype=torch.long)
    for (i, j), c in RING_BONDS.items():
        A[i, j] = A[j, i] = c
    return A


@pytest.fixture(scope="module")
def m():
    return edge_marginals(MSG_EDGE_MARGINALS)


@pytest.fixture(scope="module")
def schedule():
    return NoiseSchedule(500)


def z_tol(p: float, n: int, z: float = 5.0) -> float:
    return z * np.sqrt(p * (1 - p) / n) + 1e-3


# ----------------------------------------------------------------------------------------- stub model

class StubDecoder(torch.nn.Module):
    """Predicts the given clean graph with confidence ``scale`` (logits), whatever the input."""

    def __init__(self, target: torch.Tensor, scale: float = 30.0):
        super().__init__()
        self.target = target                     # (n, n) classes
        self.scale = scale
        self.calls = 0

    def forward(self, X_in, E_in, y_in, node_mask):
        self.calls += 1
        B, n = node_mask.shape
        logits = self.scale * F.one_hot(self.target[:n, :n], K).float()
        return X_in, logits.expand(B, n, n, K).clone(), y_in


class RecordingFeatures:
    """Stand-in for graph_features.network_input that records what the sampler passes."""

    def __init__(self, record_E: bool = False):
        self.t_norm, self.E, self.X_same, self.y_same = [], [], [], []
        self.record_E = record_E
        self.X0 = self.y0 = None

    def __call__(self, X, E_t, y, node_mask, t_norm, config, generator=None):
        if self.X0 is None:
            self.X0, self.y0 = X.clone(), y.clone()
        self.t_norm.append(t_norm.clone())
        self.X_same.append(torch.equal(X, self.X0))
        self.y_same.append(torch.equal(y, self.y0))
        if self.record_E or len(self.E) < 2:
            self.E.append(E_t)                   # the sampler never modifies E_t in place
        return X, E_t, y


def stub_model(n: int = 6, scale: float = 30.0):
    return SimpleNamespace(decoder=StubDecoder(ring_classes(n), scale), config=DiffMSConfig(),
                           schedule=NoiseSchedule(500))


def inputs(B: int, n: int = 6, n_real=None, cond_dim: int = 32):
    X = torch.zeros(B, n, 8)
    X[..., 0] = 1.0
    node_mask = torch.ones(B, n, dtype=torch.bool)
    if n_real is not None:
        for b, k in enumerate(n_real):
            node_mask[b, k:] = False
            X[b, k:] = 0.0
    y = torch.rand(B, cond_dim, generator=torch.Generator().manual_seed(0))
    return X, node_mask, y


# ----------------------------------------------------------------------------------------- time grid

def test_time_grid():
    np.testing.assert_array_equal(time_grid(500, 500), np.arange(500, -1, -1))
    for steps in (1, 2, 7, 50, 100, 499):
        g = time_grid(500, steps)
        assert len(g) == steps + 1 and g[0] == 500 and g[-1] == 0 and (np.diff(g) < 0).all()
    np.testing.assert_array_equal(time_grid(500, 50, power=1.0), np.arange(500, -1, -10))
    np.testing.assert_array_equal(time_grid(500, 4), [500, 281, 125, 31, 0])           # 500 (1 - k/4)^2
    fine = time_grid(500, 20)
    assert (np.diff(fine)[-5:] > np.diff(fine)[:5]).all()          # short steps near t = 0, long near T
    for steps in range(1, 501):                                     # rounding collisions kept apart
        g = time_grid(500, steps)
        assert len(g) == steps + 1 and g[0] == 500 and g[-1] == 0 and (np.diff(g) < 0).all()
    for bad in (0, 501, -3):
        with pytest.raises(ValueError):
            time_grid(500, bad)
    with pytest.raises(ValueError):
        step_transition(NoiseSchedule(500), 10, 10, edge_marginals(MSG_EDGE_MARGINALS))


# ----------------------------------------------------------------------------------------- posterior

@pytest.mark.parametrize("s,t", [(0, 1), (249, 250), (0, 10), (240, 250), (0, 500), (100, 400), (490, 500)])
def test_posterior_marginalises_to_forward(schedule, m, s, t):
    """sum_{e_t} q(e_t | e_0) p(e_s | e_t, e_0) = q(e_s | e_0) for a one-hot prediction e_0 = c.

    Fails if the step matrix does not belong to the gap t - s (e.g. a single-step Q for a skip step).
    """
    Qts = step_transition(schedule, t, s, m)
    Qsb, Qtb = Qbar(schedule.alpha_bar(s), m), Qbar(schedule.alpha_bar(t), m)
    # batch element b = c * K + e_t, n = 1: every (clean class c, noisy class e_t) combination
    E_t = torch.eye(K).repeat(K, 1).reshape(K * K, 1, 1, K)                              # one-hot e_t
    pred = torch.eye(K).repeat_interleave(K, dim=0).reshape(K * K, 1, 1, K)             # one-hot e_0 = c
    prob = posterior_edge_probs(E_t, pred, Qts, Qsb, Qtb)                               # (K*K, 1, 1, K)
    prob = prob.reshape(K, K, K).double()                                               # [c, e_t, e_s]
    q_t = Qtb[0].double()                                                               # [c, e_t]
    marg = (q_t.unsqueeze(-1) * prob).sum(1)                                            # [c, e_s]
    assert torch.allclose(marg, Qsb[0].double(), atol=2e-6), (marg - Qsb[0].double()).abs().max()


def test_skip_step_equals_bayes_rule(schedule, m):
    """For s < t - 1 the posterior is q(e_s|e_0) q(e_t|e_s) / q(e_t|e_0) built from Qbar_s, Q_{t|s}."""
    s, t = 120, 380
    Qts = Q_t_given_s(schedule.alpha_bar(t), schedule.alpha_bar(s), m)[0].double()
    Qsb, Qtb = Qbar(schedule.alpha_bar(s), m)[0].double(), Qbar(schedule.alpha_bar(t), m)[0].double()
    gen = torch.Generator().manual_seed(3)
    pred = torch.softmax(torch.randn(1, 4, 4, K, generator=gen), -1)
    E_t = F.one_hot(torch.randint(0, K, (1, 4, 4), generator=gen), K).float()
    prob = posterior_edge_probs(E_t, pred, step_transition(schedule, t, s, m), Qsb.float()[None],
                                Qtb.float()[None])
    et = E_t.argmax(-1)
    expected = torch.zeros(1, 4, 4, K, dtype=torch.float64)
    for i in range(4):
        for j in range(4):
            e = et[0, i, j]
            post = Qsb * Qts[:, e].unsqueeze(0) / Qtb[:, e].unsqueeze(1)                # [c, k]
            expected[0, i, j] = (pred[0, i, j].double().unsqueeze(1) * post).sum(0)
    expected = expected / expected.sum(-1, keepdim=True)
    assert torch.allclose(prob.double(), expected, atol=1e-6)


# ----------------------------------------------------------------------------------------- draws

def test_sample_prior(m):
    gen = torch.Generator().manual_seed(1)
    X, node_mask, _ = inputs(60, 30, n_real=[30] * 30 + [20] * 30)
    E = sample_prior(node_mask, m, gen)
    pair = node_mask[:, :, None] & node_mask[:, None, :]
    eye = torch.eye(30, dtype=torch.bool).expand(60, 30, 30)
    assert E.shape == (60, 30, 30, K)
    assert torch.equal(E, E.transpose(1, 2))
    assert torch.all(E[eye] == 0)                                     # diagonal all-zero vector
    assert torch.all(E[~pair] == 0)
    assert torch.all(E[pair & ~eye].sum(-1) == 1)
    iu = torch.triu(torch.ones(30, 30, dtype=torch.bool), 1).expand(60, 30, 30)
    freq = E[pair & iu].mean(0)
    n_draws = int((pair & iu).sum())
    for k in range(K):
        assert abs(float(freq[k]) - float(m[k])) <= z_tol(float(m[k]), n_draws)
    assert torch.equal(E, sample_prior(node_mask, m, torch.Generator().manual_seed(1)))


def test_sample_edges_rules():
    B, n = 3, 5
    _, node_mask, _ = inputs(B, n, n_real=[5, 3, 1])
    classes = torch.randint(0, K, (B, n, n), generator=torch.Generator().manual_seed(2))
    prob = F.one_hot(classes, K).float()          # deterministic, deliberately asymmetric
    before = prob.clone()
    E = sample_edges(prob, node_mask, torch.Generator().manual_seed(5))
    assert torch.equal(prob, before)                                  # input untouched
    pair = node_mask[:, :, None] & node_mask[:, None, :]
    got = E.argmax(-1)
    for b in range(B):
        for i in range(n):
            for j in range(n):
                if not pair[b, i, j]:
                    assert torch.all(E[b, i, j] == 0)
                elif i == j:
                    assert torch.equal(E[b, i, j], F.one_hot(torch.tensor(0), K).float())
                else:                                                 # upper triangle wins, mirrored
                    assert got[b, i, j] == classes[b, min(i, j), max(i, j)]
    # determinism / seed dependence with random probabilities
    p = torch.softmax(torch.randn(4, 9, 9, K, generator=torch.Generator().manual_seed(0)), -1)
    _, nm, _ = inputs(4, 9)
    a = sample_edges(p, nm, torch.Generator().manual_seed(7))
    assert torch.equal(a, sample_edges(p, nm, torch.Generator().manual_seed(7)))
    assert not torch.equal(a, sample_edges(p, nm, torch.Generator().manual_seed(8)))


def test_sample_edges_frequencies():
    p = torch.tensor([0.1, 0.5, 0.05, 0.05, 0.3])
    B, n = 40, 20
    _, nm, _ = inputs(B, n)
    E = sample_edges(p.expand(B, n, n, K).clone(), nm, torch.Generator().manual_seed(11))
    iu = torch.triu(torch.ones(n, n, dtype=torch.bool), 1).expand(B, n, n)
    freq = E[iu].mean(0)
    for k in range(K):
        assert abs(float(freq[k] - p[k])) <= z_tol(float(p[k]), int(iu.sum()))


# ----------------------------------------------------------------------------------------- training

def ring_batch(B: int, n: int = 8, n_real=(6, 8)):
    """Clean one-hot ring graphs padded to n; diagonal and padding all-zero."""
    E0 = torch.zeros(B, n, n, K)
    node_mask = torch.zeros(B, n, dtype=torch.bool)
    for b in range(B):
        k = n_real[b % len(n_real)]
        node_mask[b, :k] = True
        A = ring_classes(8)[:k, :k]
        E0[b, :k, :k] = F.one_hot(A, K).float()
        E0[b, torch.arange(k), torch.arange(k)] = 0.0
    return E0, node_mask


def test_noise_edges_conventions_and_marginals(schedule, m):
    E0, node_mask = ring_batch(200)
    pair = node_mask[:, :, None] & node_mask[:, None, :]
    eye = torch.eye(8, dtype=torch.bool).expand_as(pair)
    for t in (1, 250, 500):
        t_int = torch.full((200,), t)
        E_t = noise_edges(E0, t_int, m, schedule, node_mask, torch.Generator().manual_seed(t))
        assert torch.equal(E_t, E_t.transpose(1, 2))
        assert torch.all(E_t[~pair] == 0)
        assert torch.all(E_t[pair & eye].argmax(-1) == 0) and torch.all(E_t[pair].sum(-1) == 1)
        iu = torch.triu(torch.ones(8, 8, dtype=torch.bool), 1).expand_as(pair) & pair
        ab = float(schedule.alpha_bar(t))
        c0 = E0.argmax(-1)
        for c in (0, 1, 4):
            sel = iu & (c0 == c) & (E0.sum(-1) == 1)
            p_stay = ab + (1 - ab) * float(m[c])
            frac = float((E_t.argmax(-1)[sel] == c).float().mean())
            assert abs(frac - p_stay) <= z_tol(p_stay, int(sel.sum())), (t, c, frac, p_stay)
    # per-graph t: graph 0 nearly clean, graph 1 at the prior
    E_t = noise_edges(E0[:2], torch.tensor([[0], [500]]), m, schedule, node_mask[:2],
                      torch.Generator().manual_seed(0))
    k = 6
    off = ~torch.eye(k, dtype=torch.bool)
    assert torch.equal(E_t[0, :k, :k].argmax(-1)[off], E0[0, :k, :k].argmax(-1)[off])


def test_edge_cross_entropy(m):
    E0, node_mask = ring_batch(4)
    logits = torch.randn(4, 8, 8, K, generator=torch.Generator().manual_seed(0), requires_grad=True)
    loss = edge_cross_entropy(logits, E0, node_mask)
    # independent computation: loop over ordered off-diagonal pairs of real nodes
    terms = []
    for b in range(4):
        k = int(node_mask[b].sum())
        for i in range(k):
            for j in range(k):
                if i != j:
                    terms.append(-torch.log_softmax(logits[b, i, j], -1)[E0[b, i, j].argmax()])
    assert torch.allclose(loss, torch.stack(terms).mean(), atol=1e-6)
    loss.backward()
    assert torch.all(logits.grad[~(node_mask[:, :, None] & node_mask[:, None, :])] == 0)
    assert torch.all(torch.diagonal(logits.grad, dim1=1, dim2=2) == 0)
    # diagonal and padded logits do not matter; node_mask optional
    other = logits.detach().clone()
    other[:, torch.arange(8), torch.arange(8)] = 100.0
    other[~node_mask] = -7.0
    assert torch.allclose(edge_cross_entropy(other, E0), loss.detach(), atol=1e-6)
    # no countable entry -> 0 (still connected to the graph)
    z = edge_cross_entropy(logits, torch.zeros_like(E0))
    assert float(z.detach()) == 0.0 and z.requires_grad


# ----------------------------------------------------------------------------------------- reverse chain

@pytest.mark.parametrize("steps", [500, 50, 7, 1])
def test_reverse_sample_converges_to_predicted_graph(steps):
    torch.manual_seed(1234)   # the stub ignores it; the sampler must only use the generator given
    model = stub_model()
    X, node_mask, y = inputs(8)
    feats = RecordingFeatures()
    out = reverse_sample(model, X, node_mask, y, steps=steps, generator=torch.Generator().manual_seed(0),
                         features=feats)
    assert out.dtype == torch.int64 and out.shape == (8, 6, 6)
    assert torch.equal(out, ring_classes().expand(8, 6, 6))
    assert model.decoder.calls == steps
    # time inputs t/T on the grid, y and X passed unchanged each step
    grid = time_grid(500, steps)
    got_t = torch.stack([t[:, 0] for t in feats.t_norm])              # (steps, B)
    assert torch.allclose(got_t, torch.tensor(grid[:-1] / 500, dtype=torch.float32)[:, None].expand(-1, 8))
    assert torch.equal(feats.y0, y) and torch.equal(feats.X0, X)
    assert all(feats.y_same) and all(feats.X_same) and len(feats.y_same) == steps
    # first input is the prior (all-zero diagonal), later inputs have a class-0 diagonal
    eye = torch.eye(6, dtype=torch.bool).expand(8, 6, 6)
    assert torch.all(feats.E[0][eye] == 0)
    if steps > 1:
        assert torch.all(feats.E[1][eye].argmax(-1) == 0) and torch.all(feats.E[1][eye].sum(-1) == 1)


def test_reverse_sample_determinism_symmetry_padding():
    model = stub_model(n=7, scale=1.0)          # weak prediction: outputs genuinely random
    X, node_mask, y = inputs(6, 7, n_real=[7, 7, 6, 6, 4, 1])
    run = lambda seed, **kw: reverse_sample(model, X, node_mask, y, steps=20,           # noqa: E731
                                            generator=torch.Generator().manual_seed(seed),
                                            features=RecordingFeatures(), **kw)
    a, b, c = run(5), run(5), run(6)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    pair = node_mask[:, :, None] & node_mask[:, None, :]
    assert torch.equal(a, a.transpose(1, 2))
    assert torch.all(a[~pair] == -1)
    assert torch.all(torch.diagonal(a, dim1=1, dim2=2)[node_mask] == 0)
    assert torch.all((a[pair] >= 0) & (a[pair] < K))
    d, probs = run(5, return_probs=True)
    assert torch.equal(d, a) and probs.shape == (6, 7, 7, K)
    assert torch.allclose(probs.sum(-1), torch.ones(6, 7, 7))


@pytest.mark.parametrize("steps,B", [(500, 128), (10, 400)])
def test_reverse_chain_reproduces_forward_marginals(schedule, m, steps, B):
    """With a perfect prediction, E_t visited by the chain is distributed as Qbar_t[e_0, :]."""
    model = stub_model()
    X, node_mask, y = inputs(B)
    feats = RecordingFeatures(record_E=True)
    reverse_sample(model, X, node_mask, y, steps=steps, generator=torch.Generator().manual_seed(42),
                   features=feats)
    grid = time_grid(500, steps)
    target = ring_classes()
    iu = torch.triu(torch.ones(6, 6, dtype=torch.bool), 1)
    checked = 0
    visited = {int(np.abs(grid[1:-1] - t).argmin()) + 1 for t in (400, 250, 100, 50)}  # nearest grid times
    for idx, t in enumerate(grid[:-1]):
        if idx not in visited:
            continue
        cls = feats.E[idx].argmax(-1)                                  # (B, 6, 6)
        ab = float(schedule.alpha_bar(int(t)))
        for c in (0, 1, 4):
            sel = (target == c) & iu
            p_stay = ab + (1 - ab) * float(m[c])
            frac = float((cls[:, sel] == c).float().mean())
            assert abs(frac - p_stay) <= z_tol(p_stay, B * int(sel.sum())), (t, c, frac, p_stay)
        checked += 1
    assert checked == 4


def test_reverse_sample_with_real_features_and_decoder():
    """Smoke test with graph_features.network_input and a randomly initialised tiny GraphTransformer."""
    from matchms_diffms.model.config import preset
    from matchms_diffms.model.decoder import GraphTransformer

    torch.manual_seed(0)
    config = preset("tiny")
    model = SimpleNamespace(decoder=GraphTransformer(config).eval(), config=config,
                            schedule=NoiseSchedule(config.diffusion_steps))
    X, node_mask, y = inputs(2, 5, cond_dim=config.cond_dim)
    a = reverse_sample(model, X, node_mask, y, steps=3, generator=torch.Generator().manual_seed(0))
    b = reverse_sample(model, X, node_mask, y, steps=3, generator=torch.Generator().manual_seed(0))
    assert a.shape == (2, 5, 5) and torch.equal(a, b) and torch.equal(a, a.transpose(1, 2))
    assert torch.all(torch.diagonal(a, dim1=1, dim2=2) == 0)
