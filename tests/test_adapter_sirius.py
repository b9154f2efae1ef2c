"""SIRIUS adapter (``matchms_diffms_adapters.sirius.plugin``): formula identification tables of SIRIUS 6 / earlier 6.x /
SIRIUS 5 as formula candidates, and the de novo structure table."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from matchms import Spectrum

from matchms_diffms_adapters.mzmine.fbmn import read_mzmine_mgf
from matchms_diffms_adapters.sirius import plugin as sirius

FIXTURES = Path(__file__).parent / "fixtures" / "adapters"
SIRIUS6 = FIXTURES / "sirius6"
SIRIUS_MGF = FIXTURES / "mzmine_sirius.mgf"


def cli_group():
    @click.group()
    def cli():
        pass

    sirius.diffms_register_commands(cli=cli)
    return cli


def read_tsv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


# ---------------------------------------------------------------------------------------------- reading
def test_sirius6_folder_prefers_all_ranks(caplog):
    assert sirius.find_formula_table(SIRIUS6).name == "formula_identifications_all.tsv"
    with caplog.at_level("WARNING", logger="matchms.diffms"):
        table = sirius.read_formula_identifications(SIRIUS6)
    assert "1 row(s) without feature id or formula" in caplog.text                # the N/A row of feature 9
    assert sorted(table) == ["1", "2", "3"]
    first, second = table["1"]
    assert (first.rank, first.formula, first.adduct, first.score) == (1, "C2H6O", "[M+H]+", 12.483)
    assert (second.rank, second.formula, second.adduct) == (2, "C2H8O2", "[M-H2O+H]+")
    assert first.formula_id == "680812345678901001" and first.aligned_feature_id == "680812345678900001"
    assert first.precursor_formula == "C2H7O" and first.zodiac_score is None
    only_top = sirius.read_formula_identifications(SIRIUS6 / "formula_identifications.tsv")
    assert [e.formula for e in only_top["1"]] == ["C2H6O"]


def test_sirius5_and_early_sirius6_headers():
    old = sirius.read_formula_identifications(FIXTURES / "sirius5_formula_identifications.tsv")
    assert sorted(old) == ["1", "2"]                                           # featureId, not the 'id' folder
    assert old["1"][0].score == 0.912 and old["1"][0].sirius_score == 12.48    # ZodiacScore preferred
    assert old["1"][0].rank == 1
    early = sirius.read_formula_identifications(FIXTURES / "sirius60_formula_identifications.tsv")
    assert list(early) == ["3"] and early["3"][0].aligned_feature_id == "7"    # providedFeatureId wins


def test_lenient_parsing_edge_cases(tmp_path):
    path = tmp_path / "formula_identifications.tsv"
    path.write_text("molecularFormula\tadduct\tSiriusScore\tmappingFeatureId\talignedFeatureId\n"
                    "C2H6O\t[M + H]+\tN/A\t\t42\n"          # empty mapping id -> aligned id, no rank -> file order
                    "C2H8O2\t[M - H2O + H]+\t3.5\t\t42\n"
                    "C2H6O\t[M + H]+\t9.0\t\t42\n")         # duplicate pair: the first (better) rank is kept
    table = sirius.read_formula_identifications(path)
    assert [(e.formula, e.adduct, e.score) for e in table["42"]] == [("C2H6O", "[M+H]+", None),
                                                                      ("C2H8O2", "[M-H2O+H]+", 3.5)]
    bad = tmp_path / "bad.tsv"
    bad.write_text("molecularFormula\tadduct\nC2H6O\t[M+H]+\n")
    with pytest.raises(ValueError, match="feature id"):
        sirius.read_formula_identifications(bad)
    with pytest.raises(FileNotFoundError):
        sirius.find_formula_table(tmp_path / "nothing_here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="sirius summaries"):
        sirius.find_formula_table(tmp_path / "empty")


def test_context_feeds_the_builtin_sirius_provider():
    """The mapping we build is what matchms_diffms.formula_sources reads, keyed by MZmine's FEATURE_ID."""
    from matchms_diffms.formula_sources import sirius_candidates

    context = {"sirius_formulas": sirius.load_sirius_formulas(SIRIUS6), "max_formulas": 3}
    assert context["sirius_formulas"]["1"] == [("C2H6O", "[M+H]+", 12.483), ("C2H8O2", "[M-H2O+H]+", 9.117)]
    spectra = read_mzmine_mgf(SIRIUS_MGF)
    cands = sirius_candidates(spectra[0], context)
    assert [(c.formula.hill(), c.adduct.name, c.source, c.score, c.note) for c in cands] == [
        ("C2H6O", "[M+H]+", "sirius", 12.483, None), ("C2H8O2", "[M-H2O+H]+", "sirius", 9.117, None)]
    assert [c.formula.hill() for c in sirius_candidates(spectra[2], context)] == ["C3H9N"]


