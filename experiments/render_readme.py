"""The top-level README's result sections, assembled from the studies' own summaries: ``python
experiments/render_readme.py [--check]``.

README.md marks each rendered section with ``<!-- rendered:NAME ... -->`` and ``<!-- /rendered:NAME -->``; the
text between is replaced by what ``SECTIONS[NAME]`` renders from the study scripts (``summary``, ``headline``
and the like), which compute every number and verdict word from the committed files under
``experiments/results/``. Nothing else in README.md is touched. ``--check`` writes nothing and exits 1 naming the
first README.md line that differs (``tests/test_study_reports.py`` runs the same check; ``make check-reports``
runs it with every study script's own ``--check``).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))  # render_common (appended: no shadowing)
import render_common as rc  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# (study, its analysis script): every folder under experiments/results/ but bench/ has one.
STUDIES = [
    ("validity_drop", "experiments/validity_drop/analyze.py"),
    ("methods_compare", "experiments/methods_compare/analyze.py"),
    ("smollm2_distill", "experiments/smollm2_distill/render.py"),
    ("alpha_sweep", "experiments/alpha_sweep/render.py"),
    ("ablation_stabilizers", "experiments/ablation_stabilizers/render.py"),
    ("objectives_compare", "experiments/objectives_compare/render.py"),
    ("scaling", "experiments/scaling/render.py"),
    ("teacher_gap", "experiments/teacher_gap/render.py"),
    ("toy_gmm", "experiments/toy_gmm/render.py"),
    ("toy_sequences", "experiments/toy_sequences/render.py"),
    ("evaluation", "experiments/evaluation/render.py"),
    ("precision", "experiments/precision/analyze.py"),
]
MARKED = re.compile(r"( *<!-- rendered:(\w+)[^\n]*-->\n)(.*?)( *<!-- /rendered:\2 -->)", re.DOTALL)


def load_study(study: str):
    """A study's script as a module, imported by path (experiments/ is not a package)."""
    script = dict(STUDIES)[study]
    spec = importlib.util.spec_from_file_location(f"study_{study}_{Path(script).stem}", ROOT / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def from_init(name: str, g: dict) -> str:
    """``+a to +b Rouge-L and +c to +d validity points in NAME`` for one study's arms against the init."""
    return (
        f"{rc.signed(min(g['rougeL']))} to {rc.signed(max(g['rougeL']))} Rouge-L and "
        f"{rc.signed(min(g['valid']))} to {rc.signed(max(g['valid']))} validity points in "
        f"[{name}](experiments/results/{name}/README.md)"
    )


def embedded() -> str:
    """Results on the embedded default: the shipped models (teacher_gap), the short MiniLLM runs from the init
    (ablation_stabilizers, alpha_sweep, validity_drop) and Table 1 in small (objectives_compare, with
    methods_compare's 3-seed ranking of the same methods)."""
    short = {s: load_study(s).gains() for s in ("ablation_stabilizers", "alpha_sweep")}
    above = all(g["all_above"] for g in short.values())
    apart = any(g["separable"] for g in short.values())
    runs = (
        "Short MiniLLM runs from this init (90 s, one training seed, first 200 test prompts) "
        + ("end above it in every variant" if above else "do not all end above it")
        + " — "
        + ", ".join(from_init(s, g) for s, g in short.items())
        + ", one run each with no interval against the init — and the variants are "
        + (
            "apart beyond one sampling std in at least one study"
            if apart
            else "within sampling noise of each other"
        )
        + ". "
        + load_study("validity_drop").headline()
        + " On that study's validation evidence MiniLLM's default lr is now 3e-5 (was 1e-4)."
    )
    table1 = load_study("objectives_compare").headline() + " " + load_study("methods_compare").paper_methods()
    return "\n\n".join([load_study("teacher_gap").headline(), runs, table1])


def results() -> str:
    """The results list: each study's own summary line, in the order the list reads."""
    lines = [
        load_study(s).summary() for s in ("toy_gmm", "toy_sequences", "ablation_stabilizers", "alpha_sweep")
    ]
    lines.append(
        load_study("objectives_compare").summary() + " " + load_study("methods_compare").paper_methods()
    )
    lines += [
        load_study(s).summary() for s in ("methods_compare", "smollm2_distill", "validity_drop", "scaling")
    ]
    lines.append(
        "- Not run: every study at the recipe's full size (3 training seeds, whole test split, longer runs), and "
        "`scaling` with its models trained to their plateaus."
    )
    return "\n".join(lines)


def smollm2_cost() -> str:
    return load_study("smollm2_distill").cost()


BENCH = rc.RESULTS / "bench"


def faster(ratio: float) -> str:
    """``**1.38 × faster**``, or ``**0.94 ×: slower**`` below 1."""
    return f"**{ratio:.2f} × faster**" if ratio >= 1 else f"**{ratio:.2f} ×: slower**"


def bench() -> str:
    """The benchmark targets table (indented: it sits in a list item) from the committed ``make bench``
    records: ``bench.json`` (the step on the shipped models) and ``bench_2026-12-01_trl.json`` (the one run
    that timed TRL's GKDTrainer alternately with our step). Not wrapped."""
    main = {x["target"].strip(): x for x in rc.read_json(BENCH / "bench.json")["targets"]}
    trl_run = rc.read_json(BENCH / "bench_2026-12-01_trl.json")
    trl, trl_target = trl_run["trl_gkd"], trl_run["targets"][-1]

    def target(prefix: str) -> dict:
        (hit,) = [x for name, x in main.items() if name.startswith(prefix)]
        return hit

    def met(x: dict) -> str:
        return "yes" if x["ok"] else "**no**"

    linear = target("step time linear in response length")
    plain = linear["value"] / target("time(256)/time(128) of the step")["value"]  # plain decoding's own ratio
    rows = [
        (
            "teacher-mixed lockstep rollout ≤ 1.25 × (student alone + teacher alone)",
            target("lockstep rollout"),
            "{:.2f} ×",
        ),
        (
            "teacher log-probs from the rollout: teacher forward tokens ÷ needed",
            target("teacher log-probs"),
            "{:.2f}",
        ),
        (
            "without cached logits: teacher passes per token per inner epoch",
            target("≤ 1 teacher pass"),
            "{:.2f}",
        ),
        (
            f"step time linear in response length: t(256) ÷ t(128) (plain KV-cached decoding: {plain:.2f})",
            linear,
            "{:.2f}",
        ),
        (
            "chunked full-vocabulary term (`objective.chunk_size`): memory added ÷ one pass, same numbers",
            target("chunked full-vocabulary term"),
            "{:.2f}",
        ),
    ]
    lines = ["  | target | measured | met |", "  |---|---:|---|"]
    lines += [f"  | {label} | {fmt.format(x['value'])} | {met(x)} |" for label, x, fmt in rows]
    lines.append(
        "  | GKD-equivalent step (α = 0, reverse KL only, as training runs it) ÷ TRL GKDTrainer's step time, both "
        f"timed alternately in one run (2026-12-01, load average {trl['load_avg_before'][0]:.1f}) | "
        f"**{trl['speedup']:.2f} × faster** (pairs {trl['pair_ratio_min']:.2f}–{trl['pair_ratio_max']:.2f}) | "
        f"{met(trl_target)} (target 1.5 ×) |"
    )
    for record, code in TRL_RECORDS.items():
        run = rc.read_json(BENCH / record)
        trl, trl_target = run["trl_gkd"], run["targets"][-1]
        threads = trl["torch_threads"]
        lines.append(
            f"  | the same with `trl_gkd.decode={trl['decode']}`{updates_note(trl.get('updates'))}, {code} "
            f"({record[6:16]}, {threads} torch "
            f"thread{'s' * (threads != 1)}, {trl['repeats']} pairs, load average {trl['load_avg_before'][0]:.1f} → "
            f"{trl['load_avg_after'][0]:.1f}): TRL {trl['trl_s_per_step']:.3f} s, ours {trl['ours_s_per_step']:.3f} s | "
            f"{faster(trl['speedup'])} (pairs {trl['pair_ratio_min']:.2f}–{trl['pair_ratio_max']:.2f}) | "
            f"{met(trl_target)} (target 1.5 ×) |"
        )
    for models, record in DECODE_RECORDS.items():
        run = rc.read_json(BENCH / record)
        decode = run["pairs"]["decode"]
        decode_target = [t for t in run["targets"] if t["target"].startswith("lockstep")][-1]
        threads = run["machine"]["torch_threads"]
        lines.append(
            f"  | lockstep α = {decode['settings']['alpha']:g} rollout, {models}: {old_side(decode)} ÷ "
            f"`{decode['new']}`, timed alternately in one run ({record[6:16]}, {threads} torch "
            f"thread{'s' * (threads != 1)}, load average {decode['load_avg_before'][0]:.1f} → "
            f"{decode['load_avg_after'][0]:.1f}; compiling took {decode['compile_seconds']:.0f} s, untimed) | "
            f"{faster(decode['speedup'])} (pairs {decode['pair_ratio_min']:.2f}–"
            f"{decode['pair_ratio_max']:.2f}, {'same' if decode['same_tokens'] else 'different'} tokens) | "
            f"{met(decode_target)} (target 1.5 ×) |"
        )
    for models, record in FAST_PATH_RECORDS.items():
        run = rc.read_json(BENCH / record)
        fast = run["pairs"]["fast_path"]
        fast_target = [t for t in run["targets"] if t["target"].startswith("MiniLLM round")][-1]
        threads = run["machine"]["torch_threads"]
        seconds = fast["median_seconds"]
        precision = fast["settings"].get("precision", "bf16-mixed").replace("32-true", "fp32")
        compiling = fast["compile_seconds"] + (fast.get("update_compile_seconds") or 0.0)
        lines.append(
            f"  | MiniLLM round, {models}: fp32 {old_side(fast)} ÷ {precision} with "
            f"`{fast['settings']['decode']}`{updates_note(fast['settings'].get('updates'))}, timed alternately in "
            f"one run ({record[6:16]}{at(run)}, {threads} torch "
            f"thread{'s' * (threads != 1)}, {fast['repeats']} pairs, load average {fast['load_avg_before'][0]:.1f} → "
            f"{fast['load_avg_after'][0]:.1f}; compiling took {compiling:.0f} s, untimed): "
            f"{seconds[fast['old']]:.2f} s against {seconds[fast['new']]:.2f} s{split(fast)} | {faster(fast['speedup'])} "
            f"(pairs {fast['pair_ratio_min']:.2f}–{fast['pair_ratio_max']:.2f}) | {met(fast_target)} (target 1.5 ×) |"
        )
    for models, record in DRAW_RECORDS.items():
        draw = rc.read_json(BENCH / record)["pairs"]["draw"]
        seconds, calls = draw["median_seconds"], draw["settings"]["calls"]
        lines.append(
            f"  | the sampler's token draw, {models} ({draw['settings']['batch_size']} × "
            f"{draw['settings']['vocab_size']} probabilities): `torch.multinomial` ÷ `draw`, {calls} draws per side, "
            f"timed alternately ({record[6:16]}, load average {draw['load_avg_before'][0]:.1f}): "
            f"{seconds[draw['old']] / calls * 1e6:.0f} µs against {seconds[draw['new']] / calls * 1e6:.0f} µs | "
            f"{faster(draw['speedup'])} (pairs {draw['pair_ratio_min']:.2f}–{draw['pair_ratio_max']:.2f}, "
            f"{'same' if draw['same_tokens'] else 'different'} tokens) | — |"
        )
    for record, pair in ((r, p) for r in MAKE_RUN_RECORDS for p in rc.read_json(BENCH / r)["pairs"]):
        (a, run_a), (b, run_b) = pair["runs"].items()
        lines.append(
            f"  | `make run`'s three minutes, {pair['what']}: {a} against {b}, side by side on 1 torch thread "
            f"each ({record[9:19]}): {run_a['global_step']} against {run_b['global_step']} optimizer "
            f"steps in {run_a['train_seconds']:.0f} and {run_b['train_seconds']:.0f} s | "
            f"{run_b['global_step'] / run_a['global_step']:.2f} × the steps | — |"
        )
    return "\n".join(lines)


def split(pair: dict) -> str:
    """``; rollout 170 → 105 ms, updates 80 → 35 ms``: each side's median parts, where the record has them
    (``parts_ms``, fast-path records since 2026-12-06's compiled updates)."""
    parts = pair.get("parts_ms")
    if not parts:
        return ""
    old, new = parts[pair["old"]], parts[pair["new"]]
    return (
        f"; rollout {old.get('rollout', 0.0):.0f} → {new.get('rollout', 0.0):.0f} ms, the updates' student passes, "
        f"losses and backward {old.get('student_fwd_bwd', 0.0):.0f} → {new.get('student_fwd_bwd', 0.0):.0f} ms"
    )


def updates_note(updates: str | None) -> str:
    """`` and compiled updates (`fit.compile_updates`)`` where a record's updates ran compiled (records
    before 2026-12-06's compiled updates have no such setting: eager)."""
    return " and compiled updates (`fit.compile_updates`)" if updates == "compiled" else ""


def at(run: dict) -> str:
    """``, at 0e0ce3a``: the commit a record timed, where it says (records since 2026-12-06)."""
    commit = run["machine"].get("commit")
    return f", at {commit}" if commit else ""


def old_side(pair: dict) -> str:
    """The old side of a decode or fast-path pair: eager decoding, drawing with torch.multinomial where the
    record says so (``pairs.old_draw``; records before it have no such setting and drew with it)."""
    if pair["settings"].get("old_draw", "multinomial") == "multinomial":
        return "`sampler.decode=eager` drawing with `torch.multinomial`"
    return "`sampler.decode=eager`"


# The runs that timed TRL's GKDTrainer alternately with our step, on the quiet machine (2026-12-06, AMD EPYC):
# record -> the commit it ran. 839bd9a: before the sampler's draw and the unguarded compiled steps.
TRL_RECORDS = {
    "bench_2026-12-06_trl_compiled_839bd9a.json": "839bd9a (`torch.multinomial`, guarded compiled steps)",
    "bench_2026-12-06_trl_compiled_draw.json": "aaf0717 (`draw`, unguarded compiled steps)",
    "bench_2026-12-06_trl_eager_839bd9a.json": "839bd9a",
    "bench_2026-12-06_trl_eager_draw.json": "aaf0717",
    "bench_2026-12-06_trl_compiled_839bd9a_1thread.json": "839bd9a",
    "bench_2026-12-06_trl_compiled_draw_1thread.json": "aaf0717",
    "bench_2026-12-06_trl_eager_draw_1thread.json": "aaf0717",
    "bench_2026-12-06_trl_compiled_updates.json": "66d168c",
    "bench_2026-12-06_trl_compiled_updates_1thread.json": "66d168c",
    "bench_2026-12-06_trl_eager_compiled_updates.json": "66d168c",
    "bench_2026-12-06_trl_eager_compiled_updates_1thread.json": "66d168c",
}
# The runs that timed the whole round, old path against the fast path (pairs.fast_path).
FAST_PATH_RECORDS = {
    "shipped pair, fp32": "bench_2026-12-06_fast_path_embedded.json",
    "shipped pair, fp32, 1 thread": "bench_2026-12-06_fast_path_embedded_1thread.json",
    "shipped pair, fp32 with compiled updates": "bench_2026-12-06_fast_path_embedded_compiled_updates.json",
    "shipped pair, fp32 with compiled updates, 1 thread": (
        "bench_2026-12-06_fast_path_embedded_compiled_updates_1thread.json"
    ),
    "shipped pair, fp32 with deterministic compiled updates": (
        "bench_2026-12-06_fast_path_embedded_compiled_updates_e0db789.json"
    ),
    "shipped pair, fp32 with deterministic compiled updates, 1 thread": (
        "bench_2026-12-06_fast_path_embedded_compiled_updates_e0db789_1thread.json"
    ),
    "shipped pair, fp32 with deterministic compiled updates, 1 thread, run again": (
        "bench_2026-12-06_fast_path_embedded_compiled_updates_e0db789_1thread_2.json"
    ),
    "SmolLM2 pair (134.5M, 63.7M)": "bench_2026-12-06_fast_path_smollm2_draw.json",
    "SmolLM2 pair, run again": "bench_2026-12-06_fast_path_smollm2_draw_5pairs.json",
    "SmolLM2 pair, compiled steps on a copy with bf16 linear weights": "bench_2026-12-06_fast_path_smollm2_shadow.json",
    "SmolLM2 pair, the same run again": "bench_2026-12-06_fast_path_smollm2_shadow_2.json",
    "SmolLM2 pair with compiled updates": "bench_2026-12-06_fast_path_smollm2_compiled_updates.json",
    "SmolLM2 pair with compiled updates, run again": "bench_2026-12-06_fast_path_smollm2_compiled_updates_2.json",
}
# The runs that timed the lockstep rollout, old path against sampler.decode=compiled (issue 22 item 2).
DECODE_RECORDS = {
    "shipped pair": "bench_2026-12-06_decode_embedded_draw.json",
    "shipped pair, 1 thread": "bench_2026-12-06_decode_embedded_draw_1thread.json",
}
# `make run` (three minutes of training) twice side by side, per pair: steps trained (experiments/make_run_record.py).
MAKE_RUN_RECORDS = ("make_run_2026-12-06.json", "make_run_2026-12-06_compile_updates.json")
# The runs whose pairs.draw timed the sampler's token draw against torch.multinomial.
DRAW_RECORDS = {
    "shipped pair": "bench_2026-12-06_decode_embedded_draw.json",
    "SmolLM2 pair": "bench_2026-12-06_fast_path_smollm2_draw.json",
}

SECTIONS = {"embedded": embedded, "results": results, "smollm2_cost": smollm2_cost, "bench": bench}
UNWRAPPED = {"bench"}  # an indented table: rc.wrap would fold its long rows


def render(readme: Path = README) -> dict[str, str]:
    """README.md with every marked section replaced by its rendering ({"README.md": text}); a section of
    SECTIONS without its markers, or markers naming no section, is an error naming the file."""
    text = readme.read_text()
    found = [m.group(2) for m in MARKED.finditer(text)]
    missing = sorted(set(SECTIONS) - set(found))
    unknown = sorted(set(found) - set(SECTIONS))
    if missing or unknown or len(found) != len(set(found)):
        raise ValueError(
            f"{readme}: rendered sections must be marked once each with <!-- rendered:NAME --> … "
            f"<!-- /rendered:NAME --> (missing {missing}, unknown {unknown}, found {found})"
        )

    def replace(m: re.Match) -> str:
        text = SECTIONS[m.group(2)]()
        return m.group(1) + (text if m.group(2) in UNWRAPPED else rc.wrap(text)) + "\n" + m.group(4)

    return {readme.name: MARKED.sub(replace, text)}


def main(argv=None) -> int:
    from minillm.evaluation.rendered import write_or_check

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--readme", type=Path, default=README, help="the README to render into (default: %(default)s)"
    )
    ap.add_argument("--check", action="store_true", help="compare with the committed README; write nothing")
    args = ap.parse_args(argv)
    try:
        rendered = render(args.readme)
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    return write_or_check(rendered, args.readme.parent, args.check)


if __name__ == "__main__":
    sys.exit(main())
