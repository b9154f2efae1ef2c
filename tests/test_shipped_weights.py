"""The weights that ship with matchms-diffms (``weights/default`` in a checkout, ``matchms_diffms/_weights/default``
in a wheel): found by name, intact, loadable, and giving formula-exact candidates for an example spectrum.

Nothing here is hard-coded from the current weights (hash, scores, SMILES): the weights may be retrained.
"""
import json
from pathlib import Path

import pytest
from matchms.importing import load_from_mgf
from rdkit import Chem
from rdkit.Chem.rdMolDescriptors import CalcMolFormula

from matchms_diffms import DiffMSAnnotator, read_candidates, status_code
from matchms_diffms.model.config import DiffMSConfig
from matchms_diffms.ranking import CALIBRATION_FILE, Calibration
from matchms_diffms.weights import FORMAT, resolve, sha256_file, shipped_weights_dir, verify_weights_dir

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "example_library.mgf"
SHIPPED = ("model.safetensors", "config.json", "MODEL_CARD.md")


@pytest.fixture(scope="module")
def default_dir() -> Path:
    return resolve("default")


def test_default_is_the_shipped_folder(default_dir):
    assert default_dir == shipped_weights_dir() / "default"
    for name in SHIPPED:
        assert (default_dir / name).is_file(), name


def test_default_is_intact_and_its_config_valid(default_dir):
    meta, digest = verify_weights_dir(default_dir)
    assert meta["format"] == FORMAT
    assert digest == meta["sha256"] == sha256_file(default_dir / "model.safetensors")
    config = DiffMSConfig.from_dict(meta["config"])
    assert config.max_n_nodes >= 20 and len(config.atom_types) >= 4
    if (default_dir / CALIBRATION_FILE).exists():
        calibration = Calibration.load(default_dir / CALIBRATION_FILE)
        assert 0.0 <= calibration(0.5) <= 1.0


@pytest.mark.slow
def test_seeded_annotation_of_an_example_spectrum_gives_formula_exact_candidates(default_dir):
    spectrum = next(s for s in load_from_mgf(str(EXAMPLES)) if s.get("compound_name") == "paracetamol")
    formula = spectrum.get("formula")
    annotator = DiffMSAnnotator.from_pretrained("default", n_samples=20, top_k=5, seed=0)
    first, again = annotator(spectrum), annotator(spectrum)
    assert status_code(first.get("diffms_status")) == "ok", first.get("diffms_status")
    assert first.get("diffms_formula") == formula
    assert first.get("diffms_model").endswith(json.loads((default_dir / "config.json").read_text())["sha256"][:12])
    candidates = read_candidates(first.get("diffms_candidates"))
    assert 1 <= len(candidates) <= 5
    for cand in candidates:
        mol = Chem.MolFromSmiles(cand["smiles"])
        assert mol is not None and CalcMolFormula(mol) == formula == cand["formula"], cand
    assert first.get("diffms_smiles") == candidates[0]["smiles"]
    assert read_candidates(again.get("diffms_candidates")) == candidates          # seeded: reproducible
