"""pairs stage: candidate pairs (data/candidates) -> the TRL-ready pairs training reads (data/pairs).

In order, every decision recorded:
1. self-consistency agreement filter: pairs of `pairs.agreement_filter_sources` from prompts
   whose majority answer has less than `min_agreement` of the samples are dropped (low_agreement);
2. UPO (transforms/upo/): an estimator trained on trusted data of a hash split of prompts
   (default: UPO's 2-label pair classifier on the frozen policy's features, trained on verifier
   pairs both ways and on verifier-wrong ties from the unpaired view; or a reward model through
   the backbone, TRL RewardTrainer) scores every pair with T MC-dropout passes; pairs of
   `upo.sources` whose pass majority contradicts the label are dropped, the rest sampled easy
   (1 - BALD) / hard (BALD); every scored pair carries uncertainty_mean/var/bald;
3. one pair per content across sources (the trusted source wins; a pair contradicting a trusted
   one is dropped; the kept copy names the other sources that gave it);
4. the source gate: a level/source whose *final* pairs (what training reads) have a precision under
   `pairs.min_source_precision` on held-out prompts with ground truth loses all its pairs
   (low_source_precision), and the dedupe is redone without it. After the dedupe a source's surviving
   pairs are the ones no trusted source confirmed, so its final precision, not its candidates',
   says what it adds to training.
Kept pairs go to data/pairs/{response,step} (kept_reason says why), dropped ones to
data/pairs/pruned (kept_reason = "dropped: why"); other candidate views (kto, prm, critique, ...)
are copied through; with `pairs.conversational` also <level>_conversational views.
metrics/pairs.json: pair precision against the arith ground truth per level and source,
before and after each filter, with the fraction kept, on prompts the estimator never saw.

The Beam pipeline: the pair classifier's policy features are a model stage (one forward pass per
deterministic batch of texts, transforms/upo/features_beam.py, batches planned in the driver so
they are the same whatever the runner); every decision (transforms/pair_filters.py) is one step
after them; then the pairs are routed to their views. The decisions are pure of Beam.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import apache_beam as beam
import numpy as np
from apache_beam import typehints
from apache_beam.io.filesystems import FileSystems

from prefsynth.backends.factory import resolve_model
from prefsynth.config import Params, load_params
from prefsynth.pipelines.cli_args import add_outputs, stage_parser
from prefsynth.pipelines.stage import Output, run_stage, write_metrics
from prefsynth.schemas.io import ReadDataset, WriteDataset, dataset_files, read_records, read_table
from prefsynth.transforms.batching import DeterministicBatches
from prefsynth.transforms.deadletters import count_dropped, count_in
from prefsynth.transforms.pair_filters import decide, upo_inputs
from prefsynth.transforms.pair_report import precision_report

STAGE = "pairs"
LEVELS = ("response", "step")
log = logging.getLogger("prefsynth")


def conversational(p: dict, prompt: dict) -> dict:
    """TRL's conversational preference row: the prompt's messages (+ the step prefix as an assistant turn
    that chosen/rejected continue), chosen and rejected as assistant messages."""
    messages = list(prompt.get("messages") or [{"role": "user", "content": prompt["prompt"]}])
    prefix = p["prompt"][len(prompt["prompt"]):] if p["prompt"].startswith(prompt["prompt"]) else ""
    if prefix:
        messages.append({"role": "assistant", "content": prefix})
    return {"pair_id": p["pair_id"], "prompt_id": p["prompt_id"], "level": p["level"], "prompt": messages,
            "chosen": [{"role": "assistant", "content": p["chosen"]}],
            "rejected": [{"role": "assistant", "content": p["rejected"]}],
            "weight": p["weight"], "label_source": p["label_source"]}


def _route(element, dropped: dict, conv: bool, prompts: dict):
    count_in()
    why = dropped.get(element["pair_id"])
    if why:
        count_dropped(why.split(":", 1)[0])
        yield beam.pvalue.TaggedOutput("pruned", {**element, "kept_reason": f"dropped: {why}"})
        return
    yield beam.pvalue.TaggedOutput(element["level"], element)
    if conv:
        yield beam.pvalue.TaggedOutput(f"{element['level']}_conversational",
                                       conversational(element, prompts[element["prompt_id"]]))


class _CreateRecords(beam.Create):
    """beam.Create of plain dict records that skips inferring an element type from every value
    (seconds for ~10k nested dicts); the records are dicts, encoded like any Python object."""

    def infer_output_type(self, unused_input_type):
        return typehints.Dict[str, typehints.Any]


def feature_plan(candidates: list[dict], prompts: dict, responses: list[dict], params: Params, policy: str,
                 unpaired: list[dict]) -> dict:
    """The pair classifier's texts and their batches, planned in the driver (tokenizer and config only):
    `rows` (one element per text, keyed by its rank in the plan), `per_batch`, `n` texts, `width`."""
    from transformers import AutoConfig

    from prefsynth.transforms.upo.features_beam import feature_rows
    from prefsynth.transforms.upo.pair_classifier import N_LOGPROB_FEATURES, batch_plan, encode_items, feature_width
    from prefsynth.transforms.upo.scoring import classifier_inputs, load_tokenizer

    cfg = params.pairs.upo
    _, _, trusted, to_score, trusted_unpaired = upo_inputs(candidates, prompts, responses, params, unpaired)
    _, items = classifier_inputs(to_score, trusted, cfg, params.seed, trusted_unpaired)
    tok, config = load_tokenizer(policy), AutoConfig.from_pretrained(policy)
    enc, n_comp = encode_items(tok, items, cfg.max_length)
    plan = batch_plan(config, tok, enc, cfg.score_batch_size)
    return {"rows": feature_rows(enc, n_comp, plan), "per_batch": len(plan[0]), "n": len(items),
            "width": N_LOGPROB_FEATURES + 2 * feature_width(config, cfg.hidden_features)}


def _matrix(features: list[tuple[int, np.ndarray]], n: int, width: int) -> np.ndarray:
    out = np.zeros((n, width), dtype=np.float32)
    for i, row in features:
        out[i] = row
    return out


def _decide(features, candidates: list[dict], prompts: dict, responses: list[dict], params: Params,
            policy: str | None, unpaired: list[dict], info_path: str) -> dict:
    """Every decision (transforms/pair_filters.decide) from the features; the estimator's info goes to
    `info_path` (a Beam filesystem path) for the driver's metrics."""
    with tempfile.TemporaryDirectory(prefix="upo-") as work:
        pairs, dropped, info = decide(candidates, prompts, responses, params, policy, work, unpaired, features)
    with FileSystems.create(info_path) as f:
        f.write(json.dumps(info).encode())
    return {"pairs": pairs, "dropped": dropped}


