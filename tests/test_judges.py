"""LLM judges: templates, strict parsing, score mode, position swaps, and a served judge end to end."""

import math
from pathlib import Path

import pytest

from prefsynth.backends.base import Completion
from prefsynth.backends.transformers_backend import TransformersBackend
from prefsynth.pipelines import generate, label, prompts
from prefsynth.schemas.io import read_records
from prefsynth.tasks import arith
from prefsynth.transforms import judges as J

from helpers import ServeProcess, tiny_random_policy, write_params

TEMPLATES = J.load_templates()


def _target(i=0, task="chat", text="The answer is 4.", ref="4"):
    return J.Target(f"r{i}", "p0", task, "What is 2+2?", text, [text], ref)


class RuleJudge:
    """A deterministic judge over the backend protocol: `generate` returns scripted text per call,
    `score` prefers the option `prefer(prompt)` names (log-prob 0 vs -3)."""

    name = "rule-judge"

    def __init__(self, texts=None, prefer=None):
        self.texts, self.prefer, self.calls = texts, prefer, []

    def generate(self, prompts, sampling, seeds=None):
        self.calls.append(list(prompts))
        return [[Completion(self.texts(p), [], [], "stop")] for p in prompts]

    def score(self, prompts, continuations):
        return [0.0 if self.prefer(p, c) else -3.0 for p, c in zip(prompts, continuations)]


# ---- templates ----------------------------------------------------------------------------------

def test_pointwise_template_renders_reference_only_when_there_is_one():
    with_ref = TEMPLATES["pointwise"].render(question="Q?", response="R!", reference="42")
    without = TEMPLATES["pointwise"].render(question="Q?", response="R!", reference=None)
    assert "###Reference Answer (Score 5):\n42\n" in with_ref
    assert "Reference Answer" not in without and "{{" not in without and "{{" not in with_ref
    assert "###Response to evaluate:\nR!\n" in without and without.endswith("###Feedback: \n")


def test_template_dir_overrides_by_name_and_bad_placeholders_are_named(tmp_path):
    (tmp_path / "p_true.txt").write_text("Q={{question}} R={{response}} ok?")
    t = J.load_templates(str(tmp_path))
    assert t["p_true"].render(question="a", response="b") == "Q=a R=b ok?"
    assert t["pairwise"].text == TEMPLATES["pairwise"].text  # others stay shipped
    (tmp_path / "pointwise.txt").write_text("{{question}} {{respnse}}")
    with pytest.raises(ValueError, match=r"unknown placeholder\(s\) \['respnse'\], missing \['response'\]"):
        J.load_templates(str(tmp_path))


def test_templates_are_package_data():
    names = {p.name for p in J.SHIPPED_TEMPLATES.glob("*.txt")}
    assert {f"{n}.txt" for n in J.TEMPLATE_FIELDS} <= names
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"**/*.txt"' in pyproject


# ---- strict parsing -----------------------------------------------------------------------------

@pytest.mark.parametrize("text,verdict,feedback", [
    ("Feedback: right steps. [RESULT] 4", "4", "right steps."),
    ("  The answer matches.\n[RESULT] (5)\n", "5", "The answer matches."),
    ("Feedback: B is right. [RESULT] B.", "B", "B is right."),
])
def test_parse_verdict_accepts_the_format(text, verdict, feedback):
    allowed = J.AB if verdict in "AB" else J.LIKERT
    assert J.parse_verdict(text, allowed) == (verdict, feedback)


@pytest.mark.parametrize("text,why", [
    ("", "empty"),
    ("7+7=14\nA: 9q?", "exactly one"),
    ("Feedback: ok [RESULT] 6", "not one of"),
    ("Feedback: ok [RESULT] 4 because", "not one of"),
    ("[RESULT] 3", "no feedback"),
    ("Feedback: x [RESULT] 3 [RESULT] 4", "exactly one"),
])
def test_parse_verdict_rejects_garbage(text, why):
    with pytest.raises(J.JudgeParseError, match=why):
        J.parse_verdict(text, J.LIKERT)


def test_parse_questions_is_strict():
    assert J.parse_questions("- Is it 4?\n\n2. Is it short?\n- Is it 4?", 5) == ["Is it 4?", "Is it short?"]
    assert J.parse_questions("- a?\n- b?\n- c?", 2) == ["a?", "b?"]
    for bad in ("", "Sure! Here they are:\n- Is it 4?", "- Is it 4"):
        with pytest.raises(J.JudgeParseError):
            J.parse_questions(bad, 5)


