"""Ranking of generated structures: sample frequency and/or fingerprint agreement, calibrated to [0, 1].

DiffMS ranks the valid samples of one spectrum by how often each structure was generated (official
DiffMS: the most frequent structures first). That count is not a probability and ignores the encoder's own prediction. Here every unique
structure (first InChIKey block, i.e. 2D identity) gets

* ``frequency`` = count / n_valid: the fraction of the valid samples that produced it,
* ``tanimoto``  = continuous Tanimoto between its Morgan fingerprint (radius 2, as many bits as the encoder
  predicts: 2048 for the default weights, 4096 for the official checkpoints) and the encoder's predicted bit
  probabilities ``p``::

      T(b, p) = sum_i min(b_i, p_i) / sum_i max(b_i, p_i)

  For a binary ``b`` this is ``sum(p over set bits) / (n_set_bits + sum(p over unset bits))``; it equals
  the ordinary Tanimoto when ``p`` is binary, and it uses the probabilities without choosing a threshold.
* ``raw_score`` = ``frequency_weight * frequency + (1 - frequency_weight) * tanimoto``; the ranking choice
  sets the weight: ``frequency`` 1 (DiffMS's ranking), ``fingerprint`` 0 (the default), ``combined`` 0.5,
* ``score`` = ``calibration(raw_score)``, a monotone map to [0, 1].

Candidates are ordered by raw score (descending), ties in first-seen order. A fitted calibration
(``calibration.json`` in a weights folder, see :func:`fit_calibration`) turns the raw score into the
estimated probability that the candidate is the correct structure (2D InChIKey match); without one the
identity map clipped to [0, 1] is used, and the score is only a relative measure.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from rdkit import Chem
from rdkit.Chem import rdFingerprintGenerator

logger = logging.getLogger("matchms.diffms")

FREQUENCY_WEIGHT = 0.5
RANKINGS = {"frequency": 1.0, "fingerprint": 0.0, "combined": FREQUENCY_WEIGHT}   # ranking -> frequency weight
DEFAULT_RANKING = "fingerprint"   # chosen on 50 val structures (benchmarks/README.md (d)); cli.py repeats it
_SOURCE_ORDER = {"sampled": 0, "decoded": 1}
FP_BITS = 4096             # default length of morgan_bits; ranking uses the encoder's length
FP_RADIUS = 2
CALIBRATION_FILE = "calibration.json"


# ----------------------------------------------------------------------------------------- candidates
@dataclass
class Candidate:
    """One ranked structure proposed for a spectrum.

    Attributes
    ----------
    smiles
        Canonical non-isomeric SMILES of the first sample that produced this structure.
    inchikey
        Full InChIKey of that molecule (its first block identifies the structure).
    formula
        Molecular formula in Hill notation (neutral, hydrogens included).
    score
        Calibrated score in [0, 1] (see module docstring).
    count
        Number of valid samples with this 2D structure.
    tanimoto
        Continuous Tanimoto between the structure's fingerprint and the predicted fingerprint.
    frequency
        ``count / n_valid``.
    raw_score
        Score before calibration.
    source
        ``sampled`` (every sample of this structure was formula-exact as drawn), ``decoded`` (all came from
        constrained decoding, ``chem.decoding``) or ``sampled+decoded``.
    """

    smiles: str
    inchikey: str
    formula: str
    score: float
    count: int
    tanimoto: float
    frequency: float
    raw_score: float = 0.0
    source: str = "sampled"

    def to_dict(self) -> dict:
        """Plain-Python dict (JSON and matchms metadata safe), floats rounded to 6 decimals."""
        d = asdict(self)
        for key in ("score", "tanimoto", "frequency", "raw_score"):
            d[key] = round(float(d[key]), 6)
        d["count"] = int(d["count"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Candidate":
        """Inverse of :meth:`to_dict`; missing numeric fields default to 0."""
        return cls(smiles=str(d["smiles"]), inchikey=str(d.get("inchikey", "")),
                   formula=str(d.get("formula", "")), score=float(d.get("score", 0.0)),
                   count=int(d.get("count", 0)), tanimoto=float(d.get("tanimoto", 0.0)),
                   frequency=float(d.get("frequency", 0.0)), raw_score=float(d.get("raw_score", 0.0)),
                   source=str(d.get("source", "sampled")))


# ---------------------------------------------------------------------------------------- fingerprints
_MORGAN = rdFingerprintGenerator.GetMorganGenerator(radius=FP_RADIUS, fpSize=FP_BITS)


def morgan_bits(mol: Chem.Mol, n_bits: int = FP_BITS) -> np.ndarray:
    """Morgan radius-2 bit vector of ``mol`` as a ``(n_bits,)`` uint8 array."""
    gen = _MORGAN if n_bits == FP_BITS else rdFingerprintGenerator.GetMorganGenerator(
        radius=FP_RADIUS, fpSize=n_bits)
    return np.asarray(gen.GetFingerprintAsNumPy(mol), dtype=np.uint8)


def continuous_tanimoto(bits: np.ndarray, probs: np.ndarray) -> float:
    """Continuous Tanimoto ``sum(min(b, p)) / sum(max(b, p))`` of two vectors in [0, 1].

    Parameters
    ----------
    bits
        (D,) binary fingerprint of a candidate.
    probs
        (D,) predicted bit probabilities.

    Returns
    -------
    float
        In [0, 1]; 0 when both vectors are all zero.
    """
    b = np.asarray(bits, dtype=np.float64).ravel()
    p = np.asarray(probs, dtype=np.float64).ravel()
    if b.shape != p.shape:
        raise ValueError(f"fingerprint sizes differ: {b.shape} vs {p.shape}")
    den = np.maximum(b, p).sum()
    return float(np.minimum(b, p).sum() / den) if den > 0 else 0.0


# ------------------------------------------------------------------------------------------ calibration
@dataclass
class Calibration:
    """Monotone map from raw candidate scores to [0, 1].

    Methods
    -------
    ``identity``
        ``clip(raw, 0, 1)``.
    ``isotonic``
        Piecewise-linear interpolation through the points (``x``, ``y``) (x increasing, y
        non-decreasing), constant beyond the ends: the result of :func:`fit_calibration` with
        ``method="isotonic"``.
    ``platt``
        ``sigmoid(a * raw + b)``.
    """

    method: str = "identity"
    x: list = field(default_factory=list)
    y: list = field(default_factory=list)
    a: float = 1.0
    b: float = 0.0
    note: str = ""

    def __post_init__(self):
        if self.method not in ("identity", "isotonic", "platt"):
            raise ValueError(f"unknown calibration method {self.method!r}")
        if self.method == "isotonic":
            x, y = np.asarray(self.x, float), np.asarray(self.y, float)
            if len(x) == 0 or x.shape != y.shape:
                raise ValueError("isotonic calibration needs equally long, non-empty x and y")
            if np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0):
                raise ValueError("isotonic calibration needs non-decreasing x and y")

    def __call__(self, raw):
        """Calibrated score(s) for raw score(s) (float in -> float out, array in -> array out)."""
        r = np.asarray(raw, dtype=np.float64)
        if self.method == "identity":
            out = np.clip(r, 0.0, 1.0)
        elif self.method == "isotonic":
            out = np.clip(np.interp(r, self.x, self.y), 0.0, 1.0)
        else:
            out = 1.0 / (1.0 + np.exp(-(self.a * r + self.b)))
        return float(out) if out.ndim == 0 else out

    # serialisation
    def to_dict(self) -> dict:
        return {"method": self.method, "x": [float(v) for v in self.x], "y": [float(v) for v in self.y],
                "a": float(self.a), "b": float(self.b), "note": self.note}

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        return cls(method=d.get("method", "identity"), x=list(d.get("x", [])), y=list(d.get("y", [])),
                   a=float(d.get("a", 1.0)), b=float(d.get("b", 0.0)), note=str(d.get("note", "")))

    def save(self, path) -> None:
        """Write the calibration as JSON (``calibration.json`` in a weights folder)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path) -> "Calibration":
        return cls.from_dict(json.loads(Path(path).read_text()))

    @classmethod
    def for_weights(cls, weights_path) -> "Calibration":
        """The calibration stored beside a model: ``<folder>/calibration.json``, else identity.

        ``weights_path`` is a weights folder or a checkpoint file (then its folder is searched).
        """
        if weights_path is None:
            return cls()
        p = Path(weights_path)
        folder = p if p.is_dir() else p.parent
        f = folder / CALIBRATION_FILE
        if f.is_file():
            logger.info("Using score calibration %s", f)
            return cls.load(f)
        return cls()


