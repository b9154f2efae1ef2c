"""Encoder pretraining (as in the DiffMS paper, MIST-style): spectrum + formula -> Morgan fingerprint.

Data: labelled spectra of the TRAINING fold (MGF, MassSpecGym TSV or MIST folder; ``data.load_training_set``
refuses val/test files and records). Each spectrum is

1. checked against the model (``data.filter_for_model``: valid single-fragment uncharged structure, formula
   consistent with it, adduct with an encoder slot; by default every element the 18-element formula
   embedding knows is accepted, ``decoder_vocab_only`` restricts to the decoder's atom types) -- skips are
   counted per reason in the log's start record;
2. annotated with sub-formulae of the precursor formula (``chem.subformulae``; cached on disk by
   ``data.AnnotationCache``, so later runs and resumes skip the work);
3. turned into encoder tokens (``model.tokens.tokens_from_annotation``; one per annotated peak + CLS); a
   spectrum without annotated peaks keeps its CLS token (like the reference);
4. paired with its target: the binary Morgan fingerprint, radius 2, ``fp_sizes[-1]`` (4096) bits.

The featurised set (tokens + packed fingerprints) is cached as a plain ``.npz``.

Loss (MIST ``compute_loss`` settings of the paper, without the MAGMa term): cosine loss 1 - cos(p, target)
on p4096, plus ``iterative_weight`` (0.4) x the sum of the same loss on the intermediate predictions
p2048, p1024, p512, p256 against the target OR-folded to that size (bit j of the folded target = OR of bits
j, j + size, j + 2 size, ...; modulo folding as RDKit's hashed bits). The MAGMa fragment term (weight 8 in
MIST) needs MAGMa fragment annotations that our data does not have, so the fragment head stays untrained
(it is not used by DiffMS).

Padding uses real masking (our configs have ``reference_padding=False``), so a spectrum's prediction does
not depend on its batch. Optional augmentation (off by default; MIST used augment 0.5 / remove 0.5 /
intensity 0.1): with probability ``augment_prob`` a spectrum loses each fragment token with probability
``remove_prob`` and has each remaining intensity multiplied, with probability ``inten_prob``, by
exp(0.3 N(0, 1)) (clipped to [0, 1]). Validation spectra (``--val``, the val fold; METRICS ONLY, never
trained on) give ``val_loss``, ``val_cosine`` and ``val_tanimoto`` (fingerprint thresholded at 0.5).
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..model.config import DiffMSConfig
from .common import COMMON_DEFAULTS, Dist, TrainTask, build_model_config, make_batches, write_json
from .assembly import init_fold_merge
from .graphs import GraphSet, file_signature, load_npz, save_npz

logger = logging.getLogger("matchms.diffms")

DEFAULTS = {
    **COMMON_DEFAULTS,
    "epochs": 100,              # paper: 100 epochs
    "lr": 7.7e-4,               # MIST
    "optimizer": "radam",       # paper
    "weight_decay": 1e-7,       # MIST
    "schedule": "constant",     # MIST uses a constant rate (with early stopping)
    "batch_size": 128,          # MIST
    "train": [],                # training-fold spectra: MGF / MassSpecGym TSV / MIST folder
    "val": [],                  # validation-fold spectra, metrics only
    "split_file": None,         # MIST split table for MIST folders
    "annotation_cache": None,   # default RUN_DIR/cache/subformulae
    "ppm_tol": 20.0,
    "decoder_vocab_only": False,
    "max_spectra": None,        # use only the first N usable training spectra (quick runs)
    "iterative_weight": 0.4,
    "augment_prob": 0.0,
    "remove_prob": 0.5,
    "inten_prob": 0.1,
    "bucket": "sorted",         # none | sorted: batches of spectra with similar token counts (padding is
                                # masked exactly, so this only saves time: the pairwise features cost N^2)
    "workers": 1,               # processes for the subformula annotation
    "cache_dir": None,          # default RUN_DIR/cache
}

TOKEN_KEYS = ("form_vec", "types", "ion_vec", "intens")


# ------------------------------------------------------------------------------------------ token store
class SpectrumSet:
    """Encoder tokens of many spectra in flat arrays (+ packed target fingerprints, + optional graphs).

    ``form_vec`` (T, 18) uint8, ``types`` (T,) int8, ``ion_vec`` (T,) int8, ``intens`` (T,) float32,
    ``offsets`` (N + 1,) int64; ``fp`` (N, bits / 8) uint8; ``graphs`` a ``GraphSet`` or None.
    """

    def __init__(self, form_vec, types, ion_vec, intens, offsets, fp=None, graphs: GraphSet | None = None,
                 ids=None):
        self.form_vec = np.asarray(form_vec, dtype=np.uint8).reshape(-1, 18)
        self.types = np.asarray(types, dtype=np.int8)
        self.ion_vec = np.asarray(ion_vec, dtype=np.int8)
        self.intens = np.asarray(intens, dtype=np.float32)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.fp = None if fp is None else np.asarray(fp, dtype=np.uint8)
        self.graphs = graphs
        self.ids = ids

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def from_tokens(cls, token_list: list[dict], fps=None, graphs=None, ids=None) -> "SpectrumSet":
        lengths = np.array([int(t["num_peaks"]) for t in token_list], dtype=np.int64)
        cat = (lambda k: np.concatenate([t[k] for t in token_list]) if token_list else np.zeros(0))
        form = cat("form_vec")
        if len(form) and (form.min() < 0 or form.max() > 255):
            raise ValueError("element counts outside 0..255 cannot be stored")
        return cls(form.astype(np.uint8) if len(form) else np.zeros((0, 18), np.uint8), cat("types"),
                   cat("ion_vec"), cat("intens"), np.concatenate([[0], np.cumsum(lengths)]),
                   None if fps is None else np.stack(fps), graphs, ids)

    def tokens(self, i: int) -> dict:
        a, b = self.offsets[i], self.offsets[i + 1]
        return {"form_vec": self.form_vec[a:b].astype(np.float32), "types": self.types[a:b].astype(np.int64),
                "ion_vec": self.ion_vec[a:b].astype(np.int64), "intens": self.intens[a:b].copy(),
                "num_peaks": int(b - a)}

    def fingerprints(self, idx, device) -> torch.Tensor:
        bits = np.unpackbits(self.fp[np.asarray(idx, dtype=np.int64)], axis=1)
        return torch.from_numpy(bits.astype(np.float32)).to(device)

    def arrays(self, prefix: str = "") -> dict:
        out = {f"{prefix}form_vec": self.form_vec, f"{prefix}types": self.types, f"{prefix}ion_vec": self.ion_vec,
               f"{prefix}intens": self.intens, f"{prefix}offsets": self.offsets}
        if self.fp is not None:
            out[f"{prefix}fp"] = self.fp
        if self.graphs is not None:
            out.update(self.graphs.arrays(prefix + "g_"))
        if self.ids is not None:
            out[f"{prefix}ids"] = np.array(self.ids, dtype=str)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict, prefix: str = "") -> "SpectrumSet":
        graphs = GraphSet.from_arrays(arrays, prefix + "g_") if prefix + "g_n_atoms" in arrays else None
        ids = arrays[prefix + "ids"].tolist() if prefix + "ids" in arrays else None
        return cls(arrays[prefix + "form_vec"], arrays[prefix + "types"], arrays[prefix + "ion_vec"],
                   arrays[prefix + "intens"], arrays[prefix + "offsets"], arrays.get(prefix + "fp"), graphs, ids)


# ------------------------------------------------------------------------------------------ data preparation
def _annotate_job(args):
    """Pool worker: fill the annotation cache for one record; returns None or an error string."""
    cache_dir, ppm, record = args
    from .data import AnnotationCache

    try:
        AnnotationCache(cache_dir, ppm_tol=ppm).get(record)
    except (ValueError, ArithmeticError) as err:     # unsupported adduct/formula, invalid peaks, too big
        return f"{type(err).__name__}: {err}"
    return None


def annotate(records, cache_dir: Path, ppm: float, workers: int) -> None:
    """Compute the missing subformula annotations of ``records`` into the cache (in parallel)."""
    from .data import AnnotationCache

    cache = AnnotationCache(cache_dir, ppm_tol=ppm)
    todo = [r for r in records if r not in cache]
    if not todo:
        return
    logger.info("annotating %d spectra with sub-formulae (%d workers)", len(todo), workers)
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            list(pool.imap_unordered(_annotate_job, ((str(cache_dir), ppm, r) for r in todo), chunksize=16))
    else:
        for r in todo:
            _annotate_job((str(cache_dir), ppm, r))


def featurize_records(records, config: DiffMSConfig, cache_dir: Path, ppm: float, n_bits: int,
                      with_graphs: bool, skipped: Counter, limit: int | None = None) -> SpectrumSet:
    """Tokens (+ fingerprints, + graphs) of labelled spectra that passed ``filter_for_model``.

    Spectra whose annotation or tokenisation fails (e.g. an element count above 255, an adduct the
    annotation code rejects) or whose molecule cannot be turned into a graph are counted in ``skipped``.
    """
    from ..chem.molecules import MoleculeError, formula_of_smiles, mol_to_graph, morgan_fingerprint
    from ..model.tokens import tokens_from_annotation
    from .data import AnnotationCache

    cache = AnnotationCache(cache_dir, ppm_tol=ppm)
    tokens, fps, nodes_l, bonds_l, hydrogens, ids = [], [], [], [], [], []
    fp_cache: dict[str, np.ndarray] = {}
    graph_cache: dict[str, tuple] = {}
    n_cls_only = 0
    for rec in records:
        if limit is not None and len(tokens) >= limit:
            break
        try:
            ann = cache.get(rec)
            tok = tokens_from_annotation(ann, list(config.adducts))
        except (ValueError, ArithmeticError) as err:
            skipped[f"annotation_failed: {type(err).__name__}"] += 1
            logger.debug("spectrum %s skipped: %s", rec.id, err)
            continue
        if with_graphs:
            if rec.smiles not in graph_cache:
                try:
                    nodes, adj = mol_to_graph(rec.smiles, list(config.atom_types))
                    i, j = np.nonzero(np.triu(adj, k=1))
                    graph_cache[rec.smiles] = (nodes.astype(np.int8),
                                               np.stack([i, j, adj[i, j]], axis=1).astype(np.int16),
                                               formula_of_smiles(rec.smiles)["H"])
                except MoleculeError:
                    graph_cache[rec.smiles] = None
            if graph_cache[rec.smiles] is None:
                skipped["no_graph"] += 1
                continue
            if len(graph_cache[rec.smiles][0]) < 2:
                skipped["too_few_atoms"] += 1
                continue
        if rec.smiles not in fp_cache:
            fp_cache[rec.smiles] = np.packbits(morgan_fingerprint(rec.smiles, n_bits=n_bits, radius=2))
        if tok["num_peaks"] == 1:
            n_cls_only += 1
        tokens.append(tok)
        fps.append(fp_cache[rec.smiles])
        ids.append(rec.id)
        if with_graphs:
            nodes_l.append(graph_cache[rec.smiles][0])
            bonds_l.append(graph_cache[rec.smiles][1])
            hydrogens.append(graph_cache[rec.smiles][2])
    if n_cls_only:
        logger.info("%d spectra have no annotated peak (CLS token only; kept, like the reference)", n_cls_only)
    graphs = GraphSet.from_records(nodes_l, bonds_l, hydrogens=hydrogens) if with_graphs else None
    out = SpectrumSet.from_tokens(tokens, fps, graphs, ids)
    out.n_cls_only = n_cls_only
    return out


def load_spectra(paths, purpose: str, split_file=None) -> tuple[list, Counter]:
    """Labelled spectra of several sources through the fold guard.

    ``purpose="train"`` keeps records of the train fold (or without a fold), ``"validation"`` those of the
    val fold; records of other folds (a MassSpecGym TSV holds all folds) are left out and counted. A file
    whose name announces a val/test fold is refused for training, and so is a source that holds no record
    of the wanted fold.
    """
    from ..labelled import read_labelled
    from . import data

    wanted = "train" if purpose == "train" else "val"
    records, left_out = [], Counter()
    for path in paths:
        data.check_source(path, purpose)
        found = Counter()
        split = split_file if Path(path).is_dir() else None      # split tables belong to MIST folders
        for rec in read_labelled(path, split_file=split):
            if rec.fold is None or rec.fold == wanted:
                records.append(rec)
                found[wanted] += 1
            else:
                left_out[rec.fold] += 1
                found[rec.fold] += 1
        if not found.get(wanted):
            raise data.FoldLeakageError(f"refusing to use {path} for {purpose}: it holds no {wanted}-fold "
                                        f"spectra (folds found: {dict(found) or 'none'})")
    records = list(data.guard_records(records, purpose))
    return records, left_out


def spectra_dataset(cfg: dict, config: DiffMSConfig, run_dir: Path, dist: Dist, kind: str, with_graphs: bool,
                    vocab) -> tuple[SpectrumSet, SpectrumSet | None, dict]:
    """Featurised training (and validation) spectra, cached as ``cache/<kind>-data-<key>.npz``.

    Rank 0 reads, filters, annotates and featurises; the other ranks wait and read the cache.
    """
    if not cfg["train"]:
        raise ValueError(f"train {kind} needs training spectra: --train FILE (the training fold)")
    from . import data

    for p in cfg["train"]:             # refuse val/test files before any work (also on every rank)
        data.check_source(p, "train")
    for p in cfg["val"]:
        data.check_source(p, "validation")
    n_bits = int(config.fp_sizes[-1])
    key = {"version": 2, "kind": kind, "train": [file_signature(p) for p in cfg["train"]],
           "val": [file_signature(p) for p in cfg["val"]], "split_file": cfg.get("split_file"),
           "adducts": list(config.adducts), "atom_types": list(config.atom_types), "vocab": vars(vocab),
           "n_bits": n_bits, "ppm": cfg["ppm_tol"], "max_spectra": cfg.get("max_spectra")}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    cache_dir = Path(cfg["cache_dir"]) if cfg.get("cache_dir") else run_dir / "cache"
    path = cache_dir / f"{kind}-data-{digest}.npz"
    ann_dir = Path(cfg["annotation_cache"]) if cfg.get("annotation_cache") else cache_dir / "subformulae"
    if dist.is_main and not path.exists():
        summary = {}
        arrays = {}
        for split, paths, purpose in (("train", cfg["train"], "train"), ("val", cfg["val"], "validation")):
            if not paths:
                continue
            records, left_out = load_spectra(paths, purpose, cfg.get("split_file"))
            kept, dropped = data.filter_for_model(records, vocab)
            if not kept:
                raise ValueError(f"no usable {split} spectrum in {paths} (dropped: {dict(dropped)})")
            limit = cfg.get("max_spectra") if split == "train" else None
            if limit is not None:
                kept = kept[:int(limit)]            # quick runs: annotate only what is used
            annotate(kept, ann_dir, float(cfg["ppm_tol"]), int(cfg.get("workers") or 1))
            skipped = Counter(dropped)
            sset = featurize_records(kept, config, ann_dir, float(cfg["ppm_tol"]), n_bits, with_graphs, skipped,
                                     limit=limit)
            if len(sset) == 0:
                raise ValueError(f"no usable {split} spectrum in {paths} (skipped: {dict(skipped)})")
            arrays.update(sset.arrays(prefix=f"{split}_"))
            summary[split] = {"files": [str(p) for p in paths], "read": len(records), "used": len(sset),
                              "other_folds_left_out": dict(left_out),
                              "skipped": dict(skipped), "cls_only": sset.n_cls_only}
            logger.info("%s %s spectra: %d used of %d read; skipped %s", kind, split, len(sset), len(records),
                        dict(skipped))
        save_npz(path, arrays, summary)
    dist.barrier()
    arrays, summary = load_npz(path)
    train = SpectrumSet.from_arrays(arrays, "train_")
    val = SpectrumSet.from_arrays(arrays, "val_") if "val_offsets" in arrays else None
    return train, val, {**summary, "cache": str(path), "annotation_cache": str(ann_dir)}


# ------------------------------------------------------------------------------------------ loss
def fold_or(fp: torch.Tensor, size: int) -> torch.Tensor:
    """OR-fold a binary fingerprint (B, n) to (B, size): bit j = max over bits j, j + size, ... (n % size == 0)."""
    B, n = fp.shape
    if n % size:
        raise ValueError(f"cannot fold {n} bits to {size}")
    return fp.view(B, n // size, size).amax(dim=1)


def cosine_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - cos(pred, target) per row, (B,)."""
    return 1.0 - F.cosine_similarity(pred, target, dim=-1, eps=1e-8)


