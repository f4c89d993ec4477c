"""The evaluation README and each model's summary.md, rendered from ``<model>/results.json``: ``python
experiments/evaluation/render.py [--check]``. (``summary.md`` is ``minillm.evaluate``'s own
``summary_markdown``.)
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # render_common (appended: no shadowing)
import render_common as rc  # noqa: E402

FOLDER = rc.RESULTS / "evaluation"
MODELS = [("teacher", "teacher"), ("student_init", "student init")]


def row(label: str, r: dict) -> str:
    m = r["eval"][r["model"]][r["split"]]
    cal = r["calibration"][r["split"]]
    exposure = r["exposure"]
    if exposure.get("skipped"):
        ex = "0 (by definition)"
    else:
        ex = f"{exposure['exaccerr_mean']:.1f} ({exposure['exaccerr_final']:.1f} at l = {exposure['reliable_steps']})"
    return (
        f"| {label} | {m['rougeL']:.1f} ± {m['rougeL_std']:.1f} | {m['exact_match']:.1f} | "
        f"{m['valid_rate']:.1f} ± {m['valid_rate_std']:.1f} | {ex} | {cal['ece']:.3f} | {cal['accuracy']:.1f} | "
        f"{m['distinct4']:.1f} | {m['test_loss']:.3f} |"
    )


def readme(folder: Path) -> str:
    results = {name: rc.read_json(folder / name / "results.json") for name, _ in MODELS}
    init = results["student_init"]
    exposure = init["exposure"]
    reliable = exposure["reliable_steps"]
    curve = dict(zip(exposure["steps"], exposure["exaccerr"], strict=True))
    first = statistics.mean(curve[s] for s in range(1, 11))
    last = statistics.mean(curve[s] for s in range(reliable - 9, reliable + 1))
    m = init["eval"][init["model"]][init["split"]]
    cal = init["calibration"][init["split"]]
    seconds = [sum(results[name]["seconds"].values()) for name, _ in MODELS]
    lines = [
        "# evaluation — the paper's metrics on the shipped teacher and student init",
        "",
        "Rendered by `python experiments/evaluation/render.py` from this folder's files; "
        "`tests/test_study_reports.py` checks that it still is.",
        "",
        f"Commands (2 CPU cores, 2026-11-28; {seconds[0]:.0f} and {seconds[1]:.0f} s of evaluation, "
        "`results.json`'s `seconds`):",
        "",
        "```bash",
        "python -m minillm.evaluate evaluate.model=teacher eval.num_samples=100 'eval.seeds=[0,1,2]' logger=csv",
        "python -m minillm.evaluate evaluate.model=init    eval.num_samples=100 'eval.seeds=[0,1,2]' logger=csv",
        "```",
        "",
        f"First {m['n']} test prompts, {len(m['seeds'])} sampling seeds (the command's default is all prompts and 5 "
        f"seeds; cut to fit the session). Calibration on the {cal['n']} classification prompts of the test split; "
        f"exposure bias from {exposure['n_prompts']} prompts × {exposure['samples_per_prompt']} samples of each "
        "model.",
        "",
        f"| model | Rouge-L | EM | valid % | ExAccErr % (mean, l ≤ {reliable}) | ECE | label acc % | Dist-4 | "
        "test loss |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(row(label, results[name]) for name, label in MODELS),
        "",
        "The init's excess accumulated error "
        + ("grows" if last > first else "does not grow")
        + f" with the generated length (`student_init/exaccerr.png`, `exaccerr.csv`: {first:.1f} % on average over "
        f"l = 1–10, {last:.1f} % over l = {reliable - 9}–{reliable})"
        + (": the exposure-bias signal on-policy methods target is present." if last > first else ".")
        + " Per-category and per-length breakdowns and samples: `*/summary.md`. How to read each number: "
        "`docs/evaluation.md`.",
    ]
    return rc.wrap("\n".join(lines)) + "\n"


def render(folder: Path = FOLDER) -> dict[str, str]:
    from minillm.evaluation.report import summary_markdown

    out = {"README.md": readme(folder)}
    for name, _ in MODELS:
        out[f"{name}/summary.md"] = summary_markdown(rc.read_json(folder / name / "results.json"))
    return out


if __name__ == "__main__":
    rc.main(render, FOLDER, __doc__)
