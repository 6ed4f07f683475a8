"""The GPU benchmark's CPU path (benchmarks/gpu.sh --device cpu --quick): it runs end to end with a
tiny config, writes its JSON, and imports no Beam/TRL/vLLM (the GPU machine has none of them)."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_bench_cpu_quick_writes_tokens_per_s(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh"), "--device", "cpu", "--quick"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_bench.json").read_text())
    assert report["done"] and not report["errors"], report["errors"]
    assert report["imported_beam"] is False and report["imported_trl_or_vllm"] == []
    gen = {k: v for k, v in report["sections"].items() if k.startswith("generate/tiny/")}
    assert set(gen) == {"generate/tiny/b1", "generate/tiny/b8"}
    for v in gen.values():
        assert v["backend_tokens_per_s"] > 0 and v["hf_tokens_per_s"] > 0 and v["ratio_backend_vs_hf"] > 0
        assert 0 < v["backend_tokens"] <= v["batch"] * v["max_new_tokens"] and 0 < v["hf_tokens"] <= v["batch"] * v["max_new_tokens"]
    train = report["sections"]["train/tiny"]
    assert train["tokens_per_s"] > 0 and len(train["losses"]) == 2


def test_a_section_over_its_time_limit_is_recorded_and_the_run_goes_on(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import gpu_bench

    out = tmp_path / "r.json"
    rc = gpu_bench.main(["--device", "cpu", "--quick", "--out", str(out), "--section-s", "0.001"])
    report = json.loads(out.read_text())
    assert rc == 1 and report["done"] and report["errors"]
    assert all("SectionTimeout" in e for e in report["errors"].values())
