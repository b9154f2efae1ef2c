"""SIRIUS 6 adapter: SIRIUS formula identifications as DiffMS formula candidates, and a de novo structure
summary in the layout of SIRIUS' ``denovo_structure_identifications.tsv``.

Reading ``formula_identifications*.tsv`` (SIRIUS' project summary), leniently across SIRIUS versions:

========================  ===========================================================================
feature id                first non-empty of ``mappingFeatureId``, ``providedFeatureId``, ``featureId``,
                          ``alignedFeatureId``, ``id`` (SIRIUS 5)
rank                      ``formulaRank``, else ``rank``, else the order in the file
formula                   ``molecularFormula`` (neutral)
adduct                    ``adduct`` with spaces removed (``[M + H]+`` -> ``[M+H]+``)
score                     first number among ``ZodiacScore``, ``SiriusScore``, ``SiriusScoreNormalized``
========================  ===========================================================================

The table becomes ``context["sirius_formulas"] = {feature_id: [(formula, adduct, score), ...]}`` (best rank
first), which the built-in ``sirius`` formula provider of :mod:`matchms_diffms.formula_sources` reads; the
spectrum's id is its ``feature_id`` (MZmine's FEATURE_ID = SIRIUS' ``mappingFeatureId``). Provider order is
unchanged: a formula in the spectrum's own metadata still wins over SIRIUS.

Command (registered through ``diffms_register_commands``)::

    matchms-diffms sirius-annotate SPECTRA --sirius-dir SIRIUS_SUMMARY -o denovo_structure_identifications.tsv
        [--annotated annotated.mgf] [--weights default] [--samples 100] [--top-k 10] ...

The output table has SIRIUS' de novo columns (``structurePerIdRank`` ... ``mappingFeatureId``; ``ModelScore`` =
the DiffMS score, ``CSI:FingerIDScore`` empty, adducts in SIRIUS spelling ``[M + H]+``) followed by
``feature_id``, ``scans``, ``precursor_mz``, ``retention_time``, ``diffms_score``, ``diffms_count``,
``diffms_formula_source``, ``diffms_model``, ``diffms_status``.
"""
from __future__ import annotations

import csv
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import click

from matchms_diffms import annotation_options, hookimpl, spectrum_id

from .._io import write_annotated, write_text_atomic

logger = logging.getLogger("matchms.diffms")

ID_COLUMNS = ("mappingFeatureId", "providedFeatureId", "featureId", "alignedFeatureId", "id")
RANK_COLUMNS = ("formulaRank", "rank")
SCORE_COLUMNS = ("ZodiacScore", "SiriusScore", "SiriusScoreNormalized")
FORMULA_COLUMNS = ("molecularFormula", "formula")
MISSING = {"", "n/a", "na", "nan", "null", "none", "-"}
# Preferred file when a folder is given: more formula ranks first.
TABLE_NAMES = ("formula_identifications_all.tsv", "formula_identifications_top-*.tsv",
               "formula_identifications.tsv", "formula_identifications_adducts.tsv")

DENOVO_COLUMNS = ("structurePerIdRank", "formulaRank", "CSI:FingerIDScore", "ModelScore", "ZodiacScore",
                  "SiriusScore", "molecularFormula", "adduct", "precursorFormula", "InChIkey2D", "InChI", "name",
                  "smiles", "ionMass", "retentionTimeInSeconds", "formulaId", "alignedFeatureId",
                  "mappingFeatureId")
EXTRA_COLUMNS = ("feature_id", "scans", "precursor_mz", "retention_time", "diffms_score", "diffms_count",
                 "diffms_formula_source", "diffms_model", "diffms_status")


@dataclass(frozen=True)
class SiriusFormula:
    """One row of a SIRIUS formula identification table."""

    feature_id: str
    rank: int
    formula: str
    adduct: str
    score: float | None = None
    sirius_score: float | None = None
    zodiac_score: float | None = None
    precursor_formula: str | None = None
    formula_id: str | None = None
    aligned_feature_id: str | None = None


