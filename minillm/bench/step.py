"""One distillation round, timed: ``MiniLLMRound`` (the round ``OnPolicyModule.training_step`` runs),
called without Lightning, its parts split by a timer."""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, fields, replace

import torch
from omegaconf import DictConfig

from minillm.bench.measure import Clock, count_tokens, peak_memory
from minillm.bench.models import Models, make_prompts
from minillm.bench.settings import Runtime, StepSettings
from minillm.objectives.policy_gradient import single_step_loss
from minillm.training.optim import make_optimizer, make_scheduler
from minillm.training.options import RoundOptions, keep_teacher_logits
from minillm.training.round import LossFn, MiniLLMRound, RoundHooks

PARTS = ("rollout", "teacher_scoring", "student_fwd_bwd", "optimizer")  # the round's timer regions


def single_step_only(chunk_size: int | None) -> LossFn:
    """GKD's loss on our machinery: the single-step term alone (the token-level reverse KL on the sampled
    prefixes), no policy-gradient term."""

    def loss(logits, teacher_logits, mb, logprobs):
        value = single_step_loss(
            logits, teacher_logits, mb.response_mask, reduction="mean", chunk_size=chunk_size
        )
        return value, {"single_step_loss": value.detach()}

    return loss


def step_runner(
    models: Models, runtime: Runtime, cfg: DictConfig, s: StepSettings, *, build_per_step: bool = False
) -> Callable[..., float]:
    """``run(clock, plain=False) -> seconds``: one timed round of ``s`` (device-synchronised at both ends),
    with its own optimizer, scheduler, prompts and generators, built once and kept across calls.
    ``plain=True`` decodes with the uncompiled models.

    The round itself (``MiniLLMRound``) is built once per decoder choice and reused, as training builds
    it once per fit; ``build_per_step=True`` times the old path instead, which rebuilt it (its options
    read from the config again) inside every step."""
    optimizer = make_optimizer(models.student.parameters(), cfg.optim)
    scheduler = make_scheduler(optimizer, cfg.scheduler, 10_000)
    prompts = make_prompts(models, s.batch_size, s.prompt_len, 2, runtime.device)
    rollout_gen = torch.Generator(device=runtime.device).manual_seed(int(cfg.seed) + 3)
    shuffle_gen = torch.Generator().manual_seed(int(cfg.seed) + 2)
    loss = None if s.pg_term else single_step_only(s.round.chunk_size)
    clock_now: list[Clock] = []  # the clock of the call in progress (the hooks, built once, read it)

    def timer(name: str):
        return clock_now[0](name)

    def build(plain: bool, options: RoundOptions) -> MiniLLMRound:
        decoders = (
            (models.student, models.teacher) if plain else (models.decode_student, models.decode_teacher)
        )
        return MiniLLMRound(
            models.student,
            models.teacher,
            optimizer,
            scheduler,
            options,
            RoundHooks(timer=timer),
            decoders=decoders,
            loss=loss,
            loss_logprobs=s.pg_term,  # GKD's loss never reads the sampled tokens' log-probs
            device=runtime.device,
        )

    def rebuilt_options() -> RoundOptions:
        """The options read from the config again, as the old per-step path did (``s.round`` with the
        config's own values of what bench fixes: the batch, lengths and α's cached-logits choice)."""
        fresh = RoundOptions.from_config(
            cfg.objective,
            grad_clip=cfg.get("grad_clip"),
            eos_token_id=s.round.sampling.eos_token_id,
            pad_token_id=s.round.sampling.pad_token_id,
            keep_teacher_logits=keep_teacher_logits(cfg.objective, models.teacher)[0],
        )
        return replace(
            fresh,
            **{f.name: getattr(s.round, f.name) for f in fields(RoundOptions) if f.name != "pg"},
        )

    built: dict[bool, MiniLLMRound] = {}

    def run(clock: Clock, plain: bool = False) -> float:
        clock_now[:] = [clock]
        runtime.sync()
        start = time.perf_counter()
        if build_per_step:
            round_ = build(plain, rebuilt_options())
        else:
            round_ = built.get(plain) or built.setdefault(plain, build(plain, s.round))
        with runtime.autocast():
            round_(*prompts, alpha=s.alpha, rollout_gen=rollout_gen, shuffle_gen=shuffle_gen)
        runtime.sync()
        return time.perf_counter() - start

    run.rebuild = lambda: build(False, rebuilt_options())  # what the old path added to every step
    run.rounds = built  # the rounds built so far, per decoder choice (their update passes: compile stats)
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
    run = step_runner(models, runtime, cfg, s, build_per_step=bool(cfg.get("round_per_step", False)))
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
