"""The decoder metric (true fingerprint -> structure) on a tiny hand-made molecule set."""
import json

import pytest
from click.testing import CliRunner

from matchms_diffms.cli import main
from matchms_diffms.evaluate_decoder import evaluate_decoder, read_molecules
from reliability_helpers import make_tiny_weights

SMILES = ["CCO", "OCC", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "C1CCNCC1", "CCBr", "[NH4+].[Cl-]", "not_a_smiles",
          "CC(C)CC(C)C(=O)O"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_weights(tmp_path_factory.mktemp("w") / "tiny")


@pytest.fixture()
def smi(tmp_path):
    path = tmp_path / "held_out.smi"
    path.write_text("smiles\n" + "\n".join(SMILES) + "\n")
    return path


def test_read_molecules_dedupes_and_filters(smi):
    got, skipped = read_molecules(smi, atom_types=["C", "O", "N"])
    assert got == ["CCO", "Oc1ccccc1", "CC(=O)Nc1ccc(O)cc1", "C1CCNCC1", "CC(C)CC(C)C(=O)O"]
    assert skipped == {"duplicate": 1, "unsupported_element": 1, "charged_or_fragments": 1,
                       "invalid_smiles": 1}


def test_training_fold_is_refused(tmp_path):
    path = tmp_path / "massbank_train.smi"
    path.write_text("CCO\n")
    with pytest.raises(ValueError, match="training fold"):
        read_molecules(path)


def test_metrics_are_consistent_and_deterministic(smi, tiny):
    a = evaluate_decoder(smi, str(tiny), n_samples=8, steps=3, limit=4, seed=1)
    b = evaluate_decoder(smi, str(tiny), n_samples=8, steps=3, limit=4, seed=1)
    a["settings"].pop("seconds"), b["settings"].pop("seconds")
    assert a == b
    assert a["settings"]["n_molecules"] == 4
    for m in a["per_molecule"]:
        assert 0 <= m["formula_exact"] <= m["single_fragment"] <= m["valid"] <= 1
        for mode in ("sampled", "completed"):
            r = m[mode]
            assert r["top1"] <= r["top10"] and r["tanimoto_top1"] <= r["tanimoto_top10"] <= 1
            assert r["top1"] in (0.0, 1.0)
            if r["top1"]:
                assert r["tanimoto_top1"] == 1.0
        # a found structure among the formula-exact samples is a top-10 candidate without completion
        # only if fewer than 11 structures were sampled; at least it is one when it is the only one
        assert m["found"] >= m["sampled"]["top10"]
    total = a["total"]["valid"]
    assert total["low"] <= total["mean"] <= total["high"]
    for m in a["per_molecule"]:                 # the baseline ranks random formula-exact molecules
        b = m["baseline"]
        assert 0 < b["n"] <= 8 and b["top1"] <= b["top10"] and b["tanimoto_top1"] <= 1
    assert set(a["total"]["vs_baseline"]) == {"top1", "top10", "tanimoto_top1", "tanimoto_top10"}


def test_exact_model_recovers_molecules(smi, tiny, monkeypatch):
    """A 'decoder' that returns the true graph must score top-1 = 1 and Tanimoto 1 (the metric can pass)."""
    import numpy as np
    from rdkit import Chem

    from matchms_diffms.chem.molecules import mol_to_graph
    from matchms_diffms.model.diffms import DiffMS

    truth = {}
    for s in read_molecules(smi, atom_types=["C", "O", "N"])[0]:
        mol = Chem.MolFromSmiles(s)
        truth[tuple(a.GetSymbol() for a in mol.GetAtoms())] = mol_to_graph(s, ["C", "O", "N"])[1]

    def fake_sample(self, atom_types, y, n_samples=100, steps=None, generator=None, **kw):
        adj = np.repeat(truth[tuple(atom_types)][None], n_samples, axis=0)
        return (adj, None) if kw.get("return_probs") else adj          # no probabilities: decode from the graph

    monkeypatch.setattr(DiffMS, "sample", fake_sample)
    r = evaluate_decoder(smi, str(tiny), n_samples=4, steps=2, limit=5, seed=0)
    for key in ("valid", "single_fragment", "formula_exact", "found"):
        assert r["total"][key]["mean"] == 1.0
    for mode in ("sampled", "completed"):
        assert r["total"][mode]["top1"]["mean"] == 1.0
        assert r["total"][mode]["tanimoto_top1"]["mean"] == 1.0
    # random molecules of the same formula rarely reach the true one: the paired difference is positive
    assert r["total"]["vs_baseline"]["tanimoto_top1"]["mean"] > 0


def test_command_prints_table_and_writes_json(smi, tiny, tmp_path):
    out = tmp_path / "dec.json"
    res = CliRunner().invoke(main, ["evaluate-decoder", str(smi), "--weights", str(tiny), "--samples", "4",
                                    "--steps", "2", "--limit", "2", "--no-baseline", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "formula-exact" in res.output and "top-10" in res.output
    data = json.loads(out.read_text())
    assert data["settings"]["n_molecules"] == 2 and len(data["per_molecule"]) == 2
    assert "baseline" not in data["total"]


def test_default_atom_limit_is_the_trained_one(smi, tmp_path):
    """Weights that accept larger formulas than they were trained on are evaluated on the trained sizes
    unless --max-atoms says otherwise (the 8-atom paracetamol-like molecules are above 7)."""
    weights = make_tiny_weights(tmp_path / "limit", max_n_nodes=7, max_heavy_atoms=20)
    trained = evaluate_decoder(smi, str(weights), n_samples=2, steps=1, limit=10, baseline=False)
    assert trained["settings"]["max_atoms"] == 7
    assert all(m["heavy_atoms"] <= 7 for m in trained["per_molecule"])
    raised = evaluate_decoder(smi, str(weights), n_samples=2, steps=1, limit=10, max_atoms=20, baseline=False)
    assert raised["settings"]["max_atoms"] == 20
    assert max(m["heavy_atoms"] for m in raised["per_molecule"]) > 7
    with pytest.raises(ValueError, match="max_heavy_atoms"):
        evaluate_decoder(smi, str(weights), n_samples=2, steps=1, max_atoms=21, baseline=False)
