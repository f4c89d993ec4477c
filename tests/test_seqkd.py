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
