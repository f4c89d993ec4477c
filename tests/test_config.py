"""Every config group composes; bad choices and values fail with a message naming the key."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from minillm.config import validate_config
from minillm.errors import MinillmError

from .conftest import CONF, ROOT


def group_choices(group: str) -> list[str]:
    """The choices of a config group, nested ones as folder/name (experiment=alpha_sweep/schedules)."""
    return sorted(
        p.relative_to(CONF / group).with_suffix("").as_posix() for p in (CONF / group).rglob("*.yaml")
    )


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
        if choice == "gguf":
            overrides.append(f"{group}.gguf=/tmp/some-model.gguf")
        cfg = compose(overrides)
        assert cfg.objective.name and cfg.data.template in ("short", "alpaca", "chat")
        if group in ("teacher", "student") and cfg[group].path is None and cfg[group].arch is None:
            assert choice == "none" or cfg[group].gguf  # a GGUF preset: converted on first use


def test_architecture_presets_fill_either_slot(compose):
    """Teacher architectures are teacher presets; `make assets` trains the shipped teacher's one in the
    student's place (student=tiny_llama_teacher_size) and the scaling study its other teachers (teacher@student
    in conf/arm/scaling_models/); the model is the same in either slot."""
    for size in ("", "_xs", "_s", "_l"):
        teacher = compose([f"teacher=tiny_llama{size}"]).teacher
        assert teacher.path is None and teacher.arch.model_type == "llama"
        if size:
            built = compose(["experiment=scaling_models", f"+arm=scaling_models/build_teacher{size}"]).student
            assert built.arch == teacher.arch and built.path is None and built.name == f"teacher{size}"
    student = compose(["student=tiny_llama_teacher_size"]).student
    assert student.pop("lora").r is None  # config.yaml's LoRA settings (off) are every student's
    assert student == compose(["teacher=tiny_llama"]).teacher
    shipped = json.loads((ROOT / "assets" / "embedded" / "teacher" / "config.json").read_text())
    arch = compose(["teacher=tiny_llama"]).teacher.arch
    assert {key: shipped[key] for key in arch} == arch  # the shipped teacher's architecture


def test_validation_names_the_key(compose):
    cfg = compose(["data.batch_size=0"])
    with pytest.raises(MinillmError, match=r"data\.batch_size=0: must be a positive integer"):
        validate_config(cfg)
    cfg = compose(["objective=forward_kld", "objective.kd_ratio=1.5"])
    with pytest.raises(MinillmError, match=r"objective\.kd_ratio=1\.5: must be in \[0\.0, 1\.0\]"):
        validate_config(cfg)
    cfg = compose(["scheduler._target_=transformers.get_linear_schedule_with_warmupp"])
    with pytest.raises(
        MinillmError, match=r"^scheduler\._target_=transformers\.get_linear_schedule_with_warmupp: cannot"
    ):
        validate_config(cfg)
    cfg = compose(["objective=sft", "objective.module._target_=minillm.training.supervised.NoSuchModule"])
    with pytest.raises(
        MinillmError,
        match=r"^objective\.module\._target_=minillm\.training\.supervised\.NoSuchModule: cannot",
    ):
        validate_config(cfg)


@pytest.mark.parametrize(
    "overrides, message",
    [
        # fit.teacher_dtype says fp32: a natural guess that Lightning refused only after the models loaded
        (
            ["trainer.precision=fp32"],
            r"^trainer\.precision='fp32': must be auto or one of Lightning's precisions: ",
        ),
        # Lightning swaps it for bf16-mixed on CPU, while the teacher's weights and evaluation followed fp16
        (
            ["trainer.precision=16-mixed"],
            r"^trainer\.precision=16-mixed on CPU: Lightning has no fp16 mixed ",
        ),
        (["trainer.precision=16"], r"^trainer\.precision=16 on CPU: "),
        (
            ["trainer.accelerator=auto", "trainer.precision=16-mixed"],
            r"^trainer\.precision=16-mixed on CPU: ",
        ),
    ],
)
def test_a_precision_lightning_would_refuse_or_replace_is_refused_in_one_line(
    compose, overrides, message, monkeypatch
):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # accelerator=auto: this machine's CPU
    with pytest.raises(MinillmError, match=message):
        validate_config(compose(overrides))
    for fine in ("32", "bf16-mixed", "auto", "32-true"):  # accepted as they are
        validate_config(compose([f"trainer.precision={fine}"]))


@pytest.mark.parametrize(
    "override, message",
    [
        # Lightning refused these only after the models had loaded (MisconfigurationException, or a
        # ZeroDivisionError at the first step), numpy the seed
        ("trainer.max_steps=-5", r"^trainer\.max_steps=-5: must be a number of steps, or -1 \(no limit\)"),
        (
            "trainer.max_epochs=-2",
            r"^trainer\.max_epochs=-2: must be a number of epochs, -1 \(no limit\) or null",
        ),
        (
            "trainer.val_check_interval=0",
            r"^trainer\.val_check_interval=0: must be a fraction of an epoch in",
        ),
        ("trainer.val_check_interval=1.5", r"^trainer\.val_check_interval=1\.5: must be a fraction"),
        ("seed=-1", r"^seed=-1: must be an integer in \[0, 2\*\*32\)"),
    ],
)
def test_out_of_range_trainer_values_and_seed_are_refused_before_any_model_loads(compose, override, message):
    with pytest.raises(MinillmError, match=message):
        validate_config(compose([override]))
    for fine in (
        "trainer.max_steps=-1",
        "trainer.max_epochs=null",
        "trainer.val_check_interval=0.25",
        "seed=7",
    ):
        validate_config(compose([fine]))


def test_a_gpu_trainer_without_a_gpu_is_refused_in_one_line(compose, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(MinillmError, match=r"^trainer\.accelerator=gpu: no CUDA device is available here"):
        validate_config(compose(["trainer=gpu"]))


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


@pytest.mark.slow  # the message is checked in process below; this is the command's exit 2 (make test-slow)
def test_data_path_without_data_jsonl_is_refused_before_training(tmp_path):
    """The user's file is never silently replaced by the bundled data: one line says to add data=jsonl."""
    mine = tmp_path / "mine.jsonl"
    mine.write_text('{"instruction": "hi", "response": \nnot json at all\n')
    run_dir = tmp_path / "run"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "minillm.run",
            "debug=smoke",
            "objective=sft",
            "logger=none",
            "eval.compare=false",
            f"data.path={mine}",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert not (run_dir / "results.json").exists(), "trained although data.path was not read"
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines() == [
        "error: data.path (set on the command line) is read only by data=jsonl, and data=bundled ignores it: "
        "add data=jsonl, or drop data.path"
    ]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["+data.path=/x.jsonl"],
            r"^data\.path \(set on the command line\) is read only by data=jsonl, and ",
        ),
        (
            ["data.valid_size=10"],
            r"^data\.valid_size .* read only by data=jsonl, and data=bundled ignores it",
        ),
        (
            ["objective=sft", "+objective.teacher_mix_alpha=0.5"],
            r"^objective\.teacher_mix_alpha .* read only by objective=reverse_kld or objective=onpolicy_rkl, and "
            r"objective=sft ignores",
        ),
        (
            ["objective=sft", "+arm=alpha_sweep/linear"],
            r"^objective\.teacher_mix_alpha \(set by arm=alpha_sweep/linear\) is read only by objective=reverse_kld",
        ),
        (
            [
                "experiment=ablation_stabilizers",
                "objective=seqkd",
                "+arm=ablation_stabilizers/no_single_step",
            ],
            r"^objective\.single_step \(set by arm=ablation_stabilizers/no_single_step\) is read only by objective=",
        ),
        (
            ["logger=csv", "logger.project=mine"],
            r"^logger\.project=mine is read only by logger=wandb, and this logger \(logger\.wandb=false\) ignores it: "
            r"add logger=wandb",
        ),
        (
            ["+trainer.accumulate_grad_batches=4"],
            r"^trainer\.accumulate_grad_batches: not a key of trainer \(its keys: _target_, .*\) \(set on the "
            r"command line\)$",
        ),
        (
            ["student=tiny_llama", "student.path=/models/x"],
            r"^student\.path=/models/x and student\.arch are both set: the path is loaded and student\.arch is",
        ),
        (["teacher=tiny_random", "teacher.path=/models/x"], r"^teacher\.path=/models/x and teacher\.arch"),
        (
            ["objective=sft", "teacher=none", "teacher.path=/models/x"],
            r"^teacher\.path is set while teacher=none \(no teacher\): use teacher=hf",
        ),
    ],
)
def test_a_key_the_chosen_config_ignores_is_refused(compose, overrides, message):
    """Refused by composition itself (the group choice's schema has no such key: minillm.cli makes Hydra's
    refusal the line) or, for a key added with + or a rule between keys, by validate_config."""
    assert re.match(message, refusal(compose, overrides)), refusal(compose, overrides)


