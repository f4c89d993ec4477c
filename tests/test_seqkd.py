"""SeqKD's cache of teacher samples is reused only while its provenance matches."""

from __future__ import annotations

import json

from minillm.data.seqkd import read_cache


def write_cache(path, provenance, responses):
    with path.open("w") as handle:
        handle.write(json.dumps({"provenance": provenance}) + "\n")
        for i, r in enumerate(responses):
            handle.write(json.dumps({"index": i, "response": r}) + "\n")


def test_cache_reused_only_when_provenance_matches(tmp_path):
    prov = {"teacher": "t", "teacher_weights": "abc", "seed": 0, "temperature": 1.0, "n_prompts": 2}
    path = tmp_path / "c.jsonl"
    write_cache(path, prov, ["one", "two"])
    assert read_cache(path, prov) == ["one", "two"]
    assert read_cache(path, dict(prov, teacher_weights="other")) is None  # another teacher
    assert read_cache(path, dict(prov, seed=1)) is None  # another sampling seed
    assert read_cache(path, dict(prov, n_prompts=3)) is None  # truncated file
    assert read_cache(tmp_path / "missing.jsonl", prov) is None


def test_corrupt_cache_is_regenerated_not_trusted(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"provenance": {}}\n{"index": 0, "resp')
    assert read_cache(path, {"n_prompts": 1}) is None


def test_every_setting_that_changes_the_teacher_samples_is_in_the_cache_key():
    """Two arms that differ only in how the teacher samples must not share a cache (the batch size was missing:
    batches share one random stream, so another batch size draws other samples)."""
    from types import SimpleNamespace

    import torch
    from omegaconf import OmegaConf

    from minillm.data.seqkd import provenance, teacher_sampling

    cfg = OmegaConf.create(
        {
            "teacher": {"path": "t"},
            "data": {"template": "plain", "max_prompt_len": 64},
            "objective": {"temperature": 1.0, "max_new_tokens": 8, "seed": 0, "batch_size": 4},
        }
    )
    record = {"instruction": "say hi", "context": ""}
    dm = SimpleNamespace(records={"train": [record]}, examples={"train": [object()]})
    teacher = torch.nn.Linear(2, 2)
    tokenizer = SimpleNamespace(eos_token_id=1, pad_token_id=0)

    def key(cfg):
        return provenance(cfg, teacher, dm, teacher_sampling(cfg, tokenizer))

    base = key(cfg)
    for name, value in [
        ("batch_size", 8),
        ("seed", 1),
        ("temperature", 0.7),
        ("max_new_tokens", 16),
        ("top_p", 0.95),
    ]:
        other = OmegaConf.merge(cfg, {"objective": {name: value}})
        assert key(other) != base, name
    assert key(OmegaConf.merge(cfg, {})) == base  # the same settings reuse it


def test_teacher_samples_use_the_objectives_nucleus_cut(tmp_path, monkeypatch):
    """objective.top_p (DistiLLM-2's option; absent elsewhere: 1) reaches the teacher's sampler."""
    from types import SimpleNamespace

    import torch
    from omegaconf import OmegaConf

    from minillm.data import seqkd

    calls = []

    def sample_responses(model, tokenizer, examples, sampling, **kwargs):
        calls.append(sampling)
        return ["a response"] * len(examples), [2] * len(examples)

    monkeypatch.setattr(seqkd, "sample_responses", sample_responses)
    record = {"instruction": "say hi", "context": ""}
    dm = SimpleNamespace(records={"train": [record]}, examples={"train": [SimpleNamespace(index=0)]})
    for top_p, expected in ((0.95, 0.95), (None, 1.0)):
        objective = {"temperature": 0.8, "max_new_tokens": 8, "seed": 0, "batch_size": 4}
        if top_p is not None:
            objective["top_p"] = top_p
        cfg = OmegaConf.create(
            {
                "cache_dir": str(tmp_path / "cache"),
                "teacher": {"path": "t"},
                "trainer": {"accelerator": "cpu"},
                "data": {"template": "plain", "max_prompt_len": 64},
                "objective": objective,
            }
        )
        tokenizer = SimpleNamespace(eos_token_id=1, pad_token_id=0)
        assert seqkd.teacher_samples(cfg, torch.nn.Linear(2, 2), tokenizer, dm) == ["a response"]
        assert calls[-1].top_p == expected and calls[-1].temperature == 0.8


def test_teacher_samples_under_mixed_precision_have_a_cache_key_of_their_own(tmp_path):
    """Under bf16 autocast (minillm.run wraps SeqKD's sampling in the run's precision) the teacher samples other
    tokens: the cache key records the autocast; in fp32 it has no such key, so the caches of old runs stay
    valid."""
    from types import SimpleNamespace

    import torch
    from omegaconf import OmegaConf

    from minillm.data.seqkd import provenance, teacher_sampling

    cfg = OmegaConf.create(
        {
            "teacher": {"path": "t"},
            "data": {"template": "plain", "max_prompt_len": 64},
            "objective": {"temperature": 1.0, "max_new_tokens": 8, "seed": 0, "batch_size": 4},
        }
    )
    dm = SimpleNamespace(
        records={"train": [{"instruction": "hi", "context": ""}]}, examples={"train": [object()]}
    )
    teacher, tokenizer = torch.nn.Linear(2, 2), SimpleNamespace(eos_token_id=1, pad_token_id=0)
    fp32 = provenance(cfg, teacher, dm, teacher_sampling(cfg, tokenizer), "cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = provenance(cfg, teacher, dm, teacher_sampling(cfg, tokenizer), "cpu")
    assert "autocast" not in fp32 and bf16 == {**fp32, "autocast": "torch.bfloat16"}


def test_run_samples_seqkd_teacher_responses_under_the_runs_precision(compose, monkeypatch, tmp_path):
    """minillm.run calls teacher_samples inside the run's autocast (bf16-mixed) and outside any in fp32."""
    import pytest
    import torch

    from minillm.data import seqkd
    from minillm.run import train
    from tests.test_smoke import smoke_overrides

    seen = []

    def spy(cfg, teacher, tokenizer, dm):
        seen.append(torch.is_autocast_enabled("cpu"))
        raise RuntimeError("stop here")

    monkeypatch.setattr(seqkd, "teacher_samples", spy)
    for precision, expected in (("bf16-mixed", True), ("32-true", False)):
        overrides = smoke_overrides(
            tmp_path, "objective=seqkd", f"trainer.precision={precision}", "eval.compare=false"
        )
        with pytest.raises(RuntimeError, match="stop here"):
            train(compose(overrides, tmp_path / precision))
        assert seen[-1] is expected, precision
