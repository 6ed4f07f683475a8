"""compare: accuracy differences between runs, paired by prompt, over seeds and prompts (evaluate's outcomes).

Every evaluate stage writes `metrics/round-N/outcomes.json`: each policy's per-prompt outcomes on the
validation and test splits. This command pairs two sets of such files, the i-th of A with the i-th of B
(one file per training seed), prompt by prompt, and prints A − B per split with the 95% interval over
seeds *and* prompts (prefsynth/intervals.py; one file each: the evaluate stage's paired interval):

    prefsynth compare metrics/round-1/outcomes.json                      # policy-1 − policy-0, one run
    prefsynth compare runA/s1.json runA/s2.json runA/s3.json \\
        --against runB/s1.json runB/s2.json runB/s3.json                 # variant A − variant B, 3 seeds
    prefsynth compare s1.json s2.json s3.json --policy policy-3 --against-policy policy-1   # round 3 − round 1

Choose on validation; read test once. Files of a pair must score the same prompts (the same prompts stage
and evaluate.max_prompts), or the command stops and names them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from prefsynth.intervals import differences, seeds_and_prompts_ci


def load_outcomes(path: str) -> dict:
    """One evaluate stage's outcomes.json, checked for the fields this command reads."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no outcomes file {path} (the evaluate stage writes "
                                f"metrics/round-N/outcomes.json)")
    data = json.loads(p.read_text())
    for field in ("baseline", "policies", "splits"):
        if field not in data:
            raise ValueError(f"{path} has no {field!r} field: not an evaluate outcomes.json")
    return data


def pick(data: dict, path: str, split: str, policy: str | None, metric: str) -> tuple[list[str], str]:
    """(prompt ids, outcome string) of `policy` (None: the last policy evaluated) on `split`."""
    name = policy or data["policies"][-1]
    if split not in data["splits"]:
        raise ValueError(f"{path} has no {split!r} split (it has {sorted(data['splits'])})")
    block = data["splits"][split]
    if name not in block["policies"]:
        raise ValueError(f"{path} has no policy {name!r} (it has {sorted(block['policies'])})")
    if metric not in block["policies"][name]:
        raise ValueError(f"{path}: {name} has no per-prompt {metric!r} (it has "
                         f"{sorted(block['policies'][name])})")
    bits = block["policies"][name][metric]
    if len(bits) != len(block["prompt_ids"]) or set(bits) - {"0", "1"}:
        raise ValueError(f"{path}: {name}'s {metric} on {split} is not one '0'/'1' per prompt id")
    return block["prompt_ids"], bits


def compare(a_paths: list[str], b_paths: list[str] | None, policy: str | None, against_policy: str | None,
            metric: str = "greedy_accuracy", splits: tuple[str, ...] = ("validation", "test")) -> dict:
    """A − B per split: the mean difference with its 95% interval over seeds and prompts, and each side's
    accuracy per seed. Without `b_paths` B is `against_policy` (default: the baseline) in the same files."""
    b_paths = b_paths or a_paths
    if len(a_paths) != len(b_paths):
        raise ValueError(f"{len(a_paths)} files against {len(b_paths)}: give one per seed on each side")
    a_data = [load_outcomes(p) for p in a_paths]
    b_data = a_data if b_paths is a_paths else [load_outcomes(p) for p in b_paths]
    separate = b_data is not a_data
    out = {"metric": metric, "n_seeds": len(a_paths),
           "a_policy": policy or a_data[0]["policies"][-1],
           "b_policy": against_policy or (b_data[0]["policies"][-1] if separate else b_data[0]["baseline"]),
           "splits": {}}
    for split in splits:
        if not all(split in d["splits"] for d in a_data + b_data):
            continue  # e.g. evaluate.validation_split off in one of the runs
        a_bits, b_bits = [], []
        for pa, da, pb, db in zip(a_paths, a_data, b_paths, b_data):
            ids_a, bits_a = pick(da, pa, split, policy, metric)
            ids_b, bits_b = pick(db, pb, split, against_policy or (None if db is not da else db["baseline"]), metric)
            if ids_a != ids_b:
                at = next((i for i, (x, y) in enumerate(zip(ids_a, ids_b)) if x != y), min(len(ids_a), len(ids_b)))
                raise ValueError(f"{pa} and {pb} score different {split} prompts ({len(ids_a)} vs "
                                 f"{len(ids_b)}, first difference at position {at})")
            a_bits.append(bits_a)
            b_bits.append(bits_b)
        ci = seeds_and_prompts_ci(differences(a_bits, b_bits))
        acc = lambda bits: [round(b.count("1") / len(b), 4) for b in bits]  # noqa: E731
        out["splits"][split] = {**ci, "a": acc(a_bits), "b": acc(b_bits),
                                "a_mean": round(statistics.fmean(acc(a_bits)), 4),
                                "b_mean": round(statistics.fmean(acc(b_bits)), 4)}
    if not out["splits"]:
        raise ValueError(f"none of the splits {list(splits)} is in every file")
    return out


def format_table(result: dict, a_name: str, b_name: str) -> str:
    lines = [f"{result['metric']}: {a_name} − {b_name}, {result['n_seeds']} seed(s); points, 95% interval over "
             f"seeds and prompts (* = excludes 0)"]
    for split, r in result["splits"].items():
        lo, hi = r["ci95"]
        lines.append(f"  {split:<10} n {r['n_prompts']:>4}   A {r['a_mean']:.3f}   B {r['b_mean']:.3f}   "
                     f"Δ {100 * r['mean']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]{'*' if r['significant'] else ''}"
                     f"   (seed part ± {100 * r['seed_half']:.1f}, prompt part ± {100 * r['prompt_half']:.1f})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="prefsynth compare", description=__doc__.splitlines()[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", nargs="+", help="outcomes.json of side A, one per seed")
    ap.add_argument("--against", nargs="+", default=None,
                    help="outcomes.json of side B, one per seed in the same order (default: A's own files)")
    ap.add_argument("--policy", default=None, help="A's policy (default: the last one each file evaluated)")
    ap.add_argument("--against-policy", default=None,
                    help="B's policy (default: the same as --policy for --against files, else the baseline, policy-0)")
    ap.add_argument("--metric", default="greedy_accuracy", help="greedy_accuracy | maj_at_K | pass_at_K")
    ap.add_argument("--splits", nargs="+", default=["validation", "test"])
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)
    try:
        against_policy = args.against_policy or (args.policy if args.against else None)
        result = compare(args.a, args.against, args.policy, against_policy, args.metric, tuple(args.splits))
    except ValueError as err:
        sys.exit(f"prefsynth compare: {err}")
    if args.json:
        print(json.dumps(result, indent=1))
        return
    a_name, b_name = result["a_policy"], result["b_policy"]
    if args.against:
        a_name, b_name = f"A ({a_name})", f"B ({b_name})"
    print(format_table(result, a_name, b_name))


if __name__ == "__main__":
    main()
