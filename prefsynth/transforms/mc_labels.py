"""Monte-Carlo step labels (Math-Shepherd, OmegaPRM), batched across responses; no Beam here.

From the prefix ending at step i, `k` rollouts with the completer complete the solution; the
step's value is the fraction that reach the reference answer. Math-Shepherd's hard label is
"any rollout correct", its soft label the fraction. OmegaPRM's binary search finds the first
bad prefix with fewer rollouts, assuming a wrong step stays wrong: it probes the middle of the
interval that must contain the first error; the forward scan probes prefixes in order and stops
at the first bad one (cheap when errors come early, as they do in short solutions).

Which prefix is bad is the decision rule (`MCLabelConfig.bad_value_max`, `bad_own_min`): at most
`bad_value_max` of its rollouts reach the reference (0: Math-Shepherd's hard rule) AND at least
`bad_own_min` of them reach the response's OWN final answer (by default only when the policy is its
own completer: a stronger completer carries a wrong prefix to its own answer, not to the response's
later slips). The second condition is there
because a weak policy's value is 0 also on a right prefix it cannot finish (it makes the same
slip later): there its rollouts land on scattered wrong answers, whereas after the real error
the rollouts carry it forward to the response's own answer (benchmarks/mc_label_rules.py,
binary search, k=8: first-error F1 0.60 -> 0.65 on validation prompts, 0.60 -> 0.67 on test, at
the same ~10 rollouts per response; a threshold on the soft value does not help: values AT the
error are already 0 in 89% of cases, the misses are false zeros BEFORE it).

The completer is the policy itself unless `model` names another (Math-Shepherd's completer need not
be the policy): a stronger one repeats fewer of the policy's slips from right prefixes, the false
zeros the own-answer rule works around. It continues the policy's own prompt text.

The prefix ending at the final answer line needs no rollout: its value is whether the answer
is right. A probe whose request failed is a failure, not a value of 0: the response gets no label
of that method (one `unlabeled` row the label stage turns into a dead letter).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from prefsynth.backends.base import Backend, SamplingParams, names_other_model
from prefsynth.ids import seed_for


UNLABELED = "unlabeled"  # label of the one row of a response whose probes failed (becomes a dead letter)
PROBE_FAILED = "probe_failed: "  # its rationale prefix, then the failure as JSON


def failed_probe(row: dict) -> dict | None:
    """The failure (error_type, message, raw_output, step_index) of an `unlabeled` MC row, else None."""
    import json

    if row.get("label") != UNLABELED or not (row.get("rationale") or "").startswith(PROBE_FAILED):
        return None
    return json.loads(row["rationale"][len(PROBE_FAILED):])


def _opt(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class MCLabelConfig:
    rollouts: int = _opt(8, "k completions from each probed prefix.")
    temperature: float = _opt(0.8, "Sampling temperature of the rollouts.")
    max_new_tokens: int = _opt(64, "Longest rollout, in tokens.")
    bad_value_max: float = _opt(0.0, "A prefix is bad when at most this share of its rollouts reach the reference "
                                "(0: Math-Shepherd's hard rule, no rollout right).")
    bad_own_min: float | None = _opt(None, "... and at least this share reach the response's own final answer (the "
                                     "error is already in the prefix; 0: off). null: 0.125 when the policy completes "
                                     "its own prefixes, 0 with another completer (`model`, `backend` or `base_url` "
                                     "set); both chosen on validation: benchmarks/mc_label_rules.py.")
    model: str | None = _opt(None, "Completer model (path or served name) that rolls out from each prefix; null: the "
                             "policy itself. It continues the policy's prompt text as is.")
    backend: str | None = _opt(None, "Completer backend: transformers | vllm | openai; null: policy.backend (other "
                               "settings from policy.*).")
    base_url: str | None = _opt(None, "openai completer: server URL; null: policy.base_url.")

    @property
    def own_min(self) -> float:
        """bad_own_min as used: the own-answer condition guards against the policy's own repeated slips,
        which a different completer does not make (with one it costs F1: 0.93 -> 0.70 on validation)."""
        if self.bad_own_min is not None:
            return self.bad_own_min
        return 0.0 if names_other_model(self) else 0.125

    def __post_init__(self):
        if not (0.0 <= self.bad_value_max < 1.0 and 0.0 <= self.own_min <= 1.0):
            raise ValueError(f"label.mc: bad_value_max must lie in [0, 1) and bad_own_min in [0, 1], got "
                             f"{self.bad_value_max!r}, {self.bad_own_min!r}")


@dataclass
class ResponseToLabel:
    response_id: str
    prompt: str
    steps: list[str]
    reference: str
    values: dict[int, float] = field(default_factory=dict)  # step index -> fraction of good rollouts
    own_answer: str | None = None  # the response's own final answer (the decision rule's second condition)
    own: dict[int, float] = field(default_factory=dict)  # step index -> fraction reaching own_answer
    bad: dict[int, bool] = field(default_factory=dict)  # step index -> the decision rule's verdict
    rollouts: int = 0
    failures: list[tuple[int, object]] = field(default_factory=list)  # (step index, the backend's failure)


def _probe(items: list[tuple[ResponseToLabel, int]], backend: Backend, cfg: MCLabelConfig, seed: int,
           answers_match: Callable[[str | None, str | None], bool], extract: Callable[[str], str | None]) -> None:
    """MC value of prefix (steps[:i+1]) for every (response, i), in one batched generate call."""
    todo = []
    for r, i in items:
        if i == len(r.steps) - 1:  # the full solution: its own answer decides, no rollouts
            r.values[i] = 1.0 if answers_match(extract("\n".join(r.steps)), r.reference) else 0.0
            r.own[i] = 1.0
            r.bad[i] = r.values[i] == 0.0
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
        answers = [extract("\n".join(prefix) + "\n" + c.text) for c in group]
        r.values[i] = sum(answers_match(a, r.reference) for a in answers) / len(group)
        r.own[i] = (sum(answers_match(a, r.own_answer) for a in answers) / len(group)
                    if r.own_answer is not None else 1.0)  # no own answer: the value alone decides
        r.bad[i] = is_bad(r.values[i], r.own[i], cfg)
        r.rollouts += len(group)


def is_bad(value: float, own: float, cfg: MCLabelConfig) -> bool:
    """The decision rule: does the prefix hold an error? (see the module docstring)"""
    return value <= cfg.bad_value_max + 1e-9 and own >= cfg.own_min - 1e-9


def _own_answers(responses: Sequence[ResponseToLabel], extract) -> None:
    for r in responses:
        if r.own_answer is None and r.steps:
            r.own_answer = extract("\n".join(r.steps))


def label_every_prefix(responses: Sequence[ResponseToLabel], backend: Backend, cfg: MCLabelConfig, seed: int,
                       answers_match, extract) -> None:
    """Math-Shepherd: every prefix of every response probed, all in one batched call."""
    _own_answers(responses, extract)
    _probe([(r, i) for r in responses for i in range(len(r.steps))], backend, cfg, seed, answers_match, extract)


def label_forward_scan(responses: Sequence[ResponseToLabel], backend: Backend, cfg: MCLabelConfig, seed: int,
                       answers_match, extract) -> None:
    """Prefixes 0, 1, ... in order until the first bad one, all responses' probes batched per round;
    a right final answer (free to check) means no error and no rollouts."""
    _own_answers(responses, extract)
    live = [r for r in responses if r.steps]
    _probe([(r, len(r.steps) - 1) for r in live], backend, cfg, seed, answers_match, extract)
    active = [r for r in live if r.bad.get(len(r.steps) - 1) and not r.failures]
    i = 0
    while active:
        probes = [(r, i) for r in active if i < len(r.steps) - 1]
        if not probes:
            break
        _probe(probes, backend, cfg, seed, answers_match, extract)
        active = [r for r, _ in probes if not r.failures and not r.bad[i]]
        i += 1


def label_binary_search(responses: Sequence[ResponseToLabel], backend: Backend, cfg: MCLabelConfig, seed: int,
                        answers_match, extract) -> None:
    """OmegaPRM: binary search for the first bad prefix, all responses' probes batched per round."""
    _own_answers(responses, extract)
    # invariant: prefixes < lo are known good (value > 0); the first bad one, if any, is in [lo, hi)
    state = {r.response_id: [0, len(r.steps)] for r in responses if r.steps}
    by_id = {r.response_id: r for r in responses}
    # first probe the full solution (free): a right final answer means no error to find
    _probe([(by_id[k], len(by_id[k].steps) - 1) for k in state], backend, cfg, seed, answers_match, extract)
    active = {k for k in state if by_id[k].bad.get(len(by_id[k].steps) - 1) and not by_id[k].failures}
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
            if not r.bad[mid]:
                lo = mid + 1
            else:
                hi = mid
            state[r.response_id] = [lo, hi]
            if lo >= hi:
                active.discard(r.response_id)


def first_error(r: ResponseToLabel) -> int | None:
    """The first probed step the decision rule calls bad: every-prefix's and the forward scan's
    first bad prefix, the binary search's answer (its probes from there on are bad)."""
    return next((i for i, b in sorted(r.bad.items()) if b), None)


def label_rows(r: ResponseToLabel, method: str) -> list[dict]:
    """labels rows (target_kind = step) for every step the method decided.

    every: soft value of every prefix; binary, forward: probed values plus what the search implies
    (steps before the first error good, from it on bad) — `confidence` says which. A probed row's
    `score` is its soft value, its `label` the decision rule's verdict (`bad`)."""
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
            bad = r.bad[i]
        elif method in ("binary", "forward"):
            bad = err is not None and i >= err
            v, conf, how = (0.0 if bad else 1.0), 0.5, f"implied by {method} search"
        else:
            continue
        rows.append({
            "label_id": content_id(r.response_id, "mc", method, i),
            "target_id": r.response_id, "target_kind": "step", "step_index": i,
            "labeler": f"mc_{method}", "score": v, "label": "incorrect" if bad else "correct",
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
