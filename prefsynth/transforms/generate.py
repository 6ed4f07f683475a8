"""Sampling the policy inside Beam: the generate batch function and the response records.

`GenerateBatch` runs inside the one `BackendModelHandler` (the backend loaded once per worker
process, shared with every other handler that asks for the same model) and is handed the batches
of `DeterministicBatches`. Each prompt's samples are seeded from
(seed, prompt_id), so they do not depend on the batch. Over-long prompts and failed requests
come back as failures and become dead letters; nothing is dropped silently.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import apache_beam as beam
from apache_beam.ml.inference.base import PredictionResult

from prefsynth.backends.base import Completion, GenerationFailure, SamplingParams
from prefsynth.config import PolicyConfig
from prefsynth.ids import content_id, seed_for
from prefsynth.tasks import get_task
from prefsynth.transforms.checkpoints import BatchCheckpoints
from prefsynth.transforms.batching import NAMESPACE, DeterministicBatches
from prefsynth.transforms.deadletters import DEAD, count_in, emit_dead
from prefsynth.transforms.model_handler import BackendModelHandler, BatchProgress

log = logging.getLogger("prefsynth")


# ---- pure core ---------------------------------------------------------------------------------

def response_records(prompt: dict, completions: Sequence[Completion], policy: str, iteration: int,
                     source: str, truncated: bool = False) -> list[dict]:
    """One responses row per completion: steps and final answer by the prompt's task."""
    task = get_task(prompt["task"])
    rows = []
    for j, c in enumerate(completions):
        rows.append({
            "response_id": content_id(prompt["prompt_id"], policy, iteration, j, c.text),
            "prompt_id": prompt["prompt_id"],
            "policy": policy,
            "iteration": iteration,
            "sample_index": j,
            "text": c.text,
            "steps": task.split_steps(c.text),
            "final_answer": task.extract_answer(c.text),
            "n_tokens": c.n_tokens,
            "sum_logprob": c.sum_logprob if c.logprobs else None,
            "mean_logprob": c.mean_logprob,
            "self_certainty": c.self_certainty,
            "finish_reason": c.finish_reason,
            "truncated_prompt": truncated,
            "source": source,
        })
    return rows


def fit_prompt(prompt: str, tokenizer, max_positions: int | None, max_new_tokens: int,
               truncate: bool) -> tuple[str | None, bool, str | None]:
    """(prompt to send, truncated?, error): a prompt that leaves no room for `max_new_tokens`
    is an error, or — when `truncate` — is cut to its last tokens that fit."""
    if tokenizer is None or not max_positions:
        return prompt, False, None  # servers enforce their own context; failures come back as errors
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    room = max_positions - max_new_tokens
    if len(ids) <= room:
        return prompt, False, None
    if truncate and room > 0:
        return tokenizer.decode(ids[-room:]), True, None
    return None, False, (f"prompt has {len(ids)} tokens; the context of {max_positions} leaves "
                         f"{max(room, 0)} after max_new_tokens={max_new_tokens}")


# ---- Beam shell --------------------------------------------------------------------------------

