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
   the Seven Golden Rules of Kind & Fiehn (2007).

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

import numpy as np

from .chem.adducts import (ELECTRON_MASS, SUPPORTED_ADDUCTS, Adduct, UnsupportedAdductError, default_adduct,
                           neutral_mass, parse_adduct, precursor_mz)
from .chem.formula import Formula, FormulaError, element_mass
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
    "decompose_mass",
    "passes_golden_rules",
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


# ------------------------------------------------------------------------------------------ mass decomposition
# Valences used for the LEWIS/SENIOR checks (lowest common valence of each element).
_VALENCE = {"C": 4, "H": 1, "N": 3, "O": 2, "P": 3, "S": 2, "F": 1, "Cl": 1, "Br": 1, "I": 1}
_HALOGENS = ("F", "Cl", "Br", "I")
ALLOWED_ELEMENTS = tuple(_VALENCE)

# Kind & Fiehn rule 5 ("common range", 99.7 % of known compounds): maximal element/C ratios; rule 4: H/C.
MAX_RATIO_TO_C = {"N": 1.3, "O": 1.2, "P": 0.3, "S": 0.8, "F": 1.5, "Cl": 0.8, "Br": 0.8, "I": 0.8}
H_TO_C = (0.2, 3.1)

# Maximal element counts below a molecular mass, after Kind & Fiehn rule 1 (generous values: the larger
# of their database columns, I set like Br); ``element_bounds`` in the context overrides them.
_MAX_COUNTS_BY_MASS = (
    (500.0, {"C": 39, "H": 72, "N": 20, "O": 20, "P": 9, "S": 10, "F": 16, "Cl": 10, "Br": 5, "I": 5}),
    (1000.0, {"C": 78, "H": 126, "N": 25, "O": 27, "P": 9, "S": 14, "F": 34, "Cl": 12, "Br": 8, "I": 8}),
    (2000.0, {"C": 156, "H": 236, "N": 32, "O": 63, "P": 9, "S": 14, "F": 48, "Cl": 12, "Br": 10, "I": 10}),
)

# Kind & Fiehn rule 6 (element probabilities): when all listed elements exceed a count, each must stay below
# its limit.
_MULTI_ELEMENT_RULES = (
    ({"N": 1, "O": 1, "P": 1, "S": 1}, {"N": 10, "O": 20, "P": 4, "S": 3}),
    ({"N": 3, "O": 3, "P": 3}, {"N": 11, "O": 22, "P": 6}),
    ({"O": 1, "P": 1, "S": 1}, {"O": 14, "P": 3, "S": 3}),
    ({"P": 1, "S": 1, "N": 1}, {"P": 3, "S": 3, "N": 4}),
    ({"N": 6, "O": 6, "S": 6}, {"N": 19, "O": 14, "S": 8}),
)

# Ranking of decomposed formulas: cost = MASS_ERROR_WEIGHT * (error / tolerance)^2 + plausibility cost.
# Tuned on 2,000 distinct positive-mode CHNOPS formulas (passing the rules) of the MassBank training fold,
# with the recorded precursor m/z and with m/z recomputed from the formula plus 2 ppm Gaussian noise.
# Top-1 / top-3 recovery of the true formula: 0.87 / 0.95 (recorded m/z), 0.80 / 0.92 (2 ppm noise);
# ranking by mass error alone: 0.89 / 0.95 and 0.51 / 0.72.
MASS_ERROR_WEIGHT = 4.0
_ELEMENT_PENALTY = {"N": 0.2, "O": 0.0, "P": 1.0, "S": 0.7, "F": 1.0, "Cl": 1.0, "Br": 1.5, "I": 2.0}


def _parse_elements(spec) -> list[str]:
    if spec is None:
        spec = "CHNOPS"
    if isinstance(spec, str):
        elements = re.findall(r"[A-Z][a-z]?", spec)
    else:
        elements = [str(e).strip() for e in spec]
    unknown = [e for e in elements if e not in _VALENCE]
    if unknown:
        raise ValueError(f"mass decomposition supports the elements {', '.join(ALLOWED_ELEMENTS)}; "
                         f"got {', '.join(unknown)}")
    return [e for e in ALLOWED_ELEMENTS if e in set(elements) | {"C", "H"}]