def fingerprint_losses(out: dict, target: torch.Tensor, iterative_weight: float) -> dict:
    """Per-spectrum losses: ``main`` (B,), ``iterative`` (B,) and ``total`` = main + w * iterative."""
    main = cosine_loss(out["fp"], target)
    iterative = torch.zeros_like(main)
    folded = target
    for pred in reversed(out["int_preds"]):              # 2048, 1024, 512, 256
        folded = fold_or(folded, pred.shape[-1])
        iterative = iterative + cosine_loss(pred, folded)
    return {"main": main, "iterative": iterative, "total": main + iterative_weight * iterative}


def tanimoto(pred_bits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Tanimoto similarity per row of two binary matrices (B, n) -> (B,); 1 when both are empty."""
    inter = (pred_bits * target).sum(-1)
    union = ((pred_bits + target) > 0).float().sum(-1)
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def augment_tokens(tok: dict, cfg: dict, generator: torch.Generator) -> dict:
    """Random peak removal and intensity jitter of one spectrum's tokens (CLS, the last token, is kept)."""
    if float(cfg["augment_prob"]) <= 0:
        return tok
    dev = generator.device
    if float(torch.rand((), generator=generator, device=dev)) >= float(cfg["augment_prob"]):
        return tok
    n_frag = tok["num_peaks"] - 1
    keep = torch.rand(n_frag, generator=generator, device=dev).cpu().numpy() >= float(cfg["remove_prob"])
    jitter = torch.rand(n_frag, generator=generator, device=dev).cpu().numpy() < float(cfg["inten_prob"])
    factor = torch.exp(0.3 * torch.randn(n_frag, generator=generator, device=dev)).cpu().numpy()
    intens = tok["intens"].copy()
    intens[:n_frag] = np.where(jitter, np.clip(intens[:n_frag] * factor, 0.0, 1.0), intens[:n_frag])
    rows = np.concatenate([np.flatnonzero(keep), [n_frag]])
    return {"form_vec": tok["form_vec"][rows], "types": tok["types"][rows], "ion_vec": tok["ion_vec"][rows],
            "intens": intens[rows], "num_peaks": len(rows)}


# ------------------------------------------------------------------------------------------ the task
class EncoderTask(TrainTask):
    name = "encoder"
    val_keys = ("loss", "cosine", "tanimoto")

    def setup(self, cfg: dict, run_dir: Path, dist: Dist) -> None:
        from ..model.encoder import SpectraEncoder
        from ..model.tokens import ELEMENTS
        from .data import VocabularyFilter

        self.cfg = cfg
        self.device = dist.device
        self.config = build_model_config(cfg["model"])
        if "name" not in cfg["model"]:
            self.config = self.config.replace(name=run_dir.name)
        atoms = list(self.config.atom_types) if cfg["decoder_vocab_only"] else list(ELEMENTS)
        vocab = VocabularyFilter(atom_types=atoms, adducts=list(self.config.adducts), max_n_nodes=10 ** 6)
        self.train_set, self.val_set, summary = spectra_dataset(cfg, self.config, run_dir, dist, "encoder",
                                                                with_graphs=False, vocab=vocab)
        self.n_train = len(self.train_set)
        self.n_val = 0 if self.val_set is None else len(self.val_set)
        self.data_summary = summary
        if dist.is_main:
            write_json(run_dir / "model_config.json", self.config.to_dict())
        torch.manual_seed(int(cfg["seed"]))
        self.model = SpectraEncoder(self.config)

    def batches(self, epoch, cfg, dist):
        return make_batches(self.n_train, int(cfg["batch_size"]), int(cfg["seed"]), epoch,
                            sizes=np.diff(self.train_set.offsets), bucket=cfg["bucket"],
                            world_size=dist.world_size)

    def _forward(self, sset: SpectrumSet, idx, generator, augment: bool):
        from ..model.tokens import collate

        toks = [sset.tokens(i) for i in idx]
        if augment:
            toks = [augment_tokens(t, self.cfg, generator) for t in toks]
        out = self.model(collate(toks))
        target = sset.fingerprints(idx, self.device)
        return out, target

    def loss(self, indices, generator):
        out, target = self._forward(self.train_set, indices, generator, augment=True)
        losses = fingerprint_losses(out, target, float(self.cfg["iterative_weight"]))
        return losses["total"].mean(), {"main_loss": float(losses["main"].detach().mean()),
                                        "iterative_loss": float(losses["iterative"].detach().mean())}

    def validate(self, indices, generator):
        out, target = self._forward(self.val_set, indices, generator, augment=False)
        losses = fingerprint_losses(out, target, float(self.cfg["iterative_weight"]))
        n = len(indices)
        tani = tanimoto((out["fp"] > 0.5).float(), target)
        return {"loss": (float(losses["total"].sum()), n), "cosine": (float((1 - losses["main"]).sum()), n),
                "tanimoto": (float(tani.sum()), n)}

    def export(self, directory: Path, info: dict) -> None:
        from ..model.diffms import DiffMS
        from ..weights import save_weights
        from .common import write_model_card

        torch.manual_seed(0)
        full = DiffMS(self.config)
        full.encoder.load_state_dict(self.model.state_dict())
        init_fold_merge(full.merge_function)
        info = {**info, "trained": ["encoder"], "untrained": ["decoder", "encoder fragment head"],
                "merge": "fold map"}
        save_weights(full, directory, info)
        write_model_card(directory, info, self.config)
