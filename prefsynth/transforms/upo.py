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


# ---------------------------------------------------------------- pair-classifier estimator (default)
#
# UPO's estimator is a 2-label classifier over a (prompt, chosen, rejected) pair. Here its backbone is
# the policy itself, frozen: one forward pass per distinct text gives what the policy knows about that
# text (the log-probability of every completion token, how far each is from the policy's own greedy
# choice, per line, and the last layer's hidden states). A small classifier head with dropout reads
# both sides' features and says whether chosen is truly better than rejected. The head is what is
# trained, so it is what MC dropout samples: T passes with its dropout masks on, seeded per pass.
# A fresh score head fine-tuned through the whole backbone (the `reward_model` estimator above) did not
# learn to verify arithmetic from ~2k pairs in minutes on a CPU (train accuracy ~0.55); the policy's
# own token log-probs already carry its verification ability, and reading them costs one forward pass.

N_LOGPROB_FEATURES = 13


def policy_features(model, tok, items: Sequence[tuple[str, str]], *, batch_size: int = 512, max_length: int = 96,
                    hidden: bool = True, max_batch_logits: int = 2 ** 26) -> np.ndarray:
    """[len(items), F] features of each (prompt, completion) under the policy (a causal LM, eval mode).

    Per completion: mean / min / sum token log-prob, min and mean gap to the policy's greedy token, share
    of tokens that are not the greedy one, length, the weakest line's mean log-prob, the last line's mean
    and min log-prob; per line, its claimed result (the tokens after the line's last '=' or ':'): the
    weakest result's log-prob and greedy gap, and all results' log-prob; with `hidden`, the mean and the
    last of the completion's final-layer hidden states.
    Prompt and completion are tokenized together (`continuation_token_span`: a token straddling the
    boundary is the completion's). Texts are cut from the left to `max_length` tokens (the answer end
    matters most). Any causal LM: the hidden width is the config's `hidden_size` (`n_embd` for GPT-2);
    no gradients; at most `batch_size` rows per forward, fewer when their logits would exceed
    `max_batch_logits` values.
    """
    import torch

    from prefsynth.backends.transformers_backend import continuation_token_span

    newline = tok("\n", add_special_tokens=False)["input_ids"]
    newline = newline[-1] if newline else -1
    claims = [i for c in ("=", ":") for i in tok(c, add_special_tokens=False)["input_ids"][-1:]]
    enc, n_comp = [], []
    for prompt, completion in items:  # tokenized together, as the policy sees the text (BPE merges)
        full, first = continuation_token_span(tok, prompt, completion)
        ids = full[-max_length:]
        enc.append(ids)
        n_comp.append(max(1, min(len(full) - first, len(ids) - 1)))  # at least one predicted token
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    width = (getattr(config, "hidden_size", None) or config.n_embd) if hidden else 0
    out = np.zeros((len(items), N_LOGPROB_FEATURES + 2 * width), dtype=np.float32)
    order = sorted(range(len(enc)), key=lambda i: (len(enc[i]), i))  # similar lengths share a batch
    # rows per forward: `batch_size`, and few enough that the [rows, length, vocab] logits stay under
    # `max_batch_logits` values (a 49k vocabulary at 96 tokens is 19 MB of float32 logits per row)
    vocab = getattr(config, "vocab_size", None) or len(tok)
    longest = max((len(e) for e in enc), default=1)
    per_batch = max(1, min(batch_size, max_batch_logits // max(1, longest * vocab)))
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), per_batch):
            rows = order[start:start + per_batch]
            w = max(len(enc[i]) for i in rows)
            ids = torch.full((len(rows), w), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(rows), w), dtype=torch.long)
            for j, i in enumerate(rows):  # right padding: causal attention never reads the pads
                ids[j, :len(enc[i])] = torch.tensor(enc[i], dtype=torch.long)
                mask[j, :len(enc[i])] = 1
            res = model(input_ids=ids, attention_mask=mask, output_hidden_states=hidden)
            logp = res.logits[:, :-1].float().log_softmax(-1)
            tgt = ids[:, 1:]
            tok_lp = logp.gather(-1, tgt[..., None])[..., 0]
            gap = (tok_lp - logp.max(-1).values).numpy()
            tok_lp = tok_lp.numpy()
            hs = res.hidden_states[-1].float().numpy() if hidden else None
            del res
            tgt = tgt.numpy()
            for j, i in enumerate(rows):
                end = len(enc[i]) - 1  # predictions of tokens 1 .. end
                a = end - n_comp[i]
                lp, g, t = tok_lp[j, a:end], gap[j, a:end], tgt[j, a:end]
                cuts = [k + 1 for k in np.flatnonzero(t == newline)]
                lines = [seg for seg in np.split(np.arange(len(lp)), cuts) if len(seg)]
                tails = []
                for seg in lines:  # the claimed result of each line: after its last '=' or ':'
                    marks = [k for k in seg if t[k] in claims]
                    tails.append(seg[seg > marks[-1]] if marks and seg[-1] > marks[-1] else seg)
                out[i, :N_LOGPROB_FEATURES] = (
                    lp.mean(), lp.min(), lp.sum(), g.min(), g.mean(), (g < -1e-6).mean(), len(lp) / 10.0,
                    min(lp[seg].mean() for seg in lines), lp[lines[-1]].mean(), lp[lines[-1]].min(),
                    min(lp[tl].sum() for tl in tails), min(g[tl].min() for tl in tails),
                    sum(lp[tl].sum() for tl in tails))
                if hidden:
                    h = hs[j, a + 1:end + 1]  # the completion tokens' states
                    out[i, N_LOGPROB_FEATURES:N_LOGPROB_FEATURES + width] = h.mean(0)
                    out[i, N_LOGPROB_FEATURES + width:] = h[-1]
    return out


