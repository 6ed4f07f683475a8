"""One engine per worker process: `factory.shared_backend` builds a backend once per (kind, model,
settings), whoever asks for it, and `release_backends` frees them."""

import dataclasses
import threading

import pytest

from prefsynth.backends import factory
from prefsynth.backends.base import SamplingParams
from prefsynth.config import PolicyConfig

from helpers import tiny_random_policy


@pytest.fixture(autouse=True)
def clean_registry():
    factory.release_backends(reset_counts=True)
    yield
    factory.release_backends(reset_counts=True)


class _Handler:
    """What a RunInference ModelHandler does in load_model, through the registry."""

    def __init__(self, policy: PolicyConfig, model: str):
        self.policy, self.model = policy, model

    def load_model(self):
        return factory.shared_backend(self.policy, self.model)


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    return tiny_random_policy(tmp_path_factory.mktemp("registry") / "policy-0")


def test_two_handlers_asking_for_the_same_backend_share_one_construction(policy_dir):
    cfg = PolicyConfig(device="cpu", batch_size=16)
    generate_handler, mcts_handler = _Handler(cfg, policy_dir), _Handler(PolicyConfig(device="cpu", batch_size=16),
                                                                         policy_dir)
    a, b = generate_handler.load_model(), mcts_handler.load_model()
    assert a is b
    assert factory.construction_count() == 1 and factory.constructions[("transformers", policy_dir)] == 1
    # and it is a working backend
    out = a.generate(["Q: 1+2=?\n"], SamplingParams(n=2, max_new_tokens=4), seeds=[1])
    assert len(out[0]) == 2


def test_other_settings_or_models_get_their_own_backend(tmp_path):
    built = []

    def fake(cfg, model):
        built.append((cfg.dtype, model))
        return object()

    cfg = PolicyConfig(backend="vllm")
    first = factory.shared_backend(cfg, "m1", factory=fake)
    assert factory.shared_backend(dataclasses.replace(cfg), "m1", factory=fake) is first
    assert factory.shared_backend(dataclasses.replace(cfg, dtype="bfloat16"), "m1", factory=fake) is not first
    assert factory.shared_backend(cfg, "m2", factory=fake) is not first
    assert built == [(None, "m1"), ("bfloat16", "m1"), (None, "m2")]
    assert factory.construction_count() == 3


def test_concurrent_first_requests_build_once():
    started = threading.Event()
    built = []

    def slow(cfg, model):
        started.wait(2)
        built.append(model)
        return object()

    cfg = PolicyConfig(backend="openai", base_url="http://127.0.0.1:1/v1")
    got = []
    threads = [threading.Thread(target=lambda: got.append(factory.shared_backend(cfg, "m", factory=slow)))
               for _ in range(4)]
    for t in threads:
        t.start()
    started.set()
    for t in threads:
        t.join(10)
    assert len(built) == 1 and len(got) == 4 and all(g is got[0] for g in got)


def test_release_closes_engines_and_a_later_request_builds_afresh():
    closed = []

    class Engine:
        def close(self):
            closed.append(self)

    cfg = PolicyConfig(backend="vllm")
    first = factory.shared_backend(cfg, "m", factory=lambda c, m: Engine())
    assert factory.release_backends() == 1 and closed == [first]
    second = factory.shared_backend(cfg, "m", factory=lambda c, m: Engine())
    assert second is not first and factory.constructions[("vllm", "m")] == 2


def test_the_label_stage_loads_the_policy_once_for_mc_rollouts_and_judges(tmp_path, policy_dir, caplog):
    """A real label stage (Beam, in-process) whose MC rollouts and P(True) judge both use the policy:
    two RunInference handlers, one engine built in the worker process, freed when the stage ends.
    Each model stage ends its progress line with its final counts."""
    import json
    import logging

    caplog.set_level(logging.INFO, logger="prefsynth")
    from pathlib import Path

    from prefsynth.pipelines import generate, label, prompts

    from helpers import write_params

    d = lambda name: str(tmp_path / name)  # noqa: E731
    base = {"seed": 3, "prompts": {"n_prompts": 30},
            "generate": {"n": 2, "max_new_tokens": 16, "split": "all", "max_prompts": 3},
            "label": {"mc_max_responses": 4, "methods": ["binary"], "judges": ["p_true"],
                      "mc": {"rollouts": 2, "max_new_tokens": 16}}}
    c = ["--params", write_params(tmp_path / "p.json", base), "--reports", d("reports")]
    prompts.main([*c, "--out", d("prompts"), "--dead", d("dp"), "--metrics", d("m1.json")])
    generate.main([*c, "--prompts", d("prompts"), "--policy", policy_dir, "--out", d("responses"),
                   "--dead", d("dg"), "--metrics", d("m2.json")])
    factory.release_backends(reset_counts=True)
    label.main([*c, "--prompts", d("prompts"), "--responses", d("responses"), "--policy", policy_dir,
                "--out", d("labels"), "--dead", d("dl"), "--metrics", d("m3.json"), "--plots", d("plots")])
    counters = json.loads(Path(d("m3.json")).read_text())["accounting"]["counters"]
    assert counters["mc_rollouts"] > 0 and counters["judge_items.p_true"] > 0  # both handlers ran
    assert factory.construction_count() == 1, dict(factory.constructions)
    assert not factory._backends  # the stage freed its engine when its pipeline ended
    lines = [r.getMessage() for r in caplog.records]
    assert any(l.startswith("[generate] 3/3 prompts (100%)") and "done in" in l for l in lines), lines
    assert any(l.startswith("[label] 4/4 responses (MC) (100%)") and "rollouts" in l for l in lines), lines
    assert any(l.startswith("[label] ") and "judge items" in l and "done in" in l for l in lines), lines
