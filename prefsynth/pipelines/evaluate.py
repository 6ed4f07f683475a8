"""evaluate stage: every policy of the run on the same held-out validation and test prompts.

Greedy accuracy, maj@k (majority vote over k samples), mean sample accuracy and, for tasks whose
steps can be checked exactly (arith), per-step accuracy; deltas against the first policy
(policy-0), each accuracy with its n and a 95% Wilson interval and each delta paired on the same
prompts with its 95% interval. `policies` is the test split (read once per run, never used to
choose anything); `validation` the same numbers on the validation split, where defaults and
ablation variants are compared. Writes metrics/evaluate.json and plots/accuracy.csv (test, one row per policy) for
`dvc plots show`, and outcomes.json beside the metrics: every policy's per-prompt outcomes on both splits,
which `prefsynth compare` pairs across runs and seeds.
Any task with reference answers and any backend work the same way: with a real
model and GSM8K-style prompts the stage reports the same numbers.
"""

from __future__ import annotations

import collections
import csv
import json
import logging
import math
import time
from pathlib import Path

from prefsynth.backends.base import SamplingParams
from prefsynth.backends.factory import release_backends, resolve_model, shared_backend
from prefsynth.config import EvaluateConfig, load_params
from prefsynth.ids import seed_for
from prefsynth.pipelines.cli_args import add_outputs, stage_parser
from prefsynth.pipelines.stage import write_metrics
from prefsynth.schemas.io import read_records
from prefsynth.tasks import get_task

log = logging.getLogger("prefsynth")


def majority_answer(answers: list[str | None]) -> str | None:
    """Most frequent non-empty answer; ties go to the answer seen first (order of the samples)."""
    counts = collections.Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


def fallback_counts() -> collections.Counter:
    """Answers decided by a task's fallback so far in this process, by name (gsm8k last number, math-verify
    timeouts and errors)."""
    from prefsynth.tasks import gsm8k, math as math_task

    return gsm8k.FALLBACKS + math_task.FALLBACKS


def evaluate_policy(backend, records: list[dict], cfg: EvaluateConfig, seed: int) -> dict:
    """Accuracy numbers of one policy on `records` (prompt records with reference answers); `fallbacks`
    counts, by name, the answers a task's fallback decided (never silent)."""
    before = fallback_counts()
    prompts = [r["prompt"] for r in records]
    greedy = backend.generate(prompts, SamplingParams(n=1, temperature=0.0, max_new_tokens=cfg.max_new_tokens),
                              [seed_for(seed, r["prompt_id"], "eval-greedy") for r in records])
    correct, step_fracs = [], []
    for rec, (c,) in zip(records, greedy):
        task = get_task(rec["task"])
        correct.append(task.answers_match(task.extract_answer(c.text), rec["reference_answer"]))
        if task.exact_steps:  # exact steps (arith): the fraction of the canonical steps written right
            v = task.verify_steps(rec, task.split_steps(c.text))
            step_fracs.append(sum(v.step_correct[:len(v.expected_steps)]) / len(v.expected_steps))
    per_prompt = {"greedy_accuracy": [bool(x) for x in correct]}
    out = {"n_prompts": len(records), "greedy_accuracy": sum(correct) / len(correct),
           "per_step_accuracy": sum(step_fracs) / len(step_fracs) if step_fracs else None}
    if cfg.k:
        samples = backend.generate(prompts, SamplingParams(n=cfg.k, temperature=cfg.temperature,
                                                           max_new_tokens=cfg.max_new_tokens),
                                   [seed_for(seed, r["prompt_id"], "eval-sample") for r in records])
        maj, sample_ok, any_ok = [], [], []
        for rec, group in zip(records, samples):
            task = get_task(rec["task"])
            answers = [task.extract_answer(c.text) for c in group]
            ok = [task.answers_match(a, rec["reference_answer"]) for a in answers]
            sample_ok.extend(ok)
            any_ok.append(any(ok))
            maj.append(task.answers_match(majority_answer(answers), rec["reference_answer"]))
        out.update({f"maj_at_{cfg.k}": sum(maj) / len(maj), "sample_accuracy": sum(sample_ok) / len(sample_ok),
                    f"pass_at_{cfg.k}": sum(any_ok) / len(any_ok)})
        per_prompt.update({f"maj_at_{cfg.k}": [bool(x) for x in maj], f"pass_at_{cfg.k}": [bool(x) for x in any_ok]})
    # every headline accuracy with its n and a 95% Wilson interval (one round's few points are noise)
    out["ci95"] = {k: wilson_interval(sum(v), len(v)) for k, v in per_prompt.items()}
    out["_per_prompt"] = per_prompt
    out["fallbacks"] = dict(sorted((fallback_counts() - before).items()))
    return out


def wilson_interval(successes: int, n: int, z: float = 1.96) -> list[float] | None:
    """95% Wilson score interval of a proportion; None when n is 0."""
    if n == 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def paired_delta(after: list[bool], before: list[bool], z: float = 1.96) -> dict:
    """Mean paired difference (same prompts) with a 95% normal interval on the per-prompt differences."""
    d = [float(a) - float(b) for a, b in zip(after, before)]
    n = len(d)
    mean = sum(d) / n if n else 0.0
    var = sum((x - mean) ** 2 for x in d) / (n - 1) if n > 1 else 0.0
    half = z * math.sqrt(var / n) if n else 0.0
    return {"delta": round(mean, 4), "ci95": [round(mean - half, 4), round(mean + half, 4)], "n": n,
            "significant": bool(n > 1 and (mean - half > 0 or mean + half < 0))}


