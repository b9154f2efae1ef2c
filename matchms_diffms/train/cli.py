"""``matchms-diffms train decoder | encoder | finetune``: the training commands.

Registered on the main command group through the plugin hook ``diffms_register_commands`` (the hookimpl
below). The group also runs on its own, which is how ``torchrun`` starts it::

    torchrun --standalone --nproc_per_node 2 -m matchms_diffms.train.cli decoder --out RUN ...

Every option has a hyper-parameter of the same name (dashes -> underscores) that a ``--config run.json``
file may set; explicit options win over the file, the file over the built-in defaults. The effective set
is written to ``RUN_DIR/run_config.json``. ``--resume`` continues the run in ``--out`` from its newest
checkpoint with the saved settings (only run-time settings such as ``--threads`` may change).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import click

from ..hookspecs import hookimpl

logger = logging.getLogger("matchms.diffms")


def _common_options(f):
    """Options shared by the three commands (all default to None = "not given": defaults live in DEFAULTS)."""
    options = [
        click.option("--out", "out", required=True, type=click.Path(file_okay=False),
                     help="Run folder (config, log.jsonl, checkpoints/, cache/, weights/)."),
        click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
                     help="JSON file with hyper-parameters (keys = option names with underscores)."),
        click.option("--model-config", "model_config", type=click.Path(exists=True, dir_okay=False),
                     help='JSON with DiffMSConfig fields for the model size (partial; "preset": "tiny" '
                          "starts from a preset)."),
        click.option("--resume", is_flag=True, default=False,
                     help="Continue the run in --out from its newest checkpoint."),
        click.option("--seed", type=int, help="Random seed (model init, data order, noise). Default 0."),
        click.option("--steps", type=int, help="Total optimizer steps (overrides --epochs)."),
        click.option("--epochs", type=float, help="Total epochs (used when --steps is not given)."),
        click.option("--batch-size", type=int, help="GLOBAL batch size (shared by all ranks)."),
        click.option("--lr", type=float, help="(Peak) learning rate."),
        click.option("--weight-decay", type=float),
        click.option("--optimizer", type=click.Choice(["adamw", "radam"])),
        click.option("--schedule", type=click.Choice(["onecycle", "cosine", "constant"])),
        click.option("--grad-clip", type=float, help="Clip the global gradient norm (default: no clipping)."),
        click.option("--ckpt-every", type=int, help="Checkpoint every N steps (and at the end)."),
        click.option("--keep-checkpoints", type=int, help="Newest checkpoints kept (0 = all). Default 2."),
        click.option("--log-every", type=int, help="Log the mean loss every N steps."),
        click.option("--val-every", type=int, help="Validate every N steps (0: only at the end)."),
        click.option("--val-max", type=int, help="Validation items used (a fixed subset)."),
        click.option("--stop-at", type=int, help="Stop after this step with a checkpoint (resume later)."),
        click.option("--time-budget", type=str,
                     help="Stop after this much training time of this invocation (3600, 90m, 2h, 1h30m) with a "
                          "checkpoint and weights; --resume continues."),
        click.option("--threads", type=int, help="torch threads per process."),
        click.option("--device", type=str, help="cpu (default) or cuda."),
        click.option("--workers", type=int, help="Processes for data featurisation (rank 0)."),
        click.option("--cache-dir", type=click.Path(file_okay=False),
                     help="Featurised-data cache (default RUN_DIR/cache); share it between runs."),
        click.option("--progress/--no-progress", default=None, help="tqdm progress bar on rank 0."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


_PATH_KEYS = {"smiles", "smiles_from_mgf", "exclude_mgf", "train", "val", "split_file", "annotation_cache",
              "cache_dir", "decoder", "encoder", "init", "init_from", "graphs"}


def _absolute(key, value):
    if key not in _PATH_KEYS or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_absolute(key, v) for v in value]
    if "::" in str(value):
        head, member = str(value).split("::", 1)
        return f"{Path(head).resolve()}::{member}"
    return str(Path(value).resolve())


def _setup_logging() -> None:
    root = logging.getLogger()
    if not root.handlers:
        rank = int(os.environ.get("RANK", "0"))
        logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                            format=f"%(asctime)s [rank {rank}] %(levelname)s %(message)s")


def run_command(task, defaults: dict, options: dict) -> dict:
    """Resolve the configuration of a command invocation and train.

    ``options`` holds the click values; ``None`` / empty tuples mean "not given".
    """
    from .common import load_json, merge_config, resume_config
    from .trainer import fit

    _setup_logging()
    out = Path(options.pop("out"))
    resume = options.pop("resume")
    config_file = options.pop("config_file")
    model_file = options.pop("model_config")
    cli = {k: _absolute(k, list(v) if isinstance(v, tuple) else v) for k, v in options.items()
           if v is not None and v != ()}
    if model_file:
        cli["model"] = load_json(model_file)
    file_cfg = load_json(config_file) if config_file else {}
    file_cfg = {k: _absolute(k, v) for k, v in file_cfg.items()}
    try:
        requested = merge_config(defaults, file_cfg, cli)
        if resume and (out / "run_config.json").is_file():
            saved = load_json(out / "run_config.json")
            if saved.get("command") not in (None, task.name):
                raise ValueError(f"{out} is a '{saved.get('command')}' run, not '{task.name}'")
            saved.pop("command", None)
            cfg = resume_config(saved, requested, set(file_cfg) | set(cli))
        else:
            cfg = requested
        return fit(task, cfg, out, resume=resume)
    except (ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None


@click.group("train")
def train_group():
    """Train DiffMS models: decoder pretraining, encoder pretraining, end-to-end fine-tuning.

    Run under `torchrun --nproc_per_node N` for data-parallel training (gloo on CPU, nccl on CUDA).
    """


@train_group.command("decoder")
@_common_options
@click.option("--smiles", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="SMILES file (.smi/.smi.gz, first column); repeatable.")
@click.option("--smiles-from-mgf", multiple=True, type=click.Path(exists=True),
              help="Training-fold spectra file whose SMILES are added; repeatable.")
@click.option("--exclude-mgf", multiple=True, type=click.Path(exists=True),
              help="Spectra file (val/test folds) whose structures (InChIKey-14) are excluded; repeatable.")
@click.option("--max-atoms", type=int, help="Heavy-atom limit (besides the model's max_n_nodes).")
@click.option("--max-molecules", type=int, help="Use only the first N accepted molecules.")
@click.option("--val-fraction", type=float, help="Held-out validation share (default 0.02).")
@click.option("--bucket", type=click.Choice(["none", "sorted"]), help="Size bucketing of batches.")
@click.option("--graphs", type=click.Path(exists=True, dir_okay=False),
              help="A featurised molecule set (the decoder-data-*.npz cache file of an earlier run) instead of "
                   "--smiles / --smiles-from-mgf, e.g. carried to a GPU machine.")
@click.option("--init-from", type=click.Path(exists=True),
              help="Start from this decoder instead of random weights: a weights folder, a part folder ('train "
                   "save-part', e.g. weights/default/training/pretrained_decoder), a run folder (newest "
                   "checkpoint) or an official checkpoint; continue pretraining with a new schedule. Its decoder "
                   "size wins over --model-config.")
@click.option("--env-workers", type=int,
              help="Processes that compute the environment features of decoders that have them (default 1), "
                   "e.g. to keep a GPU fed.")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]),
              help="Arithmetic of the decoder network's pass: fp32 (default) or bf16 autocast (faster on CPUs "
                   "with AVX512-BF16 and on GPUs; noise, features and the loss stay float32).")
def decoder_cmd(**options):
    """Pretrain the graph decoder on fingerprint -> structure (fp2mol)."""
    from .decoder import DEFAULTS, DecoderTask

    _report(run_command(DecoderTask(), DEFAULTS, options))


@train_group.command("encoder")
@_common_options
@click.option("--train", multiple=True, type=click.Path(exists=True),
              help="Training-fold spectra (MGF, MassSpecGym TSV or MIST folder); repeatable.")
@click.option("--val", multiple=True, type=click.Path(exists=True),
              help="Validation-fold spectra, for metrics only; repeatable.")
@click.option("--split-file", type=click.Path(exists=True, dir_okay=False), help="MIST split table.")
@click.option("--annotation-cache", type=click.Path(file_okay=False),
              help="Subformula annotation cache folder (default RUN_DIR/cache/subformulae).")
@click.option("--max-spectra", type=int, help="Use only the first N usable training spectra.")
@click.option("--augment-prob", type=float, help="Probability to augment a spectrum (default 0).")
@click.option("--iterative-weight", type=float, help="Weight of the fingerprint-growing losses (0.4).")
@click.option("--bucket", type=click.Choice(["none", "sorted"]), help="Token-count bucketing of batches.")
@click.option("--decoder-vocab-only/--all-elements", default=None,
              help="Train only on molecules made of the decoder's atom types.")
def encoder_cmd(**options):
    """Pretrain the spectrum encoder on spectrum -> Morgan fingerprint."""
    from .encoder import DEFAULTS, EncoderTask

    _report(run_command(EncoderTask(), DEFAULTS, options))


@train_group.command("finetune")
@_common_options
@click.option("--decoder", type=click.Path(exists=True), help="Weights folder of a decoder run.")
@click.option("--encoder", type=click.Path(exists=True), help="Weights folder of an encoder run.")
@click.option("--init", type=str, help="Complete weights to start from (folder or official checkpoint).")
@click.option("--train", multiple=True, type=click.Path(exists=True), help="Training-fold spectra; repeatable.")
@click.option("--val", multiple=True, type=click.Path(exists=True), help="Validation-fold spectra (metrics).")
@click.option("--split-file", type=click.Path(exists=True, dir_okay=False), help="MIST split table.")
@click.option("--annotation-cache", type=click.Path(file_okay=False), help="Subformula annotation cache folder.")
@click.option("--max-spectra", type=int, help="Use only the first N usable training spectra.")
@click.option("--edge-marginals", type=click.Choice(["decoder", "data"]),
              help="Noise marginals: the decoder run's (default) or recomputed from the fine-tuning data.")
@click.option("--bucket", type=click.Choice(["none", "sorted"]), help="Size bucketing of batches.")
def finetune_cmd(**options):
    """Fine-tune encoder + merge + decoder end to end on spectra with known structures."""
    from .finetune import DEFAULTS, FinetuneTask

    _report(run_command(FinetuneTask(), DEFAULTS, options))


@train_group.command("assemble")
@click.option("--encoder", required=True, type=click.Path(exists=True, file_okay=False),
              help="Weights folder or run folder (newest checkpoint) of an encoder run.")
@click.option("--decoder", required=True, type=click.Path(exists=True, file_okay=False),
              help="Weights folder, part folder ('train save-part') or run folder (newest checkpoint) of a "
                   "decoder run.")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Weights folder to write (model.safetensors + config.json).")
@click.option("--default-steps", type=click.IntRange(1, 500),
              help="Reverse steps the annotator uses by default with these weights.")
@click.option("--max-heavy-atoms", type=click.IntRange(2),
              help="Largest formula the annotator accepts (default: the decoder's max_n_nodes).")
def assemble_cmd(encoder, decoder, out_dir, default_steps, max_heavy_atoms):
    """Join a trained encoder and a pretrained decoder into complete weights.

    The merge layer is the fold map from the encoder's fingerprint to the decoder's conditioning
    fingerprint, exact for Morgan fingerprints, so the result annotates without fine-tuning
    (fine-tune it with 'train finetune --init OUTPUT' when there is time)."""
    from .assembly import assemble_weights

    changes = {"default_sampling_steps": default_steps} if default_steps else {}
    if max_heavy_atoms:
        changes["max_heavy_atoms"] = max_heavy_atoms
    try:
        out = assemble_weights(encoder, decoder, out_dir, **changes)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"wrote {out}")


@train_group.command("pack-graphs")
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@click.argument("target", type=click.Path(dir_okay=False))
def pack_graphs_cmd(source, target):
    """Rewrite a featurised molecule set (a decoder-data-*.npz cache file) in the compact format.

    The result loads into identical arrays and is what `train decoder --graphs` carries to a GPU machine."""
    from .graphs import load_graphs, save_graphs

    try:
        graphs, meta = load_graphs(Path(source))
    except (ValueError, KeyError, OSError) as err:
        raise click.ClickException(f"{source}: {err}") from None
    save_graphs(Path(target), graphs, meta)
    click.echo(f"wrote {target}: {len(graphs)} molecules, {Path(target).stat().st_size / 1e6:.1f} MB")


@train_group.command("save-part")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--part", type=click.Choice(["decoder", "encoder"]), default="decoder", show_default=True)
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for PART.safetensors + model_config.json ('train assemble' reads it).")
@click.option("--average", type=click.IntRange(1), default=1, show_default=True,
              help="Write the mean of the weights of the run's newest N checkpoints instead of the newest alone.")
def save_part_cmd(run, part, out_dir, average):
    """Write one part of a run's newest checkpoint alone (the decoder: 7.6 MiB at the default size), e.g. to
    bring a GPU run's result back in a file small enough, or the mean of its newest checkpoints."""
    from .assembly import save_part

    try:
        path = save_part(run, part, out_dir, average)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"wrote {path} ({path.stat().st_size / 2 ** 20:.1f} MiB)")


def _report(summary: dict) -> None:
    """One line on rank 0: steps done, time, where the weights are."""
    if summary.get("rank", 0) != 0:
        return
    where = f"; weights in {summary['weights']}" if summary.get("weights") else " (stopped early; --resume to go on)"
    click.echo(f"{summary['step']}/{summary['total_steps']} steps in {summary['elapsed_s']:.1f} s{where}")


@hookimpl
def diffms_register_commands(cli):
    """Add the ``train`` group to the ``matchms-diffms`` command line."""
    cli.add_command(train_group)


if __name__ == "__main__":
    train_group(prog_name="matchms-diffms train")
