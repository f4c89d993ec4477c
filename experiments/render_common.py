"""What the per-study ``render.py`` scripts share: number formatting, reading committed files, and the command
line that writes a study's rendered files or checks them against the committed ones.

Each ``experiments/<study>/render.py`` defines ``render(folder) -> {relative path: text}``: every file of the
study that holds a number or a verdict, rendered from the study's committed result files alone (no training,
no model). ``python experiments/<study>/render.py`` rewrites those files; ``--check`` only compares and exits
1 listing the files that differ. ``tests/test_study_reports.py`` runs the same comparison.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import textwrap
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def updates_per_logged_step(objective: dict) -> int:
    """Optimizer updates per CSV step of a run with this resolved ``objective`` node: an on-policy run (its
    module's ``_target_``, or ``kind: on_policy`` in configs saved before the schema) logs once per round of
    ``ppo_epochs`` × minibatches updates; every other run once per update."""
    target = str((objective.get("module") or {}).get("_target_", ""))
    if objective.get("kind") == "on_policy" or target.endswith("OnPolicyModule"):
        return objective["ppo_epochs"] * math.ceil(objective["num_rollouts"] / objective["mini_batch_size"])
    return 1


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def pm(values: list[float], digits: int = 1) -> str:
    """``mean ± std`` over the values; one value alone; a dash for none."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    m, s = mean_std(values)
    return f"{m:.{digits}f}" if len(values) == 1 else f"{m:.{digits}f} ± {s:.{digits}f}"


def signed(value: float, digits: int = 1) -> str:
    """``+1.2`` / ``−0.8`` (a true minus sign, as the READMEs write it)."""
    text = f"{value:+.{digits}f}"
    return text.replace("-", "−")


def span(values: list[float], digits: int = 1, sep: str = "–") -> str:
    """``low–high`` of the values, rounded; one number when both round alike."""
    low, high = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
    return low if low == high else f"{low}{sep}{high}"


def main(render, default_folder: Path, doc: str) -> None:
    """The command line of a study's ``render.py``: write the rendered files, or ``--check`` them (exit 1 naming
    the first differing file and line)."""
    from minillm.evaluation.rendered import write_or_check

    parser = argparse.ArgumentParser(description=doc.strip().split("\n")[0])
    parser.add_argument("folder", type=Path, nargs="?", default=default_folder)
    parser.add_argument(
        "--check", action="store_true", help="compare with the committed files; write nothing"
    )
    args = parser.parse_args()
    sys.exit(write_or_check(render(args.folder), args.folder, args.check))


def wrap(text: str, width: int = 115) -> str:
    """Markdown with its prose paragraphs and bullets wrapped at ``width`` (bullets' continuation lines indented
    by two spaces); headings, tables, code blocks and image lines are left as they are."""
    out, fenced = [], False
    for line in text.split("\n"):
        if line.startswith("```"):
            fenced = not fenced
        if fenced or line.startswith(("```", "|", "#", "![")) or len(line) <= width:
            out.append(line)
            continue
        item = re.match(r"(- |\d+\. )", line)  # a list item: its continuation lines indented under its text
        # No break before a lone ">" (a continuation line starting with it would be a block quote)
        line = line.replace(" > ", "\0>\0")
        out.append(
            textwrap.fill(
                line,
                width,
                subsequent_indent=" " * len(item.group(1)) if item else "",
                break_long_words=False,
                break_on_hyphens=False,
            ).replace("\0", " ")
        )
    return "\n".join(out)


# --------------------------------------------------------------------------- studies made with minillm.report

REFERENCE = RESULTS / "scaling" / "runs" / "embedded-reverse_kld-s0" / "results.json"
REFERENCE_NOTE = (
    "the shipped teacher and init as evaluated beside the scaling study's `embedded` arm "
    "(`../scaling/runs/embedded-reverse_kld-s0/results.json`: the same model paths, the same 200 test prompts × "
    "3 sampling seeds)"
)


def reference() -> tuple[dict, dict]:
    """The shipped teacher's and student init's test metrics on the first 200 prompts × 3 sampling seeds."""
    evals = read_json(REFERENCE)["eval"]
    return evals["teacher"]["test"], evals["student init"]["test"]


def rv(metrics: dict, digits: int = 1) -> str:
    """``Rouge-L ± std / valid ± std`` of one evaluation (std over sampling seeds)."""
    return (
        f"{metrics['rougeL']:.{digits}f} ± {metrics['rougeL_std']:.{digits}f} / "
        f"{metrics['valid_rate']:.{digits}f} ± {metrics['valid_rate_std']:.{digits}f}"
    )


def runs(root: Path) -> dict[str, list[dict]]:
    """The rows of ``python -m minillm.report root``: per run group, each seed's flat metrics."""
    from minillm.evaluation.report import collect

    return collect(root, "test")[0]


def trained(job: Path) -> dict:
    """The trained student's test metrics of one run folder (with the sampling stds)."""
    return read_json(job / "results.json")["eval"]["trained student"]["test"]


def report_text(root: Path, figures: Path) -> str:
    """``report.md`` as ``python -m minillm.report root --out figures/report.md`` writes it, with the links to
    the figures committed beside it (the figures themselves are not redrawn)."""
    from minillm.evaluation.report import report_markdown

    text = report_markdown(root, "test")
    names = [n for n in ("learning_curves", "alpha", "scaling") if (figures / f"{n}.png").is_file()]
    if names:
        text += "\n\n" + "\n".join(f"![{n}]({n}.png)" for n in names)
    return text + "\n"
