"""Pure chemistry for matchms-diffms: formulas, adducts, subformula assignment, molecules (RDKit, numpy; no torch).

The names below are loaded from their module on first use, so that a module that needs only plain tables
(``chem.tables``; ``chem.formula`` for parsing) imports without RDKit, e.g. the training of the decoder
on a machine that has none.
"""
from ..lazy import lazy_names

# public name -> module of this package that holds it
_HOME = {
    **dict.fromkeys(["ELECTRON_MASS", "SUPPORTED_ADDUCTS", "Adduct", "UnsupportedAdductError",
                     "default_adduct", "ion_formula", "neutral_mass", "official_index", "official_name",
                     "parse_adduct", "precursor_mz"], "adducts"),
    **dict.fromkeys(["decompose_mass", "passes_golden_rules"], "decomposition"),
    **dict.fromkeys(["ELEMENT_MASSES", "ELEMENTS_18", "LOWEST_VALENCE", "VALENCES", "Formula", "FormulaError",
                     "element_mass", "is_element"], "formula"),
    "ATOM_DECODER": "tables",
    "OFFICIAL_ADDUCTS": "tables",
    **dict.fromkeys(["BOND_CLASSES", "MolCheck", "MoleculeError", "check_molecule",
                     "formula_of_smiles", "graph_to_mol", "inchikey", "inchikey14", "matches_formula",
                     "mol_formula", "mol_to_graph", "mol_to_inchi", "morgan_fingerprint", "sanitize_and_check"],
                    "molecules"),
    **dict.fromkeys(["DEFAULT_MAX_CANDIDATES", "SubformulaError", "assign_subformulae", "candidate_masses",
                     "count_candidates", "enumerate_subformulae", "preprocess_peaks"], "subformulae"),
}

__all__ = list(_HOME)

__getattr__ = lazy_names(__name__, _HOME, globals())
