"""Arith problems: the difficulty settings, a problem with its canonical left-to-right solution, seeded
generation, and parsing a problem back from its prompt.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from prefsynth.ids import seed_for


NAME = "arith"
ANSWER_PREFIX = "A: "
STEP_RE = re.compile(r"^\s*(-?\d+)\s*([-+*/])\s*(-?\d+)\s*=\s*(-?\d+)\s*$")
ANSWER_RE = re.compile(r"^\s*A:\s*(-?\d+)\s*$")
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