def refusal(compose, overrides) -> str:
    """The one line a run with ``overrides`` stops with, whichever of composition and validate_config refuses."""
    from minillm.cli import hydra_error_line

    try:
        cfg = compose(overrides)
    except Exception as err:  # what Hydra refuses, as `python -m minillm.run` reports it
        return hydra_error_line(err)
    with pytest.raises(MinillmError) as refused:
        validate_config(cfg)
    return str(refused.value)


@pytest.mark.parametrize(
    "overrides",
    [
        ["data=jsonl", "data.path=/x.jsonl", "data.valid_size=10"],
        [
            "data=jsonl",
            "data.path=/x.jsonl",
            "debug=smoke",
        ],  # smoke's bundled sizes: a preset, not the user's
        ["data=jsonl", "data.path=/x.jsonl", "data.n_train=50"],  # jsonl's caps of each split
        ["trainer=gpu", "trainer.max_steps=3"],  # gpu builds on cpu's keys
        ["objective=seqkd", "objective.kd_ratio=0.5", "objective.chunk_size=64"],
        ["student=tiny_llama", "+student.arch.rope_theta=10000.0"],  # arch is passed whole to the model
        ["teacher=embedded", "teacher.path=/models/x"],
        ["experiment=alpha_sweep/schedules", "+arm=alpha_sweep/cosine", "logger=csv"],  # W&B tags: harmless
        ["experiment=objectives_compare", "objective=sft", "+arm=objectives_compare/equal_steps"],
        ["experiment=scaling", "objective=seqkd", "+arm=scaling/student_m"],
        ["experiment=scaling_models", "+arm=scaling_models/build_teacher_s"],  # a teacher@student preset
        ["experiment=scaling_models", "+arm=scaling_models/build_student_m"],  # override /student
    ],
)
def test_keys_the_chosen_config_reads_are_accepted(compose, overrides, monkeypatch):
    import torch

    monkeypatch.setattr(
        torch.cuda, "is_available", lambda: True
    )  # trainer=gpu's keys, whatever this machine has
    validate_config(compose(overrides))


