"""The math task: final-answer extraction and math-verify equivalence on hand-made cases."""

import threading

import pytest

from prefsynth.tasks import get_task
from prefsynth.transforms.label_beam import verifier_rows

MATH = get_task("math")


@pytest.mark.parametrize("pred,ref", [
    ("\\frac{1}{2}", "0.5"), ("1/2", "\\frac{1}{2}"), ("x^2+2x", "x(x+2)"), ("2\\sqrt{2}", "\\sqrt{8}"),
    ("(1,2]", "(1, 2]"), ("\\{1,2\\}", "\\{2,1\\}"), ("50\\%", "50"), ("\\pi", "\\pi"),
])
def test_equivalent_answers_match(pred, ref):
    assert MATH.answers_match(pred, ref)


@pytest.mark.parametrize("pred,ref", [
    ("\\frac{1}{3}", "0.5"), ("x^2-2x", "x(x+2)"), ("(1,2)", "[1,2]"), ("3", "4"),
    (None, "1"), ("", "1"), ("}{ \\frac{", "1"), ("1", None),
])
def test_different_or_broken_answers_do_not(pred, ref):
    assert not MATH.answers_match(pred, ref)


def test_extract_answer():
    sol = "We get $x=2$.\nSo $\\frac{a}{b}$ first, then\n\\boxed{\\frac{a}{b^{2}}}."
    assert MATH.extract_answer(sol) == "\\frac{a}{b^{2}}"
    assert MATH.extract_answer("\\boxed{1} then \\boxed{\\{3, 4\\}}") == "\\{3, 4\\}"
    assert MATH.extract_answer("The final answer is $7$.") == "7"
    assert MATH.extract_answer("#### 12") == "12"
    assert MATH.extract_answer("no answer \\boxed{1") is None


def test_works_off_the_main_thread():
    """Beam runs DoFns in worker threads, where math-verify's signal timeout cannot be installed."""
    out = {}
    t = threading.Thread(target=lambda: out.update(ok=MATH.answers_match("\\frac{2}{4}", "0.5"),
                                                   bad=MATH.answers_match("0.4", "0.5")))
    t.start()
    t.join(60)
    assert out == {"ok": True, "bad": False}


def test_verifier_labels_math_responses_with_confidence_1():
    prompt = {"task": "math", "prompt": "Problem: 1/2+1/4?\n", "reference_answer": "\\frac{3}{4}"}
    right = {"response_id": "r1", "final_answer": "0.75", "steps": ["1/2+1/4=3/4", "\\boxed{0.75}"]}
    wrong = {"response_id": "r2", "final_answer": "\\frac{2}{6}", "steps": ["\\boxed{\\frac{2}{6}}"]}
    (a,), (b,) = verifier_rows(right, prompt), verifier_rows(wrong, prompt)
    assert (a["labeler"], a["score"], a["confidence"], a["target_kind"]) == ("verifier_math", 1.0, 1.0, "response")
    assert (b["score"], b["label"]) == (0.0, "incorrect")
