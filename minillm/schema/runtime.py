"""``trainer`` (lightning.Trainer's arguments), ``logger`` and ``sampler``: how a run trains, logs and samples."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from minillm.schema.rules import _integer, at_least, checked, non_negative, one_of, positive

# trainer.precision: minillm's auto, then Lightning's names (lightning.fabric.plugins.precision.precision's
# _PRECISION_INPUT: the full names, then the short forms it converts)
PRECISIONS = (
    "auto",
    "32-true",
    "bf16-mixed",
    "16-mixed",
    "bf16-true",
    "16-true",
    "64-true",
    "transformer-engine",
    "transformer-engine-float16",
    "32",
    "bf16",
    "16",
    "64",
)


@dataclass
class TrainerConfig:
    """lightning.Trainer arguments only, passed whole (logger, callbacks and plugins are added in code); a key
    Lightning takes that is not here is refused (the modules step their optimizers themselves)."""

    _target_: str = "lightning.Trainer"
    _partial_: bool = True
    accelerator: str = "cpu"
    devices: Any = 1
    num_nodes: int = positive(1)
    strategy: Any = "auto"
    use_distributed_sampler: bool = False  # the datamodule shards its own batches across ranks (exact resume)
    # 32-true | bf16-mixed | auto (minillm.training.precision; conf/trainer/cpu.yaml says why 32-true on CPU), or
    # another of Lightning's precision names
    precision: Any = checked(
        "32-true",
        lambda v: str(v) in PRECISIONS,
        f"must be auto or one of Lightning's precisions: {', '.join(PRECISIONS[1:])}",
    )
    max_epochs: int | None = checked(  # null: Lightning's own (1000 without max_steps)
        3,
        lambda v: v is None or (_integer(v) and v >= -1),
        "must be a number of epochs, -1 (no limit) or null",
    )
    max_steps: int = at_least(-1, -1, "must be a number of steps, or -1 (no limit)")
    # e.g. "00:00:05:00" (DD:HH:MM:SS): stop after this wall-clock time
    # (or a mapping of timedelta's keys, as Lightning takes it: {minutes: 30})
    max_time: Any = checked(
        None,
        lambda v: (
            isinstance(v, Mapping) or (isinstance(v, str) and re.fullmatch(r"\s*\d+:\d+:\d+:\d+\s*", v))
        ),
        "give days:hours:minutes:seconds, e.g. 00:00:30:00 for 30 minutes",
    )
    val_check_interval: Any = checked(  # a fraction of an epoch (float) or a number of steps (int; rounds)
        1.0,
        lambda v: (_integer(v) and v >= 1) or (isinstance(v, float) and 0 < v <= 1),
        "must be a fraction of an epoch in (0, 1] or a number of training batches >= 1",
    )
    check_val_every_n_epoch: int | None = 1
    limit_val_batches: Any = 1.0
    log_every_n_steps: int = positive(10)
    num_sanity_val_steps: int = 0
    enable_progress_bar: bool = True
    enable_model_summary: bool = False
    deterministic: Any = False


@dataclass
class LoggerConfig:
    """Where metrics go besides csv/metrics.csv (always written): logger=wandb, csv or none. The W&B keys are
    read only with wandb: true (logger=wandb); experiments may set their tags and group for any logger."""

    _target_: str = "minillm.loggers.make_loggers"
    _partial_: bool = True  # completed in code with the config, the run folder and the resume step
    wandb: bool = True
    project: str = "minillm"
    entity: str | None = None
    mode: str = one_of("auto", "auto", "online", "offline", "disabled")
    group: str | None = "${experiment_name}"
    tags: list[str] = field(default_factory=list)
    init_timeout: float = non_negative(
        60
    )  # seconds W&B may take to start before the run falls back to offline
    # seconds the W&B server has to answer a first request, else offline at once (0: no probe)
    probe_timeout: float = non_negative(5)


# logger keys that only W&B reads (minillm.config refuses one set to another value without logger=wandb)
WANDB_ONLY = ("project", "entity", "mode", "init_timeout", "probe_timeout")


@dataclass
class HfSampler:
    """Who picks the tokens where one model alone does (α = 0 rollouts, GKD's on-policy batches, SeqKD's
    teacher samples, every evaluation sample): minillm's own decoder (minillm.rollout.sampler). The
    teacher-mixed rollouts (α > 0) always use it."""

    name: str = "hf"
    # How our decoder runs each token step (minillm.rollout.static_decode): eager (a growing cache) | static
    # (caches allocated once per batch and length bucket, reused) | compiled (static + the step under
    # torch.compile; CUDA graphs on CUDA; eager steps, said in one logged line, where compiling fails);
    # checked by minillm.rollout.static_decode.
    decode: str = "eager"


@dataclass
class VllmSampler:
    """The same samples drawn by vLLM (`make install-vllm`) in a process of its own with its own Python
    environment (README "Sampling with vLLM")."""

    name: str = "vllm"
    python: str = "${oc.env:MINILLM_VLLM_PYTHON,${minillm.root:}/.venv-vllm/bin/python}"  # the engine's
    kv_cache_gib: int = positive(1)  # the engine's KV cache in whole GiB (VLLM_CPU_KVCACHE_SPACE on CPU)
    threads: int | None = positive(None)  # the engine's CPU threads (null: every core, as torch's default)
    max_model_len: int = positive(512)  # longest prompt + response (capped by the model's position limit)
    # CUDA: the engine's share of the GPU's memory (the trainer shares the GPU; vLLM's own default is 0.9)
    gpu_memory_utilization: float = 0.3  # in (0, 1): checked with the engine (minillm.rollout.vllm_engine)
    decode: str = "eager"  # our decoder's steps where it still samples (α > 0)


SAMPLERS = {"hf": HfSampler, "vllm": VllmSampler}
