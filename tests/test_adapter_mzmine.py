"""MZmine DiffMS-module drop-in (``matchms_diffms_adapters.mzmine.runner``), tested with a harness that plays
MZmine's side.

The harness mirrors MZmine's Java (docs/mzmine-sirius.md a.4-a.7): it writes the input JSON compactly with
null values omitted, builds the argument list in MZmine's order (``<python> <runner .py> --diffms-dir ...``),
runs the process with stderr merged into stdout and the vendored DiffMS folder as working directory, and
parses the merged stream line by line with MZmine's three whole-line patterns plus the LOG prefix. Result
lines go through a strict two-key schema (Jackson's FAIL_ON_UNKNOWN_PROPERTIES): an extra key fails the
harness. SMILES are checked the way MZmine does it after PR #3167 (parse, element counts with implicit H equal
the row's formula), with RDKit standing in for CDK.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from rdkit import Chem

from matchms_diffms_adapters.mzmine import runner

FIXTURES = Path(__file__).parent / "fixtures" / "adapters"
INPUT = FIXTURES / "mzmine_diffms_input.json"
REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------- the harness
PROGRESS_RE = re.compile(r"^MZMINE_DIFFMS_PROGRESS (\d+)/(\d+)$")
STAGE_RE = re.compile(r"^MZMINE_DIFFMS_STAGE (.+)$")
RESULT_RE = re.compile(r"^MZMINE_DIFFMS_RESULT_JSON (.+)$")
LOG_PREFIX = "MZMINE_DIFFMS_LOG "


class HarnessError(AssertionError):
    """What MZmine would reject or lose."""


@dataclass
class Stream:
    """The merged stream as MZmine sees it; ``events`` keeps the order of protocol lines."""

    progress: list = field(default_factory=list)
    stages: list = field(default_factory=list)
    results: list = field(default_factory=list)
    logs: list = field(default_factory=list)
    other: list = field(default_factory=list)
    events: list = field(default_factory=list)


def parse_result(text: str) -> dict:
    """MZmine's ``record Result(int rowId, List<String> smiles)`` read by a default Jackson ObjectMapper."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise HarnessError(f"cannot parse result JSON: {err}: {text!r}") from None
    if not isinstance(obj, dict):
        raise HarnessError(f"result JSON is not an object: {text!r}")
    extra = set(obj) - {"rowId", "smiles"}
    if extra:
        raise HarnessError(f"cannot parse result JSON: unrecognized field(s) {sorted(extra)}")
    row_id = obj.get("rowId")
    if isinstance(row_id, bool) or not isinstance(row_id, int):
        raise HarnessError(f"rowId is not an int: {row_id!r}")
    smiles = obj.get("smiles")
    if smiles is not None and (not isinstance(smiles, list) or not all(isinstance(s, str) for s in smiles)):
        raise HarnessError(f"smiles is not a list of strings: {smiles!r}")
    return {"rowId": row_id, "smiles": smiles}


def parse_stream(text: str) -> Stream:
    """Apply MZmine's patterns to every line (``BufferedReader.readLine`` splitting)."""
    out = Stream()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for line in lines:
        line = line[:-1] if line.endswith("\r") else line
        if m := PROGRESS_RE.fullmatch(line):
            out.progress.append((int(m.group(1)), int(m.group(2))))
            out.events.append(("progress", out.progress[-1]))
        elif m := STAGE_RE.fullmatch(line):
            out.stages.append(m.group(1))
            out.events.append(("stage", m.group(1)))
        elif m := RESULT_RE.fullmatch(line):
            out.results.append(parse_result(m.group(1)))
            out.events.append(("result", out.results[-1]["rowId"]))
        elif line.startswith(LOG_PREFIX):
            out.logs.append(line[len(LOG_PREFIX):])
            out.events.append(("log", line[len(LOG_PREFIX):]))
        else:
            if line.startswith("MZMINE_DIFFMS_"):
                raise HarnessError(f"protocol-like line that MZmine would not recognize: {line!r}")
            out.other.append(line)
    return out


def formula_counts(text: str) -> dict:
    counts = {}
    for el, n in re.findall(r"([A-Z][a-z]?)(\d*)", text):
        counts[el] = counts.get(el, 0) + (int(n) if n else 1)
    return counts


def cdk_like_accepts(smiles: str, formula: str) -> bool:
    """MZmine's check of a returned SMILES (CDK stand-in): parses, element counts incl. implicit H match."""
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return False
    counts = {}
    for atom in mol.GetAtoms():
        counts[atom.GetSymbol()] = counts.get(atom.GetSymbol(), 0) + 1
        counts["H"] = counts.get("H", 0) + atom.GetTotalNumHs()
    return {k: v for k, v in counts.items() if v} == formula_counts(formula)


