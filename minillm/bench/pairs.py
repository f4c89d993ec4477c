"""Old and new paths of the round, timed alternately in one run (issue 22): the MiniLLM round under bf16
mixed precision against fp32, the round built once (as training runs it) against rebuilt every step, and
the lockstep teacher-mixed rollout decoded eagerly against ``sampler.decode=compiled`` (or ``static``), and the
whole round in fp32 with eager decoding against bf16 with compiled decoding (``pairs.fast_path``), and the
sampler's token draw against ``torch.multinomial`` (``pairs.draw``).

Each pair alternates its two sides ``repeats`` times after ``warmup`` untimed pairs, so a drift in the
machine's load hits both alike; medians, each pair's own ratio (min and max) and the load average before
and after are reported. Each side trains its own copy of the student with its own optimizer, so each is a
training run of its own."""

from __future__ import annotations

import contextlib
import copy
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import torch
from omegaconf import DictConfig

from minillm.bench.measure import Clock, peak_memory
from minillm.bench.models import Models, make_prompts
from minillm.bench.settings import Runtime, StepSettings
from minillm.bench.step import step_runner
from minillm.errors import MinillmError
from minillm.rollout import static_decode
from minillm.rollout.options import SamplingOptions
from minillm.rollout.sampler import _unwrap, draw, multinomial_draws, sample_rollouts
from minillm.training.precision import AUTO, AUTO_MARGIN, BF16, FP32, bf16_supported, measure

BUILD_REPEATS = 50  # timed rebuilds of the round alone (median)
DRAW_CALLS = 200  # tokens drawn per side and pair (pairs.draw)
OLD_DRAWS = ("multinomial", "draw")  # pairs.old_draw
FAST_PATH_PRECISIONS = ("bf16-mixed", "32-true")  # pairs.fast_path_precision: the fast side's
UPDATE_MODES = ("eager", "compiled")  # pairs.fast_path_updates, trl_gkd.updates: the updates' passes


def alternate(sides: dict[str, Callable[[], tuple[float, float]]], repeats: int, warmup: int) -> dict:
    """Time ``sides`` (name -> callable returning its seconds and peak MiB) alternately; the first is the
    old path, the second the new one. Returns every time, the medians, old ÷ new of the medians (> 1: the
    new path is faster) and of each pair, each side's peak memory over its timed calls, with the 1-minute
    load average before and after."""
    (old, run_old), (new, run_new) = sides.items()
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {old: [], new: []}
    peaks: dict[str, float] = {old: 0.0, new: 0.0}
    for i in range(warmup + repeats):
        pair = {old: run_old(), new: run_new()}
        if i >= warmup:
            for name, (seconds, peak_mib) in pair.items():
                times[name].append(seconds)
                peaks[name] = max(peaks[name], peak_mib)
    ratios = [a / b for a, b in zip(times[old], times[new], strict=True)]
    return {
        "old": old,
        "new": new,
        "seconds": times,
        "peak_mib": peaks,
        "median_seconds": {name: statistics.median(values) for name, values in times.items()},
        "speedup": statistics.median(times[old]) / statistics.median(times[new]),
        "pair_ratio_min": min(ratios),
        "pair_ratio_max": max(ratios),
        "repeats": repeats,
        "warmup": warmup,
        "load_avg_before": list(load_before),
        "load_avg_after": list(os.getloadavg()),
    }


def own_copy(models: Models, teacher_dtype: torch.dtype | None = None) -> Models:
    """A copy of the student (trained by one side only) and of the teacher (in ``teacher_dtype``), decoded
    eagerly."""
    student = copy.deepcopy(models.student)
    teacher = copy.deepcopy(models.teacher)
    if teacher_dtype is not None:
        teacher.to(teacher_dtype)
    return replace(models, student=student, teacher=teacher, decode_student=student, decode_teacher=teacher)


def timed(run: Callable, runtime: Runtime) -> Callable[[], tuple[float, float]]:
    """One timed round and its peak memory (``measure.peak_memory``: CUDA allocator or the process's
    resident set, reset before the round); each call's split into the round's parts (``step.PARTS``) is
    appended to the callable's ``parts`` list."""
    splits: list[dict[str, float]] = []

    def once() -> tuple[float, float]:
        clock = Clock(runtime)
        with peak_memory(runtime) as memory:
            seconds = run(clock)
        splits.append({"total": seconds, **clock.seconds})
        return seconds, memory["peak_mib"]

    once.parts = splits
    return once


