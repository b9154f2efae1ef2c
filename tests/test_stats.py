"""Bootstrap intervals (matchms_diffms.stats)."""
import numpy as np
import pytest

from matchms_diffms.stats import bootstrap_mean, paired_difference


def test_interval_contains_mean_and_narrows_with_more_items():
    rng = np.random.default_rng(1)
    small = bootstrap_mean(rng.normal(1.0, 1.0, 20))
    large = bootstrap_mean(rng.normal(1.0, 1.0, 2000))
    for r in (small, large):
        assert r["low"] <= r["mean"] <= r["high"]
    assert (large["high"] - large["low"]) < (small["high"] - small["low"]) / 4
    assert large["low"] < 1.0 < large["high"]


def test_nan_items_are_left_out_and_empty_gives_none():
    r = bootstrap_mean([1.0, float("nan"), 3.0])
    assert r["n"] == 2 and r["mean"] == pytest.approx(2.0)
    assert bootstrap_mean([float("nan")]) == {"mean": None, "low": None, "high": None, "n": 0}


def test_seeded():
    x = np.arange(30.0)
    assert bootstrap_mean(x, seed=3) == bootstrap_mean(x, seed=3)


@pytest.mark.parametrize("shift,excludes", [(0.5, True), (0.0, False)])
def test_paired_difference(shift, excludes):
    rng = np.random.default_rng(0)
    b = rng.normal(0, 1, 300)
    a = b + shift + rng.normal(0, 0.1, 300)
    d = paired_difference(a, b)
    assert d["excludes_zero"] is excludes
    assert d["mean"] == pytest.approx(shift, abs=0.05)


def test_paired_difference_needs_equal_lengths():
    with pytest.raises(ValueError):
        paired_difference([1, 2], [1])
