"""The toy_sequences README and the run's summary.md, rendered from ``run/results.json``: ``python
experiments/toy_sequences/render.py [--check]``. (``summary.md`` is the toy's own
``minillm.toys.sequences_summary``.)
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # render_common (appended: no shadowing)
import render_common as rc  # noqa: E402

FOLDER = rc.RESULTS / "toy_sequences"


def minus(value: float, digits: int = 1) -> str:
    """A number with a true minus sign."""
    return f"{value:.{digits}f}".replace("-", "−")


SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def power(value: float) -> str:
    """0.0001 → 10⁻⁴; 0.00079 → 8·10⁻⁴ (one significant digit)."""
    exponent = math.floor(math.log10(value))
    mantissa = round(value / 10**exponent)
    if mantissa == 10:
        mantissa, exponent = 1, exponent + 1
    head = "" if mantissa == 1 else f"{mantissa}·"
    return f"{head}10{str(exponent).translate(SUPERSCRIPT)}"


def summary(folder: Path = FOLDER) -> str:
    """The study's line in the top-level README's results list (one markdown bullet)."""
    r = rc.read_json(folder / "run" / "results.json")
    toy = r["config"]["toy"]
    fk, sq, mm, nm, ex = (
        r[m] for m in ("forward_kld", "seqkd", "minillm", "minillm_no_mix", "reverse_kld_exact")
    )
    # α's fixed point lies apart from α = 0's by far more than the seeds spread them
    biased = mm["reverse_kl"] - nm["reverse_kl"] > 10 * max(mm["reverse_kl_std"], nm["reverse_kl_std"])
    return (
        "- [toy_sequences](experiments/results/toy_sequences/README.md): forward KD and SeqKD put "
        f"{rc.span([100 * fk['mass_on_never'], 100 * sq['mass_on_never']], 0)} % of the student's mass on "
        f"sequences the teacher never makes; the exact reverse-KL gradient {100 * ex['mass_on_never']:.1f} % "
        f"(reverse KL {ex['reverse_kl']:.2f}), and the project's MiniLLM estimator with α = 0 "
        f"{100 * nm['mass_on_never']:.1f} % (reverse KL {nm['reverse_kl']:.2f}). "
        + (
            f"**Not as the paper would suggest:** with the default teacher mixing α = {toy['alpha']} the "
            f"estimator stops at a biased fixed point (reverse KL {mm['reverse_kl']:.3f} ± "
            f"{mm['reverse_kl_std']:.3f} over {len(toy['seeds'])} seeds, "
            f"{100 * mm['mass_on_never']:.0f} % on never-sequences)."
            if biased
            else f"With the default teacher mixing α = {toy['alpha']} it ends at reverse KL "
            f"{mm['reverse_kl']:.2f}, within the seeds' spread of α = 0."
        )
    )


def readme(folder: Path) -> str:
    r = rc.read_json(folder / "run" / "results.json")
    toy, w, init = r["config"]["toy"], r["world"], r["init"]
    labels = {
        "forward_kld": "forward KD (word-level, exact)",
        "seqkd": f"SeqKD ({toy['seqkd_samples']} teacher samples)",
        "minillm": f"MiniLLM estimator, α = {toy['alpha']} ({toy['variant']} preset)",
        "minillm_no_mix": f"MiniLLM estimator, α = 0 ({toy['variant']} preset)",
        "reverse_kld_exact": "exact reverse-KL gradient",
    }
    rows = [
        f"| student init | {init['forward_kl']:.3f} | {init['reverse_kl']:.3f} | {init['mass_on_never']:.3f} | "
        f"{minus(init['exaccerr_at_L'])} | {init['student_entropy']:.2f} |"
    ]
    for m in toy["methods"]:
        d = r[m]
        cells = [f"{d[k]:.3f} ± {d[k + '_std']:.3f}" for k in ("forward_kl", "reverse_kl", "mass_on_never")]
        cells.append(f"{minus(d['exaccerr_at_L'])} ± {d['exaccerr_at_L_std']:.1f}")
        cells.append(f"{d['student_entropy']:.2f}")
        rows.append(f"| {labels[m]} | " + " | ".join(cells) + " |")
    fk, sq, mm, nm, ex = (
        r[m] for m in ("forward_kld", "seqkd", "minillm", "minillm_no_mix", "reverse_kld_exact")
    )
    by_fkl = sorted(toy["methods"], key=lambda m: r[m]["forward_kl"])
    covers = set(by_fkl[:2]) == {"forward_kld", "seqkd"}
    covering = [fk["mass_on_never"], sq["mass_on_never"]]
    mode_seekers = [nm["exaccerr_at_L"], ex["exaccerr_at_L"]]
    log2 = math.log(2)
    lines = [
        "# toy_sequences — mode-seeking on sequences, computed exactly",
        "",
        "Rendered by `python experiments/toy_sequences/render.py` from this folder's files; "
        "`tests/test_study_reports.py` checks that it still is.",
        "",
        f"Command (2 CPU cores, 2026-11-28, {r['seconds']:.0f} s):",
        "",
        "```bash",
        "python -m minillm.run experiment=toy_sequences hydra.run.dir=experiments/results/toy_sequences/run",
        "```",
        "",
        f"Teacher: an equal mixture of {w['n_chains']} Markov chains over {w['vocab']} tokens, length {w['length']} "
        f"(all {w['sequences']} sequences enumerated). Chain 1 walks +1 (prob. {toy['main']}) or +2 "
        f"({1 - toy['main']:.1f}) around the vocabulary, chain 2 walks −1 / −2, each from its own start token; "
        f"every other transition has probability {power(toy['floor'])}. {init['n_never']} sequences have p < "
        f'{power(toy["never_threshold"])} ("never"; the teacher\'s total mass on them is '
        f"{power(init['teacher_mass_on_never'])}). "
        "Student: ONE Markov chain (initial + transition logits), which cannot represent the mixture. Each "
        f"method: {toy['steps']} Adam steps, lr {toy['lr']}, from the same initialisation, {len(toy['seeds'])} "
        "seeds (sampling seeds; forward KD is exact and deterministic). Mean ± std over seeds, all numbers from "
        "exact enumeration (`run/results.json`, `run/summary.md`):",
        "",
        f"| method | forward KL(p‖q) | reverse KL(q‖p) | mass on never-sequences | ExAccErr({w['length']}) % | entropy |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "![toy](run/toy_sequences.png)",
        "",
        "What this shows:",
        "",
        "- **Mode-covering makes hybrids.** Forward KD and SeqKD "
        + ("give the lowest forward KL" if covers else "do not give the lowest forward KL")
        + f" ({fk['forward_kl']:.2f} and {sq['forward_kl']:.2f}; the others "
        f"{rc.span([r[m]['forward_kl'] for m in by_fkl[2:]], 2)}), and "
        f"both put {rc.span([100 * c for c in covering], 0)} % of their mass on sequences the teacher never "
        "produces: they average the two chains' transitions, so they mix +1 and −1 steps in one sequence. This is "
        "the failure reverse KL is meant to fix, and it is exactly what the bundled data set is built to provoke "
        "in LLM students.",
        f"- **Reverse KL picks a mode.** The exact reverse-KL gradient converges to one chain (reverse KL "
        f"{ex['reverse_kl']:.2f}, log 2 = {log2:.2f}; mass on never-sequences {100 * ex['mass_on_never']:.1f} %). "
        "The project's MiniLLM estimator — the same `minillm_loss` the LLM training uses, on "
        f"{toy['batch_size']} sampled rollouts per step — reaches the same solution when it samples from the "
        f"student alone ({nm['reverse_kl']:.2f}, {100 * nm['mass_on_never']:.1f} %).",
        f"- **Teacher-mixed sampling biases the fixed point here.** With α = {toy['alpha']}, the estimator stops at "
        f"reverse KL {mm['reverse_kl']:.2f} with {100 * mm['mass_on_never']:.0f} % of its mass on never-sequences, "
        f"far from the optimum, and the same across seeds (std {mm['reverse_kl_std']:.3f}: a fixed point, not "
        "noise). In the paper α is a stabiliser against reward hacking early in training on real LLMs; on this "
        "problem, where nothing needs stabilising, it costs the mode-seeking. This is what the α schedules "
        "(`alpha_linear`, `alpha_cosine` in `experiment=alpha_sweep`) are for: mixing early, none at the end.",
        "- **ExAccErr is negative for mode-seekers** on this problem: on its own prefixes (one chain's) a "
        "one-chain student's errors are small; on the teacher's prefixes (half from the other chain) they are "
        "large, so the excess error of its own prefixes is "
        f'{minus(max(mode_seekers), 0)} to {minus(min(mode_seekers), 0)} %. The metric says "own '
        "prefixes are easier than the teacher's\", which for a student that ignores a mode is true — read it "
        "beside the mass on never-sequences.",
    ]
    return rc.wrap("\n".join(lines)) + "\n"


def render(folder: Path = FOLDER) -> dict[str, str]:
    from minillm.toys import sequences_summary

    results = rc.read_json(folder / "run" / "results.json")
    return {"README.md": readme(folder), "run/summary.md": sequences_summary(results) + "\n"}


if __name__ == "__main__":
    rc.main(render, FOLDER, __doc__)
