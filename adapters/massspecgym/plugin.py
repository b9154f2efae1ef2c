"""MassSpecGym adapter: annotate a MassSpecGym TSV and evaluate de novo predictions with its metrics.

Input (the MassSpecGym benchmark's file layout): ``MassSpecGym.tsv`` with ``identifier``, ``mzs`` / ``intensities``
(comma-joined), ``smiles``, ``inchikey``, ``formula`` (neutral), ``precursor_formula``, ``parent_mass``,
``precursor_mz``, ``adduct``, ``instrument_type``, ``collision_energy``, ``fold``, ``simulation_challenge``;
read with :func:`matchms_diffms.read_massspecgym_tsv` into matchms spectra. Before annotation the
labels are removed from each spectrum (``smiles``, ``inchikey``, ``inchi``), and with ``--without-formula``
also the formulas (``formula``, ``precursor_formula``: MassSpecGym's de novo challenge without the "bonus"
formula; the formula then comes from mass decomposition of the precursor m/z).

Prediction files: MassSpecGym's de novo models produce, per spectrum, ``identifier`` and ``mols_pred`` (the
ranked list of predicted SMILES, ``None`` allowed), collected into a pandas data frame that its test loop
pickles (``df_test_path``). We write that table as

===========  ==================================================================================================
``.tsv``      tab-separated, header ``identifier<TAB>mols_pred``; ``mols_pred`` comma-joined like the ``mzs``
              column (SMILES contain no commas); an empty cell is an empty list
``.csv``      the same with commas (the list cell is quoted)
``.json``     ``[{"identifier": ..., "mols_pred": [...]}, ...]``
``.pkl``      the pandas data frame (columns ``identifier``, ``mols_pred`` as lists), as MassSpecGym writes it
===========  ==================================================================================================

Reading accepts the same formats (a ``mols_pred`` cell that starts with ``[`` is read as a JSON list, so
``None`` entries survive); pickles are only read with ``--allow-pickle`` because unpickling runs code.

Evaluation uses :func:`matchms_diffms.evaluate.evaluate_predictions` (MassSpecGym's definitions: top-k exact
match of the first InChIKey block, top-k MCES with threshold 15, top-k max Tanimoto of Morgan r2/2048 bits,
k = 1 and 10; list order used as is). Labels are the TSV's ``smiles`` joined on ``identifier``; with
``--fold`` every spectrum of that fold is evaluated and a missing prediction counts as an empty list.

Commands (registered through ``diffms_register_commands``)::

    matchms-diffms msg-predict MassSpecGym.tsv -o predictions.tsv [--fold test] [--without-formula] ...
    matchms-diffms msg-evaluate predictions.tsv --labels MassSpecGym.tsv [--fold test] -o metrics.json
"""
from __future__ import annotations

import csv
import json
import logging
import math
import time
from pathlib import Path

import click

from matchms_diffms import annotation_options, hookimpl

from .._io import write_annotated, write_file_atomic, write_text_atomic

logger = logging.getLogger("matchms.diffms")

LABEL_KEYS = ("smiles", "inchikey", "inchi")
FORMULA_KEYS = ("formula", "precursor_formula", "molecular_formula")
PREDICTION_COLUMNS = ("identifier", "mols_pred")


# ------------------------------------------------------------------------------------------------ reading
def read_massspecgym(path, fold: str | None = None, limit: int | None = None) -> list:
    """MassSpecGym TSV rows as matchms spectra (``identifier`` and ``spectrum_id`` = the row's identifier).

    Parameters
    ----------
    path
        ``MassSpecGym.tsv`` (or a file with the same columns; ``.tsv.gz`` works too).
    fold
        Keep only rows of this fold (``train``, ``val``, ``test``).
    limit
        Keep at most this many rows (after the fold filter).
    """
    from matchms_diffms import read_massspecgym_tsv

    out = []
    for record in read_massspecgym_tsv(path):
        if fold is not None and record.fold != fold:
            continue
        spectrum = record.to_spectrum()
        spectrum.set("identifier", record.id)
        out.append(spectrum)
        if limit is not None and len(out) >= limit:
            break
    return out


def query_spectrum(spectrum, with_formula: bool = True):
    """A clone of a labelled spectrum without its labels (and without formulas unless ``with_formula``)."""
    query = spectrum.clone()
    for key in LABEL_KEYS + (() if with_formula else FORMULA_KEYS):
        if query.get(key) is not None:
            query.set(key, None)
    return query


def predicted_smiles(annotated, top_k: int | None = None) -> list[str]:
    """Ranked candidate SMILES of an annotated spectrum (empty when it has none)."""
    from matchms_diffms import read_candidates

    smiles = [c.get("smiles") for c in read_candidates(annotated.get("diffms_candidates")) if c.get("smiles")]
    return smiles[:top_k] if top_k is not None else smiles


