"""The ``matchms-diffms`` command line.

This module holds the click group :func:`main` and the commands ``annotate`` and ``plugins``. Every other
command lives in its own module and is added through the plugin hook ``diffms_register_commands`` (built-in
command modules are listed in :data:`matchms_diffms.plugins.OPTIONAL_BUILTIN_MODULES`; third-party packages
use the ``matchms_diffms`` entry-point group). A command module should import heavy dependencies inside its
command function, so that ``matchms-diffms --help`` stays quick.

Exit codes of ``annotate``: 0 success; 1 the output could not be written (the checkpoint is kept, rerun with
``--resume``); 2 a usage or input problem (unreadable input, unknown output format, unknown weights, a
checkpoint in the way); 130 interrupted (the checkpoint is kept).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import multiprocessing
import os
import re
import secrets
import sys
import tempfile
from collections import Counter
from pathlib import Path

import click

from . import __version__
from .files import plain_value, sha256_file
from .metadata import status_code
from .plugins import list_plugins, output_writers, plugin_versions, register_commands

logger = logging.getLogger("matchms.diffms")

CHECKPOINT_FORMAT = "matchms-diffms-checkpoint/1"
CHECKPOINT_SUFFIX = ".partial.jsonl"
INPUT_FORMATS = {".mgf": "mgf", ".msp": "msp", ".json": "json", ".mzml": "mzml", ".mzxml": "mzxml"}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class InputError(click.ClickException):
    """A usage or input problem: one line on stderr, exit code 2."""

    exit_code = 2


class RunError(click.ClickException):
    """A failure while running (e.g. the output cannot be written): one line on stderr, exit code 1."""

    exit_code = 1


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
        return None
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
@click.option("--weights", default="default", show_default=True,
              help="Model weights: a name (see 'matchms-diffms weights list'), a weights folder or an "
                   "official DiffMS checkpoint file.")
@click.option("--samples", type=click.IntRange(min=1), default=100, show_default=True,
              help="Structures sampled per formula candidate.")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Reverse diffusion steps (default: the weights' own default, chosen from the speed/quality "
                   "benchmark for our weights; all 500 steps for official DiffMS checkpoints). Fewer steps "
                   "run faster and give fewer valid structures.")
@click.option("--top-k", type=click.IntRange(min=1), default=10, show_default=True,
              help="Candidates kept per spectrum.")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Base random seed (default: a random one, recorded in diffms_seed and in the checkpoint). "
                   "Each spectrum's sampling is seeded from this seed and the spectrum's position in INPUT, "
                   "so results do not depend on --workers, --shard or --resume.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Spectra taken at a time by the annotator (memory only; results do not depend on it).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes; each loads the model once. The output is identical for any number.")
@click.option("--complete/--no-complete", default=True, show_default=True,
              help="Complete samples that are not valid formula-exact molecules into such molecules around "
                   "their bonds (counted in diffms_n_completed). --no-complete keeps only samples that are "
                   "formula-exact as drawn, like official DiffMS plus a formula filter.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch threads of the annotating process (default: torch's choice; workers use 1 each). "
                   "On a busy machine 1 is often fastest.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted run from its checkpoint OUTPUT.partial.jsonl, skipping the spectra "
                   "already finished.")
@click.option("--shard", callback=_parse_shard, default=None, metavar="I/N",
              help="Process only the spectra whose 0-based position p in INPUT satisfies p % N == I "
                   "(0 <= I < N), e.g. 0/4, 1/4, 2/4, 3/4 on four machines. OUTPUT then holds only those "
                   "spectra, in input order.")
@click.option("--max-formulas", type=click.IntRange(min=1), default=3, show_default=True,
              help="Formula candidates tried per spectrum when the formula is not given (SIRIUS, mass "
                   "decomposition); their structures are merged and ranked together.")
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), default="WARNING",
              show_default=True, help="Verbosity of the log (on stderr).")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Show a progress bar on stderr.")
def annotate_command(input_path, output_path, weights, samples, steps, top_k, seed, batch_size, workers, complete,
                     threads, resume, shard, max_formulas, log_level, progress):
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
    _check_weights(weights)
    if threads:
        import torch

        torch.set_num_threads(threads)
    with _logging_to_stderr(log_level.upper()):
        _annotate(input_path=input_path, output_path=output_path, weights=weights, samples=samples, steps=steps,
                  top_k=top_k, seed=seed, batch_size=batch_size, workers=workers, resume=resume, shard=shard,
                  max_formulas=max_formulas, progress=progress, complete=complete)


@contextlib.contextmanager
def _logging_to_stderr(level: str):
    """Route the ``matchms`` loggers (ours is ``matchms.diffms``) to stderr at ``level`` for one command."""
    import matchms  # noqa: F401  (matchms installs its stdout handler when first imported: do that now)
    from tqdm.contrib.logging import logging_redirect_tqdm

    root = logging.getLogger("matchms")
    saved = (root.level, list(root.handlers), root.propagate)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.handlers = [handler]
    root.setLevel(level)
    root.propagate = False
    try:
        with logging_redirect_tqdm(loggers=[root]):
            yield
    finally:
        root.setLevel(saved[0])
        root.handlers = saved[1]
        root.propagate = saved[2]


def _annotate(*, input_path: Path, output_path: Path, weights, samples, steps, top_k, seed, batch_size, workers,
              resume, shard, max_formulas, progress, complete=True):
    """The ``annotate`` command without its click layer (raises InputError / RunError)."""
    writer = _check_paths(input_path, output_path)
    checkpoint_path = checkpoint_path_for(output_path)
    if checkpoint_path.exists() and not resume:
        raise InputError(f"a checkpoint of an unfinished run exists: {checkpoint_path}; pass --resume to continue "
                         "it, or delete it to start over")
    spectra = read_spectra(input_path)
    n_total = len(spectra)
    shard_i, shard_n = shard if shard is not None else (0, 1)
    selected = [i for i in range(n_total) if i % shard_n == shard_i]

    settings = {"weights": str(weights), "samples": samples, "steps": steps, "top_k": top_k,
                "max_formulas": max_formulas, "complete": complete, "shard": f"{shard_i}/{shard_n}"}
    header = {"format": CHECKPOINT_FORMAT, "input": str(input_path.resolve()), "input_sha256": sha256_file(input_path),
              "n_spectra": n_total, "seed": seed, "settings": settings}
    done: dict[int, dict] = {}
    resuming = resume and checkpoint_path.exists()
    if resuming:
        header, done = _resume_checkpoint(checkpoint_path, header)
        logger.info("resuming %s: %d of %d spectra already done", checkpoint_path, len(done), len(selected))
    elif header["seed"] is None:
        header["seed"] = secrets.randbits(31)
    seed = header["seed"]

    todo = [i for i in selected if i not in done]
    if todo:
        options = {"n_samples": samples, "steps": steps, "top_k": top_k, "seed": seed, "max_formulas": max_formulas,
                   "complete": complete}
        if batch_size is not None:
            options["batch_size"] = batch_size
        sink = _Checkpoint(checkpoint_path, None if resuming else header)
        try:
            for index, record in _run(spectra, todo, weights, options, workers,
                                      progress=progress, n_selected=len(selected), n_done=len(done)):
                sink.append(index, record)
                done[index] = record
        except KeyboardInterrupt:
            sink.close()
            where = f"are saved in {checkpoint_path}; rerun with --resume to continue" if sink.exists() else \
                "nothing was saved"
            click.echo(f"interrupted: {len(done)} of {len(selected)} spectra {where}", err=True)
            sys.exit(130)
        except OSError as err:
            raise RunError(f"cannot write checkpoint {checkpoint_path}: {err.strerror or err}") from None
        finally:
            sink.close()

    annotated = [apply_additions(spectra[i], done[i]) for i in selected]
    from .writers import OutputError

    try:
        writer(annotated, output_path)
    except (OutputError, OSError) as err:
        message = str(err) if isinstance(err, OutputError) else f"cannot write {output_path}: {err.strerror or err}"
        if checkpoint_path.exists():
            message += f" (the results are kept in {checkpoint_path}; fix the problem and rerun with --resume)"
        raise RunError(message) from None
    checkpoint_path.unlink(missing_ok=True)
    counts = Counter(status_code(s.get("diffms_status")) or "no status" for s in annotated)
    summary = ", ".join(f"{n} {code}" for code, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    click.echo(f"wrote {len(annotated)} spectra to {output_path}" + (f" ({summary})" if summary else ""), err=True)


def _check_paths(input_path: Path, output_path: Path):
    """Validate INPUT / OUTPUT before any work; returns the output writer."""
    if not input_path.exists():
        raise InputError(f"cannot read {input_path}: no such file")
    if not input_path.is_file():
        raise InputError(f"cannot read {input_path}: not a file")
    if not os.access(input_path, os.R_OK):
        raise InputError(f"cannot read {input_path}: permission denied")
    if input_path.suffix.lower() not in INPUT_FORMATS:
        raise InputError(f"cannot read {input_path}: unknown spectrum file type {input_path.suffix!r} "
                         f"(supported: .mgf, .msp, .json, .mzML, .mzXML)")
    if output_path.exists() and output_path.resolve() == input_path.resolve():
        raise InputError(f"OUTPUT {output_path} is the INPUT file; choose another name (INPUT is never modified)")
    writers = output_writers()
    writer = writers.get(output_path.suffix.lower())
    if writer is None:
        raise InputError(f"cannot write {output_path}: unknown output format {output_path.suffix!r} "
                         f"(supported: {', '.join(sorted(writers))})")
    folder = output_path.parent if str(output_path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"cannot write {output_path}: folder {folder} does not exist")
    return writer


def _check_weights(weights) -> None:
    """Resolve and verify the weights before anything else (reading the input, importing matchms or torch),
    so that a wrong name or a damaged file fails in about a second."""
    from .weights import WeightsError, check_weights

    try:
        check_weights(weights)
    except WeightsError as err:
        raise InputError(str(err)) from None


# ------------------------------------------------------------------------------------------------ reading
def read_spectra(path) -> list:
    """Read all spectra of a spectrum file with matchms (format from the extension).

    MGF, MSP and JSON records that cannot be parsed are skipped with a warning naming the record; a file
    that is not valid UTF-8, holds no spectrum, or cannot be parsed at all raises :class:`InputError`.

    Parameters
    ----------
    path
        .mgf, .msp, .json, .mzML or .mzXML file.

    Returns
    -------
    list of matchms.Spectrum
    """
    path = Path(path)
    kind = INPUT_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise InputError(f"cannot read {path}: unknown spectrum file type {path.suffix!r}")
    try:
        if kind in ("mzml", "mzxml"):
            spectra = _read_xml(path, kind)
        else:
            try:
                text = path.read_bytes().decode("utf-8-sig")
            except UnicodeDecodeError as err:
                raise InputError(f"cannot read {path}: not a UTF-8 text file (byte {err.start})") from None
            spectra = {"mgf": _read_mgf, "msp": _read_msp, "json": _read_json}[kind](path, text)
    except InputError:
        raise
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror or err}") from None
    spectra = [s for s in spectra if s is not None]
    if not spectra:
        raise InputError(f"cannot read {path}: no spectra found (is it a {kind.upper()} file?)")
    return spectra


def _one_line(err: Exception) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())


def _read_mgf(path: Path, text: str) -> list:
    """MGF: the whole file at once; record by record when that fails or loses records."""
    from matchms.importing import load_from_mgf

    starts = [m.start() for m in re.finditer(r"^[ \t]*BEGIN IONS[ \t]*\r?$", text, flags=re.MULTILINE)]
    try:
        spectra = list(load_from_mgf(io.StringIO(text)))
        if len(spectra) == len(starts):
            return spectra
        logger.warning("%s: %d of %d records read; reading the file record by record", path, len(spectra),
                       len(starts))
    except Exception as err:  # pyteomics raises its own error types for malformed records
        logger.warning("%s: %s; reading the file record by record", path, _one_line(err))
    spectra = []
    for number, (begin, end) in enumerate(zip(starts, starts[1:] + [len(text)]), start=1):
        chunk = text[begin:end]
        m = re.search(r"^[ \t]*END IONS[ \t]*\r?$", chunk, flags=re.MULTILINE)
        if m is None:
            logger.warning("%s: record %d skipped: no END IONS line before the next BEGIN IONS or the end of "
                           "the file", path, number)
            continue
        _load_record(spectra, path, number, lambda: load_from_mgf(io.StringIO(chunk[:m.end()] + "\n")))
    return spectra


def _load_record(spectra: list, path: Path, number: int, load) -> None:
    """Append the spectrum of one record, or log why the record is skipped."""
    try:
        found = list(load())
    except Exception as err:  # skip this record only
        logger.warning("%s: record %d skipped: %s", path, number, _one_line(err))
        return
    if not found:
        logger.warning("%s: record %d skipped: matchms read no spectrum from it (no peaks, or a peak count that "
                       "does not match the peak lines)", path, number)
    spectra.extend(found)


def _read_msp(path: Path, text: str) -> list:
    """MSP: the whole file at once; record by record (blank-line separated) when that fails or loses
    records."""
    from matchms.importing import load_from_msp

    records = [r for r in re.split(r"\n[ \t]*\r?\n", text.replace("\r\n", "\n")) if r.strip()]
    try:
        spectra = list(load_from_msp(str(path)))
        if len(spectra) == len(records):
            return spectra
        logger.warning("%s: %d of %d records read; reading the file record by record", path, len(spectra),
                       len(records))
    except Exception as err:  # matchms raises KeyError / RuntimeError / ValueError for malformed records
        logger.warning("%s: %s; reading the file record by record", path, _one_line(err))
    spectra = []
    with tempfile.TemporaryDirectory() as folder:
        record_path = os.path.join(folder, "record.msp")
        for number, record in enumerate(records, start=1):
            with open(record_path, "w", encoding="utf-8") as fh:
                fh.write(record.strip() + "\n\n")
            _load_record(spectra, path, number, lambda: load_from_msp(record_path))
    return spectra


def _read_json(path: Path, text: str) -> list:
    from matchms.importing.load_from_json import as_spectrum

    try:
        records = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"cannot read {path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if isinstance(records, dict):
        records = [records]
    if not isinstance(records, list):
        raise InputError(f"cannot read {path}: expected a JSON list of spectra")
    spectra = []
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            logger.warning("%s: record %d skipped: not a JSON object", path, number)
            continue
        try:
            spectrum = as_spectrum(record)
        except Exception as err:  # skip this record only
            logger.warning("%s: record %d skipped: %s", path, number, _one_line(err))
            continue
        if spectrum is None:
            logger.warning("%s: record %d skipped: no peaks_json", path, number)
            continue
        spectra.append(spectrum)
    return spectra


def _read_xml(path: Path, kind: str) -> list:
    try:
        from matchms.importing import load_from_mzml, load_from_mzxml
        import lxml  # noqa: F401  (needed by pyteomics' mzML / mzXML readers)
        import pyteomics  # noqa: F401
    except ImportError as err:
        raise InputError(f"cannot read {path}: reading {kind} needs pyteomics and lxml ({err}); "
                         "install them with 'pip install pyteomics lxml'") from None
    loader = load_from_mzml if kind == "mzml" else load_from_mzxml
    try:
        return list(loader(str(path)))
    except Exception as err:  # lxml / pyteomics parse errors: the whole file is unreadable
        raise InputError(f"cannot read {path}: {_one_line(err)}") from None


# ------------------------------------------------------------------------------------------------ checkpoint
def checkpoint_path_for(output_path) -> Path:
    """The checkpoint file of an output: ``OUTPUT.partial.jsonl`` in the same folder."""
    output_path = Path(output_path)
    return output_path.with_name(output_path.name + CHECKPOINT_SUFFIX)


def _write_line(fh, obj) -> None:
    fh.write(json.dumps(obj, ensure_ascii=False, allow_nan=True) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


class _Checkpoint:
    """Append-only checkpoint file, created with its header on the first record (so that a run that fails
    before finishing any spectrum, e.g. on unknown weights, leaves nothing behind)."""

    def __init__(self, path: Path, header: dict | None):
        self.path = path
        self.header = header          # None: the file exists already (resume), append to it
        self._fh = None

    def exists(self) -> bool:
        return self.path.exists()

    def append(self, index: int, record: dict) -> None:
        if self._fh is None:
            if self.header is not None:
                try:       # "x": a second run writing the same OUTPUT at the same time must not share the file
                    self._fh = open(self.path, "x", encoding="utf-8")
                except FileExistsError:
                    raise RunError(f"{self.path} appeared while this run was working: another run writes the "
                                   "same OUTPUT; give each run its own OUTPUT") from None
                _write_line(self._fh, {"header": self.header})
            else:
                self._fh = open(self.path, "a", encoding="utf-8")
        _write_line(self._fh, {"index": index, **record})

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _resume_checkpoint(path: Path, header: dict) -> tuple[dict, dict]:
    """Read a checkpoint: check it belongs to this input and these settings, return (header, done records).

    A last line cut off by a crash is dropped (and cut from the file, so that new records start on a line of
    their own).
    """
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    good_end = 0
    done = {}
    old_header = None
    offset = 0
    for number, line in enumerate(lines):
        end = offset + len(line) + 1
        if not line.strip():
            offset = end
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            if number >= len(lines) - 2:   # an incomplete last line: the crash happened while writing it
                logger.warning("%s: dropping an incomplete last record", path)
                break
            raise InputError(f"checkpoint {path} is corrupt at line {number + 1}; delete it to start over") from None
        if number == 0:
            old_header = record.get("header") if isinstance(record, dict) else None
            if not isinstance(old_header, dict) or old_header.get("format") != CHECKPOINT_FORMAT:
                raise InputError(f"{path} is not a matchms-diffms checkpoint; delete it to start over")
        else:
            done[int(record["index"])] = {"metadata": dict(record.get("metadata", {})),
                                          "removed": list(record.get("removed", []))}
        good_end = min(end, len(raw))
        offset = end
    if old_header is None:
        raise InputError(f"checkpoint {path} is empty; delete it to start over")
    if good_end < len(raw):
        with open(path, "r+b") as fh:
            fh.truncate(good_end)
            if good_end and not raw[:good_end].endswith(b"\n"):
                fh.seek(good_end)
                fh.write(b"\n")
            fh.flush()
            os.fsync(fh.fileno())
    if old_header.get("input_sha256") != header["input_sha256"] or old_header.get("n_spectra") != header["n_spectra"]:
        raise InputError(f"checkpoint {path} was written for another input ({old_header.get('input')}); "
                         "delete it to start over")
    if header["seed"] is not None and header["seed"] != old_header.get("seed"):
        raise InputError(f"checkpoint {path} was written with --seed {old_header.get('seed')}, not {header['seed']}; "
                         "rerun with the same seed or delete the checkpoint")
    differing = [f"--{k.replace('_', '-')} {old_header['settings'].get(k)!r} (now {v!r})"
                 for k, v in header["settings"].items() if old_header.get("settings", {}).get(k) != v]
    if differing:
        raise InputError(f"checkpoint {path} was written with other settings: {'; '.join(differing)}; rerun with "
                         "the same settings or delete the checkpoint")
    return old_header, done


# ------------------------------------------------------------------------------------------------ running
def apply_additions(spectrum, record: dict):
    """A clone of ``spectrum`` with a checkpoint record applied (``metadata`` set, ``removed`` keys dropped)."""
    from matchms import Spectrum

    metadata = dict(spectrum.metadata)
    for key in record.get("removed", ()):
        metadata.pop(key, None)
    metadata.update(record.get("metadata", {}))
    return Spectrum(mz=spectrum.peaks.mz, intensities=spectrum.peaks.intensities, metadata=metadata,
                    metadata_harmonization=False)


def metadata_changes(original, annotated) -> dict:
    """What the annotator changed: ``{"metadata": {added or changed keys: JSON-ready values},
    "removed": [keys it dropped]}`` (it drops stale diffms_* results of an earlier run)."""
    import numpy as np

    before = original.metadata
    after = annotated.metadata
    changed = {}
    for key, value in after.items():
        if key in before:
            old = before[key]
            if isinstance(old, np.ndarray) or isinstance(value, np.ndarray):
                same = isinstance(old, np.ndarray) and isinstance(value, np.ndarray) and np.array_equal(old, value)
            else:
                try:
                    same = bool(old == value) and type(old) is type(value)
                except (ValueError, TypeError):
                    same = False
            if same:
                continue
        changed[key] = plain_value(value, finite=True)
    return {"metadata": changed, "removed": sorted(k for k in before if k not in after)}


def annotator_class():
    """The annotator class used by ``annotate`` (a separate function so tests can substitute it)."""
    from .annotator import DiffMSAnnotator

    return DiffMSAnnotator


def _annotate_one(annotator, index: int, spectrum) -> tuple[int, dict]:
    """Annotate the spectrum at position ``index`` of the input; returns (index, checkpoint record)."""
    try:
        annotated = annotator.annotate(spectrum, index=index)
    except Exception as err:   # the annotator reports problems as statuses; this is a last line of defence
        logger.error("spectrum %d: unexpected error: %s", index, _one_line(err), exc_info=True)
        return index, {"metadata": {"diffms_status": f"error: {_one_line(err)}"}, "removed": []}
    return index, metadata_changes(spectrum, annotated)


class WorkerStartError(Exception):
    """A worker process could not build its annotator (message, and whether it is an input problem)."""

    def __init__(self, message: str, input_problem: bool):
        super().__init__(message, input_problem)
        self.message, self.input_problem = message, input_problem

    def __str__(self) -> str:
        return self.message


_WORKER: dict = {}


def _worker_init(cls, weights, options, log_level) -> None:
    """Worker process start: log to stderr, load the model once (a failure is reported with the first task)."""
    root = logging.getLogger("matchms")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.handlers = [handler]
    root.setLevel(log_level)
    root.propagate = False
    _worker_load(cls, weights, options)


def _worker_load(cls, weights, options) -> None:
    """Build this worker's annotator; remember a failure as a :class:`WorkerStartError`."""
    _WORKER.clear()
    try:
        import torch

        torch.set_num_threads(1)
        _WORKER["annotator"] = _load_annotator(cls, weights, options)
    except InputError as err:
        _WORKER["error"] = WorkerStartError(err.message, True)
    except Exception as err:   # re-raised with the first task, i.e. in the parent process
        _WORKER["error"] = WorkerStartError(f"cannot start a worker: {_one_line(err)}", False)


