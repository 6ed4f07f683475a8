"""score() with a real BPE tokenizer (SmolLM2): prompt and continuation tokenized together, the
continuation located by character offsets, so a token straddling the boundary (" A" after a prompt
ending in "[RESULT] ") is scored, and a continuation with no token is an error, never a silent 0."""

import math
import sys
import types

import pytest
import torch

from prefsynth.backends.spans import continuation_token_span, scored_spans
from prefsynth.backends.transformers_backend import TransformersBackend

PAIRWISE = "Which response is better, A or B? Answer with the letter.\n[RESULT] "
YES_NO = "Question: is 2+2 equal to 4? Answer yes or no.\nAnswer:"
RATING = "Rate the answer from 1 to 5.\nScore: "


@pytest.fixture(scope="module")
def bpe(smollm2):
    torch.set_num_threads(1)
    return TransformersBackend(smollm2, device="cpu", batch_size=8)


def test_joint_tokenization_and_the_straddling_token(bpe):
    tok = bpe.tokenizer
    ids, first = continuation_token_span(tok, PAIRWISE, "A")
    assert ids == tok(PAIRWISE + "A", add_special_tokens=False)["input_ids"]
    # BPE merges the prompt's trailing space into " A": that token is the continuation's
    assert tok.convert_ids_to_tokens(ids[first:]) == ["ĠA"]
    assert ids[:first] == tok(PAIRWISE[:-1], add_special_tokens=False)["input_ids"]
    # separate tokenization would not be the text the model sees
    sep = tok(PAIRWISE, add_special_tokens=False)["input_ids"] + tok("A", add_special_tokens=False)["input_ids"]
    assert sep != ids
    ids2, first2 = continuation_token_span(tok, YES_NO, " yes")
    assert ids2 == tok(YES_NO + " yes", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids2[first2:]) == " yes" and ids2[:first2] == tok(YES_NO, add_special_tokens=False)["input_ids"]


def test_pairwise_letters_score_differently_and_never_zero(bpe):
    a, b = bpe.score([PAIRWISE, PAIRWISE], ["A", "B"])
    assert a < 0 and b < 0 and a != b
    assert math.exp(a) + math.exp(b) <= 1 + 1e-6
    # the score is the straddling token's log-prob given the tokens before it
    ids, first = continuation_token_span(bpe.tokenizer, PAIRWISE, "A")
    with torch.no_grad():
        logp = torch.log_softmax(bpe.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    assert a == pytest.approx(float(logp[first - 1, ids[first]]), abs=1e-4)


@pytest.mark.parametrize("prompt,options", [(YES_NO, [" yes", " no"]), (RATING, ["1", "2", "3", "4", "5"])])
def test_option_distributions_normalise_sensibly(bpe, prompt, options):
    lp = bpe.score([prompt] * len(options), options)
    assert all(x < 0 for x in lp)
    assert sum(math.exp(x) for x in lp) <= 1 + 1e-6  # distinct first tokens: disjoint events
    assert len(set(lp)) == len(lp)


def test_batch_equals_one_at_a_time(bpe):
    prompts = [PAIRWISE, PAIRWISE, YES_NO, RATING, "Q: 3+4=?\nA:"]
    conts = ["A", "B", " yes", "4", " 7, because 3+4 is 7"]
    batch = bpe.score(prompts, conts)
    for p, c, x in zip(prompts, conts, batch):
        assert bpe.score([p], [c])[0] == pytest.approx(x, abs=1e-4)


def test_a_continuation_without_tokens_is_an_error(bpe):
    with pytest.raises(ValueError, match="no tokens"):
        bpe.score([PAIRWISE, YES_NO], ["A", ""])
    with pytest.raises(ValueError, match="one continuation per prompt"):
        bpe.score([PAIRWISE], ["A", "B"])


def test_char_tokenizer_spans_are_the_separate_tokenizations(tmp_path):
    from helpers import tiny_random_policy
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_random_policy(tmp_path / "p"))
    for p, c in [("Q: 1+2=?\n", "1+2=3"), ("Is it right? ", "yes"), ("x", "A")]:
        ids, first = continuation_token_span(tok, p, c)
        p_ids = tok(p, add_special_tokens=False)["input_ids"]
        assert ids == p_ids + tok(c, add_special_tokens=False)["input_ids"] and first == len(p_ids)


