"""Ranking of generated molecules and score calibration (ranking.py)."""
import json
import math

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import rdFingerprintGenerator

from matchms_diffms.ranking import (Calibration, Candidate, continuous_tanimoto, expected_calibration_error,
                                    fit_calibration, merge_ranked, morgan_bits, rank_candidates,
                                    reliability_table)

ETHANOL, DME = "CCO", "COC"            # both C2H6O
PROPANOL, IPA = "CCCO", "CC(C)O"       # both C3H8O


def mols(*smiles):
    return [Chem.MolFromSmiles(s) for s in smiles]


def test_continuous_tanimoto_values():
    b = np.array([1, 1, 0, 0], dtype=np.uint8)
    assert continuous_tanimoto(b, b.astype(float)) == 1.0
    assert continuous_tanimoto(b, np.array([0, 0, 1, 1.0])) == 0.0
    # sum(min) = 0.5 + 1.0 ; sum(max) = 1 + 1 + 0.25 + 0
    assert continuous_tanimoto(b, np.array([0.5, 1.0, 0.25, 0.0])) == pytest.approx(1.5 / 2.25, abs=1e-15)
    # binary p: ordinary Tanimoto |a&b| / |a|b|
    assert continuous_tanimoto(b, np.array([1, 0, 1, 0.0])) == pytest.approx(1 / 3, abs=1e-15)
    assert continuous_tanimoto(np.zeros(3), np.zeros(3)) == 0.0
    with pytest.raises(ValueError):
        continuous_tanimoto(np.zeros(3), np.zeros(4))


def test_morgan_bits_matches_rdkit_generator():
    mol = Chem.MolFromSmiles("c1ccccc1O")
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=4096)
    expected = np.zeros(4096, dtype=np.uint8)
    expected[list(gen.GetFingerprint(mol).GetOnBits())] = 1
    got = morgan_bits(mol)
    assert got.shape == (4096,) and got.dtype == np.uint8
    assert np.array_equal(got, expected)


def test_frequency_ranking_and_dedup_by_inchikey_block():
    # ethanol written three ways (same structure), DME twice
    samples = mols("CCO", "COC", "OCC", "C(O)C", "COC")
    ranked = rank_candidates(samples, None, "C2H6O", top_k=None, ranking="combined")
    assert [c.smiles for c in ranked] == ["CCO", "COC"]
    assert [c.count for c in ranked] == [3, 2]
    assert ranked[0].frequency == pytest.approx(0.6) and ranked[1].frequency == pytest.approx(0.4)
    # without a fingerprint the raw score is frequency_weight * frequency
    assert ranked[0].raw_score == pytest.approx(0.3) and ranked[0].score == pytest.approx(0.3)
    assert ranked[0].inchikey == Chem.MolToInchiKey(samples[0])
    assert all(c.formula == "C2H6O" and c.tanimoto == 0.0 for c in ranked)


def test_ties_first_seen_and_top_k_and_n_valid():
    ranked = rank_candidates(mols(DME, ETHANOL), None, None, top_k=None, n_valid=4)
    assert [c.smiles for c in ranked] == ["COC", "CCO"]          # tie -> first seen
    assert ranked[0].frequency == 0.25                             # count / n_valid
    assert ranked[0].formula == "C2H6O"                            # own formula when none given
    assert len(rank_candidates(mols(DME, ETHANOL), None, None, top_k=1)) == 1
    with pytest.raises(ValueError):
        rank_candidates(mols(DME, ETHANOL), None, None, n_valid=1)


def test_fingerprint_term_can_overturn_frequency():
    # predicted fingerprint = exactly isopropanol's bits: isopropanol (1 sample) beats propanol (2)
    fp = morgan_bits(Chem.MolFromSmiles(IPA)).astype(np.float32)
    ranked = rank_candidates(mols(PROPANOL, PROPANOL, IPA), fp, "C3H8O", top_k=None, ranking="combined")
    assert ranked[0].smiles == "CC(C)O"
    assert ranked[0].tanimoto == 1.0
    tp = continuous_tanimoto(morgan_bits(Chem.MolFromSmiles(PROPANOL)), fp)
    assert ranked[1].tanimoto == pytest.approx(tp) and tp < 0.5
    assert ranked[0].raw_score == pytest.approx(0.5 * (1 / 3) + 0.5 * 1.0)
    # frequency_weight=1 restores DiffMS' frequency ranking
    ranked_f = rank_candidates(mols(PROPANOL, PROPANOL, IPA), fp, "C3H8O", frequency_weight=1.0)
    assert ranked_f[0].smiles == "CCCO"
    assert [c.smiles for c in rank_candidates(mols(PROPANOL, PROPANOL, IPA), fp, "C3H8O", ranking="frequency")] \
        == [c.smiles for c in ranked_f]
    # the default ranking is the fingerprint alone
    ranked_fp = rank_candidates(mols(PROPANOL, PROPANOL, IPA), fp, "C3H8O")
    assert ranked_fp[0].smiles == "CC(C)O" and ranked_fp[0].raw_score == pytest.approx(1.0)
    with pytest.raises(ValueError):
        rank_candidates(mols(IPA), fp, "C3H8O", ranking="popularity")
    with pytest.raises(ValueError):
        rank_candidates(mols(IPA), fp, "C3H8O", ranking="frequency", frequency_weight=1.0)


