"""Labelled spectra (spectra with their known structure) and the fold a file name announces.

Used by evaluation (``evaluate``, ``calibrate``, ``evaluate-decoder``), the MassSpecGym adapter and the training
commands; it imports nothing of ``train/``. Readers yield :class:`LabelledSpectrum` records from

* MGF files with ``TITLE``, ``PEPMASS``, ``ADDUCT``, ``FORMULA``, ``SMILES``, ``INCHIKEY``, ``IONMODE``,
  ``INSTRUMENT_TYPE``, ``FOLD``, ... (the MassBank folds DiffMS's authors distribute): :func:`read_mgf`;
* MassSpecGym TSV files (``identifier``, ``mzs``, ``intensities``, ``formula``, ``adduct``, ``precursor_mz``,
  ``smiles``, ``inchikey``, ``fold``, ...): :func:`read_massspecgym_tsv`;
* SIRIUS/MIST dataset folders (``labels.tsv`` + ``spec_files/<spec>.ms`` + optional split file):
  :func:`read_mist_folder`;

and :func:`read_labelled` picks the reader from the path. :func:`read_smiles` reads molecule lists
(``.smi``/``.smi.gz``). :func:`fold_from_name` reads the fold a file name announces (``massbank_val.mgf``:
``val``); the fold guard of the training commands (``train/data.py``) builds on it.
"""
from __future__ import annotations

import csv
import gzip
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

# Fold names that are not the training fold (MIST's "exclude" is not a leak, just unused).
EVAL_FOLDS = frozenset({"val", "valid", "validation", "test", "holdout"})
_FOLD_ALIASES = {"valid": "val", "validation": "val"}


# ------------------------------------------------------------------------------------------------ record
@dataclass
class LabelledSpectrum:
    """One MS/MS spectrum with its known structure.

    Attributes
    ----------
    id
        Spectrum identifier (MGF ``TITLE``, MassSpecGym ``identifier``, MIST ``spec``).
    mz, intensity
        Peak arrays (float64, as in the source; not sorted, normalised or merged).
    precursor_mz
        Precursor m/z (``None`` if the source has none).
    adduct
        Precursor adduct string as written in the source (spaces removed).
    formula
        Neutral molecular formula.
    smiles, inchikey
        The structure.
    ionmode
        ``"positive"``/``"negative"`` (from the source, else from the adduct's charge sign).
    instrument
        Instrument type, free text.
    fold
        ``train``/``val``/``test``/... where the source tells (``valid``/``validation`` become ``val``).
    metadata
        Every other field of the source (lower-case keys, string values).
    """

    id: str
    mz: np.ndarray
    intensity: np.ndarray
    precursor_mz: float | None
    adduct: str | None
    formula: str | None
    smiles: str | None
    inchikey: str | None
    ionmode: str | None
    instrument: str | None
    fold: str | None = None
    metadata: dict = field(default_factory=dict)

    def to_spectrum(self):
        """This record as a matchms ``Spectrum`` (peaks sorted by m/z; metadata keys in matchms naming)."""
        from matchms import Spectrum

        order = np.argsort(self.mz, kind="stable")
        metadata = dict(self.metadata)
        metadata.update({"spectrum_id": self.id, "precursor_mz": self.precursor_mz, "adduct": self.adduct,
                         "formula": self.formula, "smiles": self.smiles, "inchikey": self.inchikey,
                         "ionmode": self.ionmode, "instrument_type": self.instrument, "fold": self.fold})
        metadata = {k: v for k, v in metadata.items() if v is not None}
        if "charge" not in metadata and self.ionmode in ("positive", "negative"):
            metadata["charge"] = 1 if self.ionmode == "positive" else -1
        return Spectrum(mz=np.asarray(self.mz, dtype=float)[order],
                        intensities=np.asarray(self.intensity, dtype=float)[order], metadata=metadata)


def _clean(value) -> str | None:
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def normalise_fold(value) -> str | None:
    """A fold name in lower case, ``valid``/``validation`` as ``val``; ``None`` for an empty value."""
    value = _clean(value)
    if value is None:
        return None
    value = value.lower()
    return _FOLD_ALIASES.get(value, value)


