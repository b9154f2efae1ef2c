"""Formula-exact molecules from heavy atoms: random (the baseline) or guided by a sampled graph.

DiffMS fixes the heavy atoms but neither valences nor hydrogens: a sampled bond matrix is often not a
valid molecule, or is one with the wrong hydrogen count. ``complete_to_formula`` turns any sampled bond
matrix into a valid, single-fragment, neutral molecule with exactly the formula, keeping as much of the
sample as the valences allow:

1. valences: each heavy atom gets its lowest neutral valence (P, S raised to 5 / 4, 6 only when the
   hydrogens leave too few bonds to connect all atoms); the heavy-atom bond-order total is then fixed:
   ``(sum of valences - H) / 2``;
2. skeleton: the sample's bonds (strongest first) join components while both atoms have free valence;
   leftover components are joined at random under the valence caps;
3. bond orders: the sample's ring-closing bonds, then its double/triple/aromatic bonds are raised, then
   random ring bonds or upgrades, until the total is reached;
4. the molecule must sanitize in RDKit and have exactly the formula, else ``None``.

``random_formula_molecule`` is the same construction without a sample: the random-formula baseline.
No torch here.
"""
from __future__ import annotations

import random

import numpy as np
from rdkit import Chem, rdBase

from .formula import Formula

VALENCES = {"C": (4,), "N": (3,), "O": (2,), "S": (2, 4, 6), "P": (3, 5), "F": (1,), "Cl": (1,),
            "Br": (1,), "I": (1,), "B": (3,), "Si": (4,), "Se": (2, 4, 6), "As": (3, 5)}
_BOND_TYPES = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}


def element_valences(symbol: str) -> tuple[int, ...]:
    if symbol in VALENCES:
        return VALENCES[symbol]
    allowed = tuple(v for v in Chem.GetPeriodicTable().GetValenceList(symbol) if v > 0)
    if not allowed:
        raise ValueError(f"element {symbol} has no neutral valence usable for a molecule")
    return allowed


def choose_valences(atoms: list[str], n_h: int, rng: random.Random) -> list[int] | None:
    """Valence per heavy atom so that the heavy-atom bond-order sum ``(sum(v) - H) / 2`` is an integer
    that can connect all atoms (at least n - 1); ``None`` if no choice works."""
    options = [element_valences(a) for a in atoms]
    valences = [o[0] for o in options]
    need = sum(valences) - n_h
    if need % 2 or need < 0:          # every valence option differs by an even number: parity is fixed
        return None
    expandable = [i for i, o in enumerate(options) if len(o) > 1]
    while need // 2 < len(atoms) - 1:  # too many hydrogens for a connected graph: raise P/S valences
        rng.shuffle(expandable)
        for i in expandable:
            higher = [v for v in options[i] if v > valences[i]]
            if higher:
                need += higher[0] - valences[i]
                valences[i] = higher[0]
                break
        else:
            return None
    return valences


def _grow(valences: list[int], n_bonds: int, rng: random.Random, preferred: list[tuple[int, int, int]]):
    """Connected bond dict ``{(i, j): order}`` with ``sum(orders) == n_bonds`` under the valences.

    ``preferred`` = sampled bonds ``(i, j, class)`` (class 1..4, 4 aromatic), tried first in every phase.
    Returns ``None`` when this attempt got stuck.
    """
    n = len(valences)
    free = list(valences)
    bonds: dict[tuple[int, int], int] = {}
    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def add(i, j):
        pair = (min(i, j), max(i, j))
        bonds[pair] = bonds.get(pair, 0) + 1
        free[i] -= 1
        free[j] -= 1

    # skeleton from the sample: strongest bonds first (triple, double, aromatic, single), ties as sampled
    rank = {3: 0, 2: 1, 4: 2, 1: 3}
    for i, j, _ in sorted(preferred, key=lambda b: rank[b[2]]):
        if root(i) != root(j) and free[i] > 0 and free[j] > 0:
            add(i, j)
            parent[root(i)] = root(j)
    # join what is left, multivalent hosts first
    order = list(range(n))
    rng.shuffle(order)
    for atom in order:
        if root(atom) == root(order[0]):
            continue
        hosts = [p for p in range(n) if root(p) != root(atom) and free[p] > 0]
        own = [a for a in range(n) if root(a) == root(atom) and free[a] > 0]
        if not hosts or not own:
            return None
        a, h = rng.choice(own), rng.choice(hosts)
        add(a, h)
        parent[root(a)] = root(h)
    if len({root(i) for i in range(n)}) != 1:
        return None
    extra = n_bonds - sum(bonds.values())
    if extra < 0:
        return None
    # the sample's ring closures and multiple bonds
    for i, j, cls in preferred:
        want = {1: 1, 2: 2, 3: 3, 4: 2}[cls]
        pair = (min(i, j), max(i, j))
        while extra > 0 and bonds.get(pair, 0) < want and free[i] > 0 and free[j] > 0:
            add(i, j)
            extra -= 1
    tries = 0
    while extra > 0:                  # random ring bonds or bond-order upgrades, one order at a time
        tries += 1
        if tries > 50 * (extra + n):
            return None
        open_atoms = [i for i in range(n) if free[i] > 0]
        if len(open_atoms) < 2:
            return None
        upgradable = [b for b, o in bonds.items() if o < 3 and free[b[0]] > 0 and free[b[1]] > 0]
        if upgradable and rng.random() < 0.5:
            i, j = rng.choice(upgradable)
        else:
            i, j = rng.sample(open_atoms, 2)
            if bonds.get((min(i, j), max(i, j)), 0) >= 3:
                continue
        add(i, j)
        extra -= 1
    return bonds


