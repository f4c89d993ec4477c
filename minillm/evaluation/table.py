"""The end-of-run table of ``minillm.run``: one row per evaluated model (teacher, student init, trained
student) and the trained − init differences under it, paired over the same prompts.

Rows are ``evaluate_model`` results keyed by split: ``rows[name][split]``.
"""

from __future__ import annotations

from minillm.evaluation.intervals import paired_bootstrap_diff


def _points(x: float, sign: str = "") -> str:
    """One decimal, without a "-0.0" for a value that rounds to zero."""
    text = f"{x:{sign}.1f}"
    return text.replace("-0.0", "+0.0" if sign else "0.0") if text.lstrip("+-") == "0.0" else text


def _ci(ci) -> str:
    return "" if ci is None else f" [{_points(ci[0])}, {_points(ci[1])}]"


def format_table(rows: dict[str, dict], split: str) -> str:
    """A small text table: one row per model, Rouge-L (mean ± std over the sampling seeds) and validity
    (mean [95% bootstrap interval over prompts])."""
    lines = [f"{'model':<22} {'Rouge-L':>14} {'valid % [95% CI]':>20} {'length':>8}", "-" * 67]
    for name, res in rows.items():
        r = res.get(split)
        if r is None:
            continue
        if r["valid_rate"] is None:
            valid = "n/a"
        elif r.get("valid_rate_ci95") is not None:
            valid = f"{r['valid_rate']:.1f}{_ci(r['valid_rate_ci95'])}"
        else:  # a results file from before the intervals
            valid = f"{r['valid_rate']:.1f} ± {r['valid_rate_std']:.1f}"
        lines.append(
            f"{name:<22} {r['rougeL']:>7.1f} ± {r['rougeL_std']:<4.1f} {valid:>20} {r['length']:>8.1f}"
        )
    return "\n".join(lines)


COMPARED = (("valid", "validity", "valid_per_prompt"), ("rougeL", "Rouge-L", "rougeL_per_prompt"))


def compare_to_init(rows: dict[str, dict], split: str) -> dict:
    """Trained student − student init on the same prompts: ``compare/<metric>_diff`` (points) and
    ``compare/<metric>_diff_ci95`` (paired bootstrap over prompts), ``compare/<metric>_prompts``; {} when
    the table has no init row (eval.compare=false)."""
    init, trained = rows.get("student init", {}).get(split), rows.get("trained student", {}).get(split)
    if init is None or trained is None:
        return {}
    out = {"compare/seeds": len(trained.get("seeds") or [])}
    for key, _, vector in COMPARED:
        diff, ci, used = paired_bootstrap_diff(trained[vector], init[vector])
        out.update(
            {f"compare/{key}_diff": diff, f"compare/{key}_diff_ci95": ci, f"compare/{key}_prompts": used}
        )
    return out


def format_comparison(compare: dict, split: str) -> str:
    """The lines under the table: each difference with its interval, then whether it is beyond noise."""
    if not compare:
        return ""
    seeds = compare["compare/seeds"]
    lines, verdicts = [], []
    for key, label, _ in COMPARED:
        diff, ci = compare[f"compare/{key}_diff"], compare[f"compare/{key}_diff_ci95"]
        used = compare[f"compare/{key}_prompts"]
        if diff is None:
            lines.append(f"trained − init {label}: n/a (no {split} prompt has a checker)")
            continue
        lines.append(
            f"trained − init {label}: {_points(diff, '+')} points{_ci(ci)} (paired bootstrap over the {used} "
            f"{split} prompts × {seeds} sampling seed{'s' if seeds != 1 else ''})"
        )
        if ci[0] > 0 or ci[1] < 0:
            verdicts.append(f"{label} is {'higher' if diff > 0 else 'lower'} than the init's beyond noise")
        else:
            verdicts.append(f"{label} is within noise of the init's")
    if verdicts:
        lines.append(
            f"The trained student's {' and its '.join(verdicts)} "
            "(beyond noise: the 95% interval of the difference excludes 0)."
        )
    return "\n".join(lines)


ROW_PREFIX = {"trained student": "test", "teacher": "teacher", "student init": "init"}


def headline_metrics(table: dict[str, dict], split: str) -> dict:
    """``test/…``, ``teacher/…``, ``init/…`` (Rouge-L, validity and its interval) of the table's rows on
    ``split``, and the trained − init comparison (``compare/…``)."""
    out = {}
    for name, res in table.items():
        prefix = ROW_PREFIX[name]
        out[f"{prefix}/rougeL"] = res[split]["rougeL"]
        out[f"{prefix}/valid_rate"] = res[split]["valid_rate"]
        out[f"{prefix}/valid_rate_ci95"] = res[split].get("valid_rate_ci95")
    out.update(compare_to_init(table, split))
    return out
