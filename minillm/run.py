"""Hydra entry point: ``python -m minillm.run [group=choice ...] [key=value ...]``.

Returns the run's ``test/rougeL`` to a Hydra sweeper, so Optuna and other sweepers can optimise it.
In a multirun a failing job is recorded (``failed.json`` in its folder, one line on stderr) and the
sweep goes on; ``python -m minillm.report`` lists it.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig

from minillm.cli import CONF_DIR, quiet_libraries, user_errors
from minillm.errors import MinillmError, RunInterrupted

quiet_libraries()
log = logging.getLogger("minillm.run")


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def record_failure(cfg: DictConfig, err: Exception) -> None:
    """Write the job's error into its folder and say it in one line; the sweep goes on."""
    folder = Path(cfg.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    message = str(err) if isinstance(err, MinillmError) else f"{type(err).__name__}: {err}"
    (folder / "failed.json").write_text(
        json.dumps(
            {
                "error": message,
                "type": type(err).__name__,
                "run_name": str(cfg.get("run_name")),
                "traceback": None if isinstance(err, MinillmError) else traceback.format_exc(),
            },
            indent=2,
        )
    )
    print(
        f"error: job {cfg.get('run_name')} failed: {message} (recorded in {folder / 'failed.json'})",
        file=sys.stderr,
        flush=True,
    )


def run_task(cfg: DictConfig) -> float | None:
    """The training pipeline (returns test/rougeL), or a toy problem (returns its headline number)."""
    if cfg.get("task", "train") != "train":
        from minillm.toys import run_toy

        return run_toy(cfg)["metric"]
    from minillm.pipeline import train

    return train(cfg).get("test/rougeL")


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> float | None:
    if not in_multirun():
        return run_task(cfg)
    try:
        return run_task(cfg)
    except RunInterrupted:
        raise  # a stop the user asked for (Ctrl-C, SIGTERM) stops the sweep too, with its checkpoint
    except Exception as err:  # one job of a sweep: record it, let the others run
        record_failure(cfg, err)
        return float("nan")


if __name__ == "__main__":
    main()
