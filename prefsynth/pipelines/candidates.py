"""candidates stage: responses, labels and trees -> candidate pairs in data/candidates/{response,step,kto,prm}.

Response-level pairs from every label source in `candidates.response_sources`: labelers in
data/labels (by name prefix: verifier, p_true, judge_...) and, computed here from the samples,
self_consistency (majority answer as pseudo-reference: majority vs minority answers) and
self_certainty (the self-certainty Borda winner as pseudo-reference). Step-level pairs from MCTS
trees (highest- vs lowest-Q siblings) and Step-DPO pairs at each response's first wrong step
(arith: exact verifier). Prompts with no contrast in any source are dropped with that reason;
per-source reasons are counted as `skipped.<source>.<reason>`. metrics/candidates.json reports
candidate pair precision against the ground truth where it exists. The pairs stage filters
these candidates (self-consistency agreement, UPO) into data/pairs, which training reads.
"""

from __future__ import annotations

import collections

import apache_beam as beam

from prefsynth.config import Params, load_params
from prefsynth.config.candidates import WHOLE_SOLUTION_SPANS
from prefsynth.pipelines.cli_args import add_outputs, stage_parser
from prefsynth.pipelines.stage import Output, run_stage, write_metrics
from prefsynth.schemas.io import METRICS_NAMESPACE, ReadDataset, WriteDataset, read_records, read_table
from prefsynth.tasks import get_task
from prefsynth.transforms import self_consistency as sc
from prefsynth.transforms.deadletters import count_dropped, count_in
from prefsynth.transforms.pairs import (dedupe, kto_rows, prm_row, response_pairs, step_dpo_pairs, tree_step_pairs,
                                       truly_better)

STAGE = "candidates"
PSEUDO_SOURCES = ("self_consistency", "self_certainty")  # computed here from the samples, not read from labels


def _matches(source: str, prefixes) -> str | None:
    return next((p for p in prefixes if source.startswith(p)), None)


def response_candidates(prompt: dict, responses: list[dict], scores_by_source: dict[str, dict[str, float]],
                        cfg, counter=None) -> list[dict]:
    """Response-level candidate pairs from every configured source (pure; `counter(name)` records skips)."""
    counter = counter or (lambda name: None)
    rows = []
    for source in cfg.response_sources:
        if source in PSEUDO_SOURCES:
            key = get_task(prompt["task"]).answer_key  # equivalent answers vote together (18 / 18.00 / $18)
            c = sc.consistency(responses, cfg.borda_power, key)
            why = sc.consistency_verdict(c, 0.0)  # the agreement threshold is the pairs stage's filter
            reference = c.majority if source == "self_consistency" else c.borda
            if why is not None:
                counter(f"skipped.{source}.{why}")
                continue
            found = response_pairs(prompt, responses, sc.pseudo_scores(responses, reference, key), cfg.max_response_pairs,
                                   cfg.min_margins.get(source, cfg.min_margin), source)
            votes = c.counts.get(reference, 0)
            for p in found:
                p["kept_reason"] = (f"{'majority' if source == 'self_consistency' else 'self-certainty Borda'} "
                                    f"answer {reference!r} ({votes}/{c.n}, agreement {c.agreement:.2f}) vs another; "
                                    + p["kept_reason"])
            if not found:
                counter(f"skipped.{source}.no_contrast")
            rows += found
            continue
        for labeler in sorted(l for l in scores_by_source if l.startswith(source)):
            margin = cfg.min_margins.get(_matches(labeler, cfg.min_margins) or "", cfg.min_margin)
            found = response_pairs(prompt, responses, scores_by_source[labeler], cfg.max_response_pairs, margin,
                                   labeler)
            if not found:
                counter(f"skipped.{labeler}.no_contrast")  # all right or all wrong by this labeler
            rows += found
    return rows


