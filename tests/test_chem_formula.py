"""Formula parsing, Hill strings, masses, RDBE, the 18-element vector and arithmetic (no ../shared needed)."""
import pickle

import numpy as np
import pytest

from matchms_diffms.chem.formula import ELEMENTS_18, Formula, FormulaError, element_mass


@pytest.mark.parametrize("text, counts", [
    ("C9H11Cl3NO3PS", {"C": 9, "H": 11, "Cl": 3, "N": 1, "O": 3, "P": 1, "S": 1}),
    ("C8H10N4O2", {"C": 8, "H": 10, "N": 4, "O": 2}),
    ("H2O", {"H": 2, "O": 1}),
    ("OH2", {"H": 2, "O": 1}),                       # any element order
    ("CH3COOH", {"C": 2, "H": 4, "O": 2}),           # repeated elements
    ("(CH3)3N", {"C": 3, "H": 9, "N": 1}),           # parentheses with a multiplier
    ("Ca(OH)2", {"Ca": 1, "O": 2, "H": 2}),
    ("CO", {"C": 1, "O": 1}),                        # carbon monoxide, not cobalt
    ("Co", {"Co": 1}),
    ("C0H4", {"H": 4}),                              # zero counts dropped
    ("  C6H6 ", {"C": 6, "H": 6}),                   # surrounding whitespace
    ("C40H56", {"C": 40, "H": 56}),
])
def test_parse(text, counts):
    assert dict(Formula.parse(text).counts) == counts


@pytest.mark.parametrize("text, match", [
    ("", "empty"),
    ("   ", "empty"),
    ("Xx2", "unknown element"),
    ("C6H6+", "unexpected '\\+'"),
    ("C-2", "unexpected '-'"),
    ("c6h6", "unexpected 'c'"),
    ("2H2O", "without an element"),
    ("C(H", "unbalanced"),
    ("CH)", "unbalanced"),
    ("()", "empty parentheses"),
    ("C 6", "unexpected ' '"),
    ("D2O", "unknown element"),
])
def test_parse_rejects(text, match):
    with pytest.raises(FormulaError, match=match):
        Formula.parse(text)


@pytest.mark.parametrize("counts, match", [
    ({"C": -1}, "negative"),
    ({"Q": 1}, "unknown element"),
    ({"C": 1.5}, "integer"),
    ({"C": True}, "integer"),
])
def test_constructor_rejects(counts, match):
    with pytest.raises(FormulaError, match=match):
        Formula(counts)


def test_formula_error_is_value_error():
    assert issubclass(FormulaError, ValueError)


@pytest.mark.parametrize("text, hill, mist", [
    ("C9H11Cl3NO3PS", "C9H11Cl3NO3PS", "C9H11Cl3NO3PS"),
    ("OC2H6", "C2H6O", "C2H6O"),
    ("SC6H5NO", "C6H5NOS", "C6H5NOS"),
    ("ClH", "ClH", "HCl"),                        # no C: all alphabetical; 18-order puts H first
    ("NaCl", "ClNa", "ClNa"),
    ("H2O", "H2O", "H2O"),
    ("C11H10Cl2F2N4O3S", "C11H10Cl2F2N4O3S", "C11H10Cl2F2N4O3S"),
    ("BrC2H5", "C2H5Br", "C2H5Br"),
    ("SiC4H12", "C4H12Si", "C4H12Si"),
    ("C26H45NNaO7S", "C26H45NNaO7S", "C26H45NNaO7S"),
    ("FeCoAsBSeKI", "AsBCoFeIKSe", "AsBCoFeIKSe"),
])
def test_hill_and_mist_strings(text, hill, mist):
    f = Formula.parse(text)
    assert f.hill() == hill
    assert str(f) == hill
    assert f.mist_string() == mist


@pytest.mark.parametrize("text, mass", [
    ("C8H10N4O2", 194.080376),        # caffeine
    ("H2O", 18.010565),
    ("C9H11Cl3NO3PS", 348.926284),    # chlorpyrifos
    ("C40H56", 536.438202),           # lycopene
    ("NaCl", 57.958622),
])
def test_monoisotopic_mass(text, mass):
    assert Formula.parse(text).monoisotopic_mass == pytest.approx(mass, abs=1e-6)


def test_element_masses_are_most_common_isotopes():
    assert element_mass("C") == 12.0
    assert element_mass("H") == pytest.approx(1.00782503, abs=1e-8)
    assert element_mass("Cl") == pytest.approx(34.96885268, abs=1e-8)
    with pytest.raises(FormulaError):
        element_mass("Xx")


