"""Per-prompt outcomes for the benchmark tables (ablations.py, rounds.py).

Each (variant, seed) run records each policy's greedy outcome per prompt (a "0"/"1" string per split,
the evaluate stage's own measurement, checked against it); the tables print, beside the seed interval,
the interval over seeds *and* prompts of prefsynth/intervals.py (its docstring has the statistic). On
session 17's round-1 runs MS_seed was at or below MS_resid for most variants: the spread between training
seeds is what per-prompt flips alone predict, and the prompts are most of the width.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from prefsynth.intervals import differences, seeds_and_prompts_ci, t_quantile  # noqa: F401 (re-exported)


def outcome_bits(backend, records: list[dict], cfg, eval_seed: int) -> str:
    """Greedy correctness of `backend` on each record, "1"/"0" in record order: the evaluate stage's own
    `evaluate_policy` with its k samples off (greedy only)."""
    from prefsynth.pipelines.evaluate import evaluate_policy

    res = evaluate_policy(backend, records, dataclasses.replace(cfg, k=0), eval_seed)
    return "".join("1" if ok else "0" for ok in res["_per_prompt"]["greedy_accuracy"])


def stage_outcomes(path: Path, policy: str, splits: dict[str, str]) -> dict[str, str] | None:
    """`policy`'s greedy outcomes from an evaluate stage's outcomes.json, keyed as `splits` maps our names
    ("test", "validation") to the stage's split names; None when the file or the policy is not there."""
    import json

    if not path.exists():
        return None
    data = json.loads(path.read_text())["splits"]
    if not all(name in data and policy in data[name]["policies"] for name in splits.values()):
        return None
    return {ours: data[name]["policies"][policy]["greedy_accuracy"] for ours, name in splits.items()}


def greedy_outcomes(project: Path, policy_dir: str, outcomes_file: Path | None = None) -> dict[str, str]:
    """Per-prompt greedy correctness of one policy of `project` on its evaluate splits (test and validation),
    in prompt-id order: read from the evaluate stage's `outcomes_file` when it has the policy, else decoded
    again with the stage's records, params and backend (projects from before the stage wrote them)."""
    from prefsynth.backends.factory import release_backends, resolve_model, shared_backend
    from prefsynth.config import load_params
    from prefsynth.pipelines.evaluate import split_records
    from prefsynth.schemas.io import read_records

    params = load_params(str(project / "params.yaml"))
    cfg = params.evaluate
    names = {"test": cfg.split}
    if cfg.validation_split and cfg.validation_split != cfg.split:
        names["validation"] = cfg.validation_split
    if outcomes_file is not None and (found := stage_outcomes(outcomes_file, Path(policy_dir).name, names)):
        return found
    prompts = read_records(str(project / "data/prompts"))
    splits = {"test": split_records(prompts, cfg.split, cfg.max_prompts)}
    if cfg.validation_split and cfg.validation_split != cfg.split:
        splits["validation"] = split_records(prompts, cfg.validation_split, cfg.max_prompts)
    eval_seed = params.seed if cfg.seed is None else cfg.seed
    backend = shared_backend(params.policy, resolve_model(str(project / policy_dir), params.policy))
    try:
        return {split: outcome_bits(backend, records, cfg, eval_seed)
                for split, records in splits.items()}
    finally:
        del backend
        release_backends()


def check_against(outcomes: str, accuracy: float, what: str) -> None:
    """The recorded outcomes must give the evaluate stage's accuracy: the same measurement, not a near one."""
    got = outcomes.count("1") / len(outcomes)
    if abs(got - accuracy) > 1e-9:
        raise RuntimeError(f"{what}: greedy outcomes give {got:.4f}, the evaluate stage reported {accuracy:.4f}")
