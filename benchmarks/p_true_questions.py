"""What the P(True) self-judge is asked, what it is scored against, and what it actually tracks (issue 17).

The arith policy's native self-evaluation asks whether the LAST shown step is the right next step
(step-local); the label stage's step truth is "no error so far" (after the first error every step
is wrong) and its response truth is the final answer, while the response-level question the judge
gets is again "is the last line (the `A:` line) right?". This replays the label stage's `quality`
metrics on committed label data (no model calls) against both step truths, with 95% bootstrap
intervals (responses resampled), and the AUROC of P(yes) against surface features of the step, to
say what the tiny policy's P(yes) follows.

    .venv/bin/python benchmarks/p_true_questions.py [--labels data/round-1/labels ...] \
        [--collected /tmp/mcb/rollouts.jsonl]   # (benchmarks/mc_label_rules.py collect: validation, test)
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def boot_auroc(pairs, reps=1000, seed=0):
    """AUROC and its 95% interval, responses (the first element of each item) resampled."""
    from prefsynth.calibration import auroc

    by = collections.defaultdict(list)
    for rid, s, y in pairs:
        by[rid].append((s, y))
    keys = sorted(by)
    rng = random.Random(seed)
    vals = []
    for _ in range(reps):
        sample = [x for k in rng.choices(keys, k=len(keys)) for x in by[k]]
        a = auroc([s for s, _ in sample], [y for _, y in sample])
        if a is not None:
            vals.append(a)
    vals.sort()
    point = auroc([s for _, s, _ in pairs], [y for _, _, y in pairs])
    return point, (vals[int(0.025 * len(vals))], vals[int(0.975 * len(vals)) - 1]) if vals else (None, None)


def main(argv=None) -> None:
    import pyarrow.parquet as pq

    from prefsynth.transforms.label_report import quality_metrics, step_local_truth
    from prefsynth.step_local import is_operation_line
    from prefsynth.tasks import get_task
    from prefsynth.tasks.arith import apply_op

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", default="data/round-1/labels")
    ap.add_argument("--responses", default="data/round-1/responses")
    ap.add_argument("--prompts", default="data/prompts")
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--json", default=None)
    ap.add_argument("--collected", default=None, help="also score the P(True) of a `mc_label_rules.py collect` "
                    "output (responses sampled on validation and test prompts), split by split")
    args = ap.parse_args(argv)
    labels = pq.read_table(args.labels).to_pylist()
    responses = {r["response_id"]: r for r in pq.read_table(args.responses).to_pylist()}
    prompts = {p["prompt_id"]: p for p in pq.read_table(args.prompts).to_pylist()}
    local = step_local_truth(labels, responses, prompts)
    quality, _ = quality_metrics(labels, self_judge=True, step_local=local)
    out = {"quality": quality, "intervals": {}, "p_true_tracks": {}}
    print("AUROC of each labeler's score against each truth (95% bootstrap interval, responses resampled)")
    # (labeler, kind) -> [(response id, score, truth)] for the intervals
    from prefsynth.transforms.label_report import ground_truth

    truth_r, truth_s = ground_truth(labels)
    items = collections.defaultdict(list)
    for r in labels:
        if r["labeler"].startswith("verifier_") or r["score"] is None:
            continue
        key = (r["target_id"], r["step_index"])
        if r["target_kind"] == "response" and r["target_id"] in truth_r:
            items[(r["labeler"], "response")].append((r["target_id"], r["score"], truth_r[r["target_id"]]))
        elif r["target_kind"] == "step" and key in truth_s:
            items[(r["labeler"], "step")].append((r["target_id"], r["score"], truth_s[key]))
            if key in local:
                items[(r["labeler"], "step_local")].append((r["target_id"], r["score"], local[key][0]))
                if local[key][1]:
                    items[(r["labeler"], "step_local_op_lines")].append((r["target_id"], r["score"], local[key][0]))
    for (labeler, kind), xs in sorted(items.items()):
        a, ci = boot_auroc(xs, args.boot)
        q = quality[labeler][kind]
        out["intervals"][f"{labeler}/{kind}"] = {"auroc": a, "ci95": ci, "n": len(xs)}
        print(f"  {labeler:10s} {kind:20s} n={len(xs):5d} true_rate={q['true_rate']:.3f} AUROC {a:.3f} "
              f"[{ci[0]:.3f}, {ci[1]:.3f}]")
    # what P(yes) follows: op lines whose prefix is right (where step-local = no error so far)
    task = get_task("arith")
    feats = collections.defaultdict(list)
    for r in labels:
        if r["labeler"] != "p_true" or r["target_kind"] != "step":
            continue
        resp = responses[r["target_id"]]
        prompt = prompts[resp["prompt_id"]]
        steps, i = list(resp["steps"]), r["step_index"]
        v = task.verify_steps(prompt, steps)
        if (v.first_wrong_step is not None and i > v.first_wrong_step) or not is_operation_line(steps[i]):
            continue
        problem = task.problem(prompt)
        a, rest = steps[i].split("=")[0], int(steps[i].split("=")[1])
        op = next(c for c in "+-*/" if c in a[1:])
        x, y = a[:a.index(op, 1)], a[a.index(op, 1) + 1:]
        try:
            right = apply_op(int(x), op, int(y))
        except ValueError:
            right = None
        rid = r["target_id"]
        feats["result right (c = a op b)"].append((rid, r["score"], right == rest))
        feats["units digit right"].append((rid, r["score"], right is not None and right % 10 == rest % 10))
        feats["operator is *"].append((rid, r["score"], op == "*"))
        feats["operator is +"].append((rid, r["score"], op == "+"))
        feats["first step (i = 0)"].append((rid, r["score"], i == 0))
        feats["result < 100"].append((rid, r["score"], rest < 100))
        feats["last operation"].append((rid, r["score"], i == len(problem.ops) - 1))
    print("\nP(yes) on operation lines after a right prefix: AUROC against the step's correctness and "
          "against surface features")
    for name, xs in feats.items():
        a, ci = boot_auroc(xs, args.boot)
        rate = sum(y for *_, y in xs) / len(xs)
        out["p_true_tracks"][name] = {"auroc": a, "ci95": ci, "n": len(xs), "rate": rate}
        print(f"  {name:28s} n={len(xs):5d} rate={rate:.3f} AUROC {a:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]")
    if args.collected:
        out["collected"] = collected(args.collected, args.prompts, args.boot)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))


def collected(path: str, prompts_path: str, reps: int) -> dict:
    """P(True) AUROC on freshly sampled validation / test responses against each truth."""
    import pyarrow.parquet as pq

    from prefsynth.step_local import arith_step_local, is_operation_line
    from prefsynth.tasks.arith import parse_expression

    prompts = {p["prompt_id"]: p for p in pq.read_table(prompts_path).to_pylist()}
    items = collections.defaultdict(list)
    with open(path) as f:
        for r in map(json.loads, f):
            local = arith_step_local(parse_expression(prompts[r["prompt_id"]]["prompt"]), r["steps"])
            fw = r["first_wrong"]
            for i, s in enumerate(r["p_true_steps"] or []):
                if s is None:
                    continue
                items[(r["split"], "step")].append((r["response_id"], s, r["step_ok"][i] and (fw is None or i < fw)))
                if is_operation_line(r["steps"][i]):
                    items[(r["split"], "step_local_op_lines")].append((r["response_id"], s, local[i]))
            if r.get("p_true_response") is not None:
                items[(r["split"], "response")].append((r["response_id"], r["p_true_response"], r["answer_correct"]))
    print(f"\nP(True) on responses sampled on held-out prompts ({path})")
    res = {}
    for (split, kind), xs in sorted(items.items()):
        a, ci = boot_auroc(xs, reps)
        res[f"{split}/{kind}"] = {"auroc": a, "ci95": ci, "n": len(xs)}
        print(f"  {split:10s} {kind:20s} n={len(xs):5d} AUROC {a:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]")
    return res


if __name__ == "__main__":
    main()