def check_stream(stream: Stream, items: list, top_k: int) -> dict:
    """Everything MZmine relies on; returns ``{rowId: smiles}`` of the results."""
    n = len(items)
    ids = [it.get("rowId") for it in items]
    if not stream.progress or stream.progress[0] != (0, n):
        raise HarnessError(f"first progress must be 0/{n}, got {stream.progress[:1]}")
    if stream.progress != [(i, n) for i in range(n + 1)]:
        raise HarnessError(f"progress must count 0..{n} once each, got {stream.progress}")
    kinds = [e[0] for e in stream.events]
    if "model_ready" not in stream.stages or "inference" not in stream.stages:
        raise HarnessError(f"stages model_ready and inference expected, got {stream.stages}")
    first_progress = kinds.index("progress")
    if stream.events.index(("stage", "model_ready")) > first_progress:
        raise HarnessError("model_ready must come before PROGRESS 0/N")
    inference = stream.events.index(("stage", "inference"))
    if inference < first_progress or ("result" in kinds and inference > kinds.index("result")):
        raise HarnessError("the inference stage must follow PROGRESS 0/N and precede the results")
    results = {}
    done = 0
    for kind, value in stream.events:
        if kind == "progress":
            done = value[0]
        elif kind == "result":
            row = value
            if row not in ids:
                raise HarnessError(f"result for unknown rowId {row}")
            if ids.index(row) != done:
                raise HarnessError(f"result of row {row} arrived after its progress line")
            if row in results:
                raise HarnessError(f"two result lines for row {row}")
            results[row] = None
    for rec in stream.results:
        item = items[ids.index(rec["rowId"])]
        smiles = rec["smiles"] or []
        if not smiles:
            raise HarnessError(f"empty result for row {rec['rowId']}: omit the line instead")
        if len(smiles) > top_k or len(set(smiles)) != len(smiles):
            raise HarnessError(f"row {rec['rowId']}: {len(smiles)} SMILES (top-k {top_k}) or duplicates")
        for s in smiles:
            if not cdk_like_accepts(s, item["formula"]) or "." in s:
                raise HarnessError(f"row {rec['rowId']}: MZmine would drop {s!r} (formula {item['formula']})")
        results[rec["rowId"]] = smiles
    for row in ids:
        if row not in results and not any(log.startswith(f"row {row}:") for log in stream.logs):
            raise HarnessError(f"row {row} has neither a result nor a LOG line with the reason")
    return results


def write_mzmine_input(items: list, path: Path) -> Path:
    """Jackson's compact output with null values omitted."""
    def drop_nulls(obj):
        if isinstance(obj, dict):
            return {k: drop_nulls(v) for k, v in obj.items() if v is not None}
        if isinstance(obj, list):
            return [drop_nulls(v) for v in obj]
        return obj

    path.write_text(json.dumps(drop_nulls(items), separators=(",", ":")), encoding="utf-8")
    return path


def mzmine_flags(ext: Path, checkpoint, input_json, output_json, top_k=5, max_peaks=50, tol=0.02, device="cpu"):
    """MZmine's flags, always in this order (a.5)."""
    return ["--diffms-dir", str(ext / "diffms" / "vendor" / "DiffMS") + os.sep, "--checkpoint", str(checkpoint),
            "--input", str(input_json), "--output", str(output_json), "--top-k", str(top_k),
            "--max-ms2-peaks", str(max_peaks), "--subformula-tol", str(tol), "--device", device]


def fake_mzmine_install(tmp_path: Path) -> tuple[Path, Path, Path]:
    """``external_tools/`` with the vendored folder and the runner file MZmine pre-checks; returns
    (ext, vendored dir, runner .py)."""
    ext = tmp_path / "external_tools"
    vendored = ext / "diffms" / "vendor" / "DiffMS"
    vendored.mkdir(parents=True)
    script = ext / "diffms" / "src" / "mzmine_diffms_predict.py"
    script.parent.mkdir(parents=True)
    return ext, vendored, script


