"""Subformula assignment: hand-made cases (always run) and the conformance fixture (needs ../shared)."""
import itertools
import json

import numpy as np
import pytest

from matchms_diffms.chem import ELEMENT_MASSES, ELEMENTS_18, Formula, UnsupportedAdductError
from matchms_diffms.chem.adducts import SUPPORTED_ADDUCTS, precursor_mz
from matchms_diffms.chem.subformulae import (
    SubformulaError,
    assign_subformulae,
    candidate_masses,
    count_candidates,
    enumerate_subformulae,
    preprocess_peaks,
)

# Literal most-common-isotope masses, independent of the code under test.
M_C, M_H, M_O, E = 12.0, 1.007825032, 15.99491462, 0.00054858

# ---------------------------------------------------------------------------------------------- hand-made


def test_ethanol_by_hand():
    """C2H6O [M+H]+: duplicate m/z merged (max intensity), >parent+1 cut, an unexplained peak dropped."""
    mz = [29.0386, 31.0178, 45.0335, 47.0491, 100.0, 20.0, 47.04912]
    inten = [50, 25, 10, 80, 5, 1, 100]
    rec = assign_subformulae(mz, inten, "C2H6O", "[M+H]+", parent_mz=47.04914)
    assert rec["cand_form"] == "C2H6O" and rec["cand_ion"] == "[M+H]+"
    tbl = rec["output_tbl"]
    assert tbl["formula"] == ["C2H6O", "C2H4", "CH2O", "C2H4O"]
    assert tbl["mz"] == [47.0491, 29.0386, 31.0178, 45.0335]          # first m/z of the merged pair kept
    np.testing.assert_allclose(tbl["ms2_inten"], np.sqrt([1.0, 0.5, 0.25, 0.1]), rtol=1e-15)
    expected_mono = [2 * M_C + 6 * M_H + M_O, 2 * M_C + 4 * M_H, M_C + 2 * M_H + M_O, 2 * M_C + 4 * M_H + M_O]
    expected_mono = np.array(expected_mono) + M_H - E
    np.testing.assert_allclose(tbl["mono_mass"], expected_mono, rtol=1e-13)
    np.testing.assert_allclose(tbl["abs_mass_diff"], np.abs(np.array(tbl["mz"]) - expected_mono),
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(tbl["mass_diff"], np.array(tbl["abs_mass_diff"]) / 200 * 1e6, rtol=1e-15)
    assert tbl["ions"] == ["[M+H]+"] * 4
    assert all(isinstance(x, float) for x in tbl["mz"] + tbl["mono_mass"])


def test_negative_mode_and_clipped_ppm():
    """[M-H]- works; below m/z 200 the ppm denominator is 200 (45.0 vs CHO2-: 40 ppm plain, 9 ppm clipped)."""
    rec = assign_subformulae([44.9982, 59.0139, 45.0], [100, 50, 20], "C2H4O2", "[M-H]-", parent_mz=59.0139)
    tbl = rec["output_tbl"]
    assert tbl["formula"] == ["CH2O2", "C2H4O2", "CH2O2"]          # no de-duplication
    np.testing.assert_allclose(tbl["mono_mass"][0], M_C + 2 * M_H + 2 * M_O - M_H + E, rtol=1e-13)
    assert 8.9 < tbl["mass_diff"][2] < 9.0


@pytest.mark.parametrize("ppm_tol, n_kept", [(20.0, 3), (8.98, 2), (0.01, 0)])
def test_ppm_threshold_is_strict(ppm_tol, n_kept):
    rec = assign_subformulae([44.9982, 59.0139, 45.0], [100, 50, 20], "C2H4O2", "[M-H]-", 59.0139, ppm_tol=ppm_tol)
    got = 0 if rec["output_tbl"] is None else len(rec["output_tbl"]["mz"])
    assert got == n_kept


def test_adduct_string_kept_as_given_and_object_gives_official_name():
    rec = assign_subformulae([19.0178], [1.0], "H2O", "M+H", None)
    assert rec["cand_ion"] == "M+H" and rec["output_tbl"]["ions"] == ["M+H"]
    rec = assign_subformulae([36.0444], [1.0], "H2O", SUPPORTED_ADDUCTS["[M+NH4]+"], None)
    assert rec["cand_ion"] == "[M+H3N+H]+"
    assert rec["output_tbl"]["formula"] == ["H2O"]
    rec = assign_subformulae([19.0178], [1.0], Formula.parse("OH2"), "[M+H]+", None)
    assert rec["cand_form"] == "H2O"


def test_empty_formula_candidate_and_sodium_peak():
    """The empty sub-formula is a candidate: a bare Na+ peak of an [M+Na]+ spectrum is annotated ''."""
    rec = assign_subformulae([22.98922, 41.0], [1.0, 0.5], "H2O", "[M+Na]+", 41.0)
    assert rec["output_tbl"]["formula"] == ["", "H2O"]


@pytest.mark.parametrize("mz, inten, parent", [
    ([], [], 100.0),                       # no peaks
    ([150.0, 160.0], [1.0, 2.0], 100.0),   # everything above parent + 1
    ([50.0, 60.0], [0.0, 0.0], 100.0),     # zero intensities
    ([12.3456], [1.0], 100.0),             # nothing explained
])
def test_null_output(mz, inten, parent):
    rec = assign_subformulae(mz, inten, "C2H6O", "[M+H]+", parent)
    assert rec == {"cand_form": "C2H6O", "cand_ion": "[M+H]+", "output_tbl": None}


def test_parent_plus_one_is_inclusive():
    mz, _ = preprocess_peaks([10.0, 101.0, 101.0001], [1, 1, 1], parent_mz=100.0)
    assert sorted(mz.tolist()) == [10.0, 101.0]


def test_top_peaks_and_threshold():
    mz = np.arange(1, 101, dtype=float)
    inten = np.arange(1, 101, dtype=float) ** 2       # sqrt-normalized intensity = i / 100
    out_mz, out_int = preprocess_peaks(mz, inten, None, max_peaks=60)
    assert out_mz.tolist() == list(np.arange(100, 40, -1, dtype=float))
    np.testing.assert_allclose(out_int, np.arange(100, 40, -1) / 100, rtol=1e-14)
    # threshold is strict and applied after the top-k cut
    out_mz, _ = preprocess_peaks([1.0, 2.0, 3.0], [1.0, 1e-6, 1.0000001e-6], None, inten_threshold=0.001)
    assert out_mz.tolist() == [1.0, 3.0]
    out_mz, _ = preprocess_peaks(mz, inten, None, max_peaks=None)
    assert out_mz.size == 100


@pytest.mark.parametrize("mz, inten, parent, match", [
    ([np.nan], [1.0], 100.0, "finite"),
    ([10.0], [np.inf], 100.0, "finite"),
    ([-1.0], [1.0], 100.0, "non-negative"),
    ([10.0], [-1.0], 100.0, "non-negative"),
    ([10.0, 11.0], [1.0], 100.0, "length"),
    ([[10.0]], [[1.0]], 100.0, "1-D"),
    ([10.0], [1.0], float("nan"), "parent"),
])
def test_invalid_peaks(mz, inten, parent, match):
    with pytest.raises(ValueError, match=match):
        assign_subformulae(mz, inten, "C2H6O", "[M+H]+", parent)


def test_invalid_formula_and_adduct():
    with pytest.raises(SubformulaError, match="Hg"):
        assign_subformulae([10.0], [1.0], "C2H6Hg", "[M+H]+", None)
    with pytest.raises(SubformulaError):
        assign_subformulae([10.0], [1.0], "", "[M+H]+", None)
    with pytest.raises(UnsupportedAdductError):
        assign_subformulae([10.0], [1.0], "C2H6O", "[M+2H]2+", None)


def test_candidate_limit():
    assert count_candidates("C100H200N20O30") == 101 * 201 * 21 * 31
    with pytest.raises(SubformulaError, match="limit"):
        assign_subformulae([100.0], [1.0], "C100H200N20O30", "[M+H]+", None)
    with pytest.raises(SubformulaError, match="limit"):
        enumerate_subformulae("C10H10", max_candidates=120)


def test_enumeration_order_and_rdbe_filter():
    """First element of ELEMENTS_18 varies fastest (reference cross-sum order); RDBE >= 0 kept."""
    f = Formula.parse("C2H5NO")
    got = enumerate_subformulae(f)
    # itertools.product varies the LAST factor fastest, so iterate the elements reversed
    elems = [el for el in ELEMENTS_18 if f[el]]
    rows = []
    for combo in itertools.product(*[range(f[el] + 1) for el in reversed(elems)]):
        counts = dict(zip(reversed(elems), combo))
        if 1 + 0.5 * (2 * counts["C"] + counts["N"] - counts["H"]) >= 0:
            rows.append([counts.get(el, 0) for el in ELEMENTS_18])
    assert got.tolist() == rows
    assert got[0].tolist() == [0] * 18 and got[1].tolist() == [1] + [0] * 17


def test_blockwise_masses_equal_one_matrix_product():
    """Masses computed in row blocks equal a single (n, 18) @ (18,) product bit for bit."""
    counts = enumerate_subformulae("C41H70N6O10")
    assert counts.shape[0] == 145_695                  # three blocks of 65536, a tail not a multiple of 4
    full = counts.astype(np.float64).dot(ELEMENT_MASSES)
    assert np.array_equal(candidate_masses(counts), full)


def test_large_formula_runs_fast():
    import time
    f = "C40H80N10O20"
    rng = np.random.default_rng(0)
    mz = rng.uniform(50, 1000, 80)
    t0 = time.perf_counter()
    rec = assign_subformulae(mz, rng.uniform(0, 1, 80), f, "[M+H]+", precursor_mz(f, "[M+H]+"))
    assert time.perf_counter() - t0 < 20
    assert rec["output_tbl"] is not None


# ---------------------------------------------------------------------------------------------- fixture
FLOAT_KEYS = ["mz", "ms2_inten", "mono_mass", "abs_mass_diff", "mass_diff"]


@pytest.fixture(scope="module")
def fixture_spectra(conformance_dir):
    from matchms.importing import load_from_mgf

    spectra = list(load_from_mgf(str(conformance_dir / "spectra.mgf")))
    reference = json.loads((conformance_dir / "subformulae.json").read_text())
    return spectra, reference


def test_conformance_all_spectra(fixture_spectra, record_property):
    """Every spectrum of spectra.mgf reproduces subformulae.json.

    Strings and lengths exact; floats rtol 1e-12. For the two differences (abs_mass_diff, mass_diff) the
    error budget is relative to the masses subtracted (1e-12 x m/z): the candidate masses come from a BLAS
    matrix-vector product whose last bit may differ on another CPU. On the reference machine type every
    float is bit-identical.
    """
    spectra, reference = fixture_spectra
    assert [s.get("title") for s in spectra] == list(reference)
    worst = dict.fromkeys(FLOAT_KEYS, 0.0)
    n_annotated = 0
    for s in spectra:
        title = s.get("title")
        ref = reference[title]
        got = assign_subformulae(s.peaks.mz, s.peaks.intensities, s.get("formula"), s.get("adduct"),
                                 s.get("precursor_mz"))
        assert got["cand_form"] == ref["cand_form"], title
        assert got["cand_ion"] == ref["cand_ion"], title
        if ref["output_tbl"] is None:
            assert got["output_tbl"] is None, title
            continue
        n_annotated += 1
        assert got["output_tbl"] is not None, title
        g, r = got["output_tbl"], ref["output_tbl"]
        assert set(g) == set(r), title
        assert g["formula"] == r["formula"], title
        assert g["ions"] == r["ions"], title
        scale = np.array(r["mz"])
        for key in FLOAT_KEYS:
            a, b = np.array(g[key], dtype=np.float64), np.array(r[key], dtype=np.float64)
            assert a.shape == b.shape, (title, key)
            dev = np.abs(a - b)
            worst[key] = max(worst[key], float(dev.max()))
            tol = 1e-12 * np.abs(b)
            if key == "abs_mass_diff":
                tol = tol + 1e-12 * scale
            elif key == "mass_diff":
                tol = tol + 1e-12 * scale / np.maximum(scale, 200) * 1e6
            assert np.all(dev <= tol), (title, key, float(dev.max()))
    assert n_annotated == 22
    print("largest |deviation| per field:", worst)
    for key, value in worst.items():
        record_property(f"max_dev_{key}", value)


def test_conformance_special_cases(fixture_spectra):
    """Facts the README states about the fixture: the upper cut, top-60 and duplicate formulas."""
    spectra, _ = fixture_spectra
    by_title = {s.get("title"): s for s in spectra}

    def run(title):
        s = by_title[title]
        return assign_subformulae(s.peaks.mz, s.peaks.intensities, s.get("formula"), s.get("adduct"),
                                  s.get("precursor_mz"))["output_tbl"]

    assert len(run("MSBNK-Athens_Univ-AU214101")["mz"]) == 1
    assert len(run("MSBNK-HBM4EU-HB002890")["mz"]) == 60
    for title in ("MSBNK-NILU-NL0346", "MSBNK-UoB-XB000103"):
        forms = run(title)["formula"]
        assert len(forms) - len(set(forms)) == 2
