"""Ablations and baselines of round 1 over several seeds; prints mean ± 95% interval per variant.

Each (variant, seed) is the project's own `dvc repro` with params.yaml overridden (the file is put
back afterwards): DVC reruns only what the overrides touch (train@1 and evaluate@1 for most
variants, pairs@1 onwards for the UPO switch) and its run cache brings back runs already made.
The seed varies what is cheap to vary without moving the prompts: the training seed
(`train.seed`) and the evaluation-sampling seed (`evaluate.seed`); the global `seed` would also
move the splits.

Variants compare on the **validation** split (where defaults are chosen); the test split is
printed once beside them. Every variant and baseline trains on the same round's data and prompts;
the baselines (RFT, continued SFT on gold solutions) get the default's number of optimizer steps.
Significance: a variant's per-seed difference from `default` (paired by seed, same prompts), its
95% t-interval excluding 0. That interval covers training seeds, not the prompts (every seed is scored
on the same 311 / 500), so each run also records its per-prompt greedy outcomes and the tables print,
in brackets, the interval over seeds *and* prompts (prompt_intervals.py): the claim about the method on
this world, not about these prompts.

    python benchmarks/ablations.py --seeds 3                          # every variant and baseline
    python benchmarks/ablations.py --seeds 3 --variants default rft   # some of them
    python benchmarks/ablations.py --project /tmp/small --seeds 2     # another project dir
    python benchmarks/ablations.py --seeds 1 --variants default \
        --variant lr3e-4 train.learning_rate=3e-4 --variant rft_lr3e-4 train.learning_rate=3e-4 rft  # ad hoc

Run from the repository root after a `dvc repro` (the shared stages come from the cache).
Results also go to benchmarks/out/ablations.json.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prompt_intervals import (check_against, differences, greedy_outcomes,  # noqa: E402
                              seeds_and_prompts_ci, t_quantile)

EQUAL_PAIRS = 2000  # pair count for the step-vs-response comparison (both views have more)
SAME_STEPS = "<default steps>"  # replaced by the default's optimizer steps (equal compute)

VARIANTS = {
    "default": [],
    # baselines: what the preference data adds
    "plain_dpo": ["train.nll_weight=0"],
    "rft": ["train.trainer=sft", "train.sft_source=verified_samples", f"train.max_steps={SAME_STEPS}"],
    "sft_gold": ["train.trainer=sft", "train.sft_source=gold", f"train.max_steps={SAME_STEPS}"],
    # ablations
    "response": ["train.views=[response]", f"train.max_pairs={EQUAL_PAIRS}"],
    "step": ["train.views=[step]", f"train.max_pairs={EQUAL_PAIRS}"],
    "no_upo": ["pairs.upo.enabled=false"],
    "ipo": ["train.loss_type=[ipo]"],
    "verifier_only": ["train.label_sources=[verifier]"],
}
METRIC = "greedy_accuracy"


def mean_ci(values: list[float]) -> dict:
    """Mean and 95% t-interval over seeds (n = 1: no interval)."""
    n = len(values)
    mean = statistics.fmean(values)
    half = t_quantile(n - 1) * statistics.stdev(values) / math.sqrt(n) if n > 1 else None
    return {"mean": round(mean, 4), "ci95": None if half is None else [round(mean - half, 4), round(mean + half, 4)],
            "n_seeds": n, "values": [round(v, 4) for v in values]}


def significant(ci) -> bool:
    return ci is not None and (ci[0] > 0 or ci[1] < 0)


def parse_override(o: str):
    key, _, raw = o.partition("=")
    return key, yaml.safe_load(raw)


def apply_overrides(params: dict, overrides: list[str]) -> dict:
    out = json.loads(json.dumps(params))
    for o in overrides:
        key, value = parse_override(o)
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def dvc(project: Path, *args: str) -> str:
    exe = Path(sys.executable).parent / "dvc"
    proc = subprocess.run([str(exe), *args], cwd=project, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout


def run_one(project: Path, overrides: list[str], seed: int) -> dict:
    """One (variant, seed): dvc repro with the overrides; its round-1 numbers."""
    path = project / "params.yaml"
    original = path.read_text()
    t0 = time.perf_counter()
    try:
        params = apply_overrides(yaml.safe_load(original), [*overrides, f"train.seed={seed}",
                                                            f"evaluate.seed={seed}"])
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        dvc(project, "repro", "evaluate@1")
        ev = json.loads((project / "metrics/round-1/evaluate.json").read_text())
        train = json.loads((project / "metrics/round-1/train.json").read_text())
        # per-prompt greedy outcomes (the evaluate stage's outcomes.json): the intervals over seeds *and* prompts
        outcomes = {p: greedy_outcomes(project, f"models/{p}", project / "metrics/round-1/outcomes.json")
                    for p in ("policy-0", "policy-1")}
    finally:  # each run starts from the user's params.yaml
        path.write_text(original)
    row = {"seed": seed, "pairs": train.get("pairs") or train.get("examples"), "steps": train.get("train_steps"),
           "seconds": round(time.perf_counter() - t0, 1)}
    for split, block in (("validation", ev.get("validation", {}).get("policies") or {}), ("test", ev["policies"])):
        if "policy-1" in block:
            p1 = block["policy-1"]
            row[split] = {"policy_0": block["policy-0"][METRIC], "policy_1": p1[METRIC],
                          "delta": p1["paired_delta_vs_first"][METRIC]["delta"]}
            for p in ("policy-0", "policy-1"):
                check_against(outcomes[p][split], block[p][METRIC], f"{split} {p} (seed {seed})")
                row[split][f"outcomes_{p[-1]}"] = outcomes[p][split]
    return row


def without_outcomes(row: dict) -> dict:
    """A run's row for the progress log: the per-prompt outcome strings stay in the saved JSON only."""
    return {k: ({kk: vv for kk, vv in v.items() if not kk.startswith("outcomes_")} if isinstance(v, dict) else v)
            for k, v in row.items()}


