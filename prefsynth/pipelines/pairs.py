"""pairs stage: candidate pairs (data/candidates) -> the TRL-ready pairs training reads (data/pairs).

In order, every decision recorded:
1. self-consistency agreement filter: pairs of `pairs.agreement_filter_sources` from prompts
   whose majority answer has less than `min_agreement` of the samples are dropped (low_agreement);
2. UPO (transforms/upo.py): an estimator trained on trusted data of a hash split of prompts
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
"""

from __future__ import annotations

import collections
import logging
import tempfile
import time
from pathlib import Path

import apache_beam as beam
from apache_beam import typehints
import numpy as np

from prefsynth.backends.factory import resolve_model
from prefsynth.config import Params, load_params
from prefsynth.pipelines.cli_args import add_outputs, stage_parser
from prefsynth.pipelines.candidates import truly_better
from prefsynth.pipelines.stage import Output, run_stage, write_metrics
from prefsynth.schemas.io import ReadDataset, WriteDataset, dataset_files, read_records, read_table
from prefsynth.transforms import self_consistency as sc
from prefsynth.transforms import upo
from prefsynth.transforms.deadletters import count_dropped, count_in

STAGE = "pairs"
# the stage name the Parquet metadata and dead letters carry: the name this stage had before issue 19
# (prune), kept so its data files stay byte-identical (and dvc.lock's hashes with them)
WRITTEN_AS = "prune"
LEVELS = ("response", "step")
log = logging.getLogger("prefsynth")


def _matches(source: str | None, prefixes) -> bool:
    return source is not None and any(source.startswith(p) for p in prefixes)


def agreement_by_prompt(responses: list[dict], prompts: dict[str, dict] | None = None) -> dict[str, sc.Consistency]:
    """Self-consistency per prompt, answers compared by the prompt's task's voting key."""
    from prefsynth.tasks import get_task

    by_prompt = collections.defaultdict(list)
    for r in responses:
        by_prompt[r["prompt_id"]].append(r)
    out = {}
    for pid, rs in by_prompt.items():
        task = (prompts or {}).get(pid, {}).get("task")
        key = get_task(task).answer_key if task else sc._norm
        out[pid] = sc.consistency(sorted(rs, key=lambda r: r["response_id"]), normalise=key)
    return out


def agreement_filter(pairs: list[dict], agreement: dict[str, sc.Consistency], sources, min_agreement: float) -> dict:
    """pair_id -> drop reason for pairs of `sources` from prompts with a weak majority."""
    out = {}
    for p in pairs:
        c = agreement.get(p["prompt_id"])
        if _matches(p["label_source"], sources) and (c is None or c.agreement < min_agreement):
            out[p["pair_id"]] = f"low_agreement: majority {0 if c is None else c.agreement:.2f} < {min_agreement:g}"
    return out


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


def score_pairs(pairs: list[dict], trusted: list[dict], policy: str, cfg, seed: int, work_dir: str,
                unpaired: list[dict] | None = None) -> tuple[dict, dict]:
    """Train the estimator on trusted data, MC-dropout score `pairs`: pair_id -> (mean, var, bald, agree)."""
    if cfg.estimator == "reward_model":
        return score_pairs_reward_model(pairs, trusted, policy, cfg, seed, work_dir)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(cfg.torch_threads)
    t0 = time.perf_counter()
    examples = upo.trusted_examples(trusted, unpaired or [], cfg.max_ties_per_prompt, seed)
    if not examples:
        raise ValueError(f"UPO: no trusted pairs ({cfg.trusted_sources} on {cfg.trusted_fraction:g} of the prompts) "
                         "to train the estimator on; set pairs.upo.enabled: false or widen trusted_fraction")
    items = sorted({(p["prompt"], side) for p in pairs for side in (p["chosen"], p["rejected"])}
                   | {(e[0], side) for e in examples for side in e[1:3]})
    index = {t: i for i, t in enumerate(items)}
    tok = AutoTokenizer.from_pretrained(policy)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    lm = AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32)  # features on the CPU, in float32
    feats = upo.policy_features(lm, tok, items, batch_size=cfg.score_batch_size, max_length=cfg.max_length,
                                hidden=cfg.hidden_features)
    t1 = time.perf_counter()
    head = upo.PairClassifier(feats.shape[1], cfg.head_hidden, cfg.dropout, seed)
    train_acc = head.fit(feats, [index[(e[0], e[1])] for e in examples], [index[(e[0], e[2])] for e in examples],
                         [e[3] for e in examples], steps=cfg.head_steps, batch_size=cfg.batch_size,
                         learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, seed=seed)
    t2 = time.perf_counter()
    ci = [index[(p["prompt"], p["chosen"])] for p in pairs]
    ri = [index[(p["prompt"], p["rejected"])] for p in pairs]
    mean, var, bald, agree = upo.uncertainty(head.mc_probabilities(feats, ci, ri, cfg.passes, seed))
    t3 = time.perf_counter()
    scores = {p["pair_id"]: (float(mean[i]), float(var[i]), float(bald[i]), float(agree[i])) for i, p in enumerate(pairs)}
    info = {"estimator": "pair_classifier", "trusted_pairs": len(trusted), "train_examples": len(examples),
            "train_accuracy": round(train_acc, 4), "texts_scored": len(items), "passes": cfg.passes,
            "features_s": round(t1 - t0, 1), "train_s": round(t2 - t1, 1), "score_s": round(t3 - t2, 1)}
    return scores, info


