"""Reading the released DiffMS checkpoints without unpickling anything.

The released ``diffms_msg.ckpt`` / ``diffms_canopus.ckpt`` hold one key, ``state_dict``, with tensors only.
We read them with ``torch.load(weights_only=True)``: a file that needs arbitrary pickled objects is
refused, never executed. Accepted containers: the plain ``.ckpt``, a gzip of it (``.ckpt.gz``, as the
conformance fixture), and the published ``diffms_checkpoints.tar.gz`` archive (member chosen with
``archive.tar.gz::member`` or, by default, the MSG model).

The checkpoint carries no hyper-parameters, so the architecture is read off the tensor shapes
(``infer_config``); what shapes cannot tell (heads, edge marginals, ``max_n_nodes``) comes from documented
defaults that the caller may override.
"""
from __future__ import annotations

import gzip
import io
import logging
import pickle
import tarfile
import zlib
from pathlib import Path

from .chem.tables import ATOM_DECODER
from .model.config import DiffMSConfig

logger = logging.getLogger("matchms.diffms")

ARCHIVE_DEFAULT_MEMBER = "diffms_msg.ckpt"


class WeightsError(Exception):
    """A weights file that cannot be used; the message is one line meant for the user."""


# ------------------------------------------------------------------------------------------ reading
def _unpickling_reason(err: Exception) -> str:
    """The informative line of torch's weights-only error (e.g. ``Unsupported global: GLOBAL io.open``)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            if not rest and i + 1 < len(lines):
                rest = lines[i + 1]
            return rest.split(" was not an allowed global")[0]
    return lines[0] if lines else type(err).__name__


def _torch_load_bytes(raw: bytes, source: str) -> dict:
    import torch

    try:
        obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = _unpickling_reason(err)
        if "Unsupported global" in reason or "Unsupported class" in reason:
            what = reason.split("GLOBAL", 1)[1].strip() if "GLOBAL" in reason else reason
            raise WeightsError(f"{source}: refused to load: the file needs pickle to create {what}, which could "
                               "execute code; only checkpoints of plain tensors are accepted") from None
        raise WeightsError(f"{source}: refused to load: not a plain tensor checkpoint ({reason}); the file is "
                           "corrupted or needs pickle to load arbitrary objects, which is not allowed") from None
    except Exception as err:  # noqa: BLE001 -- torch raises many types (RuntimeError, EOFError, IndexError, ...)
        msg = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise WeightsError(f"{source}: not a readable PyTorch checkpoint (truncated or corrupted?): "
                           f"{type(err).__name__}" + (f": {msg}" if msg else "")) from None
    if not isinstance(obj, dict):
        raise WeightsError(f"{source}: expected a dict of tensors, found {type(obj).__name__}")
    state = obj.get("state_dict", obj)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{source}: the checkpoint's state_dict does not hold only tensors")
    return state


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Return the state dict of an official checkpoint (``.ckpt``, ``.ckpt.gz`` or ``.tar.gz`` archive)."""
    text = str(path)
    member = None
    if "::" in text:
        text, member = text.split("::", 1)
    path = Path(text)
    if not path.is_file():
        raise WeightsError(f"{path}: no such checkpoint file")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":                                  # gzip: a .ckpt.gz or a .tar.gz
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:            # BadGzipFile is an OSError
            raise WeightsError(f"{path}: corrupted gzip data: {err}") from None
        if len(raw) > 262 and raw[257:262] == b"ustar":
            return _read_from_tar(raw, path, member)
    return _torch_load_bytes(raw, str(path))


def _read_from_tar(raw: bytes, path: Path, member: str | None) -> dict:
    try:
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            names = [m.name for m in tar.getmembers() if m.isfile()]
            wanted = member or ARCHIVE_DEFAULT_MEMBER
            hits = [n for n in names if n == wanted or n.endswith("/" + wanted)]
            if not hits:
                raise WeightsError(f"{path}: archive has no member {wanted!r}; members: {', '.join(names)}")
            data = tar.extractfile(hits[0]).read()
    except tarfile.TarError as err:
        raise WeightsError(f"{path}: corrupted tar archive: {err}") from None
    return _torch_load_bytes(data, f"{path}::{hits[0]}")


# ------------------------------------------------------------------------------------------ shapes
def _dim(state: dict, key: str, axis: int = 0) -> int:
    if key not in state:
        raise WeightsError(f"missing key {key!r}: not a DiffMS checkpoint layout")
    return int(state[key].shape[axis])