class GenerateBatch(BatchProgress):
    """The generate stage's batch function (run by `BackendModelHandler`): prompt records in,
    (record, completions | failure) out.

    With a resume folder, a finished batch is saved whole, and — for backends that report each
    prompt as it finishes (`generate(..., on_result=...)`: the HTTP backend) — each finished prompt
    as soon as it is answered, so a crash mid-batch costs only the prompts still in flight. Saved
    results are keyed by the run's identity (model files, backend settings, sampling, seed), so a
    folder left by a run with another model or sampling is never reused.
    """

    unit = "prompts"

    def __init__(self, policy: PolicyConfig, model: str, sampling: SamplingParams, seed: int,
                 truncate_long_prompts: bool = False, stage: str = "generate", resume_dir: str | None = None,
                 total: int | None = None):
        from prefsynth.transforms.checkpoints import resume_identity

        self.policy, self.model, self.sampling, self.seed = policy, model, sampling, seed
        self.truncate, self.stage, self.total = truncate_long_prompts, stage, total
        identity = resume_identity(stage, model, policy, sampling, seed,
                                   truncate_long_prompts=truncate_long_prompts) if resume_dir else ""
        self.checkpoints = BatchCheckpoints(resume_dir, identity)

    def handler(self) -> BackendModelHandler:
        return BackendModelHandler(self.policy, self.model, self, self.stage)

    def __call__(self, batch: Sequence[dict], model) -> list[PredictionResult]:
        ids = [r["prompt_id"] for r in batch]
        key = self.checkpoints.key(ids)
        per_prompt = self._reports_each_prompt(model)
        results: list[Any] = [None] * len(batch)
        cut = [False] * len(batch)
        saved = self.checkpoints.load(key)
        if saved is not None:
            results, cut = list(saved[0]), list(saved[1])
            if all(r is not None for r in results):  # finished before a crash: reuse, no model call
                beam.metrics.Metrics.counter(NAMESPACE, "resumed_batches").inc()
                self.progress().add(len(batch))
                return self._predictions(batch, results, cut)
        elif per_prompt and self.checkpoints.directory:
            for i, pid in enumerate(ids):  # prompts answered before a crash in the middle of this batch
                got = self.checkpoints.load_prompt(pid)
                if got is not None:
                    results[i], cut[i] = got
        reused = sum(r is not None for r in results)
        if reused:
            beam.metrics.Metrics.counter(NAMESPACE, "resumed_prompts").inc(reused)
        beam.metrics.Metrics.counter(NAMESPACE, "computed_batches").inc()
        tokenizer = getattr(model, "tokenizer", None)
        max_positions = getattr(model, "max_positions", None)
        send, send_idx = [], []
        for i, rec in enumerate(batch):
            if results[i] is not None:
                continue
            prompt, was_cut, error = fit_prompt(rec["prompt"], tokenizer, max_positions,
                                                self.sampling.max_new_tokens, self.truncate)
            if error:
                results[i] = GenerationFailure("prompt_too_long", f"prompt {rec['prompt_id']}: {error}")
            else:
                send.append(prompt)
                send_idx.append(i)
                cut[i] = was_cut
        if send:
            seeds = [seed_for(self.seed, batch[i]["prompt_id"], self.stage) for i in send_idx]
            retries_before = getattr(model, "retries", 0)
            kwargs = {}
            if per_prompt and self.checkpoints.directory:
                def keep(j: int, result: Any) -> None:
                    i = send_idx[j]
                    try:
                        self.checkpoints.save_prompt(ids[i], result, cut[i])
                    except Exception as err:  # noqa: BLE001 - the batch file still keeps it when it ends
                        log.warning("[%s] could not save prompt %s for resume: %s", self.stage, ids[i], err)
                kwargs["on_result"] = keep
            try:
                outs = model.generate(send, self.sampling, seeds, **kwargs)
            except Exception as err:
                # not a per-record failure (those come back as GenerationFailure): the whole batch
                # failed (e.g. the server is gone); say which one, so the log names stage, batch and
                # records. Prompts answered before it are kept for the re-run.
                log.error("[%s] batch %s (%d prompts, %s .. %s) failed: %s: %s", self.stage, key, len(ids),
                          ids[0], ids[-1], type(err).__name__, err)
                raise RuntimeError(f"[{self.stage}] batch {key} (prompts {ids[0]} .. {ids[-1]}): "
                                   f"{type(err).__name__}: {err}") from err
            retries = getattr(model, "retries", 0) - retries_before
            if retries:
                beam.metrics.Metrics.counter(NAMESPACE, "model_retries").inc(retries)
            for i, out in zip(send_idx, outs):
                results[i] = out
        fresh = [results[i] for i in send_idx]
        n_tokens = sum(c.n_tokens for r in fresh if isinstance(r, list) for c in r)
        n_samples = sum(len(r) for r in fresh if isinstance(r, list))
        beam.metrics.Metrics.counter(NAMESPACE, "model_requests").inc(len(send))
        beam.metrics.Metrics.counter(NAMESPACE, "model_failures").inc(
            sum(isinstance(r, GenerationFailure) for r in results))
        beam.metrics.Metrics.counter(NAMESPACE, "generated_tokens").inc(n_tokens)
        self.progress().add(len(batch), samples=n_samples, tokens=n_tokens)
        self.checkpoints.save(key, results, cut, ids)
        if per_prompt:
            self.checkpoints.drop_prompts(ids)
        return self._predictions(batch, results, cut)

    @staticmethod
    def _predictions(batch, results, cut) -> list[PredictionResult]:
        return [PredictionResult(example={**rec, "_truncated": t}, inference=res)
                for rec, res, t in zip(batch, results, cut)]

    @staticmethod
    def _reports_each_prompt(model) -> bool:
        """Whether the backend's generate takes `on_result` (reports each prompt as it finishes)."""
        import inspect

        try:
            return "on_result" in inspect.signature(model.generate).parameters
        except (TypeError, ValueError):
            return False


class ToResponses(beam.DoFn):
    """PredictionResult -> response rows, or a dead letter with the raw output."""

    def __init__(self, policy_name: str, iteration: int, source: str, stage: str = "generate"):
        self.policy_name, self.iteration, self.source, self.stage = policy_name, iteration, source, stage

    def process(self, result: PredictionResult):
        count_in()
        rec, out = dict(result.example), result.inference
        truncated = rec.pop("_truncated", False)
        if isinstance(out, GenerationFailure):
            yield emit_dead(self.stage, rec["prompt_id"], out.error_type, out.message,
                            raw_input=rec["prompt"], raw_output=out.raw_output)
            return
        try:
            rows = response_records(rec, out, self.policy_name, self.iteration, self.source, truncated)
        except Exception as err:
            log.error("[%s] record %s: building responses failed: %s: %s", self.stage, rec["prompt_id"],
                      type(err).__name__, err)
            raise RuntimeError(f"[{self.stage}] record {rec['prompt_id']}: {type(err).__name__}: {err}") from err
        yield from rows


class GenerateResponses(beam.PTransform):
    """Prompt records -> responses (main output) and dead letters (DEAD)."""

    def __init__(self, generate: GenerateBatch, policy_name: str, iteration: int, source: str):
        super().__init__()
        self.generate, self.policy_name, self.iteration, self.source = generate, policy_name, iteration, source

    def expand(self, prompts):
        from apache_beam.ml.inference.base import RunInference

        per_batch = max(1, self.generate.policy.batch_size // self.generate.sampling.n)
        return (
            prompts
            | "Batch" >> DeterministicBatches(per_batch)
            | "RunInference" >> RunInference(self.generate.handler())
            | "ToResponses" >> beam.ParDo(
                ToResponses(self.policy_name, self.iteration, self.source, self.generate.stage)
            ).with_outputs(DEAD, main="responses")
        )
