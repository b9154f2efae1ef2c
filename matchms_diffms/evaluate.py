"""Evaluation of de novo structure generation with the MassSpecGym metrics.

Definitions (those of the MassSpecGym de novo benchmark, Bushuiev et al. 2024). Per spectrum, given the true
SMILES and the model's ranked list of predicted SMILES (``None`` or unparsable entries allowed, list order used
as is, no de-duplication):

==================  =============================================================================================
top-k accuracy      1 if the first InChIKey block (14 characters) of the truth equals that of any of the first k
                    predictions; invalid predictions never match
top-k MCES          min over the first k predictions of the myopic-MCES distance (threshold 15,
                    ``always_stronger_bound=True``, CBC solver, distance = element [1] of the result); invalid
                    prediction -> 100, minimum capped at 100; no prediction -> 100. Distances above 15 are lower
                    bounds.
top-k Tanimoto      max over the first k predictions of the Tanimoto similarity of Morgan bit vectors (radius 2,
                    2048 bits); invalid prediction -> 0; no prediction -> 0
validity            valid predictions / all predictions (pooled over spectra); a prediction is valid iff
                    ``Chem.MolFromSmiles`` returns a molecule with at least one atom
formula_match       predictions whose molecular formula (RDKit, H included) equals the true formula / all
                    predictions (pooled; invalid predictions do not match)
==================  =============================================================================================

Spectrum metrics are averaged over spectra; :func:`evaluate_file` adds percentile bootstrap 95 % intervals
(resampling spectra) and paired differences to baselines. DiffMS's own variant (InChI match, tautomer-canonical
Tanimoto, MCES at threshold 100: :func:`diffms_spectrum_metrics`) is reported beside it. The chemistry is done
with RDKit directly, not with ``matchms_diffms.chem``, so that the harness stays independent of the code it
evaluates (the random baselines use ``chem.decoding``).

Also here: :func:`random_formula_baseline` (random valid molecules with a given formula), :func:`evaluate_file`
(run an annotator or the baseline over a labelled file) and the ``evaluate`` command of ``matchms-diffms``
(registered through the ``diffms_register_commands`` hook).
"""
from __future__ import annotations

import json
import logging
import random
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Sequence

from rdkit import Chem, DataStructs, rdBase
from rdkit.Chem import rdFingerprintGenerator, rdMolDescriptors

from .annotator import DiffMSAnnotator
from .chem.formula import Formula
from .files import atomic_write_text, plain_value
from .metadata import read_candidates, status_code

logger = logging.getLogger("matchms.diffms")

MCES_THRESHOLD = 15          # MassSpecGym
MCES_MISSING = 100.0         # distance for an invalid / missing prediction, and the cap of the minimum
MCES_SAVE_SECONDS = 60.0  # an evaluation with --mces-cache writes the solved distances at least this often
MCES_SOLVER = "PULP_CBC_CMD"  # bundled with pulp; myopic-mces' default COIN_CMD needs a system cbc binary
TANIMOTO_RADIUS = 2
TANIMOTO_BITS = 2048
RANDOM_BASELINE = "random-formula"
RANKED_BASELINE = "random-formula-ranked"
BASELINES = (RANDOM_BASELINE, RANKED_BASELINE)
DIFFMS_MCES_THRESHOLD = 100  # DiffMS's notebook: exact distances up to 100, always_stronger_bound=False

METRIC_KEYS = ("top1_accuracy", "top10_accuracy", "top1_mces", "top10_mces", "top1_tanimoto",
               "top10_tanimoto", "validity", "formula_match", "n_spectra", "seconds_per_spectrum")


# ----------------------------------------------------------------------------------------------- chemistry
def parse_smiles(smiles) -> Chem.Mol | None:
    """RDKit molecule of ``smiles``, or ``None`` if it is missing, empty or does not parse (no RDKit log noise)."""
    if smiles is None or not isinstance(smiles, str) or not smiles.strip():
        return None
    blocker = rdBase.BlockLogs()  # noqa: F841  (restores logging when it goes out of scope)
    mol = Chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    return mol


def inchikey14(mol: Chem.Mol) -> str | None:
    """First InChIKey block (the 2D skeleton) of ``mol``; ``None`` if RDKit cannot make an InChIKey."""
    blocker = rdBase.BlockLogs()  # noqa: F841
    key = Chem.MolToInchiKey(mol)
    return key.split("-")[0] if key else None


_MORGAN = None


def morgan_bits(mol: Chem.Mol):
    """Morgan bit vector, radius 2, 2048 bits (``rdFingerprintGenerator``, identical to the legacy call)."""
    global _MORGAN
    if _MORGAN is None:
        _MORGAN = rdFingerprintGenerator.GetMorganGenerator(radius=TANIMOTO_RADIUS, fpSize=TANIMOTO_BITS)
    return _MORGAN.GetFingerprint(mol)


def mol_formula(mol: Chem.Mol) -> str:
    """Hill formula of ``mol`` with its (implicit + explicit) hydrogens, as RDKit writes it."""
    return rdMolDescriptors.CalcMolFormula(mol)


