"""Released-MZmine route (``matchms_diffms_adapters.mzmine.fbmn`` and ``.plugin``): MZmine's GNPS-FBMN and
SIRIUS MGF exports in, Local compound database CSV and GNPS graphml out."""
from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from matchms import Spectrum
from matchms.exporting import save_as_mgf

from matchms_diffms import read_spectra
from matchms_diffms_adapters.mzmine import fbmn, plugin

FIXTURES = Path(__file__).parent / "fixtures" / "adapters"
FBMN = FIXTURES / "mzmine_fbmn.mgf"
SIRIUS_MGF = FIXTURES / "mzmine_sirius.mgf"
GRAPHML_NS = "{http://graphml.graphdrawing.org/xmlns}"


def cli_group():
    @click.group()
    def cli():
        pass

    plugin.diffms_register_commands(cli=cli)
    return cli


def annotated(feature_id, candidates, precursor_mz=47.0491, rt=65.4, formula="C2H6O", adduct="[M+H]+"):
    """A spectrum with diffms_* metadata as DiffMSAnnotator writes it."""
    md = {"feature_id": feature_id, "precursor_mz": precursor_mz, "ionmode": "positive",
          "diffms_status": "ok" if candidates else "no_valid_candidates: none",
          "diffms_candidates": json.dumps(candidates), "diffms_formula": formula,
          "diffms_formula_source": "metadata", "diffms_adduct": adduct, "diffms_model": "tiny@0123456789ab"}
    if rt is not None:
        md["retention_time"] = rt
    if candidates:
        md.update(diffms_smiles=candidates[0]["smiles"], diffms_score=candidates[0]["score"])
    return Spectrum(mz=np.array([29.03858, 31.01784]), intensities=np.array([1.0, 0.5]), metadata=md)


ETHANOL = [{"smiles": "CCO", "inchikey": "LFQSCWFLJHTTHZ-UHFFFAOYSA-N", "formula": "C2H6O", "score": 0.61,
            "count": 40},
           {"smiles": "COC", "inchikey": "LCGLNKUTAGEVQW-UHFFFAOYSA-N", "formula": "C2H6O", "score": 0.22,
            "count": 9}]


# ---------------------------------------------------------------------------------------------- reading
def test_read_fbmn_export():
    spectra = fbmn.read_mzmine_mgf(FBMN)
    assert [s.get("feature_id") for s in spectra] == ["1", "2", "3", "sample_a.mzML msn trees:7"]
    first = spectra[0]
    assert first.get("retention_time") == pytest.approx(65.4) and first.get("precursor_mz") == 47.0491
    assert first.get("charge") == 1 and first.get("ionmode") == "positive"
    assert first.get("file_name") == "sample_a.mzML;sample_b.mzML"
    assert first.peaks.mz.tolist() == [15.02293, 27.02293, 29.03858, 31.01784, 45.03349]
    acetic = spectra[1]
    assert acetic.get("inchikey") == "QTBSBXVTEAMEQO-UHFFFAOYSA-N"        # INCHIAUX quirk undone
    assert acetic.get("inchi_aux") is None
    assert (acetic.get("formula"), acetic.get("adduct"), acetic.get("smiles")) == ("C2H4O2", "[M+H]+", "CC(=O)O")


def test_read_sirius_export_skips_ms1_and_merges_scans():
    spectra = fbmn.read_mzmine_mgf(SIRIUS_MGF)
    assert [s.get("feature_id") for s in spectra] == ["1", "2", "3"]          # 2 MS1 blocks skipped
    merged = spectra[0]
    assert merged.get("mzmine_merged_scans") == 2
    np.testing.assert_allclose(merged.peaks.mz, [27.02293, (29.03858 * 10000 + 29.0386 * 6000) / 16000,
                                                 (31.01784 * 5000 + 31.0179 * 1000) / 6000, 45.03349],
                               rtol=0, atol=1e-9)
    assert merged.peaks.intensities.tolist() == [3000.0, 16000.0, 6000.0, 2000.0]   # summed
    assert spectra[2].get("ms_level") is None                                   # no MSLEVEL: taken as MS2
    separate = fbmn.read_mzmine_mgf(SIRIUS_MGF, merge_scans=False)
    assert [s.get("feature_id") for s in separate] == ["1", "1", "2", "3"]
    assert all(s.get("mzmine_merged_scans") is None for s in separate)


