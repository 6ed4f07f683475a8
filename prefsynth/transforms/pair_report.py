"""The pairs stage's metrics: pair precision per level/source before and after each filter, on the
prompts the UPO estimator did not train on, and how far UPO's goal is met.
"""

from __future__ import annotations

import collections

from prefsynth.config import Params
from prefsynth.transforms import upo
from prefsynth.transforms.pair_filters import _matches
from prefsynth.transforms.pairs import truly_better


def _precision(rows: list[dict], prompts: dict[str, dict]) -> dict:
    truth = [truly_better(p, prompts[p["prompt_id"]]) for p in rows]
    truth = [t for t in truth if t is not None]
    return {"pairs": len(rows), "precision": round(sum(truth) / len(truth), 4) if truth else None}


def precision_report(pairs: list[dict], dropped: dict[str, str], prompts: dict[str, dict], params: Params) -> dict:
    """Pair precision per level/source before and after each filter, on prompts the estimator did not train on."""
    cfg = params.pairs.upo
    held = [p for p in pairs if not upo.is_trusted_prompt(params.seed, p["prompt_id"], cfg.trusted_fraction)]
    groups = collections.defaultdict(list)
    for p in held:
        groups[f"{p['level']}/{p['label_source']}"].append(p)
    out, goal = {}, {}
    for key, rows in sorted(groups.items()):
        reason = [dropped.get(p["pair_id"], "") for p in rows]
        after_agree = [p for p, r in zip(rows, reason) if not r.startswith("low_agreement")]
        after_contra = [p for p, r in zip(rows, reason) if not r.startswith(("low_agreement", "upo_contradicted"))]
        after_upo = [p for p, r in zip(rows, reason) if not r.startswith(("low_agreement", "upo_"))]
        final = [p for p, r in zip(rows, reason) if not r]
        stages = {"candidates": _precision(rows, prompts), "after_agreement_filter": _precision(after_agree, prompts),
                  "after_upo_contradiction": _precision(after_contra, prompts),
                  "after_upo": _precision(after_upo, prompts), "final": _precision(final, prompts)}
        for s in stages.values():
            s["kept_fraction"] = round(s["pairs"] / len(rows), 4) if rows else None
        # UPO alone, measured from the pairs the agreement filter let through
        upo_in, upo_out = stages["after_agreement_filter"], stages["after_upo"]
        if upo_in["pairs"] and upo_in["precision"] is not None and upo_out["precision"] is not None:
            stages["upo_gain_points"] = round(100 * (upo_out["precision"] - upo_in["precision"]), 2)
            stages["upo_kept_fraction"] = round(upo_out["pairs"] / upo_in["pairs"], 4)
        fin = stages["final"]
        out[key] = stages
        # the goal on what is trained: from UPO's input to the final pairs (after the dedupe and the source gate)
        if _matches(key.split("/", 1)[1], cfg.sources) and upo_in["pairs"] and upo_in["precision"] is not None:
            gain = round(100 * (fin["precision"] - upo_in["precision"]), 2) if fin["precision"] is not None else None
            kept = round(fin["pairs"] / upo_in["pairs"], 4)
            goal[key] = {"final_precision": fin["precision"], "from_precision": upo_in["precision"],
                         "gain_points": gain, "kept_fraction": kept, "final_pairs": fin["pairs"],
                         "met": gain is not None and gain >= 10 and kept >= 0.5}
    per_source = {key: {"final_pairs": s["final"]["pairs"], "final_precision": s["final"]["precision"],
                        "candidate_precision": s["candidates"]["precision"]} for key, s in out.items()}
    return {"precision": out, "final_precision_by_source": per_source, "upo_goal_>=10pts_at_>=50pct_kept": goal,
            "heldout_prompts": len({p["prompt_id"] for p in held})}
