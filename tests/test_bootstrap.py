"""A small, real bootstrap: TRL SFT of the tiny policy on an easy arith world. It must learn."""

import json

import pytest

from prefsynth.backends.transformers_backend import TransformersBackend
from prefsynth.pipelines import bootstrap, prompts
from prefsynth.tasks import arith

EASY = {
    "seed": 3,
    # one addition of numbers up to 30: ~960 problems, so the held-out half is unseen but learnable
    "arith": {"min_ops": 1, "max_ops": 1, "operand_max": 30, "operators": "+"},
    # half the problems held out (validation, where bootstrap measures itself, and test)
    "prompts": {"n_prompts": 300, "test_fraction": 0.3, "validation_fraction": 0.2},
    "bootstrap": {"max_steps": 300, "batch_size": 32, "learning_rate": 0.003, "warmup_steps": 20,
                  "eval_prompts": 60, "eval_sample_prompts": 30, "eval_samples": 4},
}


@pytest.mark.slow
def test_small_bootstrap_learns(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps(EASY))
    prompts.main(["--params", str(params), "--out", str(tmp_path / "prompts"), "--dead", str(tmp_path / "dead"),
                  "--metrics", str(tmp_path / "prompts.json"), "--reports", str(tmp_path / "reports")])
    bootstrap.main(["--params", str(params), "--prompts", str(tmp_path / "prompts"),
                    "--out", str(tmp_path / "policy"), "--metrics", str(tmp_path / "bootstrap.json")])
    m = json.loads((tmp_path / "bootstrap.json").read_text())
    assert m["final_train_loss"] < 0.5 * m["first_train_loss"], m
    # a guess would be right ~1/60 of the time; it must do far better on unseen problems
    assert m["greedy_accuracy"] > 0.3, m
    assert m["per_step_accuracy"] > 0.3, m
    assert m["eval_split"] == "validation"
    for key in ("mixed_fraction", "self_eval_accuracy", "train_seconds"):
        assert key in m

    # the saved policy is a normal HF model directory that the backend loads and that answers in format
    backend = TransformersBackend(str(tmp_path / "policy"))
    (c,), = backend.generate(["Q: 3+4=?\n"], arith_sampling())
    assert arith.extract_answer(c.text) is not None, c.text


def arith_sampling():
    from prefsynth.backends import SamplingParams

    return SamplingParams(n=1, temperature=0.0, max_new_tokens=32)


def test_bootstrap_seed_moves_the_weights_and_null_is_the_global_seed(tmp_path):
    """bootstrap.seed (the capacity curve's seeds) moves policy-0's initial weights and batch order;
    null and the global seed's own value train the same bytes."""
    from safetensors.torch import load_file

    from prefsynth.config import load_params

    def weights(seed):
        params = load_params(None, overrides={"seed": 5, "bootstrap": {
            "n_layer": 1, "n_embd": 16, "n_head": 1, "max_steps": 3, "batch_size": 4, "warmup_steps": 1,
            "seed": seed}})
        out = tmp_path / f"policy-{seed}"
        m = bootstrap.train_tiny_policy(params, set(), str(out))
        assert m["seed"] == (5 if seed is None else seed)
        return load_file(str(out / "model.safetensors"))

    base, same, other = weights(None), weights(5), weights(6)
    assert all(base[k].equal(same[k]) for k in base)
    assert any(not base[k].equal(other[k]) for k in base)
