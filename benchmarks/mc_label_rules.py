"""Which Monte-Carlo decision rule locates the first wrong step best, at what rollout cost (issue 17).

Two parts:

  collect  sample responses of policy-0 on the VALIDATION and TEST prompts (the label stage's own
           responses are all on train prompts), roll out K completions from every step prefix and
           record every rollout's final answer, plus the P(True) self-evaluation of every step.
           Saved as JSON lines (one response a line) so that any rule and any k <= K can be
           simulated offline: probes are seeded per (response, step) exactly as in the label
           stage, so a search that probes a subset of prefixes sees the same values.
  rules    F1 of the detected first wrong step (prefsynth.transforms.mc_labels.detection_scores)
           and rollouts per response for each candidate rule, with a 95% bootstrap interval
           (prompts resampled), on validation; the chosen rule once on test. `--committed` also
           replays the rules on the committed label-stage data (train prompts, K=8) as a check
           that the simulation reproduces metrics/round-1/labels.json.

    .venv/bin/python benchmarks/mc_label_rules.py collect --out /tmp/mcb/rollouts.jsonl
    .venv/bin/python benchmarks/mc_label_rules.py rules --data /tmp/mcb/rollouts.jsonl --committed
    .venv/bin/python benchmarks/mc_label_rules.py collect --out /tmp/mcb/val_k32.jsonl --splits validation \
        --rollouts 32 --no-p-true
    .venv/bin/python benchmarks/mc_label_rules.py scaling --data /tmp/mcb/val_k32.jsonl

A completer stronger than the policy (`label.mc.model`): e.g. policy-0 trained longer, in a clone of
the project with `bootstrap.max_steps: 4800` and `dvc repro bootstrap` (validation greedy 0.878 against
the default's 0.460); the policy still samples the responses and scores its own lines:

    .venv/bin/python benchmarks/mc_label_rules.py collect --out /tmp/mcb/strong.jsonl --no-p-true \
        --completer /tmp/strong/models/policy-0
    .venv/bin/python benchmarks/mc_label_rules.py rules --data /tmp/mcb/strong.jsonl

`collect` also stores each line's mean token log-prob under the policy (the step_confidence judge's
score), so `rules` adds the least confident line (no rollouts), a bisection that splits at the least
confident line of the interval (`guided`), and MC where the least confident line agrees (abstain
elsewhere).
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from heldout import line_logprobs, sample_heldout  # noqa: E402


# ---- collect -------------------------------------------------------------------------------------

def collect(args) -> None:
    import pyarrow.parquet as pq

    from prefsynth.backends.base import SamplingParams
    from prefsynth.backends.factory import make_backend
    from prefsynth.config import load_params
    from prefsynth.ids import seed_for
    from prefsynth.tasks import get_task
    from prefsynth.transforms import judges as J
    from prefsynth.transforms.label_beam import judge_target

    try:
        params = load_params("params.yaml")
    except ValueError as e:  # params.yaml mid-edit by someone else: the built-in defaults (same values here)
        print(f"params.yaml unreadable ({e}); using the built-in defaults", flush=True)
        params = load_params(None)
    print(f"seed {params.seed}, sampling T={params.generate.temperature}, rollouts T={params.label.mc.temperature}",
          flush=True)
    backend = make_backend(params.policy, args.policy)
    # the completer rolls out (label.mc.model); the policy samples, judges and scores its own steps
    completer = make_backend(params.policy, args.completer) if args.completer else backend
    print(f"completer: {args.completer or args.policy}", flush=True)
    task = get_task("arith")
    prompts = [p for p in pq.read_table(args.prompts).to_pylist() if p["split"] in args.splits]
    prompts.sort(key=lambda p: p["prompt_id"])
    if args.max_prompts:
        prompts = prompts[:args.max_prompts]
    t0 = time.time()
    responses = sample_heldout(backend, params, task, prompts, args.samples, "bench/mc_rules/sample")
    print(f"{len(responses)} responses of {len(prompts)} prompts in {time.time() - t0:.0f} s", flush=True)
    by_prompt = {p["prompt_id"]: p for p in prompts}
    # every non-final prefix, K rollouts, seeded as the label stage seeds them (seed_for(seed, id, mc/i))
    # (a right final answer ends every gated search at no cost: only wrong answers are rolled out)
    todo = [(r, i) for r in responses if not task.answers_match(r["final_answer"], r["reference"])
            for i in range(len(r["steps"]) - 1)]
    mc = params.label.mc
    temperature = mc.temperature if args.rollout_temperature is None else args.rollout_temperature
    sp = SamplingParams(n=args.rollouts, temperature=temperature, max_new_tokens=mc.max_new_tokens)
    answers: dict[tuple[str, int], list] = {}
    for s in range(0, len(todo), args.chunk):
        chunk = todo[s:s + args.chunk]
        ctx = [by_prompt[r["prompt_id"]]["prompt"] + "".join(x + "\n" for x in r["steps"][:i + 1]) for r, i in chunk]
        out = completer.generate(ctx, sp, [seed_for(params.seed, r["response_id"], f"mc/{i}") for r, i in chunk])
        for (r, i), group in zip(chunk, out):
            prefix = "\n".join(r["steps"][:i + 1]) + "\n"
            answers[(r["response_id"], i)] = [task.extract_answer(prefix + c.text) for c in group]
        print(f"  rollouts {s + len(chunk)}/{len(todo)} prefixes, {time.time() - t0:.0f} s", flush=True)
    # P(True) of every step prefix (the native self-evaluation the label stage asks)
    templates = J.load_templates(None)
    targets = [judge_target({**r, "steps": r["steps"]}, by_prompt[r["prompt_id"]]) for r in responses]
    pt: dict[tuple[str, int | None], float] = {}
    for s in range(0, 0 if args.no_p_true else len(targets), 512):
        res = J.judge_p_true(targets[s:s + 512], backend, templates, True)
        for row in res.rows:
            pt[(row["target_id"], row["step_index"])] = row["score"]
    # each line's mean token log-prob under the policy (the step_confidence judge's score, before exp)
    ctx = [by_prompt[r["prompt_id"]]["prompt"] + "".join(x + "\n" for x in r["steps"][:i])
           for r in responses for i in range(len(r["steps"]))]
    _, means = line_logprobs(backend, ctx, [x for r in responses for x in r["steps"]])
    confidences, at = {}, 0
    for r in responses:
        confidences[r["response_id"]] = means[at:at + len(r["steps"])]
        at += len(r["steps"])
    with open(args.out, "w") as f:
        for r in responses:
            verdict = task.verify_steps(by_prompt[r["prompt_id"]], r["steps"])
            r.update(first_wrong=verdict.first_wrong_step, step_ok=verdict.step_correct,
                     answer_correct=verdict.answer_correct,
                     rollout_answers=[answers.get((r["response_id"], i)) for i in range(len(r["steps"]) - 1)],
                     p_true_response=pt.get((r["response_id"], None)),
                     p_true_steps=[pt.get((r["response_id"], i)) for i in range(len(r["steps"]))],
                     line_confidence=confidences[r["response_id"]], completer=args.completer or args.policy)
            f.write(json.dumps(r) + "\n")
    print(f"wrote {len(responses)} responses to {args.out} in {time.time() - t0:.0f} s")


# ---- rules ---------------------------------------------------------------------------------------

# A response as the rules see it: n steps, the truth, and per non-final prefix the rollout outcomes
# (1 reached the reference, "own" reached the response's own wrong answer). The final step's value
# is free (its own answer decides), so a rule only pays k rollouts per non-final prefix it probes.

def _case(r: dict, k: int) -> dict:
    from prefsynth.tasks.arith import answers_match

    n = len(r["steps"])
    ref, own = r["reference"], r["final_answer"]
    final_bad = not answers_match(own, ref)
    v, a = [], []
    for ans in r["rollout_answers"]:
        if ans is None:  # not rolled out (right final answer): no gated rule probes it
            v.append(None)
            a.append(None)
            continue
        ans = ans[:k]
        v.append(sum(answers_match(x, ref) for x in ans) / len(ans))
        # no own answer (no A: line): the value alone decides, as in mc_labels._probe
        a.append(sum(answers_match(x, own) for x in ans) / len(ans) if own is not None else 1.0)
    return {"prompt_id": r["prompt_id"], "n": n, "truth": r["first_wrong"], "final_bad": final_bad, "v": v, "a": a,
            "pt": r.get("p_true_steps") or [None] * n, "conf": r.get("line_confidence"), "k": k}


def committed_cases(labels="data/round-1/labels", responses="data/round-1/responses", prompts="data/prompts") -> list:
    """The label stage's own MC data (train prompts): the mc_every soft values (K=8) of every prefix."""
    import pyarrow.parquet as pq

    from prefsynth.tasks import get_task

    task = get_task("arith")
    R = {r["response_id"]: r for r in pq.read_table(responses).to_pylist()}
    P = {p["prompt_id"]: p for p in pq.read_table(prompts).to_pylist()}
    ev, pt = collections.defaultdict(dict), collections.defaultdict(dict)
    for row in pq.read_table(labels).to_pylist():
        if row["labeler"] == "mc_every":
            ev[row["target_id"]][row["step_index"]] = row["score"]
        elif row["labeler"] == "p_true" and row["target_kind"] == "step":
            pt[row["target_id"]][row["step_index"]] = row["score"]
    out = []
    for rid, vals in sorted(ev.items()):
        resp, n = R[rid], len(R[rid]["steps"])
        prompt = P[resp["prompt_id"]]
        truth = task.verify_steps(prompt, list(resp["steps"])).first_wrong_step
        out.append({"prompt_id": resp["prompt_id"], "n": n, "truth": truth, "final_bad": vals[n - 1] == 0.0,
                    "v": [vals[i] for i in range(n - 1)], "a": [None] * (n - 1),
                    "pt": [pt[rid].get(i) for i in range(n)], "k": 8, "ungated_every": True})
    return out


