"""bootstrap stage: train the tiny arith policy with TRL's SFTTrainer into models/policy-0.

Embedded default only: with `bootstrap.model` set to a real model, the stage records its path
instead of training. The tiny policy learns two things: worked solutions (one step per line,
`A: n` last) and a self-evaluation question (`OK? yes|no` after a step), so later stages can
ask it for P(True) and step rewards. It is measured on held-out test prompts into
metrics/bootstrap.json.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import tempfile
import time
from pathlib import Path

from prefsynth.config import Params, load_params
from prefsynth.ids import seed_for
from prefsynth.pipelines.cli_args import add_outputs, stage_parser
from prefsynth.pipelines.progress import attach_trainer_progress
from prefsynth.pipelines.stage import write_metrics
from prefsynth.schemas.io import read_records
from prefsynth.tasks import arith

log = logging.getLogger("prefsynth")


def sft_examples(params: Params, exclude: set[str], count: int) -> dict[str, list[str]]:
    """`count` prompt/completion examples: worked solutions and self-evaluation questions.

    Problems come from the generator's own 'bootstrap' stream; any whose expression is in
    `exclude` (the held-out test prompts) is skipped, so evaluation is on unseen problems.
    """
    cfg = params.bootstrap
    prompts, completions = [], []
    index = 0
    while len(prompts) < count:
        batch = arith.generate_problems(params.arith, params.seed, "bootstrap", index, 4096)
        for j, problem in enumerate(batch):
            if len(prompts) == count:
                break
            if problem.expression in exclude:
                continue
            rng = random.Random(seed_for(params.seed, f"bootstrap/{index + j}", "example"))
            if rng.random() < cfg.self_eval_fraction:
                p, c = arith.self_eval_example(problem, rng)
            else:
                p, c = problem.prompt, problem.solution
            prompts.append(p)
            completions.append(c)
        index += len(batch)
    return {"prompt": prompts, "completion": completions}


def tokenize_examples(examples: dict[str, list[str]], tokenizer, max_length: int):
    """Token ids and labels (-100 on the prompt, so only the completion and its EOS are learned).

    Done here in one fast batched call instead of TRL's per-example preparation, which took
    longer than a third of the training itself on this tiny model; the result is what
    SFTTrainer's completion-only loss builds.
    """
    from datasets import Dataset

    p_ids = tokenizer(examples["prompt"], add_special_tokens=False)["input_ids"]
    c_ids = tokenizer(examples["completion"], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    input_ids, labels = [], []
    for p, c in zip(p_ids, c_ids):
        ids = p + c + [eos]
        if len(ids) > max_length:
            raise ValueError(f"bootstrap: an example of {len(ids)} tokens exceeds n_positions={max_length}; "
                             "raise bootstrap.n_positions or make arith problems shorter")
        input_ids.append(ids)
        labels.append([-100] * len(p) + c + [eos])
    return Dataset.from_dict({"input_ids": input_ids, "labels": labels})


def train_tiny_sft(model, tokenizer, data, cfg, seed: int, out_dir: str,
                   stage: str = "bootstrap") -> tuple[float, list[float], float]:
    """TRL SFT of a tiny from-scratch model on tokenized, prompt-masked examples; saves it to out_dir.

    Shared by the tiny policy (bootstrap) and the tiny critic; `cfg` has max_steps, batch_size,
    learning_rate, warmup_steps and weight_decay. Returns (seconds, logged losses, mean loss).
    """
    import torch
    from trl import SFTConfig, SFTTrainer

    with tempfile.TemporaryDirectory() as tmp:
        sft_cfg = SFTConfig(
            output_dir=tmp,
            max_steps=cfg.max_steps,
            per_device_train_batch_size=cfg.batch_size,
            learning_rate=cfg.learning_rate,
            lr_scheduler_type="cosine_with_min_lr",
            lr_scheduler_kwargs={"min_lr_rate": 0.1},
            warmup_steps=cfg.warmup_steps,
            weight_decay=cfg.weight_decay,
            adam_beta1=0.9,
            adam_beta2=0.98,
            max_grad_norm=1.0,
            max_length=None,  # examples are checked against n_positions when tokenized
            dataset_kwargs={"skip_prepare_dataset": True},  # already tokenized, labels masked
            packing=False,
            use_cpu=not torch.cuda.is_available(),
            bf16=False,
            fp16=False,
            logging_steps=max(1, cfg.max_steps // 20),
            save_strategy="no",
            report_to=[],
            seed=seed,
            data_seed=seed,
            dataloader_num_workers=0,
            disable_tqdm=True,
            activation_checkpointing=False,  # SFTConfig turns it on by default; pure overhead at this size
        )
        trainer = SFTTrainer(model=model, args=sft_cfg, train_dataset=data, processing_class=tokenizer)
        attach_trainer_progress(trainer, stage)  # one progress line + a summary, not the raw log dicts
        t0 = time.perf_counter()
        result = trainer.train()
        train_s = time.perf_counter() - t0
        losses = [float(h["loss"]) for h in trainer.state.log_history if "loss" in h]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return train_s, losses, float(result.training_loss)


def train_tiny_policy(params: Params, exclude: set[str], out_dir: str) -> dict:
    import torch
    from transformers import set_seed

    from prefsynth.tiny_policy import build_model, build_tokenizer

    cfg = params.bootstrap
    torch.set_num_threads(cfg.torch_threads)
    seed = params.seed if cfg.seed is None else cfg.seed
    set_seed(seed)
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_positions, cfg.dropout)
    n_examples = cfg.max_steps * cfg.batch_size
    start = time.perf_counter()
    data = tokenize_examples(sft_examples(params, exclude, n_examples), tokenizer, cfg.n_positions)
    log.info("[bootstrap] %d SFT examples built in %.1fs; training %d steps of %d on %d params",
             len(data), time.perf_counter() - start, cfg.max_steps, cfg.batch_size,
             sum(p.numel() for p in model.parameters()))
    train_s, losses, avg_loss = train_tiny_sft(model, tokenizer, data, cfg, seed, out_dir)
    return {
        "seed": seed,
        "train_seconds": round(train_s, 1),
        "train_steps": cfg.max_steps,
        "train_examples": len(data),
        "final_train_loss": round(float(losses[-1]), 4) if losses else None,
        "first_train_loss": round(float(losses[0]), 4) if losses else None,
        "train_loss_avg": round(avg_loss, 4),
        "n_params": sum(p.numel() for p in model.parameters()),
    }


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("bootstrap", __doc__)
    ap.add_argument("--prompts", default="data/prompts")
    add_outputs(ap, out="models/policy-0", metrics="metrics/bootstrap.json")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    cfg = params.bootstrap
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if cfg.model:
        # A real policy: nothing to train; record where it is for the later stages.
        (out / "policy.json").write_text(json.dumps({"model": cfg.model}, indent=2) + "\n")
        write_metrics(args.metrics, {"model": cfg.model, "trained": False})
        log.info("[bootstrap] using %s as policy-0", cfg.model)
        return
    if params.prompts.source != "arith":
        raise ValueError("bootstrap: the tiny policy is for the arith world; set bootstrap.model to a real "
                         "model for other tasks")
    records = read_records(args.prompts)
    # neither validation nor test problems are trained on; policy-0 is measured here on validation
    # (the test split is read by evaluate only)
    held = [r for r in records if r["split"] in ("validation", "test")]
    val = sorted((r for r in held if r["split"] == "validation"), key=lambda r: r["prompt_id"])
    metrics = train_tiny_policy(params, {r["question"] for r in held}, str(out))

    from prefsynth.backends.transformers_backend import TransformersBackend
    from prefsynth.evaluation import arith_policy_metrics

    t0 = time.perf_counter()
    backend = TransformersBackend(str(out), device="cpu", batch_size=512)
    metrics["eval_split"] = "validation"
    metrics.update(arith_policy_metrics(
        backend, val, params.seed, cfg.eval_prompts, cfg.eval_sample_prompts, cfg.eval_samples,
        cfg.eval_temperature))
    metrics["eval_seconds"] = round(time.perf_counter() - t0, 1)
    metrics["trained"] = True
    write_metrics(args.metrics, metrics)
    log.info("[bootstrap] greedy accuracy %.3f, per-step %.3f, mixed %.3f, self-eval acc %.3f (AUROC %s) "
             "after %ss of training", metrics["greedy_accuracy"], metrics["per_step_accuracy"],
             metrics["mixed_fraction"], metrics["self_eval_accuracy"], metrics["self_eval_auroc"],
             metrics["train_seconds"])