@pytest.mark.parametrize("text, rdbe", [
    ("C6H6", 4.0), ("C8H10N4O2", 6.0), ("C2H6O", 0.0), ("H2", 0.0), ("CH4", 0.0), ("H4", -1.0),
    ("C9H11Cl3NO3PS", 4.0), ("C2H3F3", 0.0), ("C3H3Br", 2.0), ("C4H4ClNOS", 3.0), ("CHO2", 1.5), ("Na", 1.0),
])
def test_rdbe(text, rdbe):
    assert Formula.parse(text).rdbe == rdbe


def test_vector18_roundtrip():
    f = Formula.parse("C9H11Cl3NO3PS")
    v = f.vector18()
    assert v.dtype == np.int64 and v.shape == (18,)
    assert v.tolist() == [9, 11, 0, 0, 0, 3, 0, 0, 0, 0, 0, 1, 0, 3, 1, 1, 0, 0]
    assert Formula.from_vector18(v) == f
    assert Formula.from_vector18(np.array(v, dtype=float)) == f
    with pytest.raises(FormulaError, match="18"):
        Formula.from_vector18([1, 2, 3])
    with pytest.raises(FormulaError, match="integer"):
        Formula.from_vector18([0.5] + [0] * 17)
    with pytest.raises(FormulaError, match="negative"):
        Formula.from_vector18([-1] + [0] * 17)


def test_elements_18_order():
    assert ELEMENTS_18 == ["C", "H", "As", "B", "Br", "Cl", "Co", "F", "Fe", "I", "K", "N", "Na", "O", "P",
                           "S", "Se", "Si"]


def test_vector18_rejects_other_elements():
    f = Formula.parse("C2H6Hg")
    with pytest.raises(FormulaError, match="Hg"):
        f.vector18()
    with pytest.raises(FormulaError, match="Hg"):
        f.mist_string()
    assert f.hill() == "C2H6Hg"      # still a valid formula otherwise


@pytest.mark.parametrize("text, order, expected", [
    ("C2H6O", None, ["C", "C", "O"]),
    ("C2H6O", ["C", "O", "P", "N", "S", "Cl", "F", "H"], ["C", "C", "O"]),
    ("C4H4ClNOS", ["C", "O", "P", "N", "S", "Cl", "F", "H"], ["C"] * 4 + ["O", "N", "S", "Cl"]),
    ("C4H4ClNOS", None, ["C"] * 4 + ["Cl", "N", "O", "S"]),
    ("H2", None, []),
])
def test_heavy_atoms(text, order, expected):
    f = Formula.parse(text)
    assert f.heavy_atoms(order) == expected
    assert f.n_heavy == len(expected)


def test_heavy_atoms_outside_vocabulary():
    with pytest.raises(FormulaError, match="Br"):
        Formula.parse("C2H5Br").heavy_atoms(["C", "O", "P", "N", "S", "Cl", "F", "H"])


def test_arithmetic_equality_hash():
    a = Formula.parse("C8H10N4O2")
    assert a + Formula.parse("H") == Formula.parse("C8H11N4O2")
    assert a - Formula.parse("H2O") == Formula.parse("C8H8N4O")
    assert a + "Na" == Formula.parse("C8H10N4NaO2")
    assert a - a == Formula()
    assert Formula().hill() == ""
    with pytest.raises(FormulaError, match="negative"):
        Formula.parse("CH4") - Formula.parse("H2O")
    assert Formula.parse("OH2") == Formula.parse("H2O")
    assert hash(Formula.parse("OH2")) == hash(Formula.parse("H2O"))
    assert len({Formula.parse("H2O"), Formula.parse("OH2"), Formula.parse("HOH")}) == 1
    assert Formula.parse("H2O") != Formula.parse("H2O2")
    assert (Formula.parse("H2O") == "H2O") is False     # no implicit string comparison
    assert a["C"] == 8 and a["Cl"] == 0


def test_immutable_and_picklable():
    f = Formula.parse("C6H6")
    with pytest.raises(TypeError):
        f.counts["C"] = 7
    with pytest.raises(AttributeError):
        f.foo = 1
    assert pickle.loads(pickle.dumps(f)) == f
    assert repr(f) == "Formula('C6H6')"


def test_chem_package_has_no_torch_imports():
    """matchms_diffms.chem is pure chemistry (RDKit + numpy): no torch import in any of its modules."""
    import re
    from pathlib import Path

    import matchms_diffms.chem

    files = sorted(Path(matchms_diffms.chem.__file__).parent.glob("*.py"))
    assert len(files) >= 5
    for path in files:
        assert not re.search(r"^\s*(import|from)\s+torch\b", path.read_text(), re.M), path.name
