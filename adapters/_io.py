"""File helpers shared by the adapters: atomic writes and the output writer lookup."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_text_atomic(path, write) -> None:
    """Call ``write(fh)`` on a temporary text file beside ``path`` (UTF-8, no newline translation), then
    rename it to ``path``; the temporary file is removed on failure."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_file_atomic(path, write_path, suffix: str = ".tmp") -> None:
    """Call ``write_path(tmp_path)`` (for writers that open the file themselves), then rename to ``path``.

    The temporary path does not exist when ``write_path`` is called (matchms writers append to or refuse
    existing files).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=suffix)
    os.close(fd)
    os.remove(tmp)
    try:
        write_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_annotated(spectra, path) -> None:
    """Write annotated spectra with the ``matchms-diffms`` output writer registered for the file's extension.

    Raises
    ------
    ValueError
        No writer for the extension.
    """
    from matchms_diffms.plugins import output_writers

    writers = output_writers()
    suffix = Path(path).suffix.lower()
    if suffix not in writers:
        raise ValueError(f"{path}: no output writer for {suffix!r} (known: {', '.join(sorted(writers))})")
    writers[suffix](list(spectra), path)
