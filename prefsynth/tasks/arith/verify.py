"""Reading and checking a solution exactly: its steps, its final answer, each step's arithmetic and
its place in the canonical solution, and the self-evaluation question asked after a step.
"""

from __future__ import annotations

from prefsynth.tasks.arith.problems import ANSWER_RE, SELF_EVAL_SUFFIX, STEP_RE, ArithProblem, apply_op
from prefsynth.tasks.base import StepVerdicts


def split_steps(solution: str) -> list[str]:
    """Non-empty lines, stripped; the `A: n` line is the last step."""
    return [line.strip() for line in solution.split("\n") if line.strip()]


def extract_answer(solution: str) -> str | None:
    for line in split_steps(solution):
        m = ANSWER_RE.match(line)
        if m:
            return str(int(m.group(1)))
    return None


def answers_match(predicted: str | None, reference: str | None) -> bool:
    if predicted is None or reference is None:
        return False
    try:
        return int(str(predicted).strip()) == int(str(reference).strip())
    except ValueError:
        return False


def evaluate_step(step: str) -> bool | None:
    """Is `a op b = c` arithmetically true? None when the line is not an operation step."""
    m = STEP_RE.match(step)
    if not m:
        return None
    a, op, b, c = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
    try:
        return apply_op(a, op, b) == c
    except ValueError:
        return False


def normalise_step(step: str) -> str:
    return step.replace(" ", "")


def verify_solution(problem: ArithProblem, solution_steps: list[str]) -> StepVerdicts:
    """Each step is right iff it is the canonical step at its position (left-to-right order
    makes the canonical solution unique); a missing step counts as the first wrong one."""
    expected = problem.solution_steps
    correct = [i < len(expected) and normalise_step(s) == normalise_step(expected[i]) for i, s in enumerate(solution_steps)]
    first_wrong = next((i for i, ok in enumerate(correct) if not ok), None)
    if first_wrong is None and len(solution_steps) < len(expected):
        first_wrong = len(solution_steps)
    answer = extract_answer("\n".join(solution_steps))
    return StepVerdicts(
        step_correct=correct,
        first_wrong_step=first_wrong,
        answer_correct=answers_match(answer, str(problem.answer)),
        expected_steps=expected,
    )


def self_eval_prompt(prompt: str, steps: list[str]) -> str:
    """Ask the policy whether the last of `steps` is correct; it answers `yes` or `no`."""
    return prompt + "".join(s + "\n" for s in steps) + SELF_EVAL_SUFFIX
