"""train stage: TRL fine-tuning on data/pairs -> models/policy-(N+1).

`train.trainer` picks the TRL trainer:
  dpo     WeightedDPOTrainer (TRL's DPOTrainer + per-pair weights + step-aware EOS) on the pair
          views in `train.views`, any loss TRL offers (`train.loss_type`: sigmoid, ipo, robust, ...)
  kto     KTOTrainer on the unpaired view (data/pairs/kto)
  prm     trl.experimental.prm.PRMTrainer on the stepwise view (data/pairs/prm): a step scorer
  reward  RewardTrainer on the pair views: a sequence scorer (the UPO estimator's trainer)
  sft     SFTTrainer on `train.sft_source`: verified_samples (RFT: the round's verified-correct
          samples) or gold (continued SFT on the train prompts' reference solutions); the baselines
          that say what the preference data adds
dpo, kto and sft write the next policy as a normal HF model directory (LoRA adapters are merged), so
every backend loads it; prm and reward write the scorer to the same place.
"""

from __future__ import annotations

import copy
import logging
import shutil
import tempfile
import time
from pathlib import Path

from prefsynth.backends.factory import resolve_model
from prefsynth.config import Params, TrainConfig, load_params
from prefsynth.ids import seed_for
from prefsynth.pipelines.cli_args import add_outputs, stage_parser
from prefsynth.pipelines.progress import attach_trainer_progress
from prefsynth.pipelines.stage import write_metrics
from prefsynth.schemas.io import read_records
from prefsynth.tasks import get_task

log = logging.getLogger("prefsynth")
TRAINERS = ("dpo", "kto", "prm", "reward", "sft")
SFT_SOURCES = ("verified_samples", "gold")


def select_pairs(rows: list[dict], cfg: TrainConfig, seed: int, id_field: str = "pair_id") -> list[dict]:
    """The pairs (or KTO examples) to train on: label sources kept, a seeded subset of at most max_pairs, by id."""
    if cfg.label_sources is not None:
        rows = [r for r in rows if any((r.get("label_source") or "").startswith(s) for s in cfg.label_sources)]
    rows = sorted(rows, key=lambda r: r[id_field])
    if cfg.max_pairs is not None and len(rows) > cfg.max_pairs:
        rows = sorted(rows, key=lambda r: seed_for(seed, r[id_field], "train-subset"))[:cfg.max_pairs]
        rows.sort(key=lambda r: r[id_field])
    return rows


def kto_examples(rows: list[dict], cfg: TrainConfig, seed: int) -> list[dict]:
    """The unpaired examples KTO trains on, in a seeded order.

    TRL's KTOTrainer reads its dataset sequentially (its KL term pairs each example with a neighbour's completion
    in a fixed-order batch), so the trainer's seed never reaches the batch order: the order is set here instead,
    from (seed, example id), or every training seed would give the same model.
    """
    rows = select_pairs(rows, cfg, seed, id_field="example_id")
    return sorted(rows, key=lambda r: seed_for(seed, r["example_id"], "kto-order"))


def ends_solution(text: str, level: str, task_name: str | None) -> bool:
    """Whether a completion finishes a solution (gets an EOS): response-level always; a step only
    when it holds the final answer."""
    if level != "step":
        return True
    task = get_task(task_name) if task_name else None
    # a step-level completion may hold several steps (the rest of a solution): any final one ends it
    return bool(task and any(task.is_final_step(line) for line in task.split_steps(text)))


def preference_rows(rows: list[dict], tasks: dict[str, str], use_weights: bool) -> list[dict]:
    out = []
    for r in rows:
        task = tasks.get(r["prompt_id"])
        row = {"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"],
               "ends_chosen": ends_solution(r["chosen"], r["level"], task),
               "ends_rejected": ends_solution(r["rejected"], r["level"], task)}
        if use_weights:
            w = r.get("weight")
            row["weight"] = 1.0 if w is None else float(w)
        out.append(row)
    return out


