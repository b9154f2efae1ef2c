"""Adduct table, parsing of matchms/MIST spellings, m/z arithmetic (no ../shared needed)."""
import csv
import importlib.util
from pathlib import Path

import pytest

from matchms_diffms.chem import Formula, FormulaError, element_mass
from matchms_diffms.chem.adducts import (
    ELECTRON_MASS,
    OFFICIAL_ADDUCTS,
    SUPPORTED_ADDUCTS,
    Adduct,
    UnsupportedAdductError,
    default_adduct,
    ion_formula,
    neutral_mass,
    official_index,
    official_name,
    parse_adduct,
    precursor_mz,
)

POSITIVE = ["[M+H]+", "[M+Na]+", "[M+K]+", "[M+NH4]+", "[M-H2O+H]+", "[M]+", "[M-H4O2+H]+"]
NEGATIVE = ["[M-H]-", "[M+Cl]-", "[M+HCOO]-", "[M-H2O-H]-"]


def test_supported_table():
    assert sorted(SUPPORTED_ADDUCTS) == sorted(POSITIVE + NEGATIVE)
    for name in POSITIVE:
        assert SUPPORTED_ADDUCTS[name].charge == 1 and SUPPORTED_ADDUCTS[name].ionmode == "positive"
    for name in NEGATIVE:
        assert SUPPORTED_ADDUCTS[name].charge == -1 and SUPPORTED_ADDUCTS[name].ionmode == "negative"


@pytest.mark.parametrize("text, expected", [
    ("[M+H]+", "[M+H]+"), ("M+H", "[M+H]+"), ("[M+H]", "[M+H]+"), ("[M+H]1+", "[M+H]+"), (" [M + H]+ ", "[M+H]+"),
    ("M+Na", "[M+Na]+"), ("[M+Na]+", "[M+Na]+"), ("[M+K]+", "[M+K]+"),
    ("[M+NH4]+", "[M+NH4]+"), ("M+NH4", "[M+NH4]+"), ("[M+H3N+H]+", "[M+NH4]+"), ("[M+NH3+H]+", "[M+NH4]+"),
    ("M+H-H2O", "[M-H2O+H]+"), ("M-H2O+H", "[M-H2O+H]+"), ("[M+H-H2O]+", "[M-H2O+H]+"),
    ("[M-H2O+H]+", "[M-H2O+H]+"),
    ("M-2H2O+H", "[M-H4O2+H]+"), ("[M-2H2O+H]+", "[M-H4O2+H]+"), ("[M-H4O2+H]+", "[M-H4O2+H]+"),
    ("[M+H-2H2O]+", "[M-H4O2+H]+"),
    ("[M]+", "[M]+"), ("[M]+*", "[M]+"), ("[M]+.", "[M]+"),
    ("[M-H]-", "[M-H]-"), ("M-H", "[M-H]-"), ("[M-H]", "[M-H]-"), ("[M-H]1-", "[M-H]-"),
    ("[M+Cl]-", "[M+Cl]-"), ("M+Cl", "[M+Cl]-"),
    ("[M+HCOO]-", "[M+HCOO]-"), ("[M+FA-H]-", "[M+HCOO]-"), ("[M+HCO2]-", "[M+HCOO]-"),
    ("[M-H+CH2O2]-", "[M+HCOO]-"), ("[M+HCOOH-H]-", "[M+HCOO]-"),
    ("[M-H2O-H]-", "[M-H2O-H]-"), ("[M-H-H2O]-", "[M-H2O-H]-"),
])
def test_parse_aliases(text, expected):
    assert parse_adduct(text).name == expected


@pytest.mark.parametrize("text, match", [
    ("[M+2H]2+", "multiply charged"),
    ("[M+H]2+", "multiply charged"),
    ("[2M+H]+", "multimer"),
    ("[M+CH3COO]-", "not supported"),
    ("[M+Hac-H]-", "not supported"),
    ("[M+H]-", "not supported"),          # charge does not fit the atoms
    ("[M-H]+", "not supported"),
    ("[M+ACN+H]+", "not supported"),
    ("", "empty"),
    ("   ", "empty"),
    ("garbage", "cannot parse"),
    ("[M+H", "cannot parse"),
    ("M+Xx", "unknown element"),
    ("[M]", "no charge"),
])
def test_parse_rejects(text, match):
    with pytest.raises(UnsupportedAdductError, match=match):
        parse_adduct(text)


def test_parse_rejects_non_string():
    with pytest.raises(UnsupportedAdductError):
        parse_adduct(None)
    assert issubclass(UnsupportedAdductError, ValueError)


def test_parse_adduct_passes_adduct_objects():
    a = SUPPORTED_ADDUCTS["[M+Na]+"]
    assert parse_adduct(a) is a


@pytest.mark.parametrize("text, official, index", [
    ("[M+H]+", "[M+H]+", 0), ("[M+Na]+", "[M+Na]+", 1), ("[M+K]+", "[M+K]+", 2), ("M+H-H2O", "[M-H2O+H]+", 3),
    ("[M+NH4]+", "[M+H3N+H]+", 4), ("[M]+", "[M]+", 5), ("[M-2H2O+H]+", "[M-H4O2+H]+", 6),
])
def test_official_names(text, official, index):
    assert official_name(text) == official
    assert official_index(text) == index
    assert OFFICIAL_ADDUCTS[index] == official


