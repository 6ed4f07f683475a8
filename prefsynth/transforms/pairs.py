"""Preference pairs in TRL's format (`prompt`, `chosen`, `rejected`), from three sources. Pure.

- response level: per prompt, the best vs the worst response by label (verifier correctness,
  ties broken by mean log-prob), every pair above a margin, capped per prompt;
- step level from MCTS trees (MCTS-DPO): among the children of an expanded node, the highest-Q
  step vs the lowest-Q step; the prompt is the question plus the shared prefix of steps;
- Step-DPO: the prompt is the question plus the correct steps before a response's first wrong
  step, chosen = the verified correct next step, rejected = the wrong step.

Every pair says why it was kept (`kept_reason`) and where its label came from (`label_source`).
"""

from __future__ import annotations

import itertools
from typing import Sequence

from prefsynth.config.candidates import STEP_DPO_SPANS
from prefsynth.ids import content_id
from prefsynth.tasks import get_task


def _pair(prompt_id: str, level: str, prompt: str, chosen: str, rejected: str, chosen_id, rejected_id,
          chosen_score: float, rejected_score: float, source: str, reason: str, weight: float = 1.0) -> dict:
    return {
        # the source is part of the id: each label source keeps its own candidate (its precision is measured
        # on all of them); the pairs stage keeps one pair per content across sources
        "pair_id": content_id(prompt_id, level, prompt, chosen, rejected, source),
        "prompt_id": prompt_id, "level": level, "prompt": prompt, "chosen": chosen, "rejected": rejected,
        "chosen_id": chosen_id, "rejected_id": rejected_id, "chosen_score": chosen_score,
        "rejected_score": rejected_score, "margin": chosen_score - rejected_score,
        "uncertainty_mean": None, "uncertainty_var": None, "uncertainty_bald": None,
        "weight": weight, "label_source": source, "kept_reason": reason,
    }


def response_pairs(prompt: dict, responses: Sequence[dict], scores: dict[str, float], max_pairs: int,
                   min_margin: float, source: str) -> list[dict]:
    """Best-vs-worst first, then the next most separated pairs, up to `max_pairs` per prompt."""
    scored = [(scores[r["response_id"]], r.get("mean_logprob") or 0.0, r) for r in responses
              if r["response_id"] in scores and r["text"].strip()]
    ranked = sorted(scored, key=lambda t: (-t[0], -t[1], t[2]["response_id"]))
    candidates = []
    for (s_a, lp_a, a), (s_b, lp_b, b) in itertools.combinations(ranked, 2):
        if s_a - s_b >= min_margin and a["text"] != b["text"]:
            candidates.append((s_a - s_b, lp_a - lp_b, a, b, s_a, s_b))
    candidates.sort(key=lambda t: (-t[0], -t[1], t[2]["response_id"], t[3]["response_id"]))
    out, seen = [], set()
    for margin, _, a, b, s_a, s_b in candidates:
        if len(out) == max_pairs:
            break
        if (a["text"], b["text"]) in seen:
            continue
        seen.add((a["text"], b["text"]))
        out.append(_pair(prompt["prompt_id"], "response", prompt["prompt"], a["text"], b["text"],
                         a["response_id"], b["response_id"], s_a, s_b, source,
                         "best vs worst" if not out else f"margin {margin:g} >= {min_margin:g}"))
    return out


def tree_step_pairs(prompt: dict, nodes: Sequence[dict], min_q_gap: float, step_end: str = "\n") -> list[dict]:
    """MCTS-DPO: at every expanded node, the highest-Q visited child vs the lowest-Q one."""
    by_id = {n["node_id"]: n for n in nodes}
    children: dict[str, list[dict]] = {}
    for n in nodes:
        if n["parent_id"] is not None:
            children.setdefault(n["parent_id"], []).append(n)

    def prefix(node) -> list[str]:
        steps = []
        while node is not None and node["parent_id"] is not None:
            steps.append(node["step_text"])
            node = by_id.get(node["parent_id"])
        return steps[::-1]

    out = []
    for parent_id, kids in sorted(children.items()):
        visited = sorted((k for k in kids if k["visits"] > 0), key=lambda k: (-k["q"], k["node_id"]))
        if len(visited) < 2:
            continue
        best, worst = visited[0], visited[-1]
        if best["q"] - worst["q"] < min_q_gap or best["step_text"] == worst["step_text"]:
            continue
        context = prompt["prompt"] + "".join(s + step_end for s in prefix(by_id[parent_id]))
        # cDPO-style confidence from the visit counts: a pair seen more often is trusted more
        weight = min(best["visits"], worst["visits"]) / max(best["visits"], worst["visits"])
        out.append(_pair(prompt["prompt_id"], "step", context, best["step_text"] + step_end,
                         worst["step_text"] + step_end, best["node_id"], worst["node_id"], best["q"], worst["q"],
                         "mcts_q", f"highest vs lowest Q among {len(visited)} visited siblings", weight))
    return out


