"""Issue 16's study: every method in one loop, at equal wall-clock time and at equal optimizer steps.

Renders every report file of ``experiments/results/methods_compare/`` from the files committed there:
``README.md`` (each number, interval and verdict in it), ``report.md``, ``jobs.json``, ``study_table.md``
(``minillm.report``'s table) and the figures ``methods.png`` and ``learning_curves.png``:

    python experiments/methods_compare/analyze.py            # write them
    python experiments/methods_compare/analyze.py --check    # re-render the text in memory; exit 1 at the first difference

Inputs (``--results``, default that folder): ``runs/<arm>-<budget>-s<seed>/`` (each job's ``config.yaml``,
``metrics.csv``, ``results.json``, ``timing.json``), ``eval/init.json`` and ``eval/teacher.json``
(``minillm.evaluate`` of the init and the teacher on the same prompts and seeds) and ``load.txt`` (the machine's
load average, one line a minute while the study ran).

Each job's score is its mean over the sampling seeds; a method's is the mean ± std over training seeds. Its
difference from the continued-SFT control carries a 95% interval over training seeds,
diff ± t(0.975, n−1)·sqrt(s_m²/n_m + s_sft²/n_sft) with the smaller n (conservative); "beyond noise" exactly when
the interval excludes 0. Seconds per optimizer step are timing.json's (training batches only: rollouts and student
samples included, validation not), averaged over the jobs of a method and budget. The jobs ran one after another
under a varying load, so no ratio of two methods' seconds is stated: a cost ratio counts only when both sides
were measured in one run.
"""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "experiments" / "results" / "methods_compare"
if str(REPO) not in sys.path:  # run as a script: import this checkout's minillm, not an installed one
    sys.path.insert(0, str(REPO))

from minillm.evaluation.rendered import flat  # noqa: E402 (after the path is set)

T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}  # Student's t, two-sided 95%
ORDER = ["sft", "kd", "seqkd", "minillm", "onpolicy_rkl", "token_kd", "gkd", "distillm", "distillm2", "taid"]
LABELS = {
    "sft": "SFT, continued (control)",
    "kd": "KD (forward KL + CE, gold)",
    "seqkd": "SeqKD",
    "minillm": "MiniLLM (reverse_kld)",
    "onpolicy_rkl": "on-policy reverse-KL reward (γ = 0)",
    "token_kd": "token reverse KL on student samples",
    "gkd": "GKD (JSD 0.1, λ 0.5)",
    "distillm": "DistiLLM (skew KL 0.1, adaptive)",
    "distillm2": "DistiLLM-2 (contrastive skew KLs)",
    "taid": "TAID (t 0.4 → 1)",
}
BUDGETS = ("equal_time", "equal_steps")


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def diff_interval(values: list[float], control: list[float]) -> tuple[float, float]:
    m, s = mean_std(values)
    mc, sc = mean_std(control)
    n = min(len(values), len(control))
    if n < 2:
        return m - mc, float("nan")
    half = T975.get(n - 1, 1.96) * math.sqrt(s**2 / len(values) + sc**2 / len(control))
    return m - mc, half


def read_config(path: Path) -> dict:
    """A run's resolved config.yaml as plain data (YAML only: the C loader, as OmegaConf is slow for 60 jobs)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(path.read_text(), Loader=loader)


def read_job(folder: Path) -> dict | None:
    path = folder / "results.json"
    if not path.is_file():
        return None
    res = json.loads(path.read_text())
    cfg = read_config(folder / "config.yaml")
    timing_path = folder / "timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    return {
        "arm": cfg["arm_name"],
        "budget": cfg["budget"],
        "seed": cfg["seed"],
        "objective": cfg["objective"]["name"],
        "lr": cfg["optim"]["lr"],
        "rougeL": res["test/rougeL"],
        "valid": res["test/valid_rate"],
        "length": res["eval"]["trained student"]["test"]["length"],
        "n_prompts": res["eval"]["trained student"]["test"]["n"],
        "sampling_seeds": res["eval"]["trained student"]["test"]["seeds"],
        "train_seconds": res["train_seconds"],
        "global_step": res["global_step"],
        "selected": bool(res.get("best_checkpoint")),
        "seconds_per_step": timing.get("seconds_per_step"),
        # read for the README, left out of jobs.json (keys starting with _)
        "_config": flat(cfg),
        "_log": read_log(folder),
    }


LOGGED = ("train/fresh", "train/taid_t", "train/on_policy", "train/clip_frac", "train/ratio_mean")


def read_log(folder: Path) -> dict:
    """From the job's metrics.csv: its validations (step, val/loss) and the logged values of LOGGED."""
    path = folder / "metrics.csv"
    if not path.is_file():
        path = folder / "csv" / "metrics.csv"
    out = {"val": [], **{k: [] for k in LOGGED}}
    if not path.is_file():
        return out
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("val/loss"):
                out["val"].append((int(float(row["step"])), float(row["val/loss"])))
            for key in LOGGED:
                if row.get(key):
                    out[key].append(float(row[key]))
    return out


def evaluated(path: Path | None) -> dict | None:
    if path is None:
        return None
    res = json.loads(Path(path).read_text())
    (model,) = res["eval"]
    (split,) = res["eval"][model]
    out = res["eval"][model][split]
    return {"rougeL": out["rougeL"], "valid": out["valid_rate"], "n": out["n"], "seeds": out["seeds"]}


