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
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from prefsynth.ids import seed_for
from prefsynth.tasks.base import BaseTask, StepVerdicts

NAME = "arith"
ANSWER_PREFIX = "A: "
_STEP_RE = re.compile(r"^\s*(-?\d+)\s*([-+*/])\s*(-?\d+)\s*=\s*(-?\d+)\s*$")
_ANSWER_RE = re.compile(r"^\s*A:\s*(-?\d+)\s*$")
_TOKEN_RE = re.compile(r"\d+|[-+*/]")
# The self-evaluation question the tiny policy learns to answer with "yes" / "no".
SELF_EVAL_SUFFIX = "OK? "


@dataclass(frozen=True)
class ArithConfig:
    """Difficulty of the generated problems."""

    min_ops: int = 2  # fewest operations (steps before the answer line)
    max_ops: int = 3  # most operations
    operand_min: int = 0  # smallest operand of + and -, and the first number
    operand_max: int = 50  # largest operand of + and -, and the first number
    mul_min: int = 2  # smallest operand of * and /
    mul_max: int = 5  # largest operand of * and /
    operators: str = "+-*"  # the operator mix; repeat a symbol to weight it, add "/" for exact division
    allow_negative: bool = False  # allow intermediate results below zero

    def __post_init__(self):
        if not 1 <= self.min_ops <= self.max_ops:
            raise ValueError(f"arith: need 1 <= min_ops <= max_ops, got {self.min_ops}, {self.max_ops}")
        if self.operand_min > self.operand_max or self.mul_min > self.mul_max:
            raise ValueError("arith: operand ranges are empty")
        bad = set(self.operators) - set("+-*/")
        if bad or not self.operators:
            raise ValueError(f"arith: operators must be drawn from '+-*/', got {self.operators!r}")
        if set(self.operators) == {"/"}:
            raise ValueError("arith: '/' needs another operator beside it (not every value divides)")


@dataclass(frozen=True)
class ArithProblem:
    first: int
    ops: tuple[str, ...]
    operands: tuple[int, ...]

    @property
    def expression(self) -> str:
        """Left-to-right expression with only the parentheses that order needs."""
        expr, additive = str(self.first), False
        for op, b in zip(self.ops, self.operands):
            if op in "*/" and additive:
                expr, additive = f"({expr})", False
            expr = f"{expr}{op}{b}"
            additive = additive or op in "+-"
        return expr

    @property
    def steps(self) -> list[tuple[int, str, int, int]]:
        out, cur = [], self.first
        for op, b in zip(self.ops, self.operands):
            nxt = apply_op(cur, op, b)
            out.append((cur, op, b, nxt))
            cur = nxt
        return out

    @property
    def answer(self) -> int:
        return self.steps[-1][3]

    @property
    def prompt(self) -> str:
        return format_prompt(self.expression)

    @property
    def solution_steps(self) -> list[str]:
        return [f"{a}{op}{b}={c}" for a, op, b, c in self.steps] + [f"{ANSWER_PREFIX}{self.answer}"]

    @property
    def solution(self) -> str:
        return "\n".join(self.solution_steps) + "\n"


