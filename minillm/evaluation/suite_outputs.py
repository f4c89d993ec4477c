"""What the evaluation command leaves behind: ``results.json``, ``summary.md``, the resolved
``config.yaml``, ``exaccerr.csv``, and the scalars, tables and figures sent to the experiment loggers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from omegaconf import OmegaConf

from minillm.evaluation.report import summary_markdown


def write_curve_csv(exposure: dict, path: Path) -> None:
    """The ExAccErr curve, one row per decoding step (empty cells where a value is None)."""
    keys = (
        "steps",
        "exaccerr",
        "regret",
        "teacher_error",
        "student_step_error",
        "teacher_step_error",
        "student_rows",
        "teacher_rows",
    )
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", *keys[1:]])
        for row in zip(*(exposure[k] for k in keys), strict=True):
            writer.writerow(["" if v is None else v for v in row])


def write_results(cfg, run_dir: Path, results: dict) -> None:
    """``results.json``, ``summary.md`` and the resolved ``config.yaml`` in the run directory."""
    (run_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (run_dir / "summary.md").write_text(summary_markdown(results))
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)


def log_results(cfg, run_dir: Path, results: dict) -> None:
    """Scalars to every logger (CSV always); with W&B also the breakdowns, the curve and the figures."""
    from minillm.loggers import loggers_from_config

    split, name = results["split"], results["model"]
    metrics = results["eval"][name][split]
    scalars = {k: v for k, v in results.items() if "/" in k and isinstance(v, int | float)}
    tables = {}
    for group in ("by_length", "per_category"):
        rows = metrics.get(group) or {}
        data = [[k, v["n"], v["rougeL"], v["exact_match"], v["valid_rate"]] for k, v in rows.items()]
        if data:
            tables[group] = ([group, "n", "rougeL", "exact_match", "valid_rate"], data)
    curve = results.get("exposure") or {}
    if curve.get("steps"):
        keys = ("steps", "exaccerr", "student_rows", "teacher_rows")
        tables["exaccerr"] = (
            ["step", "exaccerr", "student_rows", "teacher_rows"],
            list(zip(*(curve[k] for k in keys), strict=True)),
        )
    for lg in loggers_from_config(cfg, run_dir):
        lg.log_metrics(scalars, step=0)
        if type(lg).__name__ == "WandbLogger":
            for key, (columns, data) in tables.items():
                lg.log_table(f"{split}/{key}", columns=columns, data=[list(r) for r in data])
            for image in sorted(run_dir.glob("*.png")):  # one key each: the figures differ in size
                lg.log_image(f"{split}/{image.stem}", images=[str(image)])
        lg.finalize("success")