def _float(value, what: str, where: str) -> float | None:
    value = _clean(value)
    if value is None:
        return None
    try:
        return float(value.split()[0])
    except ValueError:
        raise ValueError(f"{where}: cannot read {what} {value!r}") from None


def _adduct_str(value) -> str | None:
    value = _clean(value)
    return "".join(value.split()) if value else None


def _ionmode(value, adduct: str | None) -> str | None:
    value = _clean(value)
    if value:
        low = value.lower()
        if low in ("positive", "pos", "+", "p"):
            return "positive"
        if low in ("negative", "neg", "-", "n"):
            return "negative"
        return low
    if adduct:
        if adduct.endswith("+") or adduct.endswith("+*"):
            return "positive"
        if adduct.endswith("-"):
            return "negative"
    return None


def _open_text(path: Path):
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


# ------------------------------------------------------------------------------------------------ MGF
_MGF_KEYS = {  # MGF key (lower case) -> record field
    "title": "id", "pepmass": "precursor_mz", "precursor_mz": "precursor_mz", "precursormz": "precursor_mz",
    "adduct": "adduct", "precursor_type": "adduct", "precursortype": "adduct",
    "formula": "formula", "smiles": "smiles", "inchikey": "inchikey", "ionmode": "ionmode",
    "instrument_type": "instrument", "instrument": "instrument", "fold": "fold",
}


def _record_from_fields(fields: dict, mz: list, intensity: list, where: str, default_id: str) -> LabelledSpectrum:
    values: dict = {}
    extra: dict = {}
    for key, value in fields.items():
        target = _MGF_KEYS.get(key)
        if target is None:
            extra[key] = value
        elif target not in values:  # first synonym wins (e.g. TITLE before a later key)
            values[target] = value
    adduct = _adduct_str(values.get("adduct"))
    return LabelledSpectrum(
        id=_clean(values.get("id")) or _clean(fields.get("spectrum_id")) or _clean(fields.get("feature_id"))
        or default_id,
        mz=np.asarray(mz, dtype=np.float64), intensity=np.asarray(intensity, dtype=np.float64),
        precursor_mz=_float(values.get("precursor_mz"), "precursor m/z", where), adduct=adduct,
        formula=_clean(values.get("formula")), smiles=_clean(values.get("smiles")),
        inchikey=_clean(values.get("inchikey")), ionmode=_ionmode(values.get("ionmode"), adduct),
        instrument=_clean(values.get("instrument")), fold=normalise_fold(values.get("fold")), metadata=extra)


def _read_mgf_plain(path: Path) -> Iterator[LabelledSpectrum]:
    """Plain-text MGF parser (keys case-insensitive; peak lines 'm/z intensity [...]')."""
    fields: dict | None = None
    mz: list[float] = []
    intensity: list[float] = []
    index = 0
    with _open_text(path) as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.strip()
            if not line or line[0] in "#;!":
                continue
            if fields is None:
                if line.upper() == "BEGIN IONS":
                    fields, mz, intensity = {}, [], []
                continue
            upper = line.upper()
            if upper == "END IONS":
                where = f"{path}:{lineno}"
                yield _record_from_fields(fields, mz, intensity, where, f"{path.stem}:{index}")
                index += 1
                fields = None
                continue
            if "=" in line and not line[0].isdigit():
                key, value = line.split("=", 1)
                fields[key.strip().lower()] = value.strip()
                continue
            parts = line.split()
            try:
                mz.append(float(parts[0]))
                intensity.append(float(parts[1]) if len(parts) > 1 else 1.0)
            except (ValueError, IndexError):
                raise ValueError(f"{path}:{lineno}: cannot read peak line {line!r}") from None
    if fields is not None:
        raise ValueError(f"{path}: last entry has no END IONS")