def bad_predicate(kind: str, t: float, s: float):
    """Is prefix i bad? value: soft value <= t (t=0: Math-Shepherd's hard label, "no rollout reaches
    the answer"); own: at least a share s of rollouts reach the response's own (wrong) final answer
    (the error is already committed in the prefix); both: value <= t and own >= s."""
    if kind == "value":
        return lambda c, i: c["v"][i] <= t + 1e-9
    if kind == "own":
        return lambda c, i: c["a"][i] >= s - 1e-9
    if kind == "both":
        return lambda c, i: c["v"][i] <= t + 1e-9 and c["a"][i] >= s - 1e-9
    raise ValueError(kind)


def search(c: dict, bad, how: str) -> tuple[int | None, int]:
    """(predicted first wrong step, probes paid) of one search rule over the prefixes of case c.

    Every search is gated by the free final check (a right answer: no error, nothing spent) except
    Math-Shepherd's `every`, which probes all prefixes of all responses (the label stage's default).
    binary: OmegaPRM bisection on [0, n-1) assuming bad stays bad; forward: probe 0, 1, ... and stop
    at the first bad prefix; backward: probe n-2, n-3, ... and stop at the first good one; prior:
    no rollouts, the step where errors are most often (chosen on validation: see `prior_step`)."""
    n, m = c["n"], c["n"] - 1
    if how == "every_ungated":
        if c.get("ungated_every") is None and not c["final_bad"]:
            return None, m  # not rolled out here; a right answer's prefixes essentially always have value > 0
        for i in range(m):
            if bad(c, i):
                return i, m
        return (m if c["final_bad"] else None), m
    if not c["final_bad"]:
        return None, 0
    if how == "every":
        return next((i for i in range(m) if bad(c, i)), m), m
    if how == "forward":
        for i in range(m):
            if bad(c, i):
                return i, i + 1
        return m, m
    if how == "backward":
        for probes, i in enumerate(range(m - 1, -1, -1), start=1):
            if not bad(c, i):
                return i + 1, probes
        return 0, m
    if how == "binary":
        lo, hi, probes = 0, m, 0  # the final prefix (index m) is known bad
        while lo < hi:
            mid = (lo + hi) // 2
            probes += 1
            if bad(c, mid):
                hi = mid
            else:
                lo = mid + 1
        return lo, probes
    if how == "guided":
        # bisection whose split is the policy's least confident line in the interval (step confidence
        # as the prior, rollouts as the check): [lo, hi] holds the first error, prefix hi is bad
        lo, hi, probes, conf = 0, m, 0, c["conf"]
        while lo < hi:
            j = min(range(lo, hi + 1), key=lambda i: conf[i])
            probes += 1
            if j > lo:  # is the error before j?
                if bad(c, j - 1):
                    hi = j - 1
                else:
                    lo = j
            elif bad(c, j):  # j == lo < hi: is it at lo?
                hi = j
            else:
                lo = j + 1
        return lo, probes
    if how == "argmin":
        return min(range(n), key=lambda i: c["conf"][i]), 0
    if how.startswith("prior"):
        return min(int(how.split(":")[1]), m), 0
    raise ValueError(how)


