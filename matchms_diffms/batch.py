"""Running the annotator over many spectra: the one runner of every command that annotates.

:func:`annotate_spectra` annotates a list of spectra with the settings of an :class:`AnnotationSettings`
and gives the annotated clones back in input order. With a checkpoint path it is resumable
(:mod:`matchms_diffms.checkpoint`: every finished spectrum is saved at once; ``resume=True`` skips the saved
ones); with ``workers > 1`` it runs in spawned processes that each load the model once, and a worker process
that dies (a crash in a native library, the out-of-memory killer) costs the spectrum it was working on, not the
run: its spectra are retried one at a time, and one that kills its process again gets the status
:data:`WORKER_DIED`.

Seeding: each spectrum is seeded from ``settings.seed`` and its identity
(:func:`matchms_diffms.metadata.spectrum_key`), never from its position, so the results do not depend on
``workers``, on sharding, on resuming, or on which other spectra are in the run.

No click here: problems are :class:`matchms_diffms.io.InputError` (unknown weights, invalid settings, a
checkpoint in the way), :class:`matchms_diffms.io.RunError` (a checkpoint cannot be written) and
:class:`Interrupted` (Ctrl-C; what finished is in the checkpoint).
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .checkpoint import CheckpointWriter, apply_additions, metadata_changes, new_header, read_checkpoint
from .io import InputError, RunError, one_line

logger = logging.getLogger("matchms.diffms")

__all__ = ["AnnotationSettings", "Interrupted", "annotate_spectra", "annotate_file", "annotator_class",
           "finish_checkpoint", "write_output", "WORKER_DIED"]


@dataclass(frozen=True)
class AnnotationSettings:
    """How spectra are annotated: the one settings object of every command that annotates.

    Attributes
    ----------
    weights
        Weights name or path.
    n_samples, steps, top_k, max_formulas, complete, ranking, max_heavy_atoms
        :class:`matchms_diffms.annotator.DiffMSAnnotator` options (``steps=None``: the weights' default;
        ``max_heavy_atoms=None``: the largest formula the weights were trained on).
    seed
        Base seed of every spectrum's sampling (0 by default: the same command gives the same result).
    workers
        Processes that annotate (each loads the model once, one torch thread each).
    threads
        torch threads of the annotating process when ``workers`` is 1 (None: torch's choice).
    formula_context
        Run-wide information for the formula providers (e.g. ``{"sirius_formulas": {...}}``).
    """

    weights: str = "default"
    n_samples: int = 100
    steps: int | None = None
    top_k: int = 10
    seed: int = 0
    max_formulas: int = 3
    complete: bool = True
    ranking: str = "fingerprint"
    max_heavy_atoms: int | None = None
    workers: int = 1
    threads: int | None = None
    formula_context: dict = field(default_factory=dict)

    def annotator_options(self) -> dict:
        """Keyword arguments of ``DiffMSAnnotator.from_pretrained`` (besides the weights)."""
        options = {"n_samples": self.n_samples, "steps": self.steps, "top_k": self.top_k, "seed": self.seed,
                   "max_formulas": self.max_formulas, "complete": self.complete, "ranking": self.ranking,
                   "max_heavy_atoms": self.max_heavy_atoms}
        if self.formula_context:
            options["formula_context"] = dict(self.formula_context)
        return options

    def recorded(self) -> dict:
        """The settings a checkpoint must match to be resumed (what changes the results)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("workers", "threads", "seed", "formula_context")}
        out["samples"] = out.pop("n_samples")                  # named like the option in the messages
        out["weights"] = str(self.weights)
        if self.formula_context:
            text = json.dumps(self.formula_context, sort_keys=True, default=str)
            out["formula_context_sha256"] = hashlib.sha256(text.encode()).hexdigest()
        return out


