"""The evaluation suite: each metric against values worked out by hand, the command end to end, compare."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from minillm.data.datasets import Example
from minillm.data.template import PromptTemplate
from minillm.errors import MinillmError
from minillm.evaluation.calibration import (
    calibration_metrics,
    label_phrasings,
    read_labelled_jsonl,
    score_labels,
    substitute_label,
)
from minillm.evaluation.exposure import StepErrorTotals, exaccerr_curve, exposure_bias, step_errors
from minillm.evaluation.generation import no_repeat_ngram_processor
from minillm.evaluation.metrics import (
    bucket_names,
    distinct_n,
    expected_calibration_error,
    length_bucket,
    reliability_bins,
    rouge_l,
)
from minillm.rollout.options import SamplingOptions
from minillm.rollout.sampler import generate

VOCAB, PAD, EOS = 60, 0, 1
TINY = ["student=tiny_llama", "teacher=tiny_random", "debug=smoke", "tokenizer.vocab_size=400"]


def tiny_llama(seed: int, vocab: int = VOCAB) -> nn.Module:
    """A 1-layer Llama, hidden 32; the large init scale makes its distributions far from uniform."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        initializer_range=0.3,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    return LlamaForCausalLM(cfg).eval()


def prompts(n: int = 3) -> list[Example]:
    g = torch.Generator().manual_seed(0)
    return [Example(torch.randint(2, VOCAB, (3 + i,), generator=g).tolist(), [EOS], i) for i in range(n)]


# --------------------------------------------------------------------------- text metrics


def test_distinct4_by_hand():
    texts = ["The cat sat on the mat", "the cat sat on a hat", "hi there"]
    # 4-grams: (the cat sat on) ×2, (cat sat on the), (sat on the mat), (cat sat on a), (sat on a hat):
    # 5 distinct of 6; "hi there" has none, and n-grams never cross two responses.
    assert distinct_n(texts, 4) == pytest.approx(100 * 5 / 6)
    assert distinct_n(["a b c d", "a b c d"], 4) == pytest.approx(50.0)
    assert distinct_n(["too short"], 4) is None


def test_rouge_l_takes_the_max_over_references():
    single = rouge_l("the cat sat on the mat", "a dog ran in the park")
    both = rouge_l("the cat sat on the mat", ["a dog ran in the park", "the cat sat on the mat"])
    assert single < 50.0
    assert both == pytest.approx(100.0)


def test_length_bucket_boundaries():
    assert [length_bucket(n) for n in (0, 5, 6, 10, 11, 200)] == ["0-5", "0-5", "6-10", "6-10", "11+", "11+"]
    assert bucket_names() == ["0-5", "6-10", "11+"]
    assert length_bucket(3, (2,)) == "3+"


def test_ece_by_hand():
    conf = [0.9, 0.8, 0.6, 0.55]
    correct = [1, 0, 1, 0]
    # bins (0.8,0.9]: acc 1 conf .9; (0.7,0.8]: acc 0 conf .8; (0.5,0.6]: acc .5 conf .575
    expected = 0.25 * 0.1 + 0.25 * 0.8 + 0.5 * abs(0.5 - 0.575)
    assert expected_calibration_error(conf, correct) == pytest.approx(expected)  # 0.2625
    bins = reliability_bins(conf, correct)
    assert [b["n"] for b in bins] == [0, 0, 0, 0, 0, 2, 0, 1, 1, 0]
    assert reliability_bins([0.3], [1])[2]["n"] == 1  # right-closed: 0.3 lies in (0.2, 0.3]
    assert expected_calibration_error([1.0, 1.0], [1, 1]) == 0.0
    assert expected_calibration_error([], []) is None


# --------------------------------------------------------------------------- exposure bias


