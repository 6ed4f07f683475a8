"""Pointwise judge: Prometheus-style absolute grading, Likert 1-5 (score = (E[Likert]-1)/4)."""

from __future__ import annotations

from typing import Sequence

from prefsynth.ids import seed_for
from prefsynth.transforms.judges.base import (LABELERS, LIKERT, SCORE_SUFFIX, Failure, JudgeResult, Target,
                                              backend_failure, context_check, fmt_probs, generate_greedy, label_row,
                                              question_of, response_of, score_or_fail)
from prefsynth.transforms.judges.parsing import JudgeParseError, parse_verdict
from prefsynth.transforms.judges.templates import Template


def judge_pointwise(targets: Sequence[Target], backend, templates: dict[str, Template], mode: str, seed: int,
                    max_new_tokens: int) -> JudgeResult:
    """Prometheus-style absolute grading: Likert 1-5 with the reference answer when there is one."""
    res, fits, labeler = JudgeResult(), context_check(backend), LABELERS["pointwise"]
    ok: list[tuple[Target, str]] = []
    for t in targets:
        prompt = templates["pointwise"].render(question=question_of(t), response=response_of(t), reference=t.reference)
        if not fits(prompt + (SCORE_SUFFIX + "5" if mode == "score" else "")):
            res.failures.append(Failure(t.response_id, "judge_context_overflow",
                                        "pointwise: prompt longer than the judge's context", prompt, None))
        else:
            ok.append((t, prompt))
    if mode == "score":
        dists = score_or_fail(backend, [p + SCORE_SUFFIX for _, p in ok], LIKERT, res, [t.response_id for t, _ in ok])
        for (t, _), d in zip(ok, dists):
            if d is None:
                continue
            expected = sum((k + 1) * p for k, p in enumerate(d))
            best = max(range(5), key=lambda k: d[k])
            res.rows.append(label_row(labeler, t.response_id, "response", (expected - 1) / 4, LIKERT[best], d[best],
                                      f"score mode: P({fmt_probs(d, LIKERT)}), E={expected:.3f}"))
        return res
    texts = generate_greedy(backend, [p for _, p in ok],
                            [seed_for(seed, t.response_id, "judge/pointwise") for t, _ in ok], max_new_tokens)
    for (t, prompt), text in zip(ok, texts):
        if not isinstance(text, str):
            res.failures.append(backend_failure(t.response_id, "pointwise", prompt, text))
            continue
        try:
            verdict, feedback = parse_verdict(text, LIKERT)
        except JudgeParseError as err:
            res.failures.append(Failure(t.response_id, "judge_unparseable", f"pointwise: {err}", prompt, text))
            continue
        res.rows.append(label_row(labeler, t.response_id, "response", (int(verdict) - 1) / 4, verdict, None,
                                  feedback, raw_output=text))
    return res