class Interrupted(Exception):
    """The run was interrupted (Ctrl-C); ``saved`` spectra of ``total`` are in ``checkpoint`` (or None)."""

    def __init__(self, saved: int, total: int, checkpoint: Path | None):
        where = (f"are saved in {checkpoint}; rerun with --resume to continue" if checkpoint is not None
                 else "nothing was saved")
        super().__init__(f"interrupted: {saved} of {total} spectra {where}")
        self.saved, self.total, self.checkpoint = saved, total, checkpoint


def annotator_class():
    """The annotator class the runner builds (a separate function so that tests can substitute it)."""
    from .annotator import DiffMSAnnotator

    return DiffMSAnnotator


# ------------------------------------------------------------------------------------------------ runner
def annotate_spectra(spectra, settings: AnnotationSettings, *, checkpoint=None, resume: bool = False,
                     label: str = "", extra_settings: dict | None = None, progress: bool = False,
                     annotator_cls=None) -> list:
    """Annotate ``spectra``; returns the annotated clones in input order.

    Parameters
    ----------
    spectra
        matchms spectra (a list, or any iterable: it is read once).
    settings
        The annotation settings.
    checkpoint
        Checkpoint file (usually ``checkpoint.checkpoint_path_for(OUTPUT)``), or None for no checkpoint.
        The caller removes it with :func:`finish_checkpoint` once its outputs are written.
    resume
        Continue from ``checkpoint`` if it exists. Without ``resume`` an existing checkpoint is an error.
    label
        Names the input in the checkpoint and in its error messages (e.g. the input file).
    extra_settings
        More settings the checkpoint must match (e.g. the shard of the input).
    progress
        Show a progress bar on stderr.
    annotator_cls
        The annotator class (default :func:`annotator_class`, i.e. ``DiffMSAnnotator``); a subclass must be
        importable by name, since worker processes receive it pickled.

    Raises
    ------
    InputError
        Unknown weights or invalid settings, or a checkpoint that is in the way or does not fit.
    RunError
        The checkpoint cannot be written, or a worker process cannot start.
    Interrupted
        Ctrl-C; what finished is saved in the checkpoint.
    """
    spectra = list(spectra)
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    cls = annotator_cls if annotator_cls is not None else annotator_class()
    header = new_header(label, spectra, settings.seed, {**settings.recorded(), **(extra_settings or {})})
    done: dict[int, dict] = {}
    resuming = checkpoint is not None and checkpoint.exists()
    if resuming and not resume:
        raise InputError(f"a checkpoint of an unfinished run exists: {checkpoint}; pass --resume to continue "
                         "it, or delete it to start over")
    if resuming:
        header, done = read_checkpoint(checkpoint, header)
        logger.info("resuming %s: %d of %d spectra already done", checkpoint, len(done), len(spectra))
    todo = [i for i in range(len(spectra)) if i not in done]
    if todo:
        sink = CheckpointWriter(checkpoint, None if resuming else header) if checkpoint is not None else None
        try:
            for index, record in _records(spectra, todo, settings, cls, progress=progress, n_done=len(done)):
                if sink is not None:
                    sink.append(index, record)
                done[index] = record
        except KeyboardInterrupt:
            saved = sink is not None and sink.exists()
            raise Interrupted(len(done) if saved else 0, len(spectra), checkpoint if saved else None) from None
        except OSError as err:
            raise RunError(f"cannot write checkpoint {checkpoint}: {err.strerror or err}") from None
        finally:
            if sink is not None:
                sink.close()
    return [apply_additions(spectra[i], done[i]) for i in range(len(spectra))]


def finish_checkpoint(checkpoint) -> None:
    """Remove the checkpoint of a run whose outputs are written."""
    if checkpoint is not None:
        Path(checkpoint).unlink(missing_ok=True)


