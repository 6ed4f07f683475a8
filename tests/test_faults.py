"""The generate stage against a fault-injecting OpenAI-compatible server: retries succeed where
they can (5xx, 429, timeouts, short bodies, 200 replies cut off mid-JSON or replaced by a proxy's
HTML page), the rest become one dead letter per prompt with the raw body as text, nothing
crashes, every record counts, and a run killed mid-batch resumes without asking again for the
prompts it had finished."""

import collections
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from prefsynth.pipelines import generate, prompts
from prefsynth.schemas.io import read_records

from fault_server import ALWAYS_FAILING, CUT_JSON, FaultServer, fault_of
from helpers import tiny_random_policy, write_params

pytestmark = pytest.mark.slow

N = 60
TIMEOUT_S = 2.0
RECOVERING = ("flaky_5xx", "rate_limited", "truncated", "cut_json", "html_200")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    policy = tiny_random_policy(root / "policy-0")
    cfg = {"seed": 1, "prompts": {"n_prompts": 250},
           "policy": {"backend": "openai", "model": "policy", "max_retries": 2, "timeout_s": TIMEOUT_S,
                      "max_concurrency": 8, "vocab_size": 34},
           "generate": {"n": 1, "max_new_tokens": 8, "split": "all", "max_prompts": N}}
    params = write_params(root / "p.json", cfg)
    prompts.main(["--params", params, "--reports", str(root / "reports"), "--out", str(root / "prompts"),
                  "--dead", str(root / "pd"), "--metrics", str(root / "pm.json")])
    recs = sorted(read_records(str(root / "prompts")), key=lambda r: r["prompt_id"])[:N]
    kinds = collections.Counter(fault_of(r["prompt"]) for r in recs)
    assert all(kinds[k] > 0 for k in ("ok", "timeout", *RECOVERING, *ALWAYS_FAILING)), kinds
    return root, policy, cfg, recs, kinds


def _args(root, policy, params, name):
    d = root / name
    return ["--params", params, "--reports", str(root / "reports"), "--prompts", str(root / "prompts"),
            "--policy", policy, "--out", str(d / "resp"), "--dead", str(d / "dead"), "--metrics", str(d / "m.json")]


def _check_outcome(root, name, recs, kinds):
    m = json.loads((root / name / "m.json").read_text())
    acc = m["accounting"]
    must_fail = sum(kinds[k] for k in ALWAYS_FAILING)
    assert acc["n_in"] == N and acc["balanced"]
    assert acc["n_dead"] == must_fail and acc["n_out"] == N - must_fail
    by_id = {r["prompt_id"]: r for r in recs}
    answered = {r["prompt_id"] for r in read_records(str(root / name / "resp"))}
    assert answered == {pid for pid, r in by_id.items() if fault_of(r["prompt"]) not in ALWAYS_FAILING}
    dead = {d["record_id"]: d for d in read_records(str(root / name / "dead"))}
    assert len(dead) == must_fail
    for pid, d in dead.items():
        kind = fault_of(by_id[pid]["prompt"])
        assert d["raw_input"] == by_id[pid]["prompt"]
        if kind == "always_500":
            assert d["error_type"] == "http_500" and "injected: worker crashed" in d["raw_output"]
        elif kind == "not_json":  # the body as the server sent it, not a Python repr
            assert d["error_type"] == "bad_response" and d["raw_output"] == "<html>502 Bad Gateway (injected)</html>"
            assert "not JSON" in d["message"] and "after 2 retries" in d["message"]
        else:
            assert kind == "always_cut", (kind, d)
            assert d["error_type"] == "bad_response" and d["raw_output"] == CUT_JSON.decode()
            assert "cut off" in d["message"]
    return m


def test_generate_survives_every_fault_kind(world):
    root, policy, cfg, recs, kinds = world
    with FaultServer(policy, TIMEOUT_S) as server:
        params = write_params(root / "p-all.json", {**cfg, "policy": {**cfg["policy"], "base_url": server.base_url}})
        generate.main(_args(root, policy, params, "all"))
    _check_outcome(root, "all", recs, kinds)
    attempts = {r["prompt_id"]: server.attempts[r["prompt"]] for r in recs}
    for r in recs:
        kind = fault_of(r["prompt"])
        if kind in RECOVERING:  # failed exactly once, then answered
            assert attempts[r["prompt_id"]] == 2, (kind, attempts[r["prompt_id"]])
        elif kind in ALWAYS_FAILING:  # bounded: 1 try + max_retries
            assert attempts[r["prompt_id"]] == 3, (kind, attempts[r["prompt_id"]])
        elif kind in ("ok", "slow"):
            assert attempts[r["prompt_id"]] == 1, kind


def test_a_kill_mid_batch_resumes_without_asking_again_for_finished_prompts(world):
    root, policy, cfg, recs, kinds = world
    with FaultServer(policy, TIMEOUT_S) as server:
        # one batch holds every prompt: only the per-prompt checkpoints can save work from the kill
        params = write_params(root / "p-kill.json", {
            **cfg, "policy": {**cfg["policy"], "base_url": server.base_url, "batch_size": 256}})
        args = _args(root, policy, params, "kill")
        resume = root / "kill" / "resp.resume"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        proc = subprocess.Popen([sys.executable, "-m", "prefsynth", "generate", *args], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if resume.exists() and len(list(resume.glob("prompt-*.json"))) >= 10:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL, "the stage finished before it could be killed"
        assert not list(resume.glob("batch-*.json")) and not (root / "kill" / "resp").exists()
        done = {json.loads(p.read_text())["prompt_id"] for p in resume.glob("prompt-*.json")}
        prompt_of = {r["prompt_id"]: r["prompt"] for r in recs}
        before = {pid: server.attempts[prompt_of[pid]] for pid in done}
        assert 10 <= len(done) < N - sum(kinds[k] for k in ALWAYS_FAILING)

        generate.main(args)
        m = _check_outcome(root, "kill", recs, kinds)
        # finished prompts were not asked again; the rest were
        assert {pid: server.attempts[prompt_of[pid]] for pid in done} == before
        assert m["accounting"]["counters"]["resumed_prompts"] == len(done)
        assert m["batches"] == {"computed": 1, "resumed": 0}
    assert not resume.exists()  # cleared once the output is committed
    if (root / "all" / "resp").exists():  # the same responses as the run that was never killed
        texts = lambda name: {r["response_id"]: r["text"] for r in read_records(str(root / name / "resp"))}  # noqa: E731
        assert texts("kill") == texts("all")


def test_a_server_that_is_not_there_fails_the_stage_with_one_line_naming_it(world, caplog):
    from helpers import free_port

    root, policy, cfg, recs, kinds = world
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    params = write_params(root / "p-gone.json", {**cfg, "policy": {**cfg["policy"], "base_url": url, "max_retries": 1},
                                                 "generate": {**cfg["generate"], "max_prompts": 4}})
    with pytest.raises(Exception, match=rf"cannot reach {url} after 1 retries"):
        generate.main(_args(root, policy, params, "gone"))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[generate] failed:")]
    assert len(lines) == 1 and url in lines[0] and "\n" not in lines[0], lines
    assert not (root / "gone" / "resp").exists()
