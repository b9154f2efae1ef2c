"""The plugin manager of matchms-diffms.

Everything pluggable goes through the hooks of :mod:`matchms_diffms.hookspecs`, and the built-in behaviour is
registered through the very same hooks:

* ``matchms_diffms.formula_sources``: two formula providers, ``given`` (the metadata formula, the
  precursor/ion formula, SIRIUS formula identifications; ``tryfirst``) and ``mass_decomposition``
  (``trylast``), each a plugin of its own so that it can be blocked;
* ``matchms_diffms.writers``: the ``.mgf``, ``.msp``, ``.json`` and ``.tsv`` output writers;
* ``matchms_diffms.weights``: named weights and the model loader;
* ``matchms_diffms.commands.weights``, ``.commands.report``, ``.commands.evaluate``, ``matchms_diffms.train.cli``:
  extra commands (``diffms_register_commands``).

The modules of the last two items are optional (:data:`OPTIONAL_BUILTIN_MODULES`): one that cannot be
imported is skipped with a warning. A new built-in command module is added to that tuple.

Third-party plugins are found through the entry-point group ``matchms_diffms``::

    [options.entry_points]
    matchms_diffms =
        my_plugin = my_package.diffms_plugin

They are loaded lazily, on the first call of :func:`get_plugin_manager`. A plugin whose import (or
registration) fails is skipped with a warning that names it; it never stops a run. The environment variable
``MATCHMS_DIFFMS_LOAD_PLUGINS`` restricts loading to a comma-separated list of entry-point names (empty: load
no third-party plugin at all).

``diffms_formula_candidates`` and ``diffms_load_model`` are pluggy ``firstresult`` hooks: pluggy calls the
implementations in its order (``tryfirst`` ones first, ``trylast`` ones last, otherwise the most recently
registered first) and stops at the first answer that is not ``None``. The built-in formula providers are
``tryfirst`` (formulas given with the spectrum) and ``trylast`` (mass decomposition), the built-in model loader
is ``trylast``: a plain third-party provider (e.g. msbuddy) is asked after the user-supplied formulas and
before our own mass decomposition, a third-party loader before ours.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import threading

import pluggy

from . import hookspecs

logger = logging.getLogger("matchms.diffms")

PROJECT_NAME = "matchms_diffms"
ENTRY_POINT_GROUP = "matchms_diffms"
LOAD_PLUGINS_ENV = "MATCHMS_DIFFMS_LOAD_PLUGINS"
# Built-in modules that implement hooks (weights, extra commands); registered when importable.
OPTIONAL_BUILTIN_MODULES = (
    "matchms_diffms.weights",
    "matchms_diffms.commands.weights",
    "matchms_diffms.commands.report",
    "matchms_diffms.commands.evaluate",
    "matchms_diffms.train.cli",
)

_PM: pluggy.PluginManager | None = None
_LOCK = threading.RLock()

__all__ = [
    "PROJECT_NAME",
    "ENTRY_POINT_GROUP",
    "get_plugin_manager",
    "reset_plugin_manager",
    "formula_candidates",
    "output_writers",
    "weight_sources",
    "register_commands",
    "list_plugins",
    "plugin_versions",
]


# ---------------------------------------------------------------------------------------------- manager
def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, created (built-ins + entry points) on the first call.

    Returns
    -------
    pluggy.PluginManager
        Project name ``"matchms_diffms"``, hook specifications of :mod:`matchms_diffms.hookspecs`.
    """
    global _PM
    with _LOCK:
        if _PM is None:
            pm = pluggy.PluginManager(PROJECT_NAME)
            pm.add_hookspecs(hookspecs)
            _register_builtins(pm)
            _load_entry_points(pm)
            _PM = pm
        return _PM


def reset_plugin_manager() -> None:
    """Forget the plugin manager; the next :func:`get_plugin_manager` call builds a fresh one (for tests)."""
    global _PM
    with _LOCK:
        _PM = None


def _builtin_plugins() -> list[tuple[str, object]]:
    """(name, plugin) pairs of the built-in plugins, in registration order."""
    from . import formula_sources, writers

    plugins = list(formula_sources.BUILTIN_PROVIDERS)
    plugins.append(("matchms_diffms.writers", writers))
    for module_name in OPTIONAL_BUILTIN_MODULES:
        module = _import_optional(module_name)
        if module is not None:
            plugins.append((module_name, module))
    return plugins


def _import_optional(module_name: str):
    """Import an optional built-in plugin module.

    Returns ``None`` when the module does not exist, or (with a warning naming it) when importing it fails,
    e.g. because an optional dependency of the training code is missing: the rest of matchms-diffms keeps
    working.
    """
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name == module_name:
            return None
        logger.warning("built-in plugin %r is disabled: %s", module_name, err)
    except Exception as err:  # a broken optional module must not disable the whole package
        logger.warning("built-in plugin %r could not be imported and is disabled: %s: %s", module_name,
                       type(err).__name__, err)
    return None


