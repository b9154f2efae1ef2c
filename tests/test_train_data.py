"""Tests of the labelled-spectra readers (`labelled.py`), the fold guard, the vocabulary filter and the
annotation cache."""
import gzip
import json
import logging
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from matchms_diffms.chem.formula import Formula
from matchms_diffms.chem.subformulae import assign_subformulae
from matchms_diffms.model.config import DiffMSConfig, preset
from matchms_diffms import labelled as ld
from matchms_diffms.train import data as td

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MGF = FIXTURES / "massbank_small.mgf"
TSV = FIXTURES / "massspecgym_small.tsv"
MIST = FIXTURES / "mist_small"
CORE = ("id", "precursor_mz", "adduct", "formula", "smiles", "inchikey", "ionmode", "instrument", "fold")


# ----------------------------------------------------------------------------------------------- readers
def test_read_mgf_fixture():
    recs = list(ld.read_mgf(MGF))
    assert [r.id for r in recs] == ["MSBNK-Test-TS000001", "MSBNK-Test-TS000002", "MSBNK-Test-TS000003"]
    r = recs[0]
    assert r.precursor_mz == 195.0877 and r.adduct == "[M+H]+" and r.formula == "C8H10N4O2"
    assert r.smiles == "Cn1c(=O)c2c(ncn2C)n(C)c1=O" and r.inchikey == "RYYVLZVUVIJVGH-UHFFFAOYSA-N"
    assert r.ionmode == "positive" and r.instrument == "LC-ESI-QFT" and r.fold == "train"
    np.testing.assert_array_equal(r.mz, [83.0604, 110.0713, 138.0662, 195.0877])
    np.testing.assert_array_equal(r.intensity, [1520.0, 3310.5, 99900.0, 45000.25])
    assert r.mz.dtype == np.float64
    assert r.metadata["collision_energy"] == "30 % (nominal)" and r.metadata["license"] == "CC0"
    assert recs[1].ionmode == "negative" and recs[1].adduct == "[M-H]-" and "collision_energy" not in recs[1].metadata
    assert recs[2].fold == "val" and recs[2].adduct == "[M+Na]+"


def _same_core(a, b):
    for x, y in zip(a, b, strict=True):
        for name in CORE:
            assert getattr(x, name) == getattr(y, name), name
        np.testing.assert_array_equal(x.mz, y.mz)
        np.testing.assert_array_equal(x.intensity, y.intensity)


def test_mgf_backends_agree_on_fixture():
    _same_core(list(ld.read_mgf(MGF)), list(ld.read_mgf(MGF, backend="matchms")))


def test_mgf_gzip_and_errors(tmp_path):
    gz = tmp_path / "x.mgf.gz"
    gz.write_bytes(gzip.compress(MGF.read_bytes()))
    _same_core(list(ld.read_mgf(MGF)), list(ld.read_labelled(gz)))
    broken = tmp_path / "broken.mgf"
    broken.write_text("BEGIN IONS\nTITLE=a\n100.0 abc\nEND IONS\n")
    with pytest.raises(ValueError, match="broken.mgf:3"):
        list(ld.read_mgf(broken))
    unterminated = tmp_path / "open.mgf"
    unterminated.write_text("BEGIN IONS\nTITLE=a\n100.0 1\n")
    with pytest.raises(ValueError, match="no END IONS"):
        list(ld.read_mgf(unterminated))
    with pytest.raises(ValueError, match="backend"):
        ld.read_mgf(MGF, backend="fast")


def test_read_massspecgym_tsv():
    recs = list(ld.read_labelled(TSV))
    assert [r.id for r in recs] == ["MassSpecGymID0000001", "MassSpecGymID0000002"]
    a, b = recs
    np.testing.assert_array_equal(a.mz, [91.0542, 121.0284, 139.0390, 163.0390])
    np.testing.assert_array_equal(a.intensity, [0.12, 1.0, 0.45, 0.031])
    assert (a.formula, a.adduct, a.precursor_mz, a.ionmode, a.instrument, a.fold) == \
        ("C9H8O4", "[M+H]+", 181.0495, "positive", "Orbitrap", "train")
    assert a.smiles == "CC(=O)Oc1ccccc1C(=O)O" and a.inchikey == "BSYNRYMUTXBXSQ-UHFFFAOYSA-N"
    assert a.metadata["precursor_formula"] == "C9H9O4" and a.metadata["collision_energy"] == "30.0"
    assert b.fold == "test" and b.adduct == "[M+Na]+" and "collision_energy" not in b.metadata


