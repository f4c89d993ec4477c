"""Which config keys a resumed run may change (those that bound, name or place a run) and the
differences between a checkpoint's config and this run's, as ``(key, saved, current)``."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

# Keys that bound a run, name it, or say where its files and logs go: a checkpoint resumes with other values
# of these (a longer run, another output folder, no W&B). Every other key changes what training does, and a
# checkpoint trained with another value is refused unless resume.allow_config_change=true.
# Where the run trains, not what it computes: a checkpoint moves across world sizes and strategies.
LAYOUT_KEYS = (
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    "trainer.accelerator",
    "fit.cpu_offload",
)
RUN_BOUND_KEYS = (
    "ckpt_path",
    "resume",
    "output_dir",
    "run_name",
    "experiment_name",
    "arm_name",
    "cache_dir",
    "assets_dir",
    "scaling_models",
    "logger",
    "trainer.max_steps",
    "trainer.max_epochs",
    "trainer.max_time",
    "fit.stop_at_step",
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
    "fit.num_threads",
    "callbacks",
    "eval.compare",
    "eval.splits",
    "eval.num_samples",
    "eval.seeds",
    "select.save_hf",
    # labels (student=hf names the model by its path): what a model is, its path's files say (MODEL_PATH_KEYS)
    "student.name",
    "teacher.name",
    # where the engine runs and how much memory it takes, not what it samples (sampler.name is run-bound)
    "sampler.python",
    "sampler.kv_cache_gib",
    "sampler.threads",
    "sampler.max_model_len",
    "sampler.gpu_memory_utilization",
    *LAYOUT_KEYS,
)
LIMIT_KEYS = ("trainer.max_steps", "trainer.max_epochs", "trainer.max_time")
_ABSENT = "<absent>"


def flatten(tree, prefix: str = ""):
    """``(dotted key, value)`` for each leaf of a nested config (an empty dict is a leaf; lists are values)."""
    if isinstance(tree, dict) and tree:
        for key, value in tree.items():
            yield from flatten(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], tree


# Keys whose int and float values mean different things (1 step against 1.0 of an epoch): elsewhere an int
# saved before a key was typed float (objective.pt_coef=1, now 1.0) is the same value.
INT_OR_FLOAT_KEYS = (
    "trainer.val_check_interval",
    "trainer.limit_val_batches",
    "trainer.limit_train_batches",
    "trainer.limit_test_batches",
)


# Keys added after checkpoints were first written, with the value that does what the code did before them: a
# checkpoint whose config lacks one resumes as if it held that value (no config change to allow).
ADDED_KEYS = {"fit.compile_updates": False, "sampler.decode": "eager"}


def _same(a, b, key: str = "") -> bool:
    """Equal values of the same type; an int and a float of one value are the same but for the keys where
    the type carries meaning (INT_OR_FLOAT_KEYS)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y, key) for x, y in zip(a, b, strict=True))
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
    if numbers and key not in INT_OR_FLOAT_KEYS:
        return a == b
    return type(a) is type(b) and a == b


def run_bound(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RUN_BOUND_KEYS)


def config_differences(
    saved: dict, current: dict, *, bound: bool = False
) -> list[tuple[str, object, object]]:
    """``(key, saved value, current value)`` for every key that differs, in the current config's order;
    the keys that change training, or with ``bound`` only the run-bound ones."""
    old, new = dict(flatten(saved)), dict(flatten(current))
    old.update({k: v for k, v in ADDED_KEYS.items() if k not in old and k in new})  # before the key existed
    keys = [*new, *(k for k in old if k not in new)]
    return [
        (k, old.get(k, _ABSENT), new.get(k, _ABSENT))
        for k in keys
        if run_bound(k) == bound
        and not _same(old.get(k, _ABSENT), new.get(k, _ABSENT), k)
        and not (k == PRECISION_KEY and new.get(k) == "auto")  # auto takes the checkpoint's (adopt_precision)
    ]


PRECISION_KEY = "trainer.precision"


def adopt_precision(cfg, saved: dict | None) -> None:
    """``trainer.precision=auto`` resuming a checkpoint: the precision that checkpoint trained with (what
    auto resolved to then), not a fresh measurement that might choose otherwise."""
    from omegaconf import open_dict

    if str(cfg.trainer.get("precision")) != "auto" or saved is None:
        return
    value = dict(flatten(saved)).get(PRECISION_KEY)
    if value is None or value == "auto":
        return
    with open_dict(cfg):
        cfg.trainer.precision = value
    log.info("trainer.precision=auto: %s, as the checkpoint trained", value)


def describe_difference(diff: tuple[str, object, object]) -> str:
    key, saved, current = diff
    return f"trained with {key}={saved}, this run has {key}={current}"
