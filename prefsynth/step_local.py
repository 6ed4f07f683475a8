"""Step-local correctness, the truth that matches the question the P(True) self-judge is asked.

The label stage's verifier step label is "no error so far": after the first wrong step every
step is wrong, which is what a Monte-Carlo value estimates (can the prefix still reach the
answer?). The arith policy's native self-evaluation (`<prompt><steps>OK? ` -> yes/no, taught
by `tasks.arith.self_eval_example` on a right prefix whose last step is right or corrupted) asks
something else: is the LAST step the right next step given the steps shown before it? That is
computable exactly in the arith world:

  operation line i: `a op b = c` with a = the result the previous shown line reached (the first
                    operand for i = 0), (op, b) = the problem's i-th operation, c = a op b;
  answer line:      `A: x` with x = the result the last shown line reached, after all operations.

A step after an earlier error can be locally right (it computes correctly from a wrong value).
Only tasks with exact steps (arith) have it; others get None.
"""

from __future__ import annotations

import re

_OP = re.compile(r"^\s*(-?\d+)\s*([-+*/])\s*(-?\d+)\s*=\s*(-?\d+)\s*$")
_ANSWER = re.compile(r"^\s*A:\s*(-?\d+)\s*$")

__all__ = ["arith_step_local", "step_local_correct", "TRUTHS"]

# what each `quality` target kind of metrics/labels.json is scored against
TRUTHS = {
    "response": "final answer correct (verifier)",
    "step": "no error so far: the step and every step before it right (verifier step label; after the first "
            "error every step is wrong) - what a Monte-Carlo value estimates",
    "step_local": "step-local: the step is the right next step given the steps shown before it (prefsynth/"
                  "step_local.py) - the question the P(True) self-evaluation asks",
    "step_local_op_lines": "step-local, operation lines only (the lines the self-evaluation was taught on; "
                           "the answer line never was)",
}


def arith_step_local(problem, steps: list[str]) -> list[bool]:
    """For each step, is it the right next step given the steps before it? (`problem`: an
    arith problem: `first`, `ops`, `operands`)"""
    from prefsynth.tasks.arith import apply_op

    ops = list(zip(problem.ops, problem.operands))
    out, prev = [], problem.first  # prev: the value the shown lines reached so far (None: unreadable)
    for i, step in enumerate(steps):
        m, ans = _OP.match(step), _ANSWER.match(step)
        ok = False
        if m:
            a, op, b, c = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
            if i < len(ops) and prev is not None and a == prev and (op, b) == ops[i]:
                try:
                    ok = apply_op(a, op, b) == c
                except ValueError:
                    ok = False
            prev = c
        elif ans:
            ok = i == len(ops) and prev is not None and int(ans.group(1)) == prev
        else:
            prev = None
        out.append(ok)
    return out


def step_local_correct(task, record: dict, steps: list[str]) -> list[bool] | None:
    """Step-local truth of each step where the task has exact steps (arith), else None."""
    if not getattr(task, "exact_steps", False) or not hasattr(task, "problem"):
        return None
    try:
        problem = task.problem(record)
    except ValueError:
        return None
    return arith_step_local(problem, list(steps))


def is_operation_line(step: str) -> bool:
    return _OP.match(step) is not None
