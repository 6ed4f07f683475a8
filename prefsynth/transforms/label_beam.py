"""Labeling inside Beam: exact verifier labels, Monte-Carlo step labels and LLM judges per batch."""

from __future__ import annotations

from typing import Sequence

import apache_beam as beam
from apache_beam.ml.inference.base import PredictionResult

from prefsynth.config import PolicyConfig
from prefsynth.ids import content_id
from prefsynth.tasks import get_task
from prefsynth.transforms.batching import NAMESPACE
from prefsynth.transforms.model_handler import BackendModelHandler, BatchProgress
from prefsynth.transforms.mc_labels import (
    MCLabelConfig,
    ResponseToLabel,
    label_binary_search,
    label_every_prefix,
    label_forward_scan,
    label_rows,
)

MC_METHODS = {"binary": label_binary_search, "every": label_every_prefix, "forward": label_forward_scan}


def verifier_rows(response: dict, prompt: dict) -> list[dict]:
    """Exact labels where the task has ground truth: the final answer, and every step where the
    task verifies steps exactly (`task.exact_steps`: arith)."""
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
    v = task.verify_steps(prompt, list(response["steps"])) if task.exact_steps else None
    if v is not None:
        for i, ok in enumerate(v.step_correct):
            # a step is right only on a right path: after the first error every step is wrong
            good = ok and (v.first_wrong_step is None or i < v.first_wrong_step)
            rows.append({
                "label_id": content_id(response["response_id"], "verifier", "step", i),
                "target_id": response["response_id"], "target_kind": "step", "step_index": i,
                "labeler": f"verifier_{prompt['task']}", "score": 1.0 if good else 0.0,
                "label": "correct" if good else "incorrect", "confidence": 1.0,
                "rationale": "canonical step" if good else
                f"expected {v.expected_steps[i]!r}" if i < len(v.expected_steps) else "extra step",
                "raw_output": None,
            })
    return rows


class MCLabelBatch(BatchProgress):
    """The label stage's Monte-Carlo batch function (run by `BackendModelHandler`): (response,
    prompt) batches in, MC step label rows per response out, by the configured method(s)."""

    unit = "responses (MC)"

    def __init__(self, policy: PolicyConfig, model: str, cfg: MCLabelConfig, methods: Sequence[str], seed: int,
                 stage: str = "label", total: int | None = None):
        self.policy, self.model, self.cfg, self.methods, self.seed = policy, model, cfg, tuple(methods), seed
        self.stage, self.total = stage, total

    def handler(self) -> BackendModelHandler:
        return BackendModelHandler(self.policy, self.model, self, self.stage)

    def __call__(self, batch: Sequence[tuple[dict, dict]], model) -> list[PredictionResult]:
        out = {resp["response_id"]: [] for resp, _ in batch}
        rollouts = beam.metrics.Metrics.counter(NAMESPACE, "mc_rollouts")
        labelable = [(resp, prompt) for resp, prompt in batch if prompt["reference_answer"] and resp["steps"]]
        n_rollouts = 0
        for method in self.methods:
            items = [ResponseToLabel(resp["response_id"], prompt["prompt"], list(resp["steps"]),
                                     prompt["reference_answer"]) for resp, prompt in labelable]
            task = get_task(labelable[0][1]["task"]) if labelable else None
            if not items:
                continue
            run = MC_METHODS[method]
            run(items, model, self.cfg, self.seed, task.answers_match, task.extract_answer)
            for it in items:
                rows = label_rows(it, method)
                for row in rows:
                    row["raw_output"] = f"rollouts={it.rollouts}"
                out[it.response_id].extend(rows)
                rollouts.inc(it.rollouts)
                n_rollouts += it.rollouts
        self.progress().add(len(batch), rollouts=n_rollouts)
        return [PredictionResult(resp, out[resp["response_id"]]) for resp, _ in batch]


# ---- LLM judges ---------------------------------------------------------------------------------

def judge_target(resp: dict, prompt: dict):
    """A (response, prompt) pair as what the judge templates need."""
    from prefsynth.transforms.judges import Target

    from prefsynth.prompting import problem_text

    return Target(resp["response_id"], resp["prompt_id"], prompt["task"], problem_text(prompt), resp["text"] or "",
                  list(resp["steps"] or []), prompt["reference_answer"], prompt=prompt["prompt"])


class _JudgeModel:
    def __init__(self, backend, templates):
        self.backend, self.templates = backend, templates


