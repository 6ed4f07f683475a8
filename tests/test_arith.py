import random

import pytest

from prefsynth.tasks import arith
from prefsynth.tasks.arith import ArithConfig, ArithProblem


def test_generator_is_seeded_and_sliceable():
    cfg = ArithConfig()
    a = arith.generate_problems(cfg, 7, "s", 0, 50)
    b = arith.generate_problems(cfg, 7, "s", 0, 50)
    assert a == b
    # any slice can be generated on its own (what parallel workers do)
    assert arith.generate_problems(cfg, 7, "s", 20, 10) == a[20:30]
    assert arith.generate_problems(cfg, 8, "s", 0, 50) != a


@pytest.mark.parametrize("cfg", [
    ArithConfig(),
    ArithConfig(min_ops=1, max_ops=1, operand_max=9, operators="+"),
    ArithConfig(min_ops=4, max_ops=5, operators="+-*/"),
    ArithConfig(operators="-", allow_negative=True),
    ArithConfig(min_ops=1, max_ops=4, operators="+-*/", wording="words"),
])
def test_problems_respect_difficulty_and_every_step_is_exact(cfg):
    for p in arith.generate_problems(cfg, 1, "d", 0, 300):
        assert cfg.min_ops <= len(p.ops) <= cfg.max_ops
        assert set(p.ops) <= set(cfg.operators)
        steps = p.solution_steps
        assert steps[-1] == f"A: {p.answer}"
        assert all(arith.evaluate_step(s) for s in steps[:-1])
        if not cfg.allow_negative:
            assert all(c >= 0 for *_, c in p.steps)
        # the rendered expression evaluates (Python precedence) to the left-to-right answer
        assert eval(p.expression.replace("/", "//")) == p.answer
        assert arith.parse_expression(p.prompt) == p


def test_operator_mix_weights():
    ops = [op for p in arith.generate_problems(ArithConfig(operators="+++*"), 3, "w", 0, 500) for op in p.ops]
    assert ops.count("+") > 2 * ops.count("*") > 0


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="min_ops"):
        ArithConfig(min_ops=3, max_ops=2)
    with pytest.raises(ValueError, match="operators"):
        ArithConfig(operators="+^")
    with pytest.raises(ValueError, match="wording"):
        ArithConfig(wording="prose")


def test_word_problems_parse_back_and_keep_the_canonical_solution():
    p = arith.parse_expression("Q: (20-3-8)*4=?")
    words = ArithProblem(p.first, p.ops, p.operands, "words")
    assert words.prompt.startswith("Q: ") and "=?" not in words.prompt and words.prompt.endswith("have now?\n")
    assert words.question.count("Then ") == 3 and "gives away 3." in words.question and "4 times as many" in words.question
    assert words.solution == p.solution  # the same steps, whatever the wording
    assert arith.parse_expression(words.prompt) == words == arith.parse_expression(words.question)
    task = arith.ArithTask()
    assert task.format_prompt(words.question) == words.prompt
    assert task.verify(words.prompt, words.solution).answer_correct
    # a sentence that is not one of the fixed forms is an error naming the sentence, not a wrong problem
    with pytest.raises(ValueError, match="sentence 'Then Mia eats 3.'"):
        arith.parse_expression("Mia has 20 apples. Then Mia eats 3. How many apples does Mia have now?")
    with pytest.raises(ValueError, match="word problem"):
        arith.parse_expression("Q: how many apples?")


def test_canonical_solution_format():
    p = arith.parse_expression("Q: (20-3-8)*4=?")
    assert p.expression == "(20-3-8)*4"
    assert p.prompt == "Q: (20-3-8)*4=?\n"
    assert p.solution == "20-3=17\n17-8=9\n9*4=36\nA: 36\n"


def test_wrong_middle_step_is_found_exactly():
    p = arith.parse_expression("(20-3-8)*4")
    v = arith.verify_solution(p, ["20-3=17", "17-8=8", "8*4=32", "A: 32"])
    assert v.step_correct == [True, False, False, False]
    assert v.first_wrong_step == 1
    assert not v.answer_correct
    # the later step is arithmetically fine, just built on the error
    assert arith.evaluate_step("8*4=32") is True
    assert arith.evaluate_step("17-8=8") is False


def test_right_solution_missing_step_and_lucky_answer():
    p = arith.parse_expression("(20-3-8)*4")
    ok = arith.verify_solution(p, arith.split_steps(p.solution))
    assert ok.all_correct and ok.first_wrong_step is None
    short = arith.verify_solution(p, ["20-3=17", "17-8=9"])
    assert short.first_wrong_step == 2 and not short.answer_correct
    lucky = arith.verify_solution(p, ["20-3=17", "17-8=8", "9*4=36", "A: 36"])
    assert lucky.answer_correct and lucky.first_wrong_step == 1 and not lucky.all_correct


def test_answer_extraction():
    assert arith.extract_answer("1+2=3\nA: 3\n") == "3"
    assert arith.extract_answer("1+2=3\nA:  -4") == "-4"
    assert arith.extract_answer("1+2=3\n") is None
    assert arith.answers_match("07", "7") and not arith.answers_match(None, "7")
    assert not arith.answers_match("x", "7")


def test_corrupted_steps_are_always_wrong():
    rng = random.Random(0)
    for p in arith.generate_problems(ArithConfig(operators="+-*/"), 2, "c", 0, 300):
        for s in p.solution_steps[:-1]:
            bad = arith.corrupt_step(s, rng)
            assert bad != s
            # wrong at its position even when internally consistent
            assert not arith.verify_solution(p, [bad]).step_correct[0] or bad == p.solution_steps[0]


def test_self_eval_examples_are_balanced_and_labelled_right():
    rng = random.Random(1)
    probs = arith.generate_problems(ArithConfig(), 5, "se", 0, 400)
    labels = []
    for p in probs:
        prompt, completion = arith.self_eval_example(p, rng)
        assert prompt.startswith(p.prompt) and prompt.endswith(arith.SELF_EVAL_SUFFIX)
        steps = prompt[len(p.prompt):-len(arith.SELF_EVAL_SUFFIX)].strip().split("\n")
        truly_right = steps == p.solution_steps[:len(steps)]
        assert truly_right == (completion == "yes\n")
        labels.append(truly_right)
    assert 0.4 < sum(labels) / len(labels) < 0.6


def test_problem_dataclass_is_value_like():
    assert ArithProblem(1, ("+",), (2,)) == arith.parse_expression("1+2")
    with pytest.raises(ValueError):
        arith.parse_expression("hello")
