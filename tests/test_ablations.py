"""The ablation runner's statistics: mean ± 95% t-interval over seeds, paired differences, significance."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("ablations", ROOT / "benchmarks" / "ablations.py")
ablations = importlib.util.module_from_spec(spec)
sys.modules["ablations"] = ablations
spec.loader.exec_module(ablations)


def test_mean_ci_matches_a_hand_computed_t_interval():
    got = ablations.mean_ci([0.50, 0.52, 0.54])
    # mean 0.52, sd 0.02, t(2) = 4.303: half width 4.303 * 0.02 / sqrt(3) = 0.0497
    assert got["mean"] == 0.52 and got["ci95"] == pytest.approx([0.4703, 0.5697], abs=1e-4)
    assert ablations.mean_ci([0.5])["ci95"] is None


def _run(seed, p1_val, p1_test, p0=0.5):
    return {"seed": seed, "pairs": 10, "steps": 3, "seconds": 1.0,
            "validation": {"policy_0": p0, "policy_1": p1_val, "delta": p1_val - p0},
            "test": {"policy_0": p0, "policy_1": p1_test, "delta": p1_test - p0}}


def test_differences_from_default_are_paired_by_seed_and_flagged_only_when_the_interval_excludes_zero():
    runs = {"default": [_run(1, 0.55, 0.55), _run(2, 0.60, 0.51), _run(3, 0.50, 0.53)],
            # always 5 points above default on the same seed: a big seed spread, but a clear paired gain
            "better": [_run(1, 0.60, 0.56), _run(2, 0.65, 0.50), _run(3, 0.55, 0.55)],
            "same": [_run(1, 0.56, 0.55), _run(2, 0.59, 0.51), _run(3, 0.50, 0.53)]}
    s = ablations.summarise(runs)
    assert s["better"]["validation"]["vs_default"]["mean"] == pytest.approx(0.05)
    assert s["better"]["validation"]["vs_default"]["significant"] is True
    assert s["same"]["validation"]["vs_default"]["significant"] is False
    assert s["better"]["test"]["vs_default"]["significant"] is False  # test: -0.003 on average, noisy
    assert "vs_default" not in s["default"]["validation"]
    # unpaired, the gain would hide in the spread: default's own interval is wider than the gain
    lo, hi = s["default"]["validation"]["policy_1"]["ci95"]
    assert hi - lo > 0.1
    text = ablations.table(s, "validation")
    assert "better" in text and "+5.0 ± 0.0*" in text
    # any two variants, paired by seed the same way (--paired better:same)
    assert ablations.paired(runs, "better", "same", "validation")["mean"] == pytest.approx(0.05)  # 4, 6 and 5 points
    line = ablations.paired_table(runs, ["better:same"]).splitlines()[1]
    assert line.startswith("better − same: validation +5.0 ± 2.5*") and "*" in line.split("test")[0]
    with pytest.raises(SystemExit, match="missing"):
        ablations.paired_table(runs, ["better:nope"])


def test_overrides_and_equal_step_baselines():
    p = ablations.apply_overrides({"train": {"views": ["response", "step"]}},
                                  ["train.views=[step]", "train.max_pairs=2000", "pairs.upo.enabled=false"])
    assert p == {"train": {"views": ["step"], "max_pairs": 2000}, "pairs": {"upo": {"enabled": False}}}
    for name in ("rft", "sft_gold"):  # same budget as the default: its optimizer steps
        assert f"train.max_steps={ablations.SAME_STEPS}" in ablations.VARIANTS[name]
    assert {"default", "rft", "sft_gold", "plain_dpo"} <= set(ablations.VARIANTS)


def test_rounds_gain_over_the_round_before_is_paired_by_seed():
    spec = importlib.util.spec_from_file_location("rounds", ROOT / "benchmarks" / "rounds.py")
    rounds = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rounds)

    def run(seed, accs):
        return {"seed": seed, "seconds": 1.0,
                "rounds": [{"round": r + 1, "pairs": 100, "steps": 2,
                            "validation": {"policy_0": 0.40, "policy_r": a}, "test": {"policy_0": 0.40, "policy_r": a}}
                           for r, a in enumerate(accs)]}
    # round 2 adds 4 points on every seed (whatever the seed's level); round 3 adds nothing on average
    runs = [run(1, [0.45, 0.49, 0.50]), run(2, [0.50, 0.54, 0.53]), run(3, [0.47, 0.51, 0.51])]
    s = rounds.summarise(runs)
    assert s["round-2"]["validation"]["vs_previous"]["mean"] == pytest.approx(0.04)
    assert s["round-2"]["validation"]["vs_previous"]["significant"] is True
    assert s["round-3"]["validation"]["vs_previous"]["significant"] is False
    assert "vs_previous" not in s["round-1"]["validation"]
    assert s["round-3"]["test"]["vs_policy_0"]["mean"] == pytest.approx(0.113, abs=1e-3)
    chain = rounds.round_overrides(3, 7)
    assert ablations.apply_overrides({}, chain)["iterations"] == {"1": {"from": 0}, "2": {"from": 1}, "3": {"from": 2}}
    assert "+4.0 ± 0.0*" in rounds.table(s, "validation")
    csv = rounds.accuracy_csv(runs).splitlines()
    assert csv[0].startswith("round,validation,validation_low") and len(csv) == 5
    assert csv[1].startswith("0,0.4000,") and csv[3].startswith("2,0.5133,")
    # A - B paired by seed: B trails A by 3 points on every seed (whatever the seed's level); a seed
    # only one run has is left out of the pairing
    other = [run(1, [0.42, 0.46, 0.47]), run(2, [0.47, 0.51, 0.50]), run(3, [0.44, 0.48, 0.48]), run(9, [0.9] * 3)]
    diff = rounds.compare(runs, other)
    assert diff["round-1"]["test"]["mean"] == pytest.approx(0.03) and diff["round-1"]["test"]["n_seeds"] == 3
    assert diff["round-1"]["test"]["significant"] is True
    assert diff["round-3"]["validation"]["mean"] == pytest.approx(0.03)
    assert "+3.0 ± 0.0*" in rounds.compare_table(diff, "a", "b")
    # another metric than greedy: pass@8 from each round's `other`, absent where a run lacks it
    for r in runs + other:
        for rnd in r["rounds"]:
            rnd["test"]["other"] = {f"policy-{rnd['round']}": {"pass_at_8": 0.7 + (0.05 if r in runs else 0.0)}}
    p8 = rounds.compare(runs, other, "pass_at_8")
    assert p8["round-2"]["test"]["mean"] == pytest.approx(0.05) and "validation" not in p8["round-2"]


def test_rounds_pools_seeds_saved_apart(tmp_path):
    """Seeds run one at a time (`--seeds 1 --first-seed k`) pool into one run; a seed saved twice is refused."""
    spec = importlib.util.spec_from_file_location("rounds", ROOT / "benchmarks" / "rounds.py")
    rounds = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rounds)
    runs = [{"seed": seed, "rounds": [{"round": 1, "pairs": 10, "steps": 1,
                                       "validation": {"policy_0": 0.4, "policy_r": 0.4 + seed / 100}}]}
            for seed in (1, 2, 3)]
    for run in runs:
        (tmp_path / f"seed{run['seed']}.json").write_text(json.dumps({"runs": [run]}))
    files = [str(tmp_path / f"seed{k}.json") for k in (3, 1, 2)]
    assert rounds.pooled_runs(files) == runs
    rounds.main(["--summarise", *files, "--save", str(tmp_path / "pooled.json")])
    pooled = json.loads((tmp_path / "pooled.json").read_text())
    assert pooled["summary"] == rounds.summarise(runs)
    assert pooled["summary"]["round-1"]["validation"]["vs_policy_0"]["n_seeds"] == 3
    with pytest.raises(SystemExit, match="seed 1 is in both"):
        rounds.pooled_runs([files[1], files[1]])
