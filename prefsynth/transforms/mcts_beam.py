"""MCTS inside Beam: the batch function that searches a batch of trees together."""

from __future__ import annotations

import logging
from typing import Any, Sequence

import apache_beam as beam
from apache_beam.ml.inference.base import PredictionResult

from prefsynth.backends.base import context_check
from prefsynth.config import PolicyConfig
from prefsynth.tasks import get_task
from prefsynth.transforms.batching import NAMESPACE, DeterministicBatches
from prefsynth.transforms.deadletters import DEAD
from prefsynth.transforms.mcts import MCTSConfig, TaskHooks, new_tree, node_rows, search
from prefsynth.transforms.model_handler import BackendModelHandler, BatchProgress

log = logging.getLogger("prefsynth")


def task_hooks(task_name: str, records_by_prompt: dict[str, dict] | None = None) -> TaskHooks:
    """The search's view of a task. Ground truth of a path where the task verifies steps exactly
    (`records_by_prompt` maps a tree's prompt text to its prompt record)."""
    task = get_task(task_name)

    def path_correct(prompt: str, steps: list[str]) -> bool | None:
        if not task.exact_steps:
            return None
        record = (records_by_prompt or {}).get(prompt) or {"prompt": prompt}
        try:
            return all(task.verify_steps(record, steps).step_correct)
        except ValueError:  # no record, and a prompt the task cannot read the problem from
            return None

    return TaskHooks(task.is_final_step, task.extract_answer, task.answers_match, path_correct)


def policy_p_true(backend, task_name: str):
    """The policy's self-evaluation of the last step, as P(True): the task's native format where
    its policy learned one (arith), else a generic question after the steps."""
    import math

    task = get_task(task_name)
    native = task.self_eval()
    fits = context_check(backend)

    def p_true(prompts: Sequence[str], steps: Sequence[list[str]]) -> list[float]:
        out = [0.5] * len(prompts)
        # answer steps are judged by the outcome, not by self-evaluation
        idx = [i for i, s in enumerate(steps) if not task.is_final_step(s[-1])]
        if native:
            build, (yes_opt, no_opt) = native
            ctx = [build(prompts[i], steps[i]) for i in idx]
        else:
            yes_opt, no_opt = " Yes", " No"
            ctx = [prompts[i] + "".join(x + task.step_delimiter for x in steps[i]) + "Is the last step correct?"
                   for i in idx]
        # a path whose question does not fit the context (a long path of a policy that rambles)
        # gets no self-evaluation: P(True) 0.5, a reward of 0, like an answer step before its outcome
        keep = [j for j, c in enumerate(ctx) if fits(c + yes_opt) and fits(c + no_opt)]
        if len(keep) < len(ctx):
            beam.metrics.Metrics.counter(NAMESPACE, "p_true_context_full").inc(len(ctx) - len(keep))
            idx, ctx = [idx[j] for j in keep], [ctx[j] for j in keep]
        if ctx:
            yes, no = backend.score(ctx, [yes_opt] * len(ctx)), backend.score(ctx, [no_opt] * len(ctx))
            probs = [1 / (1 + math.exp(max(min(n - y, 700), -700))) for y, n in zip(yes, no)]
            for i, p in zip(idx, probs):
                out[i] = p
        return out

    return p_true


class SearchBatch(BatchProgress):
    """The mcts stage's batch function (run by `BackendModelHandler`): a batch of prompt records
    in, each tree's node rows (or its failure) out. The trees of a batch are searched together:
    the expansions of every active tree at a level go to the model in one call."""

    stage, unit = "mcts", "trees"

    def __init__(self, policy: PolicyConfig, model: str, cfg: MCTSConfig, seed: int, tag: str,
                 total: int | None = None):
        self.policy, self.model, self.cfg, self.seed, self.tag, self.total = policy, model, cfg, seed, tag, total

    def handler(self) -> BackendModelHandler:
        return BackendModelHandler(self.policy, self.model, self, self.stage)

    def __call__(self, batch: Sequence[dict], model) -> list[PredictionResult]:
        by_task: dict[str, list[dict]] = {}
        for rec in batch:
            by_task.setdefault(rec["task"], []).append(rec)
        counter = beam.metrics.Metrics.counter(NAMESPACE, "model_calls")
        tokens = beam.metrics.Metrics.counter(NAMESPACE, "generated_tokens")
        calls = [0]

        def on_call(kind, n, n_tokens=0):
            counter.inc()
            tokens.inc(n_tokens)
            calls[0] += 1

        results, n_nodes = [], 0
        for task_name, recs in by_task.items():
            trees = [new_tree(r["prompt_id"], r["prompt"], r["reference_answer"], self.tag) for r in recs]
            hooks = task_hooks(task_name, {r["prompt"]: r for r in recs})
            search(trees, model, policy_p_true(model, task_name), hooks, self.cfg, self.seed, on_call=on_call)
            for rec, tree in zip(recs, trees):
                if tree.failure is not None:
                    results.append(PredictionResult(rec, tree.failure))
                    continue
                rows = node_rows(tree, self.cfg.gamma)
                n_nodes += len(rows)
                results.append(PredictionResult(rec, rows))
        beam.metrics.Metrics.counter(NAMESPACE, "nodes").inc(n_nodes)
        self.progress().add(len(results), nodes=n_nodes, model_calls=calls[0])
        return results


class SearchTrees(beam.PTransform):
    """Prompt records -> tree_nodes rows (`.rows`) and a dead letter per tree whose search failed (`[DEAD]`)."""

    def __init__(self, searcher: SearchBatch, trees_per_batch: int):
        super().__init__()
        self.searcher, self.trees_per_batch = searcher, trees_per_batch

    def expand(self, prompts):
        from apache_beam.ml.inference.base import RunInference

        def rows(result: PredictionResult):
            from prefsynth.transforms.deadletters import emit_dead

            beam.metrics.Metrics.counter(NAMESPACE, "in").inc()
            if isinstance(result.inference, list):
                yield from result.inference
                return
            f, rec = result.inference, result.example
            yield emit_dead("mcts", rec["prompt_id"], "mcts_expansion_failed",
                            f"a model call of the search failed: {getattr(f, 'error_type', type(f).__name__)}: "
                            f"{getattr(f, 'message', f)}", raw_input=rec["prompt"],
                            raw_output=getattr(f, "raw_output", None))

        return (
            prompts
            | "Batch" >> DeterministicBatches(self.trees_per_batch)
            | "Search" >> RunInference(self.searcher.handler())
            | "Rows" >> beam.FlatMap(rows).with_outputs(DEAD, main="rows")
        )