def run_like_mzmine(argv: list[str], cwd: Path, env: dict | None = None, timeout: int = 240):
    """ProcessBuilder with redirectErrorStream(true); returns (exit code, merged text)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env,
                          timeout=timeout)
    return proc.returncode, proc.stdout.decode("utf-8")


# ---------------------------------------------------------------------------------------------- harness self-test
def test_harness_is_strict():
    ok = "MZMINE_DIFFMS_RESULT_JSON {\"rowId\": 1, \"smiles\": [\"CCO\"]}\n"
    assert parse_stream(ok).results == [{"rowId": 1, "smiles": ["CCO"]}]
    with pytest.raises(HarnessError, match="unrecognized"):
        parse_stream('MZMINE_DIFFMS_RESULT_JSON {"rowId": 1, "smiles": ["CCO"], "scores": [0.5]}\n')
    with pytest.raises(HarnessError, match="rowId"):
        parse_stream('MZMINE_DIFFMS_RESULT_JSON {"rowId": "1", "smiles": []}\n')
    with pytest.raises(HarnessError, match="not recognize"):
        parse_stream("MZMINE_DIFFMS_PROGRESS 1 / 2\n")        # MZmine would silently lose it
    items = [{"rowId": 1, "formula": "C2H6O"}]
    good = parse_stream("MZMINE_DIFFMS_STAGE model_ready\nMZMINE_DIFFMS_PROGRESS 0/1\nMZMINE_DIFFMS_STAGE inference\n"
                        'MZMINE_DIFFMS_RESULT_JSON {"rowId": 1, "smiles": ["OCC"]}\nMZMINE_DIFFMS_PROGRESS 1/1\n')
    assert check_stream(good, items, top_k=5) == {1: ["OCC"]}
    wrong_formula = parse_stream("MZMINE_DIFFMS_STAGE model_ready\nMZMINE_DIFFMS_PROGRESS 0/1\n"
                                 "MZMINE_DIFFMS_STAGE inference\n"
                                 'MZMINE_DIFFMS_RESULT_JSON {"rowId": 1, "smiles": ["CC=O"]}\n'
                                 "MZMINE_DIFFMS_PROGRESS 1/1\n")
    with pytest.raises(HarnessError, match="would drop"):
        check_stream(wrong_formula, items, top_k=5)
    silent = parse_stream("MZMINE_DIFFMS_STAGE model_ready\nMZMINE_DIFFMS_PROGRESS 0/1\n"
                          "MZMINE_DIFFMS_STAGE inference\nMZMINE_DIFFMS_PROGRESS 1/1\n")
    with pytest.raises(HarnessError, match="neither"):
        check_stream(silent, items, top_k=5)


# ---------------------------------------------------------------------------------------------- unit tests
def test_parse_args_like_mzmine(tmp_path, monkeypatch):
    for env in (runner.ENV_SAMPLES, runner.ENV_STEPS, runner.ENV_SEED):
        monkeypatch.delenv(env, raising=False)
    ext, _, script = fake_mzmine_install(tmp_path)
    flags = mzmine_flags(ext, "/m/diffms_msg.ckpt", "/t/in.json", "/t/out.json", top_k=7, max_peaks=60, tol=0.01)
    args, warnings = runner.parse_args([str(script)] + flags + ["--subformula-beam", "25", "--new-flag", "x"])
    assert (args.input, args.output, args.checkpoint) == ("/t/in.json", "/t/out.json", "/m/diffms_msg.ckpt")
    assert (args.top_k, args.max_ms2_peaks, args.subformula_tol, args.device) == (7, 60, 0.01, "cpu")
    assert args.batch_size == 8 and args.subformula_beam == 25
    assert args.n_samples == 7 and args.steps is None and args.seed == 0          # top-k (as MZmine's runner)
    assert warnings == ["ignoring unknown arguments: --new-flag x"]
    # without the script path (a shim calling main()) the result is the same
    args2, _ = runner.parse_args(flags)
    assert vars(args2) == {**vars(args), "subformula_beam": None}
    monkeypatch.setenv(runner.ENV_SAMPLES, "3")
    monkeypatch.setenv(runner.ENV_STEPS, "11")
    args3, _ = runner.parse_args(flags + ["--seed", "5"])
    assert (args3.n_samples, args3.steps, args3.seed) == (3, 11, 5)
    with pytest.raises(runner.UsageError):
        runner.parse_args(["--checkpoint", "x"])                                      # no --input
    with pytest.raises(runner.UsageError):
        runner.parse_args(["--input", "x", "--top-k", "five"])
    with pytest.raises(runner.UsageError):
        runner.parse_args(["--input", "x", "--top-k", "0"])


def test_subformula_tolerance_conversion():
    assert runner.subformula_ppm(0.02, 47.05) == pytest.approx(100.0)              # 200 m/z floor
    assert runner.subformula_ppm(0.02, 500.0) == pytest.approx(40.0)
    assert runner.subformula_ppm(10.0, 500.0) == 10.0                                # already ppm


def test_choose_weights(tmp_path, monkeypatch):
    monkeypatch.delenv(runner.ENV_WEIGHTS, raising=False)
    ckpt = tmp_path / "diffms_msg.ckpt"
    ckpt.write_bytes(b"x")
    assert runner.choose_weights(str(ckpt)) == (str(ckpt), None)
    missing_default = tmp_path / ".mzmine/external_resources/models/diffms/checkpoints/diffms_msg.ckpt"
    weights, note = runner.choose_weights(str(missing_default))
    assert weights == "default" and "MZmine's default location" in note
    with pytest.raises(FileNotFoundError):
        runner.choose_weights(str(tmp_path / "elsewhere" / "diffms_msg.ckpt"))
    member = f"{ckpt}::diffms_msg.ckpt"                                          # archive::member syntax
    assert runner.choose_weights(member) == (member, None)
    assert runner.choose_weights("default") == ("default", None)
    assert runner.choose_weights(None)[0] == "default"
    monkeypatch.setenv(runner.ENV_WEIGHTS, "my_weights")
    weights, note = runner.choose_weights(str(ckpt))
    assert weights == "my_weights" and runner.ENV_WEIGHTS in note


def test_mzmine_smiles_checks_formula_with_hydrogens():
    from matchms_diffms.chem.formula import Formula

    f = Formula.parse("C2H6O")
    assert runner.mzmine_smiles("OCC", f) == "CCO"
    assert runner.mzmine_smiles("CC=O", f) is None                  # C2H4O: hydrogens differ
    assert runner.mzmine_smiles("[CH2]CO", f) is None               # radical: C2H5O
    assert runner.mzmine_smiles("C.CO", Formula.parse("C2H8O")) is None   # two fragments
    assert runner.mzmine_smiles("not a smiles", f) is None
    kek = runner.mzmine_smiles("c1ccccc1O", Formula.parse("C6H6O"))
    assert kek is not None and kek.upper() == kek and cdk_like_accepts(kek, "C6H6O")   # Kekulé, no aromatic atoms


def test_row_spectrum_peaks_adduct_precursor():
    item = {"rowId": 5, "formula": "C2H4O2", "adduct": "[M + NH4]+",
            "mzs": [10.0, 20.0, 30.0, 40.0, 50.0], "intensities": [5.0, 1.0, 4.0, 2.0, 3.0],
            "precursorMz": 78.0551, "polarity": "POSITIVE", "instrument": "Q-ToF (LCMS)"}
    spectrum, notes = runner.row_spectrum(item, max_peaks=3)
    assert spectrum.peaks.mz.tolist() == [10.0, 30.0, 50.0]                  # 3 most intense, by m/z
    assert spectrum.peaks.intensities.tolist() == [5.0, 4.0, 3.0]
    assert spectrum.get("adduct") == "[M+NH4]+" and spectrum.get("feature_id") == "5"
    assert spectrum.get("precursor_mz") == pytest.approx(78.05495, abs=1e-5)  # exact m/z of formula + adduct
    assert spectrum.get("mzmine_precursor_mz") == 78.0551 and notes == []
    assert spectrum.get("instrument_type") == "Q-ToF (LCMS)"
    for bad, reason in (({**item, "formula": ""}, "no formula"), ({**item, "mzs": []}, "m/z values but"),
                        ({**item, "mzs": [], "intensities": []}, "no MS/MS peaks"),
                        ({**item, "adduct": "[2M+Fe]3+"}, "unsupported adduct"),
                        ({**item, "intensities": [1, 2, "x", 4, 5]}, "non-numeric")):
        with pytest.raises(runner.RowSkip, match=reason):
            runner.row_spectrum(bad, max_peaks=3)
    # MZmine sends the first MS2 scan's precursor m/z but checked the formula against the row's average m/z:
    # the formula + adduct m/z is used, the difference logged
    far, notes = runner.row_spectrum({**item, "precursorMz": 80.0}, max_peaks=3)
    assert far.get("precursor_mz") == pytest.approx(78.05495, abs=1e-5) and far.get("mzmine_precursor_mz") == 80.0
    assert len(notes) == 1 and "+1.94505 m/z" in notes[0] and "trusting MZmine's formula" in notes[0]
    near, notes = runner.row_spectrum({**item, "precursorMz": 78.05495 + 0.0079}, max_peaks=3)
    assert notes == [] and near.get("precursor_mz") == pytest.approx(78.05495, abs=1e-5)


# ---------------------------------------------------------------------------------------------- fake annotator
C4H10O = ["CCCCO", "CCC(C)O", "CC(C)CO", "CC(C)(C)O", "CCOCC", "CCCOC", "COC(C)C"]


class FakeAnnotator:
    """Stands in for DiffMSAnnotator: returns fixed candidate lists, records what it was given."""

    model_id = "fake@000000000000"
    steps = 3

    def __init__(self):
        self.subformula_ppm = 20.0
        self.seen = []

    def annotate(self, spectrum):
        from matchms_diffms.chem.molecules import inchikey

        self.seen.append((spectrum.clone(), self.subformula_ppm))
        out = spectrum.clone()
        formula = spectrum.get("formula")
        smiles = {"C2H6O": ["OCC", "C.CO", "CCO", "COC", "C=C"], "C4H10O": C4H10O,
                  "C6H6O": ["Oc1ccccc1"]}.get(formula, [])
        cands = [{"smiles": s, "inchikey": inchikey(s), "formula": formula, "score": 1.0 / (i + 1), "count": 3}
                 for i, s in enumerate(smiles)]
        out.set("diffms_candidates", json.dumps(cands))
        out.set("diffms_status", "ok" if cands else "no_valid_candidates: none")
        return out


def run_in_process(monkeypatch, items, tmp_path, top_k=3, extra=()):
    fake = FakeAnnotator()
    monkeypatch.setattr(runner, "load_annotator", lambda weights, args: fake)
    monkeypatch.delenv(runner.ENV_WEIGHTS, raising=False)
    ext, _, script = fake_mzmine_install(tmp_path)
    inp = write_mzmine_input(items, tmp_path / "mzmine_diffms_input_1.json")
    out = tmp_path / "mzmine_diffms_output_1.json"
    out.write_text("")                                          # MZmine creates it empty
    buf = io.StringIO()
    code = runner.main([str(script)] + mzmine_flags(ext, "default", inp, out, top_k=top_k, max_peaks=4)
                       + list(extra), stream=buf)
    return code, buf.getvalue(), out, fake


def test_in_process_protocol_with_fake_annotator(monkeypatch, tmp_path):
    items = [
        {"rowId": 11, "formula": "C2H6O", "adduct": "[M+H]+", "mzs": [29.03858, 31.01784, 45.03349, 27.02293, 15.02],
         "intensities": [9.0, 8.0, 7.0, 6.0, 1.0], "polarity": "POSITIVE", "precursorMz": 47.0491,
         "newKey": [1, 2]},
        {"rowId": 12, "formula": "C4H10O", "adduct": "[M+H]+", "mzs": [57.07], "intensities": [1.0],
         "polarity": "POSITIVE", "precursorMz": 75.08044},
        {"rowId": 13, "adduct": "[M+H]+", "mzs": [57.07], "intensities": [1.0], "polarity": "POSITIVE"},
        {"rowId": 14, "formula": "C3H8O", "adduct": "[M+H]+", "mzs": [43.05], "intensities": [1.0],
         "polarity": "POSITIVE", "precursorMz": 61.0648},
        {"rowId": 15, "formula": "C6H6O", "adduct": "[M+H]+", "mzs": [77.04], "intensities": [1.0],
         "polarity": "POSITIVE", "precursorMz": 95.04914},
    ]
    code, text, out, fake = run_in_process(monkeypatch, items, tmp_path, top_k=3, extra=["--future", "1"])
    assert code == 0
    stream = parse_stream(text)
    results = check_stream(stream, items, top_k=3)
    # row 11: OCC first; "C.CO" (two fragments) and "C=C" (wrong formula) dropped; "CCO" duplicates OCC
    assert results[11] == ["CCO", "COC"]
    assert results[12] == ["CCCCO", "CCC(C)O", "CC(C)CO"]                       # best first, top-k 3
    assert results[15] == ["OC1=CC=CC=C1"]                                     # Kekulé for CDK
    assert 13 not in results and any(log == "row 13: skipped: no formula" for log in stream.logs)
    assert 14 not in results and any(log.startswith("row 14: no structure") for log in stream.logs)
    assert any("2 candidate(s) dropped" in log for log in stream.logs if log.startswith("row 11"))
    assert any("--future 1" in log for log in stream.logs)
    assert json.loads(out.read_text()) == stream.results                          # output file == stream
    # what the annotator got: 4 most intense peaks sorted by m/z, exact precursor, per-row tolerance
    spectrum, ppm = fake.seen[0]
    assert spectrum.peaks.mz.tolist() == [27.02293, 29.03858, 31.01784, 45.03349]
    assert spectrum.get("formula") == "C2H6O" and spectrum.get("feature_id") == "11"
    assert ppm == pytest.approx(0.02 / 200 * 1e6)
    assert stream.stages[-1] == "finished"


def test_in_process_empty_input(monkeypatch, tmp_path):
    code, text, out, _ = run_in_process(monkeypatch, [], tmp_path)
    stream = parse_stream(text)
    assert code == 0 and check_stream(stream, [], top_k=3) == {}
    assert json.loads(out.read_text()) == []


def test_scores_sidecar(monkeypatch, tmp_path):
    sidecar = tmp_path / "scores.json"
    monkeypatch.setenv(runner.ENV_SCORES, str(sidecar))
    items = [{"rowId": 1, "formula": "C4H10O", "adduct": "[M+H]+", "mzs": [57.07], "intensities": [1.0],
              "polarity": "POSITIVE", "precursorMz": 75.08044}]
    code, text, _, _ = run_in_process(monkeypatch, items, tmp_path, top_k=2)
    assert code == 0
    data = json.loads(sidecar.read_text())
    assert [c["smiles"] for c in data[0]["candidates"]] == ["CCCCO", "CCC(C)O"]
    assert data[0]["candidates"][0]["score"] == 1.0 and data[0]["rowId"] == 1


# ---------------------------------------------------------------------------------------------- subprocess runs
def _module_argv(script):
    """A launcher in the "Custom Python executable" slot: ``<launcher> <runner .py> --flags``."""
    return [sys.executable, "-m", "matchms_diffms_adapters.mzmine.runner", str(script)]


def _launch_variants(script: Path) -> dict:
    """Every way MZmine can start us: a launcher in the "Custom Python executable" slot (module form and,
    when installed, the console script), and a real Python running a shim that replaced MZmine's runner."""
    script.write_text("import sys\nfrom matchms_diffms_adapters.mzmine.runner import main\nsys.exit(main())\n")
    variants = {"launcher": _module_argv(script), "shim": [sys.executable, str(script)]}
    console = shutil.which("matchms-diffms-mzmine")
    if console:
        variants["console_script"] = [console, str(script)]
    return variants


