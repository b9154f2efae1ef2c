"""Noise schedule, transition matrices and reverse-step posterior vs the official fixtures.

Fixture: ../shared/conformance/diffusion_io.npz (README section 6). Posterior tolerance atol 1e-6;
schedule and Q matrices are expected to be exact when computed as specified (checked at atol 1e-6 /
float64 rounding so a different libm cannot fail them spuriously, while any formula error still does).
"""
import numpy as np
import pytest
import torch

from matchms_diffms.model.config import MSG_EDGE_MARGINALS
from matchms_diffms.model.diffusion import (
    NoiseSchedule, Q_t, Q_t_given_s, Qbar, cosine_betas, edge_marginals, posterior_edge_probs, sample_edges,
    step_transition)

POSTERIOR_ATOL = 1e-6


@pytest.fixture(scope="module")
def fx(conformance_dir):
    with np.load(conformance_dir / "diffusion_io.npz") as d:
        return {k: d[k] for k in d.files}


@pytest.fixture(scope="module")
def schedule():
    return NoiseSchedule(500)


@pytest.fixture(scope="module")
def m():
    return edge_marginals(MSG_EDGE_MARGINALS)


def max_dev(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


# ----------------------------------------------------------------------------------------- schedule

def test_cosine_betas_float64(fx):
    betas = cosine_betas(500)
    assert betas.dtype == np.float64 and betas.shape == (501,)
    assert max_dev(betas, fx["betas_float64"]) <= 1e-15


def test_schedule_float32(fx, schedule):
    assert schedule.betas.dtype == torch.float32 and schedule.betas.shape == (501,)
    # betas are a plain cast of the float64 schedule, alphas one subtraction: exact
    np.testing.assert_array_equal(schedule.betas.numpy(), fx["betas"])
    np.testing.assert_array_equal(schedule.alphas.numpy(), fx["alphas"])
    assert max_dev(schedule.alphas_bar, fx["alphas_bar"]) <= 1e-6
    # relative check where alpha_bar is tiny (alpha_bar_500 ~ 1e-9)
    np.testing.assert_allclose(schedule.alphas_bar.numpy(), fx["alphas_bar"], rtol=1e-5, atol=0)


def test_schedule_published_values(schedule):
    # diffms-model.md section 9 table (values as printed, compared at their printed precision)
    table_beta = {0: 8.7230e-5, 1: 1.0658e-4, 250: 6.2791e-3, 499: 0.74999758, 500: 1.0}
    table_abar = {0: 0.99991274, 1: 0.9998062, 250: 0.49228847, 499: 9.676e-6, 500: 9.678e-10}
    for t, v in table_beta.items():
        assert float(schedule.beta(t)) == pytest.approx(v, rel=5e-5), t
    for t, v in table_abar.items():
        assert float(schedule.alpha_bar(t)) == pytest.approx(v, rel=5e-4 if t >= 499 else 1e-6), t
    assert float(schedule.alpha(500)) == pytest.approx(1e-4, rel=1e-3)   # clamp at 0.9999


def test_schedule_lookups(schedule):
    t = torch.tensor([[1], [250], [500]])
    assert schedule.beta(t).shape == (3, 1)
    assert torch.equal(schedule.alpha_bar(t).reshape(-1), schedule.alphas_bar[[1, 250, 500]])
    assert torch.equal(schedule.t_int_from_normalized(torch.tensor([1 / 500, 0.5, 499 / 500])),
                       torch.tensor([1, 250, 499]))
    with pytest.raises(TypeError):
        schedule.beta(torch.tensor([0.5]))


def test_check_betas(fx, schedule):
    assert schedule.check_betas(fx["betas"]) == 0.0
    bad = torch.tensor(fx["betas"]).clone()
    bad[123] += 1e-6
    with pytest.raises(ValueError, match="max abs diff"):
        schedule.check_betas(bad)
    with pytest.raises(ValueError, match="shape"):
        schedule.check_betas(torch.tensor(fx["betas"][:-1]))
    with pytest.raises(ValueError, match="max abs diff"):
        NoiseSchedule(1000).check_betas(torch.from_numpy(cosine_betas(1000)).float() * 1.001)


def test_check_betas_tiny_checkpoint(tiny_state_dict, schedule):
    assert schedule.check_betas(tiny_state_dict["noise_schedule.betas"]) <= 1e-7


# ----------------------------------------------------------------------------------------- transitions

def test_edge_marginals(fx, m):
    np.testing.assert_array_equal(m.numpy(), fx["e_marginals"])
    with pytest.raises(ValueError):
        edge_marginals([0.0, 0.0])


def test_Q_matrices_all_t(fx, schedule, m):
    Qt = Q_t(schedule.betas, m)
    Qtb = Qbar(schedule.alphas_bar, m)
    assert Qt.shape == (501, 5, 5) and Qtb.shape == (501, 5, 5)
    assert max_dev(Qt, fx["Qt_E_all_t"]) <= 1e-6
    assert max_dev(Qtb, fx["Qtb_E_all_t"]) <= 1e-6
    # step_transition with s = t - 1 is the reference Q_t
    for t in (1, 2, 250, 499, 500):
        np.testing.assert_array_equal(step_transition(schedule, t, t - 1, m)[0].numpy(), Qt[t].numpy())


@pytest.mark.parametrize("case", ["mixed", "prior"])
def test_per_graph_Q(fx, schedule, m, case):
    t = torch.tensor(fx[f"{case}_t_int"])
    s = torch.tensor(fx[f"{case}_s_int"])
    assert torch.equal(s, t - 1)
    assert max_dev(Q_t(schedule.beta(t), m), fx[f"{case}_Qt_E"]) <= 1e-6
    assert max_dev(Qbar(schedule.alpha_bar(s), m), fx[f"{case}_Qsb_E"]) <= 1e-6
    assert max_dev(Qbar(schedule.alpha_bar(t), m), fx[f"{case}_Qtb_E"]) <= 1e-6


@pytest.mark.parametrize("s,t", [(0, 1), (0, 10), (100, 400), (249, 250), (10, 499), (0, 499), (0, 500),
                                 (450, 500)])
def test_multistep_transition_is_product_of_single_steps(schedule, m, s, t):
    # product Q_{s+1} ... Q_t of single steps (built from the clamped alphas), in float64
    m64 = m.double()
    prod = torch.eye(5, dtype=torch.float64)
    for k in range(s + 1, t + 1):
        a = schedule.alphas[k].double()
        prod = prod @ (a * torch.eye(5, dtype=torch.float64) + (1 - a) * m64.expand(5, 5))
    Q = Q_t_given_s(schedule.alpha_bar(t), schedule.alpha_bar(s), m)[0]
    assert max_dev(Q, prod) <= 1e-5
    assert torch.allclose(Q.sum(-1), torch.ones(5))
    # and Qbar_s Q_{t|s} = Qbar_t
    chained = Qbar(schedule.alpha_bar(s), m)[0] @ Q
    assert max_dev(chained, Qbar(schedule.alpha_bar(t), m)[0]) <= 1e-6


# ----------------------------------------------------------------------------------------- posterior

@pytest.mark.parametrize("case", ["mixed", "prior"])
def test_posterior_matches_reference(fx, schedule, m, case):
    t = torch.tensor(fx[f"{case}_t_int"])
    s = torch.tensor(fx[f"{case}_s_int"])
    E_t = torch.tensor(fx[f"{case}_E_t"]).float()
    pred = torch.tensor(fx[f"{case}_pred_E_probs"])
    # the given probabilities are the softmax of the given logits
    assert max_dev(torch.softmax(torch.tensor(fx[f"{case}_pred_E_logits"]), -1), pred) <= 1e-6

    prob, inter = posterior_edge_probs(E_t, pred, Q_t(schedule.beta(t), m), Qbar(schedule.alpha_bar(s), m),
                                       Qbar(schedule.alpha_bar(t), m), return_intermediates=True)
    assert inter["p_s_and_t_given_0"].shape == (6, 18, 18, 5, 5)
    assert max_dev(inter["p_s_and_t_given_0"], fx[f"{case}_p_s_and_t_given_0_E"]) <= POSTERIOR_ATOL
    assert max_dev(inter["unnormalized"], fx[f"{case}_unnormalized_prob_E"]) <= POSTERIOR_ATOL
    assert max_dev(prob, fx[f"{case}_prob_E"]) <= POSTERIOR_ATOL
    # without intermediates: the same tensor
    assert torch.equal(posterior_edge_probs(E_t, pred, Q_t(schedule.beta(t), m), Qbar(schedule.alpha_bar(s), m),
                                            Qbar(schedule.alpha_bar(t), m)), prob)


def test_posterior_padding_and_prior_diagonal(fx, schedule, m):
    nm = torch.tensor(fx["node_mask"])
    pad = ~(nm[:, :, None] & nm[:, None, :])
    t = torch.tensor(fx["prior_t_int"])
    prob, inter = posterior_edge_probs(
        torch.tensor(fx["prior_E_t"]).float(), torch.tensor(fx["prior_pred_E_probs"]),
        Q_t(schedule.beta(t), m), Qbar(schedule.alpha_bar(t - 1), m), Qbar(schedule.alpha_bar(t), m), True)
    assert torch.all(inter["unnormalized"][pad] == 1e-5)
    assert torch.allclose(prob[pad], torch.full_like(prob[pad], 0.2))
    diag = torch.diagonal(prob, dim1=1, dim2=2)            # (B, K, n): prior diagonal is all-zero -> uniform
    assert torch.allclose(diag, torch.full_like(diag, 0.2))


@pytest.mark.parametrize("case", ["mixed", "prior"])
def test_sample_conventions_match_reference_draw(fx, case):
    """The seeded reference draw is RNG-specific; its deterministic parts must agree with ours."""
    nm = torch.tensor(fx["node_mask"])
    ref = torch.tensor(fx[f"{case}_E_s_sampled_seeded"]).float()
    ours = sample_edges(torch.tensor(fx[f"{case}_prob_E"]), nm,
                        torch.Generator().manual_seed(int(fx[f"{case}_sample_seed"])))
    pair = nm[:, :, None] & nm[:, None, :]
    for E in (ref, ours):
        assert torch.all(E[~pair] == 0)
        assert torch.equal(E, E.transpose(1, 2))
        assert torch.all(E[pair].sum(-1) == 1)
    eye = torch.eye(18, dtype=torch.bool).expand(6, 18, 18)
    assert torch.equal(ours[eye], ref[eye])                 # class-0 diagonal for real nodes, zero for padding


@pytest.mark.parametrize("case", ["mixed", "prior"])
def test_reverse_step_with_tiny_checkpoint(fx, schedule, m, tiny_state_dict, case):
    """Full step (network input -> tiny official decoder -> softmax -> posterior) vs the fixture.

    Needs graph_features and decoder; the extra features of disconnected graphs depend on the eigen-solver
    (conformance README section 5), so this end-to-end check uses the decoder-output tolerance.
    """
    from types import SimpleNamespace

    from matchms_diffms.model.config import preset
    from matchms_diffms.model.decoder import GraphTransformer
    from matchms_diffms.model.diffusion import reverse_step_probs

    config = preset("tiny")
    decoder = GraphTransformer(config).eval()
    decoder.load_state_dict({k[len("decoder."):]: v for k, v in tiny_state_dict.items()
                             if k.startswith("decoder.")}, strict=True)
    model = SimpleNamespace(decoder=decoder, config=config)
    t = torch.tensor(fx[f"{case}_t_int"])
    with torch.inference_mode():
        prob = reverse_step_probs(
            model, torch.tensor(fx["X"]).float(), torch.tensor(fx[f"{case}_E_t"]).float(),
            torch.tensor(fx["y_cond"]), torch.tensor(fx["node_mask"]), (t.float() / 500).reshape(-1, 1),
            Q_t(schedule.beta(t), m), Qbar(schedule.alpha_bar(t - 1), m), Qbar(schedule.alpha_bar(t), m))
    assert max_dev(prob, fx[f"{case}_prob_E"]) <= 1e-5
