"""Tests of the evaluation harness (MassSpecGym de novo metrics, random baseline, evaluate_file, CLI)."""
import json
import time
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from rdkit import Chem
from rdkit.Chem import rdFingerprintGenerator, rdMolDescriptors

from matchms_diffms import evaluate as ev
from matchms_diffms.chem.formula import Formula

FIXTURES = Path(__file__).resolve().parent / "fixtures"

ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
ASPIRIN_OTHER_WRITING = "OC(=O)c1ccccc1OC(C)=O"
SALICYLIC = "O=C(O)c1ccccc1O"


def _tanimoto_numpy(a, b):
    """Tanimoto of Morgan r2/2048 bit vectors computed with numpy (independent of DataStructs)."""
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    fa = gen.GetFingerprintAsNumPy(Chem.MolFromSmiles(a)).astype(bool)
    fb = gen.GetFingerprintAsNumPy(Chem.MolFromSmiles(b)).astype(bool)
    return (fa & fb).sum() / (fa | fb).sum()


# ----------------------------------------------------------------------------------------------- metrics
def test_identical_molecule_gives_perfect_scores():
    m = ev.spectrum_metrics(ASPIRIN, [ASPIRIN_OTHER_WRITING], mces=ev.MCESCache())
    assert m["top1_accuracy"] == 1.0 and m["top10_accuracy"] == 1.0
    assert m["top1_mces"] == 0.0 and m["top10_mces"] == 0.0
    assert m["top1_tanimoto"] == 1.0 and m["top10_tanimoto"] == 1.0
    assert (m["n_predictions"], m["n_valid"], m["n_formula_match"]) == (1, 1, 1)


def test_different_molecule_mces_and_tanimoto():
    m = ev.spectrum_metrics(ASPIRIN, [SALICYLIC], mces=ev.MCESCache())
    assert m["top1_accuracy"] == 0.0
    assert m["top1_mces"] == 4.0          # evaluation.md 1.4 sanity value
    expected = _tanimoto_numpy(ASPIRIN, SALICYLIC)
    assert 0 < expected < 1
    assert m["top1_tanimoto"] == pytest.approx(expected, abs=1e-12)
    assert m["n_formula_match"] == 0


@pytest.mark.parametrize("predictions", [[], [None], ["not a smiles", None, ""]])
def test_missing_or_invalid_predictions(predictions):
    m = ev.spectrum_metrics(ASPIRIN, predictions, mces=ev.MCESCache())
    for k in (1, 10):
        assert m[f"top{k}_accuracy"] == 0.0
        assert m[f"top{k}_mces"] == 100.0
        assert m[f"top{k}_tanimoto"] == 0.0
    assert m["n_valid"] == 0 and m["n_predictions"] == len(predictions)


def test_rank_order_is_used_as_given():
    preds = [SALICYLIC, None, ASPIRIN_OTHER_WRITING] + ["CCO"] * 10
    m = ev.spectrum_metrics(ASPIRIN, preds, mces=ev.MCESCache())
    assert m["top1_accuracy"] == 0.0 and m["top10_accuracy"] == 1.0
    assert m["top1_mces"] == 4.0 and m["top10_mces"] == 0.0
    assert m["top1_tanimoto"] < 1.0 and m["top10_tanimoto"] == 1.0
    # the true molecule at rank 11 is outside the top 10
    late = ["CCO"] * 10 + [ASPIRIN]
    m = ev.spectrum_metrics(ASPIRIN, late, mces=None)
    assert m["top10_accuracy"] == 0.0 and "top10_mces" not in m
    assert m["n_valid"] == 11 and m["n_formula_match"] == 1


def test_accuracy_uses_first_inchikey_block_only():
    true = "N[C@@H](Cc1c[nH]c2ccccc12)C(=O)O"           # L-tryptophan
    m = ev.spectrum_metrics(true, ["N[C@H](Cc1c[nH]c2ccccc12)C(=O)O"])  # D-tryptophan
    assert m["top1_accuracy"] == 1.0


def test_mces_minimum_is_capped_at_100():
    cache = ev.MCESCache()
    long_chain = "C" * 110
    assert cache(long_chain, "c1ccccc1") > 100          # a lower bound above the threshold
    m = ev.spectrum_metrics(long_chain, ["c1ccccc1"], mces=cache)
    assert m["top1_mces"] == 100.0


