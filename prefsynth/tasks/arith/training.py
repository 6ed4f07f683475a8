"""Training data of the tiny policy's self-evaluation: plausible wrong steps and (prompt, yes/no) examples.
"""

from __future__ import annotations

import random

from prefsynth.tasks.arith.problems import STEP_RE, ArithProblem, apply_op
from prefsynth.tasks.arith.verify import self_eval_prompt


def corrupt_step(step: str, rng: random.Random) -> str:
    """A plausible wrong version of a canonical step `a op b = c` (wrong result or wrong operand)."""
    m = STEP_RE.match(step)
    if not m:
        raise ValueError(f"not an operation step: {step!r}")
    a, op, b, c = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
    kind = rng.random()
    if kind < 0.6:  # an arithmetic slip in the result
        # mostly slips that change the units digit (checkable from the operands' units digits),
        # sometimes a tens slip (only checkable by doing the whole sum)
        c = c + (rng.choice([-3, -2, -1, 1, 2, 3]) if rng.random() < 0.8 else rng.choice([-10, 10]))
    elif kind < 0.8:  # a wrong carried value, computed consistently
        a = a + rng.choice([-10, -1, 1, 10])
        c = apply_op(a, op, b) if op != "/" or (b and a % b == 0) else c + 1
    else:  # a wrong operand, computed consistently
        b2 = b + rng.choice([-1, 1, 2])
        b2 = b2 if b2 > 0 else b + 1
        b, c = b2, (apply_op(a, op, b2) if op != "/" or a % b2 == 0 else c + 1)
    wrong = f"{a}{op}{b}={c}"
    return wrong if wrong != step else f"{a}{op}{b}={c + 1}"


def self_eval_example(problem: ArithProblem, rng: random.Random) -> tuple[str, str]:
    """(prompt, completion) teaching the self-evaluation question: is the last step right?

    Half the shown steps are canonical, half corrupted (`corrupt_step`). Measured on the default
    tiny policy: it learns the format but barely the judgement (held-out AUROC ~0.53). Asking it
    to recompute the step before answering did not help (AUROC 0.505): it copies the shown
    result instead of computing it.
    """
    steps = problem.solution_steps[:-1]
    k = rng.randrange(len(steps))
    prefix, last = steps[:k], steps[k]
    if rng.random() < 0.5:
        return self_eval_prompt(problem.prompt, prefix + [last]), "yes\n"
    return self_eval_prompt(problem.prompt, prefix + [corrupt_step(last, rng)]), "no\n"