def apply_op(a: int, op: str, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        if b == 0 or a % b:
            raise ValueError(f"{a}/{b} is not an exact integer division")
        return a // b
    raise ValueError(f"unknown operator {op!r}")


def format_prompt(expression: str) -> str:
    return f"Q: {expression}=?\n"


def sample_problem(rng: random.Random, cfg: ArithConfig) -> ArithProblem:
    n_ops = rng.randint(cfg.min_ops, cfg.max_ops)
    first = rng.randint(cfg.operand_min, cfg.operand_max)
    cur, ops, operands = first, [], []
    while len(ops) < n_ops:
        op = rng.choice(cfg.operators)
        if op == "+":
            b = rng.randint(cfg.operand_min, cfg.operand_max)
        elif op == "-":
            hi = cfg.operand_max if cfg.allow_negative else min(cfg.operand_max, cur)
            if hi < cfg.operand_min:
                continue  # nothing can be subtracted without going negative: pick another operator
            b = rng.randint(cfg.operand_min, hi)
        elif op == "*":
            b = rng.randint(cfg.mul_min, cfg.mul_max)
        else:
            divisors = [d for d in range(max(cfg.mul_min, 1), cfg.mul_max + 1) if cur % d == 0]
            if not divisors:
                continue  # no exact division of the current value: pick another operator
            b = rng.choice(divisors)
        ops.append(op)
        operands.append(b)
        cur = apply_op(cur, op, b)
    return ArithProblem(first, tuple(ops), tuple(operands))


def generate_problems(cfg: ArithConfig, seed: int, stream: str, start: int, count: int) -> list[ArithProblem]:
    """Problems number start .. start+count-1 of a named stream; each index has its own seed,
    so any slice can be generated independently (and in parallel) with the same result."""
    return [
        sample_problem(random.Random(seed_for(seed, f"arith/{stream}", str(i))), cfg)
        for i in range(start, start + count)
    ]


def parse_expression(text: str) -> ArithProblem:
    """Rebuild a problem from its expression or prompt (`Q: (20-3-8)*4=?`)."""
    body = text.strip()
    if body.startswith("Q:"):
        body = body[2:]
    body = body.strip().removesuffix("=?").replace("(", "").replace(")", "").replace(" ", "")
    tokens = _TOKEN_RE.findall(body)
    if "".join(tokens) != body or len(tokens) < 3 or len(tokens) % 2 == 0:
        raise ValueError(f"not an arith expression: {text!r}")
    first = int(tokens[0])
    ops = tuple(tokens[1::2])
    operands = tuple(int(t) for t in tokens[2::2])
    if any(op not in "+-*/" for op in ops):
        raise ValueError(f"not an arith expression: {text!r}")
    return ArithProblem(first, ops, operands)


def split_steps(solution: str) -> list[str]:
    """Non-empty lines, stripped; the `A: n` line is the last step."""
    return [line.strip() for line in solution.split("\n") if line.strip()]


def extract_answer(solution: str) -> str | None:
    for line in split_steps(solution):
        m = _ANSWER_RE.match(line)
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
    m = _STEP_RE.match(step)
    if not m:
        return None
    a, op, b, c = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
    try:
        return apply_op(a, op, b) == c
    except ValueError:
        return False


def _normalise(step: str) -> str:
    return step.replace(" ", "")


def verify_solution(problem: ArithProblem, solution_steps: list[str]) -> StepVerdicts:
    """Each step is right iff it is the canonical step at its position (left-to-right order
    makes the canonical solution unique); a missing step counts as the first wrong one."""
    expected = problem.solution_steps
    correct = [i < len(expected) and _normalise(s) == _normalise(expected[i]) for i, s in enumerate(solution_steps)]
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


class ArithTask(BaseTask):
    """The embedded world: exact answers, exact steps, a native self-evaluation format, exact critiques."""

    name = NAME
    exact_steps = True
    answer_instruction = "Compute it left to right, one operation per line, then write 'A: <answer>'."

    format_prompt = staticmethod(format_prompt)
    split_steps = staticmethod(split_steps)
    extract_answer = staticmethod(extract_answer)
    answers_match = staticmethod(answers_match)

    def answer_key(self, answer: str | None) -> str | None:
        try:
            return None if answer is None else str(int(str(answer).strip()))
        except ValueError:
            return None

    def is_final_step(self, step: str) -> bool:
        return step.strip().startswith("A:")

    def parse_reference(self, raw: str) -> tuple[str, str | None]:
        text = str(raw).strip()
        answer = extract_answer(text) if "A:" in text else text
        try:
            return str(int(str(answer).strip())), (text if "A:" in text else None)
        except (TypeError, ValueError):
            raise ValueError(f"reference answer {text[:60]!r} is not an integer") from None

    @staticmethod
    def problem(record: dict) -> ArithProblem:
        return parse_expression(record.get("question") or record["prompt"])

    def verify_steps(self, record: dict, steps: list[str]) -> StepVerdicts:
        return verify_solution(self.problem(record), list(steps))

    def self_eval(self):
        return self_eval_prompt, ("yes", "no")

    def critique(self, record: dict, steps: list[str]) -> tuple[str, int | None]:
        return critique(self.problem(record), list(steps))

    def corrupt_critique(self, problem_text: str, steps: list[str], truth: int | None, rng):
        try:
            problem = parse_expression(problem_text)
        except ValueError:
            return None
        return corrupted_critique(problem, steps, truth, rng)

    def verify(self, prompt: str, solution: str) -> StepVerdicts:
        return verify_solution(parse_expression(prompt), split_steps(solution))


def corrupt_step(step: str, rng: random.Random) -> str:
    """A plausible wrong version of a canonical step `a op b = c` (wrong result or wrong operand)."""
    m = _STEP_RE.match(step)
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


# ---- critiques (AutoMathCritique style) --------------------------------------------------------

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
    got, want = _normalise(steps[i]), expected[i]
    is_answer_step = i == len(expected) - 1
    m_got, m_ans = _STEP_RE.match(got), _ANSWER_STEP_RE.match(got)
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
