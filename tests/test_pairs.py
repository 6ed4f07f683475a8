"""The pairs stage's selection you can trust: a source whose final (trained) pairs are wrong is dropped,
with a reason, and the dedupe never leaves a source with only its wrong pairs in the training set."""

from prefsynth.config import load_params
from prefsynth.transforms.pair_filters import decide
from prefsynth.transforms.pair_report import precision_report
from prefsynth.transforms.pairs import _pair


def _world(n=30):
    prompts, responses, pairs = {}, [], []
    for i in range(n):
        a, b = 3 + i, 4 + (i % 7)
        text = f"Q: ({a}+{b})*2=?\n"
        pid = f"p{i:02d}"
        prompts[pid] = {"prompt_id": pid, "split": "train", "task": "arith", "prompt": text,
                        "reference_answer": str(2 * (a + b))}
        first = f"{a}+{b}={a + b}\n"
        right = first + f"{a + b}*2={2 * (a + b)}\nA: {2 * (a + b)}\n"
        wrong1 = first + f"{a + b}*2={2 * (a + b) + 1}\nA: {2 * (a + b) + 1}\n"
        wrong2 = first + f"{a + b}*2={2 * (a + b) + 2}\nA: {2 * (a + b) + 2}\n"
        for j, t in enumerate((right, wrong1, wrong2)):
            responses.append({"response_id": f"{pid}r{j}", "prompt_id": pid, "text": t, "final_answer": t.split("A: ")[1].strip()})
        mk = lambda c, r, src: _pair(pid, "response", text, c, r, "c", "r", 1.0, 0.0, src, "test")
        pairs.append(mk(right, wrong1, "verifier_arith"))          # the truth
        pairs.append(mk(right, wrong2, "p_true"))                  # right, and only this source gives it
        # the planted source: half its pairs copy the verifier's (right), half prefer one wrong to another
        pairs.append(mk(right, wrong1, "self_consistency") if i % 2 else mk(wrong1, wrong2, "self_consistency"))
    return prompts, responses, pairs


def _params(**overrides):
    return load_params(None, {"pairs.upo.enabled": False, "pairs.upo.trusted_fraction": 0.0,
                              "pairs.min_agreement": 0.0, "pairs.min_source_pairs": 5,
                              **{f"pairs.{k}": v for k, v in overrides.items()}})


def test_a_source_with_wrong_final_pairs_is_dropped_with_a_reason():
    prompts, responses, cands = _world()
    params = _params()
    pairs, dropped, info = decide(cands, prompts, responses, params, None, "/tmp")
    kept = [p for p in pairs if p["pair_id"] not in dropped]
    assert {p["label_source"] for p in kept} == {"verifier_arith", "p_true"}
    sc = [p for p in pairs if p["label_source"] == "self_consistency"]
    reasons = sorted({dropped[p["pair_id"]].split(":")[0] for p in sc})
    assert reasons == ["duplicate", "low_source_precision"]
    gate = info["source_gate"]["dropped_sources"]
    assert list(gate) == ["response/self_consistency"] and gate["response/self_consistency"]["precision"] == 0.0
    assert "final precision 0.0000" in gate["response/self_consistency"]["reason"]
    # the verifier's kept copy says the planted source gave it too
    assert sum("also given by self_consistency" in p["kept_reason"] for p in kept) == 15
    report = precision_report(pairs, dropped, prompts, params)
    assert report["final_precision_by_source"]["response/self_consistency"]["final_pairs"] == 0
    assert report["final_precision_by_source"]["response/p_true"]["final_precision"] == 1.0
    # its candidates looked half right: only the final numbers show what it would have added
    assert report["precision"]["response/self_consistency"]["candidates"]["precision"] == 0.5


def test_without_the_gate_the_dedupe_leaves_the_source_its_wrong_pairs_only():
    prompts, responses, cands = _world()
    params = _params(min_source_precision=0.0)
    pairs, dropped, info = decide(cands, prompts, responses, params, None, "/tmp")
    report = precision_report(pairs, dropped, prompts, params)
    fin = report["precision"]["response/self_consistency"]["final"]
    assert fin["pairs"] == 15 and fin["precision"] == 0.0  # what issue 15 found in the default run
    assert info["source_gate"]["dropped_sources"] == {}


def test_a_gated_source_gives_back_the_pairs_it_shadowed():
    """A pair kept from an untrusted source and given by another source too comes back from the
    other one when the first is dropped."""
    prompts, responses, cands = _world()
    # two untrusted sources give the same right pair; the first by id order is the bad one
    extra = []
    for p in cands:
        if p["label_source"] == "p_true":
            extra.append(_pair(p["prompt_id"], "response", p["prompt"], p["chosen"], p["rejected"], "c", "r", 1.0, 0.0,
                               "judge_aaa", "test"))
            extra.append(_pair(p["prompt_id"], "response", p["prompt"], p["rejected"], p["chosen"] + "x", "c", "r",
                               1.0, 0.0, "judge_aaa", "test"))  # and a wrong pair of its own
    params = _params(**{"upo.trusted_sources": ["verifier"]})
    pairs, dropped, info = decide(cands + extra, prompts, responses, params, None, "/tmp")
    kept = [p for p in pairs if p["pair_id"] not in dropped]
    assert "response/judge_aaa" in info["source_gate"]["dropped_sources"]
    assert not any(p["label_source"] == "judge_aaa" for p in kept)
    assert sum(p["label_source"] == "p_true" for p in kept) == 30  # every right pair it shadowed is back
