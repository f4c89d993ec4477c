"""The config a run was trained with: from its checkpoint (or its run folder), in today's keys."""

from __future__ import annotations

import copy
from pathlib import Path

# Config keys renamed since runs began saving their config, as (old, new) values in today's names.
_RECORD_LOADERS = {"bundled": "bundled_records", "jsonl": "jsonl_records"}
_TASKS = {
    "train": "minillm.run.train_task",
    "toy_gmm": "minillm.toys.gmm_task",
    "toy_sequences": "minillm.toys.sequences_task",
}
# objective.loss targets whose module was renamed (objectives/beyond.py split into distillm2.py and taid.py)
_MOVED_LOSSES = {
    "minillm.objectives.beyond.distillm2_loss": "minillm.objectives.distillm2.distillm2_loss",
    "minillm.objectives.beyond.taid_loss": "minillm.objectives.taid.taid_loss",
}
# objective keys that now live only in optim / scheduler / select / trainer (their values are there too)
_MOVED_OBJECTIVE_KEYS = (
    "lr",
    "warmup_steps",
    "monitor",
    "monitor_mode",
    "val_check_interval",
    "log_every_n_steps",
)


def upgrade_config(saved: dict) -> dict:
    """A run's saved config (plain containers) in today's keys: ``data.source: bundled|jsonl`` became the
    ``data.records`` loader and ``task: train|toy_…`` the ``task`` function (both ``_target_`` nodes),
    ``objective.lr`` (warmup_steps, monitor, …) lives only in optim / scheduler / select / trainer, an
    ``objective.loss`` ``_target_`` may be in a module since renamed (``_MOVED_LOSSES``), and a run saved
    before ``sampler.decode`` existed decoded eagerly; so checkpoints and run folders written before still
    resume and compare equal."""
    saved = copy.deepcopy(saved)
    task = saved.get("task")
    if isinstance(task, str) and task in _TASKS:
        saved["task"] = {"_target_": _TASKS[task], "_partial_": True}
    objective = saved.get("objective")
    if isinstance(objective, dict):
        for key in _MOVED_OBJECTIVE_KEYS:
            objective.pop(key, None)
        loss = objective.get("loss")
        if isinstance(loss, dict) and loss.get("_target_") in _MOVED_LOSSES:
            loss["_target_"] = _MOVED_LOSSES[loss["_target_"]]
    saved.pop(
        "lr_by_objective", None
    )  # experiment=objectives_compare / scaling: conf/experiment_objective/ now
    data = saved.get("data")
    if isinstance(data, dict) and data.get("source") in _RECORD_LOADERS and "records" not in data:
        loader = _RECORD_LOADERS[data.pop("source")]
        data["records"] = {"_target_": f"minillm.data.datamodule.{loader}", "_partial_": True}
    sampler = saved.get("sampler")
    if isinstance(sampler, dict) and "decode" not in sampler:
        sampler["decode"] = "eager"
    _upgrade_to_schema(saved)
    return saved


def _upgrade_to_schema(saved: dict) -> None:
    """Runs saved before every group had a schema (minillm/schema/): model presets gained ``gguf`` and
    ``keep_every`` (null), data=jsonl the ``n_train``/``n_valid``/``n_test`` caps (null), data=bundled lost the
    jsonl keys it never read, and two keys became floats."""
    for model in ("teacher", "student"):
        node = saved.get(model)
        if isinstance(node, dict):
            node.setdefault("gguf", None)
            node.setdefault("keep_every", None)
            lora = node.get("lora")
            if isinstance(lora, dict) and type(lora.get("alpha")) is int:
                lora["alpha"] = float(lora["alpha"])
    data = saved.get("data")
    records = data.get("records") if isinstance(data, dict) else None
    loader = str(records.get("_target_", "")) if isinstance(records, dict) else ""
    if loader.endswith(".bundled_records"):
        for key in ("path", "valid_size", "test_size"):
            if key in data and data[key] is None:
                del data[key]
    elif loader.endswith(".jsonl_records"):
        for key in ("n_train", "n_valid", "n_test"):
            data.setdefault(key, None)
    objective = saved.get("objective")
    if isinstance(objective, dict) and type(objective.get("teacher_cache_mb")) is int:
        objective["teacher_cache_mb"] = float(objective["teacher_cache_mb"])


def checkpoint_config(ckpt: dict, path: Path) -> dict | None:
    """The resolved config a checkpoint was trained with: ``checkpoint["minillm"]["config"]``, or for a
    checkpoint written before it carried one, its run folder's ``config.yaml``; None when neither exists."""
    config = (ckpt.get("minillm") or {}).get("config")
    if config is not None:
        return upgrade_config(config)
    saved = Path(path).parent.parent / "config.yaml"
    if Path(path).parent.name == "checkpoints" and saved.is_file():
        from omegaconf import OmegaConf

        return upgrade_config(OmegaConf.to_container(OmegaConf.load(saved), resolve=False))
    return None
