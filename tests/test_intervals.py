"""Bootstrap intervals over prompts, against values worked out independently."""

from __future__ import annotations

import math

import numpy as np
import pytest

from minillm.evaluation.intervals import bootstrap_ci, paired_bootstrap_diff


def shuffled_bits(n: int, ones: int, seed: int) -> np.ndarray:
    bits = np.zeros(n)
    bits[:ones] = 1.0
    np.random.default_rng(seed).shuffle(bits)
    return bits


def test_constant_values_have_a_point_interval():
    assert bootstrap_ci([42.5] * 30) == [42.5, 42.5]
    assert bootstrap_ci([7.0]) == [7.0, 7.0]
    assert bootstrap_ci([]) is None


def test_bernoulli_interval_matches_the_normal_approximation():
    """2000 prompts, 30 % valid: the percentile interval is p ± 1.96·sqrt(p(1−p)/n) (half-width 2.0
    points) to within 0.2 points; resampling without replacement would give [30, 30]."""
    n, p = 2000, 0.3
    values = 100 * shuffled_bits(n, int(p * n), seed=1)
    lo, hi = bootstrap_ci(values, n=2000, seed=0)
    half = 100 * 1.96 * math.sqrt(p * (1 - p) / n)
    assert lo == pytest.approx(100 * p - half, abs=0.2)
    assert hi == pytest.approx(100 * p + half, abs=0.2)


def test_level_widens_the_interval():
    values = shuffled_bits(500, 200, seed=2)
    lo95, hi95 = bootstrap_ci(values, level=0.95)
    lo50, hi50 = bootstrap_ci(values, level=0.5)
    assert lo95 < lo50 < 0.4 < hi50 < hi95


def test_fixed_seed_is_deterministic():
    values = np.random.default_rng(3).normal(50.0, 20.0, size=300)  # continuous: no ties between seeds
    assert bootstrap_ci(values, seed=5) == bootstrap_ci(values, seed=5)
    assert bootstrap_ci(values, seed=5) != bootstrap_ci(values, seed=6)
    a, b = values, values[::-1]
    assert paired_bootstrap_diff(a, b, seed=5) == paired_bootstrap_diff(a, b, seed=5)


def test_paired_diff_of_identical_vectors_is_zero():
    a = list(shuffled_bits(200, 80, seed=5))
    assert paired_bootstrap_diff(a, a) == (0.0, [0.0, 0.0], 200)


def test_paired_diff_uses_the_pairing():
    """b differs from a on 2 % of 2000 prompts (all 1 → 0): the mean difference is +2 points, and a paired
    interval is as narrow as the normal approximation of the per-prompt differences (≈ ±0.6 points),
    far narrower than an unpaired one (two independent 40 % rates: ≈ ±3 points)."""
    n = 2000
    a = 100 * shuffled_bits(n, 800, seed=6)
    b = a.copy()
    flip = np.flatnonzero(a)[:40]
    b[flip] = 0.0
    diff, (lo, hi), used = paired_bootstrap_diff(list(a), list(b))
    assert used == n
    assert diff == pytest.approx(2.0)
    d = a - b
    half = 1.96 * d.std() / math.sqrt(n)  # ≈ 0.61
    assert lo == pytest.approx(diff - half, abs=0.15)
    assert hi == pytest.approx(diff + half, abs=0.15)
    assert lo > 0  # beyond noise: paired, the 40 flips are a clear difference


def test_paired_diff_leaves_out_prompts_without_both_scores():
    a = [100.0, None, 0.0, 100.0]
    b = [0.0, 100.0, None, 100.0]
    diff, ci, used = paired_bootstrap_diff(a, b)
    assert used == 2
    assert diff == pytest.approx(50.0)
    assert ci[0] == pytest.approx(0.0) and ci[1] == pytest.approx(100.0)
    assert paired_bootstrap_diff([None], [1.0]) == (None, None, 0)


def test_paired_diff_refuses_unequal_lengths():
    with pytest.raises(ValueError, match="same prompts: 2 against 3"):
        paired_bootstrap_diff([1.0, 2.0], [1.0, 2.0, 3.0])


# --------------------------------------------------------------------------- the end-of-run table


def _row(valid: list, rouge: list, seeds=(0, 1, 2)) -> dict:
    from minillm.evaluation.intervals import bootstrap_ci

    checked = [v for v in valid if v is not None]
    return {
        "test": {
            "n": len(valid),
            "seeds": list(seeds),
            "valid_per_prompt": valid,
            "rougeL_per_prompt": rouge,
            "valid_rate": float(np.mean(checked)),
            "valid_rate_std": 1.0,
            "valid_rate_ci95": bootstrap_ci(checked),
            "rougeL": float(np.mean(rouge)),
            "rougeL_std": 0.5,
            "length": 12.0,
        }
    }


def test_table_and_comparison_state_the_paired_difference():
    """400 prompts: the trained student loses validity on 60 prompts the init got right (−15 points,
    beyond noise) and its Rouge-L moves by +0.1 on every other prompt, −0.1 on the rest (within noise)."""
    from minillm.evaluation.table import compare_to_init, format_comparison, format_table

    n = 400
    init_valid = list(100 * shuffled_bits(n, 200, seed=7))
    trained_valid = list(init_valid)
    for i in [i for i, v in enumerate(init_valid) if v][:60]:
        trained_valid[i] = 0.0
    init_valid[0] = trained_valid[0] = None  # a prompt without a checker
    rouge = list(np.random.default_rng(8).uniform(20, 60, size=n))
    trained_rouge = [r + (0.1 if i % 2 else -0.1) for i, r in enumerate(rouge)]
    rows = {"student init": _row(init_valid, rouge), "trained student": _row(trained_valid, trained_rouge)}

    compare = compare_to_init(rows, "test")
    assert compare["compare/valid_prompts"] == n - 1
    assert compare["compare/valid_diff"] == pytest.approx(-100 * 60 / (n - 1))
    lo, hi = compare["compare/valid_diff_ci95"]
    d = np.array([t - i for t, i in zip(trained_valid[1:], init_valid[1:], strict=True)])
    half = 1.96 * d.std() / math.sqrt(n - 1)  # normal approximation of the paired interval, ≈ 3.5 points
    assert lo == pytest.approx(d.mean() - half, abs=0.7) and hi == pytest.approx(d.mean() + half, abs=0.7)
    assert compare["compare/rougeL_diff"] == pytest.approx(0.0, abs=1e-9)
    assert compare["compare/rougeL_diff_ci95"][0] < 0 < compare["compare/rougeL_diff_ci95"][1]

    text = format_comparison(compare, "test")
    lines = text.splitlines()
    assert lines[0] == (
        f"trained − init validity: {-100 * 60 / (n - 1):+.1f} points [{lo:.1f}, {hi:.1f}] "
        f"(paired bootstrap over the {n - 1} test prompts × 3 sampling seeds)"
    )
    assert lines[1].startswith(
        "trained − init Rouge-L: +0.0 points [0.0, 0.0] (paired bootstrap over the 400"
    )
    assert lines[2] == (
        "The trained student's validity is lower than the init's beyond noise and its Rouge-L is within "
        "noise of the init's (beyond noise: the 95% interval of the difference excludes 0)."
    )
    table = format_table(rows, "test")
    init = rows["student init"]["test"]
    lo, hi = init["valid_rate_ci95"]
    assert f"{init['valid_rate']:.1f} [{lo:.1f}, {hi:.1f}]" in table.splitlines()[2]
    assert compare_to_init({"trained student": rows["trained student"]}, "test") == {}  # eval.compare=false