def test_merge_peaks_tolerance():
    mz, inten = fbmn.merge_peaks([[100.0, 1000.0]], [[1.0, 1.0]])
    assert mz.tolist() == [100.0, 1000.0]
    mz, inten = fbmn.merge_peaks([[100.0], [100.0079], [100.0081]], [[2.0], [2.0], [1.0]])
    assert inten.tolist() == [4.0, 1.0] and mz[0] == pytest.approx(100.00395)   # 0.008 m/z below 320 m/z
    mz, inten = fbmn.merge_peaks([[1000.0], [1000.024], [1000.026]], [[3.0], [1.0], [1.0]])
    assert inten.tolist() == [4.0, 1.0]                                         # 25 ppm = 0.025 at 1000
    with pytest.raises(ValueError):
        fbmn.merge_peaks([[1.0, 2.0]], [[1.0]])


def test_ms_level_values():
    def s(level):
        return Spectrum(mz=np.array([1.0]), intensities=np.array([1.0]), metadata={"ms_level": level},
                        metadata_harmonization=False)

    assert [fbmn.ms_level(s(v)) for v in (None, "", "2", 2, "MS2", "1", 1)] == [2, 2, 2, 2, 2, 1, 1]
    with pytest.raises(ValueError):
        fbmn.ms_level(s("two"))


def test_fix_inchikey_only_moves_inchikeys():
    sp = Spectrum(mz=np.array([1.0]), intensities=np.array([1.0]),
                  metadata={"inchi_aux": "AuxInfo=1/1/N:1,2"}, metadata_harmonization=False)
    assert fbmn.fix_inchikey(sp).get("inchikey") is None and sp.get("inchi_aux") == "AuxInfo=1/1/N:1,2"


# ---------------------------------------------------------------------------------------------- writing
def read_csv(path, sep=","):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter=sep))


def test_local_db_csv(tmp_path):
    spectra = [annotated("17", ETHANOL), annotated("18", []), annotated("19", ETHANOL[:1], rt=None)]
    out = tmp_path / "diffms_db.csv"
    assert fbmn.write_local_db_csv(spectra, out) == 3
    header = out.read_text().splitlines()[0]
    assert header == "neutral_mass,mz,rt,formula,smiles,name,comment,inchi_key,adduct,internal_id"
    rows = read_csv(out)
    assert [r["name"] for r in rows] == ["DiffMS #1 (feature 17)", "DiffMS #2 (feature 17)", "DiffMS #1 (feature 19)"]
    r = rows[0]
    assert float(r["mz"]) == pytest.approx(47.0491) and float(r["rt"]) == pytest.approx(65.4 / 60, abs=1e-4)
    assert float(r["neutral_mass"]) == pytest.approx(46.041865, abs=1e-6)
    assert (r["formula"], r["smiles"], r["inchi_key"], r["adduct"], r["internal_id"]) == \
        ("C2H6O", "CCO", "LFQSCWFLJHTTHZ-UHFFFAOYSA-N", "[M+H]+", "17")
    assert "score 0.6100" in r["comment"] and "rank 1" in r["comment"] and "tiny@0123456789ab" in r["comment"]
    assert rows[2]["rt"] == ""                                                  # no retention time known
    tsv = tmp_path / "diffms_db.tsv"
    fbmn.write_local_db_csv(spectra, tsv, separator="\t")
    assert read_csv(tsv, "\t") == rows


def test_local_db_csv_after_mgf_round_trip(tmp_path):
    """Annotated spectra saved as MGF by matchms (numbers become strings) give the same CSV."""
    spectra = [annotated("17", ETHANOL), annotated("19", ETHANOL[:1])]
    mgf = tmp_path / "annotated.mgf"
    save_as_mgf(spectra, str(mgf), file_mode="w")
    direct, via_file = tmp_path / "a.csv", tmp_path / "b.csv"
    fbmn.write_local_db_csv(spectra, direct)
    fbmn.write_local_db_csv(read_spectra(mgf), via_file)
    assert direct.read_text() == via_file.read_text()


def test_gnps_graphml(tmp_path):
    spectra = [annotated("17", ETHANOL), annotated("18", []), annotated("17", ETHANOL[1:]),
               annotated("20", ETHANOL[1:], precursor_mz=47.0500)]
    out = tmp_path / "diffms.graphml"
    assert fbmn.write_gnps_graphml(spectra, out) == 2                           # duplicate 17 and empty 18 out
    root = ET.parse(out).getroot()
    keys = {k.get("id"): k.get("attr.type") for k in root.iter(f"{GRAPHML_NS}key")}
    assert keys["Compound_Name"] == "string" and keys["MQScore"] == "double"
    nodes = {n.get("id"): {d.get("key"): d.text for d in n.iter(f"{GRAPHML_NS}data")}
             for n in root.iter(f"{GRAPHML_NS}node")}
    assert set(nodes) == {"17", "20"}
    assert nodes["17"]["Compound_Name"] == "DiffMS #1 C2H6O" and nodes["17"]["Smiles"] == "CCO"
    assert float(nodes["17"]["MQScore"]) == pytest.approx(0.61)
    assert nodes["17"]["INCHI"] == "InChI=1S/C2H6O/c1-2-3/h3H,2H2,1H3"
    assert float(nodes["20"]["MassDiff"]) == pytest.approx(abs(47.04914 - 47.0500), abs=2e-5)
    assert nodes["17"]["Adduct"] == "[M+H]+" and nodes["17"]["IonMode"] == "positive"