def test_candidates_record_their_source():
    ranked = rank_candidates(mols(ETHANOL, DME, ETHANOL), None, "C2H6O", ranking="frequency",
                             sources=["sampled", "decoded", "decoded"])
    assert [(c.smiles, c.source) for c in ranked] == [("CCO", "sampled+decoded"), ("COC", "decoded")]
    assert Candidate.from_dict(ranked[1].to_dict()).source == "decoded"
    with pytest.raises(ValueError):
        rank_candidates(mols(ETHANOL), None, "C2H6O", sources=["sampled", "decoded"])


def test_torch_fingerprint_and_smiles_input():
    torch = pytest.importorskip("torch")
    fp = torch.from_numpy(morgan_bits(Chem.MolFromSmiles(ETHANOL)).astype(np.float32))
    ranked = rank_candidates(["CCO", "CCO"], fp, "C2H6O")
    assert ranked[0].count == 2 and ranked[0].tanimoto == 1.0 and ranked[0].score == 1.0
    with pytest.raises(ValueError):
        rank_candidates(["not a smiles"], None, None)


def test_candidate_dict_roundtrip_is_json_safe():
    c = rank_candidates(mols(ETHANOL), None, "C2H6O")[0]
    d = c.to_dict()
    assert set(d) >= {"smiles", "inchikey", "formula", "score", "count"}
    back = Candidate.from_dict(json.loads(json.dumps(d)))
    assert back == Candidate(**{**d})


def test_identity_calibration_clips():
    cal = Calibration()
    assert cal(-0.5) == 0.0 and cal(0.3) == 0.3 and cal(7.0) == 1.0
    assert np.allclose(cal(np.array([-1.0, 0.5, 2.0])), [0.0, 0.5, 1.0])


def test_isotonic_fit_on_synthetic_data_is_calibrated(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.uniform(0, 1, 20000)
    true_p = raw ** 2                                   # miscalibrated raw score
    correct = rng.uniform(0, 1, raw.size) < true_p
    cal = fit_calibration(raw, correct, method="isotonic", note="synthetic")
    assert cal.method == "isotonic"
    grid = np.linspace(0.05, 0.95, 10)
    assert np.max(np.abs(cal(grid) - grid ** 2)) < 0.05
    assert np.all(np.diff(cal(np.linspace(0, 1, 101))) >= 0)        # monotone
    ece_raw = expected_calibration_error(raw, correct)
    ece_cal = expected_calibration_error(cal(raw), correct)
    assert ece_raw > 0.1 and ece_cal < 0.02
    # persisted beside weights and found again
    cal.save(tmp_path / "calibration.json")
    again = Calibration.for_weights(tmp_path)
    assert again.method == "isotonic" and np.allclose(again(grid), cal(grid))
    assert Calibration.for_weights(tmp_path / "model.safetensors").method == "isotonic"
    assert Calibration.for_weights(tmp_path / "missing_dir" / "x.ckpt").method == "identity"


def test_isotonic_pav_exact_small_case():
    # points sorted by x with labels 1,0,1,1 -> PAV pools the first two to 0.5
    cal = fit_calibration([0.1, 0.2, 0.3, 0.4], [1, 0, 1, 1])
    assert cal(0.1) == pytest.approx(0.5) and cal(0.2) == pytest.approx(0.5)
    assert cal(0.3) == pytest.approx(1.0) and cal(0.0) == pytest.approx(0.5)
    assert cal(0.25) == pytest.approx(0.75)


def test_platt_fit_recovers_logistic():
    rng = np.random.default_rng(1)
    raw = rng.uniform(-1, 1, 20000)
    correct = rng.uniform(0, 1, raw.size) < 1 / (1 + np.exp(-(4 * raw - 1)))
    cal = fit_calibration(raw, correct, method="platt")
    assert cal.a == pytest.approx(4, abs=0.3) and cal.b == pytest.approx(-1, abs=0.15)
    assert 0 < cal(0.0) < 1
    assert Calibration.from_dict(json.loads(json.dumps(cal.to_dict()))).a == cal.a


def test_calibration_validation():
    with pytest.raises(ValueError):
        Calibration("magic")
    with pytest.raises(ValueError):
        Calibration("isotonic", x=[0.0, 1.0], y=[1.0, 0.0])
    with pytest.raises(ValueError):
        fit_calibration([], [])
    with pytest.raises(ValueError):
        fit_calibration([0.1], [1], method="beta")


def test_reliability_table():
    rows = reliability_table([0.05, 0.15, 0.15, 0.95, 1.0], [0, 1, 0, 1, 1], n_bins=10)
    assert len(rows) == 10
    assert rows[0]["n"] == 1 and rows[0]["accuracy"] == 0.0
    assert rows[1]["n"] == 2 and rows[1]["accuracy"] == 0.5 and rows[1]["mean_score"] == pytest.approx(0.15)
    assert rows[9]["n"] == 2 and rows[9]["accuracy"] == 1.0                 # 1.0 is in the last bin
    assert rows[5]["n"] == 0 and math.isnan(rows[5]["accuracy"])
    assert rows[1]["gap"] == pytest.approx(0.35)


def test_merge_ranked_by_score_then_order():
    def c(smiles, score, raw=0.0):
        mol = Chem.MolFromSmiles(smiles)
        return Candidate(smiles, Chem.MolToInchiKey(mol), "X", score, 1, 0.0, 0.0, raw)
    a = [c("CCO", 0.5), c("COC", 0.2)]
    b = [c("CCCO", 0.7), c("CC(C)O", 0.2, raw=0.3), c("OCC", 0.1)]
    merged = merge_ranked([a, b], top_k=None)
    assert [m.smiles for m in merged] == ["CCCO", "CCO", "CC(C)O", "COC"]   # OCC duplicate of CCO dropped
    assert len(merge_ranked([a, b], top_k=2)) == 2
