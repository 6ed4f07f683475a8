"""Transformers backend: any local causal LM, CPU or CUDA, batched, left-padded.

Decoding is a plain loop over the KV cache so that every row can have its own seed: the
sampling noise for (seed, position, token) comes from a counter-based hash (backends/noise.py), not
from a shared torch generator, so a request's samples do not depend on which batch it landed in.
The `n` samples of a prompt share one prefill (the prompt's KV cache is computed once and repeated).
Padding is `batch_invariant` (per-length width buckets: a prompt's bits do not depend on its
batch-mates) or per call (one width, as `model.generate`: faster on mixed lengths).

The decode loop stays on the model's device: the noise hash is exact int64 arithmetic computed
where the logits are (float64 Gumbel noise on a CPU, whose bytes are those of every earlier
release; float32 from the hash's top 24 bits on accelerators), finish states, tokens, log-probs and
self-certainty sums are device tensors, and per step only "all rows done?" crosses to the host
(plus the new token ids when there are stop strings, checked on a decoded tail window, never the
whole text). The prefill computes only the last position's logits off the CPU and, on the CPU, for
vocabularies over FULL_LOGITS_MAX_VOCAB (the tiny policy keeps its full-width bytes).
`benchmarks/generation.py` measures it against `model.generate`.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefsynth.backends.base import Completion, SamplingParams, no_room_completions
from prefsynth.backends.noise import gumbel_from_bits, noise_bits, row_keys, sample_seed
from prefsynth.backends.spans import scored_spans


def resolve_dtype(name: str | None, device: str) -> torch.dtype | None:
    """`policy.dtype` as a torch dtype: None keeps the model's own; "auto" is bfloat16 on a CUDA
    device that supports it and the model's own elsewhere (a CPU keeps float32: bf16 matmuls are
    slow there without AMX, and the CPU bytes stay those of the saved weights)."""
    if not name:
        return None
    if name == "auto":
        dev = torch.device(device)
        if dev.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"policy.dtype: {name!r} is not a torch dtype (e.g. bfloat16, float16, float32, auto)")
    return dtype


class TransformersBackend:
    name = "transformers"
    MIN_ROWS = 8
    FULL_LOGITS_MAX_VOCAB = 4096  # above it the prefill computes the last position's logits only

    def __init__(self, model_path: str, device: str | None = None, batch_size: int = 256,
                 torch_dtype: str | None = None, model=None, tokenizer=None, pad_multiple: int = 32,
                 batch_invariant: bool = True):
        self.model_path = model_path
        # batch_invariant: every sequence is left-padded to a multiple of `pad_multiple` fixed by its
        # own length, never by its batch-mates, and every call has >= MIN_ROWS rows: the kernels then
        # see the same shapes for a prompt whatever batch it is in, and its log-probs are
        # bit-identical (not just close) across batchings. The price is one decode loop per width
        # bucket. Without it a call is sorted by length and each chunk padded to its longest prompt
        # (one decode loop, as `model.generate`): a prompt's bits then depend on its batch-mates,
        # which the stages fix (DeterministicBatches), so a run's bytes are still the same run to run
        # and whatever the worker count; only a prompt moved to another batch may differ in the last bits.
        self.pad_multiple = pad_multiple
        self.batch_invariant = batch_invariant
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = batch_size
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = resolve_dtype(torch_dtype, self.device)
        self.model = model or AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
        self.model.to(self.device).eval()
        self.max_positions = getattr(self.model.config, "n_positions", None) or getattr(
            self.model.config, "max_position_embeddings", None)

    # ---- generate ------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[str], sampling: SamplingParams,
                 seeds: Sequence[int] | None = None, top_logprobs: int = 0) -> list[list[Completion]]:
        """`top_logprobs` > 0 also returns, per generated token, the k most likely tokens and
        their log-probs (in `Completion.extra["top_logprobs"]`, as the OpenAI API does)."""
        seeds = list(seeds) if seeds is not None else [0] * len(prompts)
        if len(seeds) != len(prompts):
            raise ValueError("generate: one seed per prompt")
        per_batch = max(1, self.batch_size // sampling.n)
        ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        out: list[list[Completion] | None] = [None] * len(prompts)
        # a prompt longer than the context gets empty "length" completions, as in the vLLM backend
        # (its positions do not exist: the prefill would fail the whole batch); one that exactly
        # fills it goes through and stops at once, as before
        over = {i for i, x in enumerate(ids) if self.max_positions and len(x) > self.max_positions}
        for i in over:
            out[i] = no_room_completions(sampling.n, top_logprobs)
        fit = [i for i in range(len(ids)) if i not in over]
        for width, chunk in self._chunks([len(ids[i]) for i in fit], per_batch):
            chunk = [fit[j] for j in chunk]
            # CPU GEMM kernels pick a different path for 1-3 rows, which changes the last bits
            # of decode-step logits: pad tiny batches with a copy so every call has >= MIN_ROWS.
            pad = max(0, -(-self.MIN_ROWS // sampling.n) - len(chunk)) if self.batch_invariant else 0
            batch_ids = [ids[j] for j in chunk] + [ids[chunk[0]]] * pad
            batch_seeds = [seeds[j] for j in chunk] + [seeds[chunk[0]]] * pad
            groups = self._generate_batch(batch_ids, width, sampling, batch_seeds, top_logprobs)[:len(chunk)]
            for j, g in zip(chunk, groups):
                out[j] = g
        return out

    def _buckets(self, lengths: list[int]) -> list[tuple[int, list[int]]]:
        """(padded width, indices) groups: each index's width depends only on its own length."""
        by_width: dict[int, list[int]] = {}
        for i, n in enumerate(lengths):
            by_width.setdefault(max(1, -(-n // self.pad_multiple)) * self.pad_multiple, []).append(i)
        return sorted(by_width.items())

    def _chunks(self, lengths: list[int], per_batch: int) -> list[tuple[int, list[int]]]:
        """(padded width, indices) of each model call. Batch-invariant: width buckets, each cut into
        chunks of `per_batch`; otherwise the indices sorted by length (ties by position) and cut into
        chunks, each padded to its own longest sequence."""
        if self.batch_invariant:
            return [(width, idx[i:i + per_batch]) for width, idx in self._buckets(lengths)
                    for i in range(0, len(idx), per_batch)]
        order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
        chunks = [order[i:i + per_batch] for i in range(0, len(order), per_batch)]
        return [(max(1, max(lengths[j] for j in c)), c) for c in chunks]

    def _left_pad(self, seqs: list[list[int]], width: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.full((len(seqs), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for r, s in enumerate(seqs):
            if s:
                ids[r, width - len(s):] = torch.tensor(s)
                attn[r, width - len(s):] = 1
        return ids.to(self.device), attn.to(self.device)

    def _takes_logits_to_keep(self) -> bool:
        import inspect

        try:
            return "logits_to_keep" in inspect.signature(self.model.forward).parameters
        except (TypeError, ValueError):
            return False

    @torch.no_grad()
    def _generate_batch(self, prompt_ids: list[list[int]], width: int, sp: SamplingParams, seeds: list[int],
                        top_logprobs: int = 0) -> list[list[Completion]]:
        """One batch through prefill and a decode loop kept on the model's device.

        Per step the device holds everything (tokens, log-probs, self-certainty sums, finish
        states, sampling noise); what crosses to the host is one bool (all rows done?) and, only
        with stop strings, the step's new token ids, checked against a decoded tail window.
        """
        tok, n = self.tokenizer, sp.n
        input_ids, attn = self._left_pad(prompt_ids, width)
        dev = input_ids.device
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        # only the last position's logits are computed where the vocabulary is large ([rows, width,
        # vocab] is GBs at batch 256 with a 150k vocabulary, and on a CPU a 49k-vocabulary lm_head
        # over every prompt position costs ~20% of the prefill) or off the CPU; a small-vocabulary
        # model on the CPU (the tiny policy) keeps the full lm_head call, whose last-position bits
        # are those every earlier run produced
        large_vocab = (getattr(self.model.config, "vocab_size", 0) or 0) > self.FULL_LOGITS_MAX_VOCAB
        keep = ({"logits_to_keep": 1} if (dev.type != "cpu" or large_vocab) and self._takes_logits_to_keep()
                else {})
        out = self.model(input_ids=input_ids, attention_mask=attn, position_ids=pos, use_cache=True, **keep)
        past, logits = out.past_key_values, out.logits[:, -1, :]
        if n > 1:  # one prefill per prompt, shared by its n samples
            past.batch_repeat_interleave(n)
            logits = logits.repeat_interleave(n, 0)
            attn = attn.repeat_interleave(n, 0)
            pos = pos.repeat_interleave(n, 0)
        rows = len(prompt_ids) * n
        keys = row_keys(torch.tensor([sample_seed(s, j) for s in seeds for j in range(n)],
                        dtype=torch.int64, device=dev))
        # each row's own token budget: the context left after its own prompt, never its batch-mates'
        limit_list = [sp.max_new_tokens if not self.max_positions else
                      max(0, min(sp.max_new_tokens, self.max_positions - len(x))) for x in prompt_ids for _ in range(n)]
        budget = max(limit_list, default=0)
        limits = torch.tensor(limit_list, dtype=torch.long, device=dev)
        eos, pad_id = tok.eos_token_id, tok.pad_token_id
        eos = -1 if eos is None else eos
        vocab = logits.shape[-1]
        k_top = min(top_logprobs, vocab) if top_logprobs else 0
        tokens = torch.full((rows, max(budget, 1)), pad_id, dtype=torch.long, device=dev)
        token_lp = torch.zeros((rows, max(budget, 1)), dtype=torch.float32, device=dev)
        top_v = torch.zeros((rows, max(budget, 1), k_top), dtype=torch.float32, device=dev) if k_top else None
        top_i = torch.zeros((rows, max(budget, 1), k_top), dtype=torch.long, device=dev) if k_top else None
        n_kept = torch.zeros(rows, dtype=torch.long, device=dev)
        certainty = torch.zeros(rows, dtype=torch.float64, device=dev)
        finish = torch.zeros(rows, dtype=torch.int8, device=dev)  # 0 running, 1 stop, 2 length
        active = torch.ones(rows, dtype=torch.bool, device=dev)
        stops = _StopChecker(tok, sp.stop, rows) if sp.stop else None
        # CPU: float64 noise over the full vocabulary, exactly as before (same bytes); accelerators:
        # float32 noise from the same integer hash, computed where the logits are
        noise_dtype = torch.float64 if dev.type == "cpu" else torch.float32
        next_pos = pos[:, -1]
        pos_cap = self.max_positions - 1 if self.max_positions else None
        log_v = math.log(vocab)
        for step in range(budget):
            logp = torch.log_softmax(logits.float(), dim=-1)
            # Self-certainty (Kang et al. 2025): KL(U || p) = -log V - mean_v log p_v, from full logits.
            kl = (-log_v - logp.mean(-1)).double()
            if sp.temperature == 0:
                nxt = logp.argmax(-1)
            else:
                scores = logp / sp.temperature
                if sp.top_p < 1.0:
                    scores = _top_p_mask(scores, sp.top_p)
                noise = gumbel_from_bits(noise_bits(keys, step, vocab), noise_dtype)
                nxt = (scores.to(noise_dtype) + noise).argmax(-1)
            hit_length = active & (step >= limits)
            hit_eos = active & ~hit_length & (nxt == eos)
            keep = active & ~hit_length & ~hit_eos
            finish = torch.where(hit_length, 2, torch.where(hit_eos, 1, finish)).to(torch.int8)
            tokens[:, step] = torch.where(keep, nxt, pad_id)
            token_lp[:, step] = logp.gather(-1, nxt[:, None])[:, 0]
            if k_top:
                v, i = logp.topk(k_top, dim=-1)
                top_v[:, step], top_i[:, step] = v, i
            certainty += torch.where(keep, kl, 0.0)
            n_kept += keep
            active = keep
            if stops is not None:
                hit = stops.update(nxt.tolist(), keep.tolist())
                if hit:
                    hit_t = torch.zeros(rows, dtype=torch.bool)
                    hit_t[hit] = True
                    hit_t = hit_t.to(dev)
                    finish = torch.where(hit_t, 1, finish).to(torch.int8)
                    active = active & ~hit_t
            if step == budget - 1 or not bool(active.any()):
                break  # the last step's logits would never be used
            nxt = torch.where(active, nxt, torch.full_like(nxt, pad_id))
            attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=-1)
            # a finished row is fed padding; its position stops at the context's end (a batch-mate
            # with a shorter prompt may run longer than it could: its own limit ended it)
            next_pos = next_pos + 1 if pos_cap is None else (next_pos + 1).clamp(max=pos_cap)
            out = self.model(input_ids=nxt[:, None], attention_mask=attn, position_ids=next_pos[:, None],
                             past_key_values=past, use_cache=True)
            past, logits = out.past_key_values, out.logits[:, -1, :]
        # one transfer of the whole batch's results
        n_kept_l, finish_l = n_kept.tolist(), finish.tolist()
        tokens_l, lp_l = tokens.tolist(), token_lp.tolist()
        certainty = certainty.cpu()
        if k_top:
            top_v_l, top_i_l = top_v.tolist(), top_i.tolist()
        results: list[list[Completion]] = []
        for i in range(len(prompt_ids)):
            group = []
            for j in range(n):
                r = i * n + j
                k = n_kept_l[r]
                ids, lp = tokens_l[r][:k], lp_l[r][:k]
                text = tok.decode(ids, skip_special_tokens=True)
                if sp.stop:
                    cut = min((text.find(s) for s in sp.stop if s in text), default=-1)
                    if cut >= 0:
                        text = text[:cut]
                extra = {}
                if k_top:
                    extra["top_logprobs"] = [{tok.convert_ids_to_tokens(t_): v for t_, v in zip(top_i_l[r][s], top_v_l[r][s])}
                                             for s in range(k)]
                group.append(Completion(
                    text=text, token_ids=ids, logprobs=lp, finish_reason="stop" if finish_l[r] == 1 else "length",
                    self_certainty=float(certainty[r] / len(ids)) if ids else None, extra=extra,
                ))
            results.append(group)
        return results

    # ---- score ---------------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[float]:
        """Sum of log-probs of each continuation's tokens given its prompt.

        Prompt and continuation are tokenized together, as the model sees the joined text (see
        `continuation_token_span`): a token straddling the boundary (a BPE " A" after a prompt ending
        in a space) belongs to the continuation. A continuation with no token, or an item longer
        than the context, raises ValueError (`base.context_check` tells beforehand).
        """
        spans = scored_spans(self.tokenizer, prompts, continuations, add_special_tokens=False)
        seqs = [ids for ids, _ in spans]
        for k, ids in enumerate(seqs):
            if self.max_positions and len(ids) > self.max_positions:  # callers check with context_check
                raise ValueError(f"score: item {k} has {len(ids)} tokens; the context is {self.max_positions}")
        out: list[float] = [0.0] * len(seqs)
        # as in the prefill: where the vocabulary is large or off the CPU, the lm_head and log-softmax
        # run only over the continuation's window (left padding puts every continuation at the end),
        # not over every prompt position ([rows, width, vocab] floats: GBs for a 49k vocabulary at
        # ~200-token chat prompts, and most of the time; benchmarks/scoring.py); the tiny policy keeps
        # the full call, whose bytes every earlier run produced
        dev = next(self.model.parameters()).device
        large_vocab = (getattr(self.model.config, "vocab_size", 0) or 0) > self.FULL_LOGITS_MAX_VOCAB
        windowed = (dev.type != "cpu" or large_vocab) and self._takes_logits_to_keep()
        for width, chunk in self._chunks([len(s) for s in seqs], self.batch_size):
            ids, attn = self._left_pad([seqs[j] for j in chunk], width)
            pos = (attn.cumsum(-1) - 1).clamp(min=0)
            n_cont = [len(seqs[j]) - spans[j][1] for j in chunk]
            # logits of the last `keep` positions predict the last keep-1 tokens (the continuations)
            keep = min(width, max(n_cont) + 1) if windowed else width
            extra = {"logits_to_keep": keep} if windowed else {}
            logits = self.model(input_ids=ids, attention_mask=attn, position_ids=pos, **extra).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            tok_lp = logp.gather(-1, ids[:, width - keep + 1:, None])[..., 0].cpu()
            for r, n_c in enumerate(n_cont):
                out[chunk[r]] = float(tok_lp[r, keep - 1 - n_c:].sum())
        return out


def _top_p_mask(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    probs = torch.softmax(scores, dim=-1)
    sorted_p, idx = probs.sort(dim=-1, descending=True)
    cum = sorted_p.cumsum(-1)
    drop_sorted = cum - sorted_p > top_p  # keep the smallest set whose mass reaches top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, idx, drop_sorted)
    return scores.masked_fill(drop, float("-inf"))


class _StopChecker:
    """Incremental stop-string checks: per step, only the newest tokens' tail window is decoded
    (never the whole text), and a hit is confirmed on the full text once, so the stop decision is
    the same as checking the whole decoded text every step, as long as a stop string spans fewer
    than `window` tokens."""

    def __init__(self, tokenizer, stop: Sequence[str], rows: int, window: int | None = None):
        self.tok, self.stop = tokenizer, tuple(stop)
        self.window = window or max(16, 4 * max(len(s) for s in self.stop) + 4)
        self.gen: list[list[int]] = [[] for _ in range(rows)]

    def update(self, new_tokens: list[int], kept: list[bool]) -> list[int]:
        """Append each kept row's new token; the rows whose text now contains a stop string."""
        hits = []
        for r, (t, k) in enumerate(zip(new_tokens, kept)):
            if not k:
                continue
            g = self.gen[r]
            g.append(t)
            tail = self.tok.decode(g[-self.window:], skip_special_tokens=True)
            if any(s in tail for s in self.stop):
                full = tail if len(g) <= self.window else self.tok.decode(g, skip_special_tokens=True)
                if any(s in full for s in self.stop):
                    hits.append(r)
        return hits
