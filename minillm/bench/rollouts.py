"""Rollout throughput: lockstep teacher-mixed decoding against each model decoding alone."""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections import defaultdict
from collections.abc import Callable

import torch

from minillm.bench.models import Models, make_prompts
from minillm.bench.settings import Runtime, StepSettings
from minillm.errors import MinillmError
from minillm.rollout.options import SamplingOptions
from minillm.rollout.sampler import generate, sample_rollouts, score_with_teacher


def rollout_throughput(models: Models, runtime: Runtime, s: StepSettings, repeats: int, warmup: int) -> dict:
    """Lockstep decoding (α and α = 0) against the student alone and the teacher alone, same tokens."""
    prompt_ids, prompt_mask = make_prompts(models, s.batch_size, s.prompt_len, 1, runtime.device)
    gen = torch.Generator(device=runtime.device).manual_seed(0)
    sampling = SamplingOptions(
        max_new_tokens=s.response_len, eos_token_id=None, pad_token_id=models.eos_token_id
    )

    def lockstep(alpha):
        return lambda: sample_rollouts(
            models.decode_student,
            models.decode_teacher,
            prompt_ids,
            prompt_mask,
            dataclasses.replace(sampling, teacher_mix_alpha=alpha),
            generator=gen,
            keep_teacher_logits=s.round.keep_teacher_logits,
            teacher_after_decoding=False,  # lockstep even at α = 0: the bound's comparison
        )

    runs: dict[str, Callable] = {
        f"lockstep α={s.alpha:g}": lockstep(s.alpha),
        "lockstep α=0": lockstep(0.0),
        "student alone": lambda: generate(
            models.decode_student, prompt_ids, prompt_mask, sampling, generator=gen
        ),
        "teacher alone": lambda: generate(
            models.decode_teacher, prompt_ids, prompt_mask, sampling, generator=gen
        ),
    }
    # The teacher's distributions over the same tokens from one teacher-forced pass (possible when α = 0).
    scored = generate(models.student, prompt_ids, prompt_mask, sampling, generator=gen)
    runs["teacher one pass"] = lambda: score_with_teacher(models.teacher, scored, keep_teacher_logits=True)
    times: dict[str, list[float]] = defaultdict(list)
    # Interleaved, so slow drifts in background load hit every variant alike.
    for i in range(warmup + repeats):
        for name, fn in runs.items():
            runtime.sync()
            start = time.perf_counter()
            with runtime.autocast():
                rollout = fn()
            runtime.sync()
            elapsed = time.perf_counter() - start
            if rollout.response_ids.shape[1] != s.response_len:
                raise MinillmError(
                    f"{name} decoded {rollout.response_ids.shape[1]} tokens, not {s.response_len}"
                )
            if i >= warmup:
                times[name].append(elapsed)
    out: dict = {"tokens": s.generated_tokens, "runs": {}}
    for name, values in times.items():
        sec = statistics.median(values)
        out["runs"][name] = {"seconds": sec, "tokens_per_s": s.generated_tokens / sec, "all_seconds": values}
    bound = out["runs"]["student alone"]["seconds"] + out["runs"]["teacher alone"]["seconds"]
    out["bound_seconds"] = bound
    out["bound_tokens_per_s"] = s.generated_tokens / bound
    out["ratio"] = {
        name: out["runs"][name]["seconds"] / bound for name in runs if name.startswith("lockstep")
    }
    out["ratio_main"] = out["ratio"][f"lockstep α={s.alpha:g}"]
    # At α = 0 the teacher need not decode: student alone + one teacher pass is the bound there.
    alpha0_bound = out["runs"]["student alone"]["seconds"] + out["runs"]["teacher one pass"]["seconds"]
    out["alpha0_bound_seconds"] = alpha0_bound
    out["alpha0_ratio"] = out["runs"]["lockstep α=0"]["seconds"] / alpha0_bound
    return out
