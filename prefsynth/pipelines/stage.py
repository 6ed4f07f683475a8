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
        rate = f", {self.n_in / self.wall_s:.4g} records/s" if self.wall_s > 0 and self.n_in else ""
        return (f"[{self.stage}] in={self.n_in} out={self.n_out} dropped={self.n_dropped} ({drops}) "
                f"dead={self.n_dead} ({deads}) in {self.wall_s:.1f}s{rate}")


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


def _duration(seconds: float) -> str:
    """12s, 3m05s, 1h02m."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _count(n: float) -> str:
    """1234 -> 1234, 12345 -> 12.3k, 1234567 -> 1.23M."""
    if abs(n) < 10_000:
        return f"{n:.0f}" if float(n).is_integer() else f"{n:.3g}"
    if abs(n) < 1_000_000:
        return f"{n / 1e3:.1f}k"
    return f"{n / 1e6:.2f}M"


_PROGRESS_LOCK = threading.RLock()
_ACTIVE: list["Progress"] = []  # progress lines drawn in place on this process's terminal
_LIVE: list["Progress"] = []  # every progress line not closed yet (the heartbeat defers to them)


def progress_every_s() -> float:
    """Seconds between progress log lines when stderr is not a terminal (PREFSYNTH_PROGRESS_S, default 30)."""
    try:
        return float(os.environ.get("PREFSYNTH_PROGRESS_S", "30"))
    except ValueError:
        return 30.0


class Progress:
    """One progress line per stage: done/total, rate, ETA and any extra tallies.

        progress = Progress("generate", total=len(prompts), unit="prompts")
        progress.add(len(batch), samples=n_samples, tokens=n_tokens)   # after each batch
        progress.close()                                               # a final line

    On a terminal the line is rewritten in place (`\r`, at most `redraw_s` apart) and log records
    printed meanwhile go above it; otherwise (DVC logs, CI, a file) it is a log line every `every_s`
    seconds (PREFSYNTH_PROGRESS_S, default 30), never one per batch. Thread-safe; a worker process of
    a multi-process run draws its own line. `total` may be None (counts and rate, no ETA) or set later.
    """

    def __init__(self, stage: str, total: int | None = None, unit: str = "records", every_s: float | None = None,
                 stream=None, tty: bool | None = None, redraw_s: float = 0.2):
        self.stage, self.total, self.unit = stage, total, unit
        self.every_s = progress_every_s() if every_s is None else every_s
        self.stream = stream
        out = self.stream or sys.stderr
        self.tty = bool(getattr(out, "isatty", lambda: False)()) if tty is None else tty
        self.redraw_s = redraw_s
        self.done = 0
        self.extra: dict[str, float] = {}
        self.start = time.monotonic()
        self._last_draw = self._last_log = self.start
        self.last_shown = 0.0  # monotonic time of the last line shown (the heartbeat stays quiet after one)
        self.closed = False
        with _PROGRESS_LOCK:
            _LIVE.append(self)

    # -- counting
    def add(self, n: int = 1, **extra: float) -> None:
        with _PROGRESS_LOCK:
            self.done += n
            for k, v in extra.items():
                self.extra[k] = self.extra.get(k, 0) + v
            self._maybe_show()

    def update(self, done: int, total: int | None = None, **extra: float) -> None:
        """Absolute counts (a trainer's global step, a loss): `extra` values replace the old ones."""
        with _PROGRESS_LOCK:
            self.done = done
            if total is not None:
                self.total = total
            self.extra.update(extra)
            self._maybe_show()

    # -- the line
    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def rate(self) -> float:
        return self.done / max(self.elapsed, 1e-9)

    def eta_s(self) -> float | None:
        if not self.total or not self.done or self.done >= self.total:
            return None
        return (self.total - self.done) / max(self.rate(), 1e-12)

    def line(self, final: bool = False) -> str:
        done = f"{_count(self.done)}/{_count(self.total)} {self.unit}" if self.total else f"{_count(self.done)} {self.unit}"
        parts = [f"[{self.stage}] {done}"]
        if self.total:
            parts[0] += f" ({100 * self.done / self.total:.0f}%)"
        rate = self.rate()
        parts.append(f"{rate:.3g} {self.unit}/s" if rate < 100 else f"{_count(rate)} {self.unit}/s")
        for k, v in self.extra.items():
            if isinstance(v, float) and not float(v).is_integer():
                parts.append(f"{k} {v:.4g}")
            else:
                parts.append(f"{_count(v)} {k}")
        if final:
            parts.append(f"done in {_duration(self.elapsed)}")
        else:
            eta = self.eta_s()
            parts.append(f"{_duration(self.elapsed)} elapsed" + (f", ETA {_duration(eta)}" if eta is not None else ""))
        return ", ".join(parts)

    def _write(self, text: str) -> None:
        out = self.stream or sys.stderr
        with contextlib.suppress(Exception):
            out.write(text)
            out.flush()

    def draw(self) -> None:
        """Rewrite the line in place (terminal only)."""
        self._write("\r\x1b[K" + self.line())

    def _maybe_show(self) -> None:
        if self.closed:
            return
        now = time.monotonic()
        if self.tty:
            if self not in _ACTIVE:
                _ACTIVE.append(self)
            if now - self._last_draw >= self.redraw_s or (self.total and self.done >= self.total):
                self._last_draw = self.last_shown = now
                self.draw()
        elif self.every_s > 0 and now - self._last_log >= self.every_s:
            self._last_log = self.last_shown = now
            log.info(self.line())

    def close(self, summary: str | None = None, log_final: bool = True) -> str:
        """End the line: the final counts (or `summary`) as one log line; returns it."""
        with _PROGRESS_LOCK:
            if self.closed:
                return ""
            self.closed = True
            with contextlib.suppress(ValueError):
                _LIVE.remove(self)
            final = summary or self.line(final=True)
            if self.tty and self in _ACTIVE:
                _ACTIVE.remove(self)
                self._write("\r\x1b[K")
            if log_final:
                log.info(final)
            return final

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def active_progress() -> list[Progress]:
    """Progress lines of this process not closed yet."""
    return list(_LIVE)


def close_progress(log_final: bool = True) -> None:
    """End every progress line of this process (the stage runner calls it when the pipeline is done)."""
    for p in active_progress():
        p.close(log_final=log_final)


class ProgressLogHandler(logging.StreamHandler):
    """A stream handler that keeps an in-place progress line at the bottom of a terminal: a log
    record clears the line, prints, and the line is drawn again below it."""

    def emit(self, record: logging.LogRecord) -> None:
        with _PROGRESS_LOCK:
            active = [p for p in _ACTIVE if p.stream in (None, self.stream)]
            if active:
                with contextlib.suppress(Exception):
                    self.stream.write("\r\x1b[K")
            super().emit(record)
            if active:
                active[-1].draw()


class Heartbeat:
    """A `still running` line every `every_s` seconds while a stage runs, whatever the stage.

    Stages with a model show their own progress (records, tokens, rate, ETA: `Progress`); this line
    says from the driver that the stage is alive and for how long, so a quiet stage is never
    mistaken for a hang. It stays quiet while a progress line of this process was shown recently.
    """

    def __init__(self, stage: str, every_s: float):
        self.stage, self.every_s = stage, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{stage}-heartbeat", daemon=True)
        self.start = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            now = time.monotonic()
            if any(now - p.last_shown < self.every_s for p in active_progress()):
                continue
            log.info("[%s] still running, %s elapsed", self.stage, _duration(now - self.start))

    def __enter__(self):
        if self.every_s > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()


def attach_trainer_progress(trainer, stage: str, unit: str = "steps") -> None:
    """Replace a transformers/TRL Trainer's raw `{'loss': ...}` dict lines by one progress line
    (step/max steps, steps/s, loss, ETA) and a summary line when training ends.

        attach_trainer_progress(trainer, "train")   # before trainer.train()
    """
    from transformers import PrinterCallback, ProgressCallback, TrainerCallback

    class _TrainerProgress(TrainerCallback):
        def __init__(self):
            self.progress: Progress | None = None
            self.first_loss: float | None = None
            self.last_loss: float | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.progress = Progress(stage, total=state.max_steps or None, unit=unit)

        def on_step_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.update(state.global_step, total=state.max_steps or None)

        def on_log(self, args, state, control, logs=None, **kwargs):
            loss = (logs or {}).get("loss")
            if isinstance(loss, (int, float)) and self.progress is not None:
                self.first_loss = float(loss) if self.first_loss is None else self.first_loss
                self.last_loss = float(loss)
                self.progress.update(state.global_step, loss=float(loss))

        def on_train_end(self, args, state, control, **kwargs):
            if self.progress is None:
                return
            p = self.progress
            loss = (f", loss {self.first_loss:.4g} -> {self.last_loss:.4g}" if self.first_loss is not None
                    and self.last_loss is not None else "")
            p.close(f"[{stage}] trained {state.global_step} {unit} in {_duration(p.elapsed)} "
                    f"({state.global_step / max(p.elapsed, 1e-9):.3g} {unit}/s){loss}")

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(_TrainerProgress())


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
