"""minillm.diagnose: exact token KLs against a float64 hand computation, copying on hand-made responses,
and the command end to end."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch

from minillm.data.datasets import Example
from minillm.errors import MinillmError
from minillm.evaluation.divergence_probe import (
    copy_stats,
    gold_rollout,
    kl_summary,
    per_category,
    rollout_divergences,
)
from minillm.rollout.options import SamplingOptions
from minillm.rollout.sampler import Rollout

from .conftest import ROOT
from .test_evaluation import EOS, PAD, TINY, tiny_llama

# Three prompts of different lengths; responses of 3, 1 and 4 tokens, then padding (mask 0).
PROMPTS = [[5, 9, 12], [7, 3], [20, 21, 22, 23]]
RESPONSES = [[4, 8, EOS], [EOS], [6, 6, 30, EOS]]


def hand_rollout() -> Rollout:
    """A batch whose rows end at different steps: left-padded prompts, right-padded responses."""
    return gold_rollout(
        [Example(p, r, i) for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES, strict=True))], PAD
    )


def by_hand(student, teacher) -> list[dict]:
    """Per row, in float64 from plain unpadded forward passes: Σ_t KL(q‖p), Σ_t KL(p‖q), Σ_t log q − log p."""
    out = []
    for prompt, response in zip(PROMPTS, RESPONSES, strict=True):
        ids = torch.tensor([prompt + response])
        with torch.no_grad():
            lq = torch.log_softmax(student(input_ids=ids).logits[0].double(), -1)
            lp = torch.log_softmax(teacher(input_ids=ids).logits[0].double(), -1)
        row = {"reverse_kl": 0.0, "forward_kl": 0.0, "log_ratio": 0.0, "tokens": len(response)}
        for t, token in enumerate(response):
            pos = len(prompt) - 1 + t  # the logits that predict response token t
            q, p = lq[pos].exp(), lp[pos].exp()
            row["reverse_kl"] += float((q * (lq[pos] - lp[pos])).sum())
            row["forward_kl"] += float((p * (lp[pos] - lq[pos])).sum())
            row["log_ratio"] += float(lq[pos, token] - lp[pos, token])
        out.append(row)
    return out


def test_exact_token_kls_match_a_float64_hand_computation():
    student, teacher = tiny_llama(0), tiny_llama(1)
    out = rollout_divergences(student, teacher, hand_rollout())
    expected = by_hand(student, teacher)
    assert out["tokens"].tolist() == [3, 1, 4]
    for b, row in enumerate(expected):
        for key in ("reverse_kl", "forward_kl", "log_ratio"):
            assert float(out[key][b]) == pytest.approx(row[key], abs=1e-4), (b, key)
    assert expected[0]["reverse_kl"] != pytest.approx(
        expected[0]["forward_kl"], abs=1e-2
    )  # p, q distinguishable
    # The pooled per-token mean: every response token counts once, padding never.
    rows = [{k: float(v[b]) for k, v in out.items()} | {"seed": 0, "ended": True} for b in range(3)]
    summary = kl_summary(rows)
    total = sum(r["reverse_kl"] for r in expected) / 8
    assert summary["reverse_kl"] == pytest.approx(total, abs=1e-5)
    assert summary["forward_kl"] == pytest.approx(sum(r["forward_kl"] for r in expected) / 8, abs=1e-5)
    assert summary["seq_mc"] == pytest.approx(sum(r["log_ratio"] for r in expected) / 3, abs=1e-4)


@pytest.mark.parametrize("same_object", [True, False])
def test_kl_of_a_model_with_itself_is_zero(same_object):
    teacher = tiny_llama(2)
    student = teacher if same_object else copy.deepcopy(teacher)
    out = rollout_divergences(student, teacher, hand_rollout())
    for key in ("reverse_kl", "forward_kl", "log_ratio"):
        assert torch.allclose(out[key], torch.zeros(3), atol=1e-6), key


def test_probe_samples_the_student_as_evaluate_does_and_the_teacher_independently(tiny_tokenizer):
    from minillm.evaluation.divergence_probe import probe
    from minillm.rollout.generate import sample_responses

    teacher = tiny_llama(4, vocab=len(tiny_tokenizer))
    student = copy.deepcopy(teacher)  # the same distribution: every exact KL is 0
    g = torch.Generator().manual_seed(0)
    examples = [Example(torch.randint(10, 300, (4,), generator=g).tolist(), [5, EOS], i) for i in range(3)]
    records = [
        {"instruction": "i", "response": "r", "category": "c", "check": {"type": "exact", "answers": ["r"]}}
    ] * 3
    rows = probe(
        student, teacher, tiny_tokenizer, examples, records, seeds=(0, 1), batch_size=2, max_new_tokens=6
    )
    assert [r["source"] for r in rows].count("student") == 6 and [r["source"] for r in rows].count(
        "gold"
    ) == 3
    assert all(abs(r[k]) < 1e-5 for r in rows for k in ("reverse_kl", "forward_kl", "log_ratio"))
    text = {(r["source"], r["prompt"], r["seed"]): r["text"] for r in rows}
    for seed in (0, 1):
        same, _ = sample_responses(
            student,
            tiny_tokenizer,
            examples,
            SamplingOptions(
                max_new_tokens=6,
                eos_token_id=tiny_tokenizer.eos_token_id,
                pad_token_id=tiny_tokenizer.pad_token_id,
            ),
            batch_size=2,
            seed=seed,
            progress=False,
        )
        assert [text["student", i, seed] for i in range(3)] == same
    # One seed for both models would make two identical models give identical samples (common random
    # numbers), which the copy rates would count as copying; the teacher's stream is its own.
    pairs = [(text["student", i, s], text["teacher", i, s]) for i in range(3) for s in (0, 1)]
    assert sum(a == b for a, b in pairs) < len(pairs)


def test_copy_stats_on_hand_made_responses():
    # prompt 0: teacher gives "a b" (invalid) twice and "ok" (valid); student gives "a  b" (invalid, a copy
    # up to whitespace), "c" (invalid, not a teacher answer) and "ok" (valid, a copy).
    # prompt 1: teacher gives "x" (invalid), "y" (invalid), "z" (valid); student gives "y" (invalid, copy),
    # "w" (valid, not a copy) and "q" with no checker (None: left out).
    teacher_texts = [["a b", "a b", "ok"], ["x", "y", "z"]]
    teacher_valid = [[False, False, True], [False, False, True]]
    student_texts = [[" a  b\n", "c", "ok"], ["y", "w", "q"]]
    student_valid = [[False, False, True], [False, True, None]]
    out = copy_stats(teacher_texts, teacher_valid, student_texts, student_valid)
    assert out["teacher_invalid_rate"] == pytest.approx(100 * 4 / 6)
    assert out["student_invalid_rate"] == pytest.approx(100 * 3 / 5)
    assert out["copied_invalid_share"] == pytest.approx(100 * 2 / 3)  # "a b" and "y" of 3 invalid
    assert out["copied_valid_share"] == pytest.approx(100 * 1 / 2)  # "ok" of "ok", "w"
    # distinct teacher invalid: {"a b"} and {"x", "y"}: 3, of which the student gave "a b" and "y"
    assert out["teacher_invalid_reproduced_share"] == pytest.approx(100 * 2 / 3)
    assert out["counts"]["teacher_distinct_invalid"] == 3
    # A copy is per prompt: the same text answering ANOTHER prompt is not a copy.
    swapped = copy_stats(teacher_texts[::-1], teacher_valid[::-1], student_texts, student_valid)
    assert swapped["copied_invalid_share"] == 0.0 and swapped["teacher_invalid_reproduced_share"] == 0.0
    empty = copy_stats([["v"]], [[True]], [["v"]], [[True]])
    assert empty["copied_invalid_share"] is None and empty["teacher_invalid_reproduced_share"] is None


def test_per_category_quotes_invalid_student_responses():
    records = [
        {"instruction": "I0", "response": "R0", "category": "lists"},
        {"instruction": "I1", "response": "R1", "category": "poem"},
    ]
    examples = [Example([5], [EOS], 0), Example([6], [EOS], 1)]

    def row(source, prompt, seed, text, valid):
        cat = records[prompt]["category"]
        return {"source": source, "prompt": prompt, "seed": seed, "text": text, "valid": valid, "category": cat,
                "tokens": 2, "reverse_kl": 1.0, "forward_kl": 2.0}  # fmt: skip

    rows = [
        row("student", 0, 0, "bad", False), row("student", 0, 1, "bad", False), row("student", 0, 2, "good", True),
        row("teacher", 0, 0, "bad", False), row("teacher", 0, 1, "good", True), row("teacher", 0, 2, "good", True),
        row("student", 1, 0, "fine", True), row("teacher", 1, 0, "fine", True),
    ]  # fmt: skip
    out = per_category(rows, records, examples, quotes=3)
    lists = out["lists"]
    assert lists["student_valid_rate"] == pytest.approx(100 / 3) and lists[
        "teacher_valid_rate"
    ] == pytest.approx(200 / 3)
    assert lists["copied_invalid_share"] == 100.0
    assert [q["response"] for q in lists["invalid_examples"]] == ["bad"]  # distinct texts only
    assert (
        lists["invalid_examples"][0]["instruction"] == "I0"
        and lists["invalid_examples"][0]["reference"] == "R0"
    )
    assert lists["invalid_examples"][0]["copied_from_teacher"] is True
    assert out["poem"]["student_valid_rate"] == 100.0 and out["poem"]["invalid_examples"] == []


def test_diagnose_config_errors_name_the_key(compose, tmp_path):
    from minillm.diagnose import validate_diagnose_config

    base = [*TINY, f"cache_dir={tmp_path / 'cache'}"]
    cfg = compose(base, config_name="diagnose")
    assert cfg.diagnose.split == "valid" and list(cfg.diagnose.seeds) == [0, 1, 2]
    for override, message in (
        ("diagnose.model=teacher", "diagnose.model='teacher'"),
        ("diagnose.seeds=[]", "diagnose.seeds=\\[\\]"),
        ("diagnose.seeds=[1,1]", "a seed twice"),
        ("diagnose.num_prompts=0", "diagnose.num_prompts=0"),
        ("teacher=none", "teacher=none has none"),
    ):
        with pytest.raises(MinillmError, match=message):
            validate_diagnose_config(compose([*base, override], config_name="diagnose"))


SMOKE = ["diagnose.model=init", "diagnose.num_prompts=4", "diagnose.seeds=[0,1]", "diagnose.max_new_tokens=8"]


def check_smoke_files(run_dir) -> None:
    saved = json.loads((run_dir / "diagnose.json").read_text())
    assert saved["split"] == "valid" and saved["settings"]["num_prompts"] == 4
    assert (
        saved["kl"]["student"]["n"] == 8
        and saved["kl"]["teacher"]["n"] == 8
        and saved["kl"]["gold"]["n"] == 4
    )
    assert saved["kl"]["student"]["reverse_kl"] > 0 and saved["kl"]["teacher"]["forward_kl"] > 0
    assert saved["copying"]["counts"]["student_checked"] == 8
    assert set(saved["per_category"]) and all("invalid_examples" in c for c in saved["per_category"].values())
    assert (run_dir / "diagnose.md").read_text().startswith("# Divergence probe")


def test_smoke_diagnose_writes_json_and_markdown(compose, tmp_path, capsys):
    from minillm.diagnose import run_diagnose

    run_dir = tmp_path / "diag"
    cfg = compose([*TINY, f"cache_dir={tmp_path / 'cache'}", *SMOKE], run_dir=run_dir, config_name="diagnose")
    result = run_diagnose(cfg)
    check_smoke_files(run_dir)
    assert (
        result["kl"]["student"]["reverse_kl"]
        == json.loads((run_dir / "diagnose.json").read_text())["kl"]["student"]["reverse_kl"]
    )
    out = capsys.readouterr().out
    assert "| student |" in out and "student invalid copied from the teacher" in out


@pytest.mark.slow  # a fresh interpreter: about half a minute on a busy 2-core machine
def test_smoke_diagnose_command(tmp_path):
    run_dir = tmp_path / "diag"
    overrides = [*TINY, f"cache_dir={tmp_path / 'cache'}", *SMOKE, f"hydra.run.dir={run_dir}"]
    out = subprocess.run(
        [sys.executable, "-m", "minillm.diagnose", *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    check_smoke_files(run_dir)
    assert "| student |" in out.stdout


def test_diagnose_student_without_a_path_is_refused(compose, tmp_path):
    from minillm.diagnose import run_diagnose

    cfg = compose([*TINY, f"cache_dir={tmp_path / 'cache'}"], config_name="diagnose")
    with pytest.raises(MinillmError, match="diagnose.path: diagnose.model=student needs the trained student"):
        run_diagnose(cfg)
