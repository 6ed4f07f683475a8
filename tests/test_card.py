"""The dataset card: real metadata from a real (small) run, loadable by `datasets`, no token leaks."""

import json
import os
import subprocess
import sys

import datasets
import pyarrow.parquet as pq
import pytest
import yaml
from huggingface_hub import DatasetCard

from prefsynth.pipelines import generate, prompts
from prefsynth.schemas import SCHEMAS

from helpers import tiny_random_policy

TOKEN = "hf_prefsynthTestToken0123456789abcdef"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, repo):
    root = tmp_path_factory.mktemp("card")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["prompts"]["n_prompts"] = 120
    params["generate"].update({"max_prompts": 12, "n": 2, "max_new_tokens": 16})
    params["card"]["repo_id"] = "someone/arith-prefs"
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    args = lambda *a: [*a, "--params", str(root / "params.yaml"), "--reports", str(root / "reports")]
    prompts.main(args("--out", str(root / "data/prompts"), "--dead", str(root / "data/deadletter/prompts"),
                      "--metrics", str(root / "metrics/prompts.json")))
    policy = tiny_random_policy(root / "models/policy-0")
    generate.main(args("--prompts", str(root / "data/prompts"), "--policy", policy,
                       "--out", str(root / "data/responses"), "--dead", str(root / "data/deadletter/generate"),
                       "--metrics", str(root / "metrics/generate.json")))
    return root


def _card(run_dir, *extra, env=None):
    return subprocess.run([sys.executable, "-m", "prefsynth", "card", *extra], cwd=run_dir, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


def test_card_metadata_and_every_config_loads_with_its_features(run_dir):
    proc = _card(run_dir)
    assert proc.returncode == 0, proc.stderr
    card = DatasetCard.load(run_dir / "card" / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "cc-by-4.0" and {"preference", "dpo", "synthetic"} <= set(data["tags"])
    assert data["size_categories"] == ["n<1K"] or data["size_categories"] == "n<1K"
    names = [c["config_name"] for c in data["configs"]]
    assert names == ["responses", "prompts"]
    declared = {i["config_name"]: i for i in data["dataset_info"]}
    for name, dataset in (("responses", "responses"), ("prompts", "prompts")):
        ds = datasets.load_dataset(str(run_dir / "card"), name, split="train")
        assert ds.features == datasets.Features.from_arrow_schema(SCHEMAS[dataset])
        assert ds.num_rows == declared[name]["splits"][0]["num_examples"]
        assert [f["name"] for f in declared[name]["features"]] == SCHEMAS[dataset].names
    # the prompts view carries a split: published as Hugging Face splits, test prompts never under train
    prompt_splits = {i["config_name"]: [s["name"] for s in i["splits"]] for i in data["dataset_info"]}
    assert prompt_splits == {"responses": ["train"], "prompts": ["train", "validation", "test"]}
    for split in ("train", "validation", "test"):
        ds = datasets.load_dataset(str(run_dir / "card"), "prompts", split=split)
        assert ds.num_rows > 0 and set(ds["split"]) == {split}
    body = card.text
    assert "| generate | 12 | 12 |" in body and "| prompts | 120 |" in body  # accounting table
    assert "DPOTrainer" in body and "someone/arith-prefs" in body
    summary = json.loads((run_dir / "metrics" / "run_summary.json").read_text())
    assert summary["stages"]["generate"]["balanced"] is True


def test_push_dry_run_lists_files_and_never_leaks_the_token(run_dir):
    proc = _card(run_dir, "--dry-run", env={"HF_TOKEN": TOKEN})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert "would upload README.md" in out and "datasets/someone/arith-prefs" in out
    assert TOKEN not in out
    for f in (run_dir / "card").rglob("*"):
        if f.is_file():
            assert TOKEN.encode() not in f.read_bytes(), f
            if f.suffix == ".parquet":
                meta = pq.read_metadata(f).metadata or {}
                assert all(TOKEN.encode() not in v for v in meta.values())
