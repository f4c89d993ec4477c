"""The config schema (minillm/schema/): each shipped choice names its own schema, composition refuses what a
schema lacks, the rules of each field fire, and runs saved before the schema still resume."""

from __future__ import annotations

import re

import pytest
from omegaconf import OmegaConf

from minillm.errors import MinillmError
from minillm.schema import CHOICES, NODES, by_class_name
from minillm.schema.check import check_schema, default_of, unknown_key_line

from .conftest import CONF


@pytest.mark.parametrize("group", sorted(CHOICES))
def test_each_shipped_choice_names_its_own_schema(group):
    """conf/<group>/<choice>.yaml lists schema/<group>/<choice> (directly or as an override of the one it builds
    on), and every registered schema has its yaml: a key added to a schema is read by exactly that choice."""
    shipped = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
    assert shipped == sorted(CHOICES[group])
    for choice in shipped:
        text = (CONF / group / f"{choice}.yaml").read_text()
        assert re.search(rf"^  - (override )?/schema/{group}@\w+: {choice}$", text, re.M), choice


def test_schema_class_names_are_unique():
    """A composition error names the schema by its class: the name must lead back to one schema."""
    classes = [*NODES.values(), *(c for choices in CHOICES.values() for c in choices.values())]
    names = [c.__name__ for c in classes]
    assert len(names) == len(set(names))
    assert all(by_class_name(c.__name__) is c for c in classes)


def test_an_objective_yaml_sets_no_objective_key():
    """The schema is the one home of an objective's keys: its yaml sets only the other groups' values."""
    for path in sorted((CONF / "objective").glob("*.yaml")):
        assert not re.search(r"^objective:", path.read_text(), re.M), path.name


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (["data.batch_size=0"], r"^data\.batch_size=0: must be a positive integer$"),
        (["data.template=chatml"], r"^data\.template='chatml'; choose one of \['alpaca', 'chat', 'short'\]$"),
        (["data.pretrain.source=web"], r"^data\.pretrain\.source='web'; choose one of \["),
        (
            ["objective.teacher_mix_alpha=0.7", "objective.alpha_end=1.2"],
            r"^objective\.alpha_end=1\.2: must be in",
        ),
        (["objective=taid", "objective.t_momentum=1"], r"^objective\.t_momentum=1\.0: must be in \[0, 1\)$"),
        (["objective=distillm2", "objective.normalize=mean"], r"^objective\.normalize='mean'; choose one of"),
        (["objective.clip_eps=0"], r"^objective\.clip_eps=0\.0: must be > 0$"),
        (
            ["objective.teacher_cache_mb=-3"],
            r"^objective\.teacher_cache_mb=-3\.0: must be a size in MiB >= 0",
        ),
        (["trainer.max_time=5min"], r"^trainer\.max_time='5min': give days:hours:minutes:seconds"),
        (["fit.teacher_dtype=int8"], r"^fit\.teacher_dtype='int8'; choose one of"),
        (["fit.stop_at_step=-1"], r"^fit\.stop_at_step=-1: must be a step number >= 0 or null$"),
        (["eval.seeds=[]"], r"^eval\.seeds=\[\]: give at least one sampling seed$"),
        (
            ["student.lora.r=8", "student.lora.target_modules=q_proj"],
            r"^student\.lora\.target_modules='q_proj'",
        ),
        (["student.keep_every=1"], r"^student\.keep_every=1: must be an integer >= 2"),
        (
            ["data=jsonl", "data.path=/x.jsonl", "data.n_train=0"],
            r"^data\.n_train=0: must be a positive integer$",
        ),
    ],
)
def test_each_rule_names_the_key(compose, overrides, line):
    """The ranges and choices declared beside each field (minillm/schema/rules.py), at uneven values."""
    with pytest.raises(MinillmError) as refused:
        check_schema(compose(overrides))
    assert re.match(line, str(refused.value)), str(refused.value)


def test_the_defaults_pass_every_rule(compose):
    for group, choices in CHOICES.items():
        for choice in choices:
            extra = ["data.path=/x.jsonl"] if (group, choice) == ("data", "jsonl") else []
            check_schema(compose([f"{group}={choice}", *extra]))


def test_a_key_added_with_plus_is_refused_naming_its_readers(compose):
    """Hydra's + opens a typed node: check_schema refuses what composition let through, in its words."""
    with pytest.raises(
        MinillmError,
        match=r"^objective\.t_start \(set on the command line\) is read only by "
        r"objective=taid, and objective=gkd ignores it: add objective=taid, or drop",
    ):
        check_schema(compose(["objective=gkd", "+objective.t_start=0.3"]))
    with pytest.raises(MinillmError, match=r"^data\.pretrain\.blocks: not a key of data\.pretrain"):
        check_schema(compose(["+data.pretrain.blocks=3"]))


