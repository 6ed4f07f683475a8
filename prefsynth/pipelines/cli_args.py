"""The command line every stage shares.

    prefsynth <stage> [--params P] [the stage's inputs ...] [--out O] [--dead D] [--metrics M] [--reports R]

`stage_parser` makes the parser (`prog`, description, `--params`); the stage adds its inputs;
`add_outputs` adds the outputs it writes, in that order, with its defaults. argparse only: the
stages that run no Beam pipeline import no Beam for it.
"""

from __future__ import annotations

import argparse

REPORTS_HELP = "where Data Docs of the validation go"


def stage_parser(stage: str, description: str | None) -> argparse.ArgumentParser:
    """`prefsynth <stage>`'s parser with `--params` (default params.yaml)."""
    ap = argparse.ArgumentParser(prog=f"prefsynth {stage}", description=description)
    ap.add_argument("--params", default="params.yaml")
    return ap


def add_outputs(ap: argparse.ArgumentParser, *, out: str | None = None, dead: str | None = None,
                metrics: str | None = None, reports: bool = False) -> argparse.ArgumentParser:
    """`--out`, `--dead`, `--metrics` (each where the stage gives it a default), then `--reports`
    (default reports) where the stage validates what it writes."""
    if out is not None:
        ap.add_argument("--out", default=out)
    if dead is not None:
        ap.add_argument("--dead", default=dead)
    if metrics is not None:
        ap.add_argument("--metrics", default=metrics)
    if reports:
        ap.add_argument("--reports", default="reports", help=REPORTS_HELP)
    return ap