def _pool_adjacent_violators(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted least-squares non-decreasing fit of ``y`` (already sorted by x)."""
    values, weights, sizes = [], [], []
    for yi, wi in zip(y, w):
        values.append(float(yi)); weights.append(float(wi)); sizes.append(1)
        while len(values) > 1 and values[-2] > values[-1]:
            v2, w2, s2 = values.pop(), weights.pop(), sizes.pop()
            v1, w1, s1 = values.pop(), weights.pop(), sizes.pop()
            wt = w1 + w2
            values.append((v1 * w1 + v2 * w2) / wt); weights.append(wt); sizes.append(s1 + s2)
    return np.repeat(values, sizes)


def fit_calibration(raw_scores: Sequence[float], correct: Sequence[bool], method: str = "isotonic",
                    note: str = "") -> Calibration:
    """Fit a calibration from validation data.

    Parameters
    ----------
    raw_scores
        Raw scores (``Candidate.raw_score``) of validation candidates (e.g. every top-k candidate of
        every validation spectrum).
    correct
        Whether each candidate is the true structure (2D InChIKey equal).
    method
        ``"isotonic"`` (pool-adjacent-violators, then linear interpolation between block centres)
        or ``"platt"`` (logistic regression on the raw score).
    note
        Free text stored with the calibration (data set, fold, date).

    Returns
    -------
    Calibration
    """
    x = np.asarray(raw_scores, dtype=np.float64).ravel()
    t = np.asarray(correct, dtype=np.float64).ravel()
    if x.shape != t.shape or x.size == 0:
        raise ValueError("raw_scores and correct must be equally long and non-empty")
    if method == "isotonic":
        order = np.argsort(x, kind="stable")
        xs, ts = x[order], t[order]
        # one point per distinct x (mean label), weighted by its multiplicity
        ux, inverse, counts = np.unique(xs, return_inverse=True, return_counts=True)
        means = np.bincount(inverse, weights=ts) / counts
        fitted = _pool_adjacent_violators(means, counts.astype(float))
        # keep one point per constant block end-points so interpolation stays monotone and compact
        keep = np.ones(len(ux), dtype=bool)
        keep[1:-1] = (fitted[1:-1] != fitted[:-2]) | (fitted[1:-1] != fitted[2:])
        return Calibration("isotonic", x=ux[keep].tolist(), y=fitted[keep].tolist(), note=note)
    if method == "platt":
        a, b = _fit_logistic(x, t)
        return Calibration("platt", a=a, b=b, note=note)
    raise ValueError(f"unknown calibration method {method!r}; choose isotonic or platt")


def _fit_logistic(x: np.ndarray, t: np.ndarray, l2: float = 1e-6, n_iter: int = 100) -> tuple[float, float]:
    """Newton-Raphson for ``P(correct) = sigmoid(a x + b)`` with Platt's smoothed targets."""
    n_pos, n_neg = t.sum(), len(t) - t.sum()
    target = np.where(t > 0.5, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    X = np.stack([x, np.ones_like(x)], axis=1)                      # (N, 2)
    w = np.zeros(2)
    for _ in range(n_iter):
        p = 1.0 / (1.0 + np.exp(-(X @ w)))
        grad = X.T @ (p - target) + l2 * w
        hess = (X * (p * (1 - p))[:, None]).T @ X + l2 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return float(w[0]), float(w[1])


def reliability_table(scores: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> list[dict]:
    """Reliability (calibration) table: equal-width bins of the score on [0, 1].

    Parameters
    ----------
    scores
        Calibrated scores in [0, 1].
    correct
        Whether each candidate was correct.
    n_bins
        Number of bins.

    Returns
    -------
    list of dict
        One row per bin: ``bin_low``, ``bin_high``, ``n``, ``mean_score``, ``accuracy`` (NaN for empty
        bins), ``gap`` = accuracy - mean_score. The last bin includes 1.0.
    """
    s = np.clip(np.asarray(scores, dtype=np.float64).ravel(), 0.0, 1.0)
    t = np.asarray(correct, dtype=np.float64).ravel()
    if s.shape != t.shape:
        raise ValueError("scores and correct must be equally long")
    idx = np.minimum((s * n_bins).astype(int), n_bins - 1)
    rows = []
    for k in range(n_bins):
        sel = idx == k
        n = int(sel.sum())
        mean_s = float(s[sel].mean()) if n else math.nan
        acc = float(t[sel].mean()) if n else math.nan
        rows.append({"bin_low": k / n_bins, "bin_high": (k + 1) / n_bins, "n": n, "mean_score": mean_s,
                     "accuracy": acc, "gap": acc - mean_s if n else math.nan})
    return rows


def expected_calibration_error(scores: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> float:
    """Expected calibration error: sum over bins of n_bin / N * |accuracy - mean score|."""
    rows = reliability_table(scores, correct, n_bins)
    total = sum(r["n"] for r in rows)
    if total == 0:
        return math.nan
    return float(sum(r["n"] / total * abs(r["gap"]) for r in rows if r["n"]))


# -------------------------------------------------------------------------------------------- ranking
def _hill(mol: Chem.Mol) -> str:
    from rdkit.Chem.rdMolDescriptors import CalcMolFormula
    return CalcMolFormula(mol)


def rank_candidates(mols_or_samples: Iterable, predicted_fp, formula=None, top_k: int | None = 10,
                    calibration: Calibration | None = None, n_valid: int | None = None,
                    frequency_weight: float | None = None, ranking: str | None = None,
                    sources: Sequence[str] | None = None) -> list[Candidate]:
    """Rank generated molecules of one spectrum.

    Parameters
    ----------
    mols_or_samples
        Valid RDKit molecules (sanitized, one fragment) or SMILES strings, in sampling order; the same
        structure may appear many times.
    predicted_fp
        (fp bits,) fingerprint probabilities predicted by the encoder for this spectrum (numpy or torch);
        ``None`` gives Tanimoto 0 for every candidate (frequency-only ranking).
    formula
        Formula the candidates were generated for (``chem.Formula`` or Hill string); recorded on each
        candidate. ``None``: each candidate's own formula.
    top_k
        Number of candidates to return (``None``: all).
    calibration
        Map from raw to calibrated score (default: identity clipped to [0, 1]).
    n_valid
        Denominator of the frequency (default: the number of molecules given).
    frequency_weight
        Weight of the frequency in the raw score; the Tanimoto gets ``1 - frequency_weight``. Give it or
        ``ranking``, not both.
    ranking
        ``frequency`` (weight 1: DiffMS), ``fingerprint`` (0) or ``combined`` (0.5); default
        :data:`DEFAULT_RANKING` (``fingerprint``) when neither is given.
    sources
        Where each molecule came from (``"sampled"``, ``"decoded"``; baselines use others, e.g. ``"random"``),
        parallel to the molecules; a candidate's ``source`` joins those of its molecules with ``+``
        (``sampled+decoded``). Default: all sampled.

    Returns
    -------
    list of Candidate
        Unique structures (first InChIKey block), best first.
    """
    calibration = calibration or Calibration()
    if ranking is not None and frequency_weight is not None:
        raise ValueError("give frequency_weight or ranking, not both")
    if frequency_weight is None:
        ranking = DEFAULT_RANKING if ranking is None else ranking
        if ranking not in RANKINGS:
            raise ValueError(f"unknown ranking {ranking!r}; choose one of {', '.join(RANKINGS)}")
        frequency_weight = RANKINGS[ranking]
    if not 0.0 <= frequency_weight <= 1.0:
        raise ValueError("frequency_weight must be in [0, 1]")
    probs = None
    if predicted_fp is not None:
        probs = predicted_fp.detach().cpu().numpy() if hasattr(predicted_fp, "detach") else predicted_fp
        probs = np.asarray(probs, dtype=np.float64).ravel()
    groups: dict[str, dict] = {}
    n_mols = 0
    sources = list(sources) if sources is not None else None
    for index, item in enumerate(mols_or_samples):
        mol = Chem.MolFromSmiles(item) if isinstance(item, str) else item
        if mol is None:
            raise ValueError(f"invalid molecule given to rank_candidates: {item!r}")
        n_mols += 1
        key = Chem.MolToInchiKey(mol)
        if not key:
            raise ValueError(f"no InChIKey for {Chem.MolToSmiles(mol)!r}")
        block = key.split("-")[0]
        source = sources[index] if sources is not None else "sampled"
        if block in groups:
            groups[block]["count"] += 1
            groups[block]["sources"].add(source)
        else:
            groups[block] = {"mol": mol, "inchikey": key, "count": 1, "order": len(groups), "sources": {source}}
    if sources is not None and len(sources) != n_mols:
        raise ValueError(f"{len(sources)} sources for {n_mols} molecules")
    denom = n_valid if n_valid is not None else n_mols
    if groups and (denom is None or denom < n_mols):
        raise ValueError(f"n_valid={n_valid} is smaller than the number of molecules ({n_mols})")
    formula_str = None if formula is None else (formula if isinstance(formula, str) else formula.hill())
    cands = []
    for g in groups.values():
        mol = g["mol"]
        frequency = g["count"] / denom
        tani = continuous_tanimoto(morgan_bits(mol, len(probs)), probs) if probs is not None else 0.0
        raw = frequency_weight * frequency + (1.0 - frequency_weight) * tani
        cands.append((raw, g["order"], Candidate(
            smiles=Chem.MolToSmiles(mol, isomericSmiles=False), inchikey=g["inchikey"],
            formula=formula_str or _hill(mol), score=float(calibration(raw)), count=g["count"],
            tanimoto=tani, frequency=frequency, raw_score=raw,
            source="+".join(sorted(g["sources"], key=lambda s: (_SOURCE_ORDER.get(s, 2), s))))))
    cands.sort(key=lambda c: (-c[0], c[1]))
    ranked = [c[2] for c in cands]
    return ranked if top_k is None else ranked[:top_k]


def merge_ranked(lists: Sequence[Sequence[Candidate]], top_k: int | None = 10) -> list[Candidate]:
    """Merge the ranked lists of several formula candidates by calibrated score.

    Ties (equal score) are broken by raw score, then by list order (earlier formula first), then by rank
    within the list. Structures appearing in several lists (same first InChIKey block) keep their best
    entry.
    """
    entries = []
    for li, lst in enumerate(lists):
        for ri, c in enumerate(lst):
            entries.append(((-c.score, -c.raw_score, li, ri), c))
    entries.sort(key=lambda e: e[0])
    seen, out = set(), []
    for _, c in entries:
        block = c.inchikey.split("-")[0]
        if block in seen:
            continue
        seen.add(block)
        out.append(c)
    return out if top_k is None else out[:top_k]
