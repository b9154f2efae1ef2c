"""The ``diffms_*`` metadata contract: what the annotator writes on a spectrum and how to read it back.

A leaf module (standard library only, no torch, no numpy): readers of annotated files (the report, the
writers, the adapters) import it without loading the model.

==========================  ======================================================================
``diffms_status``           ``ok`` or ``<code>: <text>`` (codes: :data:`STATUS_CODES`)
``diffms_smiles``           top candidate (absent when there is none)
``diffms_inchikey``         top candidate
``diffms_score``            top candidate's calibrated score in [0, 1]
``diffms_candidates``       JSON list of ``{smiles, inchikey, formula, score, count, tanimoto,
                            frequency, raw_score, source}``, best first (``"[]"`` when none);
                            ``source``: ``sampled`` (every sample of it was formula-exact as drawn),
                            ``decoded`` (all came from constrained decoding) or ``sampled+decoded``
``diffms_formula``          Hill formula of the top candidate (else of the first formula tried)
``diffms_formula_source``   metadata / precursor_formula / sirius / mass_decomposition (or a plugin's name)
``diffms_adduct``           adduct used for the encoder
``diffms_adduct_assumed``   True when the adduct was not given but assumed from the ion mode
``diffms_model``            ``<weights name>@<sha256 first 12>``
``diffms_n_samples``        samples drawn per formula
``diffms_steps``            reverse diffusion steps
``diffms_seed``             base seed
``diffms_n_valid``          valid samples (all formulas)
``diffms_n_formula_match``  valid samples with exactly the formula, as drawn (all formulas)
``diffms_n_completed``      samples turned into a formula-exact molecule by constrained decoding
                            (``complete=True``; 0 with ``complete=False``)
``diffms_seconds``          wall time for this spectrum
==========================  ======================================================================

Lists are stored as JSON strings so that matchms' MGF, MSP and JSON writers keep them with their default
``export_style="matchms"``; after an MGF/MSP round trip every value is a string, :func:`read_annotation` gives
the typed values back. Every other export style (``gnps``, ``massbank``, ``nist``, ``riken``) drops all
``diffms_*`` keys: see :func:`matchms_diffms.export_styles.carry_top_candidate`.

The id of a spectrum (:func:`spectrum_id`) is defined here once: the TSV table, the SIRIUS formula lookup and
every log line use it.
"""
from __future__ import annotations

import ast
import hashlib
import json
import math

STATUS_CODES = ("ok", "no_peaks", "invalid_peaks", "no_formula", "invalid_formula", "formula_mismatch",
                "unsupported_element", "unsupported_adduct", "too_many_atoms", "too_few_atoms",
                "no_annotated_peaks", "no_valid_candidates", "error")

METADATA_KEYS = ("diffms_status", "diffms_smiles", "diffms_inchikey", "diffms_score", "diffms_candidates",
                 "diffms_formula", "diffms_formula_source", "diffms_adduct", "diffms_adduct_assumed",
                 "diffms_model", "diffms_n_samples", "diffms_steps", "diffms_seed", "diffms_n_valid",
                 "diffms_n_formula_match", "diffms_n_completed", "diffms_seconds")

# Metadata fields that identify a spectrum, in order of precedence.
ID_KEYS = ("feature_id", "scans", "title", "spectrum_id", "identifier", "compound_name")
# Fields the sampling seed of a spectrum is derived from (:func:`spectrum_key`). Frozen: changing them would
# change every result, so they keep their historical order instead of following ID_KEYS.
_SEED_ID_KEYS = ("spectrum_id", "feature_id", "title", "scans", "compound_name")

__all__ = ["STATUS_CODES", "METADATA_KEYS", "ID_KEYS", "status_code", "spectrum_id", "spectrum_label", "spectrum_key",
           "text_value", "read_candidates", "read_annotation"]


