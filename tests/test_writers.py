"""Output writers (writers.py): matchms round trips of the diffms_* metadata, the TSV table, atomic writes."""
import csv
import errno
import json
import os
import stat

import numpy as np
import pytest
from matchms import Spectrum
from matchms.importing import load_from_json, load_from_mgf, load_from_msp

from matchms_diffms import files, writers
from matchms_diffms import read_annotation
from matchms_diffms.plugins import output_writers
from matchms_diffms.files import OutputError, atomic_write
from matchms_diffms.writers import (TSV_COLUMNS, decode_candidates, tsv_rows, write_json, write_mgf, write_msp,
                                    write_tsv)

# SMILES with the characters that could break a text format: = # ; : ( ) [ ] @ / \ + and a quote
CANDIDATES = [
    {"smiles": "C[C@H](N)C(=O)O", "inchikey": "QNAYBMKLOCPYGJ-REOHCLBHSA-N", "formula": "C3H7NO2",
     "score": 0.731, "count": 42},
    {"smiles": "C#CC(=O)[O-].[Na+]", "inchikey": "X-Y=Z;W", "formula": "C3H7NO2", "score": 0.2, "count": 3},
    {"smiles": "F/C=C/F", "inchikey": "a:b", "formula": "C3H7NO2", "score": 0.05, "count": 1,
     "note": "it's \\ back; slash"},
]


def annotated(title="alanine", candidates=CANDIDATES, as_json_string=True, **extra):
    md = {"title": title, "feature_id": "17", "precursor_mz": 90.05496, "ionmode": "positive",
          "diffms_status": "ok", "diffms_smiles": candidates[0]["smiles"] if candidates else None,
          "diffms_inchikey": candidates[0]["inchikey"] if candidates else None,
          "diffms_score": candidates[0]["score"] if candidates else None,
          "diffms_candidates": json.dumps(candidates) if as_json_string else candidates,
          "diffms_formula": "C3H7NO2", "diffms_formula_source": "metadata", "diffms_adduct": "[M+H]+",
          "diffms_adduct_assumed": False, "diffms_model": "default@0123456789ab", "diffms_n_samples": 100,
          "diffms_steps": 500, "diffms_seed": 7, **extra}
    md = {k: v for k, v in md.items() if v is not None}
    return Spectrum(mz=np.array([44.0495, 72.0444, 90.0550]), intensities=np.array([1.0, 0.3, 0.1]),
                    metadata=md, metadata_harmonization=False)


LOADERS = {".mgf": load_from_mgf, ".msp": load_from_msp, ".json": load_from_json}
WRITE = {".mgf": write_mgf, ".msp": write_msp, ".json": write_json}


def reload(path):
    return list(LOADERS[path.suffix](str(path)))


# ------------------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("ext", [".mgf", ".msp", ".json"])
@pytest.mark.parametrize("as_json_string", [True, False])
def test_diffms_metadata_round_trip(tmp_path, ext, as_json_string):
    spectra = [annotated(as_json_string=as_json_string),
               annotated("nothing", candidates=[], diffms_status="no_valid_candidates: 0 of 100 samples valid")]
    path = tmp_path / f"out{ext}"
    WRITE[ext](spectra, path)
    back = reload(path)
    assert len(back) == 2
    for original, loaded in zip(spectra, back):
        assert read_annotation(loaded) == read_annotation(original)
        np.testing.assert_allclose(loaded.peaks.mz, original.peaks.mz)
        assert loaded.get("title") == original.get("title")
        assert loaded.get("feature_id") == "17"
    assert read_annotation(back[0])["candidates"] == CANDIDATES
    assert read_annotation(back[1])["candidates"] == []
    if ext == ".json":   # JSON keeps real types: candidates become a list, numbers stay numbers
        assert back[0].get("diffms_candidates") == CANDIDATES
        assert back[0].get("diffms_score") == 0.731 and back[0].get("diffms_adduct_assumed") is False
    else:                # text formats: a compact JSON string
        assert json.loads(back[0].get("diffms_candidates")) == CANDIDATES


