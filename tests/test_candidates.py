"""The candidates stage's pair construction on hand cases, TRL's format helpers, and a 2-step DPOTrainer run on real pairs."""

import pytest

from prefsynth.tasks import arith
from prefsynth.transforms.pairs import dedupe, kto_rows, prm_row, response_pairs, step_dpo_pairs, tree_step_pairs

PROMPT = {"prompt_id": "p", "prompt": "Q: (20-3-8)*4=?\n", "task": "arith"}


def _r(rid, text, lp=-0.1):
    return {"response_id": rid, "text": text, "steps": arith.split_steps(text), "mean_logprob": lp}


def test_response_pairs_best_vs_worst_first_capped_and_deduplicated():
    rs = [_r("a", "20-3=17\n17-8=9\n9*4=36\nA: 36\n", -0.1), _r("b", "20-3=17\nA: 17\n", -0.2),
          _r("c", "20-3=17\n17-8=8\n8*4=32\nA: 32\n", -0.9), _r("d", "20-3=17\n17-8=9\n9*4=36\nA: 36\n", -0.3)]
    scores = {"a": 1.0, "b": 0.0, "c": 0.0, "d": 1.0}
    pairs = response_pairs(PROMPT, rs, scores, max_pairs=2, min_margin=0.5, source="verifier")
    assert len(pairs) == 2
    # best (score 1, highest log-prob) vs worst (score 0, lowest log-prob) first
    assert (pairs[0]["chosen_id"], pairs[0]["rejected_id"]) == ("a", "c")
    assert pairs[0]["kept_reason"] == "best vs worst" and pairs[0]["margin"] == 1.0
    assert all(p["chosen"] != p["rejected"] for p in pairs)
    # same text on both sides (a and d) never pairs; no contrast -> no pairs
    assert response_pairs(PROMPT, rs[:1] + rs[3:], {"a": 1.0, "d": 1.0}, 4, 0.5, "verifier") == []
    assert dedupe(pairs + pairs) == sorted(pairs, key=lambda p: p["pair_id"])


def _node(nid, parent, text, q, visits=2):
    return {"node_id": nid, "parent_id": parent, "step_text": text, "q": q, "visits": visits}


def test_step_pairs_from_a_hand_built_tree():
    nodes = [_node("root", None, "", 0.0, 6), _node("a", "root", "20-3=17", 0.9, 4),
             _node("b", "root", "20-3=18", -0.4, 1),
             _node("a1", "a", "17-8=9", 0.8, 2), _node("a2", "a", "17-8=8", -0.6, 1), _node("a3", "a", "17-8=7", 0.1, 1),
             _node("a4", "a", "17-8=6", 5.0, 0)]  # never visited: not a candidate
    pairs = tree_step_pairs(PROMPT, nodes, min_q_gap=0.1)
    by_prompt = {p["prompt"]: p for p in pairs}
    root = by_prompt["Q: (20-3-8)*4=?\n"]
    assert (root["chosen"], root["rejected"]) == ("20-3=17\n", "20-3=18\n")
    assert root["weight"] == pytest.approx(1 / 4)  # visits 1 vs 4
    deeper = by_prompt["Q: (20-3-8)*4=?\n20-3=17\n"]
    assert (deeper["chosen"], deeper["rejected"]) == ("17-8=9\n", "17-8=8\n")
    assert deeper["level"] == "step" and deeper["label_source"] == "mcts_q"


def test_step_dpo_pair_at_the_known_first_error():
    r = _r("x", "20-3=17\n17-8=8\n8*4=32\nA: 32\n")
    v = arith.verify_solution(arith.parse_expression(PROMPT["prompt"]), r["steps"])
    (pair,) = step_dpo_pairs(PROMPT, r, v.step_correct, v.expected_steps)
    assert pair["prompt"] == "Q: (20-3-8)*4=?\n20-3=17\n"
    assert (pair["chosen"], pair["rejected"]) == ("17-8=9\n", "17-8=8\n")
    ok = _r("y", "20-3=17\n17-8=9\n9*4=36\nA: 36\n")
    v = arith.verify_solution(arith.parse_expression(PROMPT["prompt"]), ok["steps"])
    assert step_dpo_pairs(PROMPT, ok, v.step_correct, v.expected_steps) == []


def test_step_dpo_rest_span_pairs_the_verified_rest_with_the_responses_own_rest():
    from prefsynth.transforms.pairs import truly_better
    r = _r("x", "20-3=17\n17-8=8\n8*4=32\nA: 32\n")
    v = arith.verify_solution(arith.parse_expression(PROMPT["prompt"]), r["steps"])
    (pair,) = step_dpo_pairs(PROMPT, r, v.step_correct, v.expected_steps, span="rest")
    assert pair["prompt"] == "Q: (20-3-8)*4=?\n20-3=17\n"  # the same shared prefix as span "step"
    assert (pair["chosen"], pair["rejected"]) == ("17-8=9\n9*4=36\nA: 36\n", "17-8=8\n8*4=32\nA: 32\n")
    graded = dict(PROMPT, reference_answer="36")
    assert truly_better(pair, graded) is True  # every step of the chosen rest verifies, the rejected's do not
    (one,) = step_dpo_pairs(PROMPT, r, v.step_correct, v.expected_steps, span="step")
    assert truly_better(one, graded) is True and one["pair_id"] != pair["pair_id"]
    swapped = dict(pair, chosen=pair["rejected"], rejected=pair["chosen"])
    assert truly_better(swapped, graded) is False
    with pytest.raises(ValueError, match="span"):
        step_dpo_pairs(PROMPT, r, v.step_correct, v.expected_steps, span="suffix")


