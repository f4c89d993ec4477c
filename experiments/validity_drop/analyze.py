"""Issue 17's study: does MiniLLM make the embedded student less valid, and where does it come from?

Renders every report file of ``experiments/results/validity_drop/`` from the files committed there:
``README.md`` (each number, interval, ratio and verdict in it), ``report.md`` (every table), ``make_run_note.txt``
(the sentence ``make run`` ends with) and ``trajectory.png``:

    python experiments/validity_drop/analyze.py            # write them
    python experiments/validity_drop/analyze.py --check    # re-render in memory; exit 1 at the first difference

Inputs (``--results``, default that folder): ``runs/<arm>-s<seed>/`` (each training run's ``config.yaml``,
``metrics.csv`` — the run's ``csv/metrics.csv`` — and ``results.json``), ``eval/`` (``minillm.evaluate`` of the
init and the teacher on test, of the init on the validation slice, and of the three ``full`` students with
per-prompt scores), ``diagnose/`` (``minillm.diagnose`` probes, ``<arm>-s<seed>/`` and ``init/``).

Intervals: each run's test score is its mean over 3 sampling seeds on the whole test split; an arm's
score is the mean over its training seeds. The difference from the init carries a 95% interval
diff ± t(0.975, n−1) · sqrt(s_arm² / n_arm + s_init² / n_init), s the standard deviation over training seeds
(arm) and over sampling seeds (init), with the smaller of the two degrees of freedom (conservative); the same
formula against another arm (the continued-SFT control) uses both arms' training seeds. A verdict says
"within noise" exactly when its interval contains 0.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "experiments" / "results" / "validity_drop"
if str(REPO) not in sys.path:  # run as a script: import this checkout's minillm, not an installed one
    sys.path.insert(0, str(REPO))

if str(REPO / "experiments") not in sys.path:
    sys.path.append(str(REPO / "experiments"))

import render_common as rc  # noqa: E402 (after the path is set)

from minillm.evaluation.rendered import flat  # noqa: E402 (after the path is set)

T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}  # Student's t, two-sided 95%
ORDER = ["full", "alpha0", "alpha_decay", "paper", "no_single_step", "lr3e-5", "ppo1", "select_valid", "sft"]
CONTROL = "sft"
# Config keys that name a run rather than change its training.
NOT_SETTINGS = ("seed", "run_name", "arm_name", "output_dir", "data.seed")
# Invalid answers quoted in the README: (category, the student's answer as diagnose.md prints it, a note).
# The script takes the instruction and answer from diagnose/full-s0/diagnose.md and fails if one is not there.
QUOTES = [
    ("closed_qa", "Dreholm is a city in Dreholm.", "a wrong fact of the fictional world"),
    ("brainstorming", "Here are three cities in Porngrauna: Semstead, Bamton and Semstead.", "a repeat"),
    ("creative_writing", "Summer paths and wide clouds,", "the required word is missing"),
    ("classification", "A wolf is a mammal.", "a related but wrong answer"),
]


# --------------------------------------------------------------------------- statistics


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def diff_interval(arm: list[float], ref_mean: float, ref_std: float, ref_n: int):
    m, s = mean_std(arm)
    n = len(arm)
    if n < 2:
        return m - ref_mean, float("nan")
    dof = min(n - 1, ref_n - 1)
    half = T975.get(dof, 1.96) * math.sqrt(s**2 / n + ref_std**2 / ref_n)
    return m - ref_mean, half


def arm_vs(values: list[float], ref: list[float]):
    """Difference of two arms' means over training seeds with its 95% t interval (smaller dof)."""
    m, s = mean_std(ref)
    return diff_interval(values, m, s, len(ref))


def one_sample(values: list[float]):
    """Mean of per-seed values with its 95% t interval (paired differences over the same seeds)."""
    m, s = mean_std(values)
    n = len(values)
    return m, (T975.get(n - 1, 1.96) * s / math.sqrt(n) if n > 1 else float("nan"))


def within_noise(d: float, half: float) -> bool:
    return not math.isnan(half) and d - half <= 0 <= d + half


def noise_word(d: float, half: float, up: str = "above", down: str = "below") -> str:
    """'within noise' when the interval d ± half contains 0, else the side it lies on, beyond noise."""
    if math.isnan(half):
        return "not testable (one run)"
    return "within noise" if within_noise(d, half) else f"{up if d > 0 else down} beyond noise"


def ci_word(d: float, ci: tuple[float, float]) -> str:
    """The verdict of a difference with a percentile interval: 'within noise' when it contains 0."""
    lo, hi = ci
    return "within noise" if lo <= 0 <= hi else f"{'above' if d > 0 else 'below'} the init beyond noise"


def pm(d: float, half: float, digits: int = 1) -> str:
    return f"{d:+.{digits}f} ± {half:.{digits}f}"


def ms(values, digits: int = 1) -> str:
    m, s = mean_std(values)
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def span(values, digits: int = 1, sep: str = "–") -> str:
    lo, hi = min(values), max(values)
    return (
        f"{lo:.{digits}f}"
        if f"{lo:.{digits}f}" == f"{hi:.{digits}f}"
        else f"{lo:.{digits}f}{sep}{hi:.{digits}f}"
    )


# --------------------------------------------------------------------------- reading the committed files


