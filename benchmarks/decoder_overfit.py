"""Overfit check of the decoder training setup: can it memorise a few hundred molecules?

Trains a fresh decoder on N training-fold molecules (fingerprint -> graph, the project's loss) for a
wall-clock budget and, every ``--eval-every`` seconds, measures on the trained molecules themselves:

* ``denoise@t``: one denoiser pass from a graph noised to time t; share of graphs whose argmax prediction
  is the whole clean graph (t = 100, 300);
* ``top1``: sampling from the molecule's own fingerprint (``--samples`` x ``--sample-steps``), the most
  frequent valid sample equals the molecule (InChIKey first block);
* ``loss@t``: the edge cross-entropy per pair at fixed times t, against ``floor@T``: at t = T the noisy
  graph carries nothing, so no network can beat the entropy of a molecule's bonds given the two atom types
  (atoms of one element are interchangeable there). Where ``loss@t`` sits on that floor nothing is left to
  learn; the gap at small and middle t is what memorising has to close.

A healthy setup reaches most molecules. Run:

    python benchmarks/decoder_overfit.py --molecules 256 --budget 1800

Results go to ``benchmarks/results/decoder_overfit_<tag>.json`` (the curve).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data" / "molecules" / "metabolites.smi.gz"


def load_molecules(path: Path, n: int, min_atoms: int, max_atoms: int, config):
    from matchms_diffms.labelled import read_smiles
    from matchms_diffms.train.graphs import GraphSet, featurize_smiles

    nodes, bonds, fps, iks, hydrogens, smiles = [], [], [], [], [], []
    for smi in read_smiles(path):
        rec, _ = featurize_smiles(smi, list(config.atom_types), config.cond_dim, 2, max_atoms, min_atoms)
        if rec is None or rec[0] in iks:
            continue
        iks.append(rec[0])
        nodes.append(rec[1])
        bonds.append(rec[2])
        fps.append(rec[3])
        hydrogens.append(rec[4])
        smiles.append(smi)
        if len(iks) >= n:
            break
    return GraphSet.from_records(nodes, bonds, fps, iks, hydrogens), smiles


def hydrogens_of(graphs, idx, config, device=torch.device("cpu")):
    """(B,) hydrogen counts of the molecules ``idx`` for decoders with ``hydrogen_features``, else None."""
    return graphs.hydrogen_counts(idx, device) if config.hydrogen_features else None


def reconstruct_top1(model, graphs, idx, samples: int, steps: int, seed: int) -> float:
    """Share of molecules whose most frequent valid sample (from their own fingerprint) is themselves."""
    from rdkit import RDLogger

    from matchms_diffms.chem.molecules import graph_to_mol, inchikey14, sanitize_and_check
    from matchms_diffms.model.diffusion import reverse_sample

    RDLogger.DisableLog("rdApp.*")
    hits = 0
    model.decoder.eval()
    for i in idx:
        X, _, mask = graphs.batch([i], model.config.n_atom_types, torch.device("cpu"))
        y = graphs.fingerprints([i], torch.device("cpu"))
        h = hydrogens_of(graphs, [i] * samples, model.config)                          # (S,) or None
        g = torch.Generator().manual_seed(seed + int(i))
        E = reverse_sample(model, X.expand(samples, -1, -1), mask.expand(samples, -1),
                           y.expand(samples, -1), steps=steps, generator=g, hydrogens=h)
        nodes = X[0].argmax(-1).numpy()
        keys = []
        for b in range(samples):
            mol = graph_to_mol(nodes, E[b].numpy(), model.config.atom_types)
            smi, ok, _ = sanitize_and_check(mol)
            if ok:
                keys.append(inchikey14(smi))
        if keys and Counter(keys).most_common(1)[0][0] == graphs.ik14[i].decode():
            hits += 1
    return hits / len(idx)


def noised_predictions(model, graphs, idx, t: int, g: torch.Generator):
    """For batches of 32 of the molecules ``idx`` noised to time t: ``(E0, E_t, pair mask, edge logits)``."""
    from matchms_diffms.model.diffusion import noise_edges
    from matchms_diffms.model.graph_features import network_input

    for start in range(0, len(idx), 32):
        b = [int(i) for i in idx[start:start + 32]]
        X, E0, mask = graphs.batch(b, model.config.n_atom_types, torch.device("cpu"))
        y = graphs.fingerprints(b, torch.device("cpu"))
        tt = torch.full((len(b),), t)
        Et = noise_edges(E0, tt, model.marginals, model.schedule, mask, g)
        X_in, E_in, y_in = network_input(X, Et, y, mask, (tt.float() / model.schedule.T).unsqueeze(-1),
                                         model.config, g, hydrogens=hydrogens_of(graphs, b, model.config))
        pair = mask[:, :, None] & mask[:, None, :] & ~torch.eye(mask.shape[1], dtype=torch.bool)
        yield E0, Et, pair, model.decoder(X_in, E_in, y_in, mask)[1]


@torch.no_grad()
def denoise(model, graphs, idx, t: int, seed: int, repeats: int = 4) -> dict:
    """One denoiser pass from graphs noised to time t (argmax of p(E_0)), ``repeats`` noise draws each.

    Returns the share of graphs restored exactly (``exact``), of the bonds the noise removed that come back
    (``restored``), and of the bonds the noise added that go again (``removed``).
    """
    model.decoder.eval()
    ok, lost, back, added, gone = 0, 0, 0, 0, 0
    idx = np.tile(np.asarray(idx), repeats)                   # several noise draws per molecule
    for E0, Et, pair, logits in noised_predictions(model, graphs, idx, t, torch.Generator().manual_seed(seed)):
        pred, true, noisy = logits.argmax(-1), E0.argmax(-1), Et.argmax(-1)
        ok += int((~((pred != true) & pair).flatten(1).any(1)).sum())
        was_lost = pair & (true > 0) & (noisy != true)
        lost += int(was_lost.sum())
        back += int((was_lost & (pred == true)).sum())
        was_added = pair & (true == 0) & (noisy > 0)
        added += int(was_added.sum())
        gone += int((was_added & (pred == 0)).sum())
    return {"exact": ok / len(idx), "restored": back / max(lost, 1), "removed": gone / max(added, 1)}


@torch.no_grad()
def loss_by_time(model, graphs, idx, times=(50, 100, 200, 300, 400, 500), seed: int = 4) -> dict:
    """Edge cross-entropy per pair (eval mode) of the molecules ``idx`` noised to each fixed time t."""
    import torch.nn.functional as F

    model.decoder.eval()
    out = {}
    for t in times:
        total, count = 0.0, 0
        for E0, _, pair, logits in noised_predictions(model, graphs, idx, t, torch.Generator().manual_seed(seed + t)):
            total += float(F.cross_entropy(logits[pair], E0[pair].argmax(-1), reduction="sum"))
            count += int(pair.sum())
        out[str(t)] = round(total / count, 4)
    return out


def type_pair_floor(graphs, idx, n_types: int) -> float:
    """The least edge cross-entropy per pair at t = T: entropy of the bond class given the two atom types,
    within each molecule (the best a permutation-equivariant network can do from pure noise)."""
    total, count = 0.0, 0
    for i in idx:
        X, E0, mask = graphs.batch([int(i)], n_types, torch.device("cpu"))
        types, bonds = X[0].argmax(-1).numpy(), E0[0].argmax(-1).numpy()
        n = int(mask.sum())
        off = ~np.eye(n, dtype=bool)
        keys = (types[:n, None] * n_types + types[None, :n])[off] * 8 + bonds[:n, :n][off]
        _, joint = np.unique(keys, return_counts=True)
        _, pair = np.unique(keys // 8, return_counts=True)
        total += -(joint * np.log(joint)).sum() + (pair * np.log(pair)).sum()
        count += int(off.sum())
    return round(total / count, 4)


class WithoutEdgeResidual(torch.nn.Module):
    """The decoder with its output edge residual taken out (logits = MLP output only): an experiment on
    whether the residual copy of the noisy input traps training in copying."""

    def __init__(self, decoder):
        super().__init__()
        self.inner = decoder

    def forward(self, X, E, y, node_mask):
        X_out, E_out, y_out = self.inner(X, E, y, node_mask)
        n = E.shape[1]
        pair = (node_mask[:, :, None] & node_mask[:, None, :] & ~torch.eye(n, dtype=torch.bool))[..., None]
        return X_out, E_out - E[..., :E_out.shape[-1]] * pair, y_out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--molecules", type=int, default=256)
    ap.add_argument("--min-atoms", type=int, default=10)
    ap.add_argument("--max-atoms", type=int, default=22)
    ap.add_argument("--budget", type=float, default=1800, help="training seconds")
    ap.add_argument("--eval-every", type=float, default=300)
    ap.add_argument("--eval-molecules", type=int, default=32)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--sample-steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--model-config", default=str(ROOT / "weights/default/training/model_config.json"))
    ap.add_argument("--set", action="append", default=[], help="override a model config field, k=v (JSON)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="run")
    ap.add_argument("--smiles", default=str(SHARED))
    ap.add_argument("--no-edge-residual", action="store_true", help="experiment: no output edge residual")
    ap.add_argument("--save", default=None, help="write the trained decoder's state (safetensors) here")
    ap.add_argument("--init-from", default=None,
                    help="start from the decoder of these weights (its size, marginals and features win over "
                         "--model-config / --set): can a trained decoder memorise, and how fast?")
    args = ap.parse_args(argv)

    from matchms_diffms.model.config import DiffMSConfig
    from matchms_diffms.model.decoder import GraphTransformer
    from matchms_diffms.model.diffusion import NoiseSchedule, edge_marginals
    from matchms_diffms.train.decoder import diffusion_edge_loss

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = json.loads(Path(args.model_config).read_text())
    for kv in args.set:
        k, v = kv.split("=", 1)
        cfg[k] = json.loads(v)
    config = DiffMSConfig.from_dict(cfg) if hasattr(DiffMSConfig, "from_dict") else DiffMSConfig(**cfg)
    start = None
    if args.init_from:
        from matchms_diffms.train.assembly import load_full_model

        start = load_full_model(args.init_from)
        config = start.config.replace(decoder_dropout=args.dropout)   # its marginals and n/max_n feature
    graphs, _ = load_molecules(Path(args.smiles), args.molecules, args.min_atoms, args.max_atoms, config)
    if start is None:
        config = config.replace(edge_marginals=graphs.edge_marginals(), max_n_nodes=60)

    class M:  # what the sampler needs
        pass
    model = M()
    model.config, model.schedule = config, NoiseSchedule(config.diffusion_steps)
    model.marginals = edge_marginals(config.edge_marginals)
    model.decoder = GraphTransformer(config, dropout=args.dropout)
    if start is not None:
        model.decoder.load_state_dict(start.decoder.state_dict())
    if args.no_edge_residual:
        model.decoder = WithoutEdgeResidual(model.decoder)     # sampling then takes the reference path
    n_params = sum(p.numel() for p in model.decoder.parameters())
    opt = torch.optim.AdamW(model.decoder.parameters(), lr=args.lr, weight_decay=1e-12, amsgrad=True)
    gen = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    eval_idx = np.arange(min(args.eval_molecules, len(graphs)))
    order = np.argsort(graphs.n_atoms, kind="stable")

    curve, step, train_s, losses = [], 0, 0.0, []
    next_eval = 0.0
    floor = type_pair_floor(graphs, eval_idx, config.n_atom_types)
    print(f"{len(graphs)} molecules, {n_params:,} parameters, floor@T {floor}", flush=True)
    while True:
        if train_s >= next_eval:
            t0 = time.time()
            rec = {"step": step, "train_s": round(train_s, 1),
                   "loss": round(float(np.mean(losses[-50:])), 4) if losses else None,
                   "denoise@100": denoise(model, graphs, eval_idx, 100, 1),
                   "denoise@300": denoise(model, graphs, eval_idx, 300, 2),
                   "loss@t": loss_by_time(model, graphs, eval_idx)}
            if step > 0 or start is not None:
                rec["top1"] = reconstruct_top1(model, graphs, eval_idx, args.samples, args.sample_steps, 3)
            rec["eval_s"] = round(time.time() - t0, 1)
            curve.append(rec)
            print(json.dumps(rec), flush=True)
            next_eval += args.eval_every
            if train_s >= args.budget:
                break
        model.decoder.train()
        # size-sorted batches of similar graphs, random window
        start = int(rng.integers(0, max(1, len(graphs) - args.batch_size + 1)))
        idx = order[start:start + args.batch_size].tolist()
        t0 = time.time()
        X, E0, mask = graphs.batch(idx, config.n_atom_types, torch.device("cpu"))
        y = graphs.fingerprints(idx, torch.device("cpu"))
        loss = diffusion_edge_loss(model.decoder, config, model.schedule, model.marginals, X, E0, y, mask, gen,
                                   hydrogens=hydrogens_of(graphs, idx, config))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        train_s += time.time() - t0
        step += 1
    if args.save:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in model.decoder.state_dict().items()}, args.save)
    out = ROOT / "benchmarks" / "results" / f"decoder_overfit_{args.tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "parameters": n_params, "floor@T": floor, "curve": curve},
                              indent=1))


if __name__ == "__main__":
    main()
