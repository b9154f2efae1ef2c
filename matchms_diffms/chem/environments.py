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

Two implementations give the same bits: RDKit's Morgan generator on the graph (used where RDKit is
installed), and a plain-Python replica of its hashing (``plain_environment_bits``: RDKit's connectivity
invariants, its 32-bit boost ``hash_combine`` and its removal of redundant environments), used where RDKit is
missing, e.g. decoder training on a GPU machine; tests check that both agree on clean, noisy and random graphs.
"""
from __future__ import annotations

import multiprocessing
from collections.abc import Sequence

import numpy as np

__all__ = ["batch_environment_bits", "environment_bits", "plain_environment_bits", "rdkit_environment_bits",
           "set_workers"]

_GENERATORS: dict[tuple[int, int], object] = {}
_POOL: dict = {"workers": 1, "pool": None}
_MASK = 0xFFFFFFFF
# Atomic number and RDKit's valence list (its periodic table, lowest = default valence) of every element a
# decoder vocabulary may hold.
RDKIT_ELEMENTS = {"H": (1, (1,)), "B": (5, (3,)), "C": (6, (4,)), "N": (7, (3,)), "O": (8, (2,)), "F": (9, (1,)),
                  "Si": (14, (4,)), "P": (15, (3, 5)), "S": (16, (2, 4, 6)), "Cl": (17, (1,)), "As": (33, (3, 5)),
                  "Se": (34, (2, 4, 6)), "Br": (35, (1,)), "I": (53, (1, 3, 5))}
# Bond class -> RDKit's bond invariant (its BondType value) and valence contribution.
_BOND_INVARIANT = {1: 1, 2: 2, 3: 3, 4: 12}
_BOND_VALENCE = {1: 1.0, 2: 2.0, 3: 3.0, 4: 1.5}


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
        (n, radius + 1) int64 bit indices; -1 for padded nodes. With RDKit where it is installed (faster),
        else with ``plain_environment_bits`` (the same bits).
    """
    try:
        import rdkit.Chem  # noqa: F401
    except ImportError:
        return plain_environment_bits(nodes, adj, atom_types, radius, n_bits)
    return rdkit_environment_bits(nodes, adj, atom_types, radius, n_bits)


def set_workers(workers: int) -> None:
    """Compute ``batch_environment_bits`` in ``workers`` processes (1: in this one), e.g. to keep a GPU busy
    while the CPU hashes; the processes start on first use."""
    workers = max(1, int(workers))
    if workers != _POOL["workers"] and _POOL["pool"] is not None:
        _POOL["pool"].terminate()
        _POOL["pool"] = None
    _POOL["workers"] = workers


