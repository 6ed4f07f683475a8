"""On-policy rounds over several seeds: greedy accuracy of policy-r per round, mean ± 95% interval.

Each seed is the project's own `dvc repro` of `evaluate@1 .. evaluate@R` with params.yaml overridden
(the file is put back afterwards): `iterations` becomes R chained rounds (round r samples with
policy-(r-1), labels, builds pairs and trains policy-r with policy-(r-1) as the DPO reference), and
`train.seed` / `evaluate.seed` take the seed. The global `seed` stays, so the prompts and splits do not
move; round 1's samples are one draw, and from round 2 on the samples differ by seed because the
policy that draws them does. DVC's run cache brings back rounds already made.

Reported per round, on validation (where settings are chosen) and test (read once): policy-r's
greedy accuracy, its paired gain over policy-0 (same prompts) and over the round before, each the mean
over seeds with a 95% t-interval; `*` = the interval excludes 0. In brackets, the interval over seeds
*and* prompts (prompt_intervals.py; from each policy's per-prompt greedy outcomes, recorded per run),
which also counts the prompt sampling that every seed shares.

    python benchmarks/rounds.py --rounds 3 --seeds 3
    python benchmarks/rounds.py --rounds 3 --seeds 3 --set train.epochs=3   # a training setting for every round
    python benchmarks/rounds.py --summarise benchmarks/out/rounds.json
    python benchmarks/rounds.py --summarise s1.json s2.json s3.json --save pooled.json   # seeds run apart, pooled
    python benchmarks/rounds.py --compare dpo.json rft.json   # A - B per round, paired by seed

Run from the repository root after a `dvc repro` (round 1's shared stages come from the cache).
Results also go to benchmarks/out/rounds.json, and the per-round accuracy to rounds.csv beside it
(`dvc plots show` draws the committed one, benchmarks/results/rounds-3x3.csv).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablations import (METRIC, _fmt, apply_overrides, dvc, fmt_delta, mean_ci, significant,  # noqa: E402
                       without_outcomes)
from prompt_intervals import check_against, differences, greedy_outcomes, seeds_and_prompts_ci  # noqa: E402


def round_overrides(rounds: int, seed: int) -> list[str]:
    chain = {str(r): {"from": r - 1} for r in range(1, rounds + 1)}
    return [f"iterations={json.dumps(chain)}", f"card.round={rounds}", f"train.seed={seed}",
            f"evaluate.seed={seed}"]


def run_seed(project: Path, rounds: int, seed: int, overrides: list[str]) -> dict:
    """One seed: R rounds; per round its pairs, steps and both splits' accuracies."""
    path = project / "params.yaml"
    original = path.read_text()
    t0 = time.perf_counter()
    try:
        params = apply_overrides(yaml.safe_load(original), [*overrides, *round_overrides(rounds, seed)])
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        dvc(project, "repro", *(f"evaluate@{r}" for r in range(1, rounds + 1)))
        per_round = []
        # per-prompt greedy outcomes (each round's evaluate outcomes.json): the intervals over seeds *and* prompts
        outcomes = {r: greedy_outcomes(project, f"models/policy-{r}",
                                       project / f"metrics/round-{max(r, 1)}/outcomes.json")
                    for r in range(0, rounds + 1)}
        for r in range(1, rounds + 1):
            ev = json.loads((project / f"metrics/round-{r}/evaluate.json").read_text())
            train = json.loads((project / f"metrics/round-{r}/train.json").read_text())
            row = {"round": r, "pairs": train.get("pairs") or train.get("examples"),
                   "steps": train.get("train_steps")}
            for split, block in (("validation", ev.get("validation", {}).get("policies") or {}),
                                 ("test", ev["policies"])):
                if f"policy-{r}" in block:
                    row[split] = {"policy_0": block["policy-0"][METRIC],
                                  "policy_r": block[f"policy-{r}"][METRIC],
                                  # what else moves: a sharper policy lifts greedy and maj@k, a
                                  # better one lifts the sample accuracy and pass@k too
                                  "other": {p: _other_metrics(block[p]) for p in ("policy-0", f"policy-{r}")}}
                    for key, k in (("0", 0), ("r", r)):
                        check_against(outcomes[k][split], block[f"policy-{k}"][METRIC], f"{split} policy-{k} (seed {seed})")
                        row[split][f"outcomes_{key}"] = outcomes[k][split]
            per_round.append(row)
    finally:  # each run starts from the user's params.yaml
        path.write_text(original)
    return {"seed": seed, "seconds": round(time.perf_counter() - t0, 1), "rounds": per_round}


