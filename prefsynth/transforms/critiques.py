"""Step-level critiques (AutoMathCritique style): the rule critic, strict verdict parsing,
critique accuracy, critique pairs — and the Beam shell that runs a model critic.

A critique names the first wrong step of a response and says why, or says every step is
right, and ends in one verdict line: `Verdict: step N` (N counted from 1) or `Verdict: correct`.
Inside the data the located step is 0-based (as everywhere else in prefsynth); null = correct.

Critics:
- `rule`: exact, from the arith world's canonical steps (`arith.critique`); its critiques are
  the ground truth, and a dataset in their own right;
- `model`: any backend prompted with the critic template (prefsynth/templates/critique.txt by
  default); its output is parsed strictly, and an output that does not parse is a dead letter
  with the raw text, never a critique with a None verdict;
- `confidence`: no critic model, the policy's own least likely step (`confidence_critic.py`).
"""

from __future__ import annotations

import random
import re
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

import apache_beam as beam
from apache_beam.ml.inference.base import PredictionResult

from prefsynth.backends.base import SamplingParams
from prefsynth.ids import content_id, seed_for, unit_hash
from prefsynth.transforms.confidence_critic import CONFIDENCE
from prefsynth.transforms.model_handler import BatchProgress
from prefsynth.prompting import chat_wrap, problem_text
from prefsynth.tasks import get_task
from prefsynth.transforms.deadletters import count_dropped, count_in, emit_dead
from prefsynth.transforms.pairs import _pair, dedupe

RULE, MODEL = "rule", "model"
UNPARSEABLE = "unparseable"  # a prediction that could not be read: wrong under every accuracy
CRITICS = (RULE, MODEL, CONFIDENCE)
_VERDICT_RE = re.compile(r"^Verdict: (?:(correct)|step ([1-9]\d{0,3}))$")


class CritiqueParseError(ValueError):
    """A critique whose verdict cannot be read exactly (goes to dead letters with the raw text)."""


# ---- pure core ---------------------------------------------------------------------------------

def load_template(path: str | None = None, chat: bool = False) -> str:
    """The critic prompt template: a user file, or the packaged prefsynth/templates/critique.txt
    (critique_chat.txt, which spells out the verdict line, for a critic with a chat template)."""
    if path:
        text = Path(path).read_text()
    else:
        name = "critique_chat.txt" if chat else "critique.txt"
        text = resources.files("prefsynth").joinpath(f"templates/{name}").read_text()
    for field in ("{problem}", "{steps}"):
        if field not in text:
            raise ValueError(f"critique template {path or 'critique.txt'} lacks the {field} field")
    return text


def render_critic_prompt(template: str, problem: str, steps: Sequence[str]) -> str:
    """The critic's input: the problem and the response's steps numbered from 1."""
    numbered = "\n".join(f"{i}. {s}" for i, s in enumerate(steps, start=1))
    return template.format(problem=problem.strip(), steps=numbered)


def verdict_options(n_steps: int) -> list[str]:
    return ["correct"] + [f"step {k}" for k in range(1, n_steps + 2)]  # n+1: a missing step


def scored_verdicts(backend, prompts: Sequence[str], texts: Sequence[Any], n_steps: Sequence[int]) -> list[Any]:
    """`critiques.verdict: score`: the critic's own explanation, then its verdict chosen by log-prob
    among 'correct' / 'step 1' ... 'step n+1' after `Verdict: ` (a constrained choice, as the
    judges' score mode): never unparseable, still the critic's decision. Failures pass through, and
    so does a critique whose longest verdict would not fit the critic's context (parsed strictly)."""
    from prefsynth.backends.base import context_check
    from prefsynth.transforms.judges import normalise

    fits = context_check(backend)
    asks, where = [], []
    for i, (prompt, text, n) in enumerate(zip(prompts, texts, n_steps)):
        if not isinstance(text, str):
            continue
        reason = text.split("Verdict", 1)[0].rstrip()
        context = f"{prompt}{reason}\n{CRITIQUE_VERDICT}"
        opts = verdict_options(n)
        if not all(fits(context + o) for o in opts):
            continue
        asks += [(context, o) for o in opts]
        where.append((i, reason, opts))
    scores = backend.score([c for c, _ in asks], [o for _, o in asks]) if asks else []
    out, k = list(texts), 0
    for i, reason, opts in where:
        probs = normalise(scores[k:k + len(opts)])
        k += len(opts)
        best = max(range(len(opts)), key=lambda j: (probs[j], -j))
        out[i] = f"{reason}\n{CRITIQUE_VERDICT}{opts[best]}\n" if reason else f"{CRITIQUE_VERDICT}{opts[best]}\n"
    return out