def normalise_keys(state: dict) -> dict:
    """Map the legacy decoder prefix ``model.`` to ``decoder.`` (checkpoints from before April 2025)."""
    if any(k.startswith("decoder.") for k in state):
        return dict(state)
    return {("decoder." + k[len("model."):] if k.startswith("model.") else k): v for k, v in state.items()}


def infer_config(state: dict, overrides: dict | None = None) -> DiffMSConfig:
    """Read the architecture off the tensor shapes of an official-layout state dict.

    Shapes give every width and the number of layers. Heads (8), edge marginals and ``max_n_nodes``
    are not visible in shapes: they default to the MSG values in ``DiffMSConfig`` and can be overridden.
    """
    enc = "encoder.spectra_encoder."
    dec = "decoder."
    layer_ids = {k.split(".")[2] for k in state if k.startswith(dec + "tf_layers.")}
    if not layer_ids or not all(i.isdigit() for i in layer_ids):
        raise WeightsError(f"no {dec}tf_layers.* keys: not a DiffMS checkpoint layout")
    n_layers = 1 + max(int(i) for i in layer_ids)
    n_atom_types = _dim(state, dec + "mlp_out_X.2.weight")
    found = dict(
        encoder_hidden=_dim(state, enc + "0.intermediate_layer.input_layer.weight"),
        magma_modulo=_dim(state, enc + "1.0.weight"),
        cond_dim=_dim(state, "merge_function.weight"),
        decoder_layers=n_layers,
        hidden_mlp_X=_dim(state, dec + "mlp_in_X.0.weight"),
        dx=_dim(state, dec + "mlp_in_X.2.weight"),
        hidden_mlp_E=_dim(state, dec + "mlp_in_E.0.weight"),
        de=_dim(state, dec + "mlp_in_E.2.weight"),
        hidden_mlp_y=_dim(state, dec + "mlp_in_y.0.weight"),
        dy=_dim(state, dec + "mlp_in_y.2.weight"),
        dim_ffX=_dim(state, dec + "tf_layers.0.linX1.weight"),
        dim_ffE=_dim(state, dec + "tf_layers.0.linE1.weight"),
        dim_ffy=_dim(state, dec + "tf_layers.0.lin_y1.weight"),
    )
    fp_out = _dim(state, "merge_function.weight", 1)
    overrides = dict(overrides or {})
    if n_atom_types != len(ATOM_DECODER) and "atom_types" not in overrides:
        raise WeightsError(f"the decoder predicts {n_atom_types} atom types, not the official 8: "
                           "pass the atom vocabulary in a config (atom_types)")
    cfg = DiffMSConfig(name="diffms-official", **found)
    if cfg.fp_sizes[-1] != fp_out:
        raise WeightsError(f"merge_function expects a {fp_out}-bit fingerprint; only 4096 is supported")
    return cfg.replace(**overrides) if overrides else cfg


def load_official(path: str | Path, overrides: dict | None = None):
    """Build a ``DiffMS`` from an official checkpoint; strict, with one-line errors.

    Returns ``(model, config)``.
    """
    from .model.diffms import DiffMS
    from .model.diffusion import NoiseSchedule

    state = normalise_keys(read_checkpoint(path))
    try:
        config = infer_config(state, overrides)
    except WeightsError as err:
        raise WeightsError(f"{path}: {err}") from None
    except (TypeError, ValueError) as err:          # an unknown or invalid override
        raise WeightsError(f"{path}: invalid configuration: {err}") from None
    betas = state.pop("noise_schedule.betas", None)
    if betas is not None:
        recomputed = NoiseSchedule(config.diffusion_steps).betas
        if betas.shape != recomputed.shape or float((betas - recomputed).abs().max()) > 1e-7:
            raise WeightsError(f"{path}: noise_schedule.betas differ from the cosine schedule with "
                               f"T={config.diffusion_steps}")
    model = DiffMS(config)
    load_state_strict(model, state, str(path))
    return model.eval(), config


def load_state_strict(model: torch.nn.Module, state: dict, source: str) -> None:
    """``load_state_dict(strict=True)`` with a readable one-line error (missing/unexpected/shape)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected)):
            if keys:
                parts.append(f"{len(keys)} {label} keys (e.g. {', '.join(keys[:3])})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} shape mismatches (e.g. {k}: file {tuple(state[k].shape)} "
                         f"vs model {tuple(own[k].shape)})")
        raise WeightsError(f"{source}: does not fit the model: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
