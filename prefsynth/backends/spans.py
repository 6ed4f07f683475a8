"""Which tokens of a joined prompt + continuation are the continuation's: what every backend's
`score` (P(True), judges, UPO features) sums log-probs over."""

from __future__ import annotations

from typing import Sequence


def continuation_token_span(tokenizer, prompt: str, continuation: str,
                            add_special_tokens: bool = False) -> tuple[list[int], int]:
    """(token ids of prompt + continuation tokenized together, index of the continuation's first token).

    The continuation is every token whose character span ends after len(prompt): a token that
    straddles the boundary (BPE merges a prompt's trailing space into " A") is the continuation's.
    Fast tokenizers locate tokens by their offsets; a slow one by the longest common prefix of the
    prompt's own tokens and the joint ones (the first differing token starts the continuation).
    Trailing special tokens (an EOS some tokenizers append) are not part of the continuation.
    `first == len(ids)` means the continuation has no token of its own.
    """
    full = prompt + continuation
    cut = len(prompt)
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(full, add_special_tokens=add_special_tokens, return_offsets_mapping=True,
                        return_special_tokens_mask=True)
        ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
        special = enc.get("special_tokens_mask") or [0] * len(ids)
        while ids and special[len(ids) - 1] and add_special_tokens:
            ids.pop()
        first = next((i for i in range(len(ids)) if not special[i] and offsets[i][1] > cut), len(ids))
        return ids, first
    ids = list(tokenizer(full, add_special_tokens=add_special_tokens)["input_ids"])
    p_ids = tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"]
    first = 0
    while first < min(len(ids), len(p_ids)) and ids[first] == p_ids[first]:
        first += 1
    return ids, first


def scored_spans(tokenizer, prompts: Sequence[str], continuations: Sequence[str],
                 add_special_tokens: bool = False) -> list[tuple[list[int], int]]:
    """`continuation_token_span` for every pair; a continuation with no token of its own, or with
    no token before it to condition on, is a ValueError (never a silent score of 0)."""
    if len(prompts) != len(continuations):
        raise ValueError("score: one continuation per prompt")
    spans = []
    for k, (p, c) in enumerate(zip(prompts, continuations)):
        ids, first = continuation_token_span(tokenizer, p, c, add_special_tokens)
        if first >= len(ids):
            raise ValueError(f"score: continuation {c!r} (item {k}) has no tokens of its own after prompt "
                             f"...{p[-40:]!r}: nothing to score")
        if first == 0:
            raise ValueError(f"score: continuation {c!r} (item {k}) starts the sequence (empty prompt and no "
                             "BOS token): its first token has no context to be scored in")
        spans.append((ids, first))
    return spans
