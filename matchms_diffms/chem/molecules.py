"""Molecules <-> dense graphs, validity, identifiers, formula checks and Morgan fingerprints (RDKit).

Graph conventions (those of the official DiffMS decoder and its released checkpoints):

* nodes are heavy atoms given as symbols or as indices into an atom vocabulary (official decoder order
  ``C, O, P, N, S, Cl, F, H``); a negative index (or ``None``) marks a padded node, which is skipped;
* the adjacency matrix holds bond classes 0 none, 1 single, 2 double, 3 triple, 4 aromatic; only the upper
  triangle (j > i) is read, classes other than 1..4 (0, -1 padding) add no bond;
* molecules are built from plain neutral atoms, with no explicit hydrogens, charges or valence repair;
* a molecule is *valid* when RDKit sanitization succeeds and it has at most one fragment.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import rdFingerprintGenerator

from .tables import ATOM_DECODER
from .formula import Formula, FormulaError, is_element

__all__ = [
    "ATOM_DECODER",
    "BOND_CLASSES",
    "MoleculeError",
    "MolCheck",
    "graph_to_mol",
    "check_molecule",
    "sanitize_and_check",
    "mol_to_inchi",
    "inchikey",
    "inchikey14",
    "mol_formula",
    "formula_of_smiles",
    "matches_formula",
    "mol_to_graph",
    "morgan_fingerprint",
]

logger = logging.getLogger("matchms.diffms")

# Edge class -> RDKit bond type (class 0 = no bond).
BOND_CLASSES = {
    1: Chem.BondType.SINGLE,
    2: Chem.BondType.DOUBLE,
    3: Chem.BondType.TRIPLE,
    4: Chem.BondType.AROMATIC,
}
_BOND_TO_CLASS = {bt: c for c, bt in BOND_CLASSES.items()}


class MoleculeError(ValueError):
    """A SMILES string or molecule that cannot be converted (invalid, unsupported element, charged atom)."""


# ---------------------------------------------------------------------------------------------- graph -> mol
def _node_symbols(nodes, atom_decoder: Sequence[str]) -> list[str | None]:
    """Symbols per node; None for padded nodes."""
    out: list[str | None] = []
    nodes = nodes.tolist() if hasattr(nodes, "tolist") else list(nodes)   # numpy arrays, tensors
    for k, node in enumerate(nodes):
        if node is None:
            out.append(None)
        elif isinstance(node, str):
            if not is_element(node):
                raise ValueError(f"node {k}: unknown element symbol {node!r}")
            out.append(node)
        elif isinstance(node, (int, np.integer)) and not isinstance(node, (bool, np.bool_)):
            idx = int(node)
            if idx < 0:
                out.append(None)
            elif idx >= len(atom_decoder):
                raise ValueError(f"node {k}: atom class {idx} outside the vocabulary {list(atom_decoder)}")
            else:
                out.append(atom_decoder[idx])
        else:
            raise ValueError(f"node {k}: expected an element symbol or an atom-class index, got {node!r}")
    return out


def graph_to_mol(nodes, adj, atom_decoder: Sequence[str] = ATOM_DECODER) -> "Chem.Mol | None":
    """Build an RDKit molecule from a dense graph, exactly as DiffMS converts sampled graphs.

    Parameters
    ----------
    nodes
        Length-n sequence of element symbols or atom-class indices into ``atom_decoder``;
        ``-1`` (any negative index) or ``None`` = padded node.
    adj
        (n, n) bond classes 0..4 (-1 allowed for padding). Only the upper triangle is read; the diagonal and
        the lower triangle are ignored.
    atom_decoder
        Vocabulary for index nodes.

    Returns
    -------
    rdkit.Chem.Mol or None
        Unsanitized molecule with one plain neutral atom per real node (node order kept). ``None`` only if
        RDKit refuses to finalize the molecule (logged as a warning).

    Raises
    ------
    ValueError
        Bad shapes, unknown atom classes, bond classes outside -1..4, or a bond touching a padded node.
    """
    symbols = _node_symbols(nodes, atom_decoder)
    adj = np.asarray(adj)
    n = len(symbols)
    if adj.shape != (n, n):
        raise ValueError(f"adjacency must have shape ({n}, {n}) for {n} nodes, got {adj.shape}")
    if adj.size and (not np.issubdtype(adj.dtype, np.integer)):
        if not np.all(adj == np.round(adj)):
            raise ValueError("adjacency entries must be integer bond classes")
        adj = adj.astype(np.int64)
    if adj.size and (adj.min() < -1 or adj.max() > 4):
        raise ValueError(f"bond classes must lie in -1..4, found {adj.min()}..{adj.max()}")

    mol = Chem.RWMol()
    atom_index: dict[int, int] = {}
    for i, sym in enumerate(symbols):
        if sym is not None:
            atom_index[i] = mol.AddAtom(Chem.Atom(sym))
    rows, cols = np.nonzero(np.triu(adj, k=1) > 0)
    for i, j in zip(rows.tolist(), cols.tolist()):
        if i not in atom_index or j not in atom_index:
            raise ValueError(f"bond class {adj[i, j]} between nodes {i} and {j} touches a padded node")
        mol.AddBond(atom_index[i], atom_index[j], BOND_CLASSES[int(adj[i, j])])
    try:
        return mol.GetMol()
    except Chem.KekulizeException as exc:   # the reference maps this to None as well
        logger.warning("could not finalize molecule from graph: %s", exc)
        return None


# ---------------------------------------------------------------------------------------------- validity
@dataclass
class MolCheck:
    """Outcome of sanitizing one molecule.

    Attributes
    ----------
    mol
        The sanitized molecule (a copy of the input), or None if sanitization failed.
    smiles
        Canonical SMILES after sanitization, None if it failed.
    is_valid
        Sanitization succeeded and the molecule has at most one fragment.
    error
        RDKit exception class name of a failed sanitization (e.g. ``"AtomValenceException"``).
    num_fragments
        Number of fragments after sanitization (None if it failed).
    """

    mol: "Chem.Mol | None"
    smiles: str | None
    is_valid: bool
    error: str | None
    num_fragments: int | None

    @property
    def inchi(self) -> str | None:
        """Standard InChI of a valid molecule (the string DiffMS ranks by), else None."""
        return mol_to_inchi(self.mol) if self.is_valid else None


def check_molecule(mol: "Chem.Mol | None") -> MolCheck:
    """Sanitize a copy of ``mol`` and report SMILES, validity, error class and fragment count.

    ``None`` (a graph RDKit could not finalize) is reported as invalid with error ``"NoMolecule"``.
    """
    if mol is None:
        return MolCheck(None, None, False, "NoMolecule", None)
    work = Chem.Mol(mol)
    try:
        with rdBase.BlockLogs():              # failures are reported through ``error``, not RDKit's log
            Chem.SanitizeMol(work)
    except Chem.MolSanitizeException as exc:   # the exception class name is part of the result
        return MolCheck(None, None, False, type(exc).__name__, None)
    try:
        with rdBase.BlockLogs():
            frags = Chem.GetMolFrags(work, asMols=True, sanitizeFrags=True)
    except Chem.MolSanitizeException as exc:   # a fragment that does not sanitize on its own: invalid
        return MolCheck(work, Chem.MolToSmiles(work), False, type(exc).__name__, len(Chem.GetMolFrags(work)))
    return MolCheck(work, Chem.MolToSmiles(work), len(frags) <= 1, None, len(frags))


def sanitize_and_check(mol: "Chem.Mol | None") -> tuple[str | None, bool, str | None]:
    """``(smiles or None, is_valid, error class or None)`` for a generated molecule (see :func:`check_molecule`)."""
    res = check_molecule(mol)
    return res.smiles, res.is_valid, res.error


# ---------------------------------------------------------------------------------------------- identifiers
def _as_mol(mol_or_smiles) -> "Chem.Mol":
    if isinstance(mol_or_smiles, str):
        mol = Chem.MolFromSmiles(mol_or_smiles)
        if mol is None:
            raise MoleculeError(f"invalid SMILES {mol_or_smiles!r}")
        return mol
    if mol_or_smiles is None:
        raise MoleculeError("no molecule (None)")
    return mol_or_smiles


def mol_to_inchi(mol) -> str:
    """Standard InChI of a (sanitized) molecule or SMILES; '' for the empty molecule."""
    mol = _as_mol(mol)
    if mol.GetNumAtoms() == 0:
        return ""                          # what RDKit returns too, without its "Empty structure" error log
    inchi = Chem.MolToInchi(mol)
    if inchi is None:
        raise MoleculeError("RDKit could not compute an InChI")
    return inchi


def inchikey(mol) -> str:
    """Standard InChIKey of a molecule or SMILES; '' for the empty molecule."""
    return Chem.MolToInchiKey(_as_mol(mol))


def inchikey14(mol) -> str:
    """First block (14 characters, the 2D skeleton) of the InChIKey."""
    return inchikey(mol)[:14]


# ---------------------------------------------------------------------------------------------- formulas
def mol_formula(mol) -> Formula:
    """Formula of a molecule or SMILES including implicit and explicit hydrogens (charges ignored)."""
    mol = Chem.Mol(_as_mol(mol))
    mol.UpdatePropertyCache(strict=False)
    counts: dict[str, int] = {}
    for atom in mol.GetAtoms():
        sym = atom.GetSymbol()
        counts[sym] = counts.get(sym, 0) + 1
        h = atom.GetTotalNumHs()
        if h:
            counts["H"] = counts.get("H", 0) + h
    try:
        return Formula(counts)
    except FormulaError as exc:
        raise MoleculeError(f"molecule has no chemical formula: {exc}") from None


def formula_of_smiles(smiles: str) -> Formula:
    """Formula of a SMILES string (implicit hydrogens included)."""
    return mol_formula(_as_mol(smiles))


def matches_formula(mol, formula: "str | Formula") -> bool:
    """True if the molecule's full formula (hydrogens included) equals ``formula``."""
    return mol_formula(mol) == Formula.parse(formula)


