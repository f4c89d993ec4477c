"""Every committed study's report regenerates from its committed files (issue 24, item 3).

Each entry names a study under ``experiments/results/`` and the script that renders its README / report text
from that folder's result files (``render(folder) -> {relative path: text}``); the test fails on any
difference and shows the diff. Text only (no figures), no training, no model: a few seconds in all.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
RESULTS = EXPERIMENTS / "results"

STUDIES = [  # (study folder under experiments/results, its render script under experiments/)
    ("smollm2_distill", "smollm2_distill/render.py"),
    ("alpha_sweep", "alpha_sweep/render.py"),
    ("ablation_stabilizers", "ablation_stabilizers/render.py"),
    ("objectives_compare", "objectives_compare/render.py"),
    ("scaling", "scaling/render.py"),
    ("teacher_gap", "teacher_gap/render.py"),
    ("toy_gmm", "toy_gmm/render.py"),
    ("toy_sequences", "toy_sequences/render.py"),
    ("evaluation", "evaluation/render.py"),
]


def load_script(relative: str):
    """Import a study script by path (experiments/ is not a package; its scripts import render_common)."""
    path = EXPERIMENTS / relative
    if str(EXPERIMENTS) not in sys.path:
        sys.path.append(str(EXPERIMENTS))  # appended: its study folders must not shadow packages
    spec = importlib.util.spec_from_file_location(f"study_{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("study", "script"), STUDIES, ids=[s for s, _ in STUDIES])
def test_study_report_regenerates(study, script):
    render_common = load_script("render_common.py")
    folder = RESULTS / study
    rendered = load_script(script).render(folder)
    assert rendered, f"{script} rendered nothing"
    diffs = render_common.differences(folder, rendered)
    assert not diffs, (
        f"{study}: the committed files differ from what `python experiments/{script}` renders from the study's "
        "result files (rerun it, or fix the script):\n" + "\n".join(diffs)
    )


def test_every_study_folder_has_a_render_entry():
    """A new study folder needs an entry above (or in tests/test_study_reports.py, for validity_drop and
    methods_compare); bench/ holds benchmark records, not a study README."""
    elsewhere = {"validity_drop", "methods_compare", "bench"}
    covered = {study for study, _ in STUDIES}
    folders = {p.name for p in RESULTS.iterdir() if p.is_dir()}
    assert folders - covered - elsewhere == set()


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
    summarize = load_script("smollm2_distill/summarize.py")
    render = load_script("smollm2_distill/render.py")
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
