"""Experiment loggers: a local CSV always, W&B online when logged in and offline otherwise.

W&B must never prompt and never hang: without credentials it runs in offline mode, with its files
inside the run directory (sync later with ``wandb sync``).
"""

from __future__ import annotations

import csv
import logging
import netrc
import os
import uuid
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger
from omegaconf import OmegaConf

from minillm.errors import MinillmError

log = logging.getLogger(__name__)
WANDB_MODES = ("auto", "online", "offline", "disabled")


def wandb_logged_in() -> bool:
    """True when an API key is available without asking: the environment or ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode(requested: str) -> str:
    if requested not in WANDB_MODES:
        raise MinillmError(f"logger.mode={requested!r}; choose one of {list(WANDB_MODES)}")
    env_mode = os.environ.get("WANDB_MODE")
    if requested == "auto":
        if env_mode in ("offline", "disabled", "dryrun"):
            return "offline" if env_mode == "dryrun" else env_mode
        return "online" if wandb_logged_in() else "offline"
    if requested == "online" and not wandb_logged_in():
        log.warning("logger.mode=online but no W&B credentials found: logging offline instead")
        return "offline"
    return requested


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSVLogger deletes an existing ``metrics.csv``; this one keeps it when resuming.

    With ``resume_step`` the rows logged before that step are kept and the later ones (logged after the
    checkpoint, before the stop, and about to be logged again) dropped; without it the file starts over.
    """

    def __init__(self, save_dir: Path, resume_step: int | None = None):
        super().__init__(save_dir=str(save_dir), name="", version="csv")
        self._resume_step = resume_step

    @property
    def experiment(self):
        if self._experiment is not None:
            return self._experiment
        path = Path(self.log_dir) / "metrics.csv"
        kept: list[dict] = []
        if self._resume_step is not None and path.is_file():
            with path.open(newline="") as handle:
                kept = [r for r in csv.DictReader(handle) if int(float(r["step"])) < self._resume_step]
        if path.is_file():
            path.rename(path.with_suffix(".csv.bak"))  # never lost: the old file is set aside first
        writer = super().experiment
        if kept:
            writer.metrics = [{k: _number(v) for k, v in r.items() if v != ""} for r in kept]
            writer.save()
        path.with_suffix(".csv.bak").unlink(missing_ok=True)
        return writer


def _number(value: str):
    try:
        return int(value) if value.lstrip("-").isdigit() else float(value)
    except ValueError:
        return value


def make_loggers(cfg, run_dir: str | Path, resume_step: int | None = None) -> list[Logger]:
    """CSV (``csv/metrics.csv`` in the run directory) plus W&B when ``logger.kind=wandb``.

    ``resume_step``: the run resumes from a checkpoint; the CSV keeps its earlier rows and W&B goes on
    with the same run id.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    loggers: list[Logger] = [ResumableCSVLogger(run_dir, resume_step)]
    if cfg.logger.kind == "wandb":
        mode = resolve_wandb_mode(cfg.logger.get("mode", "auto"))
        if mode != "disabled":
            loggers.append(_wandb_logger(cfg, run_dir, mode))
    elif cfg.logger.kind not in ("csv", "none"):
        raise MinillmError(f"logger.kind={cfg.logger.kind!r}; choose one of ['csv', 'none', 'wandb']")
    return loggers


def swept_values() -> list[str]:
    """In a multirun, the job's own overrides (``+arm=full``, ``seed=1``) as W&B tags, so the dashboard
    groups runs the way the sweep varied them."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
            return []
        return [str(o).lstrip("+~")[:64] for o in HydraConfig.get().overrides.task]
    except (ImportError, ValueError):
        return []


def wandb_run_id(run_dir: Path) -> str:
    """The run's W&B id, kept in the run directory so a resumed run continues the same W&B run."""
    path = run_dir / "wandb_run_id"
    if path.is_file():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:12]
    path.write_text(run_id + "\n")
    return run_id


def _wandb_logger(cfg, run_dir: Path, mode: str) -> Logger:
    """A WandbLogger whose run is started here, so a W&B server that fails falls back to offline now."""
    from lightning.pytorch.loggers import WandbLogger

    os.environ.setdefault("WANDB_SILENT", "true")
    # Never prompt: without a terminal wandb would otherwise ask how to log in.
    os.environ.setdefault("WANDB_DISABLE_CODE", "true")
    tags = [str(t) for t in cfg.logger.get("tags") or []]
    tags += [f"objective:{cfg.objective.name}", f"seed:{cfg.seed}"]
    tags += swept_values()
    run_id = wandb_run_id(run_dir)
    timeout = float(cfg.logger.get("init_timeout", 60))

    def start(mode: str) -> Logger:
        import wandb

        os.environ["WANDB_MODE"] = mode
        logger = WandbLogger(
            project=cfg.logger.project,
            entity=cfg.logger.get("entity"),
            group=str(cfg.logger.get("group") or cfg.experiment_name),
            name=str(cfg.run_name),
            tags=tags,
            save_dir=str(run_dir),
            mode=mode,
            id=run_id,
            resume="allow",
            config=OmegaConf.to_container(cfg, resolve=True),
            job_type=str(cfg.objective.name),
            settings=wandb.Settings(init_timeout=timeout, silent=True),
        )
        logger.experiment  # noqa: B018 - starts the run now, where a failure can be handled
        return logger

    try:
        logger = start(mode)
    except Exception as err:  # a W&B server that errors or times out must not stop the run
        if mode == "offline":
            raise MinillmError(f"logger: W&B could not start even offline ({err})") from None
        log.warning("W&B %s failed (%s): logging offline instead", mode, str(err).splitlines()[0][:200])
        _finish_failed_run()
        mode = "offline"
        logger = start(mode)
    log.info("W&B logging %s, run id %s (files in %s/wandb)", mode, run_id, run_dir)
    return logger


def _finish_failed_run() -> None:
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=1, quiet=True)
    except Exception:  # noqa: S110 - best effort only; the offline run starts next
        pass