class _SlowTokenizer:
    """A tokenizer without offsets (like a slow, sentencepiece one): the common-prefix fallback."""

    is_fast = False

    def __init__(self, tok):
        self.tok = tok

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": self.tok(text, add_special_tokens=add_special_tokens)["input_ids"]}


def test_slow_tokenizer_fallback_finds_the_same_span(bpe):
    slow = _SlowTokenizer(bpe.tokenizer)
    for p, c in [(PAIRWISE, "A"), (YES_NO, " no"), (RATING, "3"), ("Q: 3+4=?\nA:", " 7")]:
        assert continuation_token_span(slow, p, c) == continuation_token_span(bpe.tokenizer, p, c)


def test_vllm_score_sends_the_located_tokens_and_sums_their_prompt_logprobs(bpe, monkeypatch):
    """VLLMBackend.score against a stand-in for vllm.LLM that answers prompt_logprobs from the
    transformers model: same numbers as the transformers backend (vLLM itself is not installed here)."""
    from prefsynth.backends.vllm_backend import VLLMBackend

    fake = types.ModuleType("vllm")
    fake_inputs = types.ModuleType("vllm.inputs")

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    def TokensPrompt(prompt_token_ids):  # noqa: N802 - vLLM's TypedDict
        return {"prompt_token_ids": prompt_token_ids}

    fake.SamplingParams, fake_inputs.TokensPrompt, fake.inputs = SamplingParams, TokensPrompt, fake_inputs
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setitem(sys.modules, "vllm.inputs", fake_inputs)
    seen = []

    class LLM:
        def generate(self, requests, params, use_tqdm=False):
            assert params.kw["max_tokens"] == 1 and params.kw["prompt_logprobs"] == 0
            outs = []
            for req in requests:
                ids = req["prompt_token_ids"]
                seen.append(ids)
                with torch.no_grad():
                    logp = torch.log_softmax(bpe.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
                Lp = types.SimpleNamespace
                plp = [None] + [{ids[i]: Lp(logprob=float(logp[i - 1, ids[i]]))} for i in range(1, len(ids))]
                outs.append(types.SimpleNamespace(prompt_token_ids=ids, prompt_logprobs=plp))
            return outs

    v = VLLMBackend.__new__(VLLMBackend)
    v.llm, v.tokenizer, v.max_positions = LLM(), bpe.tokenizer, 2048
    prompts, conts = [PAIRWISE, PAIRWISE, YES_NO], ["A", "B", " yes"]
    got = v.score(prompts, conts)
    # tokenized as the transformers backend does (no special tokens added), sent as exactly those ids
    assert seen == [ids for ids, _ in scored_spans(bpe.tokenizer, prompts, conts, add_special_tokens=False)]
    assert got == pytest.approx(bpe.score(prompts, conts), abs=1e-4)
    with pytest.raises(ValueError, match="no tokens"):
        v.score([PAIRWISE], [""])


def test_windowed_scores_equal_the_full_logits_sum(bpe):
    """On a 49k vocabulary the lm_head runs only over the continuation window (logits_to_keep); the
    scores equal the sum of log-softmax over the full logits of every position, for continuations of
    different lengths after prompts of different lengths in one left-padded batch."""
    prompts = [YES_NO, PAIRWISE, RATING + "The answer was fine, well argued, and I would say ", "Hi"]
    conts = [" yes", "A", "4 out of 5, because it shows every step", " there, how are you today?"]
    got = bpe.score(prompts, conts)
    for p, c, g in zip(prompts, conts, got):
        ids, first = continuation_token_span(bpe.tokenizer, p, c)
        with torch.no_grad():
            logits = bpe.model(input_ids=torch.tensor([ids])).logits[0].float()
        lp = torch.log_softmax(logits[:-1], dim=-1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
        assert g == pytest.approx(float(lp[first - 1:].sum()), abs=2e-3), (p, c)
    assert len({round(x, 2) for x in got}) == 4 and all(x < 0 for x in got)
