"""P(True) ("Language Models (Mostly) Know What They Know"): p(yes) / (p(yes) + p(no)) from `score`.

A task whose policy was trained on its own self-evaluation format (arith: `...\\nOK? ` -> `yes`)
is asked in that format; other tasks get the generic templates (p_true, p_true_step).
"""

from __future__ import annotations

from typing import Sequence

from prefsynth.tasks import get_task
from prefsynth.transforms.judges.base import (LABELERS, YES_NO, Failure, JudgeResult, Target, context_check,
                                              label_row, question_of, response_of, score_or_fail)
from prefsynth.transforms.judges.templates import Template


# the question each P(True) label answers (metrics/labels.json names it beside the truth it is scored against)
QUESTIONS = {
    "response": "native (arith): 'OK?' after the whole solution, i.e. is its last line (the A: line) right given "
                "the lines before it - the very prompt of its last step's label; generic: is the proposed answer "
                "correct?",
    "step": "native (arith): 'OK?' after steps 0..i, i.e. is step i the right next step given the steps before "
            "it (step-local; taught on right prefixes only); generic: is the last step of the solution so far "
            "correct?",
}


def native_self_eval(task: str):
    """(prompt builder, yes/no options) for tasks whose policy learned its own self-evaluation
    format; None for the rest (they get the generic templates)."""
    return get_task(task).self_eval()


def p_true_prompts(t: Target, templates: dict[str, Template], with_steps: bool) -> tuple[list, tuple[str, str]]:
    """[(step_index or None, prompt)] for the response and (optionally) each step prefix."""
    native = native_self_eval(t.task)
    steps = list(t.steps)
    if native:
        build, options = native
        policy_prompt = t.prompt if t.prompt is not None else t.question
        out = [(None, build(policy_prompt, steps))]
        if with_steps:
            out += [(i, build(policy_prompt, steps[:i + 1])) for i in range(len(steps))]
        return out, options
    # asked without the reference answer: P(True) is the model's own belief, not a comparison
    out = [(None, templates["p_true"].render(question=question_of(t), response=response_of(t), reference=None))]
    if with_steps:
        out += [(i, templates["p_true_step"].render(question=question_of(t), steps="\n".join(steps[:i + 1]),
                                                    reference=None)) for i in range(len(steps))]
    return out, YES_NO


def judge_p_true(targets: Sequence[Target], backend, templates: dict[str, Template], with_steps: bool) -> JudgeResult:
    """P(True) of each response (and step): p(yes) / (p(yes) + p(no)) from `score`."""
    res, fits = JudgeResult(), context_check(backend)
    todo: list[tuple[Target, int | None, str, tuple[str, str]]] = []
    for t in targets:
        prompts, options = p_true_prompts(t, templates, with_steps)
        too_long = next((p for _, p in prompts if not fits(p + options[0])), None)
        if too_long is not None:
            res.failures.append(Failure(t.response_id, "judge_context_overflow",
                                        "p_true: prompt longer than the judge's context", too_long, None))
            continue
        todo += [(t, i, p, options) for i, p in prompts]
    by_options: dict[tuple, list[int]] = {}
    for j, (_, _, _, options) in enumerate(todo):
        by_options.setdefault(options, []).append(j)
    probs: dict[int, float] = {}
    for options, idx in by_options.items():
        for j, pr in zip(idx, score_or_fail(backend, [todo[j][2] for j in idx], options, res,
                                            [todo[j][0].response_id for j in idx])):
            if pr is not None:
                probs[j] = pr[0]
    failed = {f.record_id for f in res.failures}
    for j, (t, i, _, options) in enumerate(todo):
        if t.response_id in failed:
            continue
        p = probs[j]
        res.rows.append(label_row(
            LABELERS["p_true"], t.response_id, "response" if i is None else "step", p,
            "correct" if p > 0.5 else "incorrect", max(p, 1 - p),
            f"P(yes)={p:.4f} ({'native' if native_self_eval(t.task) else 'generic'} self-evaluation)",
            step_index=i))
    return res
