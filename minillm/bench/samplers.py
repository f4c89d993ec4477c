"""``sampler=hf`` against ``sampler=vllm`` in one run, alternated: rollout tokens/s, an α = 0 round, and the
sampling of an evaluation (``samplers.enabled=true``; needs ``make install-vllm``).

Both sides sample the same prompts, exactly ``response_len`` tokens a row (no EOS stop). The rollout and the
round include what training does with each sampler: the vLLM rollout is the engine's tokens plus the trainer's
no-grad pass that records the log-probs (and, in the round, the weight push after each round's updates); the
evaluation sampling reads only the tokens on both sides, as ``minillm.rollout.generate.sample_responses`` does.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections import defaultdict

import torch
from omegaconf import DictConfig

from minillm.bench.measure import Clock, count_tokens
from minillm.bench.models import Models, make_prompts
from minillm.bench.settings import Runtime, StepSettings
from minillm.bench.step import step_runner
from minillm.errors import MinillmError
from minillm.rollout import vllm_engine
from minillm.rollout.options import SamplingOptions
from minillm.rollout.sampler import generate

# The targets on the SmolLM2 pair: the engine's speed-up over our decoder.
TARGETS = {"rollout": 1.8, "evaluation": 1.8, "alpha0_round": 1.3}


def sampler_comparison(models: Models, runtime: Runtime, cfg: DictConfig, s: StepSettings) -> dict:
    node = cfg.get("samplers")
    if node is None or not node.get("enabled"):
        return {"skipped": "samplers.enabled=false"}
    if not vllm_engine.engine_installed(str(node.python)):
        return {"skipped": f"no vLLM engine at samplers.python={node.python} (make install-vllm)"}
    engine = vllm_engine.VllmSampler(
        python=str(node.python),
        kv_cache_gib=int(node.kv_cache_gib),
        threads=None if node.get("threads") is None else int(node.threads),
        max_model_len=int(node.max_model_len),
        gpu_memory_utilization=float(node.get("gpu_memory_utilization", vllm_engine.GPU_MEMORY_UTILIZATION)),
    )
    try:
        vllm_engine.check_model_shape("student", models.student.config.to_dict())
        return _compare(models, runtime, cfg, s, engine, node)
    except MinillmError as err:
        return {"skipped": str(err)}
    finally:
        vllm_engine._ACTIVE = None
        engine.close()


def _compare(models, runtime, cfg, s: StepSettings, engine, node) -> dict:
    device = runtime.device
    prompt_ids, prompt_mask = make_prompts(models, s.batch_size, s.prompt_len, 1, device)
    eval_ids, eval_mask = make_prompts(models, int(node.eval_prompts), s.prompt_len, 2, device)
    eval_batch = int(node.eval_batch_size)
    gen = torch.Generator(device=device).manual_seed(0)
    sampling = SamplingOptions(
        max_new_tokens=s.response_len, eos_token_id=None, pad_token_id=models.eos_token_id
    )

    def hf_eval():
        for start in range(0, eval_ids.shape[0], eval_batch):
            rows = slice(start, start + eval_batch)
            generate(models.student, eval_ids[rows], eval_mask[rows], sampling, generator=gen)

    def vllm_eval():
        engine.generate(models.student, eval_ids, eval_mask, sampling, generator=gen, score=False)

    alpha0 = dataclasses.replace(s, alpha=0.0)
    hf_round, vllm_round = (step_runner(models, runtime, cfg, alpha0) for _ in range(2))

    def with_engine(fn, active):
        def run():
            vllm_engine._ACTIVE = engine if active else None
            try:
                return fn()
            finally:
                vllm_engine._ACTIVE = None

        return run

    runs = {
        ("rollout", "hf"): lambda: generate(models.student, prompt_ids, prompt_mask, sampling, generator=gen),
        ("rollout", "vllm"): lambda: engine.generate(
            models.student, prompt_ids, prompt_mask, sampling, generator=gen
        ),
        ("evaluation", "hf"): hf_eval,
        ("evaluation", "vllm"): vllm_eval,
        ("alpha0_round", "hf"): with_engine(lambda: hf_round(Clock(runtime), plain=True), False),
        ("alpha0_round", "vllm"): with_engine(lambda: vllm_round(Clock(runtime), plain=True), True),
    }
    forward_tokens = round_forward_tokens(
        {"hf": hf_round, "vllm": vllm_round}, models, runtime, engine, alpha0
    )
    times: dict[tuple, list[float]] = defaultdict(list)
    for i in range(int(node.warmup) + int(node.repeats)):  # alternated: drifts in load hit both samplers
        for key, fn in runs.items():
            runtime.sync()
            start = time.perf_counter()
            fn()
            runtime.sync()
            if i >= int(node.warmup):
                times[key].append(time.perf_counter() - start)
    tokens = {
        "rollout": s.batch_size * s.response_len,
        "evaluation": int(node.eval_prompts) * s.response_len,
        "alpha0_round": s.batch_size * s.response_len,
    }
    out: dict = {"engine_pushes": engine.pushes, "forward_tokens": forward_tokens, "rows": {}}
    for what, target in TARGETS.items():
        hf, vllm = (statistics.median(times[(what, side)]) for side in ("hf", "vllm"))
        out["rows"][what] = {
            "tokens": tokens[what],
            "hf_seconds": hf,
            "vllm_seconds": vllm,
            "hf_tokens_per_s": tokens[what] / hf,
            "vllm_tokens_per_s": tokens[what] / vllm,
            "speedup": hf / vllm,
            "target": target,
            "met": hf / vllm >= target,
            "all_seconds": {"hf": times[(what, "hf")], "vllm": times[(what, "vllm")]},
        }
    return out


def round_forward_tokens(rounds: dict, models, runtime, engine, s: StepSettings) -> dict:
    """Forward tokens of one untimed α = 0 round per sampler (``rounds``: ``step_runner``s of ``s``), counted
    by hooks on the trainer's teacher and student, against ``s.alpha0_needed_tokens``. With ``sampler=vllm``
    the student's count is the trainer's no-grad pass over what the engine sampled plus the updates' passes."""
    out = {}
    for side, run in rounds.items():
        vllm_engine._ACTIVE = engine if side == "vllm" else None
        try:
            with count_tokens({"teacher": models.teacher, "student": models.student}) as counts:
                run(Clock(runtime), plain=True)
        finally:
            vllm_engine._ACTIVE = None
        needed = s.alpha0_needed_tokens(engine=side == "vllm")
        out[side] = {
            "teacher": counts["teacher"],
            "teacher_needed": needed["teacher"],
            "student": counts["student"],
            "student_needed": needed["student"],
            "met": counts["student"] == needed["student"],
        }
    return out


def render_samplers(result: dict) -> str:
    """The comparison as plain text lines."""
    if "skipped" in result:
        return f"samplers (hf vs vllm): skipped: {result['skipped']}"
    lines = ["samplers, alternated in this run (median seconds; speed-up = hf / vllm; target on SmolLM2):"]
    for what, row in result["rows"].items():
        lines.append(
            f"  {what:<13} {row['tokens']:>6} tokens  hf {row['hf_seconds']:8.2f} s  vllm {row['vllm_seconds']:8.2f} s  "
            f"speed-up {row['speedup']:5.2f}x  target {row['target']}x: {'met' if row['met'] else 'not met'}"
        )
    for side, t in result.get("forward_tokens", {}).items():
        lines.append(
            f"  α = 0 round, {side} forward tokens (counted / needed): teacher {t['teacher']:,} / "
            f"{t['teacher_needed']:,}  student {t['student']:,} / {t['student_needed']:,}"
            + ("  (the trainer's pass over the engine's samples included)" if side == "vllm" else "")
        )
    return "\n".join(lines)
