"""The pairs stage's decisions, pure of Beam, in order: the self-consistency agreement filter, UPO's
verdicts (scored by transforms/upo), one pair per content across sources, and the source gate on the
final pairs. `decide` makes them all: (pairs with uncertainty columns, pair_id -> drop reason, info).
"""

from __future__ import annotations

import collections

import numpy as np

from prefsynth.config import Params
from prefsynth.transforms import self_consistency as sc
from prefsynth.transforms import upo
from prefsynth.transforms.pairs import truly_better
from prefsynth.transforms.upo.scoring import score_pairs


def _matches(source: str | None, prefixes) -> bool:
    return source is not None and any(source.startswith(p) for p in prefixes)


def agreement_by_prompt(responses: list[dict], prompts: dict[str, dict] | None = None) -> dict[str, sc.Consistency]:
    """Self-consistency per prompt, answers compared by the prompt's task's voting key."""
    from prefsynth.tasks import get_task

    by_prompt = collections.defaultdict(list)
    for r in responses:
        by_prompt[r["prompt_id"]].append(r)
    out = {}
    for pid, rs in by_prompt.items():
        task = (prompts or {}).get(pid, {}).get("task")
        key = get_task(task).answer_key if task else sc._norm
        out[pid] = sc.consistency(sorted(rs, key=lambda r: r["response_id"]), normalise=key)
    return out


def agreement_filter(pairs: list[dict], agreement: dict[str, sc.Consistency], sources, min_agreement: float) -> dict:
    """pair_id -> drop reason for pairs of `sources` from prompts with a weak majority."""
    out = {}
    for p in pairs:
        c = agreement.get(p["prompt_id"])
        if _matches(p["label_source"], sources) and (c is None or c.agreement < min_agreement):
            out[p["pair_id"]] = f"low_agreement: majority {0 if c is None else c.agreement:.2f} < {min_agreement:g}"
    return out


def upo_inputs(pairs: list[dict], prompts: dict[str, dict], responses: list[dict], params: Params,
               unpaired: list[dict] | None = None) -> tuple[list[dict], dict[str, str], list, list, list]:
    """(pairs by id, the agreement filter's drops, trusted pairs, pairs to score, trusted unpaired rows)."""
    sel, cfg = params.pairs, params.pairs.upo
    pairs = sorted((dict(p) for p in pairs), key=lambda p: p["pair_id"])
    dropped = agreement_filter(pairs, agreement_by_prompt(responses, prompts), sel.agreement_filter_sources,
                               sel.min_agreement)
    trusted = [p for p in pairs if _matches(p["label_source"], cfg.trusted_sources)
               and upo.is_trusted_prompt(params.seed, p["prompt_id"], cfg.trusted_fraction)]
    trusted = trusted[:cfg.max_trusted_pairs]
    to_score = [p for p in pairs if cfg.score_all or (p["pair_id"] not in dropped
                                                      and _matches(p["label_source"], cfg.sources))]
    trusted_unpaired = [r for r in unpaired or [] if _matches(r.get("label_source"), cfg.trusted_sources)
                        and upo.is_trusted_prompt(params.seed, r["prompt_id"], cfg.trusted_fraction)]
    return pairs, dropped, trusted, to_score, trusted_unpaired