CRITIQUE_VERDICT = "Verdict: "


def parse_verdict(text: str, n_steps: int | None = None) -> int | None:
    """The located first wrong step (0-based) of a critique, None for `correct`.

    Strict: the last non-empty line must be exactly one verdict, no other line may be a
    verdict, and the step must exist (or be the one right after the last: a missing step).
    Anything else raises CritiqueParseError.
    """
    if not isinstance(text, str):
        raise CritiqueParseError(f"critique is not text: {type(text).__name__}")
    lines = [line.strip() for line in text.strip().split("\n") if line.strip()]
    if not lines:
        raise CritiqueParseError("empty critique")
    if sum(line.startswith("Verdict") for line in lines) != 1:
        raise CritiqueParseError("a critique needs exactly one verdict line")
    m = _VERDICT_RE.match(lines[-1])
    if not m:
        raise CritiqueParseError(f"last line is not 'Verdict: correct' or 'Verdict: step N': {lines[-1][:80]!r}")
    if m.group(1):
        return None
    step = int(m.group(2)) - 1
    if n_steps is not None and step > n_steps:
        raise CritiqueParseError(f"verdict names step {step + 1} of a {n_steps}-step response")
    return step


def true_first_wrong(prompt: dict, steps: Sequence[str]) -> tuple[bool, int | None]:
    """(ground truth known?, first wrong step): known where the task verifies steps exactly (arith)."""
    task = get_task(prompt["task"])
    if not task.exact_steps or prompt.get("reference_answer") is None:
        return False, None
    return True, task.verify_steps(prompt, list(steps)).first_wrong_step


def critique_row(response: dict, prompt: dict, critic: str, critic_model: str | None, critic_prompt: str,
                 text: str, predicted: int | None, raw_output: str | None = None) -> dict:
    known, truth = true_first_wrong(prompt, response["steps"])
    return {
        "critique_id": content_id(response["response_id"], critic, critic_model or ""),
        "response_id": response["response_id"], "prompt_id": prompt["prompt_id"], "task": prompt["task"],
        "critic": critic, "critic_model": critic_model, "problem": problem_text(prompt),
        "steps": list(response["steps"]), "critic_prompt": critic_prompt, "critique": text,
        "predicted_first_wrong_step": predicted, "true_first_wrong_step": truth if known else None,
        "truth_known": known,
        "located_correctly": (predicted == truth) if known else None,
        "raw_output": raw_output,
    }


def rule_critique(response: dict, prompt: dict, template: str) -> dict | None:
    """The exact critique of a response (tasks that write one: arith), or None where no truth exists."""
    known, _ = true_first_wrong(prompt, response["steps"])
    exact = get_task(prompt["task"]).critique(prompt, list(response["steps"])) if known else None
    if exact is None:
        return None
    text, first_wrong = exact
    critic_prompt = render_critic_prompt(template, problem_text(prompt), response["steps"])
    return critique_row(response, prompt, RULE, None, critic_prompt, text, first_wrong)


def model_critique(response: dict, prompt: dict, critic_model: str, critic_prompt: str, raw: str) -> dict:
    """A model's critique as a row; raises CritiqueParseError when its verdict is unreadable."""
    text = raw.strip() + "\n"
    predicted = parse_verdict(text, len(response["steps"]))
    return critique_row(response, prompt, MODEL, critic_model, critic_prompt, text, predicted, raw)


