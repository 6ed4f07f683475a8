"""The confidence critic: a step-level critique with no critic model — the step the policy itself is
least sure of.

A small critic trained to read a solution and name its first wrong step does not learn to (the tiny
critic locates it on 0.2 of held-out wrong solutions: README, the critic goal), and P(True) — asking
the model whether a shown step is right — answers from surface features. The policy's own probability
of each step, after the prompt and the steps before it (`judges.step_confidences`: the step is never
shown to it), does tell a slip from a step it would write: AUROC ~0.95 against step-local correctness
in the embedded world. This critic turns that into a critique:

    use_reference and a reference: final answer right -> `Verdict: correct`;
                                   wrong -> the least confident step (argmin: chosen on validation,
                                   `benchmarks/step_confidence.py`, over every threshold)
    otherwise:                     the first step below `threshold`, else `Verdict: correct`

The critique says which step, its confidence against the others', and what the model writes there
when asked to redo it greedily (from the same context: its correction, or — when it writes the same
step — a sign that the slip is elsewhere). Same row schema and verdict line as the other critics, so
its accuracy and its critique pairs come out of the critiques stage unchanged.
"""

from __future__ import annotations

from typing import Any, Sequence

from apache_beam.ml.inference.base import PredictionResult

from prefsynth.backends.base import GenerationFailure, SamplingParams
from prefsynth.ids import seed_for
from prefsynth.transforms.judges.base import Failure
from prefsynth.transforms.model_handler import BatchProgress

CONFIDENCE = "confidence"


def locate(lines: Sequence[tuple[int, float]], final_wrong: bool | None, threshold: float) -> int | None:
    """The located first wrong step from (step index, confidence) pairs: with a known outcome, the least
    confident step of a wrong answer (the first on ties) and None for a right one; with no outcome, the
    first step below `threshold`, else None."""
    if final_wrong is False:
        return None
    if final_wrong:
        return min(lines, key=lambda x: (x[1], x[0]))[0]
    return next((i for i, c in lines if c < threshold), None)


def final_answer_wrong(prompt: dict, text: str) -> bool | None:
    """Whether the response's final answer misses the reference; None without a reference."""
    from prefsynth.tasks import get_task

    if prompt.get("reference_answer") is None:
        return None
    task = get_task(prompt["task"])
    return not task.answers_match(task.extract_answer(text or ""), prompt["reference_answer"])


def critique_text(steps: Sequence[str], lines: Sequence[tuple[int, float]], located: int | None,
                  final_wrong: bool | None, redo: str | None) -> str:
    """The critique: why this verdict, in the critics' shared format (last line `Verdict: ...`)."""
    out = []
    if final_wrong is not None:
        out.append("The final answer does not match the reference." if final_wrong
                   else "The final answer matches the reference.")
    if located is None:
        worst, c = min(lines, key=lambda x: (x[1], x[0]))
        out.append(f"Every step is one the model would write: the least likely is step {worst + 1} (p={c:.3f}).")
        out.append("Verdict: correct")
        return "\n".join(out) + "\n"
    c = dict(lines)[located]
    others = [v for i, v in lines if i != located]
    rest = f"; the other steps {min(others):.3f} or more" if others else ""
    out.append(f"Step {located + 1} `{steps[located]}` is the step the model is least sure of (p={c:.3f}{rest}).")
    if redo is not None:
        if redo.strip() == steps[located].strip():
            out.append("Redone from the steps before it, the model writes the same step.")
        elif redo.strip():
            out.append(f"Redone from the steps before it, the model writes `{redo.strip()}`.")
    out.append(f"Verdict: step {located + 1}")
    return "\n".join(out) + "\n"


class ConfidenceCritiqueBatch(BatchProgress):
    """The critiques stage's confidence-critic batch function (run by `BackendModelHandler`: the model
    loads once per worker): batches of (response, prompt) in, (critique text, located step) or the
    judges' Failure naming why the response could not be scored out."""

    unit = "responses (confidence critic)"

    def __init__(self, policy, model: str, cfg, seed: int, stage: str = "critiques", total: int | None = None):
        self.policy, self.model, self.cfg, self.seed, self.stage, self.total = policy, model, cfg, seed, stage, total

    def handler(self):
        from prefsynth.transforms.model_handler import BackendModelHandler

        return BackendModelHandler(self.policy, self.model, self, self.stage)

    def __call__(self, batch: Sequence[tuple[dict, dict]], model) -> list[PredictionResult]:
        from prefsynth.transforms.judges import step_confidences, step_spans
        from prefsynth.transforms.label_beam import judge_target

        cfg = self.cfg
        targets = [judge_target(resp, prompt) for resp, prompt in batch]
        confidences, failures = step_confidences(targets, model, cfg.span)
        failed = {f.record_id: f for f in failures}
        decided: list[Any] = []
        redo_at: list[tuple[int, str]] = []  # (batch index, context of the located step)
        for k, ((resp, prompt), t) in enumerate(zip(batch, targets)):
            if resp["response_id"] in failed:
                decided.append(failed[resp["response_id"]])
                continue
            lines = confidences[resp["response_id"]]
            wrong = final_answer_wrong(prompt, resp["text"]) if cfg.use_reference else None
            at = locate(lines, wrong, cfg.threshold)
            decided.append((lines, wrong, at))
            if at is not None and cfg.recompute_tokens:
                # whichever span was scored, the model redoes the whole step from the steps before it
                redo_at.append((k, step_spans(t)[at][0]))
        redos: dict[int, str] = {}
        if redo_at:
            sampling = SamplingParams(n=1, temperature=0.0, max_new_tokens=cfg.recompute_tokens, stop=("\n",))
            seeds = [seed_for(self.seed, batch[k][0]["response_id"], "confidence_critic/redo") for k, _ in redo_at]
            outs = model.generate([c for _, c in redo_at], sampling, seeds)
            for (k, _), out in zip(redo_at, outs):
                if not isinstance(out, GenerationFailure) and out and out[0].text.strip():
                    redos[k] = out[0].text  # (an empty one: the context had no room left)
        results = []
        for k, ((resp, _), d) in enumerate(zip(batch, decided)):
            if isinstance(d, Failure):
                results.append(d)
                continue
            lines, wrong, at = d
            results.append((critique_text(resp["steps"], lines, at, wrong, redos.get(k)), at))
        self.progress().add(len(batch))
        return [PredictionResult(pair, res) for pair, res in zip(batch, results)]


def confidence_rows(result: PredictionResult, stage: str, critic_model: str, template: str):
    """PredictionResult -> a critique row (the critics' schema), or a dead letter naming the response."""
    from prefsynth.prompting import problem_text
    from prefsynth.transforms.critiques import critique_row, parse_verdict, render_critic_prompt
    from prefsynth.transforms.deadletters import emit_dead

    (resp, prompt), out = result.example, result.inference
    if isinstance(out, Failure):
        yield emit_dead(stage, resp["response_id"], out.error_type, f"confidence critic: {out.message}",
                        raw_input=out.raw_input, raw_output=out.raw_output)
        return
    text, located = out
    assert parse_verdict(text, len(resp["steps"])) == located, text  # the verdict line says what was decided
    critic_prompt = render_critic_prompt(template, problem_text(prompt), resp["steps"])
    yield critique_row(resp, prompt, CONFIDENCE, critic_model, critic_prompt, text, located)
