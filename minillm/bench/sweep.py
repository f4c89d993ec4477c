"""Round time over response lengths and batch sizes, with least-squares linearity fits, beside plain
KV-cached decoding of the same tokens."""

from __future__ import annotations

import math
import statistics
import time

import torch
from omegaconf import DictConfig

from minillm.bench.models import Models, make_prompts
from minillm.bench.settings import Runtime, StepSettings
from minillm.bench.step import measure_step
from minillm.rollout.options import SamplingOptions
from minillm.rollout.sampler import generate


def linear_fit(xs: list[float], ys: list[float]) -> dict:
    """Least-squares line y = a + b·x with its R² (None when fewer than two distinct x)."""
    if len(set(xs)) < 2:
        return {"slope": None, "intercept": None, "r2": None}
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys, strict=True))
    return {"slope": slope, "intercept": intercept, "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0}


def decode_bound(
    models: Models, runtime: Runtime, batch: int, prompt_len: int, length: int, repeats: int
) -> float:
    """Seconds for the student alone plus the teacher alone to decode ``length`` tokens per row (the
    fastest of ``repeats``)."""
    prompt_ids, prompt_mask = make_prompts(models, batch, prompt_len, 1, runtime.device)
    gen = torch.Generator(device=runtime.device).manual_seed(0)
    sampling = SamplingOptions(max_new_tokens=length, eos_token_id=None, pad_token_id=models.eos_token_id)
    total = 0.0
    for model in (models.decode_student, models.decode_teacher):
        best = math.inf
        for _ in range(max(1, repeats)):
            runtime.sync()
            start = time.perf_counter()
            with runtime.autocast():
                generate(model, prompt_ids, prompt_mask, sampling, generator=gen)
            runtime.sync()
            best = min(best, time.perf_counter() - start)
        total += best
    return total


def sweep(models: Models, runtime: Runtime, cfg: DictConfig, main: StepSettings) -> dict:
    sw = cfg.sweep
    batch_at = int(sw.batch_size or main.batch_size)
    length_at = int(sw.response_len or main.response_len)
    points = [main.resized(batch_size=batch_at, response_len=int(t)) for t in sw.response_lens]
    points += [main.resized(batch_size=int(b), response_len=length_at) for b in sw.batch_sizes]
    done: dict[tuple[int, int], dict] = {}
    rows = []
    for s in points:
        key = (s.batch_size, s.response_len)
        if key not in done:
            r = measure_step(
                models, runtime, cfg, s, repeats=int(sw.repeats), warmup=int(sw.warmup), detail=False
            )
            done[key] = {
                "batch_size": s.batch_size,
                "response_len": s.response_len,
                "seconds": r["seconds"],
                "rollout_seconds": r["parts"]["rollout"],
                "train_seconds": r["seconds"] - r["parts"]["rollout"],
                "generated_tokens_per_s": r["generated_tokens_per_s"],
            }
            rows.append(done[key])
    # The same lengths decoded by each model alone (KV cache, no mixing, no training): how plain decoding
    # grows with length on this machine, the reference for the rollout's growth.
    for r in rows:
        if r["batch_size"] == batch_at:
            r["decode_bound_seconds"] = decode_bound(
                models, runtime, batch_at, main.prompt_len, r["response_len"], int(sw.repeats)
            )
    by_len = sorted((r for r in rows if r["batch_size"] == batch_at), key=lambda r: r["response_len"])
    by_batch = sorted((r for r in rows if r["response_len"] == length_at), key=lambda r: r["batch_size"])
    lens = {r["response_len"]: r["seconds"] for r in by_len}
    length_fit = linear_fit([r["response_len"] for r in by_len], [r["seconds"] for r in by_len])
    length_fit["ratio_256_128"] = lens[256] / lens[128] if 256 in lens and 128 in lens else None
    bounds = {r["response_len"]: r["decode_bound_seconds"] for r in by_len}
    length_fit["decode_bound_ratio_256_128"] = (
        bounds[256] / bounds[128] if 256 in bounds and 128 in bounds else None
    )
    return {
        "points": rows,
        "length_fit": {"batch_size": batch_at, **length_fit},
        "batch_fit": {
            "response_len": length_at,
            **linear_fit([r["batch_size"] for r in by_batch], [r["seconds"] for r in by_batch]),
        },
    }
