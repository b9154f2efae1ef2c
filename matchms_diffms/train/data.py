"""Training data: the fold guard, the vocabulary filter and the subformula-annotation cache.

The labelled-spectra readers live in :mod:`matchms_diffms.labelled` (evaluation uses them too).

Fold guard: a training set must never contain validation or test spectra. :func:`load_training_set` and
:func:`load_fold` refuse (:class:`FoldLeakageError`) files named like a val/test fold and records whose fold is
val/test, unless the purpose is explicitly evaluation.

:func:`filter_for_model` drops records a model vocabulary cannot represent and logs the counts;
:class:`AnnotationCache` stores subformula annotations on disk, keyed by a hash of their inputs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..files import atomic_write
from ..labelled import EVAL_FOLDS, LabelledSpectrum, fold_from_name, normalise_fold, read_labelled, read_mgf

logger = logging.getLogger("matchms.diffms")

_PURPOSES = ("train", "validation", "evaluation")


class FoldLeakageError(ValueError):
    """Validation/test data would end up in a training set."""


# ------------------------------------------------------------------------------------------------ fold guard
def _allowed_folds(purpose: str) -> set[str] | None:
    if purpose not in _PURPOSES:
        raise ValueError(f"purpose must be one of {_PURPOSES}, got {purpose!r}")
    return {"train": {"train"}, "validation": {"train", "val"}, "evaluation": None}[purpose]


def check_source(path, purpose: str = "train") -> None:
    """Raise :class:`FoldLeakageError` if the name of ``path`` announces a fold ``purpose`` may not use."""
    allowed = _allowed_folds(purpose)
    fold = fold_from_name(path)
    if allowed is not None and fold is not None and fold not in allowed:
        raise FoldLeakageError(f"refusing to use {path} for {purpose}: its name says it is the {fold} fold "
                               f"(pass purpose='evaluation' to read it for evaluation)")


def guard_records(records: Iterable[LabelledSpectrum], purpose: str = "train",
                  source=None) -> Iterator[LabelledSpectrum]:
    """Pass records through, raising :class:`FoldLeakageError` at the first one whose fold ``purpose`` may not
    use (train: only ``train`` or no fold; validation: also ``val``; evaluation: anything)."""
    allowed = _allowed_folds(purpose)
    for record in records:
        if allowed is not None and record.fold in EVAL_FOLDS and record.fold not in allowed:
            raise FoldLeakageError(f"refusing to use spectrum {record.id} of {source or 'the input'} for "
                                   f"{purpose}: it belongs to the {record.fold} fold")
        yield record


def load_training_set(path, *, fold: str | None = "train", split_file=None, purpose: str = "train",
                      backend: str = "plain") -> list[LabelledSpectrum]:
    """Read labelled spectra for training (or validation) with the fold guard.

    Parameters
    ----------
    path
        MGF, MassSpecGym TSV or MIST folder.
    fold
        Keep only records of this fold; records without a fold are kept (the file name is checked instead).
        ``None`` keeps every record (the guard then refuses val/test records for ``purpose="train"``).
    split_file
        MIST split table.
    purpose
        ``"train"`` (default), ``"validation"`` (val fold allowed) or ``"evaluation"`` (no guard).

    Raises
    ------
    FoldLeakageError
        The file name announces a val/test fold, or a kept record carries one, that ``purpose`` may not use.
    """
    check_source(path, purpose)
    fold = normalise_fold(fold)
    records = read_labelled(path, split_file=split_file, backend=backend)
    if fold is not None:
        records = (r for r in records if r.fold is None or r.fold == fold)
    out = list(guard_records(records, purpose, source=path))
    logger.info("read %d labelled spectra from %s (fold %s, purpose %s)", len(out), path, fold, purpose)
    return out


def load_fold(data_dir, fold: str, *, purpose: str = "train", backend: str = "plain") -> list[LabelledSpectrum]:
    """Spectra of one fold of the MassBank data (``<data_dir>/massbank/<fold>.mgf`` or ``<data_dir>/<fold>.mgf``).

    ``purpose="train"`` allows only ``train`` (and ``mini``); ``"validation"`` also ``val``; ``"evaluation"``
    everything. Raises :class:`FoldLeakageError` otherwise, and if a record's ``FOLD`` disagrees.
    """
    fold = normalise_fold(fold)
    allowed = _allowed_folds(purpose)
    if allowed is not None and fold in EVAL_FOLDS and fold not in allowed:
        raise FoldLeakageError(f"refusing to load the {fold} fold for {purpose}")
    data_dir = Path(data_dir)
    candidates = [data_dir / "massbank" / f"{fold}.mgf", data_dir / f"{fold}.mgf"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise FileNotFoundError(f"no {fold}.mgf under {data_dir} (looked at {', '.join(map(str, candidates))})")
    expected = "train" if fold == "mini" else fold
    records = list(guard_records(read_mgf(path, backend=backend), purpose, source=path))
    wrong = [r.id for r in records if r.fold is not None and r.fold != expected]
    if wrong:
        raise FoldLeakageError(f"{path}: {len(wrong)} records carry a fold other than {expected} "
                               f"(first: {wrong[0]})")
    logger.info("loaded %d spectra of the %s fold from %s", len(records), fold, path)
    return records


# ------------------------------------------------------------------------------------------------ vocabulary
@dataclass
class VocabularyFilter:
    """What a model can represent: decoder atom types, encoder adduct slots, maximum heavy atoms."""

    atom_types: list[str]
    adducts: list[str]
    max_n_nodes: int
    min_n_nodes: int = 1

    @classmethod
    def from_config(cls, config) -> "VocabularyFilter":
        """From a :class:`matchms_diffms.model.config.DiffMSConfig`."""
        return cls(list(config.atom_types), list(config.adducts), int(config.max_n_nodes))

    def adduct_names(self) -> set[str]:
        from ..chem.adducts import UnsupportedAdductError, parse_adduct

        names = set()
        for slot in self.adducts:
            if not slot:
                continue
            try:
                names.add(parse_adduct(slot).name)
            except UnsupportedAdductError:
                names.add(slot)
        return names


def _molecule_check(smiles: str | None, formula: str | None, vocab: VocabularyFilter) -> tuple[str | None, str]:
    """``(reason or None, neutral formula)`` for one structure."""
    from rdkit import Chem, rdBase
    from rdkit.Chem import rdMolDescriptors

    from ..chem.formula import Formula, FormulaError

    if not smiles:
        return "no_smiles", ""
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumAtoms() == 0:
        return "invalid_smiles", ""
    if len(Chem.GetMolFrags(mol)) != 1:
        return "multiple_fragments", ""
    if any(a.GetFormalCharge() != 0 for a in mol.GetAtoms()):
        return "charged_atom", ""
    symbols = {a.GetSymbol() for a in mol.GetAtoms()}
    outside = sorted(symbols - set(vocab.atom_types) - {"H"})
    if outside:
        return "unsupported_element", ""
    n_heavy = mol.GetNumHeavyAtoms()
    if n_heavy > vocab.max_n_nodes:
        return "too_many_atoms", ""
    if n_heavy < vocab.min_n_nodes:
        return "too_few_atoms", ""
    mol_formula = Formula.parse(rdMolDescriptors.CalcMolFormula(mol))
    if formula:
        try:
            if Formula.parse(formula) != mol_formula:
                return "formula_mismatch", ""
        except FormulaError:
            return "invalid_formula", ""
    return None, mol_formula.hill()


def filter_for_model(records: Iterable[LabelledSpectrum], vocab) -> tuple[list[LabelledSpectrum], Counter]:
    """Keep the records a model can be trained on; log and return the drop counts.

    Dropped (reason codes): ``no_smiles``, ``invalid_smiles``, ``multiple_fragments``, ``charged_atom``
    (any atom with a formal charge), ``unsupported_element`` (heavy element outside ``atom_types``),
    ``too_many_atoms`` (> ``max_n_nodes`` heavy atoms), ``too_few_atoms``, ``formula_mismatch`` /
    ``invalid_formula`` (metadata formula differs from the SMILES' formula / does not parse),
    ``no_adduct`` / ``unsupported_adduct`` (no encoder slot for the adduct, aliases such as ``[M+NH4]+`` =
    ``[M+H3N+H]+`` resolved). Records without a formula get the SMILES' formula (Hill order).

    Parameters
    ----------
    records
        Labelled spectra.
    vocab
        A :class:`VocabularyFilter` or a ``DiffMSConfig``.

    Returns
    -------
    (list of LabelledSpectrum, collections.Counter)
        Kept records and ``{reason: count}`` of the dropped ones.
    """
    from ..chem.adducts import UnsupportedAdductError, parse_adduct

    if not isinstance(vocab, VocabularyFilter):
        vocab = VocabularyFilter.from_config(vocab)
    slots = vocab.adduct_names()
    molecule_cache: dict[tuple, tuple] = {}
    adduct_cache: dict[str, str | None] = {}
    kept: list[LabelledSpectrum] = []
    dropped: Counter = Counter()
    total = 0
    for record in records:
        total += 1
        key = (record.smiles, record.formula)
        if key not in molecule_cache:
            molecule_cache[key] = _molecule_check(record.smiles, record.formula, vocab)
        reason, formula = molecule_cache[key]
        if reason is None:
            if not record.adduct:
                reason = "no_adduct"
            else:
                if record.adduct not in adduct_cache:
                    try:
                        name = parse_adduct(record.adduct).name
                        adduct_cache[record.adduct] = None if name in slots else "unsupported_adduct"
                    except UnsupportedAdductError:
                        adduct_cache[record.adduct] = "unsupported_adduct"
                reason = adduct_cache[record.adduct]
        if reason is not None:
            dropped[reason] += 1
            continue
        if not record.formula:
            record = dataclasses.replace(record, formula=formula)
        kept.append(record)
    logger.info("vocabulary filter: kept %d of %d spectra; dropped %s", len(kept), total,
                ", ".join(f"{k} {v}" for k, v in dropped.most_common()) or "none")
    return kept, dropped


# ------------------------------------------------------------------------------------------------ cache
class AnnotationCache:
    """Subformula annotations (``chem.subformulae.assign_subformulae`` records) cached as JSON files.

    The key is the sha256 of the peaks (float64 bytes of m/z and intensity), the formula, the adduct, the
    parent m/z, the ppm tolerance and a ``version`` string (bump it when the assignment code changes). Files go
    to ``<directory>/<key[:2]>/<key>.json`` and are written atomically, so parallel workers may share a cache.

    Parameters
    ----------
    directory
        Cache folder (created).
    ppm_tol
        Tolerance passed to ``assign_subformulae``.
    version
        Part of every key.
    """

    VERSION = "subformulae-v1"

    def __init__(self, directory, ppm_tol: float = 20.0, version: str = VERSION):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ppm_tol = float(ppm_tol)
        self.version = version
        self.hits = 0
        self.misses = 0

    def key(self, mz, intensity, formula: str, adduct: str, parent_mz: float | None) -> str:
        """Hex sha256 of the annotation inputs."""
        h = hashlib.sha256()
        h.update(self.version.encode())
        h.update(np.ascontiguousarray(mz, dtype="<f8").tobytes())
        h.update(b"|")
        h.update(np.ascontiguousarray(intensity, dtype="<f8").tobytes())
        parent = "none" if parent_mz is None else repr(float(parent_mz))
        h.update(f"|{formula}|{adduct}|{parent}|{self.ppm_tol!r}".encode())
        return h.hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, record: LabelledSpectrum) -> dict:
        """The annotation of ``record`` (computed and stored on a miss).

        Raises whatever ``assign_subformulae`` raises (unsupported adduct, invalid peaks, ...); failures are not
        cached.
        """
        if not record.formula or not record.adduct:
            raise ValueError(f"spectrum {record.id}: formula and adduct are needed for the subformula annotation")
        key = self.key(record.mz, record.intensity, record.formula, record.adduct, record.precursor_mz)
        path = self._path(key)
        if path.is_file():
            self.hits += 1
            with open(path, encoding="utf-8") as fh:
                return json.load(fh)
        from ..chem.subformulae import assign_subformulae

        annotation = assign_subformulae(record.mz, record.intensity, record.formula, record.adduct,
                                        record.precursor_mz, ppm_tol=self.ppm_tol)
        self.misses += 1
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(annotation)
        atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        return annotation

    def __contains__(self, record: LabelledSpectrum) -> bool:
        key = self.key(record.mz, record.intensity, record.formula, record.adduct, record.precursor_mz)
        return self._path(key).is_file()

    def annotate_all(self, records: Iterable[LabelledSpectrum]) -> Iterator[tuple[LabelledSpectrum, dict]]:
        """``(record, annotation)`` for every record; logs hit/miss counts at the end."""
        for record in records:
            yield record, self.get(record)
        logger.info("annotation cache %s: %d hits, %d computed", self.directory, self.hits, self.misses)