def _register_builtins(pm: pluggy.PluginManager) -> None:
    for name, plugin in _builtin_plugins():
        if pm.get_plugin(name) is None and not pm.is_blocked(name):
            pm.register(plugin, name=name)


def _entry_point_names() -> list[str]:
    """Names of the entry points of our group, honouring ``MATCHMS_DIFFMS_LOAD_PLUGINS``."""
    names = [ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)]
    names = list(dict.fromkeys(names))
    wanted = os.environ.get(LOAD_PLUGINS_ENV)
    if wanted is not None:
        allowed = {w.strip() for w in wanted.split(",") if w.strip()}
        names = [n for n in names if n in allowed]
    return names


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    """Load third-party plugins one by one, so that one broken plugin cannot break the others."""
    for name in _entry_point_names():
        if pm.get_plugin(name) is not None or pm.is_blocked(name):
            continue
        try:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=name)
        except Exception as err:  # a third-party plugin may fail in any way while importing
            # pluggy registers the name before validating the hooks: undo a half-done registration
            if pm.get_plugin(name) is not None:
                pm.unregister(name=name)
            logger.warning("matchms-diffms plugin %r (entry point group %r) could not be loaded and is "
                           "ignored: %s: %s", name, ENTRY_POINT_GROUP, type(err).__name__, err)


# ---------------------------------------------------------------------------------------------- hooks
def formula_candidates(spectrum, context: dict | None = None) -> list:
    """Ask the formula providers in order and return the first non-empty answer.

    Parameters
    ----------
    spectrum
        A matchms ``Spectrum``.
    context
        Run-wide information for the providers, e.g. ``{"sirius_formulas": {...}, "max_formulas": 3}``.

    Returns
    -------
    list of matchms_diffms.formula_sources.FormulaCandidate
        Empty when no provider proposes a formula.

    Raises
    ------
    matchms_diffms.chem.FormulaError, matchms_diffms.chem.UnsupportedAdductError
        When the spectrum's own metadata holds a formula or adduct that cannot be used (the annotator turns
        these into the statuses ``invalid_formula`` / ``unsupported_adduct``); providers raise rather than
        silently falling back to a guessed formula. Any other exception of a provider propagates as well
        (the annotator records it as status ``error``).
    """
    context = {} if context is None else context
    answer = get_plugin_manager().hook.diffms_formula_candidates(spectrum=spectrum, context=context)
    return list(answer or [])


def _merged_dicts(results: list, what: str) -> dict:
    """Merge the dicts of a registry hook; the first answer (highest priority) wins a key conflict."""
    merged: dict = {}
    for result in results:
        if not result:
            continue
        if not isinstance(result, dict):
            raise TypeError(f"a {what} hook implementation returned {type(result).__name__}, expected dict")
        for key, value in result.items():
            if key in merged:
                logger.warning("%s %r is provided by more than one plugin; using the first one", what, key)
                continue
            merged[key] = value
    return merged


def output_writers() -> dict:
    """All output writers, ``{extension (lower case, with dot): writer(spectra, path)}``."""
    results = get_plugin_manager().hook.diffms_output_writers()
    results = [{str(ext).lower(): writer for ext, writer in result.items()} if isinstance(result, dict) else result
               for result in results]
    return _merged_dicts(results, "output writer")


def weight_sources() -> dict:
    """All named weights, ``{name: path}``."""
    return _merged_dicts(get_plugin_manager().hook.diffms_weight_sources(), "weights name")


def register_commands(cli) -> None:
    """Let every plugin add its commands to the click group ``cli``.

    A plugin whose ``diffms_register_commands`` fails is reported with a warning and skipped: the
    implementations are therefore called one by one (in pluggy's order) instead of through one hook call,
    which would stop at the first exception.
    """
    hook = get_plugin_manager().hook.diffms_register_commands
    for impl in reversed(hook.get_hookimpls()):
        try:
            impl.function(*[{"cli": cli}[arg] for arg in impl.argnames])
        except Exception as err:  # a plugin's command registration must not break the whole CLI
            logger.warning("plugin %r could not register its commands and is ignored: %s: %s",
                           impl.plugin_name, type(err).__name__, err)


# ---------------------------------------------------------------------------------------------- listing
def list_plugins() -> list[tuple[str, list[str]]]:
    """Registered plugins and the hooks each implements.

    Returns
    -------
    list of (str, list of str)
        ``[(plugin name, sorted hook names), ...]`` in registration order.
    """
    pm = get_plugin_manager()
    out = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:  # blocked
            continue
        callers = pm.get_hookcallers(plugin) or []
        out.append((name, sorted(caller.name for caller in callers)))
    return out


def plugin_versions() -> dict[str, str]:
    """``{plugin name: "distribution version"}`` for plugins loaded from entry points."""
    pm = get_plugin_manager()
    versions = {}
    for plugin, dist in pm.list_plugin_distinfo():
        name = pm.get_name(plugin)
        if name is not None:
            versions[name] = f"{dist.project_name} {dist.version}"
    return versions
