"""Pure metrics over texts and numbers: Rouge-L (rouge_score's rougeL F with stemming, max over references,
×100), exact match, Distinct-n, the paper's gold-length buckets, and expected calibration error.

The validity rate comes from the bundled data's checkers (``minillm.data.checkers.is_valid``); the
model-dependent metrics (exposure bias, label scoring) are in ``exposure.py`` and ``calibration.py``."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, references: str | list[str]) -> float:
    """Rouge-L F-measure ×100, the maximum over the references."""
    refs = [references] if isinstance(references, str) else list(references)
    scorer = _scorer()
    return 100.0 * max(scorer.score(ref, prediction)["rougeL"].fmeasure for ref in refs)


def _normalise(text: str) -> str:
    return " ".join(text.lower().strip().rstrip(".!?").split())


def exact_match(prediction: str, references: str | list[str]) -> float:
    """1.0 when the prediction equals a reference up to case, spacing and final punctuation."""
    refs = [references] if isinstance(references, str) else list(references)
    return float(any(_normalise(prediction) == _normalise(r) for r in refs))


# --------------------------------------------------------------------------- diversity and length


def distinct_n(texts: list[str], n: int = 4) -> float | None:
    """Distinct-n ×100: distinct n-gram types over all n-gram tokens of the whole set of ``texts``.

    Words are the whitespace-separated pieces of the lower-cased text (punctuation stays attached, so
    "fruit." and "fruit" differ). n-grams never cross two responses; a response of fewer than ``n``
    words adds none. Returns None when the set has no n-gram at all.
    """
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        words = text.lower().split()
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        seen.update(grams)
        total += len(grams)
    return 100.0 * len(seen) / total if total else None


# Upper edges of the paper's gold-response length buckets: [0, 5], [6, 10], [11, ∞) tokens.
LENGTH_EDGES = (5, 10)


def length_bucket(n_tokens: int, edges: tuple[int, ...] = LENGTH_EDGES) -> str:
    """The bucket name of a gold response of ``n_tokens``: "0-5", "6-10", "11+" for the default edges.

    Edges are inclusive upper bounds: 5 → "0-5", 6 → "6-10", 11 → "11+".
    """
    low = 0
    for high in edges:
        if n_tokens <= high:
            return f"{low}-{high}"
        low = high + 1
    return f"{low}+"


def bucket_names(edges: tuple[int, ...] = LENGTH_EDGES) -> list[str]:
    """All bucket names in order, e.g. ["0-5", "6-10", "11+"]."""
    lows = [0, *(e + 1 for e in edges)]
    return [length_bucket(low, edges) for low in lows]


# --------------------------------------------------------------------------- calibration


def reliability_bins(confidences, correct, n_bins: int = 10) -> list[dict]:
    """Equal-width confidence bins over [0, 1]; bin b holds confidences in (b/M, (b+1)/M] (0 goes to bin 0).

    Returns one dict per bin: ``low``, ``high``, ``n``, ``confidence`` (mean confidence, None if empty)
    and ``accuracy`` (share correct, in [0, 1], None if empty).
    """
    import numpy as np

    conf = np.asarray(confidences, dtype=np.float64)
    hit = np.asarray(correct, dtype=np.float64)
    if conf.shape != hit.shape:
        raise ValueError(f"{conf.shape[0]} confidences but {hit.shape[0]} correctness values")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.digitize(conf, edges, right=True) - 1, 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        inside = index == b
        n = int(inside.sum())
        bins.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "n": n,
                "confidence": float(conf[inside].mean()) if n else None,
                "accuracy": float(hit[inside].mean()) if n else None,
            }
        )
    return bins


def expected_calibration_error(confidences, correct, n_bins: int = 10) -> float | None:
    """ECE = Σ_b (n_b / N)·|accuracy_b − confidence_b| over equal-width bins (see reliability_bins).

    In [0, 1]; 0 is perfectly calibrated. None for an empty set.
    """
    bins = reliability_bins(confidences, correct, n_bins)
    total = sum(b["n"] for b in bins)
    if not total:
        return None
    return sum(b["n"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins if b["n"])
