"""Decoder pretraining ("fp2mol", diffms-model.md 13.1): fingerprint -> molecular graph by edge diffusion.

Data: SMILES files (and optionally the SMILES of training-fold MGF files). Every molecule is

1. parsed; kept only if it is one fragment, has no formal charge and no radical, all its elements are in
   the model vocabulary (``config.atom_types``), 2 <= heavy atoms <= min(max_n_nodes, --max-atoms) and
   MolWt < 1500 (DiffMS's filter);
2. identified by the first block of its InChIKey (ik14): duplicates are dropped (first one kept) and every
   ik14 of the ``--exclude-mgf`` files (validation / test folds) is removed -- exact exclusion;
3. featurised: graph of the non-isomeric SMILES (node classes, bond classes; ``chem.molecules.mol_to_graph``)
   and the binary Morgan fingerprint, radius 2, ``config.cond_dim`` bits (the conditioning y).

A seeded hash of the ik14 puts ``val_fraction`` (2 %) of the molecules into a held-out validation split.
The featurised set is cached as a plain ``.npz`` (read with ``allow_pickle=False``) keyed by everything
that determines it, and reused on ``--resume`` or by any run with the same data settings.

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
import torch.nn.functional as F

from ..model.config import DiffMSConfig
from .common import COMMON_DEFAULTS, Dist, TrainTask, build_model_config, make_batches, write_json

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
    "init_from": None,          # weights folder / official checkpoint whose decoder is the starting point
    "graphs": None,             # a featurised set (.npz cache file of an earlier run) instead of SMILES inputs
}

EDGE_TYPES = 5


# ------------------------------------------------------------------------------------------ featurisation
def featurize_smiles(smiles: str, atom_types: list[str], n_bits: int, radius: int, max_atoms: int,
                     min_atoms: int = 2, max_mol_wt: float = 1500.0):
    """One SMILES -> ``(ik14, nodes, bonds, packed_fp)`` or ``(None, reason)``.

    ``nodes`` (n,) int8 atom classes, ``bonds`` (m, 3) int16 rows (i, j, class) with i < j,
    ``packed_fp`` (n_bits / 8,) uint8 (``np.packbits`` of the binary Morgan fingerprint).
    Reasons: ``invalid_smiles``, ``multiple_fragments``, ``charged``, ``radical``, ``unsupported_element``,
    ``too_many_atoms``, ``too_few_atoms``, ``too_heavy``, ``unsupported_bond``.
    """
    from rdkit import Chem, rdBase
    from rdkit.Chem import Descriptors

    from ..chem.molecules import MoleculeError, inchikey14, mol_to_graph, morgan_fingerprint

    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles) if smiles else None
    if mol is None or mol.GetNumAtoms() == 0:
        return None, "invalid_smiles"
    if len(Chem.GetMolFrags(mol)) != 1:
        return None, "multiple_fragments"
    vocab = set(atom_types)
    for atom in mol.GetAtoms():
        if atom.GetFormalCharge() != 0:
            return None, "charged"
        if atom.GetNumRadicalElectrons() != 0:
            return None, "radical"
        if atom.GetSymbol() not in vocab:
            return None, "unsupported_element"
    n = mol.GetNumAtoms()
    if n > max_atoms:
        return None, "too_many_atoms"
    if n < min_atoms:
        return None, "too_few_atoms"
    if max_mol_wt and Descriptors.MolWt(mol) >= max_mol_wt:
        return None, "too_heavy"
    try:
        nodes, adj = mol_to_graph(mol, atom_types)
    except MoleculeError as err:
        return None, "unsupported_bond" if "bond type" in str(err) else "unsupported_element"
    ik14 = inchikey14(mol)
    if not ik14:
        return None, "invalid_smiles"
    i, j = np.nonzero(np.triu(adj, k=1))
    bonds = np.stack([i, j, adj[i, j]], axis=1).astype(np.int16)
    fp = morgan_fingerprint(mol, n_bits=n_bits, radius=radius)
    return (ik14, nodes.astype(np.int8), bonds, np.packbits(fp)), None


def _featurize_job(args):
    source, smiles, params = args
    return source, *featurize_smiles(smiles, **params)


class GraphSet:
    """Molecular graphs + binary fingerprints in flat numpy arrays.

    Attributes
    ----------
    n_atoms : (N,) int64
    atom_offsets : (N + 1,) int64 into ``atoms`` (int8 atom classes)
    bond_offsets : (N + 1,) int64 into ``bonds`` ((M, 3) int16: i, j, class with i < j)
    fp : (N, n_bits / 8) uint8 packed fingerprints (or None)
    ik14 : (N,) bytes of 14 characters (or None)
    """

    def __init__(self, n_atoms, atoms, atom_offsets, bonds, bond_offsets, fp=None, ik14=None):
        self.n_atoms = np.asarray(n_atoms, dtype=np.int64)
        self.atoms = np.asarray(atoms, dtype=np.int8)
        self.atom_offsets = np.asarray(atom_offsets, dtype=np.int64)
        self.bonds = np.asarray(bonds, dtype=np.int16).reshape(-1, 3)
        self.bond_offsets = np.asarray(bond_offsets, dtype=np.int64)
        self.fp = None if fp is None else np.asarray(fp, dtype=np.uint8)
        self.ik14 = ik14

    def __len__(self) -> int:
        return len(self.n_atoms)

    @classmethod
    def from_records(cls, nodes_list, bonds_list, fps=None, ik14s=None) -> "GraphSet":
        n_atoms = np.array([len(x) for x in nodes_list], dtype=np.int64)
        n_bonds = np.array([len(b) for b in bonds_list], dtype=np.int64)
        atoms = np.concatenate(nodes_list) if len(nodes_list) else np.zeros(0, np.int8)
        bonds = np.concatenate(bonds_list) if len(bonds_list) else np.zeros((0, 3), np.int16)
        fp = np.stack(fps) if fps is not None and len(fps) else None
        ik = np.array(ik14s, dtype="S14") if ik14s is not None else None
        return cls(n_atoms, atoms, np.concatenate([[0], np.cumsum(n_atoms)]), bonds,
                   np.concatenate([[0], np.cumsum(n_bonds)]), fp, ik)

    def subset(self, idx: np.ndarray) -> "GraphSet":
        """The graphs ``idx`` (in that order) as a new set (vectorised; fast for millions of graphs)."""
        idx = np.asarray(idx, dtype=np.int64)
        n_bonds = np.diff(self.bond_offsets)[idx]
        atoms = self.atoms[_ranges(self.atom_offsets[idx], self.n_atoms[idx])]
        bonds = self.bonds[_ranges(self.bond_offsets[idx], n_bonds)]
        return GraphSet(self.n_atoms[idx], atoms, np.concatenate([[0], np.cumsum(self.n_atoms[idx])]), bonds,
                        np.concatenate([[0], np.cumsum(n_bonds)]),
                        None if self.fp is None else self.fp[idx], None if self.ik14 is None else self.ik14[idx])

    def nodes(self, i: int) -> np.ndarray:
        return self.atoms[self.atom_offsets[i]:self.atom_offsets[i + 1]]

    def bond_rows(self, i: int) -> np.ndarray:
        return self.bonds[self.bond_offsets[i]:self.bond_offsets[i + 1]]

    # ---------------------------------------------------------------- statistics
    def edge_marginals(self, n_edge_types: int = EDGE_TYPES) -> list[float]:
        """Edge-class marginal as the reference computes it (diffms-model.md 10): every bond counted in both
        directions, no-bond = sum n(n-1) - directed bonds; normalised."""
        counts = np.zeros(n_edge_types, dtype=np.float64)
        cls = self.bonds[:, 2].astype(np.int64)
        np.add.at(counts, cls, 2.0)
        counts[0] = float((self.n_atoms * (self.n_atoms - 1)).sum()) - counts[1:].sum()
        if counts.sum() <= 0:
            raise ValueError("no edges in the training graphs: cannot compute edge marginals")
        return (counts / counts.sum()).tolist()

    # ---------------------------------------------------------------- batches
    def batch(self, idx: list[int], n_atom_types: int, device: torch.device):
        """Dense padded batch (torch_geometric's ``to_dense_batch`` / ``to_dense_adj`` over the sparse graphs).

        Returns
        -------
        X : (B, n, A) float one-hot atoms (padded rows zero)
        E : (B, n, n, 5) float one-hot clean edges; off-diagonal real pairs one-hot (no-bond = class 0),
            diagonal and padded entries all-zero
        node_mask : (B, n) bool
        """
        from torch_geometric.utils import to_dense_adj, to_dense_batch

        part = self.subset(np.asarray(list(idx), dtype=np.int64))
        B = len(part)
        n = int(part.n_atoms.max())
        graph_of_atom = torch.from_numpy(np.repeat(np.arange(B), part.n_atoms))           # (N,)
        atoms = torch.from_numpy(part.atoms.astype(np.int64))                              # (N,)
        X, node_mask = to_dense_batch(F.one_hot(atoms, n_atom_types).float(), graph_of_atom,
                                      batch_size=B, max_num_nodes=n)                      # (B, n, A), (B, n)
        bonds = torch.from_numpy(part.bonds.astype(np.int64))                              # (M, 3) local
        offset = torch.from_numpy(np.repeat(part.atom_offsets[:-1], np.diff(part.bond_offsets)))
        ends = bonds[:, :2] + offset[:, None]                                              # (M, 2) global
        edge_index = torch.cat([ends, ends.flip(1)]).T                                     # (2, 2M)
        E_cls = to_dense_adj(edge_index, graph_of_atom, bonds[:, 2].repeat(2).float(), batch_size=B,
                             max_num_nodes=n).long()                                       # (B, n, n)
        E = F.one_hot(E_cls, EDGE_TYPES).float()                                           # (B, n, n, 5)
        pair = node_mask[:, :, None] & node_mask[:, None, :]
        pair &= ~torch.eye(n, dtype=torch.bool)[None]
        E = E * pair[..., None]
        return X.to(device), E.to(device), node_mask.to(device)

    def fingerprints(self, idx: list[int], device: torch.device) -> torch.Tensor:
        """(B, n_bits) float 0/1 fingerprints."""
        bits = np.unpackbits(self.fp[np.asarray(idx, dtype=np.int64)], axis=1)
        return torch.from_numpy(bits.astype(np.float32)).to(device)

    # ---------------------------------------------------------------- storage
    def arrays(self, prefix: str = "") -> dict:
        out = {f"{prefix}n_atoms": self.n_atoms, f"{prefix}atoms": self.atoms,
               f"{prefix}atom_offsets": self.atom_offsets, f"{prefix}bonds": self.bonds,
               f"{prefix}bond_offsets": self.bond_offsets}
        if self.fp is not None:
            out[f"{prefix}fp"] = self.fp
        if self.ik14 is not None:
            out[f"{prefix}ik14"] = np.asarray(self.ik14, dtype="S14")
        return out

    @classmethod
    def from_arrays(cls, arrays, prefix: str = "") -> "GraphSet":
        get = (lambda k: arrays[prefix + k] if prefix + k in arrays else None)
        return cls(get("n_atoms"), get("atoms"), get("atom_offsets"), get("bonds"), get("bond_offsets"),
                   get("fp"), get("ik14"))


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + l)`` for every (start, length) pair, without a Python loop."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    block_start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return np.arange(total) - np.repeat(block_start - np.asarray(starts, dtype=np.int64), lengths)


def save_npz(path: Path, arrays: dict, meta: dict) -> None:
    """Write arrays + a JSON metadata string into ``path`` atomically (no pickled objects)."""
    from ..files import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: np.savez(tmp, **arrays, meta=np.array(json.dumps(meta, sort_keys=True))))


def load_npz(path: Path) -> tuple[dict, dict]:
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if k != "meta"}
        meta = json.loads(str(data["meta"]))
    return arrays, meta


def _file_signature(path: str) -> list:
    p = Path(path).resolve()
    st = p.stat()
    return [str(p), st.st_size, int(st.st_mtime)]


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
    from . import data

    for path in cfg["smiles"]:
        data.check_source(path, "train")
        for smi in data.read_smiles(path):
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

    from . import data
    from ..chem.molecules import inchikey14

    keys: set[str] = set()
    for path in paths:
        smiles = set()
        for rec in data.read_labelled(path):
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
    graphs : GraphSet of all kept molecules (with fingerprints and ik14)
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
    nodes_l, bonds_l, fps, iks = [], [], [], []
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
            ik14, nodes, bonds, fp = payload
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
            if max_mols is not None and len(iks) >= int(max_mols):
                break
    finally:
        if pool is not None:
            pool.terminate()
    if not iks:
        raise ValueError(f"no usable molecule among {n_read} inputs (skipped: {skipped})")
    graphs = GraphSet.from_records(nodes_l, bonds_l, fps, iks)
    summary = {"read": n_read, "kept": len(iks), "skipped": skipped, "excluded_structures": len(exclude),
               "inputs_per_source": per_source, "max_atoms": int(limit)}
    return graphs, summary


def dataset_key(cfg: dict, config: DiffMSConfig) -> str:
    """Hash of everything the featurised decoder dataset depends on."""
    key = {"version": 1, "smiles": [_file_signature(p) for p in cfg["smiles"]],
           "smiles_from_mgf": [_file_signature(p) for p in cfg["smiles_from_mgf"]],
           "exclude_mgf": [_file_signature(p) for p in cfg["exclude_mgf"]],
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
        arrays, summary = load_npz(path)
        if arrays["fp"].shape[1] * 8 != config.cond_dim:
            raise ValueError(f"{path}: fingerprints of {arrays['fp'].shape[1] * 8} bits, the model needs "
                             f"{config.cond_dim}")
        return _split(GraphSet.from_arrays(arrays), cfg, {**summary, "graphs": str(path)})
    cache_dir = Path(cfg["cache_dir"]) if cfg.get("cache_dir") else run_dir / "cache"
    path = cache_dir / f"decoder-data-{dataset_key(cfg, config)}.npz"
    if dist.is_main and not path.exists():
        logger.info("featurising decoder training molecules into %s", path)
        graphs, summary = build_dataset(cfg, config)
        save_npz(path, graphs.arrays(), summary)
    dist.barrier()
    arrays, summary = load_npz(path)
    return _split(GraphSet.from_arrays(arrays), cfg, {**summary, "cache": str(path)})


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
                        generator: torch.Generator, reduction: str = "mean"):
    """Edge cross-entropy of one noised batch (diffms-model.md 13.1).

    Parameters
    ----------
    decoder : GraphTransformer
    X : (B, n, A) atoms; E0 : (B, n, n, 5) clean edges; y : (B, cond) conditioning; node_mask : (B, n)
    generator : draws t ~ U{1..T}, the edge noise and the non-LCC feature noise
    reduction : ``"mean"`` (scalar over all entries) or ``"sum_count"`` (sum, number of entries)
    """
    from ..model.diffusion import edge_cross_entropy, noise_edges
    from ..model.graph_features import network_input

    B = X.shape[0]
    T = schedule.T
    t_int = torch.randint(1, T + 1, (B,), generator=generator, device=generator.device).to(X.device)
    E_t = noise_edges(E0, t_int, marginals, schedule, node_mask, generator)          # (B, n, n, 5)
    X_in, E_in, y_in = network_input(X, E_t, y, node_mask, (t_int.float() / T).unsqueeze(-1), config,
                                     generator)
    _, E_logits, _ = decoder(X_in, E_in, y_in, node_mask)                             # (B, n, n, 5)
    loss = edge_cross_entropy(E_logits, E0, node_mask)
    if reduction == "mean":
        return loss
    count = float(((E0 != 0).any(-1) & node_mask[:, :, None] & node_mask[:, None, :]).sum())
    return loss * count, count


def load_decoder_state(model: torch.nn.Module, state: dict, old: DiffMSConfig, new: DiffMSConfig) -> None:
    """Load a decoder state into ``model``; a start without environment features gains them.

    When ``new`` has ``environment_features`` and ``old`` has not, the first layers of the X and y input MLPs
    get zero columns for the new inputs (the env columns are appended to X_in and sit just before t in y_in),
    so the widened network computes exactly what the old one did until training moves those weights.
    Any other shape difference is an error.
    """
    own = model.state_dict()
    widen = new.environment_features and not old.environment_features
    for key, value in state.items():
        target = own[key]
        if value.shape == target.shape:
            own[key] = value
        elif widen and key == "mlp_in_X.0.weight":
            own[key] = torch.cat([value, value.new_zeros(target.shape[0], target.shape[1] - value.shape[1])], 1)
        elif widen and key == "mlp_in_y.0.weight":
            extra = value.new_zeros(target.shape[0], target.shape[1] - value.shape[1])
            own[key] = torch.cat([value[:, :-1], extra, value[:, -1:]], 1)
        else:
            raise ValueError(f"decoder parameter {key}: starting weights have shape {tuple(value.shape)}, the "
                             f"model {tuple(target.shape)}")
    model.load_state_dict(own)


# ------------------------------------------------------------------------------------------ fold map
def init_fold_merge(merge: torch.nn.Linear) -> bool:
    """Initialise the merge layer Linear(fp_bits -> cond_dim) as the fold map W[j, j + k*cond_dim] = 1.

    RDKit's Morgan bit of an environment is its hash modulo the fingerprint length, so the 2048-bit
    fingerprint is the 4096-bit one folded: bit j of the short one = bit j OR bit j + 2048 of the long one.
    With a binary 4096-bit input this linear map gives exactly the 2048-bit fingerprint the decoder was
    pretrained on, except where both halves are set (then 2 instead of 1: a linear layer cannot express OR;
    such collisions are rare). With encoder probabilities it gives the folded probabilities, so fine-tuning
    starts from a consistent encoder -> decoder hand-over instead of a random projection.

    Returns False (layer left unchanged) when the input width is not a multiple of the output width.
    """
    n_in, n_out = merge.in_features, merge.out_features
    if n_in % n_out:
        logger.warning("merge layer %d -> %d is not a fold; keeping its random initialisation", n_in, n_out)
        return False
    with torch.no_grad():
        merge.weight.zero_()
        cols = torch.arange(n_in)
        merge.weight[cols % n_out, cols] = 1.0
        merge.bias.zero_()
    return True


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
        self.device = dist.device
        base = build_model_config(cfg["model"])
        start = None
        if cfg.get("init_from"):
            from .finetune import DECODER_FIELDS, load_full_model

            start = load_full_model(cfg["init_from"])
            # The architecture comes from the starting weights; the data-derived fields (edge marginals,
            # largest graph) are recomputed from this run's molecules below. The run's model config may
            # switch on the environment features (the input layers grow, see ``load_decoder_state``) and set
            # the dropout.
            own = {k for k in ("environment_features", "environment_radius", "decoder_dropout")
                   if k in cfg["model"]}
            base = base.replace(**{k: getattr(start.config, k) for k in DECODER_FIELDS
                                   if k not in ("edge_marginals", "max_n_nodes") and k not in own})
        graphs, is_val, summary = load_or_build_dataset(cfg, base, run_dir, dist)
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
        if start is not None:
            # Same architecture (the fields above came from it); only the data-derived marginals may differ.
            load_decoder_state(self.model, start.decoder.state_dict(), start.config, self.config)
            self.data_summary["init_from"] = str(cfg["init_from"])

    def batches(self, epoch: int, cfg: dict, dist: Dist) -> list[list[int]]:
        return make_batches(self.n_train, int(cfg["batch_size"]), int(cfg["seed"]), epoch,
                            sizes=self.train_set.n_atoms, bucket=cfg["bucket"], world_size=dist.world_size)

    def _inputs(self, graphs: GraphSet, idx):
        X, E0, mask = graphs.batch(idx, self.config.n_atom_types, self.device)
        y = graphs.fingerprints(idx, self.device)
        return X, E0, y, mask

    def loss(self, indices, generator):
        X, E0, y, mask = self._inputs(self.train_set, indices)
        return diffusion_edge_loss(self.model, self.config, self.schedule, self.marginals, X, E0, y, mask,
                                   generator), {}

    def validate(self, indices, generator):
        X, E0, y, mask = self._inputs(self.val_set, indices)
        s, c = diffusion_edge_loss(self.model, self.config, self.schedule, self.marginals, X, E0, y, mask,
                                   generator, reduction="sum_count")
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
