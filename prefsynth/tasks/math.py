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

import re
import threading

NAME = "math"
PARSE_TIMEOUT_S = 5
VERIFY_TIMEOUT_S = 5
_ANSWER_IS_RE = re.compile(r"(?:final answer|answer)\s*(?:is|:)\s*[:\s]*(.+?)\s*\.?\s*$", re.IGNORECASE | re.MULTILINE)
_HASHES_RE = re.compile(r"####\s*(.+?)\s*$", re.MULTILINE)


def _timeout(seconds: int) -> int | None:
    """math-verify's signal-based timeout only on the main thread (None disables it)."""
    return seconds if threading.current_thread() is threading.main_thread() else None


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`), braces balanced; None if there is none."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    if not starts:
        return None
    i, depth = starts[-1], 1
    while i < len(text):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[starts[-1]:i].strip()
        i += 1
    return None  # unbalanced: no answer rather than a truncated one


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

    try:
        gold = parse(_as_latex(str(reference)), parsing_timeout=_timeout(PARSE_TIMEOUT_S))
        pred = parse(_as_latex(str(predicted)), parsing_timeout=_timeout(PARSE_TIMEOUT_S))
        if not gold or not pred:
            return False
        return bool(verify(gold, pred, timeout_seconds=_timeout(VERIFY_TIMEOUT_S)))
    except Exception:  # math-verify raises on odd input and on timeouts: not equivalent
        return False


def split_steps(solution: str) -> list[str]:
    """Non-empty lines (MATH solutions write one derivation step per line or sentence block)."""
    return [line.strip() for line in solution.split("\n") if line.strip()]


def format_prompt(question: str) -> str:
    return f"Problem: {question.strip()}\nSolution (put the final answer in \\boxed{{}}):\n"


class MathTask:
    name = NAME
    format_prompt = staticmethod(format_prompt)
    split_steps = staticmethod(split_steps)
    extract_answer = staticmethod(extract_answer)
    answers_match = staticmethod(answers_match)