def score_pairs_reward_model(pairs: list[dict], trusted: list[dict], policy: str, cfg, seed: int,
                             work_dir: str) -> tuple[dict, dict]:
    """The reward-model estimator: TRL RewardTrainer through the whole backbone, MC dropout through it."""
    import torch

    torch.set_num_threads(cfg.torch_threads)
    t0 = time.perf_counter()
    fits = [p for p in trusted if len(p["prompt"]) + max(len(p["chosen"]), len(p["rejected"])) < cfg.max_length]
    model, tok = upo.train_estimator(policy, fits, work_dir, dropout=cfg.dropout, epochs=cfg.epochs,
                                     max_steps=cfg.max_steps, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                                     max_length=cfg.max_length, seed=seed, threads=cfg.torch_threads)
    t1 = time.perf_counter()
    texts = sorted({upo.estimator_text(p["prompt"], side, tok.eos_token) for p in pairs for side in (p["chosen"], p["rejected"])})
    index = {t: i for i, t in enumerate(texts)}
    rewards = upo.mc_dropout_rewards(model, tok, texts, cfg.passes, seed, cfg.score_batch_size, cfg.max_length)
    ci = [index[upo.estimator_text(p["prompt"], p["chosen"], tok.eos_token)] for p in pairs]
    ri = [index[upo.estimator_text(p["prompt"], p["rejected"], tok.eos_token)] for p in pairs]
    mean, var, bald, agree = upo.uncertainty(upo.pair_probabilities(rewards, ci, ri))
    t2 = time.perf_counter()
    scores = {p["pair_id"]: (float(mean[i]), float(var[i]), float(bald[i]), float(agree[i])) for i, p in enumerate(pairs)}
    info = {"estimator": "reward_model", "trusted_pairs": len(fits), "texts_scored": len(texts), "passes": cfg.passes,
            "train_s": round(t1 - t0, 1), "score_s": round(t2 - t1, 1)}
    return scores, info


