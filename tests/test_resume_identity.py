"""What a resume folder may be reused for: only the same model files, backend settings, sampling and
seed; finished prompts of an unfinished batch are kept; failed prompts are asked again."""

import os

import pytest

from prefsynth.backends.base import Completion, SamplingParams
from prefsynth.backends.openai_backend import GenerationFailure
from prefsynth.config import PolicyConfig
from prefsynth.transforms.generate import GenerateBatch

from helpers import tiny_random_policy

SP = SamplingParams(n=2, temperature=0.8, max_new_tokens=8)
BATCH = [{"prompt_id": f"p{i}", "prompt": f"Q: {i}+1=?\n", "task": "arith"} for i in range(4)]


class FakeBackend:
    """Answers every prompt; reports each as it finishes; can 'crash' after `crash_after` prompts."""

    def __init__(self, crash_after=None, fail=()):
        self.sent: list[list[str]] = []
        self.crash_after, self.fail = crash_after, set(fail)

    def generate(self, prompts, sampling, seeds=None, on_result=None):
        self.sent.append(list(prompts))
        out = []
        for i, p in enumerate(prompts):
            if self.crash_after is not None and i == self.crash_after:
                raise RuntimeError("killed")
            r = GenerationFailure("http_500", "boom", "{}") if p in self.fail else \
                [Completion(p + "A", [1], [-0.25], "stop") for _ in range(sampling.n)]
            if on_result:
                on_result(i, r)
            out.append(r)
        return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return tiny_random_policy(root / "a"), tiny_random_policy(root / "b", seed=1)


def _handler(model, tmp_path, policy=None, sampling=SP, seed=1):
    return GenerateBatch(policy or PolicyConfig(), model, sampling, seed, resume_dir=str(tmp_path / "resume"))


def test_the_key_depends_on_model_files_backend_settings_sampling_and_seed(models, tmp_path):
    a, b = models
    ids = [r["prompt_id"] for r in BATCH]
    key = _handler(a, tmp_path).checkpoints.key(ids)
    assert _handler(a, tmp_path).checkpoints.key(ids) == key
    # how the server is reached does not change what it returns
    assert _handler(a, tmp_path, PolicyConfig(max_concurrency=2, timeout_s=5, max_retries=9)).checkpoints.key(ids) == key
    different = [
        _handler(b, tmp_path),
        _handler(a, tmp_path, sampling=SamplingParams(n=2, temperature=0.7, max_new_tokens=8)),
        _handler(a, tmp_path, sampling=SamplingParams(n=3, temperature=0.8, max_new_tokens=8)),
        _handler(a, tmp_path, seed=2),
        _handler(a, tmp_path, PolicyConfig(dtype="bfloat16")),
        _handler("served-name", tmp_path, PolicyConfig(backend="openai", base_url="http://h:1/v1")),
    ]
    assert len({h.checkpoints.key(ids) for h in different} | {key}) == len(different) + 1
    # the same path with retrained weights (new mtime, same sizes) is another model
    weights = next(f for f in os.listdir(a) if f.endswith(".safetensors"))
    st = os.stat(os.path.join(a, weights))
    os.utime(os.path.join(a, weights), ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert _handler(a, tmp_path).checkpoints.key(ids) != key


def test_a_finished_batch_is_reused_only_by_the_same_run(models, tmp_path):
    a, b = models
    first = FakeBackend()
    out1 = _handler(a, tmp_path)(BATCH, first)
    again = FakeBackend()
    out2 = _handler(a, tmp_path)(BATCH, again)
    assert again.sent == [] and [r.inference for r in out2] == [r.inference for r in out1]
    other = FakeBackend()
    _handler(b, tmp_path)(BATCH, other)  # another model: nothing reused
    assert len(other.sent) == 1 and len(other.sent[0]) == 4


def test_finished_prompts_of_a_crashed_batch_are_kept_and_failures_asked_again(models, tmp_path):
    a, _ = models
    with pytest.raises(RuntimeError, match="killed"):
        _handler(a, tmp_path)(BATCH, FakeBackend(crash_after=2))
    assert len(list((tmp_path / "resume").glob("prompt-*.json"))) == 2
    flaky = FakeBackend(fail={BATCH[3]["prompt"]})
    out = _handler(a, tmp_path)(BATCH, flaky)
    assert flaky.sent == [[BATCH[2]["prompt"], BATCH[3]["prompt"]]]  # only the unfinished prompts
    assert isinstance(out[3].inference, GenerationFailure)
    assert list((tmp_path / "resume").glob("prompt-*.json")) == []  # folded into the batch file
    # the batch file keeps answers, not the failure: a re-run (server back) asks for that one only
    healthy = FakeBackend()
    out = _handler(a, tmp_path)(BATCH, healthy)
    assert healthy.sent == [[BATCH[3]["prompt"]]] and all(isinstance(r.inference, list) for r in out)
    done = FakeBackend()
    _handler(a, tmp_path)(BATCH, done)
    assert done.sent == []
