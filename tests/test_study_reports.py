"""Every committed study report is what its analysis script renders from the committed per-run files.

A results README is read as the project's word: its numbers, intervals, ratios and verdict sentences come from
``experiments/<study>/analyze.py``, which renders them from ``experiments/results/<study>/``. These tests
re-render each study's text files (README.md, report.md, ...) in memory — no training, no figures — and fail on
the first line that differs from the committed file, so a number typed into a README, or a sentence whose
verdict the data no longer bear out, fails here.

To add a study: its script exposes ``render(folder, figures=False) -> {file name: text}`` and ``main(argv)``
with ``--results`` and ``--check``; add a line to STUDIES.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from minillm.evaluation.rendered import first_difference

ROOT = Path(__file__).resolve().parents[1]

# (study, its analysis script): the report files of experiments/results/<study>/ that the script renders.
STUDIES = [
    ("validity_drop", "experiments/validity_drop/analyze.py"),
    ("methods_compare", "experiments/methods_compare/analyze.py"),
]


def load_script(study: str, script: str):
    spec = importlib.util.spec_from_file_location(f"analyze_{study}", ROOT / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("study", "script"), STUDIES, ids=[s for s, _ in STUDIES])
def test_committed_report_is_its_rendering(study, script):
    folder = ROOT / "experiments" / "results" / study
    rendered = load_script(study, script).render(folder, figures=False)
    assert "README.md" in rendered  # the README itself is rendered, not only the tables
    problem = first_difference(rendered, folder)
    assert problem is None, f"re-render with `python {script}`, or fix the script: {problem}"


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
