"""A run a person can follow: one progress line per stage (counts, rate, ETA), rewritten in place on a
terminal and a line every N seconds otherwise; the trainer's dict lines replaced; no unactionable warnings."""

from __future__ import annotations

import io
import logging
import time
from types import SimpleNamespace

from prefsynth.cli import QuietFilter
from prefsynth.pipelines.progress import Heartbeat, Progress, ProgressLogHandler, attach_trainer_progress


def test_progress_line_has_counts_rate_and_eta():
    p = Progress("generate", total=200, unit="prompts", every_s=0, tty=False)
    p.start -= 10  # 10 s in
    p.done, p.extra = 50, {"tokens": 123_456}
    line = p.line()
    assert line.startswith("[generate] 50/200 prompts (25%), 5 prompts/s, 123.5k tokens, 10s elapsed, ETA 30s"), line
    p.close(log_final=False)
    assert "done in" in p.line(final=True)


def test_off_a_terminal_one_log_line_every_n_seconds_not_one_per_batch(caplog):
    with caplog.at_level(logging.INFO, logger="prefsynth"):
        p = Progress("label", total=1000, every_s=0.2, tty=False)
        for _ in range(50):
            p.add(10)
            time.sleep(0.01)
        final = p.close()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[label]")]
    assert 1 <= len(lines) - 1 <= 4, lines  # ~0.5 s of batches at one line per 0.2 s, then the final line
    assert lines[-1] == final and "500/1000 records" in final and "done in" in final


def test_on_a_terminal_the_line_is_rewritten_in_place_and_logs_go_above_it():
    out = io.StringIO()
    logger = logging.getLogger("prefsynth.test_progress")
    handler = ProgressLogHandler(out)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        p = Progress("mcts", total=4, unit="trees", stream=out, tty=True, redraw_s=0)
        p.add(1)
        p.add(1)
        logger.warning("a dead letter")
        p.add(2)
        p.close(log_final=False)
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    assert text.count("\r\x1b[K[mcts] ") >= 3
    assert "\n" not in text.split("a dead letter")[0]  # nothing but in-place redraws before the log record
    # the log record clears the line, prints on its own line, and the progress line comes back below it
    assert "\r\x1b[Ka dead letter\n\r\x1b[K[mcts] 2/4 trees" in text
    assert text.endswith("\r\x1b[K")  # closed: the line is cleared (the final summary is a log line)


def test_heartbeat_stays_quiet_while_a_progress_line_is_shown(caplog):
    with caplog.at_level(logging.INFO, logger="prefsynth"):
        p = Progress("quietstage", total=100, every_s=0.02, tty=False)
        with Heartbeat("quietstage", 0.1):
            for _ in range(30):
                p.add(1)
                time.sleep(0.01)
        p.close()
    msgs = [r.getMessage() for r in caplog.records]
    assert not [m for m in msgs if "still running" in m], msgs
    assert [m for m in msgs if m.startswith("[quietstage] ") and "/100 records" in m]


def test_trainer_dict_lines_become_a_progress_line_and_a_summary(caplog):
    from transformers import PrinterCallback

    class FakeTrainer:
        def __init__(self):
            self.callbacks = [PrinterCallback()]

        def remove_callback(self, cb):
            self.callbacks = [c for c in self.callbacks if not (isinstance(cb, type) and isinstance(c, cb))]

        def add_callback(self, cb):
            self.callbacks.append(cb)

    trainer = FakeTrainer()
    attach_trainer_progress(trainer, "train")
    assert not any(isinstance(c, PrinterCallback) for c in trainer.callbacks)
    (cb,) = trainer.callbacks
    state = SimpleNamespace(global_step=0, max_steps=20)
    with caplog.at_level(logging.INFO, logger="prefsynth"):
        cb.on_train_begin(None, state, None)
        cb.progress.every_s = 1e-9  # a line at every update here
        for step in range(1, 21):
            state.global_step = step
            cb.on_step_end(None, state, None)
            if step % 10 == 0:
                cb.on_log(None, state, None, logs={"loss": 0.69 - step / 100, "learning_rate": 1e-4})
        cb.on_train_end(None, state, None)
    msgs = [r.getMessage() for r in caplog.records]
    assert not [m for m in msgs if m.startswith("{")]
    assert any(m.startswith("[train] 20/20 steps (100%)") and "loss 0.49" in m for m in msgs), msgs
    assert msgs[-1].startswith("[train] trained 20 steps in ") and "loss 0.59 -> 0.49" in msgs[-1]


def _record(name, msg, level=logging.INFO):
    return logging.LogRecord(name, level, __file__, 1, msg, None, None)


def test_quiet_filter_drops_the_warnings_a_user_can_do_nothing_about():
    f = QuietFilter()
    assert not f.filter(_record("root", "apitools not found, and bigquery client libraries are not available",
                                logging.WARNING))
    assert not f.filter(_record("great_expectations.data_context.types.base",
                                "Created temporary directory '/tmp/x' for ephemeral docs site"))
    assert f.filter(_record("great_expectations.core", "an expectation failed", logging.ERROR))
    assert f.filter(_record("root", "something else", logging.WARNING))
    assert f.filter(_record("prefsynth", "[generate] 1/2 prompts"))


def test_validation_does_not_log_the_temporary_docs_site(caplog):
    import pyarrow as pa

    from prefsynth.schemas.datasets import SCHEMAS
    from prefsynth.validation import validate_table

    schema = SCHEMAS["dead_letters"]
    with caplog.at_level(logging.INFO):
        validate_table(pa.Table.from_pylist([], schema=schema), "dead_letters", "progresstest", reports_dir=None)
    assert not [r for r in caplog.records if "ephemeral docs site" in r.getMessage()]