def split_records(prompts: list[dict], split: str, max_prompts: int | None) -> list[dict]:
    """The first `max_prompts` prompts of `split` by id that have a reference answer."""
    records = sorted((r for r in prompts if r["split"] == split and r["reference_answer"]),
                     key=lambda r: r["prompt_id"])
    return records[:max_prompts] if max_prompts else records


def outcome_strings(records: list[dict], results: dict) -> dict:
    """The per-prompt outcomes of every policy on one split: "0"/"1" per prompt, in `prompt_ids` order, for
    each headline metric; what paired and seed-and-prompt intervals between runs need (`prefsynth compare`)."""
    return {"prompt_ids": [r["prompt_id"] for r in records],
            "policies": {name: {k: "".join("1" if ok else "0" for ok in v) for k, v in res["_per_prompt"].items()}
                         for name, res in results.items()}}


def with_deltas(results: dict, baseline: str) -> dict:
    """Every policy's results plus its deltas (plain and paired, same prompts) against the baseline's."""
    base = results[baseline]
    for res in results.values():
        res["delta_vs_first"] = {k: round(v - base[k], 4) for k, v in res.items()
                                 if isinstance(v, float) and k != "eval_seconds" and base.get(k) is not None}
        res["paired_delta_vs_first"] = {k: paired_delta(v, base["_per_prompt"][k])
                                        for k, v in res["_per_prompt"].items()}
    for res in results.values():
        res.pop("_per_prompt")
    return results


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("evaluate", __doc__)
    ap.add_argument("--prompts", default="data/prompts")
    ap.add_argument("--policies", nargs="+", default=["models/policy-0", "models/policy-1"],
                    help="policy directories, first = the baseline the deltas are against")
    add_outputs(ap, metrics="metrics/evaluate.json")
    ap.add_argument("--plots", default="plots/accuracy.csv")
    ap.add_argument("--outcomes", default=None,
                    help="per-prompt outcomes of every policy (JSON; default: outcomes.json beside --metrics)")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    cfg = params.evaluate
    prompts = read_records(args.prompts)
    records = split_records(prompts, cfg.split, cfg.max_prompts)
    if not records:
        raise ValueError(f"evaluate: no {cfg.split!r} prompts with a reference answer in {args.prompts}")
    # validation: where defaults and ablation variants are compared; the headline split (test) is read
    # once here and nowhere else decides anything
    val_records = (split_records(prompts, cfg.validation_split, cfg.max_prompts)
                   if cfg.validation_split and cfg.validation_split != cfg.split else [])
    results: dict = {}
    val_results: dict = {}
    eval_seed = params.seed if cfg.seed is None else cfg.seed
    for path in dict.fromkeys(args.policies):  # round 1 starts from policy-0: measure it once
        name = Path(path).name
        t0 = time.perf_counter()
        backend = shared_backend(params.policy, resolve_model(path, params.policy))
        results[name] = evaluate_policy(backend, records, cfg, eval_seed)
        results[name]["eval_seconds"] = round(time.perf_counter() - t0, 1)
        if val_records:
            t1 = time.perf_counter()
            val_results[name] = evaluate_policy(backend, val_records, cfg, eval_seed)
            val_results[name]["eval_seconds"] = round(time.perf_counter() - t1, 1)
        del backend
        release_backends()  # one model in memory at a time
        log.info("[evaluate] %s: %s", path, {k: v for k, v in results[name].items() if k != "_per_prompt"})
    baseline = Path(args.policies[0]).name
    base = results[baseline]
    keys = [k for k in base if isinstance(base[k], float) and k != "eval_seconds"]
    outcomes = {"baseline": baseline, "policies": list(results), "metric_keys": sorted(base["_per_prompt"]),
                "splits": {cfg.split: outcome_strings(records, results)}}
    if val_records:
        outcomes["splits"][cfg.validation_split] = outcome_strings(val_records, val_results)
    with_deltas(results, baseline)
    validation = ({"split": cfg.validation_split, "n_prompts": len(val_records),
                   "policies": with_deltas(val_results, baseline)} if val_records else
                  {"split": cfg.validation_split, "n_prompts": 0, "policies": {},
                   "skipped": "no validation prompts with a reference answer" if cfg.validation_split else "off"})
    write_metrics(args.metrics, {"baseline": baseline, "split": cfg.split, "policies": results,
                                 "validation": validation})
    outcomes_path = Path(args.outcomes or Path(args.metrics).with_name("outcomes.json"))
    outcomes_path.parent.mkdir(parents=True, exist_ok=True)
    outcomes_path.write_text(json.dumps(outcomes, indent=1, sort_keys=True) + "\n")
    Path(args.plots).parent.mkdir(parents=True, exist_ok=True)
    with open(args.plots, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["round", "policy", *keys])
        for i, (name, res) in enumerate(results.items()):
            w.writerow([i, name, *(round(res[k], 4) if res[k] is not None else "" for k in keys)])
