"""The study recipes (conf/experiment/, conf/arm/) and the exact toy problems."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from omegaconf import OmegaConf

from minillm.run import train
from minillm.toys import run_toy
from minillm.toys.gmm import run_gmm
from minillm.toys.sequences import ChainStudent, Toy, train_student

from .conftest import CONF
from .test_smoke import smoke_overrides

STUDIES = ("ablation_stabilizers", "alpha_sweep", "objectives_compare", "scaling", "scaling_models")


def sweep_arms(name: str) -> list[str]:
    params = OmegaConf.load(CONF / "experiment" / f"{name}.yaml").hydra.sweeper.params
    return str(params["+arm"]).split(",")


@pytest.mark.parametrize("study", STUDIES)
def test_every_arm_of_every_study_composes(compose, tmp_path, study):
    for arm in sweep_arms(study):
        cfg = compose([f"experiment={study}", f"+arm={arm}"])
        assert cfg.arm_name == arm.removeprefix("build_") or cfg.arm_name == arm
        assert cfg.experiment_name == study
        assert cfg.arm_name in str(cfg.run_name)


@pytest.mark.parametrize("study", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_sweep_dir_resolves_before_hydra_runtime_exists(study):
    """Hydra's sweeper reads hydra.sweep.dir before the runtime (``${hydra:runtime.cwd}``) is set."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={study}"], return_hydra_config=True)
    HydraConfig.instance().cfg = None  # as in the sweeper: no job has started
    assert str(cfg.hydra.sweep.dir)  # raises InterpolationResolutionError on a runtime-only interpolation


def test_objectives_compare_budgets_and_per_objective_lr(compose):
    def cfg(objective, arm):
        return compose(["experiment=objectives_compare", f"objective={objective}", f"+arm={arm}"])

    for objective, lr in (("sft", 5e-4), ("forward_kld", 5e-4), ("seqkd", 5e-4), ("reverse_kld", 1e-4)):
        timed, stepped = cfg(objective, "equal_time"), cfg(objective, "equal_steps")
        assert timed.optim.lr == stepped.optim.lr == lr
        assert (timed.trainer.max_time, timed.trainer.max_steps) == ("00:00:02:00", -1)
        assert (stepped.trainer.max_time, stepped.trainer.max_steps) == (None, 300)
        assert stepped.run_name == f"{objective}-equal_steps-s0"


def test_arms_change_what_they_say(compose):
    def objective(arm, study="ablation_stabilizers"):
        return compose([f"experiment={study}", f"+arm={arm}"]).objective

    assert objective("no_length_norm").length_norm == "none"
    assert objective("no_teacher_mix").teacher_mix_alpha == 0.0
    assert objective("no_single_step").single_step is False
    assert objective("paper").variant == "paper"
    assert objective("full").variant == "code" and objective("full").teacher_mix_alpha == 0.2
    assert objective("alpha03", "alpha_sweep").teacher_mix_alpha == 0.3
    cosine = objective("alpha_cosine", "alpha_sweep")
    assert (cosine.alpha_schedule, cosine.teacher_mix_alpha, cosine.alpha_end) == ("cosine", 0.5, 0.0)


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
        ("ablation_stabilizers", "paper", [], "paper-s0", check_paper_arm),
        (
            "alpha_sweep",
            "alpha_linear",
            ["objective.ppo_epochs=1"],
            "alpha_linear-s0",
            check_alpha_linear_arm,
        ),
        # the arm's 300 steps cut to smoke size on the command line, as a user would for a quick look
        (
            "objectives_compare",
            "equal_steps",
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
            "+arm=build_teacher_s",
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
            "+arm=teacher_s",
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
    """Both toys through run_toy: their files, fit.num_threads applied, and results that are right:
    the target's moments in closed form, each fit lowering the divergence it minimises from its start,
    the exact reverse-KL descent lowering the reverse KL."""
    cfg = compose(["experiment=toy_gmm", "toy.steps=50", "fit.num_threads=2"], run_dir=tmp_path / "gmm")
    try:
        run_toy(cfg)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)  # as conftest sets it
    assert (tmp_path / "gmm" / "toy_gmm.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "gmm" / "results.json").read_text())
    assert saved["moments"] == pytest.approx({"mu": 0.0, "sigma": math.sqrt(0.7**2 + 2.5**2)}, abs=1e-12)
    start, _ = run_gmm({**OmegaConf.to_container(cfg.toy), "steps": 0})
    assert saved["forward_fit"]["forward_kl"] < 0.9 * start["forward_fit"]["forward_kl"]
    assert saved["reverse_fit"]["reverse_kl"] < 0.9 * start["reverse_fit"]["reverse_kl"]
    summary = (tmp_path / "gmm" / "summary.md").read_text()
    assert f"| forward KL | {saved['forward_fit']['mu']:.3f} |" in summary
    cfg = compose(
        ["experiment=toy_sequences", "toy.steps=5", "toy.seeds=[0]", "toy.length=3"], run_dir=tmp_path / "seq"
    )
    out = run_toy(cfg)
    assert out["world"]["sequences"] == 4**3
    assert out["metric"] == out["minillm"]["reverse_kl"]
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
    assert str(cfg.hydra.sweeper.params["+arm"]).startswith("alpha0,")  # the same sweep, sent elsewhere


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
