"""``make bench``: how close on-policy distillation runs to the hardware bound, measured.

``python -m minillm.bench [key=value ...]`` (Hydra app over ``conf/bench.yaml``) times, for one teacher /
student pair on random prompts of fixed length:

1. rollouts: lockstep teacher-mixed decoding (α and α = 0) against the same tokens decoded by the
   student alone and by the teacher alone (``generate``, KV caches). Decoding the two models in
   lockstep can cost no less than the sum of the two, so the ratio lockstep / (student + teacher) is
   the overhead of mixing (target ≤ 1.25). Every row decodes exactly ``response_len`` tokens
   (``eos_token_id=None``), so all four decode the same number of tokens;
2. one distillation step, split into rollout, teacher scoring, student forward+backward and optimizer,
   built from the same functions ``OnPolicyModule`` uses (``sample_rollouts``, ``RolloutBuffer``,
   ``response_logits``, ``minillm_loss``, ``build_optimizer``) without Lightning; forward-pass token
   counts per model (forward hooks) against what the algorithm needs; peak memory;
3. a sweep of step time over response lengths and batch sizes, with a linearity fit;
4. a "GKD-equivalent" step (student-only sampling, token reverse KL, no policy-gradient term, one
   update per batch), comparable with TRL's ``GKDTrainer``;
5. when TRL is installed (``pip install -e '.[bench]'``), TRL's ``GKDTrainer`` step and ours (the
   GKD-equivalent step as training runs it), timed alternately in the same run; without TRL that
   comparison is skipped, saying why.

It prints tables and writes ``bench.json`` into the Hydra run folder (and to ``save_dir`` with
``save=true``). Speed is measured here, never asserted by tests. See docs/benchmarks.md.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import io
import json
import logging
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from minillm.cli import CONF_DIR, quiet_libraries, user_errors
from minillm.errors import MinillmError

quiet_libraries()
log = logging.getLogger(__name__)

LOAD_WARNING = 1.5  # 1-minute load average above which timings are flagged as taken under load
TARGET_LOCKSTEP_RATIO = 1.25
TARGET_GKD_SPEEDUP = 1.5
TARGET_CHUNK_MEMORY_RATIO = 0.5


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class StepSettings:
    """One distillation-step configuration (what ``OnPolicyModule.training_step`` does per round)."""

    batch_size: int  # rollouts per round (objective.num_rollouts)
    prompt_len: int
    response_len: int  # every row decodes exactly this many tokens
    alpha: float  # teacher-mix α of the rollout
    ppo_epochs: int
    mini_batch_size: int
    keep_teacher_logits: bool  # True: single-step term uses the rollout's teacher logits, no re-scoring
    pg_term: bool  # False: the single-step term (token reverse KL) alone, as GKD
    variant: str  # PGOptions preset: code | paper
    # α = 0 only: decode with the student alone, then score prompt + response with one teacher-forced
    # teacher pass (what the sampler could do when the teacher does not shape the samples)
    teacher_after_rollout: bool = False

    @property
    def generated_tokens(self) -> int:
        return self.batch_size * self.response_len

    def needed_tokens(self) -> dict[str, int]:
        """Forward tokens the algorithm needs per step.

        Teacher: every prompt token and every response token but the last (whose next-token
        distribution nobody uses), once, in the rollout. Student: the same in the rollout, plus one
        teacher-forced pass over prompt + response per row per inner epoch.
        """
        rollout = self.batch_size * (self.prompt_len + self.response_len - 1)
        per_epoch = self.batch_size * (self.prompt_len + self.response_len)
        return {"teacher": rollout, "student": rollout + self.ppo_epochs * per_epoch}


def _positive(cfg, key: str) -> int:
    value = cfg.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise MinillmError(f"{key}={value!r}: must be a positive integer")
    return value


def step_settings(cfg: DictConfig) -> StepSettings:
    alpha = float(cfg.alpha)
    if not 0.0 <= alpha <= 1.0:
        raise MinillmError(f"alpha={alpha}: must lie in [0, 1]")
    if cfg.variant not in ("code", "paper"):
        raise MinillmError(f"variant={cfg.variant!r}: choose one of ['code', 'paper']")
    return StepSettings(
        batch_size=_positive(cfg, "batch_size"),
        prompt_len=_positive(cfg, "prompt_len"),
        response_len=_positive(cfg, "response_len"),
        alpha=alpha,
        ppo_epochs=_positive(cfg, "ppo_epochs"),
        mini_batch_size=_positive(cfg, "mini_batch_size"),
        keep_teacher_logits=bool(cfg.keep_teacher_logits),
        pg_term=bool(cfg.pg_term),
        variant=str(cfg.variant),
    )


def gkd_settings(main: StepSettings) -> StepSettings:
    """GKD's step on our machinery: α = 0, one update per batch, the token reverse KL alone, the teacher
    decoding in lockstep (``gkd_one_teacher_pass``, what training does at α = 0, scores it afterwards)."""
    return replace(
        main,
        alpha=0.0,
        ppo_epochs=1,
        mini_batch_size=main.batch_size,
        keep_teacher_logits=True,
        pg_term=False,
    )


def pg_options_for(settings: StepSettings):
    from minillm.objectives.policy_gradient import PGOptions

    return PGOptions.code() if settings.variant == "code" else PGOptions.paper(single_step=True)


# --------------------------------------------------------------------------- device and precision


@dataclass
class Runtime:
    """Where and how the models run; ``autocast()`` wraps every timed region."""

    device: torch.device
    dtype: str  # fp32 | bf16
    compile: bool

    def autocast(self):
        if self.dtype == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def make_runtime(cfg: DictConfig) -> Runtime:
    device = str(cfg.device)
    if device not in ("cpu", "cuda"):
        raise MinillmError(f"device={device!r}: choose one of ['cpu', 'cuda']")
    if cfg.dtype not in ("fp32", "bf16"):
        raise MinillmError(f"dtype={cfg.dtype!r}: choose one of ['bf16', 'fp32']")
    if device == "cuda" and not torch.cuda.is_available():
        raise MinillmError(
            "device=cuda: no CUDA device is available here (torch.cuda.is_available() is False)"
        )
    if device != "cuda":
        for key, value, off in (("dtype", cfg.dtype, "fp32"), ("compile", bool(cfg.compile), False)):
            if value != off:
                raise MinillmError(
                    f"{key}={value}: part of the CUDA path; it needs device=cuda and a CUDA device "
                    f"(on CPU use {key}={str(off).lower()})"
                )
    return Runtime(device=torch.device(device), dtype=str(cfg.dtype), compile=bool(cfg.compile))


# --------------------------------------------------------------------------- models and prompts


@dataclass
class Models:
    student: torch.nn.Module  # trained, full precision (autocast on CUDA)
    teacher: torch.nn.Module  # frozen, eval mode, reduced precision with dtype=bf16
    decode_student: torch.nn.Module  # what the rollout calls: the model, or its torch.compile wrapper
    decode_teacher: torch.nn.Module
    vocab_size: int
    eos_token_id: int
    info: dict


def _eos_of(model) -> int | None:
    eos = model.config.eos_token_id
    return eos[0] if isinstance(eos, list | tuple) else eos


def _vocab_of(model) -> int:
    return model.get_output_embeddings().weight.shape[0]


def load_models(cfg: DictConfig, runtime: Runtime) -> Models:
    """Teacher and student from ``*_path`` folders, or random init from ``*.arch`` when a folder is missing."""
    from minillm.models.loading import freeze, load_model, load_tokenizer
    from minillm.models.tiny import build_model, count_parameters

    found = {}
    for key in ("teacher", "student"):
        path = cfg.get(f"{key}_path")
        if path and Path(path).is_dir():
            found[key] = load_model(OmegaConf.create({"path": str(path)}), key=f"{key}_path")
        elif path and not cfg.random_init_fallback:
            raise MinillmError(f"{key}_path={path}: no such model folder (random_init_fallback=false)")
    loaded = next(iter(found.values()), None)
    tokenizer_path = cfg.get("tokenizer_path")
    if loaded is not None:
        vocab, eos, vocab_from = _vocab_of(loaded), _eos_of(loaded), "the loaded model"
    elif tokenizer_path and Path(tokenizer_path).is_dir():
        tok = load_tokenizer(tokenizer_path, "tokenizer_path")
        vocab, eos, vocab_from = len(tok), tok.eos_token_id, str(tokenizer_path)
    else:
        vocab, eos, vocab_from = _positive(cfg, "vocab_size"), 0, "vocab_size"
    eos = 0 if eos is None else int(eos)

    info: dict = {"vocab_size": vocab, "vocab_from": vocab_from}
    models = {}
    for i, key in enumerate(("teacher", "student")):
        if key in found:
            model, source = found[key], str(cfg.get(f"{key}_path"))
        else:
            arch = cfg[key].get("arch")
            if not arch:
                raise MinillmError(f"{key}.arch: no architecture to build (and {key}_path is not a folder)")
            path = cfg.get(f"{key}_path")
            why = f"{path} not found" if path else f"{key}_path=null"
            model = build_model(
                OmegaConf.to_container(arch, resolve=True), vocab, eos, seed=int(cfg.seed) + i
            )
            source = f"random init of {cfg[key].get('name', key)} ({why})"
            log.warning("%s: %s", key, source)
        if _vocab_of(model) != vocab:
            raise MinillmError(f"{key}: {_vocab_of(model)} output rows, but the other model has {vocab}")
        if cfg.attn_implementation:
            model.set_attn_implementation(str(cfg.attn_implementation))
        models[key] = model.to(runtime.device)
        info[key] = {
            "source": source,
            "random_init": key not in found,
            "parameters": count_parameters(model),
            "attn_implementation": model.config._attn_implementation,
        }

    teacher = freeze(models["teacher"])
    if runtime.dtype == "bf16":
        teacher.to(torch.bfloat16)  # inference only: reduced-precision weights, logits kept in bf16
    student = models["student"]
    for m in student.modules():  # OnPolicyModule turns dropout off for distillation
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    decode_student, decode_teacher = student, teacher
    if runtime.compile:
        decode_student = torch.compile(student, dynamic=True)
        decode_teacher = torch.compile(teacher, dynamic=True)
    return Models(student, teacher, decode_student, decode_teacher, vocab, eos, info)


def make_prompts(
    models: Models, batch: int, length: int, seed: int, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, P) random token ids other than EOS, no padding (timings do not depend on the text)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, models.vocab_size - 1, (batch, length), generator=gen)
    ids = ids + (ids >= models.eos_token_id).long()  # skip EOS
    return ids.to(device), torch.ones_like(ids).to(device)


# --------------------------------------------------------------------------- measuring


class Clock:
    """Accumulates wall time per named region (device-synchronised at both ends)."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.runtime.sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.runtime.sync()
            self.seconds[name] += time.perf_counter() - start


