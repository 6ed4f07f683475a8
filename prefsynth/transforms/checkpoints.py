"""Resume inside a stage: each finished model batch is saved, and so is each finished prompt of a
batch still running (backends that answer prompts one by one, e.g. an HTTP server), so a re-run
after a crash only recomputes the prompts that had not finished.

Batches are fixed by the params (DeterministicBatches), so a batch is named by a hash of its
record ids and of the run's identity: the model (its path and a fingerprint of its files), the
backend settings and the sampling params. A re-run with the same identity finds the same names;
after a change of model or sampling nothing of the old run is reused. Files are written under a
temporary name and renamed when complete, so a kill mid-write leaves no half file that would be
trusted. Paths go through Beam's FileSystems (local, gs://, s3://). The stage deletes the folder
once its output is committed.

A failed prompt (a dead letter) is not final until the output is committed: a re-run asks the
server again (it may be back), except for failures that no request can change (prompt_too_long).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Sequence

from apache_beam.io.filesystems import FileSystems

from prefsynth.backends.base import Completion
from prefsynth.backends.base import GenerationFailure
from prefsynth.ids import content_id

log = logging.getLogger("prefsynth")

FINAL_FAILURES = frozenset({"prompt_too_long"})  # decided without the model: a re-run gets the same
# settings that cannot change what a model returns (how it is reached, how patiently)
OPERATIONAL_KEYS = frozenset({"api_key_env", "max_concurrency", "timeout_s", "max_retries"})
CONTENT_HASH_MAX_BYTES = 1 << 20  # small files (config.json, tokenizer files) are hashed by content


def _encode(result: Any) -> dict:
    if isinstance(result, GenerationFailure):
        return {"failure": dataclasses.asdict(result)}
    return {"completions": [dataclasses.asdict(c) for c in result]}


def _decode(obj: dict) -> Any:
    if "failure" in obj:
        return GenerationFailure(**obj["failure"])
    return [Completion(**c) for c in obj["completions"]]


def _reusable(result: Any) -> bool:
    return not isinstance(result, GenerationFailure) or result.error_type in FINAL_FAILURES


def model_fingerprint(model: str) -> str:
    """Identity of a model: a local file or directory by its resolved path, every file's name, size
    and mtime, and the content of the small ones (config.json, tokenizer); anything else (a served
    model name, a Hub id, a remote path) by its name."""
    path = Path(model)
    if "://" in model or not path.exists():
        return f"name:{model}"
    files = [path] if path.is_file() else sorted(
        f for f in path.rglob("*") if f.is_file() and not any(p.startswith(".") for p in f.relative_to(path).parts))
    h = hashlib.sha256(str(path.resolve()).encode())
    for f in files:
        st = f.stat()
        h.update(f"\x00{f.relative_to(path) if f != path else f.name}\x00{st.st_size}\x00{st.st_mtime_ns}".encode())
        if st.st_size <= CONTENT_HASH_MAX_BYTES:
            h.update(hashlib.sha256(f.read_bytes()).digest())
    return f"files:{h.hexdigest()[:32]}"


def resume_identity(stage: str, model: str, policy: Any, sampling: Any, seed: int, **extra: Any) -> str:
    """What must be equal for saved results to be reused: stage, model files, backend settings that
    shape outputs (everything of the policy config but how the server is reached), sampling, seed."""
    settings = {k: v for k, v in sorted(dataclasses.asdict(policy).items()) if k not in OPERATIONAL_KEYS}
    return json.dumps({"stage": stage, "model": model_fingerprint(model), "policy": settings,
                       "sampling": dataclasses.asdict(sampling), "seed": seed, **extra},
                      sort_keys=True, default=repr)


class BatchCheckpoints:
    def __init__(self, directory: str | None, identity: str = ""):
        self.directory = directory
        self.identity = identity

    # ---- batches -------------------------------------------------------------------------------
    def key(self, ids: Sequence[str]) -> str:
        return content_id("batch", self.identity, *sorted(ids), length=24)

    def _path(self, key: str) -> str:
        return FileSystems.join(self.directory, f"batch-{key}.json")

    def _read(self, path: str) -> dict | None:
        if not FileSystems.exists(path):
            return None
        try:
            with FileSystems.open(path) as f:
                return json.loads(f.read().decode("utf-8"))
        except (OSError, ValueError) as err:  # renamed into place complete, so only a foreign or damaged file
            log.warning("resume: ignoring unreadable checkpoint %s: %s", path, err)
            return None

    def _write(self, path: str, payload: dict) -> None:
        tmp = path + ".tmp"
        with FileSystems.create(tmp) as f:
            f.write(json.dumps(payload).encode("utf-8"))
        FileSystems.rename([tmp], [path])

    def load(self, key: str) -> tuple[list[Any], list[bool]] | None:
        """A finished batch's (results, truncated); a result a re-run must ask for again is None."""
        if not self.directory:
            return None
        data = self._read(self._path(key))
        if data is None:
            return None
        results = [_decode(r) for r in data["results"]]
        return [r if _reusable(r) else None for r in results], data["truncated"]

    def save(self, key: str, results: Sequence[Any], truncated: Sequence[bool],
             ids: Sequence[str] | None = None) -> None:
        if not self.directory:
            return
        self._write(self._path(key), {"ids": list(ids or []), "results": [_encode(r) for r in results],
                                      "truncated": list(truncated)})

    # ---- prompts of an unfinished batch --------------------------------------------------------
    def _prompt_path(self, prompt_id: str) -> str:
        return FileSystems.join(self.directory, f"prompt-{content_id('prompt', self.identity, prompt_id, length=24)}.json")

    def save_prompt(self, prompt_id: str, result: Any, truncated: bool) -> None:
        """One finished prompt of a batch that is still running (only reusable results are kept)."""
        if not self.directory or not _reusable(result):
            return
        self._write(self._prompt_path(prompt_id), {"prompt_id": prompt_id, "result": _encode(result),
                                                   "truncated": bool(truncated)})

    def load_prompt(self, prompt_id: str) -> tuple[Any, bool] | None:
        if not self.directory:
            return None
        data = self._read(self._prompt_path(prompt_id))
        if data is None or data.get("prompt_id") != prompt_id:
            return None
        return _decode(data["result"]), bool(data["truncated"])

    def drop_prompts(self, prompt_ids: Sequence[str]) -> None:
        """The batch file now holds these prompts: their own files are no longer needed."""
        if not self.directory:
            return
        paths = [p for p in (self._prompt_path(pid) for pid in prompt_ids) if FileSystems.exists(p)]
        if paths:
            try:
                FileSystems.delete(paths)
            except Exception as err:  # noqa: BLE001 - leftovers are harmless and go with clear()
                log.warning("resume: could not delete %d prompt checkpoints: %s", len(paths), err)

    def clear(self) -> None:
        if self.directory and FileSystems.exists(self.directory):
            FileSystems.delete([self.directory])

