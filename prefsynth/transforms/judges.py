"""LLM judges over the backend protocol: P(True), pointwise Likert, pairwise A/B, TICK checklists.

Pure core (no Beam): functions take a backend (`generate` + `score`), the targets to judge and
the templates, and return label rows (schema LABELS) and failures (dead-letter fields). The
Beam shell (transforms/label_beam.py) batches targets and emits the failures as dead letters.

Two ways to get a verdict out of a judge:
- `score` mode (constrained choice): the log-prob of every allowed option after the prompt
  (`1`..`5`, `A`/`B`, `yes`/`no`) via `backend.score`, normalised over the options. The verdict
  is the most likely option and `confidence` its probability: a distribution, so calibration
  can be measured, and it cannot be unparseable.
- `generate` mode (free text): the judge writes `Feedback: ... [RESULT] n`; the text is parsed
  strictly (exactly one `[RESULT]`, a non-empty feedback, a verdict from the allowed set).
  Anything else is a failure with the raw text — never a None label. Free text carries no
  probability of its own: `confidence` is null there.

P(True) ("Language Models (Mostly) Know What They Know") is always a score: p(yes)/(p(yes)+p(no)).
A task whose policy was trained on its own self-evaluation format (arith: `...\\nOK? ` -> `yes`)
is asked in that format; other tasks get the generic template.

Every labeler's `score` is its probability that the target is correct (pointwise: (E[Likert]-1)/4;
pairwise: P(A better than B), averaged over both presentation orders), which is what the
quality report (prefsynth/calibration.py) measures against ground truth.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from prefsynth.backends.base import SamplingParams
from prefsynth.ids import content_id, seed_for
from prefsynth.tasks import get_task

JUDGES = ("p_true", "pointwise", "pairwise", "tick")
LABELERS = {"p_true": "p_true", "pointwise": "judge_pointwise", "pairwise": "judge_pairwise", "tick": "judge_tick"}
MODES = ("score", "generate")
SHIPPED_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

# template name -> (placeholders it must use, placeholders it may use)
TEMPLATE_FIELDS: dict[str, tuple[set[str], set[str]]] = {
    "pointwise": ({"question", "response"}, {"reference"}),
    "pairwise": ({"question", "response_a", "response_b"}, {"reference"}),
    "p_true": ({"question", "response"}, {"reference"}),
    "p_true_step": ({"question", "steps"}, {"reference"}),
    "tick_questions": ({"question"}, {"reference", "max_questions"}),
    "tick_answer": ({"question", "response", "check"}, {"reference"}),
}
LIKERT = ("1", "2", "3", "4", "5")
AB = ("A", "B")
YES_NO = (" yes", " no")  # after the generic templates' `Answer:`
RESULT_TAG = "[RESULT]"
SCORE_SUFFIX = RESULT_TAG + " "  # score mode: the options are scored right after the tag

_SECTION_RE = re.compile(r"\{\{#(\w+)\}\}\n?(.*?)\{\{/\1\}\}\n?", re.DOTALL)
_FIELD_RE = re.compile(r"\{\{(\w+)\}\}")
_QUESTION_RE = re.compile(r"^(?:[-*•]|\d+[.)])\s+(.+\?)$")


class JudgeParseError(ValueError):
    """Judge text that does not follow the required output format."""


@dataclass(frozen=True)
class Template:
    name: str
    text: str
    source: str  # file it came from (for error messages and the card)

    def __post_init__(self):
        required, optional = TEMPLATE_FIELDS[self.name]
        used = set(_FIELD_RE.findall(self.text)) | set(_section_names(self.text))
        unknown, missing = used - required - optional, required - used
        if unknown or missing:
            raise ValueError(f"judge template {self.source}: unknown placeholder(s) {sorted(unknown)}, "
                             f"missing {sorted(missing)}; allowed: {sorted(required | optional)}")

    def render(self, **values) -> str:
        def section(m):
            return m.group(2) if values.get(m.group(1)) not in (None, "") else ""

        text = _SECTION_RE.sub(section, self.text)
        return _FIELD_RE.sub(lambda m: "" if values.get(m.group(1)) is None else str(values[m.group(1)]), text)


def _section_names(text: str) -> list[str]:
    return [m.group(1) for m in _SECTION_RE.finditer(text)]


def load_templates(template_dir: str | None = None) -> dict[str, Template]:
    """The shipped templates, each replaced by `<template_dir>/<name>.txt` where that file exists."""
    out = {}
    for name in TEMPLATE_FIELDS:
        path = Path(template_dir) / f"{name}.txt" if template_dir else None
        if path is None or not path.exists():
            path = SHIPPED_TEMPLATES / f"{name}.txt"
        out[name] = Template(name, path.read_text(encoding="utf-8"), str(path))
    return out


# ---- strict parsing -----------------------------------------------------------------------------

def parse_verdict(text: str, allowed: Sequence[str]) -> tuple[str, str]:
    """(verdict, feedback) from `Feedback: ... [RESULT] v`; JudgeParseError on anything else."""
    if text is None or not text.strip():
        raise JudgeParseError("empty judge output")
    if text.count(RESULT_TAG) != 1:
        raise JudgeParseError(f"expected exactly one {RESULT_TAG}, found {text.count(RESULT_TAG)}")
    before, after = text.split(RESULT_TAG)
    verdict = after.strip().strip("()\"'").strip().rstrip(".").strip()
    if verdict not in allowed:
        raise JudgeParseError(f"verdict {after.strip()[:40]!r} after {RESULT_TAG} is not one of {list(allowed)}")
    feedback = before.strip()
    feedback = feedback[len("Feedback:"):].strip() if feedback.startswith("Feedback:") else feedback
    if not feedback:
        raise JudgeParseError(f"no feedback before {RESULT_TAG}")
    return verdict, feedback


TICK_PREFILL = "- Does the response"


def drop_cut_line(text: str) -> str:
    """A checklist cut by the token budget: its unfinished last line (no `?`) is not a question."""
    lines = text.rstrip().split("\n")
    if len(lines) > 1 and not lines[-1].rstrip().endswith("?"):
        lines = lines[:-1]
    return "\n".join(lines)


def parse_questions(text: str, max_questions: int) -> list[str]:
    """TICK checklist: one `- question?` per line, nothing else; at most `max_questions` kept."""
    if text is None or not text.strip():
        raise JudgeParseError("empty checklist")
    questions = []
    for line in text.strip().split("\n"):
        line = line.strip()
        if not line:
            continue
        m = _QUESTION_RE.match(line)
        if not m:
            raise JudgeParseError(f"checklist line is not a '- ...?' question: {line[:80]!r}")
        if m.group(1) not in questions:
            questions.append(m.group(1))
    return questions[:max_questions]


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
    """Whether a judge prompt fits the backend's context (known for local models; a server
    rejects what does not fit, and that failure is recorded instead)."""
    tok, limit = getattr(backend, "tokenizer", None), getattr(backend, "max_positions", None)
    if tok is None or not limit:
        return lambda text: True
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"]) + margin_tokens <= limit


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


def _question(t: Target) -> str:
    return t.question.strip()


def _response(t: Target) -> str:
    return t.response.strip()


def _fmt(probs: Sequence[float], options: Sequence[str]) -> str:
    return " ".join(f"{o.strip()}={p:.3f}" for o, p in zip(options, probs))


# ---- P(True) ------------------------------------------------------------------------------------

def native_self_eval(task: str):
    """(prompt builder, yes/no options) for tasks whose policy learned its own self-evaluation
    format; None for the rest (they get the generic templates)."""
    return get_task(task).self_eval()


def p_true_prompts(t: Target, templates: dict[str, Template], with_steps: bool) -> tuple[list, tuple[str, str]]:
    """[(step_index or None, prompt)] for the response and (optionally) each step prefix."""
    native = native_self_eval(t.task)
    steps = list(t.steps)
    if native:
        build, options = native
        policy_prompt = t.prompt if t.prompt is not None else t.question
        out = [(None, build(policy_prompt, steps))]
        if with_steps:
            out += [(i, build(policy_prompt, steps[:i + 1])) for i in range(len(steps))]
        return out, options
    # asked without the reference answer: P(True) is the model's own belief, not a comparison
    out = [(None, templates["p_true"].render(question=_question(t), response=_response(t), reference=None))]
    if with_steps:
        out += [(i, templates["p_true_step"].render(question=_question(t), steps="\n".join(steps[:i + 1]),
                                                    reference=None)) for i in range(len(steps))]
    return out, YES_NO


def judge_p_true(targets: Sequence[Target], backend, templates: dict[str, Template], with_steps: bool) -> JudgeResult:
    """P(True) of each response (and step): p(yes) / (p(yes) + p(no)) from `score`."""
    res, fits = JudgeResult(), context_check(backend)
    todo: list[tuple[Target, int | None, str, tuple[str, str]]] = []
    for t in targets:
        prompts, options = p_true_prompts(t, templates, with_steps)
        too_long = next((p for _, p in prompts if not fits(p + options[0])), None)
        if too_long is not None:
            res.failures.append(Failure(t.response_id, "judge_context_overflow",
                                        "p_true: prompt longer than the judge's context", too_long, None))
            continue
        todo += [(t, i, p, options) for i, p in prompts]
    by_options: dict[tuple, list[int]] = {}
    for j, (_, _, _, options) in enumerate(todo):
        by_options.setdefault(options, []).append(j)
    probs: dict[int, float] = {}
    for options, idx in by_options.items():
        for j, pr in zip(idx, _score_or_fail(backend, [todo[j][2] for j in idx], options, res,
                                             [todo[j][0].response_id for j in idx])):
            if pr is not None:
                probs[j] = pr[0]
    failed = {f.record_id for f in res.failures}
    for j, (t, i, _, options) in enumerate(todo):
        if t.response_id in failed:
            continue
        p = probs[j]
        res.rows.append(label_row(
            LABELERS["p_true"], t.response_id, "response" if i is None else "step", p,
            "correct" if p > 0.5 else "incorrect", max(p, 1 - p),
            f"P(yes)={p:.4f} ({'native' if native_self_eval(t.task) else 'generic'} self-evaluation)",
            step_index=i))
    return res


def _score_or_fail(backend, prompts: list[str], options: Sequence[str], res: JudgeResult,
                   record_ids: list[str]) -> list[list[float] | None]:
    """choice_probs, falling back to one request at a time when the batch fails, so one bad
    request becomes one failure instead of failing the batch."""
    try:
        return choice_probs(backend, prompts, options)
    except Exception:  # noqa: BLE001 - the per-item retry below names the failing request
        pass
    out: list[list[float] | None] = []
    seen = set()
    for p, rid in zip(prompts, record_ids):
        try:
            out.append(choice_probs(backend, [p], options)[0])
        except Exception as err:  # noqa: BLE001 - recorded as a dead letter with its prompt
            out.append(None)
            if rid not in seen:
                seen.add(rid)
                res.failures.append(Failure(rid, "judge_backend_error", f"score: {type(err).__name__}: {err}", p, None))
    return out


# ---- generate helper ----------------------------------------------------------------------------

def _generate(backend, prompts: list[str], seeds: list[int], max_new_tokens: int) -> list:
    """Greedy judge text per prompt; an item is a str, or a Failure-like object from the backend."""
    if not prompts:
        return []
    sp = SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens)
    out = []
    for group in backend.generate(prompts, sp, seeds):
        out.append(group[0].text if isinstance(group, list) else group)
    return out


def _backend_failure(record_id: str, what: str, prompt: str, failure) -> Failure:
    return Failure(record_id, f"judge_{getattr(failure, 'error_type', 'backend_error')}",
                   f"{what}: {getattr(failure, 'message', repr(failure))}", prompt, getattr(failure, "raw_output", None))


# ---- pointwise ----------------------------------------------------------------------------------

def judge_pointwise(targets: Sequence[Target], backend, templates: dict[str, Template], mode: str, seed: int,
                    max_new_tokens: int) -> JudgeResult:
    """Prometheus-style absolute grading: Likert 1-5 with the reference answer when there is one."""
    res, fits, labeler = JudgeResult(), context_check(backend), LABELERS["pointwise"]
    ok: list[tuple[Target, str]] = []
    for t in targets:
        prompt = templates["pointwise"].render(question=_question(t), response=_response(t), reference=t.reference)
        if not fits(prompt + (SCORE_SUFFIX + "5" if mode == "score" else "")):
            res.failures.append(Failure(t.response_id, "judge_context_overflow",
                                        "pointwise: prompt longer than the judge's context", prompt, None))
        else:
            ok.append((t, prompt))
    if mode == "score":
        dists = _score_or_fail(backend, [p + SCORE_SUFFIX for _, p in ok], LIKERT, res, [t.response_id for t, _ in ok])
        for (t, _), d in zip(ok, dists):
            if d is None:
                continue
            expected = sum((k + 1) * p for k, p in enumerate(d))
            best = max(range(5), key=lambda k: d[k])
            res.rows.append(label_row(labeler, t.response_id, "response", (expected - 1) / 4, LIKERT[best], d[best],
                                      f"score mode: P({_fmt(d, LIKERT)}), E={expected:.3f}"))
        return res
    texts = _generate(backend, [p for _, p in ok], [seed_for(seed, t.response_id, "judge/pointwise") for t, _ in ok],
                      max_new_tokens)
    for (t, prompt), text in zip(ok, texts):
        if not isinstance(text, str):
            res.failures.append(_backend_failure(t.response_id, "pointwise", prompt, text))
            continue
        try:
            verdict, feedback = parse_verdict(text, LIKERT)
        except JudgeParseError as err:
            res.failures.append(Failure(t.response_id, "judge_unparseable", f"pointwise: {err}", prompt, text))
            continue
        res.rows.append(label_row(labeler, t.response_id, "response", (int(verdict) - 1) / 4, verdict, None,
                                  feedback, raw_output=text))
    return res


# ---- pairwise -----------------------------------------------------------------------------------

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
        q, ref = _question(pr.a), pr.a.reference
        ab = templates["pairwise"].render(question=q, response_a=_response(pr.a), response_b=_response(pr.b), reference=ref)
        ba = templates["pairwise"].render(question=q, response_a=_response(pr.b), response_b=_response(pr.a), reference=ref)
        if not all(fits(p + SCORE_SUFFIX + "A") for p in (ab, ba)):
            res.failures.append(Failure(pr.a.response_id, "judge_context_overflow",
                                        "pairwise: prompt longer than the judge's context", ab, None))
        else:
            ok.append((pr, ab, ba))
    verdicts: list[tuple[PairTarget, float, float, str, str | None]] = []
    if mode == "score":
        prompts = [p + SCORE_SUFFIX for _, ab, ba in ok for p in (ab, ba)]
        dists = _score_or_fail(backend, prompts, AB, res, [pr.a.response_id for pr, _, _ in ok for _ in (0, 1)])
        for k, (pr, _, _) in enumerate(ok):
            d1, d2 = dists[2 * k], dists[2 * k + 1]
            if d1 is None or d2 is None:
                continue
            verdicts.append((pr, d1[0], d2[0], f"score mode: a first P({_fmt(d1, AB)}); b first P({_fmt(d2, AB)})", None))
    else:
        prompts = [p for _, ab, ba in ok for p in (ab, ba)]
        seeds = [seed_for(seed, pr.pair_id, f"judge/pairwise/{o}") for pr, _, _ in ok for o in ("ab", "ba")]
        texts = _generate(backend, prompts, seeds, max_new_tokens)
        for k, (pr, ab, ba) in enumerate(ok):
            t1, t2 = texts[2 * k], texts[2 * k + 1]
            bad = next(((p, t) for p, t in ((ab, t1), (ba, t2)) if not isinstance(t, str)), None)
            if bad:
                res.failures.append(_backend_failure(pr.a.response_id, "pairwise", *bad))
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


# ---- TICK ---------------------------------------------------------------------------------------

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
    q_prompts = {pid: templates["tick_questions"].render(question=_question(by_prompt[pid][0]),
                                                         reference=by_prompt[pid][0].reference,
                                                         max_questions=max_questions) + TICK_PREFILL for pid in pids}
    gen_pids = [pid for pid in pids if fits(q_prompts[pid])]
    for pid in set(pids) - set(gen_pids):
        for t in by_prompt[pid]:
            res.failures.append(Failure(t.response_id, "judge_context_overflow",
                                        "tick: checklist prompt longer than the judge's context", q_prompts[pid], None))
    texts = _generate(backend, [q_prompts[p] for p in gen_pids], [seed_for(seed, p, "judge/tick") for p in gen_pids],
                      max_new_tokens)
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
            prompts = [templates["tick_answer"].render(question=_question(t), response=_response(t), check=q,
                                                       reference=None) for q in qs]
            if not all(fits(p + YES_NO[0]) for p in prompts):
                res.failures.append(Failure(t.response_id, "judge_context_overflow",
                                            "tick: answer prompt longer than the judge's context", prompts[0], None))
                continue
            asks += [(t, k, p) for k, p in enumerate(prompts)]
    dists = _score_or_fail(backend, [p for _, _, p in asks], YES_NO, res, [t.response_id for t, _, _ in asks])
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
