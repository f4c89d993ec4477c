"""Data reading, templates, tokenisation and masking."""

from __future__ import annotations

import json

import pytest

from minillm.data.datasets import (
    IGNORE_INDEX,
    collate_prompts,
    collate_sft,
    pretrain_blocks,
    tokenize_records,
)
from minillm.data.records import load_splits, read_jsonl
from minillm.data.template import PromptTemplate
from minillm.errors import MinillmError


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_both_field_spellings_with_and_without_context(tmp_path):
    path = write_lines(
        tmp_path / "d.jsonl",
        [
            json.dumps({"instruction": "Say hi.", "context": "", "response": "Hi.", "category": "open_qa"}),
            json.dumps({"instruction": "Sum up.", "input": "A long text.", "output": "Short."}),
            "",
            json.dumps({"instruction": "Name it.", "context": "It is Bob.", "response": "Bob."}),
        ],
    )
    records = read_jsonl(path)
    assert [r["response"] for r in records] == ["Hi.", "Short.", "Bob."]
    assert [r["context"] for r in records] == ["", "A long text.", "It is Bob."]
    assert records[0]["category"] == "open_qa" and records[1]["category"] == ""


def test_alpaca_template_matches_reference():
    alpaca = PromptTemplate.from_name("alpaca")
    plain = alpaca.format({"instruction": "Say hi.", "context": ""})
    assert plain == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nSay hi.\n\n### Response:\n"
    )
    with_ctx = alpaca.format({"instruction": "Sum up.", "context": "Text."})
    assert with_ctx.startswith("Below is an instruction that describes a task, paired with an input")
    assert with_ctx.endswith("### Instruction:\nSum up.\n\n### Input:\nText.\n\n### Response:\n")
    short = PromptTemplate.from_name("short").format({"instruction": "Say hi.", "context": ""})
    assert short == "### Instruction:\nSay hi.\n\n### Response:\n"
    with pytest.raises(MinillmError, match="data.template"):
        PromptTemplate.from_name("chatml")


@pytest.mark.parametrize(
    "lines, message",
    [
        (
            ['{"instruction": "a", "response": "b"}', '{"instruction": "a", "response": '],
            r"d\.jsonl:2: malformed JSON",
        ),
        (['{"response": "b"}'], r"d\.jsonl:1: record has no 'instruction'"),
        (['{"instruction": "a"}'], r"d\.jsonl:1: record has no 'response'"),
        (
            ['{"instruction": 5, "response": "b"}'],
            r"d\.jsonl:1: 'instruction' must be a non-empty string, got 5",
        ),
        (['{"instruction": " ", "response": "b"}'], r"d\.jsonl:1: 'instruction' must be a non-empty string"),
        (['{"instruction": "a", "output": ["b"]}'], r"d\.jsonl:1: 'response' must be a string, got \['b'\]"),
        (["[1, 2]"], r"d\.jsonl:1: expected a JSON object"),
        ([""], r"d\.jsonl: data file is empty"),
    ],
)
def test_bad_files_name_file_and_line(tmp_path, lines, message):
    path = write_lines(tmp_path / "d.jsonl", lines)
    with pytest.raises(MinillmError, match=message):
        read_jsonl(path)


