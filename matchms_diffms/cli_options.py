"""The click layer shared by every command: the annotation options, logging to stderr, and exit codes.

Every command that annotates spectra (``annotate``, ``evaluate``, ``sirius-annotate``, ``msg-predict``, ...)
declares its sampling options with the one decorator :func:`annotation_options`, which hands the command a
:class:`matchms_diffms.batch.AnnotationSettings` (``settings``) plus ``resume`` and ``progress``, so that the
options, their defaults and their help read the same everywhere. :func:`command_errors` turns the library's
exceptions into the exit codes of the README:

====  ==========================================================================================
0     done
1     :class:`matchms_diffms.io.RunError`: an output or checkpoint could not be written
2     :class:`matchms_diffms.io.InputError`: invalid input, options or weights (one line on stderr)
130   :class:`matchms_diffms.batch.Interrupted`: interrupted (the checkpoint is kept; rerun with --resume)
====  ==========================================================================================
"""
from __future__ import annotations

import contextlib
import functools
import logging
import sys

import click

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

__all__ = ["UsageProblem", "RunFailure", "annotation_options", "command_errors", "logging_to_stderr",
           "check_weights_early", "LOG_LEVELS"]


class UsageProblem(click.ClickException):
    """A usage or input problem: one line on stderr, exit code 2."""

    exit_code = 2


class RunFailure(click.ClickException):
    """A failure while running (e.g. the output cannot be written): one line on stderr, exit code 1."""

    exit_code = 1


@contextlib.contextmanager
def command_errors():
    """Turn the library's exceptions into one-line messages and exit codes (see the module docstring)."""
    from .batch import Interrupted
    from .io import InputError, RunError

    try:
        yield
    except InputError as err:
        raise UsageProblem(str(err)) from None
    except RunError as err:
        raise RunFailure(str(err)) from None
    except Interrupted as err:
        click.echo(str(err), err=True)
        sys.exit(130)


@contextlib.contextmanager
def logging_to_stderr(level: str):
    """Route the ``matchms`` loggers (ours is ``matchms.diffms``) to stderr at ``level`` for one command."""
    import matchms  # noqa: F401  (matchms installs its stdout handler when first imported: do that now)
    from tqdm.contrib.logging import logging_redirect_tqdm

    root = logging.getLogger("matchms")
    saved = (root.level, list(root.handlers), root.propagate)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.handlers = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    try:
        with logging_redirect_tqdm(loggers=[root]):
            yield
    finally:
        root.setLevel(saved[0])
        root.handlers = saved[1]
        root.propagate = saved[2]


def check_weights_early(weights) -> None:
    """Resolve and verify the weights before anything else (reading the input, importing matchms or torch),
    so that a wrong name or a damaged file fails in about a second (exit code 2)."""
    from .weights import WeightsError, check_weights

    try:
        check_weights(weights)
    except WeightsError as err:
        raise UsageProblem(str(err)) from None


_OPTIONS = [
    click.option("--weights", "-w", default="default", show_default=True,
                 help="Model weights: a name (see 'matchms-diffms weights list'), a weights folder, an official "
                      "DiffMS checkpoint file, or a format a plugin loads."),
    click.option("--samples", "n_samples", type=click.IntRange(min=1), default=100, show_default=True,
                 help="Structures sampled per formula candidate."),
    click.option("--steps", type=click.IntRange(min=1), default=None,
                 help="Reverse diffusion steps (default: the weights' own default, chosen from the speed/quality "
                      "benchmark for our weights; all 500 steps for official DiffMS checkpoints). Fewer steps "
                      "run faster and give fewer valid structures."),
    click.option("--top-k", type=click.IntRange(min=1), default=10, show_default=True,
                 help="Candidates kept per spectrum."),
    click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
                 help="Base random seed (recorded in diffms_seed). Each spectrum's sampling is seeded from this "
                      "seed and the spectrum's identity (id field, peaks, precursor m/z), so results do not "
                      "depend on --workers, --shard, --resume or the other spectra of the file."),
    click.option("--max-formulas", type=click.IntRange(min=1), default=3, show_default=True,
                 help="Formula candidates tried per spectrum when the formula is not given (SIRIUS, mass "
                      "decomposition); their structures are merged and ranked together."),
    click.option("--complete/--no-complete", default=True, show_default=True,
                 help="Constrained decoding: replace every sample that is not a valid formula-exact molecule by the "
                      "most probable formula-exact molecule under the model's bond probabilities of that sample "
                      "(counted in diffms_n_completed; candidates say source 'decoded'). --no-complete keeps only "
                      "samples that are formula-exact as drawn: official DiffMS plus a formula filter."),
    click.option("--ranking", type=click.Choice(["fingerprint", "frequency", "combined"]), default="fingerprint",
                 show_default=True,
                 help="Candidate ranking: 'fingerprint' = Tanimoto to the encoder's predicted fingerprint (chosen on "
                      "val data), 'frequency' = how often a structure was sampled (DiffMS's ranking), 'combined' = "
                      "their mean."),
    click.option("--max-heavy-atoms", type=click.IntRange(min=2), default=None,
                 help="Largest formula annotated (default: the largest the weights were trained on; may be raised "
                      "up to the weights' hard limit, with lower quality and slower sampling)."),
    click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Worker processes; each loads the model once. The output is identical for any number; a "
                      "worker that crashes costs one spectrum (status error), not the run."),
    click.option("--threads", type=click.IntRange(min=1), default=None,
                 help="torch threads of the annotating process (default: torch's choice; workers use 1 each). "
                      "On a busy machine 1 is often fastest."),
    click.option("--resume", is_flag=True,
                 help="Continue an interrupted run from its checkpoint OUTPUT.partial.jsonl, skipping the spectra "
                      "already finished."),
    click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), default="WARNING",
                 show_default=True, help="Verbosity of the log (on stderr)."),
    click.option("--progress/--no-progress", default=True, show_default=True,
                 help="Show a progress bar on stderr."),
]
_SETTINGS = ("weights", "n_samples", "steps", "top_k", "seed", "max_formulas", "complete", "ranking",
             "max_heavy_atoms", "workers", "threads")


def annotation_options(command=None, *, pseudo_weights: tuple = ()):
    """Add the annotation options to a click command (``@annotation_options`` or
    ``@annotation_options(pseudo_weights=("random-formula",))``).

    The command receives ``settings`` (:class:`matchms_diffms.batch.AnnotationSettings`), ``resume`` and
    ``progress`` instead of the single options. The weights are verified first (:func:`check_weights_early`;
    names in ``pseudo_weights`` are the command's own and not checked), then the command runs with the log
    routed to stderr at ``--log-level`` and inside :func:`command_errors`.
    """
    if command is None:
        return functools.partial(annotation_options, pseudo_weights=pseudo_weights)

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from .batch import AnnotationSettings

        settings = AnnotationSettings(**{name: kwargs.pop(name) for name in _SETTINGS})
        if settings.weights not in pseudo_weights:
            check_weights_early(settings.weights)
        log_level = kwargs.pop("log_level")
        with logging_to_stderr(log_level), command_errors():
            return command(*args, settings=settings, **kwargs)

    for option in reversed(_OPTIONS):
        wrapper = option(wrapper)
    return wrapper