@contextlib.contextmanager
def count_tokens(models: dict[str, torch.nn.Module]) -> Iterator[dict[str, int]]:
    """Tokens fed to each model's forward (``input_ids.numel()`` per call), via forward hooks."""
    counts = dict.fromkeys(models, 0)
    handles = []
    for name, model in models.items():

        def hook(module, args, kwargs, output, name=name):
            ids = kwargs.get("input_ids", args[0] if args else None)
            if ids is not None:
                counts[name] += ids.numel()

        handles.append(model.register_forward_hook(hook, with_kwargs=True))
    try:
        yield counts
    finally:
        for h in handles:
            h.remove()


def _rss_kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(match.group(1)) if match else None


@contextlib.contextmanager
def peak_memory(runtime: Runtime) -> Iterator[dict]:
    """Peak memory over the block, in MiB. CUDA: max_memory_allocated. CPU: the resident-set
    high-water mark (VmHWM, reset through /proc/self/clear_refs; where that is impossible, the
    process-lifetime ``ru_maxrss``)."""
    out: dict = {}
    if runtime.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(runtime.device)
        start = torch.cuda.memory_allocated(runtime.device)
        yield out
        out.update(
            kind="cuda max_memory_allocated",
            peak_mib=torch.cuda.max_memory_allocated(runtime.device) / 2**20,
            start_mib=start / 2**20,
        )
        return
    reset = False
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        reset = True
    start = _rss_kib("VmRSS")
    yield out
    hwm = _rss_kib("VmHWM") if reset else None
    if hwm is not None:
        out.update(kind="cpu resident set (VmHWM)", peak_mib=hwm / 1024, start_mib=(start or 0) / 1024)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out.update(kind="cpu ru_maxrss (process lifetime)", peak_mib=peak, start_mib=(start or 0) / 1024)