def pairs_for_prompt(element, params: Params):
    """(prompt_id, {prompts, responses, scores, nodes}) -> pair rows for one prompt."""
    _, g = element
    prompts = list(g["prompts"])
    responses = sorted(g["responses"], key=lambda r: r["response_id"])
    if not prompts or not responses:
        return  # prompts nobody sampled are not this stage's input
    count_in()
    prompt, cfg = prompts[0], params.candidates
    scores_by_source: dict[str, dict[str, float]] = collections.defaultdict(dict)
    for labeler, rid, score in g["scores"]:
        scores_by_source[labeler][rid] = score
    # unpaired (KTO) view of the first labeler source, stepwise (PRM) view from the exact verifier
    kto_source = next((s for s in cfg.response_sources if s not in PSEUDO_SOURCES), None)
    kto_labeler = next((l for l in sorted(scores_by_source) if kto_source and l.startswith(kto_source)), None)
    if kto_labeler:
        for row in kto_rows(prompt, responses, scores_by_source[kto_labeler], kto_source):
            yield beam.pvalue.TaggedOutput("kto", row)
    task = get_task(prompt["task"])
    verdicts = {r["response_id"]: task.verify_steps(prompt, list(r["steps"])) for r in responses}
    for r in responses:
        labels = prm_labels(verdicts[r["response_id"]])
        row = prm_row(prompt, r, labels, f"verifier_{task.name}") if labels is not None else None
        if row:
            yield beam.pvalue.TaggedOutput("prm", row)
    rows = response_candidates(prompt, responses, scores_by_source, cfg, lambda name: _counter(name).inc())
    rows += tree_step_pairs(prompt, list(g["nodes"]), cfg.min_q_gap)
    if cfg.step_dpo:  # tasks that verify steps (arith exactly, gsm8k's calculations) and can correct one
        # span sampled: the prompt's own solutions whose every step and answer verify, in response-id order
        correct = [list(r["steps"]) for r in responses if (v := verdicts[r["response_id"]]) is not None
                   and v.first_wrong_step is None and v.answer_correct]
        for r in responses[:cfg.max_step_dpo_per_prompt]:
            v = verdicts[r["response_id"]]
            if v is not None:
                span = cfg.step_dpo_span
                if span in WHOLE_SOLUTION_SPANS and not v.exact:  # gsm8k's expected steps only correct a calculation
                    span = "step"
                    _counter("step_dpo_span_fallback").inc()
                found = step_dpo_pairs(prompt, r, v.step_correct, v.expected_steps, task.step_delimiter,
                                       f"verifier_{task.name}", span, correct)
                if span == "sampled" and not found and v.first_wrong_step is not None:
                    _counter("step_dpo_no_sampled_rest").inc()
                rows += found
    rows = dedupe(rows)
    if not rows:
        count_dropped("no_contrast")  # no source found a contrast and no tree siblings differ
        return
    yield from rows


def _counter(name: str):
    return beam.metrics.Metrics.counter(METRICS_NAMESPACE, name)


def build(pipeline: beam.Pipeline, params: Params, paths: dict[str, str], out: dict[str, str]) -> None:
    sources = [s for s in params.candidates.response_sources if s not in PSEUDO_SOURCES]
    responses = pipeline | "ReadResponses" >> ReadDataset(paths["responses"])
    scores = (
        pipeline
        | "ReadLabels" >> ReadDataset(paths["labels"])
        | "ResponseLabels" >> beam.Filter(lambda l: l["target_kind"] == "response" and l["score"] is not None
                                          and _matches(l["labeler"], sources) is not None)
        | "KeyLabel" >> beam.Map(lambda l: (l["target_id"], (l["labeler"], l["score"])))
    )
    scores_by_prompt = (
        {"score": scores, "resp": responses | "KeyResp" >> beam.Map(lambda r: (r["response_id"], r["prompt_id"]))}
        | "JoinScores" >> beam.CoGroupByKey()
        # one score per (response, labeler): the smallest, so duplicates cannot make the order matter
        | "ToPrompt" >> beam.FlatMap(lambda kv: [
            (pid, (lab, kv[0], min(s for l2, s in kv[1]["score"] if l2 == lab)))
            for pid in kv[1]["resp"] for lab in sorted({l for l, _ in kv[1]["score"]})])
    )
    grouped = {
        "prompts": pipeline | "ReadPrompts" >> ReadDataset(paths["prompts"]) | "KeyP" >> beam.Map(lambda r: (r["prompt_id"], r)),
        "responses": responses | "KeyRP" >> beam.Map(lambda r: (r["prompt_id"], r)),
        "scores": scores_by_prompt,
        "nodes": pipeline | "ReadTrees" >> ReadDataset(paths["trees"]) | "KeyN" >> beam.Map(lambda n: (n["prompt_id"], n)),
    } | "ByPrompt" >> beam.CoGroupByKey()
    views = grouped | "Pairs" >> beam.FlatMap(pairs_for_prompt, params).with_outputs("kto", "prm", main="pairs")
    pairs = views.pairs
    views.kto | "WriteKTO" >> WriteDataset(out["kto"], "kto", STAGE, params.candidates.num_shards)
    views.prm | "WritePRM" >> WriteDataset(out["prm"], "prm", STAGE, params.candidates.num_shards)
    for level in ("response", "step"):
        (pairs | f"Only{level}" >> beam.Filter(lambda p, lv: p["level"] == lv, level)
         | f"Write{level}" >> WriteDataset(out[level], "pairs", STAGE, params.candidates.num_shards))
    if "critique" in out:  # critique pairs: a correct critique vs an incorrect one, per response
        from prefsynth.transforms.critiques import critique_pairs

        (pipeline | "ReadCritiques" >> ReadDataset(paths["critiques"])
         | "KeyCritique" >> beam.Map(lambda r: (r["response_id"], r))
         | "ByResponse" >> beam.GroupByKey()
         | "CritiquePairs" >> beam.FlatMap(lambda kv, seed: critique_pairs(kv[1], seed), params.seed)
         # identical responses give identical critique pairs (same content id): keep one, the same one always
         | "KeyPairId" >> beam.Map(lambda p: (p["pair_id"], p))
         | "OnePerId" >> beam.CombinePerKey(
             lambda ps: min(ps, key=lambda p: (p["chosen_id"] or "", p["rejected_id"] or "")))
         | "DropKey" >> beam.Values()
         | "WriteCritique" >> WriteDataset(out["critique"], "pairs", STAGE, params.candidates.num_shards))
    (pipeline | "NoDead" >> beam.Create([])) | "WriteDead" >> WriteDataset(out["dead"], "dead_letters", STAGE, 1)


