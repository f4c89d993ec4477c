"""Every committed study report is what its analysis script renders from the committed per-run files.

A results README is read as the project's word: its numbers, intervals, ratios and verdict sentences come from
``experiments/<study>/analyze.py``, which renders them from ``experiments/results/<study>/``. These tests
re-render each study's text files (README.md, report.md, ...) in memory — no training, no figures — and fail on
the first line that differs from the committed file, so a number typed into a README, or a sentence whose
verdict the data no longer bear out, fails here.

To add a study: its script exposes ``render(folder, figures=False) -> {file name: text}`` and ``main(argv)``
with ``--check``; add a line to ``experiments/render_readme.py``'s STUDIES. The top-level README's result sections
are rendered too, by that script from the studies' ``summary`` / ``headline`` functions, and checked here.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import shutil
import statistics
import sys
from pathlib import Path

import pytest

from minillm.evaluation.rendered import first_difference

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "experiments") not in sys.path:  # appended: its study folders must not shadow packages
    sys.path.append(str(ROOT / "experiments"))
import render_common as rc  # noqa: E402
import render_readme  # noqa: E402

# (study, its analysis script): the report files of experiments/results/<study>/ that the script renders.
STUDIES = render_readme.STUDIES
RESULTS = ROOT / "experiments" / "results"


def load_script(study: str, script: str):
    """Import a study script by path (experiments/ is not a package; the render.py scripts import
    render_common from it, so it is appended to sys.path: its study folders must not shadow packages)."""
    experiments = str(ROOT / "experiments")
    if experiments not in sys.path:
        sys.path.append(experiments)
    spec = importlib.util.spec_from_file_location(f"study_{study}_{Path(script).stem}", ROOT / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rendered_text(module, folder: Path) -> dict[str, str]:
    """The script's text files for ``folder``, without redrawing figures (the scripts that draw take
    ``figures``)."""
    if "figures" in inspect.signature(module.render).parameters:
        return module.render(folder, figures=False)
    return module.render(folder)


@pytest.mark.parametrize(("study", "script"), STUDIES, ids=[s for s, _ in STUDIES])
def test_committed_report_is_its_rendering(study, script):
    folder = RESULTS / study
    rendered = rendered_text(load_script(study, script), folder)
    assert "README.md" in rendered  # the README itself is rendered, not only the tables
    problem = first_difference(rendered, folder)
    assert problem is None, f"re-render with `python {script}`, or fix the script: {problem}"


def test_every_study_folder_has_a_render_entry():
    """A new study folder under experiments/results/ needs an entry above; bench/ holds benchmark records,
    not a study README."""
    folders = {p.name for p in RESULTS.iterdir() if p.is_dir()}
    assert folders - {study for study, _ in STUDIES} - {"bench"} == set()


def test_check_names_the_first_edited_line(tmp_path, capsys):
    """--check on a copy whose README has one number changed exits 1 naming the file and line."""
    study, script = STUDIES[0]
    copy = tmp_path / study
    shutil.copytree(ROOT / "experiments" / "results" / study, copy)
    readme = copy / "README.md"
    committed = readme.read_text()
    lines = committed.splitlines(keepends=True)
    target = next(i for i, line in enumerate(lines) if "| full | 0,1,2 |" in line)
    lines[target] = lines[target].replace("28.5 ± 0.6", "28.9 ± 0.6", 1)
    readme.write_text("".join(lines))
    module = load_script(study, script)
    assert module.main(["--results", str(copy), "--check"]) == 1
    err = capsys.readouterr().err
    assert f"README.md:{target + 1}:" in err and "28.9 ± 0.6" in err
    readme.write_text(committed)
    assert module.main(["--results", str(copy), "--check"]) == 0


def test_readme_result_sections_are_their_rendering():
    """README.md's marked result sections are what experiments/render_readme.py assembles from the studies'
    summaries (so a number typed into them, or one a study's files no longer give, fails here)."""
    rendered = render_readme.render()
    assert set(rendered) == {"README.md"}
    for name in render_readme.SECTIONS:
        assert (
            f"<!-- rendered:{name} " in rendered["README.md"]
            and f"<!-- /rendered:{name} -->" in rendered["README.md"]
        )
    problem = first_difference(rendered, ROOT)
    assert problem is None, (
        f"re-render with `python experiments/render_readme.py`, or fix a script: {problem}"
    )


def test_readme_check_names_the_edited_line(tmp_path, capsys):
    """--check on a copy of README.md with one number changed inside a marked section exits 1 naming the
    line; outside the marked sections the assembler leaves the text alone; without a section's markers it
    refuses in one line (exit 2)."""
    committed = (ROOT / "README.md").read_text()
    lines = committed.splitlines(keepends=True)
    target = next(
        i for i, line in enumerate(lines) if line.startswith("| student init (0.09M, SFT 30 epochs) |")
    )
    lines[target] = lines[target].replace("29.7 ± 1.9", "30.7 ± 1.9", 1)
    copy = tmp_path / "README.md"
    copy.write_text("".join(lines))
    assert render_readme.main(["--readme", str(copy), "--check"]) == 1
    err = capsys.readouterr().err
    assert f"README.md:{target + 1}:" in err and "30.7 ± 1.9" in err
    assert render_readme.main(["--readme", str(copy)]) == 0  # writing restores the rendering
    assert copy.read_text() == committed

    outside = committed.replace("Both work from a fresh clone", "Both run from a fresh clone", 1)
    assert outside != committed
    copy.write_text(outside)
    assert render_readme.main(["--readme", str(copy), "--check"]) == 0

    copy.write_text(committed.replace("<!-- /rendered:results -->", "", 1))
    assert render_readme.main(["--readme", str(copy), "--check"]) == 2
    assert "missing ['results']" in capsys.readouterr().err


def test_make_check_reports_runs_every_check():
    """`make check-reports` runs each study script's --check (by glob: the glob must find exactly the scripts
    of STUDIES) and the README assembler's."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\ncheck-reports:", 1)[1].split("\n\n", 1)[0]
    assert "for script in experiments/*/analyze.py experiments/*/render.py" in recipe
    assert "$$script --check" in recipe and "experiments/render_readme.py --check" in recipe
    found = {
        str(p.relative_to(ROOT))
        for g in ("*/analyze.py", "*/render.py")
        for p in (ROOT / "experiments").glob(g)
    }
    assert found == {script for _, script in STUDIES}


def test_first_difference_reports_missing_and_extra_lines(tmp_path):
    (tmp_path / "a.md").write_text("one\ntwo\n")
    assert first_difference({"a.md": "one\ntwo\n"}, tmp_path) is None
    assert first_difference({"a.md": "one\n"}, tmp_path) == f"{tmp_path / 'a.md'}:2: committed only 'two'"
    assert first_difference({"a.md": "one\ntwo\nthree\n"}, tmp_path).endswith(":3: rendered only 'three'")
    assert first_difference({"a.md": "one\ntwo"}, tmp_path).endswith("line endings or the final newline")
    assert "not committed" in first_difference({"b.md": "x"}, tmp_path)


def test_make_run_ends_with_the_rendered_note():
    """`make run`'s closing sentence is validity_drop's rendered make_run_note.txt, not a sentence typed into
    the Makefile (which went stale: it claimed a reverse-KL effect the control matches)."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "cat experiments/results/validity_drop/make_run_note.txt" in recipe
    assert "echo" not in recipe
    note = (ROOT / "experiments" / "results" / "validity_drop" / "make_run_note.txt").read_text()
    assert note.endswith("experiments/results/validity_drop/README.md\n")


def test_learning_curves_read_a_committed_runs_metrics(tmp_path):
    """A committed study keeps each job's metrics.csv beside its results.json (runs/<job>/metrics.csv);
    the study figures read it there as well as from a run folder's csv/metrics.csv."""
    from minillm.evaluation.plots import read_curves

    text = "step,val/rougeL,rollout/reward\n3,41.5,\n4,,-1.25\n9,43.0,\n"
    (tmp_path / "committed").mkdir()
    (tmp_path / "committed" / "metrics.csv").write_text(text)
    (tmp_path / "run" / "csv").mkdir(parents=True)
    (tmp_path / "run" / "csv" / "metrics.csv").write_text(text)
    for job in ("committed", "run"):
        curves = read_curves(tmp_path / job)
        assert curves["val/rougeL"] == [(3, 41.5), (9, 43.0)]
        assert curves["rollout/reward"] == [(4, -1.25)]


def _job(path: Path, results: dict, kl: dict | None = None) -> None:
    import json

    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps(results))
    if kl is not None:
        probe = path.parent / "diagnose" / path.name
        probe.mkdir(parents=True)
        (probe / "diagnose.json").write_text(json.dumps({"kl": kl}))


