"""Running one stage: a Beam pipeline into staging folders, accounting, then an atomic commit.

Every stage reports in = out + dropped + dead. Outputs are written to `<out>.partial` and only
moved into place when the pipeline finished and the books balance, so an interrupted run
never leaves a half-written dataset where DVC or the next stage would read it. The pieces:

    accounting.py  Account (in = out + dropped + dead), Beam counters, the guards
    staging.py     staging folders, their atomic commit, Ctrl-C / SIGTERM handling
    progress.py    progress lines, the heartbeat, TRL trainer progress
    stage.py       Output, run_stage (the three above in order), write_metrics, end_process
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import apache_beam as beam

from prefsynth.config import BeamConfig
from prefsynth.pipelines.accounting import Account, AccountingError, StageGuardError, counters, dead_limit, guard_problem
from prefsynth.pipelines.options import pipeline_options
from prefsynth.pipelines.progress import Heartbeat, close_progress
from prefsynth.pipelines.staging import clear_dir, commit_dir, deferred_signals, interruptible, is_local, staging_path
from prefsynth.schemas.io import count_rows, read_table

log = logging.getLogger("prefsynth")


def _one_line(err: BaseException) -> str:
    """The last non-empty line of an error: Beam wraps a DoFn's error in pages of context."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return f"{type(err).__name__}: {lines[-1] if lines else ''}"


def end_process(code: int = 0) -> None:
    """End a CLI process whose stage has committed its outputs: flush, then `os._exit(code)`.

    A finished stage was seen to abort at interpreter exit with `terminate called without an active
    exception` (exit 134): a native thread pool (Arrow's, used by every Parquet read and write; see
    apache/arrow#34314) is torn down by C++ static destructors while one of its threads is still
    joinable. Nothing is left to do once the outputs and metrics are written, so the process ends
    here without running those destructors. Call it only from the command-line entry point, never
    from library code or tests (it ends the interpreter).
    """
    for h in logging.getLogger().handlers + log.handlers:
        with contextlib.suppress(Exception):
            h.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def write_metrics(path: str | Path, metrics: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")


@dataclass
class Output:
    path: str
    dataset: str  # schema name, which is also the expectation suite that checks it


def _release_engines() -> None:
    """Free the engines this process's handlers shared (factory.shared_backend) when a stage's
    pipeline ends, so the validation and the next stage of the same process start with the memory."""
    factory = sys.modules.get("prefsynth.backends.factory")  # never import a backend just to free nothing
    if factory is not None:
        factory.release_backends()


def run_stage(
    stage: str,
    beam_cfg: BeamConfig,
    outputs: dict[str, Output],
    out_name: str,
    dead_name: str,
    build: Callable[[beam.Pipeline, dict[str, str]], None],
    count_out: Callable[[dict[str, str]], int] | None = None,
    refs: dict[str, list] | None = None,
    reports_dir: str | None = "reports",
    max_dead_fraction: float | None = None,
) -> Account:
    """Build and run a stage's pipeline into staging folders, account, validate, and commit.

    `outputs` maps output names to their final path and dataset; `build(pipeline, staging_paths)`
    adds the transforms; `out_name` is the output whose rows are the stage's `out`, `dead_name`
    the dead-letter output; `count_out(staging_paths)` counts the output in the unit of the input
    (e.g. distinct prompts for a stage that writes several rows per prompt); `refs` are the ids of
    other datasets for foreign-key expectations. Raises AccountingError or ValidationFailed
    (and commits nothing) when the books do not balance or an expectation fails. Raises
    StageGuardError, after committing only the dead letters, when the output is empty or the dead
    share exceeds `max_dead_fraction` (None: the loaded params' `max_dead_fraction`, see dead_limit).
    """
    from prefsynth.validation import validate_table

    staging = {name: staging_path(out.path) for name, out in outputs.items()}
    for path in staging.values():
        clear_dir(path)
        if is_local(path):
            Path(path).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    log.info("[%s] running on %s", stage, beam_cfg.runner)
    pipeline = beam.Pipeline(options=pipeline_options(beam_cfg))
    build(pipeline, staging)
    with interruptible(stage, outputs, staging), Heartbeat(stage, beam_cfg.heartbeat_s):
        try:
            result = pipeline.run()
            result.wait_until_finish()
            close_progress()  # each progress line of the stage ends with its final counts
        except Exception as err:
            close_progress(log_final=False)
            # Beam names the transform ("while running 'Generate/RunInference'"); our DoFns put the
            # shard, batch or record in the error itself. One line here, the traceback follows.
            log.error("[%s] failed: %s", stage, _one_line(err))
            raise
        finally:
            _release_engines()
    c = counters(result)
    account = Account(
        stage=stage,
        n_in=c.get("in", 0),
        n_out=count_out(staging) if count_out else count_rows(staging[out_name]),
        dropped={k.split(".", 1)[1]: v for k, v in c.items() if k.startswith("dropped.") and v},
        dead={k.split(".", 1)[1]: v for k, v in c.items() if k.startswith("dead.") and v},
        wall_s=time.perf_counter() - start,
        counters=dict(sorted(c.items())),
    )
    n_dead_rows = count_rows(staging[dead_name])
    if n_dead_rows != account.n_dead:
        raise AccountingError(f"stage {stage}: {n_dead_rows} dead-letter rows written but {account.n_dead} counted")
    account.check()
    problem = guard_problem(account, dead_limit(max_dead_fraction))
    if problem:
        log.info(account.summary_line())
        dead_out = outputs[dead_name]
        validate_table(read_table(staging[dead_name]), dead_out.dataset, stage, refs, reports_dir)
        with deferred_signals():
            commit_dir(staging[dead_name], dead_out.path)
        for name, path in staging.items():
            if name != dead_name:
                clear_dir(path)
        kept = ", ".join(o.path for n, o in outputs.items() if n != dead_name)
        line = (f"[{stage}] failed: {problem}; {account.n_dead} dead letters written to {dead_out.path}, "
                f"nothing else committed ({kept} unchanged)")
        log.error(line)
        raise StageGuardError(line)
    for name, out in outputs.items():
        validate_table(read_table(staging[name]), out.dataset, stage, refs, reports_dir)
    with deferred_signals():  # a Ctrl-C now waits for the commit: never a half-replaced output
        for name, out in outputs.items():
            commit_dir(staging[name], out.path)
    log.info(account.summary_line())
    return account
