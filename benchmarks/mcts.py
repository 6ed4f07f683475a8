"""MCTS throughput: trees searched together (one model call expands a leaf of every tree) vs one
tree at a time (the MCTS-DPO reference design), at identical settings on the same policy.

    python benchmarks/mcts.py [--policy models/policy-0] [--trees 64] [--iterations 8]
    python benchmarks/mcts.py --real-model [--trees 16] [--iterations 4]   # SmolLM2-135M-Instruct

Prints nodes expanded per second for both, their ratio (goal >= 5x), and model calls per node; and the
batched search again with the backend's `batch_invariant: false` (one padded width per call).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import torch  # noqa: E402

from prefsynth.backends.transformers_backend import TransformersBackend  # noqa: E402
from prefsynth.tasks import arith  # noqa: E402
from prefsynth.transforms.mcts import MCTSConfig, new_tree, node_rows, search  # noqa: E402
from prefsynth.transforms.mcts_beam import policy_p_true, task_hooks  # noqa: E402


def run(backend, problems, per_batch: int, cfg: MCTSConfig) -> tuple[float, int, int]:
    calls = {"n": 0}

    def on_call(kind, n, n_tokens=0):
        calls["n"] += 1

    nodes = 0
    t0 = time.perf_counter()
    for i in range(0, len(problems), per_batch):
        trees = [new_tree(f"p{j}", p.prompt, str(p.answer), "bench")
                 for j, p in enumerate(problems[i:i + per_batch], start=i)]
        search(trees, backend, policy_p_true(backend, "arith"), task_hooks("arith"), cfg, seed=1, on_call=on_call)
        nodes += sum(len(node_rows(t)) - 1 for t in trees)  # expanded nodes (all but the roots)
    return time.perf_counter() - t0, nodes, calls["n"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="models/policy-0")
    ap.add_argument("--trees", type=int, default=64)
    ap.add_argument("--iterations", type=int, default=8)
    ap.add_argument("--breadth", type=int, default=3)
    ap.add_argument("--real-model", action="store_true", help="SmolLM2-135M-Instruct (converted once into "
                    "~/.cache/prefsynth) instead of --policy")
    args = ap.parse_args()
    torch.set_num_threads(2)
    policy = args.policy
    if args.real_model:
        from prefsynth import real_model

        policy = str(real_model.convert())
    elif not Path(policy, "config.json").exists():
        from helpers import tiny_random_policy

        policy = tiny_random_policy(Path("/tmp/prefsynth-bench-mcts/policy-0"), n_embd=64)
        print(f"(no trained policy at {args.policy}: using a random tiny policy)")
    backend = TransformersBackend(policy, device="cpu", batch_size=1024)
    per_call = TransformersBackend(policy, device="cpu", batch_size=1024, model=backend.model,
                                   tokenizer=backend.tokenizer, batch_invariant=False)
    problems = arith.generate_problems(arith.ArithConfig(), 11, "bench-mcts", 0, args.trees)
    cfg = MCTSConfig(iterations=args.iterations, breadth=args.breadth)
    run(backend, problems[:4], 4, cfg)  # warm-up
    batched = run(backend, problems, len(problems), cfg)
    batched_per_call = run(per_call, problems, len(problems), cfg)
    single = run(backend, problems, 1, cfg)
    print(f"\n{args.trees} trees, {args.iterations} iterations, breadth {args.breadth}, policy={policy}")
    print(f"{'mode':<26}{'seconds':>9}{'nodes':>8}{'nodes/s':>10}{'model calls':>13}{'calls/node':>12}")
    for name, (s, n, c) in (("batched across trees", batched), ("  batch_invariant: false", batched_per_call),
                            ("one tree at a time", single)):
        print(f"{name:<26}{s:>9.2f}{n:>8}{n / s:>10.1f}{c:>13}{c / max(n, 1):>12.3f}")
    print(f"speed-up (nodes/s, batched / one at a time): {(batched[1] / batched[0]) / (single[1] / single[0]):.1f}x")


if __name__ == "__main__":
    main()