def formula_counts(formula) -> dict[str, int]:
    """Element counts of a neutral formula string such as ``C9H11Cl3NO3PS`` (FormulaError if it does not parse)."""
    return dict(Formula.parse(formula).counts)


# ----------------------------------------------------------------------------------------------- MCES
class MCESCache:
    """Myopic-MCES distances with MassSpecGym's settings and a per-pair cache.

    Parameters
    ----------
    threshold
        Exact distances are computed up to this value; above it myopic-MCES returns a lower bound.
    solver
        PuLP solver name (CBC, bundled with pulp).
    time_limit
        Optional solver time limit in seconds (``None``: no limit, as in MassSpecGym). With a limit a hard pair
        may give an upper bound (or the filter's lower bound) instead of the exact distance.
    always_stronger_bound
        MassSpecGym: True; DiffMS's notebook: False (with threshold 100).

    Notes
    -----
    A pair on which myopic-MCES raises is logged (warning) and counted as 100, like an invalid prediction;
    ``n_errors`` counts them (``evaluate_file`` reports it as ``mces_errors``).

    Distances can be kept across runs in a file (:meth:`load`, :meth:`save`): re-evaluating the same spectra
    with new weights then only solves the pairs it has not seen (the baselines' pairs do not change). Every
    line holds one pair and the settings it was computed with; only lines with this cache's settings are
    used. Failed pairs are not saved.
    """

    def __init__(self, threshold: float = MCES_THRESHOLD, solver: str = MCES_SOLVER,
                 time_limit: float | None = None, always_stronger_bound: bool = True):
        self.threshold = threshold
        self.always_stronger_bound = always_stronger_bound
        self.solver = solver
        self.solver_options = {"msg": 0}
        if time_limit is not None:
            self.solver_options["timeLimit"] = time_limit
        self._cache: dict[tuple[str, str], float] = {}
        self._failed: set[tuple[str, str]] = set()
        self.n_computed = 0
        self.n_errors = 0
        self.seconds = 0.0

    def __len__(self) -> int:
        return len(self._cache)

    def __call__(self, true_smiles: str, pred_smiles: str) -> float:
        """Distance between two valid SMILES (``MCES(true, pred, threshold, 0, solver, options)[1]``)."""
        key = (true_smiles, pred_smiles)
        if key not in self._cache:
            from myopic_mces import MCES

            start = time.perf_counter()
            with warnings.catch_warnings():
                # pulp >= 3.3 flags its bundled CBC as deprecated (a `cbc` binary via COIN_CMD is the future
                # route); the bundled one is faster here
                warnings.filterwarnings("ignore", message="PULP_CBC_CMD is deprecated", category=DeprecationWarning)
                # positional arguments: the keyword names changed between myopic-mces 1.0 and 1.3
                try:
                    result = MCES(true_smiles, pred_smiles, self.threshold, 0, self.solver, self.solver_options,
                                  False, self.always_stronger_bound)
                except Exception as err:  # noqa: BLE001 -- one odd molecule must not end a long evaluation
                    logger.warning("MCES(%s, %s) failed (%s: %s); counted as %s (like an invalid prediction)",
                                   true_smiles, pred_smiles, type(err).__name__, err, MCES_MISSING)
                    result = (0, MCES_MISSING)
                    self.n_errors += 1
                    self._failed.add(key)
            self.seconds += time.perf_counter() - start
            self.n_computed += 1
            distance = float(result[1])
            if distance < 0:  # only with a time limit: no solution and no usable bound
                logger.warning("MCES(%s, %s) hit the time limit without a bound; using the threshold %s",
                               true_smiles, pred_smiles, self.threshold)
                distance = float(self.threshold)
            self._cache[key] = distance
        return self._cache[key]

    def settings(self) -> dict:
        """What a distance depends on besides the pair (the key of a saved line)."""
        return {"threshold": self.threshold, "always_stronger_bound": self.always_stronger_bound,
                "solver": self.solver, "time_limit": self.solver_options.get("timeLimit")}

    def known(self) -> dict[tuple[str, str], float]:
        """Distances solved without error (what a file or another process may reuse)."""
        return {k: d for k, d in self._cache.items() if k not in self._failed}

    def add(self, distances: dict[tuple[str, str], float]) -> None:
        """Take over distances solved elsewhere (a worker process, a saved file)."""
        self._cache.update(distances)

    def load(self, path) -> int:
        """Add the distances saved in ``path`` with this cache's settings; a missing file adds none.

        Returns the number of pairs added. A line that is not a saved distance raises ValueError.
        """
        path = Path(path)
        if not path.exists():
            return 0
        mine, added = self.settings(), {}
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                key, distance = (row["true"], row["pred"]), float(row["distance"])
                settings = {k: row[k] for k in mine}
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{path}, line {number}: not an MCES distance line ({err})") from None
            if settings == mine:
                added[key] = distance
        self.add(added)
        return len(added)

    def save(self, path) -> Path:
        """Write this cache's distances to ``path`` (atomically), keeping the file's lines of other settings."""
        path = Path(path)
        mine = self.settings()
        kept = []
        if path.exists():
            kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and {k: json.loads(line).get(k) for k in mine} != mine]
        rows = [json.dumps({"true": t, "pred": p, "distance": d, **mine}) for (t, p), d in self.known().items()]
        return atomic_write_text(path, "".join(line + "\n" for line in kept + rows))


