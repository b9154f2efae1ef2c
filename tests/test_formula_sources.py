"""Built-in formula providers (formula_sources.py) and their order through plugins.formula_candidates."""
import logging
import time

import numpy as np
import pytest
from matchms import Spectrum

from matchms_diffms.chem.adducts import ELECTRON_MASS, UnsupportedAdductError, parse_adduct, precursor_mz
from matchms_diffms.chem.formula import Formula, FormulaError, element_mass
from matchms_diffms.chem.decomposition import _count_bounds, decompose_mass, passes_golden_rules
from matchms_diffms.formula_sources import (MISMATCH, FormulaCandidate, mass_decomposition_candidates,
                                            metadata_candidates, mismatch_tolerance, precursor_formula_candidates,
                                            sirius_candidates, spectrum_adduct)
from matchms_diffms.metadata import spectrum_id, spectrum_label
from matchms_diffms.plugins import formula_candidates

CAFFEINE = "C8H10N4O2"
CAFFEINE_MH = 195.087652      # C8H10N4O2 + H+ (electron mass included)


def spec(**metadata):
    return Spectrum(mz=np.array([100.0, 150.0]), intensities=np.array([1.0, 0.5]), metadata=metadata,
                    metadata_harmonization=False)


# ------------------------------------------------------------------------------------------ helpers
def test_caffeine_reference_mass():
    # independent check of the arithmetic the providers rely on
    mass = 8 * 12.0 + 10 * 1.00782503207 + 4 * 14.0030740048 + 2 * 15.99491461956
    assert abs(precursor_mz(CAFFEINE, "[M+H]+") - (mass + 1.00782503207 - ELECTRON_MASS)) < 1e-6
    assert abs(precursor_mz(CAFFEINE, "[M+H]+") - CAFFEINE_MH) < 1e-5


@pytest.mark.parametrize("metadata, expected", [
    ({"feature_id": "17", "scans": "5", "title": "t", "compound_name": "c"}, "17"),
    ({"scans": "5", "title": "t"}, "5"),
    ({"title": " t ", "spectrum_id": "s"}, "t"),
    ({"spectrum_id": "s", "compound_name": "c"}, "s"),
    ({"identifier": "MassSpecGymID1", "compound_name": "c"}, "MassSpecGymID1"),
    ({"compound_name": "caffeine"}, "caffeine"),
    ({"feature_id": "", "scans": 12}, "12"),
    ({}, None),
])
def test_spectrum_id(metadata, expected):
    assert spectrum_id(spec(**metadata)) == expected
    # log lines name the same id as the TSV table and the SIRIUS lookup
    label = spectrum_label(spec(**metadata), index=3)
    assert label == "#3" if expected is None else label.endswith(f"={expected}")


@pytest.mark.parametrize("metadata, name, assumed", [
    ({"adduct": "[M+Na]+"}, "[M+Na]+", False),
    ({"adduct": "[M + H]+"}, "[M+H]+", False),
    ({"ionmode": "positive"}, "[M+H]+", True),
    ({"ionmode": "Negative"}, "[M-H]-", True),
    ({"charge": -1}, "[M-H]-", True),
    ({"charge": 1}, "[M+H]+", True),
    ({}, "[M+H]+", True),
    ({"adduct": "", "ionmode": "negative"}, "[M-H]-", True),
])
def test_spectrum_adduct(metadata, name, assumed):
    adduct, was_assumed = spectrum_adduct(spec(**metadata))
    assert (adduct.name, was_assumed) == (name, assumed)


def test_unknown_adduct_raises():
    with pytest.raises(UnsupportedAdductError):
        spectrum_adduct(spec(adduct="[M+Xe]+"))


def test_mismatch_tolerance():
    assert mismatch_tolerance(200.0) == pytest.approx(0.005)      # 10 ppm = 0.002 < 0.005 Da
    assert mismatch_tolerance(1000.0) == pytest.approx(0.010)     # 10 ppm = 0.010 Da


