"""The confidence critic on held-out solutions: does the policy's least likely step locate the first
wrong one? (issue 17's critic goal: >= 0.7 on held-out prompts)

Samples the policy on the validation and test prompts (k per prompt, the generate stage's settings,
`heldout.sample_heldout`), scores every step with the critic's own functions
(`judges.step_confidences`, `confidence_critic.locate`), and reports critique accuracy as the
critiques stage does (`critique_accuracy`: located on truly wrong / truly right solutions), with 95%
bootstrap intervals (prompts resampled). Rules:

    reference   the critiques stage default (`use_reference: true`): a wrong final answer's least
                confident step; a right one is `correct`
    threshold   no reference: the first step below t, else `correct`; t chosen on validation, test once

With `--critic models/critic` the tiny trained critic critiques the same responses (its generate
verdict, as the critiques stage runs it), for a paired comparison; a fixed guess (a wrong answer's
first step, same reference) is the floor. A check runs the stage's batch
function (`ConfidenceCritiqueBatch`) on the first responses and asserts it locates the same steps.

    .venv/bin/python benchmarks/confidence_critic.py --samples 8 --critic models/critic \
        --json benchmarks/out/confidence_critic.json
    # a real model (a project with the examples/arith-smollm2 profile and its prompts):
    python benchmarks/confidence_critic.py --policy models/smollm2-135m-instruct --span result --samples 2 \
        --max-prompts 60
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from heldout import sample_heldout  # noqa: E402


def located_ci(rows: list[tuple[str, object, object]], reps: int, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the located rate over (prompt id, predicted, truth) rows, prompts resampled."""
    by: dict[str, list[bool]] = {}
    for pid, pred, truth in rows:
        by.setdefault(pid, []).append(pred == truth)
    keys = sorted(by)
    rng = random.Random(seed)
    vals = []
    for _ in range(reps):
        hits = [h for k in rng.choices(keys, k=len(keys)) for h in by[k]]
        vals.append(sum(hits) / len(hits) if hits else 0.0)
    vals.sort()
    return vals[int(0.025 * reps)], vals[int(0.975 * reps) - 1]


def summary(rows: list[tuple[str, object, object]], reps: int) -> dict:
    """Located accuracy on truly wrong and truly right solutions and verdict accuracy, with intervals."""
    from prefsynth.transforms.critiques import critique_accuracy

    acc = critique_accuracy([(p, t) for _, p, t in rows])
    wrong = [r for r in rows if r[2] is not None]
    right = [r for r in rows if r[2] is None]
    out = {"n": acc["n"], "n_truly_wrong": acc["n_truly_wrong"], "n_truly_correct": acc["n_truly_correct"],
           "located_truly_wrong": acc["truly_wrong"]["located_accuracy"],
           "located_truly_wrong_ci95": [round(x, 4) for x in located_ci(wrong, reps)] if wrong else None,
           "located_truly_right": acc["truly_correct"]["located_accuracy"],
           "located_truly_right_ci95": [round(x, 4) for x in located_ci(right, reps)] if right else None,
           "located_all": acc["located_accuracy"], "located_all_ci95": [round(x, 4) for x in located_ci(rows, reps)]}
    return out


def line(name: str, s: dict) -> str:
    w, r = s["located_truly_wrong_ci95"] or [0, 0], s["located_truly_right_ci95"] or [0, 0]
    return (f"{name:<34} truly wrong {s['located_truly_wrong']:.3f} [{w[0]:.3f}, {w[1]:.3f}] n={s['n_truly_wrong']:<5}"
            f" truly right {s['located_truly_right']:.3f} [{r[0]:.3f}, {r[1]:.3f}] n={s['n_truly_correct']:<5}"
            f" all {s['located_all']:.3f}")


def tiny_critic_predictions(critic: str, params, responses: list[dict], prompts: dict) -> dict:
    """The trained critic's located step per response (generate verdict; unparseable -> 'unparseable')."""
    from prefsynth.backends.base import GenerationFailure, SamplingParams
    from prefsynth.backends.factory import make_backend
    from prefsynth.transforms.critiques import UNPARSEABLE, CritiqueBatch, CritiqueParseError, parse_verdict

    cfg = params.critiques
    backend = make_backend(cfg.model_critic, critic)
    batch_fn = CritiqueBatch(cfg.model_critic, critic, None, SamplingParams(n=1, temperature=0.0,
                             max_new_tokens=cfg.max_new_tokens), params.seed, verdict=cfg.verdict)
    out = {}
    for s in range(0, len(responses), 256):
        chunk = [(r, prompts[r["prompt_id"]]) for r in responses[s:s + 256]]
        for pair, res in zip(chunk, batch_fn(chunk, backend)):
            _, text = res.inference
            try:
                out[pair[0]["response_id"]] = UNPARSEABLE if isinstance(text, GenerationFailure) else \
                    parse_verdict(text, len(pair[0]["steps"]))
            except CritiqueParseError:
                out[pair[0]["response_id"]] = UNPARSEABLE
    return out


