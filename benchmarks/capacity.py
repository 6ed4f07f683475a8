"""Capacity curve of policy-0: its validation accuracy against parameters and training steps.

Issue 17 asks whether the embedded world or the method limits the rounds' gain. One round of
preference training lifts the tiny policy ~+5 points, and 101 more SFT steps on gold solutions lift it
more (`benchmarks/ablations.py` sft_gold), so a first question is how far policy-0 itself is from what
its size can reach. Each point is the project's own `dvc repro bootstrap` with `bootstrap.*` overridden
(params.yaml is put back afterwards); the stage measures the policy on the validation split it never
trains on. `--round` also reproduces round 1 (`evaluate@1`) at each point, i.e. the whole pipeline on
that policy-0 (~10 min a point on 2 cores), for its gain over that policy-0.

    python benchmarks/capacity.py --points 2x64x1200 2x64x2400 2x64x4800 4x128x2400
    python benchmarks/capacity.py --points 2x64x2400 --seeds 3            # the seed spread at one point
    python benchmarks/capacity.py --points 2x64x4800 --round              # + round 1 on that policy-0

A point is LAYERSxWIDTHxSTEPS (heads stay bootstrap.n_head). Seeds move `bootstrap.seed` (weights and
batch order; the training problems and the splits stay). Results go to benchmarks/out/capacity.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablations import apply_overrides, dvc, mean_ci  # noqa: E402


def point_overrides(point: str) -> list[str]:
    n_layer, n_embd, steps = (int(x) for x in point.lower().split("x"))
    return [f"bootstrap.n_layer={n_layer}", f"bootstrap.n_embd={n_embd}", f"bootstrap.max_steps={steps}"]


def run_point(project: Path, point: str, seed: int, with_round: bool) -> dict:
    path = project / "params.yaml"
    original = path.read_text()
    t0 = time.perf_counter()
    try:
        params = apply_overrides(yaml.safe_load(original), [*point_overrides(point), f"bootstrap.seed={seed}"])
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        dvc(project, "repro", "evaluate@1" if with_round else "bootstrap")
        boot = json.loads((project / "metrics/bootstrap.json").read_text())
        ev = json.loads((project / "metrics/round-1/evaluate.json").read_text()) if with_round else None
    finally:
        path.write_text(original)
    row = {"point": point, "seed": seed, "n_params": boot["n_params"], "steps": boot["train_steps"],
           "train_seconds": boot["train_seconds"], "greedy_accuracy": boot["greedy_accuracy"],
           "sample_accuracy": boot["sample_accuracy"], "per_step_accuracy": boot["per_step_accuracy"],
           "self_eval_auroc": boot.get("self_eval_auroc"), "seconds": round(time.perf_counter() - t0, 1)}
    if ev is not None:
        for split, block in (("validation", ev["validation"]["policies"]), ("test", ev["policies"])):
            row[split] = {"policy_0": block["policy-0"]["greedy_accuracy"],
                          "policy_1": block["policy-1"]["greedy_accuracy"],
                          "delta": block["policy-1"]["paired_delta_vs_first"]["greedy_accuracy"]["delta"]}
    return row


def summarise(rows: list[dict]) -> dict:
    out: dict[str, dict] = {}
    for point in dict.fromkeys(r["point"] for r in rows):
        got = [r for r in rows if r["point"] == point]
        res = {"n_params": got[0]["n_params"], "steps": got[0]["steps"],
               "train_seconds": mean_ci([r["train_seconds"] for r in got])["mean"],
               "greedy_accuracy": mean_ci([r["greedy_accuracy"] for r in got]),
               "sample_accuracy": mean_ci([r["sample_accuracy"] for r in got])}
        if all("validation" in r for r in got):
            res["round1_delta_validation"] = mean_ci([r["validation"]["delta"] for r in got])
        out[point] = res
    return out


def table(summary: dict) -> str:
    def f(x):
        if x["ci95"] is None:
            return f"{x['mean']:.3f}"
        return f"{x['mean']:.3f} ± {(x['ci95'][1] - x['ci95'][0]) / 2:.3f}"
    lines = ["policy-0 on validation (n 311 greedy, 200 x 8 samples); mean ± 95% interval over seeds",
             f"{'point':<14}{'params':>9}{'steps':>7}{'train s':>9}{'greedy':>16}{'sample acc':>16}{'round-1 Δ':>12}"]
    for point, r in summary.items():
        d = r.get("round1_delta_validation")
        lines.append(f"{point:<14}{r['n_params']:>9}{r['steps']:>7}{r['train_seconds']:>9.0f}"
                     f"{f(r['greedy_accuracy']):>16}{f(r['sample_accuracy']):>16}"
                     f"{'-' if d is None else format(100 * d['mean'], '+.1f'):>12}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", nargs="+", default=["2x64x1200", "2x64x2400", "2x64x4800", "4x128x2400"],
                    help="LAYERSxWIDTHxSTEPS points of policy-0")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--first-seed", type=int, default=1234, help="1234 is the global seed: the committed policy-0")
    ap.add_argument("--round", action="store_true", help="also reproduce round 1 at each point (its gain)")
    ap.add_argument("--project", default=".")
    ap.add_argument("--out", default="benchmarks/out/capacity.json")
    ap.add_argument("--summarise", metavar="FILE", help="only print the table of a saved run")
    args = ap.parse_args(argv)
    if args.summarise:
        print(table(summarise(json.loads(Path(args.summarise).read_text())["rows"])))
        return
    project = Path(args.project).resolve()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, t0 = [], time.perf_counter()
    for point in args.points:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            rows.append(run_point(project, point, seed, args.round))
            print(json.dumps(rows[-1]), flush=True)
            out.write_text(json.dumps({"rows": rows, "summary": summarise(rows),
                                       "wall_s": round(time.perf_counter() - t0)}, indent=2))
    print()
    print(table(summarise(rows)))
    print(f"wall time {round(time.perf_counter() - t0)} s")


if __name__ == "__main__":
    main()
