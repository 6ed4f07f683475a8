"""What every problem domain provides to the stages: prompt text, steps, answers, verification."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class StepVerdicts:
    """Exact verification of a worked solution against the ground truth.

    `step_correct[i]` says whether step i is right; `first_wrong_step` is the index of the first
    step that is wrong or missing (None when the whole solution is right).
    """

    step_correct: list[bool]
    first_wrong_step: int | None
    answer_correct: bool
    expected_steps: list[str] = field(default_factory=list)

    @property
    def all_correct(self) -> bool:
        return self.first_wrong_step is None and self.answer_correct


class Task(Protocol):
    name: str

    def format_prompt(self, question: str) -> str:
        """The prompt text the policy sees for a bare question."""

    def split_steps(self, solution: str) -> list[str]:
        """One string per reasoning step, in order."""

    def extract_answer(self, solution: str) -> str | None:
        """The final answer of a solution, or None when it gives none."""

    def answers_match(self, predicted: str | None, reference: str | None) -> bool:
        """Whether a predicted final answer equals the reference answer."""
