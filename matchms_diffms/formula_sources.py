"""Built-in formula providers: where the neutral molecular formula of a spectrum comes from.

DiffMS needs the neutral formula of the precursor (its heavy atoms are the nodes of the generated graph). The
built-in providers below answer the first-result hook ``diffms_formula_candidates``
(:mod:`matchms_diffms.hookspecs`) as two plugins: ``given`` (``tryfirst``: providers 1-3 in this order) and
``mass_decomposition`` (``trylast``: provider 4), so a third-party provider sits between them. The first
answer wins:

1. ``metadata``: the spectrum's ``formula`` (also ``molecular_formula``) with its ``adduct``;
2. ``precursor_formula``: the ion formula (``precursor_formula`` / ``ion_formula``) minus the adduct;
3. ``sirius``: SIRIUS formula identifications passed in ``context["sirius_formulas"]``;
4. ``mass_decomposition``: formulas enumerated from the precursor m/z (CHNOPS by default) and filtered with
   the Seven Golden Rules of Kind & Fiehn (2007) (:func:`matchms_diffms.chem.decomposition.decompose_mass`).

Adduct: the ``adduct`` metadata; without it, the default adduct of the ion mode (``[M+H]+`` for positive
mode, ``[M-H]-`` for negative mode; the sign of ``charge`` decides when ``ionmode`` is missing, positive
when both are missing) with ``adduct_assumed=True``.

Mass check: a formula given in the metadata (providers 1-3) is compared with ``precursor_mz`` when present.
A difference larger than max(10 ppm, 0.005 Da) gives the candidate ``note="formula_mismatch"`` and an
explanation in ``message`` (e.g. "looks like the ion formula"): the annotator reports it and does not use it.
Nothing is guessed in that case.

Errors: an unparsable metadata formula raises ``FormulaError``, an unknown adduct ``UnsupportedAdductError``
(the annotator turns them into the statuses ``invalid_formula`` / ``unsupported_adduct``) instead of silently
falling back to a guessed formula.

Context keys read here (all optional): ``max_formulas`` (3), ``sirius_formulas``
(``{spectrum_id: [(formula, adduct, score), ...]}``), ``decomposition_ppm`` (5.0), ``decomposition_min_da``
(0.002), ``decomposition_elements`` ("CHNOPS"; any subset of C H N O P S F Cl Br I, as a string or list;
C and H are always included), ``element_bounds`` (``{"N": (0, 10), ...}`` inclusive count ranges).
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

from .chem.adducts import (ELECTRON_MASS, SUPPORTED_ADDUCTS, Adduct, UnsupportedAdductError, default_adduct,
                           parse_adduct, precursor_mz)
from .chem.decomposition import decompose_mass
from .chem.formula import Formula, FormulaError
from .hookspecs import hookimpl
from .metadata import spectrum_id, text_value

logger = logging.getLogger("matchms.diffms")

__all__ = [
    "FormulaCandidate",
    "SOURCES",
    "MISMATCH",
    "spectrum_adduct",
    "mismatch_tolerance",
    "check_against_precursor",
    "metadata_candidates",
    "precursor_formula_candidates",
    "sirius_candidates",
    "mass_decomposition_candidates",
    "given_formula_candidates",
    "BUILTIN_PROVIDERS",
]

SOURCES = ("metadata", "precursor_formula", "sirius", "mass_decomposition")
MISMATCH = "formula_mismatch"
MISMATCH_PPM = 10.0
MISMATCH_MIN_DA = 0.005


@dataclass(frozen=True)
class FormulaCandidate:
    """A neutral molecular formula proposed for a spectrum.

    Attributes
    ----------
    formula
        Neutral formula of the molecule M.
    adduct
        Precursor adduct.
    source
        One of ``"metadata"``, ``"precursor_formula"``, ``"sirius"``, ``"mass_decomposition"`` (plugins may
        use their own names).
    adduct_assumed
        True when the adduct was not in the metadata but derived from the ion mode.
    score
        Provider-specific score (SIRIUS score; a relative plausibility in (0, 1] for mass decomposition);
        ``None`` for a formula taken from the metadata.
    note
        ``None``, or a status reason code, so far only ``"formula_mismatch"``: the formula does not fit the
        precursor m/z; the annotator must report it instead of using the formula.
    message
        Human-readable explanation of ``note``.
    mass_error_ppm
        (m/z computed from formula + adduct - precursor_mz) / precursor_mz * 1e6; ``None`` without precursor_mz.
    """

    formula: Formula
    adduct: Adduct
    source: str
    adduct_assumed: bool = False
    score: float | None = None
    note: str | None = None
    message: str | None = None
    mass_error_ppm: float | None = None


# ------------------------------------------------------------------------------------------ metadata helpers
def _precursor_mz(spectrum) -> float | None:
    value = spectrum.get("precursor_mz")
    try:
        mz = float(value)
    except (TypeError, ValueError):
        return None
    return mz if math.isfinite(mz) and mz > 0 else None


def _ionmode(spectrum) -> str:
    """"positive" or "negative" from ionmode, else from the sign of charge, else positive."""
    mode = (text_value(spectrum.get("ionmode")) or "").lower()
    if mode in ("positive", "negative"):
        return mode
    try:
        charge = int(spectrum.get("charge"))
    except (TypeError, ValueError):
        charge = 0
    return "negative" if charge < 0 else "positive"


def spectrum_adduct(spectrum) -> tuple[Adduct, bool]:
    """The precursor adduct of a spectrum.

    Returns
    -------
    (Adduct, bool)
        The adduct and whether it was assumed from the ion mode.

    Raises
    ------
    UnsupportedAdductError
        The ``adduct`` metadata cannot be parsed or is not supported.
    """
    text = text_value(spectrum.get("adduct"))
    if text is not None:
        return parse_adduct(text), False
    return default_adduct(_ionmode(spectrum)), True


def mismatch_tolerance(mz: float) -> float:
    """Largest accepted |m/z(formula, adduct) - precursor_mz| in Da: max(10 ppm, 0.005 Da)."""
    return max(MISMATCH_PPM * 1e-6 * mz, MISMATCH_MIN_DA)


def _charge_stripped(text: str) -> tuple[str, bool]:
    """Remove ion notation (``[C6H13O6]+``, ``C6H13O6+``); returns (formula text, had_charge)."""
    s = "".join(text.split())
    m = re.fullmatch(r"\[(.+)\](\d*[+-]+\d*)?", s)
    if m:
        return m.group(1), bool(m.group(2))
    m = re.fullmatch(r"(.*[A-Za-z0-9)])([+-]+\d*)", s)   # greedy: in "C8H11N4O2+" the 2 belongs to O
    if m:
        return m.group(1), True
    return s, False


def check_against_precursor(formula: Formula, adduct: Adduct, spectrum_mz: float | None,
                            *, charged_notation: bool = False) -> tuple[str | None, str | None, float | None]:
    """Compare formula + adduct with the precursor m/z.

    Returns
    -------
    (note, message, mass_error_ppm)
        ``note`` is ``"formula_mismatch"`` when the difference exceeds :func:`mismatch_tolerance`, else None.
    """
    if spectrum_mz is None:
        if charged_notation:
            return MISMATCH, (f"formula {formula.hill()} is written with a charge: it looks like an ion formula; "
                              "give the neutral formula (or put the ion formula in precursor_formula)"), None
        return None, None, None
    expected = precursor_mz(formula, adduct)
    error_ppm = (expected - spectrum_mz) / spectrum_mz * 1e6
    if abs(expected - spectrum_mz) <= mismatch_tolerance(spectrum_mz) and not charged_notation:
        return None, None, error_ppm
    message = (f"{formula.hill()} with {adduct.name} gives m/z {expected:.5f}, precursor_mz is {spectrum_mz:.5f} "
               f"({error_ppm:+.1f} ppm)")
    as_ion = formula.monoisotopic_mass - adduct.charge * ELECTRON_MASS
    if abs(as_ion - spectrum_mz) <= mismatch_tolerance(spectrum_mz):
        message += ("; the formula fits the precursor m/z as an ion formula: give the neutral formula "
                    "(or put it in precursor_formula)")
    elif charged_notation:
        message += "; the formula is written with a charge (an ion formula?)"
    else:
        fits = [a.name for a in SUPPORTED_ADDUCTS.values()
                if a.charge == adduct.charge and a is not adduct and _fits(formula, a, spectrum_mz)]
        if fits:
            message += f"; it would fit {', '.join(fits)}"
    return MISMATCH, message, error_ppm


def _fits(formula: Formula, adduct: Adduct, mz: float) -> bool:
    try:
        return abs(precursor_mz(formula, adduct) - mz) <= mismatch_tolerance(mz)
    except FormulaError:
        return False


def _candidate(formula: Formula, adduct: Adduct, assumed: bool, source: str, spectrum, score=None,
               charged_notation=False) -> FormulaCandidate:
    note, message, error = check_against_precursor(formula, adduct, _precursor_mz(spectrum),
                                                   charged_notation=charged_notation)
    return FormulaCandidate(formula=formula, adduct=adduct, source=source, adduct_assumed=assumed, score=score,
                            note=note, message=message, mass_error_ppm=error)


# ------------------------------------------------------------------------------------------ providers 1-3
def metadata_candidates(spectrum, context: dict | None = None) -> list[FormulaCandidate] | None:
    """Provider 1: the neutral formula in the metadata (``formula``, else ``molecular_formula``).

    Returns
    -------
    list of one FormulaCandidate (source ``"metadata"``), or None without a formula.

    Raises
    ------
    FormulaError, UnsupportedAdductError
    """
    text = text_value(spectrum.get("formula")) or text_value(spectrum.get("molecular_formula"))
    if text is None:
        return None
    stripped, charged = _charge_stripped(text)
    formula = Formula.parse(stripped)
    adduct, assumed = spectrum_adduct(spectrum)
    return [_candidate(formula, adduct, assumed, "metadata", spectrum, charged_notation=charged)]


def precursor_formula_candidates(spectrum, context: dict | None = None) -> list[FormulaCandidate] | None:
    """Provider 2: the ion formula (``precursor_formula``, else ``ion_formula``) converted to the neutral one.

    The neutral formula is ion - (atoms the adduct adds) + (atoms it removes), e.g. C10H13N2O with [M+H]+ gives
    C10H12N2O. A trailing charge (``C10H13N2O+``, ``[C10H13N2O]+``) is ignored.

    Raises
    ------
    FormulaError
        Unparsable ion formula, or one that lacks the atoms the adduct adds.
    UnsupportedAdductError
    """
    text = text_value(spectrum.get("precursor_formula")) or text_value(spectrum.get("ion_formula"))
    if text is None:
        return None
    ion = Formula.parse(_charge_stripped(text)[0])
    adduct, assumed = spectrum_adduct(spectrum)
    try:
        neutral = ion - adduct.add + adduct.remove
    except FormulaError:
        raise FormulaError(f"precursor formula {ion.hill()} cannot be an {adduct.name} ion: it lacks "
                           f"{adduct.add.hill()}") from None
    return [_candidate(neutral, adduct, assumed, "precursor_formula", spectrum)]


def _sirius_rows(context: dict, spectrum) -> list:
    table = context.get("sirius_formulas") or {}
    sid = spectrum_id(spectrum)
    if sid is None:
        return []
    rows = table.get(sid)
    if rows is None:  # ids may be ints in a hand-built table
        for key, value in table.items():
            if str(key).strip() == sid:
                rows = value
                break
    return list(rows or [])


def sirius_candidates(spectrum, context: dict | None = None) -> list[FormulaCandidate] | None:
    """Provider 3: SIRIUS formula identifications, ``context["sirius_formulas"][spectrum_id]``.

    Each entry is ``(formula, adduct, score)`` (score optional) in SIRIUS rank order; adducts written with
    spaces (``[M + H]+``) are accepted; an empty adduct falls back to the spectrum's adduct. Entries that
    cannot be parsed are skipped with a warning. At most ``context["max_formulas"]`` (3) are returned.
    """
    context = context or {}
    rows = _sirius_rows(context, spectrum)
    if not rows:
        return None
    max_formulas = int(context.get("max_formulas", 3))
    out = []
    for row in rows:
        if len(out) >= max_formulas:
            break
        formula_text, adduct_text = row[0], (row[1] if len(row) > 1 else None)
        score = row[2] if len(row) > 2 else None
        try:
            formula = Formula.parse(_charge_stripped(str(formula_text))[0])
            if text_value(adduct_text) is not None:
                adduct, assumed = parse_adduct(str(adduct_text)), False
            else:
                adduct, assumed = spectrum_adduct(spectrum)
        except (FormulaError, UnsupportedAdductError) as err:
            logger.warning("spectrum %s: SIRIUS formula %r / adduct %r skipped: %s", spectrum_id(spectrum),
                           formula_text, adduct_text, err)
            continue
        score = None if score is None or text_value(score) is None else float(score)
        out.append(_candidate(formula, adduct, assumed, "sirius", spectrum, score=score))
    return out or None


# ------------------------------------------------------------------------------------------ provider 4
def mass_decomposition_candidates(spectrum, context: dict | None = None) -> list[FormulaCandidate] | None:
    """Provider 4: formulas decomposed from the precursor m/z and adduct (None without precursor_mz).

    Raises
    ------
    UnsupportedAdductError
    """
    context = context or {}
    mz = _precursor_mz(spectrum)
    if mz is None:
        return None
    adduct, assumed = spectrum_adduct(spectrum)
    found = decompose_mass(mz, adduct, ppm=float(context.get("decomposition_ppm", 5.0)),
                           min_da=float(context.get("decomposition_min_da", 0.002)),
                           elements=context.get("decomposition_elements", "CHNOPS"),
                           bounds=context.get("element_bounds"),
                           max_results=int(context.get("max_formulas", 3)))
    return [FormulaCandidate(formula=f, adduct=adduct, source="mass_decomposition", adduct_assumed=assumed,
                             score=score, mass_error_ppm=err) for f, err, score in found] or None


# ------------------------------------------------------------------------------------------ plugins
def given_formula_candidates(spectrum, context: dict | None = None) -> list[FormulaCandidate] | None:
    """Providers 1-3 in their order: the first of metadata formula, precursor (ion) formula and SIRIUS
    results that is present; None when the spectrum comes with none of them."""
    for provider in (metadata_candidates, precursor_formula_candidates, sirius_candidates):
        found = provider(spectrum, context)
        if found:
            return found
    return None


class _GivenFormulaProvider:
    """Formulas that come with the spectrum (metadata, precursor formula, SIRIUS): asked first."""

    @hookimpl(tryfirst=True)
    def diffms_formula_candidates(self, spectrum, context):
        return given_formula_candidates(spectrum, context)


class _MassDecompositionProvider:
    """Formulas decomposed from the precursor m/z: asked last, after any third-party provider."""

    @hookimpl(trylast=True)
    def diffms_formula_candidates(self, spectrum, context):
        return mass_decomposition_candidates(spectrum, context)


# The order between the two comes from tryfirst / trylast, not from the order of registration.
BUILTIN_PROVIDERS = (
    ("matchms_diffms.formula_sources.given", _GivenFormulaProvider()),
    ("matchms_diffms.formula_sources.mass_decomposition", _MassDecompositionProvider()),
)