def judge_first_error(c: dict, q: float) -> int | None:
    """The P(True) judge's first wrong step: the first step whose P(yes) < q (None: all judged right)."""
    return next((i for i, p in enumerate(c["pt"]) if p is not None and p < q), None)


def evaluate(cases: list, rule) -> tuple[list, float]:
    """[(pred, truth, prompt_id)], rollouts per response."""
    rows, spent = [], 0
    for c in cases:
        pred, probes = rule(c)
        rows.append((pred, c["truth"], c["prompt_id"]))
        spent += probes * c["k"]
    return rows, spent / len(cases)


def f1_of(rows) -> dict:
    from prefsynth.transforms.mc_labels import detection_scores

    return detection_scores([(p, t) for p, t, _ in rows])


def bootstrap(rows, reps: int, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of F1, prompts resampled (a prompt's responses move together)."""
    by = collections.defaultdict(list)
    for r in rows:
        by[r[2]].append((r[0], r[1]))
    keys = sorted(by)
    rng = random.Random(seed)
    vals = []
    for _ in range(reps):
        tp = fp = fn = 0
        for key in rng.choices(keys, k=len(keys)):
            for pred, true in by[key]:
                tp += pred is not None and pred == true
                fp += pred is not None and pred != true
                fn += true is not None and pred != true
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        vals.append(2 * p * r / (p + r) if p and r else 0.0)
    vals.sort()
    return vals[int(0.025 * reps)], vals[int(0.975 * reps) - 1]


def paired_delta(rows_a, rows_b, reps: int, seed: int = 0) -> tuple[float, float]:
    """95% interval of F1(a) - F1(b) on the same responses, prompts resampled together."""
    def f1(pairs):
        tp = sum(p is not None and p == t for p, t in pairs)
        fp = sum(p is not None and p != t for p, t in pairs)
        fn = sum(t is not None and p != t for p, t in pairs)
        pr, rc = (tp / (tp + fp) if tp + fp else 0.0), (tp / (tp + fn) if tp + fn else 0.0)
        return 2 * pr * rc / (pr + rc) if pr and rc else 0.0

    by = collections.defaultdict(list)
    for a, b in zip(rows_a, rows_b):
        assert a[1:] == b[1:]
        by[a[2]].append(((a[0], a[1]), (b[0], b[1])))
    keys = sorted(by)
    rng = random.Random(seed)
    vals = []
    for _ in range(reps):
        pick = [x for k in rng.choices(keys, k=len(keys)) for x in by[k]]
        vals.append(f1([x for x, _ in pick]) - f1([y for _, y in pick]))
    vals.sort()
    return vals[int(0.025 * reps)], vals[int(0.975 * reps) - 1]


def candidate_rules(ks, with_own: bool, with_judge: bool, with_confidence: bool = False):
    """name -> (k, rule(case) -> (pred, probes))."""
    grid_t = [0.0, 0.125, 0.25, 0.375, 0.5]
    grid_s = [0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0]
    out = {}
    searches = ("every_ungated", "every", "forward", "backward", "binary") + (("guided",) if with_confidence else ())
    for k in ks:
        for how in searches:
            for t in grid_t:
                b = bad_predicate("value", t, 0)
                out[f"k={k} {how} value<={t:g}"] = (k, lambda c, b=b, how=how: search(c, b, how))
            if with_own:
                for s in grid_s:
                    b = bad_predicate("own", 0, s)
                    out[f"k={k} {how} own>={s:g}"] = (k, lambda c, b=b, how=how: search(c, b, how))
                    for t in (0.0, 0.125, 0.25):
                        b = bad_predicate("both", t, s)
                        out[f"k={k} {how} value<={t:g}&own>={s:g}"] = (k, lambda c, b=b, how=how: search(c, b, how))
    for j in range(4):
        out[f"prior step {j} (no rollouts)"] = (8, lambda c, j=j: search(c, None, f"prior:{j}"))
    if with_confidence:
        out["step confidence argmin (gated, no rollouts)"] = (8, lambda c: search(c, None, "argmin"))
    if with_judge:
        for q in (0.3, 0.4, 0.45, 0.5, 0.55):
            out[f"p_true first step < {q:g} (gated, no rollouts)"] = (
                8, lambda c, q=q: ((judge_first_error(c, q) if c["final_bad"] else None), 0))
    return out


def confidence_consensus(rule):
    """The MC rule's first error where the policy's least confident line agrees, else no label."""
    def run(c):
        pred, probes = rule(c)
        if pred is not None and search(c, None, "argmin")[0] != pred:
            return None, probes
        return pred, probes
    return run


def consensus(rule, q: float):
    """The MC rule's first error where the P(True) judge agrees on it (its first step with P(yes) < q),
    else no label: the Qwen PRM-lessons filter, as abstention."""
    def run(c):
        pred, probes = rule(c)
        if pred is not None and judge_first_error(c, q) != pred:
            return None, probes
        return pred, probes
    return run


def load_cases(path: str, split: str, k: int) -> list:
    with open(path) as f:
        return [_case(r, k) for r in map(json.loads, f) if r["split"] == split]


def rules(args) -> None:
    sets = {}
    for split in ("validation", "test"):
        sets[split] = {k: load_cases(args.data, split, k) for k in (2, 4, 8)}
    with_conf = all(c["conf"] is not None for c in sets["validation"][8])
    rules_ = candidate_rules((2, 4, 8), True, True, with_conf)

    def run(split, only=None):
        results = []
        for label, (k, rule) in rules_.items():
            if only is not None and label not in only:
                continue
            rows, cost = evaluate(sets[split][k], rule)
            sc = f1_of(rows)
            results.append({"rule": label, "k": k, **{x: sc[x] for x in ("f1", "precision", "recall", "tp", "fp", "fn")},
                            "rollouts_per_response": round(cost, 2), "responses": len(rows), "_rows": rows})
        results.sort(key=lambda r: (-r["f1"], r["rollouts_per_response"]))
        return results

    def show(title, results, cases, n_show):
        print(f"\n== {title}: {len(cases)} responses of {len({c['prompt_id'] for c in cases})} prompts, "
              f"{sum(c['truth'] is not None for c in cases)} with a wrong step ==")
        for r in results[:n_show]:
            r["ci"] = bootstrap(r["_rows"], args.boot)
            print(f"  F1 {r['f1']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]  P {r['precision'] or 0:.3f} "
                  f"R {r['recall'] or 0:.3f}  {r['rollouts_per_response']:5.2f} rollouts/resp  {r['rule']}")

    val = run("validation")
    baselines = ["k=8 every_ungated value<=0", "k=8 binary value<=0"]
    within = [r for r in val if r["rollouts_per_response"] <= args.budget]
    show("validation, best rules within budget", within, sets["validation"][8], 15)
    show("validation, the label stage's current rules", [r for r in val if r["rule"] in baselines],
         sets["validation"][8], 2)
    by_family = {}
    for r in within:
        fam = r["rule"].split(" ")[1] if r["rule"].startswith("k=") else r["rule"].split(" ")[0]
        by_family.setdefault(fam, r)
    show("validation, best of each search within budget", list(by_family.values()), sets["validation"][8], 20)
    # the MC decision rule is chosen among the rollout rules (the label stage's); step confidence alone
    # (no rollouts) is reported beside it
    chosen = next(r for r in within if r["rule"].startswith("k="))
    kinds = {}
    for r in within:
        if r["rule"].startswith("k="):
            pred = r["rule"].split(" ", 2)[2]
            kinds.setdefault("both" if "&" in pred else pred.split("<")[0].split(">")[0], r)
    show("validation, best rule of each predicate within budget", list(kinds.values()), sets["validation"][8], 5)
    pred = chosen["rule"].split(" ", 2)[2]
    same = [r for r in val if r["rule"].startswith("k=") and r["rule"].split(" ", 2)[2] in (pred, "value<=0")
            and r["rule"].split(" ")[0] in ("k=4", "k=8")]
    same.sort(key=lambda r: (r["rule"].split(" ")[0], r["rule"].split(" ")[1], r["rule"]))
    show(f"validation, the chosen predicate {pred!r} vs the hard one, by search and k (any cost)", same,
         sets["validation"][8], len(same))
    # consensus with the P(True) judge on the chosen rule (abstain where they disagree)
    k, rule = rules_[chosen["rule"]]
    cons = []
    for q in (0.4, 0.45, 0.5):
        rows, cost = evaluate(sets["validation"][k], consensus(rule, q))
        sc = f1_of(rows)
        cons.append({"rule": f"{chosen['rule']} + P(True)<{q:g} consensus", **sc, "rollouts_per_response": cost,
                     "_rows": rows})
    show("validation, consensus with the P(True) judge", cons, sets["validation"][8], 3)
    if with_conf:
        best_mc = next(r for r in within if r["rule"].startswith("k=") and " guided " not in r["rule"])
        k, rule = rules_[best_mc["rule"]]
        # the Qwen PRM-lessons filter: a label only where both agree
        rows, cost = evaluate(sets["validation"][k], confidence_consensus(rule))
        show("validation, the best unguided MC rule where step confidence's argmin agrees (abstain elsewhere)",
             [{"rule": f"{best_mc['rule']} + argmin consensus", **f1_of(rows), "rollouts_per_response": cost,
               "_rows": rows}], sets["validation"][8], 1)
    # the chosen predicate is the label stage's decision rule (label.mc.bad_value_max, bad_own_min); its
    # searches (label.methods) keep k=8: shown on test with the chosen predicate and with the hard one
    stage_rules = [f"k=8 {how} {p}" for how in ("binary", "every_ungated", "forward") for p in (pred, "value<=0")]
    extra = {"step confidence argmin (gated, no rollouts)"} if with_conf else set()
    test = run("test", only={chosen["rule"], *baselines, *stage_rules, *extra})
    show(f"TEST (once): the chosen rule {chosen['rule']!r}, and the label stage's searches (k=8) with the "
         f"chosen predicate and the hard one", test, sets["test"][8], len(test))
    by_rule = {r["rule"]: r for r in test}
    print("  paired F1 difference, chosen predicate - hard one (95% interval, prompts resampled):")
    for how in ("binary", "every_ungated", "forward"):
        a, b = by_rule[f"k=8 {how} {pred}"], by_rule[f"k=8 {how} value<=0"]
        lo, hi = paired_delta(a["_rows"], b["_rows"], args.boot)
        a["delta_vs_hard"] = {"f1": a["f1"] - b["f1"], "ci95": [lo, hi]}
        print(f"    {how:14s} {a['f1'] - b['f1']:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    stage = f"k=8 binary {pred}"
    if chosen["rule"] != stage:
        a, b = by_rule[chosen["rule"]], by_rule[stage]
        lo, hi = paired_delta(a["_rows"], b["_rows"], args.boot)
        a["delta_vs_stage_binary"] = {"f1": a["f1"] - b["f1"], "ci95": [lo, hi]}
        print(f"  paired F1 difference on test, chosen rule - {stage!r}: {a['f1'] - b['f1']:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    if args.committed:
        cases = committed_cases()
        res = []
        for label in [chosen["rule"], *baselines] if "own" not in chosen["rule"] else baselines:
            k, rule = rules_[label]
            if k != 8:
                continue
            rows, cost = evaluate(cases, rule)
            res.append({"rule": label, **f1_of(rows), "rollouts_per_response": cost, "_rows": rows})
        show("committed label-stage data (train prompts; K=8, no rollout answers stored)", res, cases, 3)
    if args.json:
        strip = lambda rs: [{k: v for k, v in r.items() if k != "_rows"} for r in rs]
        Path(args.json).write_text(json.dumps({"validation_within_budget": strip(within[:30]),
                                               "chosen": chosen["rule"], "test": strip(test)}, indent=1))


def scaling(args) -> None:
    """F1 of binary search and every-prefix as the rollouts per prefix grow (a ceiling on what more
    rollouts buy), with the hard and the own-answer predicate."""
    with open(args.data) as f:
        big = max(len(a) for r in map(json.loads, f) for a in r["rollout_answers"] if a)
    k = 8
    print(f"== {args.split}: rollouts per prefix k = 8 .. {big} ==")
    while k <= big:
        cases = load_cases(args.data, args.split, k)
        for how in ("binary", "every_ungated"):
            for label, b in (("value<=0", bad_predicate("value", 0, 0)),
                             ("value<=0&own>=0.125", bad_predicate("both", 0, 0.125))):
                rows, cost = evaluate(cases, lambda c, b=b, how=how: search(c, b, how))
                sc = f1_of(rows)
                print(f"  k={k:3d} {how:14s} {label:20s} F1 {sc['f1']:.3f}  {cost:6.2f} rollouts/resp  "
                      f"(n={len(rows)})")
        k *= 2


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--out", required=True)
    c.add_argument("--prompts", default="data/prompts")
    c.add_argument("--policy", default="models/policy-0", help="samples the responses and scores their lines")
    c.add_argument("--completer", default=None, help="rolls out from each prefix (label.mc.model); default: --policy")
    c.add_argument("--splits", nargs="+", default=["validation", "test"])
    c.add_argument("--samples", type=int, default=2, help="responses sampled per prompt")
    c.add_argument("--rollouts", type=int, default=8, help="K rollouts per prefix (rules may use the first k)")
    c.add_argument("--max-prompts", type=int, default=None)
    c.add_argument("--rollout-temperature", type=float, default=None, help="default: label.mc.temperature")
    c.add_argument("--no-p-true", action="store_true")
    c.add_argument("--chunk", type=int, default=1024, help="prefixes per generate call")
    r = sub.add_parser("rules")
    r.add_argument("--data", required=True)
    r.add_argument("--committed", action="store_true", help="also replay on data/round-1 (train prompts, K=8)")
    r.add_argument("--budget", type=float, default=10.0, help="most rollouts per response a chosen rule may spend")
    r.add_argument("--boot", type=int, default=1000)
    r.add_argument("--json", default=None, help="write the tables here")
    sc = sub.add_parser("scaling", help="more rollouts per prefix: the hard and the chosen predicate at k=8..K")
    sc.add_argument("--data", required=True, help="a collect output with --rollouts 32 (validation)")
    sc.add_argument("--split", default="validation")
    args = ap.parse_args(argv)
    {"collect": collect, "rules": rules, "scaling": scaling}[args.cmd](args)


if __name__ == "__main__":
    main()
