"""The multirun report: grouping by run name without the seed, mean ± std, failed jobs listed."""

from __future__ import annotations

import json
import re

import pytest

from minillm.errors import MinillmError
from minillm.evaluation.report import report_markdown


def write_run(folder, name, rouge, valid, seconds):
    folder.mkdir(parents=True)
    (folder / ".hydra").mkdir()
    student = {
        "test": {"rougeL": rouge, "exact_match": 0.0, "valid_rate": valid, "distinct4": 0.5, "length": 9.0}
    }
    (folder / "results.json").write_text(
        json.dumps(
            {
                "config": {"run_name": name},
                "train_seconds": seconds,
                "global_step": 100,
                "eval": {"trained student": student},
            }
        )
    )


def test_groups_seeds_and_lists_failures(tmp_path):
    write_run(tmp_path / "0", "sft-s0", 40.0, 10.0, 60)
    write_run(tmp_path / "1", "sft-s1", 44.0, 14.0, 62)
    write_run(tmp_path / "2", "reverse_kld-s0", 50.0, 20.0, 61)
    (tmp_path / "3" / ".hydra").mkdir(parents=True)  # a job that died before writing results
    text = report_markdown(tmp_path)
    sft = next(line for line in text.splitlines() if line.startswith("| sft |"))
    assert "| 2 |" in sft and "42.0 ± 2.8" in sft and "12.0 ± 2.8" in sft
    assert "| reverse_kld | 1 | 50.0 |" in text
    assert "- 3 (no results: still running, killed, or stopped to resume)" in text


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(MinillmError, match="no results.json"):
        report_markdown(tmp_path)


def test_results_without_the_splits_metrics_are_named_not_dropped(tmp_path):
    """--split valid on runs that evaluated test only said "no results.json found"; an evaluation's results.json
    (minillm.evaluate: no trained student) was dropped from the table without a word."""
    write_run(tmp_path / "0", "sft-s0", 40.0, 10.0, 60)
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "results.json").write_text(json.dumps({"eval": {"init": {"test": {"rougeL": 1.0}}}}))
    with pytest.raises(
        MinillmError,
        match=r": 2 results\.json found, none with the trained student's valid metrics \(their splits: test: "
        r"choose one with --split\)$",
    ):
        report_markdown(tmp_path, "valid")
    text = report_markdown(tmp_path)
    assert "| sft | 1 |" in text
    assert text.endswith("Left out: results.json without the trained student's test metrics (an evaluation's, or "
                         "another split's):\n- eval")  # fmt: skip


def write_study_run(folder, name, rouge, *, alpha=0.2, schedule="constant", params=(230_000, 2_160_000)):
    """A run folder as the pipeline leaves it: results.json, the resolved config and csv/metrics.csv."""
    write_run(folder, name, rouge, rouge - 5, 60)
    data = json.loads((folder / "results.json").read_text())
    objective = name.split("-")[-2] if name.count("-") >= 2 else "reverse_kld"
    data["config"].update(objective=objective, student_params=params[0], teacher_params=params[1])
    (folder / "results.json").write_text(json.dumps(data))
    (folder / "config.yaml").write_text(
        "objective:\n  kind: on_policy\n"
        f"  teacher_mix_alpha: {alpha}\n  alpha_schedule: {schedule}\n  alpha_end: 0.0\n"
    )
    (folder / "csv").mkdir()
    rows = ["step,rollout/reward,rollout/reverse_kl,rollout/length,val/rougeL"]
    rows += [f"{s},{-1 + s / 10},{1 - s / 10},{10 + s},{rouge - 3 + s / 3}" for s in range(5)]
    (folder / "csv" / "metrics.csv").write_text("\n".join(rows) + "\n")


