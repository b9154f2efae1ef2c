"""Putting models together: the fold-map merge layer, loading a starting model, widening a decoder start,
and joining a trained encoder with a pretrained decoder (``train assemble``).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ..model.config import DiffMSConfig

logger = logging.getLogger("matchms.diffms")

ENCODER_FIELDS = ("encoder_hidden", "encoder_layers", "encoder_heads", "magma_modulo", "fp_sizes", "adducts",
                  "reference_padding")
DECODER_FIELDS = ("cond_dim", "decoder_layers", "hidden_mlp_X", "hidden_mlp_E", "hidden_mlp_y", "dx", "de", "dy",
                  "decoder_heads", "dim_ffX", "dim_ffE", "dim_ffy", "atom_types", "n_edge_types",
                  "diffusion_steps", "edge_marginals", "max_n_nodes", "environment_features",
                  "environment_radius", "hydrogen_features", "decoder_dropout")


def load_full_model(path):
    """A complete ``DiffMS`` from one of our weights folders or an official checkpoint (train mode)."""
    from ..official import load_official
    from ..weights import load_weights_dir

    p = Path(str(path).split("::", 1)[0])
    if p.is_dir():
        model, _ = load_weights_dir(p)
    else:
        model, _ = load_official(path)
    return model.train()


def load_part(source, part: str) -> tuple[dict, DiffMSConfig]:
    """State dict of ``part`` ("encoder" or "decoder") and the model config of whatever a run may start from:
    a weights folder, a part folder (``save_part``), a run folder (its newest checkpoint) or an official
    checkpoint."""
    folder = Path(str(source).split("::", 1)[0])
    if not folder.is_dir():
        model = load_full_model(source)
        return getattr(model, part).state_dict(), model.config
    state, config = _part_state(folder, part)
    return state, DiffMSConfig.from_dict({k: v for k, v in config.items() if not k.startswith("_")})


def _widen_columns(value: torch.Tensor, old: list, new: list) -> torch.Tensor | None:
    """``value``'s columns rearranged from the ``old`` groups to the ``new`` ones, zeros for new groups;
    None when a group of ``old`` is missing from ``new`` or changed its width."""
    start, cols = 0, {}
    for name, width in old:
        cols[name] = value[:, start:start + width]
        start += width
    widths = dict(new)
    if any(name not in widths or widths[name] != width for name, width in old):
        return None
    return torch.cat([cols[name] if name in cols else value.new_zeros(value.shape[0], width)
                      for name, width in new], dim=1)


def load_decoder_state(model: torch.nn.Module, state: dict, old: DiffMSConfig, new: DiffMSConfig) -> None:
    """Load a decoder state into ``model``; a start without some of our input groups gains them.

    When ``new`` adds input groups that ``old`` lacks (``environment_features``, ``hydrogen_features``), the
    first layers of the X and y input MLPs get zero columns for those inputs at their place in the input, so
    the widened network computes exactly what the old one did until training moves those weights. Any other
    shape difference is an error.
    """
    own = model.state_dict()
    def by_parameter(config):               # the input groups keyed by the first layer they enter
        return {f"mlp_in_{k}.0.weight": v for k, v in config.input_groups().items()}

    old_groups, new_groups = by_parameter(old), by_parameter(new)
    for key, value in state.items():
        target = own[key]
        if value.shape == target.shape and old_groups.get(key) == new_groups.get(key):
            own[key] = value
            continue
        widened = _widen_columns(value, old_groups[key], new_groups[key]) if key in new_groups else None
        if widened is None or widened.shape != target.shape:
            raise ValueError(f"decoder parameter {key}: starting weights have shape {tuple(value.shape)}, the "
                             f"model {tuple(target.shape)}")
        own[key] = widened
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


# ------------------------------------------------------------------------------------------ assembling
def _part_state(source: Path, part: str, average: int = 1) -> tuple[dict, dict]:
    """State dict of ``part`` ("encoder" or "decoder") and the model config, from a weights folder, a part
    folder (``save_part``) or a training run folder (its newest checkpoint: a run stopped early still gives
    usable weights; with ``average`` N > 1 the mean of its newest N checkpoints' weights)."""
    from ..weights import load_weights_dir
    from .common import checkpoint_paths, load_checkpoint

    source = Path(source)
    checkpoints = checkpoint_paths(source)
    if average > 1 and len(checkpoints) < average:
        raise ValueError(f"{source}: averaging the newest {average} checkpoints needs a run folder with at least "
                         f"{average} (found {len(checkpoints)})")
    if (source / f"{part}.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(source / f"{part}.safetensors"), json.loads((source / "model_config.json").read_text())
    if (source / "model.safetensors").is_file():
        model, _ = load_weights_dir(source)
        return getattr(model, part).state_dict(), model.config.to_dict()
    if not checkpoints:
        raise ValueError(f"{source}: neither a weights folder nor a run folder with checkpoints")
    chosen = checkpoints[-max(1, average):]
    states = [load_checkpoint(path) for path in chosen]
    steps = [int(ckpt["step"]) for ckpt in states]
    state = {k: (torch.stack([ckpt["model"][k] for ckpt in states]).mean(0) if v.is_floating_point() else v)
             for k, v in states[-1]["model"].items()}
    prefix = part + "."
    if any(k.startswith(prefix) for k in state):                     # a complete DiffMS was trained
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    logger.info("%s: %s from %s", source, part, ", ".join(p.name for p in chosen))
    config = json.loads((source / "model_config.json").read_text())
    extra = {"_averaged_steps": steps} if len(steps) > 1 else {}
    return state, {**config, "_step": steps[-1], **extra}


def save_part(run_dir: str | Path, part: str, out_dir: str | Path, average: int = 1) -> Path:
    """Write the ``part`` tensors of a run's newest checkpoint alone: ``PART.safetensors`` and
    ``model_config.json`` (with ``_step``), a part folder that ``train assemble`` and ``train decoder
    --init-from`` read. ``average`` N > 1 writes the mean of the newest N checkpoints' weights instead
    (``_averaged_steps`` in the config): in the middle of a schedule the single weights are noisier than
    their mean; at its end (lr -> 0) the mean gains nothing (model card).

    The decoder of the default size is 7.6 MiB, so it comes back from a GPU machine in one file, where the
    complete weights (38 MiB: encoder and merge layer too) and checkpoints (with optimizer state) would not.
    """
    from safetensors.torch import save_file

    from .common import write_json

    state, config = _part_state(Path(run_dir), part, average)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(out_dir / f"{part}.safetensors"))
    write_json(out_dir / "model_config.json", config)
    return out_dir / f"{part}.safetensors"


def assemble_weights(encoder: str | Path, decoder: str | Path, out_dir: str | Path,
                     info: dict | None = None, **config_changes) -> Path:
    """Join a trained encoder and a pretrained decoder into one model, with the fold-map merge layer.

    The fold map is exact for Morgan fingerprints (see ``init_fold_merge``), so the pair works without
    fine-tuning. ``config_changes`` set DiffMSConfig fields such as ``default_sampling_steps``.
    """
    from ..model.diffms import DiffMS
    from ..official import WeightsError, load_state_strict
    from ..weights import save_weights

    enc_state, enc_cfg = _part_state(Path(encoder), "encoder")
    dec_state, dec_cfg = _part_state(Path(decoder), "decoder")
    base = {k: v for k, v in dec_cfg.items() if not k.startswith("_")}
    base.update({k: enc_cfg[k] for k in ENCODER_FIELDS})
    base.update(config_changes)
    model = DiffMS(DiffMSConfig.from_dict(base))
    if not init_fold_merge(model.merge_function):
        raise ValueError("the fingerprint size is not a multiple of cond_dim: no fold map")
    try:
        load_state_strict(model.encoder, enc_state, f"{encoder} (encoder)")
        load_state_strict(model.decoder, dec_state, f"{decoder} (decoder)")
    except WeightsError as err:
        raise ValueError(str(err)) from None
    steps = {"encoder_step": enc_cfg.get("_step"), "decoder_step": dec_cfg.get("_step")}
    return save_weights(model, out_dir, {**(info or {}), "name": Path(out_dir).name,
                                         "assembled_from": {"encoder": str(encoder), "decoder": str(decoder),
                                                            **steps},
                                         "merge": "fold map", "trained": ["encoder", "decoder"],
                                         "untrained": ["encoder fragment head"]})
