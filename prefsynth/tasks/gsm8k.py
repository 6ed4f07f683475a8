"""GSM8K: grade-school word problems, `#### <answer>` references, `<<a*b=c>>` calculator steps.

The calculator annotations of the reference solutions are the checkable steps: each is an
arithmetic expression and the value the annotator's calculator gave for it.
"""

from __future__ import annotations

import ast
import collections
import json
import operator
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

from prefsynth.tasks.base import BaseTask, StepVerdicts, stated_answer

NAME = "gsm8k"
_FINAL_RE = re.compile(r"####[ \t]*(.+?)[ \t]*$", re.MULTILINE)  # one line: `#### \n42` has no answer
# answers decided by a fallback, by name, counted in this process and as Beam counters
# (`fallback.<name>` in a stage's accounting.counters), so a lenient extraction is never silent
FALLBACKS: collections.Counter = collections.Counter()


def count_fallback(name: str) -> None:
    FALLBACKS[name] += 1
    try:
        from apache_beam.metrics import Metrics
    except ImportError:  # pragma: no cover - beam is a dependency; tasks stay usable without it
        return
    Metrics.counter("prefsynth", f"fallback.{name}").inc()


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
        return result_agrees(value, stated, self.result)


def result_agrees(value: Fraction, stated: Fraction, stated_text: str) -> bool:
    """Is `stated` the value, up to float round-off (`100/3=33.333333333333336`,
    `14*.05=0.7000000000000001`) or rounded to the precision it is written with (`10/3=3.33`)?
    Strictly less than half a unit: `90*(1/60)=1` (1.5) is wrong, not a tie."""
    if abs(value - stated) <= Fraction(1, 10**9) * max(abs(value), 1):
        return True
    text = stated_text.strip().rstrip(".%")
    decimals = len(text.split(".", 1)[1]) if "." in text else 0
    return abs(value - stated) < Fraction(1, 2 * 10**decimals)


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
    """The stated answer (`\\boxed{}`, `#### n`, `A: n`, `the answer is n`) as a number, else
    the last number in the text (counted: fallback `gsm8k.last_number_answer`)."""
    stated, _ = stated_answer(solution)
    if stated is not None:
        num = _NUMBER_RE.search(stated.replace("\\$", "$"))
        if num:
            return _clean(num.group(0))
    nums = _NUMBER_RE.findall(_CALC_RE.sub("", solution))
    if not nums:
        return None
    count_fallback("gsm8k.last_number_answer")  # no stated answer: the last number in the text
    return _clean(nums[-1])


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


_INLINE_EQ_RE = re.compile(
    r"(?<![\w.])(\$?\d[\d,]*(?:\.\d+)?%?(?:\s*[-+*/x×÷]\s*\$?\d[\d,]*(?:\.\d+)?%?)+)\s*=\s*\$?(-?\d[\d,]*(?:\.\d+)?)(?![\d.]*\d)")
_STRICT_NUMBER_RE = re.compile(r"^-?\$?\s*(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?%?$")


def step_calculations(step: str) -> list[CalculatorStep]:
    """The checkable calculations of a step: `<<a*b=c>>` annotations, else inline `a * b = c`."""
    found = calculator_steps(step)
    if found:
        return found
    return [CalculatorStep(e.strip(), r.strip()) for e, r in _INLINE_EQ_RE.findall(step)]


def corrected_step(step: str, calc: CalculatorStep) -> str | None:
    """The step with a wrong calculation's result replaced by the true value (Step-DPO's correct step)."""
    value = safe_eval(calc.expression)
    if value is None:
        return None
    exact = value.numerator if value.denominator == 1 else round(float(value), 2)
    return step.replace(f"={calc.result}", f"={exact}", 1) if f"={calc.result}" in step else \
        re.sub(rf"=\s*\$?{re.escape(calc.result)}", f"= {exact}", step, count=1)


def check_reference(answer: str) -> str:
    """A GSM8K reference must be one number (`18`, `1,000`, `$5.50`, `-3`, `12%`): ValueError otherwise."""
    text = answer.strip()
    if not text:
        raise ValueError("empty reference answer")
    if not _STRICT_NUMBER_RE.match(text) or parse_number(text) is None:
        raise ValueError(f"reference answer {text[:60]!r} is not a number")
    return _clean(text)


class Gsm8kTask(BaseTask):
    """Grade-school word problems with numeric answers; calculations in steps are checked locally."""

    name = NAME
    answer_instruction = ("Solve it step by step, one step per line, and end with a line "
                          "'The answer is <number>'.")

    format_prompt = staticmethod(format_prompt)
    split_steps = staticmethod(split_steps)
    extract_answer = staticmethod(extract_answer)
    answers_match = staticmethod(answers_match)

    def answer_key(self, answer: str | None) -> str | None:
        value = parse_number(answer)
        return None if value is None else str(value)

    def is_final_step(self, step: str) -> bool:
        """The step states a numeric final answer (`The answer is 18`, not `the answer is below`)."""
        stated = stated_answer(step)[0]
        return stated is not None and _NUMBER_RE.search(stated) is not None

    def parse_reference(self, raw: str) -> tuple[str, str | None]:
        """`#### n` (GSM8K), or a final `A: n` / `\\boxed{n}` / `The answer is n` line, or a bare
        number; the worked solution without its answer line is kept beside it."""
        text = str(raw).strip()
        m = _FINAL_RE.search(text)
        if m:
            return check_reference(m.group(1)), reference_solution(text) or None
        answer, form = stated_answer(text)
        if answer is not None:
            return check_reference(answer), text
        if _STRICT_NUMBER_RE.match(text):
            return check_reference(text), None
        raise ValueError("no final answer in the reference ('#### n', 'A: n', '\\boxed{n}' or "
                         "'The answer is n')")

    def verify_steps(self, record: dict, steps: list[str]) -> StepVerdicts | None:
        """Local checks only: every calculation a step writes must be right (`exact` is False:
        a step without arithmetic, or a right calculation of the wrong thing, passes)."""
        correct, expected = [], []
        for step in steps:
            ok, fixed = True, step
            for calc in step_calculations(step):
                if calc.is_correct() is False:
                    ok, fixed = False, corrected_step(step, calc) or step
                    break
            correct.append(ok)
            expected.append(fixed)
        first_wrong = next((i for i, ok in enumerate(correct) if not ok), None)
        answer = self.extract_answer("\n".join(steps))
        return StepVerdicts(correct, first_wrong, self.answers_match(answer, record.get("reference_answer")),
                            expected, exact=False)
