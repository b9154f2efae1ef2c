"""Plain tables of the official DiffMS models: node classes and adducts (no RDKit, so that the model
configuration and decoder training import without it)."""
from __future__ import annotations

__all__ = ["ATOM_DECODER", "OFFICIAL_ADDUCTS"]

# Node classes of the official decoder, in one-hot order.
ATOM_DECODER = ["C", "O", "P", "N", "S", "Cl", "F", "H"]
# Encoder one-hot order of the official models (index = slot); the 8th slot is never used.
OFFICIAL_ADDUCTS = ["[M+H]+", "[M+Na]+", "[M+K]+", "[M-H2O+H]+", "[M+H3N+H]+", "[M]+", "[M-H4O2+H]+"]
