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
@main.command("evaluate-decoder")
@click.argument("molecules", type=click.Path(exists=True, dir_okay=False))
@click.option("--weights", "-w", default="default", show_default=True, help="Weights name or path.")
@click.option("--samples", "n_samples", default=100, show_default=True, type=click.IntRange(1),
              help="Samples per molecule.")
@click.option("--steps", default=None, type=click.IntRange(1), help="Denoising steps (default: the weights').")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1),
              help="Evaluate the first N usable structures.")
@click.option("--max-atoms", default=None, type=click.IntRange(2),
              help="Skip molecules with more heavy atoms (default: the weights' limit).")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Also rank random formula-exact molecules by the true fingerprint, with paired differences.")
@click.option("--threads", type=click.IntRange(1), default=None, help="torch threads (default: torch's choice).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write totals and per-molecule metrics to this JSON file.")
def evaluate_decoder_command(molecules, weights, n_samples, steps, limit, max_atoms, seed, baseline, threads,
                             output):
    """Evaluate the decoder alone: sample each molecule of MOLECULES from its own (true) fingerprint.

    MOLECULES is a SMILES file (.smi/.smi.gz/.txt, first column) or a spectra file whose SMILES are read
    (one entry per structure). Use held-out structures (e.g. the validation fold), never training ones.
    Prints valid / one-fragment / formula-exact rates of the raw samples and top-1 / top-10 exact structure
    and Tanimoto, as sampled and with completion, with bootstrap 95 % intervals over molecules.
    """
    from .evaluate_decoder import evaluate_decoder, format_table, write_result

    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        result = evaluate_decoder(molecules, weights, n_samples=n_samples, steps=steps, limit=limit, seed=seed,
                                  max_atoms=max_atoms, baseline=baseline)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    click.echo(format_table(result))
    if output:
        write_result(result, output)


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
