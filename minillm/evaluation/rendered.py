"""Committed study reports as rendered text: write them, or check that the committed files match.

A study's analysis script renders every report file of ``experiments/results/<study>/`` (README.md, report.md,
...) from the committed per-run files; ``--check`` re-renders in memory and names the first line that differs,
so a sentence typed into a results README that its numbers do not bear out fails the check.
"""

from __future__ import annotations

import sys
from pathlib import Path


def first_difference(rendered: dict[str, str], folder: Path) -> str | None:
    """The first file (in ``rendered``'s order) and line where ``folder``'s committed text differs from
    ``rendered`` (relative name → text), as one line; None when every file matches."""
    for name, text in rendered.items():
        path = Path(folder) / name
        if not path.is_file():
            return f"{path}: not committed (the script renders it)"
        committed = path.read_text()
        if committed == text:
            continue
        old, new = committed.splitlines(), text.splitlines()
        for i, (a, b) in enumerate(zip(old, new, strict=False)):
            if a != b:
                return f"{path}:{i + 1}: committed {a!r}, rendered {b!r}"
        i = min(len(old), len(new))
        if len(old) != len(new):
            extra = old[i] if len(old) > len(new) else new[i]
            side = "committed only" if len(old) > len(new) else "rendered only"
            return f"{path}:{i + 1}: {side} {extra!r}"
        return f"{path}: differs in line endings or the final newline"
    return None


def write_or_check(rendered: dict[str, str], folder: Path, check: bool) -> int:
    """``check``: print the first difference to stderr and return 1 (0 when all match); else write every
    file into ``folder`` and return 0."""
    folder = Path(folder)
    if check:
        problem = first_difference(rendered, folder)
        if problem:
            print(f"differs from its rendering: {problem}", file=sys.stderr)
            return 1
        print(f"{folder}: {len(rendered)} files match their rendering")
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        (folder / name).write_text(text)
    return 0


def study_main(render, default_folder: Path, description: str, argv=None) -> int:
    """The command line of a study script whose ``render(folder, figures)`` also draws its figures:
    ``--results`` (the study's folder), ``--check`` (re-render the text in memory, exit 1 naming the first
    difference; figures are not redrawn) and ``--no-figures``."""
    import argparse

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument(
        "--results",
        type=Path,
        default=default_folder,
        help="the study's results folder (default: %(default)s)",
    )
    ap.add_argument(
        "--check", action="store_true", help="re-render the text in memory; exit 1 at the first difference"
    )
    ap.add_argument("--no-figures", action="store_true", help="do not redraw the figures")
    args = ap.parse_args(argv)
    rendered = render(args.results, figures=not (args.check or args.no_figures))
    return write_or_check(rendered, args.results, args.check)


def flat(tree: dict, prefix: str = "") -> dict:
    """A nested config as ``{"a.b.c": value}`` (a run's config.yaml, read by the study scripts)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
