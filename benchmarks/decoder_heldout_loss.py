"""Held-out edge cross-entropy of several decoders on one footing: the molecules ``train decoder`` holds out
from a featurised set, each noised once with the same noise.

``train decoder`` logs this number during a run (the held-out subset and its noise do not depend on the
run's ``--seed``); this script measures it for any decoder ``train decoder --init-from`` takes (shipped
defaults from the git history, part folders such as ``train save-part --average``, runs of other
sessions), so that a learning curve across runs compares like with like.
Each decoder is scored with its own configuration (a decoder without environment or hydrogen features is
scored without them).

Run: ``python benchmarks/decoder_heldout_loss.py --graphs RUN/cache/decoder-data-*.npz W1 W2 ...``
(writes benchmarks/results/decoder_heldout_loss.json)
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from matchms_diffms.train.decoder import DEFAULTS  # noqa: E402  (after the path: runs from a checkout)


def heldout_loss(weights: str, graphs: str, val_max: int, split_seed: int) -> float:
    """Held-out edge cross-entropy of ``weights``' decoder, exactly as ``train decoder`` validates."""
    from matchms_diffms.train.common import Dist
    from matchms_diffms.train.decoder import DecoderTask
    from matchms_diffms.train.trainer import Trainer

    # batch size 32 like our runs: the noise of a batch is drawn for its padded size
    cfg = {**DEFAULTS, "graphs": graphs, "init_from": weights, "model": {}, "val_max": val_max,
           "split_seed": split_seed, "batch_size": 32, "steps": 1, "progress": False, "threads": 1}
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(DecoderTask(), cfg, run_dir, Dist())
        trainer.prepare(False)
        return trainer.validate()["loss"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("weights", nargs="+", help="weights folders (ours), part folders (train save-part), run "
                    "folders (newest checkpoint) or official checkpoints, each as PATH or LABEL=PATH")
    ap.add_argument("--graphs", required=True, help="decoder-data-*.npz of a train decoder run")
    ap.add_argument("--val-max", type=int, default=DEFAULTS["val_max"],
                    help="held-out molecules used (default: train decoder's)")
    ap.add_argument("--split-seed", type=int, default=0, help="the runs' split seed (ours: 0)")
    ap.add_argument("-o", "--output", default=str(ROOT / "benchmarks/results/decoder_heldout_loss.json"))
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    out = {"graphs": args.graphs, "val_max": args.val_max, "split_seed": args.split_seed, "loss": {}}
    for arg in args.weights:
        label, _, path = arg.rpartition("=")
        out["loss"][label or path] = round(heldout_loss(path, args.graphs, args.val_max, args.split_seed), 5)
        print(f"{out['loss'][label or path]:.5f}  {label or path}", flush=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
