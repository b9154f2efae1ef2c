"""Spectrum tokens for the DiffMS encoder: one annotation record -> per-token arrays -> padded batch.

A subformula-annotation record (``chem.subformulae.assign_subformulae``) becomes one token per annotated peak,
in ``output_tbl`` order, followed by ONE CLS token carrying the precursor formula::

    token      formula (18 counts)   type       adduct index       intensity
    peak i     sub-formula counts    0 (frag)   index of ions[i]   ms2_inten[i]
    CLS (last) cand_form counts      3 (cls)    index of cand_ion  1.0
    padding    zeros                 0          0                  0.0

``collate`` pads a list of such token sets to one batch exactly like the reference collate.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from ..chem.formula import ELEMENTS_18, Formula

# Element order of every 18-d formula vector (fixed by the released checkpoints).
ELEMENTS = ELEMENTS_18
MAX_COUNT = 255                 # pos-cos has rows for 0..254 plus one learned row for 255
TYPE_FRAG, TYPE_CLS = 0, 3      # token types (1 "loss" and 2 "ab_loss" are never produced)
NUM_TYPES = 4


@functools.lru_cache(maxsize=256)
def canonical_adduct(name: str) -> str:
    """Canonical name of an adduct, so that equivalent spellings share one encoder slot.

    Parameters
    ----------
    name
        Adduct as written in an annotation or a configuration, e.g. ``"[M+H3N+H]+"`` or ``"M+NH4"``.

    Returns
    -------
    str
        The matchms-style name of ``chem.adducts.parse_adduct``, e.g. ``"[M+NH4]+"``.

    Raises
    ------
    ValueError
        For strings that name no supported adduct (empty, multiply charged, multimers, ...).
    """
    from ..chem.adducts import parse_adduct     # its masses need RDKit: not at import (decoder training has none)

    return parse_adduct(name).name


def adduct_index(name: str, adducts: list[str]) -> int:
    """Position of adduct ``name`` in the one-hot slot list ``adducts`` (equivalent spellings match).

    Empty slots (the unused 8th slot of the official models) never match.

    Raises
    ------
    ValueError
        If the adduct has no slot (e.g. a negative-mode adduct for the official models).
    """
    known = [a for a in adducts if a]
    try:
        wanted = canonical_adduct(name)
    except ValueError as exc:
        raise ValueError(f"adduct {name!r} has no encoder slot ({exc}); this model knows {known}") from None
    for i, slot in enumerate(adducts):
        if slot and canonical_adduct(slot) == wanted:
            return i
    raise ValueError(f"adduct {name!r} has no encoder slot; this model knows {known}")


def formula_vector(text: str) -> np.ndarray:
    """Element counts of a neutral formula as an int64 vector (18,) in ``ELEMENTS`` order.

    Raises
    ------
    ValueError
        If the formula cannot be parsed, has an element outside the 18, or a count outside 0..255
        (the pos-cos embedding has no row for it).

    The empty string is the empty sub-formula: a peak explained by the bare adduct ion (e.g. the proton
    at m/z 1.00728 for [M+H]+), which the reference embeds as an all-zero formula.
    """
    if not text:
        return np.zeros(len(ELEMENTS), dtype=np.int64)
    vec = Formula.parse(text).vector18()                                   # (18,) int64
    _check_counts(vec, text)
    return vec


def _check_counts(vec: np.ndarray, what: str) -> None:
    if vec.min() < 0 or vec.max() > MAX_COUNT:
        bad = {ELEMENTS[i]: int(c) for i, c in enumerate(vec) if c < 0 or c > MAX_COUNT}
        raise ValueError(f"{what}: element counts must lie in 0..{MAX_COUNT} for the encoder, got {bad}")


def tokens_from_annotation(annotation: dict, adducts: list[str]) -> dict:
    """Turn one subformula-annotation record into encoder tokens (CLS last).

    Parameters
    ----------
    annotation
        ``{"cand_form": str, "cand_ion": str, "output_tbl": None | {"formula": [...],
        "ms2_inten": [...], "ions": [...], ...}}`` (what ``chem.subformulae.assign_subformulae`` returns).
    adducts
        The model's adduct one-hot slots (``DiffMSConfig.adducts``); the index is the slot position.

    Returns
    -------
    dict
        ``form_vec`` (N, 18) float32 raw counts, ``types`` (N,) int64, ``ion_vec`` (N,) int64 adduct
        index, ``intens`` (N,) float32, ``num_peaks`` int (= N = annotated peaks + 1).

    Raises
    ------
    ValueError
        On an unknown adduct, an unparsable formula, a count outside 0..255, or a fragment that is not
        a sub-formula of the precursor (its neutral loss would have negative counts, which the reference
        silently wraps into wrong table rows).
    """
    precursor = formula_vector(annotation["cand_form"])
    table = annotation.get("output_tbl") or {"formula": [], "ms2_inten": [], "ions": []}
    formulas, intens, ions = table["formula"], table["ms2_inten"], table["ions"]
    if not len(formulas) == len(intens) == len(ions):
        raise ValueError(f"output_tbl lists differ in length: formula {len(formulas)}, "
                         f"ms2_inten {len(intens)}, ions {len(ions)}")

    n = len(formulas) + 1
    form_vec = np.zeros((n, len(ELEMENTS)), dtype=np.float32)
    types = np.full(n, TYPE_FRAG, dtype=np.int64)
    ion_vec = np.zeros(n, dtype=np.int64)
    inten = np.zeros(n, dtype=np.float32)
    for i, (f, x, ion) in enumerate(zip(formulas, intens, ions)):
        vec = formula_vector(f)
        _check_counts(precursor - vec, f"neutral loss {annotation['cand_form']} - {f}")
        form_vec[i] = vec
        ion_vec[i] = adduct_index(ion, adducts)
        inten[i] = x
    form_vec[-1] = precursor
    types[-1] = TYPE_CLS
    ion_vec[-1] = adduct_index(annotation["cand_ion"], adducts)
    inten[-1] = 1.0
    return {"form_vec": form_vec, "types": types, "ion_vec": ion_vec, "intens": inten, "num_peaks": n}


def collate(token_list: list[dict], pad_to: int | None = None) -> dict:
    """Pad token sets into one batch of torch tensors (padding = zero formula, type 0, adduct 0, 0.0).

    Parameters
    ----------
    token_list
        Outputs of ``tokens_from_annotation``.
    pad_to
        Padded length N; default the longest token set. Padding changes the output of models run with
        ``reference_padding=True`` (official checkpoints), so it is explicit here.

    Returns
    -------
    dict
        ``form_vec`` (B, N, 18) float32, ``types`` (B, N) int64, ``ion_vec`` (B, N) int64,
        ``intens`` (B, N) float32, ``num_peaks`` (B,) int64.
    """
    if not token_list:
        raise ValueError("collate needs at least one token set")
    lengths = [int(t["num_peaks"]) for t in token_list]
    n = max(lengths) if pad_to is None else int(pad_to)
    if n < max(lengths):
        raise ValueError(f"pad_to={pad_to} is shorter than the longest token set ({max(lengths)})")
    b = len(token_list)
    form_vec = np.zeros((b, n, len(ELEMENTS)), dtype=np.float32)
    types = np.zeros((b, n), dtype=np.int64)
    ion_vec = np.zeros((b, n), dtype=np.int64)
    intens = np.zeros((b, n), dtype=np.float32)
    for i, (t, m) in enumerate(zip(token_list, lengths)):
        form_vec[i, :m] = t["form_vec"]
        types[i, :m] = t["types"]
        ion_vec[i, :m] = t["ion_vec"]
        intens[i, :m] = t["intens"]
    return {"form_vec": torch.from_numpy(form_vec), "types": torch.from_numpy(types),
            "ion_vec": torch.from_numpy(ion_vec), "intens": torch.from_numpy(intens),
            "num_peaks": torch.tensor(lengths, dtype=torch.int64)}
