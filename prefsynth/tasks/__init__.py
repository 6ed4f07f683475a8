"""Problem domains: prompts, answer extraction, verification, step splitting."""

from prefsynth.tasks.arith import ArithTask
from prefsynth.tasks.gsm8k import Gsm8kTask
from prefsynth.tasks.math import ChatTask, MathTask

TASKS = {"arith": ArithTask(), "gsm8k": Gsm8kTask(), "math": MathTask(), "chat": ChatTask()}


def get_task(name: str):
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known: {sorted(TASKS)}") from None
