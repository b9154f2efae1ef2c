"""Decoder training throughput: molecules per second of one training step on the pretraining distribution.

Draws batches exactly as ``train decoder`` does (``make_batches``, size bucketing) from the first
``--molecules`` pretraining molecules (<= 45 heavy atoms, like the shipped decoder) and times full steps
(noise, extra features, forward, loss, backward, AdamW) for several settings in one process, interleaved
batch by batch so that a busy machine slows all of them alike:

* ``shipped``: the settings the shipped decoder was trained with (dropout 0.1, 1 thread);
* ``no-dropout``: dropout 0 (our configs since the environment features);
* ``env features``: dropout 0, with the environment-match features (their cost);
* ``no bucketing``: dropout 0, batches of random sizes (what size bucketing buys);
* ``env + bf16``: the settings in use (dropout 0, environment features) with ``--precision bf16`` (autocast
  of the network pass; pays off on CPUs with AVX512-BF16 like this one, may cost on others);
* ``2 threads``: dropout 0 on two threads (on a busy machine OpenMP threads wait for each other: measure
  it on an idle one before using it).

Run: ``python benchmarks/decoder_training_throughput.py`` (writes benchmarks/results/decoder_training_throughput.json)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data" / "molecules" / "metabolites.smi.gz"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--molecules", type=int, default=3000)
    ap.add_argument("--batches", type=int, default=12, help="timed batches per setting")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--model-config", default=str(ROOT / "weights/default/training/model_config.json"))
    ap.add_argument("--smiles", default=str(SHARED))
    ap.add_argument("-o", "--output", default=str(ROOT / "benchmarks/results/decoder_training_throughput.json"))
    args = ap.parse_args(argv)

    from decoder_overfit import load_molecules

    from matchms_diffms.model.config import DiffMSConfig
    from matchms_diffms.model.decoder import GraphTransformer
    from matchms_diffms.model.diffusion import NoiseSchedule, edge_marginals
    from matchms_diffms.train.common import make_batches
    from matchms_diffms.train.decoder import diffusion_edge_loss

    base = DiffMSConfig.from_dict(json.loads(Path(args.model_config).read_text()))
    graphs, _ = load_molecules(Path(args.smiles), args.molecules, 2, 45, base)
    base = base.replace(edge_marginals=graphs.edge_marginals(), max_n_nodes=60, decoder_dropout=0.0)
    settings = {
        "shipped": dict(dropout=0.1, threads=1, env=False, bucket="sorted", precision="fp32"),
        "no-dropout": dict(dropout=0.0, threads=1, env=False, bucket="sorted", precision="fp32"),
        "env features": dict(dropout=0.0, threads=1, env=True, bucket="sorted", precision="fp32"),
        "env + bf16": dict(dropout=0.0, threads=1, env=True, bucket="sorted", precision="bf16"),
        "no bucketing": dict(dropout=0.0, threads=1, env=False, bucket="none", precision="fp32"),
        "2 threads": dict(dropout=0.0, threads=2, env=False, bucket="sorted", precision="fp32"),
    }
    runs = {}
    for name, s in settings.items():
        cfg = base.replace(environment_features=s["env"], decoder_dropout=s["dropout"])
        torch.manual_seed(0)
        dec = GraphTransformer(cfg).train()
        batches = make_batches(len(graphs), args.batch_size, 0, 0, sizes=graphs.n_atoms, bucket=s["bucket"])
        runs[name] = {"cfg": cfg, "dec": dec, "opt": torch.optim.AdamW(dec.parameters(), lr=1e-4),
                      "batches": batches, "gen": torch.Generator().manual_seed(0), "seconds": 0.0,
                      "molecules": 0, "atoms_padded": 0, "atoms_real": 0, **s}
    schedule = NoiseSchedule(base.diffusion_steps)
    marg = edge_marginals(base.edge_marginals)
    for k in range(args.batches + 1):                   # batch 0 warms up and is not timed
        for name, r in runs.items():
            idx = r["batches"][k % len(r["batches"])]
            torch.set_num_threads(r["threads"])
            t0 = time.perf_counter()
            X, E0, mask = graphs.batch(idx, r["cfg"].n_atom_types, torch.device("cpu"))
            y = graphs.fingerprints(idx, torch.device("cpu"))
            h = graphs.hydrogen_counts(idx, torch.device("cpu")) if r["cfg"].hydrogen_features else None  # (B,)
            loss = diffusion_edge_loss(r["dec"], r["cfg"], schedule, marg, X, E0, y, mask, r["gen"],
                                       precision=r["precision"], hydrogens=h)
            r["opt"].zero_grad(set_to_none=True)
            loss.backward()
            r["opt"].step()
            if k:
                r["seconds"] += time.perf_counter() - t0
                r["molecules"] += len(idx)
                r["atoms_padded"] += int(mask.numel())
                r["atoms_real"] += int(mask.sum())
    ref = runs["shipped"]["molecules"] / runs["shipped"]["seconds"]
    out = {"molecules": len(graphs), "batch_size": args.batch_size, "timed_batches": args.batches,
           "torch": torch.__version__, "settings": {}}
    for name, r in runs.items():
        rate = r["molecules"] / r["seconds"]
        out["settings"][name] = {"molecules_per_s": round(rate, 2), "ratio_to_shipped": round(rate / ref, 2),
                                 "padding_share": round(1 - r["atoms_real"] / r["atoms_padded"], 3),
                                 **{k: r[k] for k in ("dropout", "threads", "env", "bucket", "precision")}}
        print(f"{name:14s} {rate:7.2f} molecules/s  x{rate / ref:.2f}  padding "
              f"{100 * (1 - r['atoms_real'] / r['atoms_padded']):.0f} %")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
