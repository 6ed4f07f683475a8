"""UPO: BALD against hand-computed values, seeded MC dropout, selection, and the pairs stage end to end."""

import math

import numpy as np
import pytest

from prefsynth.transforms import upo


def test_bald_mean_variance_against_hand_computed_values():
    p = np.array([[0.9, 0.5, 0.8], [0.1, 0.5, 0.8]])  # 2 passes x 3 pairs
    mean, var, bald, agree = upo.uncertainty(p)
    h = lambda q: -(q * math.log(q) + (1 - q) * math.log(1 - q))  # noqa: E731
    assert mean.tolist() == pytest.approx([0.5, 0.5, 0.8])
    assert var.tolist() == pytest.approx([0.16, 0.0, 0.0])
    # passes that disagree: H(0.5) - (H(0.9) + H(0.1)) / 2 = 0.6931 - 0.3251
    assert bald[0] == pytest.approx(h(0.5) - h(0.9)) and bald[0] == pytest.approx(0.3681, abs=1e-4)
    assert bald[1] == pytest.approx(0.0) and bald[2] == pytest.approx(0.0)  # unsure or sure, but consistent
    assert agree.tolist() == [0.5, 0.0, 1.0]


def test_select_drops_contradicted_pairs_and_samples_easy_or_hard_seeded():
    rng = np.random.default_rng(0)
    ids = [f"pair{i}" for i in range(400)]
    bald = rng.uniform(0, 0.69, 400)
    agree = np.where(np.arange(400) < 40, 0.25, 1.0)  # the first 40: most passes prefer the rejected side
    mean = np.full(400, 0.7)
    easy = upo.select(ids, mean, bald, agree, min_agree=0.5, keep_fraction=0.5, hard_fraction=0.0, seed=1)
    hard = upo.select(ids, mean, bald, agree, min_agree=0.5, keep_fraction=0.5, hard_fraction=1.0, seed=1)
    assert all(not d.kept and d.reason.startswith("contradicted") for d in easy[:40])
    assert sum(d.kept for d in easy) == sum(d.kept for d in hard) == 180  # half of the 360 uncontradicted
    kept_bald = lambda ds: np.mean([b for b, d in zip(bald, ds) if d.kept])  # noqa: E731
    assert kept_bald(easy) < np.mean(bald[40:]) < kept_bald(hard)
    # seeded and independent of row order
    again = upo.select(ids[::-1], mean[::-1], bald[::-1], agree[::-1], min_agree=0.5, keep_fraction=0.5,
                       hard_fraction=0.0, seed=1)
    assert [d.kept for d in again[::-1]] == [d.kept for d in easy]
    other = upo.select(ids, mean, bald, agree, min_agree=0.5, keep_fraction=0.5, hard_fraction=0.0, seed=2)
    assert [d.kept for d in other] != [d.kept for d in easy]


def test_mc_dropout_varies_with_dropout_on_and_is_reproducible_with_the_seed(tmp_path):
    from helpers import tiny_random_policy

    policy = tiny_random_policy(tmp_path / "policy")
    model, tok = upo.build_estimator(policy, dropout=0.3, seed=0)
    texts = ["Q: 1+2=?\n1+2=3\nA: 3\n", "Q: 1+2=?\n1+2=4\nA: 4\n", "Q: 5*3=?\n5*3=15\nA: 15\n"]
    a = upo.mc_dropout_rewards(model, tok, texts, passes=4, seed=7, batch_size=2)
    b = upo.mc_dropout_rewards(model, tok, texts, passes=4, seed=7, batch_size=2)
    c = upo.mc_dropout_rewards(model, tok, texts, passes=4, seed=8, batch_size=2)
    off = upo.mc_dropout_rewards(model, tok, texts, passes=3, seed=7, dropout_on=False)
    assert a.shape == (4, 3)
    assert np.array_equal(a, b)  # same seed, same numbers
    assert not np.allclose(a, c)  # another seed, other masks
    assert np.ptp(a, axis=0).min() > 0  # passes differ for every text: dropout is on
    assert np.ptp(off, axis=0).max() == 0  # dropout off: one deterministic answer
    p = upo.pair_probabilities(a, [0], [1])
    assert p.shape == (4, 1) and np.all((p > 0) & (p < 1))