# --------------------------------------------------------------------------- rollouts


def rollout_throughput(models: Models, runtime: Runtime, s: StepSettings, repeats: int, warmup: int) -> dict:
    """Lockstep decoding (α and α = 0) against the student alone and the teacher alone, same tokens."""
    from minillm.rollout.sampler import generate, sample_rollouts

    prompt_ids, prompt_mask = make_prompts(models, s.batch_size, s.prompt_len, 1, runtime.device)
    gen = torch.Generator(device=runtime.device).manual_seed(0)
    common = dict(
        max_new_tokens=s.response_len, eos_token_id=None, pad_token_id=models.eos_token_id, generator=gen
    )

    def lockstep(alpha):
        return lambda: sample_rollouts(
            models.decode_student,
            models.decode_teacher,
            prompt_ids,
            prompt_mask,
            alpha=alpha,
            keep_teacher_logits=s.keep_teacher_logits,
            teacher_after_decoding=False,  # lockstep even at α = 0: the bound's comparison
            **common,
        )

    runs: dict[str, Callable] = {
        f"lockstep α={s.alpha:g}": lockstep(s.alpha),
        "lockstep α=0": lockstep(0.0),
        "student alone": lambda: generate(models.decode_student, prompt_ids, prompt_mask, **common),
        "teacher alone": lambda: generate(models.decode_teacher, prompt_ids, prompt_mask, **common),
    }
    # The teacher's distributions over the same tokens from one teacher-forced pass (possible when α = 0).
    scored = generate(models.student, prompt_ids, prompt_mask, **common)
    runs["teacher one pass"] = lambda: _score_with_teacher(models.teacher, scored)
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


def _score_with_teacher(teacher: torch.nn.Module, rollout):
    """``rollout`` with the teacher's logits and log-probs from one teacher-forced pass over it."""
    from minillm.rollout.sampler import score_with_teacher

    return score_with_teacher(teacher, rollout, keep_teacher_logits=True)


# --------------------------------------------------------------------------- one distillation step


def distill_step(
    models: Models,
    runtime: Runtime,
    optimizer,
    scheduler,
    prompts: tuple[torch.Tensor, torch.Tensor],
    s: StepSettings,
    gens: tuple[torch.Generator, torch.Generator],
    clock: Clock,
    grad_clip: float | None,
) -> None:
    """One round as ``OnPolicyModule.training_step`` runs it (pre-training term and logging left out):
    rollout → ``ppo_epochs`` × minibatches of (teacher scoring if not cached, student forward+backward,
    optimizer step)."""
    from minillm.objectives.policy_gradient import minillm_loss, single_step_loss
    from minillm.rollout.buffer import RolloutBuffer
    from minillm.rollout.sampler import response_logits, sample_rollouts, sampled_logprobs

    rollout_gen, shuffle_gen = gens
    options = pg_options_for(s)
    student, teacher = models.student, models.teacher
    with clock("rollout"):
        rollout = sample_rollouts(
            models.decode_student,
            None if s.teacher_after_rollout else models.decode_teacher,
            *prompts,
            max_new_tokens=s.response_len,
            alpha=s.alpha,
            eos_token_id=None,
            pad_token_id=models.eos_token_id,
            generator=rollout_gen,
            keep_teacher_logits=s.keep_teacher_logits and not s.teacher_after_rollout,
            teacher_after_decoding=False,  # which path is timed is teacher_after_rollout's to say
        )
    if s.teacher_after_rollout:
        with clock("teacher_scoring"):
            rollout = _score_with_teacher(teacher, rollout)
    student.train()
    buffer = RolloutBuffer()
    buffer.add(rollout)
    for _ in range(s.ppo_epochs):
        for mb in buffer.minibatches(s.mini_batch_size, shuffle=True, generator=shuffle_gen):
            teacher_logits = mb.teacher_logits
            if teacher_logits is None:
                with clock("teacher_scoring"), torch.no_grad():
                    teacher_logits = response_logits(teacher, mb)
            with clock("student_fwd_bwd"):
                logits = response_logits(student, mb)
                if s.pg_term:
                    logprobs = sampled_logprobs(logits, mb.response_ids)
                    loss, _ = minillm_loss(
                        logits,
                        teacher_logits,
                        logprobs,
                        mb.student_logprobs,
                        mb.teacher_logprobs,
                        mb.mix_logprobs,
                        mb.response_mask,
                        options,
                    )
                else:
                    loss = single_step_loss(logits, teacher_logits, mb.response_mask, reduction="mean")
                loss.backward()
            with clock("optimizer"):
                torch.nn.utils.clip_grad_norm_(student.parameters(), grad_clip or float("inf"))
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
    buffer.clear()