def test_read_mist_folder_with_split():
    recs = {r.id: r for r in ld.read_labelled(MIST, split_file="split.tsv")}
    a, b = recs["specA"], recs["specB"]
    # MS1 block ignored, both collision blocks concatenated in file order
    np.testing.assert_array_equal(a.mz, [118.0651, 146.0600, 188.0706, 118.0651, 132.0808])
    np.testing.assert_array_equal(a.intensity, [150.0, 220.0, 999.0, 600.0, 80.5])
    assert (a.precursor_mz, a.adduct, a.formula, a.ionmode, a.instrument, a.fold) == \
        (205.0972, "[M+H]+", "C11H12N2O2", "positive", "Orbitrap (LCMS)", "train")
    assert a.inchikey == "QIVBCDIJIAJPQS-VIFPVBQESA-N" and a.metadata["dataset"] == "small"
    assert b.fold == "test" and b.instrument is None and b.precursor_mz == 47.0491
    assert all(r.fold is None for r in ld.read_mist_folder(MIST))


def test_parse_ms_file_header():
    meta, mz, inten = ld.parse_ms_file(MIST / "spec_files" / "specA.ms")
    assert meta["ionization"] == "[M + H]+" and meta["parentmass"] == "205.0972"
    assert meta["inchikey"] == "QIVBCDIJIAJPQS-VIFPVBQESA-N"
    assert mz.size == inten.size == 5


def test_read_labelled_dispatch_errors(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="unknown format"):
        ld.read_labelled(tmp_path / "x.csv")
    with pytest.raises(FileNotFoundError):
        ld.read_labelled(tmp_path / "missing.mgf")
    with pytest.raises(FileNotFoundError, match="labels.tsv"):
        list(ld.read_labelled(tmp_path))


def test_read_smiles(tmp_path):
    plain = tmp_path / "m.smi"
    plain.write_text("smiles\tid\nCCO\tethanol\n\n# comment\nc1ccccc1 benzene\nCC(=O)O\n")
    assert list(ld.read_smiles(plain)) == ["CCO", "c1ccccc1", "CC(=O)O"]
    gz = tmp_path / "m.smi.gz"
    gz.write_bytes(gzip.compress(b"CCO\nCCN x\n"))
    assert list(ld.read_smiles(gz)) == ["CCO", "CCN"]
    assert list(ld.read_smiles(plain, limit=2)) == ["CCO", "c1ccccc1"]


def test_to_spectrum_round_trip():
    rec = list(ld.read_labelled(MIST))[0]
    s = rec.to_spectrum()
    np.testing.assert_array_equal(s.peaks.mz, np.sort(rec.mz))
    assert s.get("precursor_mz") == 205.0972 and s.get("adduct") == "[M+H]+"
    assert s.get("formula") == "C11H12N2O2" and s.get("smiles") == rec.smiles and s.get("charge") == 1


# ----------------------------------------------------------------------------------------------- fold guard
@pytest.mark.parametrize("name,fold", [("val.mgf", "val"), ("test.mgf", "test"), ("massbank_val.mgf", "val"),
                                       ("MSG-validation.tsv", "val"), ("holdout", "holdout"),
                                       ("train.mgf", None), ("latest.mgf", None), ("contest.tsv", None),
                                       ("mini.mgf", None)])
def test_fold_from_name(name, fold):
    assert ld.fold_from_name(name) == fold


def test_training_set_refuses_val_and_test(tmp_path):
    # records carrying the val fold are dropped by the fold selection ...
    assert [r.id for r in td.load_training_set(MGF)] == ["MSBNK-Test-TS000001", "MSBNK-Test-TS000002"]
    # ... and refused without it
    with pytest.raises(td.FoldLeakageError, match="MSBNK-Test-TS000003.*val"):
        td.load_training_set(MGF, fold=None)
    assert len(td.load_training_set(MGF, fold=None, purpose="validation")) == 3
    assert len(td.load_training_set(MGF, fold=None, purpose="evaluation")) == 3
    # a file named like an evaluation fold is refused even if its records say train
    named = tmp_path / "test.mgf"
    named.write_text(MGF.read_text().replace("FOLD=val", "FOLD=train"))
    with pytest.raises(td.FoldLeakageError, match="test fold"):
        td.load_training_set(named)
    assert len(td.load_training_set(named, fold=None, purpose="evaluation")) == 3
    with pytest.raises(ValueError, match="purpose"):
        td.load_training_set(MGF, purpose="training")