# ------------------------------------------------------------------------------------------ identity
def text_value(value) -> str | None:
    """A metadata value as a stripped string; None for missing / empty / NaN values."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    text = str(value).strip()
    return text or None


def _id_field(spectrum) -> tuple[str, str] | None:
    for key in ID_KEYS:
        text = text_value(spectrum.get(key))
        if text is not None:
            return key, text
    return None


def spectrum_id(spectrum) -> str | None:
    """Identifier of a spectrum: the first present of :data:`ID_KEYS` (as a string), None when none is."""
    found = _id_field(spectrum)
    return None if found is None else found[1]


def spectrum_label(spectrum, index: int | None = None) -> str:
    """How logs name a spectrum: ``<field>=<id>`` (the field of :func:`spectrum_id`), else ``#index``."""
    found = _id_field(spectrum)
    if found is not None:
        return f"{found[0]}={found[1]}"
    return f"#{index}" if index is not None else "<no id>"


def spectrum_key(spectrum) -> str:
    """The identity a spectrum's sampling seed is derived from: its first id field plus a sha256 of its peaks
    (float64 bytes) and precursor m/z, so that the same spectrum gets the same seed in any file, at any
    position and in any process."""
    h = hashlib.sha256()
    h.update(spectrum.peaks.mz.astype("float64").tobytes())
    h.update(spectrum.peaks.intensities.astype("float64").tobytes())
    h.update(repr(spectrum.get("precursor_mz")).encode())
    ident = next((str(spectrum.get(k)) for k in _SEED_ID_KEYS if spectrum.get(k) not in (None, "")), "")
    return f"id:{ident}|peaks:{h.hexdigest()[:32]}"


# ------------------------------------------------------------------------------------------ status
def status_code(status: str | None) -> str:
    """The reason code of a ``diffms_status`` value (the part before the first colon; ``""`` for None)."""
    return "" if status is None else str(status).split(":", 1)[0].strip()


# ------------------------------------------------------------------------------------------ reading back
def read_candidates(value) -> list[dict]:
    """Candidates from a ``diffms_candidates`` value: a JSON string (as written), a list (JSON import of an
    older file), or a Python-repr string (a list exported by matchms' MGF/MSP writers)."""
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return [dict(v) for v in value]
    if isinstance(value, str):
        try:
            out = json.loads(value)
        except json.JSONDecodeError:
            out = ast.literal_eval(value)
        if not isinstance(out, list):
            raise ValueError(f"diffms_candidates is not a list: {value[:80]!r}")
        return [dict(v) for v in out]
    raise ValueError(f"cannot read diffms_candidates of type {type(value).__name__}")


def _as_float(v):
    return None if v in (None, "", "None") else float(v)


def _as_int(v):
    return None if v in (None, "", "None") else int(float(v))


def _as_bool(v):
    if v in (None, "", "None"):
        return None
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes")
    return bool(v)


def read_annotation(spectrum_or_metadata) -> dict:
    """Typed ``diffms_*`` values of a spectrum, also after an MGF/MSP round trip (where numbers and booleans
    come back as strings). Keys without the ``diffms_`` prefix; absent values are ``None``;
    ``candidates`` is a list of dicts."""
    get = spectrum_or_metadata.get
    out = {"status": get("diffms_status"), "smiles": get("diffms_smiles"), "inchikey": get("diffms_inchikey"),
           "score": _as_float(get("diffms_score")), "candidates": read_candidates(get("diffms_candidates")),
           "formula": get("diffms_formula"), "formula_source": get("diffms_formula_source"),
           "adduct": get("diffms_adduct"), "adduct_assumed": _as_bool(get("diffms_adduct_assumed")),
           "model": get("diffms_model"), "n_samples": _as_int(get("diffms_n_samples")),
           "steps": _as_int(get("diffms_steps")), "seed": _as_int(get("diffms_seed")),
           "n_valid": _as_int(get("diffms_n_valid")), "n_formula_match": _as_int(get("diffms_n_formula_match")),
           "n_completed": _as_int(get("diffms_n_completed")),
           "seconds": _as_float(get("diffms_seconds"))}
    for c in out["candidates"]:
        for k in ("score", "tanimoto", "frequency", "raw_score"):
            if k in c:
                c[k] = float(c[k])
        if "count" in c:
            c["count"] = int(c["count"])
    return out
