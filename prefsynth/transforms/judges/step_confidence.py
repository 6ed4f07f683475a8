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

`span` picks what of a step is scored. `line`: the whole step. `result`: only the number the step
computes (after its last `=`, or the answer after `A:` / `####` / "answer is"), given everything
before it — the recomputation alone. A pretrained model spends most of a line's probability on its
wording and operands, not on whether the arithmetic is right: on SmolLM2-135M-Instruct's word-problem
steps the line's mean token probability ranks step-local correctness below chance (AUROC 0.34), its
masked result 0.94 (`benchmarks/step_confidence.py`). A step with no such number is scored whole.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

from prefsynth.config.label import STEP_CONFIDENCE_SPANS as SPANS
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
RESULT_QUESTIONS = {
    "response": "the least likely step result of the whole response: each step's computed number, its mean token "
                "probability under the judge model after the prompt, the steps before it and the step up to `=`",
    "step": "no error so far: the least likely of the results of steps 0..i (each result's mean token "
            "probability after everything before it)",
}
QUESTIONS_BY_SPAN = {"line": QUESTIONS, "result": RESULT_QUESTIONS}


# the number a step computes: after its last `=` (a calculator annotation `<<48/2=24>>24` included) or
# after an answer marker; the last match wins, so `3*3=9` scores `9` and `A: 9` scores `9`
_RESULT = re.compile(r"(?:=|A:|####|answer is:?)[ \t]*\$?(-?\d[\d,]*(?:\.\d+)?)")


def result_split(step: str) -> tuple[str, str] | None:
    """(the step up to its result, the result) when the step ends a computation in a number; else None."""
    last = None
    for last in _RESULT.finditer(step):
        pass
    if last is None:
        return None
    return step[:last.start(1)], last.group(1)


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


def judged_spans(t: Target, span: str = "line") -> list[tuple[int, str, str]]:
    """(step index, context, scored text) per non-empty step: the whole step, or (span `result`) its
    result after the context and the step's head."""
    if span not in SPANS:
        raise ValueError(f"step_confidence span must be one of {SPANS}, got {span!r}")
    out = []
    for i, (c, s) in enumerate(step_spans(t)):
        if not s.strip():
            continue
        split = result_split(s) if span == "result" else None
        out.append((i, c + split[0], split[1]) if split else (i, c, s))
    return out


def step_confidences(targets: Sequence[Target], backend, span: str = "line",
                     ) -> tuple[dict[str, list[tuple[int, float]]], list[Failure]]:
    """Each target's (step index, confidence) per non-empty step, in order: exp(mean token log-prob)
    of the step (or its result) after everything before it; and the targets that could not be scored
    (no steps, longer than the model's context, a failed model call), named."""
    res, fits = JudgeResult(), context_check(backend)
    todo: list[tuple[Target, int, str, str]] = []
    for t in targets:
        spans = judged_spans(t, span)
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
    return by_target, res.failures


def judge_step_confidence(targets: Sequence[Target], backend, span: str = "line") -> JudgeResult:
    """Step and response labels of each target from the judge model's probability of its steps (or of
    each step's result: `span`)."""
    by_target, failures = step_confidences(targets, backend, span)
    res = JudgeResult(failures=failures)
    name = LABELERS["step_confidence"]
    for rid, lines in by_target.items():
        running, worst = math.inf, None
        for i, c in lines:
            if c < running:
                running, worst = c, i
            res.rows.append(label_row(name, rid, "step", running, "correct" if running > 0.5 else "incorrect",
                                      max(running, 1 - running),
                                      f"{span} p={c:.4f}; least likely so far: step {worst} p={running:.4f}",
                                      step_index=i))
        res.rows.append(label_row(name, rid, "response", running, "correct" if running > 0.5 else "incorrect",
                                  max(running, 1 - running), f"least likely step {worst} p={running:.4f}"))
    return res