def test_mces_cache_computes_each_pair_once():
    cache = ev.MCESCache()
    ev.evaluate_predictions([ASPIRIN, ASPIRIN], [[SALICYLIC, SALICYLIC], [SALICYLIC]], mces=cache)
    assert cache.n_computed == 1 and len(cache) == 1


def test_true_smiles_must_parse():
    with pytest.raises(ValueError, match="does not parse"):
        ev.spectrum_metrics("C1CC", [ASPIRIN])


def test_aggregate_means_and_pooled_ratios():
    res = ev.evaluate_predictions([ASPIRIN, "CCO"], [[SALICYLIC, None, ASPIRIN, "xx"], []],
                                  seconds_per_spectrum=2.5)
    assert res["n_spectra"] == 2 and res["n_predictions"] == 4
    assert res["top1_accuracy"] == 0.0 and res["top10_accuracy"] == 0.5
    assert res["top1_mces"] == pytest.approx((4.0 + 100.0) / 2)
    assert res["top10_mces"] == pytest.approx((0.0 + 100.0) / 2)
    assert res["top10_tanimoto"] == pytest.approx(0.5)
    assert res["top1_tanimoto"] == pytest.approx(_tanimoto_numpy(ASPIRIN, SALICYLIC) / 2)
    assert res["validity"] == 0.5 and res["formula_match"] == 0.25 and res["num_valid_mols"] == 1.0
    assert res["seconds_per_spectrum"] == 2.5
    assert set(ev.METRIC_KEYS) <= set(res)


def test_aggregate_of_nothing():
    res = ev.aggregate([])
    assert res["n_spectra"] == 0 and res["validity"] is None and res["top1_accuracy"] is None


# ----------------------------------------------------------------------------------------------- baseline
@pytest.mark.parametrize("formula", ["C6H6", "C8H10N4O2", "C9H11Cl3NO3PS", "C2H6O", "C20H25N3O",
                                     "C2H7NO3S", "CH5O3P", "C12H6Br2I2", "C24H30N2O4"])
def test_random_baseline_valid_exact_formula(formula):
    smiles = ev.random_formula_baseline(formula, 10, seed=7)
    assert len(smiles) == (2 if formula == "C2H6O" else 10)   # ethanol and dimethyl ether only
    assert len(set(smiles)) == len(smiles)
    for s in smiles:
        mol = Chem.MolFromSmiles(s)
        assert mol is not None
        assert len(Chem.GetMolFrags(mol)) == 1
        assert all(a.GetFormalCharge() == 0 and a.GetNumRadicalElectrons() == 0 for a in mol.GetAtoms())
        assert Formula.parse(rdMolDescriptors.CalcMolFormula(mol)) == Formula.parse(formula)


def test_random_baseline_deterministic():
    a = ev.random_formula_baseline("C20H25N3O", 10, seed=3)
    assert a == ev.random_formula_baseline("C20H25N3O", 10, seed=3)
    assert a != ev.random_formula_baseline("C20H25N3O", 10, seed=4)


def test_random_baseline_impossible_and_small_formulas():
    assert ev.random_formula_baseline("CH3", 10, seed=0) == []       # odd electron count
    assert ev.random_formula_baseline("C2H8", 10, seed=0) == []      # too many hydrogens
    assert ev.random_formula_baseline("H2", 10, seed=0) == []        # no heavy atom
    assert ev.random_formula_baseline("CH4", 10, seed=0) == ["C"]    # only one structure exists
    assert sorted(ev.random_formula_baseline("C4H10", 10, seed=0)) == ["CC(C)C", "CCCC"]


def test_random_baseline_is_fast():
    start = time.perf_counter()
    out = ev.random_formula_baseline("C24H30N2O4", 10, seed=1)       # 30 heavy atoms
    elapsed = time.perf_counter() - start
    assert len(out) == 10
    assert elapsed < 1.0, f"{elapsed:.2f} s for 10 molecules (target < 0.5 s on an idle core)"


