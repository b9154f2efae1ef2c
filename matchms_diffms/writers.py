"""Built-in output writers: ``.mgf``, ``.msp``, ``.json`` (matchms exporters) and ``.tsv`` (candidate table).

Every writer has the signature ``writer(spectra, path)`` and writes atomically: the content goes to a
temporary file in the destination folder, is flushed to disk (fsync) and then renamed over ``path``
(``os.replace``), so a reader never sees a half-written file and an interrupted run leaves the previous file
intact. Any operating-system error (disk full, permission denied, missing folder) is raised as
:class:`matchms_diffms.files.OutputError` naming the path.

How DiffMS metadata survives the formats (matchms 0.33):

* JSON keeps Python types: ``diffms_candidates`` is a real list of dicts, scores are floats.
* MGF and MSP store every value as text. Lists and dicts (``diffms_candidates``) are written as compact
  JSON strings (``[{"smiles":"CCO",...}]``), newlines in text values are replaced by spaces, ``None`` values
  are left out, numpy scalars become Python numbers. After re-import the values are strings; use
  :func:`matchms_diffms.metadata.read_annotation` (or :func:`decode_candidates`) to get the original types
  back.
* TSV: one row per spectrum and candidate rank with the columns :data:`TSV_COLUMNS`; a spectrum without
  candidates gets one row with an empty rank and its status.

A spectrum without peaks (status ``no_peaks``) is written to every format, but matchms' MSP and JSON readers
skip peakless spectra when the file is read back; MGF and TSV keep it.
"""
from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

from .files import atomic_write, plain_value
from .metadata import read_candidates, spectrum_id
from .hookspecs import hookimpl

logger = logging.getLogger("matchms.diffms")

__all__ = [
    "TSV_COLUMNS",
    "write_mgf",
    "write_msp",
    "write_json",
    "write_tsv",
    "decode_candidates",
    "tsv_rows",
    "WRITERS",
]

TSV_COLUMNS = ("spectrum_id", "rank", "smiles", "inchikey", "formula", "score", "count", "status",
               "formula_source", "adduct", "model")

# Metadata values that are lists of dicts (JSON strings in MGF / MSP, real lists in JSON).
_JSON_KEYS = ("diffms_candidates",)


# ------------------------------------------------------------------------------------------ metadata coding
def _as_text_value(value):
    """A metadata value as MGF/MSP can hold it (None -> leave the key out)."""
    value = plain_value(value)
    if value is None:
        return None
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    if isinstance(value, str):
        return value.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    return value


def _text_safe_clone(spectrum):
    """Clone with metadata converted for MGF / MSP export."""
    out = spectrum.clone()
    metadata = {}
    for key, value in spectrum.metadata.items():
        if key == "fingerprint":
            metadata[key] = value
            continue
        text = _as_text_value(value)
        if text is not None:
            metadata[key] = text
    out.metadata = metadata
    return out


def _json_safe_clone(spectrum):
    """Clone with numpy values made plain and ``diffms_candidates`` stored as a list."""
    out = spectrum.clone()
    metadata = {}
    for key, value in spectrum.metadata.items():
        if key == "fingerprint":
            metadata[key] = value
            continue
        if key in _JSON_KEYS and isinstance(value, str):
            value = _decoded_or_kept(value, spectrum)
        metadata[key] = plain_value(value)
    out.metadata = metadata
    return out


def _decoded_or_kept(value: str, spectrum):
    """Decode a ``diffms_candidates`` string for JSON output; an unreadable one is kept as text (warned)."""
    try:
        return decode_candidates(value)
    except (ValueError, SyntaxError) as err:
        logger.warning("spectrum %s: diffms_candidates is not a list (%s); written unchanged",
                       spectrum_id(spectrum), err)
        return value


def decode_candidates(value) -> list[dict]:
    """``diffms_candidates`` as a list of dicts, whether stored as a list, a JSON string or a Python repr
    (delegates to :func:`matchms_diffms.metadata.read_candidates`, the one reader of that format)."""
    return read_candidates(value)


# ------------------------------------------------------------------------------------------ writers
def write_mgf(spectra, path) -> Path:
    """Write spectra as MGF (matchms ``save_as_mgf``, export style ``matchms``), atomically."""
    from matchms.exporting import save_as_mgf

    clones = [_text_safe_clone(s) for s in spectra]
    return atomic_write(path, lambda tmp: save_as_mgf(clones, tmp, export_style="matchms", file_mode="w"))


def write_msp(spectra, path) -> Path:
    """Write spectra as MSP (matchms ``save_as_msp``, style ``matchms``), atomically."""
    from matchms.exporting import save_as_msp

    clones = [_text_safe_clone(s) for s in spectra]
    return atomic_write(path, lambda tmp: save_as_msp(clones, str(tmp), mode="w", style="matchms"))


def write_json(spectra, path) -> Path:
    """Write spectra as matchms JSON (``save_as_json``), atomically; lists stay lists."""
    from matchms.exporting import save_as_json

    clones = [_json_safe_clone(s) for s in spectra]
    return atomic_write(path, lambda tmp: save_as_json(clones, tmp, export_style="matchms"))


def _cell(value) -> str:
    value = plain_value(value)
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def tsv_rows(spectra) -> list[dict]:
    """The rows of the candidate table (one per spectrum and rank), as dicts keyed by :data:`TSV_COLUMNS`."""
    rows = []
    for index, spectrum in enumerate(spectra):
        meta = spectrum.metadata
        sid = spectrum_id(spectrum)
        base = {
            "spectrum_id": sid if sid is not None else str(index),
            "formula": meta.get("diffms_formula"),
            "status": meta.get("diffms_status"),
            "formula_source": meta.get("diffms_formula_source"),
            "adduct": meta.get("diffms_adduct"),
            "model": meta.get("diffms_model"),
        }
        try:
            candidates = decode_candidates(meta.get("diffms_candidates"))
        except (ValueError, SyntaxError) as err:
            logger.warning("spectrum %s: diffms_candidates cannot be read (%s); no candidate rows written",
                           base["spectrum_id"], err)
            candidates = []
        if not candidates:
            rows.append({**base, "rank": None})
            continue
        for rank, cand in enumerate(candidates, start=1):
            row = dict(base)
            row.update(rank=rank, smiles=cand.get("smiles"), inchikey=cand.get("inchikey"),
                       score=cand.get("score"), count=cand.get("count"))
            for key in ("formula", "formula_source", "adduct"):
                if cand.get(key) not in (None, ""):
                    row[key] = cand[key]
            rows.append(row)
    return rows


def write_tsv(spectra, path) -> Path:
    """Write the candidate table (columns :data:`TSV_COLUMNS`, tab separated, UTF-8), atomically."""
    rows = tsv_rows(spectra)

    def write(tmp):
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
            writer.writerow(TSV_COLUMNS)
            for row in rows:
                writer.writerow([_cell(row.get(col)) for col in TSV_COLUMNS])

    return atomic_write(path, write)


WRITERS = {".mgf": write_mgf, ".msp": write_msp, ".json": write_json, ".tsv": write_tsv}


@hookimpl
def diffms_output_writers():
    return dict(WRITERS)
