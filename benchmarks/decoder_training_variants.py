"""Training variants of the decoder, paired: short continuations of the shipped decoder, compared on the
held-out edge cross-entropy at fixed times t.

Every variant starts from the same weights (``--weights``), sees the same batches of the pretraining
molecules (the ``train decoder`` cache file, its seeded 2 % held-out split excluded) and, where the variant
does not change it, the same noise; AdamW (amsgrad), constant ``--lr``, dropout 0, one thread. Afterwards the
held-out molecules are noised to t = 50 ... 400 with fixed noise and the per-pair edge cross-entropy is
measured in float32. Variants:

* ``fp32``: the training step of ``train decoder``;
* ``bf16``: ``--precision bf16`` (autocast of the network pass);
* ``low-t``: three quarters of the times drawn from 1..300 instead of 1..T (the model is already at the
  loss floor for t >= 400, see ``decoder_overfit.py``): does spending the steps where there is something to
  learn help?

Run: ``python benchmarks/decoder_training_variants.py --graphs RUN/cache/decoder-data-*.npz --steps 500``
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--graphs", required=True, help="decoder-data-*.npz of a train decoder run")
    ap.add_argument("--weights", default=str(ROOT / "weights" / "default"))
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--variants", default="fp32,bf16,low-t")
    ap.add_argument("--held-out", type=int, default=384)
    ap.add_argument("-o", "--output", default=str(ROOT / "benchmarks/results/decoder_training_variants.json"))
    args = ap.parse_args(argv)

    from decoder_overfit import loss_by_time

    from matchms_diffms.model.decoder import GraphTransformer
    from matchms_diffms.model.diffusion import edge_cross_entropy, edge_marginals, noise_edges
    from matchms_diffms.model.graph_features import network_input
    from matchms_diffms.train.assembly import load_full_model
    from matchms_diffms.train.common import make_batches
    from matchms_diffms.train.decoder import diffusion_edge_loss, in_validation_split
    from matchms_diffms.train.graphs import load_graphs

    torch.set_num_threads(1)
    start = load_full_model(args.weights)
    cfg = start.config.replace(decoder_dropout=0.0)
    graphs, _ = load_graphs(Path(args.graphs))
    held = np.array([in_validation_split(k, 0.02, 0) for k in graphs.ik14])
    train, val = graphs.subset(np.flatnonzero(~held)), graphs.subset(np.flatnonzero(held))
    marg, schedule = edge_marginals(cfg.edge_marginals), start.schedule
    T = schedule.T
    cpu = torch.device("cpu")

    def hydrogens(b):
        """(B,) hydrogen counts of the training molecules ``b`` for a decoder with hydrogen features, else
        None (a ValueError for a cache file featurised without them)."""
        return train.hydrogen_counts(b, cpu) if cfg.hydrogen_features else None

    held_order = sorted(range(min(args.held_out, len(val))), key=lambda i: val.n_atoms[i])

    def held_out_loss(dec) -> dict:
        model = SimpleNamespace(decoder=dec, config=cfg, marginals=marg, schedule=schedule)
        return loss_by_time(model, val, held_order, times=(50, 100, 200, 300, 400), seed=1000)

    def low_t_loss(dec, b, g):
        """The training loss with three quarters of the times drawn from 1..300."""
        X, E0, mask = train.batch(b, cfg.n_atom_types, cpu)
        y = train.fingerprints(b, cpu)
        t = torch.randint(1, T + 1, (len(b),), generator=g)
        low = torch.randint(1, 301, (len(b),), generator=g)
        t = torch.where(torch.rand(len(b), generator=g) < 0.75, low, t)
        Et = noise_edges(E0, t, marg, schedule, mask, g)
        X_in, E_in, y_in = network_input(X, Et, y, mask, (t.float() / T).unsqueeze(-1), cfg, g,
                                         hydrogens=hydrogens(b))
        return edge_cross_entropy(dec(X_in, E_in, y_in, mask)[1], E0, mask)

    result = {"args": vars(args), "train_molecules": len(train), "held_out": min(args.held_out, len(val)),
              "variants": {}}
    dec = GraphTransformer(cfg)
    dec.load_state_dict(start.decoder.state_dict())
    result["variants"]["start"] = {"held_out_loss": held_out_loss(dec)}
    batches = make_batches(len(train), 32, 7, 0, sizes=train.n_atoms, bucket="sorted")
    for name in args.variants.split(","):
        dec = GraphTransformer(cfg)
        dec.load_state_dict(start.decoder.state_dict())
        dec.train()
        opt = torch.optim.AdamW(dec.parameters(), lr=args.lr, weight_decay=1e-12, amsgrad=True)
        g, losses, t0 = torch.Generator().manual_seed(7), [], time.time()
        for k in range(args.steps):
            b = batches[k % len(batches)]
            if name == "low-t":
                loss = low_t_loss(dec, b, g)
            else:                                   # the step of train decoder, --precision fp32 / bf16
                X, E0, mask = train.batch(b, cfg.n_atom_types, cpu)
                loss = diffusion_edge_loss(dec, cfg, schedule, marg, X, E0, train.fingerprints(b, cpu), mask, g,
                                           precision=name, hydrogens=hydrogens(b))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        result["variants"][name] = {"train_s": round(time.time() - t0, 1),
                                    "train_loss_last100": round(float(np.mean(losses[-100:])), 5),
                                    "held_out_loss": held_out_loss(dec)}
        print(name, json.dumps(result["variants"][name]), flush=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
