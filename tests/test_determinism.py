"""Same params -> same bytes, prompts through candidates, on 1 and 2 workers and across two runs."""

from pathlib import Path

import pytest

from prefsynth.pipelines import candidates, generate, label, mcts, prompts
from prefsynth.schemas.io import dataset_files

from helpers import tiny_random_policy, write_params

pytestmark = pytest.mark.slow
DATASETS = ["prompts", "responses", "trees", "labels", "candidates/response", "candidates/step"]


def _run(root: Path, policy: str, workers: int) -> dict[str, list[bytes]]:
    root.mkdir(parents=True)
    params = write_params(root / "p.json", {
        "seed": 9, "beam": {"direct_num_workers": workers}, "prompts": {"n_prompts": 60},
        "generate": {"n": 3, "max_new_tokens": 24, "split": "all", "max_prompts": 12},
        "mcts": {"max_prompts": 6, "trees_per_batch": 3, "split": "all",
                 "search": {"iterations": 3, "breadth": 2, "max_depth": 3, "max_step_tokens": 8}},
        "label": {"mc_max_responses": 8, "responses_per_batch": 4, "mc": {"rollouts": 2, "max_new_tokens": 20}}})
    c = ["--params", params, "--reports", str(root / "reports")]
    d = lambda name: str(root / name)  # noqa: E731
    prompts.main([*c, "--out", d("prompts"), "--dead", d("dp"), "--metrics", d("m1.json")])
    generate.main([*c, "--prompts", d("prompts"), "--policy", policy, "--out", d("responses"), "--dead", d("dg"),
                   "--metrics", d("m2.json")])
    mcts.main([*c, "--prompts", d("prompts"), "--policy", policy, "--responses", d("responses"), "--out", d("trees"),
               "--dead", d("dm"), "--metrics", d("m3.json")])
    label.main([*c, "--prompts", d("prompts"), "--responses", d("responses"), "--policy", policy, "--out", d("labels"),
                "--dead", d("dl"), "--metrics", d("m4.json")])
    candidates.main([*c, "--prompts", d("prompts"), "--responses", d("responses"), "--labels", d("labels"),
                     "--trees", d("trees"), "--out", d("candidates"), "--dead", d("dd"), "--metrics", d("m5.json")])
    return {ds: [Path(f).read_bytes() for f in dataset_files(str(root / ds))] for ds in DATASETS}


def test_prompts_to_candidates_identical_bytes_on_1_and_2_workers_and_twice(tmp_path):
    policy = tiny_random_policy(tmp_path / "policy-0")
    first = _run(tmp_path / "a", policy, 1)
    again = _run(tmp_path / "b", policy, 1)
    two = _run(tmp_path / "c", policy, 2)
    assert all(first[ds] for ds in DATASETS)
    for ds in DATASETS:
        assert first[ds] == again[ds], ds
        assert first[ds] == two[ds], ds
