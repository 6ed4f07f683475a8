"""Running one stage: a Beam pipeline into staging folders, accounting, then an atomic commit.

Every stage reports in = out + dropped + dead. Outputs are written to `<out>.partial` and only
moved into place when the pipeline finished and the books balance, so an interrupted run
never leaves a half-written dataset where DVC or the next stage would read it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter

from prefsynth.config import BeamConfig
from prefsynth.pipelines.options import pipeline_options
from prefsynth.schemas.io import METRICS_NAMESPACE, count_rows, read_table

log = logging.getLogger("prefsynth")


class AccountingError(RuntimeError):
    pass


class StageGuardError(RuntimeError):
    """A stage whose books balance but whose result is not worth committing: an empty output, or
    more dead letters than `max_dead_fraction` allows. Its dead letters are committed all the same."""


@dataclass
class Account:
    """What a stage did with its input records."""

    stage: str
    n_in: int
    n_out: int
    dropped: dict[str, int] = field(default_factory=dict)
    dead: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    counters: dict[str, int] = field(default_factory=dict)  # every Beam counter of the stage

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())

    @property
    def n_dead(self) -> int:
        return sum(self.dead.values())

    @property
    def balanced(self) -> bool:
        return self.n_in == self.n_out + self.n_dropped + self.n_dead

    def check(self) -> None:
        if not self.balanced:
            raise AccountingError(
                f"stage {self.stage}: in={self.n_in} but out={self.n_out} + dropped={self.n_dropped} "
                f"+ dead={self.n_dead} = {self.n_out + self.n_dropped + self.n_dead}; records were lost"
            )

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(n_dropped=self.n_dropped, n_dead=self.n_dead, balanced=self.balanced)
        d["wall_s"] = round(self.wall_s, 2)
        return d

    def summary_line(self) -> str:
        drops = ", ".join(f"{k}={v}" for k, v in sorted(self.dropped.items())) or "none"
        deads = ", ".join(f"{k}={v}" for k, v in sorted(self.dead.items())) or "none"
        return (f"[{self.stage}] in={self.n_in} out={self.n_out} dropped={self.n_dropped} ({drops}) "
                f"dead={self.n_dead} ({deads}) in {self.wall_s:.1f}s")


def counters(result, namespace: str = METRICS_NAMESPACE) -> dict[str, int]:
    """Beam counter values of a finished pipeline (committed where the runner has them)."""
    found = result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]
    out: dict[str, int] = {}
    for c in found:
        value = c.committed if c.committed is not None else c.attempted
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + int(value or 0)
    return out


def _is_local(path: str) -> bool:
    return "://" not in path


def clear_dir(path: str) -> None:
    if _is_local(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        matches = FileSystems.match([path.rstrip("/") + "/*"])[0].metadata_list
        if matches:
            FileSystems.delete([m.path for m in matches])


def commit_dir(staging: str, final: str) -> None:
    """Replace `final` by `staging` (a rename locally; file by file on object stores)."""
    clear_dir(final)
    if _is_local(staging):
        Path(final).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, final)
        return
    files = [m.path for m in FileSystems.match([staging.rstrip("/") + "/*"])[0].metadata_list]
    FileSystems.rename(files, [FileSystems.join(final, f.rsplit("/", 1)[1]) for f in files])


def staging_path(final: str) -> str:
    return final.rstrip("/") + ".partial"


def _one_line(err: BaseException) -> str:
    """The last non-empty line of an error: Beam wraps a DoFn's error in pages of context."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return f"{type(err).__name__}: {lines[-1] if lines else ''}"


class Heartbeat:
    """A progress line every `every_s` seconds while a stage runs, whatever the stage.

    Stages with a model log their own rate per worker (records, tokens); this line says from the
    driver that the stage is alive and for how long, so a quiet stage is never mistaken for a hang.
    """

    def __init__(self, stage: str, every_s: float):
        self.stage, self.every_s = stage, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{stage}-heartbeat", daemon=True)
        self.start = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            log.info("[%s] still running, %.0fs elapsed", self.stage, time.monotonic() - self.start)

    def __enter__(self):
        if self.every_s > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()


EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


