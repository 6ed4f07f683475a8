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

WORDINGS = ("symbols", "words")
# `words`: the same problem told as a short story, one sentence per operation. The names and items
# follow from the numbers (one wording per problem), and every sentence has one fixed form, so a
# prompt parses back to its problem exactly.
_NAMES = ("Mia", "Tom", "Ana", "Leo", "Sara", "Ben", "Ivy", "Sam")
_ITEMS = ("apples", "stickers", "marbles", "coins", "books", "shells", "cards", "pencils")
_WORD_OPS = {"+": "Then {name} gets {b} more.", "-": "Then {name} gives away {b}.",
             "*": "Then {name} ends up with {b} times as many.", "/": "Then {name} keeps one of {b} equal shares."}
_WORD_FIRST_RE = re.compile(r"^(?P<name>[A-Z][a-z]+) has (?P<n>\d+) (?P<item>[a-z]+)\.$")
_WORD_OP_RES = {op: re.compile("^" + re.escape(form).replace(r"\{name\}", r"[A-Z][a-z]+").replace(r"\{b\}", r"(\d+)") + "$")
                for op, form in _WORD_OPS.items()}
_WORD_QUESTION_RE = re.compile(r"^How many [a-z]+ does [A-Z][a-z]+ have now\?$")


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
    wording: str = "symbols"  # symbols: `Q: 7+5=?` | words: a one-sentence-per-operation story (pretrained models)

    def __post_init__(self):
        if not 1 <= self.min_ops <= self.max_ops:
            raise ValueError(f"arith: need 1 <= min_ops <= max_ops, got {self.min_ops}, {self.max_ops}")
        if self.operand_min > self.operand_max or self.mul_min > self.mul_max:
            raise ValueError("arith: operand ranges are empty")
        bad = set(self.operators) - set("+-*/")
        if bad or not self.operators:
            raise ValueError(f"arith: operators must be drawn from '+-*/', got {self.operators!r}")
        if self.wording not in WORDINGS:
            raise ValueError(f"arith: wording must be one of {WORDINGS}, got {self.wording!r}")
        if set(self.operators) == {"/"}:
            raise ValueError("arith: '/' needs another operator beside it (not every value divides)")


@dataclass(frozen=True)
class ArithProblem:
    first: int
    ops: tuple[str, ...]
    operands: tuple[int, ...]
    wording: str = "symbols"  # how the question is told (ArithConfig.wording); the solution is the same

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
    def question(self) -> str:
        """What the prompt asks: the expression (`(20-3)*4`) or its story (wording `words`)."""
        if self.wording == "symbols":
            return self.expression
        k = (self.first + sum(self.operands) + len(self.ops)) % len(_NAMES)
        name, item = _NAMES[k], _ITEMS[(k + self.first) % len(_ITEMS)]
        return " ".join([f"{name} has {self.first} {item}.",
                         *(_WORD_OPS[op].format(name=name, b=b) for op, b in zip(self.ops, self.operands)),
                         f"How many {item} does {name} have now?"])

    @property
    def prompt(self) -> str:
        return format_prompt(self.question)

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


def is_word_problem(question: str) -> bool:
    """A story (`wording: words`) rather than an expression: expressions hold no letters."""
    return any(ch.isalpha() for ch in question)


def format_prompt(question: str) -> str:
    """`Q: 7+5=?` for an expression, `Q: <story>` for a word problem."""
    q = question.strip()
    return f"Q: {q}\n" if is_word_problem(q) else f"Q: {q}=?\n"


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
    return ArithProblem(first, tuple(ops), tuple(operands), cfg.wording)


def generate_problems(cfg: ArithConfig, seed: int, stream: str, start: int, count: int) -> list[ArithProblem]:
    """Problems number start .. start+count-1 of a named stream; each index has its own seed,
    so any slice can be generated independently (and in parallel) with the same result."""
    return [
        sample_problem(random.Random(seed_for(seed, f"arith/{stream}", str(i))), cfg)
        for i in range(start, start + count)
    ]


def parse_expression(text: str) -> ArithProblem:
    """Rebuild a problem from its question or prompt: `Q: (20-3-8)*4=?`, or a word problem."""
    body = text.strip()
    if body.startswith("Q:"):
        body = body[2:]
    if is_word_problem(body):
        return _parse_words(text, body.strip())
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


def _parse_words(text: str, body: str) -> ArithProblem:
    """The problem of a `words` question: its first sentence, one per operation, the question."""
    sentences = re.findall(r"[^.?]+[.?]", body)
    first = _WORD_FIRST_RE.match(sentences[0].strip()) if sentences else None
    if not first or len(sentences) < 3 or not _WORD_QUESTION_RE.match(sentences[-1].strip()):
        raise ValueError(f"not an arith word problem: {text!r}")
    ops, operands = [], []
    for sentence in sentences[1:-1]:
        match = next(((op, m) for op, rx in _WORD_OP_RES.items() if (m := rx.match(sentence.strip()))), None)
        if match is None:
            raise ValueError(f"not an arith word problem: {text!r} (sentence {sentence.strip()!r})")
        ops.append(match[0])
        operands.append(int(match[1].group(1)))
    return ArithProblem(int(first.group("n")), tuple(ops), tuple(operands), "words")
