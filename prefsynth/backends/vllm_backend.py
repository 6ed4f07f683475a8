"""vLLM in-process backend (`vllm.LLM`), for GPU machines.

One request per prompt with `n` samples and that prompt's own seed (vLLM seeds each request's
sampler separately, so a prompt's samples do not depend on its batch), automatic prefix caching
so the `n` samples and MCTS siblings share their prompt's KV cache. vLLM returns top-k
log-probs, not full logits, so self-certainty is estimated from the top-k (see
`openai_backend.self_certainty_from_top_k`). The import is deferred: machines without vLLM
use the other backends.
"""

from __future__ import annotations

from typing import Sequence

from prefsynth.backends.base import Completion, SamplingParams
from prefsynth.backends.openai_backend import self_certainty_from_top_k


class VLLMBackend:
    name = "vllm"

    def __init__(self, model_path: str, dtype: str = "auto", gpu_memory_utilization: float = 0.85,
                 max_model_len: int | None = None, top_logprobs: int = 5, **engine_kwargs):
        try:
            from vllm import LLM
        except ImportError as err:
            raise ImportError("policy.backend=vllm needs vLLM (`pip install vllm` on a CUDA machine); "
                              "use policy.backend=transformers or openai elsewhere") from err
        self.llm = LLM(model=model_path, dtype=dtype, gpu_memory_utilization=gpu_memory_utilization,
                       max_model_len=max_model_len, enable_prefix_caching=True, **engine_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.top_logprobs = top_logprobs
        self.vocab_size = len(self.tokenizer)
        self.max_positions = self.llm.llm_engine.model_config.max_model_len

    def generate(self, prompts: Sequence[str], sampling: SamplingParams,
                 seeds: Sequence[int] | None = None) -> list[list[Completion]]:
        from vllm import SamplingParams as VllmSampling

        seeds = list(seeds) if seeds is not None else [0] * len(prompts)
        params = [VllmSampling(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                               max_tokens=sampling.max_new_tokens, stop=list(sampling.stop) or None,
                               seed=s % (2**63), logprobs=self.top_logprobs) for s in seeds]
        outputs = self.llm.generate(list(prompts), params, use_tqdm=False)
        results = []
        for out in outputs:
            group = []
            for o in out.outputs:
                chosen, certainty = [], []
                for tok_id, top in zip(o.token_ids, o.logprobs or []):
                    chosen.append(float(top[tok_id].logprob))
                    certainty.append(self_certainty_from_top_k(
                        {str(k): float(v.logprob) for k, v in top.items()}, self.vocab_size))
                group.append(Completion(
                    text=o.text, token_ids=list(o.token_ids), logprobs=chosen,
                    finish_reason="length" if o.finish_reason == "length" else "stop",
                    self_certainty=sum(certainty) / len(certainty) if certainty else None,
                ))
            results.append(group)
        return results

    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[float]:
        """Sum of log-probs of each continuation's tokens given its prompt.

        The joined text is tokenized here, as vLLM would tokenize a text prompt (special tokens
        added), the continuation's tokens are located by character offsets (see
        `continuation_token_span`: a token straddling the boundary is the continuation's), and
        exactly those token ids go to vLLM as the prompt, so the tokens scored are the tokens
        located. A continuation with no token raises ValueError.
        """
        from vllm import SamplingParams as VllmSampling

        from prefsynth.backends.transformers_backend import scored_spans

        try:
            from vllm.inputs import TokensPrompt
        except ImportError:  # a TypedDict: a plain dict is the same request
            TokensPrompt = dict  # noqa: N806
        spans = scored_spans(self.tokenizer, prompts, continuations, add_special_tokens=True)
        requests = [TokensPrompt(prompt_token_ids=list(ids)) for ids, _ in spans]
        outs = self.llm.generate(requests, VllmSampling(max_tokens=1, prompt_logprobs=0), use_tqdm=False)
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
