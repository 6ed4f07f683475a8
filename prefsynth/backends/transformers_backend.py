"""Transformers backend: any local causal LM, CPU or CUDA, batched, left-padded.

Decoding is a plain loop over the KV cache so that every row can have its own seed: the
sampling noise for (seed, position, token) comes from a counter-based hash, not from a shared
torch generator, so a request's samples do not depend on which batch it landed in. The `n`
samples of a prompt share one prefill (the prompt's KV cache is computed once and repeated).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefsynth.backends.base import Completion, SamplingParams
from prefsynth.ids import seed_for

_M32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash on int64 tensors holding values in [0, 2^32); never overflows int64."""
    x = x ^ (x >> 16)
    x = (x * 0x45D9F3B) & _M32
    x = x ^ (x >> 16)
    x = (x * 0x45D9F3B) & _M32
    return x ^ (x >> 16)


def gumbel_noise(seeds: torch.Tensor, step: int, vocab_size: int) -> torch.Tensor:
    """Gumbel(0, 1) noise of shape [rows, vocab], a pure function of (row seed, step, token id)."""
    lo = (seeds & _M32)[:, None]
    hi = ((seeds >> 32) & _M32)[:, None]
    tok = torch.arange(vocab_size, dtype=torch.int64)[None, :]
    x = _mix32(_mix32(_mix32(lo) ^ hi) ^ step)
    x = _mix32(x ^ tok)
    u = (x.double() + 0.5) / 4294967296.0
    return -torch.log(-torch.log(u))


def sample_seed(request_seed: int, index: int) -> int:
    return seed_for(request_seed, str(index), "sample") >> 1