# ----------------------------------------------------------------------------------------------- metrics
def spectrum_metrics(true_smiles: str, predictions: Sequence[str | None], ks: Sequence[int] = (1, 10),
                     mces: MCESCache | None = None) -> dict:
    """MassSpecGym metrics of one spectrum.

    Parameters
    ----------
    true_smiles
        The true structure (must parse).
    predictions
        Ranked predicted SMILES; ``None``/unparsable entries count as invalid predictions.
    ks
        The k of the top-k metrics.
    mces
        An :class:`MCESCache`; ``None`` skips MCES (the ``top{k}_mces`` keys are then absent).

    Returns
    -------
    dict
        ``top{k}_accuracy`` (0/1), ``top{k}_mces``, ``top{k}_tanimoto`` for every k, plus the counts
        ``n_predictions``, ``n_valid``, ``n_formula_match``.

    Raises
    ------
    ValueError
        If ``true_smiles`` does not parse.
    """
    true_mol = parse_smiles(true_smiles)
    if true_mol is None:
        raise ValueError(f"true SMILES does not parse: {true_smiles!r}")
    true_key = inchikey14(true_mol)
    true_fp = morgan_bits(true_mol)
    true_formula = mol_formula(true_mol)
    predictions = list(predictions)
    k_max = max(ks)

    matches, tanimotos, distances = [], [], []
    n_valid = n_formula = 0
    for rank, smiles in enumerate(predictions):
        mol = parse_smiles(smiles)
        if mol is not None:
            n_valid += 1
            n_formula += mol_formula(mol) == true_formula
        if rank >= k_max:
            continue
        if mol is None:
            matches.append(False)
            tanimotos.append(0.0)
            distances.append(MCES_MISSING)
            continue
        key = inchikey14(mol)
        matches.append(key is not None and key == true_key)
        tanimotos.append(DataStructs.TanimotoSimilarity(true_fp, morgan_bits(mol)))
        if mces is not None:
            distances.append(mces(true_smiles, smiles))

    out = {}
    for k in ks:
        out[f"top{k}_accuracy"] = float(any(matches[:k]))
        out[f"top{k}_tanimoto"] = float(max(tanimotos[:k], default=0.0))
        if mces is not None:
            out[f"top{k}_mces"] = float(min(min(distances[:k], default=MCES_MISSING), MCES_MISSING))
    out.update(n_predictions=len(predictions), n_valid=n_valid, n_formula_match=n_formula)
    return out


def aggregate(per_spectrum: Sequence[dict], seconds_per_spectrum: float | None = None,
              ks: Sequence[int] = (1, 10)) -> dict:
    """Mean of the per-spectrum metrics and pooled validity / formula match.

    Parameters
    ----------
    per_spectrum
        Outputs of :func:`spectrum_metrics`.
    seconds_per_spectrum
        Annotation time per spectrum measured by the caller (stored as given).

    Returns
    -------
    dict
        ``top{k}_accuracy``, ``top{k}_mces`` (if computed), ``top{k}_tanimoto``, ``validity``,
        ``formula_match``, ``num_valid_mols`` (mean valid predictions per spectrum), ``n_spectra``,
        ``n_predictions``, ``seconds_per_spectrum``. Means over zero spectra and ratios over zero predictions
        are ``None``.
    """
    n = len(per_spectrum)
    out: dict = {}
    for k in ks:
        for name in ("accuracy", "mces", "tanimoto"):
            key = f"top{k}_{name}"
            values = [m[key] for m in per_spectrum if key in m]
            if n and len(values) not in (0, n):
                raise ValueError(f"{key} is missing for some spectra")
            if values or not n:
                out[key] = sum(values) / n if n else None
    n_pred = sum(m["n_predictions"] for m in per_spectrum)
    n_valid = sum(m["n_valid"] for m in per_spectrum)
    out["validity"] = n_valid / n_pred if n_pred else None
    out["formula_match"] = sum(m["n_formula_match"] for m in per_spectrum) / n_pred if n_pred else None
    out["num_valid_mols"] = n_valid / n if n else None
    out["n_spectra"] = n
    out["n_predictions"] = n_pred
    out["seconds_per_spectrum"] = seconds_per_spectrum
    return out


def _diffms_canonical(mol: Chem.Mol) -> Chem.Mol:
    """Tautomer-canonical molecule (RDKit ``TautomerEnumerator.Canonicalize``), as DiffMS's notebook uses."""
    from rdkit.Chem.MolStandardize import rdMolStandardize

    global _TAUTOMERS
    if _TAUTOMERS is None:
        _TAUTOMERS = rdMolStandardize.TautomerEnumerator()
    blocker = rdBase.BlockLogs()  # noqa: F841
    try:
        return _TAUTOMERS.Canonicalize(mol)
    except (RuntimeError, ValueError):
        return mol


_TAUTOMERS = None