@pytest.mark.parametrize(
    ("overrides", "warned"),
    [
        (["objective=reverse_kld", "objective.alpha_end=0.0"], "objective.alpha_end"),
        (["objective=reverse_kld", "objective.alpha_steps=50"], "objective.alpha_steps"),
        (["objective=reverse_kld", "objective.pt_kd_ratio=0.2"], "objective.pt_kd_ratio"),
        (["objective=reverse_kld", "data.pretrain.source=world"], "data.pretrain.source"),
        (["objective=reverse_kld", "objective.alpha_schedule=linear", "objective.alpha_end=0.0"], None),
        (["objective=reverse_kld", "objective.pt_coef=1.0", "objective.pt_kd_ratio=0.2"], None),
        (["experiment=alpha_sweep/schedules", "+arm=alpha_sweep/cosine", "logger=csv"], None),
        (["objective=sft", "fit.compile_updates=true"], "fit.compile_updates"),
        (["objective=gkd", "fit.compile_updates=true"], "fit.compile_updates"),
        (["objective=reverse_kld", "fit.compile_updates=true"], None),
        (["objective=onpolicy_rkl", "fit.compile_updates=true"], None),
        (
            ["objective=reverse_kld", "debug=smoke"],
            None,
        ),  # its preset's data.pretrain.max_chars: not the user's
        (["objective=sft", "debug=smoke", "data.pretrain.max_chars=100"], "data.pretrain.max_chars"),
        (
            ["objective=reverse_kld", "objective.compile_decode=true", "sampler.decode=compiled"],
            "objective.compile_decode",
        ),
        (["objective=reverse_kld", "objective.compile_decode=true"], None),
        # α = 0: the teacher scores the responses through its compiled model
        (["objective=onpolicy_rkl", "objective.compile_decode=true", "sampler.decode=compiled"], None),
        (["objective=sft", "teacher=none", "fit.teacher_dtype=bf16"], "fit.teacher_dtype"),
        (["objective=sft", "fit.teacher_dtype=bf16"], None),
        (["data=jsonl", f"data.path={ROOT}", "data.valid_size=3"], "data.valid_size"),  # a folder of splits
        (["data=jsonl", "data.path=/x.jsonl", "data.valid_size=3"], None),  # one file: the sizes cut it
    ],
)
def test_a_key_another_keys_value_makes_inert_is_named_in_a_warning(compose, caplog, overrides, warned):
    """A key the chosen config reads but that another key's value switches off (α's end under a constant
    schedule, L_PT's settings with pt_coef=0) is said, not silently ignored; a sweep may set it for its
    control too, so it is a warning, not an error."""
    with caplog.at_level("WARNING", logger="minillm.config"):
        validate_config(compose(overrides))
    inert = [r.getMessage() for r in caplog.records if "has no effect in this run" in r.getMessage()]
    if warned is None:
        assert inert == []
    else:
        assert len(inert) == 1 and inert[0].startswith(f"{warned} (set on the command line) has no effect")