def outcome_ci(rows_a: list[dict], rows_b: list[dict] | None, split: str, a_key: str = "outcomes_1",
               b_key: str = "outcomes_1") -> dict | None:
    """The seeds-and-prompts interval of A − B (B = policy-0 of the same rows when rows_b is None), paired by
    seed and prompt; None when a row lacks outcomes (runs saved before they were recorded)."""
    if rows_b is None:
        pairs = [(r[split], r[split]) for r in rows_a if split in r]
        b_key = "outcomes_0"
    else:
        by_seed = {r["seed"]: r[split] for r in rows_b if split in r}
        pairs = [(r[split], by_seed[r["seed"]]) for r in rows_a if split in r and r["seed"] in by_seed]
    if not pairs or any(a_key not in x or b_key not in y for x, y in pairs):
        return None
    return seeds_and_prompts_ci(differences([x[a_key] for x, _ in pairs], [y[b_key] for _, y in pairs]))


def summarise(runs: dict[str, list[dict]]) -> dict:
    """Per variant and split: mean ± 95% interval over seeds of accuracy and delta vs policy-0, and the
    per-seed difference from `default` (paired by seed) with its interval and significance."""
    out = {}
    base = {r["seed"]: r for r in runs.get("default", [])}
    for name, rows in runs.items():
        res = {"pairs": rows[0]["pairs"], "steps": rows[0]["steps"],
               "seconds": round(sum(r["seconds"] for r in rows), 1)}
        for split in ("validation", "test"):
            got = [r for r in rows if split in r]
            if not got:
                continue
            block = {"policy_1": mean_ci([r[split]["policy_1"] for r in got]),
                     "delta_vs_policy_0": mean_ci([r[split]["delta"] for r in got])}
            block["delta_vs_policy_0"]["significant"] = significant(block["delta_vs_policy_0"]["ci95"])
            block["delta_vs_policy_0_seeds_prompts"] = outcome_ci(got, None, split)
            paired = [r[split]["policy_1"] - base[r["seed"]][split]["policy_1"] for r in got
                      if r["seed"] in base and split in base[r["seed"]]]
            if name != "default" and paired:
                block["vs_default"] = mean_ci(paired)
                block["vs_default"]["significant"] = significant(block["vs_default"]["ci95"])
                block["vs_default_seeds_prompts"] = outcome_ci(got, runs["default"], split)
            res[split] = {k: v for k, v in block.items() if v is not None}
        out[name] = res
    return out