def test_report_plots_learning_curves_alpha_and_scaling(tmp_path):
    from minillm.report import main

    alpha = tmp_path / "alpha"
    for i, a in enumerate([0.0, 0.1, 0.2, 0.5]):
        for seed in (0, 1):
            write_study_run(alpha / f"a{i}-s{seed}", f"alpha{i}-s{seed}", 40 + 2 * i + seed, alpha=a)
    write_study_run(alpha / "lin-s0", "alpha_linear-s0", 44.0, alpha=0.5, schedule="linear")
    folder = tmp_path / "alpha-report"
    assert main([str(alpha), "--out", str(folder / "report.md")]) is None  # a console script's exit status
    text = (folder / "report.md").read_text()
    assert (folder / "learning_curves.png").stat().st_size > 5000
    assert (folder / "alpha.png").stat().st_size > 5000
    assert not (folder / "scaling.png").exists()  # the sizes do not vary
    assert "![alpha](alpha.png)" in text and "![learning_curves](learning_curves.png)" in text

    scaling = tmp_path / "scaling"
    sizes = {
        "teacher_s": (90_000, 900_000),
        "embedded": (90_000, 2_160_000),
        "teacher_l": (90_000, 5e6),
        "student_m": (150_000, 2_160_000),
        "student_l": (300_000, 2_160_000),
    }
    for arm, params in sizes.items():
        for objective, bonus in (("reverse_kld", 2.0), ("seqkd", 0.0)):
            name = f"{arm}-{objective}-s0"
            write_study_run(scaling / name, name, 40 + bonus + params[1] / 1e6, params=params)
    main([str(scaling), "--plots", str(tmp_path / "scaling-plots")])
    assert (tmp_path / "scaling-plots" / "scaling.png").stat().st_size > 5000
    assert not (tmp_path / "scaling-plots" / "alpha.png").exists()


def test_rows_follow_the_papers_order_of_methods(tmp_path):
    for i, objective in enumerate(("reverse_kld", "seqkd", "sft", "forward_kld")):
        for arm in ("time", "steps"):
            write_study_run(tmp_path / f"{arm}-{objective}", f"{arm}-{objective}-s0", 40.0 + i)
    rows = [
        line.split(" | ")[0][2:] for line in report_markdown(tmp_path).splitlines() if line.startswith("| ")
    ]
    assert rows[1:] == [
        "steps-sft",
        "time-sft",
        "steps-forward_kld",
        "time-forward_kld",
        "steps-seqkd",
        "time-seqkd",
        "steps-reverse_kld",
        "time-reverse_kld",
    ]


def write_job(folder, name, rouge, overrides, *, seed=0, lr=1e-4, choices=None):
    """A Hydra multirun job folder: results.json, config.yaml and .hydra/{overrides,hydra}.yaml."""
    write_run(folder, name, rouge, rouge - 30, 60)
    data = json.loads((folder / "results.json").read_text())
    data["config"].update(objective=name.rsplit("-", 1)[0], seed=seed)
    (folder / "results.json").write_text(json.dumps(data))
    (folder / "config.yaml").write_text(
        f"seed: {seed}\noptim:\n  lr: {lr}\n  name: adamw\neval:\n  seeds: [0, 1]\n"
    )
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    choices = {"objective": "sft", "debug": "smoke", **(choices or {})}
    (folder / ".hydra" / "hydra.yaml").write_text(
        "hydra:\n  runtime:\n    choices:\n" + "".join(f"      {k}: {v}\n" for k, v in choices.items())
    )


def table_rows(text):
    return {line.split(" | ")[0][2:]: line for line in text.splitlines() if line.startswith("| ")}


def test_a_sweep_the_run_name_does_not_name_is_not_averaged_as_seeds(tmp_path):
    """`-m objective=sft optim.lr=1e-3,1e-4`: both jobs are run name sft-s0; one row per learning rate, each
    named by the value (resolved: 1e-3 is 0.001), not one row of "2 seeds"."""
    sweep = tmp_path / "sweep"
    write_job(sweep / "0", "sft-s0", 40.0, ["objective=sft", "optim.lr=1e-3", "debug=smoke"], lr=0.001)
    write_job(sweep / "1", "sft-s0", 44.0, ["objective=sft", "optim.lr=1e-4", "debug=smoke"], lr=0.0001)
    rows = table_rows(report_markdown(sweep))
    assert "sft" not in rows
    assert rows["sft (optim.lr=0.001)"].startswith("| sft (optim.lr=0.001) | 1 | 40.0 |")
    assert rows["sft (optim.lr=0.0001)"].startswith("| sft (optim.lr=0.0001) | 1 | 44.0 |")


