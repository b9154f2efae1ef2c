"""The ``matchms-diffms`` command line.

A thin click layer: the group :func:`main` and the commands ``annotate`` and ``plugins``. The work is done by
library modules -- reading spectra in :mod:`matchms_diffms.io`, the resumable, crash-tolerant runner in
:mod:`matchms_diffms.batch` (checkpoint format in :mod:`matchms_diffms.checkpoint`) -- and the options and exit
codes shared by every command are in :mod:`matchms_diffms.cli_options`. Every other command lives in its own
module and is added through the plugin hook ``diffms_register_commands`` (built-in command modules are listed
in :data:`matchms_diffms.plugins.OPTIONAL_BUILTIN_MODULES`; third-party packages use the ``matchms_diffms``
entry-point group). A command module imports heavy dependencies inside its command function, so that
``matchms-diffms --help`` stays quick.

Exit codes of ``annotate``: 0 success; 1 the output could not be written (the checkpoint is kept, rerun with
``--resume``); 2 a usage or input problem (unreadable input, unknown output format, unknown weights, a
checkpoint in the way); 130 interrupted (the checkpoint is kept).
"""
from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

import click

from . import __version__
from .cli_options import annotation_options
from .metadata import status_code
from .plugins import list_plugins, output_writers, plugin_versions, register_commands


# ================================================================================================ group
@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="matchms-diffms")
def main():
    """matchms-diffms: de novo structure annotation of MS/MS spectra with DiffMS.

    DiffMS proposes molecular structures for a tandem mass spectrum and the neutral molecular formula of its
    precursor. The formula comes from the spectrum's metadata (FORMULA, or PRECURSOR_FORMULA with ADDUCT),
    from SIRIUS results, or from a decomposition of the precursor m/z. Results are written as spectrum
    metadata (keys diffms_*) and as a candidate table.

    \b
    Typical use:
        matchms-diffms annotate spectra.mgf -o annotated.mgf
        matchms-diffms annotate spectra.mgf -o candidates.tsv --samples 100 --top-k 10
        matchms-diffms plugins

    Run "matchms-diffms COMMAND --help" for the options of a command.
    """


# ================================================================================================ plugins
@main.command("plugins")
def plugins_command():
    """List the loaded plugins and the hooks each implements.

    Built-in plugins (formula providers, output writers, weights, extra commands) are listed first, then
    third-party plugins found through the "matchms_diffms" entry-point group, with their distribution and
    version. Set MATCHMS_DIFFMS_LOAD_PLUGINS to a comma-separated list of entry-point names to load only
    those (an empty value loads none).
    """
    versions = plugin_versions()
    for name, hooks in list_plugins():
        origin = f" ({versions[name]})" if name in versions else ""
        click.echo(f"{name}{origin}: {', '.join(hooks) if hooks else '(no hooks)'}")
    click.echo(f"output formats: {', '.join(sorted(output_writers()))}")


# ================================================================================================ annotate
def _parse_shard(ctx, param, value):
    """``"I/N"`` -> (I, N) with 0 <= I < N (0-based)."""
    if value is None:
        return 0, 1
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
    if not m:
        raise click.BadParameter(f"expected I/N with 0 <= I < N (e.g. 0/4), got {value!r}")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 0 <= i < n:
        raise click.BadParameter(f"expected I/N with 0 <= I < N (0-based, e.g. 0/4 ... 3/4), got {value!r}")
    return i, n


@main.command("annotate")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("-o", "--output", "output_path", required=True, metavar="OUTPUT",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Output file; its extension picks the format: .mgf, .msp, .json (spectra with diffms_* "
                   "metadata), .tsv (one row per spectrum and candidate), or a format added by a plugin.")
@click.option("--shard", callback=_parse_shard, default=None, metavar="I/N",
              help="Process only the spectra whose 0-based position p in INPUT satisfies p % N == I "
                   "(0 <= I < N), e.g. 0/4, 1/4, 2/4, 3/4 on four machines. OUTPUT then holds only those "
                   "spectra, in input order.")
@annotation_options
def annotate_command(input_path, output_path, shard, settings, resume, progress):
    """Annotate the spectra of INPUT with DiffMS structure candidates and write OUTPUT.

    INPUT is a spectrum file read with matchms: .mgf, .msp, .json (matchms/GNPS JSON), .mzML or .mzXML
    (MS2 scans). Records that cannot be parsed are skipped with a warning; a file that cannot be read at all
    stops the command (exit code 2). INPUT is never modified.

    Every spectrum of OUTPUT carries diffms_status ("ok" or "<reason>: <text>"), diffms_smiles,
    diffms_inchikey, diffms_score, diffms_candidates (a JSON list, best first), diffms_formula,
    diffms_formula_source, diffms_adduct, diffms_model, diffms_n_samples, diffms_steps and diffms_seed.

    Progress is checkpointed in OUTPUT.partial.jsonl after every spectrum (one JSON line each). After an
    interruption rerun the same command with --resume: finished spectra are not computed again. The final
    OUTPUT is written at the end, atomically, and the checkpoint is then removed. Without --resume an
    existing checkpoint is an error (pass --resume, or delete it to start over).

    \b
    Exit codes:
      0    done
      1    OUTPUT could not be written (checkpoint kept: fix, then rerun with --resume)
      2    invalid input or options
      130  interrupted (checkpoint kept: rerun with --resume)
    """
    from .batch import annotate_file

    annotated = annotate_file(input_path, output_path, settings, shard=shard, resume=resume, progress=progress)
    counts = Counter(status_code(s.get("diffms_status")) or "no status" for s in annotated)
    summary = ", ".join(f"{n} {code}" for code, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    click.echo(f"wrote {len(annotated)} spectra to {output_path}" + (f" ({summary})" if summary else ""), err=True)


# ================================================================================================ plugins' commands
register_commands(main)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