def test_training_set_from_tsv_and_mist():
    assert [r.id for r in td.load_training_set(TSV)] == ["MassSpecGymID0000001"]
    assert [r.id for r in td.load_training_set(MIST, split_file="split.tsv")] == ["specA"]
    with pytest.raises(td.FoldLeakageError):
        td.load_training_set(MIST, split_file="split.tsv", fold=None)


def test_load_fold(tmp_path):
    (tmp_path / "massbank").mkdir()
    text = MGF.read_text()
    (tmp_path / "massbank" / "train.mgf").write_text(text.replace("FOLD=val", "FOLD=train"))
    (tmp_path / "massbank" / "test.mgf").write_text(text.replace("FOLD=train", "FOLD=test")
                                                    .replace("FOLD=val", "FOLD=test"))
    assert len(td.load_fold(tmp_path, "train")) == 3
    with pytest.raises(td.FoldLeakageError, match="test fold"):
        td.load_fold(tmp_path, "test")
    assert len(td.load_fold(tmp_path, "test", purpose="evaluation")) == 3
    with pytest.raises(FileNotFoundError):
        td.load_fold(tmp_path, "val", purpose="validation")
    # a train file that carries a val record is refused
    (tmp_path / "massbank" / "train.mgf").write_text(text)
    with pytest.raises(td.FoldLeakageError, match="TS000003"):
        td.load_fold(tmp_path, "train")


# ----------------------------------------------------------------------------------------------- vocabulary
def _record(smiles, formula, adduct="[M+H]+", rid="x"):
    return ld.LabelledSpectrum(rid, np.array([100.0]), np.array([1.0]), 200.0, adduct, formula, smiles, None,
                               "positive", None)


def test_filter_official_vocabulary(caplog):
    recs = list(ld.read_mgf(MGF))
    extra = [_record("O=[N+]([O-])c1ccccc1", "C6H5NO2", rid="nitro"),
             _record("CCO", "C2H6O", "[M+NH4]+", rid="nh4"),             # alias of [M+H3N+H]+
             _record("CCO", "C2H6O", "[2M+H]+", rid="dimer"),
             _record("CCO", "C3H8O", rid="mismatch"),
             _record("CCO", None, rid="noformula"),
             _record("CCO.O", "C2H8O2", rid="salt"),
             _record("C1CC", "C3H6", rid="bad"),
             _record("CCO", "C2H6O", None, rid="noadduct")]
    with caplog.at_level(logging.INFO, logger="matchms.diffms"):
        kept, dropped = td.filter_for_model(recs + extra, preset("msg"))
    assert [r.id for r in kept] == ["MSBNK-Test-TS000001", "nh4", "noformula"]
    assert kept[2].formula == "C2H6O"                          # filled from the SMILES
    assert dropped == Counter({"unsupported_adduct": 2, "unsupported_element": 1, "charged_atom": 1,
                               "formula_mismatch": 1, "multiple_fragments": 1, "invalid_smiles": 1,
                               "no_adduct": 1})
    assert "kept 3 of 11" in caplog.text and "unsupported_adduct 2" in caplog.text


def test_filter_extended_vocabulary_and_size():
    recs = list(ld.read_mgf(MGF))
    cfg = DiffMSConfig(atom_types=["C", "O", "P", "N", "S", "Cl", "F", "Br", "I", "H"],
                       adducts=["[M+H]+", "[M+Na]+", "[M-H]-", ""], max_n_nodes=14)
    kept, dropped = td.filter_for_model(recs, cfg)
    assert len(kept) == 3 and not dropped                       # caffeine has exactly 14 heavy atoms
    kept, dropped = td.filter_for_model(recs, cfg.replace(max_n_nodes=13))
    assert [r.id for r in kept] == ["MSBNK-Test-TS000002", "MSBNK-Test-TS000003"]
    assert dropped == Counter({"too_many_atoms": 1})