class PairClassifier:
    """UPO's 2-label estimator head: [f(chosen), f(rejected), f(chosen) - f(rejected)] -> P(chosen truly better).

    An MLP with dropout on its input and hidden layer; features are standardised with the training
    texts' mean and spread.
    """

    def __init__(self, n_features: int, hidden: int, dropout: float, seed: int):
        import torch

        torch.manual_seed(seed_for(seed, "upo", "estimator_init"))
        self.net = torch.nn.Sequential(
            torch.nn.Dropout(dropout), torch.nn.Linear(3 * n_features, hidden), torch.nn.GELU(),
            torch.nn.Dropout(dropout), torch.nn.Linear(hidden, 2))
        self.mu = np.zeros(n_features, dtype=np.float32)
        self.sd = np.ones(n_features, dtype=np.float32)

    def _inputs(self, feats: np.ndarray, a: Sequence[int], b: Sequence[int]):
        import torch

        z = (feats - self.mu) / self.sd
        fa, fb = z[list(a)], z[list(b)]
        return torch.from_numpy(np.concatenate([fa, fb, fa - fb], axis=1).astype(np.float32))

    def fit(self, feats: np.ndarray, a: Sequence[int], b: Sequence[int], y: Sequence[int], *, steps: int,
            batch_size: int, learning_rate: float, weight_decay: float, seed: int) -> float:
        """Cross-entropy on (a, b, label) index triples into `feats`; returns the final train accuracy."""
        import torch

        used = sorted(set(a) | set(b))
        self.mu = feats[used].mean(0)
        self.sd = feats[used].std(0) + 1e-4
        x, target = self._inputs(feats, a, b), torch.tensor(list(y), dtype=torch.long)
        opt = torch.optim.AdamW(self.net.parameters(), lr=learning_rate, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
        gen = torch.Generator().manual_seed(seed_for(seed, "upo", "estimator_train") % (2 ** 63))
        torch.manual_seed(seed_for(seed, "upo", "estimator_dropout"))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a tiny MLP: a second thread only adds synchronisation
        self.net.train()
        for _ in range(steps):
            idx = torch.randint(len(target), (min(batch_size, len(target)),), generator=gen)
            loss = torch.nn.functional.cross_entropy(self.net(x[idx]), target[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        self.net.eval()
        torch.set_num_threads(threads)
        with torch.no_grad():
            return float((self.net(x).argmax(-1) == target).float().mean())

    def mc_probabilities(self, feats: np.ndarray, chosen: Sequence[int], rejected: Sequence[int], passes: int,
                         seed: int, dropout_on: bool = True) -> np.ndarray:
        """[passes, n] P(chosen truly better), dropout on; pass t draws its masks from seed_for(seed, 'upo', t).

        Each pass runs all pairs in one batch, so the numbers do not depend on how pairs are chunked.
        """
        import torch

        x = self._inputs(feats, chosen, rejected)
        out = np.zeros((passes, len(chosen)), dtype=np.float64)
        self.net.train(dropout_on)
        with torch.no_grad():
            for t in range(passes):
                torch.manual_seed(seed_for(seed, "upo", f"mc_pass/{t}"))
                out[t] = self.net(x).softmax(-1)[:, 1].double().numpy()
        self.net.eval()
        return out


def trusted_examples(pairs: Sequence[dict], unpaired: Sequence[dict], max_ties_per_prompt: int,
                     seed: int) -> list[tuple[str, str, str, int]]:
    """The estimator's training set, (prompt, a, b, label = a truly better than b), from trusted data:
    each verifier pair in both orders (1, then 0), and pairs of two completions the verifier marked
    wrong (0 both ways: a preference between two wrong answers is not a right label). Ties pair distinct
    wrong texts, drawn seeded, at most `max_ties_per_prompt` per prompt."""
    out = []
    for p in pairs:
        out.append((p["prompt"], p["chosen"], p["rejected"], 1))
        out.append((p["prompt"], p["rejected"], p["chosen"], 0))
    wrong: dict[str, list[dict]] = {}
    for r in unpaired:
        if r["label"] is False:
            wrong.setdefault(r["prompt_id"], []).append(r)
    for pid in sorted(wrong):
        by_text = {}  # each wrong text once, from its first example id
        for r in sorted(wrong[pid], key=lambda r: r["example_id"]):
            by_text.setdefault(r["completion"], r)
        rs = list(by_text.values())
        cand = [(x, y) for i, x in enumerate(rs) for y in rs[i + 1:] if x["completion"] != y["completion"]]
        cand.sort(key=lambda xy: unit_hash(seed, xy[0]["example_id"] + xy[1]["example_id"], "upo/ties"))
        for x, y in cand[:max_ties_per_prompt]:
            out.append((x["prompt"], x["completion"], y["completion"], 0))
            out.append((x["prompt"], y["completion"], x["completion"], 0))
    return out