def test_sirius_adduct_spelling():
    assert sirius.sirius_adduct("[M+H]+") == "[M + H]+"
    assert sirius.sirius_adduct("[M-H2O+H]+") == "[M - H2O + H]+"
    assert sirius.sirius_adduct("[M]+") == "[M]+"
    assert sirius.sirius_adduct("[M-H]-") == "[M - H]-"


# ---------------------------------------------------------------------------------------------- writing
def annotated(feature_id, candidates, formula, source="sirius", adduct="[M+H]+"):
    md = {"feature_id": feature_id, "scans": feature_id, "precursor_mz": 47.0491, "retention_time": 65.4,
          "diffms_status": "ok", "diffms_candidates": json.dumps(candidates), "diffms_formula": formula,
          "diffms_formula_source": source, "diffms_adduct": adduct, "diffms_model": "tiny@0123456789ab"}
    return Spectrum(mz=np.array([29.0]), intensities=np.array([1.0]), metadata=md)


def test_denovo_table(tmp_path):
    table = sirius.read_formula_identifications(SIRIUS6)
    cands = [{"smiles": "CCO", "inchikey": "LFQSCWFLJHTTHZ-UHFFFAOYSA-N", "formula": "C2H6O", "score": 0.5,
              "count": 12},
             {"smiles": "OCCO", "inchikey": "LYCAIKOWRPUZTN-UHFFFAOYSA-N", "formula": "C2H6O2", "score": 0.25,
              "count": 3},
             {"smiles": "CCOO", "inchikey": "", "formula": "C2H8O2", "score": 0.1, "count": 1}]
    out = tmp_path / "denovo_structure_identifications.tsv"
    n = sirius.write_denovo_table([annotated("1", cands, "C2H6O"), annotated("5", [], "C2H6O")], out, table)
    assert n == 3
    header = out.read_text().splitlines()[0].split("\t")
    assert header == list(sirius.DENOVO_COLUMNS + sirius.EXTRA_COLUMNS)
    assert header[:18] == ["structurePerIdRank", "formulaRank", "CSI:FingerIDScore", "ModelScore", "ZodiacScore",
                           "SiriusScore", "molecularFormula", "adduct", "precursorFormula", "InChIkey2D", "InChI",
                           "name", "smiles", "ionMass", "retentionTimeInSeconds", "formulaId", "alignedFeatureId",
                           "mappingFeatureId"]
    rows = read_tsv(out)
    r = rows[0]
    assert (r["structurePerIdRank"], r["formulaRank"], r["ModelScore"], r["SiriusScore"]) == ("1", "1", "0.5", "12.483")
    assert (r["molecularFormula"], r["adduct"], r["precursorFormula"]) == ("C2H6O", "[M + H]+", "C2H7O")
    assert r["InChIkey2D"] == "LFQSCWFLJHTTHZ" and r["InChI"] == "InChI=1S/C2H6O/c1-2-3/h3H,2H2,1H3"
    assert (r["mappingFeatureId"], r["formulaId"], r["alignedFeatureId"]) == ("1", "680812345678901001",
                                                                            "680812345678900001")
    assert (r["ionMass"], r["retentionTimeInSeconds"], r["diffms_count"]) == ("47.0491", "65.4", "12")
    assert r["CSI:FingerIDScore"] == "" and r["diffms_formula_source"] == "sirius"
    # a formula not in SIRIUS' table: no SIRIUS columns; the rank-2 SIRIUS formula with its own adduct
    assert rows[1]["formulaRank"] == "" and rows[1]["adduct"] == "[M + H]+"
    assert (rows[2]["formulaRank"], rows[2]["adduct"], rows[2]["precursorFormula"]) == ("2", "[M - H2O + H]+", "C2H7O")


