"""Measuring a policy on held-out prompts: accuracy, per-step accuracy, contrast, self-evaluation.

Pure functions over a backend and prompt records; the bootstrap and evaluate stages call them.
"""

from __future__ import annotations

import math
import random
from typing import Sequence

from prefsynth.backends.base import Backend, SamplingParams
from prefsynth.calibration import auroc
from prefsynth.ids import seed_for
from prefsynth.tasks import arith


def _seed(global_seed: int, prompt_id: str, purpose: str) -> int:
    return seed_for(global_seed, prompt_id, purpose)


def arith_p_true(backend: Backend, self_eval_prompts: list[str]) -> list[float]:
    """P(True) of the policy's self-evaluation: P(yes) normalised against P(no)."""
    s_yes = backend.score(self_eval_prompts, ["yes"] * len(self_eval_prompts))
    s_no = backend.score(self_eval_prompts, ["no"] * len(self_eval_prompts))
    return [1.0 / (1.0 + math.exp(max(min(n - y, 700.0), -700.0))) for y, n in zip(s_yes, s_no)]


def arith_policy_metrics(backend: Backend, test_records: list[dict], seed: int, n_greedy: int,
                         n_sample_prompts: int, n_samples: int, temperature: float,
                         max_new_tokens: int = 64) -> dict:
    """Greedy accuracy and per-step accuracy, contrast under sampling, and self-evaluation quality."""
    greedy_recs = test_records[:n_greedy]
    greedy = backend.generate([r["prompt"] for r in greedy_recs],
                              SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens),
                              [_seed(seed, r["prompt_id"], "eval-greedy") for r in greedy_recs])
    correct, step_fracs = [], []
    for rec, (c,) in zip(greedy_recs, greedy):
        v = arith.verify_solution(arith.ArithTask.problem(rec), arith.split_steps(c.text))
        correct.append(v.answer_correct)
        n_expected = len(v.expected_steps)
        step_fracs.append(sum(v.step_correct[:n_expected]) / n_expected)

    sample_recs = test_records[:n_sample_prompts]
    samples = backend.generate([r["prompt"] for r in sample_recs],
                               SamplingParams(n=n_samples, temperature=temperature, max_new_tokens=max_new_tokens),
                               [_seed(seed, r["prompt_id"], "eval-sample") for r in sample_recs])
    mixed, sample_acc = 0, []
    for rec, group in zip(sample_recs, samples):
        ok = [arith.answers_match(arith.extract_answer(c.text), rec["reference_answer"]) for c in group]
        sample_acc.extend(ok)
        mixed += any(ok) and not all(ok)

    # Self-evaluation: P(yes) on held-out steps, half right and half corrupted.
    prompts, truth = [], []
    for rec in greedy_recs:
        rng = random.Random(_seed(seed, rec["prompt_id"], "eval-self"))
        p, completion = arith.self_eval_example(arith.ArithTask.problem(rec), rng)
        prompts.append(p)
        truth.append(completion == "yes\n")
    p_yes = arith_p_true(backend, prompts)
    self_eval_acc = sum((p > 0.5) == t for p, t in zip(p_yes, truth)) / len(truth)
    return {
        "greedy_accuracy": sum(correct) / len(correct),
        "per_step_accuracy": sum(step_fracs) / len(step_fracs),
        "sample_accuracy": sum(sample_acc) / len(sample_acc),
        "mixed_fraction": mixed / len(sample_recs),
        "self_eval_accuracy": self_eval_acc,
        "self_eval_auroc": auroc(p_yes, truth),
        "n_greedy_prompts": len(greedy_recs),
        "n_sample_prompts": len(sample_recs),
        "samples_per_prompt": n_samples,
        "temperature": temperature,
    }
