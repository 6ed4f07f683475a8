"""The UPO estimator on a real pretrained causal LM (SmolLM2-135M, Llama architecture, BPE):
features of the right width, a head that trains, MC probabilities in [0, 1], the score-head
estimator with dropout, and the pairs stage resolving a policy.json to the real model. Seconds."""

import json
import time

import numpy as np
import pytest
import torch

from prefsynth.transforms import upo

# a handful of tiny synthetic pairs (~20 tokens each): right and wrong worked answers
PROBLEMS = [(3, 4), (5, 2), (6, 1), (2, 2)]


def _pairs():
    out = []
    for a, b in PROBLEMS:
        prompt = f"Q: what is {a}+{b}? Think step by step.\n"
        right = f"{a}+{b}={a + b}\nA: {a + b}\n"
        wrong = f"{a}+{b}={a + b + 1}\nA: {a + b + 1}\n"
        out.append((prompt, right, wrong))
    return out


@pytest.fixture(scope="module")
def smol(smollm2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    return AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32), AutoTokenizer.from_pretrained(smollm2)


def test_features_head_and_mc_probabilities_on_smollm2(smol):
    lm, tok = smol
    t0 = time.perf_counter()
    pairs = _pairs()
    items = sorted({(p, side) for p, c, r in pairs for side in (c, r)})
    index = {t: i for i, t in enumerate(items)}
    feats = upo.policy_features(lm, tok, items, batch_size=4, max_length=32)
    assert lm.config.hidden_size == 576
    assert feats.shape == (len(items), upo.N_LOGPROB_FEATURES + 2 * 576) and np.isfinite(feats).all()
    assert (feats[:, 0] < 0).all()  # mean completion-token log-prob
    # rows per forward capped by the logits budget: the same features, batch of one
    one = upo.policy_features(lm, tok, items[:3], batch_size=4, max_length=32, max_batch_logits=1)
    assert np.allclose(one, feats[[index[t] for t in items[:3]]], atol=1e-4)
    # truncated from the left: the answer end is kept
    short = upo.policy_features(lm, tok, items[:1], batch_size=4, max_length=8)
    assert short.shape == (1, feats.shape[1]) and np.isfinite(short).all()

    examples = [(p, c, r, 1) for p, c, r in pairs] + [(p, r, c, 0) for p, c, r in pairs]
    a = [index[(e[0], e[1])] for e in examples]
    b = [index[(e[0], e[2])] for e in examples]
    head = upo.PairClassifier(feats.shape[1], hidden=16, dropout=0.3, seed=0)
    acc = head.fit(feats, a, b, [e[3] for e in examples], steps=40, batch_size=8, learning_rate=3e-3,
                   weight_decay=0.0, seed=0)
    assert acc >= 0.75  # 8 examples of ~1k features: the head fits them
    ci = [index[(p, c)] for p, c, _ in pairs]
    ri = [index[(p, r)] for p, _, r in pairs]
    mc = head.mc_probabilities(feats, ci, ri, passes=2, seed=0)
    assert mc.shape == (2, len(pairs)) and ((mc >= 0) & (mc <= 1)).all()
    mean, var, bald, agree = upo.uncertainty(mc)
    assert mean.shape == var.shape == bald.shape == agree.shape == (len(pairs),)
    assert time.perf_counter() - t0 < 60


def test_score_head_estimator_loads_a_llama_with_dropout(smollm2):
    model, tok = upo.build_estimator(smollm2, dropout=0.3, seed=0)
    assert type(model).__name__ == "LlamaForSequenceClassification"
    assert model.config.num_labels == 1 and model.config.pad_token_id == tok.pad_token_id is not None
    assert model.config.attention_dropout == 0.3
    texts = [upo.estimator_text(p, c, tok.eos_token) for p, c, _ in _pairs()[:2]]
    r = upo.mc_dropout_rewards(model, tok, texts, passes=2, seed=1, batch_size=2, max_length=24)
    assert r.shape == (2, 2) and np.isfinite(r).all()
    assert np.ptp(r, axis=0).min() > 0  # dropout on: the passes differ
    off = upo.mc_dropout_rewards(model, tok, texts, passes=2, seed=1, batch_size=2, max_length=24, dropout_on=False)
    assert np.ptp(off, axis=0).max() == 0
    assert np.array_equal(r, upo.mc_dropout_rewards(model, tok, texts, passes=2, seed=1, batch_size=2, max_length=24))


def test_pairs_stage_scores_pairs_with_a_real_policy(smollm2, tmp_path):
    from prefsynth.config import UPOConfig

    cfg = UPOConfig(passes=2, head_steps=20, head_hidden=16, batch_size=8, score_batch_size=4, max_length=32,
                    torch_threads=2)
    rows = [{"pair_id": f"x{i}", "prompt_id": f"p{i}", "prompt": p, "chosen": c, "rejected": r}
            for i, (p, c, r) in enumerate(_pairs())]
    scores, info = upo.score_pairs(rows, rows[:2], smollm2, cfg, 0, str(tmp_path))
    assert set(scores) == {r["pair_id"] for r in rows}
    assert all(0 <= s[0] <= 1 and s[2] >= 0 for s in scores.values())
    assert info["passes"] == 2 and info["train_examples"] == 4


def test_pairs_main_resolves_policy_json_to_the_real_model(smollm2, tmp_path, monkeypatch):
    from prefsynth.pipelines import pairs as pairs_stage
    from prefsynth.schemas.io import records_to_table, write_table

    policy_dir = tmp_path / "policy-0"
    policy_dir.mkdir()
    (policy_dir / "policy.json").write_text(json.dumps({"model": smollm2}))
    prompt = {"prompt_id": "p0", "split": "train", "task": "arith", "prompt": "Q: 1+1=?\n", "source": "t",
              "messages": [{"role": "user", "content": "Q: 1+1=?\n"}], "reference_answer": "2"}
    write_table(records_to_table([prompt], "prompts", "t"), str(tmp_path / "prompts" / "part-00000-of-00001.parquet"))
    write_table(records_to_table([{"response_id": "r0", "prompt_id": "p0", "text": "A: 2\n", "steps": ["A: 2"],
                                   "final_answer": "2", "mean_logprob": -0.1, "self_certainty": 1.0, "policy": "p",
                                   "iteration": 0, "sample_index": 0, "n_tokens": 1, "finish_reason": "stop",
                                   "source": "t"}], "responses", "t"),
                str(tmp_path / "responses" / "part-00000-of-00001.parquet"))
    (tmp_path / "cand").mkdir()
    seen = {}

    class Stop(Exception):
        pass

    def fake_plan(candidates, prompts, responses, params, policy, unpaired):
        seen["policy"] = policy
        raise Stop

    monkeypatch.setattr(pairs_stage, "feature_plan", fake_plan)
    with pytest.raises(Stop):
        pairs_stage.main(["--params", str(pairs_stage.__file__).replace("prefsynth/pipelines/pairs.py", "params.yaml"),
                    "--prompts", str(tmp_path / "prompts"), "--responses", str(tmp_path / "responses"),
                    "--candidates", str(tmp_path / "cand"), "--policy", str(policy_dir)])
    assert seen["policy"] == smollm2