def test_subprocess_unreadable_input(tmp_path):
    ext, vendored, script = fake_mzmine_install(tmp_path)
    bad = tmp_path / "mzmine_diffms_input_2.json"
    bad.write_text("[{\"rowId\": 1,")                                          # truncated JSON
    for name, launcher in _launch_variants(script).items():
        code, text = run_like_mzmine(launcher + mzmine_flags(ext, "default", bad, tmp_path / "o.json"),
                                     cwd=vendored)
        stream = parse_stream(text)
        assert code == 1 and not stream.results and not stream.progress, name
        assert any(log.startswith("ERROR: cannot read the input file") for log in stream.logs), name
        assert not any("unknown arguments" in log for log in stream.logs), name     # script path accepted


def test_subprocess_missing_checkpoint_and_bad_args(tmp_path):
    ext, vendored, script = fake_mzmine_install(tmp_path)
    argv = _module_argv(script) + mzmine_flags(ext, tmp_path / "nowhere" / "model.ckpt", INPUT, tmp_path / "o.json")
    code, text = run_like_mzmine(argv, cwd=vendored, env={runner.ENV_WEIGHTS: ""})
    stream = parse_stream(text)
    assert code == 1 and not stream.results
    assert any(log.startswith("ERROR: no usable weights") for log in stream.logs)
    code, text = run_like_mzmine(_module_argv(script) + ["--input", str(INPUT), "--top-k", "many"], cwd=vendored)
    assert code == 2 and any(log.startswith("ERROR: invalid arguments") for log in parse_stream(text).logs)


