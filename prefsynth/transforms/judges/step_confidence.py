"""Step confidence: the judge model's own probability of each step, read after the policy's prompt.

A self-evaluation with nothing to learn and nothing to copy. P(True) shows the model a step and asks
whether it is right; a small policy then answers from surface features (the tiny arith policy reads
the operator: AUROC ~0.55) or, asked to recompute first, copies the shown result. Here the model
never sees the step it is judging: each step is scored as the continuation of the exact prompt the
policy saw plus the response up to that step, so the claimed result is masked by construction and
the score is the model's recomputation of it (`benchmarks/step_confidence.py`: AUROC ~0.9 against
step-local correctness on held-out arith prompts, against ~0.55 for P(True)).

    line confidence  c_i = exp(mean token log-prob of step i | prompt + response before step i)
    step i label     min(c_0 .. c_i)   "no error so far": the least likely step of the prefix
    response label   min over every step

The step label answers "no error so far" (the verifier's step label, what a Monte-Carlo value
estimates), not step-local correctness; `QUESTIONS` says so in metrics/labels.json. With
`label.judge.model` unset the policy judges itself (its own distribution); another model gives that
model's confidence in the policy's steps. Tokens are counted with the backend's tokenizer (characters
where it has none, e.g. a remote server).
"""

from __future__ import annotations

import math
from typing import Sequence

from prefsynth.transforms.judges.base import (
    LABELERS,
    Failure,
    JudgeResult,
    Target,
    batch_or_each,
    context_check,
    label_row,
)

QUESTIONS = {
    "response": "the least likely step of the whole response, each step's mean token probability under the judge "
                "model after the policy's prompt and the steps before it (the step itself never shown)",
    "step": "no error so far: the least likely of steps 0..i (each step's mean token probability after the "
            "prompt and the steps before it)",
}


def step_spans(t: Target) -> list[tuple[str, str]]:
    """(context, step text) per step: the policy's prompt plus the response up to the step. Steps are
    found in the response text in order, so the context is exactly what the policy had written;
    a step not found there (a task that rewrites its steps) follows the earlier steps joined by lines."""
    prompt = t.prompt if t.prompt is not None else t.question
    out, cursor = [], 0
    for i, step in enumerate(t.steps):
        at = t.response.find(step, cursor) if step else -1
        if at < 0:
            out.append((prompt + "".join(s + "\n" for s in t.steps[:i]), step))
            cursor = len(t.response)
            continue
        out.append((prompt + t.response[:at], step))
        cursor = at + len(step)
    return out


def _n_tokens(backend, text: str) -> int:
    tok = getattr(backend, "tokenizer", None)
    if tok is None:
        return max(1, len(text))
    return max(1, len(tok(text, add_special_tokens=False)["input_ids"]))


def judge_step_confidence(targets: Sequence[Target], backend) -> JudgeResult:
    """Step and response labels of each target from the judge model's probability of its steps."""
    res, fits = JudgeResult(), context_check(backend)
    todo: list[tuple[Target, int, str, str]] = []
    for t in targets:
        spans = [(i, c, s) for i, (c, s) in enumerate(step_spans(t)) if s.strip()]
        if not spans:
            res.failures.append(Failure(t.response_id, "judge_no_steps", "step_confidence: the response has no "
                                        "steps to score", t.response, None))
            continue
        too_long = next((c + s for _, c, s in spans if not fits(c + s)), None)
        if too_long is not None:
            res.failures.append(Failure(t.response_id, "judge_context_overflow",
                                        "step_confidence: prompt + response longer than the judge's context",
                                        too_long, None))
            continue
        todo += [(t, i, c, s) for i, c, s in spans]
    lps = batch_or_each(lambda cs: backend.score([c for c, _ in cs], [s for _, s in cs]),
                        [(c, s) for _, _, c, s in todo], res, [t.response_id for t, _, _, _ in todo],
                        "step_confidence score", raw_input=lambda cs: cs[0] + cs[1])
    failed = {f.record_id for f in res.failures}
    by_target: dict[str, list[tuple[int, float]]] = {}
    for (t, i, _, s), lp in zip(todo, lps):
        if t.response_id not in failed:
            by_target.setdefault(t.response_id, []).append((i, math.exp(lp / _n_tokens(backend, s))))
    name = LABELERS["step_confidence"]
    for rid, lines in by_target.items():
        running, worst = math.inf, None
        for i, c in lines:
            if c < running:
                running, worst = c, i
            res.rows.append(label_row(name, rid, "step", running, "correct" if running > 0.5 else "incorrect",
                                      max(running, 1 - running),
                                      f"line p={c:.4f}; least likely so far: step {worst} p={running:.4f}",
                                      step_index=i))
        res.rows.append(label_row(name, rid, "response", running, "correct" if running > 0.5 else "incorrect",
                                  max(running, 1 - running), f"least likely step {worst} p={running:.4f}"))
    return res
