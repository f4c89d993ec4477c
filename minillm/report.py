"""Aggregate a multirun into one table: ``python -m minillm.report PATH [--out report.md]``.

Reads every ``results.json`` below PATH (local records only; W&B is not needed), groups the runs by
their name without the seed (``<objective>-s<seed>`` → ``<objective>``), split where their Hydra
overrides set other values (rows ``<name> (key=value)``) or, with one seed twice, per folder, and writes
mean ± std over seeds of the trained student's test metrics, with the cost of each run (training
seconds, optimizer steps). Jobs that failed (a folder with a ``.hydra`` config but no ``results.json``) are listed.
The work is ``minillm.evaluation.report.study_report``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from minillm.cli import emit, user_errors
from minillm.evaluation.report import study_report


@user_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m minillm.report", description=__doc__.split("\n")[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown here too")
    parser.add_argument(
        "--plots", type=Path, default=None, help="folder for the PNGs (default: beside --out, else PATH)"
    )
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    plots = None if args.no_plots else args.plots or (args.out.parent if args.out else args.path)
    text = study_report(args.path, args.split, plots)
    emit(text, args.out)


if __name__ == "__main__":
    main()
