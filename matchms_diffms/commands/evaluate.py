"""The ``evaluate``, ``calibrate`` and ``evaluate-decoder`` commands (library code in
:mod:`matchms_diffms.evaluate` and :mod:`matchms_diffms.evaluate_decoder`)."""
from __future__ import annotations

from pathlib import Path

import click

from ..batch import finish_checkpoint
from ..cli_options import annotation_options, command_errors
from ..evaluate import (BASELINES, METRIC_KEYS, RANDOM_BASELINE, RANKED_BASELINE, _write_json, calibration_pairs,
                        check_calibration_input, evaluate_file)
from ..hookspecs import hookimpl
from ..io import check_input, read_spectra


@click.command("evaluate", help=f"""Evaluate de novo annotation of the labelled spectra in FILE (MassSpecGym
metrics with bootstrap 95 % intervals, DiffMS's variant, and both random baselines with paired differences).

FILE is an MGF with SMILES metadata, a MassSpecGym TSV or a MIST folder. One spectrum per structure is kept
unless --all-spectra is given. --weights may also name a baseline alone: '{RANDOM_BASELINE}' (random
formula-exact molecules) or '{RANKED_BASELINE}' (random formula-exact molecules ranked by the default weights'
encoder).""")
@click.argument("file", type=click.Path(exists=True))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Metrics JSON to write (the model's annotations are checkpointed in OUTPUT.partial.jsonl).")
@click.option("--limit", default=None, type=click.IntRange(1), help="Evaluate only the first N spectra.")
@click.option("--all-spectra", is_flag=True,
              help="Keep every spectrum. Default: one spectrum per structure (the first of each 2D InChIKey), "
                   "so that structures with many spectra do not dominate.")
@click.option("--no-mces", is_flag=True, help="Skip the (slow) MCES metric.")
@click.option("--baseline", "baselines", multiple=True, type=click.Choice(BASELINES),
              default=BASELINES, show_default=True,
              help="Baselines evaluated on the same spectra, with paired differences (repeatable).")
@click.option("--no-baselines", is_flag=True, help="Evaluate the weights only.")
@click.option("--diffms-mces", is_flag=True,
              help="Also DiffMS's MCES variant (threshold 100, tautomer-canonical; slow). Its InChI accuracy and "
                   "tautomer-canonical Tanimoto are always reported (under 'diffms').")
@click.option("--mces-cache", type=click.Path(dir_okay=False), default=None,
              help="Keep MCES distances in this file (JSON lines) and reuse those found there: re-evaluating "
                   "the same spectra with new weights then only solves the new pairs.")
@click.option("--ionmode", type=click.Choice(["positive", "negative"]), default=None,
              help="Evaluate only spectra of this polarity.")
@click.option("--details", type=click.Path(dir_okay=False), default=None,
              help="Also write per-spectrum predictions and metrics to this JSON file.")
@annotation_options(pseudo_weights=BASELINES)
def evaluate_command(file, output, limit, all_spectra, no_mces, baselines, no_baselines, diffms_mces, mces_cache,
                     ionmode, details, settings, resume, progress):
    from ..checkpoint import checkpoint_path_for

    checkpoint = checkpoint_path_for(output)
    rows: list | None = [] if details else None
    try:
        result = evaluate_file(
            file, weights=settings.weights, n_samples=settings.n_samples, steps=settings.steps,
            top_k=settings.top_k, seed=settings.seed, one_per_structure=not all_spectra, limit=limit,
            compute_mces=not no_mces, details=rows, ionmode=ionmode, complete=settings.complete,
            workers=settings.workers, ranking=settings.ranking, baselines=() if no_baselines else baselines,
            diffms_mces=diffms_mces, max_formulas=settings.max_formulas, max_heavy_atoms=settings.max_heavy_atoms,
            threads=settings.threads, checkpoint=checkpoint, resume=resume, progress=progress,
            mces_cache=mces_cache)
    except ValueError as err:          # a bad --mces-cache file, ...
        raise click.ClickException(str(err)) from None
    result.update(workers=settings.workers, threads=settings.threads)
    _write_json(result, Path(output))
    if details:
        _write_json({"metrics": result, "spectra": rows}, Path(details))
    finish_checkpoint(checkpoint)
    _echo_summary(result)


def _fmt(interval: dict) -> str:
    if interval.get("low") is None:
        return f"{interval['mean']:.4f}"
    return f"{interval['mean']:.4f} [{interval['low']:.4f}, {interval['high']:.4f}]"


def _echo_summary(result: dict) -> None:
    click.echo(f"{result['weights']} (sha256 {str(result.get('weights_sha256'))[:12]}), "
               f"{result['n_spectra']} spectra, ranking {result.get('ranking')}")
    for key in METRIC_KEYS:
        if key in result.get("intervals", {}):
            click.echo(f"{key:22s} {_fmt(result['intervals'][key])}")
        elif key in result:
            click.echo(f"{key:22s} {result[key]}")
    if result.get("mces_cached") is not None:
        click.echo(f"{'mces pairs':22s} {result['mces_computed']} solved, {result['mces_cached']} read from the cache")
    if result.get("decoded_share") is not None:
        click.echo(f"{'decoded_share':22s} {result['decoded_share']:.4f}")
    for key, value in result.get("diffms", {}).items():
        click.echo(f"{'diffms ' + key:22s} {_fmt(value)}")
    for name, diffs in result.get("paired", {}).items():
        for key, value in diffs.items():
            click.echo(f"{name + ': ' + key:50s} {_fmt(value)}")


@click.command("calibrate")
@click.argument("annotated", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="calibration.json to write (put it beside the weights it belongs to).")
@click.option("--method", type=click.Choice(["isotonic", "platt"]), default="isotonic", show_default=True)
@click.option("--bins", default=10, show_default=True, type=click.IntRange(2), help="Reliability-table bins.")
def calibrate_command(annotated, output, method, bins):
    """Fit the score calibration on ANNOTATED validation spectra (output of 'annotate' on labelled
    spectra: their SMILES is the truth) and print the reliability table.

    Only the validation fold is accepted: a file named like a training or test fold, or spectra whose 'fold'
    metadata says train or test, are refused. Without a single correct candidate nothing can be learnt: the
    raw score is kept (identity calibration, with a note saying so)."""
    from ..ranking import Calibration, expected_calibration_error, fit_calibration, reliability_table

    with command_errors():
        spectra = read_spectra(check_input(annotated))
    try:
        check_calibration_input(annotated, spectra)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    raw, correct = calibration_pairs(spectra)
    if not raw:
        raise click.ClickException(f"{annotated}: no labelled spectrum with candidates")
    if not any(correct):
        note = (f"no correct candidate among {len(raw)} candidates of {annotated}: nothing to learn from; "
                "the raw score is kept (identity calibration)")
        calibration = Calibration(note=note)
        click.echo(f"warning: {note}", err=True)
    else:
        calibration = fit_calibration(raw, correct, method=method, note=f"fitted on {Path(annotated).name}")
    calibration.save(output)
    calibrated = [calibration(r) for r in raw]
    click.echo(f"{len(raw)} candidates, {sum(correct)} correct; ECE raw {expected_calibration_error(raw, correct, bins):.4f}"
               f" -> calibrated {expected_calibration_error(calibrated, correct, bins):.4f}")
    click.echo("| score bin | candidates | mean score | fraction correct |")
    click.echo("| --- | --- | --- | --- |")
    for row in reliability_table(calibrated, correct, bins):
        if row["n"]:
            click.echo(f"| {row['bin_low']:.1f}-{row['bin_high']:.1f} | {row['n']} | {row['mean_score']:.3f} | "
                       f"{row['accuracy']:.3f} |")


@click.command("evaluate-decoder")
@click.argument("molecules", type=click.Path(exists=True, dir_okay=False))
@click.option("--weights", "-w", default="default", show_default=True, help="Weights name or path.")
@click.option("--samples", "n_samples", default=100, show_default=True, type=click.IntRange(1),
              help="Samples per molecule.")
@click.option("--steps", default=None, type=click.IntRange(1), help="Denoising steps (default: the weights').")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1),
              help="Evaluate the first N usable structures.")
@click.option("--max-atoms", default=None, type=click.IntRange(2),
              help="Skip molecules with more heavy atoms (default: the largest the decoder was trained on).")
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
    from ..evaluate_decoder import evaluate_decoder, format_table, write_result

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


@hookimpl
def diffms_register_commands(cli):
    cli.add_command(evaluate_command)
    cli.add_command(calibrate_command)
    cli.add_command(evaluate_decoder_command)