def test_output_writers_hook(tmp_path):
    writers = plugin.diffms_output_writers()
    assert set(writers) == {".csv", ".graphml"}
    writers[".csv"]([annotated("17", ETHANOL)], tmp_path / "x.csv")
    assert len(read_csv(tmp_path / "x.csv")) == 2


# ---------------------------------------------------------------------------------------------- commands
def test_mzmine_prepare_command(tmp_path):
    out = tmp_path / "features.mgf"
    result = CliRunner().invoke(cli_group(), ["mzmine-prepare", str(SIRIUS_MGF), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 3 MS2 spectra" in result.output and "1 merged" in result.output
    again = fbmn.read_mzmine_mgf(out)                                            # still an MZmine-like MGF
    assert [s.get("feature_id") for s in again] == ["1", "2", "3"]
    assert again[0].peaks.intensities.tolist() == [3000.0, 16000.0, 6000.0, 2000.0]
    bad = CliRunner().invoke(cli_group(), ["mzmine-prepare", str(SIRIUS_MGF), "-o", str(tmp_path / "x.txt")])
    assert bad.exit_code != 0


def test_mzmine_export_command(tmp_path):
    mgf = tmp_path / "annotated.mgf"
    save_as_mgf([annotated("17", ETHANOL), annotated("18", [])], str(mgf), file_mode="w")
    db, graph = tmp_path / "db.csv", tmp_path / "g.graphml"
    result = CliRunner().invoke(cli_group(), ["mzmine-export", str(mgf), "-o", str(db), "--graphml", str(graph)])
    assert result.exit_code == 0, result.output
    assert [r["smiles"] for r in read_csv(db)] == ["CCO", "COC"]
    assert "wrote 1 nodes" in result.output and graph.exists()
    tsv = tmp_path / "db.tsv"
    assert CliRunner().invoke(cli_group(), ["mzmine-export", str(mgf), "-o", str(tsv)]).exit_code == 0
    assert [r["smiles"] for r in read_csv(tsv, "\t")] == ["CCO", "COC"]


@pytest.mark.slow
def test_fbmn_route_end_to_end(conformance_dir, tmp_path):
    """FBMN export -> annotate (tiny official-format checkpoint) -> annotated MGF -> MZmine CSV."""
    import torch
    from rdkit import Chem

    from matchms_diffms import DiffMSAnnotator, read_candidates

    torch.set_num_threads(1)
    spectra = fbmn.read_mzmine_mgf(FBMN)[:2]
    spectra[0].set("formula", "C2H6O")                   # as a user would add it (or SIRIUS / decomposition)
    spectra[0].set("adduct", "[M+H]+")
    annotator = DiffMSAnnotator.from_pretrained(str(conformance_dir / "tiny_official.ckpt.gz"), n_samples=64,
                                                steps=10, top_k=5, seed=0)
    results = list(annotator.annotate_many(spectra))
    mgf = tmp_path / "annotated.mgf"
    plugin.save_spectra_atomic(results, mgf)
    db = tmp_path / "db.csv"
    assert CliRunner().invoke(cli_group(), ["mzmine-export", str(mgf), "-o", str(db)]).exit_code == 0
    rows = read_csv(db)
    expected = [(s.get("feature_id"), c["smiles"])
                for s in results for c in read_candidates(s.get("diffms_candidates"))]
    assert expected, "the tiny model produced no candidate for ethanol at 64 x 10"
    assert [(r["internal_id"], r["smiles"]) for r in rows] == expected
    for r in rows:
        assert Chem.MolFromSmiles(r["smiles"]) is not None
        assert float(r["rt"]) * 60 == pytest.approx({"1": 65.4, "2": 102.0}[r["internal_id"]], abs=0.01)


def test_plugin_registers_with_pluggy():
    """The module validates against the hook specifications and adds its commands through the hook."""
    import pluggy

    from matchms_diffms import hookspecs

    pm = pluggy.PluginManager("matchms_diffms")
    pm.add_hookspecs(hookspecs)
    pm.register(plugin, name="mzmine")
    pm.check_pending()
    group = click.Group("cli")
    pm.hook.diffms_register_commands(cli=group)
    assert sorted(group.commands) == ['mzmine-export', 'mzmine-pointer', 'mzmine-prepare']
