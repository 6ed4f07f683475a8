"""ArithTask: the embedded world behind the Task protocol.
"""

from __future__ import annotations

from prefsynth.tasks.arith.critiques import corrupted_critique, critique
from prefsynth.tasks.arith.problems import NAME, ArithProblem, format_prompt, parse_expression
from prefsynth.tasks.arith.verify import answers_match, extract_answer, self_eval_prompt, split_steps, verify_solution
from prefsynth.tasks.base import BaseTask, StepVerdicts


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
