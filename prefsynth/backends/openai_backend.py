"""OpenAI-compatible HTTP backend: vllm serve, SGLang, TGI, llama.cpp server, hosted APIs.

Requests run concurrently (asyncio, `max_concurrency` in flight) through the official openai
client, which retries 408/409/429/5xx, connection errors and timeouts with exponential back-off
and honours Retry-After. A request that still fails becomes a `GenerationFailure` carrying the
raw response body, which the stage writes to dead letters. The API key is read from the
environment variable named in the params and is never logged or written anywhere.

Self-certainty needs the full next-token distribution, which these servers do not return; it is
estimated from the top-k log-probs (`top_logprobs`), spreading the remaining mass uniformly over
the rest of the vocabulary (see `self_certainty_from_top_k`).
"""

from __future__ import annotations

import asyncio
import math
import os
from dataclasses import dataclass
from typing import Sequence

from prefsynth.backends.base import Completion, SamplingParams
from prefsynth.backends.transformers_backend import sample_seed


@dataclass
class GenerationFailure:
    """A request that failed after every retry (goes to dead letters, never becomes a None label)."""

    error_type: str
    message: str
    raw_output: str | None = None


def self_certainty_from_top_k(top: dict[str, float], vocab_size: int) -> float:
    """KL(U || p) estimated from the top-k log-probs of one position.

    The k known tokens keep their probabilities; the leftover mass is spread evenly over the
    other V - k tokens. Exact when k = V; an estimate otherwise.
    """
    logps = list(top.values())
    k = len(logps)
    rest = max(1.0 - sum(math.exp(lp) for lp in logps), 1e-12)
    n_rest = max(vocab_size - k, 0)
    sum_log = sum(logps) + (n_rest * math.log(rest / n_rest) if n_rest else 0.0)
    return -math.log(vocab_size) - sum_log / vocab_size


class OpenAIBackend:
    name = "openai"

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY",
                 max_concurrency: int = 16, timeout_s: float = 60.0, max_retries: int = 4,
                 top_logprobs: int = 5, vocab_size: int | None = None):
        self.base_url, self.model = base_url, model
        self.api_key_env = api_key_env
        self.max_concurrency, self.timeout_s, self.max_retries = max_concurrency, timeout_s, max_retries
        self.top_logprobs, self.vocab_size = top_logprobs, vocab_size
        self.stats = {"requests": 0, "attempts": 0, "failures": 0}

    def _client(self):
        import openai

        async def count_attempt(request):
            self.stats["attempts"] += 1

        return openai.AsyncOpenAI(
            base_url=self.base_url,
            # Local servers accept any key; a hosted API gets it from the environment only.
            api_key=os.environ.get(self.api_key_env) or "EMPTY",
            max_retries=self.max_retries,
            timeout=self.timeout_s,
            http_client=openai.DefaultAsyncHttpxClient(event_hooks={"request": [count_attempt]}),
        )

    @property
    def retries(self) -> int:
        return self.stats["attempts"] - self.stats["requests"]

    # ---- generate ------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[str], sampling: SamplingParams,
                 seeds: Sequence[int] | None = None) -> list[list[Completion] | GenerationFailure]:
        seeds = list(seeds) if seeds is not None else [0] * len(prompts)
        return asyncio.run(self._generate_all(list(prompts), sampling, seeds))

    async def _generate_all(self, prompts, sampling, seeds):
        sem = asyncio.Semaphore(self.max_concurrency)
        async with self._client() as client:
            async def one(prompt, seed):
                async with sem:
                    return await self._generate_one(client, prompt, sampling, seed)
            return await asyncio.gather(*(one(p, s) for p, s in zip(prompts, seeds)))

    async def _generate_one(self, client, prompt: str, sp: SamplingParams, seed: int):
        import openai

        # One request per sample, each with its own seed: a sample's text depends only on
        # (prompt, seed, index), not on the server's batching of an `n` > 1 request.
        samples = []
        for j in range(sp.n):
            self.stats["requests"] += 1
            try:
                resp = await client.completions.create(
                    model=self.model, prompt=prompt, n=1, temperature=sp.temperature, top_p=sp.top_p,
                    max_tokens=sp.max_new_tokens, stop=list(sp.stop) or None,
                    seed=sample_seed(seed, j) % (2**31), logprobs=self.top_logprobs,
                )
            except openai.APIStatusError as err:
                self.stats["failures"] += 1
                return GenerationFailure(f"http_{err.status_code}", str(err), _body(err.response))
            except (openai.APITimeoutError, openai.APIConnectionError) as err:
                self.stats["failures"] += 1
                return GenerationFailure(type(err).__name__, str(err), None)
            except openai.APIResponseValidationError as err:
                self.stats["failures"] += 1
                return GenerationFailure("bad_response", str(err), _body(err.response))
            try:
                samples.append(self._to_completion(resp.choices[0]))
            except (AttributeError, IndexError, TypeError, ValueError) as err:
                self.stats["failures"] += 1
                return GenerationFailure("bad_response", f"unexpected response shape: {err}",
                                         _safe_json(resp))
        return samples

    def _to_completion(self, choice) -> Completion:
        lp = choice.logprobs
        token_lps = [float(x) for x in (lp.token_logprobs or [])] if lp else []
        certainty = None
        if lp and lp.top_logprobs and self.vocab_size:
            values = [self_certainty_from_top_k(t, self.vocab_size) for t in lp.top_logprobs if t]
            certainty = sum(values) / len(values) if values else None
        return Completion(
            text=choice.text,
            token_ids=list(range(len(token_lps))),  # servers return token strings, not ids
            logprobs=token_lps,
            finish_reason="length" if choice.finish_reason == "length" else "stop",
            self_certainty=certainty,
            extra={"tokens": list(lp.tokens) if lp and lp.tokens else []},
        )

    # ---- score ---------------------------------------------------------------------------------
    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[float]:
        """Continuation log-prob via `echo=True` prompt log-probs (vLLM and most servers support it)."""
        return asyncio.run(self._score_all(list(prompts), list(continuations)))

    async def _score_all(self, prompts, continuations):
        sem = asyncio.Semaphore(self.max_concurrency)
        async with self._client() as client:
            async def one(p, c):
                async with sem:
                    self.stats["requests"] += 1
                    resp = await client.completions.create(model=self.model, prompt=p + c, max_tokens=1,
                                                           echo=True, logprobs=0, temperature=0.0)
                    lp = resp.choices[0].logprobs
                    total = 0.0
                    for off, tlp in zip(lp.text_offset, lp.token_logprobs):
                        if off >= len(p) and off < len(p) + len(c) and tlp is not None:
                            total += float(tlp)
                    return total
            return await asyncio.gather(*(one(p, c) for p, c in zip(prompts, continuations)))


def _body(response) -> str | None:
    try:
        return response.text
    except Exception:  # a streamed or closed body: nothing more to keep
        return None


def _safe_json(resp) -> str | None:
    try:
        return resp.model_dump_json()
    except Exception:
        return repr(resp)
