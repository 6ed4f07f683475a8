"""Ablations of round 1 as DVC experiments; prints held-out accuracy per variant.

Each variant is `dvc exp run -S <overrides>` on the embedded default: DVC reruns only the stages
whose params changed (train@1 and evaluate@1, or prune@1 onwards for the UPO switch) and keeps
each experiment's metrics, so `dvc exp show` has the same table afterwards.

    python benchmarks/ablations.py                 # every variant
    python benchmarks/ablations.py --only step response

Run from the repository root after a `dvc repro` (the shared stages come from the cache).
Step-level vs response-level pairs are compared at an equal pair count (`train.max_pairs`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

EQUAL_PAIRS = 2000  # pair count for the step-vs-response comparison (both views have more)

VARIANTS = {
    "default": [],
    "response": ["train.views=[response]", f"train.max_pairs={EQUAL_PAIRS}"],
    "step": ["train.views=[step]", f"train.max_pairs={EQUAL_PAIRS}"],
    "no_upo": ["selection.upo.enabled=false"],
    "ipo": ["train.loss_type=[ipo]"],
    "rpo": ["train.loss_type=[sigmoid,sft]"],
    "verifier_only": ["train.label_sources=[verifier]"],
}


def dvc(*args: str) -> str:
    exe = Path(sys.executable).parent / "dvc"
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout


def run_variant(name: str, overrides: list[str]) -> dict:
    t0 = time.perf_counter()
    args = ["exp", "run", "--name", f"ablation-{name}-{int(time.time())}"]
    for o in overrides:
        args += ["-S", o]
    params = Path("params.yaml").read_text()
    try:
        dvc(*args)
    finally:  # `exp run -S` edits params.yaml in the workspace; each variant starts from the original
        Path("params.yaml").write_text(params)
    ev = json.loads(Path("metrics/round-1/evaluate.json").read_text())["policies"]
    train = json.loads(Path("metrics/round-1/train.json").read_text())
    p0, p1 = ev["policy-0"], ev["policy-1"]
    return {"variant": name, "pairs": train.get("pairs"), "greedy_0": p0["greedy_accuracy"],
            "greedy_1": p1["greedy_accuracy"], "delta_greedy": p1["greedy_accuracy"] - p0["greedy_accuracy"],
            "maj_1": next((v for k, v in p1.items() if k.startswith("maj_at_")), None),
            "per_step_1": p1["per_step_accuracy"], "seconds": round(time.perf_counter() - t0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", choices=sorted(VARIANTS), help="variants to run (default: all)")
    args = ap.parse_args()
    rows = []
    for name in args.only or VARIANTS:
        rows.append(run_variant(name, VARIANTS[name]))
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'variant':<14}{'pairs':>7}{'greedy p0':>11}{'greedy p1':>11}{'delta':>8}{'maj@k p1':>10}"
          f"{'per-step p1':>13}{'s':>6}")
    for r in rows:
        print(f"{r['variant']:<14}{r['pairs'] or 0:>7}{r['greedy_0']:>11.3f}{r['greedy_1']:>11.3f}"
              f"{r['delta_greedy']:>+8.3f}{(r['maj_1'] or 0):>10.3f}{(r['per_step_1'] or 0):>13.3f}{r['seconds']:>6}")


if __name__ == "__main__":
    main()
