"""The plugin contract of matchms-diffms.

Built-in behaviour (our weights, formula providers, writers, commands) is registered through these same
hooks as third-party plugins, which are found through the ``matchms_diffms`` entry-point group::

    [options.entry_points]
    matchms_diffms =
        my_plugin = my_package.diffms_plugin

A plugin module implements any subset of the hooks below with ``@hookimpl``.
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("matchms_diffms")
hookimpl = pluggy.HookimplMarker("matchms_diffms")


@hookspec
def diffms_weight_sources():
    """Named weights a plugin can provide.

    Returns
    -------
    dict
        ``{name: path_to_weights_folder_or_checkpoint}``; the folder holds ``model.safetensors`` +
        ``config.json`` (our format), a file may be an official DiffMS ``.ckpt``.
    """


@hookspec
def diffms_load_model(path, config_overrides):
    """Load a model from ``path`` if this plugin understands the file; return ``None`` otherwise.

    Returns ``(model, info)`` where ``model`` is a ``matchms_diffms.model.diffms.DiffMS`` in eval mode
    and ``info`` a dict with at least ``name`` and ``sha256``.
    """


@hookspec
def diffms_formula_candidates(spectrum, context):
    """Propose neutral molecular formulas for ``spectrum``.

    Providers are asked in order (``tryfirst``/``trylast`` and registration order); the annotator
    takes the first non-empty answer.

    Parameters
    ----------
    spectrum
        A matchms ``Spectrum``.
    context
        dict with run-wide information (e.g. ``{"sirius_formulas": {...}, "max_formulas": 3}``).

    Returns
    -------
    list of matchms_diffms.formula_sources.FormulaCandidate, or None
    """


@hookspec
def diffms_output_writers():
    """Output formats a plugin can write.

    Returns
    -------
    dict
        ``{extension: writer}``, extension with the dot (``".tsv"``); ``writer(spectra, path)`` writes
        an iterable of annotated spectra to ``path``.
    """


@hookspec
def diffms_register_commands(cli):
    """Add click commands to the ``matchms-diffms`` command group ``cli``."""