def test_smollm2_summary_round_trips_through_render(tmp_path):
    """smollm2_distill/render.py reads the table summarize.py writes: every cell comes back as written (uneven
    values, one run without a probe, a method with two seeds), so the README's verdicts read the numbers the
    runs gave."""
    summarize = load_script("smollm2_distill", "experiments/smollm2_distill/summarize.py")
    render = load_script("smollm2_distill", "experiments/smollm2_distill/render.py")
    ev = lambda r, v: {"test": {"rougeL": r, "valid_rate": v}}  # noqa: E731
    _job(tmp_path / "teacher_sft", {"global_step": 100, "eval": {"student init": ev(11.83, 0.5)}})
    _job(
        tmp_path / "student_init",
        {
            "global_step": 300,
            "eval": {
                "teacher": ev(42.37, 23.1),
                "trained student": ev(18.94, 3.46),
                "student init": ev(1.52, 0.0),
            },
        },
    )
    (tmp_path / "diagnose" / "init").mkdir(parents=True)
    init_kl = {"student": {"reverse_kl": 3.6213}, "teacher": {"forward_kl": 2.8594}}
    (tmp_path / "diagnose" / "init" / "diagnose.json").write_text(__import__("json").dumps({"kl": init_kl}))
    kl = {"student": {"reverse_kl": 3.0812}, "teacher": {"forward_kl": 3.1219}}
    run = lambda r, v, steps, sec: {  # noqa: E731
        "test/rougeL": r,
        "test/valid_rate": v,
        "global_step": steps,
        "train_seconds": sec,
    }
    _job(tmp_path / "minillm-equal_steps-s0", run(20.43, 5.0, 16, 221.7), kl)
    _job(tmp_path / "minillm-equal_steps-s1", run(24.61, 6.5, 16, 236.2))
    _job(tmp_path / "sft-equal_time-s0", run(24.27, 7.0, 37, 227.4))
    text, _ = summarize.summary(tmp_path)
    (tmp_path / "summary.md").write_text(text)
    s = render.read_summary(tmp_path / "summary.md")
    assert s["zero_shot"] == (11.8, 0.5) and s["teacher"] == (42.4, 23.1) and s["init"] == (18.9, 3.5)
    assert s["pruned"] == (1.5, 0.0) and (s["teacher_steps"], s["init_steps"]) == (100, 300)
    assert s["init_kl"] == (3.621, 2.859)
    mini = s["rows"][("minillm", "equal_steps")]
    assert mini["seeds"] == 2
    assert mini["rougeL"] == (22.5, 3.0)  # mean 22.52, sample std 2.956 of 20.43 and 24.61
    assert mini["valid"] == (5.8, 1.1)
    assert mini["train_s"] == (229.0, 10.0)
    assert mini["rkl"] == (3.081, None) and mini["fkl"] == (3.122, None)  # seed 0's probe only
    sft = s["rows"][("sft", "equal_time")]
    assert sft["rougeL"] == (24.3, None) and sft["steps"] == (37.0, None) and sft["rkl"] == (None, None)
    assert set(s["rows"]) == {("minillm", "equal_steps"), ("sft", "equal_time")}


