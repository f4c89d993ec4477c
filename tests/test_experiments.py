"""The study recipes (conf/experiment/, conf/arm/) and the exact toy problems."""

from __future__ import annotations

import itertools
import json
import math
import re
import shlex

import pytest
import torch
from omegaconf import OmegaConf

from minillm.config import validate_config
from minillm.run import run_task, train
from minillm.toys.gmm import run_gmm
from minillm.toys.sequences import ChainStudent, Toy, train_student

from .conftest import CONF, ROOT
from .test_smoke import smoke_overrides

# Every recipe, nested ones too (alpha_sweep/schedules).
STUDIES = sorted(
    p.relative_to(CONF / "experiment").with_suffix("").as_posix()
    for p in (CONF / "experiment").rglob("*.yaml")
)

# What each study's jobs train, as the committed results ran them: run name (training seed 0) -> the values of
# the keys its arms and sweeps set. Composed from the configs before the arms moved into study folders and the
# α arms became a sweep over objective.teacher_mix_alpha; only names changed (alpha01 -> alpha0.1,
# alpha_linear -> alpha0.5_linear; the scaling_models arms are named build_* as their folders).
ALPHA_KEYS = (
    "objective.teacher_mix_alpha",
    "objective.alpha_schedule",
    "objective.alpha_end",
    "objective.alpha_steps",
)
STUDY_KEYS = {
    "ablation_stabilizers": (
        "objective.variant",
        "objective.teacher_mix_alpha",
        "objective.single_step",
        "objective.length_norm",
    ),
    "alpha_sweep": ALPHA_KEYS,
    "alpha_sweep/schedules": ALPHA_KEYS,
    "objectives_compare": ("objective.name", "optim.lr", "trainer.max_time", "trainer.max_steps"),
    "methods_compare": ("objective.name", "optim.lr", "trainer.max_time", "trainer.max_steps"),
    "scaling": ("objective.name", "optim.lr", "teacher.path", "student.path"),
    "scaling_models": (
        "student.name",
        "student.arch.hidden_size",
        "student.arch.num_hidden_layers",
        "trainer.max_epochs",
        "optim.lr",
    ),
    "smollm2_distill": (
        "objective.name",
        "optim.lr",
        "trainer.max_time",
        "trainer.max_steps",
        "teacher.path",
        "student.path",
    ),
    "precision": ("objective.name", "trainer.precision", "trainer.max_steps"),
    "precision_smollm2": ("objective.name", "trainer.precision", "trainer.max_steps", "student.name"),
    "toy_gmm": ("task._target_",),
    "toy_sequences": ("task._target_",),
    "validity_drop": (
        "objective.name",
        "objective.teacher_mix_alpha",
        "objective.alpha_schedule",
        "objective.variant",
        "objective.single_step",
        "objective.ppo_epochs",
        "optim.lr",
        "trainer.val_check_interval",
        "select.monitor",
    ),
}
BUILT = "multirun/scaling_models/build_{}/best_model"
TEACHER, INIT = "assets/embedded/teacher", "assets/embedded/student_init"
SMOLLM2 = "multirun/smollm2_distill/{}/best_model"
STUDY_RUNS = {
    "methods_compare": {
        "distillm-equal_steps-s0": ("distillm", 5.0e-4, None, 100),
        "distillm-equal_time-s0": ("distillm", 5.0e-4, "00:00:00:45", -1),
        "distillm2-equal_steps-s0": ("distillm2", 5.0e-4, None, 100),
        "distillm2-equal_time-s0": ("distillm2", 5.0e-4, "00:00:00:45", -1),
        "gkd-equal_steps-s0": ("gkd", 5.0e-4, None, 100),
        "gkd-equal_time-s0": ("gkd", 5.0e-4, "00:00:00:45", -1),
        "kd-equal_steps-s0": ("forward_kld", 5.0e-4, None, 100),
        "kd-equal_time-s0": ("forward_kld", 5.0e-4, "00:00:00:45", -1),
        "minillm-equal_steps-s0": ("reverse_kld", 3.0e-5, None, 100),
        "minillm-equal_time-s0": ("reverse_kld", 3.0e-5, "00:00:00:45", -1),
        "onpolicy_rkl-equal_steps-s0": ("onpolicy_rkl", 3.0e-5, None, 100),
        "onpolicy_rkl-equal_time-s0": ("onpolicy_rkl", 3.0e-5, "00:00:00:45", -1),
        "seqkd-equal_steps-s0": ("seqkd", 5.0e-4, None, 100),
        "seqkd-equal_time-s0": ("seqkd", 5.0e-4, "00:00:00:45", -1),
        "sft-equal_steps-s0": ("sft", 5.0e-4, None, 100),
        "sft-equal_time-s0": ("sft", 5.0e-4, "00:00:00:45", -1),
        "taid-equal_steps-s0": ("taid", 5.0e-4, None, 100),
        "taid-equal_time-s0": ("taid", 5.0e-4, "00:00:00:45", -1),
        "token_kd-equal_steps-s0": ("token_kd", 5.0e-4, None, 100),
        "token_kd-equal_time-s0": ("token_kd", 5.0e-4, "00:00:00:45", -1),
    },
    "ablation_stabilizers": {
        "full-s0": ("code", 0.2, True, None),
        "no_length_norm-s0": ("code", 0.2, True, "none"),
        "no_teacher_mix-s0": ("code", 0.0, True, None),
        "no_single_step-s0": ("code", 0.2, False, None),
        "paper-s0": ("paper", 0.2, True, None),
    },
    "alpha_sweep": {
        "alpha0-s0": (0, "constant", None, None),
        "alpha0.1-s0": (0.1, "constant", None, None),
        "alpha0.2-s0": (0.2, "constant", None, None),
        "alpha0.3-s0": (0.3, "constant", None, None),
        "alpha0.5-s0": (0.5, "constant", None, None),
    },
    "alpha_sweep/schedules": {
        "alpha0.5_linear-s0": (0.5, "linear", 0.0, 200),
        "alpha0.5_cosine-s0": (0.5, "cosine", 0.0, 200),
    },
    "objectives_compare": {
        f"{objective}-{budget}-s0": (objective, lr, *limits)
        for objective, lr in (("sft", 5e-4), ("forward_kld", 5e-4), ("seqkd", 5e-4), ("reverse_kld", 1e-4))
        for budget, limits in (("equal_time", ("00:00:02:00", -1)), ("equal_steps", (None, 300)))
    },
    "scaling": {
        f"{arm}-{objective}-s0": (objective, lr, teacher, student)
        for arm, teacher, student in (
            ("teacher_xs", BUILT.format("teacher_xs"), INIT),
            ("teacher_s", BUILT.format("teacher_s"), INIT),
            ("embedded", TEACHER, INIT),
            ("teacher_l", BUILT.format("teacher_l"), INIT),
            ("student_m", TEACHER, BUILT.format("student_m")),
            ("student_l", TEACHER, BUILT.format("student_l")),
        )
        for objective, lr in (("reverse_kld", 1e-4), ("seqkd", 1e-3))
    },
    "scaling_models": {  # run name = the folder experiment=scaling loads the model from
        "build_teacher_xs": ("teacher_xs", 96, 2, 16, 2e-3),
        "build_teacher_s": ("teacher_s", 128, 3, 16, 2e-3),
        "build_teacher_l": ("teacher_l", 256, 6, 16, 2e-3),
        "build_student_m": ("student_m", 48, 2, 30, 3e-3),
        "build_student_l": ("student_l", 96, 3, 30, 3e-3),
    },
    "smollm2_distill": {
        **{
            f"{arm}-{budget}-s0": (
                objective,
                lr,
                *limits,
                SMOLLM2.format("teacher_sft"),
                SMOLLM2.format("student_init"),
            )
            for arm, objective, lr in (
                ("sft", "sft", 1e-4),
                ("kd", "forward_kld", 1e-4),
                ("seqkd", "seqkd", 1e-4),
                ("minillm", "reverse_kld", 5e-5),
                # issue 16's methods on the same pair (a sweep of their own, seed 0)
                ("onpolicy_rkl", "onpolicy_rkl", 5e-5),
                ("gkd", "gkd", 1e-4),
                ("distillm", "distillm", 1e-4),
                ("taid", "taid", 1e-4),
                ("distillm2", "distillm2", 1e-4),
            )
            for budget, limits in (("equal_time", ("00:00:03:00", -1)), ("equal_steps", (None, 16)))
        },
        # stage 1, outside the sweep: the teacher SFT-tuned (in the student's place), then the student init
        "teacher_sft": ("sft", 1e-4, None, 100, None, None),
        "student_init": ("sft", 3e-4, None, 300, SMOLLM2.format("teacher_sft"), None),
    },
    "precision": {
        "bf16-s0": ("reverse_kld", "bf16-mixed", 300),
        "fp32-s0": ("reverse_kld", "32-true", 300),
    },
    "precision_smollm2": {
        "smollm2-bf16-s0": ("sft", "bf16-mixed", 100, "smollm2-135m-pruned10"),
        "smollm2-fp32-s0": ("sft", "32-true", 100, "smollm2-135m-pruned10"),
    },
    "toy_gmm": {"toy_gmm-s0": ("minillm.toys.gmm_task",)},
    "toy_sequences": {"toy_sequences-s0": ("minillm.toys.sequences_task",)},
    "validity_drop": {
        "full-s0": ("reverse_kld", 0.2, "constant", "code", True, 4, 1e-4, 4, "val/rougeL"),
        "alpha0-s0": ("reverse_kld", 0.0, "constant", "code", True, 4, 1e-4, 4, "val/rougeL"),
        "alpha_decay-s0": ("reverse_kld", 0.2, "linear", "code", True, 4, 1e-4, 4, "val/rougeL"),
        "paper-s0": ("reverse_kld", 0.2, "constant", "paper", True, 4, 1e-4, 4, "val/rougeL"),
        "no_single_step-s0": ("reverse_kld", 0.2, "constant", "code", False, 4, 1e-4, 4, "val/rougeL"),
        "lr3e-5-s0": ("reverse_kld", 0.2, "constant", "code", True, 4, 3e-5, 4, "val/rougeL"),
        "ppo1-s0": ("reverse_kld", 0.2, "constant", "code", True, 1, 1e-4, 16, "val/rougeL"),
        "select_valid-s0": ("reverse_kld", 0.2, "constant", "code", True, 4, 1e-4, 4, "val/valid_rate"),
        # the control, outside the sweep: objective=sft +arm=validity_drop/sft
        "sft-s0": ("sft", None, None, None, None, None, 5e-4, 0.2, "val/rougeL"),
    },
}
# Jobs a study runs beside its sweep (its README's commands).
CONTROLS = {
    "validity_drop": [["objective=sft", "+arm=validity_drop/sft"]],
    "smollm2_distill": [
        ["objective=sft", "+arm=smollm2_distill/teacher_sft"],
        ["objective=sft", "+arm=smollm2_distill/student_init"],
        [
            "seed=0",
            "+arm="
            + ",".join(
                f"smollm2_distill/{a}" for a in ("onpolicy_rkl", "gkd", "distillm", "taid", "distillm2")
            ),
        ],
    ],
}
SEEDS = {  # the others sweep seed=0,1,2
    "scaling_models": set(),
    "toy_gmm": set(),
    "toy_sequences": set(),
    "smollm2_distill": {"seed=0", "seed=1"},
}


