"""critic stage: train the tiny critic with TRL's SFTTrainer on rule critiques into models/critic.

Input = the critic prompt (templates/critique.txt: problem + numbered steps), target = the exact
rule critique (first wrong step and why, or all correct; a `Verdict:` line last). Training
examples are critiques of the policy's own responses (data/responses), topped up with canonical
solutions and planted errors (`arith.planted_error_steps`) so correct and incorrect solutions are
balanced (`critic.correct_fraction`). Prompts are split before anything is built: every test
prompt and a hashed share of the train prompts are held out, and neither their responses nor
their problems are trained on. metrics/critic.json reports critique accuracy on the held-out
examples (located step = truth; correct-vs-incorrect verdict; each split by truly-correct /
truly-wrong), for policy responses and planted errors separately.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import string
import time
from pathlib import Path

from prefsynth.config import Params, load_params
from prefsynth.ids import seed_for, unit_hash
from prefsynth.pipelines.bootstrap import tokenize_examples, train_tiny_sft
from prefsynth.pipelines.cli_args import add_outputs, stage_parser
from prefsynth.pipelines.stage import write_metrics
from prefsynth.schemas.io import read_records
from prefsynth.tasks import arith
from prefsynth.transforms.critiques import (
    UNPARSEABLE,
    CritiqueParseError,
    critic_holdout,
    critique_accuracy,
    load_template,
    parse_verdict,
    render_critic_prompt,
)

log = logging.getLogger("prefsynth")

def _critic_alphabet() -> str:
    """The policy's characters first, in its order (so the ids it shares with the tiny policy
    are the same), then the rest of printable ASCII: critiques are English."""
    from prefsynth.tiny_policy import ALPHABET

    extra = "".join(c for c in string.printable if c not in ALPHABET and c not in "\t\r\x0b\x0c")
    return ALPHABET + extra


def build_critic_tokenizer():
    """The tiny policy's character tokenizer (tiny_policy.build_tokenizer) over a wider alphabet."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from prefsynth.tiny_policy import EOS, PAD, UNK

    vocab = {tok: i for i, tok in enumerate([PAD, UNK, EOS, *_critic_alphabet()])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, unk_token=UNK, eos_token=EOS,
                                   bos_token=EOS, padding_side="left", model_max_length=4096)


def _example(template: str, problem: arith.ArithProblem, steps: list[str]) -> tuple[str, str, int | None]:
    text, first_wrong = arith.critique(problem, steps)
    return render_critic_prompt(template, problem.prompt, steps), text, first_wrong