# ----------------------------------------------------------------------------------------------- cache
def test_annotation_cache(tmp_path):
    rec = list(ld.read_mgf(MGF))[0]
    cache = td.AnnotationCache(tmp_path / "cache")
    ann = cache.get(rec)
    direct = assign_subformulae(rec.mz, rec.intensity, rec.formula, rec.adduct, rec.precursor_mz, ppm_tol=20.0)
    assert ann == direct
    assert "C6H7N3O" in ann["output_tbl"]["formula"]          # 138.0662 = [C6H7N3O + H]+
    assert (cache.hits, cache.misses) == (0, 1) and rec in cache
    files = list((tmp_path / "cache").rglob("*.json"))
    assert len(files) == 1
    # the stored file is what a second cache (another run) returns
    tampered = dict(ann, cand_form="TAMPERED")
    files[0].write_text(json.dumps(tampered))
    again = td.AnnotationCache(tmp_path / "cache")
    assert again.get(rec)["cand_form"] == "TAMPERED" and again.hits == 1


def test_annotation_cache_key_covers_inputs(tmp_path):
    rec = list(ld.read_mgf(MGF))[0]
    cache = td.AnnotationCache(tmp_path)
    base = cache.key(rec.mz, rec.intensity, rec.formula, rec.adduct, rec.precursor_mz)
    mz2 = rec.mz.copy()
    mz2[0] += 1e-9
    inten2 = rec.intensity.copy()
    inten2[-1] *= 2
    variants = [cache.key(mz2, rec.intensity, rec.formula, rec.adduct, rec.precursor_mz),
                cache.key(rec.mz, inten2, rec.formula, rec.adduct, rec.precursor_mz),
                cache.key(rec.mz, rec.intensity, "C8H10N4O3", rec.adduct, rec.precursor_mz),
                cache.key(rec.mz, rec.intensity, rec.formula, "[M+Na]+", rec.precursor_mz),
                cache.key(rec.mz, rec.intensity, rec.formula, rec.adduct, None),
                td.AnnotationCache(tmp_path, ppm_tol=10).key(rec.mz, rec.intensity, rec.formula, rec.adduct,
                                                             rec.precursor_mz),
                td.AnnotationCache(tmp_path, version="v2").key(rec.mz, rec.intensity, rec.formula, rec.adduct,
                                                               rec.precursor_mz)]
    assert len({base, *variants}) == 8
    assert base == td.AnnotationCache(tmp_path).key(list(rec.mz), list(rec.intensity), rec.formula, rec.adduct,
                                                    rec.precursor_mz)


def test_annotation_cache_does_not_store_failures(tmp_path):
    rec = _record("CCO", "C2H6O", "[M+Foo]+")
    cache = td.AnnotationCache(tmp_path)
    with pytest.raises(ValueError):
        cache.get(rec)
    assert not list(tmp_path.rglob("*.json"))
    with pytest.raises(ValueError, match="formula and adduct"):
        cache.get(_record("CCO", None))


# ----------------------------------------------------------------------------------------------- shared data
def test_mini_mgf(data_dir, tmp_path):
    path = data_dir / "massbank" / "mini.mgf"
    recs = list(ld.read_mgf(path))
    assert len(recs) == 200 and {r.fold for r in recs} == {"train"}
    assert len({r.inchikey[:14] for r in recs}) == 200
    adducts = Counter(r.adduct for r in recs)                   # data README section 1.7
    assert adducts == Counter({"[M+H]+": 151, "[M+Na]+": 12, "[M+NH4]+": 8, "[M]+": 8, "[M-H2O+H]+": 6,
                               "[M+K]+": 5, "[M-H]-": 6, "[M+HCOO]-": 2, "[M+Cl]-": 2})
    assert Counter(r.ionmode for r in recs) == Counter({"positive": 190, "negative": 10})
    assert all(r.mz.size >= 3 and r.mz.size == r.intensity.size for r in recs)
    _same_core(recs, list(ld.read_mgf(path, backend="matchms")))
    # the mini file is a training file: the guard lets it through
    shutil.copy(path, tmp_path / "mini.mgf")
    assert len(td.load_fold(tmp_path, "mini")) == 200
    kept, dropped = td.filter_for_model(recs, preset("msg"))
    assert len(kept) + sum(dropped.values()) == 200
    assert dropped["unsupported_element"] >= 8                   # 4 Br + 4 I
    for r in kept:
        assert r.ionmode == "positive" and not {"Br", "I"} & set(Formula.parse(r.formula).counts)