# ------------------------------------------------------------------------------------------ provider 1: metadata
def test_metadata_formula_consistent():
    [cand] = metadata_candidates(spec(formula=CAFFEINE, adduct="[M+H]+", precursor_mz=CAFFEINE_MH))
    assert isinstance(cand, FormulaCandidate)
    assert cand.formula == Formula.parse(CAFFEINE) and cand.adduct.name == "[M+H]+"
    assert cand.source == "metadata" and cand.adduct_assumed is False
    assert cand.note is None and cand.message is None and cand.score is None
    assert abs(cand.mass_error_ppm) < 0.1


def test_metadata_formula_without_precursor_mz_is_not_checked():
    [cand] = metadata_candidates(spec(formula=CAFFEINE, ionmode="positive"))
    assert cand.note is None and cand.mass_error_ppm is None and cand.adduct_assumed is True


def test_molecular_formula_key_is_tolerated():
    [cand] = metadata_candidates(spec(molecular_formula=CAFFEINE, precursor_mz=CAFFEINE_MH))
    assert cand.formula.hill() == CAFFEINE and cand.note is None


@pytest.mark.parametrize("delta, mismatch", [(0.0049, False), (-0.0049, False), (0.0051, True), (-0.0051, True)])
def test_mismatch_boundary_small_mass(delta, mismatch):
    # m/z 195: the 0.005 Da floor applies (10 ppm would be 0.00195 Da)
    [cand] = metadata_candidates(spec(formula=CAFFEINE, adduct="[M+H]+", precursor_mz=CAFFEINE_MH + delta))
    assert (cand.note == MISMATCH) is mismatch


@pytest.mark.parametrize("ppm, mismatch", [(9.5, False), (10.5, True)])
def test_mismatch_boundary_large_mass(ppm, mismatch):
    formula = "C48H72O14"                                         # avermectin-size, m/z ~ 873
    mz = precursor_mz(formula, "[M+H]+")
    [cand] = metadata_candidates(spec(formula=formula, adduct="[M+H]+", precursor_mz=mz * (1 + ppm * 1e-6)))
    assert (cand.note == MISMATCH) is mismatch
    assert cand.mass_error_ppm == pytest.approx(-ppm, abs=0.01)


def test_ion_formula_in_formula_field_is_reported_not_guessed():
    # C8H11N4O2 is caffeine + H: the ion formula of [M+H]+
    [cand] = metadata_candidates(spec(formula="C8H11N4O2", adduct="[M+H]+", precursor_mz=CAFFEINE_MH))
    assert cand.note == MISMATCH
    assert cand.formula.hill() == "C8H11N4O2"                     # not silently changed
    assert "ion formula" in cand.message


def test_charged_formula_notation_is_a_mismatch():
    for text in ("C8H11N4O2+", "[C8H11N4O2]+"):
        [cand] = metadata_candidates(spec(formula=text, adduct="[M+H]+", precursor_mz=CAFFEINE_MH))
        assert cand.note == MISMATCH and "ion formula" in cand.message
        [cand] = metadata_candidates(spec(formula=text, adduct="[M+H]+"))     # even without precursor m/z
        assert cand.note == MISMATCH and "charge" in cand.message


def test_wrong_assumed_adduct_is_reported_with_a_hint():
    mz = precursor_mz(CAFFEINE, "[M+Na]+")
    [cand] = metadata_candidates(spec(formula=CAFFEINE, ionmode="positive", precursor_mz=mz))
    assert cand.note == MISMATCH and cand.adduct.name == "[M+H]+" and cand.adduct_assumed
    assert "[M+Na]+" in cand.message


def test_invalid_metadata_formula_raises():
    with pytest.raises(FormulaError):
        metadata_candidates(spec(formula="C8H10Xx4", precursor_mz=CAFFEINE_MH))


