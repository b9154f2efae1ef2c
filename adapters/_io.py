"""File helpers shared by the adapters: atomic writes and the output writer lookup."""
from __future__ import annotations

import os
from pathlib import Path

from matchms_diffms import atomic_write


def write_text_atomic(path, write) -> None:
    """Call ``write(fh)`` on a temporary UTF-8 text file beside ``path`` (no newline translation), then
    rename it to ``path`` (``matchms_diffms.atomic_write``: fsync, permissions, ``OutputError``)."""
    def fill(tmp):
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            write(fh)

    atomic_write(path, fill)


def write_file_atomic(path, write_path) -> None:
    """Call ``write_path(tmp_path)`` (for writers that open the file themselves), then rename to ``path``.

    The temporary path does not exist when ``write_path`` is called (matchms writers append to or refuse
    existing files); it keeps the extension of ``path``.
    """
    def fill(tmp):
        os.remove(tmp)
        write_path(tmp)

    atomic_write(path, fill)


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
