"""Carry DiffMS results through matchms export styles that keep only their own keys.

matchms' writers (``save_as_mgf``, ``save_as_msp``, ``save_as_json``) keep every metadata key with the default
``export_style="matchms"``. Every other style (``gnps``, ``massbank``, ``nist``, ``riken``, ``golm``) writes
only the keys listed for it in matchms' export key table (``matchms/data/export_key_conversions.csv``), so all
``diffms_*`` keys vanish silently. :func:`carry_top_candidate` copies the top candidate into a key the style
keeps:

=========  ================================  =====================================
style      default key (written as)          other keys the style keeps, e.g.
=========  ================================  =====================================
gnps       ``compound_name`` (``NAME``)      ``smiles`` (``SMILES``)
massbank   ``comment`` (``COMMENT``)         ``smiles`` (``CH$SMILES``)
nist       ``comment`` (``COMMENTS``)        ``compound_name`` (``NAME``)
riken      ``comment`` (``COMMENT``)         ``smiles`` (``SMILES``)
=========  ================================  =====================================

The default key is ``comment`` where the style keeps it, else ``compound_name``. In ``comment`` the text is
NIST's quoted ``key=value`` form, ``"diffms_smiles=<SMILES>" "diffms_score=0.421" "diffms_model=<id>"``, which
matchms' MSP reader turns back into those ``diffms_*`` keys when it reads a NIST-style ``Comments:`` line (any
other free text there, e.g. a SMILES with ``=``, is mangled by that reader); in MGF files it comes back as
the plain ``comment`` string. Other keys get ``DiffMS #1 <SMILES> (score s, model m)``. ``key="smiles"`` writes
the bare SMILES (what tools that read only standard fields need; it then stands where a library puts *the*
structure, so ask for it explicitly). An existing ``comment`` is kept and the text appended after ``"; "``;
any other non-empty key is only replaced with ``overwrite=True``.

Example
-------
>>> from matchms.exporting import save_as_mgf
>>> carried = [carry_top_candidate(s, "gnps") for s in annotated]          # doctest: +SKIP
>>> save_as_mgf(carried, "for_gnps.mgf", export_style="gnps")               # doctest: +SKIP
"""
from __future__ import annotations

__all__ = ["carry_top_candidate", "kept_keys", "carried_text"]

APPEND_KEYS = ("comment",)
STRUCTURE_KEYS = ("smiles",)


def kept_keys(export_style: str) -> frozenset[str]:
    """The matchms metadata keys that ``export_style`` writes (read from matchms' own export key table).

    Raises
    ------
    ValueError
        An export style matchms does not know.
    """
    from matchms.utils import load_export_key_conversions

    if export_style == "matchms":
        raise ValueError("export_style 'matchms' keeps every key: nothing needs to be carried")
    try:
        table = load_export_key_conversions(export_style=export_style)
    except KeyError:
        raise ValueError(f"unknown matchms export style {export_style!r}") from None
    return frozenset(key for key, target in table.items() if isinstance(target, str) and target)


def carried_text(spectrum, key: str = "comment") -> str | None:
    """The text :func:`carry_top_candidate` writes into ``key`` (see the module docstring); None when the
    spectrum has no DiffMS candidate."""
    smiles = spectrum.get("diffms_smiles")
    if not smiles:
        return None
    if key in STRUCTURE_KEYS:
        return str(smiles)
    score = spectrum.get("diffms_score")
    try:
        score = f"{float(score):.3f}" if score is not None else None
    except (TypeError, ValueError):
        score = str(score)
    model = spectrum.get("diffms_model")
    if key == "comment":
        pairs = (("diffms_smiles", smiles), ("diffms_score", score), ("diffms_model", model))
        return " ".join(f'"{name}={value}"' for name, value in pairs if value)
    details = ", ".join(text for text in (score and f"score {score}", model and f"model {model}") if text)
    return f"DiffMS #1 {smiles}" + (f" ({details})" if details else "")


def carry_top_candidate(spectrum, export_style: str, key: str | None = None, overwrite: bool = False):
    """A clone of ``spectrum`` whose top DiffMS candidate survives ``save_as_*(..., export_style=...)``.

    Parameters
    ----------
    spectrum
        A spectrum annotated by ``DiffMSAnnotator`` (``diffms_smiles`` set); without a candidate the clone is
        returned unchanged.
    export_style
        The matchms export style that will be used (``gnps``, ``massbank``, ``nist``, ``riken``, ``golm``).
    key
        Metadata key to carry it in; default ``comment`` when the style keeps it, else ``compound_name``.
    overwrite
        Replace a non-empty value of ``key`` (``comment`` is appended to instead).

    Raises
    ------
    ValueError
        Unknown style, a ``key`` the style drops, or a non-empty ``key`` without ``overwrite``.
    """
    kept = kept_keys(export_style)
    if key is None:
        key = "comment" if "comment" in kept else "compound_name"
    if key not in kept:
        usable = ", ".join(k for k in ("comment", "compound_name", "smiles", "title") if k in kept)
        raise ValueError(f"export style {export_style!r} drops the key {key!r}; keys it keeps include {usable}")
    out = spectrum.clone()
    text = carried_text(spectrum, key)
    if not text:
        return out
    current = spectrum.get(key)
    if current not in (None, ""):
        if key in APPEND_KEYS:
            text = f"{current}; {text}"
        elif not overwrite:
            raise ValueError(f"{key!r} already holds {current!r}; pass overwrite=True to replace it or choose "
                             f"another key")
    out.set(key, text)
    return out