def test_step_dpo_full_span_moves_the_correct_prefix_into_both_sides():
    from prefsynth.transforms.pairs import truly_better
    r = _r("x", "20-3=17\n17-8=8\n8*4=32\nA: 32\n")
    v = arith.verify_solution(arith.parse_expression(PROMPT["prompt"]), r["steps"])
    (pair,) = step_dpo_pairs(PROMPT, r, v.step_correct, v.expected_steps, span="full")
    assert pair["prompt"] == PROMPT["prompt"]  # the question only: the policy's own right step is on both sides
    assert (pair["chosen"], pair["rejected"]) == ("20-3=17\n17-8=9\n9*4=36\nA: 36\n", r["text"])
    assert truly_better(pair, dict(PROMPT, reference_answer="36")) is True


def test_step_dpo_sampled_span_takes_the_rest_of_an_own_correct_sample_with_the_same_prefix():
    from prefsynth.transforms.pairs import truly_better
    r = _r("x", "20-3=17\n17-8=8\n8*4=32\nA: 32\n")
    v = arith.verify_solution(arith.parse_expression(PROMPT["prompt"]), r["steps"])
    other_prefix = ["20-8=12", "12-3=9", "9*4=36", "A: 36"]  # a claimed solution that does not start with 20-3=17
    same_prefix = ["20-3=17", "17-8=9", "9*4=36", "A: 36"]
    (pair,) = step_dpo_pairs(PROMPT, r, v.step_correct, v.expected_steps, span="sampled",
                             correct_solutions=[other_prefix, same_prefix])
    assert pair["prompt"] == "Q: (20-3-8)*4=?\n20-3=17\n"
    assert (pair["chosen"], pair["rejected"]) == ("17-8=9\n9*4=36\nA: 36\n", "17-8=8\n8*4=32\nA: 32\n")
    assert truly_better(pair, dict(PROMPT, reference_answer="36")) is True
    # no own correct sample shares the prefix: no pair (the stage counts step_dpo_no_sampled_rest)
    assert step_dpo_pairs(PROMPT, r, v.step_correct, v.expected_steps, span="sampled",
                          correct_solutions=[other_prefix]) == []


def test_candidates_stage_feeds_the_sampled_span_only_the_prompts_verified_correct_samples(repo):
    from prefsynth.config import load_params
    from prefsynth.pipelines.candidates import pairs_for_prompt

    wrong_late = _r("a", "20-3=17\n17-8=8\n8*4=32\nA: 32\n")   # first error at step 1, prefix 20-3=17
    wrong_first = _r("b", "20-3=18\n18-8=10\n10*4=40\nA: 40\n")  # first error at step 0: any correct sample fits
    right_answer_odd_step = _r("c", "20-3=17\n17-8=9\n4*9=36\nA: 36\n")  # answer right, a step off the canonical
    right = _r("d", "20-3=17\n17-8=9\n9*4=36\nA: 36\n")
    params = load_params(repo / "params.yaml")
    params.candidates.step_dpo_span = "sampled"

    def rows(responses):
        return [r for r in pairs_for_prompt(("p", {"prompts": [PROMPT], "responses": responses, "scores": [],
                                                   "nodes": []}), params) if isinstance(r, dict)]
    got = {(r["prompt"], r["chosen"], r["rejected"]) for r in rows([wrong_late, wrong_first, right_answer_odd_step, right])}
    assert got == {("Q: (20-3-8)*4=?\n20-3=17\n", "17-8=9\n9*4=36\nA: 36\n", "17-8=8\n8*4=32\nA: 32\n"),
                   (PROMPT["prompt"], right["text"], wrong_first["text"]),
                   # c's answer is right but its step 2 is off the canonical path: it is paired, never a chosen side
                   ("Q: (20-3-8)*4=?\n20-3=17\n17-8=9\n", "9*4=36\nA: 36\n", "4*9=36\nA: 36\n")}
    assert rows([wrong_late, right_answer_odd_step]) == []  # no verified-correct sample: no sampled pair


