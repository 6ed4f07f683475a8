"""Exact critiques (AutoMathCritique style): the located first wrong step and why it is wrong, solutions
with a planted error, and critiques with a wrong verdict (the rejected side of critique pairs).
"""

from __future__ import annotations

import random
import re
from typing import Sequence

from prefsynth.tasks.arith.problems import ANSWER_PREFIX, STEP_RE, ArithProblem, apply_op
from prefsynth.tasks.arith.training import corrupt_step
from prefsynth.tasks.arith.verify import normalise_step, verify_solution


CRITIQUE_VERDICT_PREFIX = "Verdict: "
_ANSWER_STEP_RE = re.compile(r"^\s*A:\s*(-?\d+)\s*$")


def _why_wrong(problem: ArithProblem, steps: list[str], i: int) -> str:
    """One sentence on why step i (0-based, the first wrong one) is wrong, from the exact steps."""
    expected = problem.solution_steps
    n = i + 1  # steps are numbered from 1 in the text
    if i >= len(steps):
        return f"Step {n} is missing: the solution stops before {expected[i]}."
    if i >= len(expected):
        return f"Step {n} is extra: the answer was already given at step {len(expected)}."
    got, want = normalise_step(steps[i]), expected[i]
    is_answer_step = i == len(expected) - 1
    m_got, m_ans = STEP_RE.match(got), _ANSWER_STEP_RE.match(got)
    if is_answer_step:
        if m_ans:
            return f"Step {n} is wrong: the answer is {problem.answer}, not {int(m_ans.group(1))}."
        if m_got:
            return f"Step {n} is wrong: every operation is done, so it should give the answer {want}."
        return f"Step {n} is wrong: {got} is not the answer line; it should be {want}."
    a, op, b, c = problem.steps[i]
    if m_ans:
        return f"Step {n} is wrong: it answers too early; next is {want}."
    if not m_got:
        return f"Step {n} is wrong: {got} is not a calculation; it should be {want}."
    a2, op2, b2, c2 = int(m_got.group(1)), m_got.group(2), int(m_got.group(3)), int(m_got.group(4))
    if a2 != a:
        where = "the problem starts with" if i == 0 else "the previous result is"
        return f"Step {n} is wrong: it starts from {a2}, but {where} {a}; it should be {want}."
    if (op2, b2) != (op, b):
        return f"Step {n} is wrong: the problem applies {op}{b} here, not {op2}{b2}; it should be {want}."
    return f"Step {n} is wrong: {a}{op}{b} is {c}, not {c2}."


def critique(problem: ArithProblem, steps: list[str]) -> tuple[str, int | None]:
    """The exact critique of a worked solution: (text, first wrong step, 0-based or None).

    Names the first wrong (or missing, or extra) step and why, or says every step is right;
    the last line is a strictly parseable verdict, `Verdict: step N` (N from 1) or
    `Verdict: correct` (transforms/critiques.py parse_verdict reads it back).
    """
    first_wrong = verify_solution(problem, steps).first_wrong_step
    if first_wrong is None:
        return f"All {len(steps)} steps are correct.\n{CRITIQUE_VERDICT_PREFIX}correct\n", None
    why = _why_wrong(problem, steps, first_wrong)
    return f"{why}\n{CRITIQUE_VERDICT_PREFIX}step {first_wrong + 1}\n", first_wrong


def planted_error_steps(problem: ArithProblem, rng: random.Random) -> tuple[list[str], int]:
    """A solution with one planted error (`corrupt_step` at a random operation step), continued
    correctly from the wrong value as real solutions are; returns (steps, first wrong step)."""
    k = rng.randrange(len(problem.steps))
    steps = problem.solution_steps[:k]
    wrong = corrupt_step(problem.solution_steps[k], rng)
    steps.append(wrong)
    cur = int(wrong.split("=")[-1])
    for op, b in list(zip(problem.ops, problem.operands))[k + 1:]:
        try:
            nxt = apply_op(cur, op, b)
        except ValueError:  # an inexact division after the slip: the solver gives up there
            break
        steps.append(f"{cur}{op}{b}={nxt}")
        cur = nxt
    steps.append(f"{ANSWER_PREFIX}{cur}")
    return steps, k


def corrupted_critique(problem: ArithProblem, steps: Sequence[str], truth: int | None,
                       rng: random.Random) -> tuple[str, int | None]:
    """A rule critique with a corrupted verdict, for a rejected side: a wrong response called
    correct (the miss critics make most), or a right one blamed on a seeded step with a false claim."""
    if truth is not None:
        return f"All {len(steps)} steps are correct.\n{CRITIQUE_VERDICT_PREFIX}correct\n", None
    k = rng.randrange(len(problem.steps))
    a, op, b, c = problem.steps[k]
    claimed = c + rng.choice([-2, -1, 1, 2])
    return (f"Step {k + 1} is wrong: {a}{op}{b} is {claimed}, not {c}.\n"
            f"{CRITIQUE_VERDICT_PREFIX}step {k + 1}\n", k)
