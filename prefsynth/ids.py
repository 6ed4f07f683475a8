"""Stable ids and seeded randomness.

Every id is a content hash and every random draw is seeded from (global seed, record id,
purpose), so results never depend on how records were batched or spread over workers.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np


def content_id(*parts: object, length: int = 16) -> str:
    """A hex id from the content parts (joined with NUL so ("ab","c") != ("a","bc"))."""
    h = hashlib.sha256("\x00".join(str(p) for p in parts).encode("utf-8"))
    return h.hexdigest()[:length]


def seed_for(global_seed: int, record_id: str, purpose: str) -> int:
    """A 63-bit seed that depends only on (global seed, record id, purpose)."""
    digest = hashlib.sha256(f"{global_seed}\x00{record_id}\x00{purpose}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def rng_for(global_seed: int, record_id: str, purpose: str) -> random.Random:
    return random.Random(seed_for(global_seed, record_id, purpose))


def np_rng_for(global_seed: int, record_id: str, purpose: str) -> np.random.Generator:
    return np.random.default_rng(seed_for(global_seed, record_id, purpose))


def unit_hash(global_seed: int, record_id: str, purpose: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, id, purpose): used for splits and sampling."""
    return seed_for(global_seed, record_id, purpose) / float(1 << 63)