def median_parts(splits: list[dict[str, float]]) -> dict[str, float]:
    """Milliseconds per part (``total``, ``rollout``, ``student_fwd_bwd``, ...): each part's median over
    ``splits``."""
    names = sorted({name for split in splits for name in split})
    return {name: 1000 * statistics.median(split.get(name, 0.0) for split in splits) for name in names}


def precision_pair(models: Models, runtime: Runtime, cfg: DictConfig, main: StepSettings) -> dict:
    """The MiniLLM round in fp32 (today's default) against bf16 mixed precision as training runs it (bf16
    autocast, the teacher's weights in bf16 as fit.teacher_dtype=auto holds them, old log-probs rescored);
    skipped where the device has no native bf16."""
    device = runtime.device.type
    if not bf16_supported(device):
        return {"skipped": f"this {device} has no native bf16"}
    fp32 = replace(runtime, dtype="fp32", compile=False)
    bf16 = replace(runtime, dtype="bf16", compile=False)
    fp32_settings = main.with_round(rescore_old_logprobs=False)
    bf16_settings = main.with_round(rescore_old_logprobs=True)
    sides = {
        "fp32": timed(step_runner(own_copy(models, torch.float32), fp32, cfg, fp32_settings), fp32),
        "bf16-mixed": timed(step_runner(own_copy(models, torch.bfloat16), bf16, cfg, bf16_settings), bf16),
    }
    out = alternate(sides, int(cfg.pairs.repeats), int(cfg.pairs.warmup))
    out["settings"] = {
        "batch_size": main.batch_size,
        "prompt_len": main.prompt_len,
        "response_len": main.response_len,
    }
    return out


def round_build_pair(models: Models, runtime: Runtime, cfg: DictConfig, main: StepSettings) -> dict:
    """The MiniLLM round rebuilt from the config every step (the old training path) against built once."""
    plain = replace(runtime, compile=False)
    rebuilt = step_runner(own_copy(models), plain, cfg, main, build_per_step=True)
    sides = {
        "rebuilt every step": timed(rebuilt, plain),
        "built once": timed(step_runner(own_copy(models), plain, cfg, main), plain),
    }
    out = alternate(sides, int(cfg.pairs.repeats), int(cfg.pairs.warmup))
    builds = []
    for _ in range(BUILD_REPEATS):  # the rebuild alone: what the old path added to every step
        start = time.perf_counter()
        rebuilt.rebuild()
        builds.append(time.perf_counter() - start)
    out["rebuild_seconds"] = statistics.median(builds)
    return out


def decode_pair(models: Models, runtime: Runtime, cfg: DictConfig, main: StepSettings) -> dict:
    """The lockstep rollout at the round's α (its batch and lengths, every row decoding ``response_len``
    tokens) with ``sampler.decode=eager`` against ``pairs.decode`` (static or compiled), on the same models
    and prompts. The compile happens in the untimed pairs (at least one); its time is reported beside."""
    new = str(cfg.pairs.decode)
    if new not in ("static", "compiled"):
        raise MinillmError(f"pairs.decode={new!r}: must be static, compiled or null")
    prompt_ids, prompt_mask = make_prompts(models, main.batch_size, main.prompt_len, 1, runtime.device)
    rollouts = {}
    old_draws, old_name = old_draw(cfg, "eager")

    def side(mode: str, draws=contextlib.nullcontext) -> Callable[[], tuple[float, float]]:
        def once() -> tuple[float, float]:
            gen = torch.Generator(device=runtime.device).manual_seed(0)
            with static_decode.decode_mode(mode), draws(), peak_memory(runtime) as memory, runtime.autocast():
                runtime.sync()
                start = time.perf_counter()
                rollouts[mode] = sample_rollouts(
                    models.student,
                    models.teacher,
                    prompt_ids,
                    prompt_mask,
                    SamplingOptions(
                        max_new_tokens=main.response_len,
                        eos_token_id=None,
                        pad_token_id=models.eos_token_id,
                        teacher_mix_alpha=main.alpha,
                    ),
                    generator=gen,
                    keep_teacher_logits=main.round.keep_teacher_logits,
                    teacher_after_decoding=False,  # lockstep at α = 0 too
                )
                runtime.sync()
                seconds = time.perf_counter() - start
            return seconds, memory["peak_mib"]

        return once

    warmup = max(1, int(cfg.pairs.warmup))  # the first compiled side compiles
    out = alternate({old_name: side("eager", old_draws), new: side(new)}, int(cfg.pairs.repeats), warmup)
    out.update(compile_stats(models))
    out["same_tokens"] = bool(torch.equal(rollouts["eager"].response_ids, rollouts[new].response_ids))
    out["settings"] = {
        "old_draw": str(cfg.pairs.old_draw),
        "alpha": main.alpha,
        "batch_size": main.batch_size,
        "prompt_len": main.prompt_len,
        "response_len": main.response_len,
    }
    return out