@pytest.mark.parametrize("name", NEGATIVE)
def test_negative_adducts_have_no_official_slot(name):
    assert official_name(name) == name
    with pytest.raises(UnsupportedAdductError, match="positive mode only"):
        official_index(name)


def test_mass_shifts_equal_reference_expressions_bitwise():
    """The seven positive shifts are the reference's float expressions, bit for bit."""
    m = element_mass
    e = 0.00054858
    expected = {
        "[M+H]+": m("H") - e,
        "[M+Na]+": m("Na") - e,
        "[M+K]+": m("K") - e,
        "[M-H2O+H]+": -m("O") - m("H") - e,
        "[M+NH4]+": m("N") + m("H") * 4 - e,
        "[M]+": 0 - e,
        "[M-H4O2+H]+": -m("O") * 2 - m("H") * 3 - e,
    }
    assert ELECTRON_MASS == e
    for name, value in expected.items():
        assert SUPPORTED_ADDUCTS[name].mass_shift == value, name


@pytest.mark.parametrize("name, shift", [
    ("[M+H]+", 1.007276452), ("[M+Na]+", 22.9892207), ("[M+NH4]+", 18.033825548), ("[M]+", -0.00054858),
    ("[M-H]-", -1.007276452), ("[M+Cl]-", 34.96940126), ("[M+HCOO]-", 44.998202852),
    ("[M-H2O-H]-", -19.017841136),
])
def test_mass_shift_values(name, shift):
    assert SUPPORTED_ADDUCTS[name].mass_shift == pytest.approx(shift, abs=1e-9)


def test_mass_shifts_agree_with_matchms_table():
    """matchms' known_adducts_table uses rounded values (1.007276 for H+); agree within 1e-5 Da."""
    # located without importing matchms (slow import)
    table = Path(importlib.util.find_spec("matchms").origin).parent / "data" / "known_adducts_table.csv"
    with open(table, encoding="utf-8-sig") as fh:
        rows = {r["adduct"]: r for r in csv.DictReader(fh)}
    for a in SUPPORTED_ADDUCTS.values():
        row = rows[a.matchms_name]
        assert int(row["charge"]) == a.charge
        assert float(row["mass_multiplier"]) == 1
        assert float(row["correction_mass"]) == pytest.approx(a.mass_shift, abs=1e-5), a.name


@pytest.mark.parametrize("formula, adduct, mz", [
    ("C8H10N4O2", "[M+H]+", 195.087652),      # caffeine
    ("C8H10N4O2", "[M+Na]+", 217.069597),
    ("C8H10N4O2", "[M-H]-", 193.073100),
    ("C4H4ClNOS", "[M+H]+", 149.977489),      # subformula fixture, first spectrum
    ("C2H4O2", "[M+HCOO]-", 105.019332),
])
def test_precursor_and_neutral_mass(formula, adduct, mz):
    assert precursor_mz(formula, adduct) == pytest.approx(mz, abs=1e-6)
    assert neutral_mass(precursor_mz(formula, adduct), adduct) == pytest.approx(
        Formula.parse(formula).monoisotopic_mass, abs=1e-12)


@pytest.mark.parametrize("formula, adduct, ion", [
    ("C8H10N4O2", "[M+H]+", "C8H11N4O2"),
    ("C8H10N4O2", "[M+NH4]+", "C8H14N5O2"),
    ("C8H10N4O2", "[M]+", "C8H10N4O2"),
    ("C6H12O6", "[M-H2O+H]+", "C6H11O5"),
    ("C6H12O6", "[M-2H2O+H]+", "C6H9O4"),
    ("C6H12O6", "[M-H]-", "C6H11O6"),
    ("C6H12O6", "[M+HCOO]-", "C7H13O8"),
    ("C6H12O6", "[M-H2O-H]-", "C6H9O5"),
])
def test_ion_formula(formula, adduct, ion):
    assert ion_formula(formula, adduct).hill() == ion


def test_ion_formula_impossible():
    with pytest.raises(FormulaError, match="cannot be formed"):
        ion_formula("CH4", "[M-H2O+H]+")


@pytest.mark.parametrize("mode, name", [("positive", "[M+H]+"), ("Positive", "[M+H]+"), ("negative", "[M-H]-")])
def test_default_adduct(mode, name):
    assert default_adduct(mode).name == name


@pytest.mark.parametrize("mode", ["", "both", None, "pos"])
def test_default_adduct_rejects(mode):
    with pytest.raises(ValueError):
        default_adduct(mode)


def test_adduct_is_frozen_and_hashable():
    a = SUPPORTED_ADDUCTS["[M+H]+"]
    with pytest.raises(Exception):
        a.charge = -1
    assert len({parse_adduct("M+H"), parse_adduct("[M+H]+")}) == 1
    assert str(a) == "[M+H]+"
    with pytest.raises(ValueError, match="singly charged"):
        Adduct("[M+2H]2+", 2, Formula.parse("H2"), Formula())
