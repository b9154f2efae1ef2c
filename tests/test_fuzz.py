"""Property-based fuzzing (hypothesis, bounded and derandomized so that CI runs are fast and reproducible) of the
formula and adduct parsers, subformula assignment, molecule building and the spectrum -> candidates path.

The contract checked everywhere: only the documented exception types come out (``FormulaError``,
``UnsupportedAdductError``, ``ValueError`` for invalid peaks), and the annotator never raises and never reports
``error`` for any spectrum."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from matchms import Spectrum

from matchms_diffms import DiffMSAnnotator, STATUS_CODES, read_annotation, status_code
from matchms_diffms.annotator import impossible_formula
from matchms_diffms.chem.adducts import SUPPORTED_ADDUCTS, Adduct, UnsupportedAdductError, parse_adduct, \
    precursor_mz
from matchms_diffms.chem.formula import ELEMENTS_18, Formula, FormulaError
from matchms_diffms.chem.molecules import ATOM_DECODER, check_molecule, graph_to_mol, inchikey, mol_formula
from matchms_diffms.chem.subformulae import SubformulaError, assign_subformulae
from reliability_helpers import make_tiny_weights

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
SLOW_FUZZ = settings(FUZZ, max_examples=60)

FORMULA_CHARS = "CHNOPSFClBrIKNaXx()[]+-0123456789 .%*c"
ADDUCT_CHARS = "[]M+-HNaKClONFA2 3*()COH"
SMALL_ELEMENTS = ["C", "H", "N", "O", "P", "S", "F", "Cl"]
HEAVY = [a for a in ATOM_DECODER if a != "H"]


def formulas(max_count: int = 6, elements=SMALL_ELEMENTS):
    """Non-empty formulas (the empty formula has no text form: ``Formula.parse("")`` is an error)."""
    return st.dictionaries(st.sampled_from(elements), st.integers(1, max_count), min_size=1,
                           max_size=len(elements)).map(Formula)


# ------------------------------------------------------------------------------------------ formula parser
@FUZZ
@given(st.one_of(st.text(FORMULA_CHARS, max_size=25), st.text(max_size=25)))
def test_formula_parser_raises_only_formula_error(text):
    try:
        f = Formula.parse(text)
    except FormulaError:
        return
    assert all(isinstance(n, int) and n >= 0 for n in f.counts.values())
    assert Formula.parse(f.hill()) == f


@FUZZ
@given(formulas(max_count=200, elements=list(ELEMENTS_18)))
def test_formula_hill_round_trip(f):
    assert Formula.parse(f.hill()) == f
    assert f.n_heavy == sum(n for el, n in f.counts.items() if el != "H")
    assert math.isfinite(f.monoisotopic_mass) and f.monoisotopic_mass >= 0


# ------------------------------------------------------------------------------------------ adduct parser
adduct_like = st.builds(lambda open_, terms, close, charge: open_ + "M" + "".join(terms) + close + charge,
                        st.sampled_from(["[", "", "[2"]),
                        st.lists(st.builds(lambda s, m, g: s + m + g, st.sampled_from("+-"),
                                           st.sampled_from(["", "2", "3"]),
                                           st.sampled_from(["H", "Na", "K", "H2O", "NH4", "Cl", "FA", "HCOO",
                                                            "CH3OH", "Xe", "ACN", "h", ""])), max_size=3),
                        st.sampled_from(["]", ""]), st.sampled_from(["+", "-", "2+", "", "+*", "--", "1-"]))


@FUZZ
@given(st.one_of(adduct_like, st.text(ADDUCT_CHARS, max_size=20), st.text(max_size=15)))
def test_adduct_parser_raises_only_unsupported_adduct_error(text):
    try:
        adduct = parse_adduct(text)
    except UnsupportedAdductError:
        return
    assert isinstance(adduct, Adduct) and adduct.charge in (1, -1)
    assert adduct.name in SUPPORTED_ADDUCTS
    assert parse_adduct(adduct.name) == adduct


# ------------------------------------------------------------------------------------------ subformulae
finite_mz = st.floats(0.0, 600.0, allow_nan=False)
finite_int = st.floats(0.0, 1e9, allow_nan=False)


@FUZZ
@given(formulas(max_count=4), st.sampled_from(sorted(SUPPORTED_ADDUCTS)),
       st.lists(st.tuples(finite_mz, finite_int), max_size=30),
       st.one_of(st.none(), st.floats(1.0, 700.0)))
def test_subformula_assignment(formula, adduct, peaks, parent):
    mz = np.array([p[0] for p in peaks], dtype=float)
    inten = np.array([p[1] for p in peaks], dtype=float)
    try:
        out = assign_subformulae(mz, inten, formula, adduct, parent)
    except SubformulaError as err:                              # documented: too many candidates
        assert "limit" in str(err)
        return
    except FormulaError:
        assume(False)            # an adduct that removes atoms the formula lacks
        return
    table = out["output_tbl"]
    if table is None:
        return
    lengths = {len(v) for v in table.values()}
    assert len(lengths) == 1
    limit = (parent if parent is not None else 1e6) + 1
    for peak_mz, frag in zip(table["mz"], table["formula"]):
        assert peak_mz <= limit
        sub = Formula.parse(frag) if frag else Formula({})      # "" = the adduct alone
        assert all(sub[el] <= formula[el] for el in sub.counts)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 10.0]),
                          st.sampled_from([math.nan, math.inf, -5.0, 1.0])), min_size=1, max_size=5))
def test_subformula_assignment_rejects_bad_peaks_with_value_error(peaks):
    mz = np.array([p[0] for p in peaks])
    inten = np.array([p[1] for p in peaks])
    assume(not (np.all(np.isfinite(mz)) and np.all(mz >= 0) and np.all(np.isfinite(inten)) and np.all(inten >= 0)))
    with pytest.raises(ValueError):
        assign_subformulae(mz, inten, "C6H12O6", "[M+H]+", 181.07)


# ------------------------------------------------------------------------------------------ molecules
@st.composite
def graphs(draw, max_nodes=9):
    n = draw(st.integers(1, max_nodes))
    atoms = draw(st.lists(st.sampled_from(HEAVY), min_size=n, max_size=n))
    upper = draw(st.lists(st.sampled_from([0, 0, 0, 1, 1, 2, 3, 4]), min_size=n * n, max_size=n * n))
    adj = np.triu(np.array(upper, dtype=np.int64).reshape(n, n), k=1)
    return atoms, adj + adj.T


@FUZZ
@given(graphs())
def test_molecule_building_never_raises(graph):
    atoms, adj = graph
    res = check_molecule(graph_to_mol(atoms, adj))
    if res.mol is None:
        assert not res.is_valid and res.error
        return
    assert res.num_fragments >= 1
    if res.is_valid:
        assert len(inchikey(res.mol)) == 27
        heavy = {el: n for el, n in mol_formula(res.mol).counts.items() if el != "H"}
        assert heavy == {el: atoms.count(el) for el in set(atoms)}
        # what RDKit accepts is never called impossible
        assert impossible_formula(mol_formula(res.mol)) is None


# ------------------------------------------------------------------------------------------ spectrum -> candidates
@pytest.fixture(scope="module")
def annotator(tmp_path_factory):
    weights = make_tiny_weights(tmp_path_factory.mktemp("weights") / "tiny")
    return DiffMSAnnotator.from_pretrained(str(weights), n_samples=8, steps=3, top_k=3, seed=0, max_formulas=2)


formula_text = st.one_of(formulas(max_count=3, elements=["C", "H", "N", "O", "S"]).map(lambda f: f.hill()),
                         formulas(max_count=7).map(lambda f: f.hill()), st.none(), st.just(""),
                         st.text(FORMULA_CHARS, max_size=12))
adduct_text = st.one_of(st.none(), st.sampled_from(sorted(SUPPORTED_ADDUCTS)), st.text(ADDUCT_CHARS, max_size=10))
BAD_VALUES = [math.nan, math.inf, -1.0]


@st.composite
def spectra(draw):
    """Mostly clean peaks (so that many examples reach the model), sometimes one bad value."""
    n = draw(st.integers(0, 12))
    mz = draw(st.lists(st.floats(0.0, 500.0), min_size=n, max_size=n))
    inten = draw(st.lists(st.floats(0.0, 1e6), min_size=n, max_size=n))
    if n and draw(st.integers(0, 3)) == 3:
        k = draw(st.integers(0, n - 1))
        if draw(st.booleans()):
            mz[k] = draw(st.sampled_from([math.inf, -1.0]))   # matchms needs sorted m/z, so no NaN there
        else:
            inten[k] = draw(st.sampled_from(BAD_VALUES))
    metadata = {"title": "fuzz"}
    formula, adduct = draw(formula_text), draw(adduct_text)
    if formula is not None:
        metadata["formula"] = formula
    if adduct is not None:
        metadata["adduct"] = adduct
    pm = draw(st.one_of(st.none(), st.floats(-10.0, 400.0), st.sampled_from([math.nan, math.inf, 0.0])))
    if pm is None and formula and draw(st.booleans()):
        try:                                  # often consistent with the formula, like real data
            pm = precursor_mz(Formula.parse(formula), adduct or "[M+H]+")
        except (FormulaError, UnsupportedAdductError, ValueError):
            pm = None
    if pm is not None:
        metadata["precursor_mz"] = pm
    metadata["ionmode"] = draw(st.sampled_from(["positive", "negative", "weird", None]))
    return Spectrum(mz=np.sort(np.array(mz, dtype=float)), intensities=np.array(inten, dtype=float),
                    metadata=metadata, metadata_harmonization=False)


@SLOW_FUZZ
@given(spectra())
def test_spectrum_to_candidates_never_raises(annotator, spectrum):
    out = annotator.annotate(spectrum)
    status = out.get("diffms_status")
    assert status_code(status) in STATUS_CODES and status_code(status) != "error", status
    ann = read_annotation(out)
    assert isinstance(json.loads(out.get("diffms_candidates")), list)
    if status_code(status) == "ok":
        assert ann["candidates"] and ann["smiles"] == ann["candidates"][0]["smiles"]
        assert 0.0 <= ann["score"] <= 1.0
        assert all(c["formula"] == ann["formula"] for c in ann["candidates"])
    else:
        assert status_code(status) in ("no_annotated_peaks",) or not ann["candidates"]
    assert spectrum.get("diffms_status") is None                 # the input is never modified
