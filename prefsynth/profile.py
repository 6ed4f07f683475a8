"""`prefsynth profile PROFILE`: apply a params profile (only the keys that differ) to params.yaml.

DVC needs every params group a stage declares to exist in params.yaml, so a profile such as
examples/gsm8k-smollm2/params.yaml is merged into the full file rather than replacing it:

    prefsynth profile examples/gsm8k-smollm2/params.yaml            # rewrites params.yaml
    prefsynth profile examples/gsm8k-smollm2/params.yaml --out p.yaml

Nested groups merge key by key; lists and scalars replace. The result is checked by the same
loader the stages use before anything is written.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import yaml


def merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in (override or {}).items():
        out[key] = merge(out.get(key) or {}, value) if isinstance(value, dict) and key != "iterations" else value
    return out


def apply_profile(profile: str | Path, base: str | Path = "params.yaml") -> dict:
    merged = merge(yaml.safe_load(Path(base).read_text()) or {}, yaml.safe_load(Path(profile).read_text()) or {})
    from prefsynth.config import load_params

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(merged, f, sort_keys=False)
    load_params(f.name)  # a typo or a wrong type in the profile fails here, naming the key
    Path(f.name).unlink()
    return merged


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="prefsynth profile", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("profile", help="a params file with only the keys that differ")
    ap.add_argument("--base", default="params.yaml", help="the full params file to start from")
    ap.add_argument("--out", default=None, help="where to write (default: --base, in place)")
    args = ap.parse_args(argv)
    merged = apply_profile(args.profile, args.base)
    out = Path(args.out or args.base)
    out.write_text("# prefsynth params: " + args.base + " + profile " + args.profile + "\n"
                   + yaml.safe_dump(merged, sort_keys=False))
    print(f"wrote {out}")