def main(argv=None) -> None:
    import pyarrow.parquet as pq

    from prefsynth.backends.factory import make_backend
    from prefsynth.config import load_params
    from prefsynth.config.critiques import ConfidenceCriticConfig
    from prefsynth.tasks import get_task
    from prefsynth.transforms.confidence_critic import ConfidenceCritiqueBatch, final_answer_wrong, locate
    from prefsynth.transforms.judges import step_confidences
    from prefsynth.transforms.label_beam import judge_target

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default="models/policy-0")
    ap.add_argument("--prompts", default="data/prompts")
    ap.add_argument("--span", default="line", choices=["line", "result"])
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--max-prompts", type=int, default=None)
    ap.add_argument("--critic", default=None, help="also the trained critic (e.g. models/critic), same responses")
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    params = load_params("params.yaml")
    backend = make_backend(params.policy, args.policy)
    task = get_task("arith")
    grid = [round(0.05 * k, 2) for k in range(1, 20)]
    t0 = time.time()
    results: dict = {"policy": args.policy, "span": args.span, "samples": args.samples}
    best_t = None
    for split in ("validation", "test"):
        prompts = sorted((p for p in pq.read_table(args.prompts).to_pylist() if p["split"] == split),
                         key=lambda p: p["prompt_id"])[:args.max_prompts]
        by_id = {p["prompt_id"]: p for p in prompts}
        responses = sample_heldout(backend, params, task, prompts, args.samples, "bench/confidence_critic")
        for r in responses:
            r["steps"] = list(r["steps"])
        targets = [judge_target(r, by_id[r["prompt_id"]]) for r in responses]
        conf, failures = {}, []
        for s in range(0, len(targets), 512):
            c, f = step_confidences(targets[s:s + 512], backend, args.span)
            conf.update(c)
            failures += f
        scored = [r for r in responses if r["response_id"] in conf]
        truth = {r["response_id"]: task.verify_steps(by_id[r["prompt_id"]], r["steps"]).first_wrong_step for r in scored}
        wrong = {r["response_id"]: final_answer_wrong(by_id[r["prompt_id"]], r["text"]) for r in scored}

        def rows(final, t):
            return [(r["prompt_id"], locate(conf[r["response_id"]], final(r), t), truth[r["response_id"]])
                    for r in scored]

        block = {"n_responses": len(responses), "n_scored": len(scored), "n_unscored": len(failures)}
        block["reference"] = summary(rows(lambda r: wrong[r["response_id"]], 0.5), args.boot)
        print(line(f"{split} reference", block["reference"]), flush=True)
        # what locating buys over a fixed guess, given the same reference: always the first step
        block["first_step_baseline"] = summary(
            [(r["prompt_id"], 0 if wrong[r["response_id"]] else None, truth[r["response_id"]]) for r in scored], args.boot)
        print(line(f"{split} baseline: step 1", block["first_step_baseline"]), flush=True)
        if split == "validation":  # the no-reference threshold, chosen here
            by_t = {t: summary(rows(lambda r: None, t), args.boot) for t in grid}
            best_t = max(grid, key=lambda t: (by_t[t]["located_all"], -t))
            block["threshold_grid"] = {str(t): by_t[t]["located_all"] for t in grid}
        block["threshold"] = {"t": best_t, **summary(rows(lambda r: None, best_t), args.boot)}
        print(line(f"{split} threshold {best_t}", block["threshold"]), flush=True)
        if args.critic:
            pred = tiny_critic_predictions(args.critic, params, scored, by_id)
            block["trained_critic"] = summary([(r["prompt_id"], pred[r["response_id"]], truth[r["response_id"]])
                                               for r in scored], args.boot)
            print(line(f"{split} trained critic", block["trained_critic"]), flush=True)
        # the stage's batch function locates the same steps (no redo: the location only)
        check = [(r, by_id[r["prompt_id"]]) for r in scored[:64]]
        cfg = ConfidenceCriticConfig(span=args.span, recompute_tokens=0)
        got = [res.inference[1] for res in ConfidenceCritiqueBatch(None, args.policy, cfg, params.seed)(check, backend)]
        want = [locate(conf[r["response_id"]], wrong[r["response_id"]], 0.5) for r, _ in check]
        assert got == want, "ConfidenceCritiqueBatch disagrees with step_confidences + locate"
        results[split] = block
        print(f"  {split}: {len(responses)} responses ({len(failures)} unscored), {time.time() - t0:.0f} s", flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
