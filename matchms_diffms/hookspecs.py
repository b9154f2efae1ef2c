"""The plugin contract of matchms-diffms.

Built-in behaviour (our weights, formula providers, writers, commands) is registered through these same
hooks as third-party plugins, which are found through the ``matchms_diffms`` entry-point group::

    [options.entry_points]
    matchms_diffms =
        my_plugin = my_package.diffms_plugin

A plugin module implements any subset of the hooks below with ``@hookimpl``
(``from matchms_diffms import hookimpl``).

Two hooks are *first result* hooks (pluggy's ``firstresult``): ``diffms_load_model`` and
``diffms_formula_candidates``. pluggy asks their implementations in its call order -- ``tryfirst`` ones first,
``trylast`` ones last, otherwise the most recently registered first -- and stops at the first answer that is
not ``None``. An implementation that has nothing to say returns ``None``. The built-in implementations are
``trylast`` (model loading, mass decomposition) or ``tryfirst`` (formulas given with the spectrum), so a plain
third-party implementation is asked after the user's own formulas and before anything we would guess.
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


@hookspec(firstresult=True)
def diffms_load_model(path, config_overrides):
    """Load a model from ``path`` if this plugin understands the file; return ``None`` otherwise.

    The built-in loader (``trylast``) understands our weights folders and official DiffMS checkpoints and
    returns ``None`` for anything else, so a plugin can add a weight format.

    Parameters
    ----------
    path
        ``pathlib.Path`` of a file or folder (a name such as ``default`` is resolved before the call).
    config_overrides
        dict of ``DiffMSConfig`` fields to override (may be empty).

    Returns
    -------
    (model, info) or None
        ``model`` is a ``matchms_diffms.model.diffms.DiffMS`` in eval mode, ``info`` a dict with at least
        ``name`` and ``sha256``. A file in the plugin's own format that is broken raises
        ``matchms_diffms.WeightsError`` with a one-line message.
    """


@hookspec(firstresult=True)
def diffms_formula_candidates(spectrum, context):
    """Propose neutral molecular formulas for ``spectrum``.

    A first-result hook: providers are asked in pluggy's call order and the first answer that is not
    ``None`` is used. Return ``None`` (not an empty list) to let the next provider answer.

    Parameters
    ----------
    spectrum
        A matchms ``Spectrum``.
    context
        dict with run-wide information (e.g. ``{"sirius_formulas": {...}, "max_formulas": 3}``).

    Returns
    -------
    list of matchms_diffms.FormulaCandidate, or None
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