def read_config(path: Path) -> dict:
    """A run's resolved config.yaml as plain data (YAML only: the C loader, as OmegaConf is slow for 60 jobs)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(path.read_text(), Loader=loader)


def read_run(folder: Path) -> dict | None:
    path = folder / "results.json"
    if not path.is_file():
        return None
    res = json.loads(path.read_text())
    cfg = read_config(folder / "config.yaml")  # the run's resolved config
    obj = cfg["objective"]
    per_round = rc.updates_per_logged_step(obj)  # on-policy: CSV steps are rounds, converted to updates
    metrics = folder / "metrics.csv"
    if not metrics.is_file():  # a run folder as minillm.run leaves it
        metrics = folder / "csv" / "metrics.csv"
    vals, first_lr = [], None
    with metrics.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if first_lr is None and row.get("train/lr"):
                first_lr = (int(float(row["step"])) * per_round, float(row["train/lr"]))
            if row.get("val/valid_rate"):
                vals.append(
                    {
                        "opt_step": (int(float(row["step"])) + 1) * per_round,
                        "valid": float(row["val/valid_rate"]),
                        "rougeL": float(row["val/rougeL"]),
                    }
                )
    test = res["eval"]["trained student"]["test"]
    return {
        "arm": cfg["arm_name"],
        "seed": cfg["seed"],
        "rougeL": res["test/rougeL"],
        "valid": res["test/valid_rate"],
        "per_category": test["per_category"],
        "n_test": test["n"],
        "sampling_seeds": test["seeds"],
        "train_seconds": res["train_seconds"],
        "global_step": res["global_step"],
        "val": vals,
        "select_monitor": cfg["select"]["monitor"],
        "best_score": res.get("best_score"),
        "config": flat(cfg),
        "per_round": per_round,
        "first_lr": first_lr,
    }


def evaluated(path: Path) -> dict:
    res = json.loads(Path(path).read_text())
    (model,) = res["eval"]
    (split,) = res["eval"][model]
    out = res["eval"][model][split]
    per_seed_valid = out.get("valid_rate_per_seed")
    return {
        "rougeL": out["rougeL"],
        "rougeL_std": out["rougeL_std"],
        "valid": out["valid_rate"],
        "valid_std": out["valid_rate_std"],
        "n_seeds": len(out["seeds"]),
        "seeds": out["seeds"],
        "per_category": out["per_category"],
        "per_seed_valid": per_seed_valid,
        "valid_ci95": out.get("valid_rate_ci95"),
        "n": out["n"],
    }


def per_prompt(path: Path) -> dict[str, list]:
    res = json.loads(Path(path).read_text())
    (model,) = res["eval"]
    (split,) = res["eval"][model]
    out = res["eval"][model][split]
    return {"valid": out["valid_per_prompt"], "rougeL": out["rougeL_per_prompt"]}


def read_diagnose(folder: Path) -> tuple[dict | None, dict[str, list[dict]]]:
    """The probes' settings and the probes per arm ('student init' for the init)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    settings = None
    if not folder.is_dir():
        return None, groups
    for run in sorted(folder.iterdir()):
        path = run / "diagnose.json"
        if not path.is_file():
            continue
        d = json.loads(path.read_text())
        d["run"] = run.name
        settings = settings or d["settings"]
        arm = "student init" if run.name == "init" else run.name.rsplit("-s", 1)[0]
        groups[arm].append(d)
    return settings, groups


def rkl(d: dict) -> float:
    return d["kl"]["student"]["reverse_kl"]


def paired_rows(init_path: Path, paired: dict[str, list[Path]]) -> dict[str, dict]:
    """Per arm: runs, and (diff, (lo, hi)) of validity and Rouge-L against the init, paired over prompts."""
    from minillm.evaluation.intervals import paired_bootstrap_diff

    init_vec = per_prompt(init_path)
    out = {}
    for name, paths in paired.items():
        vecs = [per_prompt(p) for p in paths]
        row = {"runs": len(vecs)}
        for key in ("valid", "rougeL"):
            pooled = [
                None if any(v[key][i] is None for v in vecs) else statistics.mean(v[key][i] for v in vecs)
                for i in range(len(init_vec[key]))
            ]
            diff, ci, _ = paired_bootstrap_diff(pooled, init_vec[key])
            row[key] = (diff, ci)
        out[name] = row
    return out


def load(folder: Path) -> dict:
    """Everything the report files are rendered from."""
    runs = [r for r in (read_run(f) for f in sorted((folder / "runs").iterdir()) if f.is_dir()) if r]
    arms: dict[str, list[dict]] = defaultdict(list)
    for r in sorted(runs, key=lambda r: r["seed"]):
        arms[r["arm"]].append(r)
    ev = folder / "eval"
    paired = {"full": sorted(ev.glob("full-s*/results.json"))}
    settings, probes = read_diagnose(folder / "diagnose")
    return {
        "runs": runs,
        "arms": arms,
        "names": [a for a in ORDER if a in arms] + sorted(set(arms) - set(ORDER)),
        "init": evaluated(ev / "init_test" / "results.json"),
        "teacher": evaluated(ev / "teacher_test" / "results.json"),
        "init_val": evaluated(ev / "init_val" / "results.json"),
        "paired": paired_rows(ev / "init_test" / "results.json", {k: v for k, v in paired.items() if v}),
        "probe_settings": settings,
        "probes": probes,
        "quotes_md": folder / "diagnose" / "full-s0" / "diagnose.md",
    }


# --------------------------------------------------------------------------- per-arm summaries


def vs_init(s: dict, name: str, key: str):
    init = s["init"]
    return diff_interval([r[key] for r in s["arms"][name]], init[key], init[f"{key}_std"], init["n_seeds"])


def vs_control(s: dict, name: str, key: str):
    return arm_vs([r[key] for r in s["arms"][name]], [r[key] for r in s["arms"][CONTROL]])


def minillm_arms(s: dict) -> list[str]:
    return [a for a in s["names"] if a != CONTROL]


def mean_of(s: dict, name: str, key: str) -> float:
    return mean_std([r[key] for r in s["arms"][name]])[0]


def val_summary(r: dict, key: str = "valid") -> float:
    return statistics.mean(v[key] for v in r["val"])


def settings_diff(s: dict, name: str) -> str:
    """The config keys in which an arm's seed-0 run differs from full's (an objective swapped: its name)."""
    base, other = s["arms"]["full"][0]["config"], s["arms"][name][0]["config"]
    keys = sorted(k for k in set(base) | set(other) if base.get(k) != other.get(k))
    keys = [k for k in keys if k not in NOT_SETTINGS]
    if other.get("objective.name") != base.get("objective.name"):
        keys = ["objective.name"] + [k for k in keys if not k.startswith("objective.")]
    if not keys:
        return "nothing"
    return ", ".join(f"`{k}={other.get(k)}`" for k in keys)


def sci(x: float) -> str:
    """A learning rate as the configs write it: 3e-5, 1e-4."""
    mantissa, exponent = f"{x:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def lr_setting(r: dict) -> str:
    c = r["config"]
    step, lr = r["first_lr"]
    return (
        f"lr {sci(c['optim.lr'])} ({c['optim.schedule']} after a {c['optim.warmup_steps']}-step linear warm-up: "
        f"`train/lr` {sci(lr)} at optimizer step {step})"
    )


# --------------------------------------------------------------------------- report.md


