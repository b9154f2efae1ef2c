"""Click commands of the built-in modules, registered through the ``diffms_register_commands`` hook
(:data:`matchms_diffms.plugins.OPTIONAL_BUILTIN_MODULES`). The library modules they call hold no click; the
options and exit codes they share are in :mod:`matchms_diffms.cli_options`."""