def diffms_spectrum_metrics(true_smiles: str, predictions: Sequence[str | None], ks: Sequence[int] = (1, 10),
                            mces: MCESCache | None = None) -> dict:
    """DiffMS's metric variant of one spectrum (the one of the paper's tables).

    ``top{k}_accuracy``: the true molecule's standard InChI (non-isomeric) is among the InChIs of the first k
    predictions; ``top{k}_tanimoto``: max Tanimoto (Morgan r2, 2048 bits) with both sides tautomer-canonical;
    ``top{k}_mces`` (only with ``mces``, which should have threshold 100 and ``always_stronger_bound=False``):
    min MCES between tautomer-canonical SMILES, a failing pair counts #bonds(true) + #bonds(pred), starting
    value 100. The candidate list is the one given (DiffMS ranks by frequency: ``--ranking frequency``).
    """
    true_mol = parse_smiles(true_smiles)
    if true_mol is None:
        raise ValueError(f"true SMILES does not parse: {true_smiles!r}")
    flat = Chem.MolFromSmiles(Chem.MolToSmiles(true_mol, isomericSmiles=False))
    blocker = rdBase.BlockLogs()  # noqa: F841
    true_inchi = Chem.MolToInchi(flat)
    true_canon = _diffms_canonical(flat)
    true_fp = morgan_bits(true_canon)
    true_canon_smiles = Chem.MolToSmiles(true_canon)
    k_max = max(ks)
    matches, tanimotos, distances = [], [], []
    for smiles in list(predictions)[:k_max]:
        mol = parse_smiles(smiles)
        if mol is None:
            matches.append(False)
            tanimotos.append(0.0)
            distances.append(100.0)
            continue
        matches.append(bool(true_inchi) and Chem.MolToInchi(mol) == true_inchi)
        canon = _diffms_canonical(mol)
        tanimotos.append(DataStructs.TanimotoSimilarity(true_fp, morgan_bits(canon)))
        if mces is not None:
            errors = mces.n_errors
            d = mces(true_canon_smiles, Chem.MolToSmiles(canon))
            if mces.n_errors > errors:        # DiffMS's fallback for a failing pair
                d = float(true_canon.GetNumBonds() + canon.GetNumBonds())
            distances.append(d)
    out = {}
    for k in ks:
        out[f"top{k}_accuracy"] = float(any(matches[:k]))
        out[f"top{k}_tanimoto"] = float(max(tanimotos[:k], default=0.0))
        if mces is not None:
            out[f"top{k}_mces"] = float(min(distances[:k], default=100.0))
    return out


def evaluate_predictions(true_smiles: Sequence[str], predictions: Sequence[Sequence[str | None]], *,
                         ks: Sequence[int] = (1, 10), compute_mces: bool = True,
                         mces: MCESCache | None = None, seconds_per_spectrum: float | None = None) -> dict:
    """Aggregate MassSpecGym metrics of ranked predictions against true SMILES (one list per spectrum)."""
    if len(true_smiles) != len(predictions):
        raise ValueError(f"{len(true_smiles)} true SMILES but {len(predictions)} prediction lists")
    if compute_mces and mces is None:
        mces = MCESCache()
    per = [spectrum_metrics(t, p, ks, mces if compute_mces else None) for t, p in zip(true_smiles, predictions)]
    return aggregate(per, seconds_per_spectrum, ks)


# ----------------------------------------------------------------------------------------------- intervals
INTERVAL_METRICS = ("top1_accuracy", "top10_accuracy", "top1_mces", "top10_mces", "top1_tanimoto", "top10_tanimoto")


def metric_intervals(per_spectrum: Sequence[dict], keys: Sequence[str] = INTERVAL_METRICS, **options) -> dict:
    """``{metric: stats.bootstrap_mean(...)}`` (mean and bootstrap 95 % interval over spectra) for every key
    present in all per-spectrum dicts."""
    from .stats import bootstrap_mean

    return {k: bootstrap_mean([m[k] for m in per_spectrum], **options)
            for k in keys if per_spectrum and all(k in m for m in per_spectrum)}


def paired_differences(per_a: Sequence[dict], per_b: Sequence[dict], keys: Sequence[str] = INTERVAL_METRICS,
                       **options) -> dict:
    """``{metric: stats.paired_difference(a, b)}`` (a minus b, same spectra) for every key present in both."""
    from .stats import paired_difference

    return {k: paired_difference([m[k] for m in per_a], [m[k] for m in per_b], **options)
            for k in keys if per_a and all(k in m for m in per_a) and all(k in m for m in per_b)}


