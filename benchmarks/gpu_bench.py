"""GPU benchmark that fits one 10-minute run on a single-GPU machine with nothing to download.

    python benchmarks/gpu_bench.py [--out gpu_bench.json] [--quick] [--device cuda|cpu] [--budget-s 540]
    bash benchmarks/gpu.sh            # the same, with a hard timeout, writing to $OUT when set

Needs only PyTorch + transformers (accelerate/peft unused); never imports Beam, TRL, vLLM or datasets:
from prefsynth it imports `prefsynth.backends.transformers_backend` (and what that imports) only.

Models are built from config dicts written here (the Qwen2.5-1.5B and SmolLM2-135M architectures;
`tiny` for a CPU check) with random weights, in bf16 where the device supports it, so no Hub access
is needed; throughput does not depend on the weights' values. (Random weights rarely emit EOS, so
every row runs to max_new_tokens on both sides.)

Sections, each under its own time limit (SIGALRM) and written to the JSON as soon as it ends, so a
run cut short still leaves what it measured:
  generate/<model>/b<batch>: prefsynth TransformersBackend.generate vs `model.generate`, same prompts
      (fixed-length random token prompts), sampling T=0.8 top_p=1 (top_k off), same max_new_tokens;
      tokens/s of each and the ratio backend / model.generate;
  train/<model>: a few TRL-free training steps (AdamW, causal-LM loss, bf16 autocast over fp32
      master weights), tokens/s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Architectures as AutoConfig would read them from the Hub (values from the models' config.json).
CONFIGS = {
    "qwen2.5-1.5b": {
        "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960,
        "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2, "hidden_act": "silu",
        "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "tie_word_embeddings": True, "attention_dropout": 0.0, "use_sliding_window": False,
        "bos_token_id": 151643, "eos_token_id": 151643,
    },
    "smollm2-135m": {
        "model_type": "llama", "vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
        "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
        "hidden_act": "silu", "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
        "tie_word_embeddings": True, "attention_bias": False, "mlp_bias": False,
        "bos_token_id": 1, "eos_token_id": 2,
    },
    "tiny": {  # a CPU check of the script itself
        "model_type": "llama", "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 32,
        "hidden_act": "silu", "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2,
    },
}


class SectionTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise SectionTimeout in the main thread after `seconds` (between CUDA calls)."""
    if seconds <= 0:
        raise SectionTimeout("no time left in the budget")

    def _alarm(signum, frame):
        raise SectionTimeout(f"section took more than {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def build_tokenizer(vocab_size: int, eos_id: int):
    """A word-level tokenizer over the whole vocabulary ("w<id>" per token): prompts encode to known
    ids and any generated id decodes; no files, no Hub."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(vocab_size)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="w0", eos_token=f"w{eos_id}",
                                   pad_token=f"w{eos_id}")


def build_model(name: str, device, dtype):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = dict(CONFIGS[name])
    cfg = AutoConfig.for_model(spec.pop("model_type"), **spec)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return model.eval()


def sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def random_prompts(tok, vocab: int, batch: int, length: int, seed: int) -> list[str]:
    import random

    rng = random.Random(seed)
    # ids >= 3 avoid BOS/EOS/unk; prompts of length/2 .. length words (mixed lengths, as real prompts:
    # the per-length width buckets of batch_invariant then cost what they cost in the stages)
    return [" ".join(f"w{rng.randrange(3, vocab)}" for _ in range(length - rng.randrange(max(1, length // 2))))
            for _ in range(batch)]


def bench_generate(name, model, tok, device, batch, prompt_len, max_new, repeats) -> dict:
    import torch
    from transformers import GenerationConfig

    from prefsynth.backends import SamplingParams
    from prefsynth.backends.transformers_backend import TransformersBackend

    vocab = model.config.vocab_size
    backend = TransformersBackend("(built in memory)", device=str(device), batch_size=max(batch, 8),
                                  model=model, tokenizer=tok)
    per_call = TransformersBackend("(built in memory)", device=str(device), batch_size=max(batch, 8),
                                   model=model, tokenizer=tok, batch_invariant=False)
    backend.max_positions = per_call.max_positions = prompt_len + max_new + 8
    prompts = random_prompts(tok, vocab, batch, prompt_len, seed=batch)
    sp = SamplingParams(n=1, temperature=0.8, top_p=1.0, max_new_tokens=max_new)
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    gcfg = GenerationConfig(do_sample=True, temperature=0.8, top_p=1.0, top_k=None, max_new_tokens=max_new,
                            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)

    def run_backend():
        out = backend.generate(prompts, sp, seeds=list(range(batch)))
        sync(device)
        return sum(c.n_tokens for g in out for c in g)

    def run_per_call():
        out = per_call.generate(prompts, sp, seeds=list(range(batch)))
        sync(device)
        return sum(c.n_tokens for g in out for c in g)

    def run_hf():
        with torch.no_grad():
            out = model.generate(**enc, generation_config=gcfg)
        sync(device)
        eos = tok.eos_token_id
        return sum(r.index(eos) if eos in r else len(r) for r in out[:, enc["input_ids"].shape[1]:].tolist())

    # warm-up both (kernels, allocator), then best of `repeats`, interleaved
    w = min(2, batch)
    backend.generate(prompts[:w], SamplingParams(n=1, max_new_tokens=4), seeds=list(range(w)))
    with torch.no_grad():
        model.generate(**{k: v[:w] for k, v in enc.items()},
                       generation_config=GenerationConfig(do_sample=True, max_new_tokens=4, top_k=None,
                                                          pad_token_id=tok.pad_token_id))
    best = {"backend": None, "per_call": None, "hf": None}
    tokens = {}
    for _ in range(repeats):
        for key, fn in (("backend", run_backend), ("per_call", run_per_call), ("hf", run_hf)):
            t0 = time.perf_counter()
            tokens[key] = fn()
            dt = time.perf_counter() - t0
            best[key] = dt if best[key] is None else min(best[key], dt)
    res = {"batch": batch, "prompt_tokens": prompt_len, "max_new_tokens": max_new,
           "backend_s": round(best["backend"], 3), "backend_tokens": tokens["backend"],
           "backend_tokens_per_s": round(tokens["backend"] / best["backend"], 1),
           "backend_per_call_tokens_per_s": round(tokens["per_call"] / best["per_call"], 1),
           "hf_s": round(best["hf"], 3), "hf_tokens": tokens["hf"],
           "hf_tokens_per_s": round(tokens["hf"] / best["hf"], 1)}
    res["ratio_backend_vs_hf"] = round(res["backend_tokens_per_s"] / res["hf_tokens_per_s"], 3)
    res["ratio_backend_per_call_vs_hf"] = round(res["backend_per_call_tokens_per_s"] / res["hf_tokens_per_s"], 3)
    if torch.device(device).type == "cuda":
        res["max_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return res


def bench_train(name, device, dtype, batch, seq_len, steps) -> dict:
    import torch

    model = build_model(name, device, torch.float32).train()  # fp32 master weights
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=torch.device(device).type == "cuda")
    vocab = model.config.vocab_size
    g = torch.Generator(device="cpu").manual_seed(0)
    use_autocast = dtype in (torch.bfloat16, torch.float16)
    losses, times = [], []
    for step in range(steps + 2):  # 2 warm-up steps
        ids = torch.randint(3, vocab, (batch, seq_len), generator=g).to(device)
        sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device_type=torch.device(device).type, dtype=dtype, enabled=use_autocast):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        if step >= 2:
            times.append(time.perf_counter() - t0)
            losses.append(round(float(loss.detach()), 4))
    res = {"batch": batch, "seq_len": seq_len, "steps": steps, "autocast_dtype": str(dtype).replace("torch.", ""),
           "step_s": round(sum(times) / len(times), 4),
           "tokens_per_s": round(batch * seq_len * len(times) / sum(times), 1), "losses": losses,
           "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1)}
    if torch.device(device).type == "cuda":
        res["max_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    del model, opt
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu_bench.json")
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run (the CPU check uses it)")
    ap.add_argument("--models", default=None, help="comma list of " + ", ".join(CONFIGS))
    ap.add_argument("--batches", default=None, help="comma list of generate batch sizes (default 1,64,256)")
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--prompt-tokens", type=int, default=None)
    ap.add_argument("--budget-s", type=float, default=540.0, help="stop starting sections after this many seconds")
    ap.add_argument("--section-s", type=float, default=150.0, help="time limit of one section")
    args = ap.parse_args(argv)

    import torch
    import transformers

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    on_gpu = device.type == "cuda"
    dtype = torch.bfloat16 if on_gpu and torch.cuda.is_bf16_supported() else (
        torch.float16 if on_gpu else torch.float32)
    quick = args.quick
    models = (args.models.split(",") if args.models else
              (["tiny"] if quick and not on_gpu else ["smollm2-135m"] if quick else ["smollm2-135m", "qwen2.5-1.5b"]))
    batches = [int(b) for b in args.batches.split(",")] if args.batches else ([1, 8] if quick else [1, 64, 256])
    max_new = args.max_new_tokens or (8 if quick else 128)
    prompt_len = args.prompt_tokens or (16 if quick else 128)
    repeats = 1 if quick else 2
    t_start = time.monotonic()
    report = {"device": str(device), "gpu": torch.cuda.get_device_name(0) if on_gpu else None,
              "dtype": str(dtype).replace("torch.", ""), "torch": torch.__version__,
              "transformers": transformers.__version__, "python": platform.python_version(),
              "quick": quick, "sections": {}, "errors": {}}
    out = Path(args.out)

    def save():
        report["elapsed_s"] = round(time.monotonic() - t_start, 1)
        report["imported_beam"] = "apache_beam" in sys.modules
        report["imported_trl_or_vllm"] = [m for m in ("trl", "vllm", "datasets") if m in sys.modules]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1))

    def section(key, fn):
        left = args.budget_s - (time.monotonic() - t_start)
        try:
            with time_limit(min(args.section_s, left)):
                report["sections"][key] = fn()
            print(f"[gpu_bench] {key}: {json.dumps(report['sections'][key])}", flush=True)
        except Exception as err:  # noqa: BLE001 - one section's failure is recorded, the run goes on
            report["errors"][key] = f"{type(err).__name__}: {err}"
            print(f"[gpu_bench] {key}: FAILED {type(err).__name__}: {err}", flush=True)
            if not isinstance(err, SectionTimeout):
                traceback.print_exc()
        finally:
            if on_gpu:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            save()

    save()
    for name in models:
        holder = {}

        def load(name=name):
            t0 = time.perf_counter()
            holder["model"] = build_model(name, device, dtype)
            cfg = holder["model"].config
            holder["tok"] = build_tokenizer(cfg.vocab_size, cfg.eos_token_id)
            sync(device)
            return {"build_s": round(time.perf_counter() - t0, 2),
                    "params_m": round(sum(p.numel() for p in holder["model"].parameters()) / 1e6, 1)}

        section(f"build/{name}", load)
        if "model" not in holder:
            continue
        for b in batches:
            section(f"generate/{name}/b{b}", lambda b=b, name=name: bench_generate(
                name, holder["model"], holder["tok"], device, b, prompt_len, max_new, repeats))
        holder.clear()
        train_batch, train_len = (2, 32) if quick else ((8, 512) if name != "qwen2.5-1.5b" else (4, 512))
        section(f"train/{name}", lambda name=name: bench_train(name, device, dtype, train_batch, train_len,
                                                               2 if quick else 5))
    report["done"] = True
    save()
    print(f"[gpu_bench] wrote {out} in {report['elapsed_s']} s; {len(report['errors'])} section(s) failed")
    return 0 if not report["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