def _other_metrics(policy: dict) -> dict:
    return {k: v for k, v in policy.items() if k == "sample_accuracy" or k.startswith(("pass_at_", "maj_at_"))}


def other_table(runs: list[dict], split: str) -> str | None:
    """Mean over seeds of sample accuracy, maj@k and pass@k per round (runs that recorded them)."""
    rows = []
    for r in range(0, max(len(run["rounds"]) for run in runs) + 1):
        got = [run["rounds"][max(r - 1, 0)].get(split, {}).get("other") for run in runs
               if len(run["rounds"]) >= max(r, 1)]
        got = [g[f"policy-{r}" if r else "policy-0"] for g in got if g]
        if got:
            rows.append((r, {k: mean_ci([g[k] for g in got])["mean"] for k in got[0]}))
    if not rows:
        return None
    keys = list(rows[0][1])
    lines = [f"{split} split, mean over seeds", f"{'round':<9}" + "".join(f"{k:>18}" for k in keys)]
    lines += [f"{r:<9}" + "".join(f"{v[k]:>18.3f}" for k in keys) for r, v in rows]
    return "\n".join(lines)


def summarise(runs: list[dict]) -> dict:
    """Per round and split: accuracy, gain over policy-0 and over the round before (paired by seed)."""
    out = {}
    n_rounds = max(len(r["rounds"]) for r in runs)
    for r in range(1, n_rounds + 1):
        rows = [run["rounds"][r - 1] for run in runs if len(run["rounds"]) >= r]
        prev = {run["seed"]: run["rounds"][r - 2] for run in runs if r > 1 and len(run["rounds"]) >= r}
        res = {"pairs": mean_ci([row["pairs"] or 0 for row in rows])["mean"]}
        for split in ("validation", "test"):
            got = [(run["seed"], run["rounds"][r - 1][split]) for run in runs
                   if len(run["rounds"]) >= r and split in run["rounds"][r - 1]]
            if not got:
                continue
            acc = [g["policy_r"] for _, g in got]
            block = {"policy_r": mean_ci(acc), "vs_policy_0": mean_ci([g["policy_r"] - g["policy_0"] for _, g in got])}
            if r > 1:
                step = [g["policy_r"] - prev[s][split]["policy_r"] for s, g in got if s in prev]
                block["vs_previous"] = mean_ci(step)
            for key in ("vs_policy_0", "vs_previous"):
                if key in block:
                    block[key]["significant"] = significant(block[key]["ci95"])
            if all("outcomes_r" in g for _, g in got):  # runs saved before outcomes were recorded: seeds only
                block["vs_policy_0_seeds_prompts"] = seeds_and_prompts_ci(
                    differences([g["outcomes_r"] for _, g in got], [g["outcomes_0"] for _, g in got]))
                if r > 1 and all(s in prev and "outcomes_r" in prev[s][split] for s, _ in got):
                    block["vs_previous_seeds_prompts"] = seeds_and_prompts_ci(
                        differences([g["outcomes_r"] for _, g in got], [prev[s][split]["outcomes_r"] for s, _ in got]))
            res[split] = block
        out[f"round-{r}"] = res
    return out