def _route_all(decision: dict, conv: bool, prompts: dict):
    for element in decision["pairs"]:
        yield from _route(element, decision["dropped"], conv, prompts)


def build(pipeline, params: Params, candidates: list[dict], prompts: dict, responses: list[dict],
          unpaired: list[dict], policy: str | None, plan: dict | None, info_path: str, copies: list[str],
          candidates_dir: str, out: dict[str, str]) -> None:
    """Policy features per deterministic batch (a model stage, when the pair classifier scores), every
    decision in one step after them, then the pairs routed to their views."""
    from apache_beam.ml.inference.base import RunInference

    from prefsynth.transforms.model_handler import worker_total
    from prefsynth.transforms.upo.features_beam import PolicyFeatures

    sel, cfg = params.pairs, params.pairs.upo
    if plan is not None:
        featurise = PolicyFeatures(params.policy, policy, cfg.hidden_features, cfg.torch_threads, STAGE,
                                   worker_total(plan["n"], params.beam))
        features = (pipeline | "Texts" >> _CreateRecords(plan["rows"], reshuffle=False)
                    | "TextBatches" >> DeterministicBatches(plan["per_batch"], key="key")
                    | "PolicyFeatures" >> RunInference(featurise.handler())
                    | "Feature" >> beam.Map(lambda r: (r.example, r.inference))
                    | "AllFeatures" >> beam.combiners.ToList()
                    | "FeatureMatrix" >> beam.Map(_matrix, plan["n"], plan["width"]))
    else:
        features = pipeline | "NoFeatures" >> beam.Create([None])
    decision = features | "Decide" >> beam.Map(_decide, candidates, prompts, responses, params, policy, unpaired,
                                               info_path)
    tags = ["pruned", *LEVELS] + ([f"{lv}_conversational" for lv in LEVELS] if sel.conversational else [])
    routed = decision | "Route" >> beam.FlatMap(_route_all, sel.conversational, prompts).with_outputs(*tags)
    for tag in tags:
        dataset = "pairs_conversational" if tag.endswith("_conversational") else "pairs"
        routed[tag] | f"Write_{tag}" >> WriteDataset(out[tag], dataset, STAGE, sel.num_shards)
    for view in copies:  # other views (kto, prm, critique, ...) pass through unchanged
        dataset = read_table(f"{candidates_dir}/{view}").schema.metadata[b"prefsynth.dataset"].decode()
        (pipeline | f"Read_{view}" >> ReadDataset(f"{candidates_dir}/{view}")
         | f"Copy_{view}" >> WriteDataset(out[view], dataset, STAGE, sel.num_shards))
    (pipeline | "NoDead" >> beam.Create([])) | "WriteDead" >> WriteDataset(out["dead"], "dead_letters", STAGE, 1)


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser(STAGE, __doc__)
    ap.add_argument("--prompts", default="data/prompts")
    ap.add_argument("--responses", default="data/responses")
    ap.add_argument("--candidates", default="data/candidates")
    ap.add_argument("--policy", default="models/policy-0", help="backbone of the UPO estimator")
    add_outputs(ap, out="data/pairs", dead="data/deadletter/pairs", metrics="metrics/pairs.json", reports=True)
    args = ap.parse_args(argv)
    params = load_params(args.params)
    start = time.perf_counter()
    prompts_table = read_table(args.prompts)
    prompts = {r["prompt_id"]: r for r in prompts_table.to_pylist()}
    candidates = [p for lv in LEVELS if dataset_files(f"{args.candidates}/{lv}")
                  for p in read_records(f"{args.candidates}/{lv}")]
    # the verifier's per-completion labels (the unpaired KTO view): the pair classifier's 'both wrong' ties
    unpaired = (read_records(f"{args.candidates}/kto") if params.pairs.upo.estimator == "pair_classifier"
                and dataset_files(f"{args.candidates}/kto") else [])
    responses = read_records(args.responses)
    # the run's policy directory may hold only a policy.json naming the real model
    policy = resolve_model(args.policy, params.policy) if args.policy else None
    cfg = params.pairs.upo
    plan = (feature_plan(candidates, prompts, responses, params, policy, unpaired)
            if cfg.enabled and policy and cfg.estimator == "pair_classifier" else None)
    info_path = f"{args.out}.estimator.partial.json"
    copies = sorted(d.name for d in Path(args.candidates).iterdir() if d.is_dir() and d.name not in LEVELS
                    and not d.name.endswith(".partial")) if "://" not in args.candidates else []
    tags = ["pruned", *LEVELS] + ([f"{lv}_conversational" for lv in LEVELS] if params.pairs.conversational else [])
    outs = {t: Output(f"{args.out}/{t}", "pairs_conversational" if t.endswith("_conversational") else "pairs")
            for t in tags}
    for view in copies:
        outs[view] = Output(f"{args.out}/{view}", read_table(f"{args.candidates}/{view}").schema.metadata[
            b"prefsynth.dataset"].decode())
    outs["dead"] = Output(args.dead, "dead_letters")
    used = {k: prompts[k] for k in {p["prompt_id"] for p in candidates}}
    try:
        account = run_stage(
            STAGE, params.beam, outs, "response", "dead",
            lambda pl, out: build(pl, params, candidates, used, responses, unpaired, policy, plan, info_path,
                                  copies, args.candidates, out),
            count_out=lambda staged: sum(read_table(staged[lv]).num_rows for lv in LEVELS),
            refs={"prompt_id": prompts_table.column("prompt_id").to_pylist()}, reports_dir=args.reports,
        )
        with FileSystems.open(info_path) as f:
            info = json.loads(f.read().decode())
    finally:
        if FileSystems.exists(info_path):
            FileSystems.delete([info_path])
    # the decisions, read back from what the stage wrote: every candidate is in a level view or pruned
    pruned = read_records(f"{args.out}/pruned")
    pairs = [p for lv in LEVELS for p in read_records(f"{args.out}/{lv}")] + pruned
    dropped = {p["pair_id"]: p["kept_reason"].removeprefix("dropped: ") for p in pruned}
    report = precision_report(pairs, dropped, prompts, params)
    gate = info.pop("source_gate", None)
    write_metrics(args.metrics, {"accounting": account.to_dict(), "estimator": info, "source_gate": gate, **report,
                                 "wall_s": round(time.perf_counter() - start, 1)})
    log.info("[%s] metrics in %s", STAGE, args.metrics)


if __name__ == "__main__":
    main()
