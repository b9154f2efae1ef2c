"""The matchms filter ``annotate_de_novo`` in SpectrumProcessor, Pipeline and YAML workflows (filters.py)."""
import copy
import sys
from pathlib import Path

import numpy as np
import pytest
from matchms import Spectrum
from matchms.filtering import filter_order
from matchms.filtering.default_pipelines import DEFAULT_FILTERS
from matchms.filtering.SpectrumProcessor import SpectrumProcessor
from matchms.importing import load_from_mgf
from matchms.Pipeline import Pipeline, create_workflow
from matchms.yaml_file_functions import load_workflow_from_yaml_file

from matchms_diffms import filters
from matchms_diffms import read_candidates, status_code
from matchms_diffms.filters import (annotate_de_novo, formula_safe_filters, processing_step,
                                    register_matchms_filter)

sys.path.insert(0, str(Path(__file__).parent))
from test_annotator import FIXTURE, FakeModel, spectrum  # noqa: E402

INFO = {"name": "fake", "sha256": "cd" * 32, "path": None}


@pytest.fixture(autouse=True)
def fake_weights(monkeypatch):
    """Every weights name loads the stand-in model of test_annotator (no checkpoint needed)."""
    calls = []

    def load_model(name_or_path="default", config_overrides=None):
        calls.append(name_or_path)
        return FakeModel(), INFO
    monkeypatch.setattr("matchms_diffms.weights.load_model", load_model)
    filters.clear_annotator_cache()
    yield calls
    filters.clear_annotator_cache()


@pytest.fixture
def registered():
    register_matchms_filter()
    yield
    filter_order.FILTER_FUNCTION_NAMES.pop(filters.FILTER_NAME, None)


def test_filter_contract_none_clone_and_cache(fake_weights):
    assert annotate_de_novo(None) is None
    s = spectrum()
    before = s.metadata
    out = annotate_de_novo(s, n_samples=20, top_k=3, seed=1)
    assert out is not s and s.metadata == before
    assert out.get("diffms_status") == "ok" and out.get("diffms_n_samples") == 20
    assert len(read_candidates(out.get("diffms_candidates"))) <= 3
    same = annotate_de_novo(s, n_samples=20, top_k=3, seed=1, clone=False)
    assert same is s and s.get("diffms_candidates") == out.get("diffms_candidates")
    assert fake_weights == ["default"]                                  # loaded once, then cached


def test_no_candidates_never_removes_the_spectrum():
    out = annotate_de_novo(spectrum(formula="C2H5Br", precursor=None), n_samples=5)
    assert out is not None and status_code(out.get("diffms_status")) == "unsupported_element"


def test_spectrum_processor_runs_it_after_builtin_filters():
    processor = SpectrumProcessor(["normalize_intensities", processing_step(n_samples=10, seed=2),
                                   ("select_by_mz", {"mz_from": 20.0, "mz_to": 40.0})])
    names = [step if isinstance(step, str) else step[0] for step in processor.processing_steps]
    assert names == ["normalize_intensities", "select_by_mz", "annotate_de_novo"]
    spectra = [spectrum(title="a"), spectrum(title="b"), None]
    out, report = processor.process_spectra(spectra, progress_bar=False, create_report=True)
    assert len(out) == 2 and all(o.get("diffms_status") == "ok" for o in out)
    # select_by_mz ran before: the 47.05 peak was gone when DiffMS saw the spectrum
    assert all(o.peaks.mz.max() < 40 for o in out)
    assert spectra[0].get("diffms_status") is None                     # inputs untouched
    with pytest.raises(TypeError):
        processing_step(n_sample=3)


def test_pipeline_with_function_object(tmp_path):
    workflow = create_workflow(query_filters=[["normalize_intensities"], processing_step(n_samples=10, seed=2)])
    out_file = tmp_path / "annotated.mgf"
    pipeline = Pipeline(workflow, progress_bar=False)
    pipeline.run(str(FIXTURE), cleaned_query_file=str(out_file))
    back = list(load_from_mgf(str(out_file)))
    assert len(back) == 6
    codes = [status_code(s.get("diffms_status")) for s in back]
    assert codes[4] == "unsupported_element" and codes[5] == "unsupported_adduct"
    assert all(s.get("diffms_model") == "fake@cdcdcdcdcdcd" for s in back)


