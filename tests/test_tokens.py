"""Unit tests of the encoder tokens (no shared fixtures needed)."""
import numpy as np
import pytest
import torch

from matchms_diffms.model.config import OFFICIAL_ADDUCT_SLOTS
from matchms_diffms.model.tokens import (ELEMENTS, adduct_index, canonical_adduct, collate, formula_vector,
                                         tokens_from_annotation)


def _record(cand_form="C9H11Cl3NO3PS", cand_ion="[M+H]+", formulas=("C2H5ClO", "CH3"),
            intens=(0.5, 1.0), ion=None):
    if formulas is None:
        return {"cand_form": cand_form, "cand_ion": cand_ion, "output_tbl": None}
    return {"cand_form": cand_form, "cand_ion": cand_ion,
            "output_tbl": {"formula": list(formulas), "ms2_inten": list(intens),
                           "ions": [ion or cand_ion] * len(formulas), "mz": [0.0] * len(formulas)}}


def test_formula_vector_order():
    vec = formula_vector("C9H11Cl3NO3PS")
    expected = dict(C=9, H=11, Cl=3, N=1, O=3, P=1, S=1)
    assert vec.tolist() == [expected.get(e, 0) for e in ELEMENTS]
    present = {"Br", "Si", "Se", "Na", "K", "Fe", "Co", "As", "I"}
    assert formula_vector("BrSiSeNaKFeCoAsI").tolist() == [int(e in present) for e in ELEMENTS]


@pytest.mark.parametrize("bad", ["C6H12O6+", "c6", "C6Xx2", "C6H-1", "C6 H6"])
def test_formula_vector_rejects(bad):
    with pytest.raises(ValueError):
        formula_vector(bad)


def test_counts_outside_table_rejected():
    assert formula_vector("C255")[0] == 255
    with pytest.raises(ValueError, match="0..255"):
        formula_vector("C256H2")
    with pytest.raises(ValueError, match="neutral loss"):            # fragment not inside the precursor
        tokens_from_annotation(_record(formulas=("C10H5",), intens=(1.0,)), OFFICIAL_ADDUCT_SLOTS)


def test_tokens_cls_last():
    t = tokens_from_annotation(_record(), OFFICIAL_ADDUCT_SLOTS)
    assert t["num_peaks"] == 3
    assert t["types"].tolist() == [0, 0, 3]
    assert t["intens"].tolist() == [0.5, 1.0, 1.0]
    assert t["ion_vec"].tolist() == [0, 0, 0]
    np.testing.assert_array_equal(t["form_vec"][-1], formula_vector("C9H11Cl3NO3PS"))
    np.testing.assert_array_equal(t["form_vec"][1], formula_vector("CH3"))
    assert t["form_vec"].dtype == np.float32 and t["form_vec"].shape == (3, 18)


def test_tokens_null_table_is_cls_only():
    t = tokens_from_annotation(_record(cand_ion="[M+Na]+", formulas=None), OFFICIAL_ADDUCT_SLOTS)
    assert t["num_peaks"] == 1 and t["types"].tolist() == [3] and t["ion_vec"].tolist() == [1]


def test_adduct_aliases():
    assert canonical_adduct(" [M + H3N + H]+ ") == canonical_adduct("[M+NH4]+")
    assert adduct_index("[M+NH4]+", OFFICIAL_ADDUCT_SLOTS) == adduct_index("[M+H3N+H]+", OFFICIAL_ADDUCT_SLOTS) == 4
    assert adduct_index("M+H", OFFICIAL_ADDUCT_SLOTS) == 0
    assert adduct_index("M-2H2O+H", OFFICIAL_ADDUCT_SLOTS) == 6
    # aliases also work on the slot side (own models may spell their slots differently)
    assert adduct_index("[M+H3N+H]+", ["[M+H]+", "[M+NH4]+"]) == 1
    for bad in ("[M-H]-", "", "[M+2H]2+"):
        with pytest.raises(ValueError, match="no encoder slot"):
            adduct_index(bad, OFFICIAL_ADDUCT_SLOTS)
    t = tokens_from_annotation(_record(cand_ion="[M+NH4]+", ion="[M+H3N+H]+"), OFFICIAL_ADDUCT_SLOTS)
    assert t["ion_vec"].tolist() == [4, 4, 4]


def test_collate_padding():
    a = tokens_from_annotation(_record(), OFFICIAL_ADDUCT_SLOTS)
    b = tokens_from_annotation(_record(cand_ion="[M+K]+", formulas=None), OFFICIAL_ADDUCT_SLOTS)
    batch = collate([a, b], pad_to=5)
    assert batch["form_vec"].shape == (2, 5, 18) and batch["form_vec"].dtype == torch.float32
    assert batch["num_peaks"].tolist() == [3, 1]
    assert batch["types"].tolist() == [[0, 0, 3, 0, 0], [3, 0, 0, 0, 0]]
    assert batch["ion_vec"].tolist() == [[0, 0, 0, 0, 0], [2, 0, 0, 0, 0]]
    assert batch["intens"].tolist() == [[0.5, 1.0, 1.0, 0, 0], [1.0, 0, 0, 0, 0]]
    assert torch.count_nonzero(batch["form_vec"][0, 3:]) == 0
    assert torch.count_nonzero(batch["form_vec"][1, 1:]) == 0
    assert collate([a, b])["types"].shape == (2, 3)
    with pytest.raises(ValueError, match="shorter"):
        collate([a, b], pad_to=2)
    with pytest.raises(ValueError):
        collate([])


def test_empty_subformula_is_the_zero_vector():
    """A peak explained by the bare adduct ion (the proton for [M+H]+) has the empty sub-formula."""
    assert formula_vector("").tolist() == [0] * 18
