"""Generation throughput: the generate stage (Beam + RunInference) vs a plain loop over the
same backend, at identical prompts, seeds and sampling; and the stage at 1 and 2 workers.

    python benchmarks/generation.py [--policy models/policy-0] [--prompts 400] [--n 8]

Prints tokens/s and ratios against the plain loop run in the same process (machines are noisy,
ratios travel better than absolute numbers). Goal: stage / loop >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from prefsynth.backends.factory import make_backend  # noqa: E402
from prefsynth.config import load_params  # noqa: E402
from prefsynth.ids import seed_for  # noqa: E402
from prefsynth.pipelines import generate, prompts  # noqa: E402
from prefsynth.pipelines.generate import sampling_params  # noqa: E402
from prefsynth.schemas.io import read_records  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="models/policy-0")
    ap.add_argument("--prompts", type=int, default=400)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--device", default=None)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-gen-"))
    policy = args.policy
    if not Path(policy, "config.json").exists():
        from helpers import tiny_random_policy

        policy = tiny_random_policy(work / "policy-0")
        print(f"(no trained policy at {args.policy}: using a random tiny policy; run `dvc repro` first for real text)")
    cfg = {"seed": 1, "prompts": {"n_prompts": int(args.prompts / 0.8) + 50},
           "policy": {"device": args.device},
           "generate": {"n": args.n, "max_new_tokens": args.max_new_tokens, "max_prompts": args.prompts}}
    pfile = work / "params.json"
    pfile.write_text(json.dumps(cfg))
    prompts.main(["--params", str(pfile), "--out", str(work / "prompts"), "--dead", str(work / "pd"),
                  "--metrics", str(work / "pm.json"), "--reports", str(work / "reports")])
    params = load_params(pfile)
    recs = sorted((r for r in read_records(str(work / "prompts")) if r["split"] == "train"),
                  key=lambda r: r["prompt_id"])[:args.prompts]

    # Plain loop: same backend, same batches, same seeds; model load included, as in the stage.
    t0 = time.perf_counter()
    backend = make_backend(params.policy, policy)
    sp = sampling_params(params)
    per_batch = max(1, params.policy.batch_size // sp.n)
    tokens = 0
    for i in range(0, len(recs), per_batch):
        chunk = recs[i:i + per_batch]
        out = backend.generate([r["prompt"] for r in chunk], sp,
                               [seed_for(params.seed, r["prompt_id"], "generate") for r in chunk])
        tokens += sum(c.n_tokens for g in out for c in g)
    loop_s = time.perf_counter() - t0
    loop_tps = tokens / loop_s
    del backend

    rows = [("plain loop", loop_s, tokens, loop_tps)]
    # 2 workers on a 2-core machine: one torch thread each, or they fight over the cores
    for workers, threads in ((1, 2), (2, 1), (2, 2)):
        cfg["beam"] = {"direct_num_workers": workers}
        cfg["policy"]["torch_threads"] = threads
        pfile.write_text(json.dumps(cfg))
        out = work / f"w{workers}t{threads}"
        t0 = time.perf_counter()
        generate.main(["--params", str(pfile), "--prompts", str(work / "prompts"), "--policy", policy,
                       "--out", str(out / "responses"), "--dead", str(out / "dead"), "--metrics", str(out / "m.json"),
                       "--reports", str(out / "reports")])
        wall = time.perf_counter() - t0
        m = json.loads((out / "m.json").read_text())
        rows.append((f"stage, {workers} worker{'s' if workers > 1 else ''} x {threads} thr", wall, m["tokens"],
                     m["tokens"] / wall))
    print(f"\n{len(recs)} prompts x {args.n} samples, max_new_tokens={args.max_new_tokens}, policy={policy}")
    print(f"{'run':<28}{'seconds':>9}{'tokens':>10}{'tokens/s':>11}{'vs loop':>9}")
    for name, s, tok, tps in rows:
        print(f"{name:<28}{s:>9.1f}{tok:>10}{tps:>11.0f}{tps / loop_tps:>9.2f}")
    if rows[1][2] != tokens:
        print(f"WARNING: the stage generated {rows[1][2]} tokens, the loop {tokens}")


if __name__ == "__main__":
    main()