def _read_mgf_matchms(path: Path) -> Iterator[LabelledSpectrum]:
    """MGF through matchms (``metadata_harmonization=False``: keys only lower-cased, nothing renamed)."""
    from matchms.importing import load_from_mgf

    for index, spectrum in enumerate(load_from_mgf(str(path), metadata_harmonization=False)):
        fields = {}
        for key, value in spectrum.metadata.items():
            if isinstance(value, (tuple, list)):   # pepmass (mz, intensity), charge [1]
                value = value[0] if value else None
            fields[key] = None if value is None else str(value)
        charge = fields.get("charge")
        if charge is not None and charge.lstrip("+-").isdigit():  # an int: write it the MGF way ('1+')
            fields["charge"] = f"{abs(int(charge))}{'-' if int(charge) < 0 else '+'}"
        yield _record_from_fields(fields, spectrum.peaks.mz, spectrum.peaks.intensities, f"{path}[{index}]",
                                  f"{path.stem}:{index}")


def read_mgf(path, backend: str = "plain") -> Iterator[LabelledSpectrum]:
    """Labelled spectra of an MGF file.

    Parameters
    ----------
    path
        MGF file (``.mgf`` or ``.mgf.gz``).
    backend
        ``"plain"`` (built-in parser, about 3x faster) or ``"matchms"`` (``load_from_mgf`` without metadata
        harmonization); both give identical records on the MassBank files (tested).

    Yields
    ------
    LabelledSpectrum
        ``TITLE`` -> id, ``PEPMASS`` (first value) -> precursor_mz, ``INSTRUMENT_TYPE`` -> instrument; keys
        without a field (charge, collision_energy, license, name, ...) go to ``metadata`` as strings.
    """
    path = Path(path)
    if backend == "plain":
        return _read_mgf_plain(path)
    if backend == "matchms":
        return _read_mgf_matchms(path)
    raise ValueError(f"unknown MGF backend {backend!r}; use 'plain' or 'matchms'")


# ------------------------------------------------------------------------------------------------ MassSpecGym
def _floats(text: str, what: str, where: str) -> np.ndarray:
    text = (text or "").strip()
    if not text:
        return np.zeros(0, dtype=np.float64)
    try:
        return np.array([float(v) for v in text.split(",")], dtype=np.float64)
    except ValueError:
        raise ValueError(f"{where}: cannot read {what}") from None


