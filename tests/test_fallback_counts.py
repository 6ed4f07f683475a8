"""Every fallback that decides an answer is counted by name: in the process and as a Beam counter."""

import logging

import apache_beam as beam

from prefsynth.pipelines.accounting import counters
from prefsynth.tasks import get_task, gsm8k
from prefsynth.tasks import math as math_task


def test_gsm8k_last_number_extraction_is_counted():
    before = gsm8k.FALLBACKS["gsm8k.last_number_answer"]
    assert gsm8k.extract_answer("She has 3 + 4 = 7 apples.\n#### 7") == "7"
    assert gsm8k.FALLBACKS["gsm8k.last_number_answer"] == before  # a stated answer: no fallback
    assert gsm8k.extract_answer("She has 3 + 4 = 7 apples, then 9") == "9"
    assert gsm8k.FALLBACKS["gsm8k.last_number_answer"] == before + 1
    assert gsm8k.extract_answer("no number at all") is None
    assert gsm8k.FALLBACKS["gsm8k.last_number_answer"] == before + 1


def test_gsm8k_fallbacks_reach_the_stage_counters():
    with beam.Pipeline("FnApiRunner") as p:
        _ = p | beam.Create(["#### 4", "it is 5", "maybe 6 or 7"]) | beam.Map(get_task("gsm8k").extract_answer)
    assert counters(p.result)["fallback.gsm8k.last_number_answer"] == 2


def test_math_verify_timeouts_and_errors_are_counted(monkeypatch):
    import math_verify

    def timing_out(gold, pred, **kw):  # what math-verify does when its comparison times out
        logging.getLogger("math_verify.grader").warning("Timeout during comparison")
        return False

    before = math_task.FALLBACKS.copy()
    monkeypatch.setattr(math_verify, "verify", timing_out)
    assert math_task.answers_match("\\frac{1}{2}", "0.5") is False
    assert math_task.FALLBACKS["math.verify_timeout"] == before["math.verify_timeout"] + 1

    def broken(gold, pred, **kw):
        raise RuntimeError("sympy blew up")

    monkeypatch.setattr(math_verify, "verify", broken)
    assert math_task.answers_match("\\frac{1}{2}", "0.5") is False
    assert math_task.FALLBACKS["math.verify_error"] == before["math.verify_error"] + 1
    monkeypatch.undo()
    assert math_task.answers_match("\\frac{1}{2}", "0.5") is True
    assert math_task.FALLBACKS["math.verify_timeout"] == before["math.verify_timeout"] + 1
