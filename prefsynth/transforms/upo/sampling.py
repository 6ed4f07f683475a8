"""UPO's uncertainty and selection, from the MC-dropout passes: BALD per pair, the trusted hash split
of prompts, and the seeded easy (1 - BALD) / hard (BALD) sampling of the pairs the passes do not contradict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from prefsynth.ids import unit_hash


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
