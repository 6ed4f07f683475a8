"""UPO uncertainty pruning (Wang et al. 2024, "Uncertainty-Preference-Optimization"). No Beam here.

An estimator (a reward model: a sequence classifier on the policy's own backbone) is trained
with TRL's RewardTrainer on trusted pairs (verifier-labelled, from a disjoint hash split of
prompts). It is then run with dropout on for T passes (MC dropout, Gal & Ghahramani). For a
candidate pair, pass t gives p_t = sigmoid(r_chosen - r_rejected), the estimator's probability
that the label is right. Per pair:
  mean = E_t[p_t], var = Var_t[p_t], BALD = H[E_t p_t] - E_t[H(p_t)] (binary entropy, nats):
the mutual information between the verdict and the estimator's weights — high when the passes
disagree with each other, not merely when each pass is unsure.
A pair whose majority of passes contradicts its label is dropped as noise; the rest are sampled
seeded, "easy" ones with probability proportional to 1 - BALD and "hard" ones proportional to
BALD (UPO's bald_rate = the hard share).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from prefsynth.ids import seed_for, unit_hash


def binary_entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    return -(p * np.log(p) + (1 - p) * np.log(1 - p))


def uncertainty(p_passes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """p_passes: [T, n] probabilities -> (mean, variance, BALD, share of passes that agree with the label)."""
    p = np.asarray(p_passes, dtype=np.float64)
    mean = p.mean(axis=0)
    bald = np.clip(binary_entropy(mean) - binary_entropy(p).mean(axis=0), 0.0, None)
    return mean, p.var(axis=0), bald, (p > 0.5).mean(axis=0)


def is_trusted_prompt(seed: int, prompt_id: str, fraction: float) -> bool:
    """Hash split: the prompts whose verifier pairs train the estimator (disjoint from those it judges)."""
    return unit_hash(seed, prompt_id, "upo/trusted") < fraction


def _weighted_keys(pair_ids: Sequence[str], weights: np.ndarray, seed: int, purpose: str) -> np.ndarray:
    """Efraimidis-Spirakis keys u ** (1 / w): the top-k keys are a weighted sample without replacement,
    and each key depends only on (seed, pair id), so the sample does not depend on row order."""
    u = np.array([max(unit_hash(seed, pid, purpose), 1e-300) for pid in pair_ids])
    w = np.clip(np.asarray(weights, dtype=np.float64), 1e-9, None)
    return np.log(u) / w  # monotone in u ** (1 / w), without underflow


@dataclass(frozen=True)
class Decision:
    kept: bool
    reason: str


def select(pair_ids: Sequence[str], mean: np.ndarray, bald: np.ndarray, agree: np.ndarray, *, min_agree: float,
           keep_fraction: float, hard_fraction: float, seed: int) -> list[Decision]:
    """Drop pairs the estimator's passes contradict, then sample `keep_fraction` of the rest
    (a `hard_fraction` share proportional to BALD, the others proportional to 1 - BALD)."""
    n = len(pair_ids)
    out: list[Decision | None] = [None] * n
    ok = []
    for i in range(n):
        if agree[i] < min_agree:
            out[i] = Decision(False, f"contradicted: {agree[i]:.2f} of passes prefer the rejected side")
        else:
            ok.append(i)
    k = math.ceil(keep_fraction * len(ok) - 1e-9)
    k_hard = min(k, round(hard_fraction * k))
    ids = [pair_ids[i] for i in ok]
    b = np.array([bald[i] for i in ok])
    chosen: dict[int, str] = {}
    if k_hard:
        keys = _weighted_keys(ids, b, seed, "upo/hard")
        for j in np.argsort(-keys, kind="stable")[:k_hard]:
            chosen[ok[j]] = "hard"
    if k - k_hard:
        keys = _weighted_keys(ids, 1.0 - b, seed, "upo/easy")
        rest = [j for j in np.argsort(-keys, kind="stable") if ok[j] not in chosen]
        for j in rest[:k - k_hard]:
            chosen[ok[j]] = "easy"
    for i in ok:
        if i in chosen:
            out[i] = Decision(True, f"UPO {chosen[i]} sample: mean {mean[i]:.2f}, BALD {bald[i]:.3f}")
        else:
            out[i] = Decision(False, "not sampled")
    return out  # type: ignore[return-value]


# ---------------------------------------------------------------- estimator (torch / TRL)

def estimator_text(prompt: str, completion: str, eos: str) -> str:
    """What the estimator reads: exactly what RewardTrainer trained on (prompt + completion + EOS)."""
    return prompt + completion + (eos or "")


def build_estimator(policy_path: str, dropout: float, seed: int):
    """A 1-label sequence classifier with the policy's weights (the LM head is dropped, a score head added)."""
    import torch
    from transformers import AutoTokenizer, GPT2ForSequenceClassification

    torch.manual_seed(seed_for(seed, "upo", "estimator_init"))
    tok = AutoTokenizer.from_pretrained(policy_path)
    model = GPT2ForSequenceClassification.from_pretrained(
        policy_path, num_labels=1, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
        pad_token_id=tok.pad_token_id)
    return model, tok


