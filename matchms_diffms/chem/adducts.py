"""Precursor adducts: the supported table, parsing of matchms-style strings, m/z arithmetic.

Names follow matchms notation (``[M+H]+``, ``[M+NH4]+``, ``[M-H]-``). The official DiffMS encoder knows
seven positive adducts under slightly different names (``[M+H3N+H]+`` for ``[M+NH4]+``); see
:func:`official_name` and :data:`OFFICIAL_ADDUCTS` (the encoder's adduct embedding has one row per entry of
that list, in that order).

Mass convention (the one of the subformula assignment): ion mass = neutral mass + ``Adduct.mass_shift``, where
``mass_shift`` = signed sum of the most-common-isotope masses of the atoms added/removed, minus the electron
mass 0.00054858 for a cation and plus it for an anion. All supported adducts are singly charged, so the ion
mass is also the m/z.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .formula import ELEMENTS_18, Formula, FormulaError, element_mass
from .tables import OFFICIAL_ADDUCTS

__all__ = [
    "ELECTRON_MASS",
    "OFFICIAL_ADDUCTS",
    "Adduct",
    "UnsupportedAdductError",
    "SUPPORTED_ADDUCTS",
    "parse_adduct",
    "official_name",
    "official_index",
    "precursor_mz",
    "neutral_mass",
    "ion_formula",
    "default_adduct",
]

ELECTRON_MASS = 0.00054858



class UnsupportedAdductError(ValueError):
    """An adduct string that is malformed or not in the supported table."""


def _shift(net: dict[str, int], charge: int) -> float:
    """Mass added to the neutral molecule: atoms of ``net`` (heavy elements in ELEMENTS_18 order, H last),
    then the electron mass (subtracted for cations, added for anions).

    The order reproduces the reference expressions bit for bit (e.g. ``-O - H - e`` for [M-H2O+H]+,
    ``N + 4 H - e`` for [M+H3N+H]+).
    """
    order = [el for el in ELEMENTS_18 if el != "H"] + ["H"]
    unknown = set(net) - set(order)
    if unknown:
        raise ValueError(f"adduct elements outside the supported set: {sorted(unknown)}")
    mass = 0.0
    for el in order:
        if net.get(el, 0):
            mass = mass + net[el] * element_mass(el)
    return mass - ELECTRON_MASS if charge > 0 else mass + ELECTRON_MASS


@dataclass(frozen=True)
class Adduct:
    """One supported precursor adduct (singly charged, one molecule M).

    Attributes
    ----------
    name
        Canonical name in matchms notation, e.g. ``"[M+NH4]+"``.
    charge
        +1 or -1.
    add, remove
        Atoms added to / removed from the neutral molecule M.
    mass_shift
        Ion mass minus neutral mass, electron mass included.
    official_index
        Slot in the official encoder's adduct one-hot (``None`` for adducts the official models lack).
    matchms_name
        The name in matchms' ``known_adducts_table.csv`` (differs from ``name`` for two adducts).
    """

    name: str
    charge: int
    add: Formula
    remove: Formula
    mass_shift: float = field(init=False)
    official_index: int | None = None
    matchms_name: str = ""

    def __post_init__(self):
        if self.charge not in (1, -1):
            raise ValueError(f"only singly charged adducts are supported, got charge {self.charge}")
        net = dict(self.add.counts)
        for el, c in self.remove.counts.items():
            net[el] = net.get(el, 0) - c
        object.__setattr__(self, "mass_shift", _shift(net, self.charge))
        if not self.matchms_name:
            object.__setattr__(self, "matchms_name", self.name)

    @property
    def ionmode(self) -> str:
        """``"positive"`` or ``"negative"``."""
        return "positive" if self.charge > 0 else "negative"

    @property
    def net(self) -> dict[str, int]:
        """Signed element change of M (add minus remove), zero entries dropped."""
        net = dict(self.add.counts)
        for el, c in self.remove.counts.items():
            net[el] = net.get(el, 0) - c
        return {el: c for el, c in net.items() if c}

    def __str__(self) -> str:
        return self.name


def _adduct(name, charge, add="", remove="", official_index=None, matchms_name=""):
    return Adduct(name, charge, Formula.parse(add) if add else Formula(), Formula.parse(remove) if remove else Formula(),
                  official_index, matchms_name)


# The supported adducts, in table order (positive first).
SUPPORTED_ADDUCTS: dict[str, Adduct] = {a.name: a for a in [
    _adduct("[M+H]+", 1, "H", official_index=0),
    _adduct("[M+Na]+", 1, "Na", official_index=1),
    _adduct("[M+K]+", 1, "K", official_index=2),
    _adduct("[M-H2O+H]+", 1, "H", "H2O", official_index=3),
    _adduct("[M+NH4]+", 1, "NH4", official_index=4),
    _adduct("[M]+", 1, official_index=5),
    _adduct("[M-H4O2+H]+", 1, "H", "H4O2", official_index=6, matchms_name="[M-2H2O+H]+"),
    _adduct("[M-H]-", -1, "", "H"),
    _adduct("[M+Cl]-", -1, "Cl"),
    _adduct("[M+HCOO]-", -1, "CHO2", matchms_name="[M+FA-H]-"),
    _adduct("[M-H2O-H]-", -1, "", "H3O"),
]}

_OFFICIAL_SPELLING = {"[M+NH4]+": "[M+H3N+H]+"}

# Abbreviations that appear in adduct strings (matchms, GNPS, MassBank).
_GROUPS = {
    "FA": "CH2O2",       # formic acid
    "ACN": "C2H3N",      # acetonitrile
    "Hac": "C2H4O2",     # acetic acid
    "HAc": "C2H4O2",
    "TFA": "C2HF3O2",    # trifluoroacetic acid
    "DMSO": "C2H6OS",
    "IsoProp": "C3H8O",  # isopropanol
    "MeOH": "CH4O",
}

_ADDUCT_RE = re.compile(
    r"^(?P<open>\[?)(?P<mult>\d*)M(?P<terms>(?:[+-]\d*[A-Za-z][A-Za-z0-9()]*)*)(?P<close>\]?)"
    r"(?P<charge>\d*[+-]|[+-]\d+)?(?P<radical>[*.\u2022])?$"
)
_TERM_RE = re.compile(r"([+-])(\d*)([A-Za-z][A-Za-z0-9()]*)")


def _net_key(net: dict[str, int]) -> frozenset:
    return frozenset((el, c) for el, c in net.items() if c)


_BY_NET: dict[tuple[frozenset, int], Adduct] = {(_net_key(a.net), a.charge): a for a in SUPPORTED_ADDUCTS.values()}


def _supported_list() -> str:
    return ", ".join(SUPPORTED_ADDUCTS)


def parse_adduct(text: "str | Adduct") -> Adduct:
    """Parse a matchms / GNPS / MIST style adduct string into a supported :class:`Adduct`.

    Spaces are removed; the adduct is identified by its net atom change and charge, so equivalent spellings
    map to one entry: ``[M+NH4]+``, ``[M+H3N+H]+``, ``M+NH4``; ``[M+H-H2O]+``, ``M-H2O+H``; ``M-2H2O+H``,
    ``[M-H4O2+H]+``; ``[M+FA-H]-``, ``[M+HCOO]-``, ``[M+HCO2]-``, ``[M-H+CH2O2]-``; ``[M]+*`` (radical) ->
    ``[M]+``. A missing charge (``M+H``, ``[M-H]``) is inferred when the atom change identifies one adduct.

    Parameters
    ----------
    text
        Adduct string (or an :class:`Adduct`, returned unchanged).

    Returns
    -------
    Adduct

    Raises
    ------
    UnsupportedAdductError
        Malformed strings, multiply charged ions, multimers (``[2M+H]+``) and adducts outside the table.
    """
    if isinstance(text, Adduct):
        return text
    if not isinstance(text, str):
        raise UnsupportedAdductError(f"adduct must be a string, got {type(text).__name__}")
    s = "".join(text.split())
    if not s:
        raise UnsupportedAdductError("empty adduct string")
    if s in SUPPORTED_ADDUCTS:
        return SUPPORTED_ADDUCTS[s]
    m = _ADDUCT_RE.match(s)
    if m is None or bool(m["open"]) != bool(m["close"]):
        raise UnsupportedAdductError(f"cannot parse adduct {text!r}; supported: {_supported_list()}")
    if m["mult"] not in ("", "1"):
        raise UnsupportedAdductError(f"multimer adduct {text!r} is not supported; supported: {_supported_list()}")
    charge = None
    if m["charge"]:
        digits = m["charge"].strip("+-") or "1"
        sign = 1 if "+" in m["charge"] else -1
        if int(digits) != 1:
            raise UnsupportedAdductError(f"multiply charged adduct {text!r} is not supported (charge must be "
                                         f"1+ or 1-); supported: {_supported_list()}")
        charge = sign
    net: dict[str, int] = {}
    for sign, mult, group in _TERM_RE.findall(m["terms"]):
        try:
            part = Formula.parse(_GROUPS.get(group, group))
        except FormulaError as exc:
            raise UnsupportedAdductError(f"cannot parse adduct {text!r}: {exc}") from None
        k = (int(mult) if mult else 1) * (1 if sign == "+" else -1)
        for el, c in part.counts.items():
            net[el] = net.get(el, 0) + k * c
    key = _net_key(net)
    if charge is not None:
        found = _BY_NET.get((key, charge))
    else:
        if not key:
            raise UnsupportedAdductError(f"adduct {text!r} has no charge; write [M]+")
        matches = [a for (k, _), a in _BY_NET.items() if k == key]
        found = matches[0] if len(matches) == 1 else None
    if found is None:
        raise UnsupportedAdductError(f"adduct {text!r} is not supported; supported: {_supported_list()}")
    return found


def official_name(adduct: "str | Adduct") -> str:
    """The string the official DiffMS/MIST code uses for this adduct (``[M+NH4]+`` -> ``[M+H3N+H]+``)."""
    a = parse_adduct(adduct)
    return _OFFICIAL_SPELLING.get(a.name, a.name)


def official_index(adduct: "str | Adduct") -> int:
    """Slot of the adduct in the official encoder one-hot; UnsupportedAdductError for adducts it lacks."""
    a = parse_adduct(adduct)
    if a.official_index is None:
        raise UnsupportedAdductError(f"adduct {a.name} is not known to the official DiffMS models "
                                     f"(positive mode only: {', '.join(OFFICIAL_ADDUCTS)})")
    return a.official_index


def precursor_mz(formula: "str | Formula", adduct: "str | Adduct") -> float:
    """m/z of the precursor ion: neutral monoisotopic mass + adduct mass shift."""
    return Formula.parse(formula).monoisotopic_mass + parse_adduct(adduct).mass_shift


def neutral_mass(precursor_mz: float, adduct: "str | Adduct") -> float:
    """Neutral monoisotopic mass of M from the precursor m/z (inverse of :func:`precursor_mz`)."""
    return float(precursor_mz) - parse_adduct(adduct).mass_shift


def ion_formula(formula: "str | Formula", adduct: "str | Adduct") -> Formula:
    """Formula of the precursor ion (charge not written), e.g. C8H10N4O2 + [M+H]+ -> C8H11N4O2.

    Raises
    ------
    FormulaError
        When the adduct removes atoms the molecule does not have (e.g. [M-H2O+H]+ of CH4).
    """
    f = Formula.parse(formula)
    a = parse_adduct(adduct)
    try:
        return f + a.add - a.remove
    except FormulaError:
        raise FormulaError(f"adduct {a.name} cannot be formed from {f.hill()}: it removes {a.remove.hill()}") from None


def default_adduct(ionmode: str) -> Adduct:
    """Default adduct of an ion mode: ``positive`` -> [M+H]+, ``negative`` -> [M-H]-."""
    mode = str(ionmode).strip().lower() if ionmode is not None else ""
    if mode == "positive":
        return SUPPORTED_ADDUCTS["[M+H]+"]
    if mode == "negative":
        return SUPPORTED_ADDUCTS["[M-H]-"]
    raise ValueError(f"ion mode must be 'positive' or 'negative', got {ionmode!r}")
