"""Confidence intervals over prompts: percentile bootstrap of a mean, and of a paired difference of means.

The unit resampled is the prompt: each value is one prompt's score (already averaged over the sampling
seeds), so an interval answers "how much would this number move on another draw of prompts like these".
Both functions are deterministic for a given ``seed`` (a fixed ``numpy.random.Generator``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RESAMPLES = 2000
_CHUNK = 250  # resamples drawn at a time (bounded memory for long splits)


def _bootstrap_means(values: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Means of ``n`` resamples of ``values`` (same length, drawn with replacement)."""
    rng = np.random.default_rng(seed)
    size = len(values)
    means = np.empty(n)
    for start in range(0, n, _CHUNK):
        rows = min(_CHUNK, n - start)
        idx = rng.integers(0, size, size=(rows, size))
        means[start : start + rows] = values[idx].mean(axis=1)
    return means


def _check(n: int, level: float) -> None:
    if n < 1:
        raise ValueError(f"bootstrap resamples must be >= 1, got {n}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")


def bootstrap_ci(
    values: Sequence[float], n: int = RESAMPLES, seed: int = 0, level: float = 0.95
) -> list[float] | None:
    """Percentile bootstrap interval ``[lo, hi]`` of the mean of ``values``; None for no values."""
    _check(n, level)
    arr = np.asarray(list(values), dtype=float)
    if arr.size == 0:
        return None
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(_bootstrap_means(arr, n, seed), [tail, 1.0 - tail])
    return [float(lo), float(hi)]


def paired_bootstrap_diff(
    a: Sequence[float | None],
    b: Sequence[float | None],
    n: int = RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float | None, list[float] | None, int]:
    """Mean of ``a − b`` over the same prompts and its percentile bootstrap interval.

    ``a[i]`` and ``b[i]`` are two models' scores on prompt ``i``; a resample draws prompts (both scores
    of a prompt together), which removes the prompt-to-prompt spread the two models share. Prompts where
    either score is None (no checker) are left out. Returns ``(mean_diff, [lo, hi], prompts_used)``;
    ``(None, None, 0)`` when no prompt has both scores.
    """
    _check(n, level)
    if len(a) != len(b):
        raise ValueError(f"paired scores need the same prompts: {len(a)} against {len(b)} values")
    diffs = [x - y for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    if not diffs:
        return None, None, 0
    return float(np.mean(diffs)), bootstrap_ci(diffs, n=n, seed=seed, level=level), len(diffs)