# ----------------------------------------------------------------------------------------------- baseline
# Neutral valences tried for each element, lowest first (P and S may be hypervalent).
def random_formula_baseline(formula: str, k: int, seed: int | None = None,
                            max_attempts: int | None = None) -> list[str]:
    """Up to ``k`` distinct random valid single-fragment molecules with exactly ``formula``.

    Construction (``chem.decoding.random_formula_molecule``): the constrained decoding of the model's samples,
    applied to random bond probabilities: a random spanning tree under the valence caps, then random ring bonds
    and bond-order raises until the formula's hydrogen count is met, no hydrogens on hypervalent S / P. The
    molecule must sanitize in RDKit and have exactly the requested formula.

    Parameters
    ----------
    formula
        Neutral formula, e.g. ``C8H10N4O2``.
    k
        Number of molecules wanted.
    seed
        Seed of the random generator (same seed, same list).
    max_attempts
        Construction attempts before giving up (default ``30 * k + 30``).

    Returns
    -------
    list of str
        Canonical SMILES. Fewer than ``k`` when the formula admits fewer distinct structures than found within
        the attempts (e.g. ``CH4``); empty when no neutral closed-shell single-fragment molecule exists with
        these valences (odd electron count, too many hydrogens, no heavy atom).
    """
    from .chem.formula import Formula, FormulaError
    from .chem.decoding import random_formula_molecule, valence_choices

    try:
        parsed = Formula.parse(formula)
    except FormulaError:
        return []
    rng = random.Random(seed)
    if k <= 0 or not parsed.heavy_atoms() or not valence_choices(parsed.heavy_atoms(), parsed.counts.get("H", 0)):
        return []
    found: list[str] = []
    seen: set[str] = set()
    attempts = max_attempts if max_attempts is not None else 30 * k + 30
    for _ in range(attempts):
        if len(found) >= k:
            break
        mol = random_formula_molecule(parsed, rng)
        if mol is None:
            continue
        smiles = Chem.MolToSmiles(mol)
        if smiles not in seen:
            seen.add(smiles)
            found.append(smiles)
    return found


# ----------------------------------------------------------------------------------------------- files
def _first_block(inchikey) -> str | None:
    if isinstance(inchikey, str) and len(inchikey) >= 14:
        return inchikey[:14]
    return None


def _candidates(spectrum) -> list:
    """``diffms_candidates`` of a spectrum (a list of dicts, or its JSON string)."""
    candidates = spectrum.get("diffms_candidates")
    if candidates is None:
        return []
    if isinstance(candidates, str):
        candidates = json.loads(candidates) if candidates.strip() else []
    return list(candidates)


def _candidate_smiles(spectrum) -> list[str | None]:
    """Ranked SMILES of ``diffms_candidates``."""
    return [c.get("smiles") if isinstance(c, dict) else None for c in _candidates(spectrum)]


def load_labelled_spectra(path, *, one_per_structure: bool = True, limit: int | None = None,
                          ionmode: str | None = None) -> list:
    """Labelled spectra of ``path`` (MGF, MassSpecGym TSV or MIST folder) as matchms ``Spectrum`` objects.

    Spectra whose SMILES is missing or does not parse are dropped (count logged). With ``one_per_structure`` only
    the first spectrum of each structure (first InChIKey block; computed from the SMILES if the metadata has
    none) is kept. ``limit`` caps the number returned. ``ionmode`` ("positive"/"negative") keeps only that
    polarity (selected before one spectrum per structure is picked).
    """
    from .labelled import read_labelled

    spectra, seen = [], set()
    dropped = Counter()
    for record in read_labelled(path):
        if ionmode and (record.ionmode or "").lower() != ionmode:
            dropped[f"not {ionmode}"] += 1
            continue
        mol = parse_smiles(record.smiles)
        if mol is None:
            dropped["no or invalid smiles"] += 1
            continue
        if one_per_structure:
            key = _first_block(record.inchikey) or inchikey14(mol)
            if key in seen:
                dropped["duplicate structure"] += 1
                continue
            seen.add(key)
        spectra.append(record.to_spectrum())
        if limit is not None and len(spectra) >= limit:
            break
    logger.info("evaluation set %s: %d spectra kept, dropped %s", path, len(spectra), dict(dropped))
    return spectra


def _true_formula(spectrum) -> str:
    formula = spectrum.get("formula")
    if formula:
        return formula
    mol = parse_smiles(spectrum.get("smiles"))
    logger.warning("spectrum %s has no formula metadata; using the formula of its SMILES",
                   spectrum.get("spectrum_id") or spectrum.get("title"))
    return mol_formula(mol)