def test_a_line_that_is_not_utf8_is_named_in_one_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"instruction": "a", "response": "b"}\n{"instruction": "caf\xe9", "response": "b"}\n')
    with pytest.raises(
        MinillmError, match=r"d\.jsonl:2: not UTF-8 text \(invalid continuation byte at byte 20\)"
    ):
        read_jsonl(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(MinillmError, match="does not exist"):
        read_jsonl(tmp_path / "nope.jsonl")
    (tmp_path / "train.jsonl").write_text('{"instruction": "a", "response": "b"}\n')
    with pytest.raises(MinillmError, match="lacks valid.jsonl, test.jsonl"):
        load_splits(tmp_path, valid_size=0, test_size=0, seed=0)


def test_single_file_split_is_deterministic(tmp_path):
    lines = [json.dumps({"instruction": f"q{i}", "response": f"a{i}"}) for i in range(20)]
    path = write_lines(tmp_path / "d.jsonl", lines)
    a = load_splits(path, valid_size=3, test_size=2, seed=1)
    b = load_splits(path, valid_size=3, test_size=2, seed=1)
    assert [len(a[s]) for s in ("train", "valid", "test")] == [15, 3, 2]
    assert a == b
    assert {r["instruction"] for r in a["train"]}.isdisjoint(r["instruction"] for r in a["test"])
    with pytest.raises(MinillmError, match="data.valid_size=15"):
        load_splits(path, valid_size=15, test_size=5, seed=1)


def test_masking_prompt_out_eos_in(tiny_tokenizer):
    tok = tiny_tokenizer
    template = PromptTemplate.from_name("short")
    records = [
        {"instruction": "Name a color.", "context": "", "response": "Red."},
        {"instruction": "Sum up.", "context": "The sky is blue today.", "response": "Blue sky."},
    ]
    examples = tokenize_records(records, tok, template, max_prompt_len=256, max_response_len=64)
    batch = collate_sft(examples, tok.pad_token_id)
    for row, e in enumerate(examples):
        n_p, n_r = len(e.prompt_ids), len(e.response_ids)
        labels = batch["labels"][row]
        assert (labels[:n_p] == IGNORE_INDEX).all()  # prompt tokens never count
        assert labels[n_p : n_p + n_r].tolist() == e.response_ids
        assert e.response_ids[-1] == tok.eos_token_id  # EOS is trained on
        assert (labels[n_p + n_r :] == IGNORE_INDEX).all()
        assert batch["attention_mask"][row].sum() == n_p + n_r
        assert tok.decode(e.prompt_ids) == template.format(records[row])
        assert tok.decode(e.response_ids[:-1]) == records[row]["response"]


def test_long_prompts_are_dropped_and_counted(tiny_tokenizer, caplog):
    template = PromptTemplate.from_name("short")
    records = [
        {"instruction": "word " * 300, "context": "", "response": "x"},
        {"instruction": "Hi.", "context": "", "response": "Hello."},
    ]
    with caplog.at_level("WARNING"):
        examples = tokenize_records(records, tiny_tokenizer, template, max_prompt_len=64, max_response_len=8)
    assert [e.index for e in examples] == [1]
    assert "dropped 1 of 2 prompts longer than data.max_prompt_len=64" in caplog.text


def test_prompts_left_padded(tiny_tokenizer):
    template = PromptTemplate.from_name("short")
    records = [
        {"instruction": "A much longer instruction here.", "context": "", "response": "x"},
        {"instruction": "Hi.", "context": "", "response": "y"},
    ]
    examples = tokenize_records(records, tiny_tokenizer, template, max_prompt_len=64, max_response_len=8)
    batch = collate_prompts(examples, tiny_tokenizer.pad_token_id)
    short = examples[1].prompt_ids
    assert batch["input_ids"][1, -len(short) :].tolist() == short
    assert batch["attention_mask"][1, : -len(short)].sum() == 0
    assert batch["attention_mask"][0].all()


def test_pretrain_blocks_cross_document_boundaries(tiny_tokenizer):
    blocks = pretrain_blocks(["one two three four five", "six seven eight nine ten"], tiny_tokenizer, 4)
    assert blocks.shape[1] == 4 and blocks.shape[0] >= 2
    assert tiny_tokenizer.eos_token_id in blocks.view(-1).tolist()


def test_train_loader_tells_lightning_it_is_resumable(compose, tmp_path, tiny_tokenizer):
    """Lightning warns on every mid-epoch resume unless the train loader has state_dict/load_state_dict
    (its ``_Stateful`` check); the position itself is the sampler's, saved by the module."""
    from lightning.fabric.utilities.types import _Stateful

    from minillm.data.datamodule import InstructionDataModule, load_records

    cfg = compose(["debug=smoke", f"cache_dir={tmp_path / 'cache'}"])
    dm = InstructionDataModule(cfg.data, tiny_tokenizer, load_records(cfg.data, cfg.cache_dir))
    loader = dm.train_dataloader()
    assert isinstance(loader, _Stateful)
    assert loader.state_dict() == {} and dm.train_sampler.state_dict()["consumed"] == 0