def step_dpo_pairs(prompt: dict, response: dict, step_correct: Sequence[bool], expected_steps: Sequence[str],
                   step_end: str = "\n", source: str = "verifier_arith", span: str = "step",
                   correct_solutions: Sequence[Sequence[str]] = ()) -> list[dict]:
    """Step-DPO: at a response's first wrong step, a verified continuation vs the response's own.

    span "step" pairs the single steps (Step-DPO) after the shared correct prefix; "rest" pairs the
    verified rest of the solution (`expected_steps[first_wrong:]`, so only for tasks whose expected
    steps are a whole correct solution) vs the response's own rest; "full" moves the shared prefix
    out of the prompt into both sides (prompt = the question, chosen = the response with its rest
    corrected), so the chosen side's NLL also trains the policy's own correct steps; "sampled" pairs
    the rest of the policy's own verified-correct solution of the prompt (`correct_solutions`, the
    first that starts with the same prefix) vs the response's rest: the chosen side is on-policy,
    as in Step-DPO's self-generated steps, not a correction. In arith "rest" is no better than
    "step" over 3 seeds (README "Why step pairs lose")."""
    steps = list(response["steps"])
    first_wrong = next((i for i, ok in enumerate(step_correct) if not ok), None)
    if first_wrong is None or first_wrong >= len(expected_steps) or first_wrong >= len(steps) or \
            expected_steps[first_wrong] == steps[first_wrong]:
        return []
    text = lambda ss: "".join(s + step_end for s in ss)  # noqa: E731  steps as the policy writes them
    prefix = steps[:first_wrong]  # the correct steps the response and the correction share
    pair_prompt = prompt["prompt"] + text(prefix)  # the DPO prompt: the question and that prefix
    if span == "rest":
        chosen, rejected = text(expected_steps[first_wrong:]), text(steps[first_wrong:])
        reason = f"Step-DPO, rest of solution from first wrong step {first_wrong}"
    elif span == "step":
        chosen, rejected = expected_steps[first_wrong] + step_end, steps[first_wrong] + step_end
        reason = f"Step-DPO: first wrong step {first_wrong}"
    elif span == "full":
        pair_prompt = prompt["prompt"]  # the prefix moves into both sides
        chosen, rejected = text(prefix + list(expected_steps[first_wrong:])), text(steps)
        reason = f"Step-DPO, whole solution corrected from first wrong step {first_wrong}"
    elif span == "sampled":
        rest = next((list(c[first_wrong:]) for c in correct_solutions
                     if list(c[:first_wrong]) == prefix and list(c[first_wrong:]) != steps[first_wrong:]), None)
        if not rest:
            return []
        chosen, rejected = text(rest), text(steps[first_wrong:])
        reason = f"Step-DPO, own correct sample's rest from first wrong step {first_wrong}"
    else:
        raise ValueError(f"step_dpo_pairs: span must be one of {STEP_DPO_SPANS}, got {span!r}")
    return [_pair(prompt["prompt_id"], "step", pair_prompt, chosen, rejected, None, response["response_id"], 1.0, 0.0,
                  source, reason)]


def dedupe(pairs: Sequence[dict]) -> list[dict]:
    """One pair per pair_id (content hash incl. source), never chosen == rejected."""
    out, seen = [], set()
    for p in sorted(pairs, key=lambda p: p["pair_id"]):
        if p["pair_id"] in seen or p["chosen"] == p["rejected"]:
            continue
        seen.add(p["pair_id"])
        out.append(p)
    return out


def kto_rows(prompt: dict, responses: Sequence[dict], scores: dict[str, float], source: str) -> list[dict]:
    """TRL's unpaired view: each labelled response, desirable when its score is 1."""
    return [{
        "example_id": content_id(prompt["prompt_id"], "kto", r["response_id"]),
        "prompt_id": prompt["prompt_id"], "prompt": prompt["prompt"], "completion": r["text"],
        "label": scores[r["response_id"]] >= 1.0, "source_id": r["response_id"], "label_source": source,
    } for r in responses if r["response_id"] in scores and r["text"].strip()]


def prm_row(prompt: dict, response: dict, step_correct: Sequence[bool], source: str) -> dict | None:
    """TRL's stepwise view: the response's steps and a label per step (wrong from the first error on)."""
    steps = list(response["steps"])
    if not steps or len(step_correct) != len(steps):
        return None
    first_wrong = next((i for i, ok in enumerate(step_correct) if not ok), len(steps))
    return {
        "example_id": content_id(prompt["prompt_id"], "prm", response["response_id"]),
        "prompt_id": prompt["prompt_id"], "prompt": prompt["prompt"], "completions": steps,
        "labels": [i < first_wrong for i in range(len(steps))], "source_id": response["response_id"],
        "label_source": source,
    }


def truly_better(p: dict, prompt: dict) -> bool | None:
    """Is the chosen side truly better than the rejected one, by the task's ground truth?
    None where there is none (no reference; step pairs of tasks without exact step verification)."""
    task = get_task(prompt["task"])
    if prompt.get("reference_answer") is None:
        return None
    if p["level"] == "response":
        good = [task.answers_match(task.extract_answer(t), prompt["reference_answer"]) for t in (p["chosen"], p["rejected"])]
        return good[0] and not good[1]
    if not task.exact_steps:
        return None
    prefix = task.split_steps(p["prompt"][len(prompt["prompt"]):])
    # a side may be one step or the rest of a solution (Step-DPO span "rest"): verify all its steps
    ok = [all(task.verify_steps(prompt, prefix + task.split_steps(s)).step_correct) for s in (p["chosen"], p["rejected"])]
    return ok[0] and not ok[1]