def multirun_jobs(args: list[str]) -> list[list[str]]:
    """The jobs of `python -m minillm.run -m ARGS`, each as its list of overrides: the product Hydra's basic
    sweeper takes of the recipe's hydra.sweeper.params and the command line's overrides (a key in both: the
    command line's values). ``hydra.*`` overrides change the recipe (hydra.sweeper.params.seed=0), not a job."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    fixed = [a for a in args if not parser.parse_override(a).is_sweep_override()]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=fixed, return_hydra_config=True)
    params = [f"{key}={values}" for key, values in (cfg.hydra.sweeper.params or {}).items()]
    task = [a for a in args if not a.startswith("hydra.")]
    [jobs] = BasicSweeper.split_arguments(parser.parse_overrides([*params, *task]), None)
    return jobs


def distinct_up_to_seed(jobs: list[list[str]]) -> list[list[str]]:
    """One job per combination of everything but the training seed (the seed changes nothing else)."""
    first = {}
    for job in jobs:
        first.setdefault(tuple(o for o in job if not o.startswith("seed=")), job)
    return list(first.values())


def values(cfg, keys) -> tuple:
    """The values of dotted keys, paths inside the checkout relative to it."""
    found = (OmegaConf.select(cfg, key) for key in keys)
    return tuple(v.removeprefix(f"{ROOT}/") if isinstance(v, str) else v for v in found)


def without_seed(run_name: str) -> str:
    return run_name.rsplit("-s", 1)[0] if "-s" in run_name else run_name


def test_every_recipe_has_its_expected_runs():
    assert sorted(STUDY_RUNS) == sorted(STUDY_KEYS) == STUDIES


@pytest.mark.parametrize(
    "study",
    # the real-model study's many jobs: make test-slow
    [pytest.param(s, marks=pytest.mark.slow) if s == "smollm2_distill" else s for s in STUDIES],
)
def test_every_job_of_a_study_composes_and_trains_what_it_did(compose, study):
    """Each job of the recipe's sweep (and its controls) composes, passes validation, and sets what the
    committed results ran with (STUDY_RUNS), for each training seed the recipe sweeps."""
    jobs = multirun_jobs([f"experiment={study}"])
    sweep = len(jobs)
    for control in CONTROLS.get(study, []):
        jobs += multirun_jobs([f"experiment={study}", *control])
    found = {}
    for job in distinct_up_to_seed(jobs):
        cfg = compose(job)
        validate_config(cfg)
        assert cfg.experiment_name == study.split("/")[0]  # alpha_sweep/schedules: into alpha_sweep's folder
        found[cfg.run_name] = values(cfg, STUDY_KEYS[study])
    assert found == STUDY_RUNS[study]
    assert {o for job in jobs for o in job if o.startswith("seed=")} == SEEDS.get(
        study, {"seed=0", "seed=1", "seed=2"}
    )
    assert sweep == len(distinct_up_to_seed(jobs[:sweep])) * max(1, len(SEEDS.get(study, range(3))))


def test_each_arm_is_in_its_studys_folder_and_an_arm_name_names_one_change():
    """conf/arm/<study>/NAME.yaml, run by that study; within one experiment (its W&B group and multirun
    folder) two arms that set the same arm_name set the same keys to the same values, so a run name or a W&B
    filter on arm_name never means two different things there. Across experiments a name may recur with
    another meaning (methods_compare's sft and validity_drop's sft are both the continued-SFT control, with
    their study's own budget and selection)."""
    arms = {
        p.relative_to(CONF / "arm").with_suffix("").as_posix(): OmegaConf.to_container(OmegaConf.load(p))
        for p in sorted((CONF / "arm").rglob("*.yaml"))
    }
    run = {
        o.partition("=")[2]
        for study in STUDIES
        for args in ([], *CONTROLS.get(study, []))
        for job in multirun_jobs([f"experiment={study}", *args])
        for o in job
        if o.startswith("+arm=")
    }
    assert sorted(run) == sorted(arms), "an arm that no study runs, or a study's arm that is missing"
    by_name: dict[str, dict[str, str]] = {}
    for arm, content in arms.items():
        assert arm.partition("/")[0] in STUDIES, f"conf/arm/{arm}.yaml: not in a study's folder"
        study = OmegaConf.load(CONF / "experiment" / f"{arm.partition('/')[0]}.yaml")
        experiment = study.get("experiment_name", arm.partition("/")[0])
        by_name.setdefault((experiment, content.pop("arm_name")), {})[arm] = json.dumps(
            content, sort_keys=True
        )
    for name, changes in by_name.items():
        assert len(set(changes.values())) == 1, f"arm_name {name} is set by {sorted(changes)}, which differ"


@pytest.mark.parametrize("study", STUDIES)
def test_sweep_dir_resolves_before_hydra_runtime_exists(study):
    """Hydra's sweeper reads hydra.sweep.dir before the runtime (``${hydra:runtime.cwd}``) is set."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={study}"], return_hydra_config=True)
    HydraConfig.instance().cfg = None  # as in the sweeper: no job has started
    assert str(cfg.hydra.sweep.dir)  # raises InterpolationResolutionError on a runtime-only interpolation


def readme_commands() -> list:
    """Every `python -m minillm.run` command of the committed results' READMEs, as written there."""
    found = []
    for readme in sorted((ROOT / "experiments" / "results").glob("*/README.md")):
        for line in readme.read_text().replace("\\\n", " ").splitlines():
            if line.startswith("python -m minillm.run "):
                args = shlex.split(line, comments=True)[3:]
                found.append(pytest.param(args, id=f"{readme.parent.name}-{len(found)}"))
    return found


@pytest.mark.parametrize("args", readme_commands())
def test_the_committed_study_commands_still_run_the_same_jobs(compose, args):
    """Each job of each README command composes and validates; a study's jobs are runs of its recipe and set
    what STUDY_RUNS says, but for the keys the command sets itself (trainer.max_time=...)."""
    jobs = multirun_jobs([a for a in args if a != "-m"]) if "-m" in args else [args]
    own = {a.partition("=")[0].lstrip("+~") for a in args}
    for job in distinct_up_to_seed(jobs):
        cfg = compose([o for o in job if not o.startswith("hydra.")])
        validate_config(cfg)
        studies = [s for s in STUDIES if s.split("/")[0] == cfg.experiment_name]
        if not studies:
            continue  # a run of its own (teacher_gap's control)
        expected = {
            without_seed(name): dict(zip(STUDY_KEYS[s], v, strict=True))
            for s in studies
            for name, v in STUDY_RUNS[s].items()
        }
        assert without_seed(cfg.run_name) in expected
        want = {k: v for k, v in expected[without_seed(cfg.run_name)].items() if k not in own}
        assert dict(zip(want, values(cfg, want), strict=True)) == want


def readme_eval_commands() -> list:
    """Every `python -m minillm.evaluate` / `minillm.diagnose` command of the committed results' READMEs,
    with its placeholders (`<run>`, `<K>`) filled in."""
    found = []
    for readme in sorted((ROOT / "experiments" / "results").glob("*/README.md")):
        for line in readme.read_text().replace("\\\n", " ").splitlines():
            for program in ("evaluate", "diagnose"):
                if line.startswith(f"python -m minillm.{program} "):
                    args = [re.sub(r"<[^>]*>", "0", a) for a in shlex.split(line, comments=True)[3:]]
                    found.append(
                        pytest.param(program, args, id=f"{readme.parent.name}-{program}-{len(found)}")
                    )
    return found


@pytest.mark.parametrize(("program", "args"), readme_eval_commands())
def test_the_committed_evaluate_and_diagnose_commands_still_compose(compose, program, args):
    """Each such command composes with its program's config (a renamed key fails here) and passes the checks
    the program runs before it loads a model."""
    from minillm.diagnose import validate_diagnose_config
    from minillm.evaluation.evaluate_config import validate_evaluate_config

    cfg = compose(args, config_name=program)
    validate_config(cfg)
    (validate_evaluate_config if program == "evaluate" else validate_diagnose_config)(cfg)


def logged_rows(run_dir) -> list[dict[str, float]]:
    """The run's CSV log: one dict per row, empty cells dropped, every value a float."""
    import csv

    with open(run_dir / "csv" / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def per_step(rows, key: str) -> list[float]:
    return [r[key] for r in sorted(rows, key=lambda r: r["step"]) if key in r]


def check_paper_arm(cfg, results, rows) -> None:
    # variant=paper: unwhitened advantages (the code variant whitens them to mean 0 on each minibatch,
    # measured 5e-9 for the full arm; the paper arm measured -0.054)
    # one round of 4 rollouts, 3 of its 4 updates within max_steps=3: one round logged
    assert cfg.objective.variant == "paper"
    assert len(per_step(rows, "train/loss")) == 1
    assert all(abs(a) > 1e-3 for a in per_step(rows, "train/advantage_mean"))
    assert per_step(rows, "rollout/alpha") == pytest.approx([0.2])


def check_alpha_linear_arm(cfg, results, rows) -> None:
    # one update per round: α of rounds 0, 1, 2 from 0.5 down to 0 over alpha_steps = 200 optimizer steps
    assert cfg.objective.alpha_steps == 200
    assert len(per_step(rows, "train/loss")) == 3
    assert per_step(rows, "rollout/alpha") == pytest.approx([0.5, 0.4975, 0.495], abs=1e-7)


def check_equal_steps_arm(cfg, results, rows) -> None:
    # equal steps, not equal time: max_time off, the step budget honoured; forward KD at the study's lr
    assert cfg.trainer.max_time is None and results["global_step"] == 3
    assert per_step(rows, "train/lr") == pytest.approx([5e-4] * 3)
    assert len(per_step(rows, "train/kd_kl")) == 3


@pytest.mark.parametrize(
    "study, arm, extra, name, check",
    [
        ("ablation_stabilizers", "ablation_stabilizers/paper", [], "paper-s0", check_paper_arm),
        (
            "alpha_sweep/schedules",
            "alpha_sweep/linear",
            ["objective.ppo_epochs=1"],
            "alpha0.5_linear-s0",
            check_alpha_linear_arm,
        ),
        # the arm's 300 steps cut to smoke size on the command line, as a user would for a quick look
        (
            "objectives_compare",
            "objectives_compare/equal_steps",
            ["objective=forward_kld", "trainer.max_steps=3"],
            "forward_kld-equal_steps-s0",
            check_equal_steps_arm,
        ),
    ],
)
def test_a_study_arm_runs_end_to_end_in_smoke_mode(compose, tmp_path, study, arm, extra, name, check):
    """Each arm runs, does what it claims (seen in what the run logged), and reports finite metrics
    that agree between results.json, the evaluation and the CSV log."""
    cfg = compose(smoke_overrides(tmp_path, f"experiment={study}", f"+arm={arm}", "logger=csv", *extra))
    results = train(cfg)
    assert results["config"]["run_name"] == name
    rows = logged_rows(tmp_path / "run")
    assert all(math.isfinite(v) for row in rows for v in row.values())
    assert per_step(rows, "test/rougeL") == [results["test/rougeL"]]
    assert results["test/rougeL"] == results["eval"]["trained student"]["test"]["rougeL"]
    check(cfg, results, rows)


def test_scaling_builds_its_models_then_distils_with_them(compose, tmp_path):
    models = tmp_path / "scaling_models"
    build = compose(
        smoke_overrides(
            tmp_path,
            "experiment=scaling_models",
            "+arm=scaling_models/build_teacher_s",
            f"scaling_models={models}",
            "logger=csv",
            "tokenizer.path=null",
            "tokenizer.vocab_size=400",
        ),
        run_dir=models / "build_teacher_s",
    )
    train(build)
    assert (models / "build_teacher_s" / "best_model" / "config.json").is_file()
    cfg = compose(
        smoke_overrides(
            tmp_path,
            "experiment=scaling",
            "+arm=scaling/teacher_s",
            "objective=reverse_kld",
            f"scaling_models={models}",
            "student=tiny_llama",
            "logger=csv",
            "eval.compare=false",
            f"tokenizer.path={models / 'build_teacher_s' / 'best_model'}",
        )
    )
    results = train(cfg)
    assert results["config"]["teacher"] == str(models / "build_teacher_s" / "best_model")
    assert results["config"]["run_name"] == "teacher_s-reverse_kld-s0"


def test_toy_gmm_forward_fit_is_moment_matching_and_reverse_fit_seeks_a_mode():
    results, _ = run_gmm(
        dict(
            weights=[0.5, 0.5],
            means=[-2.5, 2.5],
            stds=[0.7, 0.7],
            points=1001,
            steps=600,
            init_mu=1.0,
            init_sigma=1.0,
        )
    )
    forward, reverse = results["forward_fit"], results["reverse_fit"]
    # forward KL between a mixture and one Gaussian is minimised by the mixture's moments (closed form)
    assert forward["mu"] == pytest.approx(0.0, abs=1e-3)
    assert forward["sigma"] == pytest.approx(math.sqrt(0.7**2 + 2.5**2), abs=1e-3)
    # reverse KL settles on the mode it started nearest; with well-separated equal modes KL(q‖p) -> log 2
    assert reverse["mu"] == pytest.approx(2.5, abs=0.05)
    assert reverse["sigma"] == pytest.approx(0.7, abs=0.05)
    assert reverse["reverse_kl"] == pytest.approx(math.log(2), abs=0.01)
    assert reverse["forward_kl"] > 5 * forward["forward_kl"]


def test_toy_teacher_enumeration_matches_a_direct_computation():
    toy = Toy(vocab=3, length=4, n_chains=2, main=0.7, floor=1e-3, seed=0)
    assert float(toy.log_p.exp().sum()) == pytest.approx(1.0, abs=1e-12)
    for i, seq in enumerate(toy.seqs[::7].tolist()):
        direct = 0.0
        for k in range(2):
            prob = float(toy.pi[k] * toy.init[k, seq[0]])
            for a, b in itertools.pairwise(seq):
                prob *= float(toy.trans[k, a, b])
            direct += prob
        assert float(toy.log_p[i * 7].exp()) == pytest.approx(direct, rel=1e-10)


def test_toy_sequences_mode_seeking_puts_less_mass_on_sequences_the_teacher_never_makes():
    toy = Toy(vocab=4, length=5, n_chains=2, main=0.8, floor=1e-4, seed=0)
    cfg = dict(lr=0.05, batch_size=64, steps=120, seqkd_samples=64, alpha=0.2)
    metrics = {
        m: toy.metrics(train_student(toy, m, cfg, 0), 1e-5)
        for m in ("forward_kld", "minillm", "reverse_kld_exact")
    }
    init = toy.metrics(ChainStudent(4, 0), 1e-5)
    fwd, mini, exact = metrics["forward_kld"], metrics["minillm"], metrics["reverse_kld_exact"]
    assert fwd["forward_kl"] < init["forward_kl"] and fwd["forward_kl"] < exact["forward_kl"]
    assert exact["reverse_kl"] < fwd["reverse_kl"]
    assert exact["mass_on_never"] < 0.1 < fwd["mass_on_never"]
    assert mini["mass_on_never"] < fwd["mass_on_never"]  # the sampled estimator moves the same way
    assert mini["reverse_kl"] < fwd["reverse_kl"]


def test_toy_recipes_run_through_the_entry_point(compose, tmp_path):
    """Both toys through the entry point's task (experiment=toy_… sets task._target_): their files,
    fit.num_threads applied, and results that are right: the target's moments in closed form, each fit
    lowering the divergence it minimises from its start, the exact reverse-KL descent lowering the reverse KL."""
    cfg = compose(["experiment=toy_gmm", "toy.steps=50", "fit.num_threads=2"], run_dir=tmp_path / "gmm")
    try:
        metric = run_task(cfg)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)  # as conftest sets it
    assert (tmp_path / "gmm" / "toy_gmm.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "gmm" / "results.json").read_text())
    assert metric == saved["reverse_fit"]["reverse_kl"] and saved["config"]["task"] == "toy_gmm"
    assert saved["moments"] == pytest.approx({"mu": 0.0, "sigma": math.sqrt(0.7**2 + 2.5**2)}, abs=1e-12)
    start, _ = run_gmm({**OmegaConf.to_container(cfg.toy), "steps": 0})
    assert saved["forward_fit"]["forward_kl"] < 0.9 * start["forward_fit"]["forward_kl"]
    assert saved["reverse_fit"]["reverse_kl"] < 0.9 * start["reverse_fit"]["reverse_kl"]
    summary = (tmp_path / "gmm" / "summary.md").read_text()
    assert f"| forward KL | {saved['forward_fit']['mu']:.3f} |" in summary
    cfg = compose(
        ["experiment=toy_sequences", "toy.steps=5", "toy.seeds=[0]", "toy.length=3"], run_dir=tmp_path / "seq"
    )
    metric = run_task(cfg)
    out = json.loads((tmp_path / "seq" / "results.json").read_text())
    assert out["world"]["sequences"] == 4**3
    assert metric == out["minillm"]["reverse_kl"]
    assert out["reverse_kld_exact"]["reverse_kl"] < out["init"]["reverse_kl"]
    assert out["forward_kld"]["forward_kl"] < out["init"]["forward_kl"]
    assert "| minillm |" in (tmp_path / "seq" / "summary.md").read_text()
    assert (tmp_path / "seq" / "toy_sequences.png").is_file()


def test_the_cluster_switch_selects_the_submitit_slurm_launcher():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=["experiment=alpha_sweep", "+cluster=slurm"],
            return_hydra_config=True,
        )
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.gpus_per_node == 1
    assert cfg.trainer.accelerator == "gpu"
    assert cfg.hydra.sweeper.params["objective.teacher_mix_alpha"] == "0,0.1,0.2,0.3,0.5"  # the same sweep


@pytest.mark.slow  # about a minute on a quiet 2-core machine: make test-slow
def test_a_sweep_runs_through_the_submitit_launcher_and_isolates_failures(tmp_path):
    """The path a SLURM sweep takes (submitit, one process per job), on this machine."""
    from .test_reliability import run_failing_sweep

    run_failing_sweep(tmp_path, "+cluster=local")


@pytest.mark.slow  # about half a minute: make test-slow
def test_an_optuna_search_receives_each_jobs_metric(tmp_path):
    """`hydra/sweeper=optuna` over lr (log scale) and α: every trial's returned test Rouge-L reaches the
    sweeper, which reports the best one."""
    import subprocess
    import sys

    import yaml

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "minillm.run",
            "-m",
            "hydra/sweeper=optuna",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.direction=maximize",
            "optim.lr=tag(log,interval(1e-4,1e-3))",
            "objective.teacher_mix_alpha=interval(0,0.5)",
            "objective=reverse_kld",
            *smoke_overrides(tmp_path, "logger=csv"),
            f"hydra.sweep.dir={tmp_path / 'search'}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    best = yaml.safe_load((tmp_path / "search" / "optimization_results.yaml").read_text())
    trials = [json.loads(p.read_text())["test/rougeL"] for p in (tmp_path / "search").glob("*/results.json")]
    assert len(trials) == 2
    assert best["best_value"] == pytest.approx(max(trials))
    assert 1e-4 <= best["best_params"]["optim.lr"] <= 1e-3
    assert 0.0 <= best["best_params"]["objective.teacher_mix_alpha"] <= 0.5


def test_a_toy_run_refuses_a_folder_that_holds_one_and_an_unknown_method(compose, tmp_path):
    from minillm.errors import MinillmError

    cfg = compose(["experiment=toy_gmm", "toy.steps=5"], run_dir=tmp_path / "gmm")
    run_task(cfg)
    before = (tmp_path / "gmm" / "results.json").read_text()
    with pytest.raises(MinillmError, match=r"already holds a run \(results\.json\)"):
        run_task(cfg)
    assert (tmp_path / "gmm" / "results.json").read_text() == before
    cfg = compose(["experiment=toy_sequences", "toy.methods=[foo]"], run_dir=tmp_path / "seq")
    with pytest.raises(MinillmError, match=r"^toy\.methods: unknown \['foo'\]; choose from \["):
        run_task(cfg)
