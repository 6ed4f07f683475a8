"""Scoring throughput: `TransformersBackend.score` with the lm_head over the continuation window only
(what it does on a large vocabulary or off the CPU) against the full-logits call (every prompt
position through lm_head and log-softmax), in one process, on the same items, as a ratio.

Items are what the label stage scores on a real model: a chat-template prompt plus the response so far
(~150-250 tokens) and a short continuation (a step, or a P(True) option). The model is
SmolLM2-135M-Instruct when it is here (`prefsynth real-model`), else a random-weight model of its
shape (config only: throughput does not depend on the weights).

    python benchmarks/scoring.py [--model DIR] [--items 64] [--batch-size 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def load(model_dir: str | None, batch_size: int):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from prefsynth.backends.transformers_backend import TransformersBackend

    cached = Path.home() / ".cache" / "prefsynth" / "smollm2-135m-instruct"
    path = model_dir or (str(cached) if (cached / "config.json").exists() else None)
    if path:
        return TransformersBackend(path, device="cpu", batch_size=batch_size), path
    torch.manual_seed(0)  # SmolLM2-135M's shape, random weights; a GPT-2 byte tokenizer stands in
    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                      tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg).eval()
    from prefsynth.tiny_policy import build_tokenizer

    tok = build_tokenizer()
    return TransformersBackend("random", model=model, tokenizer=tok, device="cpu", batch_size=batch_size), \
        "random SmolLM2-shaped Llama"


def items(k: int) -> tuple[list[str], list[str]]:
    head = ("<|im_start|>system\nYou are a careful calculator.<|im_end|>\n<|im_start|>user\nSam has 7 apples. "
            "Then Sam gets 5 more. How many apples does Sam have now?\nCompute it left to right, one operation "
            "per line, then write 'A: <answer>'.<|im_end|>\n<|im_start|>assistant\n7+5=12\nA: 12<|im_end|>\n"
            "<|im_start|>user\n")
    prompts, conts = [], []
    for i in range(k):
        a, b = 10 + i % 23, 3 + i % 7
        prompts.append(head + f"Ben has {a} marbles. Then Ben gives away {b}. How many marbles does Ben have "
                       "now?\nCompute it left to right, one operation per line, then write 'A: <answer>'."
                       "<|im_end|>\n<|im_start|>assistant\n" + ("Let me see.\n" * (i % 4)))
        conts.append(f"{a}-{b}={a - b}\n" if i % 2 else f"A: {a - b}")
    return prompts, conts


def main(argv=None) -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--items", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    backend, name = load(args.model, args.batch_size)
    prompts, conts = items(args.items)
    n_tok = sum(len(backend.tokenizer(p + c, add_special_tokens=False)["input_ids"]) for p, c in zip(prompts, conts))
    windowed_check = backend._takes_logits_to_keep

    def run(windowed: bool):
        backend._takes_logits_to_keep = windowed_check if windowed else (lambda: False)
        t0 = time.perf_counter()
        out = backend.score(prompts, conts)
        return time.perf_counter() - t0, out

    times = {"windowed": [], "full": []}
    outs = {}
    for _ in range(args.repeats):  # interleaved; the best time of each counts
        for mode in ("full", "windowed"):
            dt, outs[mode] = run(mode == "windowed")
            times[mode].append(dt)
    best = {k: min(v) for k, v in times.items()}
    diff = max(abs(a - b) for a, b in zip(outs["windowed"], outs["full"]))
    print(f"model: {name}; {args.items} items, {n_tok / args.items:.0f} tokens each on average, batch "
          f"{args.batch_size}, {args.threads} threads, best of {args.repeats}")
    print(f"  full logits      {best['full']:7.2f} s  ({args.items / best['full']:6.1f} items/s)")
    print(f"  windowed logits  {best['windowed']:7.2f} s  ({args.items / best['windowed']:6.1f} items/s)")
    print(f"  speed-up windowed / full: {best['full'] / best['windowed']:.2f}x; largest score difference {diff:.2e}")


if __name__ == "__main__":
    main()
