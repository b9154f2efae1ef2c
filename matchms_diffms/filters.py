"""matchms filter ``annotate_de_novo`` and helpers to use it in matchms processing and pipelines.

All matchms-specific glue of the annotator lives here (matchms 0.33; the 1.0 refactor keeps plain spectrum
callables, but the YAML shim below may have to change).

Three ways to run DiffMS inside matchms::

    # 1. SpectrumProcessor with the function object (custom filters run after all built-in filters)
    from matchms.filtering.SpectrumProcessor import SpectrumProcessor
    processor = SpectrumProcessor(formula_safe_filters() + [(annotate_de_novo, {"n_samples": 100})])
    spectra, report = processor.process_spectra(spectra)

    # 2. A Pipeline built in Python: pass the function object, not its name
    from matchms.Pipeline import Pipeline, create_workflow
    workflow = create_workflow(query_filters=formula_safe_filters() + [(annotate_de_novo, {"top_k": 5})])
    Pipeline(workflow).run("library.mgf", cleaned_query_file="annotated.mgf")

    # 3. A YAML workflow naming "annotate_de_novo": matchms only knows its own filter names, so register
    #    ours first (an unofficial shim on matchms.filtering.filter_order.FILTER_FUNCTION_NAMES)
    register_matchms_filter()
    workflow = load_workflow_from_yaml_file("workflow.yaml")
    Pipeline(workflow).run(...)

Protect the formula: matchms' ``DEFAULT_FILTERS`` end with ``derive_formula_from_smiles(overwrite=True)``;
for a spectrum without SMILES (the de novo case) ``harmonize_undefined_smiles`` first sets ``smiles = ""``
and ``derive_formula_from_smiles`` then overwrites the user's ``formula`` with an empty string, which
leaves DiffMS without a formula. Use :func:`formula_safe_filters` (``DEFAULT_FILTERS`` with
``overwrite=False``), or ``BASIC_FILTERS``; never put ``derive_formula_from_smiles`` with ``overwrite=True``
before ``annotate_de_novo``. (An empty ``formula`` is treated as missing by the formula providers.)

Weights are passed as a name or path (a string, so workflows stay YAML-serialisable); annotators are
built once per process and parameter set and cached.
"""
from __future__ import annotations

import logging
import threading

from .metadata import spectrum_label

logger = logging.getLogger("matchms.diffms")

FILTER_NAME = "annotate_de_novo"
_ANNOTATORS: dict = {}
_LOCK = threading.Lock()


def _annotator(weights: str, **options):
    from .annotator import DiffMSAnnotator

    key = (str(weights), tuple(sorted(options.items())))
    with _LOCK:
        if key not in _ANNOTATORS:
            _ANNOTATORS[key] = DiffMSAnnotator.from_pretrained(str(weights), **options)
        return _ANNOTATORS[key]


def clear_annotator_cache() -> None:
    """Forget the annotators built by :func:`annotate_de_novo` (the loaded weights stay cached)."""
    with _LOCK:
        _ANNOTATORS.clear()


def annotate_de_novo(spectrum_in, weights: str = "default", n_samples: int = 100, top_k: int = 10,
                     seed: int | None = None, steps: int | None = None, max_formulas: int = 3,
                     clone: bool = True):
    """Propose structures for a spectrum with DiffMS and store them in ``diffms_*`` metadata.

    The spectrum is never removed: a spectrum that cannot be annotated keeps its peaks and gets a
    ``diffms_status`` reason (see ``matchms_diffms.annotator``).

    Parameters
    ----------
    spectrum_in
        Input spectrum (matchms ``Spectrum``) or ``None``.
    weights
        Name (``"default"``) or path of the model weights.
    n_samples
        Diffusion samples per formula candidate.
    top_k
        Candidates kept.
    seed
        Base seed (``None``: one random seed per process, recorded in ``diffms_seed``).
    steps
        Reverse diffusion steps (``None``: the model's default, 500).
    max_formulas
        Formula candidates tried per spectrum.
    clone
        Work on a copy of the spectrum (``False``: the input's metadata is updated in place).

    Returns
    -------
    Spectrum or None
    """
    if spectrum_in is None:
        return None
    annotator = _annotator(weights, n_samples=int(n_samples), top_k=int(top_k), seed=seed,
                           steps=None if steps is None else int(steps), max_formulas=int(max_formulas))
    annotated = annotator.annotate(spectrum_in)
    logger.info("DiffMS annotation of %s: %s", spectrum_label(spectrum_in), annotated.get("diffms_status"))
    if clone:
        return annotated
    spectrum_in.metadata = annotated.metadata
    return spectrum_in


def processing_step(**params) -> tuple:
    """``(annotate_de_novo, params)``: a ready step for ``SpectrumProcessor`` / ``create_workflow``."""
    unknown = set(params) - {"weights", "n_samples", "top_k", "seed", "steps", "max_formulas", "clone"}
    if unknown:
        raise TypeError(f"unknown annotate_de_novo parameter(s): {sorted(unknown)}")
    return (annotate_de_novo, dict(params))


def formula_safe_filters(filters=None) -> list:
    """A matchms filter list in which ``derive_formula_from_smiles`` cannot wipe a user-given formula.

    Parameters
    ----------
    filters
        A list of matchms filter descriptions (default: ``matchms.filtering.default_pipelines.DEFAULT_FILTERS``).

    Returns
    -------
    list
        A copy where every ``derive_formula_from_smiles`` step gets ``overwrite=False``.
    """
    from matchms.filtering import derive_formula_from_smiles
    from matchms.filtering.default_pipelines import DEFAULT_FILTERS

    out = []
    for step in (DEFAULT_FILTERS if filters is None else filters):
        func, params = (step[0], dict(step[1]) if len(step) > 1 else {}) if isinstance(step, (tuple, list)) \
            else (step, {})
        name = func if isinstance(func, str) else getattr(func, "__name__", "")
        if name == "derive_formula_from_smiles":
            out.append((derive_formula_from_smiles, {**params, "overwrite": False}))
        else:
            out.append(step)
    return out


def register_matchms_filter() -> None:
    """Make ``annotate_de_novo`` known to matchms by name, for YAML workflows.

    matchms 0.33 resolves filter names only through ``matchms.filtering.filter_order.FILTER_FUNCTION_NAMES``
    (a module-level dict); this adds ours to it. Unofficial: may need changes with matchms 1.0.

    Raises
    ------
    RuntimeError
        When the installed matchms has no such table.
    """
    try:
        from matchms.filtering import filter_order
        table = filter_order.FILTER_FUNCTION_NAMES
    except (ImportError, AttributeError):
        raise RuntimeError("this matchms version has no filter name table "
                           "(matchms.filtering.filter_order.FILTER_FUNCTION_NAMES); pass the function "
                           "object annotate_de_novo in the workflow instead of its name") from None
    table[FILTER_NAME] = annotate_de_novo


__all__ = ["annotate_de_novo", "processing_step", "formula_safe_filters", "register_matchms_filter",
           "clear_annotator_cache", "FILTER_NAME"]