# ------------------------------------------------------------------------------------------------ reading
def _value(row: dict, column: str) -> str | None:
    value = row.get(column)
    if value is None:
        return None
    value = value.strip()
    return None if value.lower() in MISSING else value


def _first(row: dict, columns) -> str | None:
    for column in columns:
        value = _value(row, column)
        if value is not None:
            return value
    return None


def _number(text) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def find_formula_table(path) -> Path:
    """The formula identification TSV of a SIRIUS summary folder (or ``path`` itself if it is a file).

    Raises
    ------
    FileNotFoundError
        No ``formula_identifications*.tsv`` in the folder.
    """
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    for pattern in TABLE_NAMES:
        found = sorted(path.glob(pattern), key=lambda p: _top_k(p.name), reverse=True)
        if found:
            return found[0]
    raise FileNotFoundError(f"{path}: no formula_identifications*.tsv (run 'sirius summaries' or export the "
                            f"summary tables from the SIRIUS GUI)")


def _top_k(name: str) -> int:
    m = re.search(r"_top-(\d+)", name)
    return int(m.group(1)) if m else 0


def read_formula_identifications(path) -> dict[str, list[SiriusFormula]]:
    """Read a SIRIUS ``formula_identifications*.tsv`` (SIRIUS 6; earlier 6.x and SIRIUS 5 headers too).

    Parameters
    ----------
    path
        The TSV, or a SIRIUS summary folder (see :func:`find_formula_table`).

    Returns
    -------
    dict
        ``{feature_id: [SiriusFormula, ...]}`` sorted by rank; a (formula, adduct) pair appears once per
        feature (its best rank).

    Raises
    ------
    ValueError
        No feature id or formula column in the header.
    """
    path = find_formula_table(path)
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        if not any(c in header for c in ID_COLUMNS):
            raise ValueError(f"{path}: no feature id column (one of {', '.join(ID_COLUMNS)})")
        if not any(c in header for c in FORMULA_COLUMNS):
            raise ValueError(f"{path}: no molecularFormula column")
        table: dict[str, dict[tuple, SiriusFormula]] = {}
        skipped = 0
        for position, row in enumerate(reader):
            fid, formula = _first(row, ID_COLUMNS), _first(row, FORMULA_COLUMNS)
            if fid is None or formula is None:
                skipped += 1
                continue
            rank_text = _first(row, RANK_COLUMNS)
            rank = int(float(rank_text)) if _number(rank_text) is not None else 1_000_000 + position
            adduct = "".join((_value(row, "adduct") or "").split())
            score = next((s for s in (_number(_value(row, c)) for c in SCORE_COLUMNS) if s is not None), None)
            entry = SiriusFormula(
                feature_id=fid, rank=rank, formula="".join(formula.split()), adduct=adduct, score=score,
                sirius_score=_number(_value(row, "SiriusScore")), zodiac_score=_number(_value(row, "ZodiacScore")),
                precursor_formula=_value(row, "precursorFormula"), formula_id=_value(row, "formulaId"),
                aligned_feature_id=_value(row, "alignedFeatureId"))
            key = (entry.formula, entry.adduct)
            best = table.setdefault(fid, {})
            if key not in best or entry.rank < best[key].rank:
                best[key] = entry
    if skipped:
        logger.warning("%s: %d row(s) without feature id or formula skipped", path, skipped)
    return {fid: sorted(rows.values(), key=lambda e: e.rank) for fid, rows in table.items()}


def sirius_formula_context(table: dict[str, list[SiriusFormula]]) -> dict[str, list[tuple]]:
    """The ``context["sirius_formulas"]`` mapping of the built-in SIRIUS provider:
    ``{feature_id: [(formula, adduct, score), ...]}`` best rank first (empty adduct -> the spectrum's)."""
    return {fid: [(e.formula, e.adduct or None, e.score) for e in rows] for fid, rows in table.items()}


