"""Morgan environment bits of every atom of a (possibly invalid) graph.

The decoder of our own models sees, at every diffusion step, which atoms of the current noisy graph have
local environments that the conditioning fingerprint contains. This module computes, for a dense graph
(node classes + bond classes), the Morgan bit of each atom's environment at radius 0, 1, ..., R -- the same
hashing as the conditioning fingerprint (``molecules.morgan_fingerprint``) -- without sanitizing, so noisy
graphs with wrong valences are fine: implicit hydrogens are filled up to the element's default valence
(none where an atom is over-full), rings are perceived on the graph as it is.

An atom whose environment at radius r adds nothing new (RDKit drops redundant environments) gets the bit
of its radius r - 1 environment. On a clean graph the bits are those of the molecule's fingerprint, except
around atoms that carry a hydrogen the graph cannot show (e.g. pyrrole-type aromatic nitrogen).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import rdFingerprintGenerator

from .molecules import BOND_CLASSES

__all__ = ["environment_bits"]

_GENERATORS: dict[tuple[int, int], object] = {}


def _generator(radius: int, n_bits: int):
    key = (radius, n_bits)
    if key not in _GENERATORS:
        _GENERATORS[key] = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    return _GENERATORS[key]


def environment_bits(nodes: np.ndarray, adj: np.ndarray, atom_types: Sequence[str], radius: int = 2,
                     n_bits: int = 2048) -> np.ndarray:
    """Morgan bit of every atom's environment at radius 0..``radius``.

    Parameters
    ----------
    nodes
        (n,) atom class indices into ``atom_types``; negative = padded node (row of -1 in the result).
    adj
        (n, n) bond classes 0..4 (other values: no bond); only the upper triangle is read.
    atom_types
        Element symbol of every atom class.
    radius, n_bits
        Fingerprint radius and length of the conditioning fingerprint.

    Returns
    -------
    np.ndarray
        (n, radius + 1) int64 bit indices; -1 for padded nodes.
    """
    nodes = np.asarray(nodes)
    n = len(nodes)
    out = np.full((n, radius + 1), -1, dtype=np.int64)
    real = np.flatnonzero(nodes >= 0)
    if len(real) == 0:
        return out
    index = {int(i): k for k, i in enumerate(real)}
    mol = Chem.RWMol()
    for i in real:
        mol.AddAtom(Chem.Atom(atom_types[int(nodes[i])]))
    up = np.triu(np.asarray(adj), k=1)
    for i, j in zip(*np.nonzero((up >= 1) & (up <= 4))):
        if int(i) in index and int(j) in index:
            mol.AddBond(index[int(i)], index[int(j)], BOND_CLASSES[int(up[i, j])])
    with rdBase.BlockLogs():
        mol.UpdatePropertyCache(strict=False)
        Chem.FastFindRings(mol)
        ao = rdFingerprintGenerator.AdditionalOutput()
        ao.AllocateBitInfoMap()
        _generator(radius, n_bits).GetFingerprintAsNumPy(mol, additionalOutput=ao)
    found = np.full((len(real), radius + 1), -1, dtype=np.int64)
    for bit, envs in ao.GetBitInfoMap().items():
        for atom, r in envs:
            found[atom, r] = bit
    for r in range(1, radius + 1):            # redundant environment: keep the smaller one's bit
        missing = found[:, r] < 0
        found[missing, r] = found[missing, r - 1]
    out[real] = found
    return out
