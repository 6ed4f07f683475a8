"""Backend protocol conformance: transformers in-process, and the OpenAI-compatible HTTP path
against a real server process."""

import math

import pytest
import torch

from prefsynth.backends import SamplingParams
from prefsynth.backends.openai_backend import GenerationFailure, OpenAIBackend, self_certainty_from_top_k
from prefsynth.backends.noise import gumbel_noise
from prefsynth.backends.transformers_backend import TransformersBackend

from helpers import FailingServer, ServeProcess, tiny_random_policy

PROMPTS = ["Q: 1+2=?\n", "Q: (20-3-8)*4=?\n", "Q: 7*8-5=?\n", "Q: 99+1+1=?\n", "Q: 5-5=?\n"]


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    return tiny_random_policy(tmp_path_factory.mktemp("policy") / "policy-0")


@pytest.fixture(scope="module")
def backend(policy_dir):
    return TransformersBackend(policy_dir, device="cpu", batch_size=64)


def _texts(groups):
    return [[c.text for c in g] for g in groups]


def test_generate_shape_logprobs_and_finish(backend):
    sp = SamplingParams(n=3, temperature=1.0, max_new_tokens=12)
    out = backend.generate(PROMPTS, sp, seeds=list(range(len(PROMPTS))))
    assert len(out) == len(PROMPTS) and all(len(g) == 3 for g in out)
    for g in out:
        for c in g:
            assert len(c.logprobs) == c.n_tokens <= 12
            assert all(lp <= 0 for lp in c.logprobs)
            assert c.finish_reason in ("stop", "length")
            assert c.n_tokens == 12 or c.finish_reason == "stop"
            assert c.self_certainty is None or c.self_certainty >= 0  # KL is non-negative
    # samples of one prompt differ (an untrained model at T=1 is near uniform)
    assert len({c.text for c in out[0]}) > 1


def test_samples_do_not_depend_on_the_batch(backend):
    sp = SamplingParams(n=4, temperature=0.9, top_p=0.95, max_new_tokens=10)
    seeds = [11, 22, 33, 44, 55]
    together = _texts(backend.generate(PROMPTS, sp, seeds))
    alone = [_texts(backend.generate([p], sp, [s]))[0] for p, s in zip(PROMPTS, seeds)]
    reordered = _texts(backend.generate(PROMPTS[::-1], sp, seeds[::-1]))[::-1]
    small_batches = TransformersBackend(backend.model_path, batch_size=4).generate(PROMPTS, sp, seeds)
    assert together == alone == reordered == _texts(small_batches)
    assert _texts(backend.generate(PROMPTS, sp, [s + 1 for s in seeds])) != together


def test_per_call_padding_gives_the_same_samples_in_input_order(backend):
    """batch_invariant=False sorts a call by length and pads each chunk to its longest prompt: the
    results come back in input order, equal (texts) and close (log-probs) to the per-prompt padding,
    and a repeated call gives the same bytes."""
    from prefsynth.backends.factory import make_backend
    from prefsynth.config import PolicyConfig

    sp = SamplingParams(n=2, temperature=0.9, max_new_tokens=10)
    seeds = [11, 22, 33, 44, 55]
    per_call = TransformersBackend(backend.model_path, batch_size=4, model=backend.model, tokenizer=backend.tokenizer,
                                   batch_invariant=False)
    assert [w for w, _ in per_call._chunks([9, 3, 9, 5, 1], 2)] == [3, 9, 9]  # sorted by length, own widths
    ours, again = per_call.generate(PROMPTS, sp, seeds), per_call.generate(PROMPTS, sp, seeds)
    ref = backend.generate(PROMPTS, sp, seeds)
    assert _texts(ours) == _texts(ref) == _texts(again)
    for g, h, r in zip(ours, again, ref):
        for c, d, e in zip(g, h, r):
            assert c.logprobs == d.logprobs
            assert c.logprobs == pytest.approx(e.logprobs, abs=1e-4)
    conts = [" 3", " 36", " 51", " 101", " 0"]
    assert per_call.score(PROMPTS, conts) == pytest.approx(backend.score(PROMPTS, conts), abs=1e-4)
    assert make_backend(PolicyConfig(batch_invariant=False), backend.model_path).batch_invariant is False


def test_greedy_matches_transformers_generate(backend):
    sp = SamplingParams(n=1, temperature=0.0, max_new_tokens=8)
    ours = [g[0].text for g in backend.generate(PROMPTS, sp)]
    tok, model = backend.tokenizer, backend.model
    for p, text in zip(PROMPTS, ours):
        enc = tok([p], return_tensors="pt", add_special_tokens=False)
        ref = model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
        assert tok.decode(ref[0][enc["input_ids"].shape[1]:], skip_special_tokens=True).startswith(text)


def test_stop_strings_end_the_text_before_them(backend):
    sp = SamplingParams(n=4, temperature=1.0, max_new_tokens=30, stop=("\n", "="))
    for g in backend.generate(PROMPTS, sp, seeds=[1, 2, 3, 4, 5]):
        for c in g:
            assert "\n" not in c.text and "=" not in c.text


def test_score_is_the_sum_of_token_logprobs(backend):
    tok, model = backend.tokenizer, backend.model
    prompt, cont = "Q: 1+2=?\n", "1+2=3"
    ids = tok(prompt + cont, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].float(), -1)
    n_p = len(tok(prompt, add_special_tokens=False)["input_ids"])
    want = sum(float(logp[k - 1, ids[0, k]]) for k in range(n_p, ids.shape[1]))
    got = backend.score([prompt, "Q: 5-5=?\n"], [cont, "yes"])
    assert math.isclose(got[0], want, rel_tol=1e-4)
    # batching with a different-length neighbour does not change a score
    assert math.isclose(backend.score([prompt], [cont])[0], got[0], rel_tol=1e-4)