def evaluate_file(path, weights: str = "default", n_samples: int = 100, steps: int | None = None,
                  top_k: int = 10, seed: int | None = 0, one_per_structure: bool = True,
                  limit: int | None = None, compute_mces: bool = True, mces_time_limit: float | None = None,
                  details: list | None = None, ionmode: str | None = None, complete: bool = True,
                  workers: int = 1, ranking: str | None = None, baselines: Sequence[str] = (),
                  diffms_variant: bool = True, diffms_mces: bool = False, max_formulas: int = 3,
                  max_heavy_atoms: int | None = None, threads: int | None = None, checkpoint=None,
                  resume: bool = False, progress: bool = False, mces_cache=None) -> dict:
    """Annotate the labelled spectra of ``path`` and compute the MassSpecGym metrics (and the baselines').

    Parameters
    ----------
    path
        Labelled spectra (MGF with ``smiles`` metadata, MassSpecGym TSV or MIST folder).
    weights
        Weights name or path for :class:`matchms_diffms.annotator.DiffMSAnnotator`, or a baseline name
        (:data:`BASELINES`): ``random-formula`` (:func:`random_formula_baseline` with the true formula) or
        ``random-formula-ranked`` (``n_samples`` random formula-exact molecules per spectrum ranked with the
        default weights' encoder fingerprint, :class:`RandomStructureAnnotator`).
    n_samples, steps, top_k, seed
        Annotator settings (``top_k`` is also the number of baseline molecules). Spectrum ``i`` of the
        ``random-formula`` baseline uses seed ``seed + i``.
    one_per_structure, limit
        See :func:`load_labelled_spectra` (one spectrum per structure by default).
    compute_mces, mces_time_limit
        Skip MCES (slow) / solver time limit per pair.
    mces_cache
        Optional file of MCES distances (:meth:`MCESCache.load`): distances found there are reused, and
        every distance solved is added to it after each system. ``mces_computed`` counts the pairs solved,
        ``mces_cached`` the pairs read from the file.
    details
        Optional list that receives one dict per spectrum (id, true SMILES, predictions, metrics).
    workers, threads
        Processes that annotate the spectra (:func:`matchms_diffms.batch.annotate_spectra`: one torch thread
        each, a crashed worker costs one spectrum) and then compute the MCES metric of interleaved parts;
        torch threads when ``workers`` is 1. Every spectrum is seeded from its identity, so the predictions
        and metrics do not depend on ``workers``; ``seconds_per_spectrum`` is the annotation's wall time
        divided by the number of spectra, ``mces_seconds`` the summed solver time of all processes.
    checkpoint, resume, progress
        The annotations of ``weights`` are checkpointed in ``checkpoint`` (e.g. ``OUTPUT.partial.jsonl``), and
        an interrupted evaluation continues from it with ``resume`` (:func:`matchms_diffms.batch.annotate_spectra`).
    ranking, max_formulas, max_heavy_atoms
        Annotator options (:class:`matchms_diffms.batch.AnnotationSettings`); ``ranking`` also of
        ``random-formula-ranked``; default the annotator's.
    baselines
        Baselines evaluated on the same spectra (with ``weights`` as the encoder of ``random-formula-ranked``);
        the result gets their metrics under ``baselines`` and the paired differences model minus baseline,
        with bootstrap intervals, under ``paired``.
    diffms_variant, diffms_mces
        Also compute DiffMS's metric variant (:func:`diffms_spectrum_metrics`: InChI match and tautomer-
        canonical Tanimoto; with ``diffms_mces`` also its MCES at threshold 100, which is slow).

    Returns
    -------
    dict
        :func:`aggregate` output of ``weights`` plus ``intervals`` (bootstrap 95 % intervals), ``diffms``
        (the DiffMS variant with intervals), ``weights``, ``weights_sha256``, ``decoded_share``, settings,
        ``mces_seconds``; ``baselines`` and ``paired`` when baselines were given.
    """
    spectra = load_labelled_spectra(path, one_per_structure=one_per_structure, limit=limit, ionmode=ionmode)
    from .batch import AnnotationSettings

    settings = AnnotationSettings(n_samples=n_samples, steps=steps, top_k=top_k, seed=0 if seed is None else seed,
                                  complete=complete, max_formulas=max_formulas, max_heavy_atoms=max_heavy_atoms,
                                  workers=workers, threads=threads,
                                  **({"ranking": ranking} if ranking is not None else {}))
    run = {"checkpoint": checkpoint, "resume": resume, "progress": progress,
           "label": f"{path} (one per structure: {one_per_structure}, limit {limit}, ionmode {ionmode})"}
    mces = MCESCache(time_limit=mces_time_limit) if compute_mces else None
    mces100 = MCESCache(threshold=DIFFMS_MCES_THRESHOLD, always_stronger_bound=False,
                        time_limit=mces_time_limit) if diffms_mces else None
    reused = {c: c.load(mces_cache) for c in (mces, mces100) if c is not None and mces_cache is not None}
    systems = [weights] + [b for b in baselines if b != weights]
    encoder = weights if weights not in BASELINES else "default"
    keep_solved = _CacheSaver(list(reused), mces_cache) if reused else None
    runs = {}
    for name in systems:
        runs[name] = _run_system(name, spectra, settings, encoder, mces, mces100 if diffms_variant else None,
                                 diffms_variant, run if name == weights else {}, keep_solved)
        if keep_solved is not None:
            keep_solved(force=True)
    result = _summary(runs[weights], top_k)
    if details is not None:
        for spectrum, preds, metrics in zip(runs[weights]["annotated"], runs[weights]["predictions"],
                                            runs[weights]["per"]):
            details.append({"id": spectrum.get("spectrum_id") or spectrum.get("title"),
                            "smiles": spectrum.get("smiles"), "status": spectrum.get("diffms_status"),
                            "predictions": list(preds), **metrics})
    if len(systems) > 1:
        result["baselines"] = {name: _summary(runs[name], top_k) for name in systems[1:]}
        result["paired"] = {f"{weights} - {name}": paired_differences(runs[weights]["per"], runs[name]["per"],
                                                                      keys=_interval_keys(runs[weights]["per"]))
                            for name in systems[1:]}
    result.update(weights=weights, weights_sha256=runs[weights]["sha256"],
                  n_samples=None if weights == RANDOM_BASELINE else n_samples, steps=steps,
                  top_k=top_k, seed=seed, one_per_structure=one_per_structure, ionmode=ionmode,
                  complete=complete if weights not in BASELINES else None, ranking=runs[weights]["ranking"],
                  file=str(path),
                  mces_seconds=mces.seconds if mces is not None else None,
                  mces_solver=mces.solver if mces is not None else None,
                  mces_errors=mces.n_errors if mces is not None else None,
                  mces_computed=mces.n_computed if mces is not None else None)
    if mces is not None and mces_cache is not None:
        result["mces_cached"] = reused[mces]
    if mces100 is not None:
        result["diffms_mces_seconds"] = mces100.seconds
    return result