PARTS = ("rollout", "teacher_scoring", "student_fwd_bwd", "optimizer")


def step_runner(models: Models, runtime: Runtime, cfg: DictConfig, s: StepSettings) -> Callable[..., float]:
    """``run(clock, plain=False) -> seconds``: one timed step of ``s`` (device-synchronised at both ends),
    with its own optimizer, scheduler, prompts and generators, built once and kept across calls.
    ``plain=True`` decodes with the uncompiled models."""
    from minillm.module import build_optimizer, lr_lambda

    optimizer = build_optimizer(models.student.parameters(), cfg.optim)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.optim, 10_000))
    prompts = make_prompts(models, s.batch_size, s.prompt_len, 2, runtime.device)
    gens = (
        torch.Generator(device=runtime.device).manual_seed(int(cfg.seed) + 3),
        torch.Generator().manual_seed(int(cfg.seed) + 2),
    )
    grad_clip = cfg.optim.get("grad_clip")

    def run(clock: Clock, plain: bool = False) -> float:
        m = replace(models, decode_student=models.student, decode_teacher=models.teacher) if plain else models
        runtime.sync()
        start = time.perf_counter()
        with runtime.autocast():
            distill_step(m, runtime, optimizer, scheduler, prompts, s, gens, clock, grad_clip)
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
    """Step time (the repeat with the median total, and its split); with ``detail`` also forward
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
            "teacher_passes_per_epoch": (counts["teacher"] - needed["teacher"]) / (s.ppo_epochs * full_pass),
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
        updates=s.ppo_epochs * math.ceil(s.batch_size / s.mini_batch_size),
    )
    if memory is not None:
        out["memory"] = memory
    return out


# --------------------------------------------------------------------------- sweep


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
    from minillm.rollout.sampler import generate

    prompt_ids, prompt_mask = make_prompts(models, batch, prompt_len, 1, runtime.device)
    gen = torch.Generator(device=runtime.device).manual_seed(0)
    common = dict(max_new_tokens=length, eos_token_id=None, pad_token_id=models.eos_token_id, generator=gen)
    total = 0.0
    for model in (models.decode_student, models.decode_teacher):
        best = math.inf
        for _ in range(max(1, repeats)):
            runtime.sync()
            start = time.perf_counter()
            with runtime.autocast():
                generate(model, prompt_ids, prompt_mask, **common)
            runtime.sync()
            best = min(best, time.perf_counter() - start)
        total += best
    return total


def sweep(models: Models, runtime: Runtime, cfg: DictConfig, main: StepSettings) -> dict:
    sw = cfg.sweep
    batch_at = int(sw.batch_size or main.batch_size)
    length_at = int(sw.response_len or main.response_len)
    points = [replace(main, batch_size=batch_at, response_len=int(t)) for t in sw.response_lens]
    points += [replace(main, batch_size=int(b), response_len=length_at) for b in sw.batch_sizes]
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


def vocab_memory_rows(spec: dict) -> dict:
    """The measurement behind :func:`vocab_memory`, in this process: for each chunk size (then one pass),
    two repeats of the single-step term's forward + backward; the second repeat's memory is reported
    (the first carries one-time allocations)."""
    from minillm.objectives.policy_gradient import single_step_loss

    runtime = Runtime(device=torch.device(spec["device"]), dtype="fp32", compile=False)
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    shape = tuple(spec["shape"])
    gen = torch.Generator().manual_seed(int(spec["seed"]))
    teacher = torch.randn(shape, generator=gen).to(runtime.device)
    student = torch.randn(shape, generator=gen).to(runtime.device).requires_grad_()
    mask = torch.ones(shape[:2], device=runtime.device)
    rows, values = [], {}
    for chunk in (*sorted(spec["chunk_sizes"]), None):
        for _ in range(2):
            student.grad = None
            gc.collect()
            with peak_memory(runtime) as memory:
                started = time.perf_counter()
                loss = single_step_loss(student, teacher, mask, reduction="mean", chunk_size=chunk)
                loss.backward()
                runtime.sync()
                seconds = time.perf_counter() - started
        values[chunk] = (loss.item(), student.grad.clone())
        rows.append(
            {
                "chunk_size": chunk,
                "seconds": seconds,
                "peak_mib": memory["peak_mib"],
                "added_mib": memory["peak_mib"] - memory["start_mib"],
                "kind": memory["kind"],
            }
        )
    plain_loss, plain_grad = values[None]
    max_diff = max(
        max(abs(loss - plain_loss), (grad - plain_grad).abs().max().item()) for loss, grad in values.values()
    )
    return {
        "shape": list(shape),
        "logits_mib": student.numel() * student.element_size() / 2**20,
        "rows": rows,
        "max_abs_diff_vs_one_pass": max_diff,
    }


def vocab_memory(runtime: Runtime, cfg: DictConfig) -> dict | None:
    """Peak memory of the single-step term (token reverse KL over the full vocabulary, forward and
    backward) on random logits of ``vocab_memory.*`` size, in one pass and chunked over the sequence.

    The student's and teacher's logits are allocated before the measured block: what is compared is the
    memory the loss and its backward add on top of them (the student's gradient, one logits tensor,
    included). On CPU it runs in a child process with ``MALLOC_MMAP_THRESHOLD_=65536``, so every large
    tensor is its own mapping, returned on free, and the resident-set high-water mark follows the live
    tensors (with glibc's default, freed pages stay resident and the figures depend on what ran before)."""
    vm = cfg.get("vocab_memory")
    if not vm or not vm.get("enabled", True):
        return None
    spec = {
        "device": str(runtime.device),
        "shape": [int(vm.batch_size), int(vm.response_len), int(vm.vocab_size)],
        "chunk_sizes": [int(c) for c in vm.chunk_sizes],
        "seed": int(cfg.seed),
        "threads": torch.get_num_threads(),
    }
    if runtime.device.type == "cuda":
        return vocab_memory_rows(spec)
    code = "import json, sys; from minillm.bench import vocab_memory_rows as f; print(json.dumps(f(json.loads(sys.argv[1]))))"
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec)], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise MinillmError(
            f"vocab_memory: the measuring process failed ({last}); vocab_memory.enabled=false skips it"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- TRL GKDTrainer, interleaved

TRL_STEP = "gkd_one_teacher_pass"  # our step set against GKDTrainer's: what training runs at α = 0


def _trl_tokenizer(cfg: DictConfig, models: Models):
    """GKDTrainer needs a tokenizer for its pad id: ``tokenizer_path`` when it is a folder, else a
    word-level stand-in over the models' vocabulary with their EOS as pad."""
    from transformers import PreTrainedTokenizerFast

    path = cfg.get("tokenizer_path")
    if path and Path(path).is_dir():
        from minillm.models.loading import load_tokenizer

        tok = load_tokenizer(path, "tokenizer_path")
        tok.pad_token = tok.pad_token or tok.eos_token
        return tok
    from tokenizers import Tokenizer
    from tokenizers import models as tok_models

    eos = f"t{models.eos_token_id}"
    words = Tokenizer(tok_models.WordLevel({f"t{i}": i for i in range(models.vocab_size)}, unk_token=eos))
    return PreTrainedTokenizerFast(tokenizer_object=words, eos_token=eos, pad_token=eos)


def trl_gkd_comparison(models: Models, runtime: Runtime, cfg: DictConfig, s: StepSettings) -> dict:
    """TRL's ``GKDTrainer`` step and our ``s`` step, timed alternately in this process.

    GKDTrainer is configured as GKD's on-policy reverse-KL step (``lmbda=1``: every batch sampled from
    the student; ``beta=1``: reverse KL; temperature 1, no top-k / top-p; gradient checkpointing off;
    AdamW with gradient-norm clipping) on copies of the same teacher and student, with the same batch,
    prompt length and new tokens (EOS off, at least ``response_len`` new tokens, so every row decodes
    exactly that many), on the same device and torch threads. Its own ``train()`` loop drives it; a
    callback times each TRL step (``on_step_begin`` to ``on_step_end``: sampling, teacher and student
    forwards, loss, backward, clipping, optimizer and scheduler) and then runs and times one of our steps
    before TRL's next, so the two alternate (TRL, ours, TRL, ours, …) and drifts in background load hit
    both alike. The first ``trl_gkd.warmup`` pairs are untimed. The ratio is median(TRL) ÷ median(ours);
    each pair's own ratio gives its spread.

    Returns ``{"skipped": reason}`` when ``trl_gkd.enabled`` is false or TRL cannot be imported."""
    tc = cfg.get("trl_gkd") or {}
    if not tc.get("enabled", True):
        return {"skipped": "trl_gkd.enabled=false"}
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    try:
        import trl
        from datasets import Dataset
        from transformers import PrinterCallback, ProgressCallback, TrainerCallback
        from trl.experimental.gkd import GKDConfig, GKDTrainer
    except ImportError as e:
        return {
            "skipped": f"TRL is not importable ({e}); `pip install -e '.[bench]'` installs the pinned version"
        }
    repeats = _positive(tc, "repeats")
    warmup = tc.get("warmup", 1)
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        raise MinillmError(f"trl_gkd.warmup={warmup!r}: must be a non-negative integer")
    for name in ("transformers", "trl", "accelerate", "datasets"):  # GKDTrainer's advice, progress, summary
        logging.getLogger(name).setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()

    ours = step_runner(models, runtime, cfg, s)
    student, teacher = copy.deepcopy(models.student), copy.deepcopy(models.teacher)
    for model in (student, teacher):
        model.generation_config.eos_token_id = None  # fixed-length rows, as on our side
    tok = _trl_tokenizer(cfg, models)
    steps = warmup + repeats
    gen = torch.Generator().manual_seed(int(cfg.seed) + 5)
    ids = torch.randint(0, models.vocab_size - 1, (s.batch_size * steps, s.prompt_len), generator=gen)
    ids = ids + (ids >= models.eos_token_id).long()  # no EOS inside prompts, as make_prompts
    dataset = Dataset.from_dict({"prompt_ids": ids.tolist()})

    def collate(rows):
        prompts = torch.tensor([r["prompt_ids"] for r in rows])
        # lmbda=1: GKDTrainer replaces input_ids / labels with the student's samples every step. The
        # placeholder completion only sets the loss normaliser, which the Trainer counts from these labels
        # before sampling (all -100 would divide by zero).
        completion = prompts[:, :1].expand(-1, s.response_len)
        input_ids = torch.cat([prompts, completion], dim=1)
        labels = torch.cat([torch.full_like(prompts, -100), completion], dim=1)
        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "labels": labels,
            "prompts": prompts,
            "prompt_attention_mask": torch.ones_like(prompts),
        }

    timeline: list[dict] = []
    lengths: list[int] = []
    began = 0.0  # set when training starts

    class Alternate(TrainerCallback):
        """Times each GKDTrainer step, then runs one of ours before TRL's next."""

        def on_step_begin(self, *args, **kwargs):
            runtime.sync()
            self.start = time.perf_counter()

        def on_step_end(self, *args, **kwargs):
            runtime.sync()
            end = time.perf_counter()
            timeline.append({"side": "trl", "start": self.start - began, "seconds": end - self.start})
            start = time.perf_counter()
            seconds = ours(Clock(runtime))
            timeline.append({"side": "ours", "start": start - began, "seconds": seconds})

    class CheckedGKD(GKDTrainer):
        """Records how many tokens each step sampled (all rows must decode ``response_len``)."""

        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            lengths.append(inputs["input_ids"].shape[1] - s.prompt_len)
            return loss

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="minillm_bench_trl_") as out_dir, warnings.catch_warnings():
        # transformers' deprecation notices about names TRL 1.16 still uses: noise in the benchmark's output
        warnings.simplefilter("ignore", FutureWarning)
        config = GKDConfig(
            output_dir=out_dir,
            per_device_train_batch_size=s.batch_size,
            max_steps=steps,
            lmbda=1.0,
            beta=1.0,
            temperature=1.0,
            max_new_tokens=s.response_len,
            learning_rate=float(cfg.optim.get("lr", 1e-3)),
            max_grad_norm=float(cfg.optim.get("grad_clip") or 1.0),
            bf16=runtime.dtype == "bf16",
            activation_checkpointing=False,  # TRL's configs default to True
            use_cpu=runtime.device.type == "cpu",
            report_to="none",
            save_strategy="no",
            logging_steps=10_000,
            dataloader_num_workers=0,
            disable_tqdm=True,
            seed=int(cfg.seed),
        )
        trainer = CheckedGKD(
            model=student,
            teacher_model=teacher,
            args=config,
            data_collator=collate,
            train_dataset=dataset,
            processing_class=tok,
            callbacks=[Alternate()],
        )
        for cb in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(cb)
        # GKDTrainer copies the tokenizer's EOS into its generation config, and generate() fills a None
        # EOS back from the model's: switch EOS off and forbid stopping before response_len.
        for gen_config in (trainer.generation_config, student.generation_config):
            gen_config.eos_token_id = None
            gen_config.min_new_tokens = s.response_len
        began = time.perf_counter()
        trainer.train()
    load_after = os.getloadavg()
    if set(lengths) != {s.response_len}:
        raise MinillmError(f"trl_gkd: GKDTrainer decoded {sorted(set(lengths))} tokens, not {s.response_len}")
    timed = timeline[2 * warmup :]
    theirs = [e["seconds"] for e in timed if e["side"] == "trl"]
    mine = [e["seconds"] for e in timed if e["side"] == "ours"]
    pairs = [t / o for t, o in zip(theirs, mine, strict=True)]
    return {
        "trainer": "trl.experimental.gkd.GKDTrainer",
        "trl": trl.__version__,
        "ours": TRL_STEP,
        "settings": asdict(s),
        "gkd_settings": "lmbda=1 beta=1 temperature=1, top_k=0 top_p=1, no EOS",
        "activation_checkpointing": bool(trainer.args.activation_checkpointing),
        "warmup": warmup,
        "repeats": repeats,
        "timeline": timeline,  # every step in the order it ran, the warm-up pairs first
        "trl_seconds": theirs,
        "ours_seconds": mine,
        "trl_s_per_step": statistics.median(theirs),
        "ours_s_per_step": statistics.median(mine),
        "speedup": statistics.median(theirs) / statistics.median(mine),
        "pair_ratios": pairs,
        "pair_ratio_min": min(pairs),
        "pair_ratio_max": max(pairs),
        "torch_threads": torch.get_num_threads(),
        "load_avg_before": list(load_before),
        "load_avg_after": list(load_after),
    }