# ------------------------------------------------------------------------------------------------ predictions
def write_predictions(predictions: list[tuple[str, list]], path) -> None:
    """Write ``[(identifier, [smiles, ...]), ...]`` in MassSpecGym's prediction layout (format by extension).

    Raises
    ------
    ValueError
        Unknown extension, or a SMILES containing a comma in a ``.tsv``/``.csv`` file.
    """
    suffix = Path(path).suffix.lower()
    rows = [(str(i), [None if s is None else str(s) for s in preds]) for i, preds in predictions]
    if suffix in (".tsv", ".csv"):
        def cell(preds):
            if any(s is None for s in preds):
                return json.dumps(preds)
            if any("," in s for s in preds):
                raise ValueError("a predicted SMILES contains a comma; write .json instead")
            return ",".join(preds)

        def write(fh):
            writer = csv.writer(fh, delimiter="\t" if suffix == ".tsv" else ",", lineterminator="\n")
            writer.writerow(PREDICTION_COLUMNS)
            for identifier, preds in rows:
                writer.writerow([identifier, cell(preds)])

        write_text_atomic(path, write)
    elif suffix == ".json":
        records = [{"identifier": i, "mols_pred": p} for i, p in rows]
        write_text_atomic(path, lambda fh: json.dump(records, fh, indent=1))
    elif suffix == ".pkl":
        import pandas as pd

        frame = pd.DataFrame({"identifier": [i for i, _ in rows], "mols_pred": [p for _, p in rows]})
        write_file_atomic(path, frame.to_pickle)
    else:
        raise ValueError(f"{path}: unknown prediction format {suffix!r} (use .tsv, .csv, .json or .pkl)")


def _parse_cell(text: str) -> list:
    text = (text or "").strip()
    if not text:
        return []
    if text.startswith("["):
        value = json.loads(text)
        if not isinstance(value, list):
            raise ValueError(f"mols_pred is not a list: {text[:60]!r}")
        return value
    return [s.strip() for s in text.split(",")]


def _smiles_or_none(value):
    """A prediction entry as SMILES or None (RDKit molecules in pickles are converted)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        return value
    from rdkit import Chem

    if isinstance(value, Chem.Mol):
        return Chem.MolToSmiles(value)
    raise ValueError(f"cannot read a prediction of type {type(value).__name__}")


def read_predictions(path, allow_pickle: bool = False) -> dict[str, list]:
    """Read a prediction file (see :func:`write_predictions`) into ``{identifier: [smiles or None, ...]}``.

    Raises
    ------
    ValueError
        Unknown format, missing columns, duplicate identifiers, or a pickle without ``allow_pickle``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".csv"):
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
            missing = set(PREDICTION_COLUMNS) - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"{path}: missing columns {sorted(missing)} (expected identifier, mols_pred)")
            pairs = [(row["identifier"], _parse_cell(row["mols_pred"])) for row in reader]
    elif suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            pairs = list(data.items())
        else:
            pairs = [(d["identifier"], d["mols_pred"]) for d in data]
    elif suffix == ".pkl":
        if not allow_pickle:
            raise ValueError(f"{path}: reading a pickle can execute code; pass --allow-pickle if you trust it")
        import pandas as pd

        frame = pd.read_pickle(path)
        missing = set(PREDICTION_COLUMNS) - set(frame.columns)
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        pairs = list(zip(frame["identifier"], frame["mols_pred"]))
    else:
        raise ValueError(f"{path}: unknown prediction format {suffix!r} (use .tsv, .csv, .json or .pkl)")
    out: dict[str, list] = {}
    for identifier, preds in pairs:
        key = str(identifier)
        if key in out:
            raise ValueError(f"{path}: identifier {key!r} appears more than once")
        out[key] = [_smiles_or_none(p) for p in (list(preds) if preds is not None else [])]
    return out


# ------------------------------------------------------------------------------------------------ evaluation
def read_labels(path, fold: str | None = None) -> dict[str, dict]:
    """``{identifier: {"smiles", "fold"}}`` of a MassSpecGym TSV (optionally one fold)."""
    from matchms_diffms import read_massspecgym_tsv

    labels = {}
    for record in read_massspecgym_tsv(path):
        if fold is not None and record.fold != fold:
            continue
        if record.id in labels:
            raise ValueError(f"{path}: identifier {record.id!r} appears more than once")
        labels[record.id] = {"smiles": record.smiles, "fold": record.fold}
    return labels