def test_empty_formula_counts_as_missing():
    assert metadata_candidates(spec(formula="", precursor_mz=CAFFEINE_MH)) is None
    assert metadata_candidates(spec(formula="  ")) is None


# ------------------------------------------------------------------------------------------ provider 2: ion formula
@pytest.mark.parametrize("ion, adduct, neutral", [
    ("C8H11N4O2", "[M+H]+", CAFFEINE),
    ("C8H11N4O2+", "[M+H]+", CAFFEINE),
    ("[C8H11N4O2]+", "[M+H]+", CAFFEINE),
    ("C8H10N4NaO2", "[M+Na]+", CAFFEINE),
    ("C8H9N4O", "[M-H2O+H]+", CAFFEINE),
    ("C8H14N5O2", "[M+NH4]+", CAFFEINE),
    ("C8H9N4O2", "[M-H]-", CAFFEINE),
])
def test_precursor_formula_to_neutral(ion, adduct, neutral):
    mz = precursor_mz(neutral, adduct)
    [cand] = precursor_formula_candidates(spec(precursor_formula=ion, adduct=adduct, precursor_mz=mz))
    assert cand.formula.hill() == neutral and cand.source == "precursor_formula"
    assert cand.note is None and abs(cand.mass_error_ppm) < 0.1


def test_ion_formula_key_and_mismatch():
    [cand] = precursor_formula_candidates(spec(ion_formula="C8H11N4O2", adduct="[M+H]+",
                                               precursor_mz=CAFFEINE_MH + 1.0))
    assert cand.formula.hill() == CAFFEINE and cand.note == MISMATCH


def test_precursor_formula_lacking_adduct_atoms_raises():
    with pytest.raises(FormulaError, match="lacks"):
        precursor_formula_candidates(spec(precursor_formula="C8H11N4O2", adduct="[M+Na]+"))


# ------------------------------------------------------------------------------------------ provider 3: SIRIUS
def test_sirius_rows_by_spectrum_id():
    table = {"7": [("C8H10N4O2", "[M + H]+", 35.2), ("C7H14O6", "[M+H]+", 12.0), ("C6H15N2O3P", "[M+H]+", 1.0)]}
    s = spec(feature_id="7", precursor_mz=CAFFEINE_MH)
    cands = sirius_candidates(s, {"sirius_formulas": table, "max_formulas": 2})
    assert [c.formula.hill() for c in cands] == ["C8H10N4O2", "C7H14O6"]
    assert [c.score for c in cands] == [35.2, 12.0]
    assert all(c.source == "sirius" and c.adduct.name == "[M+H]+" and not c.adduct_assumed for c in cands)
    assert cands[0].note is None
    assert cands[1].note is None                                  # 6.9 ppm but within the 0.005 Da floor


def test_sirius_int_keys_missing_adduct_and_bad_rows(caplog):
    table = {7: [("C8H10Qq", "[M+H]+", 3.0), ("C8H10N4O2", "", None)]}
    with caplog.at_level(logging.WARNING, logger="matchms.diffms"):
        cands = sirius_candidates(spec(feature_id="7", ionmode="positive", precursor_mz=CAFFEINE_MH),
                                  {"sirius_formulas": table})
    assert [c.formula.hill() for c in cands] == [CAFFEINE]
    assert cands[0].adduct_assumed is True and cands[0].score is None
    assert "C8H10Qq" in caplog.text


def test_sirius_without_entry_gives_none():
    assert sirius_candidates(spec(feature_id="8"), {"sirius_formulas": {"7": [(CAFFEINE, "[M+H]+", 1.0)]}}) is None
    assert sirius_candidates(spec(feature_id="7"), {}) is None


# ------------------------------------------------------------------------------------------ provider 4: decomposition
@pytest.mark.parametrize("formula", ["C8H10N4O2", "C9H8O4", "C6H12O6", "C17H19NO3", "C20H25N3O", "C10H14N5O7P",
                                     "C21H30O2", "C12H22O11", "C16H13ClN2O"])
