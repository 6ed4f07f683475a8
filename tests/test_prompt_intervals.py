"""Intervals over seeds and prompts (benchmarks/prompt_intervals.py): the statistic by hand, its point (the
prompt part does not shrink with more seeds), the per-prompt outcomes are the evaluate stage's own, and the
ablation / rounds tables carry the wider interval when the runs recorded outcomes."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from helpers import ExactArithPolicy
from prefsynth.config.train import EvaluateConfig
from prefsynth.pipelines.evaluate import evaluate_policy
from prefsynth.tasks import arith
from prefsynth.transforms.prompt_records import arith_record

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import prompt_intervals as pi  # noqa: E402


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_interval_by_hand():
    # 2 seeds x 4 prompts; both seeds gain 2 of 4: no seed spread, all of the width is the prompts'
    got = pi.seeds_and_prompts_ci([[1, 0, 0, 1], [1, 1, 0, 0]])
    sd = math.sqrt((0.25 + 0 + 0.25 + 0) / 3)  # per-prompt means 1, .5, 0, .5 around .5
    assert got["mean"] == 0.5 and got["seed_half"] == 0.0
    assert got["prompt_half"] == pytest.approx(1.96 * sd / 2, abs=1e-4)
    assert got["ci95"] == pytest.approx([0.5 - 1.96 * sd / 2, 0.5 + 1.96 * sd / 2], abs=1e-4)
    # a real seed effect (seed 2 gains every prompt): two-way mean squares by hand, 2 seeds x 4 prompts
    got = pi.seeds_and_prompts_ci([[1, 1, 0, 0], [1, 1, 1, 1]])
    ms_seed, ms_resid, ms_prompt = 0.5, 0.5 / 3, 1 / 6  # n·var(.5, 1); SS_resid .5 on 3 df; S·var(1, 1, .5, .5)
    assert got["mean"] == 0.75
    assert got["seed_half"] == pytest.approx(12.706 * math.sqrt((ms_seed - ms_resid) / 8), abs=1e-4)
    assert got["prompt_half"] == pytest.approx(1.96 * math.sqrt(ms_prompt / 8), abs=1e-4)
    half = (got["ci95"][1] - got["ci95"][0]) / 2
    assert half == pytest.approx(math.hypot(got["seed_half"], got["prompt_half"]), abs=1e-4)
    # seeds that differ only by which prompts flip (MS_seed = MS_resid): no seed part
    assert pi.seeds_and_prompts_ci([[1, 1, 0, 0], [1, 1, 1, 0]])["seed_half"] == 0.0


def test_one_seed_gives_the_evaluate_stages_paired_interval():
    from prefsynth.pipelines.evaluate import paired_delta

    after, before = [1, 1, 0, 1, 0, 1, 1, 0, 1, 1], [1, 0, 0, 0, 0, 1, 1, 1, 0, 0]
    got = pi.seeds_and_prompts_ci(pi.differences(["".join(map(str, after))], ["".join(map(str, before))]))
    assert got["ci95"] == pytest.approx(paired_delta(after, before)["ci95"], abs=1e-4)


def test_the_prompt_part_does_not_shrink_with_seeds():
    # every seed gains the same 3 of 40 prompts and loses 1: a seed-only interval is 0 wide and "significant",
    # but 40 prompts cannot show a 5-point gain
    row = [1, 1, 1, -1] + [0] * 36
    one, many = pi.seeds_and_prompts_ci([row]), pi.seeds_and_prompts_ci([row] * 6)
    assert one["mean"] == many["mean"] == 0.05
    assert many["seed_half"] == 0.0 and many["prompt_half"] == one["prompt_half"] > 0.05
    assert not many["significant"]
    ablations = _load("ablations")
    assert ablations.mean_ci([0.05] * 6)["ci95"] == [0.05, 0.05]  # what the seed interval says


class HalfRightPolicy(ExactArithPolicy):
    """The exact policy, with the final answer off by one on every other prompt (order of the call)."""

    def generate(self, prompts, sampling, seeds=None):
        out = super().generate(prompts, sampling, seeds)
        for i, group in enumerate(out):
            if i % 2:
                for c in group:
                    head, _, ans = c.text.rstrip("\n").rpartition("A: ")
                    c.text = f"{head}A: {int(ans) + 1}\n"
        return out


def test_outcomes_are_the_evaluate_stages_own():
    problems = arith.generate_problems(arith.ArithConfig(), 7, "test-intervals", 0, 12)
    records = [arith_record(p, "test", 7, 0.0) for p in problems]
    cfg = EvaluateConfig(k=0, max_new_tokens=64)
    stage = evaluate_policy(HalfRightPolicy(), records, cfg, seed=3)
    bits = pi.outcome_bits(HalfRightPolicy(), records, EvaluateConfig(k=4, max_new_tokens=64), eval_seed=3)
    assert bits == "".join("1" if x else "0" for x in stage["_per_prompt"]["greedy_accuracy"]) == "10" * 6
    pi.check_against(bits, stage["greedy_accuracy"], "half right")
    with pytest.raises(RuntimeError, match="evaluate stage reported 0.6000"):
        pi.check_against(bits, 0.6, "half right")


def test_outcomes_read_from_the_evaluate_stages_file(tmp_path):
    import json

    from prefsynth.pipelines.evaluate import outcome_strings

    problems = arith.generate_problems(arith.ArithConfig(), 7, "test-intervals", 0, 12)
    records = [arith_record(p, "test", 7, 0.0) for p in problems]
    stage = evaluate_policy(HalfRightPolicy(), records, EvaluateConfig(k=0, max_new_tokens=64), seed=3)
    path = tmp_path / "outcomes.json"  # what the evaluate stage writes, test and validation alike
    path.write_text(json.dumps({"splits": {"test": outcome_strings(records, {"policy-1": stage}),
                                           "validation": outcome_strings(records, {"policy-1": stage})}}))
    got = pi.stage_outcomes(path, "policy-1", {"test": "test", "validation": "validation"})
    assert got == {"test": "10" * 6, "validation": "10" * 6}
    assert pi.stage_outcomes(path, "policy-2", {"test": "test"}) is None  # not evaluated: decode instead
    assert pi.stage_outcomes(tmp_path / "none.json", "policy-1", {"test": "test"}) is None


def _run(seed, v1, t1, v0="0000", t0="0000"):
    def block(o0, o1):
        return {"policy_0": o0.count("1") / 4, "policy_1": o1.count("1") / 4,
                "delta": (o1.count("1") - o0.count("1")) / 4, "outcomes_0": o0, "outcomes_1": o1}
    return {"seed": seed, "pairs": 10, "steps": 3, "seconds": 1.0, "validation": block(v0, v1), "test": block(t0, t1)}


def test_ablation_tables_carry_the_seeds_and_prompts_interval():
    ablations = _load("ablations")
    runs = {"default": [_run(s, "1100", "1000") for s in (1, 2, 3)],
            "better": [_run(s, "1110", "1100") for s in (1, 2, 3)]}
    s = ablations.summarise(runs)
    v = s["better"]["validation"]
    assert v["vs_default"]["ci95"] == [0.25, 0.25]  # the same prompt every seed: no seed spread
    sp = v["vs_default_seeds_prompts"]
    assert sp["mean"] == 0.25 and sp["ci95"][0] < 0 < sp["ci95"][1]  # one prompt of four: nothing shown
    assert s["default"]["validation"]["delta_vs_policy_0_seeds_prompts"]["mean"] == 0.5
    text = ablations.table(s, "validation")
    assert "[seeds+prompts]" in text and "+25.0 ± 0.0*" in text
    line = ablations.paired_table(runs, ["better:default"]).splitlines()[1]
    assert line.startswith("better − default: validation +25.0 ± 0.0* [+25.0 ± ")
    # runs saved before outcomes were recorded: the seed interval alone, no empty column
    for rows in runs.values():
        for r in rows:
            for split in ("validation", "test"):
                r[split].pop("outcomes_0")
                r[split].pop("outcomes_1")
    s = ablations.summarise(runs)
    assert "vs_default_seeds_prompts" not in s["better"]["validation"]
    assert "[seeds+prompts]" not in ablations.table(s, "validation")


def test_rounds_tables_carry_the_seeds_and_prompts_interval():
    rounds = _load("rounds")

    def run(seed, bits):
        return {"seed": seed, "seconds": 1.0,
                "rounds": [{"round": r + 1, "pairs": 100, "steps": 2,
                            "validation": {"policy_0": 0.0, "policy_r": b.count("1") / 8, "outcomes_0": "0" * 8,
                                           "outcomes_r": b}}
                           for r, b in enumerate(bits)]}
    runs = [run(s, ["11000000", "11110000"]) for s in (1, 2, 3)]
    s = rounds.summarise(runs)
    r2 = s["round-2"]["validation"]
    assert r2["vs_previous"]["ci95"] == [0.25, 0.25] and r2["vs_previous_seeds_prompts"]["mean"] == 0.25
    assert r2["vs_previous_seeds_prompts"]["ci95"][0] < 0.25 - 0.1
    assert "[seeds+prompts]" in rounds.table(s, "validation")
    diff = rounds.compare(runs, [run(s, ["10000000", "11100000"]) for s in (1, 2, 3)])
    assert diff["round-2"]["validation"]["seeds_prompts"]["mean"] == 0.125
    assert "[seeds+prompts]" in rounds.compare_table(diff, "a", "b")