def build_mol(atoms: list[str], valences: list[int], bonds: dict) -> Chem.Mol | None:
    """Sanitized molecule with each atom's leftover valence as hydrogens; ``None`` if RDKit refuses it."""
    mol = Chem.RWMol()
    used = [0] * len(atoms)
    for (i, j), o in bonds.items():
        used[i] += o
        used[j] += o
    for symbol, v, u in zip(atoms, valences, used):
        atom = Chem.Atom(symbol)
        atom.SetNoImplicit(True)
        atom.SetNumExplicitHs(v - u)
        mol.AddAtom(atom)
    for (i, j), o in bonds.items():
        mol.AddBond(i, j, _BOND_TYPES[o])
    blocker = rdBase.BlockLogs()  # noqa: F841
    try:
        Chem.SanitizeMol(mol)
    except (Chem.rdchem.MolSanitizeException, ValueError, RuntimeError):
        return None
    return mol.GetMol()


def _finish(atoms, valences, bonds, formula: Formula) -> Chem.Mol | None:
    mol = build_mol(atoms, valences, bonds)
    if mol is None:
        return None
    blocker = rdBase.BlockLogs()  # noqa: F841
    try:                                                      # plain implicit-H molecule, as RDKit reads it
        mol = Chem.MolFromSmiles(Chem.MolToSmiles(mol))
    except (Chem.rdchem.MolSanitizeException, ValueError, RuntimeError):
        return None
    if mol is None or len(Chem.GetMolFrags(mol)) != 1:
        return None
    from .molecules import matches_formula

    return mol if matches_formula(mol, formula) else None


def complete_to_formula(atoms: list[str], adj: np.ndarray, formula: Formula, seed: int = 0,
                        attempts: int = 5) -> Chem.Mol | None:
    """A valid single-fragment molecule with exactly ``formula``, built around the sampled bonds ``adj``.

    Parameters
    ----------
    atoms
        Element symbol of every node (the formula's heavy atoms).
    adj
        (n, n) bond classes of a sample (0 none, 1 single, 2 double, 3 triple, 4 aromatic); upper triangle read.
    formula
        The neutral formula (hydrogens included) the molecule must have.
    seed
        Seed of the random choices (joining leftover fragments, extra bond orders).
    attempts
        Constructions tried before giving up.
    """
    n_h = formula.counts.get("H", 0)
    rng = random.Random(seed)
    n = len(atoms)
    iu, ju = np.triu_indices(n, 1)
    cls = np.asarray(adj)[iu, ju]
    preferred = [(int(i), int(j), int(c)) for i, j, c in zip(iu, ju, cls) if 1 <= c <= 4]
    for _ in range(attempts):
        valences = choose_valences(atoms, n_h, rng)
        if valences is None:
            return None
        n_bonds = (sum(valences) - n_h) // 2
        bonds = {} if n == 1 else _grow(valences, n_bonds, rng, preferred)
        if bonds is None or (n == 1 and n_bonds):
            continue
        mol = _finish(atoms, valences, bonds, formula)
        if mol is not None:
            return mol
    return None


def random_formula_molecule(formula: Formula, rng: random.Random) -> Chem.Mol | None:
    """One random valid single-fragment molecule with exactly ``formula`` (one attempt; may be ``None``)."""
    atoms = formula.heavy_atoms()
    n_h = formula.counts.get("H", 0)
    if not atoms:
        return None
    valences = choose_valences(atoms, n_h, rng)
    if valences is None:
        return None
    n_bonds = (sum(valences) - n_h) // 2
    if len(atoms) == 1:
        return _finish(atoms, valences, {}, formula) if n_bonds == 0 else None
    bonds = _grow(valences, n_bonds, rng, [])
    return None if bonds is None else _finish(atoms, valences, bonds, formula)
