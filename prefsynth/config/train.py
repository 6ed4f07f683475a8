"""The train and evaluate stages."""

from __future__ import annotations

from dataclasses import dataclass

from prefsynth.config.fields import option as _f


@dataclass
class TrainConfig:
    trainer: str = _f("dpo", "dpo: the policy on preference pairs (WeightedDPOTrainer); kto: the policy on the "
                      "unpaired view; prm: a process reward model on the stepwise view; reward: a reward model "
                      "on preference pairs; sft: supervised fine-tuning on `sft_source` (the RFT and continued-SFT "
                      "baselines). dpo, kto and sft write the next policy; prm/reward write a scorer.")
    sft_source: str = _f("verified_samples", "trainer sft: verified_samples (RFT: the round's samples the verifier "
                         "found correct, from the unpaired view data/pairs/kto, one per distinct text) or gold (the "
                         "train prompts' reference solutions: continued SFT of the policy).")
    views: list = _f(["response", "step"], "Pair views of data/pairs to train on (dpo/reward).")
    label_sources: list | None = _f(None, "Keep only pairs whose label_source starts with one of these; null: all.")
    max_pairs: int | None = _f(None, "Train on at most N pairs (a seeded subset; equal-count ablations); null: all.")
    loss_type: list = _f(["sigmoid"], "DPO loss(es) TRL offers: sigmoid, ipo, robust, hinge, bco_pair, apo_zero, "
                         "sft, ... (several are summed with loss_weights, e.g. [sigmoid, sft] = RPO).")
    loss_weights: list | None = _f(None, "One weight per loss_type; null: 1 each.")
    beta: float = _f(0.1, "DPO beta (IPO: the regulariser tau).")
    nll_weight: float = _f(10.0, "RPO's alpha: adds alpha x the pair-weighted NLL of the chosen completions to the "
                           "DPO loss (Iterative RPO); 0: plain DPO.")
    label_smoothing: float = _f(0.0, "robust / exo_pair: assumed label-flip probability (cDPO epsilon).")
    use_pair_weights: bool = _f(True, "Scale each pair's loss by its weight column (cDPO visit-count confidence, "
                                "UPO confidence).")
    learning_rate: float = _f(1e-4, "AdamW peak learning rate.")
    epochs: float = _f(1.0, "Passes over the training pairs.")
    max_steps: int = _f(-1, "Optimizer steps cap (-1: epochs decide).")
    batch_size: int = _f(64, "Pairs per optimizer step.")
    warmup_steps: int = _f(5, "Linear warm-up before the cosine decay.")
    max_length: int = _f(96, "Longest prompt + completion in tokens (the tiny policy's context).")
    gradient_checkpointing: bool = _f(False, "Recompute activations in the backward pass (TRL turns it on by "
                                      "default): saves GPU memory on long sequences, costs ~30% more compute.")
    lora: bool = _f(False, "Train a LoRA adapter (peft) instead of all weights; the adapter is merged on save "
                    "so the output is a plain model every backend loads.")
    lora_r: int = _f(8, "LoRA rank.")
    lora_alpha: int = _f(16, "LoRA alpha.")
    lora_dropout: float = _f(0.0, "LoRA dropout.")
    lora_target_modules: list | None = _f(None, "Modules LoRA wraps; null: peft's default for the architecture.")
    torch_threads: int = _f(2, "CPU threads for torch (fixed so runs are reproducible).")
    seed: int | None = _f(None, "Training seed (init of new heads, data order, subsets); null: the global seed. "
                          "The ablation runner varies it (run-to-run spread).")


@dataclass
class EvaluateConfig:
    split: str = _f("test", "The headline split (held out from every training stage), read once per run: "
                    "metrics `policies`.")
    validation_split: str | None = _f("validation", "Also measured on this split, where defaults and ablations are "
                                      "chosen (metrics `validation`); skipped when it has no prompts; null: never.")
    max_prompts: int | None = _f(500, "First N prompts of the split by id (with a reference answer); null: all.")
    k: int = _f(8, "Samples per prompt for maj@k, pass@k and sample accuracy (0: greedy only).")
    temperature: float = _f(0.8, "Sampling temperature of the k samples.")
    max_new_tokens: int = _f(64, "Longest completion, in tokens.")
    seed: int | None = _f(None, "Seed of the k evaluation samples; null: the global seed (the ablation runner "
                          "varies it).")