def test_decomposition_finds_the_true_formula_first(formula):
    elements = "CHNOPSCl" if "Cl" in formula else "CHNOPS"
    mz = precursor_mz(formula, "[M+H]+")
    found = decompose_mass(mz, "[M+H]+", elements=elements, max_results=None)
    names = [f.hill() for f, _, _ in found]
    assert formula in names
    assert names.index(formula) < 3, names[:5]


def test_decomposition_results_obey_tolerance_rules_and_order():
    mz = 500.2
    found = decompose_mass(mz, "[M+H]+", ppm=5.0, max_results=None)
    assert len(found) > 5
    tol = max(5e-6 * mz, 0.002)
    scores = [score for _, _, score in found]
    assert scores == sorted(scores, reverse=True)
    for formula, error_ppm, score in found:
        assert abs(precursor_mz(formula, "[M+H]+") - mz) <= tol + 1e-9
        assert error_ppm == pytest.approx((precursor_mz(formula, "[M+H]+") - mz) / mz * 1e6, abs=1e-6)
        assert passes_golden_rules(formula)
        assert set(formula.counts) <= set("CHNOPS")
        assert 0 < score <= 1


def _brute_force(mz, adduct, ppm, min_da, elements):
    """Naive nested enumeration (no vectorization, no branch and bound) for cross-checking."""
    adduct = parse_adduct(adduct)
    target = mz - adduct.mass_shift
    tol = max(ppm * 1e-6 * mz, min_da)
    limits = _count_bounds(elements, target, None)
    heavy = [e for e in elements if e != "H"]
    out = set()

    def rec(i, counts, mass):
        if mass > target + tol:
            return
        if i == len(heavy):
            h = round((target - mass) / element_mass("H"))
            for hh in (h - 1, h, h + 1):
                if limits["H"][0] <= hh <= limits["H"][1]:
                    f = Formula({**counts, "H": hh})
                    if abs(f.monoisotopic_mass - target) <= tol and passes_golden_rules(f):
                        out.add(f)
            return
        el = heavy[i]
        lo, hi = limits[el]
        for n in range(lo, hi + 1):
            m = mass + n * element_mass(el)
            if m > target + tol:
                break
            rec(i + 1, {**counts, el: n}, m)

    rec(0, {}, 0.0)
    return out


@pytest.mark.parametrize("mz, ppm, elements", [(181.0707, 50.0, ["C", "H", "N", "O", "P", "S"]),
                                               (301.1, 30.0, ["C", "H", "N", "O", "P", "S"]),
                                               (160.05, 100.0, ["C", "H", "N", "O", "S", "F", "Cl"]),
                                               (210.0, 100.0, ["C", "H", "N", "O", "P", "S", "F", "Cl", "Br",
                                                               "I"])])
def test_decomposition_matches_brute_force(mz, ppm, elements):
    fast = decompose_mass(mz, "[M+H]+", ppm=ppm, min_da=0.002, elements=elements, max_results=None)
    slow = _brute_force(mz, "[M+H]+", ppm, 0.002, elements)
    assert len(slow) >= 10
    assert len(fast) == len(slow) and {f for f, _, _ in fast} == slow


def test_decomposition_is_fast_at_500():
    best = min(_timed(lambda: decompose_mass(500.2, "[M+H]+", max_results=3)) for _ in range(3))
    assert best < 0.2, best


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def test_decomposition_options():
    mz = precursor_mz(CAFFEINE, "[M+H]+")
    no_n = decompose_mass(mz, "[M+H]+", bounds={"N": (0, 0)}, max_results=None)
    assert no_n and all(f["N"] == 0 for f, _, _ in no_n)
    wide = decompose_mass(mz, "[M+H]+", ppm=50, min_da=0.0, max_results=None)
    narrow = decompose_mass(mz, "[M+H]+", ppm=1, min_da=0.0, max_results=None)
    assert {f for f, _, _ in narrow} < {f for f, _, _ in wide}
    assert len(decompose_mass(mz, "[M+H]+", max_results=2)) == 2
    with pytest.raises(ValueError, match="supports the elements"):
        decompose_mass(mz, "[M+H]+", elements="CHNOSe")
    assert decompose_mass(0.5, "[M+H]+") == []


