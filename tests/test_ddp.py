"""Data-parallel training: `torchrun --standalone --nproc_per_node 2 -m matchms_diffms.train.cli decoder ...`
on a tiny model (gloo backend on CPU). Checks that the run finishes, that rank 0 alone wrote the log, that
both ranks ended with identical parameters (hashes gathered by the run), and that a 2-rank run interrupted
by --stop-at and resumed ends with exactly the parameters of an uninterrupted 2-rank run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TINY = {"preset": "tiny", "encoder_hidden": 16, "encoder_heads": 2, "magma_modulo": 16,
        "fp_sizes": [32, 64, 128, 256, 512], "cond_dim": 128, "decoder_layers": 2, "hidden_mlp_X": 16,
        "hidden_mlp_E": 16, "hidden_mlp_y": 32, "dx": 16, "de": 16, "dy": 16, "decoder_heads": 2,
        "dim_ffX": 16, "dim_ffE": 16, "dim_ffy": 16}


def torchrun(*args, timeout=120):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "matchms_diffms.train.cli", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_two_rank_decoder_training_and_resume(tmp_path):
    model_json = tmp_path / "tiny.json"
    model_json.write_text(json.dumps(TINY))
    base = ["decoder", "--smiles", FIXTURES / "train_molecules.smi", "--model-config", model_json,
            "--steps", 6, "--batch-size", 4, "--ckpt-every", 3, "--val-fraction", 0.2, "--val-every", 3,
            "--log-every", 1, "--threads", 1, "--no-progress", "--seed", 5]
    full, part = tmp_path / "full", tmp_path / "part"
    proc = torchrun(*base, "--out", full)
    assert proc.stdout.count("6/6 steps") == 1            # one summary line: rank 0 only

    recs = [json.loads(x) for x in (full / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if "loss" in r] == [1, 2, 3, 4, 5, 6]   # written once, by rank 0
    assert all(np.isfinite(r["loss"]) for r in recs if "loss" in r)
    assert recs[0]["world_size"] == 2
    end = recs[-1]
    assert end["event"] == "end" and end["finished"] and end["world_size"] == 2
    assert len(end["rank_param_hashes"]) == 2 and len(set(end["rank_param_hashes"])) == 1
    assert any("val_loss" in r and np.isfinite(r["val_loss"]) for r in recs)

    # interrupted after step 3 and resumed with the per-rank random states: same parameters as `full`
    torchrun(*base, "--out", part, "--stop-at", 3)
    assert not (part / "weights").exists()
    torchrun("decoder", "--out", part, "--resume", "--no-progress")
    a = load_file(str(full / "weights" / "model.safetensors"))
    b = load_file(str(part / "weights" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    end_b = [json.loads(x) for x in (part / "log.jsonl").read_text().splitlines()][-1]
    assert end_b["param_hash"] == end["param_hash"]
