"""Train the estimator on the trusted pairs and MC-dropout score every pair: pair_id -> (mean, var,
BALD, agree), with the pair classifier (default) or the reward model.
"""

from __future__ import annotations

import time

from prefsynth.transforms.upo.pair_classifier import PairClassifier, policy_features, trusted_examples
from prefsynth.transforms.upo.reward_model import estimator_text, mc_dropout_rewards, pair_probabilities, train_estimator
from prefsynth.transforms.upo.sampling import uncertainty


def classifier_inputs(pairs: list[dict], trusted: list[dict], cfg, seed: int,
                      unpaired: list[dict] | None = None) -> tuple[list[tuple], list[tuple[str, str]]]:
    """(training examples, the distinct (prompt, completion) texts to featurise, sorted) of the pair classifier."""
    examples = trusted_examples(trusted, unpaired or [], cfg.max_ties_per_prompt, seed)
    if not examples:
        raise ValueError(f"UPO: no trusted pairs ({cfg.trusted_sources} on {cfg.trusted_fraction:g} of the prompts) "
                         "to train the estimator on; set pairs.upo.enabled: false or widen trusted_fraction")
    items = sorted({(p["prompt"], side) for p in pairs for side in (p["chosen"], p["rejected"])}
                   | {(e[0], side) for e in examples for side in e[1:3]})
    return examples, items


def load_tokenizer(policy: str):
    """The policy's tokenizer, padding with its end of text where it has no pad token."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(policy)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_policy(policy: str, threads: int):
    """(causal LM, tokenizer) of the policy for its features: on the CPU, in float32, `threads` threads."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    tok = load_tokenizer(policy)
    return AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32), tok


def score_pairs(pairs: list[dict], trusted: list[dict], policy: str, cfg, seed: int, work_dir: str,
                unpaired: list[dict] | None = None, features=None) -> tuple[dict, dict]:
    """Train the estimator on trusted data, MC-dropout score `pairs`: pair_id -> (mean, var, bald, agree).
    `features`: the policy's features of `classifier_inputs`' texts, when computed already (in Beam)."""
    if cfg.estimator == "reward_model":
        return score_pairs_reward_model(pairs, trusted, policy, cfg, seed, work_dir)
    import torch

    torch.set_num_threads(cfg.torch_threads)
    t0 = time.perf_counter()
    examples, items = classifier_inputs(pairs, trusted, cfg, seed, unpaired)
    index = {t: i for i, t in enumerate(items)}
    featurised_here = features is None
    if featurised_here:
        lm, tok = load_policy(policy, cfg.torch_threads)
        features = policy_features(lm, tok, items, batch_size=cfg.score_batch_size, max_length=cfg.max_length,
                                   hidden=cfg.hidden_features)
    feats = features
    t1 = time.perf_counter()
    head = PairClassifier(feats.shape[1], cfg.head_hidden, cfg.dropout, seed)
    train_acc = head.fit(feats, [index[(e[0], e[1])] for e in examples], [index[(e[0], e[2])] for e in examples],
                         [e[3] for e in examples], steps=cfg.head_steps, batch_size=cfg.batch_size,
                         learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, seed=seed)
    t2 = time.perf_counter()
    ci = [index[(p["prompt"], p["chosen"])] for p in pairs]
    ri = [index[(p["prompt"], p["rejected"])] for p in pairs]
    mean, var, bald, agree = uncertainty(head.mc_probabilities(feats, ci, ri, cfg.passes, seed))
    t3 = time.perf_counter()
    scores = {p["pair_id"]: (float(mean[i]), float(var[i]), float(bald[i]), float(agree[i])) for i, p in enumerate(pairs)}
    info = {"estimator": "pair_classifier", "trusted_pairs": len(trusted), "train_examples": len(examples),
            "train_accuracy": round(train_acc, 4), "texts_scored": len(items), "passes": cfg.passes,
            "train_s": round(t2 - t1, 1), "score_s": round(t3 - t2, 1)}
    if featurised_here:  # else the features were a model stage of their own (the pairs stage's accounting)
        info["features_s"] = round(t1 - t0, 1)
    return scores, info


def score_pairs_reward_model(pairs: list[dict], trusted: list[dict], policy: str, cfg, seed: int,
                             work_dir: str) -> tuple[dict, dict]:
    """The reward-model estimator: TRL RewardTrainer through the whole backbone, MC dropout through it."""
    import torch

    torch.set_num_threads(cfg.torch_threads)
    t0 = time.perf_counter()
    fits = [p for p in trusted if len(p["prompt"]) + max(len(p["chosen"]), len(p["rejected"])) < cfg.max_length]
    model, tok = train_estimator(policy, fits, work_dir, dropout=cfg.dropout, epochs=cfg.epochs,
                                     max_steps=cfg.max_steps, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                                     max_length=cfg.max_length, seed=seed, threads=cfg.torch_threads)
    t1 = time.perf_counter()
    texts = sorted({estimator_text(p["prompt"], side, tok.eos_token) for p in pairs for side in (p["chosen"], p["rejected"])})
    index = {t: i for i, t in enumerate(texts)}
    rewards = mc_dropout_rewards(model, tok, texts, cfg.passes, seed, cfg.score_batch_size, cfg.max_length)
    ci = [index[estimator_text(p["prompt"], p["chosen"], tok.eos_token)] for p in pairs]
    ri = [index[estimator_text(p["prompt"], p["rejected"], tok.eos_token)] for p in pairs]
    mean, var, bald, agree = uncertainty(pair_probabilities(rewards, ci, ri))
    t2 = time.perf_counter()
    scores = {p["pair_id"]: (float(mean[i]), float(var[i]), float(bald[i]), float(agree[i])) for i, p in enumerate(pairs)}
    info = {"estimator": "reward_model", "trusted_pairs": len(fits), "texts_scored": len(texts), "passes": cfg.passes,
            "train_s": round(t1 - t0, 1), "score_s": round(t2 - t1, 1)}
    return scores, info
