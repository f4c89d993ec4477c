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
        sys.path.insert(0, str(EXPERIMENTS))
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
