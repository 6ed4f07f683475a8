"""The tiny critic from scratch vs from policy-0's weights (`critic.init_from`), over training seeds.

Runs the project's own critic stage (`prefsynth critic`) on a finished run's prompts, round-1 responses
and policy-0, once per (init, seed, steps) with `critic.init_from`, `critic.seed` and `critic.max_steps`
overridden, and prints the held-out critique accuracy — first wrong step located, on truly wrong and
truly right solutions — as mean ± 95% t-interval over seeds, with each variant's difference from
`scratch` paired by seed. The held-out prompts do not move with the seed (they are split by the global
seed), so the seeds move the training only.

    python benchmarks/critic_init.py --project /path/to/run --seeds 3
    python benchmarks/critic_init.py --project . --seeds 3 --steps 500 1500

Results also go to benchmarks/out/critic_init.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablations import _fmt, apply_overrides, fmt_delta, mean_ci, significant  # noqa: E402

KEYS = {"located_truly_wrong": ("truly_wrong", "located_accuracy"),
        "located_truly_right": ("truly_correct", "located_accuracy"),
        "verdict_truly_wrong": ("truly_wrong", "verdict_accuracy")}


def run_one(project: Path, work: Path, init: str, seed: int, steps: int | None) -> dict:
    params = yaml.safe_load((project / "params.yaml").read_text())
    overrides = [f"critic.init_from={init}", f"critic.seed={seed}"] + ([f"critic.max_steps={steps}"] if steps else [])
    name = f"{init}-s{seed}-{steps or 'default'}"
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(apply_overrides(params, overrides), sort_keys=False))
    exe = Path(sys.executable).parent / "prefsynth"
    t0 = time.perf_counter()
    proc = subprocess.run([str(exe), "critic", "--params", str(path), "--prompts", str(project / "data/prompts"),
                           "--responses", str(project / "data/round-1/responses"),
                           "--policy", str(project / "models/policy-0"), "--out", str(work / name),
                           "--metrics", str(work / f"{name}.json")], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"critic {name} failed:\n{proc.stderr[-2000:]}")
    held = json.loads((work / f"{name}.json").read_text())["heldout"]
    row = {"init": init, "seed": seed, "steps": steps, "seconds": round(time.perf_counter() - t0, 1)}
    for split in ("all", "responses"):
        row[split] = {k: held[split][a][b] for k, (a, b) in KEYS.items()}
        row[split]["n_truly_wrong"] = held[split]["n_truly_wrong"]
    return row


def summarise(rows: list[dict]) -> dict:
    out = {}
    variants = sorted({(r["init"], r["steps"] or 0) for r in rows}, key=lambda v: (v[1], v[0] != "scratch"))
    for init, steps in variants:
        got = [r for r in rows if r["init"] == init and (r["steps"] or 0) == steps]
        base = {r["seed"]: r for r in rows if r["init"] == "scratch" and (r["steps"] or 0) == steps}
        res = {}
        for split in ("all", "responses"):
            block = {k: mean_ci([r[split][k] for r in got]) for k in KEYS}
            paired = [r[split]["located_truly_wrong"] - base[r["seed"]][split]["located_truly_wrong"]
                      for r in got if r["seed"] in base]
            if init != "scratch" and paired:
                block["located_truly_wrong_vs_scratch"] = mean_ci(paired)
                block["located_truly_wrong_vs_scratch"]["significant"] = significant(
                    block["located_truly_wrong_vs_scratch"]["ci95"])
            block["n_truly_wrong"] = got[0][split]["n_truly_wrong"]
            res[split] = block
        out[f"{init}@{steps or 'default'}"] = res
    return out


def print_table(summary: dict) -> None:
    for split in ("all", "responses"):
        n = next(iter(summary.values()))[split]["n_truly_wrong"]
        print(f"held-out {split} (n truly wrong {n}; mean ± 95% interval over seeds)")
        print(f"{'variant':<18}{'located, wrong':>18}{'located, right':>18}{'verdict, wrong':>18}{'Δ wrong vs scratch':>22}")
        for name, res in summary.items():
            b = res[split]
            print(f"{name:<18}{_fmt(b['located_truly_wrong']):>18}{_fmt(b['located_truly_right']):>18}"
                  f"{_fmt(b['verdict_truly_wrong']):>18}{fmt_delta(b.get('located_truly_wrong_vs_scratch')):>22}")
        print()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", default=".", help="a finished run (its data/prompts, round-1 responses, policy-0)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--steps", type=int, nargs="*", default=[0], help="critic.max_steps values (0: the params')")
    ap.add_argument("--inits", nargs="*", default=["scratch", "policy"])
    ap.add_argument("--out", default="benchmarks/out/critic_init.json")
    args = ap.parse_args(argv)
    project = Path(args.project).resolve()
    rows = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="critic-init-") as tmp:
        for steps in args.steps:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                for init in args.inits:
                    rows.append(run_one(project, Path(tmp), init, seed, steps or None))
                    print(json.dumps(rows[-1]), flush=True)
                    out.write_text(json.dumps({"rows": rows, "summary": summarise(rows)}, indent=2))
    print()
    print_table(summarise(rows))


if __name__ == "__main__":
    main()