@pytest.mark.slow
def test_end_to_end_tiny_checkpoint(conformance_dir, tmp_path):
    """The real thing: the official-format tiny checkpoint, started as MZmine starts a custom executable."""
    ext, vendored, script = fake_mzmine_install(tmp_path)
    items = json.loads(INPUT.read_text())
    inp = write_mzmine_input(items, tmp_path / "mzmine_diffms_input_3.json")
    env = {runner.ENV_SAMPLES: "64", runner.ENV_STEPS: "10", runner.ENV_WEIGHTS: "", "OMP_NUM_THREADS": "1"}
    variants = _launch_variants(script)
    name = "console_script" if "console_script" in variants else "launcher"
    for launcher in (variants[name],):
        out = tmp_path / f"mzmine_diffms_output_{name}.json"
        out.write_text("")
        argv = launcher + mzmine_flags(ext, conformance_dir / "tiny_official.ckpt.gz", inp, out, top_k=5)
        code, text = run_like_mzmine(argv, cwd=vendored, env=env)
        assert code == 0, text
        stream = parse_stream(text)
        results = check_stream(stream, items, top_k=5)
        assert json.loads(out.read_text()) == stream.results
        assert results, "no row got a structure at 64 samples x 10 steps"
        assert any(log.startswith("row 7: skipped: no formula") for log in stream.logs)
        assert any(log.startswith("row 8: skipped: no MS/MS peaks") for log in stream.logs)
        # row 10's precursorMz is 16 m/z off its formula + adduct: trusted formula, difference logged
        assert any(log.startswith("row 10: precursorMz 75.04410 differs") for log in stream.logs)
        assert not any("formula_mismatch" in log for log in stream.logs)
        assert 7 not in results and 8 not in results



# ---------------------------------------------------------------------------------------------- where MZmine
# depends on the runner's exact behaviour (DiffMSTask.java / ChemAuditValidator.java, branch feature/chemaudit)
def fake_chemaudit_install(ext: Path) -> Path:
    """``external_tools/chemaudit/src/mzmine_chemaudit_validate.py`` standing in for ChemAudit's validator: JSON
    on stdout (one result per structure, with the interpreter and argv it got), log lines on stderr; exits 3 when
    the input holds the SMILES ``FAIL``."""
    script = ext / "chemaudit" / "src" / "mzmine_chemaudit_validate.py"
    script.parent.mkdir(parents=True, exist_ok=True)
    (ext / "chemaudit" / "vendor" / "ChemAudit").mkdir(parents=True, exist_ok=True)
    script.write_text(
        "import argparse, json, sys\n"
        "p = argparse.ArgumentParser()\n"
        "p.add_argument('--input', required=True)\n"
        "p.add_argument('--min-validation-score', type=int)\n"
        "p.add_argument('--min-ml-score', type=int)\n"
        "p.add_argument('--disable-alerts', action='store_true')\n"
        "p.add_argument('--chemaudit-dir')\n"
        "a = p.parse_args()\n"
        "items = json.load(open(a.input))\n"
        "print('MZMINE_CHEMAUDIT_LOG validating', len(items), file=sys.stderr)\n"
        "if any(i['smiles'] == 'FAIL' for i in items):\n"
        "    sys.exit(3)\n"
        "print(json.dumps([{'row_id': i['row_id'], 'rank': i['rank'], 'smiles': i['smiles'], 'valid': True,\n"
        "                   'validation_score': 90, 'ml_readiness_score': 80, 'standardized_smiles': i['smiles'],\n"
        "                   'python': sys.executable, 'alerts_disabled': a.disable_alerts} for i in items]))\n")
    return script


