"""Constrained decoding (chem.decoding): formula-exact molecules from bond-class probabilities."""
import random
import time

import numpy as np
import pytest
from rdkit import Chem

from matchms_diffms.chem.decoding import (decode_formula_exact, has_cumulene, random_formula_molecule,
                                          valence_choices)
from matchms_diffms.chem.formula import Formula
from matchms_diffms.chem.molecules import ATOM_DECODER, mol_formula, mol_to_graph

RINGS = {
    "benzene": "c1ccccc1",
    "pyridine": "c1ccncc1",
    "naphthalene": "c1ccc2ccccc2c1",
    "indole": "c1ccc2[nH]ccc2c1",
    "caffeine": "Cn1c(=O)c2c(ncn2C)n(C)c1=O",
    "aspirin": "CC(=O)Oc1ccccc1C(=O)O",
    "testosterone": "CC12CCC3C(CCC4=CC(=O)CCC34C)C1CCC2O",
    "cyclopentadecanolide": "O=C1CCCCCCCCCCCCCCO1",
    "pyrrole": "c1cc[nH]c1",
    "thiophene": "c1ccsc1",
    "quinoline": "c1ccc2ncccc2c1",
    "sulfanilamide": "Nc1ccc(S(N)(=O)=O)cc1",
    "benzonitrile": "N#Cc1ccccc1",
    "trimethyl phosphate": "COP(=O)(OC)OC",
}


def canonical(smiles):
    return Chem.MolToSmiles(Chem.MolFromSmiles(smiles))


def graph(smiles):
    nodes, adj = mol_to_graph(smiles)
    return [ATOM_DECODER[i] for i in nodes], adj


def soft(adj, confidence=0.9):
    """Class probabilities that put ``confidence`` on the given graph and spread the rest."""
    p = np.full(adj.shape + (5,), (1 - confidence) / 4)
    np.put_along_axis(p, adj[..., None], confidence, axis=-1)
    return p


@pytest.mark.parametrize("name", sorted(RINGS))
def test_exact_graph_of_ring_systems_comes_back(name):
    smiles = RINGS[name]
    atoms, adj = graph(smiles)
    formula = mol_formula(smiles)
    for mol in (decode_formula_exact(atoms, formula, adj=adj),          # the sample alone
                decode_formula_exact(atoms, formula, probs=soft(adj))):  # probabilities alone
        assert mol is not None
        assert Chem.MolToSmiles(mol) == canonical(smiles)


def test_broken_sample_is_repaired_by_the_probabilities():
    """A sample that lost a ring bond and has a pentavalent carbon: the probabilities give benzene back."""
    atoms, adj = graph("c1ccccc1")
    probs = soft(adj, 0.8)
    broken = adj.copy()
    broken[0, 1] = broken[1, 0] = 0                                # ring opened
    broken[2, 5] = broken[5, 2] = 2                                # a bond the probabilities do not ask for
    mol = decode_formula_exact(atoms, Formula.parse("C6H6"), probs=probs, adj=broken)
    assert Chem.MolToSmiles(mol) == "c1ccccc1"


def test_wrong_hydrogen_count_moves_to_the_most_probable_bond_order():
    """Ethanol's graph under the formula C2H4O: the one extra bond goes where the probabilities want it."""
    atoms = ["C", "C", "O"]
    probs = np.zeros((3, 3, 5))
    probs[..., 0] = 1.0
    probs[0, 1] = probs[1, 0] = [0.05, 0.55, 0.1, 0, 0.3]          # C-C: single, some double
    probs[1, 2] = probs[2, 1] = [0.05, 0.35, 0.6, 0, 0]            # C-O: double more probable
    mol = decode_formula_exact(atoms, Formula.parse("C2H4O"), probs=probs)
    assert Chem.MolToSmiles(mol) == "CC=O"


def test_no_cumulenes_unless_asked():
    """Probabilities asking for no multiple bond on a C6H6 chain never give C=C=C; asked-for ones may."""
    atoms = ["C"] * 6
    rng = np.random.default_rng(0)
    for _ in range(30):
        probs = rng.dirichlet(np.ones(5), size=(6, 6))
        probs[..., 2:4] *= 0.2                                      # nothing asks for double / triple bonds
        probs /= probs.sum(-1, keepdims=True)
        mol = decode_formula_exact(atoms, Formula.parse("C6H6"), probs=probs)
        assert mol is None or not has_cumulene(mol), Chem.MolToSmiles(mol)
    allene = np.zeros((3, 3, 5))
    allene[..., 0] = 1.0
    for i, j in ((0, 1), (1, 2)):
        allene[i, j] = allene[j, i] = [0, 0.1, 0.9, 0, 0]
    mol = decode_formula_exact(["C", "C", "C"], Formula.parse("C3H4"), probs=allene)
    assert Chem.MolToSmiles(mol) == "C=C=C"                          # asked for: allowed


def test_never_a_cumulene_from_exact_graphs():
    for smiles in RINGS.values():
        atoms, adj = graph(smiles)
        assert not has_cumulene(decode_formula_exact(atoms, mol_formula(smiles), probs=soft(adj, 0.6)))


def test_deterministic_and_formula_exact():
    atoms, adj = graph("CC(=O)Oc1ccccc1C(=O)O")
    probs = np.random.default_rng(1).dirichlet(np.ones(5), size=adj.shape)
    f = Formula.parse("C9H8O4")
    a = decode_formula_exact(atoms, f, probs=probs, adj=adj)
    b = decode_formula_exact(atoms, f, probs=probs, adj=adj)
    assert Chem.MolToSmiles(a) == Chem.MolToSmiles(b)
    assert mol_formula(a) == f and len(Chem.GetMolFrags(a)) == 1


def test_bounded_time_on_80_heavy_atoms():
    formula = Formula.parse("C60H100N10O10")
    atoms = formula.heavy_atoms()
    assert len(atoms) == 80
    probs = np.random.default_rng(2).dirichlet(np.ones(5), size=(80, 80))
    start = time.perf_counter()
    mol = decode_formula_exact(atoms, formula, probs=probs)
    assert time.perf_counter() - start < 10.0
    assert mol is not None and mol_formula(mol) == formula


def test_random_formula_molecules_are_seeded_and_exact():
    formula = Formula.parse("C8H10N4O2")
    a = [random_formula_molecule(formula, random.Random(5)) for _ in range(1)]
    b = [random_formula_molecule(formula, random.Random(5)) for _ in range(1)]
    assert [Chem.MolToSmiles(m) for m in a] == [Chem.MolToSmiles(m) for m in b]
    assert all(mol_formula(m) == formula for m in a)


def test_no_hydrogens_on_hypervalent_sulfur():
    rng = random.Random(0)
    for _ in range(20):
        mol = random_formula_molecule(Formula.parse("C4H10O2S2"), rng)
        if mol is None:
            continue
        for atom in mol.GetAtoms():
            if atom.GetSymbol() == "S" and atom.GetTotalNumHs():
                assert atom.GetTotalValence() == 2, Chem.MolToSmiles(mol)


def test_valence_choices():
    assert valence_choices(["C", "C"], 6) == [[4, 4]]
    assert valence_choices(["C", "C"], 7) == []                     # odd electron count
    assert [4, 6] in valence_choices(["C", "S"], 4)                  # e.g. sulfonyl-like choices kept
    assert valence_choices(["C", "C", "C"], 20) == []                # too many hydrogens to connect