def batch_environment_bits(nodes: np.ndarray, adj: np.ndarray, atom_types: Sequence[str], radius: int = 2,
                           n_bits: int = 2048) -> np.ndarray:
    """``environment_bits`` of a batch: (B, n) nodes and (B, n, n) bonds -> (B, n, radius + 1), in the
    processes of ``set_workers`` (the same bits in any number of them)."""
    jobs = [(nodes[b], adj[b], list(atom_types), radius, n_bits) for b in range(len(nodes))]
    workers = _POOL["workers"]
    if workers > 1 and len(jobs) > 1:
        if _POOL["pool"] is None:
            _POOL["pool"] = multiprocessing.get_context("spawn").Pool(workers)   # no fork of a CUDA process
        rows = _POOL["pool"].starmap(environment_bits, jobs, chunksize=max(1, len(jobs) // (4 * workers)))
    else:
        rows = [environment_bits(*job) for job in jobs]
    return np.stack(rows)


def _graph(nodes, adj) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Indices of the real nodes and the bonds (i, j, class) between them, i < j, in row-major order,
    numbered over the real nodes."""
    nodes = np.asarray(nodes)
    real = np.flatnonzero(nodes >= 0)
    index = {int(i): k for k, i in enumerate(real)}
    up = np.triu(np.asarray(adj), k=1)
    bonds = [(index[int(i)], index[int(j)], int(up[i, j])) for i, j in zip(*np.nonzero((up >= 1) & (up <= 4)))
             if int(i) in index and int(j) in index]
    return real, bonds


def _fill_redundant(found: np.ndarray) -> np.ndarray:
    """An environment RDKit dropped as redundant takes the bit of the same atom's next smaller one."""
    for r in range(1, found.shape[1]):
        missing = found[:, r] < 0
        found[missing, r] = found[missing, r - 1]
    return found


# ------------------------------------------------------------------------------------------ with RDKit
def _generator(radius: int, n_bits: int):
    from rdkit.Chem import rdFingerprintGenerator

    key = (radius, n_bits)
    if key not in _GENERATORS:
        _GENERATORS[key] = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    return _GENERATORS[key]


def rdkit_environment_bits(nodes, adj, atom_types: Sequence[str], radius: int = 2,
                           n_bits: int = 2048) -> np.ndarray:
    """``environment_bits`` with RDKit's Morgan generator (unsanitized molecule, rings found on the graph)."""
    from rdkit import Chem, rdBase
    from rdkit.Chem import rdFingerprintGenerator

    from .molecules import BOND_CLASSES

    out = np.full((len(nodes), radius + 1), -1, dtype=np.int64)
    real, bonds = _graph(nodes, adj)
    if len(real) == 0:
        return out
    mol = Chem.RWMol()
    for i in real:
        mol.AddAtom(Chem.Atom(atom_types[int(nodes[i])]))
    for i, j, c in bonds:
        mol.AddBond(i, j, BOND_CLASSES[c])
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
    out[real] = _fill_redundant(found)
    return out


# ------------------------------------------------------------------------------------------ without RDKit
def _combine(seed: int, value: int) -> int:
    """RDKit's ``gboost::hash_combine`` on 32-bit unsigned integers."""
    return seed ^ ((value + 0x9E3779B9 + (seed << 6) + (seed >> 2)) & _MASK)


def _hash_sequence(values) -> int:
    """RDKit's hash of a ``std::vector<uint32_t>`` (``hash_range`` from seed 0)."""
    seed = 0
    for value in values:
        seed = _combine(seed, value & _MASK)
    return seed


def _implicit_hs(symbol: str, explicit: int, aromatic: bool) -> int:
    """Implicit hydrogens as RDKit's ``UpdatePropertyCache(strict=False)`` counts them on a neutral atom that
    is not flagged aromatic: up to the smallest allowed valence that holds the explicit valence, none when
    none does, and none when an atom with an aromatic bond exceeds its default valence."""
    if symbol not in RDKIT_ELEMENTS:
        raise ValueError(f"environment features without RDKit know no element {symbol!r}")
    valences = RDKIT_ELEMENTS[symbol][1]
    if aromatic and explicit > valences[0]:
        return 0
    return next((v - explicit for v in valences if v >= explicit), 0)


def _ring_atoms(n: int, bonds: list[tuple[int, int, int]]) -> list[bool]:
    """Atoms on a cycle (what RDKit's ring perception marks): ends of a bond that is no bridge, found in one
    depth-first search (a tree bond u-v is a bridge when nothing below v reaches above it)."""
    nbrs: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for k, (i, j, _) in enumerate(bonds):
        nbrs[i].append((j, k))
        nbrs[j].append((i, k))
    order, low, in_ring = [-1] * n, [0] * n, [False] * n
    count = 0
    for root in range(n):
        if order[root] >= 0:
            continue
        order[root] = low[root] = count
        count += 1
        stack = [(root, -1, iter(nbrs[root]))]
        while stack:
            v, via, todo = stack[-1]
            for w, k in todo:
                if k == via:
                    continue
                if order[w] < 0:
                    order[w] = low[w] = count
                    count += 1
                    stack.append((w, k, iter(nbrs[w])))
                    break
                low[v] = min(low[v], order[w])
            else:
                stack.pop()
                if stack:
                    u = stack[-1][0]
                    low[u] = min(low[u], low[v])
                    if low[v] <= order[u]:
                        in_ring[u] = in_ring[v] = True
    return in_ring


def _atom_invariants(symbols: list[str], bonds: list[tuple[int, int, int]]) -> list[int]:
    """RDKit's Morgan connectivity invariants: hash of (atomic number, total degree, hydrogens counting
    hydrogen neighbours, charge 0, mass offset 0[, 1 when in a ring])."""
    n = len(symbols)
    valence, degree, aromatic, h_nbrs = [0.0] * n, [0] * n, [False] * n, [0] * n
    for i, j, c in bonds:
        for a, b in ((i, j), (j, i)):
            valence[a] += _BOND_VALENCE[c]
            degree[a] += 1
            aromatic[a] |= c == 4
            h_nbrs[a] += symbols[b] == "H"
    in_ring = _ring_atoms(n, bonds)
    out = []
    for a, symbol in enumerate(symbols):
        hs = _implicit_hs(symbol, int(round(valence[a] + 0.1)), aromatic[a])
        components = [RDKIT_ELEMENTS[symbol][0], degree[a] + hs, hs + h_nbrs[a], 0, 0] + [1] * in_ring[a]
        out.append(_hash_sequence(components))
    return out


def plain_environment_bits(nodes, adj, atom_types: Sequence[str], radius: int = 2,
                           n_bits: int = 2048) -> np.ndarray:
    """``environment_bits`` without RDKit: its Morgan environment generator replayed in Python.

    Each round, an atom's new invariant hashes the round number, its invariant and its sorted (bond
    invariant, neighbour invariant) pairs; an environment whose set of bonds was seen before (or in this
    round, from an atom with a smaller (invariant, index)) is redundant, and its atom takes no further part.
    """
    out = np.full((len(nodes), radius + 1), -1, dtype=np.int64)
    real, bonds = _graph(nodes, adj)
    if len(real) == 0:
        return out
    n = len(real)
    nbrs: list[list[tuple[int, int, int]]] = [[] for _ in range(n)]
    for k, (i, j, c) in enumerate(bonds):
        nbrs[i].append((k, j, _BOND_INVARIANT[c]))
        nbrs[j].append((k, i, _BOND_INVARIANT[c]))
    current = _atom_invariants([atom_types[int(nodes[i])] for i in real], bonds)
    found = np.full((n, radius + 1), -1, dtype=np.int64)
    found[:, 0] = np.array(current, dtype=np.int64) % n_bits
    hood, dead, seen = [0] * n, [not nbrs[a] for a in range(n)], set()
    for layer in range(radius):
        following, this_round, grown = [0] * n, [], list(hood)
        for a in range(n):
            if dead[a]:
                continue
            for k, b, _ in nbrs[a]:
                grown[a] |= (1 << k) | hood[b]
            invariant = _combine(layer, current[a])
            for bond, other in sorted((bt, current[b]) for _, b, bt in nbrs[a]):
                invariant = _combine(invariant, _combine(_combine(0, bond), other))
            following[a] = invariant
            this_round.append((grown[a], invariant, a))
        for bonds_seen, invariant, a in sorted(this_round):
            if bonds_seen in seen:
                dead[a] = True
            else:
                seen.add(bonds_seen)
                found[a, layer + 1] = invariant % n_bits
        current, hood = following, grown
    out[real] = _fill_redundant(found)
    return out
