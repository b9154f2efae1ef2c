"""HTML report (report.py): structure of the page, MGF round trip, the click command, a Chromium render."""
import json
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from click.testing import CliRunner
from matchms import Spectrum
from matchms.exporting import save_as_mgf

from matchms_diffms.commands.report import report_command
from matchms_diffms.report import molecule_svg, peaks_svg, render_report, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def annotated_spectrum(title, status="ok", cands=(("CCO", 0.8), ("COC", 0.3))):
    md = {"title": title, "precursor_mz": 47.0491, "diffms_status": status, "diffms_formula": "C2H6O",
          "diffms_formula_source": "metadata", "diffms_adduct": "[M+H]+", "diffms_adduct_assumed": False,
          "diffms_model": "tiny@0123456789ab", "diffms_n_samples": 4, "diffms_steps": 10, "diffms_seed": 1,
          "diffms_candidates": json.dumps([{"smiles": s, "inchikey": f"KEY{i}-X-N", "formula": "C2H6O",
                                            "score": sc, "count": 2, "tanimoto": 0.1, "frequency": 0.5}
                                           for i, (s, sc) in enumerate(cands)])}
    if cands:
        md.update(diffms_smiles=cands[0][0], diffms_score=cands[0][1])
    return Spectrum(np.array([29.0386, 31.0178, 45.0335]), np.array([20.0, 100.0, 40.0]), metadata=md,
                    metadata_harmonization=False)


class Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.attrs, self.stack, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(text):
    p = Collector()
    p.feed(text)
    p.close()
    return p


def spectra_fixture():
    return [annotated_spectrum("ethanol <&> test"),
            annotated_spectrum("skipped one", status="unsupported_element: Br not in the atom types", cands=()),
            None]


def test_page_structure():
    text = render_report(spectra_fixture(), title="T <1>")
    assert text.startswith("<!DOCTYPE html>")
    p = parse(text)
    sections = [a for t, a in p.attrs if t == "section"]
    assert [s["id"] for s in sections] == ["spectrum-0", "spectrum-1"]          # None skipped
    rows = [a for t, a in p.attrs if t == "tr" and a.get("class") == "candidate"]
    assert len(rows) == 2
    svgs = [a for t, a in p.attrs if t == "svg"]
    assert sum(a.get("class") == "peaks" for a in svgs) == 2
    assert sum(a.get("class") == "molecule" for a in svgs) == 2
    body = "".join(p.text)
    assert "ethanol <&> test" in body and "T <1>" in body                      # escaped, read back
    assert "&lt;&amp;&gt;" in text and "<&>" not in text
    assert "unsupported_element: Br not in the atom types" in body
    assert "0.800" in body and "0.300" in body and "CCO" in body
    # self-contained: nothing fetched from elsewhere
    for tag, a in p.attrs:
        assert "src" not in a, tag
        if tag == "link":
            raise AssertionError("external stylesheet")
    assert "<script" not in text and "<?xml" not in text
    summary = text[text.index('class="summary"'):text.index("</table>")]
    assert "<td>ok</td><td>1</td>" in summary and "<td>unsupported_element</td><td>1</td>" in summary


def test_molecule_and_peaks_svg():
    svg = molecule_svg("c1ccccc1O")
    assert svg.startswith("<svg") and svg.endswith("</svg>") and 'class="molecule"' in svg
    assert molecule_svg("not a smiles") is None and molecule_svg("") is None
    plot = peaks_svg([100.0, 200.0], [50.0, 100.0], precursor_mz=250.0)
    p = parse(plot)
    lines = [a for t, a in p.attrs if t == "line" and a.get("class") == "peak"]
    assert len(lines) == 2
    # taller peak reaches the top of the plot area (y=10), the half peak half-way
    ys = sorted(float(a["y1"]) for a in lines)
    bottom = float(lines[0]["y2"])
    assert ys[0] == pytest.approx(10.0) and ys[1] == pytest.approx(10 + (bottom - 10) / 2, abs=0.1)
    assert any(a.get("class") == "precursor" for t, a in p.attrs if t == "line")


def test_write_report_and_command_from_mgf(tmp_path):
    mgf = tmp_path / "annotated.mgf"
    save_as_mgf([s for s in spectra_fixture() if s is not None], str(mgf), file_mode="w")
    out = write_report([annotated_spectrum("a")], tmp_path / "direct.html")
    assert out.read_text().count('class="candidate"') == 2
    result = CliRunner().invoke(report_command, [str(mgf), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "r.html").read_text()
    p = parse(text)
    assert sum(1 for t, a in p.attrs if t == "section") == 2
    assert sum(1 for t, a in p.attrs if t == "tr" and a.get("class") == "candidate") == 2
    assert "tiny@0123456789ab" in text and "4 / 10 / 1" in text          # typed back from MGF strings
    bad = CliRunner().invoke(report_command, [str(tmp_path / "r.html"), "-o", str(tmp_path / "x.html")])
    assert bad.exit_code != 0 and "cannot read" in bad.output


def test_command_is_registered_through_the_hook():
    import click

    from matchms_diffms.commands import report

    @click.group()
    def cli():
        pass

    report.diffms_register_commands(cli)
    assert "report" in cli.commands


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_renders_in_headless_chromium(tmp_path):
    page = write_report(spectra_fixture(), tmp_path / "report.html")
    png = tmp_path / "shot.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,1400", f"--screenshot={png}",
           page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    # the screenshot is not blank: decode it and count non-white pixels
    import zlib
    import struct

    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1000, 1400)
    idat, pos = b"", 8
    while pos < len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        kind = data[pos + 4:pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(idat)
    assert len(raw) > 0
    non_white = sum(1 for b in raw if b < 200)
    assert non_white > 5000


def test_command_reads_json_with_list_candidates(tmp_path):
    from matchms_diffms.writers import write_json

    path = tmp_path / "annotated.json"
    write_json([annotated_spectrum("a"), annotated_spectrum("b", cands=(("CCCO", 0.4),))], path)
    result = CliRunner().invoke(report_command, [str(path), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "r.html").read_text()
    assert text.count('class="candidate"') == 3 and "CCCO" in text


COLLAPSING = [   # CoordGen puts most atoms of these strained, cumulated structures on a few points
    "C=C=CC(O)(O)C12CC1=C(O)C(O)=CC1(O)C=C(C=C=C2O)C(=C=C=CC(O)O)C(=CO)NC(CC)OC1",
    "CC1=C2NC(O)(OO)C=C=C3C(O)=C=CC(C=C=CC4=CC3(C)C4(O)O)(OC1)C(C)=C(O)C=C2C(C)(O)O",
]


@pytest.mark.parametrize("smiles", COLLAPSING + ["CC(=O)Oc1ccccc1C(=O)O", "Cn1c(=O)c2c(ncn2C)n(C)c1=O"])
def test_drawn_structures_show_all_their_atoms(smiles):
    from rdkit import Chem

    from matchms_diffms.report import _distinct_positions, layout_2d

    mol = Chem.MolFromSmiles(smiles)
    layout_2d(mol)
    assert _distinct_positions(mol) == mol.GetNumAtoms()
    assert molecule_svg(smiles).count("<path") >= mol.GetNumBonds()
