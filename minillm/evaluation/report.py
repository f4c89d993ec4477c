"""Markdown views of results: the side-by-side metric table (``minillm.compare``) and ``summary.md``.

Both read the one results layout shared by ``minillm.run`` and ``minillm.evaluate``:
``results["eval"][model name][split]`` holds a model's scalar metrics on a split.
"""

from __future__ import annotations

import json
from pathlib import Path

from minillm.errors import MinillmError

# (header, key, std key, format) in the paper's order: quality, then exposure bias, calibration, diversity.
COLUMNS = (
    ("Rouge-L", "rougeL", "rougeL_std", "{:.1f}"),
    ("EM", "exact_match", None, "{:.1f}"),
    ("valid %", "valid_rate", "valid_rate_std", "{:.1f}"),
    ("ExAccErr %", "exaccerr", None, "{:.1f}"),
    ("ECE", "ece", None, "{:.3f}"),
    ("label acc %", "calibration_accuracy", None, "{:.1f}"),
    ("Dist-4", "distinct4", None, "{:.1f}"),
    ("test loss", "test_loss", None, "{:.3f}"),
    ("length", "length", None, "{:.1f}"),
)


def _cell(metrics: dict, key: str, std_key: str | None, fmt: str) -> str:
    value = metrics.get(key)
    if value is None:
        return "–"
    text = fmt.format(value)
    if std_key and metrics.get(std_key) is not None and len(metrics.get("seeds") or ()) > 1:
        text += " ± " + fmt.format(metrics[std_key])
    return text


def metric_table(rows: list[tuple[str, dict]]) -> str:
    """A markdown table, one row per (label, metrics); a column appears when any row has its metric."""
    columns = [c for c in COLUMNS if any(m.get(c[1]) is not None for _, m in rows)]
    lines = [
        "| model | " + " | ".join(c[0] for c in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for label, metrics in rows:
        cells = [_cell(metrics, key, std, fmt) for _, key, std, fmt in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def breakdown_table(groups: dict[str, dict], first: str) -> str:
    """Rouge-L / exact match / validity per group (category or length bucket) as markdown."""
    lines = [f"| {first} | n | Rouge-L | EM | valid % |", "|---|---:|---:|---:|---:|"]
    for name, g in groups.items():
        cells = [_cell(g, k, None, "{:.1f}") for k in ("rougeL", "exact_match", "valid_rate")]
        lines.append(f"| {name} | {g.get('n', 0)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- reading results files


def find_results(paths: list[str | Path]) -> list[Path]:
    """results.json files named directly or found in run directories (searched recursively, sorted)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            direct = path / "results.json"
            hits = [direct] if direct.is_file() else sorted(path.rglob("results.json"))
            if not hits:
                raise MinillmError(f"{path}: no results.json in this folder or below it")
            found.extend(hits)
        else:
            raise MinillmError(f"{path}: no such results file or run directory")
    return found


def load_results(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise MinillmError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("eval"), dict):
        raise MinillmError(f"{path}: not a minillm results file (no 'eval' section)")
    return data


def _run_labels(paths: list[Path], datas: list[dict]) -> list[str]:
    """The run name of each file, or its folder's name; made unique with the folder path if needed."""
    labels = [
        str((d.get("config") or {}).get("run_name") or p.parent.name)
        for p, d in zip(paths, datas, strict=True)
    ]
    return [
        f"{label} ({p.parent})" if labels.count(label) > 1 else label
        for p, label in zip(paths, labels, strict=True)
    ]


def comparison_rows(paths: list[Path], split: str | None = None) -> list[tuple[str, dict]]:
    """One row per model of each file, on ``split`` (default: each model's first split)."""
    datas = [load_results(p) for p in paths]
    labels = _run_labels(paths, datas)
    rows = []
    for path, data, label in zip(paths, datas, labels, strict=True):
        for model, splits in data["eval"].items():
            if not isinstance(splits, dict) or not splits:
                continue
            chosen = split or next(iter(splits))
            if chosen not in splits:
                raise MinillmError(f"{path}: model {model!r} has no results on split {chosen!r}")
            name = model if len(paths) == 1 else f"{label}: {model}"
            rows.append((name, splits[chosen]))
    if not rows:
        raise MinillmError("no evaluated model in the given results files")
    return rows


# --------------------------------------------------------------------------- summary.md of one evaluation


def _fmt(value, fmt: str = "{:.1f}") -> str:
    return "–" if value is None else fmt.format(value)


def summary_markdown(results: dict) -> str:
    """The human-readable summary of one ``minillm.evaluate`` run."""
    name, split = results["model"], results["split"]
    m = results["eval"][name][split]
    out = [
        f"# Evaluation: {name} on the {split} split",
        "",
        f"Model: `{results.get('source')}`. Seeds {m.get('seeds')}, {m.get('n')} prompts, temperature "
        f"{results['settings']['temperature']}, top-k {results['settings']['top_k']}, top-p "
        f"{results['settings']['top_p']}, no_repeat_ngram_size {results['settings']['no_repeat_ngram_size']}.",
        "",
        metric_table([(name, m)]),
        "",
    ]
    if m.get("by_length"):
        out += ["## By gold-response length (tokens)", "", breakdown_table(m["by_length"], "length"), ""]
    if m.get("per_category"):
        out += ["## By category", "", breakdown_table(m["per_category"], "category"), ""]
    exposure = results.get("exposure")
    if exposure and exposure.get("steps"):
        out += [
            "## Exposure bias (ExAccErr)",
            "",
            f"{exposure['n_prompts']} prompts × {exposure['samples_per_prompt']} samples from each model. "
            f"ExAccErr mean over l ≤ {exposure['reliable_steps']}: {_fmt(exposure['exaccerr_mean'])} %; "
            f"at l = {exposure['reliable_steps']}: {_fmt(exposure['exaccerr_final'])} %. "
            "Curve data: `exaccerr.csv`.",
            "",
            "![ExAccErr](exaccerr.png)",
            "",
        ]
    elif exposure and exposure.get("skipped"):
        out += ["## Exposure bias (ExAccErr)", "", f"Skipped: {exposure['skipped']}.", ""]
    for source, cal in (results.get("calibration") or {}).items():
        if cal.get("skipped"):
            out += [f"## Calibration ({source})", "", f"Skipped: {cal['skipped']}.", ""]
            continue
        out += [
            f"## Calibration ({source})",
            "",
            f"{cal['n']} classification prompts: ECE {_fmt(cal['ece'], '{:.3f}')}, accuracy "
            f"{_fmt(cal['accuracy'])} %, mean confidence {_fmt(cal['confidence'], '{:.3f}')}, phrasing "
            f"coverage {_fmt(cal['coverage'], '{:.2g}')}.",
            "",
            f"![reliability]({cal['plot']})",
            "",
        ]
    samples = m.get("samples") or []
    if samples:
        out += ["## Samples (first seed)", ""]
        for s in samples:
            out += [
                f"- **{s['instruction']}**  ",
                f"  reference: {s['reference']}  ",
                f"  model: {s['response']}",
            ]
        out.append("")
    return "\n".join(out)