def paired(runs: dict[str, list[dict]], a: str, b: str, split: str) -> dict | None:
    """Variant a − variant b on one split, paired by seed (same prompts, same training seed), with its
    95% t-interval and significance; None when they share no seed."""
    by_seed = {r["seed"]: r[split]["policy_1"] for r in runs.get(b, []) if split in r}
    diffs = [r[split]["policy_1"] - by_seed[r["seed"]] for r in runs.get(a, []) if split in r and r["seed"] in by_seed]
    if not diffs:
        return None
    out = mean_ci(diffs)
    out["significant"] = significant(out["ci95"])
    out["seeds_prompts"] = outcome_ci(runs.get(a, []), runs.get(b, []), split)
    return out


def paired_table(runs: dict[str, list[dict]], comparisons: list[str]) -> str:
    """One line per `A:B` comparison: A − B in points by split, paired by seed."""
    lines, any_sp = [], False
    for c in comparisons:
        a, sep, b = c.partition(":")
        missing = [v for v in (a, b) if v not in runs]
        if not sep or missing:
            raise SystemExit(f"--paired {c!r}: want A:B with both variants in the run (missing: {missing or 'the :'}; "
                             f"have {sorted(runs)})")
        cells = []
        for split in ("validation", "test"):
            got = paired(runs, a, b, split)
            sp = got.get("seeds_prompts") if got else None
            any_sp = any_sp or bool(sp)
            cells.append(f"{split} {fmt_delta(got)}" + (f" [{fmt_delta(sp)}]" if sp else ""))
        lines.append(f"{a} − {b}: " + "   ".join(cells))
    head = ("paired by seed (A − B in points, mean ± 95% interval over seeds" + (" [over seeds and prompts]" if any_sp
            else "") + "; * = interval excludes 0)")
    return "\n".join([head, *lines])


def _fmt(x: dict | None, points: bool = False) -> str:
    if not x:
        return "-"
    k = 100 if points else 1
    m = f"{k * x['mean']:+.1f}" if points else f"{x['mean']:.3f}"
    if x["ci95"] is None:
        return m
    half = k * (x["ci95"][1] - x["ci95"][0]) / 2
    return f"{m} ± {half:.1f}" if points else f"{m} ± {half:.3f}"


def fmt_delta(x: dict | None) -> str:
    """A delta in points with its interval, `*` when the interval excludes 0; '-' when there is none."""
    return "-" if not x else _fmt(x, True) + ("*" if x["significant"] else " ")


