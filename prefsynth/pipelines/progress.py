"""Progress lines (done/total, rate, ETA), the heartbeat of a quiet stage, and the progress of a
TRL trainer, one line per stage on this process's terminal or log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time

log = logging.getLogger("prefsynth")


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
