"""Sampling-based evaluation of a model on a data split: Rouge-L, exact match, validity, length.

Generation follows the paper: temperature 1, no top-k / top-p, several seeds; Rouge-L is averaged over
records for each seed, then the mean and standard deviation over seeds are reported.
"""

from __future__ import annotations

import logging
import statistics
from collections import defaultdict

import torch
from tqdm.auto import tqdm

from minillm.data.checkers import is_valid
from minillm.data.datasets import Example, collate_prompts
from minillm.evaluation.metrics import exact_match, rouge_l
from minillm.rollout.sampler import generate

log = logging.getLogger(__name__)


def decode_responses(tokenizer, response_ids: torch.Tensor, response_mask: torch.Tensor) -> list[str]:
    """Text of each generated response, without EOS and padding."""
    eos = tokenizer.eos_token_id
    texts = []
    for ids, mask in zip(response_ids.tolist(), response_mask.tolist(), strict=True):
        kept = [t for t, m in zip(ids, mask, strict=True) if m and t != eos]
        texts.append(tokenizer.decode(kept, skip_special_tokens=True).strip())
    return texts


def sample_responses(
    model,
    tokenizer,
    examples: list[Example],
    *,
    batch_size: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    desc: str = "generate",
    progress: bool = True,
) -> tuple[list[str], list[int]]:
    """Sample one response per example; returns texts and response lengths in tokens (EOS included)."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    texts, lengths = [], []
    batches = range(0, len(examples), batch_size)
    for start in tqdm(batches, desc=desc, disable=not progress, leave=False):
        batch = collate_prompts(examples[start : start + batch_size], tokenizer.pad_token_id)
        out = generate(
            model,
            batch["input_ids"].to(device),
            batch["attention_mask"].to(device),
            max_new_tokens=max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            generator=generator,
        )
        texts.extend(decode_responses(tokenizer, out.response_ids, out.response_mask))
        lengths.extend(out.response_mask.sum(dim=1).tolist())
    return texts, lengths


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
) -> dict:
    """Evaluate ``model`` on ``examples`` (records[e.index] holds each one's reference and checker).

    Returns means over seeds (``rougeL``, ``exact_match``, ``valid_rate``, ``length``), their standard
    deviations over seeds (``*_std``), a per-category breakdown and a few samples.
    """
    was_training = model.training
    model.eval()
    refs = [records[e.index] for e in examples]
    per_seed, per_cat, samples = [], defaultdict(lambda: defaultdict(list)), []
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
        )
        scored = score_responses(texts, refs)
        per_seed.append(
            {
                "rougeL": _mean(s["rougeL"] for s in scored),
                "exact_match": _mean(s["exact_match"] for s in scored),
                "valid_rate": _mean(s["valid"] for s in scored),
                "length": _mean(lengths),
            }
        )
        for s in scored:
            for key in ("rougeL", "valid"):
                per_cat[s["category"]][key].append(s[key])
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
    for key in ("rougeL", "exact_match", "valid_rate", "length"):
        result[key] = _mean(r[key] for r in per_seed)
        result[f"{key}_std"] = _spread(r[key] for r in per_seed)
    result["per_category"] = {
        cat: {
            "rougeL": _mean(v["rougeL"]),
            "valid_rate": _mean(v["valid"]),
            "n": len(v["rougeL"]) // len(seeds),
        }
        for cat, v in sorted(per_cat.items())
    }
    result["samples"] = samples
    return result
