"""Bootstrap confidence intervals for per-item metrics (molecules, spectra).

Every evaluation in this package reports a mean over items with a percentile bootstrap interval, and a
comparison of two methods on the same items as the mean of the paired differences with its interval.
Resampling is seeded, so the same values give the same interval.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["bootstrap_mean", "paired_difference"]

N_BOOTSTRAP = 2000


def bootstrap_mean(values: Sequence[float], *, n_boot: int = N_BOOTSTRAP, level: float = 0.95,
                   seed: int = 0) -> dict:
    """Mean of ``values`` with a percentile bootstrap interval.

    Parameters
    ----------
    values
        One number per item; NaN entries (undefined for that item) are left out.
    n_boot, level, seed
        Resamples, interval level and the seed of the resampling.

    Returns
    -------
    dict
        ``{"mean", "low", "high", "n"}``; all ``None`` (and n 0) when no value is defined.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return {"mean": float(x.mean()), "low": float(low), "high": float(high), "n": int(len(x))}


def paired_difference(a: Sequence[float], b: Sequence[float], **options) -> dict:
    """Mean of ``a - b`` over items defined in both, with its bootstrap interval (``bootstrap_mean``).

    ``excludes_zero`` says whether the interval lies entirely on one side of zero.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired values must have the same length, got {len(a)} and {len(b)}")
    out = bootstrap_mean(a - b, **options)
    out["excludes_zero"] = bool(out["n"] and (out["low"] > 0 or out["high"] < 0))
    return out