# --------------------------------------------------------------------------- targets and report


def trl_target(trl: dict) -> dict:
    """The ≥ 1.5 × GKDTrainer target, from :func:`trl_gkd_comparison`'s record; no value when skipped."""
    speedup = trl.get("speedup")
    row = {
        "target": f"GKD-equivalent step as training runs it ({TRL_STEP}) ≥ 1.5 × TRL GKDTrainer's step "
        "throughput, timed alternately in this run",
        "value": speedup,
        "ok": None if speedup is None else speedup >= TARGET_GKD_SPEEDUP,
    }
    if "skipped" in trl:
        row["skipped"] = trl["skipped"]
    return row


def targets(results: dict) -> list[dict]:
    """Each target with its measured value and whether it is met (None: not measured)."""
    rows = []
    rows.append(
        {
            "target": "lockstep rollout ≤ 1.25 × (student alone + teacher alone)",
            "value": results["rollout"]["ratio_main"],
            "ok": results["rollout"]["ratio_main"] <= TARGET_LOCKSTEP_RATIO,
        }
    )
    tokens = results["steps"]["minillm"]["forward_tokens"]
    rows.append(
        {
            "target": "teacher log-probs from the rollout: teacher forward tokens = needed (cached logits)",
            "value": tokens["teacher"] / tokens["teacher_needed"],
            "ok": tokens["teacher"] == tokens["teacher_needed"],
        }
    )
    rescored = results["steps"].get("minillm_rescored")
    if rescored is not None:
        passes = rescored["forward_tokens"]["teacher_passes_per_epoch"]
        rows.append(
            {
                "target": "≤ 1 teacher pass per token per inner epoch (logits not cached)",
                "value": passes,
                "ok": passes <= 1.0,
            }
        )
    rows.append(
        {
            "target": "student forward tokens = 1 rollout + 1 pass per inner epoch",
            "value": tokens["student"] / tokens["student_needed"],
            "ok": tokens["student"] == tokens["student_needed"],
        }
    )
    fit = results["sweep"]["length_fit"]
    if fit["r2"] is not None:
        ratio = fit.get("ratio_256_128")
        rows.append(
            {
                "target": "step time linear in response length (R² ≥ 0.98"
                + ("; time(256)/time(128) ≤ 2.2)" if ratio is not None else ")"),
                "value": fit["r2"] if ratio is None else ratio,
                "ok": fit["r2"] >= 0.98 and (ratio is None or ratio <= 2.2),
            }
        )
        plain = fit.get("decode_bound_ratio_256_128")
        if ratio is not None and plain is not None:
            rows.append(
                {
                    "target": "  time(256)/time(128) of the step ÷ that of plain KV-cached decoding (≤ 1.1: "
                    "no growth beyond the models' own)",
                    "value": ratio / plain,
                    "ok": ratio / plain <= 1.1,
                }
            )
    vm = results.get("vocab_memory")
    if vm:
        plain = next(r["added_mib"] for r in vm["rows"] if r["chunk_size"] is None)
        chunked_rows = [r for r in vm["rows"] if r["chunk_size"] is not None]
        if chunked_rows:
            smallest = min(chunked_rows, key=lambda r: r["chunk_size"])
            ratio = smallest["added_mib"] / plain if plain > 0 else None
            rows.append(
                {
                    "target": f"chunked full-vocabulary term (chunks of {smallest['chunk_size']}): "
                    "memory added ≤ 0.5 × one pass, same numbers",
                    "value": ratio,
                    "ok": None
                    if ratio is None
                    else ratio <= TARGET_CHUNK_MEMORY_RATIO and vm["max_abs_diff_vs_one_pass"] < 1e-4,
                }
            )
    if results.get("trl_gkd") is not None:
        rows.append(trl_target(results["trl_gkd"]))
    return rows


