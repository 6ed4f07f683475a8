"""Calibration metrics against values computed by hand."""

import pytest

from prefsynth import calibration as C

# probabilities of "correct" and the truth; bins of width 0.1
PROBS = [0.95, 0.95, 0.85, 0.15, 0.15, 0.55]
TRUTH = [True, False, True, False, True, True]


def test_reliability_bins_by_hand():
    bins = C.reliability_bins(PROBS, TRUTH)
    assert [(b.bin, b.count) for b in bins] == [(1, 2), (5, 1), (8, 1), (9, 2)]
    b1, b5, b8, b9 = bins
    assert (b1.confidence, b1.accuracy) == (pytest.approx(0.15), 0.5)
    assert (b9.confidence, b9.accuracy) == (pytest.approx(0.95), 0.5)
    assert (b5.lower, b5.upper) == (0.5, 0.6)
    assert C.reliability_bins([1.0, 0.0], [True, False])[-1].bin == 9  # 1.0 falls in the last bin


def test_ece_by_hand():
    # bin1: |0.15-0.5|*2/6, bin5: |0.55-1|*1/6, bin8: |0.85-1|*1/6, bin9: |0.95-0.5|*2/6
    expected = (0.35 * 2 + 0.45 + 0.15 + 0.45 * 2) / 6
    assert C.ece(PROBS, TRUTH) == pytest.approx(expected)
    assert C.ece([0.8] * 5, [True, True, True, True, False]) == pytest.approx(0.0)
    assert C.ece([], []) is None


def test_brier_and_accuracy_by_hand():
    sq = [0.05**2, 0.95**2, 0.15**2, 0.15**2, 0.85**2, 0.45**2]
    assert C.brier(PROBS, TRUTH) == pytest.approx(sum(sq) / 6)
    assert C.accuracy(PROBS, TRUTH) == pytest.approx(4 / 6)  # wrong: the 2nd (0.95, F) and the 5th (0.15, T)
    assert C.brier([1.0, 0.0], [True, False]) == 0.0


def test_auroc_by_hand():
    # positives 0.95, 0.85, 0.15, 0.55; negatives 0.95, 0.15 -> pairs won: 0.5+1 + 0+1 + 0+0.5 + 0+1 = 4 of 8
    assert C.auroc(PROBS, TRUTH) == pytest.approx(4 / 8)
    assert C.auroc([0.9, 0.1], [True, False]) == 1.0
    assert C.auroc([0.9, 0.8], [True, True]) is None


def test_quality_block_and_bad_input():
    q = C.quality(PROBS, TRUTH, [0.95, 0.95, 0.85, 0.85, 0.85, None])
    assert q["n"] == 6 and q["true_rate"] == pytest.approx(4 / 6) and q["mean_score"] == pytest.approx(3.6 / 6)
    assert q["mean_confidence"] == pytest.approx(0.89)  # nulls skipped
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        C.quality([1.2], [True])
    with pytest.raises(ValueError, match="2 probabilities but 1 labels"):
        C.ece([0.1, 0.2], [True])