def build_examples(params: Params, prompts: list[dict], responses: list[dict], template: str,
                   fits) -> tuple[dict, list[dict]]:
    """(training examples {prompt, completion}, held-out examples with their truth and source).

    `fits(prompt, completion)` says whether an example fits the critic's context.
    """
    cfg = params.critic
    by_id = {p["prompt_id"]: p for p in prompts}
    held = {pid for pid, p in by_id.items() if critic_holdout(params.seed, p, cfg.heldout_fraction)}
    # the planted half of the held-out set is drawn from validation problems: none of them is trained on
    val_prompts = sorted((p for p in prompts if p["split"] == "validation" and p["task"] == arith.NAME),
                         key=lambda p: p["prompt_id"])
    held_questions = {by_id[pid]["question"] for pid in held} | {p["question"] for p in val_prompts}
    n_total = cfg.max_steps * cfg.batch_size
    train_p, train_c, n_correct, skipped = [], [], 0, 0
    heldout: list[dict] = []

    # critiques of the policy's own responses, in a seeded order (so a capped subset is fixed)
    ordered = sorted((r for r in responses if by_id.get(r["prompt_id"], {}).get("task") == arith.NAME),
                     key=lambda r: unit_hash(params.seed, r["response_id"], "critic/order"))
    cap = cfg.max_response_examples if cfg.max_response_examples is not None else n_total
    for r in ordered:
        prompt = by_id[r["prompt_id"]]
        problem = arith.parse_expression(prompt["question"])
        p, c, fw = _example(template, problem, list(r["steps"]))
        if r["prompt_id"] in held:
            heldout.append({"prompt": p, "truth": fw, "n_steps": len(r["steps"]), "source": "responses"})
            continue
        if len(train_p) >= cap:
            continue
        if not fits(p, c):
            skipped += 1
            continue
        train_p.append(p)
        train_c.append(c)
        n_correct += fw is None
    n_from_responses = len(train_p)

    # canonical solutions and planted errors from the generator's own stream, never a held-out problem
    want_correct = max(0, round(cfg.correct_fraction * n_total) - n_correct)
    want_wrong = max(0, n_total - len(train_p) - want_correct)
    index = 0
    while want_correct + want_wrong > 0:
        batch = arith.generate_problems(params.arith, params.seed, "critic", index, 4096)
        for j, problem in enumerate(batch):
            if want_correct + want_wrong == 0:
                break
            if problem.expression in held_questions:
                continue
            rng = random.Random(seed_for(params.seed, f"critic/{index + j}", "planted"))
            plant = want_correct == 0 or (want_wrong > 0 and rng.random() < want_wrong / (want_correct + want_wrong))
            steps = arith.planted_error_steps(problem, rng)[0] if plant else problem.solution_steps
            p, c, _ = _example(template, problem, steps)
            if not fits(p, c):
                skipped += 1
                continue
            train_p.append(p)
            train_c.append(c)
            if plant:
                want_wrong -= 1
            else:
                want_correct -= 1
        index += len(batch)

    # held out: half policy responses of held-out prompts, half validation problems (canonical or
    # planted); the test split is read by evaluate only
    half = cfg.eval_examples // 2
    heldout = heldout[:half]
    for prompt in val_prompts[: cfg.eval_examples - len(heldout)]:
        problem = arith.parse_expression(prompt["question"])
        rng = random.Random(seed_for(params.seed, prompt["prompt_id"], "critic/eval"))
        steps = arith.planted_error_steps(problem, rng)[0] if rng.random() < 0.5 else problem.solution_steps
        p, _, fw = _example(template, problem, steps)
        heldout.append({"prompt": p, "truth": fw, "n_steps": len(steps), "source": "planted"})
    stats = {"train_examples": len(train_p), "train_from_responses": n_from_responses,
             "train_planted_or_canonical": len(train_p) - n_from_responses,
             "train_correct_fraction": round(sum(c.endswith("Verdict: correct\n") for c in train_c)
                                             / max(len(train_p), 1), 4),
             "skipped_too_long": skipped, "heldout_prompts": len(held)}
    return {"prompt": train_p, "completion": train_c}, heldout, stats


def warm_start(model, policy_dir: str) -> dict:
    """Copy policy-0's weights into the critic: every block, the token rows of the characters both
    vocabularies share (the critic's alphabet starts with the policy's, in its order) and the
    positions the policy has; the critic's extra characters and positions keep their random init."""
    import torch
    from transformers import GPT2LMHeadModel

    src = GPT2LMHeadModel.from_pretrained(policy_dir)
    shape = lambda c: (c.n_layer, c.n_embd, c.n_head)  # noqa: E731
    if shape(src.config) != shape(model.config):
        raise ValueError(f"critic.init_from: policy needs the policy's n_layer/n_embd/n_head {shape(src.config)}, "
                         f"the critic has {shape(model.config)} ({policy_dir})")
    theirs, ours = src.state_dict(), model.state_dict()
    copied = grown = 0
    with torch.no_grad():
        for name, value in theirs.items():
            if name not in ours:
                continue
            if ours[name].shape == value.shape:
                ours[name].copy_(value)
                copied += 1
            elif name in ("transformer.wte.weight", "transformer.wpe.weight", "lm_head.weight") and \
                    value.shape[1:] == ours[name].shape[1:] and value.shape[0] <= ours[name].shape[0]:
                ours[name][: value.shape[0]].copy_(value)  # the shared rows; the rest stay random
                grown += 1
    model.load_state_dict(ours)
    return {"init_from": "policy", "tensors_copied": copied, "tables_grown": grown}


def train_critic(params: Params, examples: dict, out_dir: str, policy_dir: str | None = None) -> dict:
    import torch
    from transformers import set_seed

    from prefsynth.tiny_policy import build_model

    cfg = params.critic
    seed = params.seed if cfg.seed is None else cfg.seed
    torch.set_num_threads(cfg.torch_threads)
    set_seed(seed)
    tokenizer = build_critic_tokenizer()
    model = build_model(tokenizer, cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_positions)
    init = {"init_from": "scratch"}
    if cfg.init_from == "policy":
        if not policy_dir:
            raise ValueError("critic.init_from: policy needs --policy (models/policy-0)")
        init = warm_start(model, policy_dir)
    data = tokenize_examples(examples, tokenizer, cfg.n_positions)
    train_s, losses, _ = train_tiny_sft(model, tokenizer, data, cfg, seed, out_dir, stage="critic")
    return {**init, "seed": seed, "train_seconds": round(train_s, 1), "train_steps": cfg.max_steps,
            "first_train_loss": round(float(losses[0]), 4) if losses else None,
            "final_train_loss": round(float(losses[-1]), 4) if losses else None,
            "n_params": sum(p.numel() for p in model.parameters())}


