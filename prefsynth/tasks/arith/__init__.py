"""The embedded world: multi-step integer arithmetic with the exact value of every step.

A problem is evaluated strictly left to right, one operation per step:

    Q: (20-3-8)*4=?
    20-3=17
    17-8=9
    9*4=36
    A: 36

Because the order of steps is fixed, the canonical solution is unique, and any solution's
first wrong step is known exactly. That exactness is what lets every label, filter and pair
of the platform be scored against ground truth.

    problems.py   ArithConfig, ArithProblem, seeded generation, parsing a prompt back
    verify.py     steps, the final answer, exact step verification, the self-evaluation question
    training.py   wrong steps and self-evaluation examples for the tiny policy
    critiques.py  exact critiques, planted errors, critiques with a wrong verdict
    task.py       ArithTask (the Task protocol)

Every name is importable from `prefsynth.tasks.arith`.
"""

from prefsynth.tasks.arith.critiques import CRITIQUE_VERDICT_PREFIX, corrupted_critique, critique, planted_error_steps
from prefsynth.tasks.arith.problems import (
    ANSWER_PREFIX,
    NAME,
    SELF_EVAL_SUFFIX,
    ArithConfig,
    ArithProblem,
    apply_op,
    format_prompt,
    generate_problems,
    parse_expression,
    sample_problem,
)
from prefsynth.tasks.arith.task import ArithTask
from prefsynth.tasks.arith.training import corrupt_step, self_eval_example
from prefsynth.tasks.arith.verify import (
    answers_match,
    evaluate_step,
    extract_answer,
    self_eval_prompt,
    split_steps,
    verify_solution,
)

__all__ = [
    "ANSWER_PREFIX", "CRITIQUE_VERDICT_PREFIX", "NAME", "SELF_EVAL_SUFFIX", "ArithConfig", "ArithProblem", "ArithTask",
    "answers_match", "apply_op", "corrupt_step", "corrupted_critique", "critique", "evaluate_step", "extract_answer",
    "format_prompt", "generate_problems", "parse_expression", "planted_error_steps", "sample_problem",
    "self_eval_example", "self_eval_prompt", "split_steps", "verify_solution",
]
