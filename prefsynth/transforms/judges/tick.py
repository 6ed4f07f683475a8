"""TICK judge: yes/no checklist questions per prompt (generated, parsed strictly), then P(yes) of
each for every response (score = fraction of questions passed)."""

from __future__ import annotations

from typing import Sequence

from prefsynth.ids import seed_for
from prefsynth.transforms.judges.base import (LABELERS, YES_NO, Failure, JudgeResult, Target, context_check,
                                              generate_greedy, label_row, question_of, response_of, score_or_fail)
from prefsynth.transforms.judges.parsing import TICK_PREFILL, JudgeParseError, drop_cut_line, parse_questions
from prefsynth.transforms.judges.templates import Template


def judge_tick(targets: Sequence[Target], backend, templates: dict[str, Template], seed: int, max_questions: int,
               max_new_tokens: int) -> JudgeResult:
    """TICK: the judge writes yes/no checklist questions per prompt (generate, parsed strictly),
    then answers each for every response (score: P(yes)); score = fraction of questions passed."""
    res, fits, labeler = JudgeResult(), context_check(backend), LABELERS["tick"]
    by_prompt: dict[str, list[Target]] = {}
    for t in targets:
        by_prompt.setdefault(t.prompt_id, []).append(t)
    pids = sorted(by_prompt)
    # the judge's answer starts as a checklist does: small instruct models otherwise answer the
    # question instead of writing questions about answers
    q_prompts = {pid: templates["tick_questions"].render(question=question_of(by_prompt[pid][0]),
                                                         reference=by_prompt[pid][0].reference,
                                                         max_questions=max_questions) + TICK_PREFILL for pid in pids}
    gen_pids = [pid for pid in pids if fits(q_prompts[pid])]
    for pid in set(pids) - set(gen_pids):
        for t in by_prompt[pid]:
            res.failures.append(Failure(t.response_id, "judge_context_overflow",
                                        "tick: checklist prompt longer than the judge's context", q_prompts[pid], None))
    texts = generate_greedy(backend, [q_prompts[p] for p in gen_pids],
                            [seed_for(seed, p, "judge/tick") for p in gen_pids], max_new_tokens)
    checklists: dict[str, tuple[list[str], str]] = {}
    for pid, text in zip(gen_pids, texts):
        try:
            if not isinstance(text, str):
                raise JudgeParseError(f"backend failure: {getattr(text, 'message', text)}")
            qs = parse_questions(drop_cut_line(TICK_PREFILL + text), max_questions)
        except JudgeParseError as err:
            raw = text if isinstance(text, str) else getattr(text, "raw_output", None)
            for t in by_prompt[pid]:  # every response of the prompt loses its checklist: each is recorded
                res.failures.append(Failure(t.response_id, "judge_unparseable", f"tick questions: {err}",
                                            q_prompts[pid], raw))
            continue
        checklists[pid] = (qs, text)
    asks: list[tuple[Target, int, str]] = []
    for pid, (qs, _) in sorted(checklists.items()):
        for t in by_prompt[pid]:
            prompts = [templates["tick_answer"].render(question=question_of(t), response=response_of(t), check=q,
                                                       reference=None) for q in qs]
            if not all(fits(p + YES_NO[0]) for p in prompts):
                res.failures.append(Failure(t.response_id, "judge_context_overflow",
                                            "tick: answer prompt longer than the judge's context", prompts[0], None))
                continue
            asks += [(t, k, p) for k, p in enumerate(prompts)]
    dists = score_or_fail(backend, [p for _, _, p in asks], YES_NO, res, [t.response_id for t, _, _ in asks])
    per: dict[str, list[float]] = {}
    for (t, _, _), d in zip(asks, dists):
        per.setdefault(t.response_id, []).append(None if d is None else d[0])
    failed = {f.record_id for f in res.failures}
    for t in sorted({a[0].response_id: a[0] for a in asks}.values(), key=lambda t: t.response_id):
        ps = per[t.response_id]
        if t.response_id in failed or any(p is None for p in ps):
            continue
        qs, text = checklists[t.prompt_id]
        passed = [p > 0.5 for p in ps]
        score = sum(passed) / len(passed)
        res.rows.append(label_row(
            labeler, t.response_id, "response", score, "pass" if score >= 0.5 else "fail",
            sum(max(p, 1 - p) for p in ps) / len(ps),
            "; ".join(f"{q} -> P(yes)={p:.3f}" for q, p in zip(qs, ps)), raw_output=text))
    return res
