"""The route for released MZmine versions (no DiffMS module): MGF exports in, compound database CSV out.

Reading (adapters/mzmine/README.md): MZmine's GNPS-FBMN export (one MS2 block per feature) and SIRIUS
export (per feature an ``MSLEVEL=1`` block plus one or more MS2 blocks) load with matchms; on top of that
:func:`read_mzmine_mgf`

* skips ``MSLEVEL=1`` blocks (a missing MS level counts as MS2);
* keeps ``FEATURE_ID`` as an opaque string (``feature_id``) and falls back to ``SCANS`` for the feature id;
* moves the InChIKey that MZmine writes under ``INCHIAUX`` (matchms: ``inchi_aux``) to ``inchikey``;
* merges several MS2 blocks of one feature into one spectrum, like MZmine merges scans: peaks within
  0.008 m/z or 25 ppm (the larger) are joined, intensities **summed**, the m/z of the joined peak is the
  intensity-weighted mean; metadata come from the first block, ``mzmine_merged_scans`` counts the blocks.

Writing results back (section c):

* :func:`write_local_db_csv`: a "Local compound database" file for MZmine's ``Local compound database search``
  (``id_localcsvsearch``): one line per (feature, candidate) with MZmine's column names ``neutral_mass``,
  ``mz`` (row m/z = PEPMASS), ``rt`` (minutes), ``formula``, ``smiles``, ``name`` (``DiffMS #<rank> (feature
  <id>)``), ``comment`` (rank, score, count, model, formula source), ``inchi_key``, ``adduct`` and
  ``internal_id`` (the feature id). Run the search with adducts off and tight tolerances.
* :func:`write_gnps_graphml`: a GNPS-style graphml for ``id_gnpsresultsimport`` (node id = row ID, the top
  candidate only: GNPS semantics allow one match per node).
"""
from __future__ import annotations

import csv
import logging
import math
import re
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from .._io import write_text_atomic

logger = logging.getLogger("matchms.diffms")

INCHIKEY_RE = re.compile(r"^[A-Z]{14}-[A-Z]{10}-[A-Z]$")
MERGE_MZ_TOL = 0.008
MERGE_PPM_TOL = 25.0

# MZmine's Local compound database columns: the default selection, then the optional ones we fill.
LOCAL_DB_COLUMNS = ("neutral_mass", "mz", "rt", "formula", "smiles", "name", "comment", "inchi_key", "adduct",
                    "internal_id")
# Node attributes read by MZmine's GNPS results import (c.2).
GRAPHML_ATTRIBUTES = (("Compound_Name", "string"), ("Adduct", "string"), ("MQScore", "double"),
                      ("MassDiff", "double"), ("Smiles", "string"), ("INCHI", "string"), ("IonMode", "string"),
                      ("Instrument", "string"))


# ------------------------------------------------------------------------------------------------ reading
def ms_level(spectrum) -> int:
    """MS level of a spectrum (``ms_level`` as int or string, ``MS2`` style accepted); missing = 2."""
    value = spectrum.get("ms_level")
    if value is None or str(value).strip() == "":
        return 2
    text = str(value).strip().upper().removeprefix("MS")
    try:
        return int(float(text))
    except ValueError:
        raise ValueError(f"cannot read MS level {value!r}") from None


def feature_id(spectrum) -> str | None:
    """The feature id of an MZmine export block: ``feature_id``, else ``scans`` (opaque strings)."""
    for key in ("feature_id", "scans"):
        value = spectrum.get(key)
        if value is not None and str(value).strip() != "":
            return str(value).strip()
    return None


def fix_inchikey(spectrum):
    """Move an InChIKey written under ``INCHIAUX`` (matchms ``inchi_aux``) to ``inchikey`` (in place).

    Only a value shaped like an InChIKey is moved, and only when ``inchikey`` is empty.
    """
    aux = spectrum.get("inchi_aux")
    if aux is None:
        return spectrum
    text = str(aux).strip()
    if INCHIKEY_RE.match(text) and not str(spectrum.get("inchikey") or "").strip():
        spectrum.set("inchikey", text)
        spectrum.set("inchi_aux", None)
    return spectrum


def merge_peaks(mz_lists, intensity_lists, mz_tol: float = MERGE_MZ_TOL, ppm_tol: float = MERGE_PPM_TOL):
    """Merge peak lists: peaks within max(``mz_tol``, ``ppm_tol``) are joined, intensities summed.

    Greedy from the most intense peak: each peak joins the closest existing group whose m/z lies within the
    tolerance, else starts a group. A group's m/z is the intensity-weighted mean of its peaks.

    Returns
    -------
    (np.ndarray, np.ndarray)
        m/z (ascending) and summed intensities.
    """
    mz = np.concatenate([np.asarray(m, dtype=np.float64) for m in mz_lists]) if mz_lists else np.zeros(0)
    inten = (np.concatenate([np.asarray(i, dtype=np.float64) for i in intensity_lists])
             if intensity_lists else np.zeros(0))
    if mz.shape != inten.shape:
        raise ValueError("m/z and intensity lists differ in length")
    centers: list[float] = []
    weighted: list[float] = []
    sums: list[float] = []
    for i in np.argsort(-inten, kind="stable"):
        tol = max(mz_tol, ppm_tol * 1e-6 * mz[i])
        best, best_d = None, None
        for g, c in enumerate(centers):
            d = abs(c - mz[i])
            if d <= tol and (best_d is None or d < best_d):
                best, best_d = g, d
        if best is None:
            centers.append(float(mz[i]))
            weighted.append(float(mz[i] * inten[i]))
            sums.append(float(inten[i]))
        else:
            weighted[best] += float(mz[i] * inten[i])
            sums[best] += float(inten[i])
    out_mz = np.array([w / s if s > 0 else c for w, s, c in zip(weighted, sums, centers)], dtype=np.float64)
    out_int = np.array(sums, dtype=np.float64)
    order = np.argsort(out_mz, kind="stable")
    return out_mz[order], out_int[order]


