"""MassSpecGym adapter (``matchms_diffms_adapters.massspecgym.plugin``): TSV reading, prediction files, evaluation."""
from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from rdkit import Chem, DataStructs
from rdkit.Chem import rdFingerprintGenerator

from matchms_diffms_adapters.massspecgym import plugin as msg

FIXTURES = Path(__file__).parent / "fixtures" / "adapters"
TSV = FIXTURES / "massspecgym_adapter.tsv"


def cli_group():
    @click.group()
    def cli():
        pass

    msg.diffms_register_commands(cli=cli)
    return cli


def tanimoto(a: str, b: str) -> float:
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    return DataStructs.TanimotoSimilarity(gen.GetFingerprint(Chem.MolFromSmiles(a)),
                                          gen.GetFingerprint(Chem.MolFromSmiles(b)))


# ---------------------------------------------------------------------------------------------- reading
def test_read_massspecgym_tsv():
    spectra = msg.read_massspecgym(TSV)
    assert [s.get("identifier") for s in spectra] == ["MSGADP0001", "MSGADP0002", "MSGADP0003", "MSGADP0004"]
    first = spectra[0]
    assert first.peaks.mz.tolist() == [15.02293, 27.02293, 29.03858, 31.01784, 45.03349]
    assert first.peaks.intensities.tolist() == [0.08, 0.23, 1.0, 0.59, 0.14]
    assert (first.get("formula"), first.get("adduct"), first.get("precursor_mz")) == ("C2H6O", "[M+H]+", 47.04914)
    assert first.get("smiles") == "CCO" and first.get("fold") == "test"
    assert spectra[2].get("adduct") == "[M+Na]+"
    assert [s.get("identifier") for s in msg.read_massspecgym(TSV, fold="test", limit=2)] == ["MSGADP0001",
                                                                                              "MSGADP0002"]
    assert [s.get("identifier") for s in msg.read_massspecgym(TSV, fold="train")] == ["MSGADP0004"]


def test_query_spectrum_hides_labels():
    labelled = msg.read_massspecgym(TSV)[0]
    query = msg.query_spectrum(labelled)
    assert query.get("smiles") is None and query.get("inchikey") is None and query.get("formula") == "C2H6O"
    blind = msg.query_spectrum(labelled, with_formula=False)
    assert blind.get("formula") is None and blind.get("precursor_formula") is None
    assert blind.get("precursor_mz") == 47.04914
    assert labelled.get("smiles") == "CCO" and labelled.get("formula") == "C2H6O"          # input untouched


# ---------------------------------------------------------------------------------------------- prediction files
PREDS = [("MSGADP0001", ["CC=O", "OCC"]), ("MSGADP0002", ["CC(=O)O"]), ("MSGADP0004", [])]


def test_prediction_tsv_layout(tmp_path):
    path = tmp_path / "predictions.tsv"
    msg.write_predictions(PREDS, path)
    assert path.read_text() == ("identifier\tmols_pred\nMSGADP0001\tCC=O,OCC\nMSGADP0002\tCC(=O)O\n"
                                "MSGADP0004\t\n")
    assert msg.read_predictions(path) == {i: p for i, p in PREDS}


@pytest.mark.parametrize("suffix", [".tsv", ".csv", ".json", ".pkl"])
def test_prediction_round_trip(tmp_path, suffix):
    path = tmp_path / f"predictions{suffix}"
    preds = PREDS + [("MSGADP0003", [None, "CC(N)C(=O)O"])]
    msg.write_predictions(preds, path)
    allow = suffix == ".pkl"
    assert msg.read_predictions(path, allow_pickle=allow) == {i: p for i, p in preds}


def test_pickle_needs_permission_and_matches_massspecgym_frame(tmp_path):
    import pandas as pd

    path = tmp_path / "df_test.pkl"
    msg.write_predictions(PREDS, path)
    with pytest.raises(ValueError, match="allow-pickle"):
        msg.read_predictions(path)
    frame = pd.read_pickle(path)
    assert list(frame.columns) == ["identifier", "mols_pred"]
    assert frame["mols_pred"].tolist() == [["CC=O", "OCC"], ["CC(=O)O"], []]


def test_prediction_reader_errors(tmp_path):
    dup = tmp_path / "dup.tsv"
    dup.write_text("identifier\tmols_pred\nA\tCCO\nA\tCCC\n")
    with pytest.raises(ValueError, match="more than once"):
        msg.read_predictions(dup)
    cols = tmp_path / "cols.tsv"
    cols.write_text("id\tpred\nA\tCCO\n")
    with pytest.raises(ValueError, match="missing columns"):
        msg.read_predictions(cols)
    with pytest.raises(ValueError, match="unknown prediction format"):
        msg.write_predictions(PREDS, tmp_path / "p.txt")


# ---------------------------------------------------------------------------------------------- evaluation
def test_evaluate_prediction_file(tmp_path):
    path = tmp_path / "predictions.tsv"
    msg.write_predictions(PREDS[:2], path)
    # without --fold: the spectra that have predictions
    res = msg.evaluate_prediction_file(path, TSV, compute_mces=False)
    assert res["n_spectra"] == 2 and res["n_missing_predictions"] == 0
    assert res["top1_accuracy"] == pytest.approx(0.5) and res["top10_accuracy"] == pytest.approx(1.0)
    assert res["top1_tanimoto"] == pytest.approx((tanimoto("CCO", "CC=O") + 1.0) / 2)
    assert "top1_mces" not in res
    # --fold test: the third test spectrum has no prediction and counts as an empty list
    res = msg.evaluate_prediction_file(path, TSV, fold="test", compute_mces=True)
    assert res["n_spectra"] == 3 and res["n_missing_predictions"] == 1
    assert res["top1_accuracy"] == pytest.approx(1 / 3) and res["top10_accuracy"] == pytest.approx(2 / 3)
    assert res["top10_mces"] == pytest.approx((0 + 0 + 100) / 3)
    assert res["top1_mces"] == pytest.approx((1 + 0 + 100) / 3)             # ethanol vs acetaldehyde: 1 bond
    assert res["validity"] == 1.0 and res["formula_match"] == pytest.approx(2 / 3)


