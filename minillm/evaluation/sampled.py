"""Sampling-based evaluation of a model on a data split: Rouge-L, exact match, validity, Distinct-4,
length; and the test LM loss on the gold responses.

Generation follows the paper: temperature 1, no top-k / top-p, several seeds; each metric is averaged
over records for each seed, then the mean and standard deviation over seeds are reported. Breakdowns by
category and by gold-response length bucket pool the records of all seeds.

``evaluate_model`` is the one sampling evaluation: ``minillm.run``'s end-of-run table (teacher, student
init, trained student), validation Rouge-L during training and ``python -m minillm.evaluate`` all call
it. With a ``cache_dir`` its result is stored under ``<cache_dir>/eval/`` and reused (fixed models: the
teacher, a student init read from a path).
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

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
from minillm.models.loading import weights_digest
from minillm.objectives.supervised import sft_loss
from minillm.rollout import vllm_engine
from minillm.rollout.generate import sample_responses
from minillm.rollout.options import SamplingOptions

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


# What a cached evaluation must hold to be reused: entries written before the per-prompt scores existed
# are evaluated again (and overwritten), since the end-of-run comparison needs them.
CACHED_EVAL_KEYS = ("valid_per_prompt", "rougeL_per_prompt", "valid_rate_ci95", "rougeL_ci95")


@dataclass(frozen=True)
class EvaluationOptions:
    """How :func:`evaluate_model` samples and scores: the sampling (the number of new tokens, temperature,
    top-k, top-p; the tokenizer's EOS and pad), the seeds, the batch size and the evaluation-only settings."""

    sampling: SamplingOptions
    seeds: tuple[int, ...] = (0,)  # one sample per prompt and seed; metrics are averaged over seeds
    batch_size: int = 64  # prompts per decoding batch (a seed's samples depend on it)
    no_repeat_ngram_size: int = 0  # > 0: no n-gram of this size twice in a response; 0: off
    length_edges: tuple[int, ...] = LENGTH_EDGES  # inclusive upper edges of the gold-length buckets
    keep_samples: int = 5  # responses of the first seed kept in the result

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", tuple(self.seeds))
        object.__setattr__(self, "length_edges", tuple(self.length_edges))

    @classmethod
    def from_config(cls, eval_cfg, tokenizer, *, seeds=None, **fields) -> EvaluationOptions:
        """The ``eval`` config node's options (seeds, batch size, new tokens, temperature, top-k, top-p),
        ``seeds`` (validation's ``(0,)``; None: ``eval.seeds``) and ``fields`` (e.g. ``no_repeat_ngram_size``)
        set over them."""
        sampling = SamplingOptions.from_config(
            eval_cfg, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
        )
        return cls(
            sampling=sampling,
            seeds=tuple(eval_cfg.seeds if seeds is None else seeds),
            **{"batch_size": eval_cfg.batch_size, **fields},
        )

    def settings(self) -> dict:
        """What a cached evaluation is keyed by: the seeds, batch size and sampling (no token ids)."""
        s = self.sampling
        return dict(
            seeds=self.seeds,
            batch_size=self.batch_size,
            max_new_tokens=s.max_new_tokens,
            temperature=s.temperature,
            top_k=s.top_k,
            top_p=s.top_p,
        )


def autocast_dtype(model) -> str | None:
    """The autocast dtype active on ``model``'s device (``torch.bfloat16``), or None outside autocast."""
    device = next(model.parameters()).device.type
    if not torch.is_autocast_enabled(device):
        return None
    return str(torch.get_autocast_dtype(device))


def cache_path(
    cache_dir: str | Path, model, examples: list[Example], records: list[dict], settings: dict
) -> Path:
    """The cache entry of one evaluation: ``<cache_dir>/eval/<key>.json``, the key hashing the model's
    weights, the prompts, their references and the settings that change the result."""
    key = json.dumps(
        [
            weights_digest(model),
            [e.prompt_ids for e in examples],
            [records[e.index]["response"] for e in examples],
            settings,
        ],
        default=str,
    )
    return Path(cache_dir) / "eval" / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.json"


def sample_sharded(
    model,
    tokenizer,
    examples: list[Example],
    sampling: SamplingOptions,
    *,
    batch_size: int,
    seed: int = 0,
    rank: int = 0,
    world: int = 1,
    **kwargs,
) -> tuple[list[str], list[int]]:
    """``sample_responses`` with the batches dealt to ``world`` data-parallel ranks and gathered.

    Batch ``b`` (examples ``b·batch_size`` on) is sampled by rank ``b mod world`` with a generator of its
    own, seeded from ``(seed, b)``, so a batch's samples do not depend on which rank drew it nor on the
    world size: every rank returns all the texts and lengths, in example order, equal to one process's.
    The gather (``all_gather_object``) is a collective: every rank calls it, with or without batches.
    """
    mine = {}
    for b, start in enumerate(range(0, len(examples), batch_size)):
        if b % world == rank:
            mine[b] = sample_responses(
                model,
                tokenizer,
                examples[start : start + batch_size],
                sampling,
                batch_size=batch_size,
                seed=seed * 1_000_003 + b,
                **kwargs,
            )
    if world > 1:
        parts: list = [None] * world
        torch.distributed.all_gather_object(parts, mine)
        mine = {b: out for part in parts for b, out in part.items()}
    texts = [t for b in sorted(mine) for t in mine[b][0]]
    lengths = [n for b in sorted(mine) for n in mine[b][1]]
    return texts, lengths


def evaluate_model(
    model,
    tokenizer,
    examples: list[Example],
    records: list[dict],
    options: EvaluationOptions,
    *,
    name: str = "model",
    progress: bool = True,
    cache_dir: str | Path | None = None,
    sampler=None,
) -> dict:
    """Evaluate ``model`` on ``examples`` (records[e.index] holds each one's reference and checker) as
    ``options`` say (:class:`EvaluationOptions`: the sampling, seeds, batch size, n-gram filter, length
    buckets and samples kept).

    Returns means over seeds (``rougeL``, ``exact_match``, ``valid_rate``, ``distinct4``, ``length``),
    their standard deviations over seeds (``*_std``), per-prompt scores in example order averaged over the
    seeds (``valid_per_prompt``, None for a prompt without a checker; ``rougeL_per_prompt``), 95 %
    percentile-bootstrap intervals over prompts of the two means (``valid_rate_ci95``, ``rougeL_ci95``:
    ``[lo, hi]``, 2000 resamples, seed 0), breakdowns ``per_category`` and ``by_length`` (gold
    response length in tokens, buckets with inclusive upper ``options.length_edges``; each bucket's ``n``
    counts records), a few samples and ``seconds`` (wall time of the sampling). ``distinct4`` is
    Distinct-4 over the responses of one seed.

    With ``cache_dir`` the result is written to ``cache_path(...)`` and, on a later call with the same
    weights, prompts, references and settings, read back instead of sampling again (``seconds`` is then
    the original evaluation's) — as long as the entry holds every key of ``CACHED_EVAL_KEYS``.
    ``name`` and ``progress`` only label the progress bar. ``sampler`` replaces
    ``minillm.rollout.generate.sample_responses`` (same arguments and return): :func:`sample_sharded` for
    validation under DDP; not with ``cache_dir``.
    """
    settings = options.settings()
    # Off the defaults only: entries written before these options existed keep their keys.
    extra = dict(
        no_repeat_ngram_size=(options.no_repeat_ngram_size, 0),
        length_edges=(list(options.length_edges), list(LENGTH_EDGES)),
        keep_samples=(options.keep_samples, 5),
        sampler=(
            "vllm" if vllm_engine.current() is not None else "hf",
            "hf",
        ),  # other samplers, other samples
        autocast=(autocast_dtype(model), None),  # bf16-mixed runs evaluate under autocast
    )
    cache_settings = {**settings, **{k: v for k, (v, default) in extra.items() if v != default}}
    path = None
    if cache_dir is not None:
        path = cache_path(cache_dir, model, examples, records, cache_settings)
        if path.is_file():
            cached = json.loads(path.read_text())
            if all(k in cached for k in CACHED_EVAL_KEYS):
                log.info("%s: reusing the cached evaluation %s", name, path)
                return cached
            log.info("%s: the cached evaluation %s has no per-prompt scores: evaluating again", name, path)
    started = time.perf_counter()
    result = _sampled_metrics(
        model,
        tokenizer,
        examples,
        records,
        options,
        name=name,
        progress=progress,
        sample=sampler or sample_responses,
    )
    result["seconds"] = round(time.perf_counter() - started, 1)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result))
    return result


