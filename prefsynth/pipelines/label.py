"""label stage: responses -> data/labels: exact verifiers, Monte-Carlo step labels, LLM judges.

MC labels follow Math-Shepherd (k rollouts from every step prefix; hard and soft labels) and
OmegaPRM (binary search for the first wrong step with fewer rollouts). metrics/labels.json
scores the detected first wrong step against the exact verifier in the arith world, and the
rollouts each method spent.

LLM judges (transforms/judges/: P(True), pointwise Likert, pairwise A/B in both orders, TICK)
run through the backend protocol with the policy itself or another model as judge. The
`quality` section of the metrics scores every labeler against the verifier where ground truth
exists (accuracy, ECE, Brier, AUROC, mean confidence), with the pairwise position-inconsistency
rate and, for a self-judge, its over-confidence on its own outputs (mean score - true rate; a real
self-preference measure needs a second judge); plots/reliability/ holds the reliability diagrams.

Accounting has two units in one ledger: every response (in; out when it has a verifier or MC
label; dropped when there is nothing to verify against), plus every judge work item (in; out
when it produced labels; dead when the judge failed or its output could not be parsed).
"""

from __future__ import annotations

import collections
from pathlib import Path

import apache_beam as beam

from prefsynth.backends.factory import other_model, resolve_model
from prefsynth.config import Params, load_params
from prefsynth.pipelines.cli_args import add_outputs, stage_parser
from prefsynth.pipelines.stage import Output, run_stage, write_metrics
from prefsynth.schemas.io import WriteDataset, count_rows, read_records, read_table
from prefsynth.transforms.batching import NAMESPACE, DeterministicBatches
from prefsynth.transforms.deadletters import DEAD, count_dropped
from prefsynth.transforms.judges import LABELERS as JUDGE_LABELERS
from prefsynth.transforms.label_beam import EmitJudgeLabels, JudgeBatch, MCLabelBatch, judge_target, verifier_rows
from prefsynth.transforms.label_report import mc_metrics, quality_metrics, step_local_truth, write_reliability
from prefsynth.transforms.join import GroupByPrompt, responses_with_prompt
from prefsynth.transforms.model_handler import worker_total

STAGE = "label"


def judge_policy(params: Params, model: str) -> tuple:
    """(backend config, model) of the judge: the policy itself unless label.judge names another."""
    return other_model(params, model, params.label.judge)


def completer_policy(params: Params, model: str) -> tuple:
    """(backend config, model) of the MC rollouts: the policy itself unless label.mc names another."""
    return other_model(params, model, params.label.mc)


def _first(pcoll, cap: int | None, key, label: str):
    """Elements whose key is among the `cap` smallest keys (all when cap is None)."""
    if cap is None:
        return pcoll
    smallest = (pcoll | f"{label}Keys" >> beam.Map(key) | f"{label}Distinct" >> beam.Distinct()
                | f"{label}Smallest" >> beam.combiners.Top.Smallest(cap) | f"{label}Set" >> beam.Map(set))
    return pcoll | f"{label}Keep" >> beam.Filter(lambda x, keep: key(x) in keep, beam.pvalue.AsSingleton(smallest))


