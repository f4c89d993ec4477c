"""Text metrics the paper reports: Rouge-L (rouge_score's rougeL F with stemming, max over references,
×100) and exact match; plus the validity rate from the bundled data's checkers."""

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
