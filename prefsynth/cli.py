"""`prefsynth <stage> [options]`: run one stage (what each dvc.yaml stage calls)."""

from __future__ import annotations

import importlib
import logging
import os
import sys

STAGES = {
    "prompts": "prefsynth.pipelines.prompts",
    "bootstrap": "prefsynth.pipelines.bootstrap",
    "generate": "prefsynth.pipelines.generate",
    "mcts": "prefsynth.pipelines.mcts",
    "label": "prefsynth.pipelines.label",
    "critic": "prefsynth.pipelines.critic",
    "critiques": "prefsynth.pipelines.critiques",
    "pairs": "prefsynth.pipelines.pairs",
    "prune": "prefsynth.pipelines.prune",
    "train": "prefsynth.pipelines.train",
    "evaluate": "prefsynth.pipelines.evaluate",
    "card": "prefsynth.pipelines.card",
    "serve": "prefsynth.backends.server",
    "real-model": "prefsynth.real_model",
    "profile": "prefsynth.profile",
}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: prefsynth <stage> [--params params.yaml] [stage options]\n\nstages:")
        for name, module in STAGES.items():
            doc = (importlib.import_module(module).__doc__ or "").strip().splitlines()[0]
            print(f"  {name:<10} {doc}")
        return
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        sys.exit(f"prefsynth: unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the embedded default never needs the network
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("apache_beam", "urllib3", "httpx", "httpx2", "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from prefsynth.pipelines.stage import AccountingError, StageGuardError, end_process

    try:
        importlib.import_module(STAGES[stage]).main(rest)
    except (StageGuardError, AccountingError, FileNotFoundError) as err:
        # a stage that refuses to commit says why in one line (the log above has the details)
        print(f"prefsynth {stage}: {err}", file=sys.stderr)
        end_process(1)
    if stage != "serve":
        # outputs are committed: end now, before native threads left by Arrow/Beam can abort the
        # interpreter's shutdown (`terminate called without an active exception`, exit 134)
        end_process(0)


if __name__ == "__main__":
    main()
