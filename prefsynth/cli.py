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
    "candidates": "prefsynth.pipelines.candidates",
    "pairs": "prefsynth.pipelines.pairs",
    "train": "prefsynth.pipelines.train",
    "evaluate": "prefsynth.pipelines.evaluate",
    "card": "prefsynth.pipelines.card",
    "report": "prefsynth.report",
    "serve": "prefsynth.backends.server",
    "real-model": "prefsynth.real_model",
    "profile": "prefsynth.profile",
    "compare": "prefsynth.compare",
}


# log lines a user can do nothing about: (logger name prefix, message prefix, below this level)
QUIET = (
    # Beam's GCP clients import apitools lazily; every stage logs this on the root logger
    ("root", "apitools not found", logging.ERROR),
    # Great Expectations' ephemeral context (one per validated dataset); that logger forces level INFO
    ("great_expectations", "", logging.WARNING),
)


class QuietFilter(logging.Filter):
    """Drops the QUIET records (any logger under the name prefix, message starting with the text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, text, below in QUIET:
            if record.levelno >= below:
                continue
            if (record.name == name or record.name.startswith(name + ".")) and (
                    not text or record.getMessage().startswith(text)):
                return False
        return True


def setup_logging(level: int = logging.INFO) -> None:
    """One handler on stderr (progress lines stay at the bottom of a terminal), the noisy filtered."""
    import warnings

    root = logging.getLogger()
    quiet = QuietFilter()
    root.addFilter(quiet)  # records logged on the root logger itself (Beam's import-time warning)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    plain = logging.StreamHandler(sys.stderr)  # until the stage module (which imports Beam) is loaded
    for handler in [plain]:
        handler.setFormatter(fmt)
        handler.addFilter(quiet)
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(plain)
    root.setLevel(level)
    for noisy in ("apache_beam", "urllib3", "httpx", "httpx2", "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from prefsynth.pipelines.progress import ProgressLogHandler

    handler = ProgressLogHandler(sys.stderr)
    handler.setFormatter(fmt)
    handler.addFilter(quiet)
    root.removeHandler(plain)
    root.addHandler(handler)
    # deprecation notices from the pinned stack's internals, not from anything in params.yaml
    for module in ("apache_beam", "great_expectations", "trl", "transformers", "datasets", "torch", "google"):
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: prefsynth <stage> [--params params.yaml] [stage options]\n\nstages:")
        for name, module in STAGES.items():
            doc = (importlib.import_module(module).__doc__ or "").strip().splitlines()[0]
            print(f"  {name:<11} {doc}")
        return
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        sys.exit(f"prefsynth: unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the embedded default never needs the network
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    setup_logging()
    from prefsynth.pipelines.accounting import AccountingError, StageGuardError
    from prefsynth.pipelines.stage import end_process

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