def old_draw(cfg: DictConfig, name: str) -> tuple[Callable, str]:
    """How the old side of the decode and fast-path pairs draws its tokens (``pairs.old_draw``): with
    ``torch.multinomial``, as the sampler did before issue 22 (the same tokens), or with today's ``draw``;
    the context to run it in and the side's name."""
    how = str(cfg.pairs.get("old_draw"))
    if how not in OLD_DRAWS:
        raise MinillmError(f"pairs.old_draw={how!r}: must be one of {', '.join(OLD_DRAWS)}")
    if how == "multinomial":
        return multinomial_draws, f"{name}, torch.multinomial"
    return contextlib.nullcontext, name


def fast_path_pair(models: Models, runtime: Runtime, cfg: DictConfig, main: StepSettings) -> dict:
    """The whole MiniLLM round as today's default runs it (fp32, eager decoding) against the fast path:
    ``pairs.fast_path_precision`` (bf16 mixed precision, or fp32 where bf16 measured slower) with
    ``sampler.decode=pairs.fast_path`` (compiled or static) for its rollout. The compile happens in the untimed
    pairs (at least one); a bf16 side is skipped where the device has no native bf16."""
    device = runtime.device.type
    mode = str(cfg.pairs.fast_path)
    if mode not in ("static", "compiled"):
        raise MinillmError(f"pairs.fast_path={mode!r}: must be static, compiled or null")
    precision = str(cfg.pairs.get("fast_path_precision") or AUTO)  # the defaults of conf/bench.yaml
    if precision not in (*FAST_PATH_PRECISIONS, AUTO):
        raise MinillmError(
            f"pairs.fast_path_precision={precision!r}: must be one of {', '.join((*FAST_PATH_PRECISIONS, AUTO))}"
        )
    chosen_by = None
    if precision == AUTO:  # as trainer.precision=auto chooses: bf16 where supported and measured faster
        if bf16_supported(device):
            fp32_s, bf16_s, _ = measure(models.student, device)
            precision = BF16 if bf16_s <= AUTO_MARGIN * fp32_s else FP32
            chosen_by = {"fp32_seconds": fp32_s, "bf16_seconds": bf16_s}
        else:
            precision, chosen_by = FP32, {"no_native_bf16": device}
    updates = str(cfg.pairs.get("fast_path_updates") or "compiled")
    if updates not in UPDATE_MODES:
        raise MinillmError(f"pairs.fast_path_updates={updates!r}: must be one of {', '.join(UPDATE_MODES)}")
    bf16_side = precision == "bf16-mixed"
    if bf16_side and not bf16_supported(device):
        return {"skipped": f"this {device} has no native bf16"}
    fp32 = replace(runtime, dtype="fp32", compile=False)
    fast_runtime = replace(runtime, dtype="bf16" if bf16_side else "fp32", compile=False)
    old_draws, old_name = old_draw(cfg, "fp32 eager")
    old_round = timed(
        step_runner(own_copy(models, torch.float32), fp32, cfg, main.with_round(rescore_old_logprobs=False)),
        fp32,
    )
    repeats = int(cfg.pairs.repeats)

    def old() -> tuple[float, float]:
        with old_draws():
            return old_round()

    fast_models = own_copy(models, torch.bfloat16 if bf16_side else torch.float32)
    fast_settings = main.with_round(rescore_old_logprobs=bf16_side, compile_updates=updates == "compiled")
    fast_run = step_runner(fast_models, fast_runtime, cfg, fast_settings)
    fast = timed(fast_run, fast_runtime)

    def new() -> tuple[float, float]:
        with static_decode.decode_mode(mode):
            return fast()

    warmup = max(1, int(cfg.pairs.warmup))  # the first fast side compiles
    label = f"{'bf16-mixed' if bf16_side else 'fp32'} {mode}" + (
        " + compiled updates" if updates == "compiled" else ""
    )
    out = alternate({old_name: old, label: new}, repeats, warmup)
    # each side's median split over its timed rounds: where the time went, old path and fast path
    out["parts_ms"] = {
        old_name: median_parts(old_round.parts[-repeats:]),
        label: median_parts(fast.parts[-repeats:]),
    }
    out.update(compile_stats(fast_models))
    out.update(update_compile_stats(fast_run))
    out["settings"] = {
        "old_draw": str(cfg.pairs.old_draw),
        "decode": mode,
        "updates": updates,
        "precision": precision,
        "precision_auto": chosen_by,  # pairs.fast_path_precision=auto: the probe that chose (None: set by hand)
        "batch_size": main.batch_size,
        "prompt_len": main.prompt_len,
        "response_len": main.response_len,
    }
    return out


