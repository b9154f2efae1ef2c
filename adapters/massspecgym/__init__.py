"""MassSpecGym adapter: read its TSV, write de novo predictions, evaluate them (see README.md)."""
