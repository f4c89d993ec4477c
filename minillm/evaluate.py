"""Hydra entry point: ``python -m minillm.evaluate evaluate.path=RUN_DIR [key=value ...]``.

The paper's metrics for one model (the trained student of a run, the config's teacher or student init):
Rouge-L over sampling seeds with exact match, validity and breakdowns by category and gold length;
exposure bias (ExAccErr); calibration (ECE); diversity (Distinct-4) and the split's LM loss. Config:
``conf/evaluate.yaml`` (the root config plus an ``evaluate`` node); guide: docs/evaluation.md.
"""

from __future__ import annotations

from omegaconf import DictConfig

from minillm.cli import hydra_app, quiet_libraries

quiet_libraries()


@hydra_app("evaluate")
def main(cfg: DictConfig) -> float | None:
    from minillm.evaluation.suite import run_evaluation

    results = run_evaluation(cfg)
    return results.get(f"{cfg.evaluate.split}/rougeL")


if __name__ == "__main__":
    main()