def _interval_keys(per: list) -> list[str]:
    keys = list(INTERVAL_METRICS) + [f"diffms_{k}" for k in INTERVAL_METRICS]
    return [k for k in keys if per and all(k in m for m in per)]


def _summary(run: dict, top_k: int) -> dict:
    """Aggregate metrics of one system with intervals, the DiffMS variant, statuses and candidate sources."""
    per = run["per"]
    out = aggregate(per, run["seconds"])
    out["intervals"] = metric_intervals(per, keys=[k for k in _interval_keys(per) if not k.startswith("diffms_")])
    diffms_keys = [k for k in _interval_keys(per) if k.startswith("diffms_")]
    if diffms_keys:
        out["diffms"] = {k[len("diffms_"):]: v for k, v in metric_intervals(per, keys=diffms_keys).items()}
    if run["sources"] is not None:
        sources = Counter(run["sources"])
        total = sum(sources.values())
        out["candidate_sources"] = dict(sources)
        out["decoded_share"] = sources.get("decoded", 0) / total if total else None
        statuses = Counter(status_code(s.get("diffms_status")) for s in run["annotated"])
        out["status_counts"] = dict(statuses)
    return out


class _CacheSaver:
    """Writes the MCES caches to their file at most every ``MCES_SAVE_SECONDS`` (or when forced), so that an
    interrupted evaluation keeps the distances it has solved: MCES is most of an evaluation's time."""

    def __init__(self, caches: list, path):
        self.caches, self.path = caches, path
        self.last = time.monotonic()

    def __call__(self, force: bool = False) -> None:
        if force or time.monotonic() - self.last >= MCES_SAVE_SECONDS:
            for cache in self.caches:
                cache.save(self.path)
            self.last = time.monotonic()


def _run_system(name: str, spectra: list, settings, encoder: str, mces, mces100, diffms_variant: bool,
                run: dict, keep_solved=None) -> dict:
    """Predictions and per-spectrum metrics of the model ``name`` or of a baseline on ``spectra``; the model
    runs through :func:`matchms_diffms.batch.annotate_spectra` with the options of ``run`` (checkpoint,
    resume, progress, label). ``keep_solved()`` is called as metrics come in (see :class:`_CacheSaver`)."""
    from dataclasses import replace

    from .batch import annotate_spectra
    from .weights import weights_sha256

    start = time.perf_counter()
    sha256 = ranking = sources = None
    workers = settings.workers
    if name == RANDOM_BASELINE:
        predictions = [random_formula_baseline(_true_formula(s), settings.top_k, seed=settings.seed + i)
                       for i, s in enumerate(spectra)]
        annotated = spectra
    else:
        ranked_baseline = name == RANKED_BASELINE
        weights = encoder if ranked_baseline else name
        annotated = annotate_spectra(spectra, replace(settings, weights=weights),
                                     annotator_cls=RandomStructureAnnotator if ranked_baseline else None, **run)
        sha256 = weights_sha256(weights)
        predictions = [_candidate_smiles(s) for s in annotated]
        sources = [c.get("source", "sampled") for s in annotated for c in _candidates(s)]
        ranking = settings.ranking
    seconds = (time.perf_counter() - start) / len(spectra) if spectra else None
    pairs = [(spectrum.get("smiles"), list(preds)) for spectrum, preds in zip(annotated, predictions)]
    if workers > 1 and mces is not None and len(pairs) > 1:
        per = _metrics_in_processes(pairs, workers, mces, mces100, diffms_variant, keep_solved)
    else:
        per = []
        for true, preds in pairs:
            per.append(_all_metrics(true, preds, mces, mces100, diffms_variant))
            if keep_solved is not None:
                keep_solved()
    return {"annotated": annotated, "predictions": predictions, "per": per, "seconds": seconds,
            "sha256": sha256, "ranking": ranking, "sources": sources}


def _all_metrics(true: str, preds: list, mces, mces100, diffms_variant: bool) -> dict:
    out = spectrum_metrics(true, preds, (1, 10), mces)
    if diffms_variant:
        out.update({f"diffms_{k}": v for k, v in diffms_spectrum_metrics(true, preds, (1, 10), mces100).items()})
    return out


