"""The bootstrap and critic stages: the two tiny character-level models trained here."""

from __future__ import annotations

from dataclasses import dataclass

from prefsynth.config.fields import keys_in_order
from prefsynth.config.fields import option as _f


@dataclass
class TinyModelConfig:
    """What every tiny model trained by prefsynth (policy-0, the critic) is set with: its shape and
    its optimizer. A subclass sets its own context length and step budget."""

    n_layer: int = _f(2, "Tiny model: transformer layers.")
    n_embd: int = _f(64, "Tiny model: width.")
    n_head: int = _f(2, "Tiny model: attention heads.")
    n_positions: int = _f(96, "Tiny model: context length in characters.")
    max_steps: int = _f(2400, "Optimizer steps (budget by steps, not seconds: results are step-sensitive).")
    batch_size: int = _f(64, "Sequences per optimizer step.")
    learning_rate: float = _f(3e-3, "AdamW peak learning rate.")
    warmup_steps: int = _f(50, "Linear warm-up steps before the cosine decay.")
    weight_decay: float = _f(0.01, "AdamW weight decay.")
    torch_threads: int = _f(2, "CPU threads for torch (fixed so runs are reproducible).")


@keys_in_order("model", "n_layer", "n_embd", "n_head", "n_positions", "dropout", "max_steps", "batch_size",
               "learning_rate", "warmup_steps", "weight_decay", "self_eval_fraction", "eval_prompts", "eval_samples",
               "eval_sample_prompts", "eval_temperature", "seed", "torch_threads")
@dataclass
class BootstrapConfig(TinyModelConfig):
    model: str | None = _f(None, "A real policy (local path or Hub id): skip training and record it. "
                           "null: train the tiny arith policy.")
    dropout: float = _f(0.0, "Tiny policy: dropout during bootstrap training (UPO's MC dropout sets its own).")
    self_eval_fraction: float = _f(0.3, "Share of training examples that teach the self-evaluation question.")
    eval_prompts: int = _f(500, "Validation prompts used to measure the bootstrap policy (never trained on).")
    eval_samples: int = _f(8, "Samples per prompt to measure contrast (prompts with right and wrong samples).")
    eval_sample_prompts: int = _f(200, "Validation prompts used for the sampled contrast measurement.")
    eval_temperature: float = _f(0.8, "Sampling temperature of the contrast measurement.")
    seed: int | None = _f(None, "Training seed (initial weights, batch order); null: the global seed. The "
                          "training problems and the splits stay those of the global seed.")


@keys_in_order("enabled", "init_from", "n_layer", "n_embd", "n_head", "n_positions", "max_steps", "batch_size",
               "learning_rate", "warmup_steps", "weight_decay", "correct_fraction", "max_response_examples",
               "heldout_fraction", "eval_examples", "seed", "torch_threads")
@dataclass
class CriticConfig(TinyModelConfig):
    enabled: bool = _f(True, "Train the tiny critic (arith runs only; other runs skip the stage cleanly).")
    init_from: str = _f("scratch", "scratch: random weights | policy: start from policy-0 (its blocks, the rows of the "
                        "characters both share, its positions; the wider position table's rest random; needs "
                        "policy-0's n_layer / n_embd / n_head).")
    n_positions: int = _f(320, "Tiny critic: context in characters (critic prompt + critique); longer examples are "
                          "skipped.")
    max_steps: int = _f(500, "Optimizer steps (budget by steps: the whole default dvc repro must stay short).")
    correct_fraction: float = _f(0.5, "Target share of truly-correct solutions among training examples "
                                 "(planted errors and canonical solutions fill up to it).")
    max_response_examples: int | None = _f(None, "Critiques of policy responses used for training at most "
                                           "(a seeded subset); null: all of the trained-on prompts'.")
    heldout_fraction: float = _f(0.1, "Share of train-split prompts (by hash) held out with every test prompt.")
    eval_examples: int = _f(600, "Held-out critiques generated to measure the critic (half responses, half planted).")
    seed: int | None = _f(None, "Training seed; null: the global seed (the held-out split never moves with it).")

    def __post_init__(self):
        if self.init_from not in ("scratch", "policy"):
            raise ValueError(f"critic.init_from must be 'scratch' or 'policy', got {self.init_from!r}")
