"""The multirun report: grouping by run name without the seed, mean ± std, failed jobs listed."""

from __future__ import annotations

import json

import pytest

from minillm.errors import MinillmError
from minillm.report import report_markdown


def write_run(folder, name, rouge, valid, seconds):
    folder.mkdir(parents=True)
    (folder / ".hydra").mkdir()
    student = {
        "test": {"rougeL": rouge, "exact_match": 0.0, "valid_rate": valid, "distinct4": 0.5, "length": 9.0}
    }
    (folder / "results.json").write_text(
        json.dumps(
            {
                "config": {"run_name": name},
                "train_seconds": seconds,
                "global_step": 100,
                "eval": {"trained student": student},
            }
        )
    )


def test_groups_seeds_and_lists_failures(tmp_path):
    write_run(tmp_path / "0", "sft-s0", 40.0, 10.0, 60)
    write_run(tmp_path / "1", "sft-s1", 44.0, 14.0, 62)
    write_run(tmp_path / "2", "reverse_kld-s0", 50.0, 20.0, 61)
    (tmp_path / "3" / ".hydra").mkdir(parents=True)  # a job that died before writing results
    text = report_markdown(tmp_path)
    sft = next(line for line in text.splitlines() if line.startswith("| sft |"))
    assert "| 2 |" in sft and "42.0 ± 2.8" in sft and "12.0 ± 2.8" in sft
    assert "| reverse_kld | 1 | 50.0 |" in text
    assert "- 3 (no results: still running, killed, or stopped to resume)" in text


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(MinillmError, match="no results.json"):
        report_markdown(tmp_path)
