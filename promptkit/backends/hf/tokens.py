"""Text and token ids for the Hugging Face backend, from the tokenizer alone (no torch): a (prompt, continuation)
pair as the model scores it, whether the tokenizer adds its BOS, the padding id of scored rows, and the chat
template as a function of (role, text) turns."""

from __future__ import annotations

from typing import Callable


def encode(tokenizer, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of the prompt (with BOS) and of the continuation as it follows that prompt."""
    # whitespace at the end of the prompt belongs to the continuation's first token
    stripped = prompt.rstrip()
    continuation = prompt[len(stripped):] + continuation
    special = add_special(tokenizer, stripped)
    ctx = tokenizer(stripped, add_special_tokens=special)["input_ids"]
    whole = tokenizer(stripped + continuation, add_special_tokens=special)["input_ids"]
    if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
        cont = whole[len(ctx):]
    else:
        cont = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    if not ctx:  # a model with no BOS still needs one token to condition on
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        ctx = [start]
    return ctx, cont


def add_special(tokenizer, text: str) -> bool:
    """Let the tokenizer add its special tokens (BOS), unless the text already starts with the BOS token, as text
    from a chat template does."""
    bos = tokenizer.bos_token
    return not (bos and text.startswith(bos))


def pad_id(tokenizer) -> int:
    """The padding of scored rows (never read: masked): the tokenizer's pad token, else 0."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def chat_formatter(tokenizer) -> Callable[[tuple[tuple[str, str], ...]], str] | None:
    """The `format_chat` capability: (role, text) turns → the tokenizer's chat template with the assistant's turn
    opened; None when the tokenizer has no chat template. An error the template raises is passed on."""
    if not getattr(tokenizer, "chat_template", None):
        return None

    def format_chat(messages: tuple[tuple[str, str], ...]) -> str:
        return tokenizer.apply_chat_template([{"role": role, "content": text} for role, text in messages],
                                             tokenize=False, add_generation_prompt=True)
    return format_chat
