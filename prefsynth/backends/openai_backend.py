"""OpenAI-compatible HTTP backend: vllm serve, SGLang, TGI, llama.cpp server, hosted APIs.

Requests run concurrently (asyncio, `max_concurrency` in flight) through the official openai
client, which retries 408/409/429/5xx, connection errors and timeouts with exponential back-off
and honours Retry-After. What the client does not retry is a 200 reply whose body is not a
completion: JSON cut off mid-string, an HTML error page from a proxy. Those are retried here
with tenacity (the same bound, `max_retries`, exponential back-off with jitter); a well-formed
reply of the wrong shape (`choices: []`, an event stream from a streaming-only server) is not
retried, since asking again gets the same answer.

What still fails is a `GenerationFailure` for that one prompt, carrying the raw response body as
text, which the stage writes to dead letters; the other prompts of the batch are unaffected, and
each finished prompt is handed to `on_result` at once so the stage can keep it (resume below batch
level). When every request of a call fails to connect, the server is gone: `ServerUnreachable`
(naming base_url) fails the batch instead of turning the rest of the run into dead letters.
`score` raises `ScoreError` naming base_url for a request that fails after retries (its callers
record a per-item failure). The API key is read from the environment variable named in the params
and is never logged or written anywhere.

Self-certainty needs the full next-token distribution, which these servers do not return; it is
estimated from the top-k log-probs (`top_logprobs`), spreading the remaining mass uniformly over
the rest of the vocabulary (see `self_certainty_from_top_k`). A server that returns no log-probs
gives completions with null log-prob statistics (token count from `usage`), with one warning.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
from typing import Callable, Sequence

from prefsynth.backends.base import Completion, GenerationFailure, SamplingParams
from prefsynth.backends.noise import sample_seed

log = logging.getLogger("prefsynth")


class BadResponse(Exception):
    """A reply that is not a usable completion. `retryable`: the kind of body a proxy or a dying
    server sends now and then (cut-off JSON, an HTML page); not a well-formed reply of the wrong shape."""

    def __init__(self, message: str, body: str | None, retryable: bool = True):
        super().__init__(message)
        self.body, self.retryable = body, retryable


class ServerUnreachable(RuntimeError):
    """Every request of a call failed to connect after the client's retries: the server is gone."""


class ScoreError(RuntimeError):
    """A `score` request that failed after retries (names the server; callers record the item)."""


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


def parse_completion_body(text: str | None, content_type: str, base_url: str) -> dict:
    """The JSON of a 200 completions reply, or BadResponse saying what is wrong with it."""
    ct = (content_type or "").split(";")[0].strip().lower()
    head = (text or "").lstrip()
    if not head:
        raise BadResponse(f"200 reply from {base_url} has an empty body", text)
    if ct == "text/event-stream" or head.startswith(("data:", "event:")):
        raise BadResponse(f"200 reply from {base_url} is an event stream (a streaming-only server?); prefsynth "
                          "sends non-streaming requests", text, retryable=False)
    try:
        data = json.loads(text)
    except ValueError as err:
        what = "cut off / malformed JSON" if head.startswith(("{", "[")) else "not JSON"
        raise BadResponse(f"200 reply from {base_url} is {what} ({ct or 'no content type'}, {len(text)} chars): "
                          f"{err}", text) from None
    if not isinstance(data, dict):
        raise BadResponse(f"200 reply from {base_url} is JSON but not an object", text, retryable=False)
    choices = data.get("choices")
    if not choices and data.get("error"):
        raise BadResponse(f"200 reply from {base_url} carries an error: {json.dumps(data['error'])[:300]}", text)
    if not isinstance(choices, list) or not choices:
        raise BadResponse(f"200 reply from {base_url} has no choices ({json.dumps(choices)[:100]})", text,
                          retryable=False)
    if not isinstance(choices[0], dict) or not isinstance(choices[0].get("text"), str):
        raise BadResponse(f"200 reply from {base_url}: choices[0] has no text", text, retryable=False)
    return data


