"""Build the configured backend, and find the model behind a run's policy directory."""

from __future__ import annotations

import json
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


def make_backend(cfg: PolicyConfig, model: str):
    if cfg.backend == "transformers":
        import torch

        from prefsynth.backends.transformers_backend import TransformersBackend

        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        return TransformersBackend(model, device=cfg.device, batch_size=cfg.batch_size, torch_dtype=cfg.dtype)
    if cfg.backend == "vllm":
        from prefsynth.backends.vllm_backend import VLLMBackend

        return VLLMBackend(model, dtype=cfg.dtype or "auto", gpu_memory_utilization=cfg.gpu_memory_utilization,
                           max_model_len=cfg.max_model_len, top_logprobs=cfg.top_logprobs)
    if cfg.backend == "openai":
        from prefsynth.backends.openai_backend import OpenAIBackend

        if not cfg.base_url:
            raise ValueError("params.yaml: policy.base_url is required for policy.backend=openai")
        return OpenAIBackend(cfg.base_url, model, api_key_env=cfg.api_key_env, max_concurrency=cfg.max_concurrency,
                             timeout_s=cfg.timeout_s, max_retries=cfg.max_retries, top_logprobs=cfg.top_logprobs,
                             vocab_size=cfg.vocab_size)
    raise ValueError(f"params.yaml: policy.backend must be transformers, vllm or openai, got {cfg.backend!r}")
