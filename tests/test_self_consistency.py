"""Majority vote, agreement, self-certainty Borda voting and the self-consistency label source on hand cases."""

import pytest

from prefsynth.config import CandidatesConfig
from prefsynth.pipelines.candidates import response_candidates
from prefsynth.tasks import arith
from prefsynth.transforms import self_consistency as sc

PROMPT = {"prompt_id": "p", "prompt": "Q: (20-3-8)*4=?\n", "task": "arith"}
RIGHT, WRONG, OTHER = "20-3=17\n17-8=9\n9*4=36\nA: 36\n", "20-3=17\n17-8=8\n8*4=32\nA: 32\n", "20-3=18\nA: 18\n"


def _r(rid, text, certainty=1.0, lp=-0.1):
    return {"response_id": rid, "text": text, "steps": arith.split_steps(text), "mean_logprob": lp,
            "final_answer": arith.extract_answer(text), "self_certainty": certainty}


def test_majority_vote_and_agreement_on_hand_cases():
    assert sc.majority_vote(["3", "3", "4", None]) == ("3", 0.5, {"3": 2, "4": 1})  # answerless samples count
    assert sc.majority_vote([" 7", "7 ", "8"])[0:2] == ("7", pytest.approx(2 / 3))
    assert sc.majority_vote(["9", "8"])[0] == "8"  # a tie goes to the smallest answer: deterministic
    assert sc.majority_vote([None, ""]) == (None, 0.0, {})


def test_borda_by_self_certainty_can_overrule_the_plain_majority():
    answers, certainty = ["a", "b", "b", "c"], [10.0, 2.0, 1.0, 5.0]
    # power 1: ranks a=1, c=2, b=3, b=4 of N=4 -> a: 4, c: 3, b: 2 + 1 = 3 points
    assert sc.borda_vote(answers, certainty, power=1.0) == "a"
    assert sc.borda_vote(answers, certainty, power=0.0) == "b"  # every vote 1 point: the majority
    assert sc.borda_vote([None, None], [1.0, 2.0]) is None


def test_verdicts_no_contrast_and_low_agreement():
    same = sc.consistency([_r("a", RIGHT), _r("b", RIGHT)])
    assert sc.consistency_verdict(same, 0.5) == "no_contrast"
    weak = sc.consistency([_r("a", RIGHT), _r("b", WRONG), _r("c", OTHER)])
    assert weak.agreement == pytest.approx(1 / 3)
    assert sc.consistency_verdict(weak, 0.5) == "low_agreement" and sc.consistency_verdict(weak, 0.3) is None


def test_self_consistency_source_pairs_majority_vs_minority_and_records_why_not():
    cfg = CandidatesConfig(response_sources=["verifier", "self_consistency", "self_certainty"], max_response_pairs=4)
    rs = [_r("a", WRONG, 1.0), _r("b", WRONG, 2.0), _r("c", RIGHT, 9.0)]
    why = []
    rows = response_candidates(PROMPT, rs, {"verifier_arith": {"a": 0.0, "b": 0.0, "c": 1.0}}, cfg, why.append)
    by_source = {}
    for p in rows:
        by_source.setdefault(p["label_source"], []).append(p)
    # the majority (32, wrong) is the pseudo-reference: the noisy source prefers the wrong answer
    assert {p["chosen"] for p in by_source["self_consistency"]} == {WRONG}
    assert by_source["self_consistency"][0]["rejected"] == RIGHT
    assert "majority answer '32' (2/3" in by_source["self_consistency"][0]["kept_reason"]
    assert by_source["verifier_arith"][0]["chosen"] == RIGHT
    assert set(by_source) == {"verifier_arith", "self_consistency", "self_certainty"}
    # each source keeps its own candidate even when the content is the same pair
    assert len({p["pair_id"] for p in rows}) == len(rows)
    # no contrast: every sample agrees -> no pseudo-label pairs, and the reason is recorded per source
    why.clear()
    same = [_r("a", RIGHT), _r("b", RIGHT + "")]
    assert response_candidates(PROMPT, same, {"verifier_arith": {"a": 1.0, "b": 1.0}}, cfg, why.append) == []
    assert sorted(why) == ["skipped.self_certainty.no_contrast", "skipped.self_consistency.no_contrast",
                           "skipped.verifier_arith.no_contrast"]


def test_pseudo_label_precision_against_the_truth():
    groups = [(sc.consistency([_r("a", RIGHT), _r("b", RIGHT), _r("c", WRONG)]), "36"),
              (sc.consistency([_r("a", WRONG), _r("b", WRONG), _r("c", RIGHT)]), "36"),
              (sc.consistency([_r("a", RIGHT)]), None)]  # no reference: not counted
    rep = sc.pseudo_label_precision(groups, arith.answers_match)
    assert rep["majority"] == {"prompts": 2, "precision": 0.5}
    assert rep["majority_by_agreement"]["[0.5,0.75]"] == {"prompts": 2, "precision": 0.5}