# ---- score mode and P(True) ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_backend(tmp_path_factory):
    path = tiny_random_policy(tmp_path_factory.mktemp("judge") / "policy", n_positions=1024)
    return TransformersBackend(path, device="cpu", batch_size=32)


def test_choice_probs_is_the_normalised_score(tiny_backend):
    ps = ["Q: 1+2=?\n1+2=3\nOK? ", "Q: 5-5=?\n5-5=1\nOK? "]
    got = J.choice_probs(tiny_backend, ps, ("yes", "no"))
    for p, (py, pn) in zip(ps, got):
        ly, ln = tiny_backend.score([p, p], ["yes", "no"])
        assert py + pn == pytest.approx(1.0)
        assert py == pytest.approx(math.exp(ly) / (math.exp(ly) + math.exp(ln)))


def test_p_true_uses_the_arith_self_eval_format_for_steps_and_response(tiny_backend):
    t = J.Target("r1", "p1", "arith", "Q: 1+2*3=?\n", "1+2=3\n3*3=9\nA: 9\n", ["1+2=3", "3*3=9", "A: 9"], "9")
    prompts, options = J.p_true_prompts(t, TEMPLATES, with_steps=True)
    assert options == ("yes", "no")
    assert prompts[0] == (None, arith.self_eval_prompt(t.question, t.steps))
    assert prompts[2] == (1, "Q: 1+2*3=?\n1+2=3\n3*3=9\nOK? ")
    res = J.judge_p_true([t, _target(2)], tiny_backend, TEMPLATES, with_steps=True)
    assert not res.failures
    kinds = sorted((r["target_id"], r["target_kind"], r["step_index"]) for r in res.rows)
    assert kinds == [("r1", "response", None), ("r1", "step", 0), ("r1", "step", 1), ("r1", "step", 2),
                     ("r2", "response", None), ("r2", "step", 0)]
    for r in res.rows:
        assert r["labeler"] == "p_true" and 0 < r["score"] < 1 and r["confidence"] == max(r["score"], 1 - r["score"])
        assert r["label"] == ("correct" if r["score"] > 0.5 else "incorrect")


def test_prompt_beyond_the_judge_context_is_a_failure_not_a_label(tmp_path):
    short = TransformersBackend(tiny_random_policy(tmp_path / "p", n_positions=96), device="cpu")
    res = J.judge_pointwise([_target()], short, TEMPLATES, "score", 0, 8)
    assert not res.rows and res.failures[0].error_type == "judge_context_overflow"
    assert "###Response to evaluate" in res.failures[0].raw_input


# ---- pointwise / pairwise logic with a rule judge -----------------------------------------------

def test_pointwise_generate_parses_and_garbage_becomes_a_failure_with_the_raw_text():
    judge = RuleJudge(texts=lambda p: "Feedback: correct. [RESULT] 5" if "answer is 4" in p else "5+5=1\nA: ?")
    res = J.judge_pointwise([_target(0), _target(1, text="It is 5.")], judge, TEMPLATES, "generate", 1, 32)
    assert [(r["target_id"], r["label"], r["score"], r["confidence"]) for r in res.rows] == [("r0", "5", 1.0, None)]
    (f,) = res.failures
    assert (f.record_id, f.error_type, f.raw_output) == ("r1", "judge_unparseable", "5+5=1\nA: ?")


def test_pointwise_score_mode_is_a_distribution_over_likert():
    judge = RuleJudge(prefer=lambda p, c: c == "4")
    (row,) = J.judge_pointwise([_target()], judge, TEMPLATES, "score", 1, 32).rows
    p4 = 1 / (1 + 4 * math.exp(-3))
    assert row["label"] == "4" and row["confidence"] == pytest.approx(p4)
    expected = 4 * p4 + (1 + 2 + 3 + 5) * (1 - p4) / 4
    assert row["score"] == pytest.approx((expected - 1) / 4)


def test_combine_orders():
    v = J.combine_orders(0.9, 0.2)  # a wins shown first; b shown first loses ("A" = b at 0.2)
    assert v.consistent and v.label == "a_better" and v.p_a_better == pytest.approx(0.85)
    v = J.combine_orders(0.9, 0.9)  # always "A": the verdict follows the position
    assert not v.consistent and v.label == "position_inconsistent" and v.p_a_better == pytest.approx(0.5)
    assert J.combine_orders(0.3, 0.6).label == "b_better"


