"""label stage: responses -> data/labels: exact verifier labels, and Monte-Carlo step labels.

MC labels follow Math-Shepherd (k rollouts from every step prefix; hard and soft labels) and
OmegaPRM (binary search for the first wrong step with fewer rollouts). metrics/labels.json
scores the detected first wrong step against the exact verifier in the arith world, and the
rollouts each method spent.
"""

from __future__ import annotations

import argparse
import collections

import apache_beam as beam

from prefsynth.backends.factory import resolve_model
from prefsynth.config import Params, load_params
from prefsynth.pipelines.stage import Output, run_stage, write_metrics
from prefsynth.schemas.io import ReadDataset, WriteDataset, count_distinct, read_records, read_table
from prefsynth.tasks import arith
from prefsynth.transforms.deadletters import count_dropped
from prefsynth.transforms.generate import NAMESPACE, DeterministicBatches
from prefsynth.transforms.label_beam import MCLabelHandler, verifier_rows
from prefsynth.transforms.mc_labels import detection_scores

STAGE = "label"


def _join(element):
    _, grouped = element
    prompts = list(grouped["prompts"])
    for resp in grouped["responses"]:
        yield resp, prompts[0]


def build(pipeline: beam.Pipeline, params: Params, prompts_path: str, responses_path: str, model: str,
          out: dict[str, str]) -> None:
    from apache_beam.ml.inference.base import RunInference

    cfg = params.label
    prompts = pipeline | "ReadPrompts" >> ReadDataset(prompts_path) | "KeyP" >> beam.Map(lambda r: (r["prompt_id"], r))
    responses = pipeline | "ReadResponses" >> ReadDataset(responses_path)
    joined = (
        {"prompts": prompts, "responses": responses | "KeyR" >> beam.Map(lambda r: (r["prompt_id"], r))}
        | "Join" >> beam.CoGroupByKey()
        | "Pairs" >> beam.FlatMap(_join)
    )

    def count_in(pair):
        beam.metrics.Metrics.counter(NAMESPACE, "in").inc()
        if not pair[1]["reference_answer"]:
            count_dropped("no_reference")  # nothing to verify against; judges will label these (issue 6)
        return pair

    joined = joined | "CountIn" >> beam.Map(count_in)
    verified = joined | "Verify" >> beam.FlatMapTuple(verifier_rows)
    handler = MCLabelHandler(params.policy, model, cfg.mc, cfg.methods, params.seed)
    to_roll = joined
    if cfg.mc_max_responses:  # rollouts are costly: only the first N responses by id
        first = (joined | "Ids" >> beam.MapTuple(lambda resp, _: resp["response_id"])
                 | "First" >> beam.combiners.Top.Smallest(cfg.mc_max_responses) | "Set" >> beam.Map(set))
        to_roll = joined | "KeepFirst" >> beam.Filter(lambda pair, ids: pair[0]["response_id"] in ids,
                                                     beam.pvalue.AsSingleton(first))
    mc = (
        to_roll
        | "AsDict" >> beam.MapTuple(lambda resp, prompt: {"response_id": resp["response_id"], "pair": (resp, prompt)})
        | "Batch" >> DeterministicBatches(cfg.responses_per_batch, key="response_id")
        | "Unwrap" >> beam.Map(lambda batch: [b["pair"] for b in batch])
        | "MCRollouts" >> RunInference(handler)
        | "MCRows" >> beam.FlatMap(lambda result: result.inference)
    )
    ((verified, mc) | "All" >> beam.Flatten()
     | "WriteLabels" >> WriteDataset(out["labels"], "labels", STAGE, cfg.num_shards))
    (pipeline | "NoDead" >> beam.Create([])) | "WriteDead" >> WriteDataset(out["dead"], "dead_letters", STAGE, 1)


def mc_metrics(labels: list[dict], responses: dict[str, dict], prompts: dict[str, dict], methods) -> dict:
    """First-wrong-step detection of each MC method against the exact arith verifier."""
    by_method: dict[str, dict[str, list[dict]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for row in labels:
        if row["labeler"].startswith("mc_"):
            by_method[row["labeler"][3:]][row["target_id"]].append(row)
    out = {}
    for method in methods:
        pairs, spent = [], []
        for rid, rows in by_method.get(method, {}).items():
            resp = responses[rid]
            prompt = prompts[resp["prompt_id"]]
            if prompt["task"] != arith.NAME:
                continue
            truth = arith.verify_solution(arith.parse_expression(prompt["prompt"]), list(resp["steps"])).first_wrong_step
            measured = sorted((r for r in rows if r["rationale"] == "rollouts"), key=lambda r: r["step_index"])
            pred = next((r["step_index"] for r in measured if r["score"] == 0.0), None)
            pairs.append((pred, truth))
            spent.append(int(rows[0]["raw_output"].split("=")[1]))
        if pairs:
            out[method] = {**detection_scores(pairs), "responses": len(pairs),
                           "rollouts_per_response": round(sum(spent) / len(spent), 2)}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="prefsynth label", description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--prompts", default="data/prompts")
    ap.add_argument("--responses", default="data/responses")
    ap.add_argument("--policy", default="models/policy-0")
    ap.add_argument("--out", default="data/labels")
    ap.add_argument("--dead", default="data/deadletter/label")
    ap.add_argument("--metrics", default="metrics/labels.json")
    ap.add_argument("--reports", default="reports")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    model = resolve_model(args.policy, params.policy)
    account = run_stage(
        STAGE, params.beam, {"labels": Output(args.out, "labels"), "dead": Output(args.dead, "dead_letters")},
        "labels", "dead", lambda p, out: build(p, params, args.prompts, args.responses, model, out),
        count_out=lambda staged: count_distinct(staged["labels"], "target_id"),
        reports_dir=args.reports,
    )
    labels = read_records(args.out)
    responses = {r["response_id"]: r for r in read_records(args.responses)}
    prompts = {r["prompt_id"]: r for r in read_table(args.prompts).to_pylist()}
    counts = collections.Counter(r["labeler"] for r in labels)
    write_metrics(args.metrics, {"accounting": account.to_dict(), "labels_by_labeler": dict(sorted(counts.items())),
                                 "mc_first_error": mc_metrics(labels, responses, prompts, params.label.methods)})