def draw_pair(models: Models, runtime: Runtime, cfg: DictConfig, main: StepSettings) -> dict:
    """Drawing one token per row of a (batch, vocabulary) distribution ``DRAW_CALLS`` times: ``torch.multinomial``
    (what the sampler called until 2026-12-06) against the sampler's ``draw`` (the same draws on CPU, torch's
    own kernel elsewhere), alternately, each side from the same seed: same tokens."""
    device = runtime.device
    gen = torch.Generator(device=device).manual_seed(int(cfg.seed))
    logits = torch.randn(main.batch_size, models.vocab_size, generator=gen, device=device)
    probs = torch.softmax(logits * 3.0, dim=-1)
    tokens: dict[str, torch.Tensor] = {}

    def side(name: str, fn: Callable) -> Callable[[], tuple[float, float]]:
        def once() -> tuple[float, float]:
            g = torch.Generator(device=device).manual_seed(int(cfg.seed) + 1)
            with peak_memory(runtime) as memory:
                runtime.sync()
                start = time.perf_counter()
                drawn = [fn(probs, g) for _ in range(DRAW_CALLS)]
                runtime.sync()
                seconds = time.perf_counter() - start
            tokens[name] = torch.stack(drawn)
            return seconds, memory["peak_mib"]

        return once

    sides = {
        "torch.multinomial": side("old", lambda p, g: torch.multinomial(p, 1, generator=g).squeeze(-1)),
        "draw": side("new", draw),
    }
    out = alternate(sides, int(cfg.pairs.repeats), int(cfg.pairs.warmup))
    out["same_tokens"] = bool(torch.equal(tokens["old"], tokens["new"]))
    out["settings"] = {"batch_size": main.batch_size, "vocab_size": models.vocab_size, "calls": DRAW_CALLS}
    return out


def compile_stats(models: Models) -> dict:
    """What ``sampler.decode=compiled`` cost the student and the teacher of ``models`` in this process: the
    seconds spent compiling, the graphs, and the one-line reason of any compile that fell back to eager."""
    states = [s for m in (models.student, models.teacher) for s in static_decode.states(_unwrap(m))]
    return {
        "compile_seconds": sum(s.compile_seconds for s in states),
        "compilations": sum(s.compilations for s in states),
        "compile_failed": [s.failed for s in states if s.failed],
    }


def update_compile_stats(run) -> dict:
    """What ``fit.compile_updates`` cost the rounds of ``step_runner``'s ``run`` (none: they ran eagerly): the
    first compiled update's seconds (compiling included) and the one-line reason of a compile that failed."""
    passes = [r.passes for r in run.rounds.values() if r.passes.compiled]
    return {
        "update_compile_seconds": sum(p.first_seconds or 0.0 for p in passes) if passes else None,
        "update_compile_failed": [p.failed for p in passes if p.failed],
    }


def pairs(models: Models, runtime: Runtime, cfg: DictConfig, main: StepSettings) -> dict | None:
    """Every pair (``pairs.enabled``), or None."""
    if not cfg.pairs.enabled:
        return None
    out = {}
    if cfg.pairs.get("precision", True):
        out["precision"] = precision_pair(models, runtime, cfg, main)
    if cfg.pairs.round_build:
        out["round_build"] = round_build_pair(models, runtime, cfg, main)
    if cfg.pairs.get("decode"):
        out["decode"] = decode_pair(models, runtime, cfg, main)
    if cfg.pairs.get("fast_path"):
        out["fast_path"] = fast_path_pair(models, runtime, cfg, main)
    if cfg.pairs.get("draw"):
        out["draw"] = draw_pair(models, runtime, cfg, main)
    return out
