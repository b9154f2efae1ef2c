"""`matchms-diffms calibrate`: candidates of annotated, labelled spectra -> calibration.json."""
import json

import numpy as np
from click.testing import CliRunner
from matchms import Spectrum
from matchms.exporting import save_as_json

from matchms_diffms.cli import main
from matchms_diffms.evaluate import calibration_pairs
from matchms_diffms.ranking import Calibration

ETHANOL_IK = "LFQSCWFLJHTTHZ-UHFFFAOYSA-N"
DIMETHYL_ETHER_IK = "LCGLNKUTAGEVQW-UHFFFAOYSA-N"


def _annotated(smiles, candidates):
    cands = [{"smiles": s, "inchikey": k, "raw_score": r, "score": r} for s, k, r in candidates]
    return Spectrum(mz=np.array([10.0]), intensities=np.array([1.0]),
                    metadata={"smiles": smiles, "precursor_mz": 47.0, "diffms_candidates": json.dumps(cands)})


SPECTRA = [_annotated("CCO", [("CCO", ETHANOL_IK, 0.6), ("COC", DIMETHYL_ETHER_IK, 0.3)]),
           _annotated("COC", [("CCO", ETHANOL_IK, 0.2)])]


def test_calibration_pairs_mark_the_true_structure():
    raw, correct = calibration_pairs(SPECTRA)
    assert raw == [0.6, 0.3, 0.2]
    assert correct == [True, False, False]


def test_calibrate_command_writes_a_monotone_map(tmp_path):
    annotated = tmp_path / "val_annotated.json"
    save_as_json(SPECTRA, str(annotated))
    out = tmp_path / "calibration.json"
    result = CliRunner().invoke(main, ["calibrate", str(annotated), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "3 candidates, 1 correct" in result.output
    calibration = Calibration.from_dict(json.loads(out.read_text()))
    assert calibration(0.6) == 1.0 and calibration(0.2) == 0.0
    assert calibration(0.25) <= calibration(0.5) <= calibration(0.9)


def test_calibrate_refuses_training_and_test_folds(tmp_path):
    for name in ("train_annotated.json", "massbank_test.json"):
        annotated = tmp_path / name
        save_as_json(SPECTRA, str(annotated))
        result = CliRunner().invoke(main, ["calibrate", str(annotated), "-o", str(tmp_path / "c.json")])
        assert result.exit_code != 0 and "refusing" in result.output
        assert not (tmp_path / "c.json").exists()
    marked = [s.clone() for s in SPECTRA]
    for s in marked:
        s.set("fold", "train")
    annotated = tmp_path / "annotated.json"
    save_as_json(marked, str(annotated))
    result = CliRunner().invoke(main, ["calibrate", str(annotated), "-o", str(tmp_path / "c.json")])
    assert result.exit_code != 0 and "train fold" in result.output


def test_calibrate_without_correct_candidates_keeps_the_raw_score(tmp_path):
    wrong = [_annotated("CCO", [("COC", DIMETHYL_ETHER_IK, 0.3), ("CC", "OTMSDBZUPAUEDD-UHFFFAOYSA-N", 0.1)])]
    annotated = tmp_path / "val_annotated.json"
    save_as_json(wrong, str(annotated))
    out = tmp_path / "calibration.json"
    result = CliRunner().invoke(main, ["calibrate", str(annotated), "-o", str(out)])
    assert result.exit_code == 0, result.output
    calibration = Calibration.from_dict(json.loads(out.read_text()))
    assert calibration.method == "identity" and "no correct candidate" in calibration.note
    assert calibration(0.3) == 0.3                                    # not mapped to 0