def test_kto_and_prm_views():
    good, bad = _r("a", "20-3=17\n17-8=9\n9*4=36\nA: 36\n"), _r("c", "20-3=17\n17-8=8\n8*4=32\nA: 32\n")
    kto = kto_rows(PROMPT, [good, bad], {"a": 1.0, "c": 0.0}, "verifier")
    assert [(k["completion"], k["label"]) for k in kto] == [(good["text"], True), (bad["text"], False)]
    v = arith.verify_solution(arith.parse_expression(PROMPT["prompt"]), bad["steps"])
    prm = prm_row(PROMPT, bad, v.step_correct, "verifier_arith")
    assert prm["completions"] == bad["steps"] and prm["labels"] == [True, False, False, False]
    assert set(prm) >= {"prompt", "completions", "labels"}  # TRL's stepwise format


@pytest.mark.slow
def test_pairs_pass_trl_helpers_and_train_two_dpo_steps(tmp_path):
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer
    from trl.data_utils import is_conversational

    from helpers import tiny_random_policy

    r = _r("x", "20-3=17\n17-8=8\n8*4=32\nA: 32\n")
    v = arith.verify_solution(arith.parse_expression(PROMPT["prompt"]), r["steps"])
    rows = step_dpo_pairs(PROMPT, r, v.step_correct, v.expected_steps) * 4
    rows += response_pairs(PROMPT, [_r("a", "20-3=17\n17-8=9\n9*4=36\nA: 36\n"), r], {"a": 1.0, "x": 0.0}, 1, 0.5,
                           "verifier") * 4
    ds = datasets.Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in rows])
    assert not is_conversational(ds[0])
    policy = tiny_random_policy(tmp_path / "policy")
    model = AutoModelForCausalLM.from_pretrained(policy)
    tok = AutoTokenizer.from_pretrained(policy)
    trainer = DPOTrainer(model=model, args=DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=2, per_device_train_batch_size=4,
                                                     use_cpu=True, bf16=False, report_to=[], save_strategy="no",
                                                     max_length=96, logging_steps=1, disable_tqdm=True),
                         train_dataset=ds, processing_class=tok)
    out = trainer.train()
    assert out.global_step == 2 and out.training_loss > 0


def test_step_dpo_rest_span_falls_back_to_one_step_where_steps_are_only_checked_locally(repo):
    """gsm8k's expected steps correct one calculation and copy the rest (13-1 = 12 would stay after 3*4
    is fixed to 12), so they are no verified rest of a solution: span rest pairs single steps there."""
    from prefsynth.config import load_params
    from prefsynth.pipelines.candidates import pairs_for_prompt
    from prefsynth.tasks import get_task

    text = "He buys 3 bags of 4 apples: 3*4 = 13 apples.\nHe eats 1, so 13-1 = 12.\n#### 12"
    prompt = {"prompt_id": "g", "prompt": "Q: apples?\n", "task": "gsm8k", "reference_answer": "11"}
    resp = {"response_id": "r", "text": text, "steps": get_task("gsm8k").split_steps(text), "mean_logprob": -0.1}
    params = load_params(repo / "params.yaml")
    params.candidates.step_dpo_span = "rest"
    rows = [r for r in pairs_for_prompt(("g", {"prompts": [prompt], "responses": [resp], "scores": [], "nodes": []}),
                                        params) if isinstance(r, dict)]
    assert [(r["chosen"], r["rejected"]) for r in rows] == [
        ("He buys 3 bags of 4 apples: 3*4 = 12 apples.\n", "He buys 3 bags of 4 apples: 3*4 = 13 apples.\n")]


def test_sampled_span_works_where_steps_are_only_checked_locally(repo):
    """gsm8k (no exact steps, so no rest or full span): the sampled span still pairs the rest of the
    prompt's own right solution after the shared prefix with the wrong response's rest."""
    from prefsynth.config import load_params
    from prefsynth.pipelines.candidates import pairs_for_prompt
    from prefsynth.tasks import get_task

    task = get_task("gsm8k")
    prompt = {"prompt_id": "g", "prompt": "Q: apples?\n", "task": "gsm8k", "reference_answer": "11"}
    right = "He buys 3 bags of 4 apples: 3*4 = 12 apples.\nHe eats 1, so 12-1 = 11.\n#### 11"
    wrong = "He buys 3 bags of 4 apples: 3*4 = 12 apples.\nHe eats 1, so 12-1 = 10.\n#### 10"
    resp = [{"response_id": rid, "text": t, "steps": task.split_steps(t), "mean_logprob": -0.1}
            for rid, t in (("a", right), ("b", wrong))]
    params = load_params(repo / "params.yaml")
    params.candidates.step_dpo_span = "sampled"
    (pair,) = [r for r in pairs_for_prompt(("g", {"prompts": [prompt], "responses": resp, "scores": [], "nodes": []}),
                                           params) if isinstance(r, dict)]
    assert pair["prompt"] == "Q: apples?\nHe buys 3 bags of 4 apples: 3*4 = 12 apples.\n"
    assert pair["chosen"].startswith("He eats 1, so 12-1 = 11.\n#### 11")
    assert pair["rejected"].startswith("He eats 1, so 12-1 = 10.\n#### 10")