def chemaudit_argv(script: Path, input_json: Path, ext: Path) -> list[str]:
    """ChemAuditValidator.validateBatch's command after the executable (alerts disabled, directory found)."""
    return [str(script), "--input", str(input_json), "--min-validation-score", "60", "--min-ml-score", "40",
            "--disable-alerts", "--chemaudit-dir", str(ext / "chemaudit" / "vendor" / "ChemAudit")]


def test_chemaudit_call_runs_the_script_not_diffms(tmp_path):
    """MZmine starts ChemAudit with the DiffMS module's executable, stdout and stderr separate, and parses stdout as
    one JSON array; a scores file set for DiffMS must stay as it is."""
    ext, vendored, runner_py = fake_mzmine_install(tmp_path)
    script = fake_chemaudit_install(ext)
    structures = tmp_path / "mzmine_chemaudit_input_1.json"
    structures.write_text(json.dumps([{"smiles": "CCO", "row_id": 11, "rank": 1}]))
    scores = tmp_path / "scores.json"
    scores.write_text('[{"rowId": 1, "kept": true}]')
    for name, launcher in _launch_variants(runner_py).items():
        argv = launcher[:-1] + chemaudit_argv(script, structures, ext)          # the launcher, then ChemAudit's argv
        proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, timeout=120,
                              env={**os.environ, runner.ENV_SCORES: str(scores)})
        assert proc.returncode == 0, (name, proc.stderr)
        results = json.loads(proc.stdout.decode())                              # what Jackson reads
        assert [(r["row_id"], r["standardized_smiles"], r["alerts_disabled"]) for r in results] == [(11, "CCO", True)]
        assert os.path.samefile(results[0]["python"], sys.executable), name    # this interpreter
        assert b"MZMINE_DIFFMS" not in proc.stdout + proc.stderr, name
        assert proc.stderr.decode().startswith("MZMINE_CHEMAUDIT_LOG validating 1"), name
        assert scores.read_text() == '[{"rowId": 1, "kept": true}]', name


def test_chemaudit_call_in_process_never_loads_a_model(tmp_path, monkeypatch, capfd):
    ext, _, _ = fake_mzmine_install(tmp_path)
    script = fake_chemaudit_install(ext)

    def no_model(*_):
        raise AssertionError("a model was loaded for a ChemAudit call")

    monkeypatch.setattr(runner, "load_annotator", no_model)
    monkeypatch.setattr(runner, "choose_weights", no_model)
    structures = tmp_path / "in.json"
    structures.write_text(json.dumps([{"smiles": "FAIL", "row_id": 1, "rank": 1}]))
    assert runner.main(chemaudit_argv(script, structures, ext)) == 3               # the script's own exit status
    out, err = capfd.readouterr()
    assert out == "" and "MZMINE_CHEMAUDIT_LOG validating 1" in err
    # a helper script that is not there: fail at once, non-zero, one line on stderr, nothing on stdout
    missing = ext / "other" / "src" / "mzmine_other_tool.py"
    assert runner.main([str(missing), "--input", str(structures)]) == 2
    out, err = capfd.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and str(missing) in err
    # MZmine's own runner script is still the DiffMS protocol, also in Windows spelling
    assert runner.other_script([r"C:\mzmine\external_tools\diffms\src\MZMINE_DIFFMS_PREDICT.py", "--input", "x"]) \
        is None
    assert runner.other_script(["--input", "x.py"]) is None


def test_off_precursor_mz_row_is_annotated(monkeypatch, tmp_path):
    """MZmine's precursorMz is the first MS2 scan's; the formula was checked against the row's average m/z."""
    items = [{"rowId": 21, "formula": "C4H10O", "adduct": "[M+H]+", "mzs": [57.07], "intensities": [1.0],
              "polarity": "POSITIVE", "precursorMz": 91.0753},                   # 16 m/z above C4H10O [M+H]+
             {"rowId": 22, "formula": "C4H10O", "adduct": "[M+H]+", "mzs": [57.07], "intensities": [1.0],
              "polarity": "POSITIVE", "precursorMz": 75.0800}]                   # within 0.008 m/z
    code, text, _, fake = run_in_process(monkeypatch, items, tmp_path, top_k=2)
    stream = parse_stream(text)
    results = check_stream(stream, items, top_k=2)
    assert code == 0 and set(results) == {21, 22}
    diff = [log for log in stream.logs if log.startswith("row 21: precursorMz 91.07530 differs")]
    assert len(diff) == 1 and "+15.99486 m/z" in diff[0]
    assert not any(log.startswith("row 22: precursorMz") for log in stream.logs)
    exact = 75.08044                                                            # C4H10O + H+, what was annotated
    assert [s.get("precursor_mz") for s, _ in fake.seen] == [pytest.approx(exact, abs=1e-4)] * 2
    assert [s.get("mzmine_precursor_mz") for s, _ in fake.seen] == [91.0753, 75.0800]


def test_off_precursor_mz_with_the_real_annotator(tmp_path):
    """Without the MZmine runner's trust the core annotator would skip the row with formula_mismatch."""
    from reliability_helpers import make_tiny_weights

    from matchms_diffms import DiffMSAnnotator, status_code

    weights = make_tiny_weights(tmp_path / "tiny")
    annotator = DiffMSAnnotator.from_pretrained(str(weights), n_samples=4, steps=5, top_k=2, seed=0, max_formulas=1)
    item = {"rowId": 1, "formula": "C4H10O", "adduct": "[M+H]+", "mzs": [57.07, 31.02], "intensities": [1.0, 0.5],
            "polarity": "POSITIVE", "precursorMz": 91.0753}
    spectrum, notes = runner.row_spectrum(item, max_peaks=50)
    assert status_code(annotator.annotate(spectrum).get("diffms_status")) != "formula_mismatch"
    observed = spectrum.clone()
    observed.set("precursor_mz", 91.0753)                                       # the core check is unchanged
    assert status_code(annotator.annotate(observed).get("diffms_status")) == "formula_mismatch"