def _sampled_metrics(
    model,
    tokenizer,
    examples: list[Example],
    records: list[dict],
    options: EvaluationOptions,
    *,
    name: str,
    progress: bool,
    sample,
) -> dict:
    """``evaluate_model`` without the cache and the timing."""
    seeds, length_edges, n = options.seeds, options.length_edges, options.no_repeat_ngram_size
    was_training = model.training
    model.eval()
    refs = [records[e.index] for e in examples]
    buckets = [length_bucket(gold_length(e, tokenizer.eos_token_id), length_edges) for e in examples]
    per_seed, samples = [], []
    by_prompt = {"rougeL": [[] for _ in examples], "valid": [[] for _ in examples]}
    per_cat, per_len = defaultdict(lambda: defaultdict(list)), defaultdict(lambda: defaultdict(list))
    processor = no_repeat_ngram_processor(n) if n else None
    for seed in seeds:
        texts, lengths = sample(
            model,
            tokenizer,
            examples,
            options.sampling,
            batch_size=options.batch_size,
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
                for r, t, s in list(zip(refs, texts, scored, strict=True))[: options.keep_samples]
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


def eval_subset(examples: list, num_samples: int | None, split: str, *, say: bool = True) -> list:
    """The first ``eval.num_samples`` examples of a split (all of them when null). A split with fewer is
    evaluated whole, and (with ``say``) one line says the request was capped."""
    if say and num_samples and num_samples > len(examples):
        log.warning(
            "eval.num_samples=%d: the %s split has %d prompts (that fit data.max_prompt_len); evaluating those %d",
            num_samples,
            split,
            len(examples),
            len(examples),
        )
    return examples[:num_samples] if num_samples else examples


def evaluate_splits(cfg, model, tokenizer, dm, name: str, *, cache: bool = False) -> dict:
    """One row of the end-of-run table: :func:`evaluate_model` on each split in eval.splits (its first
    eval.num_samples prompts). ``cache`` (the fixed teacher and a student init read from a path) reuses
    the evaluation stored under ``cache_dir/eval/``."""
    from minillm.training.precision import autocast

    device = next(model.parameters()).device.type
    # under the run's mixed precision (bf16-mixed: bf16 autocast, as Lightning runs validation)
    with autocast((cfg.get("trainer") or {}).get("precision"), device):
        return _evaluate_splits(cfg, model, tokenizer, dm, name, cache=cache)


def _evaluate_splits(cfg, model, tokenizer, dm, name: str, *, cache: bool) -> dict:
    e = cfg.eval
    return {
        split: evaluate_model(
            model,
            tokenizer,
            eval_subset(dm.examples[split], e.num_samples, split, say=False),  # said once: minillm.run
            dm.records[split],
            EvaluationOptions.from_config(e, tokenizer),
            name=name,
            cache_dir=cfg.cache_dir if cache else None,
        )
        for split in e.splits
    }