def table(summary: dict, split: str) -> str:
    """One row per variant; the [seeds+prompts] columns appear when the runs recorded per-prompt outcomes."""
    sp = any(b.get("delta_vs_policy_0_seeds_prompts") for res in summary.values() if (b := res.get(split)))
    lines = [f"{split} split ({METRIC}; mean ± 95% interval over seeds" + (" [over seeds and prompts]" if sp else "")
             + "; Δ in points; * = interval excludes 0)",
             f"{'variant':<14}{'pairs':>7}{'steps':>7}{'policy-1':>18}{'Δ vs policy-0':>18}"
             + (f"{'[seeds+prompts]':>18}" if sp else "") + f"{'Δ vs default':>18}"
             + (f"{'[seeds+prompts]':>18}" if sp else "")]
    for name, res in summary.items():
        b = res.get(split)
        if not b:
            continue
        lines.append(f"{name:<14}{res['pairs'] or 0:>7}{res['steps'] or 0:>7}{_fmt(b['policy_1']):>18}"
                     f"{fmt_delta(b['delta_vs_policy_0']):>18}"
                     + (f"{fmt_delta(b.get('delta_vs_policy_0_seeds_prompts')):>18}" if sp else "")
                     + f"{fmt_delta(b.get('vs_default')):>18}"
                     + (f"{fmt_delta(b.get('vs_default_seeds_prompts')):>18}" if sp else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", "--only", nargs="*", choices=sorted(VARIANTS),
                    help="variants to run (default: all; `default` is always run first for the comparisons)")
    ap.add_argument("--variant", nargs="+", action="append", default=[], metavar=("NAME", "OVERRIDE"),
                    help="an ad-hoc variant: its name, then key=value overrides and/or names of built-in variants "
                         "whose overrides it includes (repeatable; for sweeps without editing VARIANTS)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per variant (>= 3 for an interval worth reading)")
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--project", default=".", help="the DVC project to run in (default: here)")
    ap.add_argument("--out", default="benchmarks/out/ablations.json")
    ap.add_argument("--paired", nargs="+", default=[], metavar="A:B",
                    help="also print variant A − variant B per split, paired by seed (e.g. step:response)")
    ap.add_argument("--summarise", metavar="FILE", help="only print the tables of a saved run (its JSON, or the "
                    "JSON lines it printed: seed intervals only, the outcomes are in the JSON), e.g. one that was interrupted")
    args = ap.parse_args(argv)
    if args.summarise:
        print_tables(args.summarise, args.paired)
        return
    project = Path(args.project).resolve()
    variants = dict(VARIANTS)
    for name, *parts in args.variant:
        variants[name] = [o for part in parts for o in (VARIANTS[part] if part in VARIANTS else [part])]
    extra = [v[0] for v in args.variant]
    chosen = args.variants if args.variants is not None else ([] if extra else list(VARIANTS))
    names = list(dict.fromkeys(["default", *chosen, *extra]))
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    t0 = time.perf_counter()
    runs: dict[str, list[dict]] = {}
    failed: dict[str, list[dict]] = {}
    default_steps = None
    for name in names:
        for seed in seeds:
            overrides = [o.replace(SAME_STEPS, str(default_steps)) for o in variants[name]]
            try:
                row = run_one(project, overrides, seed)
            except RuntimeError as err:  # e.g. RFT with no verified-correct sample: recorded, not hidden
                lines = str(err).splitlines()  # the stage's own error (e.g. ValueError: ...) before DVC's line
                last = [l for l in lines if "Error:" in l and not l.startswith("ERROR")] or \
                    [l for l in lines if "ERROR" in l]
                failed.setdefault(name, []).append({"seed": seed, "error": (last or [str(err)])[-1][-300:]})
                print(json.dumps({"variant": name, "seed": seed, "failed": failed[name][-1]["error"]}), flush=True)
                continue
            runs.setdefault(name, []).append(row)
            print(json.dumps({"variant": name, **without_outcomes(row)}), flush=True)
            # kept after every run: an interrupted run leaves what it measured (--summarise reads it)
            save(args.out, seeds, round(time.perf_counter() - t0), runs, failed, partial=True,
                 variants={n: variants[n] for n in names})
        if name == "default" and runs.get("default"):
            default_steps = runs["default"][0]["steps"]
    summary = summarise(runs)
    wall = round(time.perf_counter() - t0)
    print()
    for split in ("validation", "test"):
        print(table(summary, split))
        print()
    if args.paired:
        print(paired_table(runs, args.paired))
        print()
    for name, errs in failed.items():
        print(f"{name}: failed on seeds {[e['seed'] for e in errs]}: {errs[0]['error']}")
    print(f"wall time {wall} s for {len(names)} variants x {len(seeds)} seeds")
    save(args.out, seeds, wall, runs, failed, variants={n: variants[n] for n in names})


def save(path: str, seeds: list[int], wall: int, runs: dict, failed: dict, partial: bool = False,
         variants: dict | None = None) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"seeds": seeds, "wall_s": wall, "partial": partial, "variants": variants or {},
                               "runs": runs, "failed": failed, "summary": summarise(runs)}, indent=2))


def print_tables(path: str, comparisons: list[str] = ()) -> None:
    """The tables of a saved (possibly interrupted) run, or of its JSON-lines log."""
    text = Path(path).read_text()
    try:
        runs = json.loads(text)["runs"]
    except (json.JSONDecodeError, KeyError):
        runs = {}
        for line in text.splitlines():
            if line.startswith("{"):
                row = json.loads(line)
                if "failed" not in row:
                    runs.setdefault(row.pop("variant"), []).append(row)
    summary = summarise(runs)
    for split in ("validation", "test"):
        print(table(summary, split))
        print()
    if comparisons:
        print(paired_table(runs, list(comparisons)))
        print()
    print(f"{sum(len(r) for r in runs.values())} runs; {sum(r['seconds'] for rs in runs.values() for r in rs):.0f} s "
          "of (variant, seed) wall time")


if __name__ == "__main__":
    main()