def _kill_worker_processes() -> None:
    """Worker processes of a multi-process local run would outlive an os._exit of the driver."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with the pinned stack
        return
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            child.kill()


@contextlib.contextmanager
def interruptible(stage: str, outputs: dict[str, "Output"], staging: dict[str, str]):
    """Ctrl-C (SIGINT) or SIGTERM while the pipeline runs: one clear line, staging removed, exit.

    A KeyboardInterrupt cannot be relied on here: Beam runs bundles under `except BaseException`
    wrappers and worker threads, and a Ctrl-C was seen to be swallowed while the stage kept
    generating. So the handler itself cleans up and ends the process with 130 (143 for SIGTERM).
    The final outputs are never touched by an interrupted run (they are only replaced by the
    commit after the books balance); finished model batches stay in `<out>.resume` so the
    re-run resumes. Only installed on the main thread (signal handlers cannot be set elsewhere).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        name = signal.Signals(signum).name
        notes = []
        for out in outputs.values():
            resume = out.path.rstrip("/") + ".resume"
            if _is_local(resume) and Path(resume).is_dir():
                notes.append(f"{len(list(Path(resume).glob('batch-*.json')))} finished batches kept in {resume}")
        for path in staging.values():
            clear_dir(path)
        log.error("[%s] interrupted by %s: stopped, nothing committed (%s unchanged)%s; re-run the same "
                  "command to %s", stage, name, ", ".join(o.path for o in outputs.values()),
                  "; " + "; ".join(notes) if notes else "", "resume" if notes else "start again")
        for h in logging.getLogger().handlers + log.handlers:
            with contextlib.suppress(Exception):
                h.flush()
        _kill_worker_processes()
        os._exit(EXIT_CODES.get(signum, 128 + signum))

    previous = {s: signal.signal(s, handler) for s in EXIT_CODES}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _deferred_signals():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: got.append(signum)) for s in EXIT_CODES}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if got:
        raise KeyboardInterrupt(f"{signal.Signals(got[0]).name} after the outputs were committed")


def dead_limit(explicit: float | None = None) -> float:
    """`max_dead_fraction`: the one given, else that of the params this process loaded last
    (`load_params`), else the default of params.yaml."""
    from prefsynth.config import Params, load_params

    if explicit is not None:
        return float(explicit)
    loaded = getattr(load_params, "last_loaded", None)
    if loaded is not None:
        return float(loaded.max_dead_fraction)
    return float(Params.__dataclass_fields__["max_dead_fraction"].default)


def guard_problem(account: Account, max_dead_fraction: float) -> str | None:
    """Why a balanced stage must still fail, or None. max_dead_fraction >= 1 turns the guard off."""
    if max_dead_fraction >= 1:
        return None
    if account.n_in == 0:
        return "its input is empty (0 records)"
    if account.n_dead / account.n_in > max_dead_fraction:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(account.dead.items(), key=lambda kv: -kv[1]))
        return (f"{account.n_dead} of {account.n_in} input records ({account.n_dead / account.n_in:.0%}) are dead "
                f"letters ({reasons}), more than max_dead_fraction={max_dead_fraction:g}")
    if account.n_out == 0:
        return (f"its output is empty ({account.n_in} records in: {account.n_dropped} dropped, "
                f"{account.n_dead} dead)")
    return None


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
        if _is_local(path):
            Path(path).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    log.info("[%s] running on %s", stage, beam_cfg.runner)
    pipeline = beam.Pipeline(options=pipeline_options(beam_cfg))
    build(pipeline, staging)
    with interruptible(stage, outputs, staging), Heartbeat(stage, beam_cfg.heartbeat_s):
        try:
            result = pipeline.run()
            result.wait_until_finish()
        except Exception as err:
            # Beam names the transform ("while running 'Generate/RunInference'"); our DoFns put the
            # shard, batch or record in the error itself. One line here, the traceback follows.
            log.error("[%s] failed: %s", stage, _one_line(err))
            raise
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
        with _deferred_signals():
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
    with _deferred_signals():  # a Ctrl-C now waits for the commit: never a half-replaced output
        for name, out in outputs.items():
            commit_dir(staging[name], out.path)
    log.info(account.summary_line())
    return account