# ----------------------------------------------------------------------------------------------- files / CLI
def test_evaluate_file_random_baseline():
    res = ev.evaluate_file(FIXTURES / "massbank_small.mgf", weights="random-formula", top_k=4, seed=0)
    assert res["n_spectra"] == 3
    assert res["validity"] == 1.0 and res["formula_match"] == 1.0
    assert res["n_predictions"] == 12
    assert 0 <= res["top10_tanimoto"] <= 1 and res["top10_mces"] > 0
    assert res["top10_mces"] <= res["top1_mces"]
    assert res["seconds_per_spectrum"] > 0
    again = ev.evaluate_file(FIXTURES / "massbank_small.mgf", weights="random-formula", top_k=4, seed=0,
                             compute_mces=False)
    assert again["top10_tanimoto"] == res["top10_tanimoto"] and "top10_mces" not in again


def _duplicated_mgf(tmp_path):
    text = (FIXTURES / "massbank_small.mgf").read_text()
    first = text.split("END IONS")[0] + "END IONS\n"
    path = tmp_path / "dup.mgf"
    path.write_text(first.replace("TS000001", "TS000009") + "\n" + text)
    return path


def test_evaluate_file_one_per_structure_and_limit(tmp_path):
    path = _duplicated_mgf(tmp_path)
    kw = dict(weights="random-formula", compute_mces=False)
    assert ev.evaluate_file(path, **kw)["n_spectra"] == 3
    assert ev.evaluate_file(path, one_per_structure=False, **kw)["n_spectra"] == 4
    assert ev.evaluate_file(path, limit=2, **kw)["n_spectra"] == 2
    kept = ev.load_labelled_spectra(path)
    assert [s.get("spectrum_id") for s in kept] == ["MSBNK-Test-TS000009", "MSBNK-Test-TS000002",
                                                   "MSBNK-Test-TS000003"]


class _FakeAnnotator:
    """Stands in for DiffMSAnnotator (contract: from_pretrained(...), annotate(spectrum) -> annotated clone)."""

    calls = {}

    def __init__(self, as_json):
        self.as_json = as_json

    @classmethod
    def from_pretrained(cls, name_or_path="default", **kwargs):
        cls.calls = dict(kwargs, name=name_or_path)
        return cls(as_json=name_or_path == "json")

    def annotate(self, s):
        out = s.clone()
        cands = [{"smiles": SALICYLIC, "score": 0.6}, {"smiles": s.get("smiles"), "score": 0.4}]
        out.set("diffms_candidates", json.dumps(cands) if self.as_json else cands)
        out.set("diffms_status", "ok")
        return out


@pytest.mark.parametrize("name", ["list", "json"])
def test_evaluate_file_reads_annotator_candidates(monkeypatch, name):
    from matchms_diffms import batch, weights

    monkeypatch.setattr(batch, "annotator_class", lambda: _FakeAnnotator)
    monkeypatch.setattr(weights, "weights_sha256", lambda name: "f" * 64)       # the fake's weights have no file
    res = ev.evaluate_file(FIXTURES / "massbank_small.mgf", weights=name, n_samples=7, steps=3, top_k=5,
                           seed=11, compute_mces=False)
    assert _FakeAnnotator.calls == {"name": name, "n_samples": 7, "steps": 3, "top_k": 5, "seed": 11,
                                    "max_formulas": 3, "complete": True, "ranking": "fingerprint",
                                    "max_heavy_atoms": None}
    assert res["weights_sha256"] == "f" * 64
    assert res["top1_accuracy"] == 0.0 and res["top10_accuracy"] == 1.0
    assert res["validity"] == 1.0 and res["formula_match"] == 0.5
    assert res["status_counts"] == {"ok": 3}


