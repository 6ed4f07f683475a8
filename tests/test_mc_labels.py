"""Monte-Carlo step labels: every-prefix (Math-Shepherd) and binary search (OmegaPRM)."""

import json

import pytest

from prefsynth.tasks import arith
from prefsynth.transforms.mc_labels import (
    MCLabelConfig,
    ResponseToLabel,
    detection_scores,
    first_error,
    is_bad,
    label_binary_search,
    label_every_prefix,
    label_forward_scan,
    label_rows,
)

from helpers import ExactArithPolicy, arith_prefix, tiny_random_policy, write_params

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
    label_every_prefix([r], backend, MCLabelConfig(rollouts=4, max_new_tokens=8, bad_own_min=0.0), 0, MATCH, EXTRACT)
    assert all(v in (0.0, 0.25, 0.5, 0.75, 1.0) for v in r.values.values())
    rows = label_rows(r, "every")
    assert all((row["label"] == "correct") == (row["score"] > 0) for row in rows)  # hard = any rollout right


class SlipLaterPolicy(ExactArithPolicy):
    """Continues any prefix exactly, except that it cannot do operation `slip` itself: there each
    rollout lands on a different wrong result (rollout j adds j+1), so from a RIGHT prefix before
    the slip no rollout reaches the reference and the answers scatter. A weak policy's false zeros."""

    def __init__(self, slip: int):
        self.slip = slip

    def generate(self, prompts, sampling, seeds=None):
        from prefsynth.backends.base import Completion

        out = []
        for p in prompts:
            problem, done, start = arith_prefix(p)
            group = []
            for j in range(sampling.n):
                cur, lines = start, []
                for i, (op, b) in enumerate(zip(problem.ops, problem.operands)):
                    if i < len(done):
                        continue
                    nxt = arith.apply_op(cur, op, b) + (j + 1 if i == self.slip else 0)
                    lines.append(f"{cur}{op}{b}={nxt}")
                    cur = nxt
                text = "".join(s + "\n" for s in lines) + f"A: {cur}\n"
                group.append(Completion(text, [0] * len(text), [-0.1] * len(text), "stop"))
            out.append(group)
        return out


def _slipped_at(k, by=7):
    p = arith.parse_expression(PROMPT)
    steps, cur = [], p.first
    for i, (op, b) in enumerate(zip(p.ops, p.operands)):
        nxt = arith.apply_op(cur, op, b) + (by if i == k else 0)
        steps.append(f"{cur}{op}{b}={nxt}")
        cur = nxt
    return steps + [f"A: {cur}"]


@pytest.mark.parametrize("method", [label_binary_search, label_every_prefix, label_forward_scan])
def test_own_answer_condition_skips_the_false_zeros_of_a_policy_that_slips_later(method):
    # the response's first wrong step is 3; the policy itself always slips at step 3, so every right
    # prefix 0..2 has value 0 too: the hard rule blames step 0, the own-answer rule finds step 3
    steps = _slipped_at(3)
    assert arith.verify_solution(arith.parse_expression(PROMPT), steps).first_wrong_step == 3
    hard, own = _resp(steps, "h"), _resp(steps, "o")
    method([hard], SlipLaterPolicy(3), MCLabelConfig(rollouts=4, bad_own_min=0.0), 0, MATCH, EXTRACT)
    method([own], SlipLaterPolicy(3), MCLabelConfig(rollouts=4, bad_own_min=0.25), 0, MATCH, EXTRACT)
    assert first_error(hard) == 0
    assert first_error(own) == 3
    assert all(own.values[i] == 0.0 and own.own[i] == 0.0 for i in own.values if i < 3)  # scattered wrong answers
    assert own.own[3] == 1.0  # from the wrong step on, the rollouts carry the error to the response's answer
    rows = {r["step_index"]: r for r in label_rows(own, "binary" if method is label_binary_search else "every")}
    assert rows[3]["label"] == "incorrect" and all(rows[i]["label"] == "correct" for i in rows if i < 3)
    if method is label_forward_scan:  # prefixes 0..3 probed, then it stops
        assert own.rollouts == 4 * 4 and hard.rollouts == 4


def test_forward_scan_failed_probe_is_a_dead_letter_not_a_first_error():
    from prefsynth.backends.base import GenerationFailure

    other = "Q: 7+5*2=?\n"

    class FailsOn(ExactArithPolicy):
        def generate(self, prompts, sampling, seeds=None):
            out = super().generate(prompts, sampling, seeds)
            return [GenerationFailure("http_500", "injected") if p.startswith(other) else g
                    for p, g in zip(prompts, out)]

    healthy = _resp(_wrong_at(2), "h")
    q = arith.parse_expression(other)
    victim = ResponseToLabel("v", other, ["7+5=13", "13*2=26", "A: 26"], str(q.answer))
    label_forward_scan([healthy, victim], FailsOn(), CFG, 0, MATCH, EXTRACT)
    assert first_error(healthy) == 2 and healthy.rollouts == 3 * CFG.rollouts
    rows = label_rows(victim, "forward")
    assert len(rows) == 1 and rows[0]["label"] == "unlabeled" and "http_500" in rows[0]["rationale"]


