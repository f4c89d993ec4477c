"""Issue 22 item 5's study: does bf16 mixed precision train to the same results as fp32, and is it faster?

Renders ``experiments/results/precision/README.md`` (every number, interval, ratio and verdict in it) and
``curves.png`` from the files committed there:

    python experiments/precision/analyze.py            # write them
    python experiments/precision/analyze.py --check    # re-render the text in memory; exit 1 at the first difference

Inputs (``--results``, default that folder): ``runs/<run>/`` (each training run's ``config.yaml``, ``metrics.csv``
— the run's ``csv/metrics.csv`` — and ``results.json``), as ``experiments/precision/run_study.sh`` leaves them:
``bf16-s<seed>`` / ``fp32-s<seed>`` (part a, the embedded pair, ``experiment=precision``),
``smollm2-bf16-s<seed>`` / ``smollm2-fp32-s<seed>`` (part b, ``experiment=precision_smollm2``) and
``make_run-<arm>`` (``make run``'s three minutes in each precision, side by side); ``auto.log`` (the one line
``trainer.precision=auto`` logs on the embedded pair); ``loads.txt`` (the workers' start/end lines with the
load average).

Intervals: a run's test score is its mean over its sampling seeds; an arm's score is the mean over its training
seeds. bf16 − fp32 carries a 95 % interval d ± t(0.975, n−1) · sqrt(s_bf16² / n + s_fp32² / n), s the standard
deviation over training seeds, with the smaller arm's degrees of freedom (conservative); the paired form (bf16
and fp32 of the same seed start from the same init and see the same batches) is the mean of the per-seed
differences ± t · s_d / sqrt(n). "Within the seed spread" means both intervals contain 0; with one seed per
arm there is no seed spread, and the comparison is reported as untested.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "experiments" / "results" / "precision"
BENCHMARKS = REPO / "docs" / "benchmarks.md"  # its `precision` section is rendered here too
if str(REPO) not in sys.path:  # run as a script: import this checkout's minillm, not an installed one
    sys.path.insert(0, str(REPO))
if str(REPO / "experiments") not in sys.path:
    sys.path.append(str(REPO / "experiments"))

import render_common as rc  # noqa: E402 (after the path is set)

from minillm.evaluation.rendered import flat  # noqa: E402

T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}  # Student's t, two-sided 95 %
ARMS = ("bf16", "fp32")
PARTS = {"embedded": "", "smollm2": "smollm2-"}  # part → run-name prefix
COLORS = {"bf16": "C3", "fp32": "C0"}
ASKED = {"fp32": "32-true", "bf16": "bf16-mixed", "auto": "auto"}  # an arm's trainer.precision setting
MAKE_RUN = ("fp32", "bf16", "auto")  # make run's arms: the old default, bf16, the new default


# --------------------------------------------------------------------------- statistics


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def unpaired(a: list[float], b: list[float]) -> tuple[float, float]:
    """mean(a) − mean(b) and the half-width of its 95 % t interval (nan with fewer than 2 values a side)."""
    d = statistics.mean(a) - statistics.mean(b)
    if min(len(a), len(b)) < 2:
        return d, float("nan")
    dof = min(len(a), len(b)) - 1
    return d, T975.get(dof, 1.96) * math.sqrt(
        statistics.variance(a) / len(a) + statistics.variance(b) / len(b)
    )


def paired(a: dict[int, float], b: dict[int, float]) -> tuple[float, float, int]:
    """Mean of a[seed] − b[seed] over the seeds both have, its 95 % half-width, and the number of pairs."""
    diffs = [a[k] - b[k] for k in sorted(set(a) & set(b))]
    if len(diffs) < 2:
        return (diffs[0] if diffs else float("nan")), float("nan"), len(diffs)
    return (
        statistics.mean(diffs),
        T975.get(len(diffs) - 1, 1.96) * statistics.stdev(diffs) / math.sqrt(len(diffs)),
        len(diffs),
    )


def contains_zero(d: float, half: float) -> bool:
    return not math.isnan(half) and d - half <= 0 <= d + half


def pmi(d: float, half: float, digits: int = 1) -> str:
    """``+d ± half`` (``+d (no interval)`` without one); a difference that rounds to zero is ``0.0``."""
    if f"{abs(d):.{digits}f}" == f"{0:.{digits}f}":
        d = 0.0
    if math.isnan(half):
        return f"{rc.signed(d, digits)} (no interval: one seed)"
    return f"{rc.signed(d, digits)} ± {half:.{digits}f}"


def word(d: float, half: float, pd: float = 0.0, phalf: float = math.inf) -> str:
    """The verdict of one measure: within the seed spread only where the unpaired interval and the one paired by
    seed both hold 0 (the rule of ``compare``'s ``same``)."""
    if math.isnan(half):
        return "untested (one seed per arm)"
    if not contains_zero(d, half):
        return f"bf16 {'above' if d > 0 else 'below'} fp32"
    if not math.isnan(phalf) and not contains_zero(pd, phalf):
        return f"bf16 {'above' if pd > 0 else 'below'} fp32 (paired by seed)"
    return "within the seed spread"


# --------------------------------------------------------------------------- reading the committed files


def read_config(path: Path) -> dict:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(path.read_text(), Loader=loader)


def read_run(folder: Path) -> dict:
    res = json.loads((folder / "results.json").read_text())
    cfg = read_config(folder / "config.yaml")
    obj = cfg["objective"]
    per_round = rc.updates_per_logged_step(obj)  # on-policy: CSV steps are rounds, converted to updates
    vals = []
    with (folder / "metrics.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("val/rougeL"):
                vals.append(
                    {
                        "opt_step": (int(float(row["step"])) + 1) * per_round,
                        "valid": float(row["val/valid_rate"]),
                        "rougeL": float(row["val/rougeL"]),
                        "loss": float(row["val/loss"]) if row.get("val/loss") else None,
                    }
                )
    test = res["eval"]["trained student"]["test"]
    return {
        "name": folder.name,
        "arm": cfg["arm_name"],
        "seed": cfg["seed"],
        "precision": str(cfg["trainer"]["precision"]),
        "rougeL": res["test/rougeL"],
        "valid": res["test/valid_rate"],
        "n_test": test["n"],
        "sampling_seeds": test["seeds"],
        "train_seconds": res["train_seconds"],
        "global_step": res["global_step"],
        "val": vals,
        "per_round": per_round,
        "config": flat(cfg),
    }


def read_loads(path: Path) -> dict[str, dict[str, str]]:
    """``== RUN start|done|stopped HH:MM:SS load a b c`` lines → {run: {"start": (time, 1-min load), …}}."""
    out: dict[str, dict[str, str]] = defaultdict(dict)
    if path.is_file():
        for m in re.finditer(r"^== (\S+) (start|done|stopped) (\S+) load (\S+)", path.read_text(), re.M):
            out[m.group(1)][m.group(2)] = (m.group(3), float(m.group(4)))
    return out


def load(folder: Path) -> dict:
    folder = Path(folder)
    runs = [read_run(f) for f in sorted((folder / "runs").iterdir()) if (f / "results.json").is_file()]
    parts: dict[str, dict[str, list[dict]]] = {p: {a: [] for a in ARMS} for p in PARTS}
    make_run = {}
    for r in sorted(runs, key=lambda r: r["seed"]):
        if r["name"].startswith("make_run-"):
            make_run[r["arm"]] = r
        else:
            part = "smollm2" if r["name"].startswith("smollm2-") else "embedded"
            parts[part][r["arm"]].append(r)
    auto = (folder / "auto.log").read_text().strip() if (folder / "auto.log").is_file() else None
    loads = folder / "loads.txt"
    notes = [ln[2:].strip() for ln in loads.read_text().splitlines() if re.match(r"# \d\d:\d\d", ln)]
    return {"parts": parts, "make_run": make_run, "auto": auto, "loads": read_loads(loads), "notes": notes}


# --------------------------------------------------------------------------- per-part comparisons


def compare(arms: dict[str, list[dict]], key: str) -> dict:
    """bf16 − fp32 of a per-run number: unpaired and paired by seed, with the verdict of each."""
    b = {r["seed"]: r[key] for r in arms["bf16"]}
    f = {r["seed"]: r[key] for r in arms["fp32"]}
    d, half = unpaired(list(b.values()), list(f.values()))
    pd, phalf, npairs = paired(b, f)
    return {
        "d": d,
        "half": half,
        "pd": pd,
        "phalf": phalf,
        "npairs": npairs,
        "same": contains_zero(d, half) and contains_zero(pd, phalf),
        "tested": not math.isnan(half),
        "fp32_std": mean_std(list(f.values()))[1],
    }


def val_mean(r: dict, key: str) -> float:
    """A run's mean over its validations (the curve's average height)."""
    return statistics.mean(v[key] for v in r["val"])


def with_val_means(arms: dict[str, list[dict]], keys: tuple[str, ...]) -> dict[str, list[dict]]:
    out = {}
    for arm, rs in arms.items():
        out[arm] = [{**r, **{f"val_{k}": val_mean(r, k) for k in keys}} for r in rs]
    return out


def part_summary(arms: dict[str, list[dict]], val_keys: tuple[str, ...]) -> dict | None:
    """The comparisons of one part; None when it has no finished run of each precision."""
    if not all(arms[a] for a in ARMS):
        return None
    arms = with_val_means(arms, val_keys)
    keys = ["rougeL", "valid"] + [f"val_{k}" for k in val_keys]
    cmp = {k: compare(arms, k) for k in keys}
    speed = {
        r["seed"]: s["train_seconds"] / r["train_seconds"]
        for r in arms["bf16"]
        for s in arms["fp32"]
        if s["seed"] == r["seed"]
    }
    return {
        "arms": arms,
        "cmp": cmp,
        "same": all(c["same"] for c in cmp.values()),
        "tested": all(c["tested"] for c in cmp.values()),
        "speed": speed,  # per seed: fp32 train seconds ÷ bf16 train seconds (the pair ran side by side)
        "seeds": {a: [r["seed"] for r in rs] for a, rs in arms.items()},
    }


def decide(s: dict) -> dict:
    """The default the study supports, per pair: bf16 only where it measured faster AND trained the same."""
    a = part_summary(s["parts"]["embedded"], ("valid", "rougeL"))
    b = part_summary(s["parts"]["smollm2"], ("loss", "rougeL"))
    steps = {arm: r["global_step"] for arm, r in s["make_run"].items()}
    bf16_faster_embedded = steps["bf16"] > steps["fp32"]
    bf16_faster_smollm2 = b is not None and min(b["speed"].values()) > 1
    return {
        "a": a,
        "b": b,
        "steps": steps,
        "bf16_faster_embedded": bf16_faster_embedded,
        "bf16_faster_smollm2": bf16_faster_smollm2,
        "bf16_default_embedded": bf16_faster_embedded and a["same"],
        "bf16_default_smollm2": bf16_faster_smollm2 and b is not None and b["same"] and b["tested"],
        # auto chooses bf16 wherever it measures faster, so it is the default only if, wherever bf16 was
        # faster, the study also found the same results; else 32-true stays
        "default": "auto" if a["same"] and (b is not None and b["tested"] and b["same"]) else "32-true",
    }


# --------------------------------------------------------------------------- figure


def curves_plot(s: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("embedded", "valid", "validation validity (%)"),
        ("embedded", "rougeL", "validation Rouge-L"),
        ("smollm2", "loss", "validation loss (nats/token)"),
        ("smollm2", "rougeL", "validation Rouge-L"),
    ]
    panels = [p for p in panels if any(s["parts"][p[0]][arm] for arm in ARMS)]
    rows = len(panels) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(11, 3.8 * rows + 0.4), squeeze=False)
    for ax, (part, key, label) in zip(axes.flat, panels, strict=True):
        for arm in ARMS:
            rs = s["parts"][part][arm]
            by_step = defaultdict(list)
            for r in rs:
                steps = [v["opt_step"] for v in r["val"]]
                ax.plot(steps, [v[key] for v in r["val"]], color=COLORS[arm], lw=0.6, alpha=0.35)
                for v in r["val"]:
                    by_step[v["opt_step"]].append(v[key])
            steps = sorted(by_step)
            means = [statistics.mean(by_step[t]) for t in steps]
            ax.plot(steps, means, marker="o", ms=3, lw=1.6, color=COLORS[arm], label=f"{arm} (n={len(rs)})")
        ax.set_xlabel("optimizer steps", fontsize=8)
        ax.set_ylabel(label, fontsize=9)
        ax.set_title(
            "embedded pair, reverse_kld" if part == "embedded" else "SmolLM2 pair (pruned10 student), sft",
            fontsize=9,
        )
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(
        "bf16-mixed against 32-true: thick lines the mean over training seeds, thin lines each seed",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------- README.md


HEADER = [
    "| precision | seed | test Rouge-L | test valid % | optimizer steps | train s |",
    "|---|---|---|---|---|---|",
]
CMP_HEADER = [
    "| measure | bf16 (mean ± std) | fp32 (mean ± std) | bf16 − fp32 [95 %] | paired by seed [95 %] | verdict |",
    "|---|---|---|---|---|---|",
]


def test_rows(p: dict, digits: int = 1) -> list[str]:
    rows = [
        f"| {arm} | {r['seed']} | {r['rougeL']:.{digits}f} | {r['valid']:.{digits}f} | "
        f"{r['global_step']} | {r['train_seconds']:.0f} |"
        for arm in ARMS
        for r in p["arms"][arm]
    ]
    rows += [
        f"| **{arm} mean ± std** | {','.join(str(r['seed']) for r in p['arms'][arm])} | "
        f"{rc.pm([r['rougeL'] for r in p['arms'][arm]], digits)} | "
        f"{rc.pm([r['valid'] for r in p['arms'][arm]], digits)} | | |"
        for arm in ARMS
    ]
    c = p["cmp"]
    rows.append(
        f"| **bf16 − fp32** | | {pmi(c['rougeL']['d'], c['rougeL']['half'])} | "
        f"{pmi(c['valid']['d'], c['valid']['half'])} | | |"
    )
    return rows


def cmp_rows(p: dict, labels: dict[str, str], digits: int = 1) -> list[str]:
    rows = []
    for key, label in labels.items():
        c = p["cmp"][key]
        b = [r[key] for r in p["arms"]["bf16"]]
        f = [r[key] for r in p["arms"]["fp32"]]
        paired_cell = pmi(c["pd"], c["phalf"], digits) if c["npairs"] > 1 else "–"
        rows.append(
            f"| {label} | {rc.pm(b, digits)} | {rc.pm(f, digits)} | {pmi(c['d'], c['half'], digits)} | "
            f"{paired_cell} | {word(c['d'], c['half'], c['pd'], c['phalf'])} |"
        )
    return rows


def sci(x: float) -> str:
    """A learning rate as the configs write it: 3e-5, 1e-4."""
    mantissa, exponent = f"{x:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def side_by_side(s: dict, prefix: str, seed: int) -> bool:
    """Whether a seed's bf16 and fp32 runs started at the same time (loads.txt)."""
    starts = [s["loads"].get(f"{prefix}{arm}-s{seed}", {}).get("start") for arm in ARMS]
    return None not in starts and starts[0][0] == starts[1][0]


def speed_cell(s: dict, p: dict, prefix: str) -> str:
    """fp32 ÷ bf16 training time per seed whose two runs started together; the others named as not."""
    together = {k: v for k, v in sorted(p["speed"].items()) if side_by_side(s, prefix, k)}
    apart = [k for k in sorted(p["speed"]) if k not in together]
    cells = [f"seed {k}: {v:.2f} ×" for k, v in together.items()]
    if apart:
        cells.append(f"seed {', '.join(map(str, apart))} not timed side by side")
    return ", ".join(cells) if cells else "no pair"


def when(s: dict, name: str) -> str:
    """``HH:MM:SS–HH:MM:SS UTC, 1-min load a → b`` of a run, from loads.txt (``stopped`` for one stopped by hand)."""
    times = s["loads"].get(name, {})
    end = "done" if "done" in times else "stopped"
    if "start" in times and end in times:
        (t0, l0), (t1, l1) = times["start"], times[end]
        return f"{t0}–{t1} UTC{' (stopped)' if end == 'stopped' else ''}, 1-min load {l0:.1f} → {l1:.1f}"
    return "time not recorded"


def make_run_sentence(s: dict, dec: dict) -> str:
    """How many more steps make run's three minutes train under the new default than the old (32-true)."""
    mr, steps = s["make_run"], dec["steps"]
    chose = mr["auto"]["precision"]
    ratio = steps["bf16"] / steps["fp32"]
    bf16_vs = (
        f"bf16-mixed trained {steps['bf16']} optimizer steps against fp32's {steps['fp32']} ({ratio:.2f} ×)"
    )
    auto_vs = f"`auto` chose `{chose}` and trained {steps['auto']}"
    if dec["default"] == "32-true":
        return (
            f"**none**: the default stays `32-true` (above). Measured side by side: {bf16_vs}; {auto_vs}"
            + (" (the computation of fp32: their difference is the load)" if chose == "32-true" else "")
        )
    if chose == "32-true":
        return (
            f"**none**: on the embedded pair the new default `auto` chose `32-true`, the computation of the old "
            f"default, because bf16 measured slower there: {bf16_vs}; {auto_vs} (their difference is the load)"
        )
    return (
        f"{auto_vs} against the old default's {steps['fp32']} ({steps['auto'] - steps['fp32']:+d}); {bf16_vs}"
    )


def default_sentence(dec: dict) -> str:
    """What ``trainer=cpu``'s default is, and why (decide()["default"] is what conf/trainer/cpu.yaml must say)."""
    a, b = dec["a"], dec["b"]
    if dec["default"] == "auto":
        return (
            "`trainer=cpu` defaults to `trainer.precision=auto`: bf16-mixed only where its start-up probe measures "
            "it faster, which this study found to train to the same results"
        )
    if not a["same"]:
        return "`trainer=cpu` keeps `trainer.precision=32-true`: bf16 did not train the embedded pair to the same results"
    why_b = (
        "part (b) did not run"
        if b is None
        else ("its one seed per precision leaves it untested" if not b["tested"] else "a difference there")
    )
    embedded = (
        "faster"
        if dec["bf16_faster_embedded"]
        else "slower (`make run`, below), so fp32 is the faster path there, and `auto` would choose it too"
    )
    return (
        "`trainer=cpu` keeps `trainer.precision=32-true`. On the embedded pair bf16 trained to the same results "
        f"but {embedded}; on the SmolLM2 pair, "
        f"where bf16 is faster (`make bench`, docs/benchmarks.md) and `auto` would choose it, the same results are not shown "
        f"({why_b}), so `auto` is not made the default; `trainer.precision=auto` opts in"
    )


def verdict_lines(s: dict, dec: dict) -> list[str]:
    """The study's verdict as markdown bullets (the README's and docs/benchmarks.md's)."""
    a, b = dec["a"], dec["b"]
    ra = a["arms"]["fp32"][0]
    if a["same"]:
        verdict_a = (
            "**the same results**: every difference between bf16-mixed and fp32 lies within the seed spread"
        )
    else:
        verdict_a = "**not the same**: a difference lies outside the seed spread, so bf16 is not the default"
    half_r, half_v = a["cmp"]["rougeL"]["half"], a["cmp"]["valid"]["half"]
    lines = [
        f"- **Embedded pair** (`objective=reverse_kld`, {len(a['arms']['bf16'])} seeds × "
        f"{ra['config']['trainer.max_steps']} steps per precision): {verdict_a}. The 95 % intervals are wide "
        f"(± {half_r:.1f} Rouge-L and ± {half_v:.1f} validity points on test), so a smaller effect could not be "
        "seen here.",
    ]
    if b is None:
        lines.append(f"- **SmolLM2 pair** (`objective=sft`, 100 steps): **not run** — {smollm2_stopped(s)}.")
    else:
        nb = len(b["arms"]["bf16"])
        if not b["tested"]:
            verdict_b = (
                f"**untested**: {nb} seed per precision leaves no seed spread to compare with; "
                + loss_side(b)[2]
                + " (its section below), so the same results are not shown there"
            )
        elif b["same"]:
            verdict_b = "**the same results**: every difference lies within the seed spread"
        else:
            verdict_b = f"**not the same**: {outside(b, SMOLLM2_LABELS)}"
        lines.append(
            f"- **SmolLM2 pair** (`objective=sft`, {nb} seed{'s' if nb != 1 else ''} × "
            f"{b['arms']['fp32'][0]['config']['trainer.max_steps']} steps per precision): {verdict_b}."
        )
    speed = f"embedded {speed_cell(s, a, PARTS['embedded'])}"
    if b is not None:
        speed += f"; SmolLM2 {speed_cell(s, b, PARTS['smollm2'])}"
    lines += [
        f"- **Speed** (training time fp32 ÷ bf16 of the two runs of a seed under the shared machine's load): "
        f"{speed}.",
        f"- **Default** (item 6): {default_sentence(dec)}.",
        f"- **`make run`'s three minutes**: {make_run_sentence(s, dec)}.",
    ]
    return lines


SMOLLM2_LABELS = {
    "rougeL": "test Rouge-L",
    "valid": "test valid %",
    "val_loss": "validation loss (mean over the curve)",
    "val_rougeL": "validation Rouge-L (mean over the curve)",
}


def outside(p: dict, labels: dict[str, str]) -> str:
    """Which measures' differences lie outside the seed spread, with their intervals."""
    parts = []
    for key, label in labels.items():
        c = p["cmp"][key]
        if c["same"]:
            continue
        which = "paired by seed" if contains_zero(c["d"], c["half"]) else "unpaired"
        d, half = (c["pd"], c["phalf"]) if which == "paired by seed" else (c["d"], c["half"])
        parts.append(f"{label}, bf16 − fp32 {pmi(d, half, 2)} ({which}, 95 %)")
    return "the difference lies outside the seed spread for " + "; ".join(parts)


def smollm2_stopped(s: dict) -> str:
    """Why part (b) has no result: its runs' start and stop in loads.txt."""
    runs = {k: v for k, v in s["loads"].items() if k.startswith("smollm2-") and "stopped" in v}
    if not runs:
        return "no run was started"
    (t0, l0), (t1, l1) = next(iter(runs.values()))["start"], next(iter(runs.values()))["stopped"]
    return (
        f"its {len(runs)} runs (bf16 and fp32, seed 0, side by side) started at {t0} UTC (1-min load {l0:.1f}) and "
        f"were stopped at {t1} UTC (load {l1:.1f}) before their first validation (step 25), so that part (a) "
        "could finish on the shared 2 cores by the session's deadline"
    )


def loss_side(b: dict) -> tuple[list[int], list[float], str]:
    """Seed 0's validation steps, bf16 − fp32 validation loss at each, and on which side bf16's loss lies."""
    pair = {arm: next(r for r in b["arms"][arm] if r["seed"] == 0) for arm in ARMS}
    steps = [v["opt_step"] for v in pair["fp32"]["val"]]
    gaps = [x["loss"] - y["loss"] for x, y in zip(pair["bf16"]["val"], pair["fp32"]["val"], strict=True)]
    side = "above" if all(g > 0 for g in gaps) else "below" if all(g < 0 for g in gaps) else None
    where = (
        f"bf16's validation loss lies {side} fp32's at every validation"
        if side
        else "the sign changes along the run"
    )
    return steps, gaps, where


def loss_gaps(b: dict) -> str:
    steps, gaps, where = loss_side(b)
    tail = (
        "with one seed per precision this is not tested against the seed spread."
        if not b["tested"]
        else "the other seeds' curves are in the figure, and the table above compares the curves' means."
    )
    return (
        f"bf16 − fp32 validation loss (seed 0) at steps {', '.join(map(str, steps))}: "
        f"{', '.join(rc.signed(g, 3) for g in gaps)}: {where}; {tail}"
    )


def smollm2_section(s: dict, b: dict | None) -> list[str]:
    """Part (b)'s section: its tables, or why it has none."""
    if b is None:
        return [
            "## (b) SmolLM2 pair: `objective=sft`, 100 steps — not run",
            "",
            f"`experiment=precision_smollm2` (the config, as it would run): {smollm2_stopped(s)}. What bf16 costs "
            "or saves on this pair is measured by `make bench` (docs/benchmarks.md: a MiniLLM round is faster under "
            "bf16-mixed); whether it trains to the same results is open.",
            "",
        ]
    rb = b["arms"]["fp32"][0]
    cb = rb["config"]
    return [
        f"## (b) SmolLM2 pair: `objective=sft`, {cb['trainer.max_steps']} steps",
        "",
        "`teacher=smollm2_135m student=smollm2_pruned10` (SmolLM2-135M-Instruct's every third layer, 63.7M), "
        f"trained with SFT straight from the pruning, batch {cb['data.batch_size']}, lr {sci(cb['optim.lr'])} "
        f"constant after {cb['scheduler.num_warmup_steps']} warm-up steps, on {cb['data.n_train']} "
        f"bundled training records in chat format. Test: the first {rb['n_test']} test prompts, sampling seed(s) "
        f"{', '.join(map(str, rb['sampling_seeds']))}; validation every {cb['trainer.val_check_interval']} steps "
        f"(loss on {cb['trainer.limit_val_batches']} batches of {cb['data.eval_batch_size']}, Rouge-L on "
        f"{cb['eval.val_samples']} generations, one sampling seed).",
        "",
        *HEADER,
        *test_rows(b, digits=2),
        "",
        *CMP_HEADER,
        *cmp_rows(b, SMOLLM2_LABELS, digits=3),
        "",
        "Last validation loss: "
        + "; ".join(f"{r['name']} {r['val'][-1]['loss']:.3f}" for arm in ARMS for r in b["arms"][arm])
        + ". "
        + loss_gaps(b),
        "",
    ]


def readme(s: dict) -> str:
    dec = decide(s)
    a, b, mr = dec["a"], dec["b"], s["make_run"]
    ra = a["arms"]["fp32"][0]
    ca = ra["config"]
    lines = [
        "# bf16 mixed precision against fp32: the same results, and faster? (issue 22, item 5)",
        "",
        "Rendered by `python experiments/precision/analyze.py` from the committed files in this folder (`runs/`, "
        "`auto.log`, `loads.txt`); `tests/test_study_reports.py` checks that this file is its rendering.",
        "",
        "## Verdict",
        "",
        *verdict_lines(s, dec),
        "",
        f"`trainer.precision=auto` on the embedded pair logged: `{s['auto'] or '(not run)'}`",
        "",
        "![curves](curves.png)",
        "",
        f"## (a) Embedded pair: `objective=reverse_kld`, {len(a['arms']['bf16'])} seeds × "
        f"{ca['trainer.max_steps']} steps",
        "",
        f"From the shipped init with the shipped teacher, lr {sci(ca['optim.lr'])} constant, "
        f"{ca['objective.num_rollouts']} rollouts per round. Test split ({ra['n_test']} prompts × sampling seeds "
        f"{', '.join(map(str, ra['sampling_seeds']))}; a run's score is its mean over them). bf16 − fp32: the "
        "difference of the arm means with its 95 % t interval over training seeds.",
        "",
        *HEADER,
        *test_rows(a),
        "",
        f"Every comparison; paired: the mean of the per-seed differences (a seed gives both precisions the same "
        f"init and batches). Validation: a run's mean over its {len(ra['val'])} validations, every "
        f"{ra['val'][0]['opt_step']} optimizer steps on the first {ca['eval.val_samples']} valid prompts, one "
        "sampling seed.",
        "",
        *CMP_HEADER,
        *cmp_rows(
            a,
            {
                "rougeL": "test Rouge-L",
                "valid": "test valid %",
                "val_rougeL": "validation Rouge-L (mean over the curve)",
                "val_valid": "validation valid % (mean over the curve)",
            },
        ),
        "",
        *smollm2_section(s, b),
        "## (c) `make run`'s three minutes in each precision",
        "",
        "`make run` (`trainer.max_time=00:00:03:00`, every other key its default) with `trainer.precision=32-true` "
        "(the old default), `bf16-mixed` and `auto` (the default the study would switch to), the three side by side with one torch "
        "thread each, so that all saw the same load ("
        + "; ".join(f"make_run-{arm}: {when(s, 'make_run-' + arm)}" for arm in MAKE_RUN if arm in mr)
        + "):",
        "",
        "| `trainer.precision` | trained in | optimizer steps in 3 minutes | test Rouge-L | test valid % |",
        "|---|---|---|---|---|",
        *(
            f"| {ASKED[arm]} | {mr[arm]['precision']} | "
            f"{mr[arm]['global_step']} | {mr[arm]['rougeL']:.1f} | {mr[arm]['valid']:.1f} |"
            for arm in MAKE_RUN
            if arm in mr
        ),
        "",
        f"(Test: the first {mr['fp32']['n_test']} test prompts, one sampling seed: a check that each trained, not "
        "a comparison.)",
        "",
        "## Setup and commands",
        "",
        "2 CPU cores shared with six other developers' jobs, one torch thread per run, up to nine of this "
        "study's runs side by side; torch's CPU bf16 autocast under `trainer.precision=bf16-mixed` (losses, "
        "log-softmax, rewards and ratios stay fp32). When each run trained, with the 1-minute load average at its "
        "start and end (`loads.txt`): "
        + "; ".join(
            f"{name} {when(s, name)}" for name in sorted(s["loads"]) if not name.startswith("make_run")
        )
        + ". Runs marked stopped were stopped by hand and have no results."
        + "".join(f" Note in `loads.txt`: {note}." for note in s["notes"]),
        "",
        "```bash",
        "S=experiments/precision/run_study.sh",
        "for seed in 0 1 2; do bash $S embedded bf16 $seed & bash $S embedded fp32 $seed & done; wait   # part (a)",
        "bash $S smollm2 bf16 0 & bash $S smollm2 fp32 0; wait                                         # part (b)",
        "bash $S make_run                                   # part (c), side by side; writes auto.log",
        "cat multirun/precision/worker*.log > experiments/results/precision/loads.txt",
        "python experiments/precision/analyze.py",
        "```",
        "",
        "The Hydra sweeps of parts (a) and (b): `python -m minillm.run -m experiment=precision` and "
        "`python -m minillm.run -m experiment=precision_smollm2` (`+arm=precision/bf16,precision/fp32` × seeds "
        "0, 1, 2).",
        "",
        "## What was not done",
        "",
        *not_done(a, b),
    ]
    return rc.wrap("\n".join(lines) + "\n")


def not_done(a: dict, b: dict) -> list[str]:
    lines = []
    if b is None:
        lines.append(
            "- Part (b), the SmolLM2 pair (see its section): not run, so the default does not switch to `auto`, "
            "which would choose bf16 there."
        )
    elif len(b["arms"]["bf16"]) < 3:
        nb = len(b["arms"]["bf16"])
        secs = [r["train_seconds"] for arm in ARMS for r in b["arms"][arm]]
        lines.append(
            f"- The SmolLM2 part ran {nb} seed per precision, not 3: on the shared machine its 100 steps took "
            f"{rc.span(secs, 0)} s of training each, plus their evaluations, and the session's time ran out. "
            "Without a seed spread its comparison is untested, and its evaluation is small for the same reason "
            f"(the first {b['arms']['fp32'][0]['n_test']} test prompts, one sampling seed)."
        )
    lines.append(
        "- Training times here are load-dependent (the load moved during the runs, and not every pair started "
        "together); `make bench` (docs/benchmarks.md) measures the ratios alternately."
    )
    return lines


# --------------------------------------------------------------------------- entry point


def benchmarks_doc(s: dict, doc: Path = BENCHMARKS) -> str:
    """docs/benchmarks.md with its ``precision`` section (between ``<!-- rendered:precision ... -->`` and
    ``<!-- /rendered:precision -->``) replaced by the study's verdict; the rest of the file as committed."""
    text = doc.read_text()
    marked = re.compile(r"(<!-- rendered:precision[^\n]*-->\n)(.*?)(<!-- /rendered:precision -->)", re.DOTALL)
    if len(marked.findall(text)) != 1:
        raise SystemExit(
            f"{doc}: mark the study's section once with <!-- rendered:precision --> … <!-- /rendered:precision -->"
        )
    body = "\n".join(
        [
            "The study `experiments/precision/` (its README, with every table, interval and command: "
            "[experiments/results/precision/README.md](../experiments/results/precision/README.md)):",
            "",
            *verdict_lines(s, decide(s)),
            "",
            "![bf16-mixed against fp32](../experiments/results/precision/curves.png)",
            "",
        ]
    )
    return marked.sub(lambda m: m.group(1) + rc.wrap(body) + m.group(3), text)


def render(folder: Path = RESULTS, figures: bool = True) -> dict[str, str]:
    """The text report files of ``folder`` (name → text): its README.md, and docs/benchmarks.md with the
    study's section rendered (named relative to ``folder``); with ``figures``, curves.png is drawn too."""
    s = load(Path(folder))
    if figures:
        curves_plot(s, Path(folder) / "curves.png")
    doc = os.path.relpath(BENCHMARKS, Path(folder).resolve())
    return {"README.md": readme(s), doc: benchmarks_doc(s)}


def main(argv=None) -> int:
    from minillm.evaluation.rendered import study_main

    return study_main(render, RESULTS, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