def machine_info(runtime: Runtime) -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(runtime.device),
        "dtype": runtime.dtype,
        "compile": runtime.compile,
    }
    if runtime.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(runtime.device)
    return info


def run_bench(cfg: DictConfig) -> dict:
    """Every measurement of the benchmark, as one JSON-ready dictionary."""
    runtime = make_runtime(cfg)
    main = step_settings(cfg)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    torch.manual_seed(int(cfg.seed))
    load_before = os.getloadavg()
    started = time.perf_counter()
    models = load_models(cfg, runtime)
    repeats, warmup = _positive(cfg, "repeats"), int(cfg.warmup)

    results: dict = {"machine": machine_info(runtime), "models": models.info}
    results["rollout"] = rollout_throughput(models, runtime, main, repeats, warmup)
    steps = {"minillm": main}
    if main.keep_teacher_logits and cfg.rescored_step:
        steps["minillm_rescored"] = replace(main, keep_teacher_logits=False)
    gkd = gkd_settings(main)
    steps["gkd_equivalent"] = gkd
    if cfg.one_pass_step:
        steps["gkd_one_teacher_pass"] = replace(gkd, teacher_after_rollout=True)
    results["steps"] = {
        name: measure_step(models, runtime, cfg, s, repeats=repeats, warmup=warmup, detail=True)
        for name, s in steps.items()
    }
    results["trl_gkd"] = trl_gkd_comparison(models, runtime, cfg, replace(gkd, teacher_after_rollout=True))
    results["sweep"] = sweep(models, runtime, cfg, main)
    results["vocab_memory"] = vocab_memory(runtime, cfg)
    results["targets"] = targets(results)
    load_after = os.getloadavg()
    results["machine"].update(
        load_avg_before=list(load_before),
        load_avg_after=list(load_after),
        under_load=load_before[0] > LOAD_WARNING,  # the benchmark's own threads raise the one after
        wall_seconds=time.perf_counter() - started,
    )
    results["settings"] = OmegaConf.to_container(cfg, resolve=True)
    return results


