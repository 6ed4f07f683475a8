"""A real `dvc repro` of the project on a small config: every stage runs, a second repro skips all."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

SMALL = {
    "prompts": {"n_prompts": 400},
    "bootstrap": {"max_steps": 20, "batch_size": 16, "eval_prompts": 40, "eval_sample_prompts": 10,
                  "eval_samples": 4},
    "generate": {"max_prompts": 30, "n": 2, "max_new_tokens": 40},
    "label": {"mc_max_responses": 12, "responses_per_batch": 6, "mc": {"rollouts": 2, "max_new_tokens": 24}},
    "mcts": {"max_prompts": 8, "trees_per_batch": 4, "search": {"iterations": 3, "breadth": 2}},
    "critic": {"max_steps": 5, "batch_size": 8, "eval_examples": 10},
    "critiques": {"model_max_responses": 6},
    "pairs": {"upo": {"max_steps": 2, "passes": 2}},
    "train": {"max_steps": 2, "batch_size": 8},
    "evaluate": {"max_prompts": 10, "k": 2, "max_new_tokens": 40},
}
IGNORE = shutil.ignore_patterns(".venv", ".git", "data", "models", "metrics", "reports", "__pycache__",
                                "*.egg-info", ".pytest_cache", "tmp", "cache")


def _dvc(cwd: Path, *args: str) -> str:
    dvc = Path(sys.executable).parent / "dvc"
    proc = subprocess.run([str(dvc), *args], cwd=cwd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_dvc_repro_runs_every_stage_then_skips_them(tmp_path, repo):
    project = tmp_path / "project"
    shutil.copytree(repo, project, ignore=IGNORE)
    params = yaml.safe_load((project / "params.yaml").read_text())
    for group, values in SMALL.items():
        params[group].update(values)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)

    first = _dvc(project, "repro")
    stages = [s.split()[0] for s in _dvc(project, "stage", "list").splitlines() if s.strip()]
    assert {"generate@1", "train@1", "evaluate@1", "card"} <= set(stages)
    for stage in stages:
        assert f"Running stage '{stage}'" in first
    assert (project / "models/policy-0/config.json").exists()
    prompts_metrics = json.loads((project / "metrics/prompts.json").read_text())
    assert prompts_metrics["accounting"]["n_in"] == 400 and prompts_metrics["accounting"]["balanced"]
    boot = json.loads((project / "metrics/bootstrap.json").read_text())
    assert boot["trained"] and boot["n_greedy_prompts"] == 40
    hits = boot["greedy_accuracy"] * boot["n_greedy_prompts"]  # a share of 40 prompts, not any float
    assert abs(hits - round(hits)) < 1e-9

    gen = json.loads((project / "metrics/round-1/generate.json").read_text())
    assert gen["accounting"]["n_in"] == 30 and gen["accounting"]["balanced"] and gen["responses"] == 60
    # the round closes: policy-1 trained from the round's pairs and evaluated against policy-0
    assert (project / "models/policy-1/config.json").exists()
    train = json.loads((project / "metrics/round-1/train.json").read_text())
    assert train["train_steps"] == 2 and train["pairs"] > 0
    ev = json.loads((project / "metrics/round-1/evaluate.json").read_text())
    assert set(ev["policies"]) == {"policy-0", "policy-1"} and ev["policies"]["policy-1"]["n_prompts"] == 10
    # validation and test, each accuracy with its interval and each delta paired on the same prompts
    assert ev["validation"]["n_prompts"] == 10 and set(ev["validation"]["policies"]) == {"policy-0", "policy-1"}
    for block in (ev["policies"], ev["validation"]["policies"]):
        p1 = block["policy-1"]
        lo, hi = p1["ci95"]["greedy_accuracy"]
        assert lo <= p1["greedy_accuracy"] <= hi
        assert p1["paired_delta_vs_first"]["greedy_accuracy"]["n"] == 10
    outcomes = json.loads((project / "metrics/round-1/outcomes.json").read_text())  # a DVC out, for `compare`
    assert len(outcomes["splits"]["test"]["policies"]["policy-1"]["greedy_accuracy"]) == 10
    sel = json.loads((project / "metrics/round-1/pairs.json").read_text())
    assert "final_precision_by_source" in sel and "source_gate" in sel
    assert (project / "card/README.md").exists()

    second = _dvc(project, "repro")
    for stage in stages:
        assert f"Stage '{stage}' didn't change, skipping" in second
    assert "Running stage" not in second
    assert "up to date" in _dvc(project, "status")
