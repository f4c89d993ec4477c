"""Calibration on classification prompts: the model's probability of each candidate label, then ECE.

Scoring rule (one number per candidate label w, for one prompt x):

    score(w) = log Σ_{r ∈ R(w)} q(r + EOS | x)

the log of the total probability that the model's whole response is one of the phrasings R(w) of
label w (each phrasing scored as the sum of its token log-probs, EOS included, after the prompt).
Normalising over the candidates, P(w | x) = softmax_w score(w), gives the prediction (argmax), the
confidence (the max) and, against the gold label, the accuracy and the expected calibration error.

Phrasings R(w):
- a bundled record (``check`` of type ``label``) lists every accepted phrasing of its gold label in
  ``check["answers"]`` ("Fruit.", "It is a fruit.", "An apple is a fruit.", "The answer is fruit.").
  R(w) is those phrasings with the gold label word replaced by w (the last whole-word occurrence, case
  kept, "a"/"an" before it fixed up): the same answer forms for every candidate, so no label is favoured
  by having more or likelier phrasings.
- any other record (or one whose answers never contain its label) uses ``templates`` with ``{label}``
  filled in; the default is the bare label word, ``["{label}"]``.

Conditioning on "the response is one of these phrasings" is what makes the numbers comparable across
models that word their answers differently; the mass outside all phrasings is reported as ``coverage``
(the mean over records of Σ_w Σ_r q(r|x)), a check that the phrasings are the ones the model uses.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from minillm.data.checkers import label_words
from minillm.data.datasets import IGNORE_INDEX, Example, collate_sft
from minillm.data.records import iter_jsonl
from minillm.data.template import PromptTemplate
from minillm.errors import MinillmError
from minillm.evaluation.metrics import expected_calibration_error, reliability_bins

DEFAULT_TEMPLATES = ("{label}",)


def _article_for(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def substitute_label(text: str, gold: str, candidate: str) -> str | None:
    """``text`` with the last whole-word ``gold`` replaced by ``candidate`` (None if ``gold`` is absent).

    A capitalised occurrence gets a capitalised candidate; an article "a"/"an" right before it is
    changed to suit the candidate ("It is a fruit." → "It is an animal.").
    """
    pattern = re.compile(rf"(?:\b(an?)(\s+))?\b{re.escape(gold)}\b", re.IGNORECASE)
    matches = list(pattern.finditer(text))
    if not matches:
        return None
    m = matches[-1]
    found = m.group(0)[len(m.group(1) or "") + len(m.group(2) or "") :]
    word = candidate
    if found[:1].isupper() and not gold[:1].isupper():
        word = candidate[:1].upper() + candidate[1:]
    if m.group(1):
        article = _article_for(candidate)
        if m.group(1)[:1].isupper():
            article = article.capitalize()
        word = article + m.group(2) + word
    return text[: m.start()] + word + text[m.end() :]


def label_phrasings(item: dict, templates=DEFAULT_TEMPLATES) -> dict[str, list[str]]:
    """R(w) for every candidate label w of ``item`` (``labels``, ``label`` and optional ``answers``)."""
    labels, gold = item["labels"], item["label"]
    out: dict[str, list[str]] = {}
    for w in labels:
        forms = [substitute_label(a, gold, w) for a in item.get("answers") or ()]
        forms = [f for f in forms if f is not None] or [t.format(label=w) for t in templates]
        out[w] = list(dict.fromkeys(f.strip() for f in forms))
    return out


def items_from_records(records: list[dict]) -> list[dict]:
    """Calibration items from bundled-style records: those whose ``check`` is a label check."""
    items = []
    for r in records:
        check = r.get("check")
        labels = label_words(check) if check else None
        if labels:
            items.append(
                {
                    "instruction": r["instruction"],
                    "context": r.get("context") or "",
                    "labels": labels,
                    "label": check["label"],
                    "answers": list(check.get("answers") or ()),
                    "category": r.get("category") or "",
                }
            )
    return items


def read_labelled_jsonl(path: str | Path, key: str = "evaluate.calibration.path") -> list[dict]:
    """Items from a JSONL of {"instruction", "context" (or "input"), "label", "labels": [...]}."""
    items = []
    for where, raw in iter_jsonl(path, missing=f"{key}={path}: file does not exist"):
        if not isinstance(raw, dict) or not isinstance(raw.get("instruction"), str):
            raise MinillmError(f"{where}: record needs an 'instruction' string")
        labels = raw.get("labels")
        if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) for x in labels):
            raise MinillmError(f"{where}: 'labels' must be a list of at least two label strings")
        if raw.get("label") not in labels:
            raise MinillmError(f"{where}: 'label' must be one of 'labels' {labels}")
        context = raw.get("context", raw.get("input")) or ""
        items.append(
            {
                "instruction": raw["instruction"],
                "context": context,
                "labels": labels,
                "label": raw["label"],
                "answers": [a for a in raw.get("answers") or () if isinstance(a, str)],
                "category": raw.get("category") or "",
            }
        )
    if not items:
        raise MinillmError(f"{key}={path}: file has no records")
    return items


@torch.no_grad()
def sequence_logprobs(model, pairs: list[tuple[list[int], list[int]]], pad_token_id: int, batch_size: int):
    """Σ_t log q(r_t | x, r_<t) for each (prompt ids, response ids) pair; a list of floats."""
    device = next(model.parameters()).device
    out: list[float] = []
    for start in range(0, len(pairs), batch_size):
        chunk = [Example(p, r, i) for i, (p, r) in enumerate(pairs[start : start + batch_size])]
        batch = collate_sft(chunk, pad_token_id)
        logits = model(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        ).logits[:, :-1]
        targets = batch["labels"][:, 1:].to(device)
        mask = targets != IGNORE_INDEX
        logp = torch.log_softmax(logits.float(), dim=-1)
        picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        out.extend((picked * mask).sum(-1).tolist())
    return out


def score_labels(
    model,
    tokenizer,
    items: list[dict],
    template: PromptTemplate,
    *,
    batch_size: int = 32,
    templates=DEFAULT_TEMPLATES,
) -> list[dict]:
    """P(w | x) over each item's candidates (see the module docstring); one dict per item."""
    was_training = model.training
    model.eval()
    eos = tokenizer.eos_token_id
    pairs, owners = [], []  # owners[k] = (item index, label) of pairs[k]
    for i, item in enumerate(items):
        prompt = tokenizer(template.format(item), add_special_tokens=False)["input_ids"]
        for w, forms in label_phrasings(item, templates).items():
            for text in forms:
                pairs.append((prompt, tokenizer(text, add_special_tokens=False)["input_ids"] + [eos]))
                owners.append((i, w))
    logps = sequence_logprobs(model, pairs, tokenizer.pad_token_id, batch_size)
    model.train(was_training)
    per_item: list[dict[str, list[float]]] = [{w: [] for w in item["labels"]} for item in items]
    for (i, w), lp in zip(owners, logps, strict=True):
        per_item[i][w].append(lp)
    scored = []
    for item, by_label in zip(items, per_item, strict=True):
        labels = list(by_label)
        scores = torch.tensor([torch.logsumexp(torch.tensor(by_label[w]), 0).item() for w in labels])
        probs = torch.softmax(scores.double(), 0).tolist()
        best = max(range(len(labels)), key=lambda k: probs[k])
        scored.append(
            {
                "labels": labels,
                "probs": probs,
                "label": item["label"],
                "prediction": labels[best],
                "confidence": probs[best],
                "correct": labels[best] == item["label"],
                "coverage": float(torch.logsumexp(scores, 0).exp()),
                "category": item.get("category", ""),
            }
        )
    return scored