def test_a_pretraining_file_without_source_file_is_refused(compose):
    """data.pretrain.path with the bundled corpus chosen would train L_PT on the bundled text, not the file."""
    cfg = compose(["objective=reverse_kld", "objective.pt_coef=1.0", "data.pretrain.path=/x.txt"])
    with pytest.raises(
        MinillmError, match=r"^data\.pretrain\.path \(set on the command line\) is read only with "
    ):
        validate_config(cfg)
    validate_config(
        compose(
            [
                "objective=reverse_kld",
                "objective.pt_coef=1.0",
                "data.pretrain.source=file",
                "data.pretrain.path=/x.txt",
            ]
        )
    )


@pytest.mark.parametrize(
    ("overrides", "old", "new"),
    [
        (["+objective.lr=1e-4"], "objective.lr", "optim.lr"),
        (["+objective.warmup_steps=5"], "objective.warmup_steps", "scheduler.num_warmup_steps"),
        (["+objective.monitor=val/loss"], "objective.monitor", "select.monitor"),
        (["+objective.monitor_mode=min"], "objective.monitor_mode", "select.mode"),
        (["+objective.val_check_interval=3"], "objective.val_check_interval", "trainer.val_check_interval"),
        (["+objective.log_every_n_steps=3"], "objective.log_every_n_steps", "trainer.log_every_n_steps"),
    ],
)
def test_a_key_that_moved_is_refused_with_its_new_home(compose, overrides, old, new):
    """objective.lr and the other keys an objective used to mirror into optim / scheduler / select / trainer
    have one home now; the old name (added with +, or by an arm or experiment file) is refused naming it."""
    with pytest.raises(MinillmError, match=rf"^{old} moved: use {new}$"):
        validate_config(compose(overrides))