# ---------------------------------------------------------------------------------------------- command
class FakeAnnotator:
    """Asks the real formula providers (with the command's formula_context) and proposes one structure."""

    structures = {"C2H6O": "CCO", "C2H8O2": "OCCO", "C2H4O2": "CC(=O)O", "C3H9N": "CN(C)C"}

    def __init__(self, options):
        self.options = options

    def annotate(self, s):
        from matchms_diffms.chem.molecules import inchikey
        from matchms_diffms.plugins import formula_candidates

        context = {"max_formulas": self.options["max_formulas"], **self.options["formula_context"]}
        out = s.clone()
        cands = formula_candidates(s, context)
        found = [{"smiles": self.structures[c.formula.hill()], "formula": c.formula.hill(), "score": 0.5,
                  "count": 1, "inchikey": inchikey(self.structures[c.formula.hill()])}
                 for c in cands if c.formula.hill() in self.structures]
        out.set("diffms_candidates", json.dumps(found))
        out.set("diffms_status", "ok")
        out.set("diffms_formula_source", cands[0].source if cands else None)
        out.set("diffms_adduct", cands[0].adduct.name if cands else None)
        return out


def test_sirius_annotate_command_wires_the_formulas(monkeypatch, tmp_path):
    from matchms_diffms import annotator, cli_options

    made = []

    def fake_from_pretrained(name, **options):
        made.append((name, options))
        return FakeAnnotator(options)

    monkeypatch.setattr(annotator.DiffMSAnnotator, "from_pretrained", staticmethod(fake_from_pretrained))
    monkeypatch.setattr(cli_options, "check_weights_early", lambda weights: None)    # "mine" is the fake's
    out, ann = tmp_path / "denovo.tsv", tmp_path / "annotated.json"
    result = CliRunner().invoke(cli_group(), ["sirius-annotate", str(SIRIUS_MGF), "--sirius-dir", str(SIRIUS6),
                                              "-o", str(out), "--annotated", str(ann), "--samples", "7",
                                              "--max-formulas", "2", "-w", "mine"])
    assert result.exit_code == 0, result.output
    assert "3 spectra, SIRIUS formulas for 3 features (3 matched)" in result.output
    name, options = made[0]
    assert name == "mine" and options["n_samples"] == 7 and options["max_formulas"] == 2
    rows = read_tsv(out)
    assert [(r["mappingFeatureId"], r["smiles"], r["formulaRank"]) for r in rows] == [
        ("1", "CCO", "1"), ("1", "OCCO", "2"), ("2", "CC(=O)O", "1"), ("3", "CN(C)C", "1")]
    assert all(r["diffms_formula_source"] == "sirius" for r in rows)
    saved = json.loads(ann.read_text())
    assert len(saved) == 3
    bad = CliRunner().invoke(cli_group(), ["sirius-annotate", str(SIRIUS_MGF), "--sirius-dir", str(SIRIUS6),
                                           "-o", str(out), "--annotated", str(tmp_path / "x.unknown")])
    assert bad.exit_code != 0 and "no output writer" in bad.output


@pytest.mark.slow
def test_sirius_annotate_end_to_end(conformance_dir, tmp_path):
    """SIRIUS export MGF + SIRIUS formulas -> tiny official-format checkpoint -> de novo table."""
    import torch
    from rdkit import Chem

    torch.set_num_threads(1)
    out = tmp_path / "denovo.tsv"
    result = CliRunner().invoke(cli_group(), [
        "sirius-annotate", str(SIRIUS_MGF), "--sirius-dir", str(SIRIUS6), "-o", str(out),
        "-w", str(conformance_dir / "tiny_official.ckpt.gz"), "--samples", "64", "--steps", "10", "--top-k", "3"])
    assert result.exit_code == 0, result.output
    rows = read_tsv(out)
    assert rows, "no structure at 64 x 10"
    allowed = {"1": {"C2H6O", "C2H8O2"}, "2": {"C2H4O2"}, "3": {"C3H9N"}}
    for r in rows:
        assert r["molecularFormula"] in allowed[r["mappingFeatureId"]]
        assert r["diffms_formula_source"] == "sirius"
        mol = Chem.MolFromSmiles(r["smiles"])
        from rdkit.Chem.rdMolDescriptors import CalcMolFormula
        assert CalcMolFormula(mol) == r["molecularFormula"]                  # formula-exact structures
        assert int(r["structurePerIdRank"]) <= 3


def test_plugin_registers_with_pluggy():
    """The module validates against the hook specifications and adds its commands through the hook."""
    import pluggy

    from matchms_diffms import hookspecs

    pm = pluggy.PluginManager("matchms_diffms")
    pm.add_hookspecs(hookspecs)
    pm.register(sirius, name="sirius")
    pm.check_pending()
    group = click.Group("cli")
    pm.hook.diffms_register_commands(cli=group)
    assert sorted(group.commands) == ['sirius-annotate']