def test_a_prompt_longer_than_the_context_gets_empty_length_completions(tmp_path):
    """Not an IndexError that fails the whole batch (the round-3 MCTS crash): such a prompt gets
    empty `length` completions as in the vLLM backend, its batch-mates the samples they get alone;
    `score` names the item that does not fit, and `context_check` tells beforehand."""
    from prefsynth.backends.base import context_check

    short = TransformersBackend(tiny_random_policy(tmp_path / "p", n_positions=24), batch_size=64)
    long_prompt = "Q: " + "1+" * 20 + "1=?\n"  # 47 characters: over the 24-position context
    full = "Q: 12+34+56=?\n12+34=46\n\n"  # exactly 24: no room, stops at once
    sp = SamplingParams(n=2, temperature=1.0, max_new_tokens=6)
    out = short.generate([PROMPTS[0], long_prompt, full, PROMPTS[1]], sp, seeds=[1, 2, 3, 4])
    assert [(c.text, c.n_tokens, c.finish_reason) for c in out[1]] == [("", 0, "length")] * 2
    assert [(c.n_tokens, c.finish_reason) for c in out[2]] == [(0, "length")] * 2
    alone = [short.generate([p], sp, seeds=[s])[0] for p, s in ((PROMPTS[0], 1), (PROMPTS[1], 4))]
    assert _texts([out[0], out[3]]) == _texts(alone)
    fits = context_check(short)
    assert fits(full) and not fits(full + "y") and not fits(long_prompt)
    with pytest.raises(ValueError, match="item 1 has 50 tokens; the context is 24"):
        short.score([PROMPTS[0], long_prompt], ["A: 3", "yes"])


def test_gumbel_noise_is_a_function_of_seed_step_token():
    seeds = torch.tensor([1, 2, 1], dtype=torch.int64)
    a = gumbel_noise(seeds, 0, 50)
    assert torch.equal(a[0], a[2]) and not torch.equal(a[0], a[1])
    assert not torch.equal(gumbel_noise(seeds, 1, 50)[0], a[0])
    u = torch.exp(-torch.exp(-gumbel_noise(torch.arange(2000, dtype=torch.int64), 3, 40)))
    assert abs(float(u.mean()) - 0.5) < 0.01  # uniform underneath


def test_self_certainty_from_top_k_is_exact_with_the_full_vocab():
    probs = [0.7, 0.2, 0.1]
    top = {str(i): math.log(p) for i, p in enumerate(probs)}
    exact = -math.log(3) - sum(math.log(p) for p in probs) / 3
    assert math.isclose(self_certainty_from_top_k(top, 3), exact)
    assert self_certainty_from_top_k({"a": math.log(0.999)}, 1000) > self_certainty_from_top_k({"a": math.log(0.3)}, 1000)


def test_openai_backend_against_a_real_server(policy_dir, backend):
    with ServeProcess(policy_dir) as server:
        http = OpenAIBackend(server.base_url, server.name, max_concurrency=4, timeout_s=30, vocab_size=len(backend.tokenizer))
        sp = SamplingParams(n=2, temperature=0.9, max_new_tokens=10)
        out = http.generate(PROMPTS, sp, seeds=[5, 6, 7, 8, 9])
        assert all(isinstance(g, list) and len(g) == 2 for g in out)
        assert all(c.logprobs and c.self_certainty is not None for g in out for c in g)
        assert http.generate(PROMPTS, sp, seeds=[5, 6, 7, 8, 9])[0][0].text == out[0][0].text
        # same seeds, same samples; score through echo'd prompt log-probs equals the in-process score
        assert [round(x, 3) for x in http.score(PROMPTS[:2], ["1+2=3", "yes"])] == \
               [round(x, 3) for x in backend.score(PROMPTS[:2], ["1+2=3", "yes"])]
        assert http.stats["requests"] >= 10 and http.retries == 0


def test_openai_failures_become_failures_with_the_raw_body_after_retries():
    with FailingServer(status=503, body='{"error": "overloaded", "detail": "try later"}') as server:
        http = OpenAIBackend(server.base_url, "m", max_retries=2, timeout_s=5)
        out = http.generate(["Q: 1+1=?\n"], SamplingParams(n=1, max_new_tokens=4), seeds=[1])
        assert isinstance(out[0], GenerationFailure)
        assert out[0].error_type == "http_503" and "try later" in out[0].raw_output
        assert server.hits == 3 and http.retries == 2  # 1 try + 2 retries


def test_api_key_comes_from_the_environment_and_is_not_in_errors(monkeypatch):
    monkeypatch.setenv("PREFSYNTH_TEST_KEY", "sk-secret-123")
    with FailingServer(status=401, body='{"error": "bad key"}') as server:
        http = OpenAIBackend(server.base_url, "m", api_key_env="PREFSYNTH_TEST_KEY", max_retries=0)
        out = http.generate(["x"], SamplingParams(n=1, max_new_tokens=2), seeds=[0])
        assert isinstance(out[0], GenerationFailure)
        assert "sk-secret-123" not in out[0].message + (out[0].raw_output or "")
    assert "sk-secret-123" not in repr(http.__dict__)
