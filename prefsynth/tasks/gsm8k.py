"""GSM8K: grade-school word problems, `#### <answer>` references, `<<a*b=c>>` calculator steps.

The calculator annotations of the reference solutions are the checkable steps: each is an
arithmetic expression and the value the annotator's calculator gave for it.
"""

from __future__ import annotations

import ast
import json
import operator
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

NAME = "gsm8k"
_FINAL_RE = re.compile(r"####\s*(.+?)\s*$", re.MULTILINE)
_CALC_RE = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
_NUMBER_RE = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_ANSWER_IS_RE = re.compile(r"answer is[:\s]*\$?\s*(-?[\d,]*\.?\d+)", re.IGNORECASE)
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.Pow: operator.pow, ast.Mod: operator.mod, ast.FloorDiv: operator.floordiv}


@dataclass(frozen=True)
class CalculatorStep:
    expression: str
    result: str

    def is_correct(self) -> bool | None:
        """Does the expression evaluate to the stated result, to the precision it is stated with
        (`10/3=3.33` is right, `80000+50000=130001` is not)? None when it cannot be evaluated."""
        value = safe_eval(self.expression)
        stated = parse_number(self.result)
        if value is None or stated is None:
            return None
        text = self.result.strip().rstrip(".%")
        decimals = len(text.split(".", 1)[1]) if "." in text else 0
        return abs(value - stated) <= Fraction(1, 2 * 10**decimals)


def parse_number(text: str | None) -> Fraction | None:
    """A number from text like `1,234`, `$5.50`, `12.` or `-3`; None when there is none."""
    if text is None:
        return None
    cleaned = str(text).strip().replace(",", "").replace("$", "").rstrip(".").strip()
    if cleaned.endswith("%"):
        cleaned = cleaned[:-1]
    try:
        return Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None


def numbers_equal(a: Fraction | float, b: Fraction | float, rel_tol: float = 1e-6) -> bool:
    a, b = Fraction(a), Fraction(b)
    if a == b:
        return True
    return abs(a - b) <= rel_tol * max(abs(a), abs(b), 1)


def safe_eval(expression: str) -> Fraction | None:
    """Exact arithmetic on + - * / ** % // and parentheses; nothing else is evaluated."""
    text = expression.replace(",", "").replace("$", "").replace("x", "*").replace("×", "*").replace("÷", "/")
    text = re.sub(r"(\d+(?:\.\d+)?)%", r"(\1/100)", text)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        return None

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return Fraction(str(node.value))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow):
                if right.denominator != 1 or abs(right) > 64:
                    return Fraction(float(left) ** float(right))
                return left ** int(right)
            return _BINOPS[type(node.op)](left, right)
        raise ValueError(f"unsupported expression node {type(node).__name__}")

    try:
        value = ev(tree)
    except (ValueError, ZeroDivisionError, OverflowError, TypeError):
        return None
    return Fraction(value)


def reference_answer(answer_field: str) -> str:
    """The text after `####` of a GSM8K answer field."""
    m = _FINAL_RE.search(answer_field)
    if not m:
        raise ValueError("no '#### <answer>' line in the answer field")
    return m.group(1).strip()


def reference_solution(answer_field: str) -> str:
    """The worked solution without the final `####` line."""
    return _FINAL_RE.sub("", answer_field).rstrip()


def calculator_steps(solution: str) -> list[CalculatorStep]:
    return [CalculatorStep(e.strip(), r.strip()) for e, r in _CALC_RE.findall(solution)]


def split_steps(solution: str) -> list[str]:
    return [line.strip() for line in solution.split("\n") if line.strip()]


def extract_answer(solution: str) -> str | None:
    """`#### n` if present, else `the answer is n`, else the last number in the text."""
    m = _FINAL_RE.search(solution)
    if m:
        num = _NUMBER_RE.search(m.group(1))
        return _clean(num.group(0)) if num else m.group(1).strip()
    m = _ANSWER_IS_RE.search(solution)
    if m:
        return _clean(m.group(1))
    nums = _NUMBER_RE.findall(_CALC_RE.sub("", solution))
    return _clean(nums[-1]) if nums else None


def _clean(number: str) -> str:
    return number.replace(",", "").replace("$", "").rstrip(".")


def answers_match(predicted: str | None, reference: str | None) -> bool:
    """Exact numeric equality (`5.00` == `5`, `$1,000` == `1000`)."""
    a, b = parse_number(predicted), parse_number(reference)
    return a is not None and b is not None and a == b


def format_prompt(question: str) -> str:
    return f"Question: {question.strip()}\nAnswer: Let's think step by step.\n"


def read_jsonl(path: str) -> Iterator[tuple[int, dict]]:
    """(line number, record) for every line of a GSM8K-style JSONL file."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                yield lineno, json.loads(line)


class Gsm8kTask:
    name = NAME
    format_prompt = staticmethod(format_prompt)
    split_steps = staticmethod(split_steps)
    extract_answer = staticmethod(extract_answer)
    answers_match = staticmethod(answers_match)