def table(summary: dict, split: str) -> str:
    """One row per round; the [seeds+prompts] columns appear when the runs recorded per-prompt outcomes."""
    sp = any(res.get(split, {}).get("vs_policy_0_seeds_prompts") for res in summary.values())
    lines = [f"{split} split ({METRIC}; mean ± 95% interval over seeds" + (" [over seeds and prompts]" if sp else "")
             + "; Δ in points; * = interval excludes 0)",
             f"{'round':<9}{'pairs':>8}{'policy-r':>18}{'Δ vs policy-0':>18}" + (f"{'[seeds+prompts]':>18}" if sp else "")
             + f"{'Δ vs round before':>20}" + (f"{'[seeds+prompts]':>18}" if sp else "")]
    for name, res in summary.items():
        if split in res:
            b = res[split]
            lines.append(f"{name:<9}{res['pairs']:>8.0f}{_fmt(b['policy_r']):>18}{fmt_delta(b['vs_policy_0']):>18}"
                         + (f"{fmt_delta(b.get('vs_policy_0_seeds_prompts')):>18}" if sp else "")
                         + f"{fmt_delta(b.get('vs_previous')):>20}"
                         + (f"{fmt_delta(b.get('vs_previous_seeds_prompts')):>18}" if sp else ""))
    return "\n".join(lines)


def accuracy_csv(runs: list[dict]) -> str:
    """Greedy accuracy per round (0 = policy-0), mean over seeds with its 95% interval, one column pair
    per split: the file `dvc plots show` draws (dvc.yaml top-level `plots`)."""
    summary = summarise(runs)
    cols = ["round", "validation", "validation_low", "validation_high", "test", "test_low", "test_high"]
    lines = [",".join(cols)]
    first = runs[0]["rounds"][0]
    rows = [(0, {sp: mean_ci([r["rounds"][0][sp]["policy_0"] for r in runs if sp in r["rounds"][0]])
                 for sp in ("validation", "test") if sp in first})]
    rows += [(int(name.split("-")[1]), {sp: res[sp]["policy_r"] for sp in ("validation", "test") if sp in res})
             for name, res in summary.items()]
    for r, blocks in rows:
        cells = [str(r)]
        for sp in ("validation", "test"):
            b = blocks.get(sp)
            lo, hi = (b["ci95"] if b and b["ci95"] else (None, None))
            cells += ["" if not b else f"{b['mean']:.4f}", "" if lo is None else f"{lo:.4f}", "" if hi is None else f"{hi:.4f}"]
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def _value(rnd: dict, split: str, metric: str | None) -> float | None:
    """Greedy accuracy of the round's policy (metric None), or one of its `other` metrics (pass_at_8 ...)."""
    block = rnd.get(split)
    if block is None:
        return None
    if metric is None:
        return block["policy_r"]
    return (block.get("other") or {}).get(f"policy-{rnd['round']}", {}).get(metric)


def compare(a: list[dict], b: list[dict], metric: str | None = None) -> dict:
    """Per round and split: A's greedy accuracy (or `metric`) minus B's, paired by seed (seeds both runs have)."""
    by_seed = {run["seed"]: run for run in b}
    out = {}
    for r in range(1, max(len(run["rounds"]) for run in a) + 1):
        res = {}
        for split in ("validation", "test"):
            diffs, bits = [], []
            for run in a:
                other = by_seed.get(run["seed"])
                if other is None or len(run["rounds"]) < r or len(other["rounds"]) < r:
                    continue
                x, y = _value(run["rounds"][r - 1], split, metric), _value(other["rounds"][r - 1], split, metric)
                if x is not None and y is not None:
                    diffs.append(x - y)
                    bits.append((run["rounds"][r - 1][split].get("outcomes_r"),
                                 other["rounds"][r - 1][split].get("outcomes_r")))
            if diffs:
                block = mean_ci(diffs)
                block["significant"] = significant(block["ci95"])
                if metric is None and all(x and y for x, y in bits):
                    block["seeds_prompts"] = seeds_and_prompts_ci(differences([x for x, _ in bits], [y for _, y in bits]))
                res[split] = block
        out[f"round-{r}"] = res
    return out


