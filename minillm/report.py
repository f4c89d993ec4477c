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


def collect(root: Path, split: str = "test") -> tuple[dict[str, list[dict]], list[str]]:
    """Per group, one flat metrics dict per seed; and the folders of jobs without results."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(root.rglob("results.json")):
        data = json.loads(path.read_text())
        student = (data.get("eval") or {}).get("trained student", {}).get(split)
        if student is None:
            continue
        flat = {k: student.get(k) for k, _, _ in COLUMNS}
        flat.update(train_seconds=data.get("train_seconds"), global_step=data.get("global_step"))
        groups[group_name(data)].append(flat)
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
    for name, runs in groups.items():
        cells = [cell([r[k] for r in runs], fmt) for k, _, fmt in COLUMNS]
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    text = f"{split} split, mean ± std over training seeds\n\n" + "\n".join(lines)
    if failed:
        text += "\n\nJobs without results:\n" + "\n".join(f"- {f}" for f in failed)
    return text


@user_errors
def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m minillm.report", description=__doc__.split("\n")[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if not args.path.is_dir():
        raise MinillmError(f"{args.path}: not a folder")
    text = report_markdown(args.path, args.split)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return text


if __name__ == "__main__":
    main()