# --------------------------------------------------------------------------- printing


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 10_000:
            return f"{value:,.0f}"
        if value != 0 and abs(value) < 0.5 * 10**-digits:
            return f"{value:.1e}"
        return f"{value:.{digits}f}"
    return str(value)


def tables(results: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table printed."""
    out = []
    ro = results["rollout"]
    s = results["steps"]["minillm"]["settings"]
    title = (
        f"Rollout throughput: batch {s['batch_size']}, prompt {s['prompt_len']}, "
        f"{s['response_len']} new tokens per row (fixed length)"
    )
    rows = []
    for name, r in ro["runs"].items():
        alpha0 = _fmt(ro["alpha0_ratio"]) if name == "lockstep α=0" else "—"
        rows.append(
            [name, _fmt(r["seconds"]), _fmt(r["tokens_per_s"], 1), _fmt(ro["ratio"].get(name)), alpha0]
        )
    tokens = s["batch_size"] * s["response_len"]
    rows.append(
        [
            "bound = student + teacher",
            _fmt(ro["bound_seconds"]),
            _fmt(tokens / ro["bound_seconds"], 1),
            "1.000",
            "—",
        ]
    )
    rows.append(
        [
            "α=0 bound = student + teacher one pass",
            _fmt(ro["alpha0_bound_seconds"]),
            _fmt(tokens / ro["alpha0_bound_seconds"], 1),
            "—",
            "1.000",
        ]
    )
    out.append((title, ["decoding", "s", "tokens/s", "÷ bound", "÷ α=0 bound"], rows))

    header = [
        "step",
        "s/step",
        *PARTS,
        "other",
        "gen tok/s",
        "teacher fwd tok",
        "student fwd tok",
        "peak MiB",
    ]
    rows = []
    for name, r in results["steps"].items():
        t = r["forward_tokens"]
        rows.append(
            [
                name,
                _fmt(r["seconds"]),
                *(_fmt(r["parts"][p]) for p in (*PARTS, "other")),
                _fmt(r["generated_tokens_per_s"], 1),
                f"{t['teacher']:,} / {t['teacher_needed']:,}",
                f"{t['student']:,} / {t['student_needed']:,}",
                _fmt(r["memory"]["peak_mib"], 1),
            ]
        )
    out.append(("Distillation step (forward tokens: counted / needed)", header, rows))

    sw = results["sweep"]
    rows = [
        [
            str(p["batch_size"]),
            str(p["response_len"]),
            _fmt(p["seconds"]),
            _fmt(p["rollout_seconds"]),
            _fmt(p["train_seconds"]),
            _fmt(p["generated_tokens_per_s"], 1),
            _fmt(p.get("decode_bound_seconds")) if p.get("decode_bound_seconds") is not None else "—",
        ]
        for p in sw["points"]
    ]
    out.append(
        (
            "Step-time sweep (decode bound: student alone + teacher alone, same tokens)",
            ["batch", "response len", "s/step", "rollout s", "train s", "gen tok/s", "decode bound s"],
            rows,
        )
    )

    fit, bfit = sw["length_fit"], sw["batch_fit"]
    rows = [
        [
            f"vs response length (batch {fit['batch_size']})",
            _fmt(fit["slope"], 5),
            _fmt(fit["intercept"]),
            _fmt(fit["r2"], 4),
            _fmt(fit.get("ratio_256_128")),
            _fmt(fit.get("decode_bound_ratio_256_128")),
        ],
        [
            f"vs batch size (length {bfit['response_len']})",
            _fmt(bfit["slope"], 5),
            _fmt(bfit["intercept"]),
            _fmt(bfit["r2"], 4),
            "—",
            "—",
        ],
    ]
    out.append(
        (
            "Linearity of step time",
            ["fit", "slope s/unit", "intercept s", "R²", "t(256)/t(128)", "plain decoding t(256)/t(128)"],
            rows,
        )
    )

    vm = results.get("vocab_memory")
    if vm:
        b, t, v = vm["shape"]
        rows = [
            [
                "one pass" if r["chunk_size"] is None else f"chunks of {r['chunk_size']}",
                _fmt(r["seconds"]),
                _fmt(r["added_mib"], 1),
                _fmt(r["added_mib"] / vm["logits_mib"], 2),
            ]
            for r in vm["rows"]
        ]
        out.append(
            (
                f"Full-vocabulary single-step term, forward + backward: batch {b}, {t} positions, "
                f"vocabulary {v:,} (one logits tensor = {vm['logits_mib']:.0f} MiB; "
                f"largest difference from one pass {vm['max_abs_diff_vs_one_pass']:.1e})",
                ["computed", "s", "memory added MiB", "÷ one logits tensor"],
                rows,
            )
        )

    trl = results.get("trl_gkd") or {}
    if "speedup" in trl:
        s = trl["settings"]
        tokens = s["batch_size"] * s["response_len"]
        rows = [
            [
                name,
                _fmt(statistics.median(values)),
                _fmt(min(values)),
                _fmt(max(values)),
                _fmt(tokens / statistics.median(values), 1),
            ]
            for name, values in (
                (f"TRL {trl['trl']} GKDTrainer", trl["trl_seconds"]),
                (f"ours ({trl['ours']})", trl["ours_seconds"]),
            )
        ]
        rows.append(
            [
                "TRL ÷ ours",
                _fmt(trl["speedup"]),
                _fmt(trl["pair_ratio_min"]),
                _fmt(trl["pair_ratio_max"]),
                "—",
            ]
        )
        out.append(
            (
                f"GKD step against TRL's GKDTrainer, timed alternately ({trl['repeats']} pairs after "
                f"{trl['warmup']} untimed; batch {s['batch_size']}, prompt {s['prompt_len']}, "
                f"{s['response_len']} new tokens; ratio row: median ÷ median, then the pairs' own min and max)",
                ["step", "median s", "min s", "max s", "gen tok/s"],
                rows,
            )
        )

    rows = [
        [t["target"], _fmt(t["value"]), "skipped" if "skipped" in t else _fmt(t["ok"])]
        for t in results["targets"]
    ]
    out.append(("Targets", ["target", "measured", "met"], rows))
    return out


def render(results: dict, plain: bool) -> str:
    """The tables as text: rich tables when rich is installed and ``plain`` is false."""
    m = results["machine"]
    lines = [
        f"machine: {m['cpu_count']} CPUs, {m['torch_threads']} torch threads, device {m['device']}, "
        f"{m['dtype']}, compile={m['compile']}; load average {m['load_avg_before'][0]:.2f} before, "
        f"{m['load_avg_after'][0]:.2f} after; {m['wall_seconds']:.0f} s in all",
    ]
    for key in ("teacher", "student"):
        info = results["models"][key]
        lines.append(f"{key}: {info['parameters'] / 1e6:.2f}M parameters, {info['source']}")
    if m["under_load"]:
        lines.append(f"WARNING: load average above {LOAD_WARNING}: these timings were taken under load")
    skipped = (results.get("trl_gkd") or {}).get("skipped")
    if skipped:
        lines.append(f"TRL GKDTrainer comparison skipped: {skipped}")
    head = "\n".join(lines)
    if not plain:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            plain = True
    if plain:
        return head + "\n\n" + "\n\n".join(_plain_table(*t) for t in tables(results)) + "\n"
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, force_terminal=sys.stdout.isatty())
    for title, header, rows in tables(results):
        console.print(f"\n[bold]{title}[/bold]")
        table = Table()
        for i, col in enumerate(header):
            table.add_column(col, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    return head + "\n" + buffer.getvalue()


def _plain_table(title: str, header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([title, line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def write_results(results: dict, cfg: DictConfig) -> list[Path]:
    paths = [Path(cfg.output_dir) / "bench.json"]
    if cfg.save:
        paths.append(Path(cfg.save_dir) / "bench.json")
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    return paths


@user_errors
def bench(cfg: DictConfig) -> dict:
    """Run, print and write the benchmark for a resolved ``conf/bench.yaml``; returns the results."""
    load = os.getloadavg()[0]
    if load > LOAD_WARNING:
        print(
            f"note: load average is {load:.2f}; timings will be flagged as taken under load", file=sys.stderr
        )
    results = run_bench(cfg)
    print(render(results, plain=bool(cfg.plain)), flush=True)
    for path in write_results(results, cfg):
        print(f"wrote {path}")
    return results


main = hydra.main(config_path=CONF_DIR, config_name="bench", version_base="1.3")(bench)


if __name__ == "__main__":
    main()
