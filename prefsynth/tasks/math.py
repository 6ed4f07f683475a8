"""MATH-style problems: LaTeX / symbolic final answers, checked for equivalence with math-verify.

A solution states its final answer in `\\boxed{...}` (the MATH convention), or after
`The answer is` / `####`. Two answers match when math-verify finds them equivalent
(`\\frac{1}{2}` == `0.5` == `1/2`, `x^2+2x` == `x(x+2)`, intervals, sets, ...).

math-verify bounds parsing and verification with `signal.alarm`, which only works in a
process's main thread; Beam runs DoFns in worker threads (FnApiRunner's multi_threading mode,
SDK harness threads), where installing the handler raises. So the timeout is used only on the
main thread and switched off elsewhere (see `_timeout`); answers are short, and a pathological
one costs time, not correctness.
"""

from __future__ import annotations

import collections
import logging
import re
import threading

from prefsynth.tasks.base import BaseTask, last_boxed, stated_answer

NAME = "math"
PARSE_TIMEOUT_S = 5
VERIFY_TIMEOUT_S = 5
_ANSWER_IS_RE = re.compile(r"(?:final answer|answer)\s*(?:is|:)\s*[:\s]*(.+?)\s*\.?\s*$", re.IGNORECASE | re.MULTILINE)
_HASHES_RE = re.compile(r"####[ \t]*(.+?)[ \t]*$", re.MULTILINE)  # one line: `#### \n42` has no answer


# verdicts decided by a fallback, by name (`math.verify_timeout`: math-verify gave up in time and
# the answers count as not equivalent; `math.verify_error`: it raised), counted in this process
# and as Beam counters (`fallback.<name>` in a stage's accounting.counters)
FALLBACKS: collections.Counter = collections.Counter()


def count_fallback(name: str) -> None:
    FALLBACKS[name] += 1
    try:
        from apache_beam.metrics import Metrics
    except ImportError:  # pragma: no cover
        return
    Metrics.counter("prefsynth", f"fallback.{name}").inc()


class _TimeoutCounter(logging.Handler):
    """math-verify reports its timeouts only as a warning and a False: count them by name."""

    def emit(self, record):
        if record.getMessage().startswith("Timeout during"):
            count_fallback("math.verify_timeout")


_HANDLER = _TimeoutCounter(logging.WARNING)


def _timeout(seconds: int) -> int | None:
    """math-verify's signal-based timeout only on the main thread (None disables it)."""
    return seconds if threading.current_thread() is threading.main_thread() else None


def extract_answer(solution: str) -> str | None:
    """The last `\\boxed{}` answer, else `#### x`, else `the answer is x`; None when none is stated."""
    boxed = last_boxed(solution)
    if boxed:
        return boxed
    for pattern in (_HASHES_RE, _ANSWER_IS_RE):
        found = pattern.findall(solution)
        if found and found[-1].strip():
            return found[-1].strip().strip("$").strip()
    return None


def _as_latex(answer: str) -> str:
    """Wrap a bare answer in `$...$` so math-verify's LaTeX extractor sees it as one expression."""
    text = answer.strip()
    if "$" in text or "\\boxed" in text or text.startswith("\\["):
        return text
    return f"${text}$"


def answers_match(predicted: str | None, reference: str | None) -> bool:
    """math-verify equivalence of two final answers; False when either is missing or unparseable."""
    if predicted is None or reference is None or not str(predicted).strip() or not str(reference).strip():
        return False
    from math_verify import parse, verify  # sympy import is slow: only when a math answer is checked

    mv_log = logging.getLogger("math_verify")
    if _HANDLER not in mv_log.handlers:
        mv_log.addHandler(_HANDLER)
    try:
        gold = parse(_as_latex(str(reference)), parsing_timeout=_timeout(PARSE_TIMEOUT_S))
        pred = parse(_as_latex(str(predicted)), parsing_timeout=_timeout(PARSE_TIMEOUT_S))
        if not gold or not pred:
            return False
        return bool(verify(gold, pred, timeout_seconds=_timeout(VERIFY_TIMEOUT_S)))
    except Exception:  # math-verify raises on odd input and on timeouts: not equivalent, counted
        count_fallback("math.verify_error")
        return False


def split_steps(solution: str) -> list[str]:
    """Non-empty lines (MATH solutions write one derivation step per line or sentence block)."""
    return [line.strip() for line in solution.split("\n") if line.strip()]


def format_prompt(question: str) -> str:
    return f"Problem: {question.strip()}\nSolution (put the final answer in \\boxed{{}}):\n"


class MathTask(BaseTask):
    """MATH-style problems: `\\boxed{}` answers, equivalence by math-verify."""

    name = NAME
    answer_instruction = "Solve it step by step, one step per line, and put the final answer in \\boxed{}."
    format_prompt = staticmethod(format_prompt)
    split_steps = staticmethod(split_steps)
    extract_answer = staticmethod(extract_answer)
    answers_match = staticmethod(answers_match)

    def answer_key(self, answer: str | None) -> str | None:
        # equivalence is symbolic; the vote groups by whitespace-free text (math-verify decides truth)
        return None if answer is None else re.sub(r"\s+", "", answer.strip().strip("$"))

    def parse_reference(self, raw: str) -> tuple[str, str | None]:
        """A bare answer (`\\frac{1}{2}`), or a worked solution with a `\\boxed{}` / `####` answer."""
        text = str(raw).strip()
        if not text:
            raise ValueError("empty reference answer")
        answer, form = stated_answer(text)
        if answer is not None:
            return answer, text
        if "\n" in text or len(text) > 200:
            raise ValueError("no final answer in the reference solution (\\boxed{...}, '#### x' or 'The answer is x')")
        return text, None


class ChatTask(BaseTask):
    """Open-ended prompts with no reference: labels come from judges only."""

    name = "chat"
    needs_reference = False

    def extract_answer(self, solution: str) -> str | None:
        return None

    def answers_match(self, predicted: str | None, reference: str | None) -> bool:
        return False

    def is_final_step(self, step: str) -> bool:
        return False

    def parse_reference(self, raw: str) -> tuple[str, str | None]:
        text = str(raw).strip()
        if not text:
            raise ValueError("empty reference")
        return text, text