def decide(pairs: list[dict], prompts: dict[str, dict], responses: list[dict], params: Params, policy: str | None,
           work_dir: str, unpaired: list[dict] | None = None) -> tuple[list[dict], dict[str, str], dict]:
    """All decisions, pure of Beam: (pairs with uncertainty columns, pair_id -> drop reason, info).

    Drop reasons are '<key>: <detail>'; the key is the dropped counter's name.
    """
    sel, cfg = params.pairs, params.pairs.upo
    pairs = sorted((dict(p) for p in pairs), key=lambda p: p["pair_id"])
    dropped = agreement_filter(pairs, agreement_by_prompt(responses, prompts), sel.agreement_filter_sources,
                               sel.min_agreement)
    info: dict = {}
    if cfg.enabled and policy:
        trusted = [p for p in pairs if _matches(p["label_source"], cfg.trusted_sources)
                   and upo.is_trusted_prompt(params.seed, p["prompt_id"], cfg.trusted_fraction)]
        trusted = trusted[:cfg.max_trusted_pairs]
        to_score = [p for p in pairs if cfg.score_all or (p["pair_id"] not in dropped
                                                          and _matches(p["label_source"], cfg.sources))]
        trusted_unpaired = [r for r in unpaired or [] if _matches(r.get("label_source"), cfg.trusted_sources)
                            and upo.is_trusted_prompt(params.seed, r["prompt_id"], cfg.trusted_fraction)]
        scores, info = score_pairs(to_score, trusted, policy, cfg, params.seed, work_dir, trusted_unpaired)
        for p in to_score:
            p["uncertainty_mean"], p["uncertainty_var"], p["uncertainty_bald"], _ = scores[p["pair_id"]]
        groups = collections.defaultdict(list)
        for p in pairs:
            if p["pair_id"] not in dropped and _matches(p["label_source"], cfg.sources):
                groups[(p["level"], p["label_source"])].append(p)
        for key, group in sorted(groups.items()):
            ids = [p["pair_id"] for p in group]
            s = np.array([scores[i] for i in ids])
            for p, d in zip(group, upo.select(ids, s[:, 0], s[:, 2], s[:, 3], min_agree=cfg.min_agree,
                                              keep_fraction=cfg.keep_fraction, hard_fraction=cfg.bald_rate,
                                              seed=params.seed)):
                if d.kept:
                    p["kept_reason"] = f"{p['kept_reason']}; {d.reason}"
                    if cfg.confidence_weight:
                        p["weight"] = float(p["weight"] if p["weight"] is not None else 1.0) * p["uncertainty_mean"]
                else:
                    dropped[p["pair_id"]] = ("upo_contradicted: " if d.reason.startswith("contradicted")
                                             else "upo_not_sampled: ") + d.reason
    # one pair per content (trusted sources first), then the source gate on the final pairs: a source
    # whose trained pairs are mostly wrong on held-out prompts loses them all; the dedupe is redone
    # without it, so a pair it shadowed comes back from the source that also gave it
    pre = dict(dropped)
    gated: dict[str, dict] = {}
    while True:
        dropped = dict(pre)
        dedupe(pairs, dropped, cfg.trusted_sources, demoted=set(gated))  # a gated source's copies rank last
        for p in pairs:
            g = gated.get(source_key(p))
            if g is not None and p["pair_id"] not in dropped:
                dropped[p["pair_id"]] = (f"low_source_precision: {source_key(p)} final precision {g['precision']:.2f} "
                                         f"on {g['pairs']} held-out pairs < {sel.min_source_precision:g}")
        final = final_precision(pairs, dropped, prompts, params)
        new = {k: v for k, v in final.items() if k not in gated and v["measured"]
               and v["precision"] < sel.min_source_precision}
        if not new:
            break
        gated.update(new)
    info = {**info, "source_gate": {
        "min_source_precision": sel.min_source_precision, "min_source_pairs": sel.min_source_pairs,
        "dropped_sources": {k: {**v, "reason": f"final precision {v['precision']:.4f} on {v['pairs']} held-out "
                                f"pairs < {sel.min_source_precision:g}"} for k, v in sorted(gated.items())},
        "kept_sources": final}}
    return pairs, dropped, info


def source_key(p: dict) -> str:
    return f"{p['level']}/{p['label_source']}"


def dedupe(pairs: list[dict], dropped: dict[str, str], trusted_sources, demoted: set[str] = frozenset()) -> None:
    """One pair per content across sources, in place: trusted sources first, `demoted` level/sources
    last, then the order of pair ids. The kept copy's kept_reason names the other sources that gave it."""
    rank = {pid: i for i, pid in enumerate(p["pair_id"] for p in sorted(
        pairs, key=lambda p: (source_key(p) in demoted, not _matches(p["label_source"], trusted_sources),
                              p["pair_id"])))}
    seen: dict[tuple, dict] = {}
    also: dict[str, list[str]] = collections.defaultdict(list)
    for p in sorted(pairs, key=lambda p: rank[p["pair_id"]]):
        if p["pair_id"] in dropped:
            continue
        key = (p["level"], p["prompt"], frozenset((p["chosen"], p["rejected"])))
        if key in seen:
            first = seen[key]
            same_way = first["chosen"] == p["chosen"]
            if same_way:
                also[first["pair_id"]].append(p["label_source"])
            dropped[p["pair_id"]] = (f"duplicate: same pair as {first['pair_id']} ({first['label_source']})" if same_way
                                     else f"contradicts_trusted: reversed {first['pair_id']} ({first['label_source']})")
        else:
            seen[key] = p
    for p in pairs:
        base = p["kept_reason"].split("; also given by ")[0] if p.get("kept_reason") else p.get("kept_reason")
        if also.get(p["pair_id"]):
            base = (base or "") + f"; also given by {', '.join(sorted(set(also[p['pair_id']])))}"
        p["kept_reason"] = base


