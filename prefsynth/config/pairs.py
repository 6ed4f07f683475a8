"""The pairs stage: candidates -> the pairs training reads (agreement filter, UPO pruning, source gate)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefsynth.config.fields import option as _f


@dataclass
class UPOConfig:
    enabled: bool = _f(True, "Run UPO pruning (false: candidates pass through with no uncertainty columns).")
    sources: list = _f(["self_consistency", "self_certainty", "p_true", "step_confidence", "judge", "mcts_q"],
                       "Label-source prefixes whose pairs UPO prunes; other sources (verifiers) pass through scored.")
    trusted_sources: list = _f(["verifier"], "Label-source prefixes of the trusted pairs the estimator trains on.")
    trusted_fraction: float = _f(0.3, "Share of prompts (hash split) whose trusted pairs train the estimator; "
                                 "precision is reported on the other prompts only.")
    max_trusted_pairs: int = _f(3000, "Trusted training pairs at most (by pair id).")
    estimator: str = _f("pair_classifier", "pair_classifier: UPO's 2-label classifier head on the frozen policy's "
                        "features of both sides (token log-probs, greedy gaps, hidden states), trained on trusted "
                        "pairs both ways and verifier-wrong ties; reward_model: a score head fine-tuned through the "
                        "whole backbone with TRL RewardTrainer (slow on a CPU; MC dropout through the backbone).")
    hidden_features: bool = _f(True, "pair_classifier: also feed the policy's last-layer hidden states (mean and "
                               "last completion token), not only its token log-prob statistics.")
    head_hidden: int = _f(64, "pair_classifier: hidden width of the classifier head.")
    head_steps: int = _f(600, "pair_classifier: optimizer steps of the head (~2 s on a CPU).")
    weight_decay: float = _f(0.01, "pair_classifier: AdamW weight decay of the head.")
    max_ties_per_prompt: int = _f(3, "pair_classifier: pairs of two verifier-wrong completions per trusted prompt "
                                  "taught as 'not better' both ways (0: none). More ties: the estimator "
                                  "contradicts more pairs (higher precision, fewer kept).")
    dropout: float = _f(0.3, "Estimator dropout (pair_classifier: the head's; reward_model: the backbone's): "
                        "during training and for the MC-dropout passes.")
    passes: int = _f(16, "MC-dropout passes T (pair_classifier: ~0.1 s each; reward_model: a backbone pass each).")
    epochs: float = _f(2.0, "reward_model: RewardTrainer epochs over the trusted pairs.")
    max_steps: int = _f(-1, "reward_model: RewardTrainer optimizer steps cap (-1: epochs decide).")
    batch_size: int = _f(256, "Training pairs per optimizer step (reward_model on a CPU: 32).")
    learning_rate: float = _f(1e-3, "Estimator learning rate (AdamW, cosine).")
    max_length: int = _f(96, "Longest estimator input in tokens (the policy's context); longer pairs are cut "
                         "from the left for scoring and skipped for training.")
    min_agree: float = _f(0.5, "Drop a pair when fewer than this share of passes prefer its chosen side "
                          "(0.5: the majority vote contradicts the label).")
    keep_fraction: float = _f(1.0, "Share of the uncontradicted pairs sampled (UPO's selection budget; 1: keep all "
                              "of them; measured here, sampling by BALD adds no precision over the vote).")
    bald_rate: float = _f(0.0, "UPO's bald_rate: share of the sample drawn prop. to BALD (hard pairs); the rest "
                          "prop. to 1-BALD (easy pairs).")
    confidence_weight: bool = _f(True, "Multiply each kept pair's weight by the estimator's confidence (mean p).")
    score_all: bool = _f(True, "Also MC-score pairs of sources UPO does not prune and pairs an earlier filter "
                         "dropped (uncertainty columns on every pair; pair_classifier: ~6 s more); false: those "
                         "pairs carry null uncertainty.")
    score_batch_size: int = _f(512, "Sequences per policy / estimator forward pass.")
    torch_threads: int = _f(2, "CPU threads for the estimator (fixed, so runs are reproducible).")


@dataclass
class PairsConfig:
    min_agreement: float = _f(0.5, "Self-consistency filter: prompts whose majority answer has a smaller share "
                              "of the samples lose their pairs from `agreement_filter_sources`.")
    agreement_filter_sources: list = _f(["self_consistency", "self_certainty"],
                                        "Label-source prefixes the agreement filter applies to.")
    min_source_precision: float = _f(0.6, "A level/source whose precision on the final (trained) pairs of the "
                                     "held-out prompts with ground truth is below this loses all its pairs "
                                     "(low_source_precision, reason recorded in metrics); 0: off.")
    min_source_pairs: int = _f(20, "Fewest final held-out pairs with ground truth for that check; a source with "
                               "fewer is kept and reported as unmeasured.")
    conversational: bool = _f(False, "Also write <view>_conversational pair views in TRL's conversational format "
                              "(needs a chat template to train on; the tiny policy has none).")
    num_shards: int = _f(1, "Parquet files per pair view.")
    upo: UPOConfig = field(default_factory=UPOConfig, metadata={"help": "UPO uncertainty pruning (MC dropout, BALD)."})
