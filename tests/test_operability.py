"""Operability: a clean Ctrl-C (prompt exit, one clear line, nothing half-written, resumable),
logs that name the stage, shard and record on every error, and progress while a stage runs."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import apache_beam as beam
import pytest

from prefsynth.config import BeamConfig
from prefsynth.pipelines import generate, prompts
from prefsynth.pipelines.progress import Heartbeat
from prefsynth.pipelines.stage import Output, run_stage
from prefsynth.schemas.io import WriteDataset, dataset_files
from prefsynth.transforms import deadletters

from helpers import tiny_random_policy, write_params


@pytest.mark.slow
def test_ctrl_c_mid_generate_exits_cleanly_and_the_rerun_resumes(tmp_path):
    policy = tiny_random_policy(tmp_path / "policy-0")
    params = write_params(tmp_path / "p.json", {
        "seed": 3, "prompts": {"n_prompts": 80},
        "policy": {"batch_size": 8},  # 4 prompts x 2 samples per batch: many small batches
        "generate": {"n": 2, "max_new_tokens": 16, "split": "all", "max_prompts": 32}})
    c = ["--params", params, "--reports", str(tmp_path / "reports")]
    prompts.main([*c, "--out", str(tmp_path / "prompts"), "--dead", str(tmp_path / "pd"),
                  "--metrics", str(tmp_path / "pm.json")])

    def args(name):
        d = tmp_path / name
        return [*c, "--prompts", str(tmp_path / "prompts"), "--policy", policy, "--out", str(d / "responses"),
                "--dead", str(d / "dead"), "--metrics", str(d / "m.json")]

    out = tmp_path / "stopped" / "responses"
    resume_dir = tmp_path / "stopped" / "responses.resume"
    proc = subprocess.Popen([sys.executable, "-m", "prefsynth", "generate", *args("stopped")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if resume_dir.exists() and len(list(resume_dir.glob("batch-*.json"))) >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the stage finished before it could be interrupted"
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        _, stderr = proc.communicate(timeout=20)  # a hang fails here
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("generate did not exit within 20 s of Ctrl-C")
    assert time.monotonic() - sent < 20
    assert proc.returncode == 130, stderr[-2000:]
    lines = [ln for ln in stderr.splitlines() if "interrupted by SIGINT" in ln]
    assert len(lines) == 1, stderr[-2000:]
    assert "[generate]" in lines[0] and "nothing committed" in lines[0] and str(resume_dir) in lines[0]
    assert "Traceback" not in stderr  # one clear line, not a wall of Beam internals
    # nothing half-written where readers look, no staging left behind; finished batches kept
    assert not out.exists() and not (tmp_path / "stopped" / "dead").exists()
    assert not Path(str(out) + ".partial").exists()
    done_before = len(list(resume_dir.glob("batch-*.json")))
    assert done_before >= 2

    generate.main(args("stopped"))
    generate.main(args("uninterrupted"))
    m = json.loads((tmp_path / "stopped" / "m.json").read_text())
    total = json.loads((tmp_path / "uninterrupted" / "m.json").read_text())["batches"]["computed"]
    assert m["batches"]["resumed"] == done_before and m["batches"]["computed"] == total - done_before
    for ds in ("responses", "dead"):
        assert [Path(f).read_bytes() for f in dataset_files(str(tmp_path / "uninterrupted" / ds))] == \
               [Path(f).read_bytes() for f in dataset_files(str(tmp_path / "stopped" / ds))], ds


def test_bad_records_are_logged_with_stage_record_and_error(tmp_path, caplog):
    src = tmp_path / "in.jsonl"
    src.write_text('{"question": "ok one", "answer": "1"}\n{broken\n{"question": 7}\n')
    params = write_params(tmp_path / "p.json", {"prompts": {"source": "jsonl", "path": str(src)},
                                                "max_dead_fraction": 1})  # 2 of 3 records are bad on purpose
    with caplog.at_level(logging.INFO, logger="prefsynth"):
        prompts.main(["--params", params, "--out", str(tmp_path / "out"), "--dead", str(tmp_path / "dead"),
                      "--metrics", str(tmp_path / "m.json"), "--reports", str(tmp_path / "reports")])
    dead = [r.getMessage() for r in caplog.records if "dead letter" in r.getMessage()]
    assert any(m.startswith("[prompts] dead letter in.jsonl:2 (invalid_json): in.jsonl:2: invalid JSON")
               for m in dead), dead
    assert any(m.startswith("[prompts] dead letter in.jsonl:3 (wrong_type): ") and "'question'" in m
               for m in dead), dead


def test_a_flood_of_dead_letters_is_rate_limited(caplog):
    stage = f"flood{os.getpid()}"  # counts are per process: a stage name no other test uses
    with caplog.at_level(logging.INFO, logger="prefsynth"):
        for i in range(2500):
            deadletters.log_dead(stage, f"rec{i}", "bad", "x" * 1000)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"[{stage}]")]
    assert len(lines) == deadletters.LOG_FIRST + 2  # then the 1000th and the 2000th
    assert lines[0].startswith(f"[{stage}] dead letter rec0 (bad): xxx") and len(lines[0]) < 400
    assert "2000 bad dead letters so far" in lines[-1]


def _write_bad_record(pipeline, out):
    bad = {"stage": "opstest", "record_id": "rec-42", "error_type": ["not", "a", "string"], "message": "m",
           "raw_input": None, "raw_output": None}
    pipeline | beam.Create([bad]) | WriteDataset(out["dead"], "dead_letters", "opstest", 1)


def test_a_stage_failure_names_stage_shard_and_record(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="prefsynth"), pytest.raises(Exception) as err:
        run_stage("opstest", BeamConfig(), {"dead": Output(str(tmp_path / "dead"), "dead_letters")},
                  "dead", "dead", _write_bad_record)
    failed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[opstest] failed: ")]
    assert len(failed) == 1, [r.getMessage() for r in caplog.records]
    assert "shard" in failed[0] and "part-00000-of-00001.parquet" in failed[0] and "rec-42" in failed[0]
    assert "rec-42" in str(err.value)
    assert not (tmp_path / "dead").exists()


def test_heartbeat_logs_progress_while_a_stage_runs(caplog):
    with caplog.at_level(logging.INFO, logger="prefsynth"), Heartbeat("slowstage", 0.05):
        time.sleep(0.3)
    beats = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[slowstage] still running")]
    assert len(beats) >= 2


@pytest.mark.parametrize("data", [b"", b"a\n", b"a", b"a\n\nb\r\nc", b"x" * 10 + b"\n" + b"y" * 3 + b"\n\n" + b"z", b"\n\n"])
def test_jsonl_byte_ranges_read_the_same_records_as_the_whole_file(tmp_path, data):
    # the prompts stage reads JSONL in byte ranges on several workers (throughput); the records,
    # their file:line names and the blank lines must be exactly those of one line-by-line read
    from prefsynth.transforms.prompt_files import jsonl_ranges, read_jsonl_lines, read_jsonl_range

    path = tmp_path / "in.jsonl"
    path.write_bytes(data)
    whole = list(read_jsonl_lines(str(path)))
    for block in (1, 2, 3, 5, 100):
        ranges = jsonl_ranges(str(path), block)
        assert [r for rg in ranges for chunk in read_jsonl_range(rg) for r in chunk] == whole, block
        assert all(a[2] == b[1] for a, b in zip(ranges, ranges[1:]))  # contiguous, whole lines
