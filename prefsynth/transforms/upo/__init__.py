"""UPO uncertainty pruning (Wang et al. 2024, "Uncertainty-Preference-Optimization"). No Beam here.

An estimator on the policy's own backbone is trained on trusted data (verifier-labelled, from a
disjoint hash split of prompts) and run with dropout on for T passes (MC dropout, Gal &
Ghahramani). Pass t gives p_t, the estimator's probability that the pair's label is right:
- pair_classifier (default): UPO's 2-label classifier, a small head over the frozen policy's
  features of both sides (see `policy_features`), p_t = softmax(head(...))[1];
- reward_model: a score head fine-tuned through the backbone with TRL's RewardTrainer,
  p_t = sigmoid(r_chosen - r_rejected).
Per pair:
  mean = E_t[p_t], var = Var_t[p_t], BALD = H[E_t p_t] - E_t[H(p_t)] (binary entropy, nats):
the mutual information between the verdict and the estimator's weights — high when the passes
disagree with each other, not merely when each pass is unsure.
A pair whose majority of passes contradicts its label is dropped as noise; the rest are sampled
seeded, "easy" ones with probability proportional to 1 - BALD and "hard" ones proportional to
BALD (UPO's bald_rate = the hard share).

    sampling.py         BALD from the passes, the trusted split of prompts, UPO's selection
    reward_model.py     the reward-model estimator (TRL RewardTrainer through the backbone)
    pair_classifier.py  the pair-classifier estimator (the policy's features, a small head)
    scoring.py          train the chosen estimator on trusted pairs, MC-score every pair
    features_beam.py    the pair classifier's policy features as a Beam model stage (not imported here)

Every name but features_beam's is importable from `prefsynth.transforms.upo`.
"""

from prefsynth.transforms.upo.pair_classifier import N_LOGPROB_FEATURES, PairClassifier, policy_features, trusted_examples
from prefsynth.transforms.upo.reward_model import (
    ATTENTION_DROPOUT_KEYS,
    HEAD_NAMES,
    HIDDEN_DROPOUT_KEYS,
    build_estimator,
    estimator_text,
    mc_dropout_rewards,
    pair_probabilities,
    train_estimator,
)
from prefsynth.transforms.upo.sampling import Decision, binary_entropy, is_trusted_prompt, select, uncertainty
from prefsynth.transforms.upo.scoring import score_pairs, score_pairs_reward_model

__all__ = [
    "ATTENTION_DROPOUT_KEYS", "Decision", "HEAD_NAMES", "HIDDEN_DROPOUT_KEYS", "N_LOGPROB_FEATURES", "PairClassifier",
    "binary_entropy", "build_estimator", "estimator_text", "is_trusted_prompt", "mc_dropout_rewards",
    "pair_probabilities", "policy_features", "score_pairs", "score_pairs_reward_model", "select", "train_estimator",
    "trusted_examples", "uncertainty",
]
