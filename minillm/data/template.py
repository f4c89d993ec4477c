"""Prompt templates: the reference's Alpaca format and a short one for the bundled data."""

from __future__ import annotations

from dataclasses import dataclass

from minillm.errors import MinillmError

ALPACA = {
    "no_context": (
        "Below is an instruction that describes a task. Write a response that appropriately completes "
        "the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
    ),
    "with_context": (
        "Below is an instruction that describes a task, paired with an input that provides further "
        "context. Write a response that appropriately completes the request.\n\n### Instruction:\n"
        "{instruction}\n\n### Input:\n{context}\n\n### Response:\n"
    ),
}
# The long preamble is about a third of all tokens on the short bundled records, so they use this.
SHORT = {
    "no_context": "### Instruction:\n{instruction}\n\n### Response:\n",
    "with_context": "### Instruction:\n{instruction}\n\n### Input:\n{context}\n\n### Response:\n",
}
PRESETS = {"alpaca": ALPACA, "short": SHORT}


@dataclass(frozen=True)
class PromptTemplate:
    """Formats a record's prompt; the response follows it directly and ends with EOS."""

    no_context: str
    with_context: str

    @classmethod
    def from_name(cls, name: str) -> PromptTemplate:
        if name not in PRESETS:
            raise MinillmError(f"data.template={name!r} is not a template; choose one of {sorted(PRESETS)}")
        return cls(**PRESETS[name])

    def format(self, record: dict) -> str:
        context = (record.get("context") or "").strip()
        if context:
            return self.with_context.format(instruction=record["instruction"].strip(), context=context)
        return self.no_context.format(instruction=record["instruction"].strip())
