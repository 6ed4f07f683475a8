"""Scaling: how cost grows with work. Wall time of the cheap stages at 1x, 2x and 4x a base record
count (printed as ratios to the 1x time: 2.0 and 4.0 are linear), and MCTS nodes/s by trees per
batch (printed as ratios to one tree at a time) on a tiny random policy.

    python benchmarks/scaling.py [--base 25000] [--trees 8] [--iterations 2] [--batches 1,2,8]

- prompts stage: `prompts.main` on synthetic GSM8K-style JSONL (1 worker, after a warm-up run that
  pays the imports and set-up once), and the stage's own core without Beam beside it;
- candidates: the candidates stage's per-prompt core (records_throughput.candidates_core), 8 responses a prompt;
- MCTS: benchmarks/mcts.py's `run` (search over trees batched together) at 1, 2, 8 ... trees per
  batch, the same problems and settings, on tests/helpers.py's tiny random policy (CPU).
The default run takes about 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import records_throughput as rt  # noqa: E402

FACTORS = (1, 2, 4)


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def stage_scaling(base: int, work: Path) -> list[tuple[str, list[tuple[int, float]]]]:
    """(name, [(records, seconds)]) for the prompts stage, its own core, and the candidates core."""
    warm = work / "warm.jsonl"
    rt.make_input(warm, 2000)
    rt.run_stage(warm, work / "warm", 1)  # imports, Beam and GX set-up: paid once, not in the rows
    stage, core, candidates = [], [], []
    for f in FACTORS:
        n = base * f
        src = work / f"in{n}.jsonl"
        rt.make_input(src, n)
        wall, *_ = rt.run_stage(src, work / f"stage{n}", 1)
        stage.append((n, wall))
        t0 = time.perf_counter()
        rt.plain_same_core(src, work / f"core{n}")
        core.append((n, time.perf_counter() - t0))
        s, count, _ = rt.candidates_core(max(1, n // 8))
        candidates.append((count, s))
    return [("prompts stage, 1 worker", stage), ("prompts: stage's own core", core),
            ("candidates core (responses in)", candidates)]


def mcts_scaling(trees: int, iterations: int, breadth: int, batches: list[int]) -> list[tuple[int, float, int, int]]:
    """[(trees per batch, seconds, nodes, model calls)] on the tiny random policy."""
    import torch

    bench = _load("bench_mcts", HERE / "mcts.py")  # its sys.path has tests/ for helpers
    from helpers import tiny_random_policy

    from prefsynth.backends.transformers_backend import TransformersBackend
    from prefsynth.tasks import arith
    from prefsynth.transforms.mcts import MCTSConfig

    torch.set_num_threads(2)
    policy = tiny_random_policy(Path(tempfile.mkdtemp(prefix="bench-scaling-policy-")), n_embd=32)
    backend = TransformersBackend(policy, device="cpu", batch_size=1024)
    problems = arith.generate_problems(arith.ArithConfig(), 11, "bench-scaling", 0, trees)
    cfg = MCTSConfig(iterations=iterations, breadth=breadth)
    for b in sorted(set(batches))[:2]:  # warm-up at the first batch sizes (lazy set-up is not in the rows)
        bench.run(backend, problems[:b], b, cfg)
    return [(b, *bench.run(backend, problems, b, cfg)) for b in batches]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=int, default=25_000, help="records at 1x (stages run at 1x, 2x, 4x)")
    ap.add_argument("--trees", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--breadth", type=int, default=3)
    ap.add_argument("--batches", default="1,2,8", help="trees per batch for the MCTS rows")
    ap.add_argument("--skip-mcts", action="store_true")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-scaling-"))

    rows = stage_scaling(args.base, work)
    print(f"\nstage wall time at {', '.join(f'{f}x' for f in FACTORS)} {args.base} records "
          "(ratio to 1x; linear = the factor)")
    print(f"{'run':<30}" + "".join(f"{f'{f}x s':>9}" for f in FACTORS) + "".join(f"{f'{f}x/1x':>8}" for f in FACTORS[1:])
          + f"{'rec/s at 4x':>13}")
    for name, pts in rows:
        t1 = pts[0][1]
        print(f"{name:<30}" + "".join(f"{s:>9.2f}" for _, s in pts) + "".join(f"{s / t1:>8.2f}" for _, s in pts[1:])
              + f"{pts[-1][0] / pts[-1][1]:>13.0f}")

    if not args.skip_mcts:
        batches = [int(b) for b in args.batches.split(",") if b]
        res = mcts_scaling(args.trees, args.iterations, args.breadth, batches)
        print(f"\nMCTS: {args.trees} trees, {args.iterations} iterations, breadth {args.breadth}, tiny random policy "
              "(nodes/s ratio to the first row)")
        print(f"{'trees/batch':>12}{'seconds':>9}{'nodes':>8}{'nodes/s':>10}{'calls/node':>12}{'vs first':>10}")
        first = res[0][2] / res[0][1]
        for b, s, n, c in res:
            print(f"{b:>12}{s:>9.2f}{n:>8}{n / s:>10.1f}{c / max(n, 1):>12.3f}{(n / s) / first:>9.2f}x")


if __name__ == "__main__":
    main()
