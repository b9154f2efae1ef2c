"""One self-contained HTML page for annotated spectra (``write_report``) and the ``report`` command.

The page has no external resources (no scripts, stylesheets, fonts or images from elsewhere): the peak plot
of every spectrum is inline SVG drawn here, candidate structures are inline SVG drawn by RDKit
(``rdMolDraw2D.MolDraw2DSVG``). Per spectrum: id, formula and its source, adduct, status, and the ranked
candidates with score, count, frequency and Tanimoto to the predicted fingerprint.

Command line (:mod:`matchms_diffms.commands.report`)::

    matchms-diffms report annotated.mgf -o report.html
"""
from __future__ import annotations

import html
import logging
import math
import re
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import numpy as np

from .metadata import read_annotation, spectrum_label, status_code
from .files import atomic_write_text

logger = logging.getLogger("matchms.diffms")

MOL_SIZE = (220, 160)
PLOT_SIZE = (560, 170)

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; }
h2 { font-size: 1.1em; margin: 0 0 .4em 0; }
section.spectrum { border: 1px solid #ccc; border-radius: 6px; padding: 1em; margin: 1em 0; }
table { border-collapse: collapse; }
td, th { border: 1px solid #ddd; padding: 3px 6px; vertical-align: middle; font-size: .9em; }
th { background: #f3f3f3; text-align: left; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: 2px 12px; margin: .3em 0 .8em 0; }
dl.meta dt { font-weight: 600; } dl.meta dd { margin: 0; }
.status-ok { color: #1a7f37; } .status-skip { color: #9a6700; } .status-error { color: #cf222e; }
code { font-size: .85em; word-break: break-all; }
.none { color: #777; font-style: italic; }
"""


# ---------------------------------------------------------------------------------------------- drawing
def _nice_step(span: float, target: int = 6) -> float:
    raw = span / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def peaks_svg(mz, intensities, precursor_mz=None, size=PLOT_SIZE) -> str:
    """Stick plot of a spectrum as an inline ``<svg>`` element (intensities scaled to the maximum).

    Parameters
    ----------
    mz, intensities
        Peak arrays.
    precursor_mz
        Drawn as a dashed red line when given.
    size
        (width, height) in pixels.
    """
    w, h = size
    left, right, top, bottom = 40, 10, 10, 28
    mz = np.asarray(mz, dtype=float)
    inten = np.asarray(intensities, dtype=float)
    ok = np.isfinite(mz) & np.isfinite(inten)
    mz, inten = mz[ok], inten[ok]
    parts = [f'<svg class="peaks" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
             f'viewBox="0 0 {w} {h}" role="img" aria-label="MS/MS spectrum">']
    parts.append(f'<rect x="0" y="0" width="{w}" height="{h}" fill="white"/>')
    pw, ph = w - left - right, h - top - bottom
    hi = max([float(mz.max()) if mz.size else 100.0]
             + ([float(precursor_mz)] if precursor_mz is not None and math.isfinite(precursor_mz) else []))
    x_max = hi * 1.05 if hi > 0 else 100.0
    ymax = float(inten.max()) if inten.size and inten.max() > 0 else 1.0

    def x(v):
        return left + pw * v / x_max

    def y(v):
        return top + ph * (1 - v / ymax)

    parts.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#333"/>')
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#333"/>')
    step = _nice_step(x_max)
    t = 0.0
    while t <= x_max + 1e-9:
        parts.append(f'<line x1="{x(t):.1f}" y1="{top + ph}" x2="{x(t):.1f}" y2="{top + ph + 4}" stroke="#333"/>')
        parts.append(f'<text x="{x(t):.1f}" y="{top + ph + 15}" font-size="10" text-anchor="middle">{t:g}</text>')
        t += step
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{h - 2}" font-size="10" text-anchor="middle">m/z</text>')
    for frac in (0, 50, 100):
        yy = y(ymax * frac / 100)
        parts.append(f'<text x="{left - 4}" y="{yy + 3:.1f}" font-size="10" text-anchor="end">{frac}</text>')
    if precursor_mz is not None and math.isfinite(precursor_mz):
        parts.append(f'<line class="precursor" x1="{x(precursor_mz):.1f}" y1="{top}" x2="{x(precursor_mz):.1f}" '
                     f'y2="{top + ph}" stroke="#cf222e" stroke-dasharray="4 3"/>')
    for m, i in zip(mz, inten):
        parts.append(f'<line class="peak" x1="{x(m):.1f}" y1="{y(max(i, 0)):.1f}" x2="{x(m):.1f}" '
                     f'y2="{top + ph}" stroke="#0969da" stroke-width="1.5"><title>{m:.4f}</title></line>')
    parts.append("</svg>")
    return "".join(parts)


def _distinct_positions(mol, resolution: float = 0.3) -> int:
    """Number of distinct 2D atom positions (rounded to ``resolution``, in bond lengths of about 1.5)."""
    pos = mol.GetConformer().GetPositions()
    return len({(round(x / resolution), round(y / resolution)) for x, y, _ in pos})


def layout_2d(mol) -> None:
    """2D coordinates for drawing: CoordGen (nicer rings), or RDKit's default layout when CoordGen places
    atoms on top of each other (it collapses on strained, cumulated structures); the layout with more
    distinct atom positions is kept."""
    from rdkit import Chem
    from rdkit.Chem import rdDepictor

    prefer = rdDepictor.GetPreferCoordGen()
    try:
        rdDepictor.SetPreferCoordGen(True)
        rdDepictor.Compute2DCoords(mol)
        n_atoms = mol.GetNumAtoms()
        if _distinct_positions(mol) < n_atoms:
            other = Chem.Mol(mol)
            rdDepictor.SetPreferCoordGen(False)
            rdDepictor.Compute2DCoords(other)
            if _distinct_positions(other) > _distinct_positions(mol):
                mol.RemoveAllConformers()
                mol.AddConformer(other.GetConformer(), assignId=True)
    finally:
        rdDepictor.SetPreferCoordGen(prefer)


def molecule_svg(smiles: str, size=MOL_SIZE) -> str | None:
    """RDKit 2D depiction of ``smiles`` as an inline ``<svg>`` element, ``None`` if it does not parse."""
    from rdkit import Chem
    from rdkit.Chem.Draw import rdMolDraw2D

    mol = Chem.MolFromSmiles(smiles) if smiles else None
    if mol is None:
        return None
    layout_2d(mol)
    drawer = rdMolDraw2D.MolDraw2DSVG(*size)
    options = drawer.drawOptions()
    options.clearBackground = True
    options.maxFontSize = 18                          # small molecules would get huge labels
    rdMolDraw2D.PrepareAndDrawMolecule(drawer, mol)
    drawer.FinishDrawing()
    svg = drawer.GetDrawingText()
    svg = re.sub(r"<\?xml[^>]*\?>\s*", "", svg)       # inline SVG must not carry an XML declaration
    return svg.replace("<svg ", '<svg class="molecule" role="img" ', 1).strip()


# ---------------------------------------------------------------------------------------------- html
def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _status_class(status) -> str:
    code = status_code(status)
    if code in ("ok", "no_annotated_peaks"):
        return "status-ok"
    if code == "error" or not code:
        return "status-error"
    return "status-skip"


def _fmt(v, digits=3) -> str:
    return "" if v is None else f"{float(v):.{digits}f}"


def _spectrum_section(spectrum, index: int) -> str:
    ann = read_annotation(spectrum)
    sid = spectrum_label(spectrum, index)
    name = spectrum.get("compound_name") or spectrum.get("title") or sid
    precursor = spectrum.get("precursor_mz")
    try:
        precursor = float(precursor) if precursor is not None else None
    except (TypeError, ValueError):
        precursor = None
    out = [f'<section class="spectrum" id="spectrum-{index}" data-index="{index}">']
    out.append(f"<h2>{index + 1}. {_e(name)}</h2>")
    fields = [("id", sid), ("precursor m/z", _fmt(precursor, 4) if precursor is not None else None),
              ("formula", ann["formula"]), ("formula source", ann["formula_source"]),
              ("adduct", (ann["adduct"] or "") + (" (assumed)" if ann["adduct_assumed"] else "")
               if ann["adduct"] else None),
              ("status", ann["status"]), ("model", ann["model"]),
              ("samples / steps / seed", None if ann["n_samples"] is None else
               f'{ann["n_samples"]} / {ann["steps"]} / {ann["seed"]}'),
              ("valid / formula-exact samples", None if ann["n_valid"] is None else
               f'{ann["n_valid"]} / {ann["n_formula_match"]}'),
              ("seconds", _fmt(ann["seconds"], 2) if ann["seconds"] is not None else None)]
    out.append('<dl class="meta">')
    for label, value in fields:
        cls = f' class="{_status_class(value)}"' if label == "status" else ""
        shown = _e(value) if value not in (None, "") else '<span class="none">-</span>'
        out.append(f'<dt>{_e(label)}</dt><dd data-field="{_e(label)}"{cls}>{shown}</dd>')
    out.append("</dl>")
    out.append(peaks_svg(spectrum.peaks.mz, spectrum.peaks.intensities, precursor))
    cands = ann["candidates"]
    if not cands:
        out.append('<p class="none">no candidates</p>')
    else:
        out.append('<table class="candidates"><thead><tr><th>rank</th><th>structure</th><th>SMILES</th>'
                   "<th>InChIKey</th><th>formula</th><th>score</th><th>count</th><th>frequency</th>"
                   "<th>Tanimoto</th></tr></thead><tbody>")
        for rank, c in enumerate(cands, 1):
            svg = molecule_svg(c.get("smiles", "")) or '<span class="none">cannot draw</span>'
            out.append(f'<tr class="candidate"><td>{rank}</td><td>{svg}</td><td><code>{_e(c.get("smiles"))}</code>'
                       f'</td><td><code>{_e(c.get("inchikey"))}</code></td><td>{_e(c.get("formula"))}</td>'
                       f'<td class="score">{_fmt(c.get("score"))}</td><td>{_e(c.get("count"))}</td>'
                       f'<td>{_fmt(c.get("frequency"))}</td><td>{_fmt(c.get("tanimoto"))}</td></tr>')
        out.append("</tbody></table>")
    out.append("</section>")
    return "\n".join(out)


def render_report(spectra: Iterable, title: str = "matchms-diffms report") -> str:
    """The HTML text of the report (see :func:`write_report`)."""
    sections, statuses = [], Counter()
    n = 0
    for i, spectrum in enumerate(spectra):
        if spectrum is None:
            continue
        n += 1
        statuses[status_code(spectrum.get("diffms_status")) or "not annotated"] += 1
        sections.append(_spectrum_section(spectrum, i))
    from . import __version__

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    summary = "".join(f"<tr><td>{_e(code)}</td><td>{count}</td></tr>" for code, count in sorted(statuses.items()))
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
        f"<h1>{_e(title)}</h1>",
        f"<p>{n} spectra; matchms-diffms {_e(__version__)}; generated {stamp}. Structures are 2D (no "
        "stereochemistry), neutral, with the exact neutral formula; scores are calibrated only when the "
        "weights ship a calibration.</p>",
        '<table class="summary"><thead><tr><th>status</th><th>spectra</th></tr></thead><tbody>',
        summary, "</tbody></table>", *sections, "</body>", "</html>", ""])


def write_report(spectra: Iterable, path, title: str = "matchms-diffms report") -> Path:
    """Write one self-contained HTML page for annotated spectra (atomically, see ``files.atomic_write``).

    Parameters
    ----------
    spectra
        Annotated matchms spectra (``diffms_*`` metadata, also after an MGF/MSP/JSON round trip).
    path
        Output ``.html`` file.
    title
        Page title.

    Returns
    -------
    pathlib.Path
    """
    return atomic_write_text(path, render_report(spectra, title))


__all__ = ["write_report", "render_report", "peaks_svg", "molecule_svg"]
