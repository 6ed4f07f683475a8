"""TRL's DPOTrainer with two additions prefsynth needs: per-pair weights and step-aware EOS.

Per-pair weights. cDPO's ε from MCTS visit counts and UPO's confidence say how much to trust
each pair, but TRL has no per-pair weight input (requested upstream). TRL does have a per-pair
multiplier: with `use_weighting=True` (WPO) every pair's loss is multiplied by
w_chosen · w_rejected, where w = exp(mean over completion tokens of (log p − log_sum_sq_probs)).
A forward hook on the policy sets `log_sum_sq_probs = log p − ½·log(weight)` on every completion
token, so w_chosen · w_rejected = weight exactly, and the loss becomes mean(weight_i · loss_i)
for every pairwise loss TRL offers (sigmoid, ipo, robust, hinge, ...; the multiplier is computed
under no_grad, so the weight scales the gradient and nothing else). `aot` sorts across the batch
and is refused by TRL with weighting.

Weighted NLL (RPO). Iterative RPO (Pang et al. 2024) adds α·NLL of the chosen completion to
DPO; for reasoning it keeps the likelihood of correct solutions from falling with the rejected
ones. TRL's `sft` loss does that but cannot be combined with the weighting path (it is one
expanded scalar), so `nll_weight` adds it here: α · Σ_i w_i·NLL_i / Σ_i w_i, NLL_i the mean
token NLL of pair i's chosen completion, from the policy's own forward pass.

Step-aware EOS. TRL appends EOS to every standard-format completion. A step-level pair's
completion is one step of an unfinished solution: an EOS there would teach the policy to stop
after that step. Pairs are tokenized here instead, with EOS only on completions that end a
solution (`ends_chosen` / `ends_rejected` columns), the way TRL tokenizes otherwise (prompt
tokens = the common prefix of prompt and prompt + completion).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from trl import DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

log = logging.getLogger("prefsynth")
WEIGHT = "weight"
MIN_WEIGHT = 1e-6  # log(0) would turn the masked sum into NaN


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def tokenize_pair(example: dict, tokenizer) -> dict:
    """prompt_ids / chosen_ids / rejected_ids for one standard-format pair (EOS only where it ends)."""
    enc = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    prompt = enc(example["prompt"])
    chosen = enc(example["prompt"] + example["chosen"])
    rejected = enc(example["prompt"] + example["rejected"])
    cut = min(_common_prefix(prompt, chosen), _common_prefix(prompt, rejected))
    eos = [tokenizer.eos_token_id]
    return {
        "prompt_ids": prompt[:cut],
        "chosen_ids": chosen[cut:] + (eos if example.get("ends_chosen", True) else []),
        "rejected_ids": rejected[cut:] + (eos if example.get("ends_rejected", True) else []),
    }


class WeightedPreferenceCollator(DataCollatorForPreference):
    """TRL's preference collator, passing each pair's weight through as a tensor."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().torch_call(examples)
        if examples and WEIGHT in examples[0]:
            batch[WEIGHT] = torch.tensor([float(e[WEIGHT]) for e in examples], dtype=torch.float32)
        return batch


class WeightedDPOTrainer(DPOTrainer):
    """DPOTrainer whose loss is mean(weight_i · loss_i) when the dataset has a `weight` column."""

    def __init__(self, *args, nll_weight: float = 0.0, **kwargs):
        self.nll_weight = nll_weight
        self._policy_logps = None
        args_ = kwargs.get("args")
        loss_types = [args_.loss_type] if isinstance(getattr(args_, "loss_type", None), str) else \
            list(getattr(args_, "loss_type", None) or [])
        # TRL's `sft` loss is one expanded scalar that its WPO path cannot scale in place: with it in
        # the mix, pair weights are not applied (said once in the log).
        self.weights_supported = "sft" not in loss_types
        if args_ is not None and self.weights_supported:
            args_.use_weighting = True  # the hook below turns TRL's WPO multiplier into the pair weight
        elif args_ is not None:
            log.warning("WeightedDPOTrainer: loss_type %s includes 'sft'; per-pair weights are ignored", loss_types)
        if kwargs.get("data_collator") is None:
            tok = kwargs["processing_class"]
            kwargs["data_collator"] = WeightedPreferenceCollator(
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
                max_length=args_.max_length if args_ is not None else None)
        self._pair_weights: torch.Tensor | None = None
        super().__init__(*args, **kwargs)
        self.model.register_forward_hook(self._set_weight_logps)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if WEIGHT not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, WEIGHT]

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if "prompt_ids" not in dataset.column_names:
            if "prompt" in dataset.column_names and isinstance(dataset[0]["prompt"], str):
                dataset = dataset.map(tokenize_pair, fn_kwargs={"tokenizer": processing_class},
                                      desc=f"Tokenizing {dataset_name} pairs")
            else:  # conversational: TRL's chat-template tokenization (complete assistant turns)
                return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        if args.max_length is not None:
            dataset = dataset.filter(lambda ex: len(ex["prompt_ids"]) < args.max_length)
        return dataset

    def _set_weight_logps(self, module, inputs, outputs):
        if torch.is_grad_enabled() and getattr(outputs, "log_probs", None) is not None:
            self._policy_logps = outputs.log_probs  # the policy's pass (a PEFT reference pass runs under no_grad)
        w = self._pair_weights
        if w is None or not self.weights_supported or getattr(outputs, "log_probs", None) is None:
            return outputs
        half_log_w = 0.5 * torch.log(w.clamp_min(MIN_WEIGHT)).to(outputs.log_probs.device)
        rows = torch.cat([half_log_w, half_log_w])  # the batch is [chosen..., rejected...]
        outputs.log_sum_sq_probs = outputs.log_probs.detach() - rows[:, None]
        return outputs

    def _compute_loss(self, model, inputs, return_outputs):
        weights = inputs.pop(WEIGHT, None)
        self._pair_weights = weights if weights is not None else torch.ones(inputs["input_ids"].shape[0] // 2)
        try:
            result = super()._compute_loss(model, inputs, return_outputs)
            if self.nll_weight and self._policy_logps is not None:
                loss = result[0] if return_outputs else result
                loss = loss + self.nll_weight * self._chosen_nll(inputs["completion_mask"], self._pair_weights)
                result = (loss, result[1]) if return_outputs else loss
            return result
        finally:
            self._pair_weights = None
            self._policy_logps = None

    def _chosen_nll(self, completion_mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Pair-weighted mean over pairs of the chosen completions' mean token NLL."""
        mask = completion_mask[..., 1:].float()
        logps = self._policy_logps[:, -mask.size(1):]
        n_pairs = mask.size(0) // 2
        mask, logps = mask[:n_pairs], logps[:n_pairs]  # the batch is [chosen..., rejected...]
        nll = -(logps * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        w = weights.to(nll.device).float()
        self._metrics["train" if self.model.training else "eval"]["nll/chosen"].append(float(nll.mean()))
        return (w * nll).sum() / w.sum().clamp_min(MIN_WEIGHT)