def sft_rows(cfg: TrainConfig, pairs_dir: str, prompts: list[dict]) -> list[dict]:
    """{prompt, completion} examples of the SFT baselines, sorted by (prompt, completion)."""
    if cfg.sft_source not in SFT_SOURCES:
        raise ValueError(f"params.yaml: train.sft_source must be one of {SFT_SOURCES}, got {cfg.sft_source!r}")
    if cfg.sft_source == "gold":
        rows = {(p["prompt"], p["reference_solution"]) for p in prompts
                if p["split"] == "train" and p.get("reference_solution")}
    else:
        path = Path(pairs_dir) / "kto"
        if not path.exists():
            raise FileNotFoundError(f"train: sft_source verified_samples needs the unpaired view at {path}")
        rows = {(r["prompt"], r["completion"]) for r in read_records(str(path))
                if r["label"] and (r.get("label_source") or "verifier").startswith("verifier")}
    return [{"prompt": p, "completion": c} for p, c in sorted(rows)]


def _common_args(cfg: TrainConfig, out_dir: str, seed: int) -> dict:
    import torch

    return dict(output_dir=out_dir, learning_rate=cfg.learning_rate, num_train_epochs=cfg.epochs,
                max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size, warmup_steps=cfg.warmup_steps,
                lr_scheduler_type="cosine", use_cpu=not torch.cuda.is_available(), bf16=False, fp16=False,
                report_to=[], save_strategy="no", logging_steps=10, disable_tqdm=True, seed=seed, data_seed=seed,
                gradient_checkpointing=cfg.gradient_checkpointing,
                dataloader_num_workers=0)


def _peft_config(cfg: TrainConfig, model, task_type: str = "CAUSAL_LM"):
    if not cfg.lora:
        return None
    from peft import LoraConfig

    # GPT-2's Conv1D layers store their weights transposed (fan_in_fan_out); Linear layers (Llama,
    # SmolLM2, ...) do not, and peft warns and overrides the flag when it is set on them
    conv1d = any(type(m).__name__ == "Conv1D" for m in model.modules())
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.lora_target_modules, task_type=task_type, fan_in_fan_out=conv1d)