def evaluate_prediction_file(predictions_path, labels_path, fold: str | None = None, compute_mces: bool = True,
                             allow_pickle: bool = False, ks=(1, 10)) -> dict:
    """MassSpecGym de novo metrics of a prediction file against the labels of a MassSpecGym TSV.

    Parameters
    ----------
    predictions_path
        Prediction file (:func:`read_predictions`).
    labels_path
        MassSpecGym TSV with ``identifier`` and ``smiles``.
    fold
        Evaluate every labelled spectrum of this fold (missing predictions = empty lists). Without it, the
        spectra that have predictions are evaluated.
    compute_mces
        Compute the (slow) MCES metric.

    Returns
    -------
    dict
        :func:`matchms_diffms.evaluate.evaluate_predictions` output plus ``n_missing_predictions``,
        ``n_unlabelled`` (labels without a parsable SMILES, left out), ``fold``, ``predictions``, ``labels``.

    Raises
    ------
    ValueError
        A predicted identifier that is not in the labels (of the fold).
    """
    from rdkit import Chem

    from matchms_diffms.evaluate import evaluate_predictions

    preds = read_predictions(predictions_path, allow_pickle=allow_pickle)
    labels = read_labels(labels_path, fold=fold)
    unknown = [i for i in preds if i not in labels]
    if unknown:
        where = f"fold {fold!r} of {labels_path}" if fold else str(labels_path)
        raise ValueError(f"{len(unknown)} predicted identifier(s) not in {where}, e.g. {unknown[:3]}")
    ids = list(labels) if fold is not None else [i for i in labels if i in preds]
    true, lists, unlabelled = [], [], 0
    for identifier in ids:
        smiles = labels[identifier]["smiles"]
        if not smiles or Chem.MolFromSmiles(smiles) is None:
            unlabelled += 1
            continue
        true.append(smiles)
        lists.append(preds.get(identifier, []))
    if unlabelled:
        logger.warning("%d labelled spectra without a parsable SMILES left out of the evaluation", unlabelled)
    result = evaluate_predictions(true, lists, ks=ks, compute_mces=compute_mces)
    result.update(n_missing_predictions=sum(1 for i in ids if i not in preds), n_unlabelled=unlabelled,
                  fold=fold, predictions=str(predictions_path), labels=str(labels_path))
    return result


# ------------------------------------------------------------------------------------------------ commands
@click.command("msg-predict")
@click.argument("tsv", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Prediction file (.tsv, .csv, .json or .pkl).")
@click.option("--fold", default=None, help="Only spectra of this fold (train, val, test).")
@click.option("--limit", default=None, type=click.IntRange(1), help="At most this many spectra.")
@click.option("--without-formula", is_flag=True,
              help="Hide the true formula (de novo without formula; formulas come from mass decomposition).")
@click.option("--annotated", type=click.Path(dir_okay=False), default=None,
              help="Also write the annotated spectra (.mgf, .json, ...).")
@annotation_options
def msg_predict(tsv, output, fold, limit, without_formula, annotated, settings, resume, progress):
    """Predict structures for the spectra of a MassSpecGym TSV and write MassSpecGym-style predictions.

    Progress is checkpointed in OUTPUT.partial.jsonl (rerun with --resume after an interruption)."""
    from matchms_diffms import annotate_spectra, checkpoint_path_for, finish_checkpoint

    spectra = read_massspecgym(tsv, fold=fold, limit=limit)
    if not spectra:
        raise click.ClickException(f"{tsv}: no spectra" + (f" in fold {fold!r}" if fold else ""))
    queries = [query_spectrum(s, with_formula=not without_formula) for s in spectra]
    checkpoint = checkpoint_path_for(output)
    start = time.perf_counter()
    results = annotate_spectra(queries, settings, checkpoint=checkpoint, resume=resume, label=str(tsv),
                               extra_settings={"fold": fold, "limit": limit, "without_formula": without_formula},
                               progress=progress)
    seconds = time.perf_counter() - start
    rows = [(s.get("identifier"), predicted_smiles(r, settings.top_k)) for s, r in zip(spectra, results)]
    write_predictions(rows, output)
    n_with = sum(1 for _, p in rows if p)
    click.echo(f"wrote predictions for {len(rows)} spectra ({n_with} with structures) to {output} "
               f"in {seconds:.1f} s")
    if annotated:
        try:
            write_annotated(results, annotated)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--annotated") from None
        click.echo(f"wrote {len(results)} annotated spectra to {annotated}")
    finish_checkpoint(checkpoint)


@click.command("msg-evaluate")
@click.argument("predictions", type=click.Path(exists=True, dir_okay=False))
@click.option("--labels", required=True, type=click.Path(exists=True, dir_okay=False),
              help="MassSpecGym TSV with the true SMILES.")
@click.option("--fold", default=None, help="Evaluate every spectrum of this fold (missing predictions count).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Metrics JSON to write.")
@click.option("--no-mces", is_flag=True, help="Skip the (slow) MCES metric.")
@click.option("--allow-pickle", is_flag=True, help="Allow reading a .pkl prediction file (runs pickle).")
def msg_evaluate(predictions, labels, fold, output, no_mces, allow_pickle):
    """Evaluate a MassSpecGym-style PREDICTIONS file with the MassSpecGym de novo metrics."""
    try:
        result = evaluate_prediction_file(predictions, labels, fold=fold, compute_mces=not no_mces,
                                          allow_pickle=allow_pickle)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    if output:
        write_text_atomic(output, lambda fh: (json.dump(result, fh, indent=2), fh.write("\n")))
    for key, value in result.items():
        if key not in ("predictions", "labels"):
            click.echo(f"{key:24s} {value}")


@hookimpl
def diffms_register_commands(cli):
    cli.add_command(msg_predict)
    cli.add_command(msg_evaluate)


__all__ = ["read_massspecgym", "query_spectrum", "predicted_smiles", "write_predictions", "read_predictions",
           "read_labels", "evaluate_prediction_file"]