def final_precision(pairs: list[dict], dropped: dict[str, str], prompts: dict[str, dict], params: Params) -> dict:
    """Per level/source: precision of its final (trained) pairs on the held-out prompts (those the UPO
    estimator never trained on) where the task has ground truth; `measured` when there are enough."""
    cfg, sel = params.pairs.upo, params.pairs
    truth: dict[str, list[bool]] = collections.defaultdict(list)
    total: dict[str, int] = collections.Counter()
    for p in pairs:
        if p["pair_id"] in dropped:
            continue
        total[source_key(p)] += 1
        if upo.is_trusted_prompt(params.seed, p["prompt_id"], cfg.trusted_fraction):
            continue
        t = truly_better(p, prompts[p["prompt_id"]]) if p["prompt_id"] in prompts else None
        if t is not None:
            truth[source_key(p)].append(bool(t))
    out = {}
    for key in sorted(total):
        ts = truth.get(key, [])
        out[key] = {"pairs": len(ts), "trained_pairs": total[key],
                    "precision": round(sum(ts) / len(ts), 4) if ts else None,
                    "measured": len(ts) >= max(sel.min_source_pairs, 1) and sel.min_source_precision > 0}
    return out


def _precision(rows: list[dict], prompts: dict[str, dict]) -> dict:
    truth = [truly_better(p, prompts[p["prompt_id"]]) for p in rows]
    truth = [t for t in truth if t is not None]
    return {"pairs": len(rows), "precision": round(sum(truth) / len(truth), 4) if truth else None}


def precision_report(pairs: list[dict], dropped: dict[str, str], prompts: dict[str, dict], params: Params) -> dict:
    """Pair precision per level/source before and after each filter, on prompts the estimator did not train on."""
    cfg = params.pairs.upo
    held = [p for p in pairs if not upo.is_trusted_prompt(params.seed, p["prompt_id"], cfg.trusted_fraction)]
    groups = collections.defaultdict(list)
    for p in held:
        groups[f"{p['level']}/{p['label_source']}"].append(p)
    out, goal = {}, {}
    for key, rows in sorted(groups.items()):
        reason = [dropped.get(p["pair_id"], "") for p in rows]
        after_agree = [p for p, r in zip(rows, reason) if not r.startswith("low_agreement")]
        after_contra = [p for p, r in zip(rows, reason) if not r.startswith(("low_agreement", "upo_contradicted"))]
        after_upo = [p for p, r in zip(rows, reason) if not r.startswith(("low_agreement", "upo_"))]
        final = [p for p, r in zip(rows, reason) if not r]
        stages = {"candidates": _precision(rows, prompts), "after_agreement_filter": _precision(after_agree, prompts),
                  "after_upo_contradiction": _precision(after_contra, prompts),
                  "after_upo": _precision(after_upo, prompts), "final": _precision(final, prompts)}
        for s in stages.values():
            s["kept_fraction"] = round(s["pairs"] / len(rows), 4) if rows else None
        # UPO alone, measured from the pairs the agreement filter let through
        upo_in, upo_out = stages["after_agreement_filter"], stages["after_upo"]
        if upo_in["pairs"] and upo_in["precision"] is not None and upo_out["precision"] is not None:
            stages["upo_gain_points"] = round(100 * (upo_out["precision"] - upo_in["precision"]), 2)
            stages["upo_kept_fraction"] = round(upo_out["pairs"] / upo_in["pairs"], 4)
        fin = stages["final"]
        out[key] = stages
        # the goal on what is trained: from UPO's input to the final pairs (after the dedupe and the source gate)
        if _matches(key.split("/", 1)[1], cfg.sources) and upo_in["pairs"] and upo_in["precision"] is not None:
            gain = round(100 * (fin["precision"] - upo_in["precision"]), 2) if fin["precision"] is not None else None
            kept = round(fin["pairs"] / upo_in["pairs"], 4)
            goal[key] = {"final_precision": fin["precision"], "from_precision": upo_in["precision"],
                         "gain_points": gain, "kept_fraction": kept, "final_pairs": fin["pairs"],
                         "met": gain is not None and gain >= 10 and kept >= 0.5}
    per_source = {key: {"final_pairs": s["final"]["pairs"], "final_precision": s["final"]["precision"],
                        "candidate_precision": s["candidates"]["precision"]} for key, s in out.items()}
    return {"precision": out, "final_precision_by_source": per_source, "upo_goal_>=10pts_at_>=50pct_kept": goal,
            "heldout_prompts": len({p["prompt_id"] for p in held})}


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