def write_output(write, spectra, output_path, checkpoint=None) -> None:
    """``write(spectra, output_path)`` with a one-line :class:`RunError` when it fails, which names the
    checkpoint that keeps the results (so that ``--resume`` writes the output without computing again)."""
    from .files import OutputError

    try:
        write(spectra, output_path)
    except (OutputError, OSError) as err:
        message = str(err) if isinstance(err, OutputError) else f"cannot write {output_path}: {err.strerror or err}"
        if checkpoint is not None and Path(checkpoint).exists():
            message += f" (the results are kept in {checkpoint}; fix the problem and rerun with --resume)"
        raise RunError(message) from None


def annotate_file(input_path, output_path, settings: AnnotationSettings, *, shard: tuple[int, int] = (0, 1),
                  resume: bool = False, progress: bool = False) -> list:
    """Annotate a spectrum file into OUTPUT (format by extension), resumably; returns the annotated spectra.

    Parameters
    ----------
    input_path
        .mgf, .msp, .json, .mzML or .mzXML (:func:`matchms_diffms.io.read_spectra`).
    output_path
        Any format of the output writers; its checkpoint is ``OUTPUT.partial.jsonl``.
    shard
        ``(i, n)``: only the spectra at positions p with p % n == i.

    Raises
    ------
    InputError, RunError, Interrupted
    """
    from .checkpoint import checkpoint_path_for
    from .io import check_input, output_writer, read_spectra

    input_path, output_path = check_input(input_path), Path(output_path)
    writer = output_writer(output_path, input_path)
    checkpoint = checkpoint_path_for(output_path)
    if checkpoint.exists() and not resume:     # before reading the input: fail fast
        raise InputError(f"a checkpoint of an unfinished run exists: {checkpoint}; pass --resume to continue "
                         "it, or delete it to start over")
    shard_i, shard_n = shard
    spectra = read_spectra(input_path)[shard_i::shard_n]
    annotated = annotate_spectra(spectra, settings, checkpoint=checkpoint, resume=resume,
                                 label=str(input_path.resolve()), extra_settings={"shard": f"{shard_i}/{shard_n}"},
                                 progress=progress)
    write_output(writer, annotated, output_path, checkpoint)
    finish_checkpoint(checkpoint)
    return annotated


def _records(spectra, todo, settings: AnnotationSettings, cls, *, progress: bool, n_done: int):
    """Yield (index, checkpoint record) for every index of ``todo`` (in completion order)."""
    from tqdm import tqdm

    options = settings.annotator_options()
    bar = tqdm(total=len(spectra), initial=n_done, unit="spectrum", desc="annotate", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    try:
        if settings.workers <= 1 or len(todo) <= 1:
            if settings.threads:
                import torch

                torch.set_num_threads(settings.threads)
            annotator = _load_annotator(cls, settings.weights, options)
            for index in todo:
                yield _annotate_one(annotator, index, spectra[index])
                bar.update(1)
            return
        initargs = (cls, settings.weights, options, logging.getLogger("matchms").level)
        for result in _run_pool(spectra, todo, settings.workers, initargs):
            yield result
            bar.update(1)
    finally:
        bar.close()


def _annotate_one(annotator, index: int, spectrum) -> tuple[int, dict]:
    """Annotate the spectrum at position ``index``; returns (index, checkpoint record)."""
    try:
        annotated = annotator.annotate(spectrum)
    except Exception as err:   # the annotator reports problems as statuses; this is a last line of defence
        logger.error("spectrum %d: unexpected error: %s", index, one_line(err), exc_info=True)
        return index, {"metadata": {"diffms_status": f"error: {one_line(err)}"}, "removed": []}
    return index, metadata_changes(spectrum, annotated)


# ------------------------------------------------------------------------------------------------ worker pool
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
        _WORKER["error"] = WorkerStartError(str(err), True)
    except Exception as err:   # re-raised with the first task, i.e. in the parent process
        _WORKER["error"] = WorkerStartError(f"cannot start a worker: {one_line(err)}", False)


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
    except WeightsError as err:
        raise InputError(str(err)) from None
    except ValueError as err:
        raise InputError(one_line(err)) from None


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