def compare_table(diff: dict, a_name: str, b_name: str, metric: str | None = None) -> str:
    sp = any(blk.get("seeds_prompts") for res in diff.values() for blk in res.values())
    lines = [f"{a_name} - {b_name} ({metric or METRIC}, paired by seed; points, mean ± 95% interval over seeds"
             + (" [over seeds and prompts]" if sp else "") + "; * = excludes 0)",
             f"{'round':<9}{'validation':>18}" + (f"{'[seeds+prompts]':>18}" if sp else "") + f"{'test':>18}"
             + (f"{'[seeds+prompts]':>18}" if sp else "") + f"{'seeds':>7}"]
    for name, res in diff.items():
        n = max((blk["n_seeds"] for blk in res.values()), default=0)
        cells = []
        for split in ("validation", "test"):
            cells.append(f"{fmt_delta(res.get(split)):>18}")
            if sp:
                cells.append(f"{fmt_delta((res.get(split) or {}).get('seeds_prompts')):>18}")
        lines.append(f"{name:<9}" + "".join(cells) + f"{n:>7}")
    return "\n".join(lines)


def print_tables(runs: list[dict]) -> None:
    summary = summarise(runs)
    for split in ("validation", "test"):
        print(table(summary, split))
        print()
    for split in ("validation", "test"):
        other = other_table(runs, split)
        if other:
            print(other)
            print()


def pooled_runs(paths: list[str]) -> list[dict]:
    """The runs of several saved files as one (e.g. seeds run one at a time); a seed twice is an error."""
    runs, seen = [], {}
    for path in paths:
        saved = json.loads(Path(path).read_text())
        for run in saved["runs"]:
            if run["seed"] in seen:
                raise SystemExit(f"seed {run['seed']} is in both {seen[run['seed']]} and {path}")
            seen[run["seed"]] = path
            runs.append(run)
    return sorted(runs, key=lambda run: run["seed"])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="on-policy rounds per seed")
    ap.add_argument("--seeds", type=int, default=3, help="seeds (>= 3 for an interval worth reading)")
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="params overrides for every round, e.g. train.learning_rate=3e-4")
    ap.add_argument("--project", default=".", help="the DVC project to run in (default: here)")
    ap.add_argument("--out", default="benchmarks/out/rounds.json")
    ap.add_argument("--summarise", nargs="+", metavar="FILE", help="only print the tables of saved runs (and write "
                    "their CSV with --csv); several files, e.g. one per seed run apart, are pooled into one run")
    ap.add_argument("--save", metavar="FILE", help="with --summarise: also write the pooled run's JSON here (what "
                    "--compare reads)")
    ap.add_argument("--csv", metavar="FILE", help="with --summarise: write the per-round accuracy CSV here")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"), help="only print A - B per round of two saved "
                    "runs, paired by seed")
    ap.add_argument("--metrics", nargs="*", default=[], metavar="NAME", help="with --compare: also these "
                    "per-policy metrics, e.g. pass_at_8 maj_at_8 sample_accuracy")
    args = ap.parse_args(argv)
    if args.compare:
        a, b = (json.loads(Path(f).read_text())["runs"] for f in args.compare)
        names = Path(args.compare[0]).stem, Path(args.compare[1]).stem
        print("\n\n".join(compare_table(compare(a, b, m), *names, m) for m in (None, *args.metrics)))
        return
    if args.summarise:
        runs = pooled_runs(args.summarise)
        if args.save:
            Path(args.save).write_text(json.dumps({"pooled_from": args.summarise, "runs": runs,
                                                   "summary": summarise(runs)}, indent=2))
        print_tables(runs)
        if args.csv:
            Path(args.csv).write_text(accuracy_csv(runs))
        return
    project = Path(args.project).resolve()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    runs = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        runs.append(run_seed(project, args.rounds, seed, args.set))
        print(json.dumps({**runs[-1], "rounds": [without_outcomes(r) for r in runs[-1]["rounds"]]}), flush=True)
        # kept after every seed: an interrupted run leaves what it measured
        out.write_text(json.dumps({"rounds": args.rounds, "overrides": args.set, "runs": runs,
                                   "wall_s": round(time.perf_counter() - t0), "summary": summarise(runs)}, indent=2))
        out.with_suffix(".csv").write_text(accuracy_csv(runs))
    print()
    print_tables(runs)
    print(f"wall time {round(time.perf_counter() - t0)} s for {args.rounds} rounds x {args.seeds} seeds")


if __name__ == "__main__":
    main()
