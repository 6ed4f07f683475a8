"""The reward-model estimator (`estimator: reward_model`): a score head fine-tuned through the policy's
whole backbone with TRL's RewardTrainer, dropout on for the MC passes, p_t = sigmoid(r_chosen - r_rejected).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from prefsynth.ids import seed_for


def estimator_text(prompt: str, completion: str, eos: str) -> str:
    """What the estimator reads: exactly what RewardTrainer trained on (prompt + completion + EOS)."""
    return prompt + completion + (eos or "")


# dropout keys of the common architectures' configs: residual / hidden-state dropout, and attention dropout
HIDDEN_DROPOUT_KEYS = ("resid_pdrop", "embd_pdrop", "hidden_dropout", "hidden_dropout_prob", "dropout",
                       "activation_dropout", "classifier_dropout")


ATTENTION_DROPOUT_KEYS = ("attn_pdrop", "attention_dropout", "attention_probs_dropout_prob")
HEAD_NAMES = ("score", "classifier", "classification_head")


def build_estimator(policy_path: str, dropout: float, seed: int):
    """A 1-label sequence classifier with the policy's weights (the LM head is dropped, a score head added).

    Any causal LM with a sequence-classification class (AutoModelForSequenceClassification): dropout is
    set through the dropout keys its config has; an architecture without hidden-state dropout (Llama
    has attention dropout only) also gets dropout on the score head's input, so MC dropout has masks to
    sample. The tokenizer comes from the same path, with a pad token (EOS when it has none). Float32:
    the estimator trains and scores on the CPU.
    """
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed_for(seed, "upo", "estimator_init"))
    tok = AutoTokenizer.from_pretrained(policy_path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    config = AutoConfig.from_pretrained(policy_path)
    config.num_labels = 1
    config.pad_token_id = tok.pad_token_id
    keys = [k for k in HIDDEN_DROPOUT_KEYS + ATTENTION_DROPOUT_KEYS if hasattr(config, k)]
    for k in keys:
        setattr(config, k, dropout)
    model = AutoModelForSequenceClassification.from_pretrained(policy_path, config=config, dtype=torch.float32)
    if dropout > 0 and not any(k in HIDDEN_DROPOUT_KEYS for k in keys):
        head = next((getattr(model, n) for n in HEAD_NAMES if isinstance(getattr(model, n, None), torch.nn.Module)),
                    None)
        if head is None:
            raise ValueError(f"UPO: {type(model).__name__} has no hidden-state dropout in its config and no score "
                             f"head named {HEAD_NAMES} to put dropout on")
        head.register_forward_pre_hook(
            lambda mod, args: (torch.nn.functional.dropout(args[0], dropout, mod.training), *args[1:]))
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
    from prefsynth.pipelines.progress import attach_trainer_progress

    attach_trainer_progress(trainer, "pairs", unit="estimator steps")
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