def train_policy(params: Params, pairs_dir: str, base_model: str, out_dir: str, prompts_dir: str) -> dict:
    """Run the configured trainer; save the result to out_dir; return what happened."""
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    cfg = params.train
    if cfg.trainer not in TRAINERS:
        raise ValueError(f"params.yaml: train.trainer must be one of {TRAINERS}, got {cfg.trainer!r}")
    torch.set_num_threads(cfg.torch_threads)
    seed = params.seed if cfg.seed is None else cfg.seed
    set_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    prompt_records = read_records(prompts_dir)
    tasks = {r["prompt_id"]: r["task"] for r in prompt_records}
    stats: dict = {"trainer": cfg.trainer, "base_model": base_model, "seed": seed}
    with tempfile.TemporaryDirectory() as tmp:
        common = _common_args(cfg, tmp, seed)
        if cfg.trainer in ("dpo", "reward"):
            rows = []
            for view in cfg.views:
                path = Path(pairs_dir) / view
                if not path.exists():
                    raise FileNotFoundError(f"train: pair view {view!r} not found at {path}")
                rows += read_records(str(path))
            rows = select_pairs(rows, cfg, seed)
            if not rows:
                raise ValueError(f"train: no pairs left in {pairs_dir} views {cfg.views} "
                                 f"with label_sources {cfg.label_sources}")
            stats["pairs"] = len(rows)
            stats["pairs_by_source"] = _count(r.get("label_source") or "?" for r in rows)
        if cfg.trainer == "dpo":
            from trl import DPOConfig

            from prefsynth.trainers.weighted_dpo import WeightedDPOTrainer

            data = datasets.Dataset.from_list(preference_rows(rows, tasks, cfg.use_pair_weights))
            model = AutoModelForCausalLM.from_pretrained(base_model)
            peft = _peft_config(cfg, model)
            args = DPOConfig(**common, beta=cfg.beta, loss_type=list(cfg.loss_type), loss_weights=cfg.loss_weights,
                             label_smoothing=cfg.label_smoothing, max_length=cfg.max_length)
            trainer = WeightedDPOTrainer(model=model, ref_model=None if peft else copy.deepcopy(model), args=args,
                                         train_dataset=data, processing_class=tokenizer, peft_config=peft,
                                         nll_weight=cfg.nll_weight)
        elif cfg.trainer == "sft":
            from trl import SFTConfig, SFTTrainer

            examples = sft_rows(cfg, pairs_dir, prompt_records)
            if not examples:
                raise ValueError(f"train: no {cfg.sft_source} examples for trainer sft")
            stats.update(sft_source=cfg.sft_source, examples=len(examples))
            data = datasets.Dataset.from_list(examples)
            model = AutoModelForCausalLM.from_pretrained(base_model)
            args = SFTConfig(**common, max_length=cfg.max_length, packing=False, completion_only_loss=True,
                             activation_checkpointing=False)
            trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                                 peft_config=_peft_config(cfg, model))
        elif cfg.trainer == "kto":
            from trl import KTOConfig, KTOTrainer

            rows = kto_examples(read_records(str(Path(pairs_dir) / "kto")), cfg, seed)
            stats["examples"] = len(rows)
            data = datasets.Dataset.from_list([{k: r[k] for k in ("prompt", "completion", "label")} for r in rows])
            model = AutoModelForCausalLM.from_pretrained(base_model)
            peft = _peft_config(cfg, model)
            args = KTOConfig(**common, beta=cfg.beta, max_length=cfg.max_length)
            trainer = KTOTrainer(model=model, ref_model=None if peft else copy.deepcopy(model), args=args,
                                 train_dataset=data, processing_class=tokenizer, peft_config=peft)
        elif cfg.trainer == "prm":
            from transformers import AutoModelForTokenClassification
            from trl.experimental.prm import PRMConfig, PRMTrainer

            rows = sorted(read_records(str(Path(pairs_dir) / "prm")), key=lambda r: r["example_id"])
            stats["examples"] = len(rows)
            data = datasets.Dataset.from_list([{k: r[k] for k in ("prompt", "completions", "labels")} for r in rows])
            model = AutoModelForTokenClassification.from_pretrained(base_model, num_labels=2)
            step_sep = get_task(next(iter(tasks.values()))).step_delimiter if tasks else "\n"
            args = PRMConfig(**common, max_length=cfg.max_length, step_separator=step_sep)
            trainer = PRMTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                                 peft_config=_peft_config(cfg, model, "TOKEN_CLS"))
        else:  # reward
            from transformers import AutoModelForSequenceClassification
            from trl import RewardConfig, RewardTrainer

            data = datasets.Dataset.from_list([{"prompt": r["prompt"], "chosen": r["chosen"],
                                                "rejected": r["rejected"]} for r in rows])
            model = AutoModelForSequenceClassification.from_pretrained(base_model, num_labels=1)
            model.config.pad_token_id = tokenizer.pad_token_id
            args = RewardConfig(**common, max_length=cfg.max_length)
            trainer = RewardTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                                    peft_config=_peft_config(cfg, model, "SEQ_CLS"))
        attach_trainer_progress(trainer, "train")  # a progress line + a summary, not the raw log dicts
        t0 = time.perf_counter()
        result = trainer.train()
        stats["train_seconds"] = round(time.perf_counter() - t0, 1)
        stats["train_steps"] = int(result.global_step)
        stats["train_loss"] = round(float(result.training_loss), 4)
        history = [h for h in trainer.state.log_history if "loss" in h]
        if history:
            stats["last_log"] = {k: round(float(v), 4) for k, v in history[-1].items()
                                 if isinstance(v, (int, float)) and not isinstance(v, bool)}
        model = trainer.model
        if cfg.lora:
            model = model.merge_and_unload()  # a plain model directory: every backend loads it
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        gen_cfg = getattr(model, "generation_config", None)
        if gen_cfg is not None:
            gen_cfg.pad_token_id = tokenizer.pad_token_id
            gen_cfg.eos_token_id = tokenizer.eos_token_id
            gen_cfg.save_pretrained(out_dir)
    return stats


def _count(values) -> dict:
    out: dict = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("train", __doc__)
    ap.add_argument("--prompts", default="data/prompts")
    ap.add_argument("--pairs", default="data/pairs")
    ap.add_argument("--policy", default="models/policy-0", help="the policy trained from (round r-1)")
    add_outputs(ap, out="models/policy-1", metrics="metrics/train.json")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    base = resolve_model(args.policy, params.policy)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    stats = train_policy(params, args.pairs, base, str(out), args.prompts)
    write_metrics(args.metrics, stats)
    log.info("[train] %s: %s steps, final loss %s, %ss; %s written, details in %s", stats["trainer"],
             stats.get("train_steps"), stats.get("train_loss"), stats.get("train_seconds"), out, args.metrics)
