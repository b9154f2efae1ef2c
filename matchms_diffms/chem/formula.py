"""Molecular formulas: parsing, Hill strings, masses, RDBE and the 18-element count vector.

The 18-element order ``ELEMENTS_18`` is the order used everywhere by the DiffMS encoder (MIST formula
transformer) and by the subformula annotation files of DiffMS' data preparation: formula vectors of the
encoder's input tokens are counts in this order.

Examples
--------
>>> f = Formula.parse("C8H10N4O2")
>>> f.hill(), round(f.monoisotopic_mass, 6)
('C8H10N4O2', 194.080376)
>>> (f + Formula.parse("H")).hill()
'C8H11N4O2'
"""
from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

import numpy as np

__all__ = [
    "LOWEST_VALENCE",
    "VALENCES",
    "ELEMENTS_18",
    "ELEMENT_MASSES",
    "FormulaError",
    "Formula",
    "element_mass",
    "is_element",
]

# Element order of every formula count vector (encoder tokens, subformula strings).
ELEMENTS_18 = ["C", "H", "As", "B", "Br", "Cl", "Co", "F", "Fe", "I", "K", "N", "Na", "O", "P", "S", "Se", "Si"]
_INDEX_18 = {el: i for i, el in enumerate(ELEMENTS_18)}


@functools.cache
def _periodic_table():
    """RDKit's periodic table, loaded on first use (importing this module needs no RDKit)."""
    from rdkit import Chem

    return Chem.GetPeriodicTable()


# Every element symbol, atomic numbers 1..118 (as RDKit's periodic table spells them; a plain table so that
# parsing formulas needs no RDKit).
_KNOWN_SYMBOLS = frozenset(
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr Rb Sr Y Zr "
    "Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir "
    "Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr Rf Db Sg Bh Hs Mt Ds Rg Cn Nh "
    "Fl Mc Lv Ts Og".split())


# Neutral valences allowed for an element in a generated molecule, lowest first (constrained decoding chooses
# among them; other elements fall back to RDKit's valence list).
VALENCES = {"C": (4,), "N": (3,), "O": (2,), "S": (2, 4, 6), "P": (3, 5), "F": (1,), "Cl": (1,), "Br": (1,),
            "I": (1,), "H": (1,), "B": (3,), "Si": (4,), "Se": (2, 4, 6), "As": (3, 5)}
# The lowest of them: the bond budget of the graph features, the LEWIS/SENIOR rules of the mass decomposition.
LOWEST_VALENCE = {el: allowed[0] for el, allowed in VALENCES.items()}

# Weights of the ring-plus-double-bond equivalent, RDBE = 1 + 0.5 * sum(weight * count).
_RDBE_WEIGHTS = {"C": 2, "N": 1, "P": 1, "H": -1, "Cl": -1, "Br": -1, "I": -1, "F": -1}


class FormulaError(ValueError):
    """A formula string or count table that cannot be handled."""


def is_element(symbol: str) -> bool:
    """True if ``symbol`` is an element symbol of the periodic table (``"Cl"``, not ``"CL"`` or ``"D"``)."""
    return symbol in _KNOWN_SYMBOLS


def element_mass(symbol: str) -> float:
    """Mass of the most common isotope of an element (RDKit periodic table).

    Parameters
    ----------
    symbol
        Element symbol, e.g. ``"Cl"``.

    Returns
    -------
    float
        ``GetMostCommonIsotopeMass(symbol)``, e.g. 34.96885268 for Cl.
    """
    if symbol not in _KNOWN_SYMBOLS:
        raise FormulaError(f"unknown element symbol {symbol!r}")
    return float(_periodic_table().GetMostCommonIsotopeMass(symbol))


# Monoisotopic masses in ELEMENTS_18 order (float64), the table the subformula search uses.
@functools.cache
def _element_masses() -> np.ndarray:
    return np.array([element_mass(el) for el in ELEMENTS_18], dtype=np.float64)


def __getattr__(name):
    """``ELEMENT_MASSES``: masses of ``ELEMENTS_18``, computed with RDKit on first use."""
    if name == "ELEMENT_MASSES":
        return _element_masses()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

_TOKEN = re.compile(r"([A-Z][a-z]?)|(\d+)|(\()|(\))")


def _mass_order_key(element: str) -> tuple[int, str]:
    """Fixed summation order for masses: ELEMENTS_18 order first, then the others alphabetically."""
    return (_INDEX_18.get(element, len(ELEMENTS_18)), element)


