"""A stage that has committed its outputs exits 0, every time: no native thread (Arrow's Parquet
thread pool) may turn a finished stage into `terminate called without an active exception` (134)."""

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import write_params

RUNS = 8


def test_end_process_flushes_everything_then_exits_with_the_code(tmp_path):
    script = ("import logging, sys\n"
              "from prefsynth.pipelines.stage import end_process\n"
              "logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True)\n"
              "logging.getLogger('prefsynth').info('summary line')\n"
              "print('metrics written', end='')\n"
              "end_process(3)\n"
              "print('never')\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3 and proc.stdout == "metrics written" and "summary line" in proc.stderr


@pytest.mark.slow
def test_a_short_stage_exits_0_every_time(tmp_path):
    exe = Path(sys.executable).parent / "prefsynth"  # the console script, as dvc.yaml calls it
    assert exe.exists(), exe
    params = write_params(tmp_path / "p.json", {"seed": 2, "prompts": {"n_prompts": 12}})
    codes = []
    for i in range(RUNS):
        out = tmp_path / f"run{i}"
        proc = subprocess.run([str(exe), "prompts", "--params", params, "--out", str(out / "prompts"),
                               "--dead", str(out / "dead"), "--metrics", str(out / "m.json"),
                               "--reports", str(out / "reports")], capture_output=True, text=True, timeout=300)
        codes.append(proc.returncode)
        assert proc.returncode == 0, (i, proc.returncode, proc.stderr[-2000:])
        assert "[prompts] in=12 out=" in proc.stderr and (out / "m.json").exists()
        assert "terminate called" not in proc.stderr
    assert codes == [0] * RUNS
