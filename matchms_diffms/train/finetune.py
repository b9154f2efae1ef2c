"""End-to-end fine-tuning (as in the DiffMS paper): spectrum -> encoder -> merge -> decoder, edge diffusion loss.

Model = pretrained encoder (``--encoder``: the ``weights/`` folder of a ``train encoder`` run, or any full
weights) + merge layer Linear(4096 -> cond_dim) + pretrained decoder (``--decoder``: the ``weights/`` folder
of a ``train decoder`` run). ``--init`` loads a complete model instead (e.g. to continue fine-tuning, or
an official checkpoint), including its merge layer; ``--encoder``/``--decoder`` given with it replace those
parts. Without ``--init`` the merge layer starts as the fold map (``assembly.init_fold_merge``): y is then
the encoder's 4096-bit fingerprint folded to the 2048 bits the decoder was pretrained on.

Data: training-fold spectra with structures (fold guard as in ``train encoder``), restricted to what the
model can represent (decoder atom types, adduct slots, <= max_n_nodes heavy atoms), annotated (cache),
tokenised, and paired with the molecule's graph. Loss: the edge cross-entropy of 13.1 with y = merge(p4096);
gradients reach the encoder through the merge layer. Nothing is frozen. Validation (``--val``, metrics only):
``val_loss`` (same loss, fixed noise) and ``val_tanimoto`` of the encoder fingerprint.

Edge marginals: by default those of the decoder run (the noise process the decoder was pretrained with);
``edge_marginals = "data"`` recomputes them from the fine-tuning graphs, as the reference code does.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..model.config import DiffMSConfig
from .common import COMMON_DEFAULTS, Dist, TrainTask, build_model_config, make_batches, write_json
from .assembly import DECODER_FIELDS, ENCODER_FIELDS, init_fold_merge, load_full_model
from .decoder import diffusion_edge_loss
from .encoder import SpectrumSet, spectra_dataset, tanimoto

logger = logging.getLogger("matchms.diffms")

DEFAULTS = {
    **COMMON_DEFAULTS,
    "epochs": 50,               # paper: 50 (NPLIB1), 15 (MSG)
    "lr": 2e-4,                 # DiffMS "for fine-tuning"
    "optimizer": "adamw",
    "weight_decay": 1e-12,
    "schedule": "onecycle",
    "batch_size": 64,
    "decoder": None,            # weights folder of a decoder run
    "encoder": None,            # weights folder of an encoder run
    "init": None,               # complete weights (folder or official checkpoint)
    "train": [],
    "val": [],
    "split_file": None,
    "annotation_cache": None,
    "ppm_tol": 20.0,
    "max_spectra": None,
    "edge_marginals": "decoder",  # decoder | data
    "bucket": "sorted",         # batches tight in graph size, then in token count (common.make_batches)
    "workers": 1,
    "cache_dir": None,
}

def assemble_model(cfg: dict):
    """Build the model to fine-tune from ``init`` / ``encoder`` / ``decoder`` (see module doc).

    Returns ``(model, sources)`` where ``sources`` says where each part came from.
    """
    from ..model.diffms import DiffMS

    init = load_full_model(cfg["init"]) if cfg.get("init") else None
    enc = load_full_model(cfg["encoder"]) if cfg.get("encoder") else None
    dec = load_full_model(cfg["decoder"]) if cfg.get("decoder") else None
    if init is None and (enc is None or dec is None):
        missing = [k for k, v in (("--encoder", enc), ("--decoder", dec)) if v is None]
        logger.warning("fine-tuning without %s: those parts start from random weights", " and ".join(missing))
    base = init.config.to_dict() if init is not None else build_model_config({}).to_dict()
    if enc is not None:
        base.update({k: enc.config.to_dict()[k] for k in ENCODER_FIELDS})
    if dec is not None:
        base.update({k: dec.config.to_dict()[k] for k in DECODER_FIELDS})
    base.update({k: v for k, v in (cfg.get("model") or {}).items() if k != "preset"})
    config = DiffMSConfig.from_dict(base)
    if config.reference_padding:
        logger.warning("the encoder uses the reference's +1 padding quirk (an official encoder); fine-tuning "
                       "keeps it so its outputs stay what the weights expect")

    torch.manual_seed(int(cfg["seed"]))
    model = DiffMS(config)
    sources = {"encoder": "random", "decoder": "random", "merge": "random"}
    if init is not None:
        model.load_state_dict(init.state_dict())
        sources = {"encoder": str(cfg["init"]), "decoder": str(cfg["init"]), "merge": str(cfg["init"])}
    elif init_fold_merge(model.merge_function):
        sources["merge"] = "fold map"
    if enc is not None:
        model.encoder.load_state_dict(enc.encoder.state_dict())
        sources["encoder"] = str(cfg["encoder"])
    if dec is not None:
        model.decoder.load_state_dict(dec.decoder.state_dict())
        sources["decoder"] = str(cfg["decoder"])
    return model, sources


class FinetuneTask(TrainTask):
    name = "finetune"
    val_keys = ("loss", "tanimoto")

    def setup(self, cfg: dict, run_dir: Path, dist: Dist) -> None:
        from ..model.diffusion import NoiseSchedule, edge_marginals
        from .data import VocabularyFilter

        self.cfg = cfg
        self.device = dist.device
        model, sources = assemble_model(cfg)
        config = model.config
        vocab = VocabularyFilter.from_config(config)
        vocab.min_n_nodes = 2
        self.train_set, self.val_set, summary = spectra_dataset(cfg, config, run_dir, dist, "finetune",
                                                                with_graphs=True, vocab=vocab)
        if cfg["edge_marginals"] == "data":
            config = config.replace(edge_marginals=[round(m, 8) for m in self.train_set.graphs.edge_marginals()])
        elif cfg["edge_marginals"] != "decoder":
            raise ValueError(f"edge_marginals must be 'decoder' or 'data', got {cfg['edge_marginals']!r}")
        if "name" not in (cfg.get("model") or {}):
            config = config.replace(name=run_dir.name)
        model.config = config
        self.config = config
        self.model = model
        self.n_train = len(self.train_set)
        self.n_val = 0 if self.val_set is None else len(self.val_set)
        self.data_summary = {**summary, "sources": sources, "edge_marginals": config.edge_marginals}
        self.schedule = NoiseSchedule(config.diffusion_steps)
        self.marginals = edge_marginals(config.edge_marginals).to(self.device)
        if dist.is_main:
            write_json(run_dir / "model_config.json", config.to_dict())

    def batches(self, epoch, cfg, dist):
        return make_batches(self.n_train, int(cfg["batch_size"]), int(cfg["seed"]), epoch,
                            sizes=self.train_set.graphs.n_atoms, bucket=cfg["bucket"], world_size=dist.world_size,
                            secondary=np.diff(self.train_set.offsets))

    def _loss(self, sset: SpectrumSet, idx, generator, reduction="mean"):
        from ..model.tokens import collate

        out = self.model.encoder(collate([sset.tokens(i) for i in idx]))
        fp = out["fp"]                                                        # (B, 4096)
        y = self.model.merge_function(fp)                                     # (B, cond)
        X, E0, mask = sset.graphs.batch(idx, self.config.n_atom_types, self.device)
        h = sset.graphs.hydrogen_counts(idx, self.device) if self.config.hydrogen_features else None
        loss = diffusion_edge_loss(self.model.decoder, self.config, self.model.schedule, self.marginals,
                                   X, E0, y, mask, generator, reduction=reduction, hydrogens=h)
        return loss, fp

    def loss(self, indices, generator):
        loss, _ = self._loss(self.train_set, indices, generator)
        return loss, {}

    def validate(self, indices, generator):
        (s, c), fp = self._loss(self.val_set, indices, generator, reduction="sum_count")
        target = self.val_set.fingerprints(indices, self.device)
        tani = tanimoto((fp > 0.5).float(), target)
        return {"loss": (float(s), c), "tanimoto": (float(tani.sum()), len(indices))}

    def export(self, directory: Path, info: dict) -> None:
        from ..weights import save_weights
        from .common import write_model_card

        info = {**info, "trained": ["encoder", "merge", "decoder"], "untrained": ["encoder fragment head"]}
        save_weights(self.model, directory, info)
        write_model_card(directory, info, self.config)


__all__ = ["DEFAULTS", "FinetuneTask", "assemble_model"]