class Formula:
    """An immutable molecular formula (element -> positive count).

    Zero counts are dropped. Construct with ``Formula({"C": 6, "H": 6})`` or ``Formula.parse("C6H6")``.
    Formulas support ``+``, ``-`` (error on a negative result), ``==`` and hashing; ``f["C"]`` gives a
    count (0 when absent).
    """

    __slots__ = ("_counts", "_hash")

    def __init__(self, counts: Mapping[str, int] | None = None):
        clean: dict[str, int] = {}
        for element, count in (counts or {}).items():
            if not isinstance(element, str) or element not in _KNOWN_SYMBOLS:
                raise FormulaError(f"unknown element symbol {element!r}")
            if isinstance(count, (bool, np.bool_)) or not isinstance(count, (int, np.integer)):
                raise FormulaError(f"count of {element} must be an integer, got {count!r}")
            count = int(count)
            if count < 0:
                raise FormulaError(f"negative count {count} for element {element}")
            if count:
                clean[element] = count
        self._counts = MappingProxyType(dict(sorted(clean.items())))
        self._hash = hash(frozenset(self._counts.items()))

    # ------------------------------------------------------------------ parsing
    @classmethod
    def parse(cls, text: str) -> "Formula":
        """Parse a formula string.

        Accepts any element order, repeated elements (``CH3COOH``) and parentheses with a multiplier
        (``(CH3)3N``). Rejects empty strings, unknown element symbols, charges, signs and other characters.

        Parameters
        ----------
        text
            Formula such as ``"C9H11Cl3NO3PS"``; surrounding whitespace is ignored.

        Returns
        -------
        Formula
        """
        if isinstance(text, Formula):
            return text
        if not isinstance(text, str):
            raise FormulaError(f"formula must be a string, got {type(text).__name__}")
        s = text.strip()
        if not s:
            raise FormulaError("empty formula")
        counts = cls._parse_group(s, text)
        return cls(counts)

    @staticmethod
    def _parse_group(s: str, original: str) -> dict[str, int]:
        """Tokenize and evaluate ``s`` (element symbols, counts, nested parentheses)."""
        stack: list[dict[str, int]] = [{}]
        pos = 0
        last: dict[str, int] | None = None   # what a following number multiplies
        last_element: str | None = None
        while pos < len(s):
            m = _TOKEN.match(s, pos)
            if m is None:
                raise FormulaError(f"cannot parse formula {original!r}: unexpected {s[pos]!r} at position {pos}")
            symbol, number, opening, closing = m.groups()
            if symbol is not None:
                if symbol not in _KNOWN_SYMBOLS:
                    raise FormulaError(f"unknown element symbol {symbol!r} in formula {original!r}")
                stack[-1][symbol] = stack[-1].get(symbol, 0) + 1
                last, last_element = None, symbol
            elif number is not None:
                n = int(number)
                if last_element is not None:
                    stack[-1][last_element] += n - 1
                elif last is not None:
                    for el, c in last.items():
                        stack[-1][el] = stack[-1].get(el, 0) + c * (n - 1)
                else:
                    raise FormulaError(f"cannot parse formula {original!r}: number {number} without an element")
                last, last_element = None, None
            elif opening is not None:
                stack.append({})
                last, last_element = None, None
            else:  # closing
                if len(stack) == 1:
                    raise FormulaError(f"cannot parse formula {original!r}: unbalanced ')'")
                group = stack.pop()
                if not group:
                    raise FormulaError(f"cannot parse formula {original!r}: empty parentheses")
                for el, c in group.items():
                    stack[-1][el] = stack[-1].get(el, 0) + c
                last, last_element = group, None
            pos = m.end()
        if len(stack) != 1:
            raise FormulaError(f"cannot parse formula {original!r}: unbalanced '('")
        return stack[0]

    @classmethod
    def from_vector18(cls, vector: Sequence[int] | np.ndarray) -> "Formula":
        """Build a formula from counts in ``ELEMENTS_18`` order (integer-valued, non-negative)."""
        v = np.asarray(vector)
        if v.shape != (len(ELEMENTS_18),):
            raise FormulaError(f"expected a vector of {len(ELEMENTS_18)} counts, got shape {v.shape}")
        if not np.all(np.isfinite(v)) or not np.all(v == np.round(v)):
            raise FormulaError(f"counts must be integers, got {v.tolist()}")
        return cls({el: int(c) for el, c in zip(ELEMENTS_18, v.tolist())})

    # ------------------------------------------------------------------ views
    @property
    def counts(self) -> Mapping[str, int]:
        """Read-only mapping element -> count (positive counts only)."""
        return self._counts

    def __getitem__(self, element: str) -> int:
        return self._counts.get(element, 0)

    def __iter__(self):
        return iter(self._counts)

    def __len__(self) -> int:
        """Number of distinct elements."""
        return len(self._counts)

    def hill(self) -> str:
        """Hill-order string: C, H, then alphabetical (all alphabetical when there is no C); count 1 omitted."""
        return "".join(_term(el, self._counts[el]) for el in self.hill_elements())

    def mist_string(self) -> str:
        """String in ``ELEMENTS_18`` order with count 1 omitted (the subformula-file notation)."""
        self._check_18()
        return "".join(_term(el, self._counts[el]) for el in ELEMENTS_18 if el in self._counts)

    def vector18(self) -> np.ndarray:
        """Counts in ``ELEMENTS_18`` order, shape (18,), int64."""
        self._check_18()
        return np.array([self._counts.get(el, 0) for el in ELEMENTS_18], dtype=np.int64)

    def _check_18(self) -> None:
        outside = [el for el in self._counts if el not in _INDEX_18]
        if outside:
            raise FormulaError(f"formula {self.hill()} contains element(s) {', '.join(outside)} outside the "
                               f"18 supported elements ({', '.join(ELEMENTS_18)})")

    @property
    def monoisotopic_mass(self) -> float:
        """Sum of count x most-common-isotope mass (ELEMENTS_18 order, then other elements alphabetically)."""
        mass = 0.0
        for el in sorted(self._counts, key=_mass_order_key):
            mass += self._counts[el] * element_mass(el)
        return mass

    @property
    def rdbe(self) -> float:
        """Ring-plus-double-bond equivalent 1 + 0.5 (2C + N + P - H - Cl - Br - I - F)."""
        return 1.0 + 0.5 * sum(w * self._counts.get(el, 0) for el, w in _RDBE_WEIGHTS.items())

    @property
    def n_heavy(self) -> int:
        """Number of non-hydrogen atoms."""
        return sum(c for el, c in self._counts.items() if el != "H")

    def heavy_atoms(self, order: Iterable[str] | None = None) -> list[str]:
        """Non-hydrogen atoms, one symbol per atom, each element's atoms contiguous.

        Parameters
        ----------
        order
            Element order (e.g. the decoder vocabulary ``["C", "O", "P", "N", "S", "Cl", "F", "H"]``).
            ``None`` uses Hill order. An element of the formula missing from ``order`` raises FormulaError.

        Returns
        -------
        list of str
            e.g. ``['C', 'C', 'O']`` for C2H6O.
        """
        heavy = [el for el in self._counts if el != "H"]
        if order is None:
            ordered = [el for el in self.hill_elements() if el != "H"]
        else:
            order = list(order)
            missing = [el for el in heavy if el not in order]
            if missing:
                raise FormulaError(f"element(s) {', '.join(missing)} of {self.hill()} not in the vocabulary "
                                   f"{order}")
            ordered = [el for el in dict.fromkeys(order) if el in heavy]
        return [el for el in ordered for _ in range(self._counts[el])]

    def hill_elements(self) -> list[str]:
        """Element symbols in Hill order."""
        if "C" in self._counts:
            return ["C"] + (["H"] if "H" in self._counts else []) + sorted(
                el for el in self._counts if el not in ("C", "H"))
        return sorted(self._counts)

    # ------------------------------------------------------------------ arithmetic
    def __add__(self, other: "Formula") -> "Formula":
        other = _coerce(other)
        if other is NotImplemented:
            return NotImplemented
        out = dict(self._counts)
        for el, c in other._counts.items():
            out[el] = out.get(el, 0) + c
        return Formula(out)

    def __sub__(self, other: "Formula") -> "Formula":
        other = _coerce(other)
        if other is NotImplemented:
            return NotImplemented
        out = dict(self._counts)
        for el, c in other._counts.items():
            out[el] = out.get(el, 0) - c
        negative = {el: c for el, c in out.items() if c < 0}
        if negative:
            raise FormulaError(f"cannot subtract {other.hill()} from {self.hill()}: negative count(s) "
                               + ", ".join(f"{el}{c}" for el, c in negative.items()))
        return Formula(out)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Formula):
            return self._counts == other._counts
        return NotImplemented

    def __hash__(self) -> int:
        return self._hash

    def __str__(self) -> str:
        return self.hill()

    def __repr__(self) -> str:
        return f"Formula({self.hill()!r})"

    def __reduce__(self):
        return (Formula, (dict(self._counts),))


def _term(element: str, count: int) -> str:
    return element if count == 1 else f"{element}{count}"


def _coerce(other) -> "Formula":
    if isinstance(other, Formula):
        return other
    if isinstance(other, str):
        return Formula.parse(other)
    return NotImplemented
