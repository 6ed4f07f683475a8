"""95% intervals for accuracy differences over training seeds *and* prompts.

A mean over training seeds with a t-interval answers "would another training seed give the same number
on these prompts?". It does not answer "would another draw of prompts from the same world give the same
number?": every seed is scored on the same prompts, so the prompt-sampling error is shared by all seeds and
does not shrink with more of them. For a per-(seed, prompt) difference d[s][i] (policy-1 − policy-0, or
variant A − variant B paired by seed and prompt) the variance of the grand mean comes from a two-way
random-effects model d = μ + prompt_i + seed_s + residual_si (one observation per cell; ANOVA mean squares
over S seeds and n prompts):

    Var(mean) = σ²_seed / S + (σ²_prompt + σ²_resid / S) / n
    σ²_seed / S                      ≈ max(0, MS_seed − MS_resid) / (n·S)
    (σ²_prompt + σ²_resid / S) / n   = E[MS_prompt] / (n·S)
    half = sqrt( t²_{S−1} · max(0, MS_seed − MS_resid) / (n·S)  +  1.96² · MS_prompt / (n·S) )

The seed part carries Student's t on S − 1 degrees of freedom (3 seeds: 4.30), the prompt part the normal
quantile (hundreds of prompts). With one seed it is the evaluate stage's own paired interval. It can be
narrower than the seed-only t-interval: when seeds differ only by which prompts flip, that flip noise is
read off n·(S − 1) residual degrees of freedom instead of S − 1 seed means.

The evaluate stage writes the per-prompt outcomes these take (`metrics/round-N/outcomes.json`);
`prefsynth compare` reads them; benchmarks/ablations.py and rounds.py print the same interval.
"""

from __future__ import annotations

import math
import statistics


def t_quantile(df: int) -> float:
    """Two-sided 95% Student t quantile (df >= 1)."""
    table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
             10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}
    if df in table:
        return table[df]
    return next((table[k] for k in sorted(table) if k >= df), 1.96)


def differences(a: list[str], b: list[str]) -> list[list[int]]:
    """d[s][i] = a[s][i] − b[s][i] for "0"/"1" outcome strings paired by seed (index) and prompt (position)."""
    if len(a) != len(b):
        raise ValueError(f"outcomes of {len(a)} seeds against {len(b)}: pair them seed by seed")
    rows = []
    for x, y in zip(a, b):
        if len(x) != len(y):
            raise ValueError(f"outcome strings over different prompts ({len(x)} vs {len(y)})")
        rows.append([int(p) - int(q) for p, q in zip(x, y)])
    return rows


def seeds_and_prompts_ci(d: list[list[int]]) -> dict:
    """Mean of d[s][i] with its 95% interval over seeds and prompts (module docstring); `seed_half` and
    `prompt_half` are the two parts of the width (they add in quadrature)."""
    S, n = len(d), len(d[0])
    per_seed = [sum(row) / n for row in d]
    per_prompt = [sum(d[s][i] for s in range(S)) / S for i in range(n)]
    mean = statistics.fmean(per_seed)
    ms_prompt = S * statistics.variance(per_prompt) if n > 1 else 0.0
    seed_half = 0.0
    if S > 1 and n > 1:
        ms_seed = n * statistics.variance(per_seed)
        ss_resid = sum((d[s][i] - per_seed[s] - per_prompt[i] + mean) ** 2 for s in range(S) for i in range(n))
        ms_resid = ss_resid / ((S - 1) * (n - 1))
        seed_half = t_quantile(S - 1) * math.sqrt(max(0.0, ms_seed - ms_resid) / (n * S))
    prompt_half = 1.96 * math.sqrt(ms_prompt / (n * S))
    half = math.hypot(seed_half, prompt_half)
    return {"mean": round(mean, 4), "ci95": [round(mean - half, 4), round(mean + half, 4)],
            "seed_half": round(seed_half, 4), "prompt_half": round(prompt_half, 4), "n_seeds": S, "n_prompts": n,
            "significant": bool(mean - half > 0 or mean + half < 0)}