class JudgeBatch(BatchProgress):
    """The label stage's judge batch function (run by `BackendModelHandler`): batches of judge work
    items in, (label rows, failures) per item out.

    An item is {"id", "judge", "target"} (p_true, step_confidence, pointwise, tick) or {"id", "judge", "pair"}
    (pairwise); items of several judges may share a batch and are grouped by judge here. When the
    judge is the policy itself, its backend is the one the MC rollouts of the same worker use.
    """

    unit = "judge items"

    def __init__(self, policy: PolicyConfig, model: str, judge_cfg, seed: int, stage: str = "label",
                 total: int | None = None):
        self.policy, self.model, self.cfg, self.seed, self.stage = policy, model, judge_cfg, seed, stage
        self.total = total

    def handler(self) -> BackendModelHandler:
        return BackendModelHandler(self.policy, self.model, self, self.stage)

    def prepare(self, backend) -> _JudgeModel:
        from prefsynth.transforms.judges import load_templates

        from prefsynth.prompting import ChatTemplated, has_chat_template

        # templates are read (and validated) once per worker, beside the model (Beam's shared
        # handle keeps a weak reference: a plain tuple cannot be one); an instruct judge is asked
        # through its chat template
        templates = load_templates(self.cfg.template_dir)
        tokenizer = getattr(backend, "tokenizer", None)
        if has_chat_template(tokenizer):
            templates = {name: ChatTemplated(t, tokenizer) for name, t in templates.items()}
        return _JudgeModel(backend, templates)

    def __call__(self, batch: Sequence[dict], model: _JudgeModel) -> list[PredictionResult]:
        from prefsynth.transforms import judges as J

        backend, templates = model.backend, model.templates
        cfg = self.cfg
        by_judge: dict[str, list[dict]] = {}
        for item in batch:
            by_judge.setdefault(item["judge"], []).append(item)
        rows: dict[tuple[str, str], list[dict]] = {}
        fails: dict[tuple[str, str], list] = {}
        for name, items in sorted(by_judge.items()):
            if name == "p_true":
                r = J.judge_p_true([i["target"] for i in items], backend, templates, cfg.p_true_steps)
            elif name == "step_confidence":
                r = J.judge_step_confidence([i["target"] for i in items], backend, cfg.step_confidence_span)
            elif name == "pointwise":
                r = J.judge_pointwise([i["target"] for i in items], backend, templates, cfg.mode, self.seed,
                                      cfg.max_new_tokens)
            elif name == "pairwise":
                r = J.judge_pairwise([i["pair"] for i in items], backend, templates, cfg.mode, self.seed,
                                     cfg.max_new_tokens)
                inconsistent = sum(row["label"] == "position_inconsistent" for row in r.rows)
                beam.metrics.Metrics.counter(NAMESPACE, "judge_pairwise_inconsistent").inc(inconsistent)
            elif name == "tick":
                r = J.judge_tick([i["target"] for i in items], backend, templates, self.seed, cfg.tick_max_questions,
                                 cfg.max_new_tokens)
            else:
                raise ValueError(f"unknown judge {name!r}")
            beam.metrics.Metrics.counter(NAMESPACE, f"judge_items.{name}").inc(len(items))
            for row in r.rows:
                rows.setdefault((name, row["target_id"]), []).append(row)
            for f in r.failures:
                fails.setdefault((name, f.record_id), []).append(f)
        # each item gets its own rows and failures (keyed by its target: response a for pairs)
        out = []
        for item in batch:
            tid = item["pair"].a.response_id if item["judge"] == "pairwise" else item["target"].response_id
            key = (item["judge"], tid)
            out.append(PredictionResult(item, (rows.get(key, []), fails.get(key, []))))
        self.progress().add(len(batch))
        return out


class EmitJudgeLabels(beam.DoFn):
    """PredictionResult -> label rows (main) and dead letters (DEAD), one dead letter per failed item."""

    def __init__(self, stage: str):
        self.stage = stage

    def process(self, result):
        from prefsynth.transforms.deadletters import emit_dead

        item = result.example
        rows, failures = result.inference
        if failures or not rows:
            f = failures[0] if failures else None
            if f is None:  # a judgement with neither rows nor a failure would vanish: make it visible
                yield emit_dead(self.stage, item["id"], "judge_no_output", f"{item['judge']}: no label produced")
                return
            yield emit_dead(self.stage, f.record_id, f.error_type, f"[{item['judge']}] {f.message}",
                            f.raw_input, f.raw_output)
            return
        yield from rows
