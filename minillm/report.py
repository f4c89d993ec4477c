"""Aggregate a multirun into one table: ``python -m minillm.report PATH [--out report.md]``.

Reads every ``results.json`` below PATH (local records only; W&B is not needed), groups the runs by
their name without the seed (``<objective>-s<seed>`` → ``<objective>``), and writes mean ± std over
seeds of the trained student's test metrics, with the cost of each run (training seconds, optimizer
steps). Jobs that failed (a folder with a ``.hydra`` config but no ``results.json``) are listed.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

from minillm.cli import user_errors
from minillm.errors import MinillmError

COLUMNS = [  # (results key, header, format) in the paper's order, then cost
    ("rougeL", "Rouge-L", "{:.1f}"),
    ("exact_match", "EM", "{:.1f}"),
    ("valid_rate", "valid %", "{:.1f}"),
    ("distinct4", "Dist-4", "{:.1f}"),
    ("length", "length", "{:.1f}"),
    ("train_seconds", "train s", "{:.0f}"),
    ("global_step", "steps", "{:.0f}"),
]


def group_name(results: dict) -> str:
    name = str(results.get("config", {}).get("run_name") or "run")
    return re.sub(r"-s\d+$", "", name)


def job_metrics(job: Path, split: str = "test") -> dict | None:
    """The trained student's metrics of one run folder, with its cost and model sizes; None if absent."""
    path = job / "results.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    student = (data.get("eval") or {}).get("trained student", {}).get(split)
    if student is None:
        return None
    flat = {k: student.get(k) for k, _, _ in COLUMNS}
    config = data.get("config", {})
    flat.update(
        train_seconds=data.get("train_seconds"),
        global_step=data.get("global_step"),
        objective=config.get("objective"),
        student_params=config.get("student_params"),
        teacher_params=config.get("teacher_params"),
        group=group_name(data),
    )
    return flat


def collect_jobs(root: Path, split: str = "test") -> dict[str, list[Path]]:
    """Run folders with results, per group (run name without the seed)."""
    jobs: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(root.rglob("results.json")):
        metrics = job_metrics(path.parent, split)
        if metrics is not None:
            jobs[metrics["group"]].append(path.parent)
    return jobs


def collect(root: Path, split: str = "test") -> tuple[dict[str, list[dict]], list[str]]:
    """Per group, one flat metrics dict per seed; and the folders of jobs without results."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for name, jobs in collect_jobs(root, split).items():
        groups[name] = [job_metrics(job, split) for job in jobs]
    failed = []
    for p in sorted(root.rglob(".hydra")):
        job = p.parent
        if (job / "results.json").is_file():
            continue
        name = str(job.relative_to(root))
        record = job / "failed.json"
        if record.is_file():  # written by minillm.run when a sweep job fails
            info = json.loads(record.read_text())
            name += f" ({info.get('run_name')}: {info.get('error')})"
        else:
            name += " (no results: still running, killed, or stopped to resume)"
        failed.append(name)
    return groups, failed


PAPER_ROWS = ("sft", "forward_kld", "seqkd", "reverse_kld")  # Table 1: SFT w/o KD, KD, SeqKD, MiniLLM


def row_order(name: str, runs: list[dict]) -> tuple:
    """The paper's row order by objective; within an objective (and for other objectives), by name."""
    objective = runs[0].get("objective") if runs else None
    rank = PAPER_ROWS.index(objective) if objective in PAPER_ROWS else len(PAPER_ROWS)
    return (rank, name)


def cell(values: list, fmt: str) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    mean = statistics.mean(values)
    if len(values) == 1:
        return fmt.format(mean)
    return f"{fmt.format(mean)} ± {fmt.format(statistics.stdev(values))}"


def report_markdown(root: Path, split: str = "test") -> str:
    groups, failed = collect(root, split)
    if not groups and not failed:
        raise MinillmError(f"{root}: no results.json found below this folder")
    header = "| run | seeds | " + " | ".join(h for _, h, _ in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 2)]
    for name, runs in sorted(groups.items(), key=lambda item: row_order(item[0], item[1])):
        cells = [cell([r[k] for r in runs], fmt) for k, _, fmt in COLUMNS]
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    text = f"{split} split, mean ± std over training seeds\n\n" + "\n".join(lines)
    if failed:
        text += "\n\nJobs without results:\n" + "\n".join(f"- {f}" for f in failed)
    return text


def write_plots(root: Path, folder: Path, split: str = "test") -> list[Path]:
    """Learning curves, and the α and scaling plots where the sweep varies α or model sizes."""
    from minillm.report_plots import alpha_plot, learning_curves, scaling_plot

    jobs = collect_jobs(root, split)
    written = [
        learning_curves(jobs, folder / "learning_curves.png"),
        alpha_plot(jobs, lambda job: job_metrics(job, split), folder / "alpha.png"),
        scaling_plot(jobs, lambda job: job_metrics(job, split), folder / "scaling.png"),
    ]
    return [p for p in written if p is not None]


@user_errors
def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m minillm.report", description=__doc__.split("\n")[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown here too")
    parser.add_argument(
        "--plots", type=Path, default=None, help="folder for the PNGs (default: beside --out, else PATH)"
    )
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    if not args.path.is_dir():
        raise MinillmError(f"{args.path}: not a folder")
    text = report_markdown(args.path, args.split)
    if not args.no_plots:
        folder = args.plots or (args.out.parent if args.out else args.path)
        folder.mkdir(parents=True, exist_ok=True)
        written = write_plots(args.path, folder, args.split)
        if written:
            text += "\n\n" + "\n".join(f"![{p.stem}]({p.name})" for p in written)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return text


if __name__ == "__main__":
    main()
