"""matchms export styles other than "matchms" drop every diffms_* key; carry_top_candidate keeps the top one."""
from __future__ import annotations

import numpy as np
import pytest
from matchms import Spectrum
from matchms.exporting import save_as_mgf, save_as_msp
from matchms.importing import load_from_mgf, load_from_msp

from matchms_diffms.export_styles import carried_text, carry_top_candidate, kept_keys

STYLES = ("gnps", "massbank", "nist", "riken")
SMILES = "CC(=O)OC1=CC=CC=C1C(=O)O"


def annotated(**extra) -> Spectrum:
    metadata = {"precursor_mz": 181.0495, "adduct": "[M+H]+", "ionmode": "positive", "formula": "C9H8O4",
                "diffms_status": "ok", "diffms_smiles": SMILES, "diffms_inchikey": "BSYNRYMUTXBXSQ-UHFFFAOYSA-N",
                "diffms_score": 0.4213, "diffms_candidates": f'[{{"smiles": "{SMILES}"}}]',
                "diffms_model": "default@0123456789ab", **extra}
    return Spectrum(mz=np.array([121.03, 163.04]), intensities=np.array([1.0, 0.4]), metadata=metadata,
                    metadata_harmonization=False)


def round_trip(spectrum, style, tmp_path, fmt="mgf"):
    path = tmp_path / f"{style}.{fmt}"
    if fmt == "mgf":
        save_as_mgf([spectrum], str(path), export_style=style)
        return list(load_from_mgf(str(path)))[0]
    save_as_msp([spectrum], str(path), style=style)
    return list(load_from_msp(str(path)))[0]


@pytest.mark.parametrize("style", STYLES)
def test_styles_drop_diffms_keys(style, tmp_path):
    """The problem: nothing of DiffMS survives such an export (so the docstring must not promise it)."""
    back = round_trip(annotated(), style, tmp_path)
    assert not [k for k in back.metadata if k.startswith("diffms")]
    assert not any(SMILES in str(v) for v in back.metadata.values())


PAIRS = f'"diffms_smiles={SMILES}" "diffms_score=0.421" "diffms_model=default@0123456789ab"'
NAMED = f"DiffMS #1 {SMILES} (score 0.421, model default@0123456789ab)"


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("fmt", ["mgf", "msp"])
def test_top_candidate_survives_each_style(style, fmt, tmp_path):
    carried = carry_top_candidate(annotated(), style)
    key, text = ("compound_name", NAMED) if style == "gnps" else ("comment", PAIRS)
    assert carried.get(key) == text
    back = round_trip(carried, style, tmp_path, fmt)
    if style == "nist" and fmt == "msp":
        # matchms' MSP reader splits a NIST "Comments:" line into its key=value pairs: the diffms_* keys return
        assert (back.get("diffms_smiles"), back.get("diffms_model")) == (SMILES, "default@0123456789ab"), back.metadata
        assert float(back.get("diffms_score")) == pytest.approx(0.421)
    else:
        assert back.get(key) == text, back.metadata


@pytest.mark.parametrize("style", ["gnps", "massbank", "riken"])
def test_bare_smiles_on_request(style, tmp_path):
    back = round_trip(carry_top_candidate(annotated(), style, key="smiles"), style, tmp_path)
    assert back.get("smiles") == SMILES


def test_refusals_and_existing_values():
    with pytest.raises(ValueError, match="drops the key 'smiles'"):
        carry_top_candidate(annotated(), "nist", key="smiles")
    with pytest.raises(ValueError, match="drops the key 'comment'"):
        carry_top_candidate(annotated(), "gnps", key="comment")
    with pytest.raises(ValueError, match="unknown matchms export style"):
        carry_top_candidate(annotated(), "mona")
    with pytest.raises(ValueError, match="keeps every key"):
        kept_keys("matchms")
    named = annotated(compound_name="aspirin")
    with pytest.raises(ValueError, match="already holds 'aspirin'"):
        carry_top_candidate(named, "gnps")
    assert carry_top_candidate(named, "gnps", overwrite=True).get("compound_name").startswith("DiffMS #1 ")
    commented = carry_top_candidate(annotated(comment="from MZmine"), "massbank")
    assert commented.get("comment") == f"from MZmine; {PAIRS}" == f"from MZmine; {carried_text(annotated())}"
    nothing = annotated(diffms_smiles=None, diffms_status="no_formula: none")
    assert carry_top_candidate(nothing, "gnps").metadata == nothing.metadata      # nothing to carry
    original = annotated()
    carry_top_candidate(original, "nist")
    assert original.get("comment") is None                                       # the input is not modified
