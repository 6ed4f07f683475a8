"""pairs stage: responses, labels and trees -> data/pairs/{response,step,kto,prm} (TRL formats).

Response-level pairs from label scores; step-level pairs from MCTS trees (highest- vs lowest-Q
siblings) and Step-DPO pairs at each response's first wrong step (arith: exact verifier).
Prompts with no contrast are dropped with that reason; metrics/pairs.json reports pair
precision against the ground truth where it exists.
"""

from __future__ import annotations

import argparse
import collections

import apache_beam as beam

from prefsynth.config import Params, load_params
from prefsynth.pipelines.stage import Output, run_stage, write_metrics
from prefsynth.schemas.io import ReadDataset, WriteDataset, read_records, read_table
from prefsynth.tasks import arith
from prefsynth.transforms.deadletters import count_dropped, count_in
from prefsynth.transforms.pairs import dedupe, kto_rows, prm_row, response_pairs, step_dpo_pairs, tree_step_pairs

STAGE = "pairs"


def pairs_for_prompt(element, params: Params):
    """(prompt_id, {prompts, responses, scores, nodes}) -> pair rows for one prompt."""
    _, g = element
    prompts = list(g["prompts"])
    responses = sorted(g["responses"], key=lambda r: r["response_id"])
    if not prompts or not responses:
        return  # prompts nobody sampled are not this stage's input
    count_in()
    prompt, cfg = prompts[0], params.pairs
    scores = dict(g["scores"])
    # unpaired (KTO) and stepwise (PRM) views of the same labelled responses
    for row in kto_rows(prompt, responses, scores, cfg.response_labeler):
        yield beam.pvalue.TaggedOutput("kto", row)
    if prompt["task"] == arith.NAME:
        problem = arith.parse_expression(prompt["prompt"])
        for r in responses:
            row = prm_row(prompt, r, arith.verify_solution(problem, list(r["steps"])).step_correct, "verifier_arith")
            if row:
                yield beam.pvalue.TaggedOutput("prm", row)
    rows = response_pairs(prompt, responses, scores, cfg.max_response_pairs, cfg.min_margin, cfg.response_labeler)
    rows += tree_step_pairs(prompt, list(g["nodes"]), cfg.min_q_gap)
    if prompt["task"] == arith.NAME and cfg.step_dpo:
        problem = arith.parse_expression(prompt["prompt"])
        for r in responses[:cfg.max_step_dpo_per_prompt]:
            v = arith.verify_solution(problem, list(r["steps"]))
            rows += step_dpo_pairs(prompt, r, v.step_correct, v.expected_steps)
    rows = dedupe(rows)
    if not rows:
        count_dropped("no_contrast")  # all samples scored alike and no tree siblings differ
        return
    yield from rows


def build(pipeline: beam.Pipeline, params: Params, paths: dict[str, str], out: dict[str, str]) -> None:
    labeler = params.pairs.response_labeler
    responses = pipeline | "ReadResponses" >> ReadDataset(paths["responses"])
    scores = (
        pipeline
        | "ReadLabels" >> ReadDataset(paths["labels"])
        | "ResponseLabels" >> beam.Filter(lambda l: l["target_kind"] == "response" and l["labeler"].startswith(labeler))
        | "KeyLabel" >> beam.Map(lambda l: (l["target_id"], l["score"]))
    )
    scores_by_prompt = (
        {"score": scores, "resp": responses | "KeyResp" >> beam.Map(lambda r: (r["response_id"], r["prompt_id"]))}
        | "JoinScores" >> beam.CoGroupByKey()
        | "ToPrompt" >> beam.FlatMap(lambda kv: [(pid, (kv[0], s)) for pid in kv[1]["resp"] for s in kv[1]["score"][:1]])
    )
    grouped = {
        "prompts": pipeline | "ReadPrompts" >> ReadDataset(paths["prompts"]) | "KeyP" >> beam.Map(lambda r: (r["prompt_id"], r)),
        "responses": responses | "KeyRP" >> beam.Map(lambda r: (r["prompt_id"], r)),
        "scores": scores_by_prompt,
        "nodes": pipeline | "ReadTrees" >> ReadDataset(paths["trees"]) | "KeyN" >> beam.Map(lambda n: (n["prompt_id"], n)),
    } | "ByPrompt" >> beam.CoGroupByKey()
    views = grouped | "Pairs" >> beam.FlatMap(pairs_for_prompt, params).with_outputs("kto", "prm", main="pairs")
    pairs = views.pairs
    views.kto | "WriteKTO" >> WriteDataset(out["kto"], "kto", STAGE, params.pairs.num_shards)
    views.prm | "WritePRM" >> WriteDataset(out["prm"], "prm", STAGE, params.pairs.num_shards)
    for level in ("response", "step"):
        (pairs | f"Only{level}" >> beam.Filter(lambda p, lv: p["level"] == lv, level)
         | f"Write{level}" >> WriteDataset(out[level], "pairs", STAGE, params.pairs.num_shards))
    (pipeline | "NoDead" >> beam.Create([])) | "WriteDead" >> WriteDataset(out["dead"], "dead_letters", STAGE, 1)


