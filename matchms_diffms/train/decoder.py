"""Decoder pretraining ("fp2mol" in the DiffMS paper): fingerprint -> molecular graph by edge diffusion.

Data: SMILES files (and optionally the SMILES of training-fold MGF files). Every molecule is

1. parsed; kept only if it is one fragment, has no formal charge and no radical, all its elements are in
   the model vocabulary (``config.atom_types``), 2 <= heavy atoms <= min(max_n_nodes, --max-atoms) and
   MolWt < 1500 (DiffMS's filter);
2. identified by the first block of its InChIKey (ik14): duplicates are dropped (first one kept) and every
   ik14 of the ``--exclude-mgf`` files (validation / test folds) is removed -- exact exclusion;
3. featurised: graph of the non-isomeric SMILES (node classes, bond classes; ``chem.molecules.mol_to_graph``)
   and the binary Morgan fingerprint, radius 2, ``config.cond_dim`` bits (the conditioning y).

A seeded hash of the ik14 puts ``val_fraction`` (2 %) of the molecules into a held-out validation split.
The featurised set is cached as a compact plain ``.npz`` (``graphs.save_graphs``, read with
``allow_pickle=False``) keyed by everything that determines it, and reused on ``--resume`` or by any run
with the same data settings.

Training step (per batch): t ~ U{1..T} per graph; E_t ~ E_0 Qbar_t (marginal transition with the
training set's edge marginals); decoder inputs = [graph, extra structural features, y, t/T]
(``graph_features.network_input``); loss = edge cross-entropy against E_0 over all ordered off-diagonal
pairs of real nodes (``diffusion.edge_cross_entropy``). Validation reports the same loss on the held-out
split with fixed noise (the reference's variational bound is not computed).

The edge marginals and ``max_n_nodes`` of the training molecules are written into the model config.
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from ..model.config import DiffMSConfig
from .assembly import init_fold_merge, load_decoder_state
from .common import COMMON_DEFAULTS, Dist, TrainTask, build_model_config, make_batches, write_json
from .graphs import GraphSet, _featurize_job, file_signature, load_graphs, save_graphs

logger = logging.getLogger("matchms.diffms")

DEFAULTS = {
    **COMMON_DEFAULTS,
    "epochs": 100,              # paper: 100 epochs
    "lr": 1.5e-3,               # DiffMS code default "for training"
    "optimizer": "adamw",
    "weight_decay": 1e-12,
    "schedule": "onecycle",
    "smiles": [],               # SMILES files (.smi / .smi.gz / .txt; first column)
    "smiles_from_mgf": [],      # MGF files whose SMILES join the training molecules (training fold only)
    "exclude_mgf": [],          # MGF files whose structures (ik14) are excluded (val / test folds)
    "max_atoms": None,          # heavy-atom limit besides the model's max_n_nodes
    "min_atoms": 2,             # a 1-atom graph has no edge to learn
    "max_mol_wt": 1500.0,
    "max_molecules": None,      # keep only the first N accepted molecules (quick runs)
    "val_fraction": 0.02,
    "split_seed": None,         # None = seed
    "fp_radius": 2,
    "bucket": "sorted",         # none | sorted (batches of (nearly) equal graph size, see common.make_batches)
    "workers": 1,               # processes for featurisation
    "cache_dir": None,          # default RUN_DIR/cache
    "init_from": None,          # weights / part / run folder or official checkpoint: the starting decoder
    "graphs": None,             # a featurised set (.npz cache file of an earlier run) instead of SMILES inputs
    "env_workers": 1,           # processes that compute the environment features (chem.environments.set_workers)
    "precision": "fp32",        # fp32 | bf16 (autocast of the network pass only, see diffusion_edge_loss)
}

def in_validation_split(ik14: str | bytes, fraction: float, seed: int) -> bool:
    """Seeded hash split: the same molecule always lands in the same split, whatever else is in the data."""
    key = ik14.decode() if isinstance(ik14, bytes) else ik14
    h = int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little")
    return h / 2.0 ** 64 < fraction


def iter_input_smiles(cfg: dict) -> Iterator[tuple[str, str]]:
    """(source, SMILES) of every input molecule, in file order: SMILES files, then MGF SMILES.

    Files whose names announce a validation/test fold are refused (``data.check_source``); spectra files
    go through the fold guard (``encoder.load_spectra``: training-fold records only).
    """
    from ..labelled import read_smiles
    from .data import check_source

    for path in cfg["smiles"]:
        check_source(path, "train")
        for smi in read_smiles(path):
            yield str(path), smi
    if cfg["smiles_from_mgf"]:
        from .encoder import load_spectra

        records, _ = load_spectra(cfg["smiles_from_mgf"], "train")
        for rec in records:
            if rec.smiles:
                yield "spectra: " + ", ".join(map(str, cfg["smiles_from_mgf"])), rec.smiles


def excluded_ik14(paths: Iterable[str]) -> set[str]:
    """First InChIKey blocks of every structure in the given spectra files (from INCHIKEY and from SMILES)."""
    from rdkit import Chem, rdBase

    from ..chem.molecules import inchikey14
    from ..labelled import read_labelled

    keys: set[str] = set()
    for path in paths:
        smiles = set()
        for rec in read_labelled(path):
            if rec.inchikey:
                keys.add(rec.inchikey[:14])
            if rec.smiles:
                smiles.add(rec.smiles)
        with rdBase.BlockLogs():
            for smi in smiles:
                mol = Chem.MolFromSmiles(smi)
                if mol is not None:
                    keys.add(inchikey14(mol))
    return keys


def build_dataset(cfg: dict, config: DiffMSConfig) -> tuple[GraphSet, dict]:
    """Filter, deduplicate, exclude and featurise the input molecules.

    Returns
    -------
    graphs : GraphSet of all kept molecules (with fingerprints, ik14 and hydrogen counts)
    summary : counts per reason and per source
    """
    limit = config.max_n_nodes if cfg["max_atoms"] is None else min(config.max_n_nodes, int(cfg["max_atoms"]))
    params = {"atom_types": list(config.atom_types), "n_bits": int(config.cond_dim),
              "radius": int(cfg["fp_radius"]), "max_atoms": int(limit), "min_atoms": int(cfg["min_atoms"]),
              "max_mol_wt": cfg["max_mol_wt"]}
    exclude = excluded_ik14(cfg["exclude_mgf"])
    logger.info("decoder data: %d structures excluded from %d file(s)", len(exclude), len(cfg["exclude_mgf"]))
    max_mols = cfg.get("max_molecules")

    skipped: dict[str, int] = {}
    per_source: dict[str, int] = {}
    seen: set[str] = set()
    nodes_l, bonds_l, fps, iks, hydrogens = [], [], [], [], []
    n_read = 0

    jobs = ((source, smi, params) for source, smi in iter_input_smiles(cfg))
    workers = int(cfg.get("workers") or 1)
    pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 else None
    try:
        results = pool.imap(_featurize_job, jobs, chunksize=256) if pool else map(_featurize_job, jobs)
        for source, payload, reason in results:
            n_read += 1
            per_source[source] = per_source.get(source, 0) + 1
            if payload is None:
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            ik14, nodes, bonds, fp, n_h = payload
            if ik14 in exclude:
                skipped["excluded_fold"] = skipped.get("excluded_fold", 0) + 1
                continue
            if ik14 in seen:
                skipped["duplicate"] = skipped.get("duplicate", 0) + 1
                continue
            seen.add(ik14)
            nodes_l.append(nodes)
            bonds_l.append(bonds)
            fps.append(fp)
            iks.append(ik14)
            hydrogens.append(n_h)
            if max_mols is not None and len(iks) >= int(max_mols):
                break
    finally:
        if pool is not None:
            pool.terminate()
    if not iks:
        raise ValueError(f"no usable molecule among {n_read} inputs (skipped: {skipped})")
    graphs = GraphSet.from_records(nodes_l, bonds_l, fps, iks, hydrogens)
    summary = {"read": n_read, "kept": len(iks), "skipped": skipped, "excluded_structures": len(exclude),
               "inputs_per_source": per_source, "max_atoms": int(limit)}
    return graphs, summary


def dataset_key(cfg: dict, config: DiffMSConfig) -> str:
    """Hash of everything the featurised decoder dataset depends on."""
    key = {"version": 2, "smiles": [file_signature(p) for p in cfg["smiles"]],
           "smiles_from_mgf": [file_signature(p) for p in cfg["smiles_from_mgf"]],
           "exclude_mgf": [file_signature(p) for p in cfg["exclude_mgf"]],
           "atom_types": list(config.atom_types), "cond_dim": config.cond_dim,
           "max_n_nodes": config.max_n_nodes,
           **{k: cfg.get(k) for k in ("max_atoms", "min_atoms", "max_mol_wt", "max_molecules", "fp_radius")}}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def load_or_build_dataset(cfg: dict, config: DiffMSConfig, run_dir: Path, dist: Dist):
    """The featurised dataset from the cache (rank 0 builds it first if needed) and its validation split.

    The split is not part of the cache (runs with other seeds or fractions share the featurised file).
    Returns ``(graphs, is_val, summary)``.
    """
    if cfg.get("graphs"):
        # A featurised set prepared elsewhere (the cache file of an earlier run, e.g. carried to a GPU machine).
        path = Path(cfg["graphs"])
        graphs, summary = load_graphs(path)
        if graphs.fp.shape[1] * 8 != config.cond_dim:
            raise ValueError(f"{path}: fingerprints of {graphs.fp.shape[1] * 8} bits, the model needs "
                             f"{config.cond_dim}")
        return _split(graphs, cfg, {**summary, "graphs": str(path)})
    cache_dir = Path(cfg["cache_dir"]) if cfg.get("cache_dir") else run_dir / "cache"
    path = cache_dir / f"decoder-data-{dataset_key(cfg, config)}.npz"
    if dist.is_main and not path.exists():
        logger.info("featurising decoder training molecules into %s", path)
        graphs, summary = build_dataset(cfg, config)
        save_graphs(path, graphs, summary)
    dist.barrier()
    graphs, summary = load_graphs(path)
    return _split(graphs, cfg, {**summary, "cache": str(path)})


def _split(graphs: GraphSet, cfg: dict, summary: dict):
    """``(graphs, is_val, summary)`` with the seeded hash split of ``load_or_build_dataset``."""
    split_seed = int(cfg["seed"] if cfg.get("split_seed") is None else cfg["split_seed"])
    is_val = np.array([in_validation_split(k, float(cfg["val_fraction"]), split_seed) for k in graphs.ik14],
                      dtype=bool)
    if is_val.all():
        raise ValueError("every molecule fell into the validation split; lower val_fraction")
    summary = {**summary, "train": int((~is_val).sum()), "val": int(is_val.sum())}
    return graphs, is_val, summary


# ------------------------------------------------------------------------------------------ the loss
def diffusion_edge_loss(decoder: torch.nn.Module, config: DiffMSConfig, schedule, marginals: torch.Tensor,
                        X: torch.Tensor, E0: torch.Tensor, y: torch.Tensor, node_mask: torch.Tensor,
                        generator: torch.Generator, reduction: str = "mean", precision: str = "fp32",
                        hydrogens: torch.Tensor | None = None):
    """Edge cross-entropy of one noised batch (``diffusion.edge_cross_entropy`` at a random time per graph).

    Parameters
    ----------
    decoder : GraphTransformer
    X : (B, n, A) atoms; E0 : (B, n, n, 5) clean edges; y : (B, cond) conditioning; node_mask : (B, n)
    generator : draws t ~ U{1..T}, the edge noise and the non-LCC feature noise
    reduction : ``"mean"`` (scalar over all entries) or ``"sum_count"`` (sum, number of entries)
    precision : ``"fp32"`` or ``"bf16"``: autocast of the network pass alone (noising, the structural
        features -- cycle counts by matrix powers would lose exactness in bf16 -- and the loss stay float32)
    hydrogens : (B,) hydrogen counts of the molecules (decoders with ``config.hydrogen_features``)
    """
    from ..model.diffusion import edge_cross_entropy, noise_edges
    from ..model.graph_features import network_input

    B = X.shape[0]
    T = schedule.T
    t_int = torch.randint(1, T + 1, (B,), generator=generator, device=generator.device).to(X.device)
    E_t = noise_edges(E0, t_int, marginals, schedule, node_mask, generator)          # (B, n, n, 5)
    X_in, E_in, y_in = network_input(X, E_t, y, node_mask, (t_int.float() / T).unsqueeze(-1), config,
                                     generator, hydrogens=hydrogens)
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    with torch.autocast(X.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        _, E_logits, _ = decoder(X_in, E_in, y_in, node_mask)                         # (B, n, n, 5)
    loss = edge_cross_entropy(E_logits.float(), E0, node_mask)
    if reduction == "mean":
        return loss
    count = float(((E0 != 0).any(-1) & node_mask[:, :, None] & node_mask[:, None, :]).sum())
    return loss * count, count


# ------------------------------------------------------------------------------------------ the task
class DecoderTask(TrainTask):
    name = "decoder"
    val_keys = ("loss",)

    def setup(self, cfg: dict, run_dir: Path, dist: Dist) -> None:
        from ..model.decoder import GraphTransformer
        from ..model.diffusion import NoiseSchedule, edge_marginals

        if not cfg["smiles"] and not cfg["smiles_from_mgf"] and not cfg.get("graphs"):
            raise ValueError("train decoder needs molecules: --smiles FILE and/or --smiles-from-mgf FILE, "
                             "or a prepared --graphs FILE")
        from ..chem.environments import set_workers

        self.device = dist.device
        self.precision = cfg.get("precision") or "fp32"
        set_workers(cfg.get("env_workers") or 1)
        base = build_model_config(cfg["model"])
        start_state = start_config = None
        if cfg.get("init_from"):
            from .assembly import DECODER_FIELDS, load_part

            start_state, start_config = load_part(cfg["init_from"], "decoder")
            # The architecture comes from the starting weights; the data-derived fields (edge marginals,
            # largest graph) are recomputed from this run's molecules below. The run's model config may
            # switch on the environment features (the input layers grow, see ``load_decoder_state``) and set
            # the dropout.
            own = {k for k in ("environment_features", "environment_radius", "hydrogen_features",
                               "decoder_dropout") if k in cfg["model"]}
            base = base.replace(**{k: getattr(start_config, k) for k in DECODER_FIELDS
                                   if k not in ("edge_marginals", "max_n_nodes") and k not in own})
        graphs, is_val, summary = load_or_build_dataset(cfg, base, run_dir, dist)
        if base.hydrogen_features and graphs.hydrogens is None:
            raise ValueError(f"{summary.get('graphs') or summary.get('cache')}: featurised without hydrogen "
                             "counts (an older version); a decoder with hydrogen features needs them: "
                             "featurise again (a new cache file) instead of --graphs")
        self.train_set = graphs.subset(np.flatnonzero(~is_val))
        self.val_set = graphs.subset(np.flatnonzero(is_val))
        self.n_train, self.n_val = len(self.train_set), len(self.val_set)
        marg = self.train_set.edge_marginals()
        max_n = int(graphs.n_atoms.max())
        self.config = base.replace(edge_marginals=[round(m, 8) for m in marg], max_n_nodes=max_n)
        if "name" not in cfg["model"]:
            self.config = self.config.replace(name=run_dir.name)
        if dist.is_main:
            write_json(run_dir / "model_config.json", self.config.to_dict())
        self.data_summary = {**summary, "edge_marginals": self.config.edge_marginals, "max_n_nodes": max_n,
                             "smiles": [str(p) for p in cfg["smiles"]],
                             "smiles_from_mgf": [str(p) for p in cfg["smiles_from_mgf"]],
                             "exclude_mgf": [str(p) for p in cfg["exclude_mgf"]]}
        self.schedule = NoiseSchedule(self.config.diffusion_steps)
        self.marginals = edge_marginals(self.config.edge_marginals).to(self.device)
        torch.manual_seed(int(cfg["seed"]))
        self.model = GraphTransformer(self.config)
        if start_state is not None:
            # Same architecture (the fields above came from it); only the data-derived marginals may differ.
            load_decoder_state(self.model, start_state, start_config, self.config)
            self.data_summary["init_from"] = str(cfg["init_from"])

    def batches(self, epoch: int, cfg: dict, dist: Dist) -> list[list[int]]:
        return make_batches(self.n_train, int(cfg["batch_size"]), int(cfg["seed"]), epoch,
                            sizes=self.train_set.n_atoms, bucket=cfg["bucket"], world_size=dist.world_size)

    def _inputs(self, graphs: GraphSet, idx):
        X, E0, mask = graphs.batch(idx, self.config.n_atom_types, self.device)
        y = graphs.fingerprints(idx, self.device)
        h = graphs.hydrogen_counts(idx, self.device) if self.config.hydrogen_features else None
        return X, E0, y, mask, h

    def loss(self, indices, generator):
        X, E0, y, mask, h = self._inputs(self.train_set, indices)
        return diffusion_edge_loss(self.model, self.config, self.schedule, self.marginals, X, E0, y, mask,
                                   generator, precision=self.precision, hydrogens=h), {}

    def validate(self, indices, generator):
        # float32 whatever the training precision: held-out losses stay comparable across runs
        X, E0, y, mask, h = self._inputs(self.val_set, indices)
        s, c = diffusion_edge_loss(self.model, self.config, self.schedule, self.marginals, X, E0, y, mask,
                                   generator, reduction="sum_count", hydrogens=h)
        return {"loss": (float(s), c)}

    def export(self, directory: Path, info: dict) -> None:
        from ..model.diffms import DiffMS
        from ..weights import save_weights
        from .common import write_model_card

        torch.manual_seed(0)
        full = DiffMS(self.config)
        full.decoder.load_state_dict(self.model.state_dict())
        init_fold_merge(full.merge_function)
        info = {**info, "trained": ["decoder"], "untrained": ["encoder"], "merge": "fold map"}
        save_weights(full, directory, info)
        write_model_card(directory, info, self.config)
