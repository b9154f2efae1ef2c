"""DiffMSAnnotator: matchms ``Spectrum`` in, annotated clone (``diffms_*`` metadata) out.

One spectrum flows through these steps::

    peaks check        no_peaks / invalid_peaks (NaN, inf, negative m/z or intensity)
    formula candidates plugins.formula_candidates(spectrum, context)  (metadata, precursor_formula, SIRIUS,
                       mass decomposition; up to ``max_formulas`` neutral formulas, as in DiffMS' formula
                       ablation)
    per formula        element / adduct / size checks against the model vocabulary
                       subformula annotation of the peaks (20 ppm)
                       tokens -> model.encode (one spectrum alone: no padding, batch-independent)
                       model.sample(heavy atoms, y, n_samples, steps, seeded generator): bond matrices
                       and the last step's clean-graph probabilities
                       RDKit molecules; valid = sanitizes and one fragment
                       FORMULA-EXACT filter: the molecule's formula, implicit H included, must equal the
                       neutral formula (official DiffMS only fixes the heavy atoms, not the hydrogens)
                       CONSTRAINED DECODING (``complete=True``, default): every other sample is replaced by
                       the most probable formula-exact molecule under its probabilities
                       (chem.decoding.decode_formula_exact); ``complete=False`` drops it (DiffMS)
                       ranking.rank_candidates: unique 2D structures (first InChIKey block), scored
    merge              ranked lists of all formulas merged by calibrated score, top_k kept

What the generated structures can and cannot be: atoms are neutral, hydrogens implicit (RDKit default
valences), no stereochemistry. Structures that need a formal charge (nitro groups, quaternary N,
zwitterions) cannot be produced. The formula is the **neutral** molecule's formula (M, not the ion): the
adduct's charge and atoms are not part of the structure.

Determinism: the sampling generator of one spectrum is seeded from ``seed`` (drawn once per annotator when
``None``, and recorded in ``diffms_seed``), the spectrum's identity (:func:`matchms_diffms.metadata.spectrum_key`:
its id field plus a digest of its peaks and precursor m/z) and the formula. Results therefore do not depend
on the order or number of other spectra, on the file a spectrum comes from, or on which process handles it;
every command (annotate, evaluate, the adapters) relies on this one convention.

Metadata written on the clone: the ``diffms_*`` keys of :mod:`matchms_diffms.metadata` (plain Python types;
lists as JSON strings so that matchms' MGF, MSP and JSON writers keep them with their default
``export_style="matchms"``; read them back with :func:`matchms_diffms.metadata.read_annotation`). The other
export styles (``gnps``, ``massbank``, ``nist``, ``riken``) write only the keys of matchms' export key table
and drop every ``diffms_*`` key; :func:`matchms_diffms.export_styles.carry_top_candidate` copies the top
candidate into a key such a style keeps.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

from .metadata import METADATA_KEYS, STATUS_CODES, spectrum_key, spectrum_label
from .ranking import DEFAULT_RANKING, RANKINGS, Calibration, merge_ranked, rank_candidates

logger = logging.getLogger("matchms.diffms")

SUBFORMULA_PPM = 20.0


class Skip(Exception):
    """A spectrum or formula candidate that is not annotated, with a status code and text."""

    def __init__(self, code: str, text: str):
        assert code in STATUS_CODES, code
        super().__init__(f"{code}: {text}")
        self.code, self.text = code, text

    @property
    def status(self) -> str:
        return f"{self.code}: {self.text}"


@dataclass
class FormulaResult:
    """What one formula candidate produced (internal)."""

    candidate: object                    # formula_sources.FormulaCandidate
    status: str = "ok"
    ranked: list = field(default_factory=list)
    sampled: bool = False
    annotated_peaks: int = 0
    n_valid: int = 0
    n_formula_match: int = 0
    n_completed: int = 0


# ------------------------------------------------------------------------------------------- helpers
def derive_seed(seed: int, *parts) -> int:
    """A 63-bit seed from a base seed and any strings (stable across processes and platforms)."""
    text = "|".join([str(int(seed))] + [str(p) for p in parts])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2 ** 63 - 1)


def check_peaks(spectrum) -> None:
    """Raise :class:`Skip` for spectra without peaks or with NaN / inf / negative values."""
    mz = np.asarray(spectrum.peaks.mz, dtype=np.float64)
    inten = np.asarray(spectrum.peaks.intensities, dtype=np.float64)
    if mz.size == 0:
        raise Skip("no_peaks", "the spectrum has no peaks")
    for name, arr in (("m/z", mz), ("intensity", inten)):
        if not np.all(np.isfinite(arr)):
            raise Skip("invalid_peaks", f"{int(np.sum(~np.isfinite(arr)))} peak(s) with non-finite {name}")
        if np.any(arr < 0):
            raise Skip("invalid_peaks", f"{int(np.sum(arr < 0))} peak(s) with negative {name}")
    if not np.any(inten > 0):
        raise Skip("no_peaks", "all peak intensities are zero")


def impossible_formula(formula) -> str | None:
    """Why no neutral, closed-shell molecule (RDKit valences, implicit hydrogens) can have ``formula``, or None.

    Two exact conditions for the structures the decoder can produce: (1) the number of atoms of odd valence
    (H, N, P, halogens) must be even, else the molecule would be a radical; (2) hydrogens cannot exceed what a
    tree of the heavy atoms at their largest RDKit valence leaves free (sum of valences - 2 (n - 1)).
    """
    from rdkit import Chem

    table = Chem.GetPeriodicTable()
    heavy = {el: n for el, n in formula.counts.items() if el != "H" and n}
    n_heavy = sum(heavy.values())
    if n_heavy == 0:
        return None
    max_valence = {el: max(table.GetValenceList(el)) for el in heavy}
    odd = formula["H"] + sum(n for el, n in heavy.items() if table.GetDefaultValence(el) % 2)
    if odd % 2:
        return (f"{formula.hill()} is impossible for a neutral molecule: an odd number of electrons (a radical; "
                "is it the ion formula?)")
    max_h = sum(max_valence[el] * n for el, n in heavy.items()) - 2 * (n_heavy - 1)
    if formula["H"] > max_h:
        return (f"{formula.hill()} is impossible: at most {max_h} hydrogens fit on {n_heavy} heavy atoms "
                f"({formula['H']} given)")
    return None


# ------------------------------------------------------------------------------------------ annotator
class DiffMSAnnotator:
    """De novo structure annotation of matchms spectra with a DiffMS model.

    Parameters
    ----------
    model
        A ``matchms_diffms.model.diffms.DiffMS`` in eval mode.
    info
        Weights info from ``weights.load_model`` (``name``, ``sha256``, ``path``).
    n_samples
        Diffusion samples per formula candidate (DiffMS default 100).
    steps
        Reverse diffusion steps (``None``: the model's ``diffusion_steps``, 500 for DiffMS).
    top_k
        Candidates kept per spectrum.
    seed
        Base seed; ``None`` draws one (recorded in ``diffms_seed``).
    max_formulas
        Formula candidates tried per spectrum; their ranked lists are merged by score.
    formula_context
        Extra run-wide information for the formula providers (e.g. ``{"sirius_formulas": {...}}``).
    calibration
        Score calibration (default: ``calibration.json`` beside the weights, else identity).
    subformula_ppm
        Tolerance of the subformula assignment of peaks (20 ppm, as DiffMS's data preparation).
    complete
        Replace every sample that is not a valid formula-exact molecule by the most probable formula-exact
        molecule under the denoiser's last-step probabilities of that sample (constrained decoding,
        ``chem.decoding.decode_formula_exact``; counted in ``diffms_n_completed``, marked ``decoded`` in the
        candidates). ``False`` keeps only samples that are formula-exact as sampled (the official DiffMS
        behaviour plus the formula filter).
    ranking
        ``combined`` (default: frequency and fingerprint agreement), ``frequency`` (DiffMS) or
        ``fingerprint``; see :func:`matchms_diffms.ranking.rank_candidates`.
    max_heavy_atoms
        Largest formula (heavy atoms) annotated. Default: the largest the weights were trained on
        (``config.max_n_nodes``); it may be raised up to ``config.heavy_atom_limit`` (quality drops, sampling
        time grows with n squared).
    """

    def __init__(self, model, info: dict, *, n_samples: int = 100, steps: int | None = None, top_k: int = 10,
                 seed: int | None = None, max_formulas: int = 3,
                 formula_context: dict | None = None, calibration: Calibration | None = None,
                 subformula_ppm: float = SUBFORMULA_PPM, complete: bool = True, ranking: str = DEFAULT_RANKING,
                 max_heavy_atoms: int | None = None):
        if n_samples < 1 or top_k < 1 or max_formulas < 1:
            raise ValueError("n_samples, top_k and max_formulas must be >= 1")
        if steps is not None and not 1 <= steps <= model.config.diffusion_steps:
            raise ValueError(f"steps must lie in 1..{model.config.diffusion_steps}")
        self.model = model
        self.info = dict(info)
        self.config = model.config
        self.n_samples = int(n_samples)
        default_steps = model.config.default_sampling_steps or model.config.diffusion_steps
        self.steps = int(steps) if steps is not None else int(default_steps)
        self.top_k = int(top_k)
        self.seed = int(seed) if seed is not None else secrets.randbits(31)
        self.max_formulas = int(max_formulas)
        self.subformula_ppm = float(subformula_ppm)
        self.complete = bool(complete)
        if ranking not in RANKINGS:
            raise ValueError(f"unknown ranking {ranking!r}; choose one of {', '.join(RANKINGS)}")
        self.ranking = ranking
        trained = int(model.config.max_n_nodes)
        limit = int(model.config.heavy_atom_limit)
        self.max_heavy_atoms = min(trained, limit) if max_heavy_atoms is None else int(max_heavy_atoms)
        if not 2 <= self.max_heavy_atoms <= limit:
            raise ValueError(f"max_heavy_atoms must lie in 2..{limit} for these weights")
        self.formula_context = dict(formula_context or {})
        self.calibration = calibration if calibration is not None else Calibration.for_weights(info.get("path"))
        self.model_id = f"{self.info.get('name', 'unknown')}@{str(self.info.get('sha256', ''))[:12]}"

    @classmethod
    def from_pretrained(cls, name_or_path: str = "default", *, config_overrides: dict | None = None,
                        **options) -> "DiffMSAnnotator":
        """Load weights by name or path (once per process, see ``weights.load_model``) and build an annotator.

        ``options`` are the constructor's keyword arguments (``n_samples``, ``steps``, ``top_k``, ``seed``,
        ``max_formulas``, ``formula_context``, ``calibration``, ``complete``).
        """
        from .weights import load_model

        model, info = load_model(str(name_or_path), config_overrides)
        return cls(model, info, **options)

    @property
    def device(self) -> torch.device:
        """Where the model runs and samples are drawn (move it with ``annotator.model.to(device)``); the CPU for
        models without parameters (duck-typed test and baseline models)."""
        import torch

        parameters = getattr(self.model, "parameters", None)
        first = next(iter(parameters()), None) if callable(parameters) else None
        return first.device if first is not None else torch.device("cpu")

    # ----------------------------------------------------------------------------------- public API
    def __call__(self, spectrum):
        return self.annotate(spectrum)

    def annotate(self, spectrum):
        """Annotate one spectrum; returns a clone with ``diffms_*`` metadata (the input is not modified).

        ``None`` gives ``None``. Problems with the spectrum give a status, never an exception.
        """
        if spectrum is None:
            return None
        start = time.perf_counter()
        out = spectrum.clone()
        metadata = out.metadata                   # a copy; drop stale results of an earlier run
        if any(key in metadata for key in METADATA_KEYS):
            for key in METADATA_KEYS:
                metadata.pop(key, None)
            out.metadata = metadata
        self._set_run_metadata(out)
        try:
            self._annotate_into(out, spectrum_key(spectrum))
        except Skip as skip:
            out.set("diffms_status", skip.status)
            logger.info("DiffMS skipped spectrum %s: %s", spectrum_label(spectrum), skip.status)
        except Exception as err:   # noqa: BLE001 -- one bad spectrum must not stop a run; logged below
            out.set("diffms_status", f"error: {type(err).__name__}: {err}")
            logger.error("DiffMS failed on spectrum %s: %s: %s", spectrum_label(spectrum),
                         type(err).__name__, err, exc_info=logger.isEnabledFor(logging.DEBUG))
        out.set("diffms_seconds", round(time.perf_counter() - start, 3))
        return out

    def annotate_many(self, spectra: Iterable) -> Iterator:
        """Annotate spectra one after the other (lazily); yields annotated clones in input order (``None``
        entries give ``None``). For resumable, crash-tolerant runs in several processes see
        :func:`matchms_diffms.batch.annotate_spectra`."""
        for spectrum in spectra:
            yield self.annotate(spectrum)

    # -------------------------------------------------------------------------------------- steps
    def _set_run_metadata(self, out) -> None:
        out.set("diffms_status", "error: not finished")
        out.set("diffms_candidates", "[]")
        out.set("diffms_model", self.model_id)
        out.set("diffms_n_samples", self.n_samples)
        out.set("diffms_steps", self.steps)
        out.set("diffms_seed", self.seed)
        out.set("diffms_n_valid", 0)
        out.set("diffms_n_formula_match", 0)
        out.set("diffms_n_completed", 0)

    def _formula_candidates(self, spectrum) -> list:
        from .chem.adducts import UnsupportedAdductError
        from .chem.formula import FormulaError
        from .plugins import formula_candidates

        context = {"max_formulas": self.max_formulas, **self.formula_context}
        try:
            cands = formula_candidates(spectrum, context) or []
        except UnsupportedAdductError as err:
            raise Skip("unsupported_adduct", str(err)) from None
        except FormulaError as err:
            raise Skip("invalid_formula", str(err)) from None
        if not cands:
            raise Skip("no_formula", "no molecular formula in the metadata and no formula provider proposed "
                                     "one (give 'formula', or SIRIUS results, or a precursor m/z)")
        return list(cands)[: self.max_formulas]

    def _annotate_into(self, out, key: str) -> None:
        check_peaks(out)
        cands = self._formula_candidates(out)
        results = [self._run_formula(out, cand, key) for cand in cands]
        lists = [r.ranked for r in results if r.ranked]
        merged = merge_ranked(lists, self.top_k)
        out.set("diffms_n_valid", sum(r.n_valid for r in results))
        out.set("diffms_n_formula_match", sum(r.n_formula_match for r in results))
        out.set("diffms_n_completed", sum(r.n_completed for r in results))
        if merged:
            top = merged[0]
            chosen = next(r for r in results if r.ranked and top in r.ranked)
        else:
            chosen = next((r for r in results if r.sampled), results[0])
        self._set_formula_metadata(out, chosen.candidate)
        if merged:
            out.set("diffms_smiles", top.smiles)
            out.set("diffms_inchikey", top.inchikey)
            out.set("diffms_score", float(round(top.score, 6)))
            out.set("diffms_candidates", json.dumps([c.to_dict() for c in merged]))
        out.set("diffms_status", chosen.status)
        for r in results:
            logger.debug("formula %s (%s): %s", r.candidate.formula.hill(), r.candidate.source, r.status)

    @staticmethod
    def _set_formula_metadata(out, cand) -> None:
        out.set("diffms_formula", cand.formula.hill())
        out.set("diffms_formula_source", str(cand.source))
        out.set("diffms_adduct", cand.adduct.name)
        out.set("diffms_adduct_assumed", bool(cand.adduct_assumed))

    def _run_formula(self, spectrum, cand, key: str) -> FormulaResult:
        import torch

        result = FormulaResult(cand)
        try:
            atoms = self._check_formula(cand)
            annotation = self._annotate_peaks(spectrum, cand)
            table = annotation.get("output_tbl")
            result.annotated_peaks = len(table["formula"]) if table else 0
            fp, y = self._encode(annotation)
            seed = derive_seed(self.seed, key, cand.formula.hill(), cand.adduct.name)
            gen = torch.Generator(device=self.device).manual_seed(seed)
            valid, matching, sources = self._generate(atoms, y[0], cand.formula, gen)
            result.sampled = True
            result.n_completed = sources.count("decoded")
            result.n_valid, result.n_formula_match = len(valid), len(matching) - result.n_completed
            if not matching:
                how = ("and constrained decoding found none either" if self.complete
                       else "(constrained decoding is off)")
                raise Skip("no_valid_candidates",
                           f"{len(valid)} of {self.n_samples} samples valid, none with formula "
                           f"{cand.formula.hill()}, {how}")
            result.ranked = rank_candidates(matching, fp[0], cand.formula, top_k=self.top_k,
                                            calibration=self.calibration, n_valid=len(matching),
                                            ranking=self.ranking, sources=sources)
            if result.annotated_peaks == 0:
                result.status = (f"no_annotated_peaks: no peak matched a subformula of {cand.formula.hill()} "
                                 f"within {self.subformula_ppm:g} ppm; only the precursor formula was encoded")
        except Skip as skip:
            result.status = skip.status
        return result

    def _check_formula(self, cand) -> list[str]:
        """Heavy-atom symbols for the decoder, or :class:`Skip` if the model cannot handle the formula."""
        cfg = self.config
        formula = cand.formula
        if not any(formula.counts.values()):
            raise Skip("invalid_formula", f"the formula of source {cand.source} has no atoms")
        note = getattr(cand, "note", None)
        if note:
            code = note if note in STATUS_CODES else "invalid_formula"
            raise Skip(code, getattr(cand, "message", None) or f"{formula.hill()} was rejected ({note})")
        vocab = [a for a in cfg.atom_types if a != "H"]
        bad = sorted(el for el in formula.counts if el != "H" and el not in vocab)
        if bad:
            raise Skip("unsupported_element", f"{', '.join(bad)} of {formula.hill()} not in the model's atom "
                                              f"types ({', '.join(vocab)})")
        self._adduct_slot(cand.adduct)
        n = formula.n_heavy
        if n < 2:
            raise Skip("too_few_atoms", f"{formula.hill()} has {n} heavy atom(s); at least 2 are needed")
        if n > self.max_heavy_atoms:
            raise Skip("too_many_atoms", f"{formula.hill()} has {n} heavy atoms; the limit is {self.max_heavy_atoms} "
                                         f"(the weights were trained on at most {cfg.max_n_nodes}; "
                                         f"max_heavy_atoms / --max-heavy-atoms raises it up to "
                                         f"{cfg.heavy_atom_limit})")
        from .model.tokens import MAX_COUNT

        big = {el: n for el, n in formula.counts.items() if n > MAX_COUNT}
        if big:
            raise Skip("too_many_atoms", f"{formula.hill()}: the encoder embeds element counts up to {MAX_COUNT}, "
                                         f"got {', '.join(f'{el} {n}' for el, n in sorted(big.items()))}")
        impossible = impossible_formula(formula)
        if impossible:
            raise Skip("invalid_formula", impossible)
        return formula.heavy_atoms(vocab)

    def _adduct_slot(self, adduct) -> str:
        from .chem.adducts import UnsupportedAdductError, official_name
        from .model.tokens import adduct_index

        try:
            name = official_name(adduct)
            adduct_index(name, self.config.adducts)
        except (UnsupportedAdductError, ValueError):
            known = ", ".join(a for a in self.config.adducts if a)
            raise Skip("unsupported_adduct", f"{getattr(adduct, 'name', adduct)} has no encoder slot in this "
                                             f"model (known: {known})") from None
        return name

    def _annotate_peaks(self, spectrum, cand) -> dict:
        from .chem.adducts import precursor_mz
        from .chem.subformulae import DEFAULT_MAX_CANDIDATES, assign_subformulae, count_candidates

        parent = spectrum.get("precursor_mz")
        try:
            parent = float(parent)
        except (TypeError, ValueError):
            parent = math.nan
        if not math.isfinite(parent) or parent <= 0:
            parent = precursor_mz(cand.formula, cand.adduct)
        name = self._adduct_slot(cand.adduct)
        n_cand = count_candidates(cand.formula)
        if n_cand > DEFAULT_MAX_CANDIDATES:
            raise Skip("too_many_atoms", f"the subformula search of {cand.formula.hill()} would enumerate "
                                         f"{n_cand:,} candidates, more than its limit of {DEFAULT_MAX_CANDIDATES:,}")
        return assign_subformulae(spectrum.peaks.mz, spectrum.peaks.intensities, cand.formula, name, parent,
                                  ppm_tol=self.subformula_ppm)

    def _encode(self, annotation: dict):
        import torch

        from .model.tokens import collate, tokens_from_annotation

        tokens = collate([tokens_from_annotation(annotation, self.config.adducts)])   # one spectrum, no padding
        with torch.inference_mode():
            fp, y = self.model.encode(tokens)                                          # (1, fp bits), (1, cond)
        return fp, y

    def _generate(self, atoms: list[str], y, formula, generator):
        """Candidate molecules of one formula: ``(valid, formula_exact, sources)``.

        ``valid``: samples that are valid molecules as drawn; ``formula_exact``: the molecules ranked (valid
        samples with exactly the formula, plus constrained decodings of the other samples when ``complete``);
        ``sources[i]``: ``"sampled"`` or ``"decoded"`` for ``formula_exact[i]``.
        """
        adj, probs = self.model.sample(atoms, y, n_samples=self.n_samples, steps=self.steps, generator=generator,
                                       return_probs=True, hydrogens=formula["H"])
        return self._molecules(atoms, adj, probs, formula)

    def _molecules(self, atoms: list[str], adj: np.ndarray, probs: np.ndarray | None, formula):
        """Valid molecules of the samples (sanitize, one fragment, net charge 0), the formula-exact ones
        (hydrogens included) with constrained decodings of the others, and the source of each."""
        from rdkit import Chem

        from .chem.decoding import decode_formula_exact
        from .chem.molecules import check_molecule, graph_to_mol, matches_formula

        valid, matching, sources = [], [], []
        for k, sample in enumerate(adj):                     # (n, n) bond classes
            res = check_molecule(graph_to_mol(atoms, sample))
            ok = res.is_valid and res.num_fragments == 1 and Chem.GetFormalCharge(res.mol) == 0
            if ok:
                valid.append(res.mol)
                if matches_formula(res.mol, formula):
                    matching.append(res.mol)
                    sources.append("sampled")
                    continue
            if self.complete:
                mol = decode_formula_exact(atoms, formula, None if probs is None else probs[k], adj=sample)
                if mol is not None:
                    matching.append(mol)
                    sources.append("decoded")
        return valid, matching, sources


__all__ = ["DiffMSAnnotator", "derive_seed", "Skip", "impossible_formula"]
