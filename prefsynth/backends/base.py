"""The one protocol every model use goes through (generate, MCTS, judges).

    generate(prompts, sampling, seeds) -> for each prompt, `sampling.n` completions with token log-probs
    score(prompts, continuations)      -> log-prob of each continuation given its prompt

A request's seed fixes its samples: the same prompt with the same seed gives the same
completions whatever batch it lands in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1  # completions per prompt
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0  # nucleus sampling mass
    max_new_tokens: int = 64
    stop: tuple[str, ...] = ()  # stop strings; the text returned ends before them (as in vLLM)

    def __post_init__(self):
        if self.n < 1 or self.max_new_tokens < 1:
            raise ValueError("sampling: n and max_new_tokens must be >= 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("sampling: temperature must be >= 0 and top_p in (0, 1]")


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    logprobs: list[float]  # log-prob of each generated token under the model (temperature 1)
    finish_reason: str  # stop (eos or stop string) | length
    self_certainty: float | None = None  # mean KL(uniform || p) over generated tokens, from full logits
    extra: dict = field(default_factory=dict)

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def sum_logprob(self) -> float:
        return float(sum(self.logprobs))

    @property
    def mean_logprob(self) -> float | None:
        return self.sum_logprob / len(self.logprobs) if self.logprobs else None


def no_room_completions(n: int, top_logprobs: int = 0) -> list[Completion]:
    """The `n` completions of a prompt the context has no room for: empty, finish_reason "length"
    (what every backend returns instead of failing the batch; with top log-probs asked for, an
    empty list of them, as a generated completion would carry)."""
    return [Completion(text="", token_ids=[], logprobs=[], finish_reason="length",
                       extra={"top_logprobs": []} if top_logprobs else {}) for _ in range(n)]


@dataclass
class GenerationFailure:
    """A request that failed after every retry (goes to dead letters, never becomes a None label).

    Any backend may return one in place of a prompt's completions; the stages record it."""

    error_type: str
    message: str
    raw_output: str | None = None


def names_other_model(cfg) -> bool:
    """Whether a config with model/backend/base_url fields (label.judge, label.mc) names a model other
    than the policy (any of the three set)."""
    return bool(cfg.model or cfg.backend or cfg.base_url)


def context_check(backend, margin_tokens: int = 0) -> Callable[[str], bool]:
    """Whether a text (prompt + continuation, as `score` sees it) fits the backend's context with
    `margin_tokens` to spare. Known for local models (their tokenizer and `max_positions`); a server
    rejects what does not fit, and that failure is recorded instead, so there it is always True."""
    tok, limit = getattr(backend, "tokenizer", None), getattr(backend, "max_positions", None)
    if tok is None or not limit:
        return lambda text: True
    # vLLM scores by generating one token after the text: it needs one position more
    margin = margin_tokens + getattr(backend, "score_reserve", 0)
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"]) + margin <= limit


class Backend(Protocol):
    name: str

    def generate(self, prompts: Sequence[str], sampling: SamplingParams,
                 seeds: Sequence[int] | None = None) -> list[list[Completion]]:
        ...

    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[float]:
        ...
