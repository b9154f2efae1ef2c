"""matchms-diffms plugin for MZmine: the ``mzmine-prepare`` / ``mzmine-export`` commands and two writers.

Registered through the ``matchms_diffms`` entry-point group (``mzmine = matchms_diffms_adapters.mzmine.plugin``).

Commands::

    matchms-diffms mzmine-prepare EXPORT.mgf -o features.mgf [--keep-scans]
    matchms-diffms mzmine-export ANNOTATED -o diffms_db.csv [--separator tab] [--graphml diffms.graphml]
    matchms-diffms mzmine-pointer POINTER.ckpt [--weights default]

Output writers (``matchms-diffms annotate ... -o FILE`` picks them by extension): ``.csv`` writes the MZmine
Local compound database CSV, ``.graphml`` the GNPS-style graphml.
"""
from __future__ import annotations

import logging
from pathlib import Path

import click

from matchms_diffms import command_errors, hookimpl, read_spectra

from .._io import write_file_atomic
from .fbmn import read_mzmine_mgf, write_gnps_graphml, write_local_db_csv

logger = logging.getLogger("matchms.diffms")

SEPARATORS = {"comma": ",", "tab": "\t"}


def save_spectra_atomic(spectra, path) -> None:
    """Save matchms spectra as ``.mgf``, ``.msp`` or ``.json`` (chosen by extension) via a temporary file."""
    from matchms.exporting import save_as_json, save_as_mgf, save_as_msp

    suffix = Path(path).suffix.lower()
    spectra = list(spectra)
    savers = {".mgf": lambda tmp: save_as_mgf(spectra, tmp, file_mode="w"),
              ".msp": lambda tmp: save_as_msp(spectra, tmp, mode="w"),
              ".json": lambda tmp: save_as_json(spectra, tmp)}
    if suffix not in savers:
        raise click.BadParameter(f"{path}: use .mgf, .msp or .json", param_hint="-o/--output")
    write_file_atomic(path, savers[suffix])


@click.command("mzmine-prepare")
@click.argument("export", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Cleaned spectra (.mgf, .msp or .json) for 'matchms-diffms annotate'.")
@click.option("--keep-scans", is_flag=True,
              help="Keep every MS2 block of a feature instead of merging them (summed intensities).")
def mzmine_prepare(export, output, keep_scans):
    """Prepare an MZmine GNPS-FBMN or SIRIUS MGF EXPORT for annotation.

    Skips MSLEVEL=1 blocks, merges the MS2 blocks of each feature, keeps FEATURE_ID, and moves the InChIKey
    that MZmine writes under INCHIAUX to inchikey.
    """
    spectra = read_mzmine_mgf(export, merge_scans=not keep_scans)
    if not spectra:
        raise click.ClickException(f"{export}: no MS2 spectra found")
    save_spectra_atomic(spectra, output)
    merged = sum(1 for s in spectra if s.get("mzmine_merged_scans"))
    click.echo(f"wrote {len(spectra)} MS2 spectra to {output} ({merged} merged from several scans)")


@click.command("mzmine-export")
@click.argument("annotated", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="MZmine Local compound database file to write (.csv or .tsv).")
@click.option("--separator", type=click.Choice(sorted(SEPARATORS)), default=None,
              help="Field separator (default: tab for .tsv, comma otherwise).")
@click.option("--graphml", type=click.Path(dir_okay=False), default=None,
              help="Also write a GNPS-style graphml (top candidate per feature) for MZmine's GNPS results import.")
def mzmine_export(annotated, output, separator, graphml):
    """Write the DiffMS candidates of ANNOTATED spectra (from 'matchms-diffms annotate') for MZmine."""
    with command_errors():            # an unreadable file: one line, exit code 2
        spectra = read_spectra(annotated)
    sep = SEPARATORS[separator] if separator else ("\t" if Path(output).suffix.lower() == ".tsv" else ",")
    n = write_local_db_csv(spectra, output, separator=sep)
    click.echo(f"wrote {n} candidate lines for {len(spectra)} spectra to {output}")
    if n == 0:
        click.echo("warning: no spectrum has DiffMS candidates (was the file annotated?)", err=True)
    if graphml:
        nodes = write_gnps_graphml(spectra, graphml)
        click.echo(f"wrote {nodes} nodes to {graphml}")


@click.command("mzmine-pointer")
@click.argument("pointer", type=click.Path(dir_okay=False))
@click.option("--weights", default="default", show_default=True,
              help="Weights to select: a name from 'matchms-diffms weights list' or a weights folder/checkpoint.")
def mzmine_pointer(pointer, weights):
    """Write POINTER (a small .ckpt file) that makes MZmine's DiffMS module use matchms-diffms WEIGHTS.

    Select POINTER as the module's "Checkpoint" (MZmine accepts only an existing *.ckpt file there) and the
    matchms-diffms-mzmine launcher as its "Custom Python executable".
    """
    from matchms_diffms import WeightsError

    from .runner import write_pointer

    if not pointer.lower().endswith(".ckpt"):
        raise click.BadParameter("MZmine's Checkpoint field only accepts *.ckpt files: end the name with .ckpt",
                                 param_hint="POINTER")
    try:
        path = write_pointer(pointer, weights)
    except WeightsError as err:
        raise click.BadParameter(str(err), param_hint="--weights") from None
    click.echo(f"wrote {path.resolve()}: selects matchms-diffms weights {weights!r}")


def _csv_writer(spectra, path) -> None:
    write_local_db_csv(spectra, path, separator=",")


def _graphml_writer(spectra, path) -> None:
    write_gnps_graphml(spectra, path)


@hookimpl
def diffms_register_commands(cli):
    cli.add_command(mzmine_prepare)
    cli.add_command(mzmine_export)
    cli.add_command(mzmine_pointer)


@hookimpl
def diffms_output_writers():
    return {".csv": _csv_writer, ".graphml": _graphml_writer}
