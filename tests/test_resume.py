"""Resume inside a stage: kill -9 the generate stage mid-run; the re-run recomputes only the
batches that had not finished, and the final bytes equal an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prefsynth.pipelines import generate, prompts
from prefsynth.schemas.io import dataset_files

from helpers import tiny_random_policy, write_params

pytestmark = pytest.mark.slow


def test_kill_minus_9_then_resume(tmp_path):
    policy = tiny_random_policy(tmp_path / "policy-0")
    params = write_params(tmp_path / "p.json", {
        "seed": 6, "prompts": {"n_prompts": 300},
        "policy": {"batch_size": 8},  # 4 prompts x 2 samples per batch: many small batches
        "generate": {"n": 2, "max_new_tokens": 48, "split": "all", "max_prompts": 200}})
    c = ["--params", params, "--reports", str(tmp_path / "reports")]
    prompts.main([*c, "--out", str(tmp_path / "prompts"), "--dead", str(tmp_path / "pd"), "--metrics", str(tmp_path / "pm.json")])

    def args(name):
        d = tmp_path / name
        return [*c, "--prompts", str(tmp_path / "prompts"), "--policy", policy, "--out", str(d / "responses"),
                "--dead", str(d / "dead"), "--metrics", str(d / "m.json")]

    generate.main(args("reference"))
    total = json.loads((tmp_path / "reference" / "m.json").read_text())["batches"]["computed"]
    assert total == 50

    resume_dir = tmp_path / "crash" / "responses.resume"
    proc = subprocess.Popen([sys.executable, "-m", "prefsynth", "generate", *args("crash")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if resume_dir.exists() and len(list(resume_dir.glob("batch-*.json"))) >= 5:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the stage finished before it could be killed"
    assert not (tmp_path / "crash" / "responses").exists()  # nothing half-written where readers look
    done_before = len(list(resume_dir.glob("batch-*.json")))
    assert 5 <= done_before < total

    generate.main(args("crash"))
    m = json.loads((tmp_path / "crash" / "m.json").read_text())
    assert m["batches"]["resumed"] == done_before
    assert m["batches"]["computed"] == total - done_before
    assert m["accounting"]["balanced"] and m["accounting"]["n_in"] == 200
    for ds in ("responses", "dead"):
        assert [Path(f).read_bytes() for f in dataset_files(str(tmp_path / "reference" / ds))] == \
               [Path(f).read_bytes() for f in dataset_files(str(tmp_path / "crash" / ds))], ds
    assert not resume_dir.exists()  # cleared once the output is committed
