"""What every judge shares: targets, label rows, failures, score-mode choice probabilities and
the greedy generate call."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

from prefsynth.backends.base import SamplingParams
from prefsynth.backends.base import context_check as backend_context_check
from prefsynth.ids import content_id
from prefsynth.transforms.judges.parsing import RESULT_TAG

JUDGES = ("p_true", "step_confidence", "pointwise", "pairwise", "tick")
LABELERS = {"p_true": "p_true", "step_confidence": "step_confidence", "pointwise": "judge_pointwise",
            "pairwise": "judge_pairwise", "tick": "judge_tick"}
MODES = ("score", "generate")
LIKERT = ("1", "2", "3", "4", "5")
AB = ("A", "B")
YES_NO = (" yes", " no")  # after the generic templates' `Answer:`
SCORE_SUFFIX = RESULT_TAG + " "  # score mode: the options are scored right after the tag


# ---- score mode ---------------------------------------------------------------------------------

def normalise(logps: Sequence[float]) -> list[float]:
    """Softmax over the options' log-probs (a distribution over the allowed answers)."""
    top = max(logps)
    w = [math.exp(x - top) for x in logps]
    total = sum(w)
    return [x / total for x in w]


def choice_probs(backend, prompts: Sequence[str], options: Sequence[str]) -> list[list[float]]:
    """P(option | prompt) normalised over `options`, for every prompt, in one `score` call."""
    if not prompts:
        return []
    flat = backend.score([p for p in prompts for _ in options], [o for _ in prompts for o in options])
    k = len(options)
    return [normalise(flat[i * k:(i + 1) * k]) for i in range(len(prompts))]


def context_check(backend, margin_tokens: int = 8) -> Callable[[str], bool]:
    """Whether a judge prompt fits the backend's context, with room for the judge's answer."""
    return backend_context_check(backend, margin_tokens)


# ---- targets and rows ---------------------------------------------------------------------------

@dataclass
class Target:
    """One response to judge, with what the templates need."""

    response_id: str
    prompt_id: str
    task: str
    question: str  # the problem as the judge templates show it (prompting.problem_text)
    response: str
    steps: list[str]
    reference: str | None = None
    prompt: str | None = None  # the exact prompt text the policy saw (native self-evaluation continues it)


@dataclass
class Failure:
    """A judgement that produced no label (becomes a dead letter)."""

    record_id: str
    error_type: str
    message: str
    raw_input: str | None = None
    raw_output: str | None = None


@dataclass
class JudgeResult:
    rows: list[dict] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    def extend(self, other: "JudgeResult") -> None:
        self.rows.extend(other.rows)
        self.failures.extend(other.failures)


def label_row(labeler: str, target_id: str, kind: str, score: float, label: str, confidence: float | None,
              rationale: str | None, raw_output: str | None = None, step_index: int | None = None,
              other_id: str | None = None) -> dict:
    return {
        "label_id": content_id(target_id, labeler, kind, "" if step_index is None else str(step_index), other_id or ""),
        "target_id": target_id, "target_kind": kind, "step_index": step_index, "labeler": labeler,
        "score": float(score), "label": label, "confidence": None if confidence is None else float(confidence),
        "rationale": rationale, "raw_output": raw_output, "other_id": other_id,
    }


def question_of(t: Target) -> str:
    return t.question.strip()


def response_of(t: Target) -> str:
    return t.response.strip()


def fmt_probs(probs: Sequence[float], options: Sequence[str]) -> str:
    return " ".join(f"{o.strip()}={p:.3f}" for o, p in zip(options, probs))


def batch_or_each(call, items: list, res: JudgeResult, record_ids: list[str], what: str,
                  raw_input=str) -> list:
    """call(items) in one request; when the batch fails, one item at a time, so one bad request
    becomes one failure of its record (the first per record) and a None in its place."""
    try:
        return list(call(items))
    except Exception:  # noqa: BLE001 - the per-item retry below names the failing request
        pass
    out: list = []
    seen = set()
    for item, rid in zip(items, record_ids):
        try:
            out.append(call([item])[0])
        except Exception as err:  # noqa: BLE001 - recorded as a dead letter with its input
            out.append(None)
            if rid not in seen:
                seen.add(rid)
                res.failures.append(Failure(rid, "judge_backend_error", f"{what}: {type(err).__name__}: {err}",
                                            raw_input(item), None))
    return out


def score_or_fail(backend, prompts: list[str], options: Sequence[str], res: JudgeResult,
                  record_ids: list[str]) -> list[list[float] | None]:
    """choice_probs of each prompt (None where its request failed: a failure of its record)."""
    return batch_or_each(lambda ps: choice_probs(backend, ps, options), prompts, res, record_ids, "score")


# ---- generate mode ------------------------------------------------------------------------------

def generate_greedy(backend, prompts: list[str], seeds: list[int], max_new_tokens: int) -> list:
    """Greedy judge text per prompt; an item is a str, or a Failure-like object from the backend."""
    if not prompts:
        return []
    sp = SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens)
    out = []
    for group in backend.generate(prompts, sp, seeds):
        out.append(group[0].text if isinstance(group, list) else group)
    return out


def backend_failure(record_id: str, what: str, prompt: str, failure) -> Failure:
    return Failure(record_id, f"judge_{getattr(failure, 'error_type', 'backend_error')}",
                   f"{what}: {getattr(failure, 'message', repr(failure))}", prompt, getattr(failure, "raw_output", None))
