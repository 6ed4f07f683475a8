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


def test_step_local_truth_differs_from_no_error_so_far():
    from prefsynth.step_local import arith_step_local
    from prefsynth.tasks import arith

    p = arith.parse_expression("Q: (20-3-8)*4=?\n")  # 20-3=17, 17-8=9, 9*4=36, A: 36
    assert arith_step_local(p, p.solution_steps) == [True, True, True, True]
    # a slip at step 0, then every later line computed right from the wrong value: only step 0 is
    # locally wrong, while "no error so far" marks every step from 0 on wrong
    steps = ["20-3=18", "18-8=10", "10*4=40", "A: 40"]
    assert arith_step_local(p, steps) == [False, True, True, True]
    assert arith.verify_solution(p, steps).first_wrong_step == 0
    # a wrong carried value (right arithmetic), a wrong operand, an answer line that does not copy the
    # last result, an answer line before the last operation
    assert arith_step_local(p, ["20-3=17", "16-8=8", "8*4=32", "A: 32"]) == [True, False, True, True]
    assert arith_step_local(p, ["20-3=17", "17-9=8", "8*4=32", "A: 32"]) == [True, False, True, True]
    assert arith_step_local(p, ["20-3=17", "17-8=9", "9*4=36", "A: 37"]) == [True, True, True, False]
    assert arith_step_local(p, ["20-3=17", "17-8=9", "A: 9"]) == [True, True, False]


def test_quality_scores_step_labels_against_both_truths_and_names_them():
    from prefsynth.transforms.label_report import quality_metrics, step_local_truth
    from prefsynth.step_local import TRUTHS

    def row(labeler, i, score):
        return {"labeler": labeler, "target_id": "r", "target_kind": "step", "step_index": i, "score": score,
                "confidence": 1.0, "label": None}

    # the slip at step 0 above: verifier (no error so far) says all wrong; a judge that says "step 0
    # wrong, the rest right" is perfect step-locally and uninformative against no-error-so-far
    prompt = {"prompt_id": "p", "task": "arith", "prompt": "Q: (20-3-8)*4=?\n", "question": "(20-3-8)*4",
              "reference_answer": "36"}
    resp = {"response_id": "r", "prompt_id": "p", "steps": ["20-3=18", "18-8=10", "10*4=40", "A: 40"]}
    labels = [row("verifier_arith", i, 0.0) for i in range(4)] + [row("p_true", 0, 0.1)] + \
        [row("p_true", i, 0.9) for i in (1, 2, 3)]
    # a second response, all right, so that no-error-so-far has both classes
    prompt2 = {**prompt, "prompt_id": "p2"}
    resp2 = {"response_id": "r2", "prompt_id": "p2", "steps": ["20-3=17", "17-8=9", "9*4=36", "A: 36"]}
    labels += [{**row("verifier_arith", i, 1.0), "target_id": "r2"} for i in range(4)]
    labels += [{**row("p_true", i, 0.5), "target_id": "r2"} for i in range(4)]
    local = step_local_truth(labels, {"r": resp, "r2": resp2}, {"p": prompt, "p2": prompt2})
    assert [local[("r", i)] for i in range(4)] == [(False, True), (True, True), (True, True), (True, False)]
    q, _ = quality_metrics(labels, self_judge=True, step_local=local)
    pt = q["p_true"]
    assert pt["step_local"]["auroc"] == 1.0  # 0.1 on the one locally wrong step, >= 0.5 on the right ones
    assert pt["step"]["auroc"] < 0.5  # against no-error-so-far: r's 0.9s are "wrong", r2's 0.5s "right"
    assert pt["step_local_op_lines"]["n"] == 6
    assert pt["step"]["truth"] == TRUTHS["step"] and pt["step_local"]["truth"] == TRUTHS["step_local"]
    assert "question" in pt["step"]