@pytest.mark.parametrize("raw, hill, change", [
    ("C6H12O6", "C6H12O6", None),
    (" C6 H12 O6 ", "C6H12O6", "removed spaces"),
    ("[C6H12O6]+", "C6H12O6", "removed the enclosing brackets and the charge +"),
    ("[C6H12O6]2+", "C6H12O6", "removed the enclosing brackets and the charge 2+"),
    ("[C6H12O6]", "C6H12O6", "removed the enclosing brackets"),
    ("C2H7O+", "C2H7O", "removed the charge +"),
    ("C2H7O2-", "C2H7O2", "removed the charge -"),
    ("C2H7O+1", "C2H7O", "removed the charge +1"),
    ("C6H12O6.H2O", "C6H14O7", "added up the parts C6H12O6 + H2O"),
    ("C2H4O2·2H2O", "C2H8O4", "added up the parts C2H4O2 + 2H2O"),
    ("[C6H12O6 . H2O]+", "C6H14O7", "removed spaces"),
])
def test_normalize_formula(raw, hill, change):
    formula, changes = runner.normalize_formula(raw)
    assert formula.hill() == hill
    assert (changes == []) if change is None else (change in changes)


@pytest.mark.parametrize("raw", ["C6H12O6..H2O", "C6H12O6.", "hello", "[C6H12O6", "C6H12O6++H"])
def test_normalize_formula_rejects(raw):
    from matchms_diffms.chem.formula import FormulaError

    with pytest.raises(FormulaError):
        runner.normalize_formula(raw)


def test_raw_formula_strings_are_annotated(monkeypatch, tmp_path):
    base = {"adduct": "[M+H]+", "mzs": [57.07], "intensities": [1.0], "polarity": "POSITIVE"}
    items = [{"rowId": 31, "formula": "[C4H10O]+", **base}, {"rowId": 32, "formula": "C4 H10 O", **base},
             {"rowId": 33, "formula": "C4H8.H2O", **base}, {"rowId": 34, "formula": "C4H10O+", **base},
             {"rowId": 35, "formula": "C4H10Q", **base}]
    code, text, _, fake = run_in_process(monkeypatch, items, tmp_path, top_k=2)
    stream = parse_stream(text)
    results = check_stream(stream, items, top_k=2)                               # SMILES fit the raw strings' counts
    assert code == 0 and set(results) == {31, 32, 33, 34}
    assert [s.get("formula") for s, _ in fake.seen] == ["C4H10O"] * 4
    for row, raw in ((31, "[C4H10O]+"), (32, "C4 H10 O"), (33, "C4H8.H2O"), (34, "C4H10O+")):
        assert any(log.startswith(f"row {row}: formula {raw!r} read as C4H10O (") for log in stream.logs), row
    assert any(log.startswith("row 35: skipped: invalid formula 'C4H10Q'") for log in stream.logs)


def test_device_cuda_without_gpu(monkeypatch, tmp_path):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    devices = []
    fake = FakeAnnotator()
    monkeypatch.setattr(runner, "load_annotator", lambda weights, args: devices.append(args.device) or fake)
    monkeypatch.delenv(runner.ENV_WEIGHTS, raising=False)
    ext, _, script = fake_mzmine_install(tmp_path)
    items = [{"rowId": 1, "formula": "C4H10O", "adduct": "[M+H]+", "mzs": [57.07], "intensities": [1.0],
              "polarity": "POSITIVE"}]
    inp = write_mzmine_input(items, tmp_path / "in.json")
    buf = io.StringIO()
    code = runner.main([str(script)] + mzmine_flags(ext, "default", inp, tmp_path / "o.json", device="cuda"),
                       stream=buf)
    stream = parse_stream(buf.getvalue())
    assert code == 0 and check_stream(stream, items, top_k=5) == {1: C4H10O[:5]}
    assert devices == ["cpu"]
    assert any("'cuda' requested but CUDA is not available" in log and log.endswith("running on the CPU")
               for log in stream.logs)


def test_choose_device(monkeypatch):
    import torch

    assert runner.choose_device("cpu") == ("cpu", None)
    device, note = runner.choose_device("mps")
    assert device == "cpu" and "unknown device 'mps'" in note
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "Fake GPU")
    assert runner.choose_device("cuda") == ("cuda:0", "running on cuda (Fake GPU)")
    device, note = runner.choose_device("CUDA:1")
    assert device == "cpu" and "only 1 GPU(s)" in note


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_annotator_samples_on_cuda(tmp_path):
    """The real annotator on the GPU: model, generator and sampling on cuda, structures with the formula."""
    import argparse

    from reliability_helpers import make_tiny_weights

    weights = make_tiny_weights(tmp_path / "tiny")
    args = argparse.Namespace(n_samples=8, steps=5, top_k=3, seed=0, batch_size=8, device="cuda:0")
    annotator = runner.load_annotator(str(weights), args)
    assert annotator.device.type == "cuda"
    item = {"rowId": 1, "formula": "C4H10O", "adduct": "[M+H]+", "mzs": [57.07], "intensities": [1.0]}
    spectrum, _ = runner.row_spectrum(item, max_peaks=50)
    annotated = annotator.annotate(spectrum)
    assert not str(annotated.get("diffms_status")).startswith("error"), annotated.get("diffms_status")
    annotator.model.to("cpu")                                                     # the model is cached per process