def _worker_task(task):
    if "error" in _WORKER:
        raise _WORKER["error"]
    index, spectrum = task
    return _annotate_one(_WORKER["annotator"], index, spectrum)


def _load_annotator(cls, weights, options):
    """``cls.from_pretrained(weights, **options)``; unknown weights or invalid options raise InputError."""
    from .official import WeightsError

    try:
        return cls.from_pretrained(weights, **options)
    except (WeightsError, ValueError) as err:
        raise InputError(_one_line(err) if not isinstance(err, WeightsError) else str(err)) from None


def _run(spectra, todo, weights, options, workers, *, progress, n_selected, n_done):
    """Yield (index, additions) for every index of ``todo`` (in completion order)."""
    from tqdm import tqdm

    cls = annotator_class()
    bar = tqdm(total=n_selected, initial=n_done, unit="spectrum", desc="annotate", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    try:
        if workers <= 1 or len(todo) <= 1:
            annotator = _load_annotator(cls, weights, options)
            for index in todo:
                yield _annotate_one(annotator, index, spectra[index])
                bar.update(1)
            return
        initargs = (cls, weights, options, logging.getLogger("matchms").level)
        for result in _run_pool(spectra, todo, workers, initargs):
            yield result
            bar.update(1)
    finally:
        bar.close()


WORKER_DIED = ("error: the worker process died while annotating this spectrum (a crash in a native library, or "
               "killed, e.g. out of memory)")


def _run_pool(spectra, todo, workers, initargs):
    """Yield (index, record) for ``todo`` from ``workers`` spawned processes (in completion order).

    A worker process that dies (segfault, out-of-memory kill) breaks its pool (``multiprocessing.Pool`` would
    wait forever instead). The spectra it had in flight are then retried one at a time in a single fresh
    process; one that kills that process too gets the status :data:`WORKER_DIED`, and the run goes on.
    """
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    context = multiprocessing.get_context("spawn")
    queue, suspects = list(todo), []        # suspects: in flight when a worker died
    while queue or suspects:
        alone = bool(suspects)
        batch = suspects if alone else queue
        n_proc = 1 if alone else min(workers, len(batch))
        feed = iter(batch)
        pending: dict = {}
        lost: list[int] = []
        broken = False
        pool = ProcessPoolExecutor(n_proc, mp_context=context, initializer=_worker_init, initargs=initargs)
        try:
            def submit_next():
                index = next(feed, None)
                if index is not None:
                    pending[pool.submit(_worker_task, (index, spectra[index]))] = index

            for _ in range(1 if alone else 2 * n_proc):
                submit_next()
            while pending and not broken:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    try:
                        result = future.result()
                    except WorkerStartError as err:
                        raise (InputError if err.input_problem else RunError)(err.message) from None
                    except BrokenProcessPool:
                        broken = True
                        continue
                    del pending[future]
                    yield result
                    if not broken:
                        submit_next()
            if broken:                      # keep what finished before the pool broke; the rest is lost
                wait(pending)
                for future, index in sorted(pending.items(), key=lambda kv: kv[1]):
                    if future.exception() is None:
                        yield future.result()
                    else:
                        lost.append(index)
        finally:
            pool.shutdown(wait=not broken, cancel_futures=True)
        remaining = list(feed)
        if alone:
            suspects = remaining
            for index in lost:
                logger.error("spectrum %d: %s", index, WORKER_DIED[len("error: "):])
                yield index, {"metadata": {"diffms_status": WORKER_DIED}, "removed": []}
        else:
            queue = remaining
            if lost:
                logger.warning("a worker process died; retrying spectra %s one at a time", lost)
                suspects = lost


# ================================================================================================ plugins' commands
register_commands(main)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
