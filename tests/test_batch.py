"""The shared runner (batch.annotate_spectra): every command that annotates gets resume, the same settings
check and the same results from it; exercised here with a fast stand-in annotator."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from matchms import Spectrum

from matchms_diffms import AnnotationSettings, InputError, annotate_spectra, batch
from matchms_diffms.checkpoint import checkpoint_path_for


def spectra(n=5):
    return [Spectrum(mz=np.array([29.03858, 31.01784 + i]), intensities=np.array([100.0, 35.0]),
                     metadata={"title": f"s{i}", "precursor_mz": 47.04914}, metadata_harmonization=False)
            for i in range(n)]


class Stub:
    """Annotates by writing the seed and title; records its calls; can interrupt at a title."""

    calls: list = []
    interrupt_at = None

    def __init__(self, options):
        self.options = options

    @classmethod
    def from_pretrained(cls, name_or_path="default", **options):
        return cls(options)

    def annotate(self, spectrum):
        title = spectrum.get("title") or spectrum.get("spectrum_id")
        if title == Stub.interrupt_at:
            raise KeyboardInterrupt
        Stub.calls.append(title)
        out = spectrum.clone()
        out.set("diffms_status", "ok")
        out.set("diffms_seed", self.options["seed"])
        out.set("diffms_smiles", f"C{title}")
        return out


@pytest.fixture
def stub():
    Stub.calls, Stub.interrupt_at = [], None
    return Stub


def smiles(annotated):
    return [(s.get("title"), s.get("diffms_smiles"), s.get("diffms_seed")) for s in annotated]


def test_interrupted_run_resumes_without_recomputing(stub, tmp_path):
    settings = AnnotationSettings(seed=7)
    reference = smiles(annotate_spectra(spectra(), settings, annotator_cls=Stub))
    checkpoint = checkpoint_path_for(tmp_path / "out.tsv")
    stub.calls, stub.interrupt_at = [], "s3"
    with pytest.raises(batch.Interrupted) as info:
        annotate_spectra(spectra(), settings, checkpoint=checkpoint, annotator_cls=Stub)
    assert info.value.saved == 3 and info.value.checkpoint == checkpoint and "--resume" in str(info.value)
    with pytest.raises(InputError, match="--resume"):            # the checkpoint is in the way
        annotate_spectra(spectra(), settings, checkpoint=checkpoint, annotator_cls=Stub)
    stub.calls, stub.interrupt_at = [], None
    again = annotate_spectra(spectra(), settings, checkpoint=checkpoint, resume=True, annotator_cls=Stub)
    assert stub.calls == ["s3", "s4"] and smiles(again) == reference
    batch.finish_checkpoint(checkpoint)
    assert not checkpoint.exists()


@pytest.mark.parametrize("change, needle", [({"n_samples": 5}, "--samples"), ({"seed": 8}, "--seed"),
                                            ({"ranking": "frequency"}, "--ranking")])
def test_resume_refuses_other_settings(stub, tmp_path, change, needle):
    checkpoint = tmp_path / "x.partial.jsonl"
    stub.interrupt_at = "s2"
    with pytest.raises(batch.Interrupted):
        annotate_spectra(spectra(), AnnotationSettings(seed=7), checkpoint=checkpoint, annotator_cls=Stub)
    stub.interrupt_at = None
    with pytest.raises(InputError, match=needle):
        annotate_spectra(spectra(), AnnotationSettings(**{"seed": 7, **change}), checkpoint=checkpoint,
                         resume=True, annotator_cls=Stub)


def test_resume_refuses_other_spectra(stub, tmp_path):
    checkpoint = tmp_path / "x.partial.jsonl"
    stub.interrupt_at = "s2"
    with pytest.raises(batch.Interrupted):
        annotate_spectra(spectra(), AnnotationSettings(), checkpoint=checkpoint, annotator_cls=Stub)
    stub.interrupt_at = None
    with pytest.raises(InputError, match="another input"):
        annotate_spectra(spectra(4), AnnotationSettings(), checkpoint=checkpoint, resume=True, annotator_cls=Stub)


def test_evaluate_command_resumes_from_its_checkpoint(stub, tmp_path, monkeypatch):
    """evaluate uses the same runner: an interrupted evaluation continues where it stopped."""
    from pathlib import Path

    from matchms_diffms import cli_options, weights
    from matchms_diffms.commands.evaluate import evaluate_command

    monkeypatch.setattr(batch, "annotator_class", lambda: Stub)
    monkeypatch.setattr(cli_options, "check_weights_early", lambda name: None)
    monkeypatch.setattr(weights, "weights_sha256", lambda name: "0" * 64)
    fixture = Path(__file__).parent / "fixtures" / "massbank_small.mgf"
    out = tmp_path / "metrics.json"
    args = [str(fixture), "-o", str(out), "--no-mces", "--no-baselines", "--no-progress", "-w", "stub"]
    from matchms_diffms.evaluate import load_labelled_spectra

    titles = [s.get("spectrum_id") for s in load_labelled_spectra(fixture)]
    stub.interrupt_at = titles[1]
    result = CliRunner().invoke(evaluate_command, args)
    assert result.exit_code == 130 and "--resume" in result.output, result.output
    assert checkpoint_path_for(out).exists() and not out.exists()
    stub.calls, stub.interrupt_at = [], None
    result = CliRunner().invoke(evaluate_command, args + ["--resume"])
    assert result.exit_code == 0, result.output
    assert stub.calls == titles[1:] and out.exists() and not checkpoint_path_for(out).exists()