def test_seeds_and_run_bound_overrides_do_not_split_a_row(tmp_path):
    """Seeds (and where the run writes, how it resumes, its logger, Hydra's own keys) are not a setting:
    three seeds of one learning rate stay one row; an override that sets a value the others have by
    default (1e-4 written as 0.0001, the objective group's default choice) does not split it either."""
    base = ["debug=smoke", "hydra.sweep.dir=/tmp/x"]
    write_job(tmp_path / "0", "sft-s0", 40.0, [*base, "seed=0", "optim.lr=1e-4"], seed=0)
    write_job(tmp_path / "1", "sft-s1", 42.0, [*base, "seed=1", "optim.lr=0.0001", "ckpt_path=last"], seed=1)
    write_job(
        tmp_path / "2",
        "sft-s2",
        44.0,
        [*base, "seed=2", "objective=sft", "logger=csv", "eval.seeds=[0,1]"],
        seed=2,
    )
    rows = table_rows(report_markdown(tmp_path))
    assert list(rows)[1:] == ["sft"]
    assert "| sft | 3 | 42.0 ± 2.0 |" in rows["sft"]


def test_group_choices_split_by_the_choice(tmp_path):
    """A config-group override (`+arm=…`, `debug=…`) is compared by the group's choice."""
    write_job(tmp_path / "a", "x-s0", 40.0, ["+arm=study/a"], choices={"arm": "study/a"})
    write_job(tmp_path / "b", "x-s0", 44.0, ["+arm=study/b"], choices={"arm": "study/b"})
    write_job(tmp_path / "c", "x-s1", 46.0, ["+arm=study/b", "seed=1"], seed=1, choices={"arm": "study/b"})
    rows = table_rows(report_markdown(tmp_path))
    assert list(rows)[1:] == ["x (arm=study/a)", "x (arm=study/b)"]
    assert "| x (arm=study/b) | 2 | 45.0 ± 1.4 |" in rows["x (arm=study/b)"]


def test_jobs_with_one_seed_twice_are_not_averaged_without_hydra_records(tmp_path):
    """Folders with results.json only (copied runs, no .hydra): two jobs of one name and the same seed are
    not two training seeds; each is its own row, named by its folder, and a note says why."""
    for folder, rouge in (("lr3", 40.0), ("lr4", 44.0)):
        write_run(tmp_path / folder, "sft-s0", rouge, 10.0, 60)
        (tmp_path / folder / ".hydra").rmdir()
    write_run(tmp_path / "kd", "kd-s0", 50.0, 10.0, 60)
    (tmp_path / "kd" / ".hydra").rmdir()
    text = report_markdown(tmp_path)
    rows = table_rows(text)
    assert list(rows)[1:] == ["kd", "sft (lr3)", "sft (lr4)"]
    assert "| sft (lr3) | 1 | 40.0 |" in rows["sft (lr3)"] and "| sft (lr4) | 1 | 44.0 |" in rows["sft (lr4)"]
    assert "sft: 2 jobs with seed 0 (lr3, lr4)" in text


def test_plots_group_the_jobs_as_the_table_does(tmp_path):
    from minillm.evaluation.report import collect_jobs

    write_job(tmp_path / "0", "sft-s0", 40.0, ["optim.lr=1e-3"], lr=0.001)
    write_job(tmp_path / "1", "sft-s0", 44.0, ["optim.lr=1e-4"], lr=0.0001)
    write_job(tmp_path / "2", "sft-s1", 45.0, ["optim.lr=1e-4", "seed=1"], lr=0.0001, seed=1)
    jobs = collect_jobs(tmp_path)
    assert {k: [p.name for p in v] for k, v in jobs.items()} == {
        "sft (optim.lr=0.001)": ["0"],
        "sft (optim.lr=0.0001)": ["1", "2"],
    }


@pytest.mark.parametrize(("file", "text"), [(".hydra/overrides.yaml", "- a: [\n"), ("config.yaml", "- 1\n")])
def test_an_unreadable_job_record_is_one_line_naming_the_file(tmp_path, file, text):
    write_job(tmp_path / "0", "sft-s0", 40.0, ["optim.lr=1e-3"], lr=0.001)
    write_job(tmp_path / "1", "sft-s0", 44.0, ["optim.lr=1e-4"])
    (tmp_path / "1" / file).write_text(text)
    path = re.escape(str(tmp_path / "1" / file))
    with pytest.raises(MinillmError, match=rf"^{path}: (not readable YAML|expected a YAML)[^\n]*$"):
        report_markdown(tmp_path)