def prepare_mzmine_spectra(spectra, merge_scans: bool = True) -> list:
    """Clean MZmine export spectra for annotation (see the module docstring).

    Parameters
    ----------
    spectra
        matchms spectra as loaded from an MZmine GNPS-FBMN or SIRIUS MGF export.
    merge_scans
        Merge several MS2 blocks of one feature into one spectrum (True), or keep each block.

    Returns
    -------
    list of Spectrum
        MS2 spectra, one per feature (``merge_scans``) in order of first appearance; clones, inputs untouched.
    """
    from matchms import Spectrum

    groups: dict[str, list] = {}
    order: list[str] = []
    n_ms1 = 0
    for index, spectrum in enumerate(spectra):
        if spectrum is None:
            continue
        if ms_level(spectrum) != 2:
            n_ms1 += 1
            continue
        fid = feature_id(spectrum)
        key = fid if (fid is not None and merge_scans) else f"#{index}"
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(spectrum)
    out = []
    for key in order:
        members = groups[key]
        first = fix_inchikey(members[0].clone())
        fid = feature_id(first)
        if fid is None:
            logger.warning("MZmine export block %s has neither FEATURE_ID nor SCANS", key)
        elif first.get("feature_id") is None:
            first.set("feature_id", fid)                 # SCANS only: make it the feature id
        if len(members) > 1:
            mz, inten = merge_peaks([m.peaks.mz for m in members], [m.peaks.intensities for m in members])
            merged = Spectrum(mz=mz, intensities=inten, metadata=first.metadata, metadata_harmonization=False)
            merged.set("mzmine_merged_scans", len(members))
            first = merged
        out.append(first)
    if n_ms1:
        logger.info("MZmine export: skipped %d MS1 block(s)", n_ms1)
    return out


def read_mzmine_mgf(path, merge_scans: bool = True) -> list:
    """Read an MZmine GNPS-FBMN or SIRIUS MGF export into annotation-ready matchms spectra.

    See :func:`prepare_mzmine_spectra` for what is done on top of ``matchms.importing.load_from_mgf``.
    """
    from matchms.importing import load_from_mgf

    return prepare_mzmine_spectra(load_from_mgf(str(path)), merge_scans=merge_scans)


# ------------------------------------------------------------------------------------------------ writing
def _number(value) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _fmt(value, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def candidate_rows(spectrum) -> list[dict]:
    """Local-database rows of one annotated spectrum (one per candidate, best first); [] without candidates."""
    from matchms_diffms import read_annotation
    from matchms_diffms.chem.formula import Formula, FormulaError

    ann = read_annotation(spectrum)
    fid = feature_id(spectrum) or str(spectrum.get("compound_name") or spectrum.get("title") or "")
    mz = _number(spectrum.get("precursor_mz"))
    rt_seconds = _number(spectrum.get("retention_time"))
    rows = []
    for rank, cand in enumerate(ann["candidates"], start=1):
        formula = cand.get("formula") or ann["formula"] or ""
        try:
            neutral = Formula.parse(formula).monoisotopic_mass if formula else None
        except FormulaError:
            neutral = None
        score = cand.get("score")
        comment = "; ".join(p for p in (
            f"DiffMS rank {rank}",
            f"score {score:.4f}" if score is not None else "",
            f"count {cand['count']}" if cand.get("count") is not None else "",
            f"model {ann['model']}" if ann["model"] else "",
            f"formula source {ann['formula_source']}" if ann["formula_source"] else "",
            f"feature {fid}" if fid else "") if p)
        rows.append({
            "neutral_mass": _fmt(neutral, 6),
            "mz": _fmt(mz, 6),
            "rt": _fmt(rt_seconds / 60.0 if rt_seconds is not None else None, 4),
            "formula": formula,
            "smiles": cand.get("smiles") or "",
            "name": f"DiffMS #{rank} (feature {fid})" if fid else f"DiffMS #{rank}",
            "comment": comment,
            "inchi_key": cand.get("inchikey") or "",
            "adduct": ann["adduct"] or "",
            "internal_id": fid,
        })
    return rows


def write_local_db_csv(spectra, path, separator: str = ",") -> int:
    """Write annotated spectra as an MZmine "Local compound database" CSV/TSV (atomic).

    Parameters
    ----------
    spectra
        Annotated spectra (``diffms_candidates`` metadata; other spectra add no line).
    path
        File to write.
    separator
        Field separator (``","``; ``"\\t"`` for a TSV; set the same in MZmine's ``Field separator``).

    Returns
    -------
    int
        Number of candidate lines written.
    """
    rows = []
    no_rt = 0
    for spectrum in spectra:
        if spectrum is None:
            continue
        new = candidate_rows(spectrum)
        if new and not new[0]["rt"]:
            no_rt += 1
        rows.extend(new)
    if no_rt:
        logger.warning("%d annotated feature(s) have no retention time: their 'rt' cell is empty; deselect the "
                       "rt column in MZmine's Local compound database search", no_rt)

    def write(fh):
        writer = csv.DictWriter(fh, fieldnames=list(LOCAL_DB_COLUMNS), delimiter=separator, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)

    write_text_atomic(path, write)
    return len(rows)


def _inchi(smiles: str) -> str:
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles) if smiles else None
    return (Chem.MolToInchi(mol) or "") if mol is not None else ""