def critique_accuracy(pairs: Iterable[tuple[int | None, int | None]]) -> dict:
    """Critique accuracy from (predicted, true) first wrong steps (None = correct).

    located: the predicted step is the true one (or both say correct); verdict: correct vs
    incorrect agrees; each also on the truly-correct and the truly-wrong responses alone.
    """
    pairs = list(pairs)

    def rate(items, ok):
        return round(sum(ok(p, t) for p, t in items) / len(items), 4) if items else None

    right = [(p, t) for p, t in pairs if t is None]
    wrong = [(p, t) for p, t in pairs if t is not None]

    def located(p, t):
        return p != UNPARSEABLE and p == t

    def verdict(p, t):
        return p != UNPARSEABLE and (p is None) == (t is None)

    return {
        "n": len(pairs), "n_truly_correct": len(right), "n_truly_wrong": len(wrong),
        "located_accuracy": rate(pairs, located), "verdict_accuracy": rate(pairs, verdict),
        "truly_correct": {"located_accuracy": rate(right, located), "verdict_accuracy": rate(right, verdict)},
        "truly_wrong": {"located_accuracy": rate(wrong, located), "verdict_accuracy": rate(wrong, verdict)},
    }


def critic_holdout(seed: int, prompt: dict, fraction: float) -> bool:
    """Is this prompt held out from critic training? Every validation- and test-split prompt, and a
    fixed `fraction` of the others by hash of (seed, prompt_id): the split is by prompt, so no
    problem is both trained on and evaluated."""
    return prompt["split"] in ("validation", "test") or unit_hash(seed, prompt["prompt_id"], "critic/holdout") < fraction


def critique_pairs(rows: Iterable[dict], seed: int = 0) -> list[dict]:
    """Critique preference pairs (PAIRS schema, level `critique`) from critique rows.

    Per response with ground truth: chosen = its correct critique (the rule critic's; a model
    critique that located the truth when there is no rule row); rejected = each model critique
    that located the wrong step, or — when there is none — the rule critique with a corrupted
    verdict (`corrupted_critique`, seeded by (seed, response id)). `label_source` says which.
    The prompt is the critic input. Deduplicated; never chosen == rejected.
    """
    by_response: dict[str, list[dict]] = {}
    for r in rows:
        if r["truth_known"]:
            by_response.setdefault(r["response_id"], []).append(r)
    out = []
    for rid in sorted(by_response):
        group = sorted(by_response[rid], key=lambda r: r["critique_id"])
        good = [r for r in group if r["located_correctly"]]
        if not good:
            continue
        chosen = next((r for r in good if r["critic"] == RULE), good[0])
        truth = chosen["true_first_wrong_step"]
        bad = [r for r in group if r["located_correctly"] is False and r["critique"] != chosen["critique"]]
        for r in bad:
            out.append(_pair(chosen["prompt_id"], "critique", chosen["critic_prompt"], chosen["critique"],
                             r["critique"], chosen["critique_id"], r["critique_id"], 1.0, 0.0,
                             f"{r['critic']}_critic_wrong",
                             f"{r['critic']} critic located {_where(r['predicted_first_wrong_step'])}, "
                             f"truth {_where(truth)}"))
        rng = random.Random(seed_for(seed, rid, "critique_pairs/corrupt"))
        corrupted = None if bad else get_task(chosen["task"]).corrupt_critique(chosen["problem"], chosen["steps"],
                                                                               truth, rng)
        if corrupted is not None:  # the task can write a plausible wrong verdict (arith)
            text, claimed = corrupted
            out.append(_pair(chosen["prompt_id"], "critique", chosen["critic_prompt"], chosen["critique"], text,
                             chosen["critique_id"], None, 1.0, 0.0, "rule_corrupted_verdict",
                             f"no wrong model critique: rule critique with verdict corrupted to "
                             f"{_where(claimed)}, truth {_where(truth)}"))
    return dedupe(out)


def _where(step: int | None) -> str:
    return "correct" if step is None else f"step {step + 1}"


# ---- Beam shell --------------------------------------------------------------------------------