def test_cli_evaluate_via_hook(tmp_path):
    @click.group()
    def cli():
        pass

    from matchms_diffms.commands import evaluate as evaluate_commands

    evaluate_commands.diffms_register_commands(cli)
    assert "evaluate" in cli.commands
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(cli, ["evaluate", str(FIXTURES / "massbank_small.mgf"), "--weights",
                                      "random-formula", "-o", str(out), "--no-mces", "--limit", "2",
                                      "--seed", "5"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["n_spectra"] == 2 and data["seed"] == 5 and data["weights"] == "random-formula"
    assert data["formula_match"] == 1.0 and "top1_accuracy" in data
    assert np.isfinite(data["seconds_per_spectrum"])


def test_mces_failure_is_counted_not_fatal(monkeypatch, caplog):
    import myopic_mces

    def boom(*args, **kwargs):
        raise RuntimeError("solver exploded")

    monkeypatch.setattr(myopic_mces, "MCES", boom)
    cache = ev.MCESCache()
    with caplog.at_level("WARNING", logger="matchms.diffms"):
        assert cache(ASPIRIN, SALICYLIC) == 100.0
    assert cache.n_errors == 1 and "solver exploded" in caplog.text


def test_mces_cache_file_round_trip_keeps_settings_apart(tmp_path):
    path = tmp_path / "mces.jsonl"
    first = ev.MCESCache()
    assert first.load(path) == 0                                    # no file yet: nothing to add
    assert first(ASPIRIN, SALICYLIC) == 4.0
    first.save(path)
    wide = ev.MCESCache(threshold=100, always_stronger_bound=False)
    wide(ASPIRIN, SALICYLIC)
    wide.save(path)                                                  # a second settings block, same file
    assert len(path.read_text().splitlines()) == 2

    again = ev.MCESCache()
    assert again.load(path) == 1                                     # only the line with its own settings
    assert again(ASPIRIN, SALICYLIC) == 4.0 and again.n_computed == 0
    limited = ev.MCESCache(time_limit=5)
    assert limited.load(path) == 0                                   # other settings: not reused


def test_mces_cache_file_skips_failed_pairs_and_refuses_bad_lines(tmp_path, monkeypatch):
    import myopic_mces

    monkeypatch.setattr(myopic_mces, "MCES", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("down")))
    cache = ev.MCESCache()
    cache(ASPIRIN, SALICYLIC)
    path = cache.save(tmp_path / "mces.jsonl")
    assert cache.n_errors == 1 and path.read_text() == ""            # a failure is not a distance
    path.write_text('{"true": "CCO", "pred": "CC"}\n')
    with pytest.raises(ValueError, match="line 1: not an MCES distance line"):
        ev.MCESCache().load(path)


def test_evaluate_reuses_the_mces_cache_file(tmp_path):
    """A second evaluation of the same spectra solves no pair; the metrics are the same (2 workers)."""
    cache = tmp_path / "mces.jsonl"
    kw = dict(weights="random-formula", top_k=3, seed=0, workers=2, mces_cache=cache)
    first = ev.evaluate_file(FIXTURES / "massbank_small.mgf", **kw)
    assert first["mces_computed"] > 0 and first["mces_cached"] == 0
    assert len(cache.read_text().splitlines()) == first["mces_computed"]
    second = ev.evaluate_file(FIXTURES / "massbank_small.mgf", **kw)
    assert second["mces_computed"] == 0 and second["mces_cached"] == first["mces_computed"]
    assert second["top10_mces"] == first["top10_mces"] and second["top1_mces"] == first["top1_mces"]


@pytest.mark.parametrize("workers", [1, 2])
def test_interrupted_evaluation_keeps_the_distances_it_solved(tmp_path, monkeypatch, workers):
    """MCES is most of an evaluation's time: what was solved before an interruption is in the cache file."""
    cache = tmp_path / "mces.jsonl"
    kw = dict(weights="random-formula", top_k=3, seed=0, workers=workers, mces_cache=cache)
    full = ev.evaluate_file(FIXTURES / "massbank_small.mgf", **{**kw, "mces_cache": tmp_path / "full.jsonl"})
    monkeypatch.setattr(ev, "MCES_SAVE_SECONDS", 0.0)
    save = ev._CacheSaver.__call__

    def save_then_interrupt(self, force=False):                      # the run stops after its first save
        save(self, force)
        raise KeyboardInterrupt

    monkeypatch.setattr(ev._CacheSaver, "__call__", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        ev.evaluate_file(FIXTURES / "massbank_small.mgf", **kw)
    kept = len(cache.read_text().splitlines())
    assert 0 < kept < full["mces_computed"]                          # part of the run, not nothing
    monkeypatch.undo()
    again = ev.evaluate_file(FIXTURES / "massbank_small.mgf", **kw)
    assert again["mces_cached"] == kept and again["mces_computed"] == full["mces_computed"] - kept
    assert again["top10_mces"] == full["top10_mces"]


def test_cli_evaluate_bad_mces_cache_is_a_clear_error(tmp_path):
    from matchms_diffms.commands import evaluate as evaluate_commands

    @click.group()
    def cli():
        pass

    evaluate_commands.diffms_register_commands(cli)
    bad = tmp_path / "mces.jsonl"
    bad.write_text("not json\n")
    result = CliRunner().invoke(cli, ["evaluate", str(FIXTURES / "massbank_small.mgf"), "--weights",
                                      "random-formula", "--mces-cache", str(bad), "-o", str(tmp_path / "m.json")])
    assert result.exit_code == 1 and "line 1: not an MCES distance line" in result.output
    assert bad.read_text() == "not json\n"                          # the user's file is left as it was


def test_evaluate_workers_give_the_same_predictions(tmp_path):
    from reliability_helpers import make_tiny_weights

    weights = str(make_tiny_weights(tmp_path / "tiny"))
    runs = {}
    for workers in (1, 2):
        rows: list = []
        res = ev.evaluate_file(FIXTURES / "massbank_small.mgf", weights=weights, n_samples=6, steps=4, top_k=3,
                               seed=2, compute_mces=True, details=rows, workers=workers)
        runs[workers] = (res, rows)
    (one, rows1), (two, rows2) = runs[1], runs[2]
    assert any(r["predictions"] for r in rows1)                      # something to compare
    assert [(r["id"], r["predictions"]) for r in rows1] == [(r["id"], r["predictions"]) for r in rows2]
    keys = set(ev.METRIC_KEYS) - {"seconds_per_spectrum"}
    assert {k: one.get(k) for k in keys} == {k: two.get(k) for k in keys}
    assert one["top10_mces"] is not None and one["mces_errors"] == two["mces_errors"] == 0
    assert [r["top10_mces"] for r in rows1] == [r["top10_mces"] for r in rows2]


def test_evaluate_with_both_baselines_intervals_and_diffms_variant(tmp_path):
    """The metrics JSON carries intervals, the DiffMS variant, the weights' sha256, the share of decoded
    candidates, and both baselines with paired differences on the same spectra."""
    from reliability_helpers import make_tiny_weights

    from matchms_diffms.weights import sha256_file

    weights = make_tiny_weights(tmp_path / "tiny")
    res = ev.evaluate_file(FIXTURES / "massbank_small.mgf", weights=str(weights), n_samples=6, steps=4, top_k=3,
                           seed=2, compute_mces=False, baselines=ev.BASELINES, ranking="fingerprint")
    assert res["weights_sha256"] == sha256_file(weights / "model.safetensors")
    assert res["ranking"] == "fingerprint"
    iv = res["intervals"]["top10_tanimoto"]
    assert iv["n"] == 3 and iv["low"] <= iv["mean"] <= iv["high"]
    assert iv["mean"] == pytest.approx(res["top10_tanimoto"])
    assert set(res["diffms"]) >= {"top1_accuracy", "top10_tanimoto"}
    assert 0 <= res["decoded_share"] <= 1 and sum(res["candidate_sources"].values()) == res["n_predictions"]
    assert set(res["baselines"]) == set(ev.BASELINES)
    ranked = res["baselines"]["random-formula-ranked"]
    assert ranked["n_spectra"] == 3 and ranked["formula_match"] == 1.0
    assert ranked["candidate_sources"] and set(ranked["candidate_sources"]) == {"random"}
    for name in ev.BASELINES:
        diff = res["paired"][f"{weights} - {name}"]["top10_tanimoto"]
        assert diff["mean"] == pytest.approx(res["top10_tanimoto"] - res["baselines"][name]["top10_tanimoto"])


def test_diffms_variant_matches_inchi_and_canonical_tautomers():
    # 2-hydroxypyridine and 2-pyridone are tautomers: same InChI, Tanimoto 1 after canonicalization
    out = ev.diffms_spectrum_metrics("Oc1ccccn1", ["O=c1cccc[nH]1", None], ks=(1, 10))
    assert out["top1_accuracy"] == 1.0 and out["top1_tanimoto"] == 1.0
    msg = ev.spectrum_metrics("Oc1ccccn1", ["O=c1cccc[nH]1"], ks=(1,))
    assert msg["top1_accuracy"] == 1.0 and msg["top1_tanimoto"] < 1.0   # MassSpecGym: no canonicalization