def train_estimator(policy_path: str, trusted: Sequence[dict], out_dir: str, *, dropout: float, epochs: float,
                    max_steps: int, batch_size: int, learning_rate: float, max_length: int, seed: int,
                    threads: int = 2):
    """TRL RewardTrainer on trusted {prompt, chosen, rejected} pairs; returns (model, tokenizer)."""
    import datasets
    import torch
    from trl import RewardConfig, RewardTrainer

    torch.set_num_threads(threads)
    model, tok = build_estimator(policy_path, dropout, seed)
    ds = datasets.Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in trusted])
    args = RewardConfig(
        output_dir=out_dir, num_train_epochs=epochs, max_steps=max_steps, per_device_train_batch_size=batch_size,
        learning_rate=learning_rate, lr_scheduler_type="cosine", warmup_steps=0, max_length=max_length,
        use_cpu=True, bf16=False, fp16=False, report_to=[], save_strategy="no", logging_steps=10 ** 9,
        disable_tqdm=True, seed=seed_for(seed, "upo", "estimator_train") % (2 ** 31), dataset_num_proc=None,
        activation_checkpointing=False)
    trainer = RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    trainer.train()
    return trainer.model, tok


def mc_dropout_rewards(model, tok, texts: Sequence[str], passes: int, seed: int, batch_size: int = 256,
                       max_length: int = 96, dropout_on: bool = True) -> np.ndarray:
    """[passes, len(texts)] rewards, dropout active; pass t draws its masks from seed_for(seed, 'upo', t).

    Texts are scored in the given order in fixed batches, so the same texts, seed and batch size give
    the same numbers; callers sort texts by id so the order does not depend on the runner.
    """
    import torch

    model.train(dropout_on)  # dropout on = MC dropout; off = the deterministic point estimate
    enc = [tok(t, add_special_tokens=False)["input_ids"][-max_length:] for t in texts]  # keep the answer end
    pad = tok.pad_token_id
    out = np.zeros((passes, len(texts)), dtype=np.float64)
    with torch.no_grad():
        for t in range(passes):
            torch.manual_seed(seed_for(seed, "upo", f"mc_pass/{t}"))
            for start in range(0, len(enc), batch_size):
                chunk = enc[start:start + batch_size]
                width = max(len(c) for c in chunk)
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for i, c in enumerate(chunk):
                    ids[i, :len(c)] = torch.tensor(c, dtype=torch.long)
                    mask[i, :len(c)] = 1
                logits = model(input_ids=ids, attention_mask=mask).logits[:, 0]
                out[t, start:start + len(chunk)] = logits.double().numpy()
    model.eval()
    return out


def pair_probabilities(rewards: np.ndarray, chosen_idx: Sequence[int], rejected_idx: Sequence[int]) -> np.ndarray:
    """p_t = sigmoid(r_chosen - r_rejected) per pass: [T, n_pairs]."""
    diff = rewards[:, list(chosen_idx)] - rewards[:, list(rejected_idx)]
    return 1.0 / (1.0 + np.exp(-diff))
