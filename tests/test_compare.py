"""`prefsynth compare`: evaluate's per-prompt outcomes paired across runs and seeds (prefsynth/compare.py)."""

import json
import subprocess
import sys

import pytest

from prefsynth.compare import compare
from prefsynth.intervals import differences, seeds_and_prompts_ci
from prefsynth.pipelines.evaluate import paired_delta

IDS = [f"p{i:02d}" for i in range(12)]


def _outcomes(path, policies: dict[str, str], val: dict[str, str] | None = None, ids=IDS):
    """An evaluate outcomes.json: test outcomes per policy, and the same on validation (reversed ids)."""
    splits = {"test": {"prompt_ids": ids, "policies": {n: {"greedy_accuracy": b} for n, b in policies.items()}}}
    if val is not None:
        splits["validation"] = {"prompt_ids": ids[::-1],
                                "policies": {n: {"greedy_accuracy": b} for n, b in val.items()}}
    path.write_text(json.dumps({"baseline": "policy-0", "policies": list(policies), "metric_keys": ["greedy_accuracy"],
                                "splits": splits}))
    return str(path)


def test_one_run_policy_vs_baseline_is_the_paired_interval(tmp_path):
    p0, p1 = "110000110000", "111101110100"
    f = _outcomes(tmp_path / "o.json", {"policy-0": p0, "policy-1": p1}, {"policy-0": p1, "policy-1": p0})
    got = compare([f], None, None, None)
    want = paired_delta([c == "1" for c in p1], [c == "1" for c in p0])
    assert got["splits"]["test"]["mean"] == pytest.approx(want["delta"]) == pytest.approx(4 / 12, abs=1e-4)
    assert got["splits"]["test"]["ci95"] == pytest.approx(want["ci95"], abs=1e-4)
    assert got["splits"]["test"]["a"] == [round(8 / 12, 4)] and got["splits"]["test"]["b"] == [round(4 / 12, 4)]
    # validation is compared on its own prompts: here the policies swap, so the sign does
    assert got["splits"]["validation"]["mean"] == pytest.approx(-4 / 12, abs=1e-4)


def test_variants_over_seeds(tmp_path):
    a = ["111100001111", "111000001111", "111100011111"]
    b = ["110000001111", "110000001110", "111000001111"]
    fa = [_outcomes(tmp_path / f"a{s}.json", {"policy-0": "0" * 12, "policy-1": x}) for s, x in enumerate(a)]
    fb = [_outcomes(tmp_path / f"b{s}.json", {"policy-0": "0" * 12, "policy-1": x}) for s, x in enumerate(b)]
    got = compare(fa, fb, "policy-1", "policy-1", splits=("validation", "test"))
    assert list(got["splits"]) == ["test"]  # no validation in these files: skipped, not invented
    assert got["n_seeds"] == 3
    want = seeds_and_prompts_ci(differences(a, b))
    assert {k: got["splits"]["test"][k] for k in want} == want
    assert got["splits"]["test"]["mean"] == pytest.approx((2 + 2 + 2) / 36, abs=1e-4)


def test_files_over_different_prompts_are_refused(tmp_path):
    fa = _outcomes(tmp_path / "a.json", {"policy-0": "0" * 12, "policy-1": "1" * 12})
    fb = _outcomes(tmp_path / "b.json", {"policy-0": "0" * 12, "policy-1": "1" * 12}, ids=IDS[:11] + ["other"])
    with pytest.raises(ValueError, match=r"a\.json and .*b\.json score different test prompts.*position 11"):
        compare([fa], [fb], None, None)
    with pytest.raises(ValueError, match="no policy 'policy-7'"):
        compare([fa], None, "policy-7", None)
    with pytest.raises(ValueError, match="2 files against 1"):
        compare([fa, fa], [fb], None, None)
    bad = tmp_path / "bad.json"
    short = {"prompt_ids": IDS, "policies": {"policy-0": {"greedy_accuracy": "01"}}}  # 2 outcomes for 12 ids
    bad.write_text(json.dumps({"baseline": "policy-0", "policies": ["policy-0"], "splits": {"test": short}}))
    with pytest.raises(ValueError, match="not one '0'/'1' per prompt id"):
        compare([str(bad)], None, None, None)


def test_the_command(tmp_path):
    f = _outcomes(tmp_path / "o.json", {"policy-0": "110000110000", "policy-1": "111101110100"})
    run = subprocess.run([sys.executable, "-m", "prefsynth", "compare", f], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    line = next(l for l in run.stdout.splitlines() if l.strip().startswith("test"))
    assert run.stdout.startswith("greedy_accuracy: policy-1 − policy-0, 1 seed(s)")
    assert "n   12" in line and "Δ +33.3" in line and "A 0.667" in line and "B 0.333" in line
    missing = subprocess.run([sys.executable, "-m", "prefsynth", "compare", str(tmp_path / "none.json")],
                             capture_output=True, text=True)
    assert missing.returncode != 0 and "no outcomes file" in missing.stderr and "none.json" in missing.stderr
