"""Self-consistency over a prompt's samples, and answer voting by self-certainty. Pure.

- Majority vote (Wang et al. 2022 self-consistency): the most frequent final answer among a
  prompt's samples; its share of all samples is the agreement ratio. With no reference, the
  majority answer is a pseudo-reference ("Consistency Is (Almost) Correctness"): responses that
  give it score 1, the others 0, so response pairs are majority vs minority answers.
- Self-certainty Borda vote (Kang et al. 2025, "Scalable Best-of-N Selection via
  Self-Certainty"): responses ranked by self-certainty (KL(U || p), higher = more certain); the
  response at rank r (1 = most certain) of N gives (N - r + 1) ** p points to its answer; the answer
  with the most points wins. p = 0 is plain majority voting, large p is Best-of-N by self-certainty.

A prompt gives no self-consistency pairs when every sample agrees (no contrast) or when the
majority is too weak to trust (agreement below a threshold); `consistency_verdict` names why.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Callable, Sequence

Normalise = Callable[[str | None], str | None]


def _norm(answer: str | None) -> str | None:
    answer = (answer or "").strip()
    return answer or None


@dataclass(frozen=True)
class Consistency:
    n: int  # samples of the prompt (answerless ones count: they are votes for nothing)
    majority: str | None  # most frequent final answer; ties broken by the smallest answer string
    agreement: float  # share of all n samples that gave the majority answer
    counts: dict  # answer -> votes
    borda: str | None  # self-certainty Borda winner


def majority_vote(answers: Sequence[str | None], normalise: Normalise = _norm) -> tuple[str | None, float, dict]:
    """(majority answer, agreement ratio, votes per answer); answerless samples vote for nothing."""
    votes = collections.Counter(a for a in map(normalise, answers) if a is not None)
    if not votes:
        return None, 0.0, {}
    top = max(votes.values())
    majority = min(a for a, c in votes.items() if c == top)  # deterministic tie-break
    return majority, top / len(answers), dict(sorted(votes.items()))


def borda_vote(answers: Sequence[str | None], certainties: Sequence[float | None], power: float = 0.5,
               normalise: Normalise = _norm) -> str | None:
    """Self-certainty Borda vote: rank r of N (1 = most certain) gives (N - r + 1) ** power points."""
    ranked = sorted(((c if c is not None else float("-inf"), i) for i, c in enumerate(certainties)),
                    key=lambda t: (-t[0], t[1]))
    n, points = len(ranked), collections.defaultdict(float)
    for rank, (_, i) in enumerate(ranked, start=1):
        a = normalise(answers[i])
        if a is not None:
            points[a] += (n - rank + 1) ** power
    if not points:
        return None
    top = max(points.values())
    return min(a for a, p in points.items() if p == top)


def consistency(responses: Sequence[dict], borda_power: float = 0.5, normalise: Normalise = _norm) -> Consistency:
    answers = [r.get("final_answer") for r in responses]
    majority, agreement, counts = majority_vote(answers, normalise)
    borda = borda_vote(answers, [r.get("self_certainty") for r in responses], borda_power, normalise)
    return Consistency(len(responses), majority, agreement, counts, borda)


def consistency_verdict(c: Consistency, min_agreement: float) -> str | None:
    """Why a prompt gives no self-consistency pairs, or None when it does."""
    if c.majority is None:
        return "no_answer"
    if len(c.counts) < 2 and c.agreement >= 1.0:
        return "no_contrast"  # every sample gave the same answer: nothing to prefer
    if c.agreement < min_agreement:
        return "low_agreement"
    return None


def pseudo_scores(responses: Sequence[dict], reference: str | None, normalise: Normalise = _norm) -> dict[str, float]:
    """Score 1 for responses whose answer equals the pseudo-reference, 0 for the rest."""
    return {r["response_id"]: 1.0 if reference is not None and normalise(r.get("final_answer")) == reference else 0.0
            for r in responses}


def pseudo_label_precision(groups: Sequence[tuple[Consistency, str | None]],
                           matches: Callable[[str | None, str | None], bool]) -> dict:
    """How often the majority / Borda answer is the true one, over prompts with a reference.

    `groups` holds (consistency, reference) per prompt; also reported per agreement band, since the
    agreement threshold trades coverage for precision.
    """
    out: dict = {}
    bands = [(0.0, 0.5), (0.5, 0.75), (0.75, 1.0001)]
    scored = [(c, ref) for c, ref in groups if ref is not None and c.majority is not None]
    for name, pick in (("majority", lambda c: c.majority), ("self_certainty_borda", lambda c: c.borda)):
        right = [matches(pick(c), ref) for c, ref in scored]
        out[name] = {"prompts": len(right), "precision": round(sum(right) / len(right), 4) if right else None}
    out["majority_by_agreement"] = {}
    for lo, hi in bands:
        sel = [matches(c.majority, ref) for c, ref in scored if lo <= c.agreement < hi]
        out["majority_by_agreement"][f"[{lo:g},{min(hi, 1):g}]"] = {
            "prompts": len(sel), "precision": round(sum(sel) / len(sel), 4) if sel else None}
    return out
