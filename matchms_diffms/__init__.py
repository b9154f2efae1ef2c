"""matchms-diffms: de novo structure annotation of MS/MS spectra with DiffMS.

Public face: :class:`DiffMSAnnotator` and the matchms filter :func:`annotate_de_novo`. Both are imported
lazily so that ``matchms_diffms.chem`` stays usable without loading torch.
"""
__version__ = "0.1.0"
__all__ = ["DiffMSAnnotator", "annotate_de_novo", "__version__"]


def __getattr__(name):
    if name == "DiffMSAnnotator":
        from .annotator import DiffMSAnnotator

        return DiffMSAnnotator
    if name == "annotate_de_novo":
        from .filters import annotate_de_novo

        return annotate_de_novo
    raise AttributeError(f"module 'matchms_diffms' has no attribute {name!r}")
