"""SeqKD data: the teacher's sampled responses to the training prompts, cached with their provenance.

The cache is a JSONL file whose first line is the provenance (teacher path and weight hash, data set,
template, sampling settings, seed); it is reused only while every field matches, so changing the
teacher or a setting regenerates it instead of silently training on stale samples.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from minillm.errors import MinillmError
from minillm.models.loading import weights_digest
from minillm.rollout import vllm_engine
from minillm.rollout.generate import sample_responses
from minillm.rollout.options import SamplingOptions

log = logging.getLogger(__name__)


def teacher_sampling(cfg, tokenizer) -> SamplingOptions:
    """How the teacher samples: ``objective.temperature``, ``top_p`` (objective=distillm2 may cut the nucleus,
    0.95 as released), ``max_new_tokens`` (the SeqKD objectives set no ``top_k``: 0)."""
    return SamplingOptions.from_config(
        cfg.objective, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )


def provenance(cfg, teacher, dm, sampling: SamplingOptions, device: str = "cpu") -> dict:
    """What the cached teacher samples depend on (the cache key): the teacher's weights, the prompts, the
    template, ``sampling``'s settings, seed and batch size, and the autocast on ``device`` (mixed precision)."""
    o = cfg.objective
    train = dm.records["train"]
    data_digest = hashlib.sha1(
        json.dumps([(r["instruction"], r["context"]) for r in train]).encode()
    ).hexdigest()
    engine = {"sampler": "vllm"} if vllm_engine.current() is not None else {}  # hf: the keys of old caches
    if not engine and torch.is_autocast_enabled(device):  # bf16-mixed samples other tokens (fp32: old keys)
        engine["autocast"] = str(torch.get_autocast_dtype(device))
    return {
        **engine,
        "teacher": str(cfg.teacher.get("path") or cfg.teacher.get("name")),
        "teacher_weights": weights_digest(teacher),
        "data": data_digest[:16],
        "n_prompts": len(dm.examples["train"]),
        "template": cfg.data.template,
        "max_prompt_len": cfg.data.max_prompt_len,
        "temperature": float(sampling.temperature),
        "top_k": sampling.top_k,
        "top_p": float(sampling.top_p),
        "max_new_tokens": sampling.max_new_tokens,
        "seed": int(o.seed),
        # prompts are decoded in batches that share one random stream: another batch size draws other samples
        "batch_size": int(o.batch_size),
    }


def read_cache(path: Path, expected: dict) -> list[str] | None:
    """The cached responses if the file's provenance matches ``expected``; None otherwise."""
    if not path.is_file():
        return None
    with path.open(encoding="utf-8") as handle:
        try:
            header = json.loads(handle.readline())
            rows = [json.loads(line) for line in handle if line.strip()]
        except json.JSONDecodeError:
            log.warning("SeqKD cache %s is corrupt: regenerating it", path)
            return None
    if header.get("provenance") != expected or len(rows) != expected["n_prompts"]:
        return None
    return [row["response"] for row in rows]


def sampling_device(cfg) -> str:
    """Where the teacher samples: the GPU of a run on one, else the CPU."""
    return "cuda" if torch.cuda.is_available() and cfg.trainer.accelerator == "gpu" else "cpu"


def teacher_samples(cfg, teacher, tokenizer, dm) -> list[str]:
    """One teacher response per train example (in the datamodule's order), from the cache when valid; under
    the autocast the caller runs it in (``minillm.run``: the run's mixed precision), which the cache key
    records."""
    if teacher is None:
        raise MinillmError("objective=seqkd needs a teacher: set teacher.path")
    sampling = teacher_sampling(cfg, tokenizer)
    device = sampling_device(cfg)
    expected = provenance(cfg, teacher, dm, sampling, device)
    key = hashlib.sha1(json.dumps(expected, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(cfg.cache_dir) / "seqkd" / f"{key}.jsonl"
    cached = read_cache(path, expected)
    examples = dm.examples["train"]
    if cached is not None:
        log.info("SeqKD: reusing %d teacher samples from %s", len(cached), path)
    else:
        log.info("SeqKD: sampling %d teacher responses into %s", len(examples), path)
        teacher.to(device)
        cached, _ = sample_responses(
            teacher,
            tokenizer,
            examples,
            sampling,
            batch_size=cfg.objective.batch_size,
            seed=cfg.objective.seed,
            desc="SeqKD teacher samples",
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(json.dumps({"provenance": expected}) + "\n")
            for e, text in zip(examples, cached, strict=True):
                handle.write(json.dumps({"index": e.index, "response": text}) + "\n")
        tmp.replace(path)  # atomic: a crash never leaves a half-written cache
    return cached
