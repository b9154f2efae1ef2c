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
    assert args.n_samples == 14 and args.steps is None and args.seed == 0         # 2 x top-k, model's, 0
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
    far, notes = runner.row_spectrum({**item, "precursorMz": 80.0}, max_peaks=3)
    assert far.get("precursor_mz") == 80.0 and "tolerance" in notes[0]


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
        assert any(log.startswith("row 10: no structure: formula_mismatch") for log in stream.logs)
        assert 10 not in results and 7 not in results and 8 not in results

