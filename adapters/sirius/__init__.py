"""SIRIUS 6 adapter: formula identifications in, a de novo structure summary table out (see README.md)."""
