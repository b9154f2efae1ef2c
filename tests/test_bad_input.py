"""Bad-input matrix: every kind of broken spectrum file or record gives a documented ``diffms_status`` reason
(or, for a file that cannot be read at all, a one-line error and exit code 2); the good spectra of the same
file are still annotated; no traceback reaches the user.

Each file of ``tests/fixtures/bad_input/`` holds one bad case followed by a good record (ethanol, ``good``).
The table :data:`CASES` is the documented matrix (README, section "Reliability"). The model is a tiny
random-weight DiffMS written by the test (no ``../shared`` needed).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from matchms import Spectrum

from matchms_diffms import cli
from matchms_diffms import DiffMSAnnotator, STATUS_CODES, read_candidates, status_code
from reliability_helpers import assert_no_traceback, make_tiny_weights, run_cli

BAD = Path(__file__).parent / "fixtures" / "bad_input"
SAMPLED = ("ok", "no_valid_candidates", "no_annotated_peaks")   # the model ran on the spectrum
RUN_OPTIONS = ["--samples", "4", "--steps", "3", "--seed", "7", "--top-k", "3", "--no-progress"]

# (fixture file, kind, expected, text in the status / warning / error)
#   status : every record titled "bad"/"dup" gets this status code
#   sampled: the bad record is still annotated (status in SAMPLED); ``expected`` is its formula source
#   skipped: the record cannot be parsed; a warning "record N skipped" names it; the other records are annotated
#   error  : the file cannot be read at all: exit code 2 and one line "Error: cannot read ..."
CASES = [
    # malformed records
    ("mgf_malformed_peak_line.mgf", "skipped", None, "Error when parsing MGF"),
    ("mgf_one_column_peak.mgf", "skipped", None, "same shape"),
    ("mgf_missing_end_ions.mgf", "skipped", None, "END IONS"),
    ("mgf_unparsable_pepmass.mgf", "skipped", None, "could not convert string to float"),
    ("mgf_unparsable_charge.mgf", "skipped", None, "Charge"),
    ("msp_malformed_peak_line.msp", "skipped", None, "record 1"),
    ("msp_wrong_num_peaks.msp", "skipped", None, "record 1"),
    ("msp_missing_num_peaks.msp", "skipped", None, "num peaks"),
    ("msp_zero_peaks.msp", "skipped", None, "record 1"),
    ("json_malformed_records.json", "skipped", None, "record 3 skipped"),
    # formula
    ("formula_missing_no_precursor.mgf", "status", "no_formula", "no molecular formula"),
    ("formula_missing_with_precursor.mgf", "sampled", "mass_decomposition", ""),
    ("formula_empty.mgf", "status", "no_formula", "no molecular formula"),
    ("formula_unparsable.mgf", "status", "invalid_formula", "C2H6O%"),
    ("formula_lowercase.mgf", "status", "invalid_formula", "c2h6o"),
    ("formula_unknown_element.mgf", "status", "invalid_formula", "Xx"),
    ("formula_no_atoms.mgf", "status", "invalid_formula", "no atoms"),
    ("formula_impossible_hydrogens.mgf", "status", "invalid_formula", "at most 6 hydrogens"),
    ("formula_radical.mgf", "status", "invalid_formula", "odd number of electrons"),
    ("formula_mismatch_precursor.mgf", "status", "formula_mismatch", "C3H8O"),
    ("formula_ion_notation.mgf", "status", "formula_mismatch", "ion formula"),
    ("element_unsupported.mgf", "status", "unsupported_element", "Br"),
    ("adduct_unsupported.mgf", "status", "unsupported_adduct", "[M+Xe]+"),
    ("adduct_malformed.mgf", "status", "unsupported_adduct", "cannot parse adduct"),
    ("adduct_multiply_charged.mgf", "status", "unsupported_adduct", "multiply charged"),
    ("adduct_no_encoder_slot.mgf", "status", "unsupported_adduct", "no encoder slot"),
    ("atoms_too_many.mgf", "status", "too_many_atoms", "at most 20"),
    ("atoms_single_heavy.mgf", "status", "too_few_atoms", "1 heavy atom"),
    # peaks
    ("peaks_none.mgf", "status", "no_peaks", "no peaks"),
    ("peaks_all_zero.mgf", "status", "no_peaks", "zero"),
    ("peaks_nan_intensity.mgf", "status", "invalid_peaks", "non-finite intensity"),
    ("peaks_inf_mz.mgf", "status", "invalid_peaks", "non-finite m/z"),
    ("peaks_negative_intensity.mgf", "status", "invalid_peaks", "negative intensity"),
    ("peaks_negative_mz.mgf", "status", "invalid_peaks", "negative m/z"),
    ("peaks_some_above_precursor.mgf", "sampled", "metadata", ""),
    ("peaks_all_above_precursor.mgf", "sampled", "metadata", ""),
    ("precursor_missing.mgf", "sampled", "metadata", ""),
    ("duplicate_ids.mgf", "sampled", "metadata", ""),
    # whole files
    ("file_empty.mgf", "error", None, "no spectra found"),
    ("file_whitespace_only.msp", "error", None, "no spectra found"),
    ("file_non_utf8.mgf", "error", None, "not a UTF-8 text file (byte"),
    ("file_not_spectra.mgf", "error", None, "no spectra found"),
    ("file_binary.mgf", "error", None, "not a UTF-8 text file"),
    ("file_invalid_json.json", "error", None, "not valid JSON"),
    ("file_unknown_type.txt", "error", None, "unknown spectrum file type"),
    ("file_does_not_exist.mgf", "error", None, "no such file"),
]


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    return make_tiny_weights(tmp_path_factory.mktemp("weights") / "tiny")


def invoke(*args):
    result = CliRunner().invoke(cli.main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception          # an exception the CLI did not turn into a message
    return result


def assert_good_record_annotated(record: dict) -> None:
    """The good record (ethanol) beside a bad one gets real candidates: status ``ok``, formula-exact ones."""
    assert status_code(record["diffms_status"]) == "ok", record["diffms_status"]
    assert record["diffms_formula"] == "C2H6O" and record["diffms_n_samples"] == 4
    candidates = read_candidates(record["diffms_candidates"])
    assert candidates and all(c["formula"] == "C2H6O" for c in candidates), candidates


def test_every_fixture_is_in_the_matrix():
    listed = {name for name, *_ in CASES}
    assert sorted(p.name for p in BAD.iterdir()) == sorted(listed - {"file_does_not_exist.mgf"})


@pytest.mark.parametrize("name, kind, expected, text", CASES, ids=[c[0] for c in CASES])
def test_bad_input_matrix(name, kind, expected, text, tiny_weights, tmp_path):
    out = tmp_path / "out.json"
    result = invoke("annotate", BAD / name, "-o", out, "--weights", tiny_weights, *RUN_OPTIONS)
    assert_no_traceback(result.output)
    if kind == "error":
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: cannot read "), result.stderr
        assert text in lines[0]
        assert not out.exists() and not list(tmp_path.iterdir())
        return
    assert result.exit_code == 0, result.output
    records = json.loads(out.read_text())
    titles = [r.get("title") or r.get("compound_name") for r in records]
    good = [r for r, t in zip(records, titles) if t == "good"]
    assert len(good) == 1, titles                               # the rest of the library is annotated
    assert_good_record_annotated(good[0])
    bad = [r for r, t in zip(records, titles) if t != "good"]
    for r in records:
        assert status_code(r["diffms_status"]) in STATUS_CODES
    if kind == "skipped":
        assert bad == []
        warnings = [line for line in result.stderr.splitlines() if "skipped" in line]
        assert warnings and all(line.startswith("WARNING") for line in warnings), result.stderr
        assert any(text.lower() in line.lower() for line in warnings), result.stderr
        assert re.search(r"record \d+ skipped", result.stderr)
    elif kind == "status":
        assert bad, titles
        for r in bad:
            assert status_code(r["diffms_status"]) == expected, r["diffms_status"]
            assert text in r["diffms_status"]
            assert r["diffms_candidates"] == [] and "diffms_smiles" not in r
            assert r["diffms_model"].startswith("reliability-tiny@")
    else:   # sampled
        assert bad, titles
        for r in bad:
            assert status_code(r["diffms_status"]) in SAMPLED, r["diffms_status"]
            assert r["diffms_formula_source"] == expected
            assert r["diffms_n_samples"] == 4
    summary = result.stderr.strip().splitlines()[-1]
    assert summary.startswith(f"wrote {len(records)} spectra to ")


def test_duplicate_ids_are_annotated_independently(tiny_weights, tmp_path):
    out = tmp_path / "out.tsv"
    result = invoke("annotate", BAD / "duplicate_ids.mgf", "-o", out, "--weights", tiny_weights, *RUN_OPTIONS)
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in out.read_text().splitlines()[1:]]
    ids = [r[0] for r in rows]
    assert ids.count("good") >= 1 and ids.count("7") >= 2      # both spectra with id 7 are in the table
    statuses = [r[7] for r in rows if r[0] == "7"]
    assert all(status_code(s) in SAMPLED for s in statuses), statuses


def test_peaks_above_precursor_are_ignored_by_the_encoder(tiny_weights, monkeypatch):
    """Peaks above precursor m/z + 1 play no part: the result equals that of the spectrum without them."""
    from matchms_diffms import annotator as annotator_module

    monkeypatch.setattr(annotator_module, "spectrum_key", lambda spectrum: "same seed for both")
    annotator = DiffMSAnnotator.from_pretrained(str(tiny_weights), n_samples=6, steps=3, seed=3)
    md = {"formula": "C2H6O", "adduct": "[M+H]+", "precursor_mz": 47.04914, "title": "x"}
    plain = Spectrum(mz=np.array([29.03858, 31.01784]), intensities=np.array([100.0, 35.0]), metadata=md)
    above = Spectrum(mz=np.array([29.03858, 31.01784, 120.0, 300.0]), intensities=np.array([100.0, 35.0, 900.0, 5.0]),
                     metadata=md)
    a, b = annotator.annotate(plain), annotator.annotate(above)
    for key in ("diffms_status", "diffms_candidates", "diffms_n_valid", "diffms_n_formula_match"):
        assert a.get(key) == b.get(key), key


def test_only_peaks_above_precursor_gives_no_annotated_peaks(tiny_weights):
    annotator = DiffMSAnnotator.from_pretrained(str(tiny_weights), n_samples=16, steps=3, seed=0)
    md = {"formula": "C2H6O", "adduct": "[M+H]+", "precursor_mz": 47.04914}
    s = Spectrum(mz=np.array([150.0, 250.0]), intensities=np.array([100.0, 35.0]), metadata=md)
    out = annotator.annotate(s)
    assert out.get("diffms_n_formula_match") > 0                # the tiny model finds C2H6O structures
    assert status_code(out.get("diffms_status")) == "no_annotated_peaks", out.get("diffms_status")
    assert out.get("diffms_smiles")                             # still annotated (not a skip)


def test_subformula_search_limit_is_a_status_not_an_error(tiny_weights):
    """A formula within max_n_nodes whose subformula search would exceed its limit: too_many_atoms."""
    annotator = DiffMSAnnotator.from_pretrained(str(tiny_weights), config_overrides={"max_n_nodes": 200},
                                                n_samples=2, steps=2, seed=0)
    s = Spectrum(mz=np.array([100.0]), intensities=np.array([1.0]),
                 metadata={"formula": "C100H200N20O30", "adduct": "[M+H]+"})
    out = annotator.annotate(s)
    assert status_code(out.get("diffms_status")) == "too_many_atoms", out.get("diffms_status")
    assert "subformula search" in out.get("diffms_status")


def test_element_count_above_the_encoder_limit(tiny_weights):
    annotator = DiffMSAnnotator.from_pretrained(str(tiny_weights), config_overrides={"max_n_nodes": 200},
                                                n_samples=2, steps=2, seed=0)
    s = Spectrum(mz=np.array([100.0]), intensities=np.array([1.0]),
                 metadata={"formula": "C130H262", "adduct": "[M+H]+"})
    status = annotator.annotate(s).get("diffms_status")
    assert status_code(status) == "too_many_atoms" and "up to 255" in status, status


def test_peak_at_the_bare_adduct_mass(tiny_weights):
    """A proton peak (m/z 1.00728 for [M+H]+) or Na+ peak (22.98922 for [M+Na]+) gets the empty subformula."""
    annotator = DiffMSAnnotator.from_pretrained(str(tiny_weights), n_samples=4, steps=2, seed=0)
    s = Spectrum(mz=np.array([1.00728, 29.03858]), intensities=np.array([100.0, 50.0]),
                 metadata={"formula": "C2H6O", "adduct": "[M+H]+", "precursor_mz": 47.04914})
    status = annotator.annotate(s).get("diffms_status")
    assert status_code(status) in SAMPLED, status


@pytest.mark.parametrize("formula, reason", [
    ("C2H20O", "at most 6 hydrogens"), ("C2H5O", "odd number"), ("C3H8N", "odd number"),
    ("C2H7N", None), ("C4H13P", None), ("C2H6S", None), ("C2H6OS", None), ("CH3Cl", None), ("C6H6", None),
    ("H2", None)])
def test_impossible_formula(formula, reason):
    from matchms_diffms.annotator import impossible_formula
    from matchms_diffms.chem.formula import Formula

    got = impossible_formula(Formula.parse(formula))
    assert (got is None) if reason is None else (reason in got), got


def test_an_exception_inside_the_model_is_a_status_and_the_run_goes_on(tiny_weights, caplog):
    annotator = DiffMSAnnotator.from_pretrained(str(tiny_weights), n_samples=2, steps=2, seed=0)
    md = {"formula": "C2H6O", "adduct": "[M+H]+", "precursor_mz": 47.04914, "title": "boom"}
    s = Spectrum(mz=np.array([29.03858]), intensities=np.array([100.0]), metadata=md)
    original = annotator.model.sample

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure")

    annotator.model.sample = broken
    try:
        outs = list(annotator.annotate_many([s, None, s]))
    finally:
        annotator.model.sample = original
    assert outs[1] is None
    assert [o.get("diffms_status") for o in (outs[0], outs[2])] == ["error: RuntimeError: simulated failure"] * 2
    assert "title=boom" in caplog.text
    assert status_code(annotator.annotate(s).get("diffms_status")) in SAMPLED


def test_library_with_every_bad_record_in_one_run(tiny_weights, tmp_path):
    """One subprocess run over all record-level MGF cases concatenated: exit 0, no traceback, every parsed
    record present with its documented status, every good record annotated."""
    parts, expected = [], {}
    for name, kind, code, _ in CASES:
        if not name.endswith(".mgf") or kind == "error":
            continue
        case = name[:-4]
        text = (BAD / name).read_text()
        text = re.sub(r"^TITLE=(bad|dup)$", f"TITLE=bad {case}", text, flags=re.M)
        text = re.sub(r"^TITLE=good$", f"TITLE=good {case}", text, flags=re.M)
        parts.append(text.rstrip("\n") + "\n\n")
        if kind != "skipped":
            expected[f"bad {case}"] = (kind, code)
        expected[f"good {case}"] = ("good", None)
    library = tmp_path / "library.mgf"
    library.write_text("".join(parts))
    before = library.read_bytes()
    out = tmp_path / "annotated.json"
    proc = run_cli("annotate", library, "-o", out, "--weights", tiny_weights, *RUN_OPTIONS, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert_no_traceback(proc.stderr + proc.stdout)
    assert library.read_bytes() == before                       # the input is never modified
    records = json.loads(out.read_text())
    seen = {}
    for r in records:
        seen.setdefault(r["title"], []).append(r)
    assert set(seen) == set(expected)
    for title, (kind, code) in expected.items():
        for r in seen[title]:
            got = status_code(r["diffms_status"])
            if kind == "status":
                assert got == code, (title, r["diffms_status"])
            elif kind == "good":
                assert_good_record_annotated(r)
            else:
                assert got in SAMPLED and r["diffms_formula_source"] == code, (title, r["diffms_status"])
    n_skipped = sum(1 for name, kind, *_ in CASES if kind == "skipped" and name.endswith(".mgf"))
    assert len(re.findall(r"record \d+ skipped", proc.stderr)) == n_skipped, proc.stderr