def calibration_metrics(scored: list[dict], n_bins: int = 10) -> dict:
    """ECE (in [0, 1]), accuracy (×100), mean confidence, coverage and the reliability bins."""
    conf = [s["confidence"] for s in scored]
    hit = [float(s["correct"]) for s in scored]
    n = len(scored)
    return {
        "n": n,
        "ece": expected_calibration_error(conf, hit, n_bins),
        "accuracy": 100.0 * sum(hit) / n if n else None,
        "confidence": sum(conf) / n if n else None,
        "coverage": sum(s["coverage"] for s in scored) / n if n else None,
        "bins": reliability_bins(conf, hit, n_bins),
    }


def calibration(
    model,
    tokenizer,
    items: list[dict],
    template: PromptTemplate,
    *,
    batch_size: int = 32,
    n_bins: int = 10,
    templates=DEFAULT_TEMPLATES,
    keep_records: bool = True,
) -> dict:
    """Score ``items`` and summarise: :func:`calibration_metrics` plus (optionally) each record's scores."""
    scored = score_labels(model, tokenizer, items, template, batch_size=batch_size, templates=templates)
    result = calibration_metrics(scored, n_bins)
    if keep_records:
        result["records"] = scored
    if any(math.isnan(s["confidence"]) for s in scored):
        raise MinillmError("calibration: a label probability is NaN (the model's logits are not finite)")
    return result