def pair_precision(pairs: list[dict], responses: dict[str, dict], prompts: dict[str, dict]) -> dict:
    """Share of pairs whose chosen side is truly better (arith ground truth), per level and source."""
    out = collections.defaultdict(lambda: [0, 0])
    for p in pairs:
        prompt = prompts[p["prompt_id"]]
        if prompt["task"] != arith.NAME:
            continue
        problem = arith.parse_expression(prompt["prompt"])
        if p["level"] == "response":
            good = [arith.answers_match(arith.extract_answer(t), str(problem.answer)) for t in (p["chosen"], p["rejected"])]
            right = good[0] and not good[1]
        else:
            prefix = arith.split_steps(p["prompt"][len(prompt["prompt"]):])
            ok = [all(arith.verify_solution(problem, prefix + [s.strip()]).step_correct) for s in (p["chosen"], p["rejected"])]
            right = ok[0] and not ok[1]
        key = f"{p['level']}/{p['label_source']}"
        out[key][0] += right
        out[key][1] += 1
    return {k: {"pairs": n, "precision": round(r / n, 4)} for k, (r, n) in sorted(out.items())}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="prefsynth pairs", description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--prompts", default="data/prompts")
    ap.add_argument("--responses", default="data/responses")
    ap.add_argument("--labels", default="data/labels")
    ap.add_argument("--trees", default="data/trees")
    ap.add_argument("--out", default="data/pairs")
    ap.add_argument("--dead", default="data/deadletter/pairs")
    ap.add_argument("--metrics", default="metrics/pairs.json")
    ap.add_argument("--reports", default="reports")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    paths = {"prompts": args.prompts, "responses": args.responses, "labels": args.labels, "trees": args.trees}
    outs = {"response": Output(f"{args.out}/response", "pairs"), "step": Output(f"{args.out}/step", "pairs"),
            "kto": Output(f"{args.out}/kto", "kto"), "prm": Output(f"{args.out}/prm", "prm"),
            "dead": Output(args.dead, "dead_letters")}
    prompts_table = read_table(args.prompts)
    account = run_stage(
        STAGE, params.beam, outs, "response", "dead", lambda p, out: build(p, params, paths, out),
        count_out=lambda staged: len({pid for lv in ("response", "step")
                                      for pid in (read_table(staged[lv]).column("prompt_id").to_pylist())}),
        refs={"prompt_id": prompts_table.column("prompt_id").to_pylist()}, reports_dir=args.reports,
    )
    pairs = read_records(f"{args.out}/response") + read_records(f"{args.out}/step")
    prompts = {r["prompt_id"]: r for r in prompts_table.to_pylist()}
    responses = {r["response_id"]: r for r in read_records(args.responses)}
    levels = collections.Counter(f"{p['level']}/{p['label_source']}" for p in pairs)
    views = {v: read_table(f"{args.out}/{v}").num_rows for v in ("kto", "prm")}
    write_metrics(args.metrics, {"accounting": account.to_dict(), "pairs": dict(sorted(levels.items())), "views": views,
                                 "precision": pair_precision(pairs, responses, prompts)})
