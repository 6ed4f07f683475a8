"""The dead-letter convention: a failed record is kept, with why, never dropped silently.

A DoFn emits failures on the DEAD tagged output as dead-letter dicts (schema
`schemas.datasets.DEAD_LETTERS`); the stage writes them to data/deadletter/<stage>.
"""

from __future__ import annotations

import json

import apache_beam as beam

DEAD = "dead"
MAX_RAW_CHARS = 20_000  # keep a huge bad record inspectable without bloating the dead letters


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


def emit_dead(stage: str, record_id: str, error_type: str, message: str, raw_input=None, raw_output=None):
    """A TaggedOutput for the DEAD output, counted per error type."""
    _counter(f"dead.{error_type}").inc()
    return beam.pvalue.TaggedOutput(DEAD, dead_letter(stage, record_id, error_type, message, raw_input, raw_output))


def count_dropped(reason: str, n: int = 1) -> None:
    """Record a deliberate drop (a filter decision, not an error) under its reason."""
    _counter(f"dropped.{reason}").inc(n)


def count_in(n: int = 1) -> None:
    _counter("in").inc(n)
