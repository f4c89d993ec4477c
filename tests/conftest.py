"""Shared fixtures: offline environment, composed configs, tiny tokenizers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["WANDB_MODE"] = "offline"
os.environ.pop("WANDB_API_KEY", None)
# trainer.precision's default is auto (measured at the start of each run): tests that compare numbers need
# one fixed precision, so the suite runs in fp32 unless a test sets trainer.precision itself
os.environ["MINILLM_PRECISION"] = "32-true"

# Tiny models: one thread avoids oversubscription on small shared machines (2 cores).
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def compose_config(overrides: list[str], run_dir: Path, config_name: str = "config"):
    """Compose the real config tree with Hydra's compose API, as `python -m minillm.run` would
    (``config_name="evaluate"``: as `python -m minillm.evaluate` would)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, read_write

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name=config_name,
            overrides=[f"hydra.run.dir={run_dir}", *overrides],
            return_hydra_config=True,
        )
        with read_write(cfg.hydra.runtime):
            cfg.hydra.runtime.output_dir = str(run_dir)
            cfg.hydra.runtime.cwd = str(ROOT)
        HydraConfig.instance().set_config(cfg)
    # Resolve everything now (as Hydra does before a run) and drop the hydra node, like the real app.
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return OmegaConf.create(OmegaConf.to_container(job, resolve=True))


@pytest.fixture
def compose(tmp_path):
    def _compose(overrides: list[str], run_dir: Path | None = None, config_name: str = "config"):
        return compose_config(overrides, run_dir or tmp_path / "run", config_name)

    return _compose


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    """A byte-level BPE trained on a few hundred bundled records (seconds)."""
    from minillm.data.bundled import generate_records
    from minillm.models.tiny import train_tokenizer

    records = generate_records(400, seed=0)
    texts = [f"{r['instruction']}\n{r['context']}\n{r['response']}" for r in records]
    return train_tokenizer(texts, 400, tmp_path_factory.mktemp("tok"))
