"""Per-row sampling noise that does not depend on the batch: Gumbel(0, 1) from a counter-based hash
of (row seed, step, token id), exact int64 arithmetic on any device, and the per-sample seeds.

The transformers backend adds this noise to the scaled log-probs and takes the argmax (the Gumbel-max
trick), so a row's samples are a pure function of its seed; the OpenAI backend derives its per-sample
request seeds with the same `sample_seed`.
"""

from __future__ import annotations

import torch

from prefsynth.ids import seed_for

_M32 = 0xFFFFFFFF


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash on int64 tensors holding values in [0, 2^32); never overflows int64
    (a product is < 2^32 * 2^27), so it gives the same bits on every device."""
    x = x ^ (x >> 16)
    x = (x * 0x45D9F3B) & _M32
    x = x ^ (x >> 16)
    x = (x * 0x45D9F3B) & _M32
    return x ^ (x >> 16)


def row_keys(seeds: torch.Tensor) -> torch.Tensor:
    """The per-row part of the noise hash, computed once per batch ([rows] int64, same device)."""
    return mix32(mix32(seeds & _M32) ^ ((seeds >> 32) & _M32))


def noise_bits(keys: torch.Tensor, step: int, vocab_size: int) -> torch.Tensor:
    """The 32-bit hash of (row seed, step, token id), [rows, vocab] int64 on the keys' device."""
    tok = torch.arange(vocab_size, dtype=torch.int64, device=keys.device)[None, :]
    return mix32(mix32(keys[:, None] ^ step) ^ tok)


def gumbel_from_bits(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Gumbel(0, 1) from 32 hash bits. float64 uses all 32 bits (the CPU path, whose bytes are
    fixed); float32 uses the top 24, so u = (k + 0.5) / 2^24 is exact and strictly inside (0, 1)."""
    if dtype == torch.float64:
        u = (x.double() + 0.5) / 4294967296.0
    else:
        u = ((x >> 8).to(dtype) + 0.5) / 16777216.0
    return -torch.log(-torch.log(u))


def gumbel_noise(seeds: torch.Tensor, step: int, vocab_size: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Gumbel(0, 1) noise of shape [rows, vocab], a pure function of (row seed, step, token id),
    computed on the seeds' device (the hash is exact int64 arithmetic everywhere)."""
    return gumbel_from_bits(noise_bits(row_keys(seeds), step, vocab_size), dtype)


def sample_seed(request_seed: int, index: int) -> int:
    return seed_for(request_seed, str(index), "sample") >> 1