def decide(pairs: list[dict], prompts: dict[str, dict], responses: list[dict], params: Params, policy: str | None,
           work_dir: str, unpaired: list[dict] | None = None,
           features=None) -> tuple[list[dict], dict[str, str], dict]:
    """All decisions, pure of Beam: (pairs with uncertainty columns, pair_id -> drop reason, info).
    `features`: the pair classifier's policy features, when computed already (the pairs stage does it in Beam).

    Drop reasons are '<key>: <detail>'; the key is the dropped counter's name.
    """
    sel, cfg = params.pairs, params.pairs.upo
    pairs, dropped, trusted, to_score, trusted_unpaired = upo_inputs(pairs, prompts, responses, params, unpaired)
    info: dict = {}
    if cfg.enabled and policy:
        scores, info = score_pairs(to_score, trusted, policy, cfg, params.seed, work_dir, trusted_unpaired,
                                   features)
        for p in to_score:
            p["uncertainty_mean"], p["uncertainty_var"], p["uncertainty_bald"], _ = scores[p["pair_id"]]
        groups = collections.defaultdict(list)
        for p in pairs:
            if p["pair_id"] not in dropped and _matches(p["label_source"], cfg.sources):
                groups[(p["level"], p["label_source"])].append(p)
        for key, group in sorted(groups.items()):
            ids = [p["pair_id"] for p in group]
            s = np.array([scores[i] for i in ids])
            for p, d in zip(group, upo.select(ids, s[:, 0], s[:, 2], s[:, 3], min_agree=cfg.min_agree,
                                              keep_fraction=cfg.keep_fraction, hard_fraction=cfg.bald_rate,
                                              seed=params.seed)):
                if d.kept:
                    p["kept_reason"] = f"{p['kept_reason']}; {d.reason}"
                    if cfg.confidence_weight:
                        p["weight"] = float(p["weight"] if p["weight"] is not None else 1.0) * p["uncertainty_mean"]
                else:
                    dropped[p["pair_id"]] = ("upo_contradicted: " if d.reason.startswith("contradicted")
                                             else "upo_not_sampled: ") + d.reason
    # one pair per content (trusted sources first), then the source gate on the final pairs: a source
    # whose trained pairs are mostly wrong on held-out prompts loses them all; the dedupe is redone
    # without it, so a pair it shadowed comes back from the source that also gave it
    pre = dict(dropped)
    gated: dict[str, dict] = {}
    while True:
        dropped = dict(pre)
        dedupe(pairs, dropped, cfg.trusted_sources, demoted=set(gated))  # a gated source's copies rank last
        for p in pairs:
            g = gated.get(source_key(p))
            if g is not None and p["pair_id"] not in dropped:
                dropped[p["pair_id"]] = (f"low_source_precision: {source_key(p)} final precision {g['precision']:.2f} "
                                         f"on {g['pairs']} held-out pairs < {sel.min_source_precision:g}")
        final = final_precision(pairs, dropped, prompts, params)
        new = {k: v for k, v in final.items() if k not in gated and v["measured"]
               and v["precision"] < sel.min_source_precision}
        if not new:
            break
        gated.update(new)
    info = {**info, "source_gate": {
        "min_source_precision": sel.min_source_precision, "min_source_pairs": sel.min_source_pairs,
        "dropped_sources": {k: {**v, "reason": f"final precision {v['precision']:.4f} on {v['pairs']} held-out "
                                f"pairs < {sel.min_source_precision:g}"} for k, v in sorted(gated.items())},
        "kept_sources": final}}
    return pairs, dropped, info


def source_key(p: dict) -> str:
    return f"{p['level']}/{p['label_source']}"


def dedupe(pairs: list[dict], dropped: dict[str, str], trusted_sources, demoted: set[str] = frozenset()) -> None:
    """One pair per content across sources, in place: trusted sources first, `demoted` level/sources
    last, then the order of pair ids. The kept copy's kept_reason names the other sources that gave it."""
    rank = {pid: i for i, pid in enumerate(p["pair_id"] for p in sorted(
        pairs, key=lambda p: (source_key(p) in demoted, not _matches(p["label_source"], trusted_sources),
                              p["pair_id"])))}
    seen: dict[tuple, dict] = {}
    also: dict[str, list[str]] = collections.defaultdict(list)
    for p in sorted(pairs, key=lambda p: rank[p["pair_id"]]):
        if p["pair_id"] in dropped:
            continue
        key = (p["level"], p["prompt"], frozenset((p["chosen"], p["rejected"])))
        if key in seen:
            first = seen[key]
            same_way = first["chosen"] == p["chosen"]
            if same_way:
                also[first["pair_id"]].append(p["label_source"])
            dropped[p["pair_id"]] = (f"duplicate: same pair as {first['pair_id']} ({first['label_source']})" if same_way
                                     else f"contradicts_trusted: reversed {first['pair_id']} ({first['label_source']})")
        else:
            seen[key] = p
    for p in pairs:
        base = p["kept_reason"].split("; also given by ")[0] if p.get("kept_reason") else p.get("kept_reason")
        if also.get(p["pair_id"]):
            base = (base or "") + f"; also given by {', '.join(sorted(set(also[p['pair_id']])))}"
        p["kept_reason"] = base


def final_precision(pairs: list[dict], dropped: dict[str, str], prompts: dict[str, dict], params: Params) -> dict:
    """Per level/source: precision of its final (trained) pairs on the held-out prompts (those the UPO
    estimator never trained on) where the task has ground truth; `measured` when there are enough."""
    cfg, sel = params.pairs.upo, params.pairs
    truth: dict[str, list[bool]] = collections.defaultdict(list)
    total: dict[str, int] = collections.Counter()
    for p in pairs:
        if p["pair_id"] in dropped:
            continue
        total[source_key(p)] += 1
        if upo.is_trusted_prompt(params.seed, p["prompt_id"], cfg.trusted_fraction):
            continue
        t = truly_better(p, prompts[p["prompt_id"]]) if p["prompt_id"] in prompts else None
        if t is not None:
            truth[source_key(p)].append(bool(t))
    out = {}
    for key in sorted(total):
        ts = truth.get(key, [])
        out[key] = {"pairs": len(ts), "trained_pairs": total[key],
                    "precision": round(sum(ts) / len(ts), 4) if ts else None,
                    "measured": len(ts) >= max(sel.min_source_pairs, 1) and sel.min_source_precision > 0}
    return out