class CritiqueBatch(BatchProgress):
    """The critiques stage's model-critic batch function (run by `BackendModelHandler`): batches of
    (response, prompt) in, (critic prompt, raw text | failure) out. The backend (any: transformers,
    vLLM, OpenAI-compatible) is loaded once per worker process."""

    unit = "responses (model critic)"

    def __init__(self, policy, model: str, template: str | None, sampling: SamplingParams, seed: int,
                 verdict: str = "generate", template_path: str | None = None, stage: str = "critiques",
                 total: int | None = None):
        self.policy, self.model, self.template, self.sampling, self.seed = policy, model, template, sampling, seed
        self.verdict, self.template_path, self.stage, self.total = verdict, template_path, stage, total

    def handler(self):
        from prefsynth.transforms.model_handler import BackendModelHandler

        return BackendModelHandler(self.policy, self.model, self, self.stage)

    def __call__(self, batch: Sequence[tuple[dict, dict]], model) -> list[PredictionResult]:
        from prefsynth.backends.base import GenerationFailure
        from prefsynth.transforms.generate import fit_prompt

        from prefsynth.prompting import has_chat_template

        tokenizer, max_positions = getattr(model, "tokenizer", None), getattr(model, "max_positions", None)
        chat = has_chat_template(tokenizer)
        template = self.template or load_template(self.template_path, chat=chat)
        results: list[Any] = [None] * len(batch)
        send, send_idx = [], []
        for i, (resp, prompt) in enumerate(batch):
            # an instruct critic is asked through its chat template
            critic_prompt = chat_wrap(tokenizer, render_critic_prompt(template, problem_text(prompt), resp["steps"]))
            _, _, error = fit_prompt(critic_prompt, tokenizer, max_positions, self.sampling.max_new_tokens, False)
            if error:
                results[i] = (critic_prompt, GenerationFailure("prompt_too_long", error))
            else:
                send.append(critic_prompt)
                send_idx.append(i)
        if send:
            seeds = [seed_for(self.seed, batch[i][0]["response_id"], "critic") for i in send_idx]
            outs = model.generate(send, self.sampling, seeds)
            texts = [out if isinstance(out, GenerationFailure) else out[0].text for out in outs]
            if self.verdict == "score":
                texts = scored_verdicts(model, send, texts, [len(batch[i][0]["steps"]) for i in send_idx])
            for i, critic_prompt, text in zip(send_idx, send, texts):
                results[i] = (critic_prompt, text)
        beam.metrics.Metrics.counter("prefsynth", "critic_requests").inc(len(send))
        self.progress().add(len(batch))
        return [PredictionResult(pair, res) for pair, res in zip(batch, results)]


class ToModelCritiques(beam.DoFn):
    """PredictionResult -> a critique row, or a dead letter naming the response and the raw text."""

    def __init__(self, stage: str, critic_model: str):
        self.stage, self.critic_model = stage, critic_model

    def process(self, result: PredictionResult):
        from prefsynth.backends.base import GenerationFailure

        (resp, prompt), (critic_prompt, out) = result.example, result.inference
        if isinstance(out, GenerationFailure):
            yield emit_dead(self.stage, resp["response_id"], out.error_type, f"model critic: {out.message}",
                            raw_input=critic_prompt, raw_output=out.raw_output)
            return
        try:
            yield model_critique(resp, prompt, self.critic_model, critic_prompt, out)
        except CritiqueParseError as err:
            yield emit_dead(self.stage, resp["response_id"], "unparseable_critique",
                            f"model critic output field 'critique': {err}", raw_input=critic_prompt, raw_output=out)


def rule_critiques(pair: tuple[dict, dict], template: str) -> list[dict]:
    """Beam-side rule critic: one row, or a counted drop where the task has no ground truth."""
    resp, prompt = pair
    row = rule_critique(resp, prompt, template)
    if row is None:
        count_dropped("rule_no_ground_truth")
        return []
    return [row]


def count_critic_input(pair, n_critics: int):
    count_in(n_critics)  # one unit of input per (response, critic)
    return pair
