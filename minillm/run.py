"""Hydra entry point: ``python -m minillm.run [group=choice ...] [key=value ...]``.

Returns the selected metric to a Hydra sweeper, so Optuna and other sweepers can optimise it.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from minillm.cli import quiet_libraries, user_errors

quiet_libraries()


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> float | None:
    from minillm.pipeline import train

    results = train(cfg)
    return results.get("test/rougeL")


if __name__ == "__main__":
    main()
