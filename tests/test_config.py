"""Every config group composes; bad choices and values fail with a message naming the key."""

from __future__ import annotations

import subprocess
import sys

import pytest

from minillm.config import validate_config
from minillm.errors import MinillmError

from .conftest import CONF, ROOT


def group_choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "group", ["data", "teacher", "student", "objective", "trainer", "logger", "optim", "debug", "experiment"]
)
def test_every_choice_of_every_group_composes(compose, group):
    choices = group_choices(group)
    if group != "experiment":
        assert choices, f"conf/{group} is empty"
    for choice in choices:
        overrides = [f"{group}={choice}"]
        if group == "data" and choice == "jsonl":
            overrides.append("data.path=/tmp/x.jsonl")
        if choice == "hf":
            overrides.append(f"{group}.path=/tmp/some-model")
        cfg = compose(overrides)
        assert cfg.objective.name and cfg.data.template in ("short", "alpaca")
        if group in ("teacher", "student") and cfg[group].path is None and cfg[group].arch is None:
            assert choice == "none"


def test_validation_names_the_key(compose):
    cfg = compose(["data.batch_size=0"])
    with pytest.raises(MinillmError, match=r"data\.batch_size=0: must be a positive integer"):
        validate_config(cfg)
    cfg = compose(["objective=forward_kld", "objective.kd_ratio=1.5"])
    with pytest.raises(MinillmError, match=r"objective\.kd_ratio=1\.5: must be in \[0\.0, 1\.0\]"):
        validate_config(cfg)
    cfg = compose(["optim.schedule=linear"])
    with pytest.raises(MinillmError, match="optim.schedule='linear'"):
        validate_config(cfg)


def test_unknown_choice_lists_valid_ones():
    out = subprocess.run(
        [sys.executable, "-m", "minillm.run", "objective=nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    assert "Could not find 'objective/nope'" in out.stderr
    assert "Available options in 'objective'" in out.stderr and "sft" in out.stderr
    assert "Traceback" not in out.stderr
