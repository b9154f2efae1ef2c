"""Graph <-> molecule conversion, validity, identifiers, formulas and fingerprints."""
import json

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from matchms_diffms.chem import Formula
from matchms_diffms.chem.molecules import (
    ATOM_DECODER,
    MoleculeError,
    check_molecule,
    formula_of_smiles,
    graph_to_mol,
    inchikey,
    inchikey14,
    matches_formula,
    mol_formula,
    mol_to_graph,
    mol_to_inchi,
    morgan_fingerprint,
    sanitize_and_check,
)

CAFFEINE = "CN1C=NC2=C1C(=O)N(C(=O)N2C)C"

# ---------------------------------------------------------------------------------------------- hand-made


def _ring(n, cls):
    adj = np.zeros((n, n), dtype=int)
    for i in range(n):
        j = (i + 1) % n
        adj[min(i, j), max(i, j)] = cls
    return adj


@pytest.mark.parametrize("nodes, adj, smiles, valid, error", [
    (["C"] * 6, _ring(6, 4), "c1ccccc1", True, None),                       # symbols work as nodes
    ([0] * 6, _ring(6, 4), "c1ccccc1", True, None),
    ([0] * 5, _ring(5, 4), None, False, "KekulizeException"),
    ([0, 0, 1], [[0, 1, 0], [0, 0, 1], [0, 0, 0]], "CCO", True, None),        # upper triangle only
    ([0, 0, 1], [[0, 1, 0], [1, 0, 1], [0, 1, 0]], "CCO", True, None),
    ([0, 0, 1, -1], [[0, 1, 0, -1], [0, 0, 1, -1], [0, 0, 0, -1], [-1] * 4], "CCO", True, None),   # padding
    ([0, 0, 0], [[0, 1, 0], [2, 0, 1], [0, 3, 0]], "CCC", True, None),        # lower triangle ignored
    ([0, 0, 1], [[4, 1, 0], [0, 2, 1], [0, 0, 3]], "CCO", True, None),        # diagonal ignored
    ([0, 0, 1], [[0, 1, 0], [0, 0, 0], [0, 0, 0]], "CC.O", False, None),      # two fragments
    ([5, 0], [[0, 2], [0, 0]], None, False, "AtomValenceException"),           # C=Cl
    ([], np.zeros((0, 0), dtype=int), "", True, None),                         # empty graph is valid
])
def test_graph_to_mol_cases(nodes, adj, smiles, valid, error):
    mol = graph_to_mol(nodes, np.array(adj))
    assert mol is not None
    assert sanitize_and_check(mol) == (smiles, valid, error)