@pytest.mark.parametrize(
    ("objective", "lr", "warmup", "monitor", "mode", "val_every", "log_every"),
    [
        ("reverse_kld", 3e-5, 20, "val/rougeL", "max", 10, 1),
        ("onpolicy_rkl", 3e-5, 20, "val/rougeL", "max", 100, 1),
        ("sft", 1e-3, 50, "val/loss", "min", 1.0, 10),
        ("distillm", 5e-4, 50, "val/loss", "min", 1.0, 10),
    ],
)
def test_an_objective_sets_its_values_in_the_groups_that_own_them(
    compose, objective, lr, warmup, monitor, mode, val_every, log_every
):
    """Each key lives in one group; an objective yaml sets its own value there, and a value set on the command
    line (or by an experiment or arm) wins over the objective's."""
    cfg = compose([f"objective={objective}"])
    got = (cfg.optim.lr, cfg.scheduler.num_warmup_steps, cfg.select.monitor, cfg.select.mode)
    assert got == (lr, warmup, monitor, mode)
    assert (cfg.trainer.val_check_interval, cfg.trainer.log_every_n_steps) == (val_every, log_every)
    assert type(cfg.trainer.val_check_interval) is type(val_every)  # steps (int) and epochs (float) differ
    assert "lr" not in cfg.objective and "monitor" not in cfg.objective
    mine = compose(
        [f"objective={objective}", "optim.lr=0.02", "trainer.val_check_interval=7", "select.mode=min"]
    )
    assert (mine.optim.lr, mine.trainer.val_check_interval, mine.select.mode) == (0.02, 7, "min")


def test_arms_set_the_one_home_of_a_key(compose):
    """smollm2_distill's MiniLLM arm sets optim.lr and trainer.val_check_interval, over reverse_kld's values."""
    cfg = compose(["experiment=smollm2_distill", "+arm=smollm2_distill/minillm"])
    assert (cfg.optim.lr, cfg.trainer.val_check_interval) == (5e-5, 2)
    cfg = compose(["experiment=objectives_compare", "objective=reverse_kld"])
    assert cfg.optim.lr == 1e-4  # conf/experiment_objective/objectives_compare/reverse_kld.yaml
    assert compose(["experiment=objectives_compare", "objective=distillm"]).optim.lr == 5e-4  # its own


def test_a_typed_node_refuses_a_key_it_does_not_have(compose):
    """fit, resume, select, tokenizer and eval are typed (minillm/schema.py): Hydra's + opens the node, so a
    key added with it is refused by validate_config, in the words composition uses."""
    with pytest.raises(MinillmError, match=r"^fit\.num_thread: not a key of fit \(its keys: num_threads, "):
        validate_config(compose(["+fit.num_thread=2"]))
    with pytest.raises(MinillmError, match=r"^eval\.callbacks\.binz: not a key of eval\.callbacks"):
        validate_config(compose(["+eval.callbacks.binz=3"]))
    validate_config(compose(["fit.num_threads=2", "eval.callbacks.bins=5", "tokenizer.vocab_size=512"]))


@pytest.mark.parametrize(
    ("content", "line"),
    [
        (
            "fit:\n  num_thread: 1\n",
            r"^fit\.num_thread: not a key of fit \(its keys: .*\) \(set by arm=bad\)$",
        ),
        (
            "eval:\n  batch_size: lots\n",
            r"^eval\.batch_size=lots: must be of type integer \(set by arm=bad; minillm/schema/\)$",
        ),
        ("select:\n  save_hf: maybe\n", r"^select\.save_hf=maybe: must be of type boolean \(set by arm=bad"),
    ],
)
def test_composition_refuses_an_arm_file_that_breaks_a_typed_node(tmp_path, content, line):
    """An experiment or arm file is merged into the typed nodes by Hydra itself: a key they lack or a value of
    the wrong type fails composition, and minillm.cli makes that one line naming the key and the file."""
    import shutil

    from hydra import compose, initialize_config_dir

    from minillm.cli import hydra_error_line

    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "arm" / "bad.yaml").write_text("# @package _global_\narm_name: bad\n" + content)
    with pytest.raises(Exception) as refused, initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        compose(config_name="config", overrides=["+arm=bad"])
    assert re.match(line, hydra_error_line(refused.value)), hydra_error_line(refused.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("objective.variant=trl", r"^objective\.variant='trl'; choose one of \['code', 'paper'\]$"),
        (
            "objective.alpha_schedule=step",
            r"^objective\.alpha_schedule='step'; choose one of \['constant', 'cosine'",
        ),
    ],
)
def test_the_rounds_choices_are_refused_before_any_model_loads(compose, override, message):
    """variant and alpha_schedule have one validator (training.options.round_choice), run by validate_config."""
    with pytest.raises(MinillmError, match=message):
        validate_config(compose(["objective=reverse_kld", override]))
