"""Self-evaluation by recomputation: does the policy's own probability of a step's result say whether
the step is right? (issue 17's P(True) goal)

The native P(True) self-judge shows the policy a step and asks `OK?`; the tiny policy answers from
the operator, not the arithmetic (AUROC ~0.55, `benchmarks/p_true_questions.py`), and asking it to
recompute before answering let it copy the shown result. Here the claimed result is masked: the
policy sees the step up to `=` (the prompt, the earlier steps, `a op b=`) and the score is the
log-probability it gives the claimed `c` (for the answer line, `x` after `A: `). A second score is the
log-probability of the whole line (it also covers a wrongly copied operand), and for the "no error so
far" truth the running minimum of it over the prefix. No new model call is learned or trained: it is
the policy's own distribution, read with `Backend.score`.

Responses are sampled by policy-0 on the validation and test prompts (k per prompt, the generate
stage's temperature, seeded per prompt). Each score's AUROC against both step truths (step-local: the
question `OK?` asks, prefsynth/step_local.py; "no error so far": the verifier step label), with 95%
bootstrap intervals (responses resampled), beside P(True) on the same steps.

    .venv/bin/python benchmarks/step_confidence.py --samples 8 --json benchmarks/out/step_confidence.json
    # a real model (in a project with the examples/arith-smollm2 profile and its prompts):
    python benchmarks/step_confidence.py --policy models/smollm2-135m-instruct --samples 4 --max-prompts 60 \
        --splits validation --no-p-true

Arith world only (it needs exact `a op b=c` steps to mask the result).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from heldout import line_logprobs, sample_heldout  # noqa: E402
from p_true_questions import boot_auroc  # noqa: E402

_RESULT = re.compile(r"^(.*(?:=|A:\s*))(-?\d+)\s*$")  # the line up to its result, and the result


def detect(case: dict, threshold: float | None) -> int | None:
    """The first line whose confidence is below `threshold`, else the least confident line (a wrong
    final answer has a wrong step somewhere); None for a right final answer. threshold None: argmin."""
    if not case["final_bad"]:
        return None
    lines = case["lines"]
    if threshold is not None:
        below = next((i for i, c in enumerate(lines) if c < threshold), None)
        if below is not None:
            return below
    return min(range(len(lines)), key=lambda i: lines[i])


def first_error_rules(cases: dict, reps: int) -> dict:
    """F1 of the detected first wrong step: every threshold on validation, the best once on test;
    95% intervals with prompts resampled (benchmarks/mc_label_rules.bootstrap)."""
    from mc_label_rules import bootstrap, f1_of

    out = {}
    grid = [None] + [round(0.05 * k, 2) for k in range(2, 20)]
    if "validation" in cases:
        scored = []
        for t in grid:
            rows = [(detect(c, t), c["truth"], c["prompt_id"]) for c in cases["validation"]]
            scored.append((f1_of(rows)["f1"], t, rows))
        best_f1, best_t, rows = max(scored, key=lambda x: (x[0], x[1] is None))
        lo, hi = bootstrap(rows, reps)
        out["validation"] = {"threshold": best_t, "f1": round(best_f1, 4), "ci95": [round(lo, 4), round(hi, 4)],
                             "argmin_f1": round(scored[0][0], 4), "n_responses": len(rows)}
        print(f"first error, validation: best threshold {best_t} F1 {best_f1:.3f} [{lo:.3f}, {hi:.3f}] "
              f"(argmin alone {scored[0][0]:.3f}), n {len(rows)} responses", flush=True)
    else:
        best_t = None
    for split in (s for s in cases if s != "validation"):
        rows = [(detect(c, best_t), c["truth"], c["prompt_id"]) for c in cases[split]]
        f = f1_of(rows)
        lo, hi = bootstrap(rows, reps)
        out[split] = {"threshold": best_t, "f1": round(f["f1"], 4), "ci95": [round(lo, 4), round(hi, 4)],
                      "precision": f["precision"], "recall": f["recall"], "n_responses": len(rows)}
        print(f"first error, {split} at threshold {best_t}: F1 {f['f1']:.3f} [{lo:.3f}, {hi:.3f}], "
              f"n {len(rows)} responses", flush=True)
    return out


def main(argv=None) -> None:
    import pyarrow.parquet as pq

    from prefsynth.backends.factory import make_backend
    from prefsynth.config import load_params
    from prefsynth.step_local import step_local_correct
    from prefsynth.tasks import get_task
    from prefsynth.transforms import judges as J
    from prefsynth.transforms.label_beam import judge_target

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default="models/policy-0")
    ap.add_argument("--prompts", default="data/prompts")
    ap.add_argument("--splits", nargs="+", default=["validation", "test"])
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--max-prompts", type=int, default=None)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-p-true", action="store_true", help="skip P(True) (slow on a real model's long prompts)")
    args = ap.parse_args(argv)

    params = load_params("params.yaml")
    backend = make_backend(params.policy, args.policy)
    task = get_task("arith")
    templates = J.load_templates(None)
    t0 = time.time()
    results, cases = {}, {}
    for split in args.splits:
        prompts = sorted((p for p in pq.read_table(args.prompts).to_pylist() if p["split"] == split),
                         key=lambda p: p["prompt_id"])[:args.max_prompts]
        by_id = {p["prompt_id"]: p for p in prompts}
        steps = []  # (response id, prompt, steps, i, local truth, no-error-so-far truth)
        responses = sample_heldout(backend, params, task, prompts, args.samples, "bench/step_confidence")
        for r in responses:
            p, ss = by_id[r["prompt_id"]], r["steps"]
            r["prompt"] = p
            local = step_local_correct(task, p, ss)
            so_far = task.verify_steps(p, ss).step_correct
            for i in range(len(ss)):
                steps.append((r["response_id"], p["prompt"], ss, i, bool(local[i]), bool(so_far[i])))
        ctx = [prompt + "".join(x + "\n" for x in ss[:i]) for _, prompt, ss, i, _, _ in steps]
        line_lp, line_mean = line_logprobs(backend, ctx, [ss[i] for _, _, ss, i, _, _ in steps])
        masked = [(k, _RESULT.match(ss[i])) for k, (_, _, ss, i, _, _) in enumerate(steps)]
        masked = [(k, m) for k, m in masked if m]
        res_lp = dict(zip((k for k, _ in masked),
                          backend.score([ctx[k] + m.group(1) for k, m in masked], [m.group(2) for _, m in masked])))
        targets = [judge_target(r, r["prompt"]) for r in responses]
        # the label stage's judge with `label.judge.step_confidence_span: result`: the running minimum of
        # each step's result probability ("no error so far"; its response row: the least likely result)
        judged = {}
        for s in range(0, len(targets), 512):
            for row in J.judge_step_confidence(targets[s:s + 512], backend, span="result").rows:
                judged[(row["target_id"], row["step_index"])] = row["score"]
        pt = {}
        for s in range(0, 0 if args.no_p_true else len(targets), 512):
            for row in J.judge_p_true(targets[s:s + 512], backend, templates, True).rows:
                pt[(row["target_id"], row["step_index"])] = row["score"]
        def running_min(vals):
            out, prev_rid, cur = [], None, 0.0
            for v, (rid, *_rest) in zip(vals, steps):
                cur = v if rid != prev_rid else min(cur, v)
                out.append(cur)
                prev_rid = rid
            return out

        scores = {
            "result_logprob (masked recomputation)": [res_lp.get(k) for k in range(len(steps))],
            "line_logprob": line_lp,
            "line_mean_token_logprob": line_mean,
            "running_min_line_logprob": running_min(line_lp),
            "running_min_line_mean_logprob": running_min(line_mean),
            "judge step_confidence span=result": [judged.get((rid, i)) for rid, _, _, i, _, _ in steps],
        }
        if not args.no_p_true:
            scores["p_true (OK? yes)"] = [pt.get((rid, i)) for rid, _, _, i, _, _ in steps]
        # response truth: the final answer, scored by the last step's value (running minima: the whole response)
        last = {st[0]: k for k, st in enumerate(steps)}
        answer_ok = {r["response_id"]: task.answers_match(task.extract_answer(r["text"]), r["prompt"]["reference_answer"])
                     for r in responses}
        block = {"n_responses": len(responses), "n_steps": len(steps)}
        for name, vals in scores.items():
            for truth, col in (("step_local", 4), ("no_error_so_far", 5), ("response", None)):
                if col is None:
                    if name.startswith("p_true"):
                        vals_r = [(rid, pt.get((rid, None)), answer_ok[rid]) for rid in last]
                    elif name.startswith("judge"):
                        vals_r = [(rid, judged.get((rid, None)), answer_ok[rid]) for rid in last]
                    else:
                        vals_r = [(rid, vals[k], answer_ok[rid]) for rid, k in last.items()]
                    items = [x for x in vals_r if x[1] is not None]
                else:
                    items = [(st[0], v, st[col]) for st, v in zip(steps, vals) if v is not None]
                point, ci = boot_auroc(items, args.boot)
                block[f"{name} vs {truth}"] = {"n": len(items), "auroc": round(point, 4),
                                               "ci95": [round(ci[0], 4), round(ci[1], 4)],
                                               "true_rate": round(sum(y for _, _, y in items) / len(items), 4)}
                print(f"{split:<11}{name:<40} vs {truth:<16} n={len(items):>6} AUROC {point:.3f} "
                      f"[{ci[0]:.3f}, {ci[1]:.3f}]", flush=True)
        # first-error location (as benchmarks/mc_label_rules.py scores MC labels): a response whose final
        # answer is wrong (the reference gates, as it gates the MC search) gets a detected first wrong step
        by_rid: dict[str, list[float]] = {}
        for v, st in zip(line_mean, steps):
            by_rid.setdefault(st[0], []).append(v)
        cases[split] = [{"prompt_id": r["prompt_id"], "lines": by_rid[r["response_id"]],
                         "truth": task.verify_steps(r["prompt"], r["steps"]).first_wrong_step,
                         "final_bad": not answer_ok[r["response_id"]]} for r in responses]
        results[split] = block
        print(f"  {split}: {len(responses)} responses, {len(steps)} steps, {time.time() - t0:.0f} s", flush=True)
    results["first_error"] = first_error_rules(cases, args.boot)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"policy": args.policy, "samples": args.samples, **results}, indent=2))


if __name__ == "__main__":
    main()