def load_sirius_formulas(path) -> dict[str, list[tuple]]:
    """Read a SIRIUS summary folder or formula TSV into ``context["sirius_formulas"]`` (for CLIs/scripts)."""
    return sirius_formula_context(read_formula_identifications(path))


# ------------------------------------------------------------------------------------------------ writing
def sirius_adduct(name: str) -> str:
    """An adduct in SIRIUS' spelling, with spaces around the signs inside the brackets: ``[M + H]+``."""
    m = re.fullmatch(r"\[(.*)\](.*)", str(name or ""))
    if not m:
        return str(name or "")
    inner = re.sub(r"(?<=[^\s])\s*([+-])\s*", r" \1 ", m.group(1))
    return f"[{inner}]{m.group(2)}"


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(round(value, 6))
    return str(value)


def _inchi(smiles: str) -> str:
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles) if smiles else None
    return (Chem.MolToInchi(mol) or "") if mol is not None else ""


def denovo_rows(spectrum, sirius_rows: list[SiriusFormula] | None = None) -> list[dict]:
    """De novo table rows (one per DiffMS candidate, best first) of an annotated spectrum."""
    from matchms_diffms import read_annotation
    from matchms_diffms.chem.adducts import UnsupportedAdductError, ion_formula, parse_adduct
    from matchms_diffms.chem.formula import Formula, FormulaError

    ann = read_annotation(spectrum)
    fid = str(spectrum.get("feature_id") or spectrum.get("scans") or spectrum.get("spectrum_id") or "")
    by_formula = {}
    for entry in sirius_rows or []:
        try:
            by_formula.setdefault(Formula.parse(entry.formula), entry)
        except FormulaError:
            continue
    rows = []
    for rank, cand in enumerate(ann["candidates"], start=1):
        formula_text = cand.get("formula") or ann["formula"] or ""
        try:
            formula = Formula.parse(formula_text)
        except FormulaError:
            formula = None
        entry = by_formula.get(formula) if formula is not None else None
        adduct = (entry.adduct if entry is not None and entry.adduct else None) or ann["adduct"] or ""
        try:
            ion = ion_formula(formula, parse_adduct(adduct)).hill() if formula is not None and adduct else ""
        except (FormulaError, UnsupportedAdductError):
            ion = ""
        inchikey = cand.get("inchikey") or ""
        row = {
            "structurePerIdRank": rank,
            "formulaRank": entry.rank if entry is not None and entry.rank < 1_000_000 else "",
            "CSI:FingerIDScore": "",
            "ModelScore": _fmt(cand.get("score")),
            "ZodiacScore": _fmt(entry.zodiac_score) if entry is not None else "",
            "SiriusScore": _fmt(entry.sirius_score) if entry is not None else "",
            "molecularFormula": formula.hill() if formula is not None else formula_text,
            "adduct": sirius_adduct(adduct),
            "precursorFormula": ion,
            "InChIkey2D": inchikey[:14],
            "InChI": _inchi(cand.get("smiles") or ""),
            "name": "",
            "smiles": cand.get("smiles") or "",
            "ionMass": _fmt(_float(spectrum.get("precursor_mz"))),
            "retentionTimeInSeconds": _fmt(_float(spectrum.get("retention_time"))),
            "formulaId": (entry.formula_id or "") if entry is not None else "",
            "alignedFeatureId": (entry.aligned_feature_id or "") if entry is not None else "",
            "mappingFeatureId": fid,
            "feature_id": fid,
            "scans": str(spectrum.get("scans") or ""),
            "precursor_mz": _fmt(_float(spectrum.get("precursor_mz"))),
            "retention_time": _fmt(_float(spectrum.get("retention_time"))),
            "diffms_score": _fmt(cand.get("score")),
            "diffms_count": _fmt(cand.get("count")),
            "diffms_formula_source": ann["formula_source"] or "",
            "diffms_model": ann["model"] or "",
            "diffms_status": ann["status"] or "",
        }
        rows.append(row)
    return rows