class OpenAIBackend:
    name = "openai"
    retry_initial_s = 0.5  # back-off of the retries on bad 200 bodies: 0.5, 1, 2, 4 ... s (+ jitter) ...
    retry_max_s = 8.0  # ... at most this (the openai client's own back-off has the same bounds)

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY",
                 max_concurrency: int = 16, timeout_s: float = 60.0, max_retries: int = 4,
                 top_logprobs: int = 5, vocab_size: int | None = None):
        self.base_url, self.model = base_url, model
        self.api_key_env = api_key_env
        self.max_concurrency, self.timeout_s, self.max_retries = max_concurrency, timeout_s, max_retries
        self.top_logprobs, self.vocab_size = top_logprobs, vocab_size
        self.stats = {"requests": 0, "attempts": 0, "failures": 0, "bad_bodies": 0, "no_logprobs": 0}

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

    async def _post(self, client, **body) -> dict:
        """One completions request: the client retries status codes, connection errors and timeouts;
        tenacity retries 200 replies with a bad body. Returns the parsed JSON."""
        from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

        def note(state) -> None:
            err = state.outcome.exception()
            self.stats["bad_bodies"] += 1
            log.info("[openai] retry %d/%d of a bad reply: %s", state.attempt_number, self.max_retries, err)

        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda e: isinstance(e, BadResponse) and e.retryable),
            stop=stop_after_attempt(self.max_retries + 1),
            wait=wait_exponential_jitter(multiplier=self.retry_initial_s, max=self.retry_max_s,
                                         jitter=self.retry_initial_s),
            before_sleep=note, reraise=True)
        async for attempt in retrying:
            with attempt:
                raw = await client.completions.with_raw_response.create(model=self.model, **body)
                return parse_completion_body(raw.text, raw.headers.get("content-type", ""), self.base_url)
        raise AssertionError("unreachable")  # pragma: no cover - reraise=True raises the last error

    def _failure(self, err: Exception) -> GenerationFailure:
        """The GenerationFailure of a request that failed after every retry (raw body kept as text)."""
        import openai

        self.stats["failures"] += 1
        if isinstance(err, openai.APIStatusError):
            return GenerationFailure(f"http_{err.status_code}", f"{self.base_url}: {err}", _body(err.response))
        if isinstance(err, openai.APITimeoutError):
            return GenerationFailure("APITimeoutError", f"{self.base_url}: no reply within {self.timeout_s:g} s "
                                     f"after {self.max_retries} retries", None)
        if isinstance(err, openai.APIConnectionError):
            cause = f" ({type(err.__cause__).__name__}: {err.__cause__})" if err.__cause__ else ""
            return GenerationFailure("APIConnectionError", f"cannot reach {self.base_url} after {self.max_retries} "
                                     f"retries: {err}{cause}", None)
        if isinstance(err, BadResponse):
            tries = f" after {self.max_retries} retries" if err.retryable else ""
            return GenerationFailure("bad_response", f"{err}{tries}", err.body)
        return GenerationFailure(type(err).__name__, f"{self.base_url}: {err}", None)

    # ---- generate ------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[str], sampling: SamplingParams, seeds: Sequence[int] | None = None,
                 on_result: Callable[[int, list[Completion] | GenerationFailure], None] | None = None,
                 ) -> list[list[Completion] | GenerationFailure]:
        """Per prompt: its completions, or a GenerationFailure. `on_result(i, result)` is called as
        each prompt finishes (in completion order), so a caller can keep finished prompts."""
        seeds = list(seeds) if seeds is not None else [0] * len(prompts)
        out = asyncio.run(self._generate_all(list(prompts), sampling, seeds, on_result))
        gone = [r for r in out if isinstance(r, GenerationFailure) and r.error_type == "APIConnectionError"]
        if out and len(gone) == len(out):
            raise ServerUnreachable(f"every request of this batch ({len(out)} prompts) failed: {gone[0].message}")
        return out

    async def _generate_all(self, prompts, sampling, seeds, on_result):
        sem = asyncio.Semaphore(self.max_concurrency)
        async with self._client() as client:
            async def one(i, prompt, seed):
                async with sem:
                    result = await self._generate_one(client, prompt, sampling, seed)
                if on_result is not None:
                    on_result(i, result)
                return result
            return await asyncio.gather(*(one(i, p, s) for i, (p, s) in enumerate(zip(prompts, seeds))))

    async def _generate_one(self, client, prompt: str, sp: SamplingParams, seed: int):
        # One request per sample, each with its own seed: a sample's text depends only on
        # (prompt, seed, index), not on the server's batching of an `n` > 1 request.
        samples = []
        for j in range(sp.n):
            self.stats["requests"] += 1
            try:
                data = await self._post(
                    client, prompt=prompt, n=1, temperature=sp.temperature, top_p=sp.top_p,
                    max_tokens=sp.max_new_tokens, stop=list(sp.stop) or None,
                    seed=sample_seed(seed, j) % (2**31), logprobs=self.top_logprobs)
                samples.append(self._to_completion(data))
            except Exception as err:  # noqa: BLE001 - every request failure is this prompt's failure
                if not _is_request_error(err):
                    raise
                return self._failure(err)
        return samples

    def _to_completion(self, data: dict) -> Completion:
        choice = data["choices"][0]
        lp = choice.get("logprobs") or {}
        try:
            token_lps = [float(x) for x in (lp.get("token_logprobs") or [])]
            tokens = [str(t) for t in (lp.get("tokens") or [])]
            top = [t for t in (lp.get("top_logprobs") or []) if t]
            certainty = None
            if top and self.vocab_size:
                values = [self_certainty_from_top_k({k: float(v) for k, v in t.items()}, self.vocab_size)
                          for t in top]
                certainty = sum(values) / len(values)
        except (AttributeError, TypeError, ValueError) as err:
            raise BadResponse(f"200 reply from {self.base_url} has malformed logprobs: {err}", json.dumps(data),
                              retryable=False) from None
        n_tokens = len(token_lps)
        if not token_lps and choice["text"]:
            # a server that ignores `logprobs`: keep the text, count tokens from usage, say so once
            self.stats["no_logprobs"] += 1
            if self.stats["no_logprobs"] == 1:
                log.warning("[openai] %s returned no logprobs: log-prob statistics and self-certainty of its "
                            "completions are null", self.base_url)
            usage = data.get("usage") or {}
            n_tokens = usage.get("completion_tokens") if isinstance(usage.get("completion_tokens"), int) else 0
        return Completion(
            text=choice["text"],
            token_ids=list(range(n_tokens)),  # servers return token strings, not ids
            logprobs=token_lps,
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            self_certainty=certainty,
            extra={"tokens": tokens},
        )

    # ---- score ---------------------------------------------------------------------------------
    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[float]:
        """Continuation log-prob via `echo=True` prompt log-probs (vLLM and most servers support it).

        A request that fails after retries raises ScoreError naming the server (the first such one,
        once every request of the call has finished)."""
        return asyncio.run(self._score_all(list(prompts), list(continuations)))

    async def _score_all(self, prompts, continuations):
        sem = asyncio.Semaphore(self.max_concurrency)
        async with self._client() as client:
            async def one(p, c):
                async with sem:
                    return await self._score_one(client, p, c)
            out = await asyncio.gather(*(one(p, c) for p, c in zip(prompts, continuations)),
                                       return_exceptions=True)
        for r in out:
            if isinstance(r, BaseException):
                raise r
        return out

    async def _score_one(self, client, p: str, c: str) -> float:
        self.stats["requests"] += 1
        try:
            data = await self._post(client, prompt=p + c, max_tokens=1, echo=True, logprobs=0, temperature=0.0)
            lp = data["choices"][0].get("logprobs") or {}
            offsets, tlps = lp.get("text_offset"), lp.get("token_logprobs")
            if not isinstance(offsets, list) or not isinstance(tlps, list):
                raise BadResponse(f"200 reply from {self.base_url} has no prompt logprobs (echo=True, logprobs=0): "
                                  "the server cannot score", json.dumps(data), retryable=False)
            cut, end = len(p), len(p) + len(c)
            # a token belongs to the continuation when its span ends after the prompt (BPE merges the
            # prompt's trailing space into " A"); a token ends where the next one starts (the echo's
            # last token ends where the one generated token starts)
            picked = [tlp for k, (off, tlp) in enumerate(zip(offsets, tlps))
                      if off < end and (offsets[k + 1] if k + 1 < len(offsets) else end) > cut]
        except Exception as err:  # noqa: BLE001 - re-raised as one clear error naming the server
            if not _is_request_error(err):
                raise
            f = self._failure(err)
            body = f" body: {' '.join(f.raw_output.split())[:200]!r}" if f.raw_output else ""
            raise ScoreError(f"score request to {self.base_url} failed ({f.error_type}): {f.message}{body}") from err
        if not picked:
            raise ValueError(f"score: continuation {c!r} has no tokens of its own after prompt ...{p[-40:]!r}")
        if any(t is None for t in picked):
            raise ValueError(f"score: continuation {c!r} starts the sequence: its first token has no context")
        return float(sum(picked))


def _is_request_error(err: Exception) -> bool:
    import openai

    return isinstance(err, (openai.APIError, BadResponse, KeyError, TypeError, ValueError))


def _body(response) -> str | None:
    try:
        return response.text
    except Exception:  # a streamed or closed body: nothing more to keep
        return None