def read_massspecgym_tsv(path) -> Iterator[LabelledSpectrum]:
    """Labelled spectra of a MassSpecGym TSV (``MassSpecGym.tsv`` column layout, optionally gzipped).

    ``mzs``/``intensities`` are comma-joined strings; ``formula`` is the neutral formula, ``instrument_type``
    becomes ``instrument``; the ion mode follows from the adduct. Other columns (``precursor_formula``,
    ``parent_mass``, ``collision_energy``, ``simulation_challenge``, ...) go to ``metadata``.
    """
    path = Path(path)
    known = {"identifier", "mzs", "intensities", "precursor_mz", "adduct", "formula", "smiles", "inchikey",
             "instrument_type", "fold", "ionmode"}
    with _open_text(path) as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        missing = {"identifier", "mzs", "intensities"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: not a MassSpecGym TSV, missing columns {sorted(missing)}")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            mz = _floats(row["mzs"], "mzs", where)
            intensity = _floats(row["intensities"], "intensities", where)
            if mz.shape != intensity.shape:
                raise ValueError(f"{where}: {mz.size} m/z values but {intensity.size} intensities")
            adduct = _adduct_str(row.get("adduct"))
            yield LabelledSpectrum(
                id=_clean(row["identifier"]) or f"{path.stem}:{reader.line_num}", mz=mz, intensity=intensity,
                precursor_mz=_float(row.get("precursor_mz"), "precursor_mz", where), adduct=adduct,
                formula=_clean(row.get("formula")), smiles=_clean(row.get("smiles")),
                inchikey=_clean(row.get("inchikey")), ionmode=_ionmode(row.get("ionmode"), adduct),
                instrument=_clean(row.get("instrument_type")), fold=normalise_fold(row.get("fold")),
                metadata={k: v for k, v in row.items() if k not in known and k is not None and v not in (None, "")})


# ------------------------------------------------------------------------------------------------ MIST
def parse_ms_file(path) -> tuple[dict, np.ndarray, np.ndarray]:
    """Read a SIRIUS ``.ms`` file.

    ``>key value`` lines before the peak blocks are metadata (``parentmass``, ``ionization``, ``formula``,
    ...; keys lower-cased). A line starting with ``>ms2`` (``>ms2peaks``, ``>ms2merged``) or ``>collision``
    opens an MS2 peak block, ``>ms1...`` an MS1 block (ignored); blocks hold ``m/z intensity`` lines. The peaks
    of all MS2 blocks are concatenated in file order (the subformula step merges duplicates).

    Returns
    -------
    (dict, np.ndarray, np.ndarray)
        Metadata, m/z, intensity.
    """
    path = Path(path)
    meta: dict[str, str] = {}
    mz: list[float] = []
    intensity: list[float] = []
    block = None  # None (header), "ms1", "ms2"
    with _open_text(path) as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.strip()
            if not line:
                continue
            if line.startswith("#"):       # '##key value' comments / extra metadata are not used
                continue
            if line.startswith(">"):
                key, _, value = line[1:].partition(" ")
                low = key.lower()
                if low.startswith("ms2") or low == "collision":
                    block = "ms2"
                elif low.startswith("ms1"):
                    block = "ms1"
                else:
                    block = None
                    meta.setdefault(low, value.strip())
                continue
            if block is None:
                raise ValueError(f"{path}:{lineno}: peak line outside a peak block: {line!r}")
            if block == "ms2":
                parts = line.split()
                try:
                    mz.append(float(parts[0]))
                    intensity.append(float(parts[1]))
                except (ValueError, IndexError):
                    raise ValueError(f"{path}:{lineno}: cannot read peak line {line!r}") from None
    return meta, np.asarray(mz, dtype=np.float64), np.asarray(intensity, dtype=np.float64)


def _read_table(path: Path) -> list[dict]:
    """Rows of a TSV or CSV file (separator guessed from the header line)."""
    with _open_text(path) as fh:
        text = fh.read()
    header = text.split("\n", 1)[0]
    delimiter = "\t" if "\t" in header else ","
    return list(csv.DictReader(io.StringIO(text), delimiter=delimiter))


def read_split_file(path) -> dict[str, str]:
    """``{spectrum name: fold}`` of a MIST split file (columns ``name`` or ``spec`` and ``split`` or ``fold``)."""
    path = Path(path)
    rows = _read_table(path)
    if not rows:
        return {}
    cols = set(rows[0])
    name_col = next((c for c in ("name", "spec", "identifier") if c in cols), None)
    fold_col = next((c for c in ("split", "fold") if c in cols), None)
    if name_col is None or fold_col is None:
        raise ValueError(f"{path}: split file needs columns name/spec and split/fold, found {sorted(cols)}")
    return {row[name_col].strip(): normalise_fold(row[fold_col]) for row in rows}


def read_mist_folder(directory, split_file=None) -> Iterator[LabelledSpectrum]:
    """Labelled spectra of a SIRIUS/MIST dataset folder.

    Parameters
    ----------
    directory
        Folder with ``labels.tsv`` (columns ``spec``, ``formula``, ``smiles``, ``inchikey``, ``ionization``,
        optional ``instrument``; others such as ``dataset`` go to metadata) and ``spec_files/<spec>.ms``.
    split_file
        Optional split table (``name``/``split``); a relative path is looked up in ``directory`` too. Specs
        missing from it get ``fold=None``.

    Notes
    -----
    ``labels.tsv`` wins over the ``.ms`` header for formula, SMILES, InChIKey, adduct and instrument; the
    precursor m/z is the ``>parentmass`` line.
    """
    directory = Path(directory)
    labels_path = directory / "labels.tsv"
    if not labels_path.is_file():
        raise FileNotFoundError(f"{directory}: no labels.tsv (not a MIST dataset folder)")
    folds: dict[str, str] = {}
    if split_file is not None:
        split_path = Path(split_file)
        if not split_path.is_absolute() and not split_path.exists():
            split_path = directory / split_path
        folds = read_split_file(split_path)
    known = {"spec", "formula", "smiles", "inchikey", "ionization", "instrument"}
    for row in _read_table(labels_path):
        spec = _clean(row.get("spec"))
        if spec is None:
            raise ValueError(f"{labels_path}: row without spec name: {row}")
        ms_path = directory / "spec_files" / f"{spec}.ms"
        meta, mz, intensity = parse_ms_file(ms_path)
        adduct = _adduct_str(row.get("ionization")) or _adduct_str(meta.get("ionization"))
        extra = {k: v for k, v in row.items() if k not in known and k is not None and v not in (None, "")}
        extra.update({f"ms_{k}": v for k, v in meta.items()
                      if k not in ("parentmass", "ionization", "formula", "smiles", "inchikey", "instrument")})
        yield LabelledSpectrum(
            id=spec, mz=mz, intensity=intensity,
            precursor_mz=_float(meta.get("parentmass"), "parentmass", str(ms_path)), adduct=adduct,
            formula=_clean(row.get("formula")) or _clean(meta.get("formula")),
            smiles=_clean(row.get("smiles")) or _clean(meta.get("smiles")),
            inchikey=_clean(row.get("inchikey")) or _clean(meta.get("inchikey")),
            ionmode=_ionmode(None, adduct),
            instrument=_clean(row.get("instrument")) or _clean(meta.get("instrument")),
            fold=folds.get(spec), metadata=extra)


# ------------------------------------------------------------------------------------------------ dispatch
def read_labelled(path, *, split_file=None, backend: str = "plain") -> Iterator[LabelledSpectrum]:
    """Labelled spectra of ``path``: a MIST folder, an ``.mgf[.gz]`` or a MassSpecGym ``.tsv[.gz]``."""
    path = Path(path)
    if path.is_dir():
        return read_mist_folder(path, split_file=split_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if split_file is not None:
        raise ValueError("split_file applies to MIST folders only")
    name = path.name.lower()
    if name.endswith((".mgf", ".mgf.gz")):
        return read_mgf(path, backend=backend)
    if name.endswith((".tsv", ".tsv.gz")):
        return read_massspecgym_tsv(path)
    raise ValueError(f"{path}: unknown format (expected a MIST folder, .mgf or MassSpecGym .tsv)")


def read_smiles(path, limit: int | None = None) -> Iterator[str]:
    """SMILES of a molecule list (``.smi`` or ``.smi.gz``): first whitespace-separated column of each line.

    Empty lines, ``#`` comments and a header line whose first column is ``smiles`` are skipped; further
    columns are ignored. ``limit`` stops after that many SMILES.
    """
    path = Path(path)
    n = 0
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            if lineno == 1 and parts[0].lower() == "smiles":
                continue
            if limit is not None and n >= limit:
                return
            n += 1
            yield parts[0]


# ------------------------------------------------------------------------------------------------ fold names
_TOKEN_SPLIT = re.compile(r"[^a-z0-9]+")


def name_tokens(path) -> set[str]:
    """The lower-case alphanumeric tokens of the name of ``path`` (``massbank_val.mgf``: massbank, val, mgf)."""
    return set(_TOKEN_SPLIT.split(Path(path).name.lower()))


def fold_from_name(path) -> str | None:
    """The evaluation fold a file or folder name announces (``val``/``test``/``holdout``), else ``None``.

    The name is split into alphanumeric tokens (``massbank_val.mgf`` -> ``massbank``, ``val``, ``mgf``), so
    ``latest.mgf`` or ``contest.tsv`` do not count.
    """
    tokens = name_tokens(path)
    for token in ("val", "valid", "validation", "test", "holdout"):
        if token in tokens:
            return _FOLD_ALIASES.get(token, token)
    return None
