"""Decoder training where neither RDKit nor matchms is installed (a GPU machine): ``train decoder --graphs
--init-from`` and ``train save-part`` run in a subprocess that refuses both imports, on a hand-made graph set
in the compact format; the part comes back and ``train assemble`` joins it here. With environment features
the run gives the weights of the same run with RDKit."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from matchms_diffms.train.cli import train_group
from matchms_diffms.train.graphs import GraphSet, save_graphs
from reliability_helpers import SUBPROCESS_ENV, TINY_CONFIG, make_tiny_weights

REPO = Path(__file__).resolve().parents[1]
# Runs the train command group with the modules named in $BLOCK made unimportable (None in sys.modules).
BLOCKED = ("import os, runpy, sys\n"
           "for name in filter(None, os.environ['BLOCK'].split(',')):\n"
           "    sys.modules[name] = None\n"
           "sys.argv = ['train', *sys.argv[1:]]\n"
           "try:\n"
           "    runpy.run_module('matchms_diffms.train.cli', run_name='__main__')\n"
           "finally:\n"
           "    loaded = sorted(m for m in sys.modules if m.startswith(('rdkit.', 'matchms.')))\n"
           "    print('LOADED', loaded)\n")


def tiny_graphs(path: Path, n_bits: int) -> Path:
    """Six hand-made molecules (ethanol, acetic acid, propene, benzene, methylamine, ethyne) with random
    fingerprints, in the compact format."""
    nodes = [[0, 0, 1], [0, 0, 1, 1], [0, 0, 0], [0] * 6, [0, 3], [0, 0]]
    bonds = [[[0, 1, 1], [1, 2, 1]], [[0, 1, 1], [1, 2, 2], [1, 3, 1]], [[0, 1, 1], [1, 2, 2]],
             [[i, (i + 1) % 6, 4] if i < 5 else [0, 5, 4] for i in range(6)], [[0, 1, 1]], [[0, 1, 3]]]
    rng = np.random.default_rng(0)
    graphs = GraphSet.from_records([np.array(x, np.int8) for x in nodes], [np.array(b, np.int16) for b in bonds],
                                   [np.packbits(rng.random(n_bits) < 0.2) for _ in nodes],
                                   [f"TINYMOLECULE{i:02d}" for i in range(len(nodes))])
    save_graphs(path, graphs, {"kept": len(nodes)})
    return path


def run_blocked(*args, cwd: Path, block: str = "rdkit,matchms") -> subprocess.CompletedProcess:
    env = {**SUBPROCESS_ENV, "PYTHONPATH": str(REPO), "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "BLOCK": block}
    return subprocess.run([sys.executable, "-c", BLOCKED, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_decoder_trains_and_comes_back_without_rdkit_or_matchms(tmp_path):
    start = make_tiny_weights(tmp_path / "start", seed=4)
    graphs = tiny_graphs(tmp_path / "graphs.npz", TINY_CONFIG["cond_dim"])
    run = tmp_path / "run"
    result = run_blocked("decoder", "--out", run, "--graphs", graphs, "--init-from", start, "--device", "cpu",
                         "--steps", 3, "--batch-size", 4, "--val-fraction", 0, "--threads", 1, "--no-progress",
                         cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LOADED []" in result.stdout
    assert (run / "weights" / "model.safetensors").is_file()

    result = run_blocked("save-part", run, "-o", tmp_path / "back", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    part = load_file(tmp_path / "back" / "decoder.safetensors")
    assert json.loads((tmp_path / "back" / "model_config.json").read_text())["_step"] == 3

    out = CliRunner().invoke(train_group, ["assemble", "--encoder", str(start), "--decoder", str(tmp_path / "back"),
                                           "-o", str(tmp_path / "joined")])
    assert out.exit_code == 0, out.output
    from matchms_diffms.weights import load_weights_dir

    joined, info = load_weights_dir(tmp_path / "joined")
    assert info["assembled_from"]["decoder_step"] == 3
    for key, value in joined.decoder.state_dict().items():
        assert torch.equal(value, part[key]), key
    trained, _ = load_weights_dir(run / "weights")
    for key, value in trained.decoder.state_dict().items():
        assert torch.equal(value, part[key]), key


def test_environment_features_without_rdkit_give_the_weights_of_a_run_with_rdkit(tmp_path):
    start = make_tiny_weights(tmp_path / "start", seed=4, environment_features=True)
    graphs = tiny_graphs(tmp_path / "graphs.npz", TINY_CONFIG["cond_dim"])
    runs = {}
    for block in ("rdkit,matchms", ""):
        runs[block] = tmp_path / f"run-{block or 'rdkit'}"
        workers = 1 if block else 2                    # and worker processes (with RDKit there) change nothing
        result = run_blocked("decoder", "--out", runs[block], "--graphs", graphs, "--init-from", start, "--steps", 3,
                             "--batch-size", 4, "--val-fraction", 0, "--threads", 1, "--no-progress",
                             "--env-workers", workers, cwd=tmp_path, block=block)
        assert result.returncode == 0, result.stderr[-3000:]
    without, with_rdkit = (load_file(runs[b] / "weights" / "model.safetensors") for b in ("rdkit,matchms", ""))
    assert json.loads((runs[""] / "weights" / "config.json").read_text())["config"]["environment_features"]
    for key, value in with_rdkit.items():
        assert torch.equal(value, without[key]), key