def judge_items(grouped, joined, params: Params):
    """Judge work items of the enabled judges, each capped (ids sort so a judge's items batch together)."""
    from prefsynth.transforms.judges import make_pairs

    cfg, names = params.label.judge, params.label.judges
    outs = []

    def per_response(judge, cap, label):
        chosen = _first(joined, cap, lambda pair: pair[0]["response_id"], label)
        return chosen | f"{label}Items" >> beam.MapTuple(
            lambda resp, prompt: {"id": f"{judge}/{resp['response_id']}", "judge": judge,
                                  "target": judge_target(resp, prompt)})

    if "p_true" in names:
        outs.append(per_response("p_true", cfg.p_true_max_responses, "PTrue"))
    if "step_confidence" in names:
        outs.append(per_response("step_confidence", cfg.step_confidence_max_responses, "StepConfidence"))
    if "pointwise" in names:
        outs.append(per_response("pointwise", cfg.pointwise_max_responses, "Pointwise"))
    if "tick" in names:
        # whole prompts, so one checklist serves all of a prompt's responses (ids keep them in one batch)
        chosen = _first(joined, cfg.tick_max_prompts, lambda pair: pair[0]["prompt_id"], "Tick")
        outs.append(chosen | "TickItems" >> beam.MapTuple(
            lambda resp, prompt: {"id": f"tick/{resp['prompt_id']}/{resp['response_id']}", "judge": "tick",
                                  "target": judge_target(resp, prompt)}))
    if "pairwise" in names:
        def pairs_of(element):
            _, g = element
            prompts = list(g["prompts"])
            if not prompts:
                return
            for pr in make_pairs([judge_target(r, prompts[0]) for r in g["responses"]]):
                yield {"id": f"pairwise/{pr.pair_id}", "judge": "pairwise", "pair": pr}
        pairs = grouped | "PairItems" >> beam.FlatMap(pairs_of)
        outs.append(_first(pairs, cfg.pairwise_max_pairs, lambda it: it["id"], "Pairwise"))
    return outs


def build(pipeline: beam.Pipeline, params: Params, prompts_path: str, responses_path: str, model: str,
          out: dict[str, str]) -> None:
    from apache_beam.ml.inference.base import RunInference

    cfg = params.label
    grouped = pipeline | "ByPrompt" >> GroupByPrompt(prompts_path, responses_path)
    joined = grouped | "Pairs" >> beam.FlatMap(responses_with_prompt)

    def count_in(pair):
        beam.metrics.Metrics.counter(NAMESPACE, "in").inc()
        if not pair[1]["reference_answer"]:
            count_dropped("no_reference")  # nothing to verify against; judges will label these (issue 6)
        return pair

    joined = joined | "CountIn" >> beam.Map(count_in)
    verified = joined | "Verify" >> beam.FlatMapTuple(verifier_rows)
    n_responses = count_rows(responses_path) if cfg.methods else None
    if n_responses is not None and cfg.mc_max_responses:
        n_responses = min(n_responses, cfg.mc_max_responses)
    mc_batches = MCLabelBatch(*completer_policy(params, model), cfg.mc, cfg.methods, params.seed, STAGE,
                              total=worker_total(n_responses, params.beam))
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
        | "MCRollouts" >> RunInference(mc_batches.handler())
        | "MCRows" >> beam.FlatMap(mc_rows_or_dead).with_outputs(DEAD, main="labels")
    )
    label_sets = [verified, mc.labels]
    dead_sets = [mc[DEAD]]
    items = judge_items(grouped, joined, params)
    if items:
        def count_item(item):
            beam.metrics.Metrics.counter(NAMESPACE, "in").inc()  # a judge work item is a unit of the ledger
            return item

        judge_cfg, judge_model = judge_policy(params, model)
        judged = (
            items | "AllJudgeItems" >> beam.Flatten() | "CountJudgeIn" >> beam.Map(count_item)
            | "BatchJudge" >> DeterministicBatches(cfg.judge.items_per_batch, key="id")
            | "Judge" >> RunInference(JudgeBatch(judge_cfg, judge_model, cfg.judge, params.seed, STAGE).handler())
            | "JudgeRows" >> beam.ParDo(EmitJudgeLabels(STAGE)).with_outputs(DEAD, main="labels")
        )
        label_sets.append(judged.labels)
        dead_sets.append(judged[DEAD])
    (label_sets | "All" >> beam.Flatten()
     | "WriteLabels" >> WriteDataset(out["labels"], "labels", STAGE, cfg.num_shards))
    dead_sets | "AllDead" >> beam.Flatten() | "WriteDead" >> WriteDataset(out["dead"], "dead_letters", STAGE, 1)


