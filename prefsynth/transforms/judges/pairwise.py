"""Pairwise judge: relative A/B grading of a pair in both presentation orders (score = P(a better))."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from prefsynth.ids import content_id, seed_for
from prefsynth.transforms.judges.base import (AB, LABELERS, SCORE_SUFFIX, Failure, JudgeResult, Target,
                                              backend_failure, context_check, fmt_probs, generate_greedy, label_row,
                                              question_of, response_of, score_or_fail)
from prefsynth.transforms.judges.parsing import JudgeParseError, parse_verdict
from prefsynth.transforms.judges.templates import Template


@dataclass
class PairVerdict:
    p_a_better: float  # P(a better than b), averaged over both presentation orders
    first_order: str  # "a" | "b": the verdict with a shown as Response A
    second_order: str  # "a" | "b": the verdict with b shown as Response A (mapped back)
    consistent: bool

    @property
    def label(self) -> str:
        return f"{self.first_order}_better" if self.consistent else "position_inconsistent"

    @property
    def confidence(self) -> float:
        return max(self.p_a_better, 1.0 - self.p_a_better)


def combine_orders(p_a_shown_first: float, p_b_shown_first: float) -> PairVerdict:
    """Merge the two presentation orders of one pair.

    `p_a_shown_first`: P(verdict "A") when a is Response A; `p_b_shown_first`: P(verdict "A")
    when b is Response A (so "A" there means b). A verdict that flips with the order is
    position-inconsistent: kept as such (label says so), never resolved silently.
    """
    p1, p2 = p_a_shown_first, 1.0 - p_b_shown_first  # P(a better) in each order
    v1, v2 = ("a" if p1 > 0.5 else "b"), ("a" if p2 > 0.5 else "b")
    return PairVerdict((p1 + p2) / 2, v1, v2, v1 == v2)


@dataclass
class PairTarget:
    pair_id: str
    a: Target
    b: Target


def make_pairs(targets: Sequence[Target]) -> list[PairTarget]:
    """Disjoint pairs of one prompt's responses in id order ((r0, r1), (r2, r3), ...), skipping
    identical texts: each response is judged in at most one pair, so target_id (= a) names one pair."""
    by_prompt: dict[str, list[Target]] = {}
    for t in sorted(targets, key=lambda t: t.response_id):
        by_prompt.setdefault(t.prompt_id, []).append(t)
    out = []
    for ts in by_prompt.values():
        pool = list(ts)
        while len(pool) >= 2:
            a = pool.pop(0)
            j = next((k for k, b in enumerate(pool) if b.response.strip() != a.response.strip()), None)
            if j is None:
                break
            b = pool.pop(j)
            out.append(PairTarget(content_id(a.response_id, b.response_id, "pair"), a, b))
    return out


def judge_pairwise(pairs: Sequence[PairTarget], backend, templates: dict[str, Template], mode: str, seed: int,
                   max_new_tokens: int) -> JudgeResult:
    """Relative grading of each pair in both orders; rows carry target_id = a, other_id = b."""
    res, fits, labeler = JudgeResult(), context_check(backend), LABELERS["pairwise"]
    ok: list[tuple[PairTarget, str, str]] = []
    for pr in pairs:
        q, ref = question_of(pr.a), pr.a.reference
        ab = templates["pairwise"].render(question=q, response_a=response_of(pr.a), response_b=response_of(pr.b),
                                          reference=ref)
        ba = templates["pairwise"].render(question=q, response_a=response_of(pr.b), response_b=response_of(pr.a),
                                          reference=ref)
        if not all(fits(p + SCORE_SUFFIX + "A") for p in (ab, ba)):
            res.failures.append(Failure(pr.a.response_id, "judge_context_overflow",
                                        "pairwise: prompt longer than the judge's context", ab, None))
        else:
            ok.append((pr, ab, ba))
    verdicts: list[tuple[PairTarget, float, float, str, str | None]] = []
    if mode == "score":
        prompts = [p + SCORE_SUFFIX for _, ab, ba in ok for p in (ab, ba)]
        dists = score_or_fail(backend, prompts, AB, res, [pr.a.response_id for pr, _, _ in ok for _ in (0, 1)])
        for k, (pr, _, _) in enumerate(ok):
            d1, d2 = dists[2 * k], dists[2 * k + 1]
            if d1 is None or d2 is None:
                continue
            verdicts.append((pr, d1[0], d2[0], f"score mode: a first P({fmt_probs(d1, AB)}); "
                                               f"b first P({fmt_probs(d2, AB)})", None))
    else:
        prompts = [p for _, ab, ba in ok for p in (ab, ba)]
        seeds = [seed_for(seed, pr.pair_id, f"judge/pairwise/{o}") for pr, _, _ in ok for o in ("ab", "ba")]
        texts = generate_greedy(backend, prompts, seeds, max_new_tokens)
        for k, (pr, ab, ba) in enumerate(ok):
            t1, t2 = texts[2 * k], texts[2 * k + 1]
            bad = next(((p, t) for p, t in ((ab, t1), (ba, t2)) if not isinstance(t, str)), None)
            if bad:
                res.failures.append(backend_failure(pr.a.response_id, "pairwise", *bad))
                continue
            try:
                (v1, f1), (v2, f2) = parse_verdict(t1, AB), parse_verdict(t2, AB)
            except JudgeParseError as err:
                res.failures.append(Failure(pr.a.response_id, "judge_unparseable", f"pairwise: {err}", ab,
                                            f"[a shown first]\n{t1}\n[b shown first]\n{t2}"))
                continue
            verdicts.append((pr, float(v1 == "A"), float(v2 == "A"), f"a first: {f1}\nb first: {f2}",
                             f"[a shown first]\n{t1}\n[b shown first]\n{t2}"))
    for pr, p1, p2, why, raw in verdicts:
        v = combine_orders(p1, p2)
        res.rows.append(label_row(labeler, pr.a.response_id, "pair", v.p_a_better, v.label,
                                  v.confidence if mode == "score" else None,
                                  f"a first -> {v.first_order}, b first -> {v.second_order}; {why}",
                                  raw_output=raw, other_id=pr.b.response_id))
    return res
