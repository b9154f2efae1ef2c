"""matchms-diffms: de novo structure annotation of MS/MS spectra with DiffMS."""
__version__ = "0.1.0"