def test_yaml_workflow_needs_registration(tmp_path, registered):
    yaml_file = tmp_path / "workflow.yaml"
    create_workflow(yaml_file_name=str(yaml_file),
                    query_filters=[["normalize_intensities"], processing_step(n_samples=10, seed=5)])
    text = yaml_file.read_text()
    assert "annotate_de_novo" in text and "n_samples: 10" in text and "weights: default" in text
    workflow = load_workflow_from_yaml_file(str(yaml_file))
    out_file = tmp_path / "out.mgf"
    Pipeline(workflow, progress_bar=False).run(str(FIXTURE), cleaned_query_file=str(out_file))
    back = list(load_from_mgf(str(out_file)))
    assert back[0].get("diffms_status") == "ok" and back[0].get("diffms_seed") == "5"


def test_yaml_workflow_without_registration_fails(tmp_path):
    filter_order.FILTER_FUNCTION_NAMES.pop(filters.FILTER_NAME, None)
    yaml_file = tmp_path / "workflow.yaml"
    yaml_file.write_text("query_filters:\n- - annotate_de_novo\n  - n_samples: 3\nreference_filters: []\n"
                         "score_computations: []\n")
    with pytest.raises(ValueError, match="Unknown filter type: annotate_de_novo"):
        Pipeline(load_workflow_from_yaml_file(str(yaml_file)), progress_bar=False)


def user_formula_spectrum():
    # a spectrum with only a user-given formula, no SMILES (the de novo case)
    return Spectrum(np.array([29.03858, 31.01784, 47.04914]), np.array([100.0, 35.0, 20.0]),
                    metadata={"title": "x", "precursor_mz": 47.04914, "formula": "C2H6O", "adduct": "[M+H]+",
                              "ionmode": "positive", "charge": 1})


def test_default_filters_wipe_the_formula():
    """The matchms 0.33 behaviour formula_safe_filters protects against (integration doc, gotcha 5.1)."""
    out, _ = SpectrumProcessor(DEFAULT_FILTERS).process_spectra([user_formula_spectrum()], progress_bar=False)
    assert out[0].get("formula") in (None, "")


def test_formula_safe_filters_keep_the_user_formula():
    steps = formula_safe_filters()
    assert len(steps) == len(DEFAULT_FILTERS)
    derive = [s for s in steps if isinstance(s, tuple) and s[0].__name__ == "derive_formula_from_smiles"]
    assert derive and derive[0][1] == {"overwrite": False}
    original = copy.copy(DEFAULT_FILTERS)
    assert DEFAULT_FILTERS == original                                 # the matchms list is not modified
    processor = SpectrumProcessor(steps + [processing_step(n_samples=10)])
    out, _ = processor.process_spectra([user_formula_spectrum()], progress_bar=False)
    assert out[0].get("formula") == "C2H6O"
    assert out[0].get("diffms_formula_source") == "metadata" and out[0].get("diffms_status") == "ok"
    # an explicit list with string names and params
    custom = formula_safe_filters(["normalize_intensities", ("derive_formula_from_smiles", {"overwrite": True})])
    assert custom[0] == "normalize_intensities" and custom[1][1] == {"overwrite": False}


def test_filter_with_tiny_checkpoint(conformance_dir, monkeypatch):
    monkeypatch.undo()                                                 # real weights loading
    filters.clear_annotator_cache()
    spectra = list(load_from_mgf(str(FIXTURE)))[:2]
    ckpt = str(conformance_dir / "tiny_official.ckpt.gz")
    processor = SpectrumProcessor([processing_step(weights=ckpt, n_samples=8, steps=5, seed=0)])
    out, _ = processor.process_spectra(spectra, progress_bar=False)
    assert [o.get("diffms_model").split("@")[0] for o in out] == ["tiny_official.ckpt.gz"] * 2
    assert all(status_code(o.get("diffms_status")) in ("ok", "no_valid_candidates") for o in out)
