"""Exact resume and safe stops: atomic checkpoints, RNG state, graceful signals, checkpoint checks.

A run stopped by a signal (Ctrl-C, SIGTERM from a scheduler, SIGUSR1) finishes the optimizer update
it is in, writes ``checkpoints/last.ckpt`` atomically and exits; ``ckpt_path=last`` (or a path)
continues it as if it had never stopped. What a checkpoint carries beyond Lightning's own state
(optimizer, scheduler, loop progress) is written by the modules' ``on_save_checkpoint`` under
``checkpoint["minillm"]``: every RNG, the data position, the MiniLLM round in progress, the logging step.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import random
import signal
import tempfile
from pathlib import Path

import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

from minillm.errors import MinillmError, RunAborted, RunInterrupted  # noqa: F401 - re-exported
from minillm.safe_load import load_checkpoint

log = logging.getLogger(__name__)
STOP_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR1", None)) if s)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file in the same folder, fsync, then rename over the target.

    A crash while saving leaves the previous checkpoint (and no half-written file) behind.
    """

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load_checkpoint(self, path, map_location=lambda storage, loc: storage, weights_only=None) -> dict:
        """Lightning's restore (``trainer.fit(ckpt_path=...)``) reads through here: always weights_only,
        with our allowlist, whatever ``weights_only`` Lightning passes on (a pickle can run code)."""
        return load_checkpoint(path, "ckpt_path", map_location=map_location)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class GracefulStop(Callback):
    """Turns SIGINT / SIGTERM / SIGUSR1 into "stop after this update, with a checkpoint".

    The modules poll ``requested`` between optimizer updates. A second Ctrl-C aborts at once.
    """

    def __init__(self, stop_at_step: int | None = None) -> None:
        self.requested: int | None = None
        self.stop_at_step = stop_at_step  # fit.stop_at_step: pause there as if signalled
        self._previous: dict[int, object] = {}

    def should_stop(self, global_step: int) -> bool:
        return self.requested is not None or (
            self.stop_at_step is not None and global_step >= self.stop_at_step
        )

    def _handle(self, signum, frame) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise RunAborted(self._last_checkpoint_hint())
        self.requested = signum
        log.warning(
            "received %s: stopping after the current update and saving a checkpoint "
            "(Ctrl-C again aborts without one)",
            signal.Signals(signum).name,
        )

    def _last_checkpoint_hint(self) -> str:
        folder = getattr(getattr(self, "_trainer", None), "checkpoint_callback", None)
        last = Path(folder.dirpath) / "last.ckpt" if folder is not None and folder.dirpath else None
        if last is not None and last.is_file():
            return f"the last checkpoint written is kept: {last} (ckpt_path=last goes on from it)"
        return "no checkpoint of this run was written yet"

    def on_train_start(self, trainer, pl_module) -> None:
        self._trainer = trainer
        log.info("training (Ctrl-C or SIGTERM stops after the current update, with a checkpoint)")
        if self.stop_at_step is not None and 0 < self.stop_at_step <= trainer.global_step:
            # resumed from the pause fit.stop_at_step made: the same command plus ckpt_path goes on
            log.info(
                "fit.stop_at_step=%d: resumed at step %d, at or past it: not stopping there again",
                self.stop_at_step,
                trainer.global_step,
            )
            self.stop_at_step = None
        for sig in STOP_SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave the handlers alone
                return

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore()


def stop_callback(trainer) -> GracefulStop | None:
    return next((c for c in trainer.callbacks if isinstance(c, GracefulStop)), None)


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
    *LAYOUT_KEYS,
)
LIMIT_KEYS = ("trainer.max_steps", "trainer.max_epochs", "trainer.max_time")
_ABSENT = "<absent>"


def _flatten(tree, prefix: str = ""):
    if isinstance(tree, dict) and tree:
        for key, value in tree.items():
            yield from _flatten(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], tree


