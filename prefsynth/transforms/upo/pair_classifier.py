"""The pair-classifier estimator (`estimator: pair_classifier`, the default): UPO's 2-label classifier
head over the frozen policy's features of both sides, and the trusted examples it is trained on.

UPO's estimator is a 2-label classifier over a (prompt, chosen, rejected) pair. Here its backbone is
the policy itself, frozen: one forward pass per distinct text gives what the policy knows about that
text (the log-probability of every completion token, how far each is from the policy's own greedy
choice, per line, and the last layer's hidden states). A small classifier head with dropout reads
both sides' features and says whether chosen is truly better than rejected. The head is what is
trained, so it is what MC dropout samples: T passes with its dropout masks on, seeded per pass.
A fresh score head fine-tuned through the whole backbone (the `reward_model` estimator) did not
learn to verify arithmetic from ~2k pairs in minutes on a CPU (train accuracy ~0.55); the policy's
own token log-probs already carry its verification ability, and reading them costs one forward pass.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from prefsynth.ids import seed_for, unit_hash


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
    `max_batch_logits` values. The same as `rows_features` over each batch of `batch_plan`, which is
    how the pairs stage computes them inside Beam (transforms/upo/features_beam.py).
    """
    enc, n_comp = encode_items(tok, items, max_length)
    out = np.zeros((len(items), N_LOGPROB_FEATURES + 2 * feature_width(model.config, hidden)), dtype=np.float32)
    for rows in batch_plan(model.config, tok, enc, batch_size, max_batch_logits):
        out[rows] = rows_features(model, tok, [enc[i] for i in rows], [n_comp[i] for i in rows], hidden)
    return out


def encode_items(tok, items: Sequence[tuple[str, str]], max_length: int) -> tuple[list[list[int]], list[int]]:
    """Token ids of each (prompt, completion), cut from the left to `max_length`, and how many of the
    last ones are the completion's (at least one predicted token)."""
    from prefsynth.backends.spans import continuation_token_span

    enc, n_comp = [], []
    for prompt, completion in items:  # tokenized together, as the policy sees the text (BPE merges)
        full, first = continuation_token_span(tok, prompt, completion)
        ids = full[-max_length:]
        enc.append(ids)
        n_comp.append(max(1, min(len(full) - first, len(ids) - 1)))  # at least one predicted token
    return enc, n_comp


def _text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def feature_width(config, hidden: bool) -> int:
    """The hidden width the features carry (twice: mean and last state); 0 without hidden states."""
    config = _text_config(config)
    return (getattr(config, "hidden_size", None) or config.n_embd) if hidden else 0


def batch_plan(config, tok, enc: Sequence[Sequence[int]], batch_size: int,
               max_batch_logits: int = 2 ** 26) -> list[list[int]]:
    """The rows of each forward pass, in order: similar lengths share a batch (sorted by length, then
    index); `batch_size` rows, and few enough that the [rows, length, vocab] logits stay under
    `max_batch_logits` values (a 49k vocabulary at 96 tokens is 19 MB of float32 logits per row)."""
    order = sorted(range(len(enc)), key=lambda i: (len(enc[i]), i))
    vocab = getattr(_text_config(config), "vocab_size", None) or len(tok)
    longest = max((len(e) for e in enc), default=1)
    per_batch = max(1, min(batch_size, max_batch_logits // max(1, longest * vocab)))
    return [order[start:start + per_batch] for start in range(0, len(order), per_batch)]


def rows_features(model, tok, enc: Sequence[Sequence[int]], n_comp: Sequence[int], hidden: bool) -> np.ndarray:
    """[len(enc), F] features of these rows from one forward pass over them, right-padded together."""
    import torch

    newline = tok("\n", add_special_tokens=False)["input_ids"]
    newline = newline[-1] if newline else -1
    claims = [i for c in ("=", ":") for i in tok(c, add_special_tokens=False)["input_ids"][-1:]]
    width = feature_width(model.config, hidden)
    out = np.zeros((len(enc), N_LOGPROB_FEATURES + 2 * width), dtype=np.float32)
    model.eval()
    with torch.no_grad():
        w = max(len(e) for e in enc)
        ids = torch.full((len(enc), w), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(enc), w), dtype=torch.long)
        for j, e in enumerate(enc):  # right padding: causal attention never reads the pads
            ids[j, :len(e)] = torch.tensor(e, dtype=torch.long)
            mask[j, :len(e)] = 1
        res = model(input_ids=ids, attention_mask=mask, output_hidden_states=hidden)
        logp = res.logits[:, :-1].float().log_softmax(-1)
        tgt = ids[:, 1:]
        tok_lp = logp.gather(-1, tgt[..., None])[..., 0]
        gap = (tok_lp - logp.max(-1).values).numpy()
        tok_lp = tok_lp.numpy()
        hs = res.hidden_states[-1].float().numpy() if hidden else None
        del res
        tgt = tgt.numpy()
        for j in range(len(enc)):
            end = len(enc[j]) - 1  # predictions of tokens 1 .. end
            a = end - n_comp[j]
            lp, g, t = tok_lp[j, a:end], gap[j, a:end], tgt[j, a:end]
            cuts = [k + 1 for k in np.flatnonzero(t == newline)]
            lines = [seg for seg in np.split(np.arange(len(lp)), cuts) if len(seg)]
            tails = []
            for seg in lines:  # the claimed result of each line: after its last '=' or ':'
                marks = [k for k in seg if t[k] in claims]
                tails.append(seg[seg > marks[-1]] if marks and seg[-1] > marks[-1] else seg)
            out[j, :N_LOGPROB_FEATURES] = (
                lp.mean(), lp.min(), lp.sum(), g.min(), g.mean(), (g < -1e-6).mean(), len(lp) / 10.0,
                min(lp[seg].mean() for seg in lines), lp[lines[-1]].mean(), lp[lines[-1]].min(),
                min(lp[tl].sum() for tl in tails), min(g[tl].min() for tl in tails),
                sum(lp[tl].sum() for tl in tails))
            if hidden:
                h = hs[j, a + 1:end + 1]  # the completion tokens' states
                out[j, N_LOGPROB_FEATURES:N_LOGPROB_FEATURES + width] = h.mean(0)
                out[j, N_LOGPROB_FEATURES + width:] = h[-1]
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
