"""Adapters of matchms-diffms to other tools: MZmine (``.mzmine``), SIRIUS (``.sirius``) and MassSpecGym
(``.massspecgym``). Each has a pluggy plugin module ``plugin.py`` registered through the ``matchms_diffms``
entry-point group.

The repository's ``adapters/`` folder installs as the package ``matchms_diffms_adapters`` (see ``setup.py``);
modules inside it import each other relatively, so they work under either name.
"""