def prm_labels(v) -> list[bool] | None:
    """Step labels of the stepwise (PRM) view from a task's verdicts: right up to the first wrong
    step; None where they are not known (no verification, or a wrong answer no local check explains)."""
    if v is None:
        return None
    if not v.exact and v.first_wrong_step is None and not v.answer_correct:
        return None
    return list(v.step_correct)


def pair_precision(pairs: list[dict], responses: dict[str, dict], prompts: dict[str, dict]) -> dict:
    """Share of pairs whose chosen side is truly better (the task's ground truth), per level and source."""
    out = collections.defaultdict(lambda: [0, 0])
    for p in pairs:
        right = truly_better(p, prompts[p["prompt_id"]])
        if right is None:
            continue
        key = f"{p['level']}/{p['label_source']}"
        out[key][0] += right
        out[key][1] += 1
    return {k: {"pairs": n, "precision": round(r / n, 4)} for k, (r, n) in sorted(out.items())}


def pseudo_label_report(responses: list[dict], prompts: dict[str, dict], borda_power: float) -> dict:
    """How often the majority (and self-certainty Borda) answer is the truth, over prompts with a reference."""
    by_prompt = collections.defaultdict(list)
    for r in responses:
        by_prompt[r["prompt_id"]].append(r)
    groups = []
    for pid, rs in sorted(by_prompt.items()):
        if pid in prompts:
            task, ref = get_task(prompts[pid]["task"]), prompts[pid].get("reference_answer")
            groups.append((sc.consistency(rs, borda_power, task.answer_key), None if ref is None else (task, ref)))
    return sc.pseudo_label_precision(groups, lambda answer, tr: tr[0].answers_match(answer, tr[1]))


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser(STAGE, __doc__)
    ap.add_argument("--prompts", default="data/prompts")
    ap.add_argument("--responses", default="data/responses")
    ap.add_argument("--labels", default="data/labels")
    ap.add_argument("--trees", default="data/trees")
    ap.add_argument("--critiques", default=None, help="data/critiques: also build critique pairs")
    add_outputs(ap, out="data/candidates", dead="data/deadletter/candidates", metrics="metrics/candidates.json",
                reports=True)
    args = ap.parse_args(argv)
    params = load_params(args.params)
    paths = {"prompts": args.prompts, "responses": args.responses, "labels": args.labels, "trees": args.trees,
             "critiques": args.critiques}
    outs = {"response": Output(f"{args.out}/response", "pairs"), "step": Output(f"{args.out}/step", "pairs"),
            "kto": Output(f"{args.out}/kto", "kto"), "prm": Output(f"{args.out}/prm", "prm"),
            "dead": Output(args.dead, "dead_letters")}
    if args.critiques:
        outs["critique"] = Output(f"{args.out}/critique", "pairs")
    prompts_table = read_table(args.prompts)
    account = run_stage(
        STAGE, params.beam, outs, "response", "dead", lambda p, out: build(p, params, paths, out),
        count_out=lambda staged: len({pid for lv in ("response", "step")
                                      for pid in (read_table(staged[lv]).column("prompt_id").to_pylist())}),
        refs={"prompt_id": prompts_table.column("prompt_id").to_pylist()}, reports_dir=args.reports,
    )
    pairs = read_records(f"{args.out}/response") + read_records(f"{args.out}/step")
    prompts = {r["prompt_id"]: r for r in prompts_table.to_pylist()}
    response_list = read_records(args.responses)
    responses = {r["response_id"]: r for r in response_list}
    levels = collections.Counter(f"{p['level']}/{p['label_source']}" for p in pairs)
    views = {v: read_table(f"{args.out}/{v}").num_rows for v in ("kto", "prm", "critique")
             if v != "critique" or args.critiques}
    write_metrics(args.metrics, {"accounting": account.to_dict(), "pairs": dict(sorted(levels.items())), "views": views,
                                 "precision": pair_precision(pairs, responses, prompts),
                                 "pseudo_labels": pseudo_label_report(response_list, prompts,
                                                                      params.candidates.borda_power)})
