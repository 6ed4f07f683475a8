"""Labeling inside Beam: exact verifier labels and Monte-Carlo step labels per batch of responses."""

from __future__ import annotations

from typing import Any, Sequence

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from prefsynth.config import PolicyConfig
from prefsynth.ids import content_id
from prefsynth.tasks import arith, get_task
from prefsynth.transforms.generate import NAMESPACE
from prefsynth.transforms.mc_labels import (
    MCLabelConfig,
    ResponseToLabel,
    label_binary_search,
    label_every_prefix,
    label_rows,
)


def verifier_rows(response: dict, prompt: dict) -> list[dict]:
    """Exact labels where the task has ground truth: the final answer, and (arith) every step."""
    task = get_task(prompt["task"])
    if prompt["reference_answer"] is None:
        return []
    right = task.answers_match(response["final_answer"], prompt["reference_answer"])
    rows = [{
        "label_id": content_id(response["response_id"], "verifier", "answer"),
        "target_id": response["response_id"], "target_kind": "response", "step_index": None,
        "labeler": f"verifier_{prompt['task']}", "score": 1.0 if right else 0.0,
        "label": "correct" if right else "incorrect", "confidence": 1.0,
        "rationale": f"final answer {response['final_answer']!r} vs reference {prompt['reference_answer']!r}",
        "raw_output": None,
    }]
    if prompt["task"] == arith.NAME:
        v = arith.verify_solution(arith.parse_expression(prompt["prompt"]), list(response["steps"]))
        for i, ok in enumerate(v.step_correct):
            # a step is right only on a right path: after the first error every step is wrong
            good = ok and (v.first_wrong_step is None or i < v.first_wrong_step)
            rows.append({
                "label_id": content_id(response["response_id"], "verifier", "step", i),
                "target_id": response["response_id"], "target_kind": "step", "step_index": i,
                "labeler": "verifier_arith", "score": 1.0 if good else 0.0,
                "label": "correct" if good else "incorrect", "confidence": 1.0,
                "rationale": "canonical step" if good else
                f"expected {v.expected_steps[i]!r}" if i < len(v.expected_steps) else "extra step",
                "raw_output": None,
            })
    return rows


class MCLabelHandler(ModelHandler[list, PredictionResult, Any]):
    """(response, prompt) batches -> MC step label rows (by the configured method(s))."""

    def __init__(self, policy: PolicyConfig, model: str, cfg: MCLabelConfig, methods: Sequence[str], seed: int):
        super().__init__()
        self.policy, self.model, self.cfg, self.methods, self.seed = policy, model, cfg, tuple(methods), seed

    def should_skip_batching(self) -> bool:
        return True

    def load_model(self):
        from prefsynth.backends.factory import make_backend

        return make_backend(self.policy, self.model)

    def run_inference(self, batch: Sequence[tuple[dict, dict]], model, inference_args=None):
        out = {resp["response_id"]: [] for resp, _ in batch}
        rollouts = beam.metrics.Metrics.counter(NAMESPACE, "mc_rollouts")
        labelable = [(resp, prompt) for resp, prompt in batch if prompt["reference_answer"] and resp["steps"]]
        for method in self.methods:
            items = [ResponseToLabel(resp["response_id"], prompt["prompt"], list(resp["steps"]),
                                     prompt["reference_answer"]) for resp, prompt in labelable]
            task = get_task(labelable[0][1]["task"]) if labelable else None
            if not items:
                continue
            run = label_binary_search if method == "binary" else label_every_prefix
            run(items, model, self.cfg, self.seed, task.answers_match, task.extract_answer)
            for it in items:
                rows = label_rows(it, method)
                for row in rows:
                    row["raw_output"] = f"rollouts={it.rollouts}"
                out[it.response_id].extend(rows)
                rollouts.inc(it.rollouts)
        return [PredictionResult(resp, out[resp["response_id"]]) for resp, _ in batch]
