"""The results as tables: rich when installed, else plain text."""

from __future__ import annotations

import io
import statistics
import sys

from minillm.bench.measure import LOAD_WARNING
from minillm.bench.step import PARTS


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 10_000:
            return f"{value:,.0f}"
        if value != 0 and abs(value) < 0.5 * 10**-digits:
            return f"{value:.1e}"
        return f"{value:.{digits}f}"
    return str(value)


def pair_tables(pairs: dict | None) -> list[tuple[str, list[str], list[list[str]]]]:
    """One table per old-and-new pair: each side's median, min, max and peak memory, the ratio, the load."""
    out = []
    for title, pair in (
        ("MiniLLM step, fp32 against bf16 mixed precision", (pairs or {}).get("precision")),
        ("MiniLLM step, round rebuilt every step against built once", (pairs or {}).get("round_build")),
        ("Lockstep rollout, sampler.decode=eager against the static cache", (pairs or {}).get("decode")),
        (
            "MiniLLM round, fp32 eager against the fast path (pairs.fast_path_precision, static-cache decoding)",
            (pairs or {}).get("fast_path"),
        ),
        (
            "One token per row drawn 200 times: torch.multinomial against the sampler's draw",
            (pairs or {}).get("draw"),
        ),
    ):
        if not pair:
            continue
        if "skipped" in pair:  # said in the header lines (render)
            continue
        rows = [
            [name, _fmt(statistics.median(v)), _fmt(min(v)), _fmt(max(v)), _fmt(pair["peak_mib"][name], 1)]
            for name, v in pair["seconds"].items()
        ]
        rows.append(
            [
                f"{pair['old']} ÷ {pair['new']}",
                _fmt(pair["speedup"]),
                _fmt(pair["pair_ratio_min"]),
                _fmt(pair["pair_ratio_max"]),
                "—",
            ]
        )
        if "compile_seconds" in pair:
            failed = f"; fell back: {'; '.join(pair['compile_failed'])}" if pair["compile_failed"] else ""
            same = (
                ""
                if "same_tokens" not in pair
                else ", same tokens"
                if pair["same_tokens"]
                else ", DIFFERENT tokens"
            )
            note = f"{pair['compilations']} graphs{same}{failed}"
            rows.append(
                ["decoding's compile (untimed pairs)", _fmt(pair["compile_seconds"], 1), "—", "—", note]
            )
        if pair.get("update_compile_seconds") is not None:
            failed = pair.get("update_compile_failed") or []
            note = f"fell back: {'; '.join(failed)}" if failed else "—"
            rows.append(
                [
                    "first compiled update (untimed pairs)",
                    _fmt(pair["update_compile_seconds"], 1),
                    "—",
                    "—",
                    note,
                ]
            )
        if "same_tokens" in pair and "compile_seconds" not in pair:
            rows.append(["same tokens", "yes" if pair["same_tokens"] else "NO", "—", "—", "—"])
        if "rebuild_seconds" in pair:
            rows.append(["the rebuild alone (median of 50)", _fmt(pair["rebuild_seconds"], 5), "—", "—", "—"])
        load = f"load {pair['load_avg_before'][0]:.2f} before, {pair['load_avg_after'][0]:.2f} after"
        out.append(
            (
                f"{title}, timed alternately ({pair['repeats']} pairs after {pair['warmup']} untimed; {load}; "
                "ratio row: median ÷ median, then the pairs' own min and max)",
                ["path", "median s", "min s", "max s", "peak MiB"],
                rows,
            )
        )
    return out


def targets_table(results: dict) -> tuple[str, list[str], list[list[str]]]:
    rows = [
        [t["target"], _fmt(t["value"]), "skipped" if "skipped" in t else _fmt(t["ok"])]
        for t in results["targets"]
    ]
    return ("Targets", ["target", "measured", "met"], rows)