def test_decomposition_negative_mode():
    mz = precursor_mz(CAFFEINE, "[M-H]-")
    assert CAFFEINE in [f.hill() for f, _, _ in decompose_mass(mz, "[M-H]-", max_results=3)]


@pytest.mark.parametrize("formula, ok", [
    ("C8H10N4O2", True), ("C6H6", True), ("C2H6O", True),
    ("C2H7", False),          # odd number of H: radical, RDBE not an integer
    ("CH4", False),           # H/C = 4 > 3.1
    ("C20H2", False),         # H/C = 0.1 < 0.2
    ("C2H2N4", False),        # N/C = 2 > 1.3
    ("CH2O3", False),         # O/C = 3 > 1.2
    ("C10H20P4", False),      # P/C = 0.4 > 0.3
    ("C6H12Br", False),       # odd electron with a halogen
    ("C30H40N2O2P2S2", True),   # N, O, P, S all > 1 but within the rule-6 limits
    ("C30H40N4O2P2S2", False),  # P, S, N all > 1 needs N < 4 (rule 6)
    ("C6H4Cl2", True),
    ("C6H5Se", False),        # element outside the supported set
    ("H2O", False),           # no carbon
])
def test_golden_rules(formula, ok):
    assert passes_golden_rules(Formula.parse(formula)) is ok


def test_mass_decomposition_provider_and_context():
    s = spec(precursor_mz=CAFFEINE_MH, ionmode="positive")
    cands = mass_decomposition_candidates(s, {"max_formulas": 2})
    assert len(cands) == 2 and cands[0].formula.hill() == CAFFEINE
    assert all(c.source == "mass_decomposition" and c.adduct_assumed and c.note is None for c in cands)
    assert mass_decomposition_candidates(spec(), {}) is None
    assert mass_decomposition_candidates(spec(precursor_mz=float("nan")), {}) is None
    only_cho = mass_decomposition_candidates(s, {"decomposition_elements": "CHO", "max_formulas": 10}) or []
    assert all(set(c.formula.counts) <= {"C", "H", "O"} for c in only_cho)


# ------------------------------------------------------------------------------------------ provider order
def test_provider_order_through_the_plugin_manager():
    sirius = {"sirius_formulas": {"3": [("C7H14O6", "[M+H]+", 5.0)]}}
    full = dict(feature_id="3", formula=CAFFEINE, precursor_formula="C8H11N4O2", adduct="[M+H]+",
                precursor_mz=CAFFEINE_MH)
    assert formula_candidates(spec(**full), sirius)[0].source == "metadata"
    del full["formula"]
    assert formula_candidates(spec(**full), sirius)[0].source == "precursor_formula"
    del full["precursor_formula"]
    [c] = formula_candidates(spec(**full), sirius)
    assert (c.source, c.formula.hill()) == ("sirius", "C7H14O6")
    cands = formula_candidates(spec(**full), {"max_formulas": 3})
    assert [c.source for c in cands] == ["mass_decomposition"] * 3
    assert formula_candidates(spec(feature_id="3"), {}) == []


def test_user_data_errors_propagate_instead_of_falling_back():
    # an invalid metadata formula must not be replaced by a mass-decomposition guess
    with pytest.raises(FormulaError):
        formula_candidates(spec(formula="not a formula", precursor_mz=CAFFEINE_MH), {})
    with pytest.raises(UnsupportedAdductError):
        formula_candidates(spec(adduct="[2M+Xe]3+", precursor_mz=CAFFEINE_MH), {})
