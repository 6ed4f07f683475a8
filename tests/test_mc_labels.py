"""Monte-Carlo step labels: every-prefix (Math-Shepherd) and binary search (OmegaPRM)."""

import json

import pytest

from prefsynth.tasks import arith
from prefsynth.transforms.mc_labels import (
    MCLabelConfig,
    ResponseToLabel,
    detection_scores,
    first_error,
    label_binary_search,
    label_every_prefix,
    label_rows,
)

from helpers import ExactArithPolicy, tiny_random_policy, write_params

PROMPT = "Q: (20-3-8)*4+5-6=?\n"  # 5 operations: steps 0..4, answer line 5


def _resp(steps, rid="r"):
    return ResponseToLabel(rid, PROMPT, steps, str(arith.parse_expression(PROMPT).answer))


def _wrong_at(k):
    p = arith.parse_expression(PROMPT)
    steps, cur = [], p.first
    for i, (op, b) in enumerate(zip(p.ops, p.operands)):
        nxt = arith.apply_op(cur, op, b) + (1 if i == k else 0)
        steps.append(f"{cur}{op}{b}={nxt}")
        cur = nxt
    return steps + [f"A: {cur}"]


CFG = MCLabelConfig(rollouts=2)
MATCH, EXTRACT = arith.answers_match, arith.extract_answer


@pytest.mark.parametrize("k", [0, 1, 2, 3, 4])
def test_binary_search_and_every_prefix_find_a_known_wrong_step(k):
    steps = _wrong_at(k)
    assert arith.verify_solution(arith.parse_expression(PROMPT), steps).first_wrong_step == k
    every, binary = _resp(steps, "e"), _resp(steps, "b")
    label_every_prefix([every], ExactArithPolicy(), CFG, 0, MATCH, EXTRACT)
    label_binary_search([binary], ExactArithPolicy(), CFG, 0, MATCH, EXTRACT)
    assert first_error(every) == first_error(binary) == k
    # soft values: 1 before the error, 0 from it on (this policy never recovers)
    assert [every.values[i] for i in range(len(steps))] == [1.0] * k + [0.0] * (len(steps) - k)
    # every prefix but the free last one costs k rollouts; binary search probes ~log2(n) prefixes
    assert every.rollouts == (len(steps) - 1) * CFG.rollouts
    assert binary.rollouts <= 3 * CFG.rollouts < every.rollouts
    rows = label_rows(binary, "binary")
    assert [r["score"] for r in rows] == [1.0] * k + [0.0] * (len(steps) - k)
    assert {r["rationale"] for r in rows} <= {"rollouts", "implied by binary search"}


def test_a_right_solution_costs_no_rollouts_in_binary_search():
    p = arith.parse_expression(PROMPT)
    r = _resp(p.solution_steps)
    label_binary_search([r], ExactArithPolicy(), CFG, 0, MATCH, EXTRACT)
    assert first_error(r) is None and r.rollouts == 0
    assert all(row["score"] == 1.0 for row in label_rows(r, "binary"))


def test_hard_and_soft_labels_with_a_sampling_policy(tmp_path):
    from prefsynth.backends.transformers_backend import TransformersBackend

    backend = TransformersBackend(tiny_random_policy(tmp_path / "p"))
    r = _resp(_wrong_at(2))
    label_every_prefix([r], backend, MCLabelConfig(rollouts=4, max_new_tokens=8), 0, MATCH, EXTRACT)
    assert all(v in (0.0, 0.25, 0.5, 0.75, 1.0) for v in r.values.values())
    rows = label_rows(r, "every")
    assert all((row["label"] == "correct") == (row["score"] > 0) for row in rows)  # hard = any rollout right


def test_detection_scores_by_hand():
    s = detection_scores([(1, 1), (2, 1), (None, 0), (0, None), (None, None)])
    assert (s["tp"], s["fp"], s["fn"]) == (1, 2, 2)
    assert s["precision"] == pytest.approx(1 / 3) and s["recall"] == pytest.approx(1 / 3)


@pytest.mark.slow
def test_label_stage_on_the_embedded_world(tmp_path):
    from prefsynth.pipelines import generate, label, prompts

    policy = tiny_random_policy(tmp_path / "policy-0")
    params = write_params(tmp_path / "p.json", {
        "seed": 4, "prompts": {"n_prompts": 40},
        "generate": {"n": 2, "max_new_tokens": 30, "split": "all", "max_prompts": 6},
        "label": {"mc_max_responses": 10, "responses_per_batch": 4, "mc": {"rollouts": 2, "max_new_tokens": 20}}})
    c = ["--params", params, "--reports", str(tmp_path / "reports")]
    prompts.main([*c, "--out", str(tmp_path / "prompts"), "--dead", str(tmp_path / "pd"), "--metrics", str(tmp_path / "pm.json")])
    generate.main([*c, "--prompts", str(tmp_path / "prompts"), "--policy", policy, "--out", str(tmp_path / "resp"),
                   "--dead", str(tmp_path / "gd"), "--metrics", str(tmp_path / "gm.json")])
    label.main([*c, "--prompts", str(tmp_path / "prompts"), "--responses", str(tmp_path / "resp"), "--policy", policy,
                "--out", str(tmp_path / "labels"), "--dead", str(tmp_path / "ld"), "--metrics", str(tmp_path / "m.json")])
    m = json.loads((tmp_path / "m.json").read_text())
    # every response is verified; each also gets a P(True) judgement (a second unit of the ledger)
    assert m["accounting"]["counters"]["judge_items.p_true"] == 12
    assert m["accounting"]["n_in"] == 12 + 12 and m["accounting"]["balanced"]
    assert m["quality"]["p_true"]["response"]["n"] == 12 and m["labels_by_labeler"]["p_true"] >= 12
    assert m["labels_by_labeler"]["verifier_arith"] >= 12
    assert sum(m["mc_first_error"][k]["responses"] for k in m["mc_first_error"]) <= 2 * 10  # rollouts: first 10
    assert set(m["mc_first_error"]) <= {"binary", "every"}