def _same(a, b) -> bool:
    """Equal values of the same type (``1`` steps and ``1.0`` epoch differ for val_check_interval)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def run_bound(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RUN_BOUND_KEYS)


def config_differences(
    saved: dict, current: dict, *, bound: bool = False
) -> list[tuple[str, object, object]]:
    """``(key, saved value, current value)`` for every key that differs, in the current config's order;
    the keys that change training, or with ``bound`` only the run-bound ones."""
    old, new = dict(_flatten(saved)), dict(_flatten(current))
    keys = [*new, *(k for k in old if k not in new)]
    return [
        (k, old.get(k, _ABSENT), new.get(k, _ABSENT))
        for k in keys
        if run_bound(k) == bound
        and not _same(old.get(k, _ABSENT), new.get(k, _ABSENT))
        and not (k == PRECISION_KEY and new.get(k) == "auto")  # auto takes the checkpoint's (adopt_precision)
    ]


# Models named by a path: a checkpoint stores a digest of each one's files (``checkpoint["minillm"]["models"]``)
# and a resume compares the files, not the path, so a moved checkout or another clone resumes.
MODEL_PATH_KEYS = ("student.path", "teacher.path", "tokenizer.path")
_DIGESTS: dict[tuple, str] = {}  # one hash per folder state (names, sizes, mtimes) in this process


def _files_of(root: Path) -> list[Path]:
    """A model folder's files, sorted, without hidden ones (a download's ``.cache``, ``.git``)."""
    if root.is_file():
        return [root]
    return sorted(
        f
        for f in root.rglob("*")
        if f.is_file() and not any(p.startswith(".") for p in f.relative_to(root).parts)
    )


def model_digest(path) -> str | None:
    """SHA-256 over a local model folder's files (each one's path inside the folder and its bytes: weights,
    config, tokenizer), or over one file's bytes; None for a hub id or anything not on disk."""
    root = Path(str(path)).expanduser()
    if not root.exists():
        return None
    files = _files_of(root)
    stamp = (str(root.resolve()), *((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))
    if stamp not in _DIGESTS:
        digest = hashlib.sha256()
        for f in files:
            if root.is_dir():
                digest.update(f.relative_to(root).as_posix().encode() + b"\0")
            with f.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
            digest.update(b"\0")
        _DIGESTS[stamp] = digest.hexdigest()
    return _DIGESTS[stamp]


def model_digests(config: dict) -> dict[str, str]:
    """``{key: digest}`` for each of ``MODEL_PATH_KEYS`` that names a local folder or file in ``config``."""
    flat = dict(_flatten(config))
    out = {}
    for key in MODEL_PATH_KEYS:
        digest = model_digest(flat[key]) if flat.get(key) else None
        if digest is not None:
            out[key] = digest
    return out


def training_differences(ckpt: dict, saved: dict, current: dict) -> list[tuple[str, object, object]]:
    """``config_differences`` with the models compared by content: a model path the checkpoint stored a
    digest of differs when the files at the current path hash differently (the same path holding other
    weights), and not when only the path moved. Checkpoints without digests compare the paths as text."""
    digests = (ckpt.get("minillm") or {}).get("models") or {}
    old, new = dict(_flatten(saved)), dict(_flatten(current))
    diffs = []
    for key, digest in digests.items():
        now = model_digest(new[key]) if new.get(key) else None
        if now != digest:
            where = "not a local model" if now is None else f"files {now[:12]}"
            diffs.append((key, f"{old.get(key)} (files {digest[:12]})", f"{new.get(key)} ({where})"))
    return diffs + [d for d in config_differences(saved, current) if d[0] not in digests]


PRECISION_KEY = "trainer.precision"


def adopt_precision(cfg, saved: dict | None) -> None:
    """``trainer.precision=auto`` resuming a checkpoint: the precision that checkpoint trained with (what
    auto resolved to then), not a fresh measurement that might choose otherwise."""
    from omegaconf import open_dict

    if str(cfg.trainer.get("precision")) != "auto" or saved is None:
        return
    value = dict(_flatten(saved)).get(PRECISION_KEY)
    if value is None or value == "auto":
        return
    with open_dict(cfg):
        cfg.trainer.precision = value
    log.info("trainer.precision=auto: %s, as the checkpoint trained", value)


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


def upgrade_config(saved: dict) -> dict:
    """A run's saved config (plain containers) in today's keys: ``data.source: bundled|jsonl`` became the
    ``data.records`` loader and ``task: train|toy_…`` the ``task`` function (both ``_target_`` nodes), and
    ``objective.lr`` (warmup_steps, monitor, …) live only in optim / scheduler / select / trainer, so
    checkpoints and run folders written before still resume and compare equal; so does an ``objective.loss``
    ``_target_`` in a module since renamed (``_MOVED_LOSSES``)."""
    saved = copy.deepcopy(saved)
    task = saved.get("task")
    if isinstance(task, str) and task in _TASKS:
        saved["task"] = {"_target_": _TASKS[task], "_partial_": True}
    objective = saved.get("objective")
    if isinstance(
        objective, dict
    ):  # keys that moved to optim / scheduler / select / trainer (their values are there)
        for key in (
            "lr",
            "warmup_steps",
            "monitor",
            "monitor_mode",
            "val_check_interval",
            "log_every_n_steps",
        ):
            objective.pop(key, None)
    saved.pop(
        "lr_by_objective", None
    )  # experiment=objectives_compare / scaling: conf/experiment_objective/ now
    data = saved.get("data")
    if isinstance(data, dict) and data.get("source") in _RECORD_LOADERS and "records" not in data:
        loader = _RECORD_LOADERS[data.pop("source")]
        data["records"] = {"_target_": f"minillm.data.datamodule.{loader}", "_partial_": True}
    loss = (saved.get("objective") or {}).get("loss")
    if isinstance(loss, dict) and loss.get("_target_") in _MOVED_LOSSES:
        loss["_target_"] = _MOVED_LOSSES[loss["_target_"]]
    return saved


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


def describe_difference(diff: tuple[str, object, object]) -> str:
    key, saved, current = diff
    return f"trained with {key}={saved}, this run has {key}={current}"


def check_config(ckpt: dict, path: Path, current: dict, allow_change: bool = False) -> None:
    """Refuse (one line naming the first differing key) a checkpoint trained with a config that differs
    in a key that changes training; with ``allow_change`` say so and go on. Log limit changes."""
    saved = checkpoint_config(ckpt, path)
    if saved is None:
        log.warning("ckpt_path=%s carries no config: only its objective and model shapes are checked", path)
        return
    diffs = training_differences(ckpt, saved, current)
    if diffs and not allow_change:
        raise MinillmError(
            f"ckpt_path={path}: the checkpoint was {describe_difference(diffs[0])}; only keys that bound a "
            f"run (max_steps, max_epochs, max_time, logger, ...) may change on resume "
            f"(resume.allow_config_change=true resumes it anyway)"
        )
    if diffs:
        log.warning(
            "resume.allow_config_change=true: resuming a checkpoint trained with another config (%s)",
            "; ".join(f"{k}: {a} -> {b}" for k, a, b in diffs),
        )
    bound = config_differences(saved, current, bound=True)
    layout = [d for d in bound if any(d[0] == k or d[0].startswith(k + ".") for k in LAYOUT_KEYS)]
    if layout:
        log.warning(
            "resuming on another layout (%s): weights, optimizer, schedule and step carry over; at another "
            "world size the data position is rescaled to the examples seen and the run is no longer "
            "bit-identical to an uninterrupted one",
            ", ".join(f"{k} {a} -> {b}" for k, a, b in layout),
        )
    limits = [d for d in bound if d[0] in LIMIT_KEYS]
    if limits:
        log.info(
            "the run's limits changed since the checkpoint: %s",
            ", ".join(f"{k} {a} -> {b}" for k, a, b in limits),
        )


def resolve_ckpt_path(
    value, output_dir: Path, current: dict | None = None, allow_change: bool = False
) -> Path | None:
    """``ckpt_path``: null, a file, or ``last``.

    ``last`` is this run's own ``checkpoints/last.ckpt`` when its folder has one; otherwise the newest
    ``*/checkpoints/last.ckpt`` beside it whose config (``current``, resolved) differs only in run-bound
    keys (with ``allow_change``: the newest, whatever its config).
    """
    if value in (None, ""):
        return None
    if str(value) == "last":
        own = Path(output_dir) / "checkpoints" / "last.ckpt"
        if own.is_file():
            log.info("ckpt_path=last: resuming this run's own checkpoint %s", own)
            return own
        parent = Path(output_dir).parent
        found = sorted(
            (p for p in parent.glob("*/checkpoints/last.ckpt") if p.parents[1] != Path(output_dir)),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        if not found:
            raise MinillmError(
                f"ckpt_path=last: no checkpoints/last.ckpt in {output_dir} nor in a run beside it under {parent}"
            )
        refused = []
        for path in found:
            try:
                ckpt = read_checkpoint(path)
                saved = checkpoint_config(ckpt, path)
            except MinillmError as err:
                refused.append((path, f"not readable ({err})"))
                continue
            diffs = None if saved is None or current is None else training_differences(ckpt, saved, current)
            if allow_change or diffs == []:
                log.info(
                    "ckpt_path=last: no checkpoint in %s; resuming the newest run beside it with the same "
                    "config, %s (that run's folder is left as it is; this run writes into %s)",
                    output_dir,
                    path,
                    output_dir,
                )
                return path
            why = "written without its config" if saved is None else describe_difference(diffs[0])
            refused.append((path, why))
        path, why = refused[0]
        raise MinillmError(
            f"ckpt_path=last: no checkpoint in {output_dir}, and none of the {len(found)} runs beside it "
            f"has this run's config (the newest, {path}, was {why}); pass ckpt_path=PATH to choose one, "
            f"with resume.allow_config_change=true to resume it anyway"
        )
    path = Path(str(value))
    if not path.is_file():
        raise MinillmError(f"ckpt_path={value}: checkpoint file does not exist")
    return path


def read_checkpoint(path: Path) -> dict:
    # memory-mapped: only the metadata and shapes are read here; Lightning loads the file for real.
    # Without running code from it: a file holding anything but our checkpoint's types is refused.
    return load_checkpoint(path, "ckpt_path", mmap=True)


def check_checkpoint(ckpt: dict, path: Path, objective: str, module=None) -> None:
    """The checkpoint must come from the same objective and (given ``module``) a student of the same shapes."""
    meta = ckpt.get("minillm") if isinstance(ckpt, dict) else None
    if meta is None:
        raise MinillmError(f"ckpt_path={path}: not a minillm training checkpoint (no 'minillm' state)")
    if meta.get("objective") != objective:
        raise MinillmError(
            f"ckpt_path={path}: checkpoint is from objective={meta.get('objective')}, "
            f"this run is objective={objective}"
        )
    if module is None:
        return
    have = {k: tuple(v.shape) for k, v in module.checkpoint_state_dict().items()}  # LoRA: the adapters
    saved = {k: tuple(v.shape) for k, v in ckpt.get("state_dict", {}).items()}
    if have != saved:
        diff = sorted(set(have.items()) ^ set(saved.items()))
        raise MinillmError(
            f"ckpt_path={path}: checkpoint holds a different student model (first mismatch: {diff[0][0]})"
        )


def _zero(counters: dict) -> None:
    for key, value in counters.items():
        if isinstance(value, dict):
            _zero(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            counters[key] = 0


def rescale_data_position(ckpt: dict, global_batch: int) -> tuple[int, int] | None:
    """Move a checkpoint's data position to another global batch size (another world size, or another
    per-rank batch): the batches already trained on in the epoch, ``consumed`` of ``data["global_batch"]``
    examples each, become ``consumed × old // new`` batches of ``global_batch`` (a partial batch is trained
    again, never skipped), and Lightning's in-epoch batch counters move by the same amount. Returns
    ``(old consumed, new consumed)``, or None when nothing changes (same size, or a checkpoint that does
    not say its size)."""
    data = (ckpt.get("minillm") or {}).get("data")
    if data is None or data.get("global_batch") in (None, global_batch):
        return None
    old = int(data["consumed"])
    new = old * int(data["global_batch"]) // int(global_batch)
    data["consumed"], data["global_batch"] = new, int(global_batch)
    progress = ((ckpt.get("loops") or {}).get("fit_loop") or {}).get("epoch_loop.batch_progress") or {}
    for part in ("total", "current"):
        for key, value in (progress.get(part) or {}).items():
            progress[part][key] = max(0, int(value) + new - old)
    return old, new


def fix_epoch_end_checkpoint(ckpt: dict, batches_in_epoch: int) -> str | None:
    """Make a checkpoint written at the end of a run's last epoch resumable past it, to a larger limit.

    Such a checkpoint is written in ``on_train_epoch_end``, where Lightning has counted the epoch as
    processed but not yet completed, and resuming it goes wrong in two ways:

    - the run stopped at ``trainer.max_steps`` / ``max_time`` *inside* the epoch (the data position,
      ``checkpoint["minillm"]["data"]``, has batches left): with ``max_epochs=1`` the continued run ends at
      once, and a larger ``max_epochs`` counts the cut epoch as a whole one. Rewritten to the loop state
      of a checkpoint taken at that step inside the epoch: ``"inside"``.
    - the epoch ran to its end and ``trainer.max_steps`` is set: Lightning restores it as a restart at the
      end of an epoch, whose counters say the epoch's batches are all done, and trains nothing in the next
      epoch. Rewritten to the loop state at the start of the next epoch: ``"next"``.

    Lightning's restart may or may not count one more logging step (it depends on whether it takes the
    restored batch for one that validated), so the logging step training goes on from is also written to
    ``checkpoint["minillm"]["log_step"]``, which the module sets at its first batch.
    Returns which, or None when the checkpoint was not written at the end of an epoch.
    """
    data = (ckpt.get("minillm") or {}).get("data")
    fit = (ckpt.get("loops") or {}).get("fit_loop")
    if data is None or fit is None:
        return None
    progress = fit.get("epoch_progress", {})
    parts = [progress.get("total"), progress.get("current")]
    ended = all(
        p is not None and p["ready"] == p["started"] == p["processed"] == p["completed"] + 1 for p in parts
    )
    if not ended:
        return None
    loop = fit.get("epoch_loop.state_dict") or {}
    if "_batches_that_stepped" in loop and ckpt["minillm"].get("log_step") is None:
        ckpt["minillm"]["log_step"] = int(loop["_batches_that_stepped"])  # at the end of an epoch: counted
    if int(data["consumed"]) < batches_in_epoch:
        for part in parts:
            part["processed"] -= 1
        return "inside"
    for part in parts:
        part["completed"] = part["processed"]
    # what Lightning resets when an epoch starts: the per-epoch ("current") counters
    for key in (
        "epoch_loop.batch_progress",
        "epoch_loop.scheduler_progress",
        "epoch_loop.automatic_optimization.optim_progress",
        "epoch_loop.manual_optimization.optim_step_progress",
    ):
        counters = fit.get(key) or {}
        for name, value in counters.items():
            if name == "current":
                _zero(value)
            elif isinstance(value, dict):  # the optimizer's step / zero_grad progress
                for sub in value.values():
                    if isinstance(sub, dict) and "current" in sub:
                        _zero(sub["current"])
    if "is_last_batch" in (fit.get("epoch_loop.batch_progress") or {}):
        fit["epoch_loop.batch_progress"]["is_last_batch"] = False
    val = fit.get("epoch_loop.val_loop.batch_progress") or {}
    if "total" in val:
        _zero(val["total"])
    return "next"


def redirect_run_dir(cfg, run_dir: Path) -> None:
    """Point ``output_dir`` and every callback folder under it (the checkpoints) at ``run_dir``."""
    from omegaconf import open_dict

    old = Path(cfg.output_dir)
    with open_dict(cfg):
        cfg.output_dir = str(run_dir)
        for node in (cfg.get("callbacks") or {}).values():
            folder = node.get("dirpath")
            if folder and Path(folder).is_relative_to(old):
                node.dirpath = str(run_dir / Path(folder).relative_to(old))


def resume_log_step(ckpt: dict) -> int:
    """The logging step training goes on from: metrics logged at or after it are logged again."""
    meta = ckpt.get("minillm") or {}
    if meta.get("log_step") is not None:  # stopped between updates (a signal or fit.stop_at_step)
        return int(meta["log_step"])
    loop = ckpt.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict", {})
    # saved by ModelCheckpoint after a batch's update, before Lightning counted it (Lightning adds 1)
    return int(loop.get("_batches_that_stepped", 0)) + 1


def continue_csv(source: Path, run_dir: Path) -> None:
    """``ckpt_path=last`` picked a run beside this one: this run's CSV starts with that run's rows (those
    after the checkpoint are dropped by the logger); that run's folder is only read."""
    import shutil

    src, dst = source / "csv" / "metrics.csv", run_dir / "csv" / "metrics.csv"
    if src.is_file() and not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)


def earlier_work(run_dir: Path) -> list[str]:
    """What an earlier run left in ``run_dir`` that a fresh run would overwrite."""
    found = [name for name in ("results.json", "csv/metrics.csv", "best_model") if (run_dir / name).exists()]
    if any((run_dir / "checkpoints").glob("*.ckpt")):
        found.append("checkpoints/")
    return found


def refuse_to_overwrite(run_dir: Path) -> None:
    """A fresh run (no checkpoint to go on from) never overwrites an earlier run's results in its folder."""
    found = earlier_work(run_dir)
    if found:
        raise MinillmError(
            f"hydra.run.dir={run_dir} already holds a run ({', '.join(found)}) that a fresh run would overwrite: "
            "go on from its checkpoint with ckpt_path=last, or choose another folder (nothing was changed)"
        )


class Resume:
    """Where a run writes and which checkpoint it goes on from (``ckpt_path``: null, a path, or ``last``).

    :meth:`plan` runs before any model is built: it finds the checkpoint, reads it safely (a file holding
    anything but our types is refused) and checks its objective and config. :meth:`attach` runs once the
    module exists and returns the logging step the loggers go on from.
    """

    def __init__(self, run_dir: Path, ckpt_path: Path | None, checkpoint: dict | None):
        self.run_dir, self.ckpt_path, self.checkpoint = run_dir, ckpt_path, checkpoint

    @classmethod
    def plan(cls, cfg) -> Resume:
        from omegaconf import OmegaConf

        run_dir = Path(cfg.output_dir)
        config = OmegaConf.to_container(cfg, resolve=True)
        allow_change = bool((cfg.get("resume") or {}).get("allow_config_change", False))
        ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), run_dir, config, allow_change)
        explicit = ckpt_path is not None and str(cfg.get("ckpt_path")) != "last"
        if explicit and ckpt_path.parent.name == "checkpoints" and ckpt_path.name == "last.ckpt":
            # the user pointed at that run's checkpoint: the run goes on writing into its own directory
            run_dir = ckpt_path.parent.parent
            log.info("resuming from %s; writing into %s", ckpt_path, run_dir)
            redirect_run_dir(cfg, run_dir)
        if ckpt_path is None:
            refuse_to_overwrite(run_dir)
        checkpoint = read_checkpoint(ckpt_path) if ckpt_path is not None else None
        if checkpoint is not None:
            check_checkpoint(checkpoint, ckpt_path, str(cfg.objective.name))
            check_config(checkpoint, ckpt_path, config, allow_change)
            adopt_precision(cfg, checkpoint_config(checkpoint, ckpt_path))
        run_dir.mkdir(parents=True, exist_ok=True)
        return cls(run_dir, ckpt_path, checkpoint)

    def attach(self, cfg, module, dm) -> int | None:
        """Check the checkpoint against the module; the logging step to go on from (None: a fresh run)."""
        if self.checkpoint is None:
            return None
        ckpt, self.checkpoint = self.checkpoint, None  # Lightning reads the file again in fit
        check_checkpoint(ckpt, self.ckpt_path, str(cfg.objective.name), module)
        data = (ckpt.get("minillm") or {}).get("data")
        if data is not None:  # as the module does when Lightning loads it (the logging step depends on it)
            fix_epoch_end_checkpoint(ckpt, dm.train_batches_in_epoch(int(data["epoch"])))
        if self.ckpt_path.parent.name == "checkpoints" and self.ckpt_path.parents[1] != self.run_dir:
            continue_csv(self.ckpt_path.parents[1], self.run_dir)
        return resume_log_step(ckpt)