def report_lines(s: dict) -> list[str]:
    arms, init, teacher, init_val = s["arms"], s["init"], s["teacher"], s["init_val"]
    lines = [
        "## Test split (500 prompts × 3 sampling seeds per model)",
        "",
        "Each arm: mean ± std over training seeds; Δ: the difference from the init with its 95% interval "
        "(t over training seeds and the init's sampling seeds). Steps: optimizer steps (500 each).",
        "",
        "| arm | seeds | Rouge-L | valid % | Δ Rouge-L vs init | Δ valid vs init | train s |",
        "|---|---|---|---|---|---|---|",
        f"| teacher | – | {teacher['rougeL']:.1f} ± {teacher['rougeL_std']:.1f} | "
        f"{teacher['valid']:.1f} ± {teacher['valid_std']:.1f} | | | |",
        f"| student init | – | {init['rougeL']:.1f} ± {init['rougeL_std']:.1f} | "
        f"{init['valid']:.1f} ± {init['valid_std']:.1f} | | | |",
    ]
    for name in s["names"]:
        rs = arms[name]
        rm, rsd = mean_std([r["rougeL"] for r in rs])
        vm, vsd = mean_std([r["valid"] for r in rs])
        dr, hr = vs_init(s, name, "rougeL")
        dv, hv = vs_init(s, name, "valid")
        secs = statistics.mean(r["train_seconds"] for r in rs)
        lines.append(
            f"| {name} | {','.join(str(r['seed']) for r in rs)} | "
            f"{rm:.1f} ± {rsd:.1f} | {vm:.1f} ± {vsd:.1f} | {dr:+.1f} ± {hr:.1f} | {dv:+.1f} ± {hv:.1f} | {secs:.0f} |"
        )

    if s["paired"]:
        lines += [
            "",
            "Paired over the same 500 test prompts (each prompt's validity averaged over the arm's training "
            "seeds × 3 sampling seeds, against the init's 3 sampling seeds; percentile bootstrap over prompts, "
            "2000 resamples):",
            "",
            "| arm | runs | Δ valid vs init [95% interval] | Δ Rouge-L vs init [95% interval] |",
            "|---|---|---|---|",
        ]
        for name, row in s["paired"].items():
            cells = [f"{d:+.1f} [{ci[0]:+.1f}, {ci[1]:+.1f}]" for d, ci in (row["valid"], row["rougeL"])]
            lines.append(f"| {name} | {row['runs']} | {cells[0]} | {cells[1]} |")

    lines += [
        "",
        "## Validation evidence (256 valid prompts, seed 0, every 64 optimizer steps)",
        "",
        "Mean over each run's validations, then mean ± std over training seeds"
        + f"; the init scores {init_val['valid']:.1f} % valid / {init_val['rougeL']:.1f} Rouge-L on this slice.",
        "",
        "| arm | mean val valid % | last val valid % | mean val Rouge-L |",
        "|---|---|---|---|",
    ]
    for name in [a for a in ORDER if a in arms]:
        rs = [r for r in arms[name] if r["val"]]
        mv = mean_std([val_summary(r) for r in rs])
        lv = mean_std([r["val"][-1]["valid"] for r in rs])
        mr = mean_std([val_summary(r, "rougeL") for r in rs])
        lines.append(
            f"| {name} | {mv[0]:.1f} ± {mv[1]:.1f} | {lv[0]:.1f} ± {lv[1]:.1f} | {mr[0]:.1f} ± {mr[1]:.1f} |"
        )

    lines += [
        "",
        "## Selection: the validation each metric picks (step: val valid % / val Rouge-L)",
        "",
        "| run | by val Rouge-L (the default) | by val validity | last |",
        "|---|---|---|---|",
        *selection_rows(
            sorted(s["runs"], key=lambda r: (ORDER.index(r["arm"]) if r["arm"] in ORDER else 99, r["seed"]))
        ),
    ]

    cats = sorted(init["per_category"])
    shown = [a for a in ("full", "alpha0", "sft") if a in arms]
    lines += [
        "",
        "## Validity per category (test; trained arms: mean over training seeds)",
        "",
        "| category | n | teacher | init | " + " | ".join(shown) + " |",
        "|---|---|---|---|" + "---|" * len(shown),
    ]
    for c in cats:
        cells = [f"{category_valid(s, a, c):.1f}" for a in shown]
        lines.append(
            f"| {c} | {init['per_category'][c]['n']} | {teacher['per_category'][c]['valid_rate']:.1f} | "
            f"{init['per_category'][c]['valid_rate']:.1f} | " + " | ".join(cells) + " |"
        )

    if s["probes"]:
        lines += diagnose_rows(s["probe_settings"], s["probes"])
    lines += ["", "![trajectory](trajectory.png)", ""]
    return lines


def category_valid(s: dict, arm: str, category: str) -> float:
    return statistics.mean(r["per_category"][category]["valid_rate"] for r in s["arms"][arm])


