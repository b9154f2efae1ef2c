"""Reading spectrum files, robustly, for every command that reads spectra.

:func:`read_spectra` reads .mgf, .msp, .json (matchms/GNPS JSON), .mzML and .mzXML with matchms. MGF, MSP
and JSON records that cannot be parsed are skipped with a warning naming the record (the whole file is
read again record by record when matchms fails on it or loses records); a file that cannot be read at all
raises :class:`InputError` with a one-line message. :func:`check_input` and :func:`output_writer` validate
the paths of a command before any work.

No click here: the command line turns :class:`InputError` into exit code 2 and :class:`RunError` into 1.
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
import tempfile
from pathlib import Path

logger = logging.getLogger("matchms.diffms")

INPUT_FORMATS = {".mgf": "mgf", ".msp": "msp", ".json": "json", ".mzml": "mzml", ".mzxml": "mzxml"}

__all__ = ["InputError", "RunError", "INPUT_FORMATS", "read_spectra", "write_spectra", "check_input",
           "output_writer", "one_line"]


class InputError(Exception):
    """A usage or input problem (unreadable or unknown file, unknown output format): a one-line message."""


class RunError(Exception):
    """A failure while running (an output or checkpoint cannot be written): a one-line message."""


def one_line(err: BaseException) -> str:
    """``"<type>: <message>"`` of an exception on one line."""
    return " ".join(f"{type(err).__name__}: {err}".split())


def check_input(input_path) -> Path:
    """Check that ``input_path`` is a readable spectrum file of a known type, before any work.

    Raises
    ------
    InputError
    """
    input_path = Path(input_path)
    if not input_path.exists():
        raise InputError(f"cannot read {input_path}: no such file")
    if not input_path.is_file():
        raise InputError(f"cannot read {input_path}: not a file")
    if not os.access(input_path, os.R_OK):
        raise InputError(f"cannot read {input_path}: permission denied")
    if input_path.suffix.lower() not in INPUT_FORMATS:
        raise InputError(f"cannot read {input_path}: unknown spectrum file type {input_path.suffix!r} "
                         f"(supported: .mgf, .msp, .json, .mzML, .mzXML)")
    return input_path


def output_writer(output_path, input_path=None):
    """The writer of an output file (by extension, from the ``diffms_output_writers`` plugins), after checking
    that its folder exists and that it is not the input file.

    Raises
    ------
    InputError
    """
    from .plugins import output_writers

    output_path = Path(output_path)
    if input_path is not None and output_path.exists() and output_path.resolve() == Path(input_path).resolve():
        raise InputError(f"OUTPUT {output_path} is the INPUT file; choose another name (INPUT is never modified)")
    writers = output_writers()
    writer = writers.get(output_path.suffix.lower())
    if writer is None:
        raise InputError(f"cannot write {output_path}: unknown output format {output_path.suffix!r} "
                         f"(supported: {', '.join(sorted(writers))})")
    folder = output_path.parent if str(output_path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"cannot write {output_path}: folder {folder} does not exist")
    return writer


def write_spectra(spectra, path) -> Path:
    """Write spectra with the output writer of the file's extension (``.mgf``, ``.msp``, ``.json``, ``.tsv``
    or a plugin's format), atomically.

    Raises
    ------
    InputError
        Unknown extension or missing folder.
    matchms_diffms.files.OutputError
        The file cannot be written.
    """
    output_writer(path)(list(spectra), path)
    return Path(path)


def read_spectra(path) -> list:
    """Read all spectra of a spectrum file with matchms (format from the extension).

    MGF, MSP and JSON records that cannot be parsed are skipped with a warning naming the record; a file
    that is not valid UTF-8, holds no spectrum, or cannot be parsed at all raises :class:`InputError`.

    Parameters
    ----------
    path
        .mgf, .msp, .json, .mzML or .mzXML file.

    Returns
    -------
    list of matchms.Spectrum
    """
    path = Path(path)
    kind = INPUT_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise InputError(f"cannot read {path}: unknown spectrum file type {path.suffix!r}")
    try:
        if kind in ("mzml", "mzxml"):
            spectra = _read_xml(path, kind)
        else:
            try:
                text = path.read_bytes().decode("utf-8-sig")
            except UnicodeDecodeError as err:
                raise InputError(f"cannot read {path}: not a UTF-8 text file (byte {err.start})") from None
            spectra = {"mgf": _read_mgf, "msp": _read_msp, "json": _read_json}[kind](path, text)
    except InputError:
        raise
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror or err}") from None
    spectra = [s for s in spectra if s is not None]
    if not spectra:
        raise InputError(f"cannot read {path}: no spectra found (is it a {kind.upper()} file?)")
    return spectra


def _read_mgf(path: Path, text: str) -> list:
    """MGF: the whole file at once; record by record when that fails or loses records."""
    from matchms.importing import load_from_mgf

    starts = [m.start() for m in re.finditer(r"^[ \t]*BEGIN IONS[ \t]*\r?$", text, flags=re.MULTILINE)]
    try:
        spectra = list(load_from_mgf(io.StringIO(text)))
        if len(spectra) == len(starts):
            return spectra
        logger.warning("%s: %d of %d records read; reading the file record by record", path, len(spectra),
                       len(starts))
    except Exception as err:  # pyteomics raises its own error types for malformed records
        logger.warning("%s: %s; reading the file record by record", path, one_line(err))
    spectra = []
    for number, (begin, end) in enumerate(zip(starts, starts[1:] + [len(text)]), start=1):
        chunk = text[begin:end]
        m = re.search(r"^[ \t]*END IONS[ \t]*\r?$", chunk, flags=re.MULTILINE)
        if m is None:
            logger.warning("%s: record %d skipped: no END IONS line before the next BEGIN IONS or the end of "
                           "the file", path, number)
            continue
        _load_record(spectra, path, number, lambda: load_from_mgf(io.StringIO(chunk[:m.end()] + "\n")))
    return spectra


def _load_record(spectra: list, path: Path, number: int, load) -> None:
    """Append the spectrum of one record, or log why the record is skipped."""
    try:
        found = list(load())
    except Exception as err:  # skip this record only
        logger.warning("%s: record %d skipped: %s", path, number, one_line(err))
        return
    if not found:
        logger.warning("%s: record %d skipped: matchms read no spectrum from it (no peaks, or a peak count that "
                       "does not match the peak lines)", path, number)
    spectra.extend(found)


def _read_msp(path: Path, text: str) -> list:
    """MSP: the whole file at once; record by record (blank-line separated) when that fails or loses
    records."""
    from matchms.importing import load_from_msp

    records = [r for r in re.split(r"\n[ \t]*\r?\n", text.replace("\r\n", "\n")) if r.strip()]
    try:
        spectra = list(load_from_msp(str(path)))
        if len(spectra) == len(records):
            return spectra
        logger.warning("%s: %d of %d records read; reading the file record by record", path, len(spectra),
                       len(records))
    except Exception as err:  # matchms raises KeyError / RuntimeError / ValueError for malformed records
        logger.warning("%s: %s; reading the file record by record", path, one_line(err))
    spectra = []
    with tempfile.TemporaryDirectory() as folder:
        record_path = os.path.join(folder, "record.msp")
        for number, record in enumerate(records, start=1):
            with open(record_path, "w", encoding="utf-8") as fh:
                fh.write(record.strip() + "\n\n")
            _load_record(spectra, path, number, lambda: load_from_msp(record_path))
    return spectra


def _read_json(path: Path, text: str) -> list:
    from matchms.importing.load_from_json import as_spectrum

    try:
        records = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"cannot read {path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if isinstance(records, dict):
        records = [records]
    if not isinstance(records, list):
        raise InputError(f"cannot read {path}: expected a JSON list of spectra")
    spectra = []
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            logger.warning("%s: record %d skipped: not a JSON object", path, number)
            continue
        try:
            spectrum = as_spectrum(record)
        except Exception as err:  # skip this record only
            logger.warning("%s: record %d skipped: %s", path, number, one_line(err))
            continue
        if spectrum is None:
            logger.warning("%s: record %d skipped: no peaks_json", path, number)
            continue
        spectra.append(spectrum)
    return spectra


def _read_xml(path: Path, kind: str) -> list:
    try:
        from matchms.importing import load_from_mzml, load_from_mzxml
        import lxml  # noqa: F401  (needed by pyteomics' mzML / mzXML readers)
        import pyteomics  # noqa: F401
    except ImportError as err:
        raise InputError(f"cannot read {path}: reading {kind} needs pyteomics and lxml ({err}); "
                         "install them with 'pip install pyteomics lxml'") from None
    loader = load_from_mzml if kind == "mzml" else load_from_mzxml
    try:
        return list(loader(str(path)))
    except Exception as err:  # lxml / pyteomics parse errors: the whole file is unreadable
        raise InputError(f"cannot read {path}: {one_line(err)}") from None
