"""Monte-Carlo step labels (Math-Shepherd, OmegaPRM), batched across responses; no Beam here.

From the prefix ending at step i, `k` rollouts with the policy complete the solution; the
step's value is the fraction that reach the reference answer. Math-Shepherd's hard label is
"any rollout correct", its soft label the fraction. The first step whose value is 0 is the
detected first error. OmegaPRM's binary search finds it with fewer rollouts, assuming a wrong
step stays wrong (values after an error stay 0): it probes the middle of the interval that
must contain the first error.

The prefix ending at the final answer line needs no rollout: its value is whether the answer
is right. A probe whose request failed is a failure, not a value of 0: the response gets no label
of that method (one `unlabeled` row the label stage turns into a dead letter).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from prefsynth.backends.base import Backend, SamplingParams
from prefsynth.ids import seed_for


UNLABELED = "unlabeled"  # label of the one row of a response whose probes failed (becomes a dead letter)
PROBE_FAILED = "probe_failed: "  # its rationale prefix, then the failure as JSON


def failed_probe(row: dict) -> dict | None:
    """The failure (error_type, message, raw_output, step_index) of an `unlabeled` MC row, else None."""
    import json

    if row.get("label") != UNLABELED or not (row.get("rationale") or "").startswith(PROBE_FAILED):
        return None
    return json.loads(row["rationale"][len(PROBE_FAILED):])


@dataclass(frozen=True)
class MCLabelConfig:
    rollouts: int = 8  # k completions from each probed prefix
    temperature: float = 0.8  # sampling temperature of the rollouts
    max_new_tokens: int = 64  # longest rollout


@dataclass
class ResponseToLabel:
    response_id: str
    prompt: str
    steps: list[str]
    reference: str
    values: dict[int, float] = field(default_factory=dict)  # step index -> fraction of good rollouts
    rollouts: int = 0
    failures: list[tuple[int, object]] = field(default_factory=list)  # (step index, the backend's failure)


def _probe(items: list[tuple[ResponseToLabel, int]], backend: Backend, cfg: MCLabelConfig, seed: int,
           answers_match: Callable[[str | None, str | None], bool], extract: Callable[[str], str | None]) -> None:
    """MC value of prefix (steps[:i+1]) for every (response, i), in one batched generate call."""
    todo = []
    for r, i in items:
        if i == len(r.steps) - 1:  # the full solution: its own answer decides, no rollouts
            r.values[i] = 1.0 if answers_match(extract("\n".join(r.steps)), r.reference) else 0.0
        else:
            todo.append((r, i))
    if not todo:
        return
    contexts = [r.prompt + "".join(s + "\n" for s in r.steps[:i + 1]) for r, i in todo]
    sp = SamplingParams(n=cfg.rollouts, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens)
    groups = backend.generate(contexts, sp, [seed_for(seed, r.response_id, f"mc/{i}") for r, i in todo])
    for (r, i), group in zip(todo, groups):
        if not isinstance(group, list):
            # a failed request is a failure, never a value: the response gets no MC label of this method
            # (label_rows gives it one `unlabeled` row that the stage turns into a dead letter)
            r.failures.append((i, group))
            continue
        prefix = r.steps[:i + 1]
        good = sum(answers_match(extract("\n".join(prefix) + "\n" + c.text), r.reference) for c in group)
        r.values[i] = good / len(group)
        r.rollouts += len(group)


def label_every_prefix(responses: Sequence[ResponseToLabel], backend: Backend, cfg: MCLabelConfig, seed: int,
                       answers_match, extract) -> None:
    """Math-Shepherd: every prefix of every response probed, all in one batched call."""
    _probe([(r, i) for r in responses for i in range(len(r.steps))], backend, cfg, seed, answers_match, extract)


def label_binary_search(responses: Sequence[ResponseToLabel], backend: Backend, cfg: MCLabelConfig, seed: int,
                        answers_match, extract) -> None:
    """OmegaPRM: binary search for the first prefix with value 0, all responses' probes batched per round."""
    # invariant: prefixes < lo are known good (value > 0); the first bad one, if any, is in [lo, hi)
    state = {r.response_id: [0, len(r.steps)] for r in responses if r.steps}
    by_id = {r.response_id: r for r in responses}
    # first probe the full solution (free): a right final answer means no error to find
    _probe([(by_id[k], len(by_id[k].steps) - 1) for k in state], backend, cfg, seed, answers_match, extract)
    active = {k for k in state if by_id[k].values.get(len(by_id[k].steps) - 1) == 0.0 and not by_id[k].failures}
    for k in list(state):
        if k not in active:
            state[k] = [len(by_id[k].steps), len(by_id[k].steps)]
        else:
            state[k][1] = len(by_id[k].steps) - 1  # the last prefix is known bad
    while active:
        probes = []
        for k in sorted(active):
            lo, hi = state[k]
            if lo >= hi:
                continue
            probes.append((by_id[k], (lo + hi) // 2))
        if not probes:
            break
        _probe(probes, backend, cfg, seed, answers_match, extract)
        for r, mid in probes:
            lo, hi = state[r.response_id]
            if r.failures:  # a failed probe is not a bad step: stop searching this response
                active.discard(r.response_id)
                continue
            if r.values[mid] > 0.0:
                lo = mid + 1
            else:
                hi = mid
            state[r.response_id] = [lo, hi]
            if lo >= hi:
                active.discard(r.response_id)


def first_error(r: ResponseToLabel) -> int | None:
    """The first probed step with value 0 (every-prefix), or the binary search's answer."""
    zeros = [i for i, v in sorted(r.values.items()) if v == 0.0]
    return zeros[0] if zeros else None


def label_rows(r: ResponseToLabel, method: str) -> list[dict]:
    """labels rows (target_kind = step) for every step the method decided.

    every: soft value of every prefix; binary: probed values plus what the search implies
    (steps before the first error good, from it on bad) — `confidence` says which."""
    import json

    from prefsynth.ids import content_id

    if r.failures:
        i, f = r.failures[0]
        detail = {"step_index": i, "error_type": getattr(f, "error_type", type(f).__name__),
                  "message": str(getattr(f, "message", f)), "raw_output": getattr(f, "raw_output", None),
                  "failed_probes": len(r.failures)}
        return [{
            "label_id": content_id(r.response_id, "mc", method, "failed"),
            "target_id": r.response_id, "target_kind": "response", "step_index": None,
            "labeler": f"mc_{method}", "score": None, "label": UNLABELED, "confidence": None,
            "rationale": PROBE_FAILED + json.dumps(detail, sort_keys=True, default=repr), "raw_output": None,
        }]
    err = first_error(r)
    rows = []
    for i in range(len(r.steps)):
        if i in r.values:
            v, conf, how = r.values[i], 1.0, "rollouts"
        elif method == "binary":
            v, conf, how = (0.0 if err is not None and i >= err else 1.0), 0.5, "implied by binary search"
        else:
            continue
        rows.append({
            "label_id": content_id(r.response_id, "mc", method, i),
            "target_id": r.response_id, "target_kind": "step", "step_index": i,
            "labeler": f"mc_{method}", "score": v, "label": "correct" if v > 0 else "incorrect",
            "confidence": conf, "rationale": how, "raw_output": None,
        })
    return rows


def detection_scores(pairs: Sequence[tuple[int | None, int | None]]) -> dict:
    """Precision/recall/F1 of detected first wrong steps against the true ones.

    A detection is right when it names the true first wrong step; a response without an error
    detected as clean counts for nothing."""
    tp = sum(1 for pred, true in pairs if pred is not None and pred == true)
    fp = sum(1 for pred, true in pairs if pred is not None and pred != true)
    fn = sum(1 for pred, true in pairs if true is not None and pred != true)
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = (2 * precision * recall / (precision + recall)) if precision and recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}
