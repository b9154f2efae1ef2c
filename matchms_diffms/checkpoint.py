"""The resumable checkpoint of a run: ``OUTPUT.partial.jsonl``, one JSON line per finished spectrum.

Format (``matchms-diffms-checkpoint/2``)::

    {"header": {"format", "input", "spectra_sha256", "n_spectra", "seed", "settings"}}
    {"index": 0, "metadata": {added or changed keys}, "removed": [keys the annotator dropped]}
    ...

``index`` is the spectrum's position in the run's list of spectra; ``spectra_sha256`` digests the identities
(:func:`matchms_diffms.metadata.spectrum_key`) of those spectra, so a checkpoint cannot be resumed with other
spectra, and ``settings`` must match as well. Every line is flushed and fsynced; a last line cut off by a
crash is dropped on resume. The file is created with its header on the first finished spectrum, so a run
that fails before (unknown weights, say) leaves nothing behind.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from .files import plain_value
from .io import InputError, RunError
from .metadata import spectrum_key

logger = logging.getLogger("matchms.diffms")

CHECKPOINT_FORMAT = "matchms-diffms-checkpoint/2"
CHECKPOINT_SUFFIX = ".partial.jsonl"

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_SUFFIX", "checkpoint_path_for", "new_header", "spectra_digest",
           "CheckpointWriter", "read_checkpoint", "apply_additions", "metadata_changes"]


def spectra_digest(spectra) -> str:
    """sha256 over the identities of ``spectra`` (id field, peaks and precursor m/z of each, in order)."""
    h = hashlib.sha256()
    for spectrum in spectra:
        h.update(spectrum_key(spectrum).encode())
        h.update(b"\n")
    return h.hexdigest()


def new_header(label: str, spectra, seed: int, settings: dict) -> dict:
    """The header of a new checkpoint for ``spectra`` (``label`` names the input in messages)."""
    return {"format": CHECKPOINT_FORMAT, "input": str(label), "spectra_sha256": spectra_digest(spectra),
            "n_spectra": len(spectra), "seed": seed, "settings": settings}


def checkpoint_path_for(output_path) -> Path:
    """The checkpoint file of an output: ``OUTPUT.partial.jsonl`` in the same folder."""
    output_path = Path(output_path)
    return output_path.with_name(output_path.name + CHECKPOINT_SUFFIX)


def _write_line(fh, obj) -> None:
    fh.write(json.dumps(obj, ensure_ascii=False, allow_nan=True) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


class CheckpointWriter:
    """Append-only checkpoint file, created with its header on the first record (so that a run that fails
    before finishing any spectrum, e.g. on unknown weights, leaves nothing behind)."""

    def __init__(self, path: Path, header: dict | None):
        self.path = path
        self.header = header          # None: the file exists already (resume), append to it
        self._fh = None

    def exists(self) -> bool:
        return self.path.exists()

    def append(self, index: int, record: dict) -> None:
        if self._fh is None:
            if self.header is not None:
                try:       # "x": a second run writing the same OUTPUT at the same time must not share the file
                    self._fh = open(self.path, "x", encoding="utf-8")
                except FileExistsError:
                    raise RunError(f"{self.path} appeared while this run was working: another run writes the "
                                   "same OUTPUT; give each run its own OUTPUT") from None
                _write_line(self._fh, {"header": self.header})
            else:
                self._fh = open(self.path, "a", encoding="utf-8")
        _write_line(self._fh, {"index": index, **record})

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_checkpoint(path: Path, header: dict) -> tuple[dict, dict]:
    """Read a checkpoint: check it belongs to this input and these settings, return (header, done records).

    A last line cut off by a crash is dropped (and cut from the file, so that new records start on a line of
    their own).
    """
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    good_end = 0
    done = {}
    old_header = None
    offset = 0
    for number, line in enumerate(lines):
        end = offset + len(line) + 1
        if not line.strip():
            offset = end
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            if number >= len(lines) - 2:   # an incomplete last line: the crash happened while writing it
                logger.warning("%s: dropping an incomplete last record", path)
                break
            raise InputError(f"checkpoint {path} is corrupt at line {number + 1}; delete it to start over") from None
        if number == 0:
            old_header = record.get("header") if isinstance(record, dict) else None
            if not isinstance(old_header, dict) or old_header.get("format") != CHECKPOINT_FORMAT:
                raise InputError(f"{path} is not a matchms-diffms checkpoint of this version "
                                 f"({CHECKPOINT_FORMAT}); delete it to start over")
        else:
            done[int(record["index"])] = {"metadata": dict(record.get("metadata", {})),
                                          "removed": list(record.get("removed", []))}
        good_end = min(end, len(raw))
        offset = end
    if old_header is None:
        raise InputError(f"checkpoint {path} is empty; delete it to start over")
    if good_end < len(raw):
        with open(path, "r+b") as fh:
            fh.truncate(good_end)
            if good_end and not raw[:good_end].endswith(b"\n"):
                fh.seek(good_end)
                fh.write(b"\n")
            fh.flush()
            os.fsync(fh.fileno())
    if header["seed"] is not None and header["seed"] != old_header.get("seed"):
        raise InputError(f"checkpoint {path} was written with --seed {old_header.get('seed')}, not {header['seed']}; "
                         "rerun with the same seed or delete the checkpoint")
    differing = [f"--{k.replace('_', '-')} {old_header['settings'].get(k)!r} (now {v!r})"
                 for k, v in header["settings"].items() if old_header.get("settings", {}).get(k) != v]
    if differing:
        raise InputError(f"checkpoint {path} was written with other settings: {'; '.join(differing)}; rerun with "
                         "the same settings or delete the checkpoint")
    if old_header.get("spectra_sha256") != header["spectra_sha256"] or old_header.get("n_spectra") != header["n_spectra"]:
        raise InputError(f"checkpoint {path} was written for another input ({old_header.get('input')}); "
                         "delete it to start over")
    return old_header, done


def apply_additions(spectrum, record: dict):
    """A clone of ``spectrum`` with a checkpoint record applied (``metadata`` set, ``removed`` keys dropped)."""
    from matchms import Spectrum

    metadata = dict(spectrum.metadata)
    for key in record.get("removed", ()):
        metadata.pop(key, None)
    metadata.update(record.get("metadata", {}))
    return Spectrum(mz=spectrum.peaks.mz, intensities=spectrum.peaks.intensities, metadata=metadata,
                    metadata_harmonization=False)


def metadata_changes(original, annotated) -> dict:
    """What the annotator changed: ``{"metadata": {added or changed keys: JSON-ready values},
    "removed": [keys it dropped]}`` (it drops stale diffms_* results of an earlier run)."""
    import numpy as np

    before = original.metadata
    after = annotated.metadata
    changed = {}
    for key, value in after.items():
        if key in before:
            old = before[key]
            if isinstance(old, np.ndarray) or isinstance(value, np.ndarray):
                same = isinstance(old, np.ndarray) and isinstance(value, np.ndarray) and np.array_equal(old, value)
            else:
                try:
                    same = bool(old == value) and type(old) is type(value)
                except (ValueError, TypeError):
                    same = False
            if same:
                continue
        changed[key] = plain_value(value, finite=True)
    return {"metadata": changed, "removed": sorted(k for k in before if k not in after)}