def test_pairwise_runs_both_orders_and_records_position_bias():
    good, bad = _target(0, text="The answer is 4."), _target(1, text="The answer is 5.")
    pair = J.make_pairs([bad, good])[0]
    assert (pair.a.response_id, pair.b.response_id) == ("r0", "r1")

    def first_block(p):
        return p.split("###Response A:\n")[1].split("\n")[0]

    fair = RuleJudge(prefer=lambda p, c: (c == "A") == ("is 4" in first_block(p)))
    (row,) = J.judge_pairwise([pair], fair, TEMPLATES, "score", 1, 32).rows
    assert row["label"] == "a_better" and row["other_id"] == "r1" and row["target_kind"] == "pair"
    biased = RuleJudge(prefer=lambda p, c: c == "A")  # always the first shown
    (row,) = J.judge_pairwise([pair], biased, TEMPLATES, "score", 1, 32).rows
    assert row["label"] == "position_inconsistent" and row["score"] == pytest.approx(0.5)
    # generate mode: both orders are generated (2 prompts, swapped), parsed, and merged the same way
    gen = RuleJudge(texts=lambda p: "Feedback: first. [RESULT] A")
    (row,) = J.judge_pairwise([pair], gen, TEMPLATES, "generate", 1, 32).rows
    assert row["label"] == "position_inconsistent" and len(gen.calls[0]) == 2
    assert "[a shown first]" in row["raw_output"] and row["confidence"] is None


def test_tick_scores_the_fraction_of_questions_passed():
    judge = RuleJudge(texts=lambda p: "- Is the final answer 4?\n- Is it one sentence?",
                      prefer=lambda p, c: (c == " yes") == ("answer is 4" in p or "one sentence" in p))
    res = J.judge_tick([_target(0), _target(1, text="It is 5.")], judge, TEMPLATES, 1, 5, 64)
    scores = {r["target_id"]: (r["score"], r["label"]) for r in res.rows}
    assert scores == {"r0": (1.0, "pass"), "r1": (0.5, "pass")}
    garbage = RuleJudge(texts=lambda p: "ok ok ok", prefer=lambda p, c: True)
    res = J.judge_tick([_target(0), _target(1)], garbage, TEMPLATES, 1, 5, 64)
    assert not res.rows and [f.raw_output for f in res.failures] == ["ok ok ok", "ok ok ok"]


# ---- a served judge through the label stage -----------------------------------------------------

def test_served_judge_labels_a_batch_end_to_end_through_the_label_stage(tmp_path):
    """A tiny random model behind `prefsynth serve` judges with every judge: P(True) in score mode
    gives labels; its free-text Likert/pairwise/TICK outputs are garbage and must all become dead
    letters with the raw text; the stage's books balance."""
    policy = tiny_random_policy(tmp_path / "policy-0", n_positions=2048)  # the Prometheus templates must fit
    d = lambda name: str(tmp_path / name)  # noqa: E731
    base = {"seed": 3, "prompts": {"n_prompts": 30}, "policy": {"timeout_s": 30, "max_retries": 1},
            "generate": {"n": 2, "max_new_tokens": 16, "split": "all", "max_prompts": 4},
            "label": {"mc_max_responses": 0, "methods": []}}
    c = ["--params", write_params(tmp_path / "p.json", base), "--reports", d("reports")]
    prompts.main([*c, "--out", d("prompts"), "--dead", d("dp"), "--metrics", d("m1.json")])
    generate.main([*c, "--prompts", d("prompts"), "--policy", policy, "--out", d("responses"), "--dead", d("dg"),
                   "--metrics", d("m2.json")])
    with ServeProcess(policy, name="judge") as server:
        base["label"].update(judges=["p_true", "pointwise", "pairwise", "tick"], judge={
            "model": "judge", "backend": "openai", "base_url": server.base_url, "mode": "generate",
            "max_new_tokens": 24, "pointwise_max_responses": 3, "pairwise_max_pairs": 2, "tick_max_prompts": 1})
        c[1] = write_params(tmp_path / "p2.json", base)
        label.main([*c, "--prompts", d("prompts"), "--responses", d("responses"), "--policy", policy,
                    "--out", d("labels"), "--dead", d("dl"), "--metrics", d("m4.json"), "--plots", d("plots")])
    import json

    m = json.loads(Path(d("m4.json")).read_text())
    acc = m["accounting"]
    assert acc["balanced"] and acc["counters"]["judge_items.pointwise"] == 3
    assert acc["counters"]["judge_items.pairwise"] == 2 and acc["counters"]["judge_items.p_true"] == 8
    labels = read_records(d("labels"))
    dead = read_records(d("dl"))
    by = {}
    for r in labels:
        by.setdefault(r["labeler"], []).append(r)
    assert len([r for r in by["p_true"] if r["target_kind"] == "response"]) == 8
    assert all(r["label"] is not None and r["score"] is not None for r in labels)
    # a random model cannot write `Feedback: ... [RESULT] n`: every free-text judgement is a dead letter
    unparseable = [x for x in dead if x["error_type"] == "judge_unparseable"]
    assert not by.get("judge_pointwise") and not by.get("judge_pairwise") and not by.get("judge_tick")
    assert len(unparseable) == 3 + 2 + 2 and all(x["raw_output"] is not None for x in unparseable)
    assert {x["message"].split("]")[0] for x in unparseable} == {"[pointwise", "[pairwise", "[tick"}
    assert acc["dead"] == {"judge_unparseable": 7}
    assert m["quality"]["p_true"]["response"]["n"] == 8 and "self_judge_overconfidence" not in m["quality"]["p_true"]["response"]