def evaluate_critic(backend, heldout: list[dict], max_new_tokens: int = 96) -> dict:
    """Greedy critiques of the held-out examples, parsed strictly; an unparseable one counts as wrong."""
    from prefsynth.backends.base import SamplingParams

    outs = backend.generate([h["prompt"] for h in heldout], SamplingParams(n=1, temperature=0.0,
                                                                             max_new_tokens=max_new_tokens))
    results: dict[str, list] = {"all": [], "responses": [], "planted": []}
    unparseable = {"all": 0, "responses": 0, "planted": 0}
    for h, out in zip(heldout, outs):
        try:
            pred = parse_verdict(out[0].text, h["n_steps"])
        except CritiqueParseError:
            unparseable["all"] += 1
            unparseable[h["source"]] += 1
            pred = UNPARSEABLE  # counts against both accuracies
        results["all"].append((pred, h["truth"]))
        results[h["source"]].append((pred, h["truth"]))
    return {k: {**critique_accuracy(v), "unparseable": unparseable[k]} for k, v in results.items()}


SKIPPED = "skipped.json"  # in models/critic when the stage was skipped


def skip_reason(params) -> str | None:
    """Why the tiny critic is not trained in this run (None: it is)."""
    if not params.critic.enabled:
        return "critic.enabled is false"
    if params.prompts.source != "arith" or params.prompts.task != "arith":
        return (f"the tiny critic learns exact arith critiques; this run's prompts are {params.prompts.task!r} "
                "(point critiques.model_critic.model at a real model for model critiques)")
    if "model" not in params.critiques.critics or params.critiques.model_critic.model:
        return "no model critic of this run uses it (critiques.critics / critiques.model_critic.model)"
    return None


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("critic", __doc__)
    ap.add_argument("--prompts", default="data/prompts")
    ap.add_argument("--responses", default="data/responses")
    ap.add_argument("--policy", default="models/policy-0", help="policy-0, the weights critic.init_from: policy starts from")
    add_outputs(ap, out="models/critic", metrics="metrics/critic.json")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    skip = skip_reason(params)
    if skip:
        # arith-only by design: other runs skip it cleanly (dvc.yaml runs every stage), and the
        # critiques stage then uses critiques.model_critic.model or runs without a model critic
        out = Path(args.out)
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        (out / SKIPPED).write_text(json.dumps({"skipped": skip}, indent=2) + "\n")
        write_metrics(args.metrics, {"skipped": skip})
        log.info("[critic] skipped: %s", skip)
        return
    t_start = time.perf_counter()
    template = load_template(params.critiques.template)
    tokenizer = build_critic_tokenizer()
    n_pos = params.critic.n_positions

    def fits(prompt: str, completion: str) -> bool:
        return len(tokenizer(prompt + completion, add_special_tokens=False)["input_ids"]) + 1 <= n_pos

    examples, heldout, stats = build_examples(params, read_records(args.prompts), read_records(args.responses),
                                              template, fits)
    log.info("[critic] %d training examples (%d from responses), %d held out; training %d steps",
             stats["train_examples"], stats["train_from_responses"], len(heldout), params.critic.max_steps)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    metrics = {**stats, **train_critic(params, examples, str(out), args.policy)}

    from prefsynth.backends.transformers_backend import TransformersBackend

    t0 = time.perf_counter()
    backend = TransformersBackend(str(out), device="cpu", batch_size=256)
    metrics["heldout"] = evaluate_critic(backend, heldout, params.critiques.max_new_tokens)
    metrics["eval_seconds"] = round(time.perf_counter() - t0, 1)
    metrics["stage_seconds"] = round(time.perf_counter() - t_start, 1)
    write_metrics(args.metrics, metrics)
    h = metrics["heldout"]["all"]
    log.info("[critic] held-out critique accuracy: located %.3f, verdict %.3f (unparseable %d of %d) after %ss",
             h["located_accuracy"] or 0.0, h["verdict_accuracy"] or 0.0, h["unparseable"], h["n"],
             metrics["train_seconds"])