def test_evaluate_rejects_unknown_identifiers(tmp_path):
    path = tmp_path / "predictions.tsv"
    msg.write_predictions([("MSGADP0004", ["CN(C)C"]), ("NOT_THERE", ["C"])], path)
    with pytest.raises(ValueError, match="not in"):
        msg.evaluate_prediction_file(path, TSV, compute_mces=False)
    with pytest.raises(ValueError, match="fold 'test'"):                       # train spectrum in a test run
        msg.evaluate_prediction_file(path, TSV, fold="test", compute_mces=False)


def test_msg_evaluate_command(tmp_path):
    path = tmp_path / "predictions.json"
    msg.write_predictions(PREDS[:2], path)
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(cli_group(), ["msg-evaluate", str(path), "--labels", str(TSV), "--fold", "test",
                                              "--no-mces", "-o", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["top10_accuracy"] == pytest.approx(2 / 3) and metrics["fold"] == "test"
    bad = CliRunner().invoke(cli_group(), ["msg-evaluate", str(path), "--labels", str(TSV), "--fold", "train"])
    assert bad.exit_code != 0 and "not in" in bad.output


# ---------------------------------------------------------------------------------------------- prediction command
class FakeAnnotator:
    """Refuses to see labels; predicts a fixed list per formula (none without a formula)."""

    def __init__(self):
        self.seen = []

    def annotate(self, s):
        assert s.get("smiles") is None and s.get("inchikey") is None, "labels leaked into the query"
        self.seen.append(s.get("formula"))
        out = s.clone()
        smiles = {"C2H6O": ["COC", "CCO"], "C2H4O2": ["CC(=O)O"]}.get(s.get("formula"), [])
        out.set("diffms_candidates", json.dumps([{"smiles": x, "score": 0.5} for x in smiles]))
        return out


@pytest.mark.parametrize("blind", [False, True])
def test_msg_predict_command(monkeypatch, tmp_path, blind):
    from matchms_diffms import annotator

    fake = FakeAnnotator()
    monkeypatch.setattr(annotator.DiffMSAnnotator, "from_pretrained", staticmethod(lambda name, **kw: fake))
    out = tmp_path / "predictions.tsv"
    args = ["msg-predict", str(TSV), "-o", str(out), "--fold", "test", "--top-k", "1"]
    result = CliRunner().invoke(cli_group(), args + (["--without-formula"] if blind else []))
    assert result.exit_code == 0, result.output
    preds = msg.read_predictions(out)
    if blind:
        assert fake.seen == [None, None, None] and preds == {"MSGADP0001": [], "MSGADP0002": [], "MSGADP0003": []}
    else:
        assert fake.seen == ["C2H6O", "C2H4O2", "C3H7NO2"]
        assert preds == {"MSGADP0001": ["COC"], "MSGADP0002": ["CC(=O)O"], "MSGADP0003": []}   # top-k 1


@pytest.mark.slow
def test_msg_predict_and_evaluate_end_to_end(conformance_dir, tmp_path):
    """MassSpecGym TSV -> tiny official-format checkpoint -> predictions -> MassSpecGym metrics."""
    import torch
    from rdkit.Chem.rdMolDescriptors import CalcMolFormula

    torch.set_num_threads(1)
    out = tmp_path / "predictions.tsv"
    result = CliRunner().invoke(cli_group(), [
        "msg-predict", str(TSV), "-o", str(out), "--fold", "test", "-w", str(conformance_dir / "tiny_official.ckpt.gz"),
        "--samples", "64", "--steps", "10", "--top-k", "5"])
    assert result.exit_code == 0, result.output
    preds = msg.read_predictions(out)
    assert list(preds) == ["MSGADP0001", "MSGADP0002", "MSGADP0003"]
    truth = {"MSGADP0001": "C2H6O", "MSGADP0002": "C2H4O2", "MSGADP0003": "C3H7NO2"}
    assert any(preds.values()), "no prediction at 64 x 10"
    for identifier, smiles in preds.items():
        assert len(smiles) <= 5
        for s in smiles:
            assert CalcMolFormula(Chem.MolFromSmiles(s)) == truth[identifier]      # formula given: formula-exact
    metrics = msg.evaluate_prediction_file(out, TSV, fold="test", compute_mces=False)
    assert metrics["n_spectra"] == 3 and metrics["validity"] == 1.0 and metrics["formula_match"] == 1.0


def test_plugin_registers_with_pluggy():
    """The module validates against the hook specifications and adds its commands through the hook."""
    import pluggy

    from matchms_diffms import hookspecs

    pm = pluggy.PluginManager("matchms_diffms")
    pm.add_hookspecs(hookspecs)
    pm.register(msg, name="massspecgym")
    pm.check_pending()
    group = click.Group("cli")
    pm.hook.diffms_register_commands(cli=group)
    assert sorted(group.commands) == ['msg-evaluate', 'msg-predict']