def test_default_samples_match_the_bundled_runner(tmp_path, monkeypatch):
    """MZmine's runner draws Top-K samples per row; so do we unless more are asked for."""
    for env in (runner.ENV_SAMPLES, runner.ENV_STEPS, runner.ENV_SEED):
        monkeypatch.delenv(env, raising=False)
    assert runner.parse_args(["--input", "x", "--top-k", "5"])[0].n_samples == 5
    assert runner.parse_args(["--input", "x", "--top-k", "5", "--n-samples", "50"])[0].n_samples == 50
    monkeypatch.setenv(runner.ENV_SAMPLES, "20")
    assert runner.parse_args(["--input", "x", "--top-k", "5"])[0].n_samples == 20


def test_pointer_file(tmp_path, monkeypatch):
    monkeypatch.delenv(runner.ENV_WEIGHTS, raising=False)
    pointer = runner.write_pointer(tmp_path / "matchms-diffms.ckpt", "default")
    assert runner.read_pointer(pointer) == "default"
    weights, note = runner.choose_weights(str(pointer))
    assert weights == "default" and "pointer file" in note
    # a relative path inside a pointer is relative to the pointer's folder, not to MZmine's working directory
    (tmp_path / "sub").mkdir()
    rel = tmp_path / "sub" / "rel.ckpt"
    rel.write_text(json.dumps({"format": runner.POINTER_FORMAT, "weights": "../my_weights"}))
    assert runner.read_pointer(rel) == str((tmp_path / "my_weights").resolve())
    # not pointers: an official-looking binary, other JSON, a folder
    binary = tmp_path / "diffms_msg.ckpt"
    binary.write_bytes(b"PK\x03\x04" + bytes(100))
    other = tmp_path / "other.ckpt"
    other.write_text('{"format": "something-else"}')
    assert [runner.read_pointer(p) for p in (binary, other, tmp_path)] == [None, None, None]
    assert runner.choose_weights(str(binary)) == (str(binary), None)
    broken = tmp_path / "broken.ckpt"
    broken.write_text(json.dumps({"format": runner.POINTER_FORMAT}))
    with pytest.raises(ValueError, match="no 'weights'"):
        runner.choose_weights(str(broken))
    from matchms_diffms import WeightsError

    with pytest.raises(WeightsError):
        runner.write_pointer(tmp_path / "bad.ckpt", "no-such-weights")
    assert not (tmp_path / "bad.ckpt").exists()


def test_environment_paths_must_be_absolute(monkeypatch, tmp_path):
    monkeypatch.setenv(runner.ENV_WEIGHTS, os.path.join("weights", "mine"))
    with pytest.raises(ValueError, match="absolute"):
        runner.choose_weights(None)
    monkeypatch.setenv(runner.ENV_WEIGHTS, "default")                             # a name is fine
    assert runner.choose_weights(None)[0] == "default"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(runner.ENV_SCORES, "scores.json")
    items = [{"rowId": 1, "formula": "C4H10O", "adduct": "[M+H]+", "mzs": [57.07], "intensities": [1.0]}]
    code, text, _, _ = run_in_process(monkeypatch, items, tmp_path / "run", top_k=2)
    assert code == 0 and not (tmp_path / "scores.json").exists()
    assert any("'scores.json' is not an absolute path" in log for log in parse_stream(text).logs)


def test_zero_row_run_leaves_the_scores_file_alone(monkeypatch, tmp_path):
    scores = tmp_path / "scores.json"
    scores.write_text('[{"rowId": 5, "from": "the last real run"}]')
    monkeypatch.setenv(runner.ENV_SCORES, str(scores))
    code, text, out, _ = run_in_process(monkeypatch, [], tmp_path / "run")
    assert code == 0 and check_stream(parse_stream(text), [], top_k=3) == {}
    assert scores.read_text() == '[{"rowId": 5, "from": "the last real run"}]'


def test_like_a_gui_launch_pointer_checkpoint_no_environment(tmp_path):
    """MZmine's GUI: Checkpoint = a pointer .ckpt, Device = CUDA, no MATCHMS_DIFFMS_* variables at all."""
    from reliability_helpers import make_tiny_weights

    weights = make_tiny_weights(tmp_path / "tiny")
    pointer = runner.write_pointer(tmp_path / "matchms-diffms.ckpt", str(weights))
    ext, vendored, script = fake_mzmine_install(tmp_path)
    items = [{"rowId": 1, "formula": "C4H10O", "adduct": "[M+H]+", "mzs": [31.0178, 57.0699],
              "intensities": [3.0, 5.0], "polarity": "POSITIVE", "precursorMz": 75.0804},
             {"rowId": 2, "formula": "[C3H8O]+", "adduct": "[M+H]+", "mzs": [43.0542],
              "intensities": [1.0], "polarity": "POSITIVE", "precursorMz": 77.0597}]    # raw string, off precursorMz
    inp = write_mzmine_input(items, tmp_path / "mzmine_diffms_input_9.json")
    out = tmp_path / "mzmine_diffms_output_9.json"
    out.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MATCHMS_DIFFMS_MZMINE")}
    env["OMP_NUM_THREADS"] = "1"
    argv = _module_argv(script) + mzmine_flags(ext, pointer, inp, out, top_k=3, device="cuda")
    proc = subprocess.run(argv, cwd=vendored, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                          timeout=240)
    text = proc.stdout.decode()
    assert proc.returncode == 0, text
    stream = parse_stream(text)
    results = check_stream(stream, items, top_k=3)
    assert json.loads(out.read_text()) == stream.results
    assert any("is a matchms-diffms pointer file" in log and str(weights) in log for log in stream.logs)
    import torch

    if not torch.cuda.is_available():
        assert any(log.endswith("running on the CPU") for log in stream.logs)
    assert any(log.startswith("row 2: formula '[C3H8O]+' read as C3H8O") for log in stream.logs)
    assert any(log.startswith("row 2: precursorMz 77.05970 differs") for log in stream.logs)
    assert not any("formula_mismatch" in log for log in stream.logs)
    assert any("samples per row 3" in log for log in stream.logs)                  # = Top-K, as MZmine's runner
    assert all(row in results or any(log.startswith(f"row {row}: no structure") for log in stream.logs)
               for row in (1, 2))
