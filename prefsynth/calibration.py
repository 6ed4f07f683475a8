"""How good a probabilistic label is against ground truth: accuracy, ECE, Brier, AUROC, reliability.

Every labeler's `score` is read as its probability that the target is correct (P(True), a
judge's normalised Likert expectation, P(A better) for pairs). Calibration here is that of
the binary predictor: within a confidence bin, does the mean predicted probability match the
fraction that is truly correct? (the reliability diagram of "Language Models (Mostly) Know
What They Know"). Pure functions over lists; no Beam, no numpy needed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

__all__ = ["ReliabilityBin", "auroc", "accuracy", "brier", "ece", "reliability_bins", "quality", "N_BINS"]

N_BINS = 10


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with ties counted half); None without both classes."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return None
    ranked = sorted((s, y) for s, y in zip(scores, labels))
    # average ranks over ties
    i = 0
    rank_sum_pos = 0.0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        avg = (i + j + 1) / 2.0
        rank_sum_pos += avg * sum(1 for k in range(i, j) if ranked[k][1])
        i = j
    return (rank_sum_pos - len(pos) * (len(pos) + 1) / 2.0) / (len(pos) * len(neg))


@dataclass
class ReliabilityBin:
    bin: int  # 0 .. n_bins-1; bin b holds probabilities in [b/n, (b+1)/n), the last bin includes 1.0
    lower: float
    upper: float
    confidence: float  # mean predicted probability in the bin
    accuracy: float  # fraction truly correct in the bin
    count: int


def _check(probs: Sequence[float], labels: Sequence[bool]) -> None:
    if len(probs) != len(labels):
        raise ValueError(f"calibration: {len(probs)} probabilities but {len(labels)} labels")
    bad = [p for p in probs if p is None or not 0.0 <= p <= 1.0]
    if bad:
        raise ValueError(f"calibration: probabilities must lie in [0, 1], got e.g. {bad[0]!r}")


def _bin_of(p: float, n_bins: int) -> int:
    return min(int(p * n_bins), n_bins - 1)


def accuracy(probs: Sequence[float], labels: Sequence[bool], threshold: float = 0.5) -> float | None:
    """Fraction of targets where `p > threshold` agrees with the truth; None when empty."""
    _check(probs, labels)
    if not probs:
        return None
    return sum((p > threshold) == bool(y) for p, y in zip(probs, labels)) / len(probs)


def brier(probs: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Mean squared error of the probability against the 0/1 truth; None when empty."""
    _check(probs, labels)
    if not probs:
        return None
    return sum((p - float(bool(y))) ** 2 for p, y in zip(probs, labels)) / len(probs)


def reliability_bins(probs: Sequence[float], labels: Sequence[bool], n_bins: int = N_BINS) -> list[ReliabilityBin]:
    """Equal-width bins over [0, 1]; only non-empty bins are returned."""
    _check(probs, labels)
    sums: dict[int, list] = {}
    for p, y in zip(probs, labels):
        s = sums.setdefault(_bin_of(p, n_bins), [0.0, 0, 0])
        s[0] += p
        s[1] += int(bool(y))
        s[2] += 1
    return [ReliabilityBin(b, b / n_bins, (b + 1) / n_bins, s[0] / s[2], s[1] / s[2], s[2])
            for b, s in sorted(sums.items())]


def ece(probs: Sequence[float], labels: Sequence[bool], n_bins: int = N_BINS) -> float | None:
    """Expected calibration error: sum over bins of (bin size / n) * |mean probability - fraction correct|."""
    bins = reliability_bins(probs, labels, n_bins)
    if not bins:
        return None
    n = sum(b.count for b in bins)
    return sum(b.count / n * abs(b.confidence - b.accuracy) for b in bins)


def quality(probs: Sequence[float], labels: Sequence[bool], confidences: Sequence[float | None] | None = None,
            n_bins: int = N_BINS) -> dict:
    """The label-quality block of metrics/labels.json for one labeler and target kind."""
    _check(probs, labels)
    confs = [c for c in (confidences or []) if c is not None]
    return {
        "n": len(probs),
        "accuracy": accuracy(probs, labels),
        "ece": ece(probs, labels, n_bins),
        "brier": brier(probs, labels),
        "auroc": auroc(probs, labels),
        "mean_score": sum(probs) / len(probs) if probs else None,
        "true_rate": sum(bool(y) for y in labels) / len(labels) if labels else None,
        "mean_confidence": sum(confs) / len(confs) if confs else None,
    }


def bins_as_rows(labeler: str, target_kind: str, bins: list[ReliabilityBin]) -> list[dict]:
    """Rows of the reliability plot (one per non-empty bin)."""
    return [{"labeler": labeler, "target_kind": target_kind, **asdict(b)} for b in bins]
