"""Public names of a package loaded from their home module on first use (PEP 562 module ``__getattr__``)."""
from __future__ import annotations

import importlib


def lazy_names(package: str, homes: dict[str, str], namespace: dict):
    """A module ``__getattr__`` for ``package`` that imports each name of ``homes`` on first use.

    Parameters
    ----------
    package
        The package's ``__name__``.
    homes
        Public name -> module of the package (relative, without the dot) that holds it.
    namespace
        The package's ``globals()``: a loaded name is stored there, so later look-ups are plain.
    """
    def __getattr__(name):
        module = homes.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        namespace[name] = value
        return value

    return __getattr__
