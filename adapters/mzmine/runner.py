"""Drop-in backend for MZmine's DiffMS module (console script ``matchms-diffms-mzmine``).

MZmine's DiffMS module (branch ``feature/diffms-py-integration``; adapters/mzmine/README.md) runs::

    <python> <EXT>/diffms/src/mzmine_diffms_predict.py --diffms-dir D --checkpoint C --input IN.json
        --output OUT.json --top-k K --max-ms2-peaks N --subformula-tol T --device cpu|cuda

with stderr merged into stdout, and reads this line protocol back (every line flushed):

=====================================================  ===========================================
``MZMINE_DIFFMS_STAGE loading_model``                   before the weights are loaded
``MZMINE_DIFFMS_STAGE model_ready``                     weights loaded
``MZMINE_DIFFMS_PROGRESS 0/N``                          N = number of input rows
``MZMINE_DIFFMS_STAGE inference``                       (resets MZmine's ETA clock)
``MZMINE_DIFFMS_RESULT_JSON {"rowId": 1, "smiles": []}``  one per row with structures; no other keys
``MZMINE_DIFFMS_PROGRESS i/N``                          after every row (skipped rows included)
``MZMINE_DIFFMS_LOG <text>``                            settings, skipped rows with the reason, warnings
``MZMINE_DIFFMS_STAGE finished``                        after the ``--output`` file is written
=====================================================  ===========================================

Pointing MZmine's "Custom Python executable" at the ``matchms-diffms-mzmine`` launcher makes MZmine run
``matchms-diffms-mzmine <runner .py path> --flags``: a first argument named ``mzmine_diffms_predict.py`` is
ignored. MZmine also starts *other* helper scripts with the same executable (branch ``feature/chemaudit``:
``<exe> .../mzmine_chemaudit_validate.py --input X ...`` once per structure, reading JSON from stdout): a first
argument that is any other ``.py`` file is run as that script with this Python interpreter (stdin, stdout,
stderr and the exit status passed through); no model is loaded and no DiffMS output or scores file is
touched. A missing script fails at once (exit 2, one line on stderr).
Unknown flags (future MZmine versions) are ignored with a ``MZMINE_DIFFMS_LOG WARNING`` line.

What a row becomes: a matchms spectrum with the row's neutral ``formula`` (normalised like the bundled runner
tolerates it: spaces, enclosing brackets, a trailing charge and ``.``-separated hydrate parts; each change is
logged), ``adduct`` (spaces removed; e.g. ``[M+NH4]+`` is the official ``[M+H3N+H]+``), the
``--max-ms2-peaks`` most intense peaks and the precursor m/z **computed from formula + adduct**: MZmine sends
the first MS2 scan's precursor m/z but checked formula and adduct (if at all) against the row's average m/z,
so the formula it sends is trusted; an observed ``precursorMz`` farther than MZmine's tolerance (0.008 m/z or
25 ppm, the larger) gets a LOG line with the difference and the row is annotated anyway (the observed value
is kept in ``mzmine_precursor_mz``). The spectrum is annotated by
:class:`matchms_diffms.annotator.DiffMSAnnotator` with exactly that one formula. The SMILES sent back are the
ranked, de-duplicated candidates (best first, at most ``--top-k``) that pass MZmine's own check: they parse,
are one fragment and their formula *including implicit hydrogens* equals the row's formula (verified again
here with RDKit). They are written as non-isomeric Kekulé SMILES, which CDK parses without aromaticity
perception. Scores cannot travel through MZmine's strict two-key schema; set
``MATCHMS_DIFFMS_MZMINE_SCORES=/absolute/path.json`` to get them in a sidecar file (written only by a run that
processed at least one row).

Differences from the runner bundled with MZmine (section a.8), by design:

* ``--top-k`` is the most *structures* returned. Diffusion samples per row: as many as the bundled runner
  draws (= ``--top-k``) unless ``--n-samples`` / ``$MATCHMS_DIFFMS_MZMINE_SAMPLES`` asks for another number.
  With K samples, de-duplication and the formula check leave K or fewer structures; more samples give more
  distinct structures and a better frequency ranking, at a cost that grows linearly.
  Reverse steps: ``--steps`` / ``$MATCHMS_DIFFMS_MZMINE_STEPS`` (default: the weights' own, 20 for ``default``,
  500 for an official checkpoint); seed ``--seed`` / ``$MATCHMS_DIFFMS_MZMINE_SEED`` (default 0: reruns on the
  same device give the same structures).
* The precomputed ``subformulas`` of the input are not used: peaks are annotated from ``mzs``/``intensities``
  with the upstream DiffMS/MIST rules (nearest sub-formula, square-root intensities), as the released models
  were trained. ``--subformula-tol`` is honoured: a value below 1 is MZmine's absolute tolerance in m/z and is
  turned into the equivalent ppm at the row's precursor m/z (so no peak gets a wider window than MZmine's);
  a value of 1 or more is read as ppm.
* ``--max-ms2-peaks``: the N most intense peaks are kept, as MZmine already does. The bundled runner's quirk
  of always dropping the weakest sub-formula entry (``min(n - 1, 50)``) is **not** emulated: it is an
  off-by-one of the vendored featurizer, not something MZmine relies on (the contract only asks for the
  top-N merged peaks).
* ``--device cuda`` (or ``cuda:N``) runs the model on that GPU when torch sees one; otherwise a LOG line says
  so and the CPU is used. GPU and CPU draw different random numbers, so their structures differ.
* ``--checkpoint``: an official ``.ckpt`` / ``.ckpt.gz`` / ``diffms_checkpoints.tar.gz`` (architecture read off
  the tensor shapes), one of our weights folders, a weights name (``default``), or a *pointer file*: a small
  JSON file (``matchms-diffms mzmine-pointer my.ckpt``) that names our weights; MZmine insists that the
  checkpoint is an existing ``*.ckpt`` file and passes no environment to GUI launches, so this is how to select
  our weights from MZmine. When ``--checkpoint`` is MZmine's default location
  (``~/.mzmine/external_resources/models/diffms/checkpoints/diffms_msg.ckpt``) and the file is missing, our
  default weights are used (LOG line). ``$MATCHMS_DIFFMS_MZMINE_WEIGHTS`` overrides the checkpoint.
  Paths in environment variables must be absolute (MZmine runs this program in its own installation folder).

Exit status: 0 when the run finished (even with skipped rows); 1 when nothing could run (unreadable input,
no usable weights) or the ``--output`` file could not be written; 2 for invalid arguments.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from matchms_diffms import OutputError

from .._io import write_text_atomic

logger = logging.getLogger("matchms.diffms")

TAG_PROGRESS = "MZMINE_DIFFMS_PROGRESS"
TAG_STAGE = "MZMINE_DIFFMS_STAGE"
TAG_RESULT = "MZMINE_DIFFMS_RESULT_JSON"
TAG_LOG = "MZMINE_DIFFMS_LOG"

MZMINE_DEFAULT_CHECKPOINT = Path("~/.mzmine/external_resources/models/diffms/checkpoints/diffms_msg.ckpt")
DEFAULT_WEIGHTS = "default"

ENV_WEIGHTS = "MATCHMS_DIFFMS_MZMINE_WEIGHTS"
ENV_SAMPLES = "MATCHMS_DIFFMS_MZMINE_SAMPLES"
ENV_STEPS = "MATCHMS_DIFFMS_MZMINE_STEPS"
ENV_SEED = "MATCHMS_DIFFMS_MZMINE_SEED"
ENV_SCORES = "MATCHMS_DIFFMS_MZMINE_SCORES"

# The runner script MZmine passes first; any other first ``.py`` argument is a different MZmine helper script.
OWN_SCRIPT = "mzmine_diffms_predict.py"
# A pointer file: a small JSON file with a ``.ckpt`` name that selects our weights (see read_pointer).
POINTER_FORMAT = "matchms-diffms-weights-pointer/1"
POINTER_MAX_BYTES = 64 * 1024

# MZmine's tolerance for formula + adduct vs. row m/z (section a.3): 0.008 m/z or 25 ppm, the larger.
MZMINE_MZ_TOL = 0.008
MZMINE_PPM_TOL = 25.0
# The clipped-ppm rule of the subformula assignment divides by max(m/z, 200).
PPM_FLOOR_MZ = 200.0


class UsageError(Exception):
    """Invalid command-line arguments."""


class InputError(Exception):
    """The input JSON cannot be used at all."""


class RowSkip(Exception):
    """A row that is not annotated; the message is the reason written to the LOG line."""


# ------------------------------------------------------------------------------------------------ protocol
class Protocol:
    """Writes MZmine's line protocol; every line is flushed at once.

    Parameters
    ----------
    stream
        Text stream (``sys.stdout`` in production; MZmine merges stderr into it).
    """

    def __init__(self, stream):
        self.stream = stream

    def _line(self, tag: str, text: str) -> None:
        text = " ".join(str(text).splitlines()).strip()        # one line, whatever the message
        self.stream.write(f"{tag} {text}\n")
        self.stream.flush()

    def progress(self, done: int, total: int) -> None:
        self._line(TAG_PROGRESS, f"{int(done)}/{int(total)}")

    def stage(self, name: str) -> None:
        if not str(name).strip():
            raise ValueError("a stage name must not be empty")
        self._line(TAG_STAGE, name)

    def result(self, row_id: int, smiles: list[str]) -> None:
        """One result line: exactly the keys ``rowId`` (int) and ``smiles`` (list of str)."""
        record = {"rowId": int(row_id), "smiles": [str(s) for s in smiles]}
        self._line(TAG_RESULT, json.dumps(record, ensure_ascii=True))

    def log(self, text: str) -> None:
        self._line(TAG_LOG, text)


class ProtocolLogHandler(logging.Handler):
    """Turns log records of ``matchms.diffms`` (WARNING and above) into ``MZMINE_DIFFMS_LOG`` lines."""

    def __init__(self, protocol: Protocol, level=logging.WARNING):
        super().__init__(level)
        self.protocol = protocol

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.protocol.log(f"{record.levelname}: {record.getMessage()}")
        except Exception:  # noqa: BLE001 -- logging must never raise; logging's own error hook reports it
            self.handleError(record)


# ------------------------------------------------------------------------------------------------ arguments
class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: MZmine's flags plus a few of our own (all optional for MZmine)."""
    p = _Parser(prog="matchms-diffms-mzmine", allow_abbrev=False,
                description="matchms-diffms backend for MZmine's DiffMS module (MZmine line protocol on stdout).")
    p.add_argument("--diffms-dir", help="MZmine's vendored DiffMS folder (accepted and ignored)")
    p.add_argument("--checkpoint", default=None,
                   help="official DiffMS .ckpt(.gz)/.tar.gz, a matchms-diffms weights folder, or a weights name")
    p.add_argument("--input", required=True, help="MZmine's input JSON (array of rows)")
    p.add_argument("--output", default=None, help="output JSON [{rowId, smiles}] written at the end")
    p.add_argument("--top-k", type=int, default=10, help="structures returned per row (MZmine default 5)")
    p.add_argument("--max-ms2-peaks", type=int, default=50, help="keep the N most intense MS/MS peaks")
    p.add_argument("--subformula-tol", type=float, default=0.02,
                   help="sub-formula tolerance: < 1 is m/z (MZmine's value), >= 1 is ppm")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (CPU when CUDA is not available)")
    p.add_argument("--batch-size", type=int, default=8, help="accepted from MZmine's module; no effect (every row is annotated on its own)")
    p.add_argument("--subformula-beam", type=int, default=None, help="accepted for old MZmine builds; ignored")
    p.add_argument("--n-samples", type=int, default=None,
                   help=f"diffusion samples per row (default ${ENV_SAMPLES} or top-k, as MZmine's runner)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"reverse diffusion steps (default ${ENV_STEPS} or the model's)")
    p.add_argument("--seed", type=int, default=None, help=f"random seed (default ${ENV_SEED} or 0)")
    return p


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Parse MZmine's argument list.

    Parameters
    ----------
    argv
        Arguments without the program name. A first positional argument ending in ``.py`` (the runner script
        path MZmine passes to a "Custom Python executable") is dropped.

    Returns
    -------
    (namespace, warnings)
        ``warnings`` are messages about ignored arguments (unknown flags, stray positionals).

    Raises
    ------
    UsageError
        Missing ``--input`` or a value of the wrong type.
    """
    argv = list(argv)
    warnings = []
    if argv and not argv[0].startswith("-") and argv[0].lower().endswith(".py"):
        argv = argv[1:]
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        warnings.append(f"ignoring unknown arguments: {' '.join(unknown)}")
    for name in ("top_k", "max_ms2_peaks", "batch_size"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not (math.isfinite(args.subformula_tol) and args.subformula_tol > 0):
        raise UsageError(f"--subformula-tol must be a positive number, got {args.subformula_tol}")
    args.n_samples = _setting(args.n_samples, ENV_SAMPLES, args.top_k, minimum=1)
    args.steps = _setting(args.steps, ENV_STEPS, None, minimum=1)
    args.seed = _setting(args.seed, ENV_SEED, 0, minimum=None)
    return args, warnings


def _setting(value, env: str, default, minimum):
    """A flag value, else the environment variable, else the default (ints)."""
    if value is None and os.environ.get(env, "").strip():
        try:
            value = int(os.environ[env])
        except ValueError:
            raise UsageError(f"${env} must be an integer, got {os.environ[env]!r}") from None
    if value is None:
        return default
    if minimum is not None and value < minimum:
        raise UsageError(f"{env.lower()} must be >= {minimum}, got {value}")
    return value


# ------------------------------------------------------------------------------------------------ input
def read_input(path) -> list:
    """MZmine's input file: a JSON array of row objects.

    Raises
    ------
    InputError
        Missing/unreadable file, invalid JSON, or not an array.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{type(err).__name__}: {err}") from None
    if not isinstance(data, list):
        raise InputError(f"expected a JSON array of rows, found {type(data).__name__}")
    return data


def row_id_of(item) -> int:
    """The integer ``rowId`` of an input item; RowSkip when missing or not an integer."""
    if not isinstance(item, dict):
        raise RowSkip(f"not a JSON object ({type(item).__name__})")
    value = item.get("rowId")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise RowSkip(f"missing or invalid rowId {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise RowSkip(f"rowId {value!r} is not an integer") from None
    if not math.isfinite(number) or number != int(number):
        raise RowSkip(f"rowId {value!r} is not an integer")
    return int(number)


_BRACKETED = re.compile(r"^\[(?P<body>[^\[\]]+)\](?P<charge>\d*[+-]+|[+-]\d*)?$")
_TRAILING_CHARGE = re.compile(r"(?<=[A-Za-z0-9)])(?P<charge>[+-]+\d*)$")
_HYDRATE_SEPARATORS = re.compile(r"[.\u00b7\u2219\u22c5*]")
_MULTIPLIER = re.compile(r"^(?P<n>\d+)(?P<part>\D.*)$")


def normalize_formula(text: str):
    """Read a formula string as MZmine may send it (a raw annotation string), like the bundled runner does.

    Tolerated: spaces anywhere, enclosing brackets with or without a charge (``[C6H13O6]+``), a trailing
    charge (``C2H7O+``, ``C2H7O+1``) and ``.``-separated parts such as a hydrate (``C6H12O6.H2O``, also with a
    multiplier ``C2H4O2.2H2O`` and the middle dot ``·``); the parts are added up. The charge is dropped and
    the counts are used as given (MZmine's own formula check of the returned SMILES compares element counts).

    Returns
    -------
    (Formula, list of str)
        The formula and the changes made (empty when the string was already a plain formula).

    Raises
    ------
    FormulaError
        What remains is not a formula.
    """
    from matchms_diffms.chem.formula import Formula, FormulaError

    changes = []
    s = "".join(str(text).split())
    if s != str(text).strip():
        changes.append("removed spaces")
    m = _BRACKETED.match(s)
    if m:
        s = m.group("body")
        charge = m.group("charge")
        changes.append("removed the enclosing brackets" + (f" and the charge {charge}" if charge else ""))
    else:
        m = _TRAILING_CHARGE.search(s)
        if m:
            s = s[:m.start()]
            changes.append(f"removed the charge {m.group('charge')}")
    parts = _HYDRATE_SEPARATORS.split(s)
    if len(parts) > 1:
        total = {}
        for part in parts:
            if not part:
                raise FormulaError(f"empty part in formula {text!r}")
            m = _MULTIPLIER.match(part)
            n, part = (int(m.group("n")), m.group("part")) if m else (1, part)
            for el, count in Formula.parse(part).counts.items():
                total[el] = total.get(el, 0) + n * count
        formula = Formula(total)
        changes.append(f"added up the parts {' + '.join(parts)}")
    else:
        formula = Formula.parse(s)
    return formula, changes


def _peaks(item, max_peaks: int) -> tuple[np.ndarray, np.ndarray]:
    """The row's ``max_peaks`` most intense peaks, sorted by m/z (ties keep input order)."""
    mzs, ints = item.get("mzs"), item.get("intensities")
    if not isinstance(mzs, list) or not isinstance(ints, list):
        raise RowSkip("no MS/MS peaks ('mzs'/'intensities' missing)")
    if len(mzs) != len(ints):
        raise RowSkip(f"{len(mzs)} m/z values but {len(ints)} intensities")
    if not mzs:
        raise RowSkip("no MS/MS peaks (empty spectrum)")
    try:
        mz = np.array(mzs, dtype=np.float64)
        inten = np.array(ints, dtype=np.float64)
    except (TypeError, ValueError):
        raise RowSkip("non-numeric m/z or intensity values") from None
    if not (np.all(np.isfinite(mz)) and np.all(np.isfinite(inten))) or np.any(mz <= 0) or np.any(inten < 0):
        raise RowSkip("invalid peaks (NaN, inf, non-positive m/z or negative intensity)")
    keep = np.argsort(-inten, kind="stable")[:max_peaks]
    keep = keep[np.argsort(mz[keep], kind="stable")]
    return mz[keep], inten[keep]


def row_spectrum(item, max_peaks: int):
    """Turn one MZmine input row into a matchms spectrum for the annotator.

    Returns
    -------
    (Spectrum, notes)
        ``notes``: remarks for the LOG line (assumed adduct, replaced precursor m/z).

    Raises
    ------
    RowSkip
        No formula, no or invalid peaks, unparsable formula/adduct.
    """
    from matchms import Spectrum

    from matchms_diffms.chem.adducts import UnsupportedAdductError, parse_adduct, precursor_mz
    from matchms_diffms.chem.formula import FormulaError

    row_id = row_id_of(item)
    notes = []
    formula_text = item.get("formula")
    if not isinstance(formula_text, str) or not formula_text.strip():
        raise RowSkip("no formula")
    try:
        formula, changes = normalize_formula(formula_text)
    except FormulaError as err:
        raise RowSkip(f"invalid formula {formula_text!r}: {err}") from None
    if changes:
        notes.append(f"formula {formula_text!r} read as {formula.hill()} ({', '.join(changes)})")
    adduct_text = item.get("adduct")
    if not isinstance(adduct_text, str) or not adduct_text.strip():
        polarity = str(item.get("polarity") or "POSITIVE").upper()
        adduct_text = "[M-H]-" if polarity == "NEGATIVE" else "[M+H]+"
        notes.append(f"no adduct given, assumed {adduct_text}")
    adduct_text = "".join(adduct_text.split())
    try:
        adduct = parse_adduct(adduct_text)
    except UnsupportedAdductError as err:
        raise RowSkip(f"unsupported adduct: {err}") from None
    mz, inten = _peaks(item, max_peaks)

    try:
        expected = precursor_mz(formula, adduct)
    except FormulaError as err:
        raise RowSkip(f"adduct {adduct.name} does not fit formula {formula.hill()}: {err}") from None
    observed = _float(item.get("precursorMz"))
    metadata = {"feature_id": str(row_id), "formula": formula.hill(), "adduct": adduct_text,
                "ionmode": adduct.ionmode, "charge": _int(item.get("precursorCharge")) or adduct.charge,
                "precursor_mz": expected}
    if observed is not None:
        metadata["mzmine_precursor_mz"] = observed
        difference = observed - expected
        if abs(difference) > max(MZMINE_MZ_TOL, MZMINE_PPM_TOL * 1e-6 * expected):
            notes.append(f"precursorMz {observed:.5f} differs from {formula.hill()} {adduct.name} "
                         f"({expected:.5f}) by {difference:+.5f} m/z ({difference / expected * 1e6:+.0f} ppm), "
                         f"more than MZmine's tolerance; trusting MZmine's formula and adduct")
    else:
        notes.append(f"no precursorMz given, using {expected:.5f} from formula and adduct")
    for key, target in (("instrument", "instrument_type"), ("collisionEnergy", "collision_energy"),
                        ("activationMethod", "activation_method"), ("scanDefinition", "scan_definition")):
        if item.get(key) is not None:
            metadata[target] = item[key]
    spectrum = Spectrum(mz=mz, intensities=inten, metadata=metadata, metadata_harmonization=False)
    return spectrum, notes


def _float(value) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) and out > 0 else None


def _int(value) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def subformula_ppm(tolerance: float, precursor: float) -> float:
    """The ppm tolerance of the subformula assignment for MZmine's ``--subformula-tol``.

    Values below 1 are m/z (what MZmine passes): converted at the precursor m/z with the assignment's
    200 m/z floor, ``tol / max(precursor, 200) * 1e6``, so that no fragment gets a wider window than
    ``tol``. Values of 1 or more are ppm already.
    """
    if tolerance >= 1:
        return float(tolerance)
    return float(tolerance) / max(float(precursor), PPM_FLOOR_MZ) * 1e6


# ------------------------------------------------------------------------------------------------ smiles
def formula_counts(mol) -> dict[str, int]:
    """Element counts of an RDKit molecule including implicit hydrogens (CDK's check, done with RDKit)."""
    counts: dict[str, int] = {}
    for atom in mol.GetAtoms():
        counts[atom.GetSymbol()] = counts.get(atom.GetSymbol(), 0) + 1
        h = atom.GetTotalNumHs()
        if h:
            counts["H"] = counts.get("H", 0) + h
    return counts


def mzmine_smiles(smiles: str, formula) -> str | None:
    """The SMILES MZmine will accept for a row with ``formula``, or None.

    Accepted: parses, one fragment, element counts (implicit H included) equal to ``formula``. Returned as
    a non-isomeric Kekulé SMILES (re-checked after writing), falling back to the canonical aromatic SMILES
    when kekulization fails.
    """
    from rdkit import Chem

    if not isinstance(smiles, str) or not smiles.strip():
        return None
    mol = Chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumAtoms() == 0 or len(Chem.GetMolFrags(mol)) != 1:
        return None
    want = {el: int(n) for el, n in formula.counts.items() if n}
    if formula_counts(mol) != want:
        return None
    try:
        kek = Chem.Mol(mol)
        Chem.Kekulize(kek, clearAromaticFlags=True)
        out = Chem.MolToSmiles(kek, isomericSmiles=False, kekuleSmiles=True)
    except Chem.KekulizeException:
        out = Chem.MolToSmiles(mol, isomericSmiles=False)
    back = Chem.MolFromSmiles(out)
    if back is None or formula_counts(back) != want:
        return Chem.MolToSmiles(mol, isomericSmiles=False)
    return out


@dataclass
class RowResult:
    """What one row produced."""

    row_id: int
    smiles: list[str] = field(default_factory=list)
    status: str = ""
    dropped: int = 0
    candidates: list[dict] = field(default_factory=list)


def result_for(row_id: int, annotated, formula, top_k: int) -> RowResult:
    """Ranked SMILES of an annotated spectrum, filtered for MZmine (see :func:`mzmine_smiles`)."""
    from matchms_diffms import read_candidates

    out = RowResult(row_id, status=str(annotated.get("diffms_status") or ""))
    seen = set()
    for cand in read_candidates(annotated.get("diffms_candidates")):
        smiles = mzmine_smiles(cand.get("smiles"), formula)
        if smiles is None:
            out.dropped += 1
            continue
        key = cand.get("inchikey") or smiles
        if key in seen or smiles in out.smiles:
            continue
        seen.add(key)
        out.smiles.append(smiles)
        out.candidates.append({"smiles": smiles, "inchikey": cand.get("inchikey"), "score": cand.get("score"),
                               "count": cand.get("count")})
        if len(out.smiles) == top_k:
            break
    return out


# ------------------------------------------------------------------------------------------------ weights
def is_mzmine_default(path: Path) -> bool:
    """True for MZmine's default checkpoint location (for any user's home folder)."""
    tail = MZMINE_DEFAULT_CHECKPOINT.parts[1:]          # without "~"
    parts = Path(path).expanduser().parts
    return len(parts) >= len(tail) and tuple(parts[-len(tail):]) == tail


def read_pointer(path) -> str | None:
    """The weights a pointer file selects, or None when ``path`` is not a pointer file.

    A pointer file is a small JSON object ``{"format": "matchms-diffms-weights-pointer/1", "weights": W}``
    (written by :func:`write_pointer`) where ``W`` is a weights name (``default``) or the path of a weights
    folder or checkpoint; a relative path is taken relative to the pointer file's folder.

    Raises
    ------
    ValueError
        The file is a pointer file without a usable ``weights`` value.
    """
    path = Path(path)
    try:
        if not path.is_file() or path.stat().st_size > POINTER_MAX_BYTES:
            return None
        with open(path, "rb") as fh:
            head = fh.read(1)
            if head != b"{":
                return None                                  # official checkpoints are zip or gzip files
            data = json.loads(head + fh.read())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("format") != POINTER_FORMAT:
        return None
    weights = data.get("weights")
    if not isinstance(weights, str) or not weights.strip():
        raise ValueError(f"pointer file {path} has no 'weights' entry")
    weights = weights.strip()
    if _looks_like_path(weights) and not Path(weights).expanduser().is_absolute():
        weights = str((path.parent / Path(weights)).resolve())
    return weights


def write_pointer(path, weights: str) -> Path:
    """Write a pointer file at ``path`` that selects ``weights`` (a weights name or path, see :func:`read_pointer`).

    A path is stored absolute. The weights are resolved now, so a typo fails here and not inside MZmine.

    Raises
    ------
    matchms_diffms.official.WeightsError
        Unknown weights name or missing path.
    """
    from matchms_diffms.weights import resolve

    resolve(weights)
    if _looks_like_path(weights) or Path(weights).exists():
        weights = str(Path(weights).expanduser().resolve())
    record = {"format": POINTER_FORMAT, "weights": weights,
              "note": "matchms-diffms: select this file as the Checkpoint of MZmine's DiffMS module"}
    write_text_atomic(path, lambda fh: fh.write(json.dumps(record, indent=2) + "\n"))
    return Path(path)


def _looks_like_path(text: str) -> bool:
    return "/" in text or os.sep in text or text.startswith((".", "~")) or bool(Path(text).suffix)


def choose_weights(checkpoint: str | None) -> tuple[str, str | None]:
    """Weights name or path to load for ``--checkpoint``, and a note for the LOG (or None).

    Order: ``$MATCHMS_DIFFMS_MZMINE_WEIGHTS`` (a name or an absolute path), a pointer file given as
    ``--checkpoint``, any other existing checkpoint path, MZmine's default location when missing (our
    ``default`` weights), a weights name.

    Raises
    ------
    FileNotFoundError
        A checkpoint path that does not exist (and is not MZmine's default location).
    ValueError
        A relative path in ``$MATCHMS_DIFFMS_MZMINE_WEIGHTS``, or a pointer file without weights.
    """
    override = os.environ.get(ENV_WEIGHTS, "").strip()
    if override:
        if _looks_like_path(override) and not Path(override).expanduser().is_absolute():
            raise ValueError(f"${ENV_WEIGHTS}={override!r} is a relative path; use an absolute path (MZmine "
                             f"runs this program in {os.getcwd()})")
        return override, f"${ENV_WEIGHTS} is set: using weights {override!r} instead of --checkpoint"
    if checkpoint is None or not str(checkpoint).strip():
        return DEFAULT_WEIGHTS, "no --checkpoint given: using the matchms-diffms default weights"
    path = Path(checkpoint).expanduser()
    target = read_pointer(path)
    if target is not None:
        return target, f"checkpoint {path} is a matchms-diffms pointer file: using weights {target!r}"
    if path.exists():
        return str(path), None
    archive, sep, member = str(path).partition("::")          # diffms_checkpoints.tar.gz::diffms_msg.ckpt
    if sep and Path(archive).is_file() and member:
        return str(path), None
    if is_mzmine_default(path):
        return DEFAULT_WEIGHTS, (f"checkpoint {path} (MZmine's default location) not found: using the "
                                 f"matchms-diffms default weights")
    text = str(checkpoint)
    if not _looks_like_path(text):
        return text, None                                   # a weights name, e.g. "default"
    raise FileNotFoundError(f"checkpoint {checkpoint} not found")


def choose_device(requested: str | None) -> tuple[str, str | None]:
    """The torch device for ``--device`` and a note for the LOG (or None).

    ``cpu``; ``cuda`` / ``cuda:N`` when torch sees that GPU, otherwise the CPU with a note saying why.
    Anything else runs on the CPU, with a note.
    """
    text = str(requested or "cpu").strip().lower()
    if text == "cpu":
        return "cpu", None
    if not re.fullmatch(r"cuda(:\d+)?", text):
        return "cpu", f"unknown device {requested!r} (use cpu or cuda): running on the CPU"
    import torch

    if not torch.cuda.is_available():
        built = torch.version.cuda or "no CUDA"
        return "cpu", (f"device {requested!r} requested but CUDA is not available (torch {torch.__version__}, "
                       f"built with {built}): running on the CPU")
    index = int(text.split(":")[1]) if ":" in text else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        return "cpu", (f"device {requested!r} requested but only {torch.cuda.device_count()} GPU(s) are "
                       f"visible: running on the CPU")
    return f"cuda:{index}", f"running on {text} ({torch.cuda.get_device_name(index)})"


def load_annotator(weights: str, args):
    """The annotator used for all rows (one formula per row, the row's own), its model on ``args.device``."""
    from matchms_diffms import DiffMSAnnotator

    annotator = DiffMSAnnotator.from_pretrained(weights, n_samples=args.n_samples, steps=args.steps,
                                                top_k=args.top_k, seed=args.seed, max_formulas=1)
    annotator.model.to(args.device)
    return annotator


def _set_ppm(annotator, ppm: float) -> bool:
    """Set the annotator's subformula tolerance for the next row; False if the annotator has no such setting."""
    if hasattr(annotator, "subformula_ppm"):
        annotator.subformula_ppm = float(ppm)
        return True
    return False


# ------------------------------------------------------------------------------------------------ output
def write_json_atomic(path, data) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file in the same folder."""
    write_text_atomic(path, lambda fh: json.dump(data, fh, ensure_ascii=True))


# ------------------------------------------------------------------------------------------------ main
def run(args, protocol: Protocol) -> int:
    """Process the rows of ``args.input``; returns the exit status."""
    from matchms_diffms.chem.formula import Formula

    try:
        items = read_input(args.input)
    except InputError as err:
        protocol.log(f"ERROR: cannot read the input file {args.input}: {err}")
        return 1
    protocol.log(f"matchms-diffms MZmine backend: {len(items)} rows from {args.input}")
    args.device, note = choose_device(args.device)
    if note:
        protocol.log(note)
    if args.subformula_beam is not None:
        protocol.log("--subformula-beam is ignored (sub-formulas are assigned with the DiffMS rules)")

    protocol.stage("loading_model")
    try:
        weights, note = choose_weights(args.checkpoint)
        if note:
            protocol.log(note)
        annotator = load_annotator(weights, args)
    except Exception as err:  # noqa: BLE001 -- any failure to get weights ends the run; reported on the protocol
        protocol.log(f"ERROR: no usable weights ({args.checkpoint}): {type(err).__name__}: {err}")
        return 1
    protocol.log(f"model {getattr(annotator, 'model_id', weights)} on {args.device}; samples per row "
                 f"{args.n_samples}, steps {getattr(annotator, 'steps', args.steps)}, seed {args.seed}, top-k "
                 f"{args.top_k}, max MS/MS peaks {args.max_ms2_peaks}, sub-formula tolerance {args.subformula_tol}")
    protocol.stage("model_ready")
    total = len(items)
    protocol.progress(0, total)
    protocol.stage("inference")

    results, sidecar = [], []
    warned_ppm = False
    start = time.perf_counter()
    for done, item in enumerate(items, start=1):
        label = f"row {item.get('rowId')!r}" if isinstance(item, dict) else f"item {done}"
        try:
            row_id = row_id_of(item)
            label = f"row {row_id}"
            spectrum, notes = row_spectrum(item, args.max_ms2_peaks)
            for note in notes:
                protocol.log(f"{label}: {note}")
            ppm = subformula_ppm(args.subformula_tol, spectrum.get("precursor_mz"))
            if not _set_ppm(annotator, ppm) and not warned_ppm:
                protocol.log("this annotator has a fixed sub-formula tolerance; --subformula-tol not applied")
                warned_ppm = True
            annotated = annotator.annotate(spectrum)
            row = result_for(row_id, annotated, Formula.parse(spectrum.get("formula")), args.top_k)
        except RowSkip as skip:
            protocol.log(f"{label}: skipped: {skip}")
        except Exception as err:  # noqa: BLE001 -- one bad row must not end the run; reported on the protocol
            protocol.log(f"{label}: skipped: error {type(err).__name__}: {err}")
        else:
            if row.dropped:
                protocol.log(f"{label}: {row.dropped} candidate(s) dropped (not one fragment or formula differs)")
            if row.smiles:
                protocol.result(row.row_id, row.smiles)
                results.append({"rowId": row.row_id, "smiles": row.smiles})
                if row.status != "ok":
                    protocol.log(f"{label}: {row.status}")
            else:
                protocol.log(f"{label}: no structure: {row.status or 'no candidates'}")
            sidecar.append({"rowId": row.row_id, "status": row.status, "candidates": row.candidates})
        protocol.progress(done, total)
    seconds = time.perf_counter() - start
    protocol.log(f"finished: {len(results)} of {total} rows with structures in {seconds:.1f} s")

    if args.output:
        try:
            write_json_atomic(args.output, results)
        except (OSError, OutputError) as err:
            protocol.log(f"ERROR: cannot write the output file {args.output}: {err}")
            return 1
    scores_path = os.environ.get(ENV_SCORES, "").strip()
    if scores_path and total:                          # a run that processed no row leaves the file alone
        if not Path(scores_path).expanduser().is_absolute():
            protocol.log(f"WARNING: ${ENV_SCORES}={scores_path!r} is not an absolute path (this program runs in "
                         f"{os.getcwd()}); scores file not written")
        else:
            try:
                write_json_atomic(Path(scores_path).expanduser(), sidecar)
            except (OSError, OutputError) as err:
                protocol.log(f"WARNING: cannot write the scores file {scores_path}: {err}")
    protocol.stage("finished")
    return 0


def other_script(argv: list[str]) -> str | None:
    """The first argument when it is a ``.py`` file other than MZmine's DiffMS runner (e.g. ChemAudit's
    ``mzmine_chemaudit_validate.py``), else None."""
    first = argv[0] if argv else ""
    if first.startswith("-") or not first.lower().endswith(".py"):
        return None
    name = first.replace("\\", "/").rsplit("/", 1)[-1]
    return None if name.lower() == OWN_SCRIPT else first


def run_other_script(script: str, args: list[str]) -> int:
    """Run ``script args...`` with this Python interpreter, passing stdin, stdout, stderr and the exit status
    through (MZmine starts its helper scripts with the DiffMS module's executable). Nothing of DiffMS runs.

    Returns 2 with one line on stderr when the script does not exist, 1 when it cannot be started.
    """
    if not Path(script).is_file():
        print(f"matchms-diffms-mzmine: cannot run {script}: no such file", file=sys.stderr, flush=True)
        return 2
    if not sys.executable:
        print(f"matchms-diffms-mzmine: cannot run {script}: the Python interpreter is unknown", file=sys.stderr,
              flush=True)
        return 1
    try:
        return subprocess.call([sys.executable, script, *args])
    except OSError as err:
        print(f"matchms-diffms-mzmine: cannot run {script}: {err}", file=sys.stderr, flush=True)
        return 1


def main(argv: list[str] | None = None, stream=None) -> int:
    """Entry point of ``matchms-diffms-mzmine``; returns (and, as a script, exits with) the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    script = other_script(argv)
    if script is not None:
        return run_other_script(script, argv[1:])
    if stream is None:
        stream = sys.stdout
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(encoding="utf-8", errors="replace")
    protocol = Protocol(stream)
    try:
        args, warnings = parse_args(argv)
    except UsageError as err:
        protocol.log(f"ERROR: invalid arguments: {err}")
        return 2
    for warning in warnings:
        protocol.log(f"WARNING: {warning}")

    handler = ProtocolLogHandler(protocol)
    diffms_logger = logging.getLogger("matchms.diffms")
    old_propagate = diffms_logger.propagate
    diffms_logger.addHandler(handler)
    diffms_logger.propagate = False            # no second, unprefixed copy through matchms' stdout handler
    try:
        return run(args, protocol)
    finally:
        diffms_logger.removeHandler(handler)
        diffms_logger.propagate = old_propagate


def console_main() -> None:
    """``sys.exit(main())`` for the console script."""
    sys.exit(main())


if __name__ == "__main__":
    console_main()
