"""Sampling-based evaluation of a model on a data split: Rouge-L, exact match, validity, Distinct-4,
length; and the test LM loss on the gold responses.

Generation follows the paper: temperature 1, no top-k / top-p, several seeds; each metric is averaged
over records for each seed, then the mean and standard deviation over seeds are reported. Breakdowns by
category and by gold-response length bucket pool the records of all seeds.
"""

from __future__ import annotations

import logging
import statistics
from collections import defaultdict

import torch

from minillm.data.checkers import is_valid
from minillm.data.datasets import Example, collate_sft
from minillm.evaluation.generation import no_repeat_ngram_processor
from minillm.evaluation.intervals import bootstrap_ci
from minillm.evaluation.metrics import (
    LENGTH_EDGES,
    bucket_names,
    distinct_n,
    exact_match,
    length_bucket,
    rouge_l,
)
from minillm.objectives.supervised import sft_loss
from minillm.rollout.generate import sample_responses

log = logging.getLogger(__name__)


def score_responses(texts: list[str], records: list[dict]) -> list[dict]:
    """Per-record scores: rougeL, exact_match, and valid (None where the record has no checker)."""
    scored = []
    for text, record in zip(texts, records, strict=True):
        check = record.get("check")
        scored.append(
            {
                "rougeL": rouge_l(text, record["response"]),
                "exact_match": 100.0 * exact_match(text, record["response"]),
                "valid": (100.0 * is_valid(text, check)) if check else None,
                "category": record.get("category") or "all",
            }
        )
    return scored


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _spread(values):
    values = [v for v in values if v is not None]
    return statistics.stdev(values) if len(values) > 1 else 0.0


def gold_length(example: Example, eos_token_id: int) -> int:
    """Tokens of the gold response, its final EOS not counted (the unit of the length buckets)."""
    ids = example.response_ids
    return len(ids) - (1 if ids and ids[-1] == eos_token_id else 0)


@torch.no_grad()
def lm_loss(model, examples: list[Example], pad_token_id: int, *, batch_size: int = 64) -> float | None:
    """Token-mean cross-entropy (nats) of the gold responses, EOS included, prompt masked.

    ``sft_loss`` per batch, weighted by its number of response tokens, so the result is the mean over
    every response token of the split (not a mean of batch means). None for no examples.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = collate_sft(examples[start : start + batch_size], pad_token_id)
        logits = model(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        ).logits
        labels = batch["labels"].to(device)
        n = int((labels[:, 1:] != -100).sum())
        total += float(sft_loss(logits, labels)) * n
        tokens += n
    model.train(was_training)
    return total / tokens if tokens else None


def evaluate_model(
    model,
    tokenizer,
    examples: list[Example],
    records: list[dict],
    *,
    seeds=(0,),
    batch_size: int = 64,
    max_new_tokens: int = 128,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    name: str = "model",
    progress: bool = True,
    keep_samples: int = 5,
    no_repeat_ngram_size: int = 0,
    length_edges: tuple[int, ...] = LENGTH_EDGES,
) -> dict:
    """Evaluate ``model`` on ``examples`` (records[e.index] holds each one's reference and checker).

    Returns means over seeds (``rougeL``, ``exact_match``, ``valid_rate``, ``distinct4``, ``length``),
    their standard deviations over seeds (``*_std``), per-prompt scores in example order averaged over the
    seeds (``valid_per_prompt``, None for a prompt without a checker; ``rougeL_per_prompt``), 95 %
    percentile-bootstrap intervals over prompts of the two means (``valid_rate_ci95``, ``rougeL_ci95``:
    ``[lo, hi]``, 2000 resamples, seed 0), breakdowns ``per_category`` and ``by_length`` (gold
    response length in tokens, buckets with inclusive upper ``length_edges``; each bucket's ``n`` counts
    records) and a few samples. ``distinct4`` is Distinct-4 over the responses of one seed.
    """
    was_training = model.training
    model.eval()
    refs = [records[e.index] for e in examples]
    buckets = [length_bucket(gold_length(e, tokenizer.eos_token_id), length_edges) for e in examples]
    per_seed, samples = [], []
    by_prompt = {"rougeL": [[] for _ in examples], "valid": [[] for _ in examples]}
    per_cat, per_len = defaultdict(lambda: defaultdict(list)), defaultdict(lambda: defaultdict(list))
    processor = no_repeat_ngram_processor(no_repeat_ngram_size) if no_repeat_ngram_size else None
    for seed in seeds:
        texts, lengths = sample_responses(
            model,
            tokenizer,
            examples,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            desc=f"{name} seed {seed}",
            progress=progress,
            logits_processor=processor,
        )
        scored = score_responses(texts, refs)
        per_seed.append(
            {
                "rougeL": _mean(s["rougeL"] for s in scored),
                "exact_match": _mean(s["exact_match"] for s in scored),
                "valid_rate": _mean(s["valid"] for s in scored),
                "distinct4": distinct_n(texts, 4),
                "length": _mean(lengths),
            }
        )
        for i, s in enumerate(scored):
            by_prompt["rougeL"][i].append(s["rougeL"])
            by_prompt["valid"][i].append(s["valid"])
        for s, bucket in zip(scored, buckets, strict=True):
            for key in ("rougeL", "exact_match", "valid"):
                per_cat[s["category"]][key].append(s[key])
                per_len[bucket][key].append(s[key])
        if not samples:
            samples = [
                {
                    "instruction": r["instruction"],
                    "reference": r["response"],
                    "response": t,
                    "valid": s["valid"],
                }
                for r, t, s in list(zip(refs, texts, scored, strict=True))[:keep_samples]
            ]
    model.train(was_training)
    result = {"n": len(examples), "seeds": list(seeds)}
    for key in ("rougeL", "exact_match", "valid_rate", "distinct4", "length"):
        result[key] = _mean(r[key] for r in per_seed)
        result[f"{key}_std"] = _spread(r[key] for r in per_seed)
    result["valid_per_prompt"] = [_mean(v) for v in by_prompt["valid"]]
    result["rougeL_per_prompt"] = [_mean(v) for v in by_prompt["rougeL"]]
    result["valid_rate_ci95"] = bootstrap_ci([v for v in result["valid_per_prompt"] if v is not None])
    result["rougeL_ci95"] = bootstrap_ci(result["rougeL_per_prompt"])

    def breakdown(v) -> dict:
        return {
            "rougeL": _mean(v["rougeL"]),
            "exact_match": _mean(v["exact_match"]),
            "valid_rate": _mean(v["valid"]),
            "n": len(v["rougeL"]) // len(seeds),
        }

    result["per_category"] = {cat: breakdown(v) for cat, v in sorted(per_cat.items())}
    result["by_length"] = {b: breakdown(per_len[b]) for b in bucket_names(length_edges)}
    result["samples"] = samples
    return result
