"""The smollm2_distill README, rendered from the study's committed files: ``python
experiments/smollm2_distill/render.py [--check]``.

The run folders of the study were not kept, so its one table (``summary.md``, written by ``summarize.py`` from
them at the time) cannot be recomputed: this script reads that table as transcribed data, and every number
and verdict of the README's study section is derived from it; the cost section from ``rounds/*.json``
(``measure_round.py``), ``bench.json`` (``make bench``) and the stage times from ``stages.tsv``. It also redraws
``kl.png`` from the table's KL columns (one probe per method and budget, so the table holds every plotted
value, to three decimals). ``scores.png`` plots each training seed, which the table does not hold: it stays as
drawn at the time.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # render_common (appended: no shadowing)
import render_common as rc  # noqa: E402

FOLDER = rc.RESULTS / "smollm2_distill"
PAPER = ["sft", "kd", "seqkd", "minillm"]  # stage 2: 2 training seeds
NEWER = ["onpolicy_rkl", "gkd", "distillm", "taid", "distillm2"]  # stage 3: 1 training seed
NAMES = {  # summary.md's method column → the arm
    "SFT, continued (control)": "sft",
    "KD (forward KL, kd_ratio 0.5)": "kd",
    "SeqKD": "seqkd",
    "MiniLLM (reverse_kld, variant code, α 0.2)": "minillm",
    "on-policy reverse KL (γ 0)": "onpolicy_rkl",
    "GKD (JSD 0.5, λ 0.5)": "gkd",
    "DistiLLM (skew KL 0.1, adaptive replay)": "distillm",
    "TAID": "taid",
    "DistiLLM-2 (on-policy student side)": "distillm2",
}
SHORT = {
    "sft": "SFT",
    "kd": "KD",
    "seqkd": "SeqKD",
    "minillm": "MiniLLM",
    "onpolicy_rkl": "on-policy reverse KL",
    "gkd": "GKD",
    "distillm": "DistiLLM",
    "taid": "TAID",
    "distillm2": "DistiLLM-2",
}
BUDGETS = {"equal time (max_time 3 min)": "equal_time", "equal steps (16)": "equal_steps"}
ROUNDS = ["r8_cache_1thread", "r8_cache_chunk16", "r8_rescore", "r8_mb4", "r16_cache", "r8_cache_2threads"]
COMMON = {  # measure.sh's overrides for every setting (and those that make a run a measurement)
    "teacher=smollm2_135m",
    "student=smollm2_pruned10",
    "objective=reverse_kld",
    "logger=none",
    "eval.compare=false",
    "eval.num_samples=1",
    "eval.max_new_tokens=4",
    "select.save_hf=false",
    "data.n_train=400",
    "objective.max_new_tokens=64",
    "objective.mini_batch_size=8",
}


# --------------------------------------------------------------------------- summary.md, read as data


def cell(text: str) -> tuple[float | None, float | None]:
    """``24.3 ± 0.1`` → (24.3, 0.1); ``19.0`` → (19.0, None); ``–`` → (None, None)."""
    text = text.strip()
    if text == "–":
        return None, None
    mean, _, std = text.partition("±")
    return float(mean), float(std) if std.strip() else None


def read_summary(path: Path) -> dict:
    """summary.md's prose line numbers and its table: rows keyed by (arm, budget)."""
    text = path.read_text()
    head = re.search(
        r"Teacher zero-shot: Rouge-L ([\d.]+), valid ([\d.]+) %; after SFT \((\d+) steps\): ([\d.]+), ([\d.]+) %\. "
        r"Student init \(pruned, then (\d+) SFT steps\): ([\d.]+), ([\d.]+) % \(pruned, before SFT: ([\d.]+), "
        r"([\d.]+) %\)",
        text,
    )
    kl = re.search(r"reverse KL on its own samples ([\d.]+), forward KL on the teacher's ([\d.]+)\.", text)
    if head is None or kl is None:
        raise ValueError(f"{path}: the teacher/init lines are not in the form summarize.py writes")
    g = [float(x) for x in head.groups()]
    rows = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.strip().strip("|").split("|")]
        if len(parts) != 10 or parts[0] not in NAMES:
            continue
        arm, budget = NAMES[parts[0]], BUDGETS[parts[1]]
        values = [cell(p) for p in parts[3:]]
        keys = ["rougeL", "valid", "steps", "train_s", "s_per_step", "rkl", "fkl"]
        rows[(arm, budget)] = {
            "seeds": int(parts[2]),
            "name": parts[0],
            **dict(zip(keys, values, strict=True)),
        }
    return {
        "zero_shot": (g[0], g[1]),
        "teacher_steps": int(g[2]),
        "teacher": (g[3], g[4]),
        "init_steps": int(g[5]),
        "init": (g[6], g[7]),
        "pruned": (g[8], g[9]),
        "init_kl": (float(kl.group(1)), float(kl.group(2))),
        "rows": rows,
    }


def read_stages(path: Path) -> list[tuple[str, int, str]]:
    out = []
    for line in path.read_text().splitlines():
        name, seconds, _status, load = line.split("\t")
        out.append((name, int(seconds), load))
    return out


