"""Every measurement of the benchmark, run, printed and written (``bench``: the Hydra app's body)."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from minillm.bench.measure import LOAD_WARNING
from minillm.bench.models import bench_models
from minillm.bench.pairs import pairs
from minillm.bench.rollouts import rollout_throughput
from minillm.bench.samplers import render_samplers, sampler_comparison
from minillm.bench.settings import Runtime, gkd_one_pass, gkd_settings, make_runtime, positive, step_settings
from minillm.bench.step import measure_step
from minillm.bench.sweep import sweep
from minillm.bench.tables import render
from minillm.bench.targets import pair_targets, targets
from minillm.bench.trl_gkd import trl_gkd_comparison
from minillm.bench.vocab_memory import vocab_memory
from minillm.cli import quiet_libraries, user_errors

quiet_libraries()


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
    info["commit"] = source_commit()
    return info


def source_commit() -> str | None:
    """The checkout's commit (``git describe --always --dirty``: ``-dirty`` when it has uncommitted changes),
    so a record says which code it timed; None outside a git checkout or without git."""
    import subprocess

    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def run_bench(cfg: DictConfig) -> dict:
    """Every measurement of the benchmark, as one JSON-ready dictionary."""
    runtime = make_runtime(cfg)
    if cfg.fit.get("num_threads"):
        torch.set_num_threads(int(cfg.fit.num_threads))  # as minillm.run does
    torch.manual_seed(int(cfg.seed))
    load_before = os.getloadavg()
    started = time.perf_counter()
    models = bench_models(cfg, runtime)
    main = step_settings(cfg, models.teacher, models.eos_token_id)
    repeats, warmup = positive(cfg, "repeats"), int(cfg.warmup)

    results: dict = {"machine": machine_info(runtime), "models": models.info}
    if cfg.pairs_only:  # the old-and-new pairs alone (large models, where the full benchmark takes long)
        results["pairs"] = pairs(models, runtime, cfg, main)
        results["targets"] = pair_targets(results["pairs"])
    else:
        results.update(full_bench(models, runtime, cfg, main, repeats, warmup))
    load_after = os.getloadavg()
    results["machine"].update(
        load_avg_before=list(load_before),
        load_avg_after=list(load_after),
        under_load=load_before[0] > LOAD_WARNING,  # the benchmark's own threads raise the one after
        wall_seconds=time.perf_counter() - started,
    )
    results["settings"] = OmegaConf.to_container(cfg, resolve=True)
    return results


def full_bench(models, runtime: Runtime, cfg: DictConfig, main, repeats: int, warmup: int) -> dict:
    """Every table of the benchmark but the machine's: rollouts, steps, pairs, TRL, sweep, memory, targets."""
    results: dict = {}
    results["rollout"] = rollout_throughput(models, runtime, main, repeats, warmup)
    steps = {"minillm": main}
    if main.round.keep_teacher_logits and cfg.rescored_step:
        steps["minillm_rescored"] = main.with_round(keep_teacher_logits=False)
    steps["gkd_equivalent"] = gkd_settings(main)
    if cfg.one_pass_step:
        steps["gkd_one_teacher_pass"] = gkd_one_pass(main)
    results["steps"] = {
        name: measure_step(models, runtime, cfg, s, repeats=repeats, warmup=warmup, detail=True)
        for name, s in steps.items()
    }
    results["pairs"] = pairs(models, runtime, cfg, main)
    results["trl_gkd"] = trl_gkd_comparison(models, runtime, cfg, gkd_one_pass(main))
    results["sweep"] = sweep(models, runtime, cfg, main)
    results["vocab_memory"] = vocab_memory(runtime, cfg)
    results["samplers"] = sampler_comparison(models, runtime, cfg, main)  # hf vs vllm (samplers.enabled)
    results["targets"] = targets(results)
    return results


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
    if "samplers" in results:  # not measured with pairs_only
        print(render_samplers(results["samplers"]), flush=True)
    for path in write_results(results, cfg):
        print(f"wrote {path}")
    return results