def mc_rows_or_dead(result):
    """MC label rows of a batch; a response whose probes failed (its `unlabeled` row) becomes a dead
    letter, never a label. That MC labelling is a unit of the ledger of its own (in, then dead): the
    response itself still counts out through its verifier label."""
    from prefsynth.transforms.deadletters import emit_dead
    from prefsynth.transforms.mc_labels import failed_probe

    for row in result.inference:
        failure = failed_probe(row)
        if failure is None:
            yield row
            continue
        beam.metrics.Metrics.counter(NAMESPACE, "in").inc()
        yield emit_dead(STAGE, f"{row['labeler']}/{row['target_id']}", "mc_probe_failed",
                        f"[{row['labeler']}] rollouts from step {failure['step_index']} failed "
                        f"({failure['failed_probes']} probe(s)): {failure['error_type']}: {failure['message']}",
                        raw_input=row["target_id"], raw_output=failure.get("raw_output"))


def count_label_out(labels_path: str) -> int:
    """Responses with a verifier/MC label, plus judge items that produced labels (one per
    (labeler, target_id): a response's P(True) rows are one item, a pair's row names response A)."""
    from prefsynth.schemas.io import dataset_files

    if not dataset_files(labels_path):
        return 0
    t = read_table(labels_path).select(["target_id", "labeler"]).to_pylist()
    judges = set(JUDGE_LABELERS.values())
    responses = {r["target_id"] for r in t if r["labeler"] not in judges}
    items = {(r["labeler"], r["target_id"]) for r in t if r["labeler"] in judges}
    return len(responses) + len(items)


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("label", __doc__)
    ap.add_argument("--prompts", default="data/prompts")
    ap.add_argument("--responses", default="data/responses")
    ap.add_argument("--policy", default="models/policy-0")
    add_outputs(ap, out="data/labels", dead="data/deadletter/label", metrics="metrics/labels.json", reports=True)
    ap.add_argument("--plots", default=None, help="folder of reliability-diagram CSVs (one per labeler and "
                    "target kind); default plots/reliability beside the default metrics, else <metrics>_reliability/")
    args = ap.parse_args(argv)
    if args.plots is None:  # never write into the repo's plots/ when the metrics go elsewhere (tests, sweeps)
        default_metrics = ap.get_default("metrics")
        args.plots = ("plots/reliability" if args.metrics == default_metrics
                      else str(Path(args.metrics).with_suffix("")) + "_reliability")
    params = load_params(args.params)
    model = resolve_model(args.policy, params.policy)
    account = run_stage(
        STAGE, params.beam, {"labels": Output(args.out, "labels"), "dead": Output(args.dead, "dead_letters")},
        "labels", "dead", lambda p, out: build(p, params, args.prompts, args.responses, model, out),
        count_out=lambda staged: count_label_out(staged["labels"]),
        reports_dir=args.reports,
    )
    labels = read_records(args.out)
    responses = {r["response_id"]: r for r in read_records(args.responses)}
    prompts = {r["prompt_id"]: r for r in read_table(args.prompts).to_pylist()}
    counts = collections.Counter(r["labeler"] for r in labels)
    quality, plot_rows = quality_metrics(labels, self_judge=params.label.judge.model is None,
                                         step_local=step_local_truth(labels, responses, prompts),
                                         confidence_span=params.label.judge.step_confidence_span)
    write_reliability(args.plots, plot_rows)
    write_metrics(args.metrics, {"accounting": account.to_dict(), "labels_by_labeler": dict(sorted(counts.items())),
                                 "mc_completer": params.label.mc.model or "policy",
                                 "mc_rule": {"bad_value_max": params.label.mc.bad_value_max,
                                             "bad_own_min": params.label.mc.own_min},
                                 "mc_first_error": mc_metrics(labels, responses, prompts, params.label.methods),
                                 "quality": quality})
