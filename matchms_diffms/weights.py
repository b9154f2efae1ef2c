"""Our weight format and the registry of named weights.

A weights folder holds::

    model.safetensors   tensors only (no pickle), keys as in the official checkpoints
    config.json         {"format": "matchms-diffms-weights/1", "config": {DiffMSConfig},
                         "sha256": <sha256 of model.safetensors>, "info": {...}}
    MODEL_CARD.md       data, training, metrics, licences
    calibration.json    optional: the score calibration fitted on the validation fold

``load_model`` checks the sha256 before reading a single tensor; a tampered file is refused.
Names resolve through the ``diffms_weight_sources`` hook: the built-in source maps every folder of the
shipped weights (:func:`shipped_weights_dir`) and of ``$MATCHMS_DIFFMS_WEIGHTS_DIR`` to its name; ``default``
is ours. This module imports neither torch nor safetensors at import time (the CLI's ``--help`` stays quick).
"""
from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from .files import atomic_write, atomic_write_text, sha256_file
from .hookspecs import hookimpl
from .model.config import DiffMSConfig
from .official import WeightsError, load_official, load_state_strict

logger = logging.getLogger("matchms.diffms")

FORMAT = "matchms-diffms-weights/1"
PACKAGE_DIR = Path(__file__).resolve().parent
_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


def shipped_weights_dir() -> Path:
    """The folder holding the weights that ship with matchms-diffms, one subfolder per name.

    An installed wheel carries them as package data in ``matchms_diffms/_weights/`` (``setup.py`` copies every
    ``weights/<name>/`` there); a checkout (editable install, or ``PYTHONPATH``) uses the repository's
    ``weights/`` folder itself.
    """
    packaged = PACKAGE_DIR / "_weights"
    return packaged if packaged.is_dir() else PACKAGE_DIR.parent / "weights"


# ------------------------------------------------------------------------------------------ writing
def save_weights(model, directory: str | Path, info: dict | None = None) -> Path:
    """Write ``model`` as safetensors + config.json (with the tensors' sha256) into ``directory``."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(directory / "model.safetensors", lambda tmp: save_file(tensors, tmp))
    meta = {"format": FORMAT, "config": model.config.to_dict(),
            "sha256": sha256_file(directory / "model.safetensors"), "info": info or {}}
    atomic_write_text(directory / "config.json", json.dumps(meta, indent=2) + "\n")
    return directory


# ------------------------------------------------------------------------------------------ reading
def verify_weights_dir(directory: str | Path) -> tuple[dict, str]:
    """Check one of our weights folders without loading it: both files present, a known format, and the
    sha256 of ``model.safetensors`` equal to the one in ``config.json``.

    Returns
    -------
    (dict, str)
        The parsed ``config.json`` and the sha256 of ``model.safetensors``.

    Raises
    ------
    WeightsError
        With a one-line message naming the file and the problem.
    """
    directory = Path(directory)
    cfg_path, tensor_path = directory / "config.json", directory / "model.safetensors"
    for p in (cfg_path, tensor_path):
        if not p.is_file():
            raise WeightsError(f"{directory}: not a weights folder ({p.name} missing)")
    try:
        meta = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise WeightsError(f"{cfg_path}: unreadable config: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise WeightsError(f"{cfg_path}: unknown weights format {found!r}")
    digest = sha256_file(tensor_path)
    if digest != meta.get("sha256"):
        raise WeightsError(f"{tensor_path}: sha256 {digest[:12]}… does not match config.json "
                           f"({str(meta.get('sha256'))[:12]}…): the file was modified or corrupted")
    return meta, digest


def load_weights_dir(directory: str | Path, overrides: dict | None = None):
    """Load one of our weights folders; verifies the sha256 first. Returns ``(model, info)``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .model.diffms import DiffMS

    directory = Path(directory)
    meta, digest = verify_weights_dir(directory)
    cfg_path, tensor_path = directory / "config.json", directory / "model.safetensors"
    try:
        config = DiffMSConfig.from_dict(meta["config"])
        if overrides:
            config = config.replace(**overrides)
    except (TypeError, ValueError, KeyError) as err:
        raise WeightsError(f"{cfg_path}: invalid config: {type(err).__name__}: {err}") from None
    try:
        state = load_file(str(tensor_path))
    except (SafetensorError, OSError) as err:
        raise WeightsError(f"{tensor_path}: unreadable safetensors file: {err}") from None
    model = DiffMS(config)
    load_state_strict(model, state, str(tensor_path))
    info = {"name": meta.get("info", {}).get("name", directory.name), "sha256": digest,
            "path": str(directory), "format": "matchms-diffms", **meta.get("info", {})}
    info["sha256"] = digest
    return model.eval(), info


def resolve(name_or_path: str | Path) -> Path:
    """Turn a weights name (``default``) or a path into a path."""
    path = Path(name_or_path)
    if path.exists() or "::" in str(name_or_path):
        return path
    from .plugins import weight_sources

    sources = weight_sources()
    if str(name_or_path) in sources:
        return Path(sources[str(name_or_path)])
    known = ", ".join(sorted(sources)) or "none"
    raise WeightsError(f"unknown weights {name_or_path!r}: not a file or folder, and not a known name "
                       f"(known: {known})")


def check_weights(name_or_path: str | Path) -> Path:
    """Resolve weights and check them without loading a tensor (no torch import): our folders get the full
    :func:`verify_weights_dir` (sha256 included), a checkpoint file must exist. Run before any other work, so
    that a wrong name or a damaged file fails in seconds.

    Returns
    -------
    Path
        As :func:`resolve`.
    """
    path = resolve(name_or_path)
    if _is_ours(path):
        verify_weights_dir(path)
    elif path.is_dir():
        pass               # another format's folder: a plugin's loader checks it when it loads it
    elif not Path(str(path).split("::", 1)[0]).is_file():
        raise WeightsError(f"{path}: no such checkpoint file")
    return path


