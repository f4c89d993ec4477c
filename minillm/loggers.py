"""Experiment loggers: a local CSV always, W&B online when logged in and offline otherwise.

W&B must never prompt and never hang: without credentials it runs in offline mode, with its files
inside the run directory (sync later with ``wandb sync``).
"""

from __future__ import annotations

import logging
import netrc
import os
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


def make_loggers(cfg, run_dir: str | Path) -> list[Logger]:
    """CSV (``metrics.csv`` in the run directory) plus W&B when ``logger.kind=wandb``."""
    run_dir = Path(run_dir)
    loggers: list[Logger] = [CSVLogger(save_dir=str(run_dir), name="", version="csv")]
    if cfg.logger.kind == "wandb":
        mode = resolve_wandb_mode(cfg.logger.get("mode", "auto"))
        if mode != "disabled":
            loggers.append(_wandb_logger(cfg, run_dir, mode))
    elif cfg.logger.kind not in ("csv", "none"):
        raise MinillmError(f"logger.kind={cfg.logger.kind!r}; choose one of ['csv', 'none', 'wandb']")
    return loggers


def _wandb_logger(cfg, run_dir: Path, mode: str) -> Logger:
    from lightning.pytorch.loggers import WandbLogger

    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ["WANDB_MODE"] = mode
    # Never prompt: without a terminal wandb would otherwise ask how to log in.
    os.environ.setdefault("WANDB_DISABLE_CODE", "true")
    tags = [str(t) for t in cfg.logger.get("tags") or []]
    tags += [f"objective:{cfg.objective.name}", f"seed:{cfg.seed}"]
    log.info("W&B logging %s (files in %s/wandb)", mode, run_dir)
    return WandbLogger(
        project=cfg.logger.project,
        entity=cfg.logger.get("entity"),
        group=str(cfg.logger.get("group") or cfg.experiment_name),
        name=str(cfg.run_name),
        tags=tags,
        save_dir=str(run_dir),
        mode=mode,
        config=OmegaConf.to_container(cfg, resolve=True),
        job_type=str(cfg.objective.name),
    )