# ---------------------------------------------------------------------------------------------- mol -> graph
def mol_to_graph(smiles: str, atom_types: Sequence[str] = ATOM_DECODER) -> tuple[np.ndarray, np.ndarray]:
    """Dense graph of a SMILES, in the training-graph convention.

    The SMILES is parsed, written back without stereochemistry (``isomericSmiles=False``) and parsed again;
    node order = RDKit atom order of that non-isomeric SMILES. Aromatic bonds stay aromatic (class 4).

    Parameters
    ----------
    smiles
        Input SMILES.
    atom_types
        Atom vocabulary (node class = index in it).

    Returns
    -------
    nodes : np.ndarray
        (n,) int64 atom-class indices.
    adj : np.ndarray
        (n, n) int64 symmetric bond classes, zero diagonal.

    Raises
    ------
    MoleculeError
        Invalid SMILES, an element outside ``atom_types``, a charged atom, or an unsupported bond type.
    """
    mol = _as_mol(smiles)
    mol = Chem.MolFromSmiles(Chem.MolToSmiles(mol, isomericSmiles=False))
    if mol is None:
        raise MoleculeError(f"SMILES {smiles!r} does not survive the non-isomeric round trip")
    index = {sym: i for i, sym in enumerate(atom_types)}
    n = mol.GetNumAtoms()
    nodes = np.zeros(n, dtype=np.int64)
    for atom in mol.GetAtoms():
        sym = atom.GetSymbol()
        if sym not in index:
            raise MoleculeError(f"SMILES {smiles!r}: element {sym} is not in the atom vocabulary {list(atom_types)}")
        if atom.GetFormalCharge() != 0:
            raise MoleculeError(f"SMILES {smiles!r}: charged atom {sym}{atom.GetFormalCharge():+d} cannot be "
                                "represented (graphs carry no charges)")
        nodes[atom.GetIdx()] = index[sym]
    adj = np.zeros((n, n), dtype=np.int64)
    for bond in mol.GetBonds():
        cls = _BOND_TO_CLASS.get(bond.GetBondType())
        if cls is None:
            raise MoleculeError(f"SMILES {smiles!r}: bond type {bond.GetBondType()} cannot be represented")
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        adj[i, j] = adj[j, i] = cls
    return nodes, adj


# ---------------------------------------------------------------------------------------------- fingerprints
def morgan_fingerprint(mol, n_bits: int = 4096, radius: int = 2) -> np.ndarray:
    """Morgan bit fingerprint (same bits as RDKit's ``GetMorganFingerprintAsBitVect(mol, radius, n_bits)``).

    Parameters
    ----------
    mol
        RDKit molecule or SMILES.
    n_bits, radius
        Fingerprint length and radius (4096 and 2 for the DiffMS targets).

    Returns
    -------
    np.ndarray
        (n_bits,) uint8 of 0/1.
    """
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    return gen.GetFingerprintAsNumPy(_as_mol(mol)).astype(np.uint8)