def tables(results: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table printed (``pairs_only``: the pairs and their targets)."""
    if "rollout" not in results:
        return [*pair_tables(results.get("pairs")), targets_table(results)]
    out = []
    ro = results["rollout"]
    s = results["steps"]["minillm"]["settings"]
    title = (
        f"Rollout throughput: batch {s['batch_size']}, prompt {s['prompt_len']}, "
        f"{s['response_len']} new tokens per row (fixed length)"
    )
    rows = []
    for name, r in ro["runs"].items():
        alpha0 = _fmt(ro["alpha0_ratio"]) if name == "lockstep α=0" else "—"
        rows.append(
            [name, _fmt(r["seconds"]), _fmt(r["tokens_per_s"], 1), _fmt(ro["ratio"].get(name)), alpha0]
        )
    tokens = s["batch_size"] * s["response_len"]
    rows.append(
        [
            "bound = student + teacher",
            _fmt(ro["bound_seconds"]),
            _fmt(tokens / ro["bound_seconds"], 1),
            "1.000",
            "—",
        ]
    )
    rows.append(
        [
            "α=0 bound = student + teacher one pass",
            _fmt(ro["alpha0_bound_seconds"]),
            _fmt(tokens / ro["alpha0_bound_seconds"], 1),
            "—",
            "1.000",
        ]
    )
    out.append((title, ["decoding", "s", "tokens/s", "÷ bound", "÷ α=0 bound"], rows))

    header = [
        "step",
        "s/step",
        *PARTS,
        "other",
        "gen tok/s",
        "teacher fwd tok",
        "student fwd tok",
        "peak MiB",
    ]
    rows = []
    for name, r in results["steps"].items():
        t = r["forward_tokens"]
        rows.append(
            [
                name,
                _fmt(r["seconds"]),
                *(_fmt(r["parts"][p]) for p in (*PARTS, "other")),
                _fmt(r["generated_tokens_per_s"], 1),
                f"{t['teacher']:,} / {t['teacher_needed']:,}",
                f"{t['student']:,} / {t['student_needed']:,}",
                _fmt(r["memory"]["peak_mib"], 1),
            ]
        )
    out.append(("Distillation step (forward tokens: counted / needed)", header, rows))

    sw = results["sweep"]
    rows = [
        [
            str(p["batch_size"]),
            str(p["response_len"]),
            _fmt(p["seconds"]),
            _fmt(p["rollout_seconds"]),
            _fmt(p["train_seconds"]),
            _fmt(p["generated_tokens_per_s"], 1),
            _fmt(p.get("decode_bound_seconds")) if p.get("decode_bound_seconds") is not None else "—",
        ]
        for p in sw["points"]
    ]
    out.append(
        (
            "Step-time sweep (decode bound: student alone + teacher alone, same tokens)",
            ["batch", "response len", "s/step", "rollout s", "train s", "gen tok/s", "decode bound s"],
            rows,
        )
    )

    fit, bfit = sw["length_fit"], sw["batch_fit"]
    rows = [
        [
            f"vs response length (batch {fit['batch_size']})",
            _fmt(fit["slope"], 5),
            _fmt(fit["intercept"]),
            _fmt(fit["r2"], 4),
            _fmt(fit.get("ratio_256_128")),
            _fmt(fit.get("decode_bound_ratio_256_128")),
        ],
        [
            f"vs batch size (length {bfit['response_len']})",
            _fmt(bfit["slope"], 5),
            _fmt(bfit["intercept"]),
            _fmt(bfit["r2"], 4),
            "—",
            "—",
        ],
    ]
    out.append(
        (
            "Linearity of step time",
            ["fit", "slope s/unit", "intercept s", "R²", "t(256)/t(128)", "plain decoding t(256)/t(128)"],
            rows,
        )
    )

    vm = results.get("vocab_memory")
    if vm:
        b, t, v = vm["shape"]
        rows = [
            [
                "one pass" if r["chunk_size"] is None else f"chunks of {r['chunk_size']}",
                _fmt(r["seconds"]),
                _fmt(r["added_mib"], 1),
                _fmt(r["added_mib"] / vm["logits_mib"], 2),
            ]
            for r in vm["rows"]
        ]
        out.append(
            (
                f"Full-vocabulary single-step term, forward + backward: batch {b}, {t} positions, "
                f"vocabulary {v:,} (one logits tensor = {vm['logits_mib']:.0f} MiB; "
                f"largest difference from one pass {vm['max_abs_diff_vs_one_pass']:.1e})",
                ["computed", "s", "memory added MiB", "÷ one logits tensor"],
                rows,
            )
        )

    out.extend(pair_tables(results.get("pairs")))

    trl = results.get("trl_gkd") or {}
    if "speedup" in trl:
        s = trl["settings"]
        tokens = s["batch_size"] * s["response_len"]
        rows = [
            [
                name,
                _fmt(statistics.median(values)),
                _fmt(min(values)),
                _fmt(max(values)),
                _fmt(tokens / statistics.median(values), 1),
            ]
            for name, values in (
                (f"TRL {trl['trl']} GKDTrainer", trl["trl_seconds"]),
                (f"ours ({trl['ours']})", trl["ours_seconds"]),
            )
        ]
        rows.append(
            [
                "TRL ÷ ours",
                _fmt(trl["speedup"]),
                _fmt(trl["pair_ratio_min"]),
                _fmt(trl["pair_ratio_max"]),
                "—",
            ]
        )
        out.append(
            (
                f"GKD step against TRL's GKDTrainer, timed alternately ({trl['repeats']} pairs after "
                f"{trl['warmup']} untimed; batch {s['batch_size']}, prompt {s['prompt_len']}, "
                f"{s['response_len']} new tokens; ratio row: median ÷ median, then the pairs' own min and max)",
                ["step", "median s", "min s", "max s", "gen tok/s"],
                rows,
            )
        )

    out.append(targets_table(results))
    return out


def render(results: dict, plain: bool) -> str:
    """The tables as text: rich tables when rich is installed and ``plain`` is false."""
    m = results["machine"]
    lines = [
        f"machine: {m['cpu_count']} CPUs, {m['torch_threads']} torch threads, device {m['device']}, "
        f"{m['dtype']}, compile={m['compile']}; load average {m['load_avg_before'][0]:.2f} before, "
        f"{m['load_avg_after'][0]:.2f} after; {m['wall_seconds']:.0f} s in all",
    ]
    for key in ("teacher", "student"):
        info = results["models"][key]
        lines.append(f"{key}: {info['parameters'] / 1e6:.2f}M parameters, {info['source']}")
    if m["under_load"]:
        lines.append(f"WARNING: load average above {LOAD_WARNING}: these timings were taken under load")
    skipped = (results.get("trl_gkd") or {}).get("skipped")
    if skipped:
        lines.append(f"TRL GKDTrainer comparison skipped: {skipped}")
    skipped = ((results.get("pairs") or {}).get("precision") or {}).get("skipped")
    if skipped:
        lines.append(f"bf16 against fp32 skipped: {skipped}")
    head = "\n".join(lines)
    if not plain:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            plain = True
    if plain:
        return head + "\n\n" + "\n\n".join(_plain_table(*t) for t in tables(results)) + "\n"
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, force_terminal=sys.stdout.isatty())
    for title, header, rows in tables(results):
        console.print(f"\n[bold]{title}[/bold]")
        table = Table()
        for i, col in enumerate(header):
            table.add_column(col, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    return head + "\n" + buffer.getvalue()


def _plain_table(title: str, header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([title, line(header), "  ".join("-" * w for w in widths), *map(line, rows)])
