"""matchms-diffms: de novo structure annotation of MS/MS spectra with DiffMS.

The names below are the public API: adapters, examples and third-party plugins use them, and they keep
their meaning across versions. Everything else is reachable through its module but may change.

Annotating spectra
    :class:`DiffMSAnnotator` (``DiffMSAnnotator.from_pretrained("default")``), :func:`load_model`,
    :class:`WeightsError`.
matchms glue
    :func:`annotate_de_novo` (a matchms filter), :func:`processing_step`, :func:`formula_safe_filters`.
Many spectra, reliably (what every command uses)
    :func:`read_spectra`, :func:`write_spectra` (by extension, atomically), :class:`InputError`,
    :class:`RunError`;
    :class:`AnnotationSettings`, :func:`annotate_spectra` (resumable, crash-tolerant runs in worker processes),
    :func:`checkpoint_path_for`, :func:`finish_checkpoint`; for click commands :func:`annotation_options`
    (the shared options) and :func:`command_errors` (exit codes).
Labelled spectra (with their known structure, for evaluation)
    :func:`read_labelled` (MGF, MassSpecGym TSV or MIST folder), :func:`read_massspecgym_tsv`.
Results
    :func:`read_annotation` (typed ``diffms_*`` values, also after an MGF/MSP round trip),
    :func:`read_candidates`, :func:`status_code`, :data:`STATUS_CODES`, :data:`METADATA_KEYS`,
    :func:`spectrum_id` (the one id of a spectrum: TSV tables, SIRIUS lookup, logs).
Files
    :func:`write_report`, :func:`atomic_write`, :class:`OutputError`.
Plugins
    :data:`hookimpl` (the marker of hook implementations, see :mod:`matchms_diffms.hookspecs`),
    :class:`FormulaCandidate` (what a formula provider returns).
Chemistry
    :mod:`matchms_diffms.chem` (formulas, adducts, molecules; no torch).

All names are imported lazily, on first use, so that ``import matchms_diffms`` and
``matchms_diffms.chem`` stay usable without loading torch.
"""
from .lazy import lazy_names

__version__ = "0.1.0"

# public name -> module (relative to this package) that holds it
_PUBLIC = {
    "DiffMSAnnotator": "annotator",
    "read_annotation": "metadata",
    "read_candidates": "metadata",
    "status_code": "metadata",
    "spectrum_id": "metadata",
    "STATUS_CODES": "metadata",
    "METADATA_KEYS": "metadata",
    "annotate_de_novo": "filters",
    "processing_step": "filters",
    "formula_safe_filters": "filters",
    "load_model": "weights",
    "WeightsError": "official",
    "write_report": "report",
    "atomic_write": "files",
    "OutputError": "files",
    "hookimpl": "hookspecs",
    "read_spectra": "io",
    "write_spectra": "io",
    "InputError": "io",
    "RunError": "io",
    "AnnotationSettings": "batch",
    "annotate_spectra": "batch",
    "checkpoint_path_for": "checkpoint",
    "finish_checkpoint": "batch",
    "annotation_options": "cli_options",
    "command_errors": "cli_options",
    "FormulaCandidate": "formula_sources",
    "read_labelled": "labelled",
    "read_massspecgym_tsv": "labelled",
}

__all__ = sorted(_PUBLIC) + ["__version__"]

__getattr__ = lazy_names(__name__, _PUBLIC, globals())


def __dir__():
    return sorted(set(globals()) | set(__all__))