def test_graph_to_mol_plain_neutral_atoms_and_input_untouched():
    mol = graph_to_mol([3, 0, 1, 1], [[0, 1, 2, 2], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert all(a.GetFormalCharge() == 0 and a.GetNumExplicitHs() == 0 for a in mol.GetAtoms())
    res = check_molecule(mol)
    assert res.smiles == "C[N+](=O)[O-]" and res.is_valid     # RDKit's sanitizer cleans up the nitro group
    assert all(a.GetFormalCharge() == 0 for a in mol.GetAtoms())   # only the copy was sanitized
    assert res.inchi == "InChI=1S/CH3NO2/c1-2(3)4/h1H3"


@pytest.mark.parametrize("nodes, adj, match", [
    ([0, 0], [[0, 1]], "shape"),
    ([0, 9], [[0, 1], [0, 0]], "outside the vocabulary"),
    ([0, "Xx"], [[0, 1], [0, 0]], "unknown element"),
    ([0, 0], [[0, 5], [0, 0]], "bond classes"),
    ([0, -1], [[0, 1], [0, 0]], "padded node"),
    ([0, 1.5], [[0, 1], [0, 0]], "expected an element symbol"),
])
def test_graph_to_mol_rejects(nodes, adj, match):
    with pytest.raises(ValueError, match=match):
        graph_to_mol(nodes, np.array(adj))


def test_check_none():
    assert sanitize_and_check(None) == (None, False, "NoMolecule")


def test_identifiers():
    assert inchikey(CAFFEINE) == "RYYVLZVUVIJVGH-UHFFFAOYSA-N"
    assert inchikey14(CAFFEINE) == "RYYVLZVUVIJVGH"
    assert mol_to_inchi(CAFFEINE) == "InChI=1S/C8H10N4O2/c1-10-4-9-6-5(10)7(13)12(3)8(14)11(6)2/h4H,1-3H3"
    with pytest.raises(MoleculeError, match="invalid SMILES"):
        inchikey("C1CC")


@pytest.mark.parametrize("smiles, formula", [
    (CAFFEINE, "C8H10N4O2"),
    ("CCO", "C2H6O"),
    ("[H]C([H])([H])[H]", "CH4"),
    ("C[N+](=O)[O-]", "CH3NO2"),
    ("Cn1c(=O)cc(s1)Cl", "C4H4ClNOS"),
])
def test_formulas(smiles, formula):
    assert formula_of_smiles(smiles) == Formula.parse(formula)
    assert matches_formula(Chem.MolFromSmiles(smiles), formula)
    assert not matches_formula(smiles, Formula.parse(formula) + "H2")


def test_formula_of_generated_unsanitized_mol():
    mol = graph_to_mol([0, 0, 1], [[0, 2, 0], [0, 0, 1], [0, 0, 0]])   # C=C-O, implicit H from valence
    assert mol_formula(mol) == Formula.parse("C2H4O")


@pytest.mark.parametrize("smiles, nodes, bonds", [
    ("CCO", [0, 0, 1], {(0, 1): 1, (1, 2): 1}),
    ("c1ccncc1", [0, 0, 0, 3, 0, 0], {(0, 1): 4, (1, 2): 4, (2, 3): 4, (3, 4): 4, (4, 5): 4, (0, 5): 4}),
    ("C#N", [0, 3], {(0, 1): 3}),
    ("C/C=C/C", [0, 0, 0, 0], {(0, 1): 1, (1, 2): 2, (2, 3): 1}),
    ("C[C@H](N)O", [0, 0, 3, 1], {(0, 1): 1, (1, 2): 1, (1, 3): 1}),
])
def test_mol_to_graph(smiles, nodes, bonds):
    x, adj = mol_to_graph(smiles)
    assert x.tolist() == nodes
    expected = np.zeros_like(adj)
    for (i, j), c in bonds.items():
        expected[i, j] = expected[j, i] = c
    assert np.array_equal(adj, expected)


@pytest.mark.parametrize("smiles, match", [
    ("CCBr", "Br"),
    ("C[N+](C)(C)C", "charged"),
    ("C1CC", "invalid SMILES"),
])
def test_mol_to_graph_rejects(smiles, match):
    with pytest.raises(MoleculeError, match=match):
        mol_to_graph(smiles)


def test_mol_to_graph_custom_vocabulary():
    x, _ = mol_to_graph("CCBr", ["C", "O", "P", "N", "S", "Cl", "F", "H", "Br"])
    assert x.tolist() == [0, 0, 8]


def test_graph_roundtrip():
    x, adj = mol_to_graph(CAFFEINE)
    smiles, valid, _ = sanitize_and_check(graph_to_mol(x, adj))
    assert valid and inchikey(smiles) == inchikey(CAFFEINE)


def test_morgan_matches_rdkit_bitvect():
    mol = Chem.MolFromSmiles(CAFFEINE)
    for n_bits, radius in [(4096, 2), (2048, 3)]:
        fp = morgan_fingerprint(mol, n_bits=n_bits, radius=radius)
        ref = np.array(list(AllChem.GetMorganFingerprintAsBitVect(mol, radius, nBits=n_bits)), dtype=np.uint8)
        assert fp.dtype == np.uint8 and fp.shape == (n_bits,)
        assert np.array_equal(fp, ref)
    assert np.array_equal(morgan_fingerprint(CAFFEINE), morgan_fingerprint(mol))


# ---------------------------------------------------------------------------------------------- fixtures
def test_graphs_to_mols_fixture(conformance_dir):
    data = json.loads((conformance_dir / "graphs_to_mols.json").read_text())
    assert data["atom_decoder"] == ATOM_DECODER
    graphs = data["graphs"]
    assert len(graphs) == 39
    n_valid = 0
    for g in graphs:
        n = len(g["nodes"])
        mol = graph_to_mol(g["nodes"], np.array(g["adj"], dtype=np.int64).reshape(n, n))
        res = check_molecule(mol)
        got = {
            "mol_is_none": mol is None,
            "num_atoms": None if mol is None else mol.GetNumAtoms(),
            "num_bonds": None if mol is None else mol.GetNumBonds(),
            "smiles": res.smiles,
            "is_valid": res.is_valid,
            "inchi": res.inchi,
            "sanitize_error": res.error,
            "num_fragments": res.num_fragments,
        }
        for key, value in got.items():
            assert value == g[key], (g["id"], key, value, g[key])
        n_valid += res.is_valid
    assert n_valid == 25


def test_mol_to_graph_decoder_fixture(conformance_dir):
    d = np.load(conformance_dir / "decoder_io.npz")
    for b in range(len(d["names"])):
        n = int(d["n_nodes"][b])
        for smiles in (str(d["smiles_input"][b]), str(d["canonical_nonisomeric_smiles"][b])):
            x, adj = mol_to_graph(smiles)
            assert x.shape == (n,)
            X = np.zeros((n, 8), dtype=np.uint8)
            X[np.arange(n), x] = 1
            E = np.eye(5, dtype=np.uint8)[adj]
            E[np.arange(n), np.arange(n)] = 0            # clean graphs have an all-zero diagonal
            assert np.array_equal(X, d["X"][b, :n]), (b, smiles)
            assert np.array_equal(E, d["E_clean"][b, :n, :n]), (b, smiles)
            assert d["node_mask"][b, :n].all() and not d["node_mask"][b, n:].any()


def test_morgan_encoder_fixture(conformance_dir):
    # TITLE / SMILES read straight from the MGF text (importing matchms takes seconds)
    smiles, title = {}, None
    for line in (conformance_dir / "spectra.mgf").read_text().splitlines():
        if line.startswith("TITLE="):
            title = line[len("TITLE="):]
        elif line.startswith("SMILES="):
            smiles[title] = line[len("SMILES="):]
    assert len(smiles) == 24
    e = np.load(conformance_dir / "encoder_io.npz")
    for prefix in ("batch24", "single0", "single1", "single2"):
        names, fps = e[f"{prefix}_names"], e[f"{prefix}_mols_morgan4096"]
        for name, ref in zip(names, fps):
            fp = morgan_fingerprint(smiles[str(name)])
            assert np.array_equal(fp, ref), (prefix, name, int(np.sum(fp != ref)))