def graphml_nodes(spectra) -> list[tuple[str, dict]]:
    """(node id, attributes) of the top candidate of every annotated spectrum with a feature id."""
    from matchms_diffms import read_annotation
    from matchms_diffms.chem.adducts import UnsupportedAdductError, precursor_mz
    from matchms_diffms.chem.formula import FormulaError

    nodes, seen = [], set()
    for spectrum in spectra:
        if spectrum is None:
            continue
        ann = read_annotation(spectrum)
        if not ann["candidates"]:
            continue
        fid = feature_id(spectrum)
        if fid is None:
            logger.warning("annotated spectrum without FEATURE_ID/SCANS left out of the graphml")
            continue
        if fid in seen:
            logger.warning("feature %s appears more than once; the graphml keeps its first annotation", fid)
            continue
        seen.add(fid)
        top = ann["candidates"][0]
        mass_diff = None
        observed = _number(spectrum.get("precursor_mz"))
        if observed is not None and top.get("formula") and ann["adduct"]:
            try:
                mass_diff = abs(precursor_mz(top["formula"], ann["adduct"]) - observed)
            except (FormulaError, UnsupportedAdductError):
                mass_diff = None
        attrs = {"Compound_Name": f"DiffMS #1 {top.get('formula') or ''}".strip(),
                 "Adduct": ann["adduct"] or "",
                 "MQScore": top.get("score"),
                 "MassDiff": mass_diff,
                 "Smiles": top.get("smiles") or "",
                 "INCHI": _inchi(top.get("smiles") or ""),
                 "IonMode": str(spectrum.get("ionmode") or ""),
                 "Instrument": str(spectrum.get("instrument_type") or spectrum.get("instrument") or "")}
        nodes.append((fid, attrs))
    return nodes


def write_gnps_graphml(spectra, path) -> int:
    """Write the top candidate per feature as a GNPS-style graphml for MZmine's GNPS results import.

    Node ids are the feature ids (MZmine row IDs); attributes ``Compound_Name`` (``DiffMS #1 <formula>``),
    ``Adduct``, ``MQScore`` (DiffMS score), ``MassDiff`` (|m/z(formula, adduct) - PEPMASS|), ``Smiles``,
    ``INCHI``, ``IonMode``, ``Instrument``. No edges. Returns the number of nodes.
    """
    nodes = graphml_nodes(spectra)

    def write(fh):
        fh.write('<?xml version="1.0" encoding="UTF-8"?>\n')
        fh.write('<graphml xmlns="http://graphml.graphdrawing.org/xmlns" '
                 'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
                 'xsi:schemaLocation="http://graphml.graphdrawing.org/xmlns '
                 'http://graphml.graphdrawing.org/xmlns/1.0/graphml.xsd">\n')
        for name, kind in GRAPHML_ATTRIBUTES:
            fh.write(f'  <key id={quoteattr(name)} for="node" attr.name={quoteattr(name)} '
                     f'attr.type="{kind}"/>\n')
        fh.write('  <graph id="DiffMS" edgedefault="undirected">\n')
        for node_id, attrs in nodes:
            fh.write(f"    <node id={quoteattr(node_id)}>\n")
            for name, _ in GRAPHML_ATTRIBUTES:
                value = attrs.get(name)
                if value is None or value == "":
                    continue
                text = repr(float(value)) if isinstance(value, float) else str(value)
                fh.write(f'      <data key={quoteattr(name)}>{escape(text)}</data>\n')
            fh.write("    </node>\n")
        fh.write("  </graph>\n</graphml>\n")

    write_text_atomic(path, write)
    return len(nodes)


__all__ = ["read_mzmine_mgf", "prepare_mzmine_spectra", "merge_peaks", "fix_inchikey", "feature_id", "ms_level",
           "candidate_rows", "write_local_db_csv", "write_gnps_graphml", "graphml_nodes", "LOCAL_DB_COLUMNS"]
