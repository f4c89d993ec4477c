"""Reading Dolly-format instruction data from JSONL, with errors that name the file and line.

A record is a dict with the canonical keys ``instruction``, ``context``, ``response``, ``category``
and, for the bundled data, ``check`` (a validity checker spec, see ``minillm.data.checkers``).
Both spellings of the reference are accepted: Dolly's ``context``/``response`` and the processed
copy's ``input``/``output``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from minillm.errors import MinillmError

SPLITS = ("train", "valid", "test")
_ALIASES = {"context": ("context", "input"), "response": ("response", "output")}


def normalise_record(raw: object, where: str) -> dict:
    """Map one parsed JSON object to the canonical keys; ``where`` is ``file:line`` for errors."""
    if not isinstance(raw, dict):
        raise MinillmError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    record = {k: v for k, v in raw.items() if k not in ("input", "output")}
    for key, spellings in _ALIASES.items():
        record[key] = next((raw[s] for s in spellings if raw.get(s) is not None), None)
    instruction = raw.get("instruction")
    if instruction is None:
        raise MinillmError(f"{where}: record has no 'instruction'")
    if not isinstance(instruction, str) or not instruction.strip():
        raise MinillmError(f"{where}: 'instruction' must be a non-empty string, got {instruction!r}")
    response = record["response"]
    if response is None:
        raise MinillmError(f"{where}: record has no 'response' (or 'output')")
    if not isinstance(response, str):
        raise MinillmError(f"{where}: 'response' must be a string, got {response!r}")
    record["instruction"] = instruction
    record["context"] = record["context"] if isinstance(record["context"], str) else ""
    record.setdefault("category", "")
    return record


def iter_jsonl(path: str | Path, *, missing: str | None = None):
    """Yield (``file:line``, parsed object) for each non-blank line of a JSONL file.

    A missing file or a malformed line is a one-line MinillmError naming the file (and line);
    ``missing`` replaces the default message for a missing file.
    """
    path = Path(path)
    if not path.is_file():
        raise MinillmError(missing or f"{path}: data file does not exist")
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise MinillmError(
                    f"{path}:{number}: not UTF-8 text ({err.reason} at byte {err.start})"
                ) from None
            if not line.strip():
                continue
            try:
                yield f"{path}:{number}", json.loads(line)
            except json.JSONDecodeError as err:
                raise MinillmError(f"{path}:{number}: malformed JSON ({err.msg})") from None


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a Dolly-format JSONL file; blank lines are skipped, anything malformed is a one-line error."""
    records = [normalise_record(raw, where) for where, raw in iter_jsonl(path)]
    if not records:
        raise MinillmError(f"{path}: data file is empty")
    return records


def load_splits(path: str | Path, *, valid_size: int, test_size: int, seed: int) -> dict[str, list[dict]]:
    """Load train/valid/test from a folder of ``{train,valid,test}.jsonl`` or split one JSONL file.

    A single file is shuffled with ``seed`` and cut into ``valid_size`` and ``test_size`` records, the
    rest being train, so the split is deterministic.
    """
    path = Path(path)
    if path.is_dir():
        missing = [s for s in SPLITS if not (path / f"{s}.jsonl").is_file()]
        if missing:
            raise MinillmError(f"{path}: data folder lacks {', '.join(m + '.jsonl' for m in missing)}")
        return {split: read_jsonl(path / f"{split}.jsonl") for split in SPLITS}
    records = read_jsonl(path)
    if valid_size + test_size >= len(records):
        raise MinillmError(
            f"{path}: {len(records)} records cannot make data.valid_size={valid_size} + "
            f"data.test_size={test_size} and a train split"
        )
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    shuffled = [records[i] for i in order]
    return {
        "valid": shuffled[:valid_size],
        "test": shuffled[valid_size : valid_size + test_size],
        "train": shuffled[valid_size + test_size :],
    }
