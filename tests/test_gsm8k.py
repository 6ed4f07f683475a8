import json
import random

from prefsynth.tasks import gsm8k


def _records(path):
    return [r for _, r in gsm8k.read_jsonl(str(path))]


def test_every_reference_solution_verifies(gsm8k_dir):
    n_steps = 0
    for split in ("train", "test"):
        for rec in _records(gsm8k_dir / f"{split}.jsonl"):
            ref = gsm8k.reference_answer(rec["answer"])
            assert gsm8k.answers_match(gsm8k.extract_answer(rec["answer"]), ref), rec["answer"]
            for step in gsm8k.calculator_steps(rec["answer"]):
                assert step.is_correct() is True, (step, rec["answer"])
                n_steps += 1
    assert n_steps > 20_000  # the annotations really were parsed


def test_perturbed_answers_and_steps_do_not_verify(gsm8k_dir):
    rng = random.Random(0)
    recs = _records(gsm8k_dir / "test.jsonl")
    for rec in recs:
        ref = gsm8k.reference_answer(rec["answer"])
        wrong = str(gsm8k.parse_number(ref) + rng.choice([-3, -1, 1, 2, 10]))
        perturbed = gsm8k.reference_solution(rec["answer"]) + f"\n#### {wrong}"
        assert not gsm8k.answers_match(gsm8k.extract_answer(perturbed), ref)
    steps = [s for rec in recs for s in gsm8k.calculator_steps(rec["answer"])]
    for s in steps[:2000]:
        bad = gsm8k.CalculatorStep(s.expression, str(gsm8k.parse_number(s.result) + 1))
        assert bad.is_correct() is False


def test_answer_extraction_forms():
    assert gsm8k.extract_answer("so 3+4=7\n#### 1,234") == "1234"
    assert gsm8k.extract_answer("The answer is $5.50.") == "5.50"
    assert gsm8k.extract_answer("She pays <<2*3=6>>6 dollars, then 8.") == "8"
    assert gsm8k.extract_answer("no numbers here") is None
    assert gsm8k.answers_match("5.00", "5") and gsm8k.answers_match("$1,000", "1000")
    assert not gsm8k.answers_match("5.01", "5")


def test_calculator_annotations_are_steps():
    sol = "He buys 3*4 = <<3*4=12>>12 apples and 12/5 = <<12/5=2.4>>2.4 pies.\n#### 2.4"
    steps = gsm8k.calculator_steps(sol)
    assert [(s.expression, s.result) for s in steps] == [("3*4", "12"), ("12/5", "2.4")]
    assert all(s.is_correct() for s in steps)
    assert gsm8k.CalculatorStep("2**", "4").is_correct() is None  # unparseable, not "wrong"
    assert gsm8k.safe_eval("__import__('os')") is None


def test_reference_split(gsm8k_dir):
    line = (gsm8k_dir / "test.jsonl").read_text().splitlines()[0]
    rec = json.loads(line)
    assert gsm8k.reference_answer(rec["answer"]) == "18"
    assert "####" not in gsm8k.reference_solution(rec["answer"])
