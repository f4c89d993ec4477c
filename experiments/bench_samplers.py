"""``make bench``'s samplers rows alone (sampler=hf against sampler=vllm, alternated): the rest of the benchmark
takes far longer than these on the SmolLM2 pair. Needs `make install-vllm` and the converted models (`make smollm2`).

    python experiments/bench_samplers.py OUT_DIR teacher_path=... student_path=... tokenizer_path=... [bench keys]

Writes OUT_DIR/samplers.json (what ``make bench`` puts under ``samplers``, plus the load and the models).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's minillm, from any folder


def compose_bench(overrides: list[str], run_dir: Path):
    """conf/bench.yaml composed and resolved as `python -m minillm.bench` would."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, read_write

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("bench", overrides=[f"hydra.run.dir={run_dir}", *overrides], return_hydra_config=True)
        with read_write(cfg.hydra.runtime):
            cfg.hydra.runtime.output_dir = str(run_dir)
            cfg.hydra.runtime.cwd = str(ROOT)
        HydraConfig.instance().set_config(cfg)
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return OmegaConf.create(OmegaConf.to_container(job, resolve=True))


def main(out_dir: Path, overrides: list[str]) -> None:
    import torch

    from minillm.bench.models import load_bench_models
    from minillm.bench.samplers import render_samplers, sampler_comparison
    from minillm.bench.settings import make_runtime, step_settings

    cfg = compose_bench(["samplers.enabled=true", *overrides], out_dir)
    runtime = make_runtime(cfg)
    torch.manual_seed(int(cfg.seed))
    load_before, started = os.getloadavg(), time.perf_counter()
    models = load_bench_models(cfg, runtime)
    result = sampler_comparison(models, runtime, cfg, step_settings(cfg, models.teacher, models.eos_token_id))
    result.update(
        load_before=list(load_before),
        load_after=list(os.getloadavg()),
        wall_seconds=time.perf_counter() - started,
        models=models.info,
        overrides=overrides,
    )
    print(render_samplers(result))
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "samplers.json").write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