class RandomStructureAnnotator(DiffMSAnnotator):
    """The model's encoder fingerprint and ranking, with random formula-exact molecules instead of the
    decoder's samples: the ``random-formula-ranked`` baseline."""

    def _generate(self, atoms, y, formula, generator):
        import torch

        from .chem.decoding import random_formula_molecule

        rng = random.Random(int(torch.randint(0, 2 ** 62, (1,), generator=generator, device=generator.device)))
        mols = [m for m in (random_formula_molecule(formula, rng) for _ in range(self.n_samples)) if m is not None]
        return mols, mols, ["random"] * len(mols)


def _in_processes(function, parts: list, *args, workers: int, done) -> None:
    """``function(part, *args)`` for every part in ``workers`` spawned processes; ``done(i, result)`` is
    called for part ``i`` as it finishes (in the order they finish)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(function, part, *args): i for i, part in enumerate(parts)}
        for future in as_completed(futures):
            done(futures[future], future.result())


def _metrics_part(pairs: list, time_limit: float | None, diffms_mces: bool, diffms_variant: bool,
                  known: list[dict]) -> tuple:
    """Worker process: metrics of ``(true_smiles, predictions)`` pairs with its own MCES caches, seeded with
    the distances ``known`` to the parent (one dict per cache); returns the distances it solved too."""
    mces = MCESCache(time_limit=time_limit)
    mces100 = MCESCache(threshold=DIFFMS_MCES_THRESHOLD, always_stronger_bound=False,
                        time_limit=time_limit) if diffms_mces else None
    caches = [c for c in (mces, mces100) if c is not None]
    for cache, distances in zip(caches, known):
        cache.add(distances)
    per = [_all_metrics(true, preds, mces, mces100, diffms_variant) for true, preds in pairs]
    return per, [(c.seconds, c.n_errors, c.n_computed, c.known()) for c in caches]


def _metrics_in_processes(pairs: list, workers: int, mces: MCESCache, mces100: MCESCache | None = None,
                          diffms_variant: bool = False, keep_solved=None) -> list:
    """Per-spectrum metrics (MCES is the slow part) from ``workers`` processes, in chunks of up to 8
    spectra (at least two per worker); each finished chunk's distances and counters go into the caches at
    once, and ``keep_solved()`` is called, so an interrupted run loses at most the chunks in progress."""
    chunk = max(1, min(8, len(pairs) // (2 * workers)))
    n = -(-len(pairs) // chunk)             # interleaved chunks: the hard (large) molecules are spread out
    caches = [c for c in (mces, mces100) if c is not None]
    per: list = [None] * len(pairs)

    def done(i, result):
        part, counters = result
        per[i::n] = part
        for cache, (seconds, errors, computed, distances) in zip(caches, counters):
            cache.seconds += seconds
            cache.n_errors += errors
            cache.n_computed += computed
            cache.add(distances)
        if keep_solved is not None:
            keep_solved()

    _in_processes(_metrics_part, [pairs[i::n] for i in range(n)], mces.solver_options.get("timeLimit"),
                  mces100 is not None, diffms_variant, [c.known() for c in caches],
                  workers=min(workers, n), done=done)
    return per


def _write_json(data: dict, path: Path) -> None:
    """Strict JSON (non-finite numbers as null), written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(plain_value(data, finite=True), indent=2, allow_nan=False) + "\n")


# ----------------------------------------------------------------------------------------------- command
def calibration_pairs(spectra) -> tuple[list[float], list[bool]]:
    """``(raw_scores, correct)`` over every ranked candidate of annotated, labelled spectra.

    A candidate is correct when its first InChIKey block equals that of the spectrum's true SMILES.
    """

    raw, correct = [], []
    for spectrum in spectra:
        mol = parse_smiles(spectrum.get("smiles"))
        if mol is None:
            continue
        truth = inchikey14(mol)
        for cand in read_candidates(spectrum.get("diffms_candidates")):
            raw.append(float(cand.get("raw_score", cand.get("score", 0.0))))
            correct.append(_first_block(cand.get("inchikey")) == truth)
    return raw, correct


def check_calibration_input(path, spectra) -> None:
    """Raise ``ValueError`` unless ``path`` / ``spectra`` can be the validation fold (not train, not test).

    The file name is checked like the trainers do (``labelled.fold_from_name``), plus a ``train`` token;
    each spectrum's ``fold`` metadata, when present, must be a validation fold.
    """
    from .labelled import fold_from_name, name_tokens

    name_fold = fold_from_name(path)
    tokens = name_tokens(path)
    if name_fold in ("test", "holdout") or "train" in tokens or "training" in tokens:
        raise ValueError(f"refusing to calibrate on {path}: its name says it is the "
                         f"{name_fold or 'train'} fold; fit the calibration on the validation fold only")
    for spectrum in spectra:
        fold = str(spectrum.get("fold") or "").strip().lower()
        if fold and fold not in ("val", "valid", "validation"):
            raise ValueError(f"refusing to calibrate on {path}: spectrum "
                             f"{spectrum.get('spectrum_id') or spectrum.get('title')} belongs to the {fold} fold; "
                             "fit the calibration on the validation fold only")
