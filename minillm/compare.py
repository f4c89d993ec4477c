"""Side-by-side metrics of several runs: ``python -m minillm.compare RESULT_OR_RUN_DIR... [--out table.md]``.

Each argument is a ``results.json`` (from ``minillm.run`` or ``minillm.evaluate``) or a folder holding
one or more (searched recursively, so a multirun folder gives every job). One row per evaluated model,
columns in the paper's order; columns that no file has are left out. The work is
``minillm.evaluation.report.comparison_markdown``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from minillm.cli import emit, user_errors
from minillm.evaluation.report import comparison_markdown


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minillm.compare", description="Compare the metrics of several runs side by side."
    )
    parser.add_argument("paths", nargs="+", metavar="RESULT_OR_RUN_DIR", help="results.json or run folder")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    parser.add_argument("--split", default=None, help="the split to show (default: each model's first)")
    return parser


@user_errors
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    table = comparison_markdown(args.paths, args.split)
    emit(table, args.out)


if __name__ == "__main__":
    main()