# ---- step confidence ----------------------------------------------------------------------------

class ArithScorer:
    """A judge that knows arithmetic: a step continuing its context correctly gets log-prob -0.1 a
    character, a wrong one -3 a character (what a policy that computes would give its own slips)."""

    name = "arith-scorer"
    tokenizer = None  # tokens are counted as characters

    def score(self, prompts, continuations):
        from helpers import arith_prefix

        out = []
        for p, c in zip(prompts, continuations):
            problem, done, cur = arith_prefix(p)
            ops = list(zip(problem.ops, problem.operands))
            right = (f"{cur}{ops[len(done)][0]}{ops[len(done)][1]}={arith.apply_op(cur, *ops[len(done)])}"
                     if len(done) < len(ops) else f"A: {cur}")
            out.append((-0.1 if c == right else -3.0) * len(c))
        return out


def test_step_confidence_never_shows_the_step_and_labels_no_error_so_far():
    t = J.Target("r1", "p1", "arith", "1+2*3-4", "1+2=3\n3*3=8\n8-4=4\nA: 4\n", ["1+2=3", "3*3=8", "8-4=4", "A: 4"],
                 "5", prompt="Q: 1+2*3-4=?\n")
    # each step is scored as the continuation of the policy's prompt + the response before it
    assert J.step_spans(t) == [("Q: 1+2*3-4=?\n", "1+2=3"), ("Q: 1+2*3-4=?\n1+2=3\n", "3*3=8"),
                               ("Q: 1+2*3-4=?\n1+2=3\n3*3=8\n", "8-4=4"),
                               ("Q: 1+2*3-4=?\n1+2=3\n3*3=8\n8-4=4\n", "A: 4")]
    res = J.judge_step_confidence([t], ArithScorer())
    assert not res.failures
    steps = {r["step_index"]: r for r in res.rows if r["target_kind"] == "step"}
    # step 0 right (p = e^-0.1); step 1 is the slip (e^-3); steps 2-3 continue correctly from the wrong
    # value but stay at the prefix's minimum: "no error so far", the verifier's step label
    assert steps[0]["score"] == pytest.approx(math.exp(-0.1)) and steps[0]["label"] == "correct"
    for i in (1, 2, 3):
        assert steps[i]["score"] == pytest.approx(math.exp(-3.0)) and steps[i]["label"] == "incorrect"
    assert "step 1" in steps[3]["rationale"]
    (resp,) = [r for r in res.rows if r["target_kind"] == "response"]
    assert resp["labeler"] == "step_confidence" and resp["score"] == pytest.approx(math.exp(-3.0))


def test_step_confidence_on_a_real_backend_is_the_mean_token_probability(tiny_backend):
    t = J.Target("r1", "p1", "arith", "1+2*3", "1+2=3\n3*3=9\nA: 9\n", ["1+2=3", "3*3=9", "A: 9"], "9",
                 prompt="Q: 1+2*3=?\n")
    res = J.judge_step_confidence([t], tiny_backend)
    line = [math.exp(lp / len(s)) for (c, s), lp in
            zip(J.step_spans(t), tiny_backend.score([c for c, _ in J.step_spans(t)], t.steps))]  # char tokenizer
    got = sorted((r["step_index"], r["score"]) for r in res.rows if r["target_kind"] == "step")
    assert [s for _, s in got] == pytest.approx([min(line[:i + 1]) for i in range(3)])