def test_exaccerr_curve_by_hand():
    student, teacher = StepErrorTotals(4), StepErrorTotals(4)
    student.add(torch.tensor([[1.0, 1.0, 0.0], [1.0, 3.0, 2.0]]), torch.tensor([[1, 1, 0], [1, 1, 1]]))
    teacher.add(torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]), torch.tensor([[1, 1, 1], [1, 1, 0]]))
    # student means per step 1, 2, 2 (step 3: one live row) → R = 1, 3, 5; teacher 1, 1, 1 → E = 1, 2, 3
    curve = exaccerr_curve(student, teacher, min_alive=0.5)
    assert curve["steps"] == [1, 2, 3]  # step 4: no row alive in either set
    assert curve["regret"] == pytest.approx([1, 3, 5])
    assert curve["teacher_error"] == pytest.approx([1, 2, 3])
    assert curve["exaccerr"] == pytest.approx([0.0, 50.0, 200 / 3])
    assert curve["student_rows"] == [2, 2, 1] and curve["teacher_rows"] == [2, 2, 1]
    assert curve["exaccerr_mean"] == pytest.approx((0 + 50 + 200 / 3) / 3)
    strict = exaccerr_curve(student, teacher, min_alive=0.75)  # needs 2 live rows: steps 1-2 only
    assert strict["reliable_steps"] == 2
    assert strict["exaccerr_mean"] == pytest.approx(25.0) and strict["exaccerr_final"] == pytest.approx(50.0)


def test_step_error_matches_a_hand_computation():
    student, teacher = tiny_llama(0), tiny_llama(1)
    examples = prompts(3)
    from minillm.data.datasets import collate_prompts

    batch = collate_prompts(examples, PAD)
    rollout = generate(
        student,
        batch["input_ids"],
        batch["attention_mask"],
        SamplingOptions(max_new_tokens=5, eos_token_id=EOS, pad_token_id=PAD),
        generator=torch.Generator().manual_seed(0),
    )
    errors = step_errors(student, teacher, rollout)
    for b, e in enumerate(examples):
        for t in range(rollout.response_ids.shape[1]):
            if not rollout.response_mask[b, t]:
                assert errors[b, t] == 0.0
                continue
            prefix = torch.tensor([e.prompt_ids + rollout.response_ids[b, :t].tolist()])
            with torch.no_grad():
                p = torch.softmax(teacher(input_ids=prefix).logits[0, -1].double(), -1)
                q = torch.softmax(student(input_ids=prefix).logits[0, -1].double(), -1)
            by_hand = float((p * (p / q).log()).sum())  # ε_l = Σ_v p log(p / q)
            assert float(errors[b, t]) == pytest.approx(by_hand, abs=1e-5)


@pytest.mark.parametrize("same_object", [True, False])
def test_exaccerr_is_zero_when_the_student_is_the_teacher(same_object):
    teacher = tiny_llama(0)
    student = teacher if same_object else copy.deepcopy(teacher)
    out = exposure_bias(
        student, teacher, prompts(2), pad_token_id=PAD, eos_token_id=EOS, samples_per_prompt=3,
        max_new_tokens=6, batch_size=4,
    )  # fmt: skip
    assert out["steps"] and all(v == 0.0 for v in out["exaccerr"])
    assert out["exaccerr_mean"] == 0.0
    assert out["student_rows"][0] == 6 and out["teacher_rows"][0] == 6


# --------------------------------------------------------------------------- generation option


def test_no_repeat_ngram_processor_bans_the_repeating_token():
    process = no_repeat_ngram_processor(2)
    out = process(torch.tensor([[5, 6, 5]]), torch.zeros(1, 10))
    assert out[0, 6] == float("-inf") and torch.isfinite(out[0, [i for i in range(10) if i != 6]]).all()
    assert torch.equal(process(torch.tensor([[5]]), torch.zeros(1, 10)), torch.zeros(1, 10))
    rollout = generate(
        tiny_llama(2),
        torch.tensor([[3, 4, 5]] * 4),
        torch.ones(4, 3, dtype=torch.long),
        SamplingOptions(max_new_tokens=12, eos_token_id=None, pad_token_id=PAD),
        generator=torch.Generator().manual_seed(0),
        logits_processor=no_repeat_ngram_processor(1),
    )
    for row in rollout.response_ids.tolist():
        assert len(set(row)) == len(row)
    with pytest.raises(MinillmError, match="no_repeat_ngram_size"):
        no_repeat_ngram_processor(0)


# --------------------------------------------------------------------------- calibration


def test_label_substitution_keeps_the_answer_form():
    assert substitute_label("It is a fruit.", "fruit", "animal") == "It is an animal."
    assert substitute_label("Fruit.", "fruit", "vegetable") == "Vegetable."
    assert substitute_label("An apple is a fruit.", "fruit", "tool") == "An apple is a tool."
    assert substitute_label("Paris is in France.", "France", "Spain") == "Paris is in Spain."
    assert substitute_label("No label here.", "fruit", "tool") is None
    item = {"labels": ["a", "b"], "label": "a", "answers": []}
    assert label_phrasings(item) == {"a": ["a"], "b": ["b"]}