def test_a_config_without_hydras_record_is_checked_by_its_objective_name(compose):
    """A config built by hand (a test's, a tool's) finds its choice's schema by objective.name and
    data.records."""
    cfg = OmegaConf.create(OmegaConf.to_container(compose(["objective=distillm"])))
    cfg.output_dir = "/elsewhere"  # not the config Hydra last composed
    cfg.objective.loss_eps = -0.5
    with pytest.raises(MinillmError, match=r"^objective\.loss_eps=-0\.5: must be >= 0$"):
        check_schema(cfg)


def test_unknown_key_line_orders_the_readers_base_first():
    from minillm.schema.objective import SftObjective

    line = unknown_key_line("objective.teacher_mix_alpha", SftObjective, "by arm=x")
    assert line.startswith(
        "objective.teacher_mix_alpha (set by arm=x) is read only by objective=reverse_kld or "
        "objective=onpolicy_rkl, and objective=sft ignores it"
    )


def test_default_of_is_the_choices_own(compose):
    """data=jsonl's pre-training blocks are 512 tokens, data=bundled's 128: a nested node's default is the
    choice's."""
    assert default_of(compose(["data=jsonl", "data.path=/x"]), "data.pretrain.block_size") == 512
    assert default_of(compose([]), "data.pretrain.block_size") == 128
    assert default_of(compose(["objective=onpolicy_rkl"]), "objective.gamma") == 0.0


def test_a_config_saved_before_the_schema_compares_equal(compose, tmp_path):
    """A run saved before every group had a schema lacks the keys added since and held two keys as ints:
    upgrade_config brings it to today's keys, so its checkpoint resumes without a difference."""
    from minillm.resume.config_diff import config_differences
    from minillm.resume.saved_config import upgrade_config

    for overrides in ([], ["data=jsonl", "data.path=/x.jsonl"]):
        now = OmegaConf.to_container(compose(overrides))
        old = OmegaConf.to_container(compose(overrides))
        for model in ("teacher", "student"):
            del old[model]["gguf"], old[model]["keep_every"]
        old["student"]["lora"]["alpha"] = 16
        old["objective"]["teacher_cache_mb"] = 2048
        if overrides:
            for key in ("n_train", "n_valid", "n_test"):
                del old["data"][key]
        else:
            old["data"].update(path=None, valid_size=None, test_size=None)
        assert config_differences(old, now) != []
        assert config_differences(upgrade_config(old), now) == []


def test_jsonl_caps_each_split(tmp_path):
    """data.n_train / n_valid / n_test cut data=jsonl's splits to their first records (debug=smoke sets
    them)."""
    import json

    from minillm.data.datamodule import jsonl_records

    rows = [{"instruction": f"q{i}", "response": f"a{i}"} for i in range(40)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    node = dict(path=str(path), valid_size=10, test_size=7, seed=3, n_train=5, n_valid=None, n_test=2)
    full = jsonl_records(OmegaConf.create({**node, "n_train": None, "n_test": None}), tmp_path)
    capped = jsonl_records(OmegaConf.create(node), tmp_path)
    assert capped["train"] == full["train"][:5] and len(full["train"]) == 23
    assert capped["valid"] == full["valid"] and capped["test"] == full["test"][:2]


def test_a_value_the_choice_needs_and_nobody_set_is_one_line(compose):
    """data=jsonl without data.path (the schema's ``???``) stops in one line naming the key."""
    with pytest.raises(MinillmError, match=r"^data\.path: not set, and this run needs it: add data\.path=…$"):
        check_schema(compose(["data=jsonl"]))


@pytest.mark.parametrize(
    ("override", "line"),
    [
        (
            "data.batch_size=null",
            r"^data\.batch_size=null: data\.batch_size cannot be null \(set on the command",
        ),
        ("eval.splits=test", r"^eval\.splits: must be a list, e\.g\. eval\.splits=\[a,b\]"),
        (
            "student.lora=8",
            r"^student\.lora: a node of keys \(LoraConfig\), not one value: set student\.lora\.KEY",
        ),
    ],
)
def test_composition_type_errors_are_one_line(compose, override, line):
    from minillm.cli import hydra_error_line

    with pytest.raises(Exception) as refused:
        compose([override])
    assert re.match(line, hydra_error_line(refused.value)), hydra_error_line(refused.value)


def test_lightnings_other_forms_of_a_limit_are_accepted(compose):
    """trainer.max_epochs=null and trainer.max_time as a mapping of timedelta's keys, as Lightning takes them."""
    check_schema(compose(["trainer.max_epochs=null", "trainer.max_time={minutes:5}"]))


def test_an_int_saved_for_a_key_now_typed_float_is_the_same_value():
    """A run saved with objective.pt_coef=1 (an int before the schema) resumes under today's 1.0; 1 step and
    1.0 of an epoch still differ for trainer.val_check_interval."""
    from minillm.resume.config_diff import config_differences

    saved = {"objective": {"pt_coef": 1, "kd_ratio": 0}, "trainer": {"val_check_interval": 1}}
    now = {"objective": {"pt_coef": 1.0, "kd_ratio": 0.0}, "trainer": {"val_check_interval": 1.0}}
    assert config_differences(saved, now) == [("trainer.val_check_interval", 1, 1.0)]
