"""Files: atomic writes, sha256 of a file, plain JSON values (standard library only; a leaf module).

Every file matchms-diffms writes (outputs, reports, metrics, weights, checkpoints headers) goes through
:func:`atomic_write`: a temporary file in the destination folder, flushed to disk (fsync), renamed over the
destination (``os.replace``) and the rename made durable (fsync of the folder). A reader never sees a
half-written file, and an interrupted run leaves the previous file intact.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
from pathlib import Path

logger = logging.getLogger("matchms.diffms")

__all__ = ["OutputError", "atomic_write", "atomic_write_text", "sha256_file", "plain_value"]


class OutputError(Exception):
    """An output file cannot be written; the message names the path and the reason."""


# ------------------------------------------------------------------------------------------ atomic writing
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write_tmp) -> Path:
    """Write ``path`` atomically: ``write_tmp(tmp_path: str)`` fills a temporary file in the same folder,
    which is then fsynced and renamed over ``path``.

    The temporary file keeps the extension of ``path`` (some matchms exporters look at it). On any error the
    temporary file is removed and ``path`` is left as it was.

    Raises
    ------
    OutputError
        For any ``OSError`` (disk full, permission denied, missing folder, ...).
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"cannot write {path}: folder {folder} does not exist")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=folder)
        os.close(fd)
        write_tmp(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        mode = (path.stat().st_mode & 0o7777) if path.exists() else (0o666 & ~_umask())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        tmp = None
        _fsync_folder(folder)
    except OSError as err:
        reason = err.strerror or str(err)
        raise OutputError(f"cannot write {path}: {reason}") from err
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
    return path


def _fsync_folder(folder: Path) -> None:
    """Persist the rename (POSIX); file systems without directory fsync are logged, not fatal."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError as err:
        logger.debug("cannot open folder %s for fsync: %s", folder, err)
        return
    try:
        os.fsync(fd)
    except OSError as err:
        logger.debug("fsync of folder %s not supported: %s", folder, err)
    finally:
        os.close(fd)


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically (see :func:`atomic_write`)."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)

    return atomic_write(path, write)


# ------------------------------------------------------------------------------------------ digests
def sha256_file(path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------ JSON values
def plain_value(value, *, finite: bool = False):
    """``value`` with numpy scalars / arrays and tuples turned into plain Python values (recursively; dict
    keys become strings), ready for ``json.dumps``.

    Parameters
    ----------
    finite
        Also turn NaN and infinite floats into ``None`` (for strict JSON, ``allow_nan=False``).
    """
    if hasattr(value, "dtype") and hasattr(value, "tolist"):      # numpy scalar or array, without numpy
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [plain_value(v, finite=finite) for v in value]
    if isinstance(value, dict):
        return {str(k): plain_value(v, finite=finite) for k, v in value.items()}
    if finite and isinstance(value, float) and not math.isfinite(value):
        return None
    return value
