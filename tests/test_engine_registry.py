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
