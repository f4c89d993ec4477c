"""The run's plug-in points named by `_target_`: `task` (what `python -m minillm.run` does) and
`data.records` (what loads the splits), and old run configs read in today's keys."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
from omegaconf import OmegaConf

from minillm.config import validate_config
from minillm.data.datamodule import load_records
from minillm.errors import MinillmError
from minillm.resume.checks import check_config
from minillm.resume.config_diff import config_differences
from minillm.resume.saved_config import upgrade_config
from minillm.run import run_task


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module of the user's own, importable as `my_plugins` (as it would be from their PYTHONPATH)."""
    (tmp_path / "my_plugins.py").write_text(
        textwrap.dedent(
            """
            import json
            from pathlib import Path

            def task(cfg, scale=1.0):
                Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
                (Path(cfg.output_dir) / "ran.json").write_text(json.dumps({"seed": cfg.seed}))
                return scale * (cfg.seed + 1)

            def records(data_cfg, cache_dir, n=3):
                row = lambda i: {"instruction": f"say {i}", "input": "", "output": str(i)}
                return {split: [row(i) for i in range(n)] for split in ("train", "valid", "test")}

            def no_test(data_cfg, cache_dir):
                return {"train": [{"instruction": "a", "response": "b"}], "valid": [], "test": []}

            def one_arg(data_cfg):
                return {}

            def a_tuple_split(data_cfg, cache_dir):
                good = {"instruction": "a", "response": "b"}
                return {"train": (good,), "valid": [good], "test": [good]}

            def no_arg_task():
                return 1.0

            def a_list(data_cfg, cache_dir):
                return [{"instruction": "a", "response": "b"}]

            def bad_record(data_cfg, cache_dir):
                good = {"instruction": "a", "response": "b"}
                return {"train": [good, {"instruction": "a"}], "valid": [good], "test": [good]}
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_plugins"
    sys.modules.pop("my_plugins", None)


def test_task_runs_the_function_it_names_and_returns_its_value(compose, user_module, tmp_path):
    cfg = compose(["task._target_=my_plugins.task", "+task.scale=2.0", "seed=3"], run_dir=tmp_path / "r")
    assert run_task(cfg) == 8.0
    assert json.loads((tmp_path / "r" / "ran.json").read_text()) == {"seed": 3}


def test_a_mistyped_task_is_one_line_naming_the_key(compose):
    cfg = compose(["task._target_=my_plugins.no_such_task"])
    with pytest.raises(MinillmError, match=r"^task\._target_=my_plugins\.no_such_task: cannot be imported"):
        run_task(cfg)
    with pytest.raises(MinillmError, match=r"^task\._target_=my_plugins.no_such_task: cannot be imported"):
        validate_config(cfg)


def test_the_default_task_is_the_pipeline_and_the_toys_name_their_own(compose):
    assert compose([]).task == {"_target_": "minillm.run.train_task", "_partial_": True}
    assert compose(["experiment=toy_gmm"]).task._target_ == "minillm.toys.gmm_task"


def test_data_records_loads_the_splits_with_the_users_function_in_canonical_keys(compose, user_module):
    cfg = compose(["data.records._target_=my_plugins.records", "+data.records.n=2"])
    validate_config(cfg)
    splits = load_records(cfg.data, cfg.cache_dir)
    assert sorted(splits) == ["test", "train", "valid"]
    # input/output spellings are mapped to context/response, as for a JSONL file
    assert splits["train"] == [
        {"instruction": f"say {i}", "context": "", "response": str(i), "category": ""} for i in range(2)
    ]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            "my_plugins.no_test",
            r"^data\.records\._target_=my_plugins\.no_test: returned no valid or test records$",
        ),
        ("my_plugins.a_list", r"^data\.records\._target_=my_plugins\.a_list: must return a dict of lists"),
        (
            "my_plugins.a_tuple_split",
            r"^data\.records\._target_=my_plugins\.a_tuple_split: must return a list of records under 'train', "
            r"got tuple",
        ),
        (
            "my_plugins.one_arg",
            r"^data\.records: one_arg cannot be called with \(DictConfig, str\): too many positional arguments",
        ),
        (
            "my_plugins.bad_record",
            r"^data\.records \(my_plugins\.bad_record\) train\[1\]: record has no 'response'",
        ),
        ("my_plugins.nope", r"^data\.records\._target_=my_plugins\.nope: cannot be imported"),
    ],
)
def test_a_records_function_that_returns_something_else_is_one_line(compose, user_module, target, message):
    cfg = compose([f"data.records._target_={target}"])
    with pytest.raises(MinillmError, match=message):
        load_records(cfg.data, cfg.cache_dir)


def old_names(config: dict) -> dict:
    """A config as runs saved it before `data.records` and the `task` node (main at 66c5467)."""
    old = json.loads(json.dumps(config))
    loader = old["data"].pop("records")["_target_"].rsplit(".", 1)[-1]
    old["data"]["source"] = {"bundled_records": "bundled", "jsonl_records": "jsonl"}[loader]
    old["task"] = {"minillm.run.train_task": "train", "minillm.toys.gmm_task": "toy_gmm"}[
        old["task"]["_target_"]
    ]
    return old


@pytest.mark.parametrize("overrides", [[], ["data=jsonl", "data.path=/x.jsonl"], ["experiment=toy_gmm"]])
def test_a_config_saved_under_the_old_keys_reads_as_todays(compose, overrides, tmp_path):
    current = OmegaConf.to_container(compose(overrides), resolve=True)
    saved = old_names(current)
    assert config_differences(saved, current) != []  # the rename alone would refuse the checkpoint
    assert config_differences(upgrade_config(saved), current) == []
    assert saved != current and "source" in saved["data"]  # the caller's dict is left as it was
    check_config({"minillm": {"config": saved}}, tmp_path / "x.ckpt", current)  # resumes: no error


@pytest.mark.parametrize("objective, module", [("distillm2", "distillm2"), ("taid", "taid")])
def test_a_loss_saved_under_objectives_beyond_reads_as_todays(compose, objective, module, tmp_path):
    """Runs saved before objectives/beyond.py was split name their loss ``minillm.objectives.beyond.*``: they
    still resume (and compare equal) with today's ``minillm.objectives.<method>.*``."""
    current = OmegaConf.to_container(compose([f"objective={objective}"]), resolve=True)
    saved = json.loads(json.dumps(current))
    target = saved["objective"]["loss"]["_target_"]
    assert target.startswith(f"minillm.objectives.{module}.")
    saved["objective"]["loss"]["_target_"] = target.replace(f".{module}.", ".beyond.")
    assert config_differences(saved, current) != []
    assert config_differences(upgrade_config(saved), current) == []
    check_config({"minillm": {"config": saved}}, tmp_path / "x.ckpt", current)


def test_a_task_that_cannot_take_the_config_is_one_line(compose, user_module):
    cfg = compose(["task._target_=my_plugins.no_arg_task"])
    with pytest.raises(
        MinillmError, match=r"^task: no_arg_task cannot be called with \(DictConfig\): too many"
    ):
        run_task(cfg)