def test_decision_rule_thresholds():
    cfg = MCLabelConfig(bad_value_max=0.25, bad_own_min=0.5)
    assert is_bad(0.25, 0.5, cfg) and is_bad(0.0, 1.0, cfg)
    assert not is_bad(0.375, 1.0, cfg) and not is_bad(0.0, 0.375, cfg)
    with pytest.raises(ValueError, match="bad_value_max"):
        MCLabelConfig(bad_value_max=1.0)
    # null: the own-answer condition only when the policy completes its own prefixes
    assert MCLabelConfig().own_min == 0.125 and MCLabelConfig(model="big").own_min == 0.0
    assert MCLabelConfig(base_url="http://x/v1").own_min == 0.0 and MCLabelConfig(model="big", bad_own_min=0.25).own_min == 0.25


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
    # every response is verified; each also gets a P(True) and a step-confidence judgement (two more
    # units of the ledger each)
    assert m["accounting"]["counters"]["judge_items.p_true"] == 12
    assert m["accounting"]["counters"]["judge_items.step_confidence"] == 12
    assert m["accounting"]["n_in"] == 12 + 12 + 12 and m["accounting"]["balanced"]
    assert m["labels_by_labeler"]["step_confidence"] + m["accounting"]["n_dead"] >= 12
    assert m["quality"]["p_true"]["response"]["n"] == 12 and m["labels_by_labeler"]["p_true"] >= 12
    assert m["labels_by_labeler"]["verifier_arith"] >= 12
    assert sum(m["mc_first_error"][k]["responses"] for k in m["mc_first_error"]) <= 2 * 10  # rollouts: first 10
    assert set(m["mc_first_error"]) <= {"binary", "every"}


def _solver_reply(slip: bool):
    """A ScriptedServer reply: an arith 'model' that continues any prompt + prefix step by step from the
    value the prefix reached. With `slip`, it gets the last operation wrong (+1) on every problem whose
    first operand is odd, wherever it starts from: a policy that makes the same slip again from a right
    prefix, the false zeros of MC labels with the policy as its own completer."""
    from fault_server import completion_json

    def reply(attempt, body):
        problem, done, cur = arith_prefix(body["prompt"])
        todo = list(zip(problem.ops, problem.operands))
        lines = []
        for i, (op, b) in enumerate(todo[len(done):], start=len(done)):
            nxt = arith.apply_op(cur, op, b) + (1 if slip and problem.first % 2 and i == len(todo) - 1 else 0)
            lines.append(f"{cur}{op}{b}={nxt}")
            cur = nxt
        one = completion_json("".join(s + "\n" for s in lines) + f"A: {cur}\n")
        n = int(body.get("n", 1))
        one["choices"] = [{**one["choices"][0], "index": j} for j in range(n)]
        return 200, "application/json", json.dumps(one).encode()
    return reply


def test_a_named_completer_rolls_out_instead_of_the_policy(tmp_path):
    """label.mc.model/base_url: a stronger completer (here an exact solver behind a real OpenAI-compatible
    server) rolls out from the sloppy policy's prefixes, and MC binary search then finds the verifier's
    first wrong step on every wrong response; the policy as its own completer repeats its slip from the
    right prefixes and flags step 0 instead."""
    from fault_server import ScriptedServer

    from prefsynth.pipelines import generate, label, prompts
    from prefsynth.schemas.io import read_records

    policy = tiny_random_policy(tmp_path / "tok")  # only a path: both models are served
    with ScriptedServer(_solver_reply(slip=True)) as sloppy, ScriptedServer(_solver_reply(slip=False)) as exact:
        base = {"seed": 3, "prompts": {"n_prompts": 40},
                "policy": {"backend": "openai", "model": "sloppy", "base_url": sloppy.base_url, "vocab_size": 34},
                "generate": {"n": 1, "split": "all", "max_prompts": 16},
                "label": {"methods": ["binary"], "judges": [], "mc_max_responses": None}}
        runs = {}
        for name, mc in (("policy", {}), ("exact", {"model": "exact", "base_url": exact.base_url})):
            params = write_params(tmp_path / f"{name}.json", {**base, "label": {**base["label"], "mc": mc}})
            c = ["--params", params, "--reports", str(tmp_path / "reports")]
            if name == "policy":
                prompts.main([*c, "--out", str(tmp_path / "prompts"), "--dead", str(tmp_path / "pd"),
                              "--metrics", str(tmp_path / "pm.json")])
                generate.main([*c, "--prompts", str(tmp_path / "prompts"), "--policy", policy,
                               "--out", str(tmp_path / "resp"), "--dead", str(tmp_path / "gd"),
                               "--metrics", str(tmp_path / "gm.json")])
            label.main([*c, "--prompts", str(tmp_path / "prompts"), "--responses", str(tmp_path / "resp"),
                        "--policy", policy, "--out", str(tmp_path / name), "--dead", str(tmp_path / f"{name}-dead"),
                        "--metrics", str(tmp_path / f"{name}.m.json")])
            m = json.loads((tmp_path / f"{name}.m.json").read_text())
            assert m["mc_completer"] == ("policy" if name == "policy" else "exact") and m["accounting"]["balanced"]
            assert m["mc_rule"]["bad_own_min"] == (0.125 if name == "policy" else 0.0)
            rows = read_records(str(tmp_path / name))
            first = {}
            for kind in ("verifier_arith", "mc_binary"):
                for r in sorted((r for r in rows if r["labeler"] == kind and r["target_kind"] == "step"),
                                key=lambda r: r["step_index"]):
                    if r["label"] == "incorrect":
                        first.setdefault((kind, r["target_id"]), r["step_index"])
            wrong = sorted({t for k, t in first if k == "verifier_arith"})
            runs[name] = (wrong, {t: (first[("verifier_arith", t)], first.get(("mc_binary", t))) for t in wrong})
    wrong, exact_runs = runs["exact"]
    assert 3 <= len(wrong) < 16, wrong  # some problems slip, some do not
    assert all(truth == found and truth > 0 for truth, found in exact_runs.values()), exact_runs
    assert all(found == 0 for _, found in runs["policy"][1].values()), runs["policy"]
