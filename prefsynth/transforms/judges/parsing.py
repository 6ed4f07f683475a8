"""Strict parsing of judge text: `Feedback: ... [RESULT] v` verdicts and TICK checklists.

Anything that does not follow the format is a JudgeParseError (the judge records it as a
failure with the raw text), never a None label.
"""

from __future__ import annotations

import re
from typing import Sequence

RESULT_TAG = "[RESULT]"
TICK_PREFILL = "- Does the response"

_QUESTION_RE = re.compile(r"^(?:[-*•]|\d+[.)])\s+(.+\?)$")


class JudgeParseError(ValueError):
    """Judge text that does not follow the required output format."""


def parse_verdict(text: str, allowed: Sequence[str]) -> tuple[str, str]:
    """(verdict, feedback) from `Feedback: ... [RESULT] v`; JudgeParseError on anything else."""
    if text is None or not text.strip():
        raise JudgeParseError("empty judge output")
    if text.count(RESULT_TAG) != 1:
        raise JudgeParseError(f"expected exactly one {RESULT_TAG}, found {text.count(RESULT_TAG)}")
    before, after = text.split(RESULT_TAG)
    verdict = after.strip().strip("()\"'").strip().rstrip(".").strip()
    if verdict not in allowed:
        raise JudgeParseError(f"verdict {after.strip()[:40]!r} after {RESULT_TAG} is not one of {list(allowed)}")
    feedback = before.strip()
    feedback = feedback[len("Feedback:"):].strip() if feedback.startswith("Feedback:") else feedback
    if not feedback:
        raise JudgeParseError(f"no feedback before {RESULT_TAG}")
    return verdict, feedback


def drop_cut_line(text: str) -> str:
    """A checklist cut by the token budget: its unfinished last line (no `?`) is not a question."""
    lines = text.rstrip().split("\n")
    if len(lines) > 1 and not lines[-1].rstrip().endswith("?"):
        lines = lines[:-1]
    return "\n".join(lines)


def parse_questions(text: str, max_questions: int) -> list[str]:
    """TICK checklist: one `- question?` per line, nothing else; at most `max_questions` kept."""
    if text is None or not text.strip():
        raise JudgeParseError("empty checklist")
    questions = []
    for line in text.strip().split("\n"):
        line = line.strip()
        if not line:
            continue
        m = _QUESTION_RE.match(line)
        if not m:
            raise JudgeParseError(f"checklist line is not a '- ...?' question: {line[:80]!r}")
        if m.group(1) not in questions:
            questions.append(m.group(1))
    return questions[:max_questions]
