"""Staging folders and their atomic commit: a stage writes `<out>.partial` and moves it into place
only when it finished; Ctrl-C / SIGTERM leave the previous outputs as they were.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from apache_beam.io.filesystems import FileSystems

if TYPE_CHECKING:
    from prefsynth.pipelines.stage import Output

log = logging.getLogger("prefsynth")


def is_local(path: str) -> bool:
    return "://" not in path


def clear_dir(path: str) -> None:
    if is_local(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        matches = FileSystems.match([path.rstrip("/") + "/*"])[0].metadata_list
        if matches:
            FileSystems.delete([m.path for m in matches])


def commit_dir(staging: str, final: str) -> None:
    """Replace `final` by `staging` (a rename locally; file by file on object stores)."""
    clear_dir(final)
    if is_local(staging):
        Path(final).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, final)
        return
    files = [m.path for m in FileSystems.match([staging.rstrip("/") + "/*"])[0].metadata_list]
    FileSystems.rename(files, [FileSystems.join(final, f.rsplit("/", 1)[1]) for f in files])


def staging_path(final: str) -> str:
    return final.rstrip("/") + ".partial"


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
            if is_local(resume) and Path(resume).is_dir():
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
def deferred_signals():
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