def test_cpu_precision_default_follows_the_precision_study():
    """conf/trainer/cpu.yaml's default `trainer.precision` is the one the precision study's files support
    (issue 22 item 6): `auto` only if bf16 trained to the same results wherever `auto` would choose it."""
    import re

    module = load_script("precision", "experiments/precision/analyze.py")
    supported = module.decide(module.load(RESULTS / "precision"))["default"]
    text = (ROOT / "conf" / "trainer" / "cpu.yaml").read_text()
    default = re.search(r"^precision: \$\{oc\.env:MINILLM_PRECISION,([^}]+)\}", text, re.M)
    assert default is not None, "conf/trainer/cpu.yaml: no `precision: ${oc.env:MINILLM_PRECISION,...}` line"
    assert default.group(1) == supported, (
        f"conf/trainer/cpu.yaml defaults to {default.group(1)}; the precision study supports {supported}"
    )


def test_precision_study_intervals_match_scipy():
    """The precision study's bf16 − fp32 intervals at uneven values: the paired one is scipy's one-sample t
    interval of the per-seed differences; the unpaired one the t interval with the standard error of two
    independent means and the smaller arm's degrees of freedom; 'within the seed spread' needs both to hold 0."""
    from scipy import stats

    module = load_script("precision", "experiments/precision/analyze.py")
    bf16, fp32 = [44.9, 45.3, 43.8], [45.6, 44.1, 45.0]
    diffs = [b - f for b, f in zip(bf16, fp32, strict=True)]
    low, high = stats.t.interval(0.95, len(diffs) - 1, loc=statistics.mean(diffs), scale=stats.sem(diffs))
    d, half, n = module.paired(dict(enumerate(bf16)), dict(enumerate(fp32)))
    assert (
        n == 3 and d == pytest.approx((low + high) / 2) and half == pytest.approx((high - low) / 2, rel=1e-3)
    )
    se = math.sqrt(statistics.variance(bf16) / 3 + statistics.variance(fp32) / 3)
    d, half = module.unpaired(bf16, fp32)
    assert d == pytest.approx(statistics.mean(bf16) - statistics.mean(fp32))
    assert half == pytest.approx(stats.t.ppf(0.975, 2) * se, rel=1e-3)
    runs = {
        "bf16": [{"seed": i, "x": v} for i, v in enumerate(bf16)],
        "fp32": [{"seed": i, "x": v} for i, v in enumerate(fp32)],
    }
    assert module.compare(runs, "x")["same"]
    runs["bf16"] = [{"seed": i, "x": v + 3.0} for i, v in enumerate(bf16)]  # shifted beyond the spread
    assert not module.compare(runs, "x")["same"]


def test_updates_per_logged_step_reads_old_and_new_on_policy_configs():
    """An on-policy run logs once per round (ppo_epochs × minibatches updates): found by the module's
    `_target_` in configs saved since the schema, by `kind: on_policy` in older ones; any other run logs per
    update. (A run of today's code with only `kind` checked would count rounds as updates.)"""
    round_ = {"ppo_epochs": 3, "num_rollouts": 10, "mini_batch_size": 4}  # 3 × ceil(10 / 4) = 9
    new = {**round_, "module": {"_target_": "minillm.training.on_policy.OnPolicyModule"}}
    old = {**round_, "kind": "on_policy"}
    sft = {"module": {"_target_": "minillm.training.supervised.SupervisedModule"}}
    assert [rc.updates_per_logged_step(o) for o in (new, old, sft)] == [9, 9, 1]
