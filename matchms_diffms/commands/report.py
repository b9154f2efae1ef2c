"""The ``report`` command: an HTML page for an annotated file (library code in :mod:`matchms_diffms.report`)."""
from __future__ import annotations

from pathlib import Path

import click

from ..hookspecs import hookimpl
from ..cli_options import command_errors
from ..io import check_input, read_spectra
from ..report import write_report


@click.command("report")
@click.argument("annotated", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", "output", default="report.html", show_default=True,
              type=click.Path(dir_okay=False), help="HTML file to write.")
@click.option("--title", default=None, help="Page title (default: the input file name).")
def report_command(annotated, output, title):
    """Write an HTML report (spectra, structures, scores) for an ANNOTATED file (.mgf/.msp/.json)."""
    with command_errors():          # an unreadable file is a one-line message (exit code 2), not a traceback
        spectra = read_spectra(check_input(annotated))
    out = write_report(spectra, output, title or f"matchms-diffms report: {Path(annotated).name}")
    click.echo(f"wrote {out} ({len(spectra)} spectra)")


@hookimpl
def diffms_register_commands(cli):
    cli.add_command(report_command)