class RiggedLM(nn.Module):
    """Every position adds +4 to the logits of ``favoured`` token ids: it prefers texts made of them."""

    def __init__(self, vocab: int, favoured: set[int]):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(vocab))
        with torch.no_grad():
            self.bias[list(favoured)] = 4.0

    def forward(self, input_ids, attention_mask=None, **kwargs):
        return SimpleNamespace(logits=self.bias.expand(*input_ids.shape, -1))


def test_label_scoring_picks_the_label_the_model_prefers(tiny_tokenizer):
    tok = tiny_tokenizer
    answers = ["Vegetable.", "It is a vegetable.", "The answer is vegetable."]
    items = [
        {"instruction": "Is a carrot a flower or a vegetable?", "context": "", "labels": ["flower", "vegetable"],
         "label": "vegetable", "answers": answers},
        {"instruction": "Is a rose a flower or a vegetable?", "context": "", "labels": ["flower", "vegetable"],
         "label": "flower", "answers": [a.replace("vegetable", "flower").replace("Vegetable", "Flower")
                                         for a in answers]},
    ]  # fmt: skip
    phrasings = label_phrasings(items[0])
    veg = {t for s in phrasings["vegetable"] for t in tok(s, add_special_tokens=False)["input_ids"]}
    flower = {t for s in phrasings["flower"] for t in tok(s, add_special_tokens=False)["input_ids"]}
    model = RiggedLM(len(tok), veg - flower)
    scored = score_labels(model, tok, items, PromptTemplate.from_name("short"))
    assert [s["prediction"] for s in scored] == ["vegetable", "vegetable"]
    assert scored[0]["correct"] and not scored[1]["correct"]
    assert scored[0]["confidence"] > 0.9 and sum(scored[0]["probs"]) == pytest.approx(1.0)
    summary = calibration_metrics(scored)
    assert summary["accuracy"] == pytest.approx(50.0)
    conf = scored[0]["confidence"]  # both records in one bin, confidence c, accuracy 1/2
    assert summary["ece"] == pytest.approx(abs(0.5 - conf), abs=1e-6)


def test_labelled_jsonl_errors_name_file_and_line(tmp_path):
    path = tmp_path / "cal.jsonl"
    path.write_text(
        json.dumps({"instruction": "x?", "label": "yes", "labels": ["yes", "no"]})
        + "\n"
        + json.dumps({"instruction": "y?", "label": "maybe", "labels": ["yes", "no"]})
        + "\n"
    )
    with pytest.raises(MinillmError, match=f"{path}:2: 'label' must be one of"):
        read_labelled_jsonl(path)


# --------------------------------------------------------------------------- the command and compare


def test_evaluate_config_reuses_the_root_tree(compose, tmp_path):
    cfg = compose([*TINY, f"cache_dir={tmp_path / 'cache'}"], config_name="evaluate")
    assert list(cfg.eval.seeds) == [0, 1, 2, 3, 4]
    assert cfg.eval.num_samples == 8 and cfg.evaluate.exposure.max_new_tokens == 16  # debug=smoke applies
    assert cfg.student.name == "tiny-llama-student" and cfg.run_name == "eval-student-s0"


def test_smoke_evaluation_writes_results_summary_and_figures(compose, tmp_path):
    from minillm.evaluation.suite import run_evaluation

    run_dir = tmp_path / "eval"
    cfg = compose(
        [*TINY, f"cache_dir={tmp_path / 'cache'}", "logger=csv", "evaluate.model=init", "eval.seeds=[0,1]",
         "evaluate.exposure.num_prompts=3", "evaluate.exposure.samples_per_prompt=2"],
        run_dir=run_dir,
        config_name="evaluate",
    )  # fmt: skip
    results = run_evaluation(cfg)
    saved = json.loads((run_dir / "results.json").read_text())
    m = saved["eval"]["init"]["test"]
    for key in ("rougeL", "rougeL_std", "exact_match", "valid_rate", "distinct4", "loss", "exaccerr"):
        assert m[key] is not None, key
    assert math.isclose(m["loss"], math.log(400), rel_tol=0.1)  # a random model: about uniform
    assert set(m["by_length"]) == {"0-5", "6-10", "11+"} and sum(b["n"] for b in m["by_length"].values()) == 8
    assert saved["exposure"]["student_rows"][0] == 6
    for name in ("summary.md", "exaccerr.png", "exaccerr.csv", "csv/metrics.csv"):
        assert (run_dir / name).is_file(), name
    if saved["calibration"]["test"].get("n"):  # the smoke test split may hold no classification record
        assert (run_dir / "reliability_test.png").is_file() and m["ece"] is not None
    assert "| init |" in (run_dir / "summary.md").read_text()
    assert results["test/rougeL"] == m["rougeL"]