def _float(value) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def write_denovo_table(spectra, path, sirius_table: dict[str, list[SiriusFormula]] | None = None) -> int:
    """Write annotated spectra as a ``denovo_structure_identifications.tsv``-like table (atomic).

    Returns the number of candidate rows written.
    """
    sirius_table = sirius_table or {}
    rows = []
    for spectrum in spectra:
        if spectrum is None:
            continue
        rows.extend(denovo_rows(spectrum, sirius_table.get(spectrum_id(spectrum) or "")))
    def write(fh):
        writer = csv.DictWriter(fh, fieldnames=list(DENOVO_COLUMNS + EXTRA_COLUMNS), delimiter="\t",
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)

    write_text_atomic(path, write)
    return len(rows)


# ------------------------------------------------------------------------------------------------ command
def load_input_spectra(path) -> list:
    """Spectra to annotate: MGF files go through the MZmine reader (MS1 blocks skipped, scans merged),
    other formats through matchms' ``load_spectra``."""
    if str(path).lower().endswith(".mgf"):
        from ..mzmine.fbmn import read_mzmine_mgf

        return read_mzmine_mgf(path)
    from matchms_diffms import read_spectra

    return read_spectra(path)


@click.command("sirius-annotate")
@click.argument("spectra", type=click.Path(exists=True, dir_okay=False))
@click.option("--sirius-dir", "sirius", required=True, type=click.Path(exists=True),
              help="SIRIUS summary folder (or a formula_identifications*.tsv file).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="De novo structure table to write (denovo_structure_identifications.tsv layout).")
@click.option("--annotated", type=click.Path(dir_okay=False), default=None,
              help="Also write the annotated spectra (.mgf, .msp, .json, ...).")
@annotation_options
def sirius_annotate(spectra, sirius, output, annotated, settings, resume, progress):
    """Annotate SPECTRA using SIRIUS formula identifications; write a SIRIUS-style de novo table.

    SPECTRA is typically MZmine's SIRIUS export (.mgf: MS1 blocks are skipped, the MS2 blocks of a feature
    merged); any matchms-readable file works. SIRIUS' mappingFeatureId is matched to FEATURE_ID. The
    --max-formulas best SIRIUS formulas of a feature are tried. Progress is checkpointed in
    OUTPUT.partial.jsonl (rerun with --resume after an interruption).
    """
    from dataclasses import replace

    from matchms_diffms import annotate_spectra, checkpoint_path_for, finish_checkpoint

    table = read_formula_identifications(sirius)
    spectra_list = load_input_spectra(spectra)
    ids = {spectrum_id(s) for s in spectra_list}
    matched = len(ids & set(table))
    click.echo(f"{len(spectra_list)} spectra, SIRIUS formulas for {len(table)} features ({matched} matched)")
    if matched == 0 and table:
        click.echo("warning: no SIRIUS feature id matches a spectrum's FEATURE_ID", err=True)
    settings = replace(settings, formula_context={"sirius_formulas": sirius_formula_context(table)})
    checkpoint = checkpoint_path_for(output)
    results = annotate_spectra(spectra_list, settings, checkpoint=checkpoint, resume=resume, label=str(spectra),
                               progress=progress)
    n = write_denovo_table(results, output, table)
    click.echo(f"wrote {n} structure rows to {output}")
    if annotated:
        try:
            write_annotated(results, annotated)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--annotated") from None
        click.echo(f"wrote {len(results)} annotated spectra to {annotated}")
    finish_checkpoint(checkpoint)


@hookimpl
def diffms_register_commands(cli):
    cli.add_command(sirius_annotate)


__all__ = ["SiriusFormula", "read_formula_identifications", "sirius_formula_context", "load_sirius_formulas",
           "find_formula_table", "sirius_adduct", "denovo_rows", "write_denovo_table", "DENOVO_COLUMNS",
           "EXTRA_COLUMNS"]