@pytest.mark.parametrize("ext", [".mgf", ".msp", ".json"])
def test_text_values_are_sanitized(tmp_path, ext):
    s = annotated(diffms_status="error: RuntimeError: line one\nline two\r\nline three",
                  diffms_n_samples=np.int64(100), diffms_score=np.float32(0.5))
    s.set("diffms_seconds", None)
    path = tmp_path / f"out{ext}"
    WRITE[ext]([s], path)
    [back] = reload(path)
    if ext == ".json":    # JSON can hold newlines: kept as they are
        assert back.get("diffms_status") == s.get("diffms_status")
    else:                 # a newline would end the MGF / MSP line: replaced by a space
        assert back.get("diffms_status") == "error: RuntimeError: line one line two line three"
    assert read_annotation(back)["n_samples"] == 100
    assert read_annotation(back)["score"] == 0.5
    assert back.get("diffms_seconds") is None
    assert s.get("diffms_status").count("\n") == 2      # the input spectrum is not modified


def test_writers_do_not_modify_their_input(tmp_path):
    s = annotated(as_json_string=False)
    before = s.metadata
    for ext in WRITE:
        WRITE[ext]([s], tmp_path / f"x{ext}")
    write_tsv([s], tmp_path / "x.tsv")
    assert s.metadata == before and isinstance(s.get("diffms_candidates"), list)


def test_spectrum_without_peaks_survives_mgf_and_tsv(tmp_path):
    empty = Spectrum(mz=np.array([]), intensities=np.array([]),
                     metadata={"title": "e", "precursor_mz": 100.0, "diffms_status": "no_peaks: no peaks"},
                     metadata_harmonization=False)
    write_mgf([empty, annotated()], tmp_path / "o.mgf")
    back = reload(tmp_path / "o.mgf")
    assert [b.get("title") for b in back] == ["e", "alanine"]
    assert back[0].get("diffms_status") == "no_peaks: no peaks"
    write_tsv([empty], tmp_path / "o.tsv")
    rows = list(csv.DictReader(open(tmp_path / "o.tsv", encoding="utf-8"), delimiter="\t"))
    assert rows == [{**{c: "" for c in TSV_COLUMNS}, "spectrum_id": "e", "status": "no_peaks: no peaks"}]


# ------------------------------------------------------------------------------------------ TSV
def test_tsv_rows(tmp_path):
    no_id = Spectrum(mz=np.array([50.0]), intensities=np.array([1.0]),
                     metadata={"diffms_status": "no_formula: none", "diffms_candidates": "[]"},
                     metadata_harmonization=False)
    multi = annotated("multi", candidates=[
        {"smiles": "CCO", "inchikey": "LFQSCWFLJHTTHZ-UHFFFAOYSA-N", "formula": "C2H6O", "score": 0.9, "count": 5},
        {"smiles": "COC", "inchikey": "LCGLNKUTAGEVQW-UHFFFAOYSA-N", "score": 0.1, "count": 1}])
    path = tmp_path / "t.tsv"
    write_tsv([annotated(), no_id, multi], path)
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0].split("\t") == list(TSV_COLUMNS)
    rows = list(csv.DictReader(text.splitlines(), delimiter="\t"))
    assert len(rows) == 3 + 1 + 2
    first = rows[0]
    assert first == {"spectrum_id": "17", "rank": "1", "smiles": "C[C@H](N)C(=O)O",
                     "inchikey": "QNAYBMKLOCPYGJ-REOHCLBHSA-N", "formula": "C3H7NO2", "score": "0.731",
                     "count": "42", "status": "ok", "formula_source": "metadata", "adduct": "[M+H]+",
                     "model": "default@0123456789ab"}
    assert [r["rank"] for r in rows[:3]] == ["1", "2", "3"]
    assert [r["smiles"] for r in rows[:3]] == [c["smiles"] for c in CANDIDATES]
    assert rows[3] == {**{c: "" for c in TSV_COLUMNS}, "spectrum_id": "1", "status": "no_formula: none"}
    assert (rows[4]["formula"], rows[5]["formula"]) == ("C2H6O", "C3H7NO2")   # candidate's own formula wins
    assert rows[5]["score"] == "0.1" and rows[5]["count"] == "1"