def test_evaluate_resolves_trainer_precision_auto_as_a_run_does(compose, tmp_path, monkeypatch, caplog):
    """``python -m minillm.evaluate trainer.precision=auto`` measures and logs its choice (it evaluated in fp32
    silently, leaving auto in its config)."""
    from minillm.evaluation.suite import run_evaluation
    from minillm.training import precision

    monkeypatch.setattr(precision, "bf16_supported", lambda device: True)
    monkeypatch.setattr(precision, "measure", lambda model, device: (1.0, 0.5, 3))
    cfg = compose(
        [*TINY, f"cache_dir={tmp_path / 'cache'}", "logger=csv", "evaluate.model=init", "eval.seeds=[0]",
         "evaluate.metrics=[rouge]", "trainer.precision=auto"],
        run_dir=tmp_path / "eval",
        config_name="evaluate",
    )  # fmt: skip
    with caplog.at_level("INFO", logger=precision.__name__):
        run_evaluation(cfg)
    assert cfg.trainer.precision == "bf16-mixed"
    assert any(
        r.getMessage().startswith("trainer.precision=auto: bf16-mixed on cpu (") for r in caplog.records
    )


def test_evaluate_loads_a_run_checkpoint_and_needs_a_path_for_the_student(compose, tmp_path, tiny_tokenizer):
    from minillm.evaluation.loading import load_evaluated_model

    run = tmp_path / "some-run"
    model = tiny_llama(3, vocab=len(tiny_tokenizer))
    model.save_pretrained(run / "best_model")
    tiny_tokenizer.save_pretrained(run / "best_model")
    trained = {f"student.{k}": v + 0.5 for k, v in model.state_dict().items()}
    (run / "checkpoints").mkdir()
    torch.save({"state_dict": trained}, run / "checkpoints" / "last.ckpt")
    records = {"test": []}
    overrides = [*TINY, f"cache_dir={tmp_path / 'cache'}"]
    cfg = compose([*overrides, f"evaluate.path={run / 'checkpoints' / 'last.ckpt'}"], config_name="evaluate")
    loaded, tok, source = load_evaluated_model(cfg, records)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, trained[f"student.{k}"]), k
    assert len(tok) == len(tiny_tokenizer) and source.endswith("last.ckpt")
    cfg = compose([*overrides, f"evaluate.path={run}"], config_name="evaluate")
    loaded, _, source = load_evaluated_model(cfg, records)  # a run directory → its best_model/
    assert source.endswith("best_model") and torch.equal(
        loaded.state_dict()["lm_head.weight"], model.state_dict()["lm_head.weight"]
    )
    with pytest.raises(MinillmError, match="evaluate.path: evaluate.model=student needs"):
        load_evaluated_model(compose(overrides, config_name="evaluate"), records)


