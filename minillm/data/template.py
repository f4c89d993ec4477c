"""Prompt templates: the reference's Alpaca format, a short one for the bundled data, and the tokenizer's
own chat template for chat models.

``data.template=chat`` renders a record as one user turn with the tokenizer's chat template, generation
prompt added (``apply_chat_template(add_generation_prompt=True)``); the response follows it directly and
ends with the template's end-of-turn token (``<|im_end|>`` for ChatML), which becomes the tokenizer's EOS
(:func:`use_end_of_turn_as_eos`): SFT targets, rollouts, sampling and evaluation all stop at it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from minillm.errors import MinillmError

log = logging.getLogger(__name__)

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
TEMPLATES = ("alpaca", "chat", "short")  # the values of data.template


@dataclass(frozen=True)
class PromptTemplate:
    """Formats a record's prompt; the response follows it directly and ends with EOS."""

    no_context: str
    with_context: str

    @classmethod
    def from_name(cls, name: str, tokenizer=None) -> PromptTemplate | ChatTemplate:
        """``data.template``: ``alpaca`` or ``short``; ``chat`` needs the tokenizer (see :class:`ChatTemplate`)."""
        if name == "chat":
            if tokenizer is None:
                raise MinillmError("data.template=chat: the chat template needs the run's tokenizer")
            return ChatTemplate.for_tokenizer(tokenizer)
        if name not in PRESETS:
            raise MinillmError(f"data.template={name!r} is not a template; choose one of {list(TEMPLATES)}")
        return cls(**PRESETS[name])

    def format(self, record: dict) -> str:
        context = (record.get("context") or "").strip()
        if context:
            return self.with_context.format(instruction=record["instruction"].strip(), context=context)
        return self.no_context.format(instruction=record["instruction"].strip())


def user_message(record: dict) -> str:
    """A record as the user's turn: the instruction, then its context after a blank line when it has one."""
    context = (record.get("context") or "").strip()
    instruction = record["instruction"].strip()
    return f"{instruction}\n\n{context}" if context else instruction


@dataclass(frozen=True)
class ChatTemplate:
    """The tokenizer's chat template: the record as one user turn, then the assistant's generation prompt.

    Building it makes the template's end-of-turn token the tokenizer's EOS (when they differ), so every
    response ends with it and every generation stops at it.
    """

    tokenizer: object = field(compare=False, repr=False)

    @classmethod
    def for_tokenizer(cls, tokenizer) -> ChatTemplate:
        use_end_of_turn_as_eos(tokenizer)
        return cls(tokenizer)

    def format(self, record: dict) -> str:
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": user_message(record)}], tokenize=False, add_generation_prompt=True
        )


_PROBE = "Ok."


def end_of_turn_token(tokenizer) -> str:
    """The special token that closes an assistant turn in the tokenizer's chat template: a short exchange is
    rendered and the first token after the assistant's text is taken (``<|im_end|>`` for ChatML)."""
    if not getattr(tokenizer, "chat_template", None):
        raise MinillmError(
            "data.template=chat: the tokenizer has no chat template; use data.template=short or alpaca"
        )
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": _PROBE}], tokenize=False
    )
    after = text[text.rindex(_PROBE) + len(_PROBE) :]
    ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
    special = set(tokenizer.all_special_tokens) | set(tokenizer.get_added_vocab())
    token = tokenizer.convert_ids_to_tokens(ids[0]) if ids else None
    if token not in special:
        raise MinillmError(
            f"data.template=chat: the chat template ends the assistant's turn with {after!r}, not a special "
            "token; use data.template=short or alpaca"
        )
    return token


def use_end_of_turn_as_eos(tokenizer) -> None:
    """Make the chat template's end-of-turn token the tokenizer's EOS (a no-op when it already is)."""
    token = end_of_turn_token(tokenizer)
    if tokenizer.eos_token != token:
        log.info(
            "data.template=chat: responses end with %s (the tokenizer's EOS was %s)",
            token,
            tokenizer.eos_token,
        )
        tokenizer.eos_token = token
