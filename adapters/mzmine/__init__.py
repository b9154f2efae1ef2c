"""MZmine adapters of matchms-diffms.

* :mod:`.runner`: drop-in backend for MZmine's DiffMS module (console script
  ``matchms-diffms-mzmine``), speaking MZmine's line protocol;
* :mod:`.fbmn`: the route for released MZmine versions: read the GNPS-FBMN / SIRIUS MGF
  exports, write results back as a "Local compound database" CSV or a GNPS-style graphml;
* :mod:`.plugin`: the ``matchms-diffms mzmine-prepare`` and ``mzmine-export`` commands and the
  ``.graphml`` output writer (pluggy hooks).

See ``adapters/mzmine/README.md`` for a step-by-step guide.
"""