def fmt(m: float, s: float | None = None, digits: int = 1) -> str:
    if math.isnan(m):
        return "–"
    text = f"{m:.{digits}f}"
    return text if s is None or math.isnan(s) else f"{text} ± {s:.{digits}f}"


def fmt_diff(d: float, half: float) -> str:
    if math.isnan(half):
        return f"{d:+.1f}"
    return f"{d:+.1f} [{d - half:+.1f}, {d + half:+.1f}]"


def budget_table(jobs: dict[str, list[dict]], budget: str) -> list[str]:
    control = jobs.get("sft", [])
    lines = [
        "| method | seeds | Rouge-L | Δ vs SFT [95% CI] | valid % | Δ vs SFT [95% CI] | steps | s / step | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in ORDER:
        runs = jobs.get(arm)
        if not runs:
            continue
        rouge = [r["rougeL"] for r in runs]
        valid = [r["valid"] for r in runs]
        cells = [
            LABELS.get(arm, arm),
            str(len(runs)),
            fmt(*mean_std(rouge)),
            "–" if arm == "sft" else fmt_diff(*diff_interval(rouge, [r["rougeL"] for r in control])),
            fmt(*mean_std(valid)),
            "–" if arm == "sft" else fmt_diff(*diff_interval(valid, [r["valid"] for r in control])),
            fmt(mean_std([r["global_step"] for r in runs])[0], digits=0),
            fmt(mean_std([r["seconds_per_step"] for r in runs])[0], digits=3),
            fmt(mean_std([r["train_seconds"] for r in runs])[0], digits=0),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def cost_table(by_budget: dict[str, dict[str, list[dict]]]) -> list[str]:
    lines = [
        "| method | s / step (equal time) | s / step (equal steps) | equal time ÷ equal steps | steps in equal time |",
        "|---|---|---|---|---|",
    ]
    for arm in ORDER:
        t = by_budget.get("equal_time", {}).get(arm, [])
        s = by_budget.get("equal_steps", {}).get(arm, [])
        if not t and not s:
            continue
        per_t = mean_std([r["seconds_per_step"] for r in t])[0]
        per_s = mean_std([r["seconds_per_step"] for r in s])[0]
        lines.append(
            f"| {LABELS.get(arm, arm)} | {fmt(per_t, digits=3)} | {fmt(per_s, digits=3)} | "
            f"{fmt(per_t / per_s, digits=2)} | {fmt(mean_std([r['global_step'] for r in t])[0], digits=0)} |"
        )
    return lines


def plot(by_budget: dict[str, dict[str, list[dict]]], refs: dict[str, dict | None], path: Path) -> None:
    """Dot plot: each method's mean over training seeds (error bar ± 1 std), its seeds as small dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    arms = [a for a in ORDER if any(a in by_budget.get(b, {}) for b in BUDGETS)]
    offset = 0.18
    for ax, metric, ylabel in ((axes[0], "rougeL", "test Rouge-L"), (axes[1], "valid", "test validity (%)")):
        for k, budget in enumerate(BUDGETS):
            xs, means, stds = [], [], []
            for i, arm in enumerate(arms):
                values = [r[metric] for r in by_budget.get(budget, {}).get(arm, [])]
                if not values:
                    continue
                x = i + (k - 0.5) * 2 * offset
                m, s = mean_std(values)
                xs.append(x)
                means.append(m)
                stds.append(s)
                ax.scatter([x] * len(values), values, s=8, color=f"C{k}", alpha=0.45, lw=0)
            ax.errorbar(
                xs,
                means,
                yerr=stds,
                fmt="o",
                ms=6,
                capsize=3,
                color=f"C{k}",
                label=f"{budget.replace('_', ' ')}: mean, error bar ± 1 std over training seeds",
            )
        for name, ref in refs.items():
            if ref is not None:
                ax.axhline(ref[metric], ls="--", lw=1, color="k" if name == "init" else "tab:red", label=name)
        ax.set_xticks(range(len(arms)), arms, rotation=40, ha="right")
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", lw=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    handles.append(plt.Line2D([], [], ls="", marker="o", ms=3, color="grey", alpha=0.6))
    labels.append("one training seed (mean over sampling seeds)")
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8)
    fig.suptitle(
        "methods_compare: test split, 200 prompts × 3 sampling seeds (y-axes do not start at 0)", fontsize=10
    )
    fig.tight_layout(rect=(0, 0.1, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- the study's files


def load(folder: Path) -> dict:
    by_budget: dict[str, dict[str, list[dict]]] = {b: defaultdict(list) for b in BUDGETS}
    missing = []
    runs = folder / "runs"
    for job_dir in sorted(p for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")):
        job = read_job(job_dir)
        if job is None:
            missing.append(job_dir.name)
            continue
        by_budget[job["budget"]][job["arm"]].append(job)
    refs = {
        "init": evaluated(folder / "eval" / "init.json"),
        "teacher": evaluated(folder / "eval" / "teacher.json"),
    }
    load_rows = []
    load_path = folder / "load.txt"
    if load_path.is_file():
        for line in load_path.read_text().splitlines():
            clock, one, *_ = line.split()
            load_rows.append((clock, float(one)))
    return {"by_budget": by_budget, "missing": missing, "refs": refs, "load": load_rows, "runs": runs}


def report_text(s: dict) -> str:
    by_budget, refs = s["by_budget"], s["refs"]
    some = next(r for b in by_budget.values() for runs in b.values() for r in runs)
    lines = [
        "# methods_compare: report",
        "",
        f"Test split, first {some['n_prompts']} prompts × sampling seeds {some['sampling_seeds']}; each cell the "
        "mean ± std over training seeds; Δ: difference from the continued-SFT control with a 95% interval over "
        "training seeds. s / step: training batches only (timing.json).",
        "",
    ]
    for name, ref in refs.items():
        if ref is not None:
            lines.append(
                f"- {name}: Rouge-L {ref['rougeL']:.1f}, valid {ref['valid']:.1f} % ({ref['n']} prompts, "
                f"seeds {ref['seeds']})"
            )
    for budget in BUDGETS:
        lines += ["", f"## {budget.replace('_', ' ')}", "", *budget_table(by_budget[budget], budget)]
    lines += [
        "",
        "## Cost per optimizer step",
        "",
        "Each job ran alone, one after another, under a load that varied (load.txt): the ratio between budgets "
        "is the same method measured at two times, so it shows how far the load moved a cost; no ratio between "
        "two methods is given.",
        "",
        *cost_table(by_budget),
    ]
    if s["missing"]:
        lines += ["", "Jobs without results: " + ", ".join(s["missing"])]
    lines += ["", "![methods](methods.png)"]
    return "\n".join(lines) + "\n"


def jobs_json(s: dict) -> str:
    rows = {
        b: {
            arm: [{k: v for k, v in r.items() if not k.startswith("_")} for r in runs]
            for arm, runs in s["by_budget"][b].items()
        }
        for b in BUDGETS
    }
    return json.dumps(rows, indent=1) + "\n"


def study_table(s: dict, folder: Path, figures: bool) -> str:
    """minillm.report's table of runs/ with its figure links. With ``figures`` the figures are drawn into
    ``folder`` and linked as drawn; without, the figures minillm.report draws that ``folder`` holds are linked
    (drawing them takes longer than the rest of the check), so a link never names an uncommitted file."""
    from minillm.evaluation.report import report_markdown, write_plots

    text = report_markdown(s["runs"], "test")
    if figures:
        names = [p.name for p in write_plots(s["runs"], folder, "test")]
    else:
        names = [n for n in ("learning_curves.png", "alpha.png", "scaling.png") if (folder / n).is_file()]
    if names:
        text += "\n\n" + "\n".join(f"![{Path(n).stem}]({n})" for n in names)
    return text + "\n"


# --------------------------------------------------------------------------- README.md


def beyond(d: float, half: float) -> bool:
    return not math.isnan(half) and not (d - half <= 0 <= d + half)


def sci(x: float) -> str:
    mantissa, exponent = f"{x:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


# What each arm runs, with its settings read from the arm's config.yaml ({key} is a config value).
WHAT_RUNS = {
    "sft": "cross-entropy on gold (the control)",
    "kd": "{objective.loss.kd_ratio}·KL(p‖q) + the rest CE, on gold",
    "seqkd": "SFT on the teacher's cached samples (temperature {objective.temperature})",
    "minillm": "MiniLLM, variant={objective.variant}, α {objective.teacher_mix_alpha}, single-step term "
    "{objective.single_step}",
    "onpolicy_rkl": "advantage = r_t = log p − log q (γ {objective.gamma}), whitening {objective.whiten}, "
    "α {objective.teacher_mix_alpha}, {objective.ppo_epochs} update per round of {objective.num_rollouts} rollouts",
    "token_kd": "full-vocabulary {objective.divergence} on the student's own samples "
    "(on-policy share {objective.on_policy_fraction})",
    "gkd": "{objective.divergence} (β {objective.beta}), on-policy share {objective.on_policy_fraction}",
    "distillm": "{objective.divergence} (α {objective.alpha}), adaptive off-policy schedule (φ from "
    "{objective.init_threshold}, +{objective.threshold_step} when val/loss rises by {objective.loss_eps}), "
    "replay buffer {objective.replay_capacity}",
    "distillm2": "skew forward KL on the teacher's sample + skew reverse KL on the student's (α {objective.alpha}); "
    "student responses per {objective.student_responses}, temperature {objective.temperature}",
    "taid": "KL(p_t‖q), t from {objective.t_start} to {objective.t_end} over {objective.schedule_steps} steps, adaptive",
}


def what_runs(arm: str, cfg: dict) -> str:
    def value(match):
        key = match.group(1)
        if key not in cfg:
            raise SystemExit(f"methods_compare README: {arm}'s config.yaml has no {key}")
        v = cfg[key]
        return f"{v:g}" if isinstance(v, float) else str(v)

    return re.sub(r"\{([a-z_.]+)\}", value, WHAT_RUNS.get(arm, ""))


def readme(s: dict) -> str:
    bb, refs = s["by_budget"], s["refs"]
    init, teacher = refs["init"], refs["teacher"]
    arms = [a for a in ORDER if a in bb["equal_steps"] or a in bb["equal_time"]]
    others = [a for a in arms if a != "sft"]
    some = next(r for b in bb.values() for runs in b.values() for r in runs)
    n_seeds = sorted({len(runs) for b in bb.values() for runs in b.values()})
    cfg_t = bb["equal_time"]["sft"][0]["_config"]
    cfg_s = bb["equal_steps"]["sft"][0]["_config"]
    max_time = cfg_t["trainer.max_time"]
    seconds = sum(int(x) * m for x, m in zip(max_time.split(":"), (86400, 3600, 60, 1), strict=True))
    max_steps = cfg_s["trainer.max_steps"]

    def m(budget, arm, key):
        return mean_std([r[key] for r in bb[budget][arm]])[0]

    def d(budget, arm, key):
        return diff_interval([r[key] for r in bb[budget][arm]], [r[key] for r in bb[budget]["sft"]])

    # verdict 1: does any method beat the control beyond noise?
    beats = [
        (b, a, k)
        for b in BUDGETS
        for a in others
        for k in ("rougeL", "valid")
        if beyond(*d(b, a, k)) and d(b, a, k)[0] > 0
    ]
    below = [
        (b, a, k)
        for b in BUDGETS
        for a in others
        for k in ("rougeL", "valid")
        if beyond(*d(b, a, k)) and d(b, a, k)[0] < 0
    ]
    not_seqkd = [a for a in others if a != "seqkd"]
    rouge_ns = [m(b, a, "rougeL") for b in BUDGETS for a in not_seqkd]
    lowest = min(((b, a) for b in BUDGETS for a in not_seqkd), key=lambda x: m(x[0], x[1], "rougeL"))
    leads = sorted(((d(b, a, "rougeL")[0], a, b) for b in BUDGETS for a in others), reverse=True)[:3]
    halves = [d(b, a, k)[1] for b in BUDGETS for a in others for k in ("rougeL",)]
    halves_v = [d(b, a, "valid")[1] for b in BUDGETS for a in others]

    def rank_valid(budget):
        return sorted(arms, key=lambda a: -m(budget, a, "valid"))

    control_rank = {b: 1 + sum(m(b, a, "valid") > m(b, "sft", "valid") for a in others) for b in BUDGETS}
    ties = {
        b: [a for a in others if f"{m(b, a, 'valid'):.1f}" == f"{m(b, 'sft', 'valid'):.1f}"] for b in BUDGETS
    }

    # SeqKD
    sq = {b: (d(b, "seqkd", "rougeL"), d(b, "seqkd", "valid")) for b in BUDGETS}
    seqkd_last = {
        b: all(min(arms, key=lambda a, b=b, k=k: m(b, a, k)) == "seqkd" for k in ("rougeL", "valid"))
        for b in BUDGETS
    }
    seqkd_last_every_seed = all(
        min(arms, key=lambda a, seed=seed, b=b: next(r["valid"] for r in bb[b][a] if r["seed"] == seed))
        == "seqkd"
        for b in BUDGETS
        for seed in [r["seed"] for r in bb[b]["seqkd"]]
    )
    seqkd_same = [(r["rougeL"], r["valid"]) for r in bb["equal_time"]["seqkd"]] == [
        (r["rougeL"], r["valid"]) for r in bb["equal_steps"]["seqkd"]
    ]

    # the init
    lifts = {
        b: [a for a in arms if m(b, a, "rougeL") > init["rougeL"] and m(b, a, "valid") > init["valid"]]
        for b in BUDGETS
    }

    # cost
    sps = {b: {a: m(b, a, "seconds_per_step") for a in arms} for b in BUDGETS}
    moved = {
        a: max(sps["equal_time"][a], sps["equal_steps"][a]) / min(sps["equal_time"][a], sps["equal_steps"][a])
        for a in arms
    }
    most_moved = max(moved, key=moved.get)
    steps_t = {a: m("equal_time", a, "global_step") for a in arms}
    on_policy = ["onpolicy_rkl", "token_kd", "gkd", "distillm2"]
    op_steps = [steps_t[a] for a in on_policy]
    gap = steps_t["sft"] / max(op_steps)

    # budget fairness: seconds of training and validations
    train_t = {a: m("equal_time", a, "train_seconds") for a in arms}
    nval = {(b, a): [len(r["_log"]["val"]) for r in bb[b][a]] for b in BUDGETS for a in arms}
    lrs = {a: sorted({r["lr"] for b in BUDGETS for r in bb[b][a]}) for a in arms}
    obj_lr = {
        a: bb["equal_steps"][a][0]["_config"].get(
            "objective.lr", bb["equal_steps"][a][0]["_config"].get("optim.lr")
        )
        for a in arms
    }

    # what the logs say the adaptive parts did
    def logged(budget, arm, key, pick):
        return [pick(r["_log"][key]) for r in bb[budget][arm] if r["_log"][key]]

    fresh_max = max(v for b in BUDGETS for v in logged(b, "distillm", "train/fresh", max))
    taid_t = {b: logged(b, "taid", "train/taid_t", lambda v: v[-1]) for b in BUDGETS}
    clip = max(v for b in BUDGETS for v in logged(b, "onpolicy_rkl", "train/clip_frac", max))
    ratio = [v for b in BUDGETS for r in bb[b]["onpolicy_rkl"] for v in r["_log"]["train/ratio_mean"]]
    gkd_on = [v for b in BUDGETS for r in bb[b]["gkd"] for v in r["_log"]["train/on_policy"]]

    loads = [x for _, x in s["load"]]
    rows_table = []
    top = {(b, k): max(f"{m(b, a, k):.1f}" for a in arms) for b in BUDGETS for k in ("rougeL", "valid")}

    def cell(b, a, k):
        text = f"{m(b, a, k):.1f} ± {mean_std([r[k] for r in bb[b][a]])[1]:.1f}"
        return f"**{text}**" if f"{m(b, a, k):.1f}" == top[(b, k)] else text  # ties at one decimal: all bold

    for a in arms:
        rows_table.append(
            f"| {LABELS[a].split(' (')[0] if a not in ('sft', 'onpolicy_rkl', 'token_kd') else LABELS[a]} | "
            f"{cell('equal_time', a, 'rougeL')} | {cell('equal_time', a, 'valid')} | {steps_t[a]:.0f} | "
            f"{cell('equal_steps', a, 'rougeL')} | {cell('equal_steps', a, 'valid')} | "
            f"{sps['equal_time'][a]:.2f} / {sps['equal_steps'][a]:.2f} |"
        )
    overridden = [a for a in arms if obj_lr[a] and obj_lr[a] not in lrs[a]]
    arm_rows = [
        f"| {a} | `{bb['equal_steps'][a][0]['objective']}` | {what_runs(a, bb['equal_steps'][a][0]['_config'])} | "
        f"{', '.join(sci(x) for x in lrs[a])}"
        + (f" (its objective's preset: {sci(obj_lr[a])})" if a in overridden else "")
        + " |"
        for a in arms
    ]
    fair_rows = [
        f"| {a} | {train_t[a]:.0f} | {span_int(nval[('equal_time', a)])} | {span_int(nval[('equal_steps', a)])} |"
        for a in arms
    ]

    def dlist(items):
        return "; ".join(
            f"{LABELS[a].split(' (')[0]} {k} {b.replace('_', ' ')} {fmt_diff(*d(b, a, k))}"
            for b, a, k in items
        )

    valid_off = [x for x in beats + below if x[2] == "valid"]
    valid_verdict = "none beyond noise" if not valid_off else "beyond noise: " + dlist(valid_off)
    op_off = [x for x in beats + below if x[1] in on_policy]
    op_verdict = "and still landed within noise of it on both metrics" if not op_off else "; " + dlist(op_off)
    verdict1 = (
        "**No method beats the continued-SFT control beyond noise at this scale, on either metric, under either budget.**"
        if not beats
        else f"**Beyond noise above the control: {dlist(beats)}.**"
    )
    text = (
        f"""# methods_compare — the methods compared with MiniLLM since 2023, in one loop (issue 16)

SFT (the continued-SFT control), KD, SeqKD, MiniLLM and the six objectives added by issue 16 — plain on-policy
distillation with the per-token reverse-KL reward (`onpolicy_rkl`), token-level reverse KL on the student's
own samples (`token_kd`), GKD, DistiLLM, DistiLLM-2 and TAID — from the same student init, with the same
teacher, data, evaluation and code path, at equal wall-clock training time and at equal optimizer steps.

Every number, interval and verdict below is rendered from the files in this folder by
`experiments/methods_compare/analyze.py` (`--check` re-renders and fails on any difference; so does
`tests/test_study_reports.py`).

## Verdict

- {verdict1} Every method's test Rouge-L but SeqKD's lies within {min(rouge_ns):.1f}–{max(rouge_ns):.1f}
  (the lowest: {LABELS[lowest[1]].split(" (")[0]} at {lowest[0].replace("_", " ")}) against the control's
  {m("equal_time", "sft", "rougeL"):.1f} (equal time) / {m("equal_steps", "sft", "rougeL"):.1f} (equal steps); the
  largest leads are {", ".join(f"{LABELS[a].split(' (')[0]} {x:+.1f} ({b.replace('_', ' ')})" for x, a, b in leads)} Rouge-L,
  with 95 % intervals of ±{min(halves):.1f} to ±{max(halves):.1f} points over the {"/".join(map(str, n_seeds))} training
  seeds. On validity the control ranks {ordinal(control_rank["equal_time"])} (equal time{", tied with " + ", ".join(ties["equal_time"]) if ties["equal_time"] else ""})
  and {ordinal(control_rank["equal_steps"])} (equal steps{", tied with " + ", ".join(ties["equal_steps"]) if ties["equal_steps"] else ""})
  of {len(arms)} ({m("equal_time", "sft", "valid"):.1f} % / {m("equal_steps", "sft", "valid"):.1f} %); every other method's
  validity differs from it by {min(d(b, a, "valid")[0] for b in BUDGETS for a in others):+.1f} to
  {max(d(b, a, "valid")[0] for b in BUDGETS for a in others):+.1f} points, intervals ±{min(halves_v):.1f} to ±{max(halves_v):.1f}
  ({valid_verdict}).
- **SeqKD is the lowest on both metrics in both budgets**{"" if seqkd_last["equal_time"] and seqkd_last["equal_steps"] else " (not in every budget)"}:
  {sq["equal_time"][0][0]:+.1f} / {sq["equal_steps"][0][0]:+.1f} Rouge-L and {sq["equal_time"][1][0]:+.1f} /
  {sq["equal_steps"][1][0]:+.1f} validity points against the control (equal time / equal steps), intervals
  {fmt_diff(*sq["equal_time"][1])} and {fmt_diff(*sq["equal_steps"][1])} for validity
  ({"both within noise" if not any(beyond(*x[1]) for x in sq.values()) else "beyond noise"}),
  {m("equal_steps", "seqkd", "valid") - init["valid"]:+.1f} points from the init in validity; it is last in validity
  {"in every training seed of both budgets" if seqkd_last_every_seed else "but not in every training seed"}.
  It imitates the teacher's samples, and the teacher is valid {teacher["valid"]:.0f} % of the time on these prompts.
- **{len(lifts["equal_time"])} of {len(arms)} methods at equal time and {len(lifts["equal_steps"])} of {len(arms)} at equal steps
  end above the init on both metrics** (init {init["rougeL"]:.1f} Rouge-L / {init["valid"]:.1f} % valid on the same
  prompts and seeds; no interval against the init is computed here); the teacher is far ahead
  ({teacher["rougeL"]:.1f} / {teacher["valid"]:.1f}): {seconds} s or {max_steps} updates from an init trained to its plateau do
  not close that gap (see [validity_drop](../validity_drop/README.md)).
- **Updates in the same time differ far more than the load moves a cost.** In {seconds} s the on-policy methods
  (onpolicy_rkl, token_kd, GKD, DistiLLM-2) took {min(op_steps):.0f}–{max(op_steps):.0f} updates where SFT took
  {steps_t["sft"]:.0f} ({gap:.0f}× more than the most of them), {op_verdict}. The
  jobs ran one after another under a load average of {min(loads):.1f}–{max(loads):.1f} (`load.txt`), so seconds
  per step are not compared between methods: the same method's cost moved by up to {moved[most_moved]:.1f}×
  between the two budgets ({LABELS[most_moved].split(" (")[0]}: {sps["equal_time"][most_moved]:.3f} s at equal time,
  {sps["equal_steps"][most_moved]:.3f} s at equal steps). A cost ratio needs both methods timed in one run
  (`minillm.bench`).
- Honest reading: at this scale the study **cannot separate the methods**; with {"/".join(map(str, n_seeds))}
  training seeds a real difference would have to exceed about {min(halves):.0f}–{max(halves):.0f} Rouge-L or
  {min(halves_v):.0f}–{max(halves_v):.0f} validity points to show. The result is a negative one for every method
  beyond the paper as much as for MiniLLM, and a positive one for the tool: ten methods, one loop, one evaluation,
  one command.

## What the comparison does not control

- **Learning rates differ by method and were not tuned here:** each arm runs the rate its arm config sets
  ({span_lr(lrs)}; {len(overridden)} arms override their objective's preset, table below); a method may be ahead
  or behind for its rate alone.
- **Selection chances differ by method:** each job validates every `trainer.val_check_interval` steps plus once
  when its budget ends and keeps its best validation, so a job that validates more often has more checkpoints to
  choose from. Validations per job and seconds of training in the equal-time budget
  (`trainer.max_time={max_time}`; a job stops at the first check after it, so the seconds differ):

| arm | train s (equal time, mean) | validations per job (equal time) | validations per job (equal steps) |
|---|---|---|---|
"""
        + "\n".join(fair_rows)
        + f"""

  MiniLLM's equal-time jobs trained {train_t["minillm"]:.0f} s on average against SFT's {train_t["sft"]:.0f} s.

## On the SmolLM2 pair

The same methods (but token_kd) on a real pretrained pair — SmolLM2-135M-Instruct into its every-third-layer
student — are in [smollm2_distill](../smollm2_distill/README.md); its numbers are rendered there, not here.

## Setup

Every job starts from the shipped student init (0.09M) with the shipped teacher (2.16M) and is evaluated on
the first {some["n_prompts"]} test prompts with sampling seeds {", ".join(map(str, some["sampling_seeds"]))} (temperature
{cfg_s["eval.temperature"]:g}); {"/".join(map(str, n_seeds))} training seeds per arm and budget. Budgets (`budget=`):
`equal_time` — {seconds} s of training (`trainer.max_time`, validation included), `equal_steps` — {max_steps}
optimizer steps. Constant lr after {cfg_s["scheduler.num_warmup_steps"]} warm-up steps, one torch thread per job.
Validation on {cfg_s["eval.val_samples"]} sampled valid prompts (val/rougeL) and `trainer.limit_val_batches=`{cfg_s["trainer.limit_val_batches"]}
batches (val/loss); each job keeps its objective's own choice (lowest val/loss; MiniLLM and onpolicy_rkl: best
val/rougeL).

| arm | objective | what runs (from its config.yaml) | lr |
|---|---|---|---|
"""
        + "\n".join(arm_rows)
        + f"""

What the logs say the adaptive parts did (`metrics.csv`, logged every few steps): **DistiLLM's φ** —
`train/fresh` at most {fresh_max:g} in every job{", so it trained as skew forward KL on gold throughout" if fresh_max == 0 else ""};
**TAID's t** last logged at {span2(taid_t["equal_steps"], 2)} in the equal-steps jobs and
{span2(taid_t["equal_time"], 2)} in the equal-time ones; **onpolicy_rkl's** PPO ratio (mean per logged step)
{span2(ratio, 4)} and `train/clip_frac` at most {clip:g}; **GKD's** on-policy batches a share of
{statistics.mean(gkd_on):.2f} of the logged steps.

## Commands and time

2 CPU cores shared with other sessions' jobs running at higher priority (ours at `nice -n 10`): load average
{statistics.mean(loads):.1f} on average ({min(loads):.1f}–{max(loads):.1f}, `load.txt`, one line a minute from
{s["load"][0][0]} to {s["load"][-1][0]}), so the seconds below are those of a loaded machine.
2026-12-03, from a detached worktree of this branch (`git worktree add --detach … wt-beyond`, commit 4702c6c):

```bash
# process A: the teacher's samples to the 10k training prompts, once (SeqKD's cache, shared with distillm2's
# arm), then the equal-time sweep
python -m minillm.run experiment=methods_compare +arm=methods_compare/seqkd budget=equal_steps \\
    trainer.max_steps=1 eval.num_samples=1 'eval.seeds=[0]' logger=none hydra.run.dir=outputs/mc_prep
python -m minillm.run -m experiment=methods_compare budget=equal_time logger=csv
# process B: the equal-steps sweep, stopped after seqkd-equal_steps-s2 because process C (after A) ran its last arm
python -m minillm.run -m experiment=methods_compare budget=equal_steps logger=csv
python -m minillm.run -m experiment=methods_compare +arm=methods_compare/distillm2 budget=equal_steps logger=csv
# the init and the teacher on the same prompts and seeds (B)
python -m minillm.evaluate evaluate.model=init evaluate.split=test eval.num_samples=200 'eval.seeds=[0,1,2]' 'evaluate.metrics=[rouge]'
python -m minillm.evaluate evaluate.model=teacher evaluate.split=test eval.num_samples=200 'eval.seeds=[0,1,2]' 'evaluate.metrics=[rouge]'
# copy each job's config.yaml, csv/metrics.csv, results.json and timing.json into runs/<job>/, the two
# evaluations into eval/, then:
python experiments/methods_compare/analyze.py
```

`python -m minillm.run -m experiment=methods_compare` alone runs the same 60 jobs one after another (the arms
that need the teacher's samples come last, so the first of them makes the cache). The init and teacher
evaluations are cached (`cache_dir/eval`) after the first time.

## Results

Test split, first {some["n_prompts"]} prompts × {len(some["sampling_seeds"])} sampling seeds; mean ± std over
{"/".join(map(str, n_seeds))} training seeds; the best mean of each column in bold. Differences from the control
with their intervals, exact match, Distinct-4 and length: `report.md`, `study_table.md`; per-job records: `runs/`.

| method | equal time: Rouge-L | valid % | updates in {seconds} s | equal steps ({max_steps}): Rouge-L | valid % | s / step (equal time / equal steps) |
|---|---|---|---|---|---|---|
"""
        + "\n".join(rows_table)
        + f"""

Init {init["rougeL"]:.1f} / {init["valid"]:.1f} %, teacher {teacher["rougeL"]:.1f} / {teacher["valid"]:.1f} % (same prompts
and seeds). SeqKD's two budgets give {"the same numbers" if seqkd_same else "different numbers"}{": both kept the checkpoint of the same validation (its lowest val/loss)" if seqkd_same else ""}.
Seconds per step are timing.json's (training batches only: rollouts, student samples and teacher passes
included, validation not), each under the load of its time.

![methods](methods.png)

## Not done

- DistiLLM-2 as its preset runs it (student responses for all training prompts at each epoch start, temperature
  0.8): not run in this study; tested in smoke mode only.
- DistiLLM's adaptive schedule was never triggered (see above); an arm that validates often enough to let it
  act would need a longer budget.
- Tuning each method's learning rate, more training seeds or longer budgets, which the intervals above say this
  question needs; timing the methods side by side (`minillm.bench`) for cost ratios.
- In the sweep folder, distillm2-equal_steps-s0's `.hydra/` and `run.log` were overwritten by process B's aborted
  start of the same job (same config); its results, metrics and timing (in `runs/`) are process C's.
"""
    )
    return text


# --------------------------------------------------------------------------- the top-level README's lines

SHORT = {
    "sft": "SFT",
    "kd": "KD",
    "seqkd": "SeqKD",
    "minillm": "MiniLLM",
    "onpolicy_rkl": "on-policy reverse KL",
    "token_kd": "token reverse KL",
    "gkd": "GKD",
    "distillm": "DistiLLM",
    "distillm2": "DistiLLM-2",
    "taid": "TAID",
}
PAPER = ["sft", "kd", "seqkd", "minillm"]  # the paper's Table 1 methods
ON_POLICY = ["onpolicy_rkl", "token_kd", "gkd", "distillm2"]


def signed(x: float, digits: int = 1) -> str:
    """``+1.2`` / ``−0.8`` with a true minus sign, as the top-level README writes numbers."""
    return f"{x:+.{digits}f}".replace("-", "−")


def arm_mean(s: dict, budget: str, arm: str, key: str) -> float:
    return mean_std([r[key] for r in s["by_budget"][budget][arm]])[0]


def vs_control(s: dict, budget: str, arm: str, key: str) -> tuple[float, float]:
    bb = s["by_budget"][budget]
    return diff_interval([r[key] for r in bb[arm]], [r[key] for r in bb["sft"]])


def summary(folder: Path = RESULTS) -> str:
    """The study's line in the top-level README's results list (one markdown bullet), from the same tests
    as the README's verdict: a method beats the control when its 95 % interval excludes 0."""
    s = load(Path(folder))
    bb = s["by_budget"]
    arms = [a for a in ORDER if a in bb["equal_time"]]
    others = [a for a in arms if a != "sft"]
    beats = [
        a
        for b in BUDGETS
        for a in others
        for k in ("rougeL", "valid")
        if beyond(*vs_control(s, b, a, k)) and vs_control(s, b, a, k)[0] > 0
    ]
    not_seqkd = [a for a in others if a != "seqkd"]
    dr = [vs_control(s, b, a, "rougeL")[0] for b in BUDGETS for a in not_seqkd]
    dv = [vs_control(s, b, a, "valid")[0] for b in BUDGETS for a in not_seqkd]
    seqkd_last = all(
        min(arms, key=lambda a, b=b, k=k: arm_mean(s, b, a, k)) == "seqkd"
        for b in BUDGETS
        for k in ("rougeL", "valid")
    )
    steps = {a: arm_mean(s, "equal_time", a, "global_step") for a in arms}
    cfg = bb["equal_time"]["sft"][0]["_config"]
    max_time = cfg["trainer.max_time"]
    seconds = sum(int(x) * m for x, m in zip(max_time.split(":"), (86400, 3600, 60, 1), strict=True))
    max_steps = bb["equal_steps"]["sft"][0]["_config"]["trainer.max_steps"]
    n_seeds = "/".join(map(str, sorted({len(r) for b in bb.values() for r in b.values()})))
    named = ", ".join(SHORT[a] for a in others if a != "seqkd")
    return (
        f"- [methods_compare](experiments/results/methods_compare/README.md) ({len(arms)} methods × equal time "
        f"({seconds} s) and equal steps ({max_steps}) × {n_seeds} seeds): "
        + (
            f"no method — {named} — beats the continued-SFT control beyond noise"
            if not beats
            else f"{', '.join(sorted({SHORT[a] for a in beats}))} beat the continued-SFT control beyond noise"
        )
        + f" (their Rouge-L {signed(min(dr))} to {signed(max(dr))} from it, validity {signed(min(dv))} to "
        f"{signed(max(dv))}); SeqKD is "
        + (
            "last on both metrics under both budgets"
            if seqkd_last
            else "not last on both metrics under both budgets"
        )
        + f"; in {seconds} s the on-policy methods ({', '.join(SHORT[a] for a in ON_POLICY)}) took "
        f"{span_int([round(steps[a]) for a in ON_POLICY])} updates where SFT took {steps['sft']:.0f} (the jobs ran "
        "one after another under a varying load, so no per-step cost ratio is given)."
    )


def paper_methods(folder: Path = RESULTS) -> str:
    """Where MiniLLM's Rouge-L ranks among the paper's four methods here (3 training seeds), per budget, and
    whether any of them is apart from the control beyond noise."""
    s = load(Path(folder))
    n_seeds = "/".join(map(str, sorted({len(s["by_budget"]["equal_time"][a]) for a in PAPER})))
    first = [b for b in BUDGETS if max(PAPER, key=lambda a, b=b: arm_mean(s, b, a, "rougeL")) == "minillm"]
    where = {
        2: "under both budgets",
        1: f"at {first[0].replace('_', ' ') if first else ''} only",
        0: "under neither budget",
    }
    per_budget = "; ".join(
        f"{b.replace('_', ' ')}: "
        + ", ".join(
            f"{SHORT[a]} {arm_mean(s, b, a, 'rougeL'):.1f}"
            for a in sorted(PAPER, key=lambda a, b=b: -arm_mean(s, b, a, "rougeL"))
        )
        for b in BUDGETS
    )
    apart = [(b, a) for b in BUDGETS for a in PAPER if a != "sft" and beyond(*vs_control(s, b, a, "rougeL"))]
    return (
        f"With {n_seeds} training seeds, [methods_compare](experiments/results/methods_compare/README.md) gives "
        f"MiniLLM the best Rouge-L of these four methods {where[len(first)]} ({per_budget}); "
        + (
            "none of them is apart from the control beyond noise."
            if not apart
            else ", ".join(f"{SHORT[a]} at {b.replace('_', ' ')}" for b, a in apart)
            + " apart from the control beyond noise."
        )
    )


def ordinal(n: int) -> str:
    return {1: "first", 2: "second", 3: "third"}.get(n, f"{n}th")


def span2(values: list[float], digits: int) -> str:
    lo, hi = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
    return lo if lo == hi else f"{lo}–{hi}"


def span_lr(lrs: dict[str, list[float]]) -> str:
    values = sorted({x for v in lrs.values() for x in v})
    return " to ".join(sci(x) for x in (values[0], values[-1])) if len(values) > 1 else sci(values[0])


def span_int(values: list[int]) -> str:
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo}–{hi}"


# --------------------------------------------------------------------------- entry point


def render(folder: Path = RESULTS, figures: bool = True) -> dict[str, str]:
    """The text report files of ``folder`` rendered from its committed files (name → text); with ``figures``,
    methods.png and learning_curves.png are drawn into ``folder`` too."""
    folder = Path(folder)
    s = load(folder)
    if figures:
        plot(s["by_budget"], s["refs"], folder / "methods.png")
    return {
        "README.md": readme(s),
        "report.md": report_text(s),
        "jobs.json": jobs_json(s),
        "study_table.md": study_table(s, folder, figures),
    }


def main(argv=None) -> int:
    from minillm.evaluation.rendered import study_main

    return study_main(render, RESULTS, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
