"""The ``matchms-diffms annotate`` and ``plugins`` commands (cli.py).

The mechanics (input reading, checkpoint/resume, shards, workers, errors) run with ``FakeAnnotator``, a
deterministic stand-in with the annotator's interface; the last tests run the real annotator with the
official-format tiny checkpoint.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from matchms.importing import load_from_json, load_from_mgf, load_from_msp

from matchms_diffms import batch, cli, cli_options
from matchms_diffms import read_annotation, status_code
from matchms_diffms.checkpoint import checkpoint_path_for
from matchms_diffms.io import InputError
from matchms_diffms.metadata import spectrum_key
from matchms_diffms.official import WeightsError

FIXTURES = Path(__file__).parent / "fixtures"

MGF_RECORDS = [
    ("ethanol", "1", "47.04914", "C2H6O", "29.03858 100.0\n31.01784 35.0\n"),
    ("acetic acid", "2", "61.02841", "C2H4O2", "43.01784 100.0\n"),
    ("no formula", "3", "60.08078", None, "44.04948 100.0\n"),
    ("duplicate id a", "4", "47.04914", "C2H6O", "29.03858 50.0\n"),
    ("duplicate id b", "4", "47.04914", "C2H6O", "31.01784 50.0\n"),
    ("propanol", "6", "61.06479", "C3H8O", "43.05423 100.0\n"),
    ("stale", "7", "47.04914", "C2H6O", "29.03858 10.0\n"),
]


def mgf_text(records=MGF_RECORDS, extra_stale=True):
    blocks = []
    for title, fid, pepmass, formula, peaks in records:
        lines = ["BEGIN IONS", f"TITLE={title}", f"FEATURE_ID={fid}", f"PEPMASS={pepmass}", "CHARGE=1+",
                 "IONMODE=positive", "ADDUCT=[M+H]+"]
        if formula:
            lines.append(f"FORMULA={formula}")
        if title == "stale" and extra_stale:   # results of an earlier run that must disappear
            lines += ["DIFFMS_SMILES=OLD", "DIFFMS_STATUS=ok"]
        blocks.append("\n".join(lines) + "\n" + peaks + "END IONS\n")
    return "\n".join(blocks)


TITLES = [r[0] for r in MGF_RECORDS]


def position(spectrum) -> int:
    """Where a spectrum stands in MGF_RECORDS (the fake's stand-in for the identity the real annotator seeds
    from); a spectrum of another input gets a number from its identity."""
    title = spectrum.get("title")
    return TITLES.index(title) if title in TITLES else int(spectrum_key(spectrum)[-8:], 16) % 1000


class FakeAnnotator:
    """Deterministic stand-in: candidates depend only on (seed, spectrum); records the positions it is called
    for."""

    calls: list = []
    created: list = []
    interrupt_at = None

    def __init__(self, weights, options):
        self.weights, self.options = weights, options

    @classmethod
    def from_pretrained(cls, name_or_path="default", **options):
        if name_or_path == "missing":
            raise WeightsError("unknown weights 'missing': not a file or folder, and not a known name (known: none)")
        if options.get("steps") == 999:
            raise ValueError("steps must lie in 1..500")
        cls.created.append((name_or_path, options))
        return cls(name_or_path, options)

    def annotate(self, spectrum):
        index = position(spectrum)
        FakeAnnotator.calls.append(index)
        if FakeAnnotator.interrupt_at == index:
            raise KeyboardInterrupt
        if spectrum.get("title") == "crash":
            raise RuntimeError("fake annotator bug")
        out = spectrum.clone()
        metadata = {k: v for k, v in out.metadata.items() if not k.startswith("diffms_")}
        out.metadata = metadata
        seed = self.options["seed"]
        out.set("diffms_seed", seed)
        out.set("diffms_n_samples", self.options["n_samples"])
        out.set("diffms_model", f"{self.weights}@fake")
        if not spectrum.get("formula"):
            out.set("diffms_status", "no_formula: no formula")
            out.set("diffms_candidates", "[]")
            return out
        rng = np.random.default_rng([seed, index])
        n = int(rng.integers(1, self.options["top_k"] + 1))
        cands = [{"smiles": "C" * (i + 1) + "O", "inchikey": f"IK{index}-{i}", "formula": spectrum.get("formula"),
                  "score": round(float(rng.random()), 6), "count": int(rng.integers(1, 50))} for i in range(n)]
        out.set("diffms_status", "ok")
        out.set("diffms_candidates", json.dumps(cands))
        out.set("diffms_smiles", cands[0]["smiles"])
        out.set("diffms_score", cands[0]["score"])
        out.set("diffms_formula", spectrum.get("formula"))
        out.set("diffms_adduct_assumed", False)
        return out


@pytest.fixture
def fake(monkeypatch):
    FakeAnnotator.calls = []
    FakeAnnotator.created = []
    FakeAnnotator.interrupt_at = None
    monkeypatch.setattr(batch, "annotator_class", lambda: FakeAnnotator)
    monkeypatch.setattr(cli_options, "check_weights_early", lambda weights: None)   # FakeAnnotator judges them
    return FakeAnnotator


@pytest.fixture
def mgf(tmp_path):
    path = tmp_path / "in.mgf"
    path.write_text(mgf_text())
    return path


def run(*args):
    result = CliRunner().invoke(cli.main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def annotate(inp, out, *extra):
    return run("annotate", inp, "-o", out, "--seed", "5", "--no-progress", *extra)


def one_line_error(result, code=2):
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.output
    return lines[0]


# ------------------------------------------------------------------------------------------ basic run
def test_annotate_mgf(fake, mgf, tmp_path):
    before = mgf.read_bytes()
    out = tmp_path / "out.mgf"
    result = annotate(mgf, out, "--samples", 7, "--top-k", 3, "--max-formulas", 2, "--weights", "w1",
                      "--steps", 20)
    assert result.exit_code == 0, result.output
    assert mgf.read_bytes() == before                                    # input untouched
    assert not checkpoint_path_for(out).exists()
    assert fake.created == [("w1", {"n_samples": 7, "steps": 20, "top_k": 3, "seed": 5, "max_formulas": 2, "complete": True,
                                    "ranking": "fingerprint", "max_heavy_atoms": None})]
    assert fake.calls == list(range(7))
    back = list(load_from_mgf(str(out)))
    assert [s.get("title") for s in back] == [r[0] for r in MGF_RECORDS]
    codes = [status_code(s.get("diffms_status")) for s in back]
    assert codes == ["ok", "ok", "no_formula", "ok", "ok", "ok", "ok"]
    assert all(s.get("diffms_seed") == "5" and s.get("diffms_model") == "w1@fake" for s in back)
    assert 1 <= len(read_annotation(back[0])["candidates"]) <= 3
    # the duplicate feature ids are two spectra with their own results
    assert read_annotation(back[3])["candidates"] != read_annotation(back[4])["candidates"]
    # stale results of an earlier run are dropped, not carried over
    assert back[6].get("diffms_smiles") != "OLD" and back[6].get("diffms_status") == "ok"
    assert "wrote 7 spectra" in result.stderr and "6 ok" in result.stderr and "1 no_formula" in result.stderr


@pytest.mark.parametrize("ext, loader", [(".msp", load_from_msp), (".json", load_from_json)])
def test_output_formats(fake, mgf, tmp_path, ext, loader):
    ref = tmp_path / "ref.mgf"
    assert annotate(mgf, ref).exit_code == 0
    out = tmp_path / f"out{ext}"
    assert annotate(mgf, out).exit_code == 0
    back = list(loader(str(out)))
    assert [read_annotation(s)["candidates"] for s in back] == \
           [read_annotation(s)["candidates"] for s in load_from_mgf(str(ref))]


def test_tsv_output(fake, mgf, tmp_path):
    out = tmp_path / "out.tsv"
    assert annotate(mgf, out).exit_code == 0
    lines = out.read_text().splitlines()
    assert lines[0].startswith("spectrum_id\trank\tsmiles")
    no_formula = [line for line in lines[1:] if line.startswith("3\t")]
    assert len(no_formula) == 1 and no_formula[0].split("\t")[1] == ""


@pytest.mark.parametrize("source_ext", [".msp", ".json"])
def test_other_input_formats(fake, mgf, tmp_path, source_ext):
    from matchms_diffms.writers import WRITERS

    spectra = list(load_from_mgf(str(mgf)))
    converted = tmp_path / f"in{source_ext}"
    WRITERS[source_ext](spectra, converted)
    out = tmp_path / "out.mgf"
    assert annotate(converted, out).exit_code == 0
    assert len(list(load_from_mgf(str(out)))) == len(spectra)


def write_mzml(path):
    """A small mzML file (one MS1 and two MS2 scans), written with psims (a matchms dependency)."""
    import warnings

    writer_module = pytest.importorskip("psims.mzml.writer")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with writer_module.MzMLWriter(open(path, "wb"), close=True) as out:
            out.controlled_vocabularies()
            with out.run(id="run1"):
                with out.spectrum_list(count=3):
                    out.write_spectrum(np.array([100.0, 150.0]), np.array([10.0, 20.0]), id="scan=1",
                                       params=["MS1 spectrum", {"ms level": 1}, {"total ion current": 30.0}])
                    for k in (2, 3):
                        out.write_spectrum(np.array([29.03858, 31.01784]), np.array([100.0, 35.0 * k]),
                                           id=f"scan={k}",
                                           params=["MSn spectrum", {"ms level": 2}, {"total ion current": 135.0}],
                                           precursor_information={"mz": 47.04914, "intensity": 1000.0,
                                                                  "charge": 1, "scan_id": "scan=1"})


def test_mzml_input(fake, tmp_path):
    path = tmp_path / "run.mzML"
    write_mzml(path)
    out = tmp_path / "out.mgf"
    result = annotate(path, out)
    assert result.exit_code == 0, result.output
    back = list(load_from_mgf(str(out)))
    assert len(back) == 2                                               # the MS2 scans
    assert all(s.get("precursor_mz") == pytest.approx(47.04914) for s in back)
    assert [status_code(s.get("diffms_status")) for s in back] == ["no_formula", "no_formula"]


# ------------------------------------------------------------------------------------------ unreadable input
@pytest.mark.parametrize("name, content, needle", [
    ("missing.mgf", None, "no such file"),
    ("empty.mgf", b"", "no spectra found"),
    ("text.mgf", b"hello\nthis is no spectrum file\n", "no spectra found"),
    ("binary.mgf", bytes(range(256)) * 4, "not a UTF-8 text file"),
    ("latin1.msp", "NAME: caf\xe9\nNum Peaks: 1\n10 1\n".encode("latin-1"), "not a UTF-8 text file"),
    ("bad.json", b"{not json", "not valid JSON"),
    ("scalar.json", b"42", "expected a JSON list"),
    ("empty.json", b"[]", "no spectra found"),
    ("bad.mzML", b"<not really xml", "cannot read"),
    ("spectra.txt", b"BEGIN IONS\n", "unknown spectrum file type"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None)
def test_unreadable_input_is_a_one_line_error(fake, tmp_path, name, content, needle):
    """Missing, empty, wrong-type, non-UTF-8 and malformed files: exit 2, one line, no traceback."""
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    line = one_line_error(annotate(path, tmp_path / "out.mgf"))
    assert needle in line and name in line
    assert fake.created == [] and not (tmp_path / "out.mgf").exists()


def test_directory_as_input(fake, tmp_path):
    assert "not a file" in one_line_error(annotate(tmp_path, tmp_path / "out.mgf"))


def test_malformed_records_are_skipped_with_a_warning(fake, tmp_path):
    text = mgf_text(MGF_RECORDS[:2]) + "\nBEGIN IONS\nTITLE=broken\nPEPMASS=100\n10 abc\nEND IONS\n\n" + \
        mgf_text(MGF_RECORDS[5:6])
    path = tmp_path / "in.mgf"
    path.write_text(text)
    result = annotate(path, tmp_path / "out.mgf")
    assert result.exit_code == 0, result.output
    assert "record 3 skipped" in result.stderr
    back = list(load_from_mgf(str(tmp_path / "out.mgf")))
    assert [s.get("title") for s in back] == ["ethanol", "acetic acid", "propanol"]


def test_malformed_json_records_are_skipped(fake, tmp_path):
    records = [{"title": "ok", "precursor_mz": 47.04914, "formula": "C2H6O", "peaks_json": [[29.03858, 100.0]]},
               {"title": "bad peaks", "peaks_json": [["x", "y"]]},
               "not an object"]
    path = tmp_path / "in.json"
    path.write_text(json.dumps(records))
    result = annotate(path, tmp_path / "out.json")
    assert result.exit_code == 0, result.output
    assert "record 2 skipped" in result.stderr and "record 3 skipped" in result.stderr
    assert [s.get("title") for s in load_from_json(str(tmp_path / "out.json"))] == ["ok"]


def test_malformed_msp_records_are_skipped(fake, tmp_path):
    good = "NAME: {name}\nPRECURSORMZ: 47.04914\nFORMULA: C2H6O\nNum Peaks: 2\n29.03858\t100\n31.01784\t35\n"
    bad = "NAME: broken\nPRECURSORMZ: 47.0\nNum Peaks: 2\n29.0\tabc\n31.0 x y z\n"
    path = tmp_path / "in.msp"
    path.write_text("\n".join([good.format(name="first"), bad, good.format(name="last")]) + "\n")
    result = annotate(path, tmp_path / "out.mgf")
    assert result.exit_code == 0, result.output
    assert "record 2 skipped" in result.stderr
    assert [s.get("compound_name") for s in load_from_mgf(str(tmp_path / "out.mgf"))] == ["first", "last"]


def test_records_lost_without_an_exception_are_found(fake, tmp_path):
    # a record without END IONS, and an MSP record whose Num Peaks swallows the next record
    mgf = tmp_path / "in.mgf"
    mgf.write_text("BEGIN IONS\nTITLE=open\nPEPMASS=47.0\n29.0 1.0\n\n" + mgf_text(MGF_RECORDS[:1]))
    result = annotate(mgf, tmp_path / "out.mgf")
    assert result.exit_code == 0, result.output
    assert "record 1 skipped: no END IONS line" in result.stderr
    assert [s.get("title") for s in load_from_mgf(str(tmp_path / "out.mgf"))] == ["ethanol"]
    msp = tmp_path / "in.msp"
    good = "NAME: good\nPRECURSORMZ: 47.04914\nFORMULA: C2H6O\nNum Peaks: 1\n29.03858\t100\n"
    msp.write_text("NAME: bad\nPRECURSORMZ: 47.0\nNum Peaks: 5\n29.0\t1\n\n" + good)
    result = annotate(msp, tmp_path / "out2.mgf")
    assert result.exit_code == 0, result.output
    assert "0 of 2 records read" in result.stderr and "record 1 skipped" in result.stderr
    assert [s.get("compound_name") for s in load_from_mgf(str(tmp_path / "out2.mgf"))] == ["good"]


def test_mzml_without_pyteomics_is_a_clear_error(fake, tmp_path, monkeypatch):
    path = tmp_path / "run.mzML"
    path.write_text("<mzML/>")
    monkeypatch.setitem(sys.modules, "pyteomics", None)          # "import pyteomics" now fails
    line = one_line_error(annotate(path, tmp_path / "out.mgf"))
    assert "pyteomics and lxml" in line and "pip install" in line


def test_bad_output_and_options(fake, mgf, tmp_path):
    assert "unknown output format '.xyz'" in one_line_error(annotate(mgf, tmp_path / "out.xyz"))
    assert "is the INPUT file" in one_line_error(annotate(mgf, mgf))
    assert "does not exist" in one_line_error(annotate(mgf, tmp_path / "nope" / "out.mgf"))
    result = annotate(mgf, tmp_path / "o.mgf", "--shard", "2/2")
    assert result.exit_code == 2 and "0 <= I < N" in result.output
    assert fake.created == []


def test_unknown_weights_is_a_one_line_error_and_leaves_no_checkpoint(fake, mgf, tmp_path):
    out = tmp_path / "out.mgf"
    line = one_line_error(annotate(mgf, out, "--weights", "missing"))
    assert "unknown weights 'missing'" in line
    assert not out.exists() and not checkpoint_path_for(out).exists()
    assert "steps must lie" in one_line_error(annotate(mgf, out, "--steps", 999))


def test_unexpected_annotator_exception_becomes_an_error_status(fake, tmp_path):
    records = MGF_RECORDS[:1] + [("crash", "9", "47.04914", "C2H6O", "29.03858 1.0\n")]
    path = tmp_path / "in.mgf"
    path.write_text(mgf_text(records))
    result = annotate(path, tmp_path / "out.mgf")
    assert result.exit_code == 0
    back = list(load_from_mgf(str(tmp_path / "out.mgf")))
    assert back[1].get("diffms_status") == "error: RuntimeError: fake annotator bug"
    assert "fake annotator bug" in result.stderr


def test_output_write_failure_keeps_the_checkpoint(fake, mgf, tmp_path, monkeypatch):
    import errno

    from matchms_diffms import files, writers

    out = tmp_path / "out.mgf"

    def full(spectra, path):
        raise files.OutputError(f"cannot write {path}: {os.strerror(errno.ENOSPC)}")

    monkeypatch.setitem(writers.WRITERS, ".mgf", full)
    line = one_line_error(annotate(mgf, out), code=1)
    assert "No space left on device" in line and "--resume" in line
    assert checkpoint_path_for(out).exists()
    monkeypatch.undo()
    monkeypatch.setattr(batch, "annotator_class", lambda: FakeAnnotator)
    FakeAnnotator.calls = []
    assert annotate(mgf, out, "--resume").exit_code == 0
    assert FakeAnnotator.calls == []                                     # nothing recomputed
    assert len(list(load_from_mgf(str(out)))) == 7


# ------------------------------------------------------------------------------------------ checkpoint / resume
def test_interrupt_and_resume_give_the_uninterrupted_output(fake, mgf, tmp_path):
    ref = tmp_path / "ref.mgf"
    assert annotate(mgf, ref).exit_code == 0
    out = tmp_path / "out.mgf"
    fake.interrupt_at, fake.calls = 4, []
    result = annotate(mgf, out)
    assert result.exit_code == 130 and "--resume" in result.stderr
    checkpoint = checkpoint_path_for(out)
    lines = checkpoint.read_text().splitlines()
    assert json.loads(lines[0])["header"]["seed"] == 5
    assert [json.loads(line)["index"] for line in lines[1:]] == [0, 1, 2, 3]
    assert not out.exists()
    # without --resume the checkpoint is in the way
    line = one_line_error(annotate(mgf, out))
    assert "--resume" in line and str(checkpoint) in line
    fake.interrupt_at, fake.calls = None, []
    assert annotate(mgf, out, "--resume").exit_code == 0
    assert fake.calls == [4, 5, 6]
    assert out.read_bytes() == ref.read_bytes()
    assert not checkpoint.exists()


def test_resume_tolerates_a_cut_off_last_line(fake, mgf, tmp_path):
    ref = tmp_path / "ref.mgf"
    assert annotate(mgf, ref).exit_code == 0
    out = tmp_path / "out.mgf"
    fake.interrupt_at = 3
    assert annotate(mgf, out).exit_code == 130
    checkpoint = checkpoint_path_for(out)
    with open(checkpoint, "a") as fh:
        fh.write('{"index": 3, "metadata": {"diffms_status": "o')      # crash while writing
    fake.interrupt_at, fake.calls = None, []
    result = annotate(mgf, out, "--resume")
    assert result.exit_code == 0, result.output
    assert fake.calls == [3, 4, 5, 6]
    assert out.read_bytes() == ref.read_bytes()


def test_resume_seed_comes_from_the_checkpoint(fake, mgf, tmp_path):
    out = tmp_path / "out.mgf"
    fake.interrupt_at = 2
    assert run("annotate", mgf, "-o", out, "--no-progress").exit_code == 130      # random seed
    seed = json.loads(checkpoint_path_for(out).read_text().splitlines()[0])["header"]["seed"]
    fake.interrupt_at = None
    assert run("annotate", mgf, "-o", out, "--no-progress", "--resume").exit_code == 0
    assert {s.get("diffms_seed") for s in load_from_mgf(str(out))} == {str(seed)}


@pytest.mark.parametrize("change, needle", [(["--samples", "50"], "--samples"), (["--seed", "6"], "--seed"),
                                            (["--shard", "0/2"], "--shard")])
def test_resume_refuses_other_settings(fake, mgf, tmp_path, change, needle):
    out = tmp_path / "out.mgf"
    fake.interrupt_at = 2
    assert annotate(mgf, out).exit_code == 130
    fake.interrupt_at = None
    result = run("annotate", mgf, "-o", out, "--no-progress", "--resume",
                 *(["--seed", "5"] if "--seed" not in change else []), *change)
    assert needle in one_line_error(result)


def test_resume_refuses_another_input(fake, mgf, tmp_path):
    out = tmp_path / "out.mgf"
    fake.interrupt_at = 2
    assert annotate(mgf, out).exit_code == 130
    mgf.write_text(mgf_text(MGF_RECORDS[:3]))
    assert "another input" in one_line_error(annotate(mgf, out, "--resume"))


def test_resume_without_checkpoint_starts_fresh(fake, mgf, tmp_path):
    assert annotate(mgf, tmp_path / "out.mgf", "--resume").exit_code == 0
    assert fake.calls == list(range(7))


# ------------------------------------------------------------------------------------------ shards and workers
def _results(path):
    return [(s.get("title"), s.get("diffms_candidates"), s.get("diffms_status")) for s in load_from_mgf(str(path))]


def test_shards_partition_the_input(fake, mgf, tmp_path):
    assert annotate(mgf, tmp_path / "all.mgf").exit_code == 0
    full = _results(tmp_path / "all.mgf")
    parts = []
    for i in range(3):
        assert annotate(mgf, tmp_path / f"s{i}.mgf", "--shard", f"{i}/3").exit_code == 0
        parts.append(_results(tmp_path / f"s{i}.mgf"))
    assert parts[0] == [full[0], full[3], full[6]]
    assert parts[1] == [full[1], full[4]]
    assert parts[2] == [full[2], full[5]]


@pytest.mark.slow
def test_workers_give_the_same_output(fake, mgf, tmp_path):
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    assert annotate(mgf, one).exit_code == 0
    result = annotate(mgf, two, "--workers", 2)
    assert result.exit_code == 0, result.output
    assert two.read_bytes() == one.read_bytes()


def test_worker_start_failure_is_reported_by_the_first_task():
    # what a worker process does on start (in-process here: spawning costs seconds)
    batch._worker_load(FakeAnnotator, "missing", {"seed": 1})
    with pytest.raises(batch.WorkerStartError) as info:
        batch._worker_task((0, None))
    assert info.value.input_problem and "unknown weights 'missing'" in str(info.value)
    import pickle

    again = pickle.loads(pickle.dumps(info.value))                      # travels back to the parent
    assert (again.message, again.input_problem) == (info.value.message, True)

    class Exploding(FakeAnnotator):
        @classmethod
        def from_pretrained(cls, name_or_path="default", **options):
            raise MemoryError("out of memory")

    batch._worker_load(Exploding, "w", {"seed": 1})
    with pytest.raises(batch.WorkerStartError, match="cannot start a worker: MemoryError") as info:
        batch._worker_task((0, None))
    assert not info.value.input_problem
    batch._worker_load(FakeAnnotator, "w", {"seed": 1, "n_samples": 2, "top_k": 2})
    assert isinstance(batch._WORKER["annotator"], FakeAnnotator)
    batch._WORKER.clear()


def test_worker_errors_reach_the_user_as_one_line(fake, mgf, tmp_path, monkeypatch):
    def failing_run(*args, **kwargs):
        raise InputError("unknown weights 'x'")
        yield  # pragma: no cover

    monkeypatch.setattr(batch, "_records", failing_run)
    assert "unknown weights 'x'" in one_line_error(annotate(mgf, tmp_path / "o.mgf", "--workers", 2))
    assert not checkpoint_path_for(tmp_path / "o.mgf").exists()


# ------------------------------------------------------------------------------------------ other commands
def test_plugins_command():
    result = run("plugins")
    assert result.exit_code == 0
    assert "matchms_diffms.formula_sources.given: diffms_formula_candidates" in result.output
    assert "matchms_diffms.writers: diffms_output_writers" in result.output
    [formats] = [line for line in result.output.splitlines() if line.startswith("output formats: ")]
    assert {".json", ".mgf", ".msp", ".tsv"} <= set(formats[len("output formats: "):].split(", "))


def test_help_lists_the_commands():
    result = run("--help")
    assert result.exit_code == 0
    for command in ("annotate", "plugins"):
        assert command in result.output


def test_subprocess_error_has_no_traceback(tmp_path):
    bad = tmp_path / "bad.mgf"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    exe = shutil.which("matchms-diffms")
    cmd = [exe] if exe else [sys.executable, "-m", "matchms_diffms.cli"]
    proc = subprocess.run(cmd + ["annotate", str(bad), "-o", str(tmp_path / "out.mgf")], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"Error: cannot read {bad}: not a UTF-8 text file (byte 0)"]
    assert proc.stdout == ""


# ------------------------------------------------------------------------------------------ real annotator
def _without_timing(path):
    out = []
    for s in load_from_mgf(str(path)):
        md = {k: v for k, v in s.metadata.items() if k != "diffms_seconds"}
        out.append(md)
    return out


@pytest.mark.slow
def test_end_to_end_with_the_tiny_checkpoint(conformance_dir, tmp_path):
    weights = conformance_dir / "tiny_official.ckpt.gz"
    src = FIXTURES / "annotator_tiny.mgf"
    out = tmp_path / "out.mgf"
    common = ["--weights", weights, "--samples", 12, "--steps", 4, "--seed", 3, "--no-progress"]
    result = run("annotate", src, "-o", out, *common)
    assert result.exit_code == 0, result.output
    back = list(load_from_mgf(str(out)))
    codes = [status_code(s.get("diffms_status")) for s in back]
    assert len(back) == 6
    assert codes[4] == "unsupported_element" and codes[5] == "unsupported_adduct"
    assert all(c in ("ok", "no_valid_candidates", "no_annotated_peaks") for c in codes[:4]), codes
    assert back[3].get("diffms_formula_source") == "mass_decomposition"
    for s in back:
        info = read_annotation(s)
        assert info["model"].startswith("tiny_official.ckpt.gz@") and info["seed"] == 3
        assert info["n_samples"] == 12 and info["steps"] == 4
        for cand in info["candidates"]:
            assert cand["formula"] == info["formula"] and 0.0 <= cand["score"] <= 1.0
    # a shard reproduces its part of the full run exactly (per-spectrum seeds from the input position)
    assert run("annotate", src, "-o", tmp_path / "s1.mgf", "--shard", "1/2", *common).exit_code == 0
    assert _without_timing(tmp_path / "s1.mgf") == _without_timing(out)[1::2]


def test_ranking_default_is_the_library_default():
    from matchms_diffms.ranking import DEFAULT_RANKING, RANKINGS

    option = next(p for p in cli.main.commands["annotate"].params if p.name == "ranking")
    assert option.default == DEFAULT_RANKING and set(option.type.choices) == set(RANKINGS)
    assert batch.AnnotationSettings().ranking == DEFAULT_RANKING
