"""What reverse KL to the teacher buys, measured on held-out prompts (``python -m minillm.diagnose``).

Notation: q the student, p the teacher, x a prompt, y a response of T tokens (EOS included).

- Exact token-level KLs: at every response position of a sample the full-vocabulary divergences
  KL(q‖p) = Σ_v q(v|·)[log q(v|·) − log p(v|·)] and KL(p‖q) = Σ_v p(v|·)[log p(v|·) − log q(v|·)]
  (``minillm.objectives.divergences``), from one teacher-forced pass of each model over the sample.
  Reported as the mean over every response token (positions after EOS masked out, EOS included),
  pooled over prompts and seeds, on three sources of prefixes: the student's own samples (reverse KL
  there is what MiniLLM minimises), the teacher's samples (forward KL there is word-level KD's target)
  and the gold responses.
- Sequence-level KL, two unbiased estimates of the same number: the Monte Carlo mean over y ~ q of
  log q(y|x) − log p(y|x) (``seq_mc``), and the mean over y ~ q of Σ_t KL_t(q‖p) (``seq_token_sum``,
  lower variance). On the teacher's samples the same with p and q swapped (forward KL).
- Copying: K responses per prompt from each model (K = number of seeds); how many of the student's
  invalid responses are, word for word (whitespace-normalised), among the teacher's responses to that
  prompt, and how many of the teacher's distinct invalid responses the student also produced.

The pure parts (:func:`copy_stats`, :func:`kl_summary`, :func:`per_category`) take plain lists, so they
are tested on hand-made values; :func:`rollout_divergences` does the model work for one batch.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence

import torch
from torch import Tensor

from minillm.data.datasets import Example, collate_prompts
from minillm.evaluation.sampled import score_responses
from minillm.objectives.divergences import forward_kl, reverse_kl
from minillm.rollout.generate import decode_responses
from minillm.rollout.options import SamplingOptions
from minillm.rollout.sampler import Rollout, generate, response_logits, sampled_logprobs

SOURCES = ("student", "teacher", "gold")
# The teacher's samples for seed s come from a generator seeded with s + this. With ONE seed for both
# models the two draws share their uniform numbers (common random numbers): two similar distributions
# then return the same token far more often than independent samples would, and the copy rates below
# would count that coincidence as copying.
TEACHER_SEED_OFFSET = 1_000_003


# --------------------------------------------------------------------------- model work


@torch.no_grad()
def rollout_divergences(student, teacher, rollout: Rollout) -> dict[str, Tensor]:
    """Per-row sums over the response tokens of ``rollout`` (mask after EOS, EOS included).

    Returns (B,) tensors: ``tokens``; ``reverse_kl`` = Σ_t KL(q‖p) and ``forward_kl`` = Σ_t KL(p‖q), each
    exact over the whole vocabulary; ``log_ratio`` = Σ_t log q(y_t|·) − log p(y_t|·) of the tokens in it.
    """
    s_logits = response_logits(student, rollout)
    t_logits = response_logits(teacher, rollout)
    mask = rollout.response_mask.bool()
    log_q = sampled_logprobs(s_logits, rollout.response_ids)
    log_p = sampled_logprobs(t_logits, rollout.response_ids)
    zero = torch.zeros((), dtype=log_q.dtype, device=log_q.device)
    return {
        "tokens": mask.long().sum(1),
        "reverse_kl": reverse_kl(s_logits, t_logits, mask, reduction="none").sum(1),
        "forward_kl": forward_kl(s_logits, t_logits, mask, reduction="none").sum(1),
        "log_ratio": torch.where(mask, log_q - log_p, zero).sum(1),
    }


def gold_rollout(examples: list[Example], pad_token_id: int) -> Rollout:
    """The gold responses of ``examples`` as a Rollout: prompts left-padded, responses right-padded."""
    prompts = collate_prompts(examples, pad_token_id)
    width = max(len(e.response_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        ids[row, : len(e.response_ids)] = torch.tensor(e.response_ids, dtype=torch.long)
        mask[row, : len(e.response_ids)] = 1
    zeros = torch.zeros(ids.shape, dtype=torch.float32)
    return Rollout(
        prompt_ids=prompts["input_ids"],
        prompt_mask=prompts["attention_mask"],
        response_ids=ids,
        response_mask=mask,
        student_logprobs=zeros,
        teacher_logprobs=None,
        mix_logprobs=zeros,
        pad_token_id=pad_token_id,
    )


def _rows(out: dict[str, Tensor], rollout: Rollout, eos: int, **fields) -> list[dict]:
    ended = ((rollout.response_ids == eos) & rollout.response_mask.bool()).any(1).tolist()
    values = {k: v.tolist() for k, v in out.items()}
    return [{**fields, **{k: values[k][b] for k in values}, "ended": ended[b]} for b in range(len(rollout))]


@torch.no_grad()
def probe(
    student,
    teacher,
    tokenizer,
    examples: list[Example],
    records: list[dict],
    *,
    seeds: Sequence[int] = (0, 1, 2),
    batch_size: int = 16,
    max_new_tokens: int = 128,
) -> list[dict]:
    """One row per response: ``source`` (student | teacher | gold), ``prompt`` (position in ``examples``),
    ``seed`` (None for gold), ``text``, ``valid`` (True / False / None without a checker), ``category``,
    and the sums of :func:`rollout_divergences` plus ``ended`` (the response holds EOS).

    Samples are drawn at temperature 1 with no top-k / top-p, one generator per (model, seed) consumed
    batch after batch. The student's is seeded with the seed, so its responses are exactly the ones
    ``evaluate_model`` scores for the same seeds and batch size; the teacher's with seed +
    ``TEACHER_SEED_OFFSET``, so its samples are independent of the student's.
    """
    device = next(student.parameters()).device
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    sampling = SamplingOptions(
        max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=pad
    )  # temperature 1
    was_training = [m.training for m in (student, teacher)]
    student.eval()
    teacher.eval()
    refs = [records[e.index] for e in examples]
    rows: list[dict] = []
    try:
        for seed in seeds:
            for source, model in (("student", student), ("teacher", teacher)):
                offset = TEACHER_SEED_OFFSET if source == "teacher" else 0
                generator = torch.Generator(device=device).manual_seed(int(seed) + offset)
                for start in range(0, len(examples), batch_size):
                    chunk = examples[start : start + batch_size]
                    batch = collate_prompts(chunk, pad)
                    rollout = generate(
                        model,
                        batch["input_ids"].to(device),
                        batch["attention_mask"].to(device),
                        sampling,
                        generator=generator,
                    )
                    texts = decode_responses(tokenizer, rollout.response_ids, rollout.response_mask)
                    out = rollout_divergences(student, teacher, rollout)
                    for i, (row, text) in enumerate(zip(_rows(out, rollout, eos), texts, strict=True)):
                        rows.append(
                            {**row, "source": source, "prompt": start + i, "seed": int(seed), "text": text}
                        )
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            rollout = gold_rollout(chunk, pad).to(device)
            out = rollout_divergences(student, teacher, rollout)
            for i, row in enumerate(_rows(out, rollout, eos)):
                text = refs[start + i]["response"].strip()
                rows.append({**row, "source": "gold", "prompt": start + i, "seed": None, "text": text})
    finally:
        for m, mode in zip((student, teacher), was_training, strict=True):
            m.train(mode)
    scored = score_responses([r["text"] for r in rows], [refs[r["prompt"]] for r in rows])
    for row, s in zip(rows, scored, strict=True):
        row["valid"] = None if s["valid"] is None else s["valid"] > 0
        row["category"] = s["category"]
        row["rougeL"] = s["rougeL"]
    return rows


# --------------------------------------------------------------------------- pure summaries


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _sem(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None


def _per_token(rows: list[dict], key: str) -> float | None:
    tokens = sum(r["tokens"] for r in rows)
    return sum(r[key] for r in rows) / tokens if tokens else None


def kl_summary(rows: list[dict]) -> dict:
    """KLs of one source's rows (see the module docstring).

    ``reverse_kl`` / ``forward_kl``: Σ over all rows of the per-row sums / Σ tokens (the mean over every
    response token, pooled); ``*_by_seed`` the same per seed. ``seq_mc``: mean over rows of ``log_ratio``
    (log q(y) − log p(y), the MC estimate of sequence KL(q‖p) when the rows are student samples; negate
    it for teacher samples); ``seq_reverse_kl_token_sum`` / ``seq_forward_kl_token_sum``: mean over rows
    of the per-row sums. ``ended``: % of rows that emitted EOS (the rest hit max_new_tokens).
    """
    if not rows:
        return {"n": 0}
    seeds = sorted({r["seed"] for r in rows if r["seed"] is not None})
    by_seed = {s: [r for r in rows if r["seed"] == s] for s in seeds}
    return {
        "n": len(rows),
        "tokens": sum(r["tokens"] for r in rows),
        "reverse_kl": _per_token(rows, "reverse_kl"),
        "forward_kl": _per_token(rows, "forward_kl"),
        "reverse_kl_by_seed": {str(s): _per_token(v, "reverse_kl") for s, v in by_seed.items()},
        "forward_kl_by_seed": {str(s): _per_token(v, "forward_kl") for s, v in by_seed.items()},
        "seq_mc": _mean(r["log_ratio"] for r in rows),
        "seq_mc_sem": _sem([r["log_ratio"] for r in rows]),
        "seq_reverse_kl_token_sum": _mean(r["reverse_kl"] for r in rows),
        "seq_forward_kl_token_sum": _mean(r["forward_kl"] for r in rows),
        "length": _mean(r["tokens"] for r in rows),
        "ended": 100.0 * sum(bool(r["ended"]) for r in rows) / len(rows),
    }


def normalize_ws(text: str) -> str:
    """Whitespace-normalised text: runs of whitespace become one space, no leading or trailing space."""
    return " ".join(str(text).split())


def copy_stats(
    teacher_texts: list[list[str]],
    teacher_valid: list[list[bool | None]],
    student_texts: list[list[str]],
    student_valid: list[list[bool | None]],
) -> dict:
    """How much of the student's invalidity is the teacher's, per prompt i (lists of K responses each).

    Validity flags: True / False, or None for a response whose record has no checker (left out of the
    rates). All rates in %, None when their denominator is 0:

    - ``teacher_invalid_rate``, ``student_invalid_rate``: invalid responses / checked responses;
    - ``copied_invalid_share``: the student's invalid responses whose whitespace-normalised text is
      among the teacher's responses to the same prompt / the student's invalid responses;
    - ``copied_valid_share``: the same for the student's valid responses (the base rate of copying);
    - ``teacher_invalid_reproduced_share``: the teacher's DISTINCT invalid texts (per prompt) that the
      student also produced for that prompt / the teacher's distinct invalid texts.
    """
    n = len(teacher_texts)
    if not (len(teacher_valid) == len(student_texts) == len(student_valid) == n):
        raise ValueError("copy_stats: the four lists need one entry per prompt")
    c = defaultdict(int)
    for t_texts, t_valid, s_texts, s_valid in zip(
        teacher_texts, teacher_valid, student_texts, student_valid, strict=True
    ):
        t_norm = [normalize_ws(t) for t in t_texts]
        s_norm = [normalize_ws(s) for s in s_texts]
        t_set, s_set = set(t_norm), set(s_norm)
        for v in t_valid:
            if v is not None:
                c["t_checked"] += 1
                c["t_invalid"] += not v
        for text, v in zip(s_norm, s_valid, strict=True):
            if v is None:
                continue
            c["s_checked"] += 1
            key = "s_valid" if v else "s_invalid"
            c[key] += 1
            c[key + "_copied"] += text in t_set
        distinct_invalid = {text for text, v in zip(t_norm, t_valid, strict=True) if v is False}
        c["t_distinct_invalid"] += len(distinct_invalid)
        c["t_distinct_invalid_reproduced"] += len(distinct_invalid & s_set)

    def pct(a: str, b: str) -> float | None:
        return 100.0 * c[a] / c[b] if c[b] else None

    return {
        "teacher_invalid_rate": pct("t_invalid", "t_checked"),
        "student_invalid_rate": pct("s_invalid", "s_checked"),
        "copied_invalid_share": pct("s_invalid_copied", "s_invalid"),
        "copied_valid_share": pct("s_valid_copied", "s_valid"),
        "teacher_invalid_reproduced_share": pct("t_distinct_invalid_reproduced", "t_distinct_invalid"),
        "counts": {
            "teacher_checked": c["t_checked"],
            "teacher_invalid": c["t_invalid"],
            "student_checked": c["s_checked"],
            "student_invalid": c["s_invalid"],
            "student_invalid_copied": c["s_invalid_copied"],
            "student_valid": c["s_valid"],
            "student_valid_copied": c["s_valid_copied"],
            "teacher_distinct_invalid": c["t_distinct_invalid"],
            "teacher_distinct_invalid_reproduced": c["t_distinct_invalid_reproduced"],
        },
    }


def _by_prompt(rows: list[dict], source: str, prompts: list[int]) -> tuple[list[list[str]], list[list]]:
    texts: dict[int, list[str]] = {p: [] for p in prompts}
    valid: dict[int, list] = {p: [] for p in prompts}
    for r in rows:
        if r["source"] == source and r["prompt"] in texts:
            texts[r["prompt"]].append(r["text"])
            valid[r["prompt"]].append(r["valid"])
    return [texts[p] for p in prompts], [valid[p] for p in prompts]


def copy_stats_of_rows(rows: list[dict], prompts: list[int]) -> dict:
    """:func:`copy_stats` over the student and teacher rows of ``prompts``."""
    t_texts, t_valid = _by_prompt(rows, "teacher", prompts)
    s_texts, s_valid = _by_prompt(rows, "student", prompts)
    return copy_stats(t_texts, t_valid, s_texts, s_valid)


def _valid_rate(rows: list[dict]) -> float | None:
    checked = [r["valid"] for r in rows if r["valid"] is not None]
    return 100.0 * sum(checked) / len(checked) if checked else None


def per_category(rows: list[dict], records: list[dict], examples: list[Example], *, quotes: int = 3) -> dict:
    """Per category: validity of student and teacher samples, copying, token KLs and ``quotes`` quoted
    invalid student responses (distinct texts, in prompt order) with their instruction and reference."""
    prompt_cat = {r["prompt"]: r["category"] for r in rows}
    out = {}
    for cat in sorted(set(prompt_cat.values())):
        prompts = sorted(p for p, c in prompt_cat.items() if c == cat)
        mine = [r for r in rows if r["prompt"] in set(prompts)]
        student = [r for r in mine if r["source"] == "student"]
        teacher = [r for r in mine if r["source"] == "teacher"]
        copies = copy_stats_of_rows(mine, prompts)
        teacher_sets = defaultdict(set)
        for r in teacher:
            teacher_sets[r["prompt"]].add(normalize_ws(r["text"]))
        quoted, seen = [], set()
        for r in sorted(student, key=lambda r: (r["prompt"], r["seed"])):
            key = (r["prompt"], normalize_ws(r["text"]))
            if r["valid"] is not False or key in seen or len(quoted) >= quotes:
                continue
            seen.add(key)
            record = records[examples[r["prompt"]].index]
            quoted.append(
                {
                    "instruction": record["instruction"],
                    "context": record.get("context") or "",
                    "reference": record["response"],
                    "response": r["text"],
                    "seed": r["seed"],
                    "copied_from_teacher": key[1] in teacher_sets[r["prompt"]],
                }
            )
        out[cat] = {
            "n_prompts": len(prompts),
            "student_valid_rate": _valid_rate(student),
            "teacher_valid_rate": _valid_rate(teacher),
            "copied_invalid_share": copies["copied_invalid_share"],
            "teacher_invalid_reproduced_share": copies["teacher_invalid_reproduced_share"],
            "reverse_kl_on_student": _per_token(student, "reverse_kl"),
            "forward_kl_on_teacher": _per_token(teacher, "forward_kl"),
            "invalid_examples": quoted,
        }
    return out


def summarise(rows: list[dict], records: list[dict], examples: list[Example], *, quotes: int = 3) -> dict:
    """Everything ``diagnose.json`` holds apart from the settings: KLs by source, copying, categories."""
    prompts = sorted({r["prompt"] for r in rows})
    kls = {s: kl_summary([r for r in rows if r["source"] == s]) for s in SOURCES}
    validity = {
        s: {
            "valid_rate": _valid_rate([r for r in rows if r["source"] == s]),
            "valid_rate_by_seed": {
                str(seed): _valid_rate([r for r in rows if r["source"] == s and r["seed"] == seed])
                for seed in sorted({r["seed"] for r in rows if r["source"] == s and r["seed"] is not None})
            },
        }
        for s in SOURCES
    }
    return {
        "kl": kls,
        "validity": validity,
        "copying": copy_stats_of_rows(rows, prompts),
        "per_category": per_category(rows, records, examples, quotes=quotes),
    }


# --------------------------------------------------------------------------- markdown


def _f(value, fmt: str = "{:.3f}") -> str:
    return "–" if value is None else fmt.format(value)


def summary_table(result: dict) -> str:
    """The compact table printed at the end of a run (and the head of ``diagnose.md``)."""
    kl, val, cp = result["kl"], result["validity"], result["copying"]
    lines = [
        "| samples from | KL(q‖p) /token | KL(p‖q) /token | seq KL MC | seq KL Σ_t | valid % | length | EOS % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for source in SOURCES:
        k = kl[source]
        if not k.get("n"):
            continue
        if source == "student":  # sequence KL(q‖p) on student samples
            mc, tok = k["seq_mc"], k["seq_reverse_kl_token_sum"]
        elif source == "teacher":  # sequence KL(p‖q) on teacher samples
            mc, tok = -k["seq_mc"], k["seq_forward_kl_token_sum"]
        else:
            mc, tok = None, None
        lines.append(
            f"| {source} | {_f(k['reverse_kl'])} | {_f(k['forward_kl'])} | {_f(mc)} | {_f(tok)} "
            f"| {_f(val[source]['valid_rate'], '{:.1f}')} | {_f(k['length'], '{:.1f}')} "
            f"| {_f(k['ended'], '{:.0f}')} |"
        )
    lines += [
        "",
        "seq KL: KL(q‖p) over whole responses on the student's samples, KL(p‖q) on the teacher's "
        "(MC: mean log-ratio of the sampled responses; Σ_t: mean sum of the exact token KLs).",
        "",
        f"teacher invalid {_f(cp['teacher_invalid_rate'], '{:.1f}')} % · student invalid "
        f"{_f(cp['student_invalid_rate'], '{:.1f}')} % · student invalid copied from the teacher "
        f"{_f(cp['copied_invalid_share'], '{:.1f}')} % (valid copied {_f(cp['copied_valid_share'], '{:.1f}')} %) "
        f"· teacher's distinct invalid answers the student also gave "
        f"{_f(cp['teacher_invalid_reproduced_share'], '{:.1f}')} %",
    ]
    return "\n".join(lines)


def _quote(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|") or "(empty)"


def diagnose_markdown(result: dict) -> str:
    """``diagnose.md``: the summary table, the per-category table and quoted invalid responses."""
    s = result["settings"]
    lines = [
        f"# Divergence probe: {result['model']} against the teacher",
        "",
        f"{result['source']} · teacher {result['teacher']} · split `{result['split']}`, first "
        f"{s['num_prompts']} prompts · seeds {s['seeds']} · temperature 1 · max_new_tokens "
        f"{s['max_new_tokens']}",
        "",
        summary_table(result),
        "",
        "## Per category",
        "",
        "| category | prompts | student valid % | teacher valid % | invalid copied % | teacher invalid "
        "reproduced % | KL(q‖p) on student | KL(p‖q) on teacher |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for cat, c in result["per_category"].items():
        lines.append(
            f"| {cat} | {c['n_prompts']} | {_f(c['student_valid_rate'], '{:.1f}')} "
            f"| {_f(c['teacher_valid_rate'], '{:.1f}')} | {_f(c['copied_invalid_share'], '{:.1f}')} "
            f"| {_f(c['teacher_invalid_reproduced_share'], '{:.1f}')} | {_f(c['reverse_kl_on_student'])} "
            f"| {_f(c['forward_kl_on_teacher'])} |"
        )
    lines += ["", "## Invalid student responses", ""]
    for cat, c in result["per_category"].items():
        if not c["invalid_examples"]:
            continue
        lines += [f"### {cat}", ""]
        for ex in c["invalid_examples"]:
            context = f" / {_quote(ex['context'])}" if ex["context"] else ""
            lines += [
                f"- instruction: {_quote(ex['instruction'])}{context}",
                f"  - reference: {_quote(ex['reference'])}",
                f"  - student (seed {ex['seed']}{', also a teacher sample' if ex['copied_from_teacher'] else ''})"
                f": {_quote(ex['response'])}",
            ]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
