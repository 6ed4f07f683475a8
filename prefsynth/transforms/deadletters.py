"""The dead-letter convention: a failed record is kept, with why, never dropped silently.

A DoFn emits failures on the DEAD tagged output as dead-letter dicts (schema
`schemas.datasets.DEAD_LETTERS`); the stage writes them to data/deadletter/<stage>.
"""

from __future__ import annotations

import json
import logging
import threading

import apache_beam as beam

DEAD = "dead"
MAX_RAW_CHARS = 20_000  # keep a huge bad record inspectable without bloating the dead letters
LOG_FIRST = 20  # dead letters logged in full per (stage, error type) and process ...
LOG_EVERY = 1000  # ... then one line per this many, so a flood of bad records does not drown the log
MAX_LOG_MESSAGE = 300

log = logging.getLogger("prefsynth")


def _clip(text):
    if text is None:
        return None
    if not isinstance(text, str):
        try:
            text = json.dumps(text, ensure_ascii=False, sort_keys=True, default=repr)
        except (TypeError, ValueError):
            text = repr(text)
    if len(text) > MAX_RAW_CHARS:
        return text[:MAX_RAW_CHARS] + f"... [{len(text) - MAX_RAW_CHARS} more chars]"
    return text


def dead_letter(stage: str, record_id: str, error_type: str, message: str, raw_input=None, raw_output=None) -> dict:
    return {
        "stage": stage,
        "record_id": record_id,
        "error_type": error_type,
        "message": message,
        "raw_input": _clip(raw_input),
        "raw_output": _clip(raw_output),
    }


_COUNTERS: dict[str, object] = {}


def _counter(name: str):
    """Counters are looked up once per process: creating one per record costs more than the work."""
    c = _COUNTERS.get(name)
    if c is None:
        c = _COUNTERS[name] = beam.metrics.Metrics.counter("prefsynth", name)
    return c


_LOGGED: dict[tuple[str, str], int] = {}
_LOG_LOCK = threading.Lock()


def log_dead(stage: str, record_id: str, error_type: str, message: str) -> None:
    """`[stage] dead letter <record> (<error type>): <message>`, rate-limited per stage and type.

    The first LOG_FIRST of each kind are logged, then every LOG_EVERY-th with the running count;
    the dead-letter dataset keeps every one with its raw input. Warning level: the line must get
    through when Beam's own loggers are quietened, and from worker processes.
    """
    with _LOG_LOCK:
        n = _LOGGED[(stage, error_type)] = _LOGGED.get((stage, error_type), 0) + 1
    if n > LOG_FIRST and n % LOG_EVERY:
        return
    message = " ".join(str(message).split())
    if len(message) > MAX_LOG_MESSAGE:
        message = message[:MAX_LOG_MESSAGE] + "..."
    more = ""
    if n == LOG_FIRST:
        more = f" (further {error_type} dead letters of this worker are logged every {LOG_EVERY})"
    elif n > LOG_FIRST:
        more = f" ({n} {error_type} dead letters so far on this worker)"
    log.warning("[%s] dead letter %s (%s): %s%s", stage, record_id, error_type, message, more)


def emit_dead(stage: str, record_id: str, error_type: str, message: str, raw_input=None, raw_output=None):
    """A TaggedOutput for the DEAD output, counted per error type and logged (rate-limited)."""
    _counter(f"dead.{error_type}").inc()
    log_dead(stage, record_id, error_type, message)
    return beam.pvalue.TaggedOutput(DEAD, dead_letter(stage, record_id, error_type, message, raw_input, raw_output))


def count_dropped(reason: str, n: int = 1) -> None:
    """Record a deliberate drop (a filter decision, not an error) under its reason."""
    _counter(f"dropped.{reason}").inc(n)


def count_in(n: int = 1) -> None:
    _counter("in").inc(n)
