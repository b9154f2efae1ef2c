"""The examples: the sharded Snakemake workflow and the matchms pipeline script (tiny checkpoint)."""
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from matchms.importing import load_from_mgf

from matchms_diffms import DiffMSAnnotator, read_candidates, status_code

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "annotator_tiny.mgf"
SNAKEFILE = REPO / "examples" / "Snakefile"
SNAKEMAKE = shutil.which("snakemake")
SAMPLES, STEPS, SEED = 16, 5, 0


def direct_run(ckpt):
    """What an unsharded ``matchms-diffms annotate`` computes (each spectrum seeded from its identity)."""
    ann = DiffMSAnnotator.from_pretrained(ckpt, n_samples=SAMPLES, steps=STEPS, seed=SEED, top_k=10)
    return [ann.annotate(s) for s in load_from_mgf(str(FIXTURE))]


@pytest.mark.slow
@pytest.mark.skipif(SNAKEMAKE is None, reason="snakemake is not installed (pip install snakemake; in the test extra)")
def test_sharded_workflow_equals_unsharded_run(tmp_path, conformance_dir):
    ckpt = str(conformance_dir / "tiny_official.ckpt.gz")
    cmd = [SNAKEMAKE, "-s", str(SNAKEFILE), "--cores", "2", "--directory", str(tmp_path), "--quiet",
           "--config", f"library={FIXTURE}", f"weights={ckpt}", f"samples={SAMPLES}", f"steps={STEPS}",
           f"seed={SEED}", "shards=2", "outdir=out", f"diffms={sys.executable} -m matchms_diffms.cli",
           # targets: the merged outputs (the report rule is one `matchms-diffms report` call, tested in
           # test_report.py; leaving it out saves a process start on slow CI machines)
           "--", "out/annotated.mgf", "out/candidates.tsv"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "out"
    shard0 = list(load_from_mgf(str(out / "shards" / "shard_0_of_2.mgf")))
    assert [s.get("feature_id") for s in shard0] == ["1", "3", "5"]              # p % 2 == 0, input order
    merged = list(load_from_mgf(str(out / "annotated.mgf")))
    assert [s.get("feature_id") for s in merged] == ["1", "2", "3", "4", "5", "6"]
    expected = direct_run(ckpt)
    for got, want in zip(merged, expected):
        assert got.get("diffms_status") == want.get("diffms_status")
        assert read_candidates(got.get("diffms_candidates")) == read_candidates(want.get("diffms_candidates"))
        assert got.get("diffms_seed") == "0"
    assert any(read_candidates(s.get("diffms_candidates")) for s in merged)       # something was proposed
    assert status_code(merged[4].get("diffms_status")) == "unsupported_element"
    tsv = (out / "candidates.tsv").read_text().splitlines()
    assert tsv[0].split("\t")[:3] == ["spectrum_id", "rank", "smiles"]
    assert not (out / "report.html").exists()


def test_pipeline_example_script(tmp_path, conformance_dir, capsys):
    spec = importlib.util.spec_from_file_location("pipeline_example", REPO / "examples" / "pipeline_example.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ckpt = str(conformance_dir / "tiny_official.ckpt.gz")
    out_mgf, report = tmp_path / "annotated.mgf", tmp_path / "report.html"
    assert module.main([str(FIXTURE), "--weights", ckpt, "--n-samples", "16", "--steps", "5", "--seed", "0",
                        "--output", str(out_mgf), "--report", str(report)]) == 0
    back = list(load_from_mgf(str(out_mgf)))
    assert len(back) == 6 and all(s.get("diffms_status") for s in back)
    assert back[3].get("diffms_formula_source") == "mass_decomposition"
    assert report.read_text().count('class="spectrum"') == 6
    printed = capsys.readouterr().out
    assert "ethanol" in printed and "unsupported_element" in printed
    # the example library shipped with the repository runs as well (one spectrum per formula source)
    example = REPO / "examples" / "example_library.mgf"
    if example.exists():
        assert module.main([str(example), "--weights", ckpt, "--n-samples", "4", "--steps", "3",
                            "--output", str(tmp_path / "ex.mgf"), "--report", ""]) == 0
        assert len(list(load_from_mgf(str(tmp_path / "ex.mgf")))) >= 1