# --------------------------------------------------------------------------- the cost section


def rounds_table(rounds: dict[str, dict]) -> list[str]:
    lines = [
        "| setting (`rounds/<name>.json`) | overrides beyond the common ones | seconds per round (round 0, 1) | "
        "of which rollout | updates per round | peak RSS MiB | load average after |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ROUNDS:
        r = rounds[name]
        extra = [
            o for o in r["overrides"] if o not in COMMON and not o.startswith(("hydra.", "trainer.max_steps"))
        ]
        secs = ", ".join(f"{x['seconds']:.0f}" for x in r["rounds"])
        rollout = ", ".join(f"{x['rollout_seconds']:.0f}" for x in r["rounds"])
        updates = r["rounds"][0]["global_step"]
        lines.append(
            f"| `{name}` | `{' '.join(extra)}` | {secs} | {rollout} | {updates} | {r['peak_rss_mib']:,} | "
            f"{r['load_average_after'].split()[0]} |"
        )
    return lines


def round_seconds(r: dict) -> float:
    """Mean seconds of a setting's rounds."""
    return sum(x["seconds"] for x in r["rounds"]) / len(r["rounds"])


def cost_section(folder: Path) -> list[str]:
    rounds = {n: rc.read_json(folder / "rounds" / f"{n}.json") for n in ROUNDS}
    bench = rc.read_json(folder / "bench.json")
    one, two, mb4, r16, rescore = (
        rounds["r8_cache_1thread"],
        rounds["r8_cache_2threads"],
        rounds["r8_mb4"],
        rounds["r16_cache"],
        rounds["r8_rescore"],
    )
    loads = [float(r["load_average_after"].split()[0]) for r in rounds.values()]
    first = one["rounds"][0]
    after_updates = ", ".join(f"{m / 1024:.1f}" for m in first["peak_rss_after_each_update_mib"])
    student_params = bench["models"]["student"]["parameters"]
    teacher_params = bench["models"]["teacher"]["parameters"]
    vocab = bench["models"]["vocab_size"]
    adam_gib = student_params * 4 * 3 / 2**30  # fp32 gradient + AdamW's two moments
    per_row_mib = (one["peak_rss_mib"] - mb4["peak_rss_mib"]) / 4  # 8 rows against 4 per update
    cache_mib = 8 * 64 * vocab * 4 / 2**20
    update_s = (first["seconds"] - first["rollout_seconds"]) / first["global_step"]
    thread_ratio = round_seconds(two) / round_seconds(one)
    r16_ratio = round_seconds(r16) / round_seconds(one)
    steps = bench["steps"]
    mini, resc, gkd_eq, gkd_run = (
        steps["minillm"],
        steps["minillm_rescored"],
        steps["gkd_equivalent"],
        steps["gkd_one_teacher_pass"],
    )
    points = bench["sweep"]["points"]
    lens = " and ".join(
        f"{p['response_len']} tokens ({p['seconds']:.1f} s)"
        for p in sorted(points, key=lambda p: p["response_len"])
    )
    load_before = bench["machine"]["load_avg_before"][0]
    load_after = bench["machine"]["load_avg_after"][0]

    def part(step: dict, key: str) -> float:
        return step["parts"][key]

    return [
        "## Cost of a MiniLLM round with this pair (item 4)",
        "",
        f"Teacher `teacher=smollm2_135m` ({teacher_params / 1e6:.1f}M parameters, a {vocab:,}-token vocabulary), "
        f"student `student=smollm2_pruned10` (its layers 0, 3, …, 27: {student_params / 1e6:.1f}M), bundled data "
        "in chat format, `objective=reverse_kld` (variant code, 4 inner epochs), fp32 on 2 CPU cores shared with "
        f"other jobs (1-minute load average {min(loads):.1f}–{max(loads):.1f} just after the settings' runs), "
        "2026-12-03. Each setting is two rounds of `python -m minillm.run` with a stopwatch around the round "
        "(`measure_round.py`) and the process's peak resident memory; no validation inside the rounds. Each "
        "setting ran in its own process, one after another, so two settings' times differ by the load as well "
        "as by the setting. Commands:",
        "",
        "```bash",
        "make smollm2                                   # the packages, the conversion and the pruned students, once",
        "bash experiments/smollm2_distill/measure.sh    # all settings below; or name some: measure.sh r8_mb4",
        "```",
        "",
        "Common settings (`measure.sh`): `"
        + " ".join(sorted(COMMON - {"logger=none"}, key=lambda o: o.split("=")[0]))
        + "`, and per row:",
        "",
        *rounds_table(rounds),
        "",
        "What the numbers say:",
        "",
        f"- **Memory.** With both models loaded and the first rollout done the process holds "
        f"{first['peak_rss_after_rollout_mib'] / 1024:.1f} GiB; the first updates take it to "
        f"{first['peak_rss_mib'] / 1024:.1f} GiB (`peak_rss_after_each_update_mib`: {after_updates} GiB): the "
        f"student's gradients and AdamW's two moments ({adam_gib:.2f} GiB together for "
        f"{student_params / 1e6:.1f}M parameters) and the update's activations, which grow with the minibatch, "
        f"about {per_row_mib:.0f} MiB per rollout of 64 tokens (peak {mb4['peak_rss_mib']:,} MiB with 4 rows per "
        f"update, {one['peak_rss_mib']:,} MiB with 8). The teacher's kept distributions are 8 × 64 × {vocab:,} "
        f"floats = {cache_mib:.0f} MiB per round (16 rollouts: {2 * cache_mib:.0f} MiB), far inside the default "
        "budget `objective.teacher_cache_mb=2048`; dropping them (`teacher_cache_mb=0`, one teacher pass per "
        f"minibatch) saved no memory (peak {rescore['peak_rss_mib']:,} MiB). `objective.chunk_size=16`, which "
        f"chunks the divergence terms only, did not lower the peak either ({rounds['r8_cache_chunk16']['peak_rss_mib']:,} "
        "MiB: the rest of the update — the LM head's B × T × V logits and their gradient, the sampled tokens' "
        "log-softmax, the layers' activations — is what sets it).",
        "- **Defaults set from this** (`conf/teacher/smollm2_135m.yaml`): `data.batch_size=8` (8 rollouts per "
        "round, SFT / KD batch 8), `eval.max_new_tokens=64` (the rollout length), `data.eval_batch_size=8`, "
        "`eval.batch_size=16`; `objective.teacher_cache_mb` (2048) and `objective.chunk_size` (null) keep their "
        f"defaults. Largest peak measured for this pair at these sizes: {max(r['peak_rss_mib'] for r in rounds.values()):,} "
        f"MiB resident, {cache_mib:.0f} MiB of it the teacher's kept distributions. When memory is short, "
        f"`objective.mini_batch_size=4` ({mb4['peak_rss_mib']:,} MiB; twice the optimizer steps per round).",
        f"- **Time.** A round of 8 rollouts on one thread took {span([x['seconds'] for x in one['rounds']], 0)} s "
        f"(`r8_cache_1thread`): about {first['rollout_seconds'] / first['seconds']:.0%} of it the rollout "
        "(lockstep decoding of both models, the untrained student running to the 64-token limit), the rest the "
        f"{first['global_step']} updates (~{update_s:.0f} s each). The settings below were timed in separate "
        "processes under different loads, so their ratios are indications, not clean comparisons: 16 rollouts "
        f"took {r16_ratio:.1f}× the 8-rollout round's time; two torch threads took {thread_ratio:.1f}× one "
        f"thread's (`r8_cache_2threads` against `r8_cache_1thread`, load average after each "
        f"{two['load_average_after'].split()[0]} and {one['load_average_after'].split()[0]}), so "
        "`fit.num_threads=1` on this shared machine.",
        "",
        f"**`make bench` on this pair** (2026-12-03 19:39, one thread, one repeat, load average "
        f"{load_before:.1f} before and {load_after:.1f} after; `bench.json`):",
        "",
        "```bash",
        'make bench ARGS="teacher.path=$PWD/.cache/models/SmolLM2-135M-Instruct.Q4_1-0a720403c6 \\',
        "  student.path=$PWD/.cache/models/SmolLM2-135M-Instruct.Q4_1-0a720403c6-every3-522b4e3d \\",
        "  tokenizer.path=$PWD/.cache/models/SmolLM2-135M-Instruct.Q4_1-0a720403c6 'sweep.response_lens=[64]' \\",
        "  'sweep.batch_sizes=[8]' sweep.repeats=1 vocab_memory.enabled=false trl_gkd.enabled=false repeats=1 warmup=0 \\",
        '  fit.num_threads=1"',
        "```",
        "",
        "| step (8 rollouts × 64 tokens, the preset's round) | s/step | rollout s | student fwd+bwd s | peak MiB |",
        "|---|---|---|---|---|",
        f"| MiniLLM, teacher logits kept from the rollout (default) | {mini['seconds']:.1f} | "
        f"{part(mini, 'rollout'):.1f} | {part(mini, 'student_fwd_bwd'):.1f} | {mini['memory']['peak_mib']:,.0f} |",
        f"| MiniLLM, teacher re-scored per minibatch (`teacher_cache_mb=0`) | {resc['seconds']:.1f} | "
        f"{part(resc, 'rollout'):.1f} | {part(resc, 'student_fwd_bwd'):.1f} (+{part(resc, 'teacher_scoring'):.1f} "
        f"teacher) | {resc['memory']['peak_mib']:,.0f} |",
        f"| GKD-equivalent (TRL's loop shape) / as our GKD runs it | {gkd_eq['seconds']:.1f} / "
        f"{gkd_run['seconds']:.1f} | {part(gkd_eq, 'rollout'):.1f} / {part(gkd_run, 'rollout'):.1f} | "
        f"{part(gkd_eq, 'student_fwd_bwd'):.1f} / {part(gkd_run, 'student_fwd_bwd'):.1f} | "
        f"{gkd_eq['memory']['peak_mib']:,.0f} |",
        "",
        "Both MiniLLM rows were timed in this one run: keeping the teacher's distributions costs nothing in peak "
        f"memory at this size and saves {1 - mini['seconds'] / resc['seconds']:.0%} of the step "
        f"({mini['seconds']:.1f} s against {resc['seconds']:.1f} s); the lockstep rollout takes "
        f"{bench['rollout']['ratio_main']:.2f}× the time of student-alone plus teacher-alone decoding. Step time "
        f"was measured at two response lengths only, {lens}: the bench's linear fit through them (its \"R² ≥ "
        "0.98\" target) is a line through two points and says nothing about linearity. (TRL's comparison was "
        "skipped: it needs the `bench` extra.)",
        "",
    ]


def span(values: list[float], digits: int = 1) -> str:
    return rc.span(values, digits, sep=" and ") if len(values) == 2 else rc.span(values, digits)


# --------------------------------------------------------------------------- the study section


def ranked(rows: dict, budget: str, key: str, arms: list[str]) -> list[tuple[str, float]]:
    """(arm, mean) of the rows of one budget with a value, lowest first."""
    out = [
        (a, rows[(a, budget)][key][0])
        for a in arms
        if (a, budget) in rows and rows[(a, budget)][key][0] is not None
    ]
    return sorted(out, key=lambda x: x[1])


def rank_words(position: int, total: int) -> str:
    """0 → 'the lowest', 1 → 'second-lowest', total-1 → 'the highest', ..."""
    if position == 0:
        return "the lowest"
    if position == total - 1:
        return "the highest"
    if position == 1:
        return "second-lowest"
    if position == total - 2:
        return "second-highest"
    return f"{ORDINALS[position]}-lowest"


ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth"]


def position(ranking: list[tuple[str, float]], arm: str) -> int:
    """The arm's place in a ranking, ties sharing the best (lowest) place."""
    value = dict(ranking)[arm]
    return min(i for i, (_, v) in enumerate(ranking) if v == value)


def two_seed_values(mean: float, std: float) -> tuple[float, float]:
    """Two numbers with this mean and sample std: mean ∓ std/√2 (from the table's rounded figures)."""
    half = std / math.sqrt(2)
    return mean - half, mean + half


def study_section(s: dict, stages: list[tuple[str, int, str]]) -> list[str]:
    rows = s["rows"]
    arms = PAPER + NEWER
    init_r, init_v = s["init"]
    teacher_r, teacher_v = s["teacher"]
    out = []
    # The outcome range, and the rows that did not move the init
    all_r = [rows[k]["rougeL"][0] for k in rows]
    all_v = [rows[k]["valid"][0] for k in rows]
    at_init = [k for k in rows if rows[k]["rougeL"][0] - init_r < 1.0]
    moved = [k for k in rows if k not in at_init]
    sft_t, sft_s = rows[("sft", "equal_time")], rows[("sft", "equal_steps")]
    mini_t, mini_s = rows[("minillm", "equal_time")], rows[("minillm", "equal_steps")]
    stds = {a: max(rows[(a, b)]["rougeL"][1] or 0 for b in BUDGETS.values()) for a in PAPER}
    p_valid = sum(all_v) / len(all_v) / 100
    se = 100 * math.sqrt(p_valid * (1 - p_valid) / 200)
    at_init_text = "; ".join(
        capital(
            f"{SHORT[a]} at {b.replace('_', ' ')} ends at {rows[(a, b)]['rougeL'][0]:.1f} / {rows[(a, b)]['valid'][0]:.1f} %"
        )
        for a, b in at_init
    )
    out += [
        "### Verdict",
        "",
        "- **No method separates from the continued-SFT control; not every method moves the init.** The init "
        f"scores {init_r:.1f} Rouge-L / {init_v:.1f} % valid on these 100 test prompts × 2 sampling seeds. "
        f"{at_init_text} (within 1 Rouge-L of the init). The other {len(moved)} method-and-budget rows land between "
        f"{min(rows[k]['rougeL'][0] for k in moved):.1f} and {max(rows[k]['rougeL'][0] for k in moved):.1f} Rouge-L "
        f"and {span([rows[k]['valid'][0] for k in moved])} % valid, against the control's "
        f"{sft_t['rougeL'][0]:.1f} / {sft_t['valid'][0]:.1f} % (equal time) and {sft_s['rougeL'][0]:.1f} / "
        f"{sft_s['valid'][0]:.1f} % (equal steps). Over its two training seeds the control's Rouge-L has a "
        f"standard deviation of up to {stds['sft']:.1f} and MiniLLM's up to {stds['minillm']:.1f} (two seeds "
        f"lie √2·std apart: up to {stds['sft'] * math.sqrt(2):.1f} and {stds['minillm'] * math.sqrt(2):.1f}); "
        f"the validity rates sit on 200 samples each (binomial standard error about {se:.1f} points at "
        f"{100 * p_valid:.1f} %). The newer methods ran one seed each. **MiniLLM:** {cell_text(mini_t)} at equal "
        f"time, {cell_text(mini_s)} at equal steps — against the control "
        f"{rc.signed(mini_t['rougeL'][0] - sft_t['rougeL'][0])} and "
        f"{rc.signed(mini_s['rougeL'][0] - sft_s['rougeL'][0])} Rouge-L, "
        f"{rc.signed(mini_t['valid'][0] - sft_t['valid'][0])} and "
        f"{rc.signed(mini_s['valid'][0] - sft_s['valid'][0])} validity points: not separable.",
    ]
    # SeqKD among the paper's four methods
    seqkd, last = [], {"Rouge-L": True, "validity": True}
    for budget, words in (("equal_time", "equal time"), ("equal_steps", "equal steps")):
        for key, metric in (("rougeL", "Rouge-L"), ("valid", "validity")):
            r = ranked(rows, budget, key, PAPER)
            place = position(r, "seqkd")
            last[metric] = last[metric] and place == 0
            seqkd.append(
                f"{rank_words(place, len(r))} {metric} at {words} ({rows[('seqkd', budget)][key][0]:.1f})"
            )
    where = [m for m, v in last.items() if v]
    out.append(
        "- **SeqKD among the paper's four methods** (SFT, KD, SeqKD, MiniLLM): "
        + ", ".join(seqkd)
        + f". It imitates a teacher that is itself valid only {teacher_v:.0f} % of the time. It is last of the four "
        + (
            f"under both budgets on {' and '.join(where)} only."
            if where
            else "under both budgets on neither metric."
        )
    )
    # Cost
    per_step = sorted(((a, rows[(a, "equal_steps")]["s_per_step"][0]) for a in arms), key=lambda x: x[1])
    steps_t = ", ".join(f"{SHORT[a]} {rows[(a, 'equal_time')]['steps'][0]:.0f}" for a in arms)
    train_t = [(a, rows[(a, "equal_time")]["train_s"]) for a in arms]
    low = min(train_t, key=lambda x: x[1][0])
    high = max(train_t, key=lambda x: x[1][0])
    mini_lo, mini_hi = two_seed_values(*mini_t["train_s"])
    loads = {name: load.split()[0] for name, _, load in stages}
    out.append(
        "- **Cost, and what it does to the equal-time race.** Seconds per optimizer step (train seconds ÷ steps, "
        "validation included; equal-steps jobs): "
        + ", ".join(f"{SHORT[a]} {v:.1f}" for a, v in per_step)
        + ". These are *not* clean ratios: the four paper methods ran as two lanes side by side (load average "
        f"{loads['sweep_seed0']} at the start), the five newer ones later as two other lanes while this session's "
        f"slow tests ran at lower priority (load average {loads['methods_seed0_a']} and "
        f"{loads['methods_seed0_c']} at their starts; `stages.tsv`). The load moves the scores too, not only the "
        "seconds: at equal time a job under more load takes fewer steps. Steps in the 3 minutes: "
        + steps_t
        + ". Nor was the equal-time budget equal: a job stops at the first step boundary past `trainer.max_time`, "
        f"and the rows' mean training seconds run from {low[1][0]:.0f} ({SHORT[low[0]]}) to {high[1][0]:.0f} "
        f"({SHORT[high[0]]}); MiniLLM's two seeds, {mini_t['train_s'][0]:.0f} ± {mini_t['train_s'][1]:.0f} s, "
        f"were about {mini_lo:.0f} and {mini_hi:.0f} s, against SFT's {sft_t['train_s'][0]:.0f} ± "
        f"{sft_t['train_s'][1]:.0f}."
    )
    # The two costliest methods per step (equal-steps jobs), at both budgets
    slow = []
    costliest = [a for a, _ in per_step[-2:]][::-1]
    top = max(rows, key=lambda k: rows[k]["rougeL"][0])
    for arm in costliest:
        parts = []
        for budget, words in (("equal_time", "equal time"), ("equal_steps", "equal steps")):
            rr = ranked(rows, budget, "rougeL", arms)
            rv = ranked(rows, budget, "valid", arms)
            row = rows[(arm, budget)]
            parts.append(
                f"at {words} {row['rougeL'][0]:.1f} / {row['valid'][0]:.1f} % ({rank_words(position(rr, arm), len(rr))} "
                f"Rouge-L, {rank_words(position(rv, arm), len(rv))} validity of the {len(rr)})"
            )
        slow.append(f"{SHORT[arm]} " + ", ".join(parts))
    out.append(
        "- **The two costliest methods per step:** "
        + "; ".join(slow)
        + f". The highest Rouge-L of the table is {SHORT[top[0]]} at {top[1].replace('_', ' ')} "
        f"({rows[top]['rougeL'][0]:.1f}, {rows[top]['seeds']} training seed{'s' if rows[top]['seeds'] > 1 else ''})."
    )
    # KL probes
    init_rkl, init_fkl = s["init_kl"]
    probed = {k: v for k, v in rows.items() if v["rkl"][0] is not None}
    lowest_rkl = min(probed, key=lambda k: probed[k]["rkl"][0])
    lowest_fkl = min(probed, key=lambda k: probed[k]["fkl"][0])
    sft_probe = rows[("sft", "equal_steps")]
    not_probed = [f"{SHORT[a]} at {b.replace('_', ' ')}" for (a, b), v in rows.items() if v["rkl"][0] is None]
    all_lower = all(v["rkl"][0] < init_rkl for v in probed.values())
    gap = mini_s["rkl"][0] - sft_probe["rkl"][0]
    rkl_vs = "level with (within 0.1 of)" if abs(gap) < 0.1 else ("below" if gap < 0 else "above")
    out.append(
        "- **The quantity being optimised** (exact token-level KL to the teacher, nats/token, 32 valid prompts, "
        "one probe per run on training seed 0; `kl.png`): "
        + ("every probed run has" if all_lower else "not every probed run has")
        + f" a lower reverse KL on its own samples than the init's {init_rkl:.2f}, from {min(v['rkl'][0] for v in probed.values()):.2f} to "
        f"{max(v['rkl'][0] for v in probed.values()):.2f}. MiniLLM (equal steps) reaches {mini_s['rkl'][0]:.2f}, "
        f"{rkl_vs} the SFT control's {sft_probe['rkl'][0]:.2f} at the same budget, and its forward KL on the "
        f"teacher's samples is {mini_s['fkl'][0]:.2f} against the init's {init_fkl:.2f} and the control's "
        f"{sft_probe['fkl'][0]:.2f}. The lowest forward KL is {SHORT[lowest_fkl[0]]} at "
        f"{lowest_fkl[1].replace('_', ' ')} ({probed[lowest_fkl]['fkl'][0]:.2f}), the lowest reverse KL "
        f"{SHORT[lowest_rkl[0]]} at {lowest_rkl[1].replace('_', ' ')} ({probed[lowest_rkl]['rkl'][0]:.2f}). One "
        "probe of 32 prompts per run, unrepeated: read these as directions, not "
        "differences. Not probed (time): the seed-1 runs, "
        + ", ".join(not_probed)
        + " (a dash in the table)."
    )
    out.append(
        "- **Reading: at this scale (3 minutes, 16 steps, 100 prompts) the study cannot separate the methods.** "
        f"The teacher ({teacher_r:.1f} / {teacher_v:.0f} %) stays "
        f"at least {teacher_r - max(all_r):.1f} Rouge-L ahead of every student. What the run shows "
        "is the tool working on a real pretrained pair offline: nine methods, one config tree, one evaluation, "
        "one command each."
    )
    return out


def capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def cell_text(row: dict) -> str:
    def one(pair: tuple) -> str:
        mean, std = pair
        return f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"

    return f"{one(row['rougeL'])} / {one(row['valid'])} %"


def setup_section(s: dict, stages: list[tuple[str, int, str]]) -> list[str]:
    by = {name: (sec, load) for name, sec, load in stages}
    diag = [sec for name, sec, _ in stages if name.startswith("diagnose_") and name != "diagnose_init"]
    rows = s["rows"]
    eq_time = [rows[(a, "equal_time")]["train_s"][0] for a in PAPER + NEWER]
    return [
        "### Setup",
        "",
        "- Stage 1 (reused from the first attempt at this study, same recipe, `conf/arm/smollm2_distill/teacher_sft.yaml` "
        f"and `student_init.yaml`): the teacher SFT-tuned for {s['teacher_steps']} steps at lr 1e-4 on 1,000 "
        f"bundled examples in chat format (zero-shot {s['zero_shot'][0]:.1f} / {s['zero_shot'][1]:.0f} % valid → "
        f"{s['teacher'][0]:.1f} / {s['teacher'][1]:.0f} %), the pruned student ({s['pruned'][0]:.1f} / "
        f"{s['pruned'][1]:.0f} % valid as pruned) SFT-trained for {s['init_steps']} steps at lr 3e-4 "
        f"({s['init'][0]:.1f} / {s['init'][1]:.1f} %). Both kept by lowest validation loss.",
        "- Stage 2 and 3: from that init against that teacher, the first 480 training examples (SeqKD's teacher "
        "samples: one per example, temperature 1, 64 tokens, drawn once and cached; DistiLLM-2's teacher side "
        "reads the same cache), batch 8, constant lr after 4 warm-up steps (1e-4; MiniLLM and on-policy reverse "
        "KL 5e-5), one torch thread per job. Budgets (`budget=`): `equal_time` — `trainer.max_time` 3 min (a job "
        f"stops at the first step boundary past it: rows' mean training seconds {min(eq_time):.0f}–{max(eq_time):.0f}), "
        "`equal_steps` — 16 optimizer steps (MiniLLM: 4 rounds of 8 rollouts × 4 updates; on-policy reverse KL: "
        "16 rounds of one update). Selection: each objective's own (lowest val/loss; MiniLLM and on-policy "
        "reverse KL best val/rougeL on 32 valid prompts) among the validations that fell inside the budget — the "
        "supervised equal-steps jobs had none and were evaluated as they ended.",
        "- Evaluation: the first 100 test prompts, sampling seeds 0 and 1 (temperature 1, 64 new tokens); Rouge-L "
        "and validity as everywhere else. The exact token-level KL to the teacher (`python -m minillm.diagnose`, "
        "32 valid prompts, one sample each from student and teacher): reverse KL on the student's own samples, "
        "forward KL on the teacher's.",
        "",
        "### Commands and time",
        "",
        "2 CPU cores, 2026-12-03 17:21 → 19:38 UTC, from a worktree of commit 4753d6d (`bash "
        "experiments/smollm2_distill/run_study.sh` with `PYTHON=.venv/bin/python`): stage 1 found in place "
        f"(copied from the earlier attempt), stage 2 as two lanes (seed 0: {by['sweep_seed0'][0]:,} s, including "
        f"SeqKD's sampling; seed 1: {by['sweep_seed1'][0]:,} s). When lane B finished first the script was stopped "
        "and its remaining stage 3 run as two lanes of the same commands (`+arm=…/onpolicy_rkl,…/gkd`: "
        f"{by['methods_seed0_a'][0]:,} s; `+arm=…/distillm2,…/taid,…/distillm`: {by['methods_seed0_c'][0]:,} s), "
        f"then the KL probes as two lanes (`diagnose.num_prompts=32`; the init's {by['diagnose_init'][0]} s, the "
        f"runs' {min(diag)}–{max(diag)} s while this session's CI check ran beside them), then `summarize.py`:",
        "",
        "```bash",
        "# lane A, then lane B a minute later (run_study.sh)",
        "python -m minillm.run -m experiment=smollm2_distill data.n_train=480 logger=csv seed=0 +arm=smollm2_distill/seqkd,smollm2_distill/sft,smollm2_distill/kd,smollm2_distill/minillm",
        "python -m minillm.run -m experiment=smollm2_distill data.n_train=480 logger=csv seed=1 +arm=smollm2_distill/minillm,smollm2_distill/sft,smollm2_distill/kd,smollm2_distill/seqkd",
        "# stage 3, two lanes",
        "python -m minillm.run -m experiment=smollm2_distill data.n_train=480 logger=csv seed=0 +arm=smollm2_distill/onpolicy_rkl,smollm2_distill/gkd",
        "python -m minillm.run -m experiment=smollm2_distill data.n_train=480 logger=csv seed=0 +arm=smollm2_distill/distillm2,smollm2_distill/taid,smollm2_distill/distillm",
        "# per run: the exact KL probe; then the table and figures",
        "python -m minillm.diagnose experiment=smollm2_distill data.n_train=480 diagnose.path=multirun/smollm2_distill/<run> diagnose.num_prompts=32 'diagnose.seeds=[0]'",
        "python experiments/smollm2_distill/summarize.py multirun/smollm2_distill --out experiments/results/smollm2_distill",
        "# this README and kl.png, from the committed files",
        "python experiments/smollm2_distill/render.py",
        "```",
    ]


def summary(folder: Path = FOLDER) -> str:
    """The study's line in the top-level README's results list (one markdown bullet), from summary.md's
    table as the README reads it."""
    s = read_summary(folder / "summary.md")
    rows = s["rows"]
    init_r = s["init"][0]
    at_init = [k for k in rows if rows[k]["rougeL"][0] - init_r < 1.0]  # the README's "did not move the init"
    moved = [rows[k]["rougeL"][0] for k in rows if k not in at_init]
    sft_t, sft_s = rows[("sft", "equal_time")], rows[("sft", "equal_steps")]
    mini_t, mini_s = rows[("minillm", "equal_time")], rows[("minillm", "equal_steps")]
    stds = [rows[(a, b)]["rougeL"][1] or 0 for a in ("sft", "minillm") for b in BUDGETS.values()]
    gaps = [mini_t["rougeL"][0] - sft_t["rougeL"][0], mini_s["rougeL"][0] - sft_s["rougeL"][0]]
    last = {}
    for key, metric in (("rougeL", "Rouge-L"), ("valid", "validity")):
        last[metric] = all(position(ranked(rows, b, key, PAPER), "seqkd") == 0 for b in BUDGETS.values())
    where = [m for m, v in last.items() if v]
    per_step = {
        a: rows[(a, "equal_steps")]["s_per_step"][0] for a in ("sft", "minillm", "onpolicy_rkl", "distillm2")
    }
    steps_t = {a: rows[(a, "equal_time")]["steps"][0] for a in per_step}
    return (
        "- [smollm2_distill](experiments/results/smollm2_distill/README.md) (a real pretrained teacher, offline: "
        "SmolLM2-135M-Instruct SFT-tuned → its every-third-layer student, 9 methods × equal time (3 min) and "
        "equal steps (16), 2 seeds for SFT/KD/SeqKD/MiniLLM, 1 for the newer ones; its table is transcribed "
        f"from run files that were not kept): the init scores {init_r:.1f} Rouge-L; "
        + "; ".join(
            f"{SHORT[a]} at {b.replace('_', ' ')} ends at {rows[(a, b)]['rougeL'][0]:.1f}, within 1 of it"
            for a, b in at_init
        )
        + (", and the other" if at_init else "; the")
        + f" {len(moved)} method-and-budget rows at {rc.span(moved)}. MiniLLM against the continued-SFT control: "
        f"{rc.signed(gaps[0])} / {rc.signed(gaps[1])} "
        f"Rouge-L (equal time / equal steps), "
        + ("inside" if max(abs(d) for d in gaps) < max(stds) else "beyond")
        + f" the two's seed std of up to {max(stds):.1f} (1–2 seeds, no intervals). SeqKD is last of the paper's "
        "four methods under both budgets on "
        + (" and ".join(where) + " only" if where else "neither metric")
        + f". In the 3 equal-time minutes SFT took {steps_t['sft']:.0f} steps, "
        + ", ".join(f"{SHORT[a]} {steps_t[a]:.0f}" for a in per_step if a != "sft")
        + " (seconds per step at equal steps: "
        + ", ".join(f"{SHORT[a]} {per_step[a]:.1f}" for a in per_step)
        + ", timed under different loads)."
    )


def cost(folder: Path = FOLDER) -> str:
    """The top-level README's cost line for this pair (one markdown bullet), from ``rounds/*.json``."""
    rounds = {n: rc.read_json(folder / "rounds" / f"{n}.json") for n in ROUNDS}
    bench = rc.read_json(folder / "bench.json")
    one, two, mb4 = rounds["r8_cache_1thread"], rounds["r8_cache_2threads"], rounds["r8_mb4"]
    cache_mib = 8 * 64 * bench["models"]["vocab_size"] * 4 / 2**20  # rollouts × tokens × vocabulary × fp32
    return (
        "- Cost, measured (fp32 on 2 shared CPU cores, each setting in its own process under its own load; "
        "`experiments/smollm2_distill/measure.sh`): a MiniLLM round of 8 rollouts of up to 64 tokens with "
        f"{one['rounds'][0]['global_step']} updates on one torch thread took "
        f"{span([x['seconds'] for x in one['rounds']], 0)} s, peak memory {one['peak_rss_mib']:,} MiB "
        f"(`objective.mini_batch_size=4`: {mb4['peak_rss_mib']:,} MiB, {mb4['rounds'][0]['global_step']} updates, "
        f"{span([x['seconds'] for x in mb4['rounds']], 0)} s); the teacher's kept distributions are "
        f"{cache_mib:.0f} MiB a round. The preset sets `data.batch_size=8` and `eval.max_new_tokens=64` from "
        "these; `experiments/results/smollm2_distill/README.md` has every setting measured. On a busy machine "
        f"pass `fit.num_threads=1`: two threads took {round_seconds(two) / round_seconds(one):.1f}× one thread's "
        f"time per round here (load average {two['load_average_after'].split()[0]} and "
        f"{one['load_average_after'].split()[0]} after each)."
    )


def readme(folder: Path) -> str:
    s = read_summary(folder / "summary.md")
    stages = read_stages(folder / "stages.tsv")
    lines = [
        "# smollm2_distill — SmolLM2-135M-Instruct as a real teacher, offline (issue 15)",
        "",
        "Rendered by `python experiments/smollm2_distill/render.py` from this folder's files; "
        "`tests/test_study_reports.py` checks that it still is.",
        "",
        *cost_section(folder),
        "## The study (item 5, and issue 16 on this pair)",
        "",
        "SmolLM2-135M-Instruct, SFT-tuned on the bundled data, distilled into its every-third-layer student after "
        "that student's own SFT, by the continued-SFT control, KD, SeqKD and MiniLLM (2 training seeds) and by "
        "issue 16's methods — on-policy reverse KL (γ 0), GKD, DistiLLM, TAID, DistiLLM-2 (1 training seed) — at "
        "equal wall-clock time and at equal optimizer steps. [`summary.md`](summary.md) is the table, "
        "[`scores.png`](scores.png) and [`kl.png`](kl.png) the figures, `stages.tsv` each stage's time.",
        "",
        "**What can be checked here.** `summary.md` was written by `summarize.py` from the run folders "
        "(each run's `results.json`, config and metrics CSV, and the probes' `diagnose.json`), which were not "
        "kept: its table is transcribed from runs whose files are gone and cannot be recomputed from this "
        "repository. Everything below is derived from that table as written (`render.py`), so it is exactly "
        "as good as the table. `scores.png` (each training seed a point) was drawn from the lost files; `kl.png` "
        "is redrawn from the table.",
        "",
        *study_section(s, stages),
        "",
        *setup_section(s, stages),
    ]
    return rc.wrap("\n".join(lines)) + "\n"


def kl_points(s: dict) -> dict[tuple[str, str], list[dict]]:
    """The table's KL columns in summarize.plot_kl's form: per (arm, budget), one probe per probed run."""
    return {
        key: [{"student": {"reverse_kl": row["rkl"][0]}, "teacher": {"forward_kl": row["fkl"][0]}}]
        for key, row in s["rows"].items()
        if row["rkl"][0] is not None
    }


def render(folder: Path = FOLDER) -> dict[str, str]:
    return {"README.md": readme(folder)}


def redraw_kl(folder: Path = FOLDER) -> None:
    from summarize import plot_kl

    s = read_summary(folder / "summary.md")
    rkl, fkl = s["init_kl"]
    plot_kl(kl_points(s), {"student": {"reverse_kl": rkl}, "teacher": {"forward_kl": fkl}}, folder / "kl.png")


if __name__ == "__main__":
    if "--check" not in sys.argv:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        redraw_kl(Path(sys.argv[1]) if len(sys.argv) > 1 else FOLDER)
    rc.main(render, FOLDER, __doc__)