class RecordingScorer:
    """Records what `score` is asked; a continuation's log-prob is -1 a character."""

    name = "recording"
    tokenizer = None

    def __init__(self):
        self.calls = []

    def score(self, prompts, continuations):
        self.calls += list(zip(prompts, continuations))
        return [-1.0 * len(c) for c in continuations]


def test_the_result_span_is_the_number_a_step_computes():
    assert J.result_split("3*3=9") == ("3*3=", "9")
    assert J.result_split("A: 9") == ("A: ", "9")
    assert J.result_split("37 - 23 = -4") == ("37 - 23 = ", "-4")
    # a GSM8K calculator annotation: the annotation's result, the recomputation
    assert J.result_split("She sold 48/2 = <<48/2=24>>24 clips.") == ("She sold 48/2 = <<48/2=", "24")
    assert J.result_split("#### 1,250") == ("#### ", "1,250")
    assert J.result_split("So the answer is $18.") == ("So the answer is $", "18")
    assert J.result_split("She has some apples.") is None and J.result_split("x = y") is None


def test_step_confidence_result_span_scores_only_the_result_after_its_head():
    t = J.Target("r1", "p1", "arith", "1+2*3", "1+2=3\n3*3=8\nsee above\nA: 8\n",
                 ["1+2=3", "3*3=8", "see above", "A: 8"], "9", prompt="Q: 1+2*3=?\n")
    rec = RecordingScorer()
    res = J.judge_step_confidence([t], rec, span="result")
    assert rec.calls == [("Q: 1+2*3=?\n1+2=", "3"), ("Q: 1+2*3=?\n1+2=3\n3*3=", "8"),
                         ("Q: 1+2*3=?\n1+2=3\n3*3=8\n", "see above"),  # no result: the whole line
                         ("Q: 1+2*3=?\n1+2=3\n3*3=8\nsee above\nA: ", "8")]
    steps = sorted((r["step_index"], r["rationale"].split(";")[0]) for r in res.rows if r["target_kind"] == "step")
    assert [x for _, x in steps] == ["result p=0.3679"] * 2 + ["result p=0.3679", "result p=0.3679"]
    # the line span is the old behaviour: whole steps
    rec = RecordingScorer()
    J.judge_step_confidence([t], rec)
    assert [c for _, c in rec.calls] == t.steps
    with pytest.raises(ValueError, match="span"):
        J.judge_step_confidence([t], rec, span="tokens")


def test_step_confidence_result_span_on_smollm2_prefers_the_right_result(smollm2):
    """A real BPE model: its probability of an easy step's result, not of the step's wording, tells a
    right step from a wrong one (multi-token numbers averaged per token)."""
    backend = TransformersBackend(smollm2, device="cpu", batch_size=8)
    prompt = "Q: Sam has 7 apples. Then Sam gets 5 more. How many apples does Sam have now?\n"
    conf = {}
    for result in ("12", "13", "75"):
        t = J.Target(f"r{result}", "p1", "arith", "q", f"7+5={result}\n", [f"7+5={result}"], "12", prompt=prompt)
        (row,) = [r for r in J.judge_step_confidence([t], backend, span="result").rows
                  if r["target_kind"] == "response"]
        conf[result] = row["score"]
    assert conf["12"] > conf["13"] and conf["12"] > conf["75"], conf
    assert conf["12"] > 0.5, conf


def test_step_confidence_failures_are_named_not_labels(tmp_path):
    short = TransformersBackend(tiny_random_policy(tmp_path / "p", n_positions=24), device="cpu")
    long = J.Target("r1", "p1", "arith", "q", "1+2=3\n3*3=9\n9*2=18\nA: 18\n", ["1+2=3", "3*3=9", "9*2=18", "A: 18"],
                    "18", prompt="Q: 1+2*3*2=?\n")
    empty = J.Target("r2", "p1", "arith", "q", "", [], "18", prompt="Q: 1+2*3*2=?\n")
    res = J.judge_step_confidence([long, empty], short)
    assert not res.rows
    assert sorted((f.record_id, f.error_type) for f in res.failures) == [("r1", "judge_context_overflow"),
                                                                        ("r2", "judge_no_steps")]
