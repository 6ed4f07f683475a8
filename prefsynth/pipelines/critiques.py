"""critiques stage: prompts + responses -> data/critiques, step-level critiques (AutoMathCritique style).

One row per (response, critic): the critic's input (templates/critique.txt: problem + numbered
steps), the critique text, the located first wrong step (null = correct), the true one where
ground truth exists, and whether they match. Critics: `rule` (exact, arith), `model` (any
backend with the template; by default the tiny critic the `critic` stage trained) and `confidence`
(the policy that wrote the responses: its least likely step, no critic model). A model
critique whose verdict does not parse is a dead letter with its raw text. metrics/critiques.json
reports critique accuracy per critic; for the tiny critic also on the prompts it was not trained
on (`critic.heldout_fraction`), since most responses' prompts were in its training set.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
from pathlib import Path

import apache_beam as beam

from prefsynth.backends.base import SamplingParams
from prefsynth.backends.factory import other_model, resolve_model
from prefsynth.config import Params, load_params
from prefsynth.pipelines.cli_args import add_outputs, stage_parser
from prefsynth.pipelines.stage import Output, run_stage, write_metrics
from prefsynth.schemas.io import WriteDataset, count_rows, read_records, read_table
from prefsynth.transforms.critiques import (
    CRITICS,
    MODEL,
    RULE,
    CritiqueBatch,
    ToModelCritiques,
    count_critic_input,
    critic_holdout,
    critique_accuracy,
    load_template,
    rule_critiques,
)
from prefsynth.transforms.batching import DeterministicBatches
from prefsynth.transforms.confidence_critic import CONFIDENCE, ConfidenceCritiqueBatch, confidence_rows
from prefsynth.transforms.deadletters import DEAD, count_dropped
from prefsynth.transforms.join import GroupByPrompt, responses_with_prompt
from prefsynth.transforms.model_handler import worker_total

STAGE = "critiques"
log = logging.getLogger("prefsynth")


def _first_responses(joined, cap: int | None, label: str, counter: str):
    """The (response, prompt) pairs of the first `cap` responses by id (a model critic's costly part is
    its model calls); the others are counted as dropped under `counter`. cap null: all."""
    if not cap:
        return joined
    first = (joined | f"{label}Ids" >> beam.MapTuple(lambda resp, _: resp["response_id"])
             | f"{label}First" >> beam.combiners.Top.Smallest(cap) | f"{label}Set" >> beam.Map(set))

    def keep(pair, ids):
        if pair[0]["response_id"] in ids:
            return True
        count_dropped(counter)
        return False

    return joined | f"{label}KeepFirst" >> beam.Filter(keep, beam.pvalue.AsSingleton(first))


def _run_critic(pairs, batch_fn, per_batch: int, label: str):
    """(response, prompt) pairs -> the critic's PredictionResults: deterministic batches by response id
    through RunInference (the critic's model loads once per worker)."""
    from apache_beam.ml.inference.base import RunInference

    return (pairs
            | f"{label}AsDict" >> beam.MapTuple(lambda resp, prompt: {"response_id": resp["response_id"],
                                                                      "pair": (resp, prompt)})
            | f"{label}Batch" >> DeterministicBatches(per_batch, key="response_id")
            | f"{label}Unwrap" >> beam.Map(lambda batch: [b["pair"] for b in batch])
            | f"{label}Critic" >> RunInference(batch_fn.handler()))


def _n_first(responses_path: str, cap: int | None) -> int:
    """How many responses a critic capped at `cap` (null: none) sees: its progress total."""
    n = count_rows(responses_path)
    return min(n, cap) if cap else n


def build(pipeline: beam.Pipeline, params: Params, prompts_path: str, responses_path: str, critic_model: str | None,
          out: dict[str, str], policy_model: str | None = None) -> None:
    cfg = params.critiques
    template = load_template(cfg.template)
    joined = (
        pipeline
        | "ByPrompt" >> GroupByPrompt(prompts_path, responses_path)
        | "Pairs" >> beam.FlatMap(responses_with_prompt)
        | "CountIn" >> beam.Map(count_critic_input, len(cfg.critics))
    )
    rows = []
    dead = []
    if RULE in cfg.critics:
        rows.append(joined | "RuleCritic" >> beam.FlatMap(rule_critiques, template))
    if MODEL in cfg.critics:
        to_critique = _first_responses(joined, cfg.model_max_responses, "Model", "model_beyond_max_responses")
        sampling = SamplingParams(n=1, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens)
        # the model critic's template is chosen where its tokenizer is known (critique_chat.txt for an
        # instruct critic) unless critiques.template names one
        critic = CritiqueBatch(cfg.model_critic, critic_model, template if cfg.template else None, sampling,
                               params.seed, verdict=cfg.verdict, template_path=cfg.template, stage=STAGE,
                               total=worker_total(_n_first(responses_path, cfg.model_max_responses), params.beam))
        model_out = (
            _run_critic(to_critique, critic, cfg.responses_per_batch, "Model")
            | "ModelRows" >> beam.ParDo(ToModelCritiques(STAGE, critic_model)).with_outputs(DEAD, main="rows")
        )
        rows.append(model_out.rows)
        dead.append(model_out[DEAD])
    if CONFIDENCE in cfg.critics:
        conf = cfg.confidence_critic
        policy, model = other_model(params, policy_model, conf)
        scorer = ConfidenceCritiqueBatch(policy, model, conf, params.seed, STAGE,
                                         worker_total(_n_first(responses_path, conf.max_responses), params.beam))
        to_score = _first_responses(joined, conf.max_responses, "Confidence", "confidence_beyond_max_responses")
        conf_out = (
            _run_critic(to_score, scorer, cfg.responses_per_batch, "Confidence")
            | "ConfidenceRows" >> beam.FlatMap(confidence_rows, STAGE, model, template).with_outputs(DEAD, main="rows")
        )
        rows.append(conf_out.rows)
        dead.append(conf_out[DEAD])
    if not rows:
        rows.append(pipeline | "NoRows" >> beam.Create([]))
    if not dead:
        dead.append(pipeline | "NoDead" >> beam.Create([]))
    (rows | "AllRows" >> beam.Flatten()
     | "WriteCritiques" >> WriteDataset(out["critiques"], "critiques", STAGE, cfg.num_shards))
    dead | "AllDead" >> beam.Flatten() | "WriteDead" >> WriteDataset(out["dead"], "dead_letters", STAGE, 1)


def critique_metrics(rows: list[dict], prompts: dict[str, dict], params: Params) -> dict:
    """Critique accuracy per critic; the tiny critic's also on prompts it was held out from."""
    out: dict[str, dict] = {}
    for critic in sorted({r["critic"] for r in rows}):
        mine = [r for r in rows if r["critic"] == critic and r["truth_known"]]
        pairs = [(r["predicted_first_wrong_step"], r["true_first_wrong_step"]) for r in mine]
        out[critic] = critique_accuracy(pairs)
        if critic == MODEL:
            held = [(r["predicted_first_wrong_step"], r["true_first_wrong_step"]) for r in mine
                    if critic_holdout(params.seed, prompts[r["prompt_id"]], params.critic.heldout_fraction)]
            # only meaningful for the tiny critic trained here; for another model it is just a subset
            out[critic]["on_critic_heldout_prompts"] = critique_accuracy(held)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("critiques", __doc__)
    ap.add_argument("--prompts", default="data/prompts")
    ap.add_argument("--responses", default="data/responses")
    ap.add_argument("--critic", default="models/critic", help="the model critic when critiques.model_critic.model is null")
    ap.add_argument("--policy", default="models/policy-0", help="the policy that wrote the responses: the confidence "
                    "critic when critiques.confidence_critic.model is null")
    add_outputs(ap, out="data/critiques", dead="data/deadletter/critiques", metrics="metrics/critiques.json", reports=True)
    args = ap.parse_args(argv)
    params = load_params(args.params)
    unknown = sorted(set(params.critiques.critics) - set(CRITICS))
    if unknown or not params.critiques.critics:
        raise ValueError(f"params.yaml: critiques.critics must be drawn from {list(CRITICS)}, got "
                         f"{params.critiques.critics}")
    skipped_critic = None
    if MODEL in params.critiques.critics and not params.critiques.model_critic.model and \
            (Path(args.critic) / "skipped.json").exists():
        # the tiny critic was skipped (not an arith run) and no model critic is configured
        skipped_critic = json.loads((Path(args.critic) / "skipped.json").read_text())["skipped"]
        log.info("[critiques] no model critic: %s was skipped (%s); set critiques.model_critic.model",
                 args.critic, skipped_critic)
        remaining = [c for c in params.critiques.critics if c != MODEL]
        params = dataclasses.replace(params, critiques=dataclasses.replace(params.critiques, critics=remaining))
    critic_model = resolve_model(args.critic, params.critiques.model_critic) if MODEL in params.critiques.critics \
        else None
    prompts_table = read_table(args.prompts)
    responses_table = read_table(args.responses)
    refs = {"prompt_id": prompts_table.column("prompt_id").to_pylist(),
            "response_id": responses_table.column("response_id").to_pylist()}
    account = run_stage(
        STAGE, params.beam, {"critiques": Output(args.out, "critiques"), "dead": Output(args.dead, "dead_letters")},
        "critiques", "dead",
        lambda p, out: build(p, params, args.prompts, args.responses, critic_model, out,
                             resolve_model(args.policy, params.policy)),
        refs=refs, reports_dir=args.reports,
    )
    rows = read_records(args.out)
    prompts = {r["prompt_id"]: r for r in prompts_table.to_pylist()}
    counts = collections.Counter(r["critic"] for r in rows)
    write_metrics(args.metrics, {"accounting": account.to_dict(), "critiques_by_critic": dict(sorted(counts.items())),
                                 "critic_model": critic_model, "model_critic_skipped": skipped_critic,
                                 "accuracy": critique_metrics(rows, prompts, params)})