def _results(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_compare_two_results_files(tmp_path, capsys):
    from minillm.compare import main

    run = _results(  # minillm.run layout: eval → model → split → metrics
        tmp_path / "sft" / "results.json",
        {"config": {"run_name": "sft-s0"}, "eval": {
            "teacher": {"test": {"rougeL": 30.0, "rougeL_std": 0.5, "seeds": [0, 1], "valid_rate": 80.0}},
            "trained student": {"test": {"rougeL": 25.25, "rougeL_std": 0.25, "seeds": [0, 1], "length": 9.0}},
        }},
    )  # fmt: skip
    ev = _results(
        tmp_path / "ev" / "results.json",
        {"config": {"run_name": "eval-student-s0"}, "eval": {"student": {"test": {
            "rougeL": 27.0, "rougeL_std": 0.1, "seeds": [0], "ece": 0.0421, "exaccerr": 12.0, "distinct4": 95.5,
        }}}},
    )  # fmt: skip
    out = tmp_path / "table.md"
    assert main([str(run.parent), str(ev), "--out", str(out)]) is None  # a console script's exit status
    table = out.read_text().strip()
    assert capsys.readouterr().out.strip() == table
    lines = table.splitlines()
    assert lines[0] == "| model | Rouge-L | valid % | ExAccErr % | ECE | Dist-4 | length |"
    assert lines[2] == "| sft-s0: teacher | 30.0 ± 0.5 | 80.0 | – | – | – | – |"
    assert lines[3].startswith("| sft-s0: trained student | 25.2 ± 0.2 |")
    assert lines[4] == "| eval-student-s0: student | 27.0 | – | 12.0 | 0.042 | 95.5 | – |"
    with pytest.raises(SystemExit) as err:
        main([str(tmp_path / "missing")])
    assert err.value.code == 2


# --------------------------------------------------------------------------- per-prompt scores, intervals


def test_evaluate_model_keeps_per_prompt_scores_and_intervals(monkeypatch):
    """Fixed samples for two seeds (the sampler is the only thing replaced): the per-prompt validity is the
    mean over seeds in example order, None without a checker; its mean is valid_rate; the bootstrap over
    the two checked prompts (100 and 50) can only give means 50, 75, 100, each end with chance >= 1/4."""
    from minillm.evaluation.sampled import EvaluationOptions, evaluate_model

    texts = {0: ["yes", "no", "anything"], 1: ["yes", "yes", "else"]}
    monkeypatch.setattr(
        "minillm.evaluation.sampled.sample_responses",
        lambda model, tok, examples, sampling, *, seed, **kwargs: (texts[seed], [2, 2, 2]),
    )
    exact = {"type": "exact", "answers": ["yes"]}
    records = [
        {"instruction": f"q{i}", "response": ref, "check": check, "category": "qa"}
        for i, (ref, check) in enumerate([("yes", exact), ("yes please", exact), ("anything goes", None)])
    ]
    examples = [Example([5, 6], [7, EOS], i) for i in range(3)]
    tok = SimpleNamespace(eos_token_id=EOS, pad_token_id=PAD)
    options = EvaluationOptions(
        SamplingOptions(max_new_tokens=128, eos_token_id=EOS, pad_token_id=PAD), seeds=(0, 1)
    )
    res = evaluate_model(nn.Linear(1, 1), tok, examples, records, options, progress=False)
    assert res["valid_per_prompt"] == [100.0, 50.0, None]
    assert res["valid_rate"] == pytest.approx(75.0)  # seed 0: 50, seed 1: 100
    assert res["valid_rate_ci95"] == [50.0, 100.0]
    by_hand = [
        (rouge_l("yes", "yes") + rouge_l("yes", "yes")) / 2,
        (rouge_l("no", "yes please") + rouge_l("yes", "yes please")) / 2,
        (rouge_l("anything", "anything goes") + rouge_l("else", "anything goes")) / 2,
    ]
    assert res["rougeL_per_prompt"] == pytest.approx(by_hand)
    assert res["rougeL"] == pytest.approx(sum(by_hand) / 3)
    lo, hi = res["rougeL_ci95"]
    assert min(by_hand) <= lo <= res["rougeL"] <= hi <= max(by_hand)


def test_evaluation_cache_hits_only_for_the_same_weights_prompts_and_settings(tmp_path, monkeypatch):
    """With a cache_dir the second identical call samples nothing and returns the first result; other
    weights or another setting sample again. The key of the default settings is the one minillm.run
    wrote before the options no_repeat_ngram_size / length_edges / keep_samples were part of it."""
    import hashlib

    from minillm.evaluation import sampled
    from minillm.models.loading import weights_digest

    seeds_sampled = []

    def fake(model, tok, examples, sampling, *, seed, **kwargs):
        seeds_sampled.append(seed)
        return ["yes"] * len(examples), [2] * len(examples)

    monkeypatch.setattr(sampled, "sample_responses", fake)
    records = [{"instruction": "q", "response": "yes", "check": {"type": "exact", "answers": ["yes"]}}] * 2
    examples = [Example([5, 6], [7, EOS], i) for i in range(2)]
    tok, model = SimpleNamespace(eos_token_id=EOS, pad_token_id=PAD), nn.Linear(1, 1)
    settings = dict(seeds=(0, 1), batch_size=4, max_new_tokens=8, temperature=1.0, top_k=0, top_p=1.0)
    sampling = SamplingOptions(max_new_tokens=8, eos_token_id=EOS, pad_token_id=PAD, temperature=1.0, top_k=0)
    options = sampled.EvaluationOptions(sampling, seeds=(0, 1), batch_size=4)

    def run(m=model, **changed):
        opts = dataclasses.replace(options, **changed)
        return sampled.evaluate_model(m, tok, examples, records, opts, progress=False, cache_dir=tmp_path)

    first = run()
    assert seeds_sampled == [0, 1] and first["valid_rate"] == 100.0
    key = json.dumps([weights_digest(model), [[5, 6]] * 2, ["yes"] * 2, settings], default=str)
    (entry,) = (tmp_path / "eval").glob("*.json")
    assert entry.name == f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.json"
    assert run() == first and seeds_sampled == [0, 1]  # reused, seconds included
    run(seeds=(0,))
    run(no_repeat_ngram_size=2)
    other = nn.Linear(1, 1)
    with torch.no_grad():
        other.weight.fill_(3.0)
    run(m=other)
    assert seeds_sampled == [0, 1, 0, 0, 1, 0, 1] and len(list((tmp_path / "eval").glob("*.json"))) == 4
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a bf16-mixed run's evaluation: an entry of its own
        run()
        assert seeds_sampled[-2:] == [0, 1] and len(list((tmp_path / "eval").glob("*.json"))) == 5
        assert run() is not None and len(seeds_sampled) == 9  # and reused under the same autocast


def test_fixed_model_evaluations_are_cached_across_run_and_evaluate(compose, tmp_path, monkeypatch):
    """minillm.run's teacher row and `minillm.evaluate evaluate.model=teacher` share one cache entry: the
    evaluation is sampled once. A student init built from an arch (not a fixed file) is never cached."""
    from minillm.data.datamodule import InstructionDataModule, load_records
    from minillm.evaluation import sampled
    from minillm.evaluation.sampled import evaluate_splits
    from minillm.evaluation.suite import run_evaluation
    from minillm.models.loading import load_model
    from minillm.models.tokenizers import resolve_tokenizer

    real, seeds_sampled = sampled.sample_responses, []

    def spy(*args, seed, **kwargs):
        seeds_sampled.append(seed)
        return real(*args, seed=seed, **kwargs)

    monkeypatch.setattr(sampled, "sample_responses", spy)  # called through: the spy only records
    overrides = [*TINY, f"cache_dir={tmp_path / 'cache'}", "logger=none", "evaluate.metrics=[rouge]",
                 "eval.seeds=[0,1]"]  # fmt: skip
    cfg = compose([*overrides, "evaluate.model=teacher"], run_dir=tmp_path / "a", config_name="evaluate")
    first = run_evaluation(cfg)["eval"]["teacher"]["test"]
    assert seeds_sampled == [0, 1]
    again = compose([*overrides, "evaluate.model=teacher"], run_dir=tmp_path / "b", config_name="evaluate")
    assert run_evaluation(again)["eval"]["teacher"]["test"] == first and seeds_sampled == [0, 1]

    records = load_records(cfg.data, cfg.cache_dir)
    tokenizer = resolve_tokenizer(cfg, records)
    dm = InstructionDataModule(cfg.data, tokenizer, records, seed=cfg.seed)
    teacher = load_model(  # as minillm.run builds it
        cfg.teacher,
        key="teacher",
        vocab_size=len(tokenizer),
        eos_token_id=tokenizer.eos_token_id,
        seed=cfg.seed + 1,
    )
    row = evaluate_splits(cfg, teacher, tokenizer, dm, "teacher", cache=True)["test"]
    assert seeds_sampled == [0, 1]
    assert {k: v for k, v in row.items() if k != "seconds"} == first

    for where in ("c", "d"):
        run_evaluation(
            compose([*overrides, "evaluate.model=init"], run_dir=tmp_path / where, config_name="evaluate")
        )
    assert seeds_sampled == [0, 1, 0, 1, 0, 1]


# --------------------------------------------------------------------------- training callbacks


def test_behaviour_callback_logs_on_every_nth_validation(compose, tmp_path, tiny_tokenizer, monkeypatch):
    from minillm.data.datamodule import InstructionDataModule, load_records
    from minillm.evaluation.callbacks import BehaviourMetricsCallback, SampledValidation, make_eval_callbacks

    overrides = [*TINY, f"cache_dir={tmp_path / 'cache'}", "eval.callbacks.n_prompts=2",
                 "eval.callbacks.max_new_tokens=16", "eval.callbacks.n_calibration=4"]  # fmt: skip
    cfg = compose(overrides)
    records = load_records(cfg.data, cfg.cache_dir)
    dm = InstructionDataModule(cfg.data, tiny_tokenizer, records)
    # off by default: only the sampled validation metrics (val/rougeL, ...)
    assert [type(c) for c in make_eval_callbacks(cfg, dm, tiny_tokenizer, None)] == [SampledValidation]
    cfg = compose([*overrides, "eval.callbacks.enabled=true", "eval.callbacks.every_n_val=2"])
    records["valid"] = (
        records["valid"] + [r for r in records["train"] if r["category"] == "classification"][:2]
    )
    dm = InstructionDataModule(cfg.data, tiny_tokenizer, records)
    student, teacher = tiny_llama(4, len(tiny_tokenizer)), tiny_llama(5, len(tiny_tokenizer))
    # A random model writes byte soup with no 4 words in a row; fix the samples to check the wiring.
    sampled = (["a b c d e", "a b c d f"], [5, 5])
    monkeypatch.setattr("minillm.evaluation.callbacks.sample_responses", lambda *args, **kwargs: sampled)
    callback, last = make_eval_callbacks(cfg, dm, tiny_tokenizer, teacher)
    assert isinstance(callback, BehaviourMetricsCallback) and isinstance(last, SampledValidation)
    logged: list[dict] = []
    module = SimpleNamespace(student=student, device=torch.device("cpu"))
    trainer = SimpleNamespace(sanity_checking=False)
    for _ in range(3):
        logs: dict = {}
        module.log = lambda name, value, logs=logs: logs.__setitem__(name, value)
        callback.on_validation_epoch_end(trainer, module)
        logged.append(logs)
    assert set(logged[0]) == {"val/exaccerr", "val/ece", "val/label_acc", "val/distinct4"}
    assert logged[0]["val/distinct4"] == pytest.approx(75.0)  # 3 distinct of 4 4-grams
    assert logged[1] == {} and set(logged[2]) == set(logged[0])
    assert logged[0] == logged[2]  # same weights, same fixed subset and seed: the same numbers
    assert callback.state_dict() == {"val_runs": 3}


def test_an_empty_metric_list_is_refused(compose):
    from minillm.evaluation.evaluate_config import validate_evaluate_config

    with pytest.raises(MinillmError, match=r"^evaluate\.metrics=\[\]: name at least one of \["):
        validate_evaluate_config(compose(["evaluate.metrics=[]"], config_name="evaluate"))


def test_an_evaluation_names_its_loss_by_the_split_and_counts_the_prompts_it_used(compose, tmp_path, caplog):
    """evaluate.split=valid: the loss is the valid split's (key and header), and eval.num_samples above the
    split's size reports the prompts evaluated, with one line saying the request was capped."""
    from minillm.evaluation.suite import run_evaluation

    run_dir = tmp_path / "eval"
    cfg = compose(
        [*TINY, f"cache_dir={tmp_path / 'cache'}", "logger=none", "evaluate.model=init", "evaluate.split=valid",
         "eval.num_samples=1000", "eval.seeds=[0]", "evaluate.metrics=[rouge,loss]"],
        run_dir=run_dir,
        config_name="evaluate",
    )  # fmt: skip
    with caplog.at_level("WARNING"):
        results = run_evaluation(cfg)
    m = results["eval"]["init"]["valid"]
    assert 0 < m["n"] < 1000 and results["valid/loss"] == m["loss"] and "valid/test_loss" not in results
    summary = (run_dir / "summary.md").read_text()
    assert f"{m['n']} prompts" in summary and "1000" not in summary
    assert "| valid loss |" in summary and "test loss" not in summary
    capped = [r.getMessage() for r in caplog.records if "eval.num_samples=1000" in r.getMessage()]
    assert capped == [f"eval.num_samples=1000: the valid split has {m['n']} prompts (that fit "
                      f"data.max_prompt_len); evaluating those {m['n']}"]  # fmt: skip


def test_a_results_file_from_before_the_split_named_loss_still_shows_it():
    from minillm.evaluation.report import metric_table

    table = metric_table([("old", {"rougeL": 20.0, "test_loss": 2.5})], "test")
    assert table.splitlines()[0] == "| model | Rouge-L | test loss |" and "| 2.500 |" in table
    assert metric_table([("m", {"loss": 1.0})]).splitlines()[0] == "| model | LM loss |"
