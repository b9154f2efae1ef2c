"""Adapters of matchms-diffms to other tools: MZmine (``adapters.mzmine``), SIRIUS (``adapters.sirius``) and
MassSpecGym (``adapters.massspecgym``). Each has a pluggy plugin module ``plugin.py`` registered through the
``matchms_diffms`` entry-point group."""