class TransformersBackend:
    name = "transformers"
    MIN_ROWS = 8

    def __init__(self, model_path: str, device: str | None = None, batch_size: int = 256,
                 torch_dtype: str | None = None, model=None, tokenizer=None, pad_multiple: int = 32):
        self.model_path = model_path
        # Every sequence is left-padded to a multiple of `pad_multiple` fixed by its own length,
        # never by its batch-mates: the kernels then see the same shapes for a prompt whatever
        # batch it is in, and its log-probs are bit-identical (not just close) across batchings.
        self.pad_multiple = pad_multiple
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = batch_size
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = getattr(torch, torch_dtype) if torch_dtype else None
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
        for width, idx in self._buckets([len(x) for x in ids]):
            for i in range(0, len(idx), per_batch):
                chunk = idx[i:i + per_batch]
                # CPU GEMM kernels pick a different path for 1-3 rows, which changes the last bits
                # of decode-step logits: pad tiny batches with a copy so every call has >= MIN_ROWS.
                pad = max(0, -(-self.MIN_ROWS // sampling.n) - len(chunk))
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

    def _left_pad(self, seqs: list[list[int]], width: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.full((len(seqs), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for r, s in enumerate(seqs):
            if s:
                ids[r, width - len(s):] = torch.tensor(s)
                attn[r, width - len(s):] = 1
        return ids.to(self.device), attn.to(self.device)

    @torch.no_grad()
    def _generate_batch(self, prompt_ids: list[list[int]], width: int, sp: SamplingParams, seeds: list[int],
                        top_logprobs: int = 0) -> list[list[Completion]]:
        tok, n = self.tokenizer, sp.n
        input_ids, attn = self._left_pad(prompt_ids, width)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=input_ids, attention_mask=attn, position_ids=pos, use_cache=True)
        past, logits = out.past_key_values, out.logits[:, -1, :]
        if n > 1:  # one prefill per prompt, shared by its n samples
            past.batch_repeat_interleave(n)
            logits = logits.repeat_interleave(n, 0)
            attn = attn.repeat_interleave(n, 0)
            pos = pos.repeat_interleave(n, 0)
        rows = len(prompt_ids) * n
        row_seeds = torch.tensor([sample_seed(s, j) for s in seeds for j in range(n)], dtype=torch.int64)
        # each row's own token budget: the context left after its own prompt, never its batch-mates'
        limits = [sp.max_new_tokens if not self.max_positions else
                  max(0, min(sp.max_new_tokens, self.max_positions - len(x))) for x in prompt_ids for _ in range(n)]
        budget = max(limits, default=0)
        eos = tok.eos_token_id
        gen: list[list[int]] = [[] for _ in range(rows)]
        lps: list[list[float]] = [[] for _ in range(rows)]
        tops: list[list[dict[str, float]]] = [[] for _ in range(rows)]
        certainty = torch.zeros(rows, dtype=torch.float64)
        finish: list[str | None] = [None] * rows
        texts: list[str] = [""] * rows
        next_pos = pos[:, -1]
        vocab = logits.shape[-1]
        for step in range(max(budget, 0)):
            logp = torch.log_softmax(logits.float(), dim=-1)
            # Self-certainty (Kang et al. 2025): KL(U || p) = -log V - mean_v log p_v, from full logits.
            kl = (-math.log(vocab) - logp.mean(-1)).double().cpu()
            if sp.temperature == 0:
                nxt = logp.argmax(-1)
            else:
                scores = logp / sp.temperature
                if sp.top_p < 1.0:
                    scores = _top_p_mask(scores, sp.top_p)
                nxt = (scores.double().cpu() + gumbel_noise(row_seeds, step, vocab)).argmax(-1).to(logp.device)
            chosen_lp = logp.gather(-1, nxt[:, None])[:, 0].cpu().tolist()
            if top_logprobs:
                top_v, top_i = logp.topk(min(top_logprobs, vocab), dim=-1)
                top_v, top_i = top_v.cpu().tolist(), top_i.cpu().tolist()
            nxt_list = nxt.cpu().tolist()
            for r in range(rows):
                if finish[r] is not None:
                    continue
                t = nxt_list[r]
                if step >= limits[r]:
                    finish[r] = "length"
                    continue
                if t == eos:
                    finish[r] = "stop"
                    continue
                gen[r].append(t)
                lps[r].append(chosen_lp[r])
                if top_logprobs:
                    tops[r].append({tok.convert_ids_to_tokens(t_): v for t_, v in zip(top_i[r], top_v[r])})
                certainty[r] += kl[r]
                if sp.stop:
                    texts[r] = tok.decode(gen[r], skip_special_tokens=True)
                    if any(s in texts[r] for s in sp.stop):
                        finish[r] = "stop"
            if all(f is not None for f in finish):
                break
            nxt = torch.where(torch.tensor([f is None for f in finish], device=nxt.device), nxt,
                              torch.full_like(nxt, tok.pad_token_id))
            attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=-1)
            next_pos = next_pos + 1
            out = self.model(input_ids=nxt[:, None], attention_mask=attn, position_ids=next_pos[:, None],
                             past_key_values=past, use_cache=True)
            past, logits = out.past_key_values, out.logits[:, -1, :]
        results: list[list[Completion]] = []
        for i in range(len(prompt_ids)):
            group = []
            for j in range(n):
                r = i * n + j
                text = tok.decode(gen[r], skip_special_tokens=True)
                ids, lp = gen[r], lps[r]
                if sp.stop:
                    cut = min((text.find(s) for s in sp.stop if s in text), default=-1)
                    if cut >= 0:
                        text = text[:cut]
                group.append(Completion(
                    text=text, token_ids=ids, logprobs=lp, finish_reason=finish[r] or "length",
                    self_certainty=float(certainty[r] / len(ids)) if ids else None,
                    extra={"top_logprobs": tops[r]} if top_logprobs else {},
                ))
            results.append(group)
        return results

    # ---- score ---------------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[float]:
        """Sum of log-probs of each continuation's tokens given its prompt.

        Prompt and continuation are tokenized together, as the model sees the joined text (see
        `continuation_token_span`): a token straddling the boundary (a BPE " A" after a prompt ending
        in a space) belongs to the continuation. A continuation with no token raises ValueError.
        """
        spans = scored_spans(self.tokenizer, prompts, continuations, add_special_tokens=False)
        seqs = [ids for ids, _ in spans]
        out: list[float] = [0.0] * len(seqs)
        for width, idx in self._buckets([len(s) for s in seqs]):
            for i in range(0, len(idx), self.batch_size):
                chunk = idx[i:i + self.batch_size]
                ids, attn = self._left_pad([seqs[j] for j in chunk], width)
                pos = (attn.cumsum(-1) - 1).clamp(min=0)
                logits = self.model(input_ids=ids, attention_mask=attn, position_ids=pos).logits.float()
                logp = torch.log_softmax(logits[:, :-1], dim=-1)
                tok_lp = logp.gather(-1, ids[:, 1:, None])[..., 0].cpu()
                for r, j in enumerate(chunk):
                    n_c = len(seqs[j]) - spans[j][1]
                    out[j] = float(tok_lp[r, width - 1 - n_c:].sum())
        return out


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


def _top_p_mask(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    probs = torch.softmax(scores, dim=-1)
    sorted_p, idx = probs.sort(dim=-1, descending=True)
    cum = sorted_p.cumsum(-1)
    drop_sorted = cum - sorted_p > top_p  # keep the smallest set whose mass reaches top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, idx, drop_sorted)
    return scores.masked_fill(drop, float("-inf"))
