"""Molecular graphs with fingerprints in flat arrays: featurisation, batching, plain ``.npz`` storage.

The training data of the decoder (and the graphs paired with spectra for fine-tuning): each molecule is a
graph of heavy atoms (atom classes) and bonds (classes 1 single .. 4 aromatic) with its binary Morgan
fingerprint, kept in a few flat numpy arrays (``GraphSet``) that batch into the dense padded tensors the
network takes and are stored without pickle.

A featurised decoder set is stored compactly (``save_graphs``, format ``GRAPHS_FORMAT``): per-graph atom and
bond counts instead of offsets, the smallest unsigned integer types that hold the values, the packed
fingerprints as they are, all deflated (``np.savez_compressed``) -- about 12 MB for 131,000 molecules, small
enough to travel with the working tree to a GPU machine. ``load_graphs`` reads it and the plain layout of
older cache files into identical arrays.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

EDGE_TYPES = 5


# ------------------------------------------------------------------------------------------ featurisation
def featurize_smiles(smiles: str, atom_types: list[str], n_bits: int, radius: int, max_atoms: int,
                     min_atoms: int = 2, max_mol_wt: float = 1500.0):
    """One SMILES -> ``(ik14, nodes, bonds, packed_fp, hydrogens)`` or ``(None, reason)``.

    ``nodes`` (n,) int8 atom classes, ``bonds`` (m, 3) int16 rows (i, j, class) with i < j,
    ``packed_fp`` (n_bits / 8,) uint8 (``np.packbits`` of the binary Morgan fingerprint), ``hydrogens`` the
    molecule's hydrogen count.
    Reasons: ``invalid_smiles``, ``multiple_fragments``, ``charged``, ``radical``, ``unsupported_element``,
    ``too_many_atoms``, ``too_few_atoms``, ``too_heavy``, ``unsupported_bond``.
    """
    from rdkit import Chem, rdBase
    from rdkit.Chem import Descriptors

    from ..chem.molecules import MoleculeError, inchikey14, mol_to_graph, morgan_fingerprint

    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles) if smiles else None
    if mol is None or mol.GetNumAtoms() == 0:
        return None, "invalid_smiles"
    if len(Chem.GetMolFrags(mol)) != 1:
        return None, "multiple_fragments"
    vocab = set(atom_types)
    for atom in mol.GetAtoms():
        if atom.GetFormalCharge() != 0:
            return None, "charged"
        if atom.GetNumRadicalElectrons() != 0:
            return None, "radical"
        if atom.GetSymbol() not in vocab:
            return None, "unsupported_element"
    n = mol.GetNumAtoms()
    if n > max_atoms:
        return None, "too_many_atoms"
    if n < min_atoms:
        return None, "too_few_atoms"
    if max_mol_wt and Descriptors.MolWt(mol) >= max_mol_wt:
        return None, "too_heavy"
    try:
        nodes, adj = mol_to_graph(mol, atom_types)
    except MoleculeError as err:
        return None, "unsupported_bond" if "bond type" in str(err) else "unsupported_element"
    ik14 = inchikey14(mol)
    if not ik14:
        return None, "invalid_smiles"
    i, j = np.nonzero(np.triu(adj, k=1))
    bonds = np.stack([i, j, adj[i, j]], axis=1).astype(np.int16)
    fp = morgan_fingerprint(mol, n_bits=n_bits, radius=radius)
    hydrogens = sum(atom.GetTotalNumHs() for atom in mol.GetAtoms())
    return (ik14, nodes.astype(np.int8), bonds, np.packbits(fp), hydrogens), None


def _featurize_job(args):
    source, smiles, params = args
    return source, *featurize_smiles(smiles, **params)


class GraphSet:
    """Molecular graphs + binary fingerprints in flat numpy arrays.

    Attributes
    ----------
    n_atoms : (N,) int64
    atom_offsets : (N + 1,) int64 into ``atoms`` (int8 atom classes)
    bond_offsets : (N + 1,) int64 into ``bonds`` ((M, 3) int16: i, j, class with i < j)
    fp : (N, n_bits / 8) uint8 packed fingerprints (or None)
    ik14 : (N,) bytes of 14 characters (or None)
    hydrogens : (N,) int64 hydrogen count of each molecule (or None: sets featurised before it was kept)
    """

    def __init__(self, n_atoms, atoms, atom_offsets, bonds, bond_offsets, fp=None, ik14=None, hydrogens=None):
        self.n_atoms = np.asarray(n_atoms, dtype=np.int64)
        self.atoms = np.asarray(atoms, dtype=np.int8)
        self.atom_offsets = np.asarray(atom_offsets, dtype=np.int64)
        self.bonds = np.asarray(bonds, dtype=np.int16).reshape(-1, 3)
        self.bond_offsets = np.asarray(bond_offsets, dtype=np.int64)
        self.fp = None if fp is None else np.asarray(fp, dtype=np.uint8)
        self.ik14 = ik14
        self.hydrogens = None if hydrogens is None else np.asarray(hydrogens, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.n_atoms)

    @classmethod
    def from_records(cls, nodes_list, bonds_list, fps=None, ik14s=None, hydrogens=None) -> "GraphSet":
        n_atoms = np.array([len(x) for x in nodes_list], dtype=np.int64)
        n_bonds = np.array([len(b) for b in bonds_list], dtype=np.int64)
        atoms = np.concatenate(nodes_list) if len(nodes_list) else np.zeros(0, np.int8)
        bonds = np.concatenate(bonds_list) if len(bonds_list) else np.zeros((0, 3), np.int16)
        fp = np.stack(fps) if fps is not None and len(fps) else None
        ik = np.array(ik14s, dtype="S14") if ik14s is not None else None
        return cls(n_atoms, atoms, np.concatenate([[0], np.cumsum(n_atoms)]), bonds,
                   np.concatenate([[0], np.cumsum(n_bonds)]), fp, ik, hydrogens)

    def subset(self, idx: np.ndarray) -> "GraphSet":
        """The graphs ``idx`` (in that order) as a new set (vectorised; fast for millions of graphs)."""
        idx = np.asarray(idx, dtype=np.int64)
        n_bonds = np.diff(self.bond_offsets)[idx]
        atoms = self.atoms[_ranges(self.atom_offsets[idx], self.n_atoms[idx])]
        bonds = self.bonds[_ranges(self.bond_offsets[idx], n_bonds)]
        return GraphSet(self.n_atoms[idx], atoms, np.concatenate([[0], np.cumsum(self.n_atoms[idx])]), bonds,
                        np.concatenate([[0], np.cumsum(n_bonds)]),
                        None if self.fp is None else self.fp[idx], None if self.ik14 is None else self.ik14[idx],
                        None if self.hydrogens is None else self.hydrogens[idx])

    def nodes(self, i: int) -> np.ndarray:
        return self.atoms[self.atom_offsets[i]:self.atom_offsets[i + 1]]

    def bond_rows(self, i: int) -> np.ndarray:
        return self.bonds[self.bond_offsets[i]:self.bond_offsets[i + 1]]

    # ---------------------------------------------------------------- statistics
    def edge_marginals(self, n_edge_types: int = EDGE_TYPES) -> list[float]:
        """Edge-class marginal as the DiffMS code computes it: every bond counted in both
        directions, no-bond = sum n(n-1) - directed bonds; normalised."""
        counts = np.zeros(n_edge_types, dtype=np.float64)
        cls = self.bonds[:, 2].astype(np.int64)
        np.add.at(counts, cls, 2.0)
        counts[0] = float((self.n_atoms * (self.n_atoms - 1)).sum()) - counts[1:].sum()
        if counts.sum() <= 0:
            raise ValueError("no edges in the training graphs: cannot compute edge marginals")
        return (counts / counts.sum()).tolist()

    # ---------------------------------------------------------------- batches
    def batch(self, idx: list[int], n_atom_types: int, device: torch.device):
        """Dense padded batch (torch_geometric's ``to_dense_batch`` / ``to_dense_adj`` over the sparse graphs).

        Returns
        -------
        X : (B, n, A) float one-hot atoms (padded rows zero)
        E : (B, n, n, 5) float one-hot clean edges; off-diagonal real pairs one-hot (no-bond = class 0),
            diagonal and padded entries all-zero
        node_mask : (B, n) bool
        """
        from torch_geometric.utils import to_dense_adj, to_dense_batch

        part = self.subset(np.asarray(list(idx), dtype=np.int64))
        B = len(part)
        n = int(part.n_atoms.max())
        graph_of_atom = torch.from_numpy(np.repeat(np.arange(B), part.n_atoms))           # (N,)
        atoms = torch.from_numpy(part.atoms.astype(np.int64))                              # (N,)
        X, node_mask = to_dense_batch(F.one_hot(atoms, n_atom_types).float(), graph_of_atom,
                                      batch_size=B, max_num_nodes=n)                      # (B, n, A), (B, n)
        bonds = torch.from_numpy(part.bonds.astype(np.int64))                              # (M, 3) local
        offset = torch.from_numpy(np.repeat(part.atom_offsets[:-1], np.diff(part.bond_offsets)))
        ends = bonds[:, :2] + offset[:, None]                                              # (M, 2) global
        edge_index = torch.cat([ends, ends.flip(1)]).T                                     # (2, 2M)
        E_cls = to_dense_adj(edge_index, graph_of_atom, bonds[:, 2].repeat(2).float(), batch_size=B,
                             max_num_nodes=n).long()                                       # (B, n, n)
        E = F.one_hot(E_cls, EDGE_TYPES).float()                                           # (B, n, n, 5)
        pair = node_mask[:, :, None] & node_mask[:, None, :]
        pair &= ~torch.eye(n, dtype=torch.bool)[None]
        E = E * pair[..., None]
        return X.to(device), E.to(device), node_mask.to(device)

    def hydrogen_counts(self, idx: list[int], device: torch.device) -> torch.Tensor:
        """(B,) float hydrogen counts; a ValueError for a set featurised without them."""
        if self.hydrogens is None:
            raise ValueError("these graphs carry no hydrogen counts (featurised by an older version): "
                             "featurise the molecules again for a decoder with hydrogen features")
        return torch.from_numpy(self.hydrogens[np.asarray(idx, dtype=np.int64)].astype(np.float32)).to(device)

    def fingerprints(self, idx: list[int], device: torch.device) -> torch.Tensor:
        """(B, n_bits) float 0/1 fingerprints."""
        bits = np.unpackbits(self.fp[np.asarray(idx, dtype=np.int64)], axis=1)
        return torch.from_numpy(bits.astype(np.float32)).to(device)

    # ---------------------------------------------------------------- storage
    def arrays(self, prefix: str = "") -> dict:
        out = {f"{prefix}n_atoms": self.n_atoms, f"{prefix}atoms": self.atoms,
               f"{prefix}atom_offsets": self.atom_offsets, f"{prefix}bonds": self.bonds,
               f"{prefix}bond_offsets": self.bond_offsets}
        if self.fp is not None:
            out[f"{prefix}fp"] = self.fp
        if self.ik14 is not None:
            out[f"{prefix}ik14"] = np.asarray(self.ik14, dtype="S14")
        if self.hydrogens is not None:
            out[f"{prefix}hydrogens"] = self.hydrogens
        return out

    @classmethod
    def from_arrays(cls, arrays, prefix: str = "") -> "GraphSet":
        get = (lambda k: arrays[prefix + k] if prefix + k in arrays else None)
        return cls(get("n_atoms"), get("atoms"), get("atom_offsets"), get("bonds"), get("bond_offsets"),
                   get("fp"), get("ik14"), get("hydrogens"))


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + l)`` for every (start, length) pair, without a Python loop."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    block_start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return np.arange(total) - np.repeat(block_start - np.asarray(starts, dtype=np.int64), lengths)


def save_npz(path: Path, arrays: dict, meta: dict) -> None:
    """Write arrays + a JSON metadata string into ``path`` atomically, deflated (no pickled objects)."""
    from ..files import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = np.array(json.dumps(meta, sort_keys=True))
    atomic_write(path, lambda tmp: np.savez_compressed(tmp, **arrays, meta=meta))


def load_npz(path: Path) -> tuple[dict, dict]:
    """Arrays and the JSON metadata of a file written by ``save_npz`` (or ``save_graphs``)."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if k != "meta"}
        meta = json.loads(str(data["meta"]))
    return arrays, meta


def file_signature(path: str) -> list:
    p = Path(path).resolve()
    st = p.stat()
    return [str(p), st.st_size, int(st.st_mtime)]


# ------------------------------------------------------------------------------------------ compact storage
GRAPHS_FORMAT = "matchms-diffms-graphs/2"


def _smallest_uint(values: np.ndarray) -> np.ndarray:
    """``values`` (non-negative integers) in the smallest unsigned type that holds them."""
    values = np.asarray(values)
    if values.size and values.min() < 0:
        raise ValueError("compact graph storage needs non-negative integers")
    return values.astype(np.min_scalar_type(int(values.max()) if values.size else 0))


def compact_arrays(graphs: GraphSet) -> dict:
    """The arrays of ``graphs`` in the compact layout (counts, not offsets; smallest integer types)."""
    out = {"format": np.array(GRAPHS_FORMAT), "n_atoms": _smallest_uint(graphs.n_atoms),
           "n_bonds": _smallest_uint(np.diff(graphs.bond_offsets)), "atoms": graphs.atoms,
           "bonds": _smallest_uint(graphs.bonds)}
    if graphs.fp is not None:
        out["fp"] = graphs.fp
    if graphs.ik14 is not None:
        out["ik14"] = np.asarray(graphs.ik14, dtype="S14")
    if graphs.hydrogens is not None:
        out["hydrogens"] = _smallest_uint(graphs.hydrogens)
    return out


def graphs_from_compact(arrays: dict) -> GraphSet:
    """The ``GraphSet`` of ``compact_arrays`` (offsets rebuilt, types widened back)."""
    n_atoms = arrays["n_atoms"].astype(np.int64)
    n_bonds = arrays["n_bonds"].astype(np.int64)
    return GraphSet(n_atoms, arrays["atoms"], _offsets(n_atoms), arrays["bonds"], _offsets(n_bonds),
                    arrays.get("fp"), arrays.get("ik14"), arrays.get("hydrogens"))


def _offsets(counts: np.ndarray) -> np.ndarray:
    """Start offsets (with the total at the end) of consecutive blocks of ``counts`` items."""
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def save_graphs(path: Path, graphs: GraphSet, meta: dict) -> None:
    """Write a featurised set compactly (``compact_arrays``, deflated) with its JSON metadata, atomically."""
    save_npz(path, compact_arrays(graphs), meta)


def load_graphs(path: Path) -> tuple[GraphSet, dict]:
    """A featurised set and its metadata, from ``save_graphs`` or from the plain layout of ``save_npz``."""
    arrays, meta = load_npz(Path(path))
    fmt = str(arrays["format"]) if "format" in arrays else None
    if fmt is None:
        return GraphSet.from_arrays(arrays), meta
    if fmt != GRAPHS_FORMAT:
        raise ValueError(f"{path}: graph file format {fmt!r}, this version reads {GRAPHS_FORMAT!r}")
    return graphs_from_compact(arrays), meta