def weights_sha256(name_or_path: str | Path) -> str | None:
    """sha256 of the tensors of named or given weights without loading them: of ``model.safetensors`` for our
    folders (checked against ``config.json``), of the file for an official checkpoint; None for a format a
    plugin loads."""
    path = resolve(name_or_path)
    if _is_ours(path):
        return verify_weights_dir(path)[1]
    if path.is_dir() or not _is_official(path):
        return None
    return sha256_file(Path(str(path).split("::", 1)[0]))


def describe_weights(path: str | Path) -> dict:
    """Size, sha256 and state of one weights folder or checkpoint file, for ``weights list``.

    Returns
    -------
    dict
        ``size`` (bytes of the tensor file), ``sha256`` (of the tensor file), ``check`` (``"ok"``, or the
        one-line problem of a folder that fails :func:`verify_weights_dir`).
    """
    path = Path(path)
    tensors = path / "model.safetensors" if path.is_dir() else Path(str(path).split("::", 1)[0])
    if not tensors.is_file():
        return {"size": None, "sha256": None, "check": f"{tensors}: missing"}
    check = "ok"
    if path.is_dir():
        try:
            verify_weights_dir(path)
        except WeightsError as err:
            check = str(err)
    return {"size": tensors.stat().st_size, "sha256": sha256_file(tensors), "check": check}


def load_model(name_or_path: str | Path = "default", config_overrides: dict | None = None):
    """Load weights by name or path, once per process. Returns ``(model, info)`` in eval mode.

    The file is handed to the first-result hook ``diffms_load_model``: third-party loaders first, then the
    built-in one, which reads our weights folders and official DiffMS checkpoints (``.ckpt``, ``.ckpt.gz``,
    ``diffms_checkpoints.tar.gz``; their architecture is inferred from the tensor shapes).

    Raises
    ------
    WeightsError
        Unknown name, a file no loader understands, or a broken / tampered file (one-line message).
    """
    path = resolve(name_or_path)
    key = (str(path), json.dumps(config_overrides or {}, sort_keys=True))
    with _CACHE_LOCK:
        if key not in _CACHE:
            from .plugins import get_plugin_manager

            loaded = get_plugin_manager().hook.diffms_load_model(path=path,
                                                                 config_overrides=config_overrides or {})
            if loaded is None:
                raise WeightsError(f"{path}: not a matchms-diffms weights folder (config.json + "
                                   "model.safetensors), not an official DiffMS checkpoint (.ckpt, .ckpt.gz, "
                                   ".tar.gz) and no plugin loader understands it")
            _CACHE[key] = loaded
        return _CACHE[key]


# Official checkpoints: torch.save zip archives, legacy pickles, gzip (.ckpt.gz, .tar.gz).
OFFICIAL_SUFFIXES = (".ckpt", ".ckpt.gz", ".tar.gz", ".tgz", ".pt", ".pth")
_OFFICIAL_MAGIC = (b"PK\x03\x04", b"\x1f\x8b", b"\x80")


def _is_ours(path: Path) -> bool:
    """A folder with config.json or model.safetensors (a half-complete one is an error, not someone else's)."""
    return path.is_dir() and any((path / name).exists() for name in ("config.json", "model.safetensors"))


def _is_official(path: Path) -> bool:
    """An official checkpoint by name (``::member`` of an archive, a known suffix) or by its first bytes."""
    text = str(path)
    if "::" in text:
        return True
    if text.lower().endswith(OFFICIAL_SUFFIXES):
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return head.startswith(_OFFICIAL_MAGIC)


def _load_our_or_official(path: Path, overrides: dict):
    """``(model, info)`` for our folders and official checkpoints; None for anything else."""
    if _is_ours(path):
        return load_weights_dir(path, overrides)
    if path.is_dir() or not _is_official(path):
        return None
    real = Path(str(path).split("::", 1)[0])
    model, config = load_official(path, overrides)
    return model, {"name": real.name, "sha256": sha256_file(real), "path": str(path),
                   "format": "official-diffms"}


def convert_checkpoint(checkpoint: str | Path, out_dir: str | Path, overrides: dict | None = None) -> Path:
    """Convert an official checkpoint into our folder format (safetensors + config with sha256)."""
    model, config = load_official(checkpoint, overrides)
    real = Path(str(checkpoint).split("::", 1)[0])
    return save_weights(model, out_dir, {"name": Path(out_dir).name, "converted_from": real.name,
                                         "source_sha256": sha256_file(real)})


# ------------------------------------------------------------------------------------------ plugin hooks
@hookimpl(trylast=True)
def diffms_load_model(path, config_overrides):
    """The built-in loader: our weights folders and official DiffMS checkpoints; None for other files."""
    return _load_our_or_official(Path(path), config_overrides)


@hookimpl
def diffms_weight_sources():
    sources = {}
    roots = [shipped_weights_dir()]
    if os.environ.get("MATCHMS_DIFFMS_WEIGHTS_DIR"):
        roots.insert(0, Path(os.environ["MATCHMS_DIFFMS_WEIGHTS_DIR"]))
    for root in roots:
        if root.is_dir():
            for sub in sorted(root.iterdir()):
                if (sub / "config.json").is_file():
                    sources.setdefault(sub.name, str(sub))
    return sources


__all__ = ["WeightsError", "load_model", "save_weights", "load_weights_dir", "verify_weights_dir",
           "convert_checkpoint", "resolve", "check_weights", "describe_weights", "shipped_weights_dir",
           "weights_sha256"]
