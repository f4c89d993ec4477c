"""One distillation round, timed: ``MiniLLMRound`` (the round ``OnPolicyModule.training_step`` runs),
called without Lightning, its parts split by a timer."""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict

import torch
from omegaconf import DictConfig

from minillm.bench.measure import Clock, count_tokens, peak_memory
from minillm.bench.models import Models, make_prompts
from minillm.bench.settings import Runtime, StepSettings
from minillm.objectives.policy_gradient import single_step_loss
from minillm.training.optim import make_optimizer, make_scheduler
from minillm.training.round import LossFn, MiniLLMRound, RoundHooks

PARTS = ("rollout", "teacher_scoring", "student_fwd_bwd", "optimizer")  # the round's timer regions


def single_step_only(chunk_size: int | None) -> LossFn:
    """GKD's loss on our machinery: the single-step term alone (the token-level reverse KL on the sampled
    prefixes), no policy-gradient term."""

    def loss(logits, teacher_logits, mb):
        value = single_step_loss(
            logits, teacher_logits, mb.response_mask, reduction="mean", chunk_size=chunk_size
        )
        return value, {"single_step_loss": value.detach()}

    return loss


def step_runner(models: Models, runtime: Runtime, cfg: DictConfig, s: StepSettings) -> Callable[..., float]:
    """``run(clock, plain=False) -> seconds``: one timed round of ``s`` (device-synchronised at both ends),
    with its own optimizer, scheduler, prompts and generators, built once and kept across calls.
    ``plain=True`` decodes with the uncompiled models."""
    optimizer = make_optimizer(models.student.parameters(), cfg.optim)
    scheduler = make_scheduler(optimizer, cfg.scheduler, 10_000)
    prompts = make_prompts(models, s.batch_size, s.prompt_len, 2, runtime.device)
    rollout_gen = torch.Generator(device=runtime.device).manual_seed(int(cfg.seed) + 3)
    shuffle_gen = torch.Generator().manual_seed(int(cfg.seed) + 2)
    loss = None if s.pg_term else single_step_only(s.round.chunk_size)

    def run(clock: Clock, plain: bool = False) -> float:
        decoders = (
            (models.student, models.teacher) if plain else (models.decode_student, models.decode_teacher)
        )
        round_ = MiniLLMRound(
            models.student,
            models.teacher,
            optimizer,
            scheduler,
            s.round,
            RoundHooks(timer=clock),
            decoders=decoders,
            loss=loss,
            device=runtime.device,
        )
        runtime.sync()
        start = time.perf_counter()
        with runtime.autocast():
            round_(*prompts, alpha=s.alpha, rollout_gen=rollout_gen, shuffle_gen=shuffle_gen)
        runtime.sync()
        return time.perf_counter() - start

    return run


def measure_step(
    models: Models,
    runtime: Runtime,
    cfg: DictConfig,
    s: StepSettings,
    *,
    repeats: int,
    warmup: int,
    detail: bool,
) -> dict:
    """Round time (the repeat with the median total, and its split); with ``detail`` also forward
    token counts (from an untimed step on the plain models, which doubles as a warm-up) and peak memory."""
    run = step_runner(models, runtime, cfg, s)
    out: dict = {"settings": asdict(s)}
    if detail:
        with count_tokens({"teacher": models.teacher, "student": models.student}) as counts:
            run(Clock(runtime), plain=True)
        needed = s.needed_tokens()
        full_pass = s.batch_size * (s.prompt_len + s.response_len)
        out["forward_tokens"] = {
            "teacher": counts["teacher"],
            "teacher_needed": needed["teacher"],
            "student": counts["student"],
            "student_needed": needed["student"],
            # teacher passes over each token per inner epoch, beyond the rollout (0 with cached logits)
            "teacher_passes_per_epoch": (counts["teacher"] - needed["teacher"])
            / (s.round.ppo_epochs * full_pass),
        }
        warmup = max(0, warmup - 1) + (1 if runtime.compile else 0)
    for _ in range(warmup):
        run(Clock(runtime))
    totals, splits = [], []
    with contextlib.ExitStack() as stack:
        memory = stack.enter_context(peak_memory(runtime)) if detail else None
        for _ in range(repeats):
            clock = Clock(runtime)
            totals.append(run(clock))
            splits.append(dict(clock.seconds))
    pick = totals.index(statistics.median_low(totals))
    seconds = totals[pick]
    parts = {name: splits[pick].get(name, 0.0) for name in PARTS}
    parts["other"] = seconds - sum(parts.values())
    out.update(
        seconds=seconds,
        all_seconds=totals,
        parts=parts,
        generated_tokens_per_s=s.generated_tokens / seconds,
        updates=s.round.ppo_epochs * math.ceil(s.batch_size / s.round.mini_batch_size),
    )
    if memory is not None:
        out["memory"] = memory
    return out