def test_tsv_rows_accepts_lists_and_repr_strings():
    as_list = tsv_rows([annotated(as_json_string=False)])
    as_repr = tsv_rows([annotated(diffms_candidates=repr(CANDIDATES))])
    assert as_list == as_repr == tsv_rows([annotated()])


def test_unreadable_candidates_are_reported_not_fatal(tmp_path, caplog):
    s = annotated(diffms_candidates="{broken")
    with caplog.at_level("WARNING", logger="matchms.diffms"):
        write_json([s], tmp_path / "x.json")
        write_tsv([s], tmp_path / "x.tsv")
    [back] = load_from_json(str(tmp_path / "x.json"))
    assert back.get("diffms_candidates") == "{broken"
    rows = list(csv.DictReader(open(tmp_path / "x.tsv", encoding="utf-8"), delimiter="\t"))
    assert len(rows) == 1 and rows[0]["rank"] == "" and rows[0]["status"] == "ok"
    assert sum("diffms_candidates" in r.getMessage() for r in caplog.records) == 2


def test_decode_candidates():
    assert decode_candidates(None) == decode_candidates("") == decode_candidates("[]") == []
    assert decode_candidates(json.dumps(CANDIDATES)) == CANDIDATES
    with pytest.raises(ValueError):
        decode_candidates('{"smiles": "C"}')


# ------------------------------------------------------------------------------------------ atomic writing
def test_writers_registered_through_the_hook():
    found = output_writers()
    for ext, fn in {".mgf": write_mgf, ".msp": write_msp, ".json": write_json, ".tsv": write_tsv}.items():
        assert found[ext] is fn


@pytest.mark.parametrize("ext", [".mgf", ".msp", ".json", ".tsv"])
def test_overwrite_replaces_and_leaves_no_temp_files(tmp_path, ext):
    path = tmp_path / f"out{ext}"
    path.write_text("old content that must disappear completely\n" * 100)
    writers.WRITERS[ext]([annotated()], path)
    assert "old content" not in path.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_new_file_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_tsv([annotated()], tmp_path / "p.tsv")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "p.tsv").stat().st_mode) == 0o644   # not mkstemp's 0600


def test_existing_file_keeps_its_permissions(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_text("x")
    os.chmod(path, 0o640)
    write_tsv([annotated()], path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_disk_full_raises_output_error_and_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "out.mgf"
    path.write_text("previous results\n")

    def fake_save(spectra, filename, **kwargs):
        with open(filename, "w") as fh:
            fh.write("BEGIN IONS\nTITLE=half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    import matchms.exporting
    monkeypatch.setattr(matchms.exporting, "save_as_mgf", fake_save)
    with pytest.raises(OutputError) as info:
        write_mgf([annotated()], path)
    message = str(info.value)
    assert str(path) in message and "No space left on device" in message
    assert path.read_text() == "previous results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mgf"]


def test_permission_error_is_an_output_error(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(files.tempfile, "mkstemp", refuse)
    with pytest.raises(OutputError, match="Permission denied") as info:
        write_tsv([annotated()], tmp_path / "t.tsv")
    assert str(tmp_path / "t.tsv") in str(info.value)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    os.chmod(folder, 0o500)
    try:
        with pytest.raises(OutputError, match="ro"):
            write_json([annotated()], folder / "x.json")
    finally:
        os.chmod(folder, 0o700)


def test_missing_folder_is_an_output_error(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        write_tsv([annotated()], tmp_path / "missing" / "t.tsv")


def test_atomic_write_propagates_other_errors_and_cleans_up(tmp_path):
    def boom(tmp):
        with open(tmp, "w") as fh:
            fh.write("partial")
        raise KeyError("not an OS error")

    with pytest.raises(KeyError):
        atomic_write(tmp_path / "k.txt", boom)
    assert list(tmp_path.iterdir()) == []
