"""The ``weights`` commands: convert, list and verify model weights (library code in
:mod:`matchms_diffms.weights`)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from ..hookspecs import hookimpl
from ..weights import WeightsError, convert_checkpoint, describe_weights, load_weights_dir


@hookimpl
def diffms_register_commands(cli):
    @cli.group("weights")
    def weights_group():
        """Inspect and convert model weights."""

    @weights_group.command("convert")
    @click.argument("checkpoint", type=click.Path(dir_okay=False))
    @click.option("--config", "config_json", type=click.Path(exists=True, dir_okay=False),
                  help="JSON with DiffMSConfig fields the checkpoint cannot tell (edge_marginals, "
                       "max_n_nodes, atom_types, ...).")
    @click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
                  help="Folder to write model.safetensors + config.json into.")
    def convert(checkpoint, config_json, out_dir):
        """Convert an official DiffMS CHECKPOINT (.ckpt, .ckpt.gz, diffms_checkpoints.tar.gz[::member])
        into matchms-diffms weights (safetensors + config.json with sha256)."""
        try:
            overrides = json.loads(Path(config_json).read_text()) if config_json else None
            out = convert_checkpoint(checkpoint, out_dir, overrides)
        except (WeightsError, json.JSONDecodeError) as err:
            raise click.ClickException(str(err)) from None
        click.echo(f"wrote {out}/model.safetensors and {out}/config.json")

    @weights_group.command("list")
    def list_weights():
        """List the named weights that are available: name, size and sha256 of the tensor file, the check
        of a weights folder (sha256 against config.json: "ok" or the problem), and the path."""
        from ..plugins import weight_sources

        click.echo("name\tsize_MB\tsha256\tcheck\tpath")
        for name, path in sorted(weight_sources().items()):
            d = describe_weights(path)
            size = "-" if d["size"] is None else f"{d['size'] / 1e6:.1f}"
            click.echo(f"{name}\t{size}\t{d['sha256'] or '-'}\t{d['check']}\t{path}")

    @weights_group.command("verify")
    @click.argument("folder", type=click.Path(exists=True, file_okay=False))
    def verify(folder):
        """Check a weights FOLDER: sha256, config and tensor layout."""
        try:
            _, info = load_weights_dir(folder)
        except WeightsError as err:
            raise click.ClickException(str(err)) from None
        click.echo(f"ok {info['name']} sha256={info['sha256']}")