def kl_table(groups: dict[str, list[dict]]) -> list[str]:
    def cell(runs, get, fmt="{:.2f}"):
        m, sd = mean_std([get(d) for d in runs])
        return fmt.format(m) + (f" ± {fmt.format(sd)}" if len(runs) > 1 else "")

    lines = [
        "| model | runs | KL(q‖p) /token | KL(p‖q) /token | seq KL(q‖p) | student valid % | teacher valid % "
        "| invalid copied % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm in ["student init", *[a for a in ORDER if a in groups]]:
        runs = groups[arm]
        lines.append(
            f"| {arm} | {len(runs)} | {cell(runs, rkl)} | "
            f"{cell(runs, lambda d: d['kl']['teacher']['forward_kl'])} | "
            f"{cell(runs, lambda d: d['kl']['student']['seq_mc'], '{:.1f}')} | "
            f"{cell(runs, lambda d: d['validity']['student']['valid_rate'], '{:.1f}')} | "
            f"{cell(runs, lambda d: d['validity']['teacher']['valid_rate'], '{:.1f}')} | "
            f"{cell(runs, lambda d: d['copying']['copied_invalid_share'], '{:.1f}')} |"
        )
    return lines


def diagnose_rows(settings: dict, groups: dict[str, list[dict]]) -> list[str]:
    """Exact token KLs and copying on the probe prompts (minillm.diagnose), per arm over seeds."""
    return [
        "",
        f"## What reverse KL buys (minillm.diagnose: first {settings['num_prompts']} valid prompts × seeds "
        f"{settings['seeds']}, temperature 1)",
        "",
        "Exact full-vocabulary token KLs, per token: KL(q‖p) on the student's own samples, KL(p‖q) on the "
        "teacher's; seq KL(q‖p): Monte Carlo log q(y) − log p(y) per student response. Copied: the share of "
        "the student's invalid answers that appear word for word among the teacher's samples for that "
        "prompt. Trained arms: mean ± std over training seeds (best_model of each run).",
        "",
        *kl_table(groups),
    ]


def selection_rows(runs: list[dict]) -> list[str]:
    """Which validation each metric would select, and that validation's validity / Rouge-L."""
    lines = []
    for r in runs:
        if not r["val"]:
            continue
        by_rouge = max(r["val"], key=lambda v: v["rougeL"])
        by_valid = max(r["val"], key=lambda v: v["valid"])
        last = r["val"][-1]
        lines.append(
            f"| {r['arm']}-s{r['seed']} | {by_rouge['opt_step']} ({by_rouge['valid']:.1f} / {by_rouge['rougeL']:.1f}) "
            f"| {by_valid['opt_step']} ({by_valid['valid']:.1f} / {by_valid['rougeL']:.1f}) "
            f"| {last['opt_step']} ({last['valid']:.1f} / {last['rougeL']:.1f}) |"
        )
    return lines


# --------------------------------------------------------------------------- the figure


def trajectory_plot(s: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms, init_val = s["arms"], s["init_val"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    hidden_under_select_valid = "select_valid" in arms and [r["val"] for r in arms["full"]] == [
        r["val"] for r in arms["select_valid"]
    ]
    for i, name in enumerate(a for a in ORDER if a in arms):
        for key, ax in (("valid", axes[0]), ("rougeL", axes[1])):
            by_step = defaultdict(list)
            for r in arms[name]:
                for v in r["val"]:
                    by_step[v["opt_step"]].append(v[key])
            steps = sorted(by_step)
            means = [statistics.mean(by_step[t]) for t in steps]
            sds = [mean_std(by_step[t])[1] for t in steps]
            label = f"{name} (n={len(arms[name])})"
            if name == "full" and hidden_under_select_valid:
                label = f"full (n={len(arms[name])}; under select_valid)"
            ax.plot(steps, means, marker="o", ms=3, lw=1.2, color=f"C{i}", label=label)
            ax.fill_between(
                steps,
                [m - d for m, d in zip(means, sds, strict=True)],
                [m + d for m, d in zip(means, sds, strict=True)],
                color=f"C{i}",
                alpha=0.12,
                lw=0,
            )
    for key, ax in (("valid", axes[0]), ("rougeL", axes[1])):
        ax.axhline(init_val[key], color="k", ls="--", lw=1, label="student init (one sampling seed)")
    axes[0].set_ylabel("validation validity (%)", fontsize=9)
    axes[1].set_ylabel("validation Rouge-L", fontsize=9)
    axes[0].set_title("validity on the validation slice", fontsize=9)
    axes[1].set_title("Rouge-L on the validation slice", fontsize=9)
    for ax in axes:
        ax.set_xlabel("optimizer steps", fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8)
    fig.suptitle(
        f"{init_val['n']} valid prompts, one sampling seed; lines: mean over training seeds, "
        "bands: ± 1 std over training seeds",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.14, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- README.md and make run's sentence


def claims(s: dict) -> dict:
    """The verdicts the README and make run's sentence state, each computed from the intervals."""
    mini = minillm_arms(s)
    beats_init = [
        a
        for a in mini
        for k in ("valid", "rougeL")
        if not within_noise(*vs_init(s, a, k)) and vs_init(s, a, k)[0] > 0
    ]
    beats_control = [
        a
        for a in mini
        for k in ("valid", "rougeL")
        if not within_noise(*vs_control(s, a, k)) and vs_control(s, a, k)[0] > 0
    ]
    probes = s["probes"]
    control_kl = [rkl(d) for d in probes.get(CONTROL, [])]
    kl_below_control = [
        a
        for a in mini
        if len(probes.get(a, [])) > 1
        and (lambda d, h: not within_noise(d, h) and d < 0)(*arm_vs([rkl(d) for d in probes[a]], control_kl))
    ]
    kl_tested = [a for a in mini if len(probes.get(a, [])) > 1]
    return {
        "beats_init": sorted(set(beats_init)),
        "beats_control": sorted(set(beats_control)),
        "kl_below_control": kl_below_control,
        "kl_tested": kl_tested,
    }


def scale_verdict(s: dict) -> str:
    """Whether any MiniLLM setting beat its init or the control beyond noise (make run's sentence, and the
    top-level README's)."""
    c = claims(s)
    if c["beats_init"] or c["beats_control"]:
        return (
            f"At this scale {', '.join(sorted(set(c['beats_init'] + c['beats_control'])))} beat the init or the "
            "continued-SFT control beyond noise in test validity or Rouge-L"
        )
    return (
        f"At this scale none of the {len(minillm_arms(s))} MiniLLM settings tried beat its init or the "
        "continued-SFT control beyond noise in test validity or Rouge-L"
    )


def make_run_note(s: dict) -> str:
    c = claims(s)
    first = scale_verdict(s)
    if c["kl_tested"] and len(c["kl_below_control"]) == len(c["kl_tested"]):
        second = "; each lowers the reverse KL to the teacher below the control's beyond noise"
    else:
        second = (
            "; the continued-SFT control lowers the reverse KL to the teacher too "
            f"({len(c['kl_tested']) - len(c['kl_below_control'])} of the {len(c['kl_tested'])} settings probed more "
            "than once are within noise of it)"
        )
    return f"{first}{second}: experiments/results/validity_drop/README.md\n"


def signed(x: float, digits: int = 1) -> str:
    """``+1.2`` / ``−0.8`` with a true minus sign, as the top-level README writes numbers."""
    return f"{x:+.{digits}f}".replace("-", "−")


def kl_summary(s: dict) -> dict:
    """The reverse-KL facts both top-level README sentences state: the init's, the MiniLLM arm means', the
    control's, and how many arms probed more than once are within noise of the control."""
    probes, c = s["probes"], claims(s)
    mini = minillm_arms(s)
    return {
        "init": rkl(probes["student init"][0]),
        "arm_means": [mean_std([rkl(d) for d in probes[a]])[0] for a in mini if a in probes],
        "control": ms([rkl(d) for d in probes[CONTROL]], 2),
        "control_lower": mean_std([rkl(d) for d in probes[CONTROL]])[0] < rkl(probes["student init"][0]),
        "within": len(c["kl_tested"]) - len(c["kl_below_control"]),
        "tested": len(c["kl_tested"]),
        "prompts": s["probe_settings"]["num_prompts"],
    }


def all_within_init(s: dict) -> bool:
    return all(within_noise(*vs_init(s, a, k)) for a in s["names"] for k in ("valid", "rougeL"))


def headline(folder: Path = RESULTS) -> str:
    """The top-level README's paragraph on the embedded default's MiniLLM run: the study's verdict, rendered
    from the same numbers as its README."""
    s = load(Path(folder))
    full, init = s["arms"]["full"], s["init"]
    pv = s["paired"]["full"]["valid"]
    k = kl_summary(s)
    drop = "borne out" if not (pv[1][0] <= 0 <= pv[1][1]) and pv[0] < 0 else "not borne out"
    return (
        f"The validity drop the 3-minute `make run` once printed is {drop}: over {len(full)} training seeds × "
        f"{len(full[0]['sampling_seeds'])} sampling seeds on all {full[0]['n_test']} test prompts "
        "([validity_drop](experiments/results/validity_drop/README.md)), MiniLLM as `make run` trained it then "
        f"(`full`, lr {sci(full[0]['config']['optim.lr'])}, {full[0]['global_step']} steps) ends at {ms([r['valid'] for r in full])} % valid "
        f"against the init's {init['valid']:.1f} ± {init['valid_std']:.1f} — paired over prompts "
        f"{signed(pv[0])} points [{signed(pv[1][0])}, {signed(pv[1][1])}], {ci_word(*pv)} — and "
        + (
            f"every one of the {len(s['names'])} arms (α, estimator variant, single-step term, lr, inner epochs, "
            "selection metric, and the continued-SFT control) is within noise of the init"
            if all_within_init(s)
            else f"not all of the {len(s['names'])} arms are within noise of the init"
        )
        + f" in test validity and Rouge-L. **{scale_verdict(s)}.** MiniLLM lowers the exact per-token reverse KL "
        f"to the teacher on {k['prompts']} valid prompts ({k['init']:.2f} → {span(k['arm_means'], 2)}, arm "
        + (
            "means), but so does continued SFT ("
            if k["control_lower"]
            else "means); continued SFT does not ("
        )
        + f"{k['control']}; {k['within']} of the {k['tested']} MiniLLM arms probed more than once are within noise "
        "of it)."
    )


def summary(folder: Path = RESULTS) -> str:
    """The study's line in the top-level README's results list (one markdown bullet)."""
    s = load(Path(folder))
    full = s["arms"]["full"]
    pv = s["paired"]["full"]["valid"]
    k = kl_summary(s)
    probes = s["probes"]
    copied = [
        mean_std([d["copying"]["copied_invalid_share"] for d in probes[a]])[0]
        for a in s["names"]
        if a in probes
    ]
    noise = pv[1][0] <= 0 <= pv[1][1]
    return (
        f"- [validity_drop](experiments/results/validity_drop/README.md) ({len(full)} training seeds × "
        f"{len(full[0]['sampling_seeds'])} sampling seeds, whole test split, {len(s['names'])} arms): `make run`'s "
        + ("validity drop was sampling noise" if noise else "validity drop is beyond noise")
        + " (paired over prompts "
        f"{signed(pv[0])} [{signed(pv[1][0])}, {signed(pv[1][1])}]); "
        + (
            "no MiniLLM variant nor the SFT control moves validity or Rouge-L beyond noise"
            if all_within_init(s)
            else "some arm moves validity or Rouge-L beyond noise"
        )
        + f" in {full[0]['global_step']} steps; MiniLLM lowers the exact reverse KL to the teacher "
        f"({k['init']:.2f} → {span(k['arm_means'], 2)} per token), "
        + ("and so does the SFT control (" if k["control_lower"] else "the SFT control does not (")
        + f"{k['control']}; {k['within']} of the {k['tested']} MiniLLM arms probed more than once within noise of it); "
        f"{span(copied)} % of the student's invalid "
        "answers appear among the teacher's samples — its errors are its own."
    )


def readme(s: dict) -> str:
    arms, init, init_val = s["arms"], s["init"], s["init_val"]
    mini = minillm_arms(s)
    c = claims(s)
    full, sft = arms["full"], arms[CONTROL]
    pv, pr = s["paired"]["full"]["valid"], s["paired"]["full"]["rougeL"]
    n_test, sseeds = full[0]["n_test"], full[0]["sampling_seeds"]
    seeds_per_arm = sorted({len(arms[a]) for a in s["names"]})
    val_full = [v["valid"] for r in full for v in r["val"]]
    val_slice_arms = [statistics.mean(val_summary(r) for r in arms[a]) for a in s["names"]]
    test_vs_init = [mean_of(s, a, "valid") - init["valid"] for a in s["names"]]
    steps = full[0]["global_step"]
    per_round = full[0]["per_round"]
    cfg = full[0]["config"]
    val_every = cfg["trainer.val_check_interval"] * per_round
    val_n = cfg["eval.val_samples"]

    def arm_row(a):
        rs = arms[a]
        return (
            f"{ms([r['valid'] for r in rs])} % valid, {ms([r['rougeL'] for r in rs])} Rouge-L "
            f"(vs init {pm(*vs_init(s, a, 'valid'))} / {pm(*vs_init(s, a, 'rougeL'))})"
        )

    mini_valid = [mean_of(s, a, "valid") for a in mini]
    mini_rouge = [mean_of(s, a, "rougeL") for a in mini]
    all_init = all(within_noise(*vs_init(s, a, k)) for a in s["names"] for k in ("valid", "rougeL"))
    pairs = [(a, b) for i, a in enumerate(s["names"]) for b in s["names"][i + 1 :]]
    pair_sep = [
        (a, b, k)
        for a, b in pairs
        for k in ("valid", "rougeL")
        if not within_noise(*arm_vs([r[k] for r in arms[a]], [r[k] for r in arms[b]]))
    ]

    # reverse KL
    probes = s["probes"]
    init_probe = probes["student init"][0]
    init_by_seed = [
        init_probe["kl"]["student"]["reverse_kl_by_seed"][str(k)] for k in s["probe_settings"]["seeds"]
    ]
    mini_probe_vals = [rkl(d) for a in mini for d in probes.get(a, [])]
    arm_kl_means = [mean_std([rkl(d) for d in probes[a]])[0] for a in mini if a in probes]
    control_kl = [rkl(d) for d in probes[CONTROL]]
    control_low = min(probes[CONTROL], key=rkl)
    below_low = sum(v > rkl(control_low) for v in mini_probe_vals)
    kl_rows = []
    for a in c["kl_tested"]:
        d, h = arm_vs([rkl(x) for x in probes[a]], control_kl)
        kl_rows.append(f"{a} {pm(d, h, 2)}")
    fwd = [d["kl"]["teacher"]["forward_kl"] for a in mini for d in probes.get(a, [])]
    fwd_means = [
        mean_std([d["kl"]["teacher"]["forward_kl"] for d in probes[a]])[0] for a in mini if a in probes
    ]
    seq_means = [mean_std([d["kl"]["student"]["seq_mc"] for d in probes[a]])[0] for a in mini if a in probes]
    copied = [
        mean_std([d["copying"]["copied_invalid_share"] for d in probes[a]])[0]
        for a in s["names"]
        if a in probes
    ]
    teacher_probe_valid = init_probe["validity"]["teacher"]["valid_rate"]
    n_probe = s["probe_settings"]["num_prompts"]
    probe_seeds = s["probe_settings"]["seeds"]

    # lr change: validation evidence
    lr_arm = "lr3e-5"
    lr_val_r = arm_vs(
        [val_summary(r, "rougeL") for r in arms[lr_arm]], [val_summary(r, "rougeL") for r in full]
    )
    lr_val_v = arm_vs([val_summary(r) for r in arms[lr_arm]], [val_summary(r) for r in full])

    # α = 0 against α = 0.2
    a0_kl = arm_vs([rkl(d) for d in probes["alpha0"]], [rkl(d) for d in probes["full"]])
    secs = {a: [r["train_seconds"] for r in arms[a]] for a in s["names"]}
    same_training = [r["val"] for r in full] == [r["val"] for r in arms["select_valid"]]

    # selection: same training, another checkpoint (paired over training seeds)
    sel = one_sample([b["valid"] - a["valid"] for a, b in zip(full, arms["select_valid"], strict=True)])
    n_vals = sorted({len(r["val"]) for r in full})

    # trajectory: first → last validation per arm
    traj_rows = []
    for a in [x for x in ORDER if x in arms]:
        first = [r["val"][0]["valid"] for r in arms[a]]
        last = [r["val"][-1]["valid"] for r in arms[a]]
        d, h = one_sample([y - x for x, y in zip(first, last, strict=True)])
        traj_rows.append(
            f"| {a} | {ms(first)} | {ms(last)} | {d:+.1f} [{d - h:+.1f}, {d + h:+.1f}] | {noise_word(d, h, 'rises', 'falls')} |"
        )

    # against the control
    ctrl_rows = []
    for a in mini:
        dv, hv = vs_control(s, a, "valid")
        dr, hr = vs_control(s, a, "rougeL")
        ctrl_rows.append(
            f"| {a} | {pm(dv, hv)} | {noise_word(dv, hv)} | {pm(dr, hr)} | {noise_word(dr, hr)} |"
        )

    # per category: does the control move the categories the way full does?
    cats = sorted(init["per_category"])
    moves = {
        a: {k: category_valid(s, a, k) - init["per_category"][k]["valid_rate"] for k in cats}
        for a in ("full", CONTROL)
    }
    same_way = sum(
        (moves["full"][k] > 0) == (moves[CONTROL][k] > 0)
        for k in cats
        if moves["full"][k] and moves[CONTROL][k]
    )
    cat_cells = ", ".join(
        f"{k} {init['per_category'][k]['valid_rate']:.1f} → {category_valid(s, 'full', k):.1f} / {category_valid(s, CONTROL, k):.1f}"
        for k in cats
    )

    best_valid = max(s["names"], key=lambda a: mean_of(s, a, "valid"))
    best_rouge = max(s["names"], key=lambda a: mean_of(s, a, "rougeL"))
    lowest_kl = min(
        (a for a in s["names"] if a in probes), key=lambda a: mean_std([rkl(d) for d in probes[a]])[0]
    )

    verdict_drop = (
        "**No drop beyond noise, and no gain either.**"
        if pv[1][0] <= 0 <= pv[1][1]
        else ("**The drop is real.**" if pv[0] < 0 else "**A gain, not a drop.**")
    )
    none_beyond = (
        "no MiniLLM arm beats the control beyond noise either"
        if not c["beats_control"]
        else (f"{', '.join(c['beats_control'])} beat the control beyond noise")
    )
    text = (
        f"""# validity_drop — does MiniLLM make the embedded student less valid? (issue 17)

Every number, interval and verdict below is rendered from the files in this folder by
`experiments/validity_drop/analyze.py` (`--check` re-renders and fails on any difference; so does
`tests/test_study_reports.py`).

The 3-minute `make run` had printed a trained student *below* its init in validity (issue 17 quotes its
printouts: 26.4 % against 31.2 % on 2026-12-01, 25.6 against 31.2 on 2026-11-28; those printouts are not in
this folder). This study asks whether that drop is real, where it comes from, and what reverse KL to the
teacher buys at this scale.

## Verdict

- {verdict_drop} With {len(sseeds)} sampling seeds on all {n_test} test prompts the init is
  {init["valid"]:.1f} ± {init["valid_std"]:.1f} % valid (its sampling seeds alone spread that much, so one seed's
  31.2 % is no baseline), and MiniLLM as `make run` trains it ({steps} steps, {len(full)} training seeds ×
  {len(sseeds)} sampling seeds) ends at {ms([r["valid"] for r in full])} %: paired over the same prompts,
  **{pv[0]:+.1f} points [{pv[1][0]:+.1f}, {pv[1][1]:+.1f}]** validity and {pr[0]:+.1f} [{pr[1][0]:+.1f}, {pr[1][1]:+.1f}]
  Rouge-L — {ci_word(*pv)} in validity, {ci_word(*pr)} in Rouge-L.
  On the validation slice its validations lie at {span(val_full)} % against the init's {init_val["valid"]:.1f} %
  there (figure; the first-to-last change per arm is tabled in section 1).
- **No factor separates.** α = 0 or 0.2 (or decaying), the code's or the paper's estimator, with or without the
  single-step term, lr 1e-4 or 3e-5, 1 or 4 inner epochs, selection by validation Rouge-L or validity: every
  MiniLLM arm ends at {span(mini_valid)} % valid and {span(mini_rouge)} Rouge-L on test, and the continued-SFT
  control at {mean_of(s, CONTROL, "valid"):.1f} % / {mean_of(s, CONTROL, "rougeL"):.1f} —
  {"every arm within noise of the init" if all_init else "not every arm within noise of the init"}, and
  {"no pair of arms apart beyond noise" if not pair_sep else f"{len(pair_sep)} pairs of arms apart beyond noise"}
  (t intervals over training seeds).
- **Reverse KL falls — and so it does under continued SFT.** The exact token-level KL(q‖p) on the student's own
  samples is {rkl(init_probe):.2f} nats per token for the init (one probe: {", ".join(f"{v:.2f}" for v in init_by_seed)}
  on its {len(init_by_seed)} sampling seeds) and {span(arm_kl_means, 2)} for the MiniLLM arm means
  ({len(mini_probe_vals)} probes, {span(mini_probe_vals, 2)}). The continued-SFT control, which never sees the
  teacher, reaches {ms(control_kl, 2)} (its {control_low["run"]} at {rkl(control_low):.2f} lies below {below_low} of
  the {len(mini_probe_vals)} MiniLLM probes); against it, {len(c["kl_tested"]) - len(c["kl_below_control"])} of the
  {len(c["kl_tested"])} MiniLLM arms with more than one probe are within noise ({"; ".join(kl_rows)}). So the fall is
  not shown to come from the reverse-KL objective: training on from this init lowers it too. Two more limits:
  the init was probed once, so its own spread is two sampling seeds; and the probe prompts are the first
  {n_probe} valid prompts, inside the {val_n}-prompt validation slice on which each run's checkpoint was selected,
  so they are not held out from selection. KL(p‖q) on the teacher's samples: {probes["student init"][0]["kl"]["teacher"]["forward_kl"]:.2f}
  for the init, {span(fwd_means, 2)} for the MiniLLM arm means.
- **The student does not copy the teacher's mistakes.** {span(copied)} % of its invalid answers (arm means)
  appear among the teacher's samples for the same prompt. Its invalid answers are its own: wrong facts of the
  fictional world (a 0.09M-parameter student does not hold them all), broken words, steps reordered or dropped,
  verse that misses the required word (quotes below): knowledge the student lacks, which mode-seeking does not supply.
- **What changed in the default:** on validation evidence only, `reverse_kld`'s lr went from 1e-4 to 3e-5
  (validation Rouge-L {ms([val_summary(r, "rougeL") for r in arms[lr_arm]])} against
  {ms([val_summary(r, "rougeL") for r in full])} over {len(full)} seeds, {pm(*lr_val_r)}, {noise_word(*lr_val_r, "higher", "lower")};
  validation validity {ms([val_summary(r) for r in arms[lr_arm]])} against {ms([val_summary(r) for r in full])},
  {pm(*lr_val_v)}, {noise_word(*lr_val_v, "higher", "lower")}). Its test numbers were read only afterwards
  ({arm_row(lr_arm)}). `make run`'s table prints validity with a 95 % interval and the paired trained − init
  difference with a verdict, and `make run` ends with the sentence in `make_run_note.txt`, which this script
  writes from the intervals above.

## Setup

Every arm starts from the shipped init (0.09M) with the shipped teacher (2.16M), trains {steps} optimizer steps
at {lr_setting(full[0])}; the SFT control at {lr_setting(sft[0])}. The MiniLLM arms validate
every {val_every} optimizer steps (the control: `trainer.val_check_interval={sft[0]["config"]["trainer.val_check_interval"]}` of an epoch) on the first {val_n} valid prompts with one
sampling seed; every run is evaluated on all {n_test} test prompts with sampling seeds {", ".join(map(str, sseeds))}.
{"/".join(map(str, seeds_per_arm))} training seeds per arm.

| arm | what differs from `full` (its `config.yaml`) |
|---|---|
"""
        + "\n".join(f"| {a} | {settings_diff(s, a)} |" for a in s["names"])
        + f"""

`full` is `objective=reverse_kld` as `make run` ran it (variant=code, α = 0.2, single-step term, lr 1e-4);
`select_valid` is the same training as `full` with another selected checkpoint; `sft` is the continued-SFT
control, as in objectives_compare.

Commands (2 CPU cores, two runs side by side with one thread each; 2026-12-01, 02:41–04:08 UTC):

```bash
python -m minillm.run -m experiment=validity_drop                                  # the 8 MiniLLM arms x 3 seeds
python -m minillm.run -m experiment=validity_drop objective=sft +arm=validity_drop/sft seed=0,1,2
python -m minillm.evaluate evaluate.model=init  evaluate.split=test 'eval.seeds=[0,1,2]' 'evaluate.metrics=[rouge]'
python -m minillm.evaluate evaluate.model=teacher evaluate.split=test 'eval.seeds=[0,1,2]' 'evaluate.metrics=[rouge]'
python -m minillm.evaluate evaluate.model=init evaluate.split=valid eval.num_samples=256 'eval.seeds=[0]' 'evaluate.metrics=[rouge]'
python -m minillm.evaluate evaluate.path=multirun/validity_drop/full-s<K>/best_model evaluate.split=test 'eval.seeds=[0,1,2]' 'evaluate.metrics=[rouge]'
python -m minillm.diagnose diagnose.model=init diagnose.num_prompts=100 'diagnose.seeds=[0,1]'
python -m minillm.diagnose diagnose.path=multirun/validity_drop/<run> diagnose.num_prompts=100 'diagnose.seeds=[0,1]'
# copy each run's config.yaml, csv/metrics.csv and results.json into runs/<run>/, the evaluations into eval/,
# the probes into diagnose/, then:
python experiments/validity_drop/analyze.py
```

The runs were launched one by one (`hydra.run.dir=multirun/validity_drop/<arm>-s<seed>`) by two workers
instead of the sweep, so that two ran side by side; the configs are the sweep's. Training took
{span([x for a in s["names"] for x in secs[a]], 0)} s per run (`train s` below; load-dependent, see section 2).
Files: `runs/<arm>-s<seed>/` (config, metrics.csv, results.json), `eval/` (init, teacher and the three `full`
students with per-prompt scores), `diagnose/` (the probes, with quoted invalid answers per category),
`report.md` (every table), `trajectory.png`, `make_run_note.txt`.

## 1. Is the drop real?

See `report.md` for every row. The arm means ({len(full)} training seeds; each run's score is its mean over
{len(sseeds)} sampling seeds on {n_test} prompts) and their differences from the init with 95 % intervals (t over
training seeds and the init's sampling seeds — conservative):

"""
        + "\n".join(report_lines(s)[4 : 8 + len(s["names"])])
        + f"""

Paired over prompts (the three `full` students re-evaluated with per-prompt scores, identical to their
in-run numbers): validity {pv[0]:+.1f} [{pv[1][0]:+.1f}, {pv[1][1]:+.1f}], Rouge-L {pr[0]:+.1f} [{pr[1][0]:+.1f}, {pr[1][1]:+.1f}].

![trajectory](trajectory.png)

The trajectory (validation, {val_n} prompts, one sampling seed, every {val_every} steps; lines: mean over training
seeds, bands: ± 1 std{"; `full` lies under `select_valid`, the same training with identical validations" if same_training else ""}).
First and last validation validity per arm, and the change with its 95 % interval over training seeds:

| arm | first val valid % | last val valid % | last − first [95 %] | verdict |
|---|---|---|---|---|
"""
        + "\n".join(traj_rows)
        + f"""

Against the continued-SFT control (the same t interval over training seeds; {none_beyond}):

| arm | Δ valid vs SFT | verdict | Δ Rouge-L vs SFT | verdict |
|---|---|---|---|---|
"""
        + "\n".join(ctrl_rows)
        + f"""

The validation slice puts the arms' mean validations at {span(val_slice_arms)} % against the init's
{init_val["valid"]:.1f} % there, the test split from {min(test_vs_init):+.1f} to {max(test_vs_init):+.1f} points off its {init["valid"]:.1f} %: the
init's slice value is one seed on {init_val["n"]} prompts (95 % interval {init_val["valid_ci95"][0]:.1f}–{init_val["valid_ci95"][1]:.1f}),
so the two disagree only within their noise.

## 2. Where does it come from?

Nowhere in particular: {"no arm separates from another beyond seed noise on test" if not pair_sep else "see the pairs above"};
on validation the lower lr's Rouge-L is {noise_word(*lr_val_r, "higher", "lower")} ({pm(*lr_val_r)}) and its validity
{noise_word(*lr_val_v, "higher", "lower")} ({pm(*lr_val_v)}).

- **α = 0 vs 0.2 (and decay).** Test validity {ms([r["valid"] for r in arms["alpha0"]])} vs
  {ms([r["valid"] for r in full])} (decaying: {ms([r["valid"] for r in arms["alpha_decay"]])}); reverse KL per
  token {ms([rkl(d) for d in probes["alpha0"]], 2)} against {ms([rkl(d) for d in probes["full"]], 2)}, a difference of
  {pm(*a0_kl, 2)}, {noise_word(*a0_kl, "higher", "lower")}. The toy_sequences finding (α = 0.2 stops at a biased fixed
  point) does not show here. Cost: no ratio is claimed. The `train s` column mixes machine loads: `full` and
  `select_valid` ran the same computation in {statistics.mean(secs["full"]):.0f} and {statistics.mean(secs["select_valid"]):.0f} s
  on average; α = 0's {statistics.mean(secs["alpha0"]):.0f} s is {statistics.mean(secs["full"]) / statistics.mean(secs["alpha0"]):.1f}× below the one
  and {statistics.mean(secs["select_valid"]) / statistics.mean(secs["alpha0"]):.1f}× below the other, so the arms were not timed side by side
  and their seconds do not compare (at α = 0 the teacher scores finished responses in one pass, which is cheaper;
  by how much, a benchmark run on a quiet machine would say).
- **variant=code vs paper:** {ms([r["valid"] for r in full])} vs {ms([r["valid"] for r in arms["paper"]])}.
  **Single-step term off:** {ms([r["valid"] for r in arms["no_single_step"]])}. **lr 3e-5:** {ms([r["valid"] for r in arms["lr3e-5"]])}.
  **One inner epoch** (`ppo1`, 4 × the rollouts for the same steps): {arm_row("ppo1")};
  {"the best test means of the study" if best_valid == best_rouge == "ppo1" else "not the best test means"}{" and the lowest reverse KL" if lowest_kl == "ppo1" else ""}
  ({ms([rkl(d) for d in probes["ppo1"]], 2)} per token), within noise of lr 3e-5 on validation
  ({ms([val_summary(r) for r in arms["ppo1"]])} % / {ms([val_summary(r, "rougeL") for r in arms["ppo1"]])} against
  {ms([val_summary(r) for r in arms[lr_arm]])} / {ms([val_summary(r, "rougeL") for r in arms[lr_arm]])}:
  {noise_word(*arm_vs([val_summary(r) for r in arms["ppo1"]], [val_summary(r) for r in arms[lr_arm]]))} /
  {noise_word(*arm_vs([val_summary(r, "rougeL") for r in arms["ppo1"]], [val_summary(r, "rougeL") for r in arms[lr_arm]]))}).
  Its runs took {span(secs["ppo1"], 0)} s against {span(secs["full"], 0)} s for `full`, not side by side.
- **Selection metric.** Selecting by validation validity (same training as `full`{", identical validation curves" if same_training else ""})
  gave {ms([r["valid"] for r in arms["select_valid"]])} % on test against {ms([r["valid"] for r in full])} % by
  validation Rouge-L, a paired difference of {pm(*sel)} ({noise_word(*sel, "higher", "lower")}): the best of
  {"/".join(map(str, n_vals))} noisy validations did not pick a better checkpoint (`report.md`, "Selection", lists the
  step each metric picks).
- **Per category** (test, validity %: init → `full` / `sft`, trained arms mean over seeds; one sampling
  average per run, so no interval): {cat_cells}. The continued-SFT control moves {same_way} of the {len(cats)}
  categories in the same direction as `full`. Invalid answers of a `full` student (valid split, from
  `diagnose/full-s0/diagnose.md`):
"""
        + "\n".join(quote_lines(s["quotes_md"]))
        + """

## 3. What does reverse KL to the teacher buy here?

"""
        + "\n".join(kl_table(probes))
        + f"""

Probes: `minillm.diagnose` on the first {n_probe} valid prompts × sampling seeds {probe_seeds} (the counts per
arm in `runs`). The teacher is valid on {teacher_probe_valid:.0f} % of these prompts; its invalid answers are almost
never the student's ({span(copied)} % copied), so "a mode-seeking student copies a poor teacher" is not what happens.
The student's own samples move towards the teacher in reverse KL per token ({rkl(init_probe):.2f} → {span(arm_kl_means, 2)})
and per sequence ({init_probe["kl"]["student"]["seq_mc"]:.0f} → {span(seq_means, 0)} nats), but the continued-SFT control's
{ms(control_kl, 2)} is within noise of {len(c["kl_tested"]) - len(c["kl_below_control"])} of the {len(c["kl_tested"])} MiniLLM arms
tested against it, so this study does not show that the objective, rather than training on, moved it. KL(p‖q) on the
teacher's samples — how well the student covers what the teacher says — stays where it was
({probes["student init"][0]["kl"]["teacher"]["forward_kl"]:.2f} → {span(fwd, 2)} over the MiniLLM probes). At 0.09M parameters the student's errors
look like capacity errors (facts, spelling, step order: the quotes above) that neither mode-seeking nor {steps} more
steps of SFT fixed here; the teacher_gap study has what long further SFT does.

## What was not done

- An equal-wall-clock comparison: `make run` is time-bound, `ppo1` takes 4 × the rollouts per step, and the arms'
  seconds were not measured side by side; it was compared at equal steps only, and the default keeps 4 inner epochs.
- {"/".join(map(str, seeds_per_arm))} training seeds everywhere but the probes: the `minillm.diagnose` probes ran on
  {n_probe} valid prompts × {len(probe_seeds)} seeds for a subset of runs (counts in the KL table), the init once,
  and their per-seed spread is large (the init's token KL is {" and ".join(f"{v:.2f}" for v in init_by_seed)} on its
  seeds). A probe on prompts outside the validation slice, and more probes of the init and the control, would be
  needed to say what reverse KL buys beyond training on.
- Longer runs (a plateau of MiniLLM from this init), other students or teachers: at this scale the question
  the paper asks cannot be separated from noise; the SmolLM2 preset (issue 15) is where to ask it next.
"""
    )
    return text


def quote_lines(path: Path) -> list[str]:
    """QUOTES as markdown bullets, each instruction and answer read from diagnose.md (fails if one is missing)."""
    text = path.read_text()
    lines = []
    for category, answer, note in QUOTES:
        section = text.split(f"### {category}\n", 1)
        if len(section) < 2:
            raise SystemExit(f"{path}: no section '### {category}'")
        body = section[1].split("\n### ", 1)[0]
        blocks = body.split("- instruction: ")
        found = [b for b in blocks if f"): {answer}" in b]
        if not found:
            raise SystemExit(f"{path}: no invalid answer starting {answer!r} under {category}")
        instruction = found[0].splitlines()[0]
        said = next(ln for ln in found[0].splitlines() if f"): {answer}" in ln).split("): ", 1)[1]
        lines.append(f'  - {category} — *{instruction}* → "{said}" ({note})')
    return lines


# --------------------------------------------------------------------------- entry point


def render(folder: Path = RESULTS, figures: bool = True) -> dict[str, str]:
    """The text report files of ``folder``, rendered from its committed files (name → text); with
    ``figures``, trajectory.png is drawn into ``folder`` too."""
    s = load(Path(folder))
    if figures:
        trajectory_plot(s, Path(folder) / "trajectory.png")
    return {
        "README.md": readme(s),
        "report.md": "\n".join(report_lines(s)),
        "make_run_note.txt": make_run_note(s),
    }


def main(argv=None) -> int:
    from minillm.evaluation.rendered import study_main

    return study_main(render, RESULTS, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
