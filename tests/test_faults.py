"""The generate stage against a fault-injecting OpenAI-compatible server: retries succeed where
they can, the rest become dead letters with the raw body, nothing crashes, every record counts."""

import collections
import json

import pytest

from prefsynth.pipelines import generate, prompts
from prefsynth.schemas.io import read_records

from fault_server import FaultServer, fault_of
from helpers import tiny_random_policy, write_params

pytestmark = pytest.mark.slow


def test_generate_survives_every_fault_kind(tmp_path):
    policy = tiny_random_policy(tmp_path / "policy-0")
    timeout_s = 2.0
    params = write_params(tmp_path / "p.json", {
        "seed": 1, "prompts": {"n_prompts": 200},
        "policy": {"backend": "openai", "model": "policy", "max_retries": 2, "timeout_s": timeout_s,
                   "max_concurrency": 8, "vocab_size": 34},
        "generate": {"n": 1, "max_new_tokens": 8, "split": "all", "max_prompts": 48}})
    c = ["--params", params, "--reports", str(tmp_path / "reports")]
    prompts.main([*c, "--out", str(tmp_path / "prompts"), "--dead", str(tmp_path / "pd"), "--metrics", str(tmp_path / "pm.json")])
    recs = sorted(read_records(str(tmp_path / "prompts")), key=lambda r: r["prompt_id"])[:48]
    kinds = collections.Counter(fault_of(r["prompt"]) for r in recs)
    assert all(kinds[k] > 0 for k in ("ok", "flaky_5xx", "rate_limited", "timeout", "always_500", "not_json"))

    with FaultServer(policy, timeout_s) as server:
        cfg = json.loads(open(params).read())
        cfg["policy"]["base_url"] = server.base_url
        params2 = write_params(tmp_path / "p2.json", cfg)
        generate.main(["--params", params2, "--reports", str(tmp_path / "reports"), "--prompts", str(tmp_path / "prompts"),
                       "--policy", policy, "--out", str(tmp_path / "resp"), "--dead", str(tmp_path / "dead"),
                       "--metrics", str(tmp_path / "m.json")])
    m = json.loads((tmp_path / "m.json").read_text())
    acc = m["accounting"]
    assert acc["n_in"] == 48 and acc["balanced"]
    must_fail = kinds["always_500"] + kinds["not_json"]
    assert acc["n_dead"] == must_fail and acc["n_out"] == 48 - must_fail
    dead = {d["record_id"]: d for d in read_records(str(tmp_path / "dead"))}
    by_id = {r["prompt_id"]: r for r in recs}
    for pid, d in dead.items():
        kind = fault_of(by_id[pid]["prompt"])
        assert kind in ("always_500", "not_json"), (kind, d)
        assert d["raw_input"] == by_id[pid]["prompt"]
        if kind == "always_500":
            assert d["error_type"] == "http_500" and "injected: worker crashed" in d["raw_output"]
        else:
            assert "502 Bad Gateway (injected)" in (d["raw_output"] or d["message"])
    # the recovered kinds were retried (each failed exactly once, then answered)
    assert server.attempts and all(
        server.attempts[r["prompt"]] == 2 for r in recs if fault_of(r["prompt"]) in ("flaky_5xx", "rate_limited"))