def build(pipeline, params: Params, pairs: list[dict], dropped: dict, prompts: dict, copies: list[str],
          candidates: str, out: dict[str, str]) -> None:
    sel = params.pairs
    tags = ["pruned", *LEVELS] + ([f"{lv}_conversational" for lv in LEVELS] if sel.conversational else [])
    routed = (pipeline | "Pairs" >> _CreateRecords(pairs, reshuffle=False)
              | "Route" >> beam.FlatMap(_route, dropped, sel.conversational, prompts).with_outputs(*tags))
    for tag in tags:
        dataset = "pairs_conversational" if tag.endswith("_conversational") else "pairs"
        routed[tag] | f"Write_{tag}" >> WriteDataset(out[tag], dataset, WRITTEN_AS, sel.num_shards)
    for view in copies:  # other views (kto, prm, critique, ...) pass through unchanged
        dataset = read_table(f"{candidates}/{view}").schema.metadata[b"prefsynth.dataset"].decode()
        (pipeline | f"Read_{view}" >> ReadDataset(f"{candidates}/{view}")
         | f"Copy_{view}" >> WriteDataset(out[view], dataset, WRITTEN_AS, sel.num_shards))
    (pipeline | "NoDead" >> beam.Create([])) | "WriteDead" >> WriteDataset(out["dead"], "dead_letters", WRITTEN_AS, 1)


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
    with tempfile.TemporaryDirectory(prefix="upo-") as work:
        # the run's policy directory may hold only a policy.json naming the real model
        policy = resolve_model(args.policy, params.policy) if args.policy else None
        pairs, dropped, info = decide(candidates, prompts, read_records(args.responses), params, policy, work,
                                      unpaired)
    copies = sorted(d.name for d in Path(args.candidates).iterdir() if d.is_dir() and d.name not in LEVELS
                    and not d.name.endswith(".partial")) if "://" not in args.candidates else []
    tags = ["pruned", *LEVELS] + ([f"{lv}_conversational" for lv in LEVELS] if params.pairs.conversational else [])
    outs = {t: Output(f"{args.out}/{t}", "pairs_conversational" if t.endswith("_conversational") else "pairs")
            for t in tags}
    for view in copies:
        outs[view] = Output(f"{args.out}/{view}", read_table(f"{args.candidates}/{view}").schema.metadata[
            b"prefsynth.dataset"].decode())
    outs["dead"] = Output(args.dead, "dead_letters")
    used = {p["prompt_id"] for p in pairs} | set()
    account = run_stage(
        STAGE, params.beam, outs, "response", "dead",
        lambda pl, out: build(pl, params, pairs, dropped, {k: prompts[k] for k in used}, copies, args.candidates, out),
        count_out=lambda staged: sum(read_table(staged[lv]).num_rows for lv in LEVELS),
        refs={"prompt_id": prompts_table.column("prompt_id").to_pylist()}, reports_dir=args.reports,
    )
    report = precision_report(pairs, dropped, prompts, params)
    gate = info.pop("source_gate", None)
    write_metrics(args.metrics, {"accounting": account.to_dict(), "estimator": info, "source_gate": gate, **report,
                                 "wall_s": round(time.perf_counter() - start, 1)})
    log.info("[%s] metrics in %s", STAGE, args.metrics)


if __name__ == "__main__":
    main()
