"""What every problem domain provides to the stages: prompt text, steps, answers, verification.

Stages never branch on a task's name: they ask the task (`get_task(record["task"])`) for its
step delimiter, final-answer extraction and equivalence, voting key, reference parsing, optional
step verification and its native self-evaluation format. `BaseTask` holds the defaults shared by
the word-problem tasks (gsm8k, math, chat); `arith` overrides what its exact world knows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class StepVerdicts:
    """Verification of a worked solution.

    `step_correct[i]` says whether step i is right; `first_wrong_step` is the index of the first
    step that is wrong or missing (None when no step is wrong). `expected_steps[i]`, where
    present, is a verified-correct step for position i (arith: the canonical step; gsm8k: a wrong
    calculation with its result corrected), used for Step-DPO. `exact` says whether the verdicts
    are ground truth for the whole step (arith) or only a local check (gsm8k calculations).
    """

    step_correct: list[bool]
    first_wrong_step: int | None
    answer_correct: bool
    expected_steps: list[str] = field(default_factory=list)
    exact: bool = True

    @property
    def all_correct(self) -> bool:
        return self.first_wrong_step is None and self.answer_correct


# ---- final answers in the forms models write them ------------------------------------------------

_HASHES_RE = re.compile(r"####[ \t]*(.+?)[ \t]*$", re.MULTILINE)  # one line: `#### \n42` has no answer
_A_LINE_RE = re.compile(r"^[ \t]*(?:\*\*)?A(?:nswer)?(?:\*\*)?[ \t]*:[ \t]*(.+?)[ \t]*$", re.MULTILINE)
_ANSWER_IS_RE = re.compile(r"(?:final answer|the answer)[ \t]*(?:is|:)[ \t]*:?[ \t]*(.+?)[ \t]*$",
                           re.IGNORECASE | re.MULTILINE)


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


def stated_answer(text: str) -> tuple[str | None, str | None]:
    """(answer text, form) of the final answer a solution states: the last `\\boxed{}`, else the
    last `#### x`, else the last `A: x` line, else the last `the answer is x`; (None, None) if none."""
    if text is None:
        return None, None
    boxed = last_boxed(text)
    if boxed:
        return boxed, "boxed"
    for form, pattern in (("hashes", _HASHES_RE), ("a_line", _A_LINE_RE), ("answer_is", _ANSWER_IS_RE)):
        found = [f.strip() for f in pattern.findall(text) if f.strip()]
        if found:
            return found[-1].strip().rstrip(".").strip(), form
    return None, None


def split_lines(solution: str) -> list[str]:
    """Non-empty lines, stripped: one step per line, blank lines (instruct models' `\\n\\n`) ignored."""
    return [line.strip() for line in solution.split("\n") if line.strip()]


class BaseTask:
    """Defaults of a task; subclasses override what their domain knows."""

    name = "base"
    needs_reference = True  # prompts without a reference answer are dead letters (chat: kept, counted)
    exact_steps = False  # verify_steps gives ground truth for every step (arith)
    step_delimiter = "\n"  # what ends a step (MCTS expansions stop here; step pairs end with it)
    # appended to the question in the user turn, so a chat model states its answer in a form
    # `extract_answer` reads; null for tasks whose prompt already says it
    answer_instruction: str | None = None

    def format_prompt(self, question: str) -> str:
        """The plain-text prompt (no chat template) for a bare question."""
        return question.strip() + "\n"

    def user_message(self, question: str) -> str:
        """The user turn of a chat-formatted prompt."""
        q = question.strip()
        return f"{q}\n{self.answer_instruction}" if self.answer_instruction else q

    def split_steps(self, solution: str) -> list[str]:
        return split_lines(solution)

    def extract_answer(self, solution: str) -> str | None:
        return stated_answer(solution)[0]

    def answers_match(self, predicted: str | None, reference: str | None) -> bool:
        return predicted is not None and reference is not None and \
            predicted.strip().lower() == reference.strip().lower()

    def answer_key(self, answer: str | None) -> str | None:
        """What self-consistency votes on: equal keys are equivalent answers."""
        return None if answer is None else answer.strip().lower()

    def is_final_step(self, step: str) -> bool:
        """Does this step state the final answer (ends a path in MCTS)?"""
        return stated_answer(step)[0] is not None

    def parse_reference(self, raw: str) -> tuple[str, str | None]:
        """(reference answer, worked solution or None) from a reference field; ValueError if unusable."""
        text = str(raw).strip()
        if not text:
            raise ValueError("empty reference answer")
        answer, _ = stated_answer(text)
        return (answer, text) if answer is not None else (text, None)

    def verify_steps(self, record: dict, steps: list[str]) -> StepVerdicts | None:
        """Step verification against the record's ground truth; None where the task has none."""
        return None

    def self_eval(self) -> tuple[Callable[[str, list[str]], str], tuple[str, str]] | None:
        """(prompt builder(prompt, steps), (yes, no)) for a policy trained on its own
        self-evaluation format; None: the generic judge templates ask instead."""
        return None

    def critique(self, record: dict, steps: list[str]) -> tuple[str, int | None] | None:
        """An exact critique (text, first wrong step) where the task can write one; None otherwise."""
        return None

    def corrupt_critique(self, problem_text: str, steps: list[str], truth: int | None, rng):
        """A plausible critique with a wrong verdict (a rejected side for critique pairs); None: can't."""
        return None


class Task(BaseTask):
    """The protocol, by its defaults (kept as a name for type hints)."""