def _count_bounds(elements: list[str], mass: float, bounds: dict | None) -> dict[str, tuple[int, int]]:
    """Inclusive (min, max) count per element: rule-1 maxima for ``mass``, overridden by ``bounds``."""
    maxima = None
    for limit, counts in _MAX_COUNTS_BY_MASS:
        if mass <= limit:
            maxima = counts
            break
    out = {}
    for el in elements:
        hi = maxima[el] if maxima is not None else int(mass // element_mass(el)) + 1
        lo = 1 if el == "C" else 0
        if bounds and el in bounds:
            lo, hi = (int(x) for x in bounds[el])
        out[el] = (lo, hi)
    return out


def _expand(counts: np.ndarray, mass: np.ndarray, lower: np.ndarray, upper: np.ndarray, element_mass_: float):
    """Expand each row k of ``counts`` (K, j) by one column holding every value lower[k]..upper[k]
    (vectorized; rows with an empty range disappear)."""
    n = np.maximum(upper - lower + 1, 0)
    total = int(n.sum())
    rows = np.repeat(np.arange(len(n)), n)
    starts = np.repeat(np.cumsum(n) - n, n)
    values = (np.arange(total) - starts + lower[rows]).astype(np.int32)
    new_counts = np.concatenate([counts[rows], values[:, None]], axis=1)
    return new_counts, mass[rows] + values * element_mass_


def _ratio_cap(el: str, c: np.ndarray) -> np.ndarray:
    """Largest count of ``el`` allowed by its element/C ratio for carbon counts ``c``."""
    return np.floor(MAX_RATIO_TO_C[el] * c + 1e-9).astype(np.int64)


def _cap(el: str, c: np.ndarray, limits: dict) -> np.ndarray:
    """Upper bound of the count of ``el`` for carbon counts ``c`` (count bound and ratio bound)."""
    cap = np.full(len(c), limits[el][1], dtype=np.int64)
    if el in MAX_RATIO_TO_C:
        cap = np.minimum(cap, _ratio_cap(el, c))
    return cap


def _max_hydrogen_mass(c: np.ndarray, limits: dict, elements: list) -> np.ndarray:
    """Upper bound of the hydrogen mass: H <= bound, H/C <= 3.1 and RDBE >= 0 (H <= 2C + 2 + N + P)."""
    h = np.minimum(limits["H"][1], np.floor(H_TO_C[1] * c + 1e-9).astype(np.int64))
    rdbe_cap = 2 * c + 2
    for el in ("N", "P"):
        if el in elements:
            rdbe_cap = rdbe_cap + _cap(el, c, limits)
    return np.minimum(h, rdbe_cap) * element_mass("H")


def passes_golden_rules(formula: Formula) -> bool:
    """Check one neutral formula against the heuristic rules used by the mass decomposition.

    Rules (Kind & Fiehn 2007, rules 2, 4, 5, 6; LEWIS/SENIOR with the lowest valences): at least one carbon;
    H/C in [0.2, 3.1]; element/C ratios of rule 5; RDBE a non-negative integer (neutral, even electron:
    SENIOR rules 1 and 3); sum of valences >= 2 x the largest valence (SENIOR rule 2); rule-6 element
    combinations. Elements outside C H N O P S F Cl Br I fail.
    """
    counts = dict(formula.counts)
    if any(el not in _VALENCE for el in counts):
        return False
    table = np.array([[counts.get(el, 0) for el in ALLOWED_ELEMENTS]], dtype=np.int32)
    return bool(_rule_mask(table, list(ALLOWED_ELEMENTS))[0])


def _rule_mask(counts: np.ndarray, elements: list[str]) -> np.ndarray:
    """Boolean mask of rows (K, E) of neutral formulas that pass the golden rules."""
    col = {el: counts[:, i].astype(np.int64) for i, el in enumerate(elements)}
    zero = np.zeros(len(counts), dtype=np.int64)
    c = col.get("C", zero)
    h = col.get("H", zero)
    ok = c >= 1
    ok &= (10 * h >= 2 * c) & (10 * h <= 31 * c)  # H/C in [0.2, 3.1]
    for el, ratio in MAX_RATIO_TO_C.items():
        if el in col:
            ok &= col[el] * 10 <= np.floor(ratio * 10 + 1e-9).astype(np.int64) * c
    # 2 RDBE = 2 + 2C + N + P - H - X; neutral molecule: even and >= 0
    two_rdbe = 2 + 2 * c - h
    for el in ("N", "P"):
        if el in col:
            two_rdbe = two_rdbe + col[el]
    for el in _HALOGENS:
        if el in col:
            two_rdbe = two_rdbe - col[el]
    ok &= (two_rdbe >= 0) & (two_rdbe % 2 == 0)
    valence_sum = sum(_VALENCE[el] * col[el] for el in elements)
    max_valence = np.zeros(len(counts), dtype=np.int64)
    for el in elements:
        max_valence = np.where(col[el] > 0, np.maximum(max_valence, _VALENCE[el]), max_valence)
    ok &= valence_sum >= 2 * max_valence
    for above, below in _MULTI_ELEMENT_RULES:
        if all(el in col for el in above):
            active = np.logical_and.reduce([col[el] > n for el, n in above.items()])
            fine = np.logical_and.reduce([col[el] < n for el, n in below.items()])
            ok &= ~active | fine
    return ok


def _plausibility_cost(counts: np.ndarray, elements: list[str]) -> np.ndarray:
    """Chemistry-based cost of each row of ``counts`` (K, E) (lower = more typical of metabolites and drugs).

    Terms: a per-atom penalty for N, P, S and halogens; H/C outside 0.9..2.0; (N + O)/C above 0.6;
    RDBE/C above 0.7 (very unsaturated).
    """
    col = {el: counts[:, i].astype(np.float64) for i, el in enumerate(elements)}
    zero = np.zeros(len(counts))
    c = col["C"]
    h = col["H"]
    cost = np.zeros(len(counts))
    for el, penalty in _ELEMENT_PENALTY.items():
        cost += penalty * col.get(el, zero)
    hc = h / c
    cost += 4.0 * (np.maximum(0.0, 0.9 - hc) + np.maximum(0.0, hc - 2.0))
    cost += 2.0 * np.maximum(0.0, (col.get("N", zero) + col.get("O", zero)) / c - 0.6)
    halogens = sum(col.get(el, zero) for el in _HALOGENS)
    rdbe = 1.0 + (2.0 * c + col.get("N", zero) + col.get("P", zero) - h - halogens) / 2.0
    cost += 2.0 * np.maximum(0.0, rdbe / c - 0.7)
    return cost


def decompose_mass(target_mz: float, adduct: "Adduct | str", *, ppm: float = 5.0, min_da: float = 0.002,
                   elements="CHNOPS", bounds: dict | None = None, max_results: int | None = 3
                   ) -> list[tuple[Formula, float, float]]:
    """Neutral formulas whose ion with ``adduct`` has m/z ``target_mz`` within the tolerance.

    Enumerates heavy-atom counts element by element (C first, so that the element/C ratio bounds prune early),
    solves the hydrogen count from the remaining mass, keeps formulas within max(``ppm``, ``min_da``) of
    ``target_mz`` that pass :func:`passes_golden_rules`, and ranks them by cost = 4 (mass error / tolerance)^2
    + a chemical plausibility cost (see ``MASS_ERROR_WEIGHT``).

    Parameters
    ----------
    target_mz
        Precursor m/z.
    adduct
        Precursor adduct (string or Adduct).
    ppm, min_da
        Tolerance: max(ppm * 1e-6 * target_mz, min_da) Da.
    elements
        Elements to use (C and H always): a string like ``"CHNOPSClF"`` or a list.
    bounds
        Optional ``{element: (min, max)}`` inclusive count ranges; defaults from Kind & Fiehn rule 1.
    max_results
        Number of formulas returned (None: all).

    Returns
    -------
    list of (Formula, mass_error_ppm, score)
        Best first; score = exp(-cost) in (0, 1].
    """
    adduct = parse_adduct(adduct)
    if not (math.isfinite(target_mz) and target_mz > 0):
        raise ValueError(f"precursor m/z must be a positive number, got {target_mz!r}")
    element_list = _parse_elements(elements)
    target = neutral_mass(target_mz, adduct)
    tol = max(ppm * 1e-6 * target_mz, min_da)
    if target <= 0:
        return []
    limits = _count_bounds(element_list, target, bounds)
    # C first (the ratio bounds need it), then heaviest first: the light elements come last, where the
    # branch-and-bound lower limit prunes most
    heavy = ["C"] + sorted((el for el in element_list if el not in ("C", "H")), key=element_mass, reverse=True)
    m_h = element_mass("H")
    h_lo, h_hi = limits["H"]

    counts = np.zeros((1, 0), dtype=np.int32)
    mass = np.zeros(1)
    c = None
    for j, el in enumerate(heavy):
        m_el = element_mass(el)
        lo, hi = limits[el]
        upper = np.minimum(hi, np.floor((target + tol - mass) / m_el)).astype(np.int64)
        lower = np.full(len(counts), lo, dtype=np.int64)
        if c is not None:
            if el in MAX_RATIO_TO_C:
                upper = np.minimum(upper, _ratio_cap(el, c))
            # branch and bound: the elements still to come (and H) cannot add more than max_rest
            max_rest = _max_hydrogen_mass(c, limits, element_list)
            for rest in heavy[j + 1:]:
                max_rest = max_rest + _cap(rest, c, limits) * element_mass(rest)
            lower = np.maximum(lower, np.ceil((target - tol - mass - max_rest) / m_el).astype(np.int64))
        counts, mass = _expand(counts, mass, lower, upper, m_el)
        if len(counts) == 0:
            return []
        c = counts[:, 0].astype(np.int64)  # C is the first heavy element
    # hydrogens close the remaining mass (at most one count fits: tol << m_H / 2)
    h = np.rint((target - mass) / m_h).astype(np.int64)
    total = mass + h * m_h
    keep = (h >= h_lo) & (h <= h_hi) & (np.abs(total - target) <= tol)
    counts, h, total = counts[keep], h[keep], total[keep]
    table_elements = heavy + ["H"]
    table = np.concatenate([counts, h[:, None].astype(np.int32)], axis=1)
    ok = _rule_mask(table, table_elements)
    table, total = table[ok], total[ok]
    if len(table) == 0:
        return []
    error_ppm = (total - target) / target_mz * 1e6
    cost = MASS_ERROR_WEIGHT * ((total - target) / tol) ** 2 + _plausibility_cost(table, table_elements)
    order = np.lexsort((np.abs(error_ppm), cost))
    if max_results is not None:
        order = order[:max_results]
    out = []
    for i in order:
        formula = Formula({el: int(n) for el, n in zip(table_elements, table[i])})
        out.append((formula, float(error_ppm[i]), float(math.exp(-cost[i]))))
    return out


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