def test_policy_features_see_the_policy_greedy_choice_and_each_claimed_result(tmp_path):
    import torch

    from helpers import tiny_random_policy
    from transformers import AutoModelForCausalLM, AutoTokenizer

    policy = tiny_random_policy(tmp_path / "policy")
    tok, lm = AutoTokenizer.from_pretrained(policy), AutoModelForCausalLM.from_pretrained(policy)
    prompt = "Q: 1+2=?\n"
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    allowed = tok("0123456789+=\nA: ", add_special_tokens=False)["input_ids"]
    with torch.no_grad():  # the policy's own greedy completion, restricted to arith characters
        for _ in range(8):
            logits = lm(input_ids=torch.tensor([ids])).logits[0, -1]
            ids.append(max(allowed, key=lambda t: float(logits[t])))
    greedy = tok.decode(ids[len(tok(prompt, add_special_tokens=False)["input_ids"]):])
    other = greedy[:-1] + ("7" if greedy[-1] != "7" else "8")
    f = upo.policy_features(lm, tok, [(prompt, greedy), (prompt, other), (prompt, "1+2=3\nA: 3\n")], batch_size=2)
    assert f.shape == (3, upo.N_LOGPROB_FEATURES + 2 * lm.config.n_embd)
    again = upo.policy_features(lm, tok, [(prompt, "1+2=3\nA: 3\n"), (prompt, greedy)], batch_size=1)
    assert np.allclose(again[0], f[2], atol=1e-5) and np.allclose(again[1], f[0], atol=1e-5)  # batching-free
    # greedy: no gap to the policy's choice, unless the policy preferred a token outside the allowed ones
    assert f[1, 3] < f[0, 3] <= 0 and f[1, 5] > 0  # changing the last token opens a gap there
    # mean log-prob agrees with a hand computation over the completion tokens
    full = tok(prompt + "1+2=3\nA: 3\n", add_special_tokens=False)["input_ids"]
    n = len(tok("1+2=3\nA: 3\n", add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        lp = lm(input_ids=torch.tensor([full])).logits[0, :-1].log_softmax(-1)
    tok_lp = lp[torch.arange(len(full) - 1), torch.tensor(full[1:])][-n:]
    assert f[2, 0] == pytest.approx(float(tok_lp.mean()), abs=1e-5)
    assert f[2, 2] == pytest.approx(float(tok_lp.sum()), abs=1e-4)
    # claimed results: '3\n' after '=' and ' 3\n' after ':'; the weakest of the two
    claims = [float(tok_lp[4:6].sum()), float(tok_lp[8:].sum())]
    assert f[2, 10] == pytest.approx(min(claims), abs=1e-4) and f[2, 12] == pytest.approx(sum(claims), abs=1e-4)


def test_pair_classifier_learns_and_its_mc_dropout_varies_and_is_seeded():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(200, 5)).astype(np.float32)
    a, b = rng.integers(0, 200, 600), rng.integers(0, 200, 600)
    keep = a != b
    a, b = a[keep], b[keep]
    y = (feats[a, 0] > feats[b, 0]).astype(int)  # 'a better' iff its first feature is larger
    head = upo.PairClassifier(5, hidden=32, dropout=0.2, seed=0)
    acc = head.fit(feats, a, b, y, steps=300, batch_size=128, learning_rate=3e-3, weight_decay=0.0, seed=0)
    assert acc > 0.9
    p = head.mc_probabilities(feats, a[:50], b[:50], passes=6, seed=7)
    assert p.shape == (6, 50) and ((p.mean(0) > 0.5) == y[:50]).mean() > 0.85
    assert np.array_equal(p, head.mc_probabilities(feats, a[:50], b[:50], passes=6, seed=7))  # seeded
    assert not np.allclose(p, head.mc_probabilities(feats, a[:50], b[:50], passes=6, seed=8))
    assert np.ptp(p, axis=0).min() > 0  # every pair varies across passes: dropout is on
    off = head.mc_probabilities(feats, a[:50], b[:50], passes=3, seed=7, dropout_on=False)
    assert np.ptp(off, axis=0).max() == 0
    # the same training data and seed give the same head
    again = upo.PairClassifier(5, hidden=32, dropout=0.2, seed=0)
    again.fit(feats, a, b, y, steps=300, batch_size=128, learning_rate=3e-3, weight_decay=0.0, seed=0)
    assert np.array_equal(again.mc_probabilities(feats, a[:50], b[:50], passes=6, seed=7), p)


def test_trusted_examples_teach_both_orders_and_wrong_wrong_ties():
    pairs = [{"prompt": "Q", "chosen": "right", "rejected": "wrong1"}]
    unpaired = [{"example_id": f"e{i}", "prompt_id": "p", "prompt": "Q", "completion": c, "label": lab}
                for i, (c, lab) in enumerate([("right", True), ("wrong1", False), ("wrong2", False),
                                              ("wrong3", False), ("wrong1", False)])]
    ex = upo.trusted_examples(pairs, unpaired, max_ties_per_prompt=2, seed=0)
    assert ex[:2] == [("Q", "right", "wrong1", 1), ("Q", "wrong1", "right", 0)]
    ties = ex[2:]
    assert len(ties) == 4 and all(label == 0 for *_, label in ties)  # 2 ties, both orders, never 'better'
    assert all(a != b and "right" not in (a, b) for _, a, b, _ in ties)
    assert {(a, b) for _, a, b, _ in ties[::2]} == {(b, a) for _, a, b, _ in ties[1::2]}
    assert upo.trusted_examples(pairs, unpaired, max_ties_per_prompt=0, seed=0) == ex[:2]
    assert len(upo.trusted_examples(pairs, unpaired, max_ties_per_prompt=10, seed=0)) == 2 + 2 * 3  # 3 distinct wrong texts: 3 ties


@pytest.mark.slow
def test_pairs_stage_trains_the_estimator_and_writes_trl_views(tmp_path):
    import json

    import datasets
    import yaml
    from trl.data_utils import is_conversational

    from helpers import tiny_random_policy
    from prefsynth.pipelines import pairs as pairs_stage
    from prefsynth.schemas.io import read_records, write_table, records_to_table
    from prefsynth.tasks import arith
    from prefsynth.transforms.pairs import response_pairs, step_dpo_pairs

    prompts, responses, cands = [], [], []
    for i, (a, b) in enumerate([(3, 4), (5, 6), (7, 2), (9, 1), (8, 8), (6, 3)]):
        text = f"Q: ({a}+{b})*2=?\n"
        pid = f"p{i}"
        prompts.append({"prompt_id": pid, "split": "train", "task": "arith", "prompt": text, "source": "t",
                        "messages": [{"role": "user", "content": text}], "reference_answer": str(2 * (a + b))})
        first = f"{a}+{b}={a + b}\n"  # a right first step; the wrong solution errs at the second
        right, wrong = first + f"{a + b}*2={2 * (a + b)}\nA: {2 * (a + b)}\n", first + f"{a + b}*2={2 * (a + b) + 1}\nA: {2 * (a + b) + 1}\n"
        rs = [{"response_id": f"{pid}r{j}", "prompt_id": pid, "text": t, "steps": arith.split_steps(t),
               "final_answer": arith.extract_answer(t), "mean_logprob": -0.1, "self_certainty": 1.0}
              for j, t in enumerate([right, wrong, wrong])]
        responses += rs
        truth = {r["response_id"]: float(r["text"] == right) for r in rs}
        cands += response_pairs(prompts[-1], rs, truth, 1, 0.5, "verifier_arith")
        cands += response_pairs(prompts[-1], rs, {k: 1 - v for k, v in truth.items()}, 1, 0.5, "self_consistency")
        v = arith.verify_solution(arith.parse_expression(text), rs[1]["steps"])
        cands += step_dpo_pairs(prompts[-1], rs[1], v.step_correct, v.expected_steps)
    d = tmp_path
    write_table(records_to_table(prompts, "prompts", "t"), str(d / "prompts" / "part-00000-of-00001.parquet"))
    write_table(records_to_table([{**r, "policy": "p", "iteration": 0, "sample_index": 0, "n_tokens": 1,
                                   "finish_reason": "stop", "source": "t"} for r in responses], "responses", "t"),
                str(d / "responses" / "part-00000-of-00001.parquet"))
    for level in ("response", "step"):
        write_table(records_to_table([p for p in cands if p["level"] == level], "pairs", "t"),
                    str(d / "cand" / level / "part-00000-of-00001.parquet"))
    kto = [{"example_id": f"k{r['response_id']}", "prompt_id": r["prompt_id"], "prompt": prompts[int(r["prompt_id"][1:])]["prompt"],
            "completion": r["text"], "label": r["final_answer"] == prompts[int(r["prompt_id"][1:])]["reference_answer"],
            "source_id": r["response_id"], "label_source": "verifier"} for r in responses]
    kto += [{**k, "example_id": k["example_id"] + "x", "completion": k["completion"].replace("A:", "A: 1")}
            for k in kto if not k["label"] and k["source_id"].endswith("r1")]  # a second, different wrong
    write_table(records_to_table(kto, "kto", "t"), str(d / "cand" / "kto" / "part-00000-of-00001.parquet"))
    params = yaml.safe_load(open(pairs_stage.__file__.replace("prefsynth/pipelines/pairs.py", "params.yaml")))
    params["pairs"].update(conversational=True, min_agreement=0.0)
    params["pairs"]["upo"].update(trusted_fraction=1.0, passes=3, epochs=1.0, batch_size=4, score_all=True)
    (d / "params.yaml").write_text(yaml.safe_dump(params))
    policy = tiny_random_policy(d / "policy")
    pairs_stage.main(["--params", str(d / "params.yaml"), "--prompts", str(d / "prompts"), "--responses", str(d / "responses"),
                "--candidates", str(d / "cand"), "--policy", policy, "--out", str(d / "pairs"), "--dead", str(d / "dead"),
                "--metrics", str(d / "pairs.json"), "--reports", str(d / "reports")])
    kept = read_records(str(d / "pairs" / "response")) + read_records(str(d / "pairs" / "step"))
    pruned = read_records(str(d / "pairs" / "pruned"))
    assert len(kept) + len(pruned) == len(cands)
    assert all(p["uncertainty_bald"] is not None and 0 <= p["uncertainty_mean"] <= 1 for p in kept + pruned)
    # the reversed self-consistency pairs contradict the verifier's: one pair per content survives
    assert all(p["label_source"] != "self_consistency" or "dropped" in p["kept_reason"] for p in pruned)
    assert all(p["label_source"] != "self_consistency" for p in kept)
    assert (d / "pairs" / "kto").is_dir()  # other candidate views pass through
    info = json.loads((d / "pairs.json").read_text())["estimator"]
    assert info["estimator"] == "pair_classifier" and info["passes"] == 3
    # verifier pairs both ways, plus one wrong-wrong tie per prompt (both ways) from the unpaired view
    assert info["train_examples"] == 2 * info["trusted_pairs"] + 2 * len(prompts) and info["trusted_pairs"] > 0
    std = datasets.load_dataset("parquet", data_dir=str(d / "pairs" / "response"), split="train")
    conv = datasets.load_dataset("parquet", data_dir=str(d / "pairs" / "step_conversational"), split="train")
    assert not is_conversational(std[0]) and is_conversational(conv[0])
    assert conv[0]["prompt"][-1]["role"] == "assistant"  # the shared step prefix, continued by chosen/rejected
    assert conv[0]["chosen"][0]["role"] == "assistant"


def test_build_estimator_sets_the_dropout_keys_the_config_has(tmp_path):
    from helpers import tiny_random_policy

    model, tok = upo.build_estimator(tiny_random_policy(tmp_path / "policy"), dropout=0.25, seed=0)
    assert type(model).__name__ == "GPT2ForSequenceClassification" and model.config.num_labels == 1
    assert model.config.resid_pdrop == model.config.embd_pdrop == model.config.attn_pdrop == 0.25
    assert not model.score._forward_pre_hooks  # GPT-2 has hidden-state dropout: no extra head dropout
    assert model.config.pad_token_id == tok.pad_token_id is not None
