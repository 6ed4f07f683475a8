"""The portable path for real: Beam's own job service and an external worker pool, each in its
own process (the way Flink runs Python workers), running a non-model stage (prompts) and a
model stage (generate); the output must equal the in-process run byte for byte."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prefsynth.pipelines import generate, prompts
from prefsynth.schemas.io import dataset_files

from helpers import free_port, tiny_random_policy, write_params

pytestmark = pytest.mark.slow


def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not listen on {port}")


@pytest.fixture(scope="module")
def portable_services(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("portable")
    job_port, pool_port = free_port(), free_port()
    job = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main",
                            "--port", str(job_port)], stdout=open(log_dir / "job.log", "w"), stderr=subprocess.STDOUT)
    pool = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                             "--service_port", str(pool_port)], stdout=open(log_dir / "pool.log", "w"),
                            stderr=subprocess.STDOUT)
    try:
        _wait_port(job_port, job, "job service")
        _wait_port(pool_port, pool, "worker pool")
        yield {"runner": "PortableRunner", "job_endpoint": f"localhost:{job_port}",
               "environment_type": "EXTERNAL", "environment_config": f"localhost:{pool_port}"}
    finally:
        for p in (job, pool):
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def _bytes(path: Path) -> list[bytes]:
    return [Path(f).read_bytes() for f in dataset_files(str(path))]


def test_prompts_and_generate_on_the_portable_runner_match_in_process(tmp_path, portable_services):
    policy = tiny_random_policy(tmp_path / "policy-0")
    base = {"seed": 8, "prompts": {"n_prompts": 200},
            "generate": {"n": 2, "max_new_tokens": 12, "split": "all", "max_prompts": 24}}
    local = write_params(tmp_path / "local.json", base)
    portable = write_params(tmp_path / "portable.json", {
        **base, "beam": {"preset": "portable", "presets": {"portable": portable_services}}})
    outs = {}
    for name, params in (("local", local), ("portable", portable)):
        d = tmp_path / name
        c = ["--params", params, "--reports", str(d / "reports")]
        prompts.main([*c, "--out", str(d / "prompts"), "--dead", str(d / "pd"), "--metrics", str(d / "pm.json")])
        generate.main([*c, "--prompts", str(d / "prompts"), "--policy", policy, "--out", str(d / "responses"),
                       "--dead", str(d / "gd"), "--metrics", str(d / "gm.json")])
        outs[name] = d
    for ds in ("prompts", "pd", "responses", "gd"):
        assert _bytes(outs["local"] / ds) == _bytes(outs["portable"] / ds), ds
    # the books balance on the portable runner too: its counters come back from the job service
    for m in ("pm.json", "gm.json"):
        acc = json.loads((outs["portable"] / m).read_text())["accounting"]
        assert acc["balanced"] and acc["n_in"] > 0
